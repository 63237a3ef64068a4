# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""What a text-to-image run adds to training: the CLIP parts, every training caption as token ids (and encodings,
when the encoder is frozen), the validation prompts, and each micro-batch's conditioning with captions dropped."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from accelerate.logging import get_logger

from ..data.dataset import DataError
from ..diffusion.guidance import drop_conditions
from ..text.components import load_text_components
from ..text.conditioning import CaptionBank, default_validation_prompts

if TYPE_CHECKING:
    pass

logger = get_logger(__name__)


@dataclass
class TextConditioning:
    """What a text-to-image run adds: the CLIP parts, every caption's token ids (and encoding, when the encoder is
    frozen), and the validation prompts."""

    tokenizer: object
    text_encoder: torch.nn.Module
    bank: CaptionBank  # unique captions, one index per training image, their encodings computed once if frozen
    dropout_prob: float
    prompts: list
    trained: bool = False  # --train_text_encoder: the model is a TextConditionedUNet that encodes token ids itself

    def model_kwargs(self, caption_indices: torch.Tensor, generator: torch.Generator) -> dict:
        """The model's conditioning for a micro-batch, some captions replaced by the empty prompt (for guidance)."""
        kept = drop_conditions(caption_indices, self.dropout_prob, self.bank.empty_index, generator)
        if self.trained:
            return {"token_ids": self.bank.token_ids_for(kept)}
        return {"encoder_hidden_states": self.encodings(kept)}

    def encodings(self, caption_indices: torch.Tensor) -> torch.Tensor:
        """The UNet's `encoder_hidden_states` for these captions, without gradients: encoded in the frozen encoder's
        dtype, handed over as float32, the dtype of the UNet's weights (autocast lowers its matmuls when on)."""
        return self.bank.embeddings_for(caption_indices, text_encoder=self.text_encoder).float()


def weight_dtype(accelerator) -> torch.dtype:
    """The dtype of weights that only run inference under --mixed_precision (float32 without it)."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


def load_text_conditioning(args, data, accelerator) -> TextConditioning:
    """The CLIP parts and every training caption's token ids; with a frozen encoder, every caption encoded once (on
    every process alike)."""
    if data.captions is None or not any(data.captions):
        raise DataError(f"--caption_column {args.caption_column}: the training data has no captions there; give the"
                        " column that holds them (an image folder needs a metadata.jsonl with that key)")
    with accelerator.main_process_first():  # the main process downloads a Hub encoder first
        tokenizer, text_encoder = load_text_components(args.text_encoder_name_or_path, seed=args.seed)
    # A frozen encoder only ever runs under no_grad, so it runs in the mixed-precision weight dtype (as in diffusers'
    # examples); the pipeline then ships it in that dtype, the encoder whose encodings the UNet learnt from.
    dtype = torch.float32 if args.train_text_encoder else weight_dtype(accelerator)
    text_encoder.requires_grad_(args.train_text_encoder).train(args.train_text_encoder)
    text_encoder.to(accelerator.device, dtype=dtype)
    bank = CaptionBank(data.captions, tokenizer).to(accelerator.device)
    if not args.train_text_encoder:
        bank.precompute_embeddings(text_encoder)  # no encoder call per step (unless there are very many captions)
    args.validation_prompts = args.validation_prompts or default_validation_prompts(data)
    logger.info(f"Text to image: {len(bank.captions) - 1} distinct captions, text encoder"
                f" {args.text_encoder_name_or_path} ({'trained' if args.train_text_encoder else 'frozen'}, hidden"
                f" size {text_encoder.config.hidden_size})")
    return TextConditioning(tokenizer, text_encoder, bank, args.conditioning_dropout_prob, args.validation_prompts,
                            trained=args.train_text_encoder)
