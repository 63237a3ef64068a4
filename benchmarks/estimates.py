# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""An estimate with its spread: the mean of per-image values and its standard error."""

import math

import torch


def mean_stderr(x: torch.Tensor) -> tuple[float, float]:
    """The mean of per-image values and its standard error (0 for a single value)."""
    return float(x.mean()), (float(x.std(unbiased=True) / math.sqrt(len(x))) if len(x) > 1 else 0.0)
