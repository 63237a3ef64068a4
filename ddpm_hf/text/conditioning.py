# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""What the trainer needs to train `DDPMTextToImagePipeline`: text parts, a conditional UNet, caption encodings.

- `conditional_unet_config`: a preset's UNet2DModel config turned into the UNet2DConditionModel that cross-attends to
  the text encoder's hidden states.
- `tokenize_captions`, `encode_token_ids`: exactly what `DDPMTextToImagePipeline.encode_prompt` does, split in two so
  a trainable encoder can run the second half with gradients.
- `CaptionBank`: the dataset's captions, deduplicated, with their token ids and (for a frozen encoder) their
  embeddings computed once.
- `default_validation_prompts`: what to draw validation grids of when the user names no prompts.

Nothing here draws from torch's global random state (caption dropout is `ddpm_hf.diffusion.guidance.drop_conditions`,
which draws from the generator
the trainer passes in, so resumed runs stay bitwise exact.
"""

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from ..presets import DATA_DEPENDENT_KEYS, PresetError
from .captions import digit_caption

# Above this many distinct captions, `CaptionBank` keeps neither token ids nor embeddings for all of them.
MAX_PRECOMPUTED_CAPTIONS = 10_000

# ----------------------------------------------------------------------------------------------------------------
# The conditional UNet
# ----------------------------------------------------------------------------------------------------------------
_CROSS_ATTENTION_BLOCKS = {
    "DownBlock2D": "DownBlock2D",
    "AttnDownBlock2D": "CrossAttnDownBlock2D",
    "CrossAttnDownBlock2D": "CrossAttnDownBlock2D",
    "UpBlock2D": "UpBlock2D",
    "AttnUpBlock2D": "CrossAttnUpBlock2D",
    "CrossAttnUpBlock2D": "CrossAttnUpBlock2D",
}


def _init_defaults(cls) -> dict[str, Any]:
    return {name: parameter.default for name, parameter in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and parameter.default is not inspect.Parameter.empty}


def conditional_unet_config(unet_config: dict[str, Any], cross_attention_dim: int) -> dict[str, Any]:
    """The UNet2DConditionModel config of the same network as `UNet2DModel.from_config(unet_config)`, plus text.

    The resnets, channels, levels, norms, dropout and time embedding stay as they are (keys left out take
    UNet2DModel's defaults, so a raw preset "unet" dict gets 3 channels as UNet2DModel would give it). The text enters
    in two ways:
    - by cross-attention: every self-attention level (AttnDown/AttnUpBlock2D) becomes a CrossAttn block
      (self-attention, then cross-attention to the text, then a feed-forward: diffusers' Transformer2DModel), and the
      mid block is always UNetMidBlock2DCrossAttn, so every model attends to the text, even one without attention
      levels (mnist-16: only at the lowest resolution, which keeps the conditional model within ~1.3x of the
      unconditional one's step time; a preset that wants more declares attention levels);
    - through the time embedding, which every resnet at every resolution receives: diffusers'
      `addition_embed_type="text"` (TextTimeEmbedding, as in DeepFloyd IF) pools the encoder's hidden states with
      learned attention and adds the result to the timestep's embedding. Cross-attention alone learns slowly from a
      small text encoder, whose digit word is one token in 77: on the mnist-16-text run the prompted-digit accuracy
      went from 0.74 to 0.965 (guidance 3, with the builtin encoder then at CLIP's own init scale) with this path, which
      adds 0.8% to the parameters.

    Heads: UNet2DModel's `attention_head_dim` is the width of one head (None: one head per block), while
    UNet2DConditionModel's `attention_head_dim` is, for historical reasons, the number of heads; it is set per level
    to give the cross-attention blocks the heads of the self-attention they replace.
    """
    from diffusers import UNet2DConditionModel, UNet2DModel

    if isinstance(cross_attention_dim, bool) or not isinstance(cross_attention_dim, int) or cross_attention_dim < 1:
        raise PresetError(f"cross_attention_dim must be a positive integer (the text encoder's hidden size), "
                          f"got {cross_attention_dim!r}")
    plain_defaults = _init_defaults(UNet2DModel)
    conditional_keys = set(_init_defaults(UNet2DConditionModel))
    given = {key: value for key, value in unet_config.items() if not key.startswith("_")}
    unknown = sorted(set(given) - set(plain_defaults) - conditional_keys)
    if unknown:
        raise PresetError(f"UNet config keys {unknown} are neither UNet2DModel nor UNet2DConditionModel settings")
    config = {**plain_defaults, **given}

    # UNet2DModel-only settings: refuse the ones that would silently change the network.
    plain_only = (("downsample_type", ("conv",)), ("upsample_type", ("conv",)), ("attn_norm_num_groups", (None,)))
    for key, allowed in plain_only:
        if config[key] not in allowed:
            raise PresetError(f"{key}={config[key]!r} has no UNet2DConditionModel equivalent: use {allowed[0]!r} "
                              f"for a text-conditioned model")

    down, up = list(config["down_block_types"]), list(config["up_block_types"])
    levels = len(config["block_out_channels"])
    if len(down) != levels or len(up) != levels:
        raise PresetError(f"the UNet has {levels} levels (block_out_channels) but {len(down)} down and {len(up)} up "
                          f"block types")
    unsupported = sorted({block for block in down + up if block not in _CROSS_ATTENTION_BLOCKS})
    if unsupported:
        raise PresetError(f"cannot add text conditioning to {unsupported}: only "
                          f"{', '.join(sorted(_CROSS_ATTENTION_BLOCKS))} are supported")
    down = [_CROSS_ATTENTION_BLOCKS[block] for block in down]
    up = [_CROSS_ATTENTION_BLOCKS[block] for block in up]

    head_width = config["attention_head_dim"]
    heads = [1 if head_width is None else max(1, channels // head_width) for channels in config["block_out_channels"]]

    conditional = {key: value for key, value in config.items() if key in conditional_keys}
    conditional.update(
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=cross_attention_dim,
        addition_embed_type="text",
        addition_embed_type_num_heads=pooling_heads(cross_attention_dim),
        attention_head_dim=heads,
        block_out_channels=list(config["block_out_channels"]),
    )
    for key in DATA_DEPENDENT_KEYS:  # JSON-friendly and explicit, even when defaulted
        conditional[key] = config[key]
    return conditional


def pooling_heads(hidden_size: int) -> int:
    """Heads of the text pooling in the time embedding: 64 channels each, as in CLIP's own text attention (one head
    for encoders narrower than that, or whose width is not a multiple of 64); the count must divide the width."""
    return hidden_size // 64 if hidden_size % 64 == 0 else 1


# ----------------------------------------------------------------------------------------------------------------
# Captions -> token ids -> embeddings
# ----------------------------------------------------------------------------------------------------------------
def tokenize_captions(tokenizer, captions: Sequence[str]) -> torch.Tensor:
    """(N, tokenizer.model_max_length) int64 token ids, padded and truncated as `encode_prompt` does.

    Training must see the very encodings sampling will use: the same padding to the full length (CLIP attends
    causally, so the padding tokens' states depend on the whole prompt) and the same truncation.
    """
    captions = list(captions)
    if not captions:
        return torch.zeros(0, tokenizer.model_max_length, dtype=torch.long)
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def encode_token_ids(text_encoder, token_ids: torch.Tensor) -> torch.Tensor:
    """(B, L, hidden) last hidden states, as `encode_prompt` takes them; with gradients if the caller allows."""
    return text_encoder(token_ids.to(text_encoder.device))[0]


class TextConditionedUNet(torch.nn.Module):
    """The UNet and a trained text encoder as one module (`--train_text_encoder`).

    Training both through one module lets one DDP wrapper synchronise both gradients, one gradient-norm clip cover
    both, and the encoder run inside the UNet's forward on each micro-batch (so gradient accumulation's no_sync
    covers it too). It takes the captions' token ids where the UNet takes `encoder_hidden_states`.
    """

    def __init__(self, unet, text_encoder):
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder

    def forward(self, sample, timestep, token_ids: torch.Tensor, **unet_kwargs):
        return self.unet(sample, timestep, encoder_hidden_states=encode_token_ids(self.text_encoder, token_ids),
                         **unet_kwargs)


class CaptionBank:
    """A dataset's captions, deduplicated once, so a training step only indexes tensors.

    `captions` lists the distinct captions, the empty prompt "" first (`empty_index` is 0: guidance's unconditional
    side, always present even when no image has an empty caption); `caption_indices[i]` is image i's caption.

    - Frozen encoder: `precompute_embeddings(text_encoder)` encodes every distinct caption once, under no_grad, in
      the encoder's dtype and on its device; `embeddings_for(indices)` then indexes them (no encoder call per step,
      and a few dozen captions for the embedded digits instead of one per image).
    - Trainable encoder: `token_ids_for(indices)` gives the token ids, which the trainer encodes with gradients
      (`encode_token_ids`).
    - More than `max_precomputed` distinct captions (a captioned web dataset): neither the ids nor the embeddings of
      all of them are kept (10k captions of 77 x 768 float32 states already take 2.4 GB); `token_ids_for` tokenizes
      the batch's captions on the fly (reading the indices on the host) and `embeddings_for(indices, text_encoder)`
      encodes them under no_grad.
    """

    def __init__(self, captions: Sequence[str], tokenizer, max_precomputed: int = MAX_PRECOMPUTED_CAPTIONS):
        captions = list(captions)
        bad = [caption for caption in captions if not isinstance(caption, str)]
        if bad:
            raise ValueError(f"captions must be strings, got {len(bad)} others, e.g. {bad[0]!r}")
        self.tokenizer = tokenizer
        self.max_precomputed = max_precomputed
        self.captions: list[str] = list(dict.fromkeys(["", *captions]))
        self.empty_index = 0
        position = {caption: index for index, caption in enumerate(self.captions)}
        self.caption_indices = torch.tensor([position[caption] for caption in captions], dtype=torch.long)
        self.precomputable = len(self.captions) <= max_precomputed
        self.token_ids: torch.Tensor | None = (
            tokenize_captions(tokenizer, self.captions) if self.precomputable else None
        )
        self.embeddings: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.captions)

    def to(self, device) -> "CaptionBank":
        """Move the index tables (and the embeddings) to `device`, where the trainer's indices live."""
        self.caption_indices = self.caption_indices.to(device)
        if self.token_ids is not None:
            self.token_ids = self.token_ids.to(device)
        if self.embeddings is not None:
            self.embeddings = self.embeddings.to(device)
        return self

    @torch.no_grad()
    def precompute_embeddings(self, text_encoder, batch_size: int = 256) -> bool:
        """Encode all distinct captions once with the (frozen) `text_encoder`; False when there are too many."""
        if not self.precomputable:
            return False
        chunks = [encode_token_ids(text_encoder, ids) for ids in self.token_ids.split(batch_size)]
        self.embeddings = torch.cat(chunks)
        self.token_ids = self.token_ids.to(self.embeddings.device)
        self.caption_indices = self.caption_indices.to(self.embeddings.device)
        return True

    def token_ids_for(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids of the captions `indices` (into `captions`), on the indices' device."""
        if self.token_ids is not None:
            return self.token_ids[indices.to(self.token_ids.device)].to(indices.device)
        return tokenize_captions(self.tokenizer, [self.captions[i] for i in indices.tolist()]).to(indices.device)

    def embeddings_for(self, indices: torch.Tensor, text_encoder=None) -> torch.Tensor:
        """(B, L, hidden) frozen-encoder states of the captions `indices`: precomputed, or encoded under no_grad."""
        if self.embeddings is not None:
            return self.embeddings[indices.to(self.embeddings.device)]
        if text_encoder is None:
            raise ValueError(
                "no precomputed embeddings (call precompute_embeddings) and no text_encoder to encode with"
            )
        with torch.no_grad():
            return encode_token_ids(text_encoder, self.token_ids_for(indices))


# ----------------------------------------------------------------------------------------------------------------
# Validation prompts
# ----------------------------------------------------------------------------------------------------------------
def default_validation_prompts(dataset, limit: int = 4) -> list[str]:
    """The prompts of validation grids when none are given.

    The embedded digits (labelled, source "embedded:...") get one prompt per digit, "a handwritten digit zero" to
    "... nine", so a grid shows whether each class is learnt. Other data gets its first `limit` distinct non-empty
    captions.
    """
    if getattr(dataset, "labels", None) is not None and str(getattr(dataset, "source", "")).startswith("embedded:"):
        return [digit_caption(digit, 0) for digit in range(10)]
    captions = getattr(dataset, "captions", None)
    if not captions:
        raise ValueError(f"the dataset {getattr(dataset, 'source', '')!r} has no captions to take validation prompts "
                         f"from: pass --validation_prompts")
    prompts = list(dict.fromkeys(caption for caption in captions if caption.strip()))[:limit]
    if not prompts:
        raise ValueError("every caption of the dataset is empty: pass --validation_prompts")
    return prompts
