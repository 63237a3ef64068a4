# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""What the commands share: loading a saved pipeline (a folder or a Hub id), output paths, the default device."""

import os

import torch

from ..errors import one_line


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_pipeline(name_or_path: str, device: str = None):
    """A saved ddpm-hf pipeline from a folder or the Hub (owner/name, or the cached copy offline), on `device`."""
    from ..hub import looks_like_local_path, resolve_pipeline_folder
    from ..pipeline_ddpm_hf import DDPMImagePipeline

    if os.path.isdir(name_or_path):
        if not os.path.isfile(os.path.join(name_or_path, "model_index.json")):
            raise FileNotFoundError(f"{name_or_path} has no model_index.json: it is not a saved pipeline.")
    elif looks_like_local_path(name_or_path):
        raise FileNotFoundError(f"No pipeline folder at {name_or_path}.")
    else:
        try:
            name_or_path = resolve_pipeline_folder(name_or_path)
        except (OSError, ValueError) as error:  # not found, offline without a cached copy, an invalid repo id
            raise FileNotFoundError(
                f"No pipeline folder at {name_or_path}, and no Hub repo of that id ({one_line(error)})"
            ) from None
    # Never unpickle: a folder with only .bin weights is refused with the way to convert it (see from_pretrained).
    pipeline = DDPMImagePipeline.from_pretrained(name_or_path, use_safetensors=True)
    return pipeline.to(device or default_device())


def output_path(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Cannot write {path}: folder {folder} does not exist.")
    return path
