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
    from ..pipeline_utils import check_pipeline_folder

    if os.path.isdir(name_or_path):
        check_pipeline_folder(name_or_path)  # an interrupted save or run, a broken index: said before any loading
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
    for name, weight in pipeline.unet.named_parameters():  # NaN weights would sample an all-black grid, silently
        if not torch.isfinite(weight).all():
            raise ValueError(f"The UNet of {name_or_path} has NaN or infinite weights ({name}): training diverged or"
                             f" the file is damaged; resume the run from an earlier checkpoint or retrain.")
    return pipeline.to(device or default_device())


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def output_path(path: str) -> str:
    """`path` if an image can be written there, checked before any sampling: its folder exists, it is no folder
    itself, and its extension names an image format."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Cannot write {path}: folder {folder} does not exist.")
    if os.path.isdir(path):
        raise IsADirectoryError(f"Cannot write {path}: it is a folder; name the image file, e.g. {path}/grid.png.")
    if os.path.splitext(path)[1].lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"Cannot write {path}: the extension must name an image format ({', '.join(IMAGE_SUFFIXES)}).")
    return path
