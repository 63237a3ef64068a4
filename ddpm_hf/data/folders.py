# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""An image folder as a source (``--train_data_dir``): every image file under it, searched recursively and sorted,
with the conventions of `datasets`' imagefolder: captions from ``metadata.jsonl`` files (a "file_name" and a caption
column per line), class labels from the first sub-folder of each image, hidden files and folders left out."""

import json
import logging
import os
import posixpath
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..caching import fingerprint
from ..text.captions import caption_text
from .dataset import DataError, ImageListing
from .decoding import IMAGE_EXTENSIONS
from .options import subset_indices

logger = logging.getLogger(__name__)


def list_folder(folder: str, want_captions: bool, caption_column: str, want_classes: bool,
                max_samples: int | None, seed: int) -> ImageListing:
    """The images under ``folder`` (a seeded subset of ``max_samples``), with their captions and class labels if
    wanted; identified for the decoded cache by each file's name, size and modification time."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"train_data_dir {folder!r} " + ("is not a folder" if root.exists() else "does not exist"))
    files = find_image_files(root)
    if not files:
        raise DataError(
            f"no image files found in {folder!r} (searched recursively; recognised extensions: "
            f"{', '.join(IMAGE_EXTENSIONS)})"
        )
    names = [path.relative_to(root).as_posix() for path in files]
    indices = subset_indices(len(files), max_samples, seed)
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


def find_image_files(root: Path) -> list[Path]:
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
