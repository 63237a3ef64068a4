# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The training data order: an endless stream of seeded per-epoch permutations, cut into optimizer steps, processes
and micro-batches, so that a resumed run reads exactly the images the uninterrupted one would have read."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..randomness import EPOCH, FLIP, derive_seed
from .pixels import random_flip
from .storage import read_images


class DataStream:
    """Position p of the stream is sample `permutation(epoch = p // N)[p % N]` of the N training images.

    Batches may straddle an epoch boundary, so no sample is ever dropped, and a position means the same sample
    whatever the batch size or the number of processes: a checkpoint stores the position, not a batch index.
    """

    def __init__(self, num_samples: int, seed: int):
        if num_samples < 1:
            raise ValueError("The data stream needs at least one sample.")
        self.num_samples, self.seed = num_samples, seed
        self._epoch, self._permutation = None, None

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:  # consecutive batches almost always share an epoch: keep the last one
            generator = torch.Generator().manual_seed(derive_seed(self.seed, EPOCH, epoch))
            self._epoch, self._permutation = epoch, torch.randperm(self.num_samples, generator=generator)
        return self._permutation

    def indices(self, start: int, count: int) -> torch.Tensor:
        """The sample indices at positions [start, start + count)."""
        pieces, position, end = [], start, start + count
        while position < end:
            epoch, offset = divmod(position, self.num_samples)
            take = min(end - position, self.num_samples - offset)
            pieces.append(self.permutation(epoch)[offset : offset + take])
            position += take
        return torch.cat(pieces)


@dataclass(frozen=True)
class BatchLayout:
    """How one optimizer step's global batch is split over processes and gradient-accumulation micro-batches.

    The global batch of a step is the stream positions [p, p + G), G = batch_size x processes x accumulation; micro-
    batch m of process r is the slice that starts at p + (m x processes + r) x batch_size. Each rank thus sees a
    different slice of every global batch, and all ranks together see each position once.
    """

    batch_size: int  # per process and micro-batch
    num_processes: int = 1
    process_index: int = 0
    gradient_accumulation_steps: int = 1

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_processes * self.gradient_accumulation_steps

    def micro_batch_start(self, step_position: int, micro: int) -> int:
        return step_position + (micro * self.num_processes + self.process_index) * self.batch_size


@dataclass(frozen=True)
class MicroBatchKey:
    step: int  # the optimizer step (0-based: the step that brings global_step from `step` to `step + 1`)
    micro: int  # the micro-batch within that step
    indices: torch.Tensor  # which training images


class MicroBatchKeys(torch.utils.data.Sampler):
    """The keys of this process's micro-batches for steps [first_step, last_step), starting at `first_position`."""

    def __init__(self, stream: DataStream, layout: BatchLayout, first_step: int, last_step: int, first_position: int):
        self.stream, self.layout = stream, layout
        self.first_step, self.last_step, self.first_position = first_step, last_step, first_position

    def __len__(self) -> int:
        return max(0, self.last_step - self.first_step) * self.layout.gradient_accumulation_steps

    def __iter__(self) -> Iterator[MicroBatchKey]:
        layout = self.layout
        for step in range(self.first_step, self.last_step):
            step_position = self.first_position + (step - self.first_step) * layout.global_batch_size
            for micro in range(layout.gradient_accumulation_steps):
                start = layout.micro_batch_start(step_position, micro)
                yield MicroBatchKey(step, micro, self.stream.indices(start, layout.batch_size))


class MicroBatch(NamedTuple):
    """What the training loop receives for one micro-batch, from any storage (a NamedTuple: DataLoader workers and
    pinning pass it through field by field)."""

    pixels: torch.Tensor  # uint8 (B, C, H, W)
    conditions: torch.Tensor | None  # (B,) int64 (caption indices, or class labels), or None when unconditional
    skipped: tuple[str, ...] = ()  # images of this micro-batch that failed to decode (lazy storage), left out


def flip_micro_batch(pixels: torch.Tensor, seed: int, step: int, process_index: int, micro: int) -> torch.Tensor:
    """Mirror images of one micro-batch as its (seed, step, process, micro-batch) says: the one home of the flip."""
    generator = torch.Generator().manual_seed(derive_seed(seed, FLIP, step, process_index, micro))
    return random_flip(pixels, generator)


class ImageBatches(torch.utils.data.Dataset):
    """A micro-batch key -> its `MicroBatch`: the images read from their storage, flipped as the key's seed says,
    with their conditions (one index per image: a caption's, or a class label) when there are any. All the per-step
    CPU work on data; it runs in DataLoader workers when there are any.

    `pixels` is a uint8 tensor (in memory), or a `storage` object (a memory-mapped cache, lazily decoded files)
    read through `storage.read_images`.
    """

    def __init__(self, pixels, seed: int, process_index: int, flip: bool, conditions: torch.Tensor | None = None):
        self.pixels, self.seed, self.process_index, self.flip = pixels, seed, process_index, flip
        self.conditions = conditions

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, key: MicroBatchKey) -> MicroBatch:
        batch, indices, skipped = read_images(self.pixels, key.indices)
        if self.flip:
            batch = flip_micro_batch(batch, self.seed, key.step, self.process_index, key.micro)
        return MicroBatch(batch, None if self.conditions is None else self.conditions[indices], skipped)


def micro_batch_loader(
    pixels,
    *,
    seed: int,
    layout: BatchLayout,
    first_step: int,
    last_step: int,
    first_position: int,
    flip: bool,
    num_workers: int = 0,
    pin_memory: bool = False,
    conditions: torch.Tensor | None = None,
) -> torch.utils.data.DataLoader:
    """A DataLoader over this process's `MicroBatch`es, in training order (workers keep the order).

    `pixels`: the training images' storage (see `ImageBatches`); `conditions`: (N,) indices (captions', or class
    labels), or None.
    """
    stream = DataStream(len(pixels), seed)
    keys = MicroBatchKeys(stream, layout, first_step, last_step, first_position)
    return torch.utils.data.DataLoader(
        ImageBatches(pixels, seed, layout.process_index, flip, conditions),
        sampler=keys,
        batch_size=None,  # each key already names a whole micro-batch
        num_workers=num_workers,
        pin_memory=pin_memory,
    )
