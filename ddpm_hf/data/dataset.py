# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""What a loaded image data set is (`ImageDataset`), and the error every data problem raises (`DataError`)."""

from dataclasses import dataclass

import torch


class DataError(ValueError):
    """The training data cannot be used as given; the message says why and what to do."""


@dataclass
class ImageDataset:
    pixels: torch.Tensor  # uint8, (N, C, H, W)
    captions: list[str] | None
    labels: torch.Tensor | None  # int64, (N,)
    skipped: list[str]
    source: str
    class_names: list[str] | None = None  # labels[i] names class_names[labels[i]] (with class_column)

    def __post_init__(self) -> None:
        if self.pixels.dtype != torch.uint8 or self.pixels.ndim != 4:
            shape = tuple(self.pixels.shape)
            raise ValueError(f"pixels must be a uint8 (N, C, H, W) tensor, got {self.pixels.dtype} {shape}")
        for name, values in (("captions", self.captions), ("labels", self.labels)):
            if values is not None and len(values) != len(self):
                raise ValueError(f"{len(values)} {name} for {len(self)} images")
        if self.class_names is not None and self.labels is not None and len(self) and (
                int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
            raise ValueError(f"labels must lie in [0, {len(self.class_names)}), one per class name")

    def __len__(self) -> int:
        return self.pixels.shape[0]

    @property
    def channels(self) -> int:
        return self.pixels.shape[1]
