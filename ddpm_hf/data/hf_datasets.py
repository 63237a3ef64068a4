# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Anything the `datasets` library opens, as a source (``--dataset_name``): a Hub id, a local folder it reads (e.g.
an imagefolder), a ``save_to_disk`` folder, or a single .parquet/.arrow/.csv/.json/.jsonl file.

`open_hf_dataset` opens the train split (whole, or with ``streaming`` as a stream: `streaming.py` reads it so);
`list_hf_dataset` lists the rows of a whole split for storing. Both read the image column undecoded
(`undecoded_images`, then `image_cell_source` per cell), so that a bad image is skipped by the decoder, not raised by
`datasets`, and name a cell by its row (`image_cell_name`). Whatever `datasets` raises becomes one `DataError`
(`call_datasets`).
"""

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..caching import fingerprint
from ..choices import EMBEDDED_DATASETS
from ..text.captions import caption_text
from .dataset import DataError, ImageListing
from .options import subset_indices

T = TypeVar("T")

# Single files that `datasets` reads with a packaged builder, by extension.
DATA_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json"}


def list_hf_dataset(name: str, config: str | None, image_column: str, want_captions: bool, caption_column: str,
                    class_column: str | None, max_samples: int | None, seed: int) -> ImageListing:
    """The rows of the train split of ``name`` (a seeded subset of ``max_samples``), images undecoded, with their
    captions and class labels if wanted; identified for the decoded cache by `datasets`' fingerprint of the table."""
    dataset, base_dir = open_hf_dataset(name, config)
    if len(dataset) == 0:
        raise DataError(f"dataset {name!r} has no rows in its train split")
    require_column(dataset.column_names, image_column, "image")
    if want_captions:
        require_column(dataset.column_names, caption_column, "caption")
    class_names, number = None, None
    if class_column is not None:
        require_column(dataset.column_names, class_column, "class")
        class_names, number = _dataset_classes(dataset, class_column)
    table_fingerprint = getattr(dataset, "_fingerprint", None)  # datasets' own hash of the table
    indices = subset_indices(len(dataset), max_samples, seed)
    rows = dataset.select(indices) if len(indices) < len(dataset) else dataset
    # Captions and labels are read column by column: the image bytes stay where they are until decoded.
    captions = [caption_text(value) for value in rows[caption_column]] if want_captions else None
    labels = [number(value) for value in rows[class_column]] if class_column else None
    images = DatasetImages(undecoded_images(rows, image_column).select_columns([image_column]), image_column,
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
        return image_cell_name(self.rows[position][self.column], int(self.row_numbers[position]))

    def source(self, position: int) -> Any:
        return image_cell_source(self.rows[position][self.column], self.base_dir)


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


def open_hf_dataset(name: str, config: str | None, streaming: bool = False) -> tuple[Any, Path | None]:
    """The train split of ``name`` (with ``streaming``, as a `datasets.IterableDataset` read as it goes) and the
    folder relative image paths are resolved against (None for the Hub)."""
    import datasets  # imported here: slow to import, and unneeded for embedded sets and folders

    path = Path(name).expanduser()
    if path.is_dir() and is_saved_dataset(path):
        if streaming:
            raise DataError(f"{name!r} is a save_to_disk folder: it is on disk already, so train it without"
                            " --streaming (--data_storage memmap or lazy serve sets larger than memory)")
        return _train_split(call_datasets(repr(name), lambda: datasets.load_from_disk(str(path))), name), path
    if path.is_dir():
        load = lambda: datasets.load_dataset(str(path), config, split="train", streaming=streaming)  # noqa: E731
        return call_datasets(repr(name), load), path
    if path.is_file():
        builder = DATA_FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            folder_hint = "" if streaming else "; for a folder of images use --train_data_dir"
            raise DataError(f"cannot {'stream' if streaming else 'read'} {name!r}: dataset files must end in"
                            f" {', '.join(DATA_FILE_BUILDERS)}{folder_hint}")
        if config:
            raise DataError(f"--dataset_config_name applies to Hub datasets and folders, not to the file {name!r}")
        load = lambda: datasets.load_dataset(builder, data_files=str(path), split="train", streaming=streaming)  # noqa: E731
        return call_datasets(repr(name), load), path.parent
    from ..hub import is_hub_id  # imported here: ddpm_hf.hub loads huggingface_hub, which only Hub ids need

    if not is_hub_id(name) or path.suffix.lower() in DATA_FILE_BUILDERS:
        raise DataError(f"dataset path {name!r} does not exist")
    hint = f" (for the copy that ships with this package use --embedded {name})" if name in EMBEDDED_DATASETS else ""
    what = f"{name!r} from the Hugging Face Hub (check the id and the network, or pass a local path){hint}"
    load = lambda: datasets.load_dataset(name, config, split="train", streaming=streaming)  # noqa: E731
    return call_datasets(what, load), None


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


def call_datasets(what: str, load: Callable[[], T]) -> T:
    # datasets raises many unrelated types (OSError, ValueError, its own DatasetsError tree, ...): surface one.
    try:
        return load()
    except Exception as err:  # noqa: BLE001
        raise DataError(f"could not load dataset {what}: {type(err).__name__}: {err}") from err


def require_column(column_names: list[str], column: str, kind: str) -> None:
    """A DataError naming the columns there are when ``column`` (of the ``kind`` flag: image, caption, class) is not
    one of them."""
    if column not in column_names:
        raise DataError(
            f"{kind} column {column!r} not found; available columns: {column_names}. "
            f"Choose one with --{kind}_column"
        )


def undecoded_images(dataset: Any, image_column: str) -> Any:
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


def image_cell_source(value: Any, base_dir: Path | None) -> Any:
    """What PIL opens for an undecoded image cell: its bytes as a file object, or its path (a relative one under
    ``base_dir``); None for an empty cell."""
    if isinstance(value, dict):  # datasets.Image(decode=False): {"bytes": ..., "path": ...}
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return io.BytesIO(value)
    if isinstance(value, str):
        path = Path(value).expanduser()
        return path if path.is_absolute() or base_dir is None else base_dir / path
    return None


def image_cell_name(value: Any, index: int) -> str:
    """How messages name the image of row ``index``: the row, and the file the cell came from if it says."""
    path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
    return f"row {index}" + (f" ({path})" if path else "")
