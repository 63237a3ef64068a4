# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""What an image data set is before decoding (`ImageListing`) and once stored (`ImageDataset`), and the error every
data problem raises (`DataError`)."""

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


class DataError(ValueError):
    """The training data cannot be used as given; the message says why and what to do."""


class ImageList(Protocol):
    """A source's images, listed (image files, rows of a `datasets` table, the embedded digits: see sources.py)."""

    def __len__(self) -> int: ...
    def name(self, position: int) -> str: ...  # how the image is named in messages and in ImageDataset.skipped
    def source(self, position: int) -> Any: ...  # a path, a binary file object or a PIL image; None: no image


@dataclass
class ImageListing:
    """One source's images before decoding: cheap to build whatever the size of the data."""

    images: ImageList
    captions: list[str] | None
    labels: list[int] | None
    source: str
    class_names: list[str] | None = None
    identity: dict = field(default_factory=dict)  # what the images are, for the decoded cache's fingerprint


@dataclass
class ImageDataset:
    pixels: torch.Tensor  # uint8 (N, C, H, W): a tensor in memory, or a storage.py object that reads like one
    captions: list[str] | None
    labels: torch.Tensor | None  # int64, (N,)
    skipped: list[str]
    source: str
    class_names: list[str] | None = None  # labels[i] names class_names[labels[i]] (with class_column)
    storage: str = "memory"  # where the pixels live: "memory", "memmap" or "lazy" (see storage.py)
    cache_entry: str | None = None  # memmap and lazy: the folder of the decoded cache they read
    built_cache_entry: bool = False  # whether this process built that entry (False: found it built)

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
