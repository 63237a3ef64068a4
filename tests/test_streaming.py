# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""--streaming: `data.streaming` on real `datasets` streams of local parquet files (offline).

Every image is 8x8 grayscale, black but for pixels (0, 0) and (0, 1), which hold its row id; its label is id % 3.
The data is 4 parquet files of 12 rows (ids 0..47), so 2 processes get 2 files each and 2 workers 1 file each.
"""

import io
import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_hf.data.dataset import DataError
from ddpm_hf.data.streaming import block_order, check_resumable, loader_state, open_streaming_dataset, streaming_loader

SHARDS, ROWS_PER_SHARD, BATCH = 4, 12, 4
ROWS = SHARDS * ROWS_PER_SHARD
BATCHES_PER_EPOCH = ROWS // 2 // BATCH  # per process of 2: 24 rows, 6 micro-batches
CLASS_NAMES = ["zero", "one", "two"]


@pytest.fixture(autouse=True)
def no_shutdown_sleep(monkeypatch):
    # datasets 5.2 sleeps config.SLEEP_TIME_ON_THREADS_SHUTDOWN (5 s) each time a pass over interleaved parquet
    # shards ends (an Arrow thread-shutdown workaround): every epoch here. It reads the value at that moment, and
    # forked workers inherit the patch.
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


def png(row_id: int) -> bytes:
    array = np.zeros((8, 8), dtype=np.uint8)
    array[0, :2] = row_id
    buffer = io.BytesIO()
    Image.fromarray(array, "L").save(buffer, format="PNG")
    return buffer.getvalue()


def write_shards(folder, damaged=(), extra_column=False, shards=SHARDS):
    """`shards` parquet files in `folder` (ROWS rows in all); rows whose id is in `damaged` hold garbage instead of
    a PNG."""
    features = {"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASS_NAMES)}
    if extra_column:
        features["kind"] = datasets.Value("string")
    folder.mkdir()
    for shard in range(shards):
        ids = range(shard * ROWS // shards, (shard + 1) * ROWS // shards)
        columns = {
            "image": [{"bytes": b"not an image" if i in damaged else png(i), "path": None} for i in ids],
            "label": [i % 3 for i in ids],
        }
        if extra_column:
            columns["kind"] = ["digit"] * len(ids)
        dataset = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
        dataset.to_parquet(str(folder / f"train-{shard:05d}-of-{shards:05d}.parquet"))
    return folder


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("stream") / "data")


def open_stream(folder, process_index=0, num_processes=2, **options):
    options = {"class_column": "label", "resolution": 8, "seed": 3, "shuffle_buffer_size": 0, **options}
    return open_streaming_dataset(dataset_name=str(folder), process_index=process_index,
                                  num_processes=num_processes, **options)


def ids_of(batch) -> list[int]:
    """The row ids of a micro-batch, after checking every image is exactly the one written for its id and label."""
    ids = batch.pixels[:, 0, 0, 0].tolist()
    for image, row_id, label in zip(batch.pixels, ids, batch.conditions.tolist()):
        expected = torch.zeros((1, 8, 8), dtype=torch.uint8)
        expected[0, 0, :2] = row_id
        assert torch.equal(image, expected)
        assert label == row_id % 3
    return ids


def take(loader, batches, count):
    """The next `count` micro-batches of `batches` as (epoch being read, row ids, skipped names)."""
    out = []
    for _ in range(count):
        batch = next(batches)
        out.append((loader.epoch, ids_of(batch), batch.skipped))
    return out


def epoch_ids(taken, epoch) -> list[int]:
    return [i for e, ids, _ in taken if e == epoch for i in ids]


def round_trip(loader, num_workers):
    return json.loads(json.dumps(loader_state(loader, num_processes=2, num_workers=num_workers, batch_size=BATCH)))


def test_processes_split_every_epoch_and_a_seed_repeats_the_stream(shards):
    runs = []
    for process in (0, 1):
        loader = streaming_loader(open_stream(shards, process, shuffle_buffer_size=8), batch_size=BATCH)
        runs.append(take(loader, iter(loader), 2 * BATCHES_PER_EPOCH))
        assert [epoch for epoch, _, _ in runs[-1]] == [0] * BATCHES_PER_EPOCH + [1] * BATCHES_PER_EPOCH
    for epoch in (0, 1):
        first, second = epoch_ids(runs[0], epoch), epoch_ids(runs[1], epoch)
        assert len(first) == len(second) == ROWS // 2
        assert not set(first) & set(second)
        assert sorted(first + second) == list(range(ROWS))
    # Another epoch, another shuffle (of the shards among processes and of the rows in the buffer).
    assert epoch_ids(runs[0], 0) + epoch_ids(runs[1], 0) != epoch_ids(runs[0], 1) + epoch_ids(runs[1], 1)

    again = streaming_loader(open_stream(shards, 0, shuffle_buffer_size=8), batch_size=BATCH)
    assert take(again, iter(again), 2 * BATCHES_PER_EPOCH) == runs[0]
    other = streaming_loader(open_stream(shards, 0, shuffle_buffer_size=8, seed=4), batch_size=BATCH)
    assert take(other, iter(other), 2 * BATCHES_PER_EPOCH) != runs[0]


def test_the_stream_has_the_data_sets_classes_and_channels(shards):
    stream = open_stream(shards)
    assert stream.class_names == CLASS_NAMES
    assert stream.channels == 1  # read from the first image's header
    rgb = open_stream(shards, channels=3)
    batch = next(iter(streaming_loader(rgb, batch_size=BATCH)))
    assert batch.pixels.shape == (BATCH, 3, 8, 8)
    assert torch.equal(batch.pixels[:, 0], batch.pixels[:, 2])  # grayscale broadcast into RGB
    assert batch.pixels[:, 1, 0, 0].tolist() == batch.pixels[:, 0, 0, 0].tolist() != [0] * BATCH


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("buffer", [0, 5])  # 5: blocks straddle the shards' ends and micro-batches
def test_resume_continues_exactly_where_the_stream_was(shards, num_workers, buffer):
    total = 2 * BATCHES_PER_EPOCH + 3
    options = {"shuffle_buffer_size": buffer}
    reference_loader = streaming_loader(open_stream(shards, **options), batch_size=BATCH, num_workers=num_workers)
    reference = take(reference_loader, iter(reference_loader), total)
    if buffer:  # the rows are shuffled within blocks: not in the order the shards hold them
        assert epoch_ids(reference, 0) != sorted(epoch_ids(reference, 0))
    # Inside epoch 0, exactly at its end, and inside epoch 1 (after a boundary).
    for stop in (2, BATCHES_PER_EPOCH, BATCHES_PER_EPOCH + 2):
        loader = streaming_loader(open_stream(shards, **options), batch_size=BATCH, num_workers=num_workers)
        before = take(loader, iter(loader), stop)
        state = round_trip(loader, num_workers)
        assert state["epoch"] == before[-1][0]
        resumed = streaming_loader(open_stream(shards, **options), batch_size=BATCH, num_workers=num_workers,
                                   state=state)
        after = take(resumed, iter(resumed), total - stop)
        assert before + after == reference, f"resumed after {stop} micro-batches"


def test_the_saved_state_is_plain_json_and_names_its_layout(shards):
    loader = streaming_loader(open_stream(shards), batch_size=BATCH, num_workers=2)
    take(loader, iter(loader), 3)
    state = loader_state(loader, num_processes=2, num_workers=2, batch_size=BATCH)
    assert json.loads(json.dumps(state)) == state
    assert (state["num_processes"], state["num_workers"], state["batch_size"], state["epoch"]) == (2, 2, BATCH, 0)
    assert check_resumable(state, num_processes=2, num_workers=2, batch_size=BATCH) == state


@pytest.mark.parametrize("layout, flag", [
    ({"num_processes": 4, "num_workers": 0, "batch_size": BATCH}, "--num_processes 2"),
    ({"num_processes": 2, "num_workers": 2, "batch_size": BATCH}, "--dataloader_num_workers 0"),
    ({"num_processes": 2, "num_workers": 0, "batch_size": 8}, f"--train_batch_size {BATCH}"),
])
def test_resume_under_another_layout_is_refused(shards, layout, flag):
    loader = streaming_loader(open_stream(shards), batch_size=BATCH)
    take(loader, iter(loader), 1)
    state = round_trip(loader, 0)
    with pytest.raises(DataError, match=f"resume with {flag}, or start a new run into another --output_dir") as err:
        check_resumable(state, **layout)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="format"):
        check_resumable({**state, "format": 0}, num_processes=2, num_workers=0, batch_size=BATCH)


def test_a_damaged_image_is_left_out_of_its_batch_and_named(tmp_path):
    folder = write_shards(tmp_path / "data", damaged={13})
    stream = open_stream(folder, num_processes=1)
    loader = streaming_loader(stream, batch_size=BATCH)
    taken = take(loader, iter(loader), ROWS // BATCH)  # one epoch: 47 good rows in 12 micro-batches
    assert sorted(epoch_ids(taken, 0)) == [i for i in range(ROWS) if i != 13]
    damaged = [(ids, skipped) for _, ids, skipped in taken if skipped]
    assert len(damaged) == 1
    ids, skipped = damaged[0]
    assert len(ids) == BATCH - 1 and len(skipped) == 1
    assert skipped[0].startswith("row ") and skipped[0].endswith("in epoch 0")
    assert all(len(ids) == BATCH for _, ids, skipped in taken if not skipped)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_damaged_row_is_named_by_its_row_in_the_file_not_its_shuffled_position(tmp_path, num_workers):
    folder = write_shards(tmp_path / "data", damaged={13}, shards=1)  # one file: its rows are the stream's
    stream = open_stream(folder, num_processes=1, shuffle_buffer_size=8)
    loader = streaming_loader(stream, batch_size=BATCH, num_workers=num_workers)
    taken = take(loader, iter(loader), ROWS // BATCH)
    [skipped] = [skipped for _, _, skipped in taken if skipped]
    # Row 13 is row 5 of the second block of 8: where the seeded block shuffle moved it (what the old name said).
    shuffled_position = 8 + block_order(8, seed=3, epoch=0, worker=0, block=1).index(5)
    assert shuffled_position != 13
    assert skipped == (f"row 13 in epoch 0{' of worker 0' if num_workers else ''}",)


def test_bad_input_is_one_line_data_error(tmp_path, shards):
    cases = {
        "image column 'picture' not found; available columns: ['image', 'label']":
            lambda: open_stream(shards, image_column="picture"),
        "class column 'kind' holds Value":
            lambda: open_stream(write_shards(tmp_path / "extra", extra_column=True), class_column="kind"),
        "train it without --streaming":
            lambda: open_stream(_saved_to_disk(tmp_path / "saved")),
        "does not exist":
            lambda: open_stream(tmp_path / "missing.parquet"),
    }
    for message, open_it in cases.items():
        with pytest.raises(DataError) as err:
            open_it()
        assert message in str(err.value) and "\n" not in str(err.value)


def _saved_to_disk(folder):
    datasets.Dataset.from_dict({"image": [{"bytes": png(1), "path": None}]},
                               features=datasets.Features({"image": datasets.Image()})).save_to_disk(str(folder))
    return folder


def test_a_datasets_version_whose_stream_state_breaks_on_a_second_resume_is_refused():
    from ddpm_hf.data import streaming

    streaming._check_datasets_version("5.1.0")
    streaming._check_datasets_version("5.2.0")
    with pytest.raises(DataError, match=r"--streaming needs datasets >= 5.1 \(this is 5.0.3.*pip install -U"):
        streaming._check_datasets_version("5.0.3")
