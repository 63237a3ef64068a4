# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Drawing a process's share of the samples: one seeded generator per image, so image i is the same whatever the
batch size and however many processes share the work."""

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
