# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Pixels as the model sees them: uint8 [0, 255] <-> float [-1, 1] (Ho et al. 2020, section 3.3), and flips."""

import torch


def to_model_range(pixels_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels in [0, 255] -> float32 in [-1, 1]."""
    if pixels_uint8.dtype != torch.uint8:
        # Refuse rather than guess: scaling an already scaled float tensor again is a silent bug.
        raise TypeError(f"to_model_range expects uint8 pixels, got {pixels_uint8.dtype}")
    return pixels_uint8.to(torch.float32) / 127.5 - 1.0


def from_model_range(x: torch.Tensor) -> torch.Tensor:
    """Values in [-1, 1] (clamped) -> rounded uint8 pixels in [0, 255]."""
    return ((x.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def random_flip(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each (C, H, W) image of ``batch`` left-right with probability 0.5, drawn from ``generator``."""
    flip = torch.rand(batch.shape[0], generator=generator, device=generator.device) < 0.5
    flip = flip.to(batch.device).view(-1, *([1] * (batch.ndim - 1)))
    return torch.where(flip, batch.flip(-1), batch)
