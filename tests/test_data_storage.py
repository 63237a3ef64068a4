# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Where decoded images live (ddpm_hf/data/storage.py): memory, a memory-mapped cache file, lazily decoded files.

Every storage must give bitwise the same images, captions and labels in the same order; the cache must be reused,
rebuilt when its source changes, and never left half-written; bad files must be skipped, counted and named."""

import errno
import json
import os
import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from support.images import write_folder

from ddpm_hf.data import DataError, load_image_dataset
from ddpm_hf.data import storage as storage_module
from ddpm_hf.data.decoding import Decoder
from ddpm_hf.data.order import BatchLayout, micro_batch_loader
from ddpm_hf.data.storage import DecodeFailures, LazyPixels, MappedPixels, read_images

STORED = ("memmap", "lazy")


def load(storage, cache, **kwargs):
    return load_image_dataset(storage=storage, cache_dir=str(cache), show_progress=False, **kwargs)


def all_pixels(data) -> torch.Tensor:
    return data.pixels[torch.arange(len(data))]


def assert_same_dataset(stored, reference) -> None:
    assert len(stored) == len(reference) and stored.channels == reference.channels
    assert torch.equal(all_pixels(stored), reference.pixels)
    assert stored.captions == reference.captions and stored.skipped == reference.skipped
    assert stored.class_names == reference.class_names
    assert (stored.labels is None) == (reference.labels is None)
    if reference.labels is not None:
        assert torch.equal(stored.labels, reference.labels)


@pytest.mark.parametrize("storage", STORED)
def test_embedded_digits_are_bitwise_the_same_in_every_storage(storage, tmp_path):
    options = dict(embedded="digits", resolution=16, with_captions=True, class_column="label", max_train_samples=300)
    reference = load("memory", tmp_path, **options)
    stored = load(storage, tmp_path, **options)
    assert stored.storage == storage and reference.storage == "memory" and reference.cache_entry is None
    assert_same_dataset(stored, reference)


@pytest.mark.parametrize("storage", STORED)
@pytest.mark.parametrize("rgb_every", [0, 5])  # all grayscale -> 1 channel; one in five in colour -> 3
def test_image_folders_are_bitwise_the_same_in_every_storage(storage, rgb_every, tmp_path):
    folder = write_folder(tmp_path / "images", rgb_every=rgb_every)
    options = dict(train_data_dir=str(folder), resolution=8, center_crop=True, class_column="label")
    reference = load("memory", tmp_path / "cache", **options)
    stored = load(storage, tmp_path / "cache", **options)
    assert reference.channels == (3 if rgb_every else 1)
    assert_same_dataset(stored, reference)


@pytest.mark.parametrize("storage", STORED)
def test_a_datasets_table_is_bitwise_the_same_in_every_storage(storage, tmp_path):
    import datasets

    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)) for _ in range(20)]
    table = datasets.Dataset.from_dict(
        {"image": images, "label": [i % 3 for i in range(20)], "text": [f"caption {i}" for i in range(20)]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y", "z"]),
                                    "text": datasets.Value("string")}))
    table.to_parquet(tmp_path / "train.parquet")
    options = dict(dataset_name=str(tmp_path / "train.parquet"), resolution=8, class_column="label",
                   caption_column="text", max_train_samples=15)
    assert_same_dataset(load(storage, tmp_path / "cache", **options), load("memory", tmp_path / "cache", **options))


def test_the_micro_batches_of_every_storage_are_the_same(tmp_path):
    folder = write_folder(tmp_path / "images", rgb_every=3)
    layout = BatchLayout(batch_size=5, num_processes=2, process_index=1, gradient_accumulation_steps=2)
    batches = {}
    for storage in ("memory", *STORED):
        data = load(storage, tmp_path / "cache", train_data_dir=str(folder), resolution=8, class_column="label")
        loader = micro_batch_loader(data.pixels, seed=3, layout=layout, first_step=0, last_step=4, first_position=7,
                                    flip=True, num_workers=2 if storage == "lazy" else 0, conditions=data.labels)
        batches[storage] = [(item.pixels, item.conditions, item.skipped) for item in loader]
    assert len(batches["memory"]) == 8
    for storage in STORED:
        for (pixels, labels, skipped), (ref_pixels, ref_labels, _) in zip(batches[storage], batches["memory"]):
            assert torch.equal(pixels, ref_pixels) and torch.equal(labels, ref_labels) and list(skipped) == []


# --------------------------------------------------------------------------------------------------------------
# The cache: reused, rebuilt when the source changes, never half-written
# --------------------------------------------------------------------------------------------------------------
def test_the_cache_is_reused_and_rebuilt_when_a_file_or_the_decoding_changes(tmp_path, monkeypatch):
    folder = write_folder(tmp_path / "images")
    cache = tmp_path / "cache"
    first = load("memmap", cache, train_data_dir=str(folder), resolution=8)
    assert first.built_cache_entry and Path(first.cache_entry).parent == cache / "decoded"
    assert os.path.getsize(Path(first.cache_entry) / "pixels.u8") == 24 * 1 * 8 * 8

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    with monkeypatch.context() as patch:
        patch.setattr(Decoder, "decode_all", no_decoding)
        again = load("memmap", cache, train_data_dir=str(folder), resolution=8)
    assert not again.built_cache_entry and again.cache_entry == first.cache_entry
    assert torch.equal(all_pixels(again), all_pixels(first))

    # Another resolution, and then an edited file, each make an entry of their own.
    other = load("memmap", cache, train_data_dir=str(folder), resolution=10)
    assert other.built_cache_entry and other.cache_entry != first.cache_entry
    Image.fromarray(np.zeros((12, 12), dtype=np.uint8), "L").save(folder / "a" / "001.png")
    edited = load("memmap", cache, train_data_dir=str(folder), resolution=8)
    assert edited.built_cache_entry and edited.cache_entry not in (first.cache_entry, other.cache_entry)
    assert int(all_pixels(edited)[0].sum()) == 0  # a/001.png sorts first
    assert len([path for path in (cache / "decoded").iterdir()]) == 3  # nothing hidden left behind


def test_a_failed_build_leaves_no_entry_and_a_killed_builders_leftovers_are_removed(tmp_path):
    folder = write_folder(tmp_path / "images", count=10)
    for name in ("b/000.png", "b/002.png"):
        (folder / name).write_bytes(b"not a png")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="2 of 10 images could not be decoded"):
        load("memmap", cache, train_data_dir=str(folder), resolution=8, max_bad_fraction=0.0)
    assert list((cache / "decoded").iterdir()) == []

    abandoned = cache / "decoded" / ".images-8px-memmap-abc.tmp-999999999"  # no such process
    abandoned.mkdir()
    (abandoned / "pixels.u8").write_bytes(b"\0" * 64)
    data = load("memmap", cache, train_data_dir=str(folder), resolution=8, max_bad_fraction=0.2)
    assert not abandoned.exists() and data.skipped == ["b/000.png", "b/002.png"] and len(data) == 8


def _overwrite_4_kib(entry: Path) -> None:
    with open(entry / "pixels.u8", "r+b") as file:
        file.seek(8192)
        file.write(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _random_bytes(entry: Path) -> None:
    path = entry / "pixels.u8"
    path.write_bytes(np.random.default_rng(2).integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())


def _truncate(entry: Path) -> None:
    os.truncate(entry / "pixels.u8", 1000)


DAMAGES = {
    "4 KiB overwritten": (_overwrite_4_kib, "checksum of its pixels.u8 does not match"),
    "whole file random bytes": (_random_bytes, "checksum of its pixels.u8 does not match"),
    "truncated": (_truncate, "its pixels.u8 holds 1000 bytes, 24576 were written"),
    "index deleted": (lambda entry: (entry / "index.json").unlink(), "its index.json is missing"),
    "kept deleted": (lambda entry: (entry / "kept.npy").unlink(), "its kept.npy is missing"),
    "index garbled": (lambda entry: (entry / "index.json").write_text("{not json"), "index.json does not parse"),
    "older format": (lambda entry: (entry / "index.json").write_text(json.dumps(
        {k: v for k, v in json.loads((entry / "index.json").read_text()).items() if k not in ("format", "files")})),
        "written by another version of ddpm-hf"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_or_partial_cache_entry_is_rebuilt_with_a_warning_naming_it(damage, tmp_path, caplog):
    folder, cache = write_folder(tmp_path / "images"), tmp_path / "cache"
    options = dict(train_data_dir=str(folder), resolution=32)  # 24 x 1 x 32 x 32: 24 KiB of pixels
    reference = load("memory", cache, **options)
    entry = Path(load("memmap", cache, **options).cache_entry)
    damage_entry, defect = DAMAGES[damage]
    damage_entry(entry)
    with caplog.at_level("WARNING", logger="ddpm_hf.data.storage"):
        again = load("memmap", cache, **options)
    assert again.built_cache_entry and again.cache_entry == str(entry)  # rebuilt, not "found built"
    assert_same_dataset(again, reference)  # what trains is the source's pixels, not the damaged ones
    [warning] = [message for message in caplog.messages if "damaged" in message]
    assert str(entry) in warning and defect in warning and "rebuilding it" in warning
    assert list((cache / "decoded").iterdir()) == [entry]  # nothing set aside or half-built left behind
    caplog.clear()
    with caplog.at_level("WARNING", logger="ddpm_hf.data.storage"):
        assert not load("memmap", cache, **options).built_cache_entry  # the rebuilt entry is whole
    assert not caplog.messages


def test_a_lazy_entry_is_checked_too(tmp_path, caplog):
    folder, cache = write_folder(tmp_path / "images", count=10), tmp_path / "cache"
    entry = Path(load("lazy", cache, train_data_dir=str(folder), resolution=8).cache_entry)
    np.save(entry / "kept.npy", np.arange(3, dtype=np.int64))  # a different list of images, the same file name
    with caplog.at_level("WARNING", logger="ddpm_hf.data.storage"):
        again = load("lazy", cache, train_data_dir=str(folder), resolution=8)
    assert again.built_cache_entry and len(again) == 10
    assert any("kept.npy" in message and str(entry) in message for message in caplog.messages)


def test_an_entry_another_builder_published_meanwhile_is_kept_and_a_damaged_one_replaced(tmp_path):
    from ddpm_hf.data.cache_entry import publish_entry

    folder, cache = write_folder(tmp_path / "images", count=6), tmp_path / "cache"
    entry = Path(load("memmap", cache, train_data_dir=str(folder), resolution=8).cache_entry)
    theirs = (entry / "pixels.u8").stat().st_ino
    ours = cache / "decoded" / ".ours"
    shutil.copytree(entry, ours)
    publish_entry(ours, entry)  # a whole entry is there: it stays
    assert (entry / "pixels.u8").stat().st_ino == theirs
    (entry / "index.json").unlink()  # the stale entry of the issue: "OSError: Directory not empty" on the rename
    shutil.copytree(ours, ours.with_name(".again"))
    publish_entry(ours.with_name(".again"), entry)
    assert (entry / "index.json").is_file() and sorted(os.listdir(cache / "decoded")) == [".ours", entry.name]


def test_a_cache_folder_that_is_a_file_or_cannot_be_written_is_a_one_line_error(tmp_path, monkeypatch):
    folder = write_folder(tmp_path / "images", count=6)
    (tmp_path / "cache_file").write_text("")
    for storage in STORED:
        with pytest.raises(DataError, match=r"cache_file is a file; pass a folder with --data_cache_dir") as error:
            load(storage, tmp_path / "cache_file", train_data_dir=str(folder), resolution=8)
        assert "\n" not in str(error.value)

    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.access(read_only, os.W_OK):  # root writes anywhere: make the folder refuse as a read-only mount does
        real_mkdir = Path.mkdir

        def refuse(path, *args, **kwargs):
            if read_only in path.parents:
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(DataError, match=r"cannot write the decoded images into .*read_only/decoded \(.*\): pass a"
                                        r" writable --data_cache_dir, or --data_storage memory") as error:
        load("memmap", read_only, train_data_dir=str(folder), resolution=8)
    assert "\n" not in str(error.value)


def test_a_full_disk_while_decoding_is_a_one_line_error_and_leaves_nothing(tmp_path, monkeypatch):
    folder = write_folder(tmp_path / "images", count=6)
    real_open = open

    class FullDisk:
        def __init__(self, file):
            self.file = file

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    def open_full(path, mode="r", *args, **kwargs):
        file = real_open(path, mode, *args, **kwargs)
        return FullDisk(file) if str(path).endswith("pixels.u8") else file

    monkeypatch.setattr("builtins.open", open_full)
    with pytest.raises(DataError, match="no space left in .* --data_cache_dir, or pass --data_storage lazy") as error:
        load("memmap", tmp_path / "cache", train_data_dir=str(folder), resolution=8)
    assert "\n" not in str(error.value)
    assert list((tmp_path / "cache" / "decoded").iterdir()) == []


def test_auto_keeps_small_data_in_memory_then_maps_it_then_decodes_lazily(tmp_path, monkeypatch):
    folder = write_folder(tmp_path / "images", count=6)
    assert load("auto", tmp_path / "cache", train_data_dir=str(folder), resolution=8).storage == "memory"
    monkeypatch.setattr(storage_module, "AUTO_MEMORY_BYTES", 100)  # 6 images of 3 x 8 x 8 bytes are more
    assert load("auto", tmp_path / "cache", train_data_dir=str(folder), resolution=8).storage == "memmap"
    monkeypatch.setattr(storage_module.shutil, "disk_usage", lambda path: SimpleNamespace(free=10))  # a full disk
    assert load("auto", tmp_path / "cache", train_data_dir=str(folder), resolution=8).storage == "lazy"


def test_unknown_storage_is_a_one_line_error(tmp_path):
    with pytest.raises(DataError, match="unknown data storage 'disk': choose one of auto, memory, memmap, lazy"):
        load("disk", tmp_path, embedded="digits", resolution=8)


# --------------------------------------------------------------------------------------------------------------
# Sharing and bad files met while training
# --------------------------------------------------------------------------------------------------------------
def test_stored_pixels_pickle_as_a_path_not_as_the_pixels(tmp_path):
    data = load("memmap", tmp_path, embedded="digits", resolution=16)
    assert isinstance(data.pixels, MappedPixels)
    payload = pickle.dumps(data.pixels)
    assert len(payload) < 1000  # the decoded set is 1797 x 256 bytes
    assert torch.equal(pickle.loads(payload)[torch.tensor([5, 3])], data.pixels[torch.tensor([5, 3])])


def test_a_file_damaged_after_the_header_check_is_left_out_of_its_micro_batch_and_named(tmp_path):
    folder = write_folder(tmp_path / "images", count=12)
    data = load("lazy", tmp_path / "cache", train_data_dir=str(folder), resolution=8, class_column="label")
    assert isinstance(data.pixels, LazyPixels)
    damaged = folder / "a" / "003.png"  # the header survives, the pixel data does not
    damaged.write_bytes(damaged.read_bytes()[:60])
    position = data.pixels.images.names.tolist().index(b"a/003.png")
    indices = torch.tensor([0, position, 7])
    pixels, kept, skipped = read_images(data.pixels, indices)
    assert skipped == ("a/003.png",) and kept.tolist() == [0, 7]
    reference = load("memory", tmp_path / "cache", train_data_dir=str(write_folder(tmp_path / "fresh", count=12)),
                     resolution=8)
    assert torch.equal(pixels, reference.pixels[torch.tensor([0, 7])])

    failures = DecodeFailures(data, max_bad_fraction=0.1)  # tolerates 1 of 12
    failures.add(skipped, batch_size=3)
    failures.add(skipped, batch_size=3)  # the same file met again is one failure
    with pytest.raises(DataError, match=r"2 of 12 images could not be decoded .*a/003.png, b/004.png"):
        failures.add(("b/004.png",), batch_size=3)


def test_a_micro_batch_of_undecodable_files_stops_the_run(tmp_path):
    data = load("lazy", tmp_path / "cache", train_data_dir=str(write_folder(tmp_path / "images", count=8)),
                resolution=8)
    with pytest.raises(DataError, match="no image of a micro-batch could be decoded"):
        DecodeFailures(data, max_bad_fraction=1.0).add(("a/001.png", "a/003.png"), batch_size=2)


def test_the_header_check_skips_files_that_do_not_open_and_counts_them(tmp_path):
    folder = write_folder(tmp_path / "images", count=10)
    (folder / "a" / "005.png").write_bytes(b"garbage")
    data = load("lazy", tmp_path / "cache", train_data_dir=str(folder), resolution=8, max_bad_fraction=0.1)
    assert len(data) == 9 and data.skipped == ["a/005.png"]
    index = json.loads((Path(data.cache_entry) / "index.json").read_text())
    assert index["count"] == 9 and index["skipped"] == ["a/005.png"] and index["channels"] == 1
