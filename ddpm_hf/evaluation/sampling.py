# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Drawing the samples an evaluation scores, on one process or on every process of `accelerate launch`.

One seeded generator per image, so image i is the same whatever the batch size and however many processes share the
work; each process draws a contiguous share, so the shares concatenated in rank order are the images of one process.
"""

import contextlib

import torch

from ..randomness import derive_seed


def image_seeds(seed: int, num_images: int) -> list[int]:
    """The generator seed of each image: (seed, image index) mixed into 64 bits, so runs with seeds 0 and 1 share no
    image (seed + i would make image 1 of seed 0 image 0 of seed 1)."""
    return [derive_seed(seed, index, bits=64) for index in range(num_images)]


@torch.no_grad()
def sample_pixels(pipeline, seeds: list[int], num_inference_steps: int, batch_size: int, eta: float = 0.0
                  ) -> torch.Tensor:
    """The pipeline's samples for `seeds` (one image each), as uint8 (N, C, H, W), `batch_size` per call, each call
    with the pipeline's own progress bar; `eta` for a DDIM scheduler."""
    chunks = []
    for start in range(0, len(seeds), batch_size):
        generators = [torch.Generator().manual_seed(seed) for seed in seeds[start:start + batch_size]]
        images = pipeline(batch_size=len(generators), generator=generators, num_inference_steps=num_inference_steps,
                          eta=eta, output_type="pt").images  # (B, C, H, W) in [0, 1]
        # Rounded as PIL's conversion of the "pil" output would be, so the features see the images a user saves.
        chunks.append(images.mul(255).round().clamp(0, 255).to(torch.uint8).cpu())
    if not chunks:
        config = pipeline.unet.config
        return torch.zeros(0, config.in_channels, config.sample_size, config.sample_size, dtype=torch.uint8)
    return torch.cat(chunks)


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes, when torch.distributed is initialised; (0, 1) otherwise."""
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
