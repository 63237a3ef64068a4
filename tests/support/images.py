# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Image files on disk for the data tests: real PNGs that `load_image_dataset` and the trainer read as folders."""

from pathlib import Path

import numpy as np
from PIL import Image


def write_folder(root: Path, count: int = 24, *, rgb_every: int = 0, size: int = 12) -> Path:
    """Class folders a/ and b/ of small PNGs, each image distinct (its pixels encode its number); every
    `rgb_every`-th one in colour, the rest grayscale."""
    rng = np.random.default_rng(0)
    for index in range(count):
        folder = root / ("a" if index % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        if rgb_every and index % rgb_every == 0:
            image = Image.fromarray(rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8), "RGB")
        else:
            image = Image.fromarray(rng.integers(0, 256, (size + 4, size), dtype=np.uint8), "L")
        image.save(folder / f"{index:03d}.png")
    return root
