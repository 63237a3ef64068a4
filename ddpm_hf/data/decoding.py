# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Decoding: anything PIL opens -> 8-bit L or RGB at the target resolution, stacked into one uint8 tensor.

Files that fail to decode are skipped and reported; too many of them abort with their names.
"""

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from .dataset import DataError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (
    ".bmp", ".gif", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".pnm", ".ppm", ".tif", ".tiff", ".webp",
)

# Bicubic keeps strokes sharper than bilinear when the 8x8 digits are upscaled
# 4x; PIL antialiases when downscaling and clips to 0..255, so no overshoot.
RESAMPLE = Image.Resampling.BICUBIC

# A fraction alone tolerates no bad file in a small folder (1 of 21 is over 1%),
# so one stray corrupt file would abort training; this many are always skipped
# (with a warning naming them) unless the fraction is 0, which means "none".
MIN_BAD_IMAGES_TOLERATED = 1

# Bad files named in a warning or an error; the rest are counted ("and N more").
MAX_NAMES_SHOWN = 10


@dataclass(frozen=True)
class Decoder:
    resolution: int
    center_crop: bool
    channels: int | None
    max_bad_fraction: float
    show_progress: bool

    def decode_all(
        self, sources: Iterable[tuple[str, Any]], total: int, description: str,
        write: Callable[[np.ndarray], None] | None = None,
    ) -> tuple[torch.Tensor | None, list[int], list[str]]:
        """Decode (name, source) pairs: (the stacked uint8 (N, C, H, W) pixels, the positions of the images kept,
        the names skipped). With `write` (and `channels` known), each (C, H, W) image goes to it instead of being
        kept in memory, and the pixels returned are None."""
        arrays, kept, bad = [], [], []
        progress = tqdm(sources, total=total, desc=f"Decoding {description}", unit="img",
                        disable=not self.show_progress)
        for position, (name, source) in enumerate(progress):
            # PIL's decoders raise OSError, SyntaxError, ValueError, ...: for one file, all mean "bad file".
            try:
                image = self.decode_to_size(source)
            except Exception as err:  # noqa: BLE001
                bad.append((name, f"{type(err).__name__}: {err}"))
                continue
            kept.append(position)
            if write is not None:
                write(to_channels_first(image, self.channels))
            else:
                arrays.append(image)

        check_bad_fraction(bad, total, self.max_bad_fraction)
        if not kept:
            raise DataError(f"no image in {description} could be decoded")
        pixels = None if write is not None else _stack_pixels(arrays, self.channels)
        return pixels, kept, [name for name, _ in bad]

    def decode_to_size(self, source: Any) -> np.ndarray:
        """One image -> a uint8 (H, W) (grayscale) or (H, W, 3) array at the training resolution (raises if bad)."""
        image = _decode_image(source)
        if self.channels == 1:
            image = image.convert("L")
        return np.asarray(_fit_to_square(image, self.resolution, self.center_crop))

    def decode_one(self, source: Any) -> np.ndarray:
        """One image -> uint8 (C, H, W) with `channels` channels (which must be known), exactly as `decode_all`
        stores it."""
        return to_channels_first(self.decode_to_size(source), self.channels)


def image_channels(source: Any) -> int:
    """1 or 3: the channels `Decoder(channels=None)` would give this image, read from its header alone."""
    if isinstance(source, Image.Image):
        return 1 if _is_grayscale_mode(source.mode) else 3
    with Image.open(source) as image:
        return 1 if _is_grayscale_mode(image.mode) else 3


def to_channels_first(array: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) or (H, W, 3) -> (channels, H, W); a grayscale image broadcasts into 3 channels: exactly PIL's L -> RGB."""
    if array.ndim == 2:
        array = array[..., None]
    return np.ascontiguousarray(np.broadcast_to(array, array.shape[:2] + (channels,)).transpose(2, 0, 1))


def _decode_image(source: Any) -> Image.Image:
    if source is None:
        raise ValueError("no image data")
    if isinstance(source, Image.Image):
        return _to_l_or_rgb(source)
    with Image.open(source) as image:
        image.load()  # decode fully now, so truncated files fail here rather than during resize
        return _to_l_or_rgb(ImageOps.exif_transpose(image))


def _to_l_or_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to a new 8-bit "L" (grayscale modes) or "RGB" image."""
    if image.mode.startswith("I"):
        return _wide_int_to_l(image)
    if _has_transparency(image):
        rgb = _composite_on_black(image.convert("RGBA"))
        return rgb.convert("L") if _is_grayscale_mode(image.mode) else rgb
    # "F" is taken as 0..255 (PIL clips); P, CMYK, YCbCr, ... convert to RGB.
    return image.convert("L" if _is_grayscale_mode(image.mode) else "RGB")


def _is_grayscale_mode(mode: str) -> bool:
    return mode in ("1", "L", "LA", "F") or mode.startswith("I")


def _has_transparency(image: Image.Image) -> bool:
    # Palette, L and RGB images can carry a transparent colour in info instead of an alpha band.
    return image.mode in ("LA", "PA", "RGBA", "RGBa") or "transparency" in image.info


def _composite_on_black(rgba: Image.Image) -> Image.Image:
    # Black, because the models learn "background = -1": transparent pixels are
    # absent ink (as in white-on-black digits), and this equals premultiplied alpha.
    background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _wide_int_to_l(image: Image.Image) -> Image.Image:
    # 16-bit PNG/TIFF open as "I;16*" (or "I" in older Pillow); PIL's convert("L")
    # would clip them at 255 instead of scaling. Both are read as 0..65535.
    values = np.clip(np.asarray(image).astype(np.float64), 0, 65535)
    return Image.fromarray(np.rint(values / 257).astype(np.uint8), "L")


def _fit_to_square(image: Image.Image, resolution: int, center_crop: bool) -> Image.Image:
    size = (resolution, resolution)
    if image.size == size:
        return image
    if not center_crop:
        return image.resize(size, RESAMPLE)
    # Resizing the centred square box is "resize short side, then centre crop"
    # done in one step, without rounding the intermediate size.
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return image.resize(size, RESAMPLE, box=(left, top, left + side, top + side))


def allowed_bad_images(total: int, max_bad_fraction: float) -> int:
    """How many of ``total`` images may fail to decode: max(MIN_BAD_IMAGES_TOLERATED, floor(fraction * total)), or 0."""
    if max_bad_fraction <= 0:
        return 0
    allowed = math.floor(max_bad_fraction * total)
    # 0.29 * 100 is 28.999...96 in floats: count as allowed every n with n / total <= fraction, as the user means it.
    if (allowed + 1) / total <= max_bad_fraction:
        allowed += 1
    return max(MIN_BAD_IMAGES_TOLERATED, allowed)


def check_bad_fraction(bad: list[tuple[str, str]], total: int, max_bad_fraction: float) -> None:
    if not bad:
        return
    allowed = allowed_bad_images(total, max_bad_fraction)
    names = _name_list([name for name, _ in bad])
    if len(bad) <= allowed:
        logger.warning("Skipped %d of %d images that could not be decoded: %s", len(bad), total, names)
        return
    # The reasons would make the error unreadable; they go to the log, one line per file, for whoever digs.
    logger.error("Images that could not be decoded:\n%s",
                 "\n".join(f"  {name}: {' '.join(reason.split())}" for name, reason in bad))
    # The smallest whole percent that tolerates all of them, offered as the value to pass.
    enough = math.ceil(len(bad) * 100 / total) / 100
    raise DataError(
        f"{len(bad)} of {total} images could not be decoded ({len(bad) / total:.1%}; "
        f"--max_bad_image_fraction {max_bad_fraction:g} tolerates {allowed}): {names}; "
        f"remove or re-encode these files, or pass --max_bad_image_fraction {enough:g} to skip them"
    )


def _name_list(names: list[str]) -> str:
    """The first names, comma separated, then how many more: keeps the message one readable line."""
    shown = ", ".join(names[:MAX_NAMES_SHOWN])
    return shown + (f" and {len(names) - MAX_NAMES_SHOWN} more" if len(names) > MAX_NAMES_SHOWN else "")


def _stack_pixels(arrays: list[np.ndarray], channels: int | None) -> torch.Tensor:
    channels = channels or (3 if any(array.ndim == 3 for array in arrays) else 1)
    height, width = arrays[0].shape[:2]
    # Allocated channels-first and filled image by image: one copy of the set, not an NHWC copy and then another.
    batch = torch.empty((len(arrays), channels, height, width), dtype=torch.uint8)
    pixels = batch.numpy()
    for index, array in enumerate(arrays):
        pixels[index] = to_channels_first(array, channels)
    return batch
