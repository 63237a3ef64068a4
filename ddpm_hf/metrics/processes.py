# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Which share of the work this process does, when torch.distributed is initialised (`accelerate launch`)."""

import contextlib

import torch


def rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def share(count: int, rank: int, world: int) -> range:
    """Process `rank`'s contiguous share of `count` items: concatenated in rank order, the shares are 0..count-1,
    which is what makes torchmetrics' gathered features come out in the order of a single process."""
    return range(rank * count // world, (rank + 1) * count // world)


@contextlib.contextmanager
def main_process_first():
    """Process 0 runs the block first (fitting or filling a cache), the others after it, reading what it wrote."""
    rank, world = rank_and_world()
    if world > 1 and rank != 0:
        torch.distributed.barrier()
    yield
    if world > 1 and rank == 0:
        torch.distributed.barrier()
