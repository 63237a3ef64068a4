# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""What a class-conditional run adds to training (--class_column): the class names, each micro-batch's labels with
some replaced by the null label (classifier-free guidance, Ho & Salimans 2022), and the validation rows.

The UNet is diffusers' UNet2DModel with `num_class_embeds = len(names) + 1`: a label's embedding is added to the
timestep's, and the last index is the null label, the "no class" that guidance's unconditional half uses
(`DDPMImagePipeline(class_labels=..., guidance_scale=...)` follows the same convention)."""

from dataclasses import dataclass

import torch
from accelerate.logging import get_logger

from ..data.dataset import DataError, ImageDataset
from ..diffusion.guidance import drop_conditions

logger = get_logger(__name__)

MAX_VALIDATION_CLASSES = 10  # one grid row each: more rows would make the grid unreadable


@dataclass
class ClassConditioning:
    names: list[str]
    labels: torch.Tensor | None  # (N,) int64, one per training image, on the CPU (the loader hands them out); a
    # stream (--streaming) has no table of labels: its loader reads each image's own
    dropout_prob: float

    @property
    def null_label(self) -> int:
        return len(self.names)

    @property
    def num_class_embeds(self) -> int:
        return len(self.names) + 1

    def model_kwargs(self, labels: torch.Tensor, generator: torch.Generator) -> dict:
        """The UNet's `class_labels` for a micro-batch, some replaced by the null label (for guidance)."""
        return {"class_labels": drop_conditions(labels, self.dropout_prob, self.null_label, generator)}

    def validation_labels(self) -> list[int]:
        return list(range(min(len(self.names), MAX_VALIDATION_CLASSES)))


def load_class_conditioning(args, data) -> ClassConditioning:
    streaming = not isinstance(data, ImageDataset)
    if data.class_names is None or (not streaming and data.labels is None):
        raise DataError(f"--class_column {args.class_column}: {data.source} gave no class labels")
    logger.info(f"Class-conditional: {len(data.class_names)} classes ({', '.join(data.class_names[:10])}"
                f"{', ...' if len(data.class_names) > 10 else ''}), null label {len(data.class_names)}, labels"
                f" dropped with probability {args.conditioning_dropout_prob}")
    return ClassConditioning(list(data.class_names), None if streaming else data.labels.long(),
                             args.conditioning_dropout_prob)
