# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The options every image source shares: their choices and limits, their checks (`check_options`, for stored sets
and streams alike), and the seeded subset that ``max_train_samples`` keeps (`subset_indices`)."""

from typing import Any

import numpy as np

from ..choices import MIN_RESOLUTION
from .dataset import DataError


def check_options(resolution: Any, channels: Any, max_train_samples: Any, max_bad_fraction: Any) -> None:
    """A DataError naming the first option out of its range."""
    if not _is_int(resolution) or resolution < MIN_RESOLUTION:
        raise DataError(
            f"resolution must be an integer >= {MIN_RESOLUTION}, got {resolution!r}; pass e.g. --resolution 32"
        )
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 (grayscale), 3 (RGB) or None (chosen by the data), got {channels!r}")
    if max_train_samples is not None and (not _is_int(max_train_samples) or max_train_samples < 1):
        raise DataError(f"max_train_samples must be a positive integer or None, got {max_train_samples!r}")
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise DataError(
            f"max_bad_fraction must be between 0 and 1, got {max_bad_fraction!r}; "
            "pass e.g. --max_bad_image_fraction 0.01"
        )


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but resolution=True is a bug, not a size.
    return isinstance(value, int) and not isinstance(value, bool)


def subset_indices(count: int, max_samples: int | None, seed: int) -> list[int]:
    """All indices, or a seeded random subset kept in source order (so names and captions stay readable)."""
    if max_samples is None or max_samples >= count:
        return list(range(count))
    # Stream 0 of the seed; the embedded sets draw their captions from stream 1 and mnist's shuffle from stream 2.
    chosen = np.random.default_rng([seed, 0]).permutation(count)[:max_samples]
    return sorted(chosen.tolist())
