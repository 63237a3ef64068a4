# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The one string that names the real images an evaluation reads (`ddpm-hf fid --data`, `ddpm-hf nll --data`, a
`ReferenceSet`'s source), read here and nowhere else:

- "embedded:NAME": a digit set that ships inside an installed package (`ddpm_hf.data.EMBEDDED_DATASETS`);
- an image folder, searched recursively;
- for the bound only (`datasets=True`), anything else `datasets` opens: a Hub id, a `save_to_disk` folder, a file.

The Fréchet distance takes no `datasets` source: its reference cache is keyed by a folder's files (`reference`).
"""

import os
from pathlib import Path

import torch

EMBEDDED_PREFIX = "embedded:"


def embedded_spec(name: str) -> str:
    """The spec of an embedded set: "digits" -> "embedded:digits"."""
    return EMBEDDED_PREFIX + name


def embedded_name(spec: str) -> str | None:
    """"digits" for "embedded:digits"; None for a spec that names no embedded set. An unknown embedded set is an
    error, raised here, before anything slow is loaded."""
    if not spec.startswith(EMBEDDED_PREFIX):
        return None
    from ..data import EMBEDDED_DATASETS

    name = spec[len(EMBEDDED_PREFIX):]
    if name not in EMBEDDED_DATASETS:
        known = " or ".join(embedded_spec(known) for known in EMBEDDED_DATASETS)
        raise ValueError(f"unknown embedded dataset {name!r}: use {known}")
    return name


def source_arguments(spec: str, *, flag: str = "the data", datasets: bool = False) -> dict[str, str]:
    """`load_image_dataset`'s source argument for `spec`: {"embedded": NAME}, {"train_data_dir": FOLDER}, or, with
    `datasets`, {"dataset_name": spec} for anything that is not an image folder. `flag` names the spec in errors
    (e.g. "--data"); without `datasets`, a spec that is no embedded set and no folder is refused here."""
    name = embedded_name(spec)
    if name is not None:
        return {"embedded": name}
    if datasets:
        from ..data.hf_datasets import is_saved_dataset

        if os.path.isdir(spec) and not is_saved_dataset(Path(spec)):
            return {"train_data_dir": spec}
        return {"dataset_name": spec}
    if not os.path.isdir(os.path.expanduser(spec)):
        from ..data import EMBEDDED_DATASETS

        embedded = ", ".join(embedded_spec(known) for known in EMBEDDED_DATASETS)
        raise ValueError(f"{flag} {spec!r} is neither {embedded} nor an image folder (no such folder)")
    return {"train_data_dir": spec}


def load_evaluation_images(spec: str, num_images: int, resolution: int, channels: int, seed: int) -> torch.Tensor:
    """`num_images` images (a seeded subset) of `spec`, any source above, in the model's range [-1, 1]."""
    from ..data import load_image_dataset, to_model_range

    dataset = load_image_dataset(**source_arguments(spec, flag="--data", datasets=True), resolution=resolution,
                                 channels=channels, max_train_samples=num_images, seed=seed)
    return to_model_range(dataset.pixels)
