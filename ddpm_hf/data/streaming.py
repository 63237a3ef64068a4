# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""`--streaming`: train on a `datasets` stream (a Hub data set too big to download whole, or local data files) read
shard by shard, decoded as it goes, never stored.

`open_streaming_dataset` opens the train split with ``streaming=True``, casts the image column to undecoded bytes
(so a bad image is skipped here, not raised by `datasets`), shuffles the order of its shards with a seed and keeps
this process's part (`datasets.distributed.split_dataset_by_node`). `streaming_loader` turns that into an endless
`StatefulDataLoader` of `order.MicroBatch`es, its rows shuffled in blocks: when this process's part ends, the next
epoch starts (``set_epoch``: another shard order, the same on every process, so the processes still split each
epoch without overlap, and other block permutations).

Resume contract: `loader_state` saves the epoch and the loader's state (for each worker: where in `datasets`' stream
its current shuffle block began, the block's number, how many of its rows it yielded; which worker yields next).
`streaming_loader(..., state=...)` continues from there, in the same epoch, and yields exactly the micro-batches the
uninterrupted loader would have, with or without workers, with or without a shuffle buffer, across epoch ends. The
rows are shuffled in blocks of ``shuffle_buffer_size`` (each permuted by seed, epoch, worker and block number), not
by `datasets`' shuffle buffer, whose state leaves out the rows in the buffer, so that it cannot resume exactly; a
resume re-reads at most one block from the stream.

Only the same layout can resume: the same number of processes, workers and batch size (`check_resumable`), because a
saved offset is an offset into the part of the stream one worker of one process reads; and the same data, ``seed``
and ``shuffle_buffer_size`` (not checked: the trainer passes the run's own). The saved state is plain JSON (the
trainer stores it in its checkpoint).

Each epoch ends on its own micro-batch (its last one may be smaller), so batches never mix two epochs.
"""

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .dataset import DataError
from .decoding import Decoder, image_channels
from .hf_datasets import (
    call_datasets,
    image_cell_name,
    image_cell_source,
    open_hf_dataset,
    require_column,
    undecoded_images,
)
from .options import check_options
from .order import MicroBatch

# Bumped whenever the layout of `loader_state`'s dict changes, so an old checkpoint is refused, not misread.
STATE_FORMAT = 1

# How non-JSON values of the loader's state are written (see `_to_json`): StatefulDataLoader keys its workers' states
# by int worker id, which JSON would turn into strings. The codec is the stream's own: `loader_state` promises plain
# JSON whatever torchdata's state holds, and the checkpoint (trainer/checkpoints.py) stores that JSON unread.
_ITEMS_TAG, _TUPLE_TAG = "__ddpm_hf_items__", "__ddpm_hf_tuple__"


@dataclass
class StreamingImages:
    """What a --streaming run trains on: this process's part of the stream, and how to decode it."""

    rows: Any  # datasets.IterableDataset: this process's shard, shuffled, image column undecoded
    decoder: Decoder  # channels resolved (1 or 3)
    image_column: str
    class_column: str | None
    class_names: list[str] | None  # a row's label l names class_names[l] (with class_column)
    source: str
    base_dir: Path | None = None  # where relative image paths of the rows are resolved (None for the Hub)
    process_index: int = 0
    num_processes: int = 1
    seed: int = 0  # of the block shuffle (see `_DecodedRows`); datasets' shard order got it at open
    shuffle_buffer_size: int = 1000  # rows per shuffled block; 0 or 1: the rows of each shard in their order

    @property
    def channels(self) -> int:
        return self.decoder.channels


def open_streaming_dataset(
    *,
    dataset_name: str,
    dataset_config_name: str | None = None,
    image_column: str = "image",
    class_column: str | None = None,
    resolution: int,
    center_crop: bool = False,
    channels: int | None = None,
    seed: int = 0,
    shuffle_buffer_size: int = 1000,
    process_index: int = 0,
    num_processes: int = 1,
    max_bad_fraction: float = 0.01,
) -> StreamingImages:
    """This process's part of the train split of ``dataset_name`` (a Hub id, a local folder `datasets` reads, or a
    .parquet/.arrow/.csv/.json/.jsonl file), shuffled by ``seed``, streamed.

    ``channels=None`` reads the header of the stream's first image: 1 if it is grayscale, else 3; every image of
    the stream is then converted to that. ``class_column`` must be a ``ClassLabel`` column: its labels are the
    conditions, its names ``class_names``. ``shuffle_buffer_size``: rows per shuffled block (see `_DecodedRows`);
    0 or 1 keeps the rows of each shard in their order (the shards are still read in a seeded order).

    ``max_bad_fraction`` is kept on the decoder for the trainer; a stream has no length to take a fraction of, so
    this module leaves every bad image out of its batch and names it (`MicroBatch.skipped`), and aborts nothing.
    """
    import datasets  # imported here: slow to import
    from datasets.distributed import split_dataset_by_node

    check_options(resolution, channels, None, max_bad_fraction)
    _check_datasets_version(datasets.__version__)
    if not isinstance(num_processes, int) or num_processes < 1 or not 0 <= process_index < num_processes:
        raise DataError(f"process {process_index!r} of {num_processes!r}: need 0 <= process_index < num_processes")
    if not isinstance(shuffle_buffer_size, int) or shuffle_buffer_size < 0:
        raise DataError(f"shuffle_buffer_size must be an integer >= 0, got {shuffle_buffer_size!r};"
                        " pass e.g. --shuffle_buffer_size 1000 (0 keeps each shard's order)")

    rows, base_dir = open_hf_dataset(dataset_name, dataset_config_name, streaming=True)
    columns = _column_names(rows, dataset_name)
    require_column(columns, image_column, "image")
    class_names = None
    if class_column is not None:
        require_column(columns, class_column, "class")
        feature = (rows.features or {}).get(class_column)
        if not isinstance(feature, datasets.ClassLabel):
            raise DataError(f"class column {class_column!r} holds {feature or 'values of no declared type'}, not a"
                            " ClassLabel: --streaming takes class names from a ClassLabel feature (it cannot read"
                            " the whole stream to collect the values); cast the column to ClassLabel, or train"
                            " without --streaming")
        class_names = list(feature.names)
    if rows.features is not None:
        rows = undecoded_images(rows, image_column)  # Image -> Image(decode=False); refuses a non-image column
    rows = rows.select_columns([image_column] + ([class_column] if class_column else []))

    if channels is None:
        channels = _first_image_channels(rows, image_column, base_dir, dataset_name)
    decoder = Decoder(resolution, center_crop, channels, max_bad_fraction, show_progress=False)

    # datasets shuffles the shard order by the seed (and by the epoch, at each set_epoch); the rows are shuffled by
    # `_DecodedRows`, in blocks, because datasets' shuffle buffer does not resume exactly: its state is the offset
    # its source read up to, without the rows in the buffer, and in 5.2 a resume replays the buffer's output from an
    # earlier offset with a fresh buffer (rows come twice, others never). With buffer_size=1 its stream is exact.
    # max_buffer_input_shards=1: with more, datasets 5.2 cannot resume in a DataLoader worker at all:
    # IterableDataset._iter_pytorch first restores the saved state into the process's whole iterable (in
    # _prepare_ex_iterable_for_iteration), whose shard interleaving holds one entry per shard of the process, from a
    # worker's state that holds one per shard of the worker, and fails (IndexError in load_state_dict).
    rows = rows.shuffle(seed=seed, buffer_size=1, max_buffer_input_shards=1)
    rows = split_dataset_by_node(rows, rank=process_index, world_size=num_processes)
    return StreamingImages(rows=rows, decoder=decoder, image_column=image_column, class_column=class_column,
                           class_names=class_names, source=dataset_name, base_dir=base_dir,
                           process_index=process_index, num_processes=num_processes, seed=seed,
                           shuffle_buffer_size=shuffle_buffer_size)


# Before datasets 5.1, IterableDataset.state_dict does not survive a second resume: a run resumed twice loses its
# place.
MIN_DATASETS_VERSION = (5, 1)


def _check_datasets_version(version: str) -> None:
    from packaging.version import Version

    if Version(version).release[:2] < MIN_DATASETS_VERSION:
        wanted = ".".join(map(str, MIN_DATASETS_VERSION))
        raise DataError(f"--streaming needs datasets >= {wanted} (this is {version}, whose stream state does not"
                        f" survive a second resume): pip install -U 'datasets>={wanted}'")


def _column_names(rows: Any, name: str) -> list[str]:
    # A stream built by a loading script (or after a map) may declare no features: its first row has the columns.
    if rows.features is not None:
        return list(rows.features)
    first = _first_row(rows, name)
    return list(first)


def _first_row(rows: Any, name: str) -> dict:
    row = call_datasets(repr(name), lambda: next(iter(rows.take(1)), None))
    if row is None:
        raise DataError(f"dataset {name!r} has no rows in its train split")
    return row


def _first_image_channels(rows: Any, image_column: str, base_dir: Path | None, name: str) -> int:
    """1 or 3, from the header of the first image of the (unshuffled) stream: no buffer is filled to find it."""
    value = _first_row(rows, name)[image_column]
    try:
        return image_channels(_image_source(value, base_dir))
    except Exception as err:  # noqa: BLE001  (PIL raises many types for one bad header)
        raise DataError(f"cannot tell grayscale from RGB: the first image of {name!r} ({image_cell_name(value, 0)})"
                        f" does not open ({type(err).__name__}: {err}); pass --channels 1 or --channels 3") from err


def _image_source(value: Any, base_dir: Path | None) -> Any:
    # A stream without declared features yields whatever its builder made, which may be a decoded PIL image.
    return value if isinstance(value, Image.Image) else image_cell_source(value, base_dir)


class _DecodedRows(torch.utils.data.IterableDataset):
    """The rows of a `StreamingImages`, shuffled in blocks and decoded one by one: (uint8 (C, H, W) pixels or None
    when the image does not decode, the label or None, the row's name). It runs in the DataLoader workers when there
    are any; `datasets` gives each worker its own shards of this process's part.

    The shuffle: the rows are read in blocks of ``shuffle_buffer_size``, each block permuted by (seed, epoch, worker,
    block). Stateful (StatefulDataLoader calls `state_dict` / `load_state_dict` in the process that iterates it): the
    state is the `datasets` state where the current block began, the block's number and how many of its rows were
    yielded. A resume re-reads that block from the stream (not more than a buffer of rows) and permutes it the same
    way, so it continues exactly; datasets' own buffer cannot (its state omits the buffer's rows).
    """

    def __init__(self, stream: StreamingImages):
        self.stream = stream
        self._state = {"block_start": None, "block": 0, "offset": 0, "position": 0}
        self._resume = None  # a restored state, for the next __iter__ only

    def set_epoch(self, epoch: int) -> None:
        self.stream.rows.set_epoch(epoch)

    def __iter__(self):
        stream, decoder = self.stream, self.stream.decoder
        rows = stream.rows
        epoch = rows.epoch
        worker = torch.utils.data.get_worker_info()
        worker_id = worker.id if worker is not None else 0
        where = (f" in epoch {epoch}" + (f" of worker {worker_id}" if worker is not None else "")
                 + (f" of process {stream.process_index}" if stream.num_processes > 1 else ""))
        state = self._resume or {"block_start": None, "block": 0, "offset": 0, "position": 0}
        self._state, self._resume = dict(state), None
        if state["block_start"] is not None:
            # datasets applies this at the iteration below, the loader having set the saved epoch first
            # (IterableDataset._prepare_ex_iterable_for_iteration: only while `self.epoch` equals the state's).
            rows.load_state_dict(state["block_start"])
        source = iter(rows)
        block_size = max(1, stream.shuffle_buffer_size)
        while True:
            block = list(itertools.islice(source, block_size))
            if not block:
                return
            order = block_order(len(block), stream.seed, epoch, worker_id, self._state["block"])
            for index in range(self._state["offset"], len(block)):
                row = block[order[index]]
                value = row[stream.image_column]
                # Named by its row in the stream as datasets reads it (every block but an epoch's last is full), not
                # by its shuffled position: with one data file, one process and no workers, its row in the file.
                name = image_cell_name(value, self._state["block"] * block_size + order[index]) + where
                self._state["offset"], self._state["position"] = index + 1, self._state["position"] + 1
                # PIL's decoders raise OSError, SyntaxError, ValueError, ...: for one image, all mean "bad image".
                try:
                    pixels = decoder.decode_one(_image_source(value, stream.base_dir))
                    pixels = torch.from_numpy(np.require(pixels, requirements="W"))  # torch wants it writable
                except Exception:  # noqa: BLE001
                    pixels = None
                label = int(row[stream.class_column]) if stream.class_column is not None else None
                yield pixels, label, name
            # The next block begins where `datasets` stands now: after this block's last row.
            self._state.update(block_start=rows.state_dict(), block=self._state["block"] + 1, offset=0)

    def state_dict(self) -> dict:
        return dict(self._state)

    def load_state_dict(self, state: dict) -> None:
        self._resume = dict(state)


def block_order(length: int, seed: int, epoch: int, worker: int, block: int) -> list[int]:
    """The order in which the rows of one shuffle block are yielded: a permutation of range(length)."""
    if length == 1:
        return [0]
    key = [seed & (2**63 - 1), epoch, worker, block]  # SeedSequence takes non-negative integers
    return np.random.default_rng(key).permutation(length).tolist()


class _Collate:
    """A batch of decoded rows -> `MicroBatch`: the rows that decoded, in order, and the names of those that did not
    (left out, not replaced: a micro-batch never takes images from elsewhere)."""

    def __init__(self, channels: int, resolution: int, conditional: bool):
        self.shape, self.conditional = (channels, resolution, resolution), conditional

    def __call__(self, items: list[tuple[torch.Tensor | None, int | None, str]]) -> MicroBatch:
        kept = [(pixels, label) for pixels, label, _ in items if pixels is not None]
        pixels = (torch.stack([p for p, _ in kept]) if kept else torch.empty((0, *self.shape), dtype=torch.uint8))
        conditions = torch.tensor([label for _, label in kept], dtype=torch.int64) if self.conditional else None
        return MicroBatch(pixels, conditions, tuple(name for p, _, name in items if p is None))


try:
    from torchdata.stateful_dataloader import StatefulDataLoader
except ImportError:  # the module imports without torchdata; streaming_loader says what to install
    StatefulDataLoader = None


if StatefulDataLoader is not None:

    class StreamingLoader(StatefulDataLoader):
        """An endless StatefulDataLoader: each pass over this process's part of the stream is one epoch, then the
        next starts. ``epoch`` is the epoch being read (saved by `loader_state` with the loader's own state)."""

        def __init__(self, dataset: _DecodedRows, *, epoch: int = 0, **kwargs):
            super().__init__(dataset, **kwargs)
            self.epoch = epoch

        def __iter__(self):
            empty_epochs = 0
            while True:
                # Before the iterator exists: its workers are forked now and read the epoch `datasets` keeps in
                # shared memory; a restored state applies to this epoch only.
                self.dataset.set_epoch(self.epoch)
                yielded = False
                for batch in super().__iter__():
                    yielded = True
                    yield batch
                # A resumed epoch may have nothing left; two empty epochs in a row mean this part has no rows.
                empty_epochs = 0 if yielded else empty_epochs + 1
                if empty_epochs >= 2:
                    stream = self.dataset.stream
                    raise DataError(f"process {stream.process_index} of {stream.num_processes} got no rows of"
                                    f" {stream.source!r}: the data set has fewer rows (or shards) than processes;"
                                    " train with fewer --num_processes")
                self.epoch += 1


def streaming_loader(stream: StreamingImages, *, batch_size: int, num_workers: int = 0, pin_memory: bool = False,
                     state: dict | None = None) -> "StreamingLoader":
    """An endless loader of this process's `MicroBatch`es (uint8 pixels, unflipped; int64 labels with a class
    column, else None; the names of the rows left out because their image did not decode).

    ``state``: what `loader_state` saved (after a JSON round trip, checked by `check_resumable`): the loader
    continues from there (see the module's resume contract).
    """
    if StatefulDataLoader is None:
        raise DataError("--streaming needs torchdata's StatefulDataLoader: pip install torchdata")
    epoch, loader_dict = 0, None
    if state is not None:
        check_resumable(state, num_processes=stream.num_processes, num_workers=num_workers, batch_size=batch_size)
        epoch, loader_dict = state["epoch"], _from_json(state["loader"])
    loader = StreamingLoader(
        _DecodedRows(stream),
        epoch=epoch,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=_Collate(stream.channels, stream.decoder.resolution, stream.class_column is not None),
    )
    if loader_dict is not None:
        loader.load_state_dict(loader_dict)
    return loader


def loader_state(loader: "StreamingLoader", *, num_processes: int, num_workers: int, batch_size: int) -> dict:
    """The loader's position as plain JSON: its epoch, its StatefulDataLoader state, and the layout it needs."""
    return {
        "format": STATE_FORMAT,
        "num_processes": num_processes,
        "num_workers": num_workers,
        "batch_size": batch_size,
        "epoch": loader.epoch,
        "loader": _to_json(loader.state_dict()),
    }


def check_resumable(saved: dict, *, num_processes: int, num_workers: int, batch_size: int) -> dict:
    """``saved`` (a `loader_state`) if this run can continue it, for `streaming_loader(state=...)`; else a DataError
    naming what differs."""
    if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
        found = saved.get("format") if isinstance(saved, dict) else type(saved).__name__
        raise DataError(f"the checkpoint's stream state has format {found!r}, this version reads {STATE_FORMAT}:"
                        " start a new run into another --output_dir")
    flags = (("num_processes", num_processes, "--num_processes"),
             ("num_workers", num_workers, "--dataloader_num_workers"),
             ("batch_size", batch_size, "--train_batch_size"))
    for key, now, flag in flags:
        if saved[key] != now:
            raise DataError(f"the checkpoint's stream was read with {flag} {saved[key]}, this run has {now}: a saved"
                            f" shard offset means nothing under another split; resume with {flag} {saved[key]}, or"
                            " start a new run into another --output_dir")
    return saved


def _to_json(value: Any) -> Any:
    """The loader's state with every non-JSON value spelled out, so that `_from_json(json.loads(json.dumps(...)))`
    gives it back exactly: dicts with non-string keys as tagged item lists, tuples tagged, numpy scalars as Python."""
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value) and _ITEMS_TAG not in value and _TUPLE_TAG not in value:
            return {key: _to_json(item) for key, item in value.items()}
        return {_ITEMS_TAG: [[_to_json(key), _to_json(item)] for key, item in value.items()]}
    if isinstance(value, tuple):
        return {_TUPLE_TAG: [_to_json(item) for item in value]}
    if isinstance(value, list):
        return [_to_json(item) for item in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:  # numpy / torch scalar
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise TypeError(f"the stream loader's state holds a {type(value).__name__}, which JSON cannot carry: {value!r}")


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if _ITEMS_TAG in value:
            return {_hashable(_from_json(key)): _from_json(item) for key, item in value[_ITEMS_TAG]}
        if _TUPLE_TAG in value:
            return tuple(_from_json(item) for item in value[_TUPLE_TAG])
        return {key: _from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_from_json(item) for item in value]
    return value


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key
