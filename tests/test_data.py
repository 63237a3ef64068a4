# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Tests for ddpm_hf.data: every source, every conversion, every error message. Local data only."""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_hf.data import (
    IMAGE_EXTENSIONS,
    DataError,
    from_model_range,
    load_image_dataset,
    random_flip,
    to_model_range,
)
from ddpm_hf.text.captions import digit_caption

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def load(**kwargs):
    return load_image_dataset(show_progress=False, **kwargs)


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path, monkeypatch):
    # load_dataset writes an Arrow cache; keep it out of the user's ~/.cache.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def save(folder: Path, name: str, image: Image.Image, **save_args) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save_args)
    return path


def uniform(mode: str, value, size=(8, 8)) -> Image.Image:
    return Image.new(mode, size, value)


def sixteen_bit(value: int, size=(8, 8)) -> Image.Image:
    return Image.fromarray(np.full(size, value, dtype=np.uint16))  # mode "I;16"


def palette_image(index: int, size=(8, 8)) -> Image.Image:
    image = Image.new("P", size, index)
    image.putpalette([0, 0, 0, 10, 200, 30, 250, 250, 250] + [0] * (256 * 3 - 9))
    return image


def pixel(dataset, index: int) -> list[int]:
    """The top-left pixel of image ``index``, one value per channel."""
    return dataset.pixels[index, :, 0, 0].tolist()


# --------------------------------------------------------------------------- #
# Embedded sets
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def digits():
    return load(embedded="digits", resolution=8, with_captions=True)


@pytest.fixture(scope="module")
def mnist():
    return load(embedded="mnist", resolution=28, with_captions=True)


def test_digits_are_scaled_to_full_range_at_native_size(digits):
    from sklearn.datasets import load_digits

    raw = load_digits()
    assert digits.pixels.shape == (1797, 1, 8, 8)
    assert digits.pixels.dtype == torch.uint8 and digits.channels == 1 and len(digits) == 1797
    expected = torch.from_numpy(np.rint(raw.images * 255 / 16).astype(np.uint8))
    assert torch.equal(digits.pixels[:, 0], expected)
    assert digits.labels.dtype == torch.int64 and digits.labels.tolist() == raw.target.tolist()
    assert digits.source == "embedded:digits" and digits.skipped == []


def test_digits_resize_once_to_resolution():
    dataset = load(embedded="digits", resolution=32)
    assert dataset.pixels.shape == (1797, 1, 32, 32)
    assert dataset.pixels.max() == 255 and dataset.pixels.min() == 0
    assert dataset.captions is None


def test_mnist_is_shuffled_and_complete(mnist):
    assert mnist.pixels.shape == (5000, 1, 28, 28) and mnist.channels == 1
    assert len(set(mnist.labels[:100].tolist())) > 1  # the file is sorted by label
    assert torch.bincount(mnist.labels).tolist() == [500] * 10
    assert mnist.pixels.max() == 255 and mnist.pixels.min() == 0


def test_mnist_shuffle_depends_on_seed(mnist):
    again = load(embedded="mnist", resolution=28, with_captions=True)
    other = load(embedded="mnist", resolution=28, seed=1)
    assert torch.equal(again.pixels, mnist.pixels) and again.captions == mnist.captions
    assert not torch.equal(other.labels, mnist.labels)


@pytest.mark.parametrize("name", ["digits", "mnist"])
def test_embedded_captions_name_the_digit_in_several_phrasings(name, digits, mnist):
    dataset = {"digits": digits, "mnist": mnist}[name]
    assert len(dataset.captions) == len(dataset)
    for label in range(10):
        captions = {c for c, y in zip(dataset.captions, dataset.labels.tolist()) if y == label}
        assert len(captions) >= 4
        assert all(DIGIT_WORDS[label] in c or str(label) in c for c in captions)


def test_digit_caption_is_deterministic_with_at_least_four_phrasings():
    for label in range(10):
        phrasings = {digit_caption(label, variant) for variant in range(20)}
        assert len(phrasings) >= 4
        assert digit_caption(label, 3) == digit_caption(label, 3)
    assert "seven" in digit_caption(7, 0) or "7" in digit_caption(7, 0)
    with pytest.raises(ValueError, match="0..9"):
        digit_caption(10, 0)


def test_max_train_samples_is_a_seeded_subset(digits):
    first = load(embedded="digits", resolution=8, max_train_samples=50, seed=3)
    again = load(embedded="digits", resolution=8, max_train_samples=50, seed=3)
    other = load(embedded="digits", resolution=8, max_train_samples=50, seed=4)
    assert len(first) == 50 and len(first.labels) == 50
    assert torch.equal(first.pixels, again.pixels) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.pixels, other.pixels)
    assert not torch.equal(first.pixels, digits.pixels[:50])  # a random subset, not the head


def test_max_train_samples_mnist_mixes_classes():
    dataset = load(embedded="mnist", resolution=28, max_train_samples=100)
    assert len(dataset) == 100 and len(set(dataset.labels.tolist())) == 10


# --------------------------------------------------------------------------- #
# Image folders: conversion of every mode
# --------------------------------------------------------------------------- #


@pytest.fixture
def mixed_folder(tmp_path):
    """One image of each kind, named so that sorted order is the order below."""
    folder = tmp_path / "mixed"
    save(folder, "a_gray.png", uniform("L", 77))
    save(folder, "b_rgba.png", Image.merge("RGBA", [uniform("L", v) for v in (200, 100, 50, 128)]))
    save(folder, "c_transparent.png", uniform("RGBA", (255, 0, 0, 0)))
    save(folder, "d_palette.png", palette_image(1))
    save(folder, "e_sixteen.png", sixteen_bit(65535))
    save(folder, "f_photo.jpg", uniform("RGB", (200, 30, 60)), quality=95)
    save(folder, "sub/g_cmyk.tif", uniform("CMYK", (0, 255, 255, 0)))  # pure red in CMYK
    save(folder, "sub/h_palette_transparent.png", palette_image(2), transparency=2)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_mixed_folder_is_converted_to_rgb(mixed_folder):
    dataset = load(train_data_dir=str(mixed_folder), resolution=8)
    assert dataset.pixels.shape == (8, 3, 8, 8) and dataset.pixels.dtype == torch.uint8
    assert pixel(dataset, 0) == [77, 77, 77]  # grayscale replicated
    assert pixel(dataset, 1) == [100, 50, 25]  # alpha 128 composited on black: round(c * 128 / 255)
    assert pixel(dataset, 2) == [0, 0, 0]  # fully transparent -> black
    assert pixel(dataset, 3) == [10, 200, 30]  # palette entry 1
    assert pixel(dataset, 4) == [255, 255, 255]  # 16-bit 65535 -> 255
    assert np.allclose(pixel(dataset, 5), [200, 30, 60], atol=4)  # JPEG is lossy
    assert pixel(dataset, 6) == [255, 0, 0]  # CMYK, found in a subfolder
    assert pixel(dataset, 7) == [0, 0, 0]  # transparent palette entry -> black
    assert dataset.captions is None and dataset.labels is None and dataset.skipped == []
    assert dataset.source == str(mixed_folder)


def test_mixed_folder_forced_to_one_channel(mixed_folder):
    dataset = load(train_data_dir=str(mixed_folder), resolution=8, channels=1)
    assert dataset.pixels.shape == (8, 1, 8, 8)
    assert pixel(dataset, 0) == [77]
    assert pixel(dataset, 6) == [76]  # ITU-R 601 luma of pure red: 0.299 * 255


def test_grayscale_folder_keeps_one_channel(tmp_path):
    save(tmp_path, "eight_bit.png", uniform("L", 10))
    save(tmp_path, "sixteen_bit.png", sixteen_bit(257 * 100))
    save(tmp_path, "gray_alpha.png", Image.merge("LA", [uniform("L", 200), uniform("L", 0)]))
    save(tmp_path, "bilevel.png", uniform("1", 1))
    dataset = load(train_data_dir=str(tmp_path), resolution=8)
    assert dataset.channels == 1
    by_name = sorted(["bilevel.png", "eight_bit.png", "gray_alpha.png", "sixteen_bit.png"])
    values = dict(zip(by_name, (pixel(dataset, i)[0] for i in range(4))))
    assert values == {"bilevel.png": 255, "eight_bit.png": 10, "gray_alpha.png": 0, "sixteen_bit.png": 100}


def test_grayscale_folder_forced_to_three_channels(tmp_path):
    save(tmp_path, "gray.png", uniform("L", 33, size=(12, 12)))
    dataset = load(train_data_dir=str(tmp_path), resolution=8, channels=3)
    assert dataset.pixels.shape == (1, 3, 8, 8)
    assert (dataset.pixels == 33).all()


@pytest.fixture
def striped(tmp_path):
    """96 x 32: left third black, middle third gray, right third white."""
    values = np.zeros((32, 96), dtype=np.uint8)
    values[:, 32:64], values[:, 64:] = 128, 255
    save(tmp_path, "wide.png", Image.fromarray(values))
    return tmp_path


def test_resize_squeezes_the_whole_image(striped):
    dataset = load(train_data_dir=str(striped), resolution=16)
    image = dataset.pixels[0, 0]
    assert image.shape == (16, 16)
    assert (image[:, :4] == 0).all() and (image[:, 7:9] == 128).all() and (image[:, -4:] == 255).all()


def test_center_crop_keeps_the_middle(striped):
    dataset = load(train_data_dir=str(striped), resolution=16, center_crop=True)
    image = dataset.pixels[0, 0]
    assert image.shape == (16, 16)
    assert (image[:, 2:-2] == 128).all()  # only the gray middle square survives (edges see filter support)


# --------------------------------------------------------------------------- #
# Image folders: captions and bad files
# --------------------------------------------------------------------------- #


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def test_folder_captions_from_metadata_jsonl(tmp_path):
    save(tmp_path, "a.png", uniform("L", 1))
    save(tmp_path, "sub/b.png", uniform("L", 2))
    write_jsonl(tmp_path / "metadata.jsonl", [{"file_name": "a.png", "text": "first", "alt": "x"}])
    write_jsonl(tmp_path / "sub" / "metadata.jsonl", [{"file_name": "b.png", "text": "second", "alt": "y"}])
    assert load(train_data_dir=str(tmp_path), with_captions=True, resolution=8).captions == ["first", "second"]
    assert load(train_data_dir=str(tmp_path), caption_column="alt", resolution=8).captions == ["x", "y"]
    assert load(train_data_dir=str(tmp_path), resolution=8).captions is None


def test_folder_caption_errors(tmp_path):
    save(tmp_path, "a.png", uniform("L", 1))
    save(tmp_path, "b.png", uniform("L", 2))
    with pytest.raises(DataError, match=r"no metadata\.jsonl.*file_name"):
        load(train_data_dir=str(tmp_path), with_captions=True)
    write_jsonl(tmp_path / "metadata.jsonl", [{"file_name": "a.png", "text": "first"}])
    with pytest.raises(DataError, match=r"1 images have no 'text' caption.*b\.png"):
        load(train_data_dir=str(tmp_path), with_captions=True)
    with pytest.raises(DataError, match=r"caption column 'label' not found.*\['text'\].*--caption_column"):
        load(train_data_dir=str(tmp_path), caption_column="label")
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png"\n')
    with pytest.raises(DataError, match="line 1 is not valid JSON"):
        load(train_data_dir=str(tmp_path), with_captions=True)
    for file_name in (7, None, ["a.png"], ""):  # json.loads gives them; posixpath.join raised a TypeError on these
        write_jsonl(tmp_path / "metadata.jsonl", [{"file_name": "a.png", "text": "A"},
                                                  {"file_name": file_name, "text": "B"}])
        with pytest.raises(DataError) as error:
            load(train_data_dir=str(tmp_path), with_captions=True)
        message = str(error.value)
        assert f"{tmp_path / 'metadata.jsonl'}, line 2" in message and "\n" not in message
        assert '"file_name" must be a string naming the image' in message and json.dumps(file_name) in message


def test_a_symlink_to_a_file_outside_the_folder_is_followed_with_a_warning_naming_it(tmp_path, caplog):
    root, elsewhere = tmp_path / "images", tmp_path / "elsewhere"
    save(root, "a.png", uniform("L", 10))
    save(root / "sub", "b.png", uniform("L", 20))
    save(elsewhere, "c.png", uniform("L", 30))
    save(elsewhere / "folder", "d.png", uniform("L", 40))
    (root / "inside.png").symlink_to(root / "sub" / "b.png")  # stays in the folder: no warning
    with caplog.at_level("WARNING", logger="ddpm_hf.data.folders"):
        data = load(train_data_dir=str(root), resolution=8)
    assert len(data) == 3 and not [message for message in caplog.messages if "symlink" in message]

    (root / "outside.png").symlink_to(elsewhere / "c.png")
    (root / "linked_folder").symlink_to(elsewhere / "folder")  # not searched, as rglob and os.walk do
    with caplog.at_level("WARNING", logger="ddpm_hf.data.folders"):
        data = load(train_data_dir=str(root), resolution=8)
    assert sorted(int(value) for value in data.pixels[:, 0, 0, 0]) == [10, 20, 20, 30]  # followed: trained on
    [warning] = [message for message in caplog.messages if "symlink" in message]
    assert f"1 image file(s) of {str(root)!r} are symlinks to files outside it" in warning
    assert f"outside.png -> {elsewhere / 'c.png'}" in warning and "delete the links to leave them out" in warning


def write_bad_files(folder: Path, count: int) -> list[str]:
    """Undecodable files of several kinds: garbage, empty, truncated."""
    good = folder / "_good.png"
    uniform("L", 5).save(good)
    contents = [b"this is not a png", b"", good.read_bytes()[:40]]
    names = [f"bad_{i}.png" for i in range(count)]
    for i, name in enumerate(names):
        (folder / name).write_bytes(contents[i % len(contents)])
    good.unlink()
    return names


def test_one_bad_file_in_two_hundred_is_skipped(tmp_path):
    for i in range(199):
        save(tmp_path, f"img_{i:03d}.png", uniform("L", i))
    bad = write_bad_files(tmp_path, 1)
    dataset = load(train_data_dir=str(tmp_path), resolution=8)
    assert len(dataset) == 199 and dataset.skipped == bad


def test_too_many_bad_files_abort_naming_them(tmp_path):
    for i in range(7):
        save(tmp_path, f"img_{i}.png", uniform("L", i))
    bad = write_bad_files(tmp_path, 3)
    with pytest.raises(DataError, match=r"3 of 10 images could not be decoded") as error:
        load(train_data_dir=str(tmp_path), resolution=8)
    assert all(name in str(error.value) for name in bad)
    assert "--max_bad_image_fraction 0.3 to skip them" in str(error.value)
    assert len(load(train_data_dir=str(tmp_path), resolution=8, max_bad_fraction=0.5)) == 7


def write_small_folder(folder: Path, bad_count: int) -> list[str]:
    """21 real PNGs, ``bad_count`` (1 or 2) of them corrupt: a truncated PNG, then random bytes. Returns their names."""
    for i in range(21 - bad_count):
        save(folder, f"img_{i:02d}.png", uniform("RGB", (i, 2 * i, 3 * i)))
    rng = np.random.default_rng(0)
    png = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(png, format="PNG")
    corrupt = {"truncated.png": png.getvalue()[: len(png.getvalue()) // 2], "random.png": rng.bytes(300)}
    names = list(corrupt)[:bad_count]
    for name in names:
        (folder / name).write_bytes(corrupt[name])
    return sorted(names)  # the order the folder is read in


def test_one_corrupt_file_in_a_small_folder_is_skipped_and_named(tmp_path, caplog):
    bad = write_small_folder(tmp_path, 1)
    with caplog.at_level("WARNING", logger="ddpm_hf.data.decoding"):
        dataset = load(train_data_dir=str(tmp_path), resolution=8)  # 1 of 21 is 4.8%, over the default 1%
    assert len(dataset) == 20 and dataset.skipped == bad
    assert any("Skipped 1 of 21" in message and bad[0] in message for message in caplog.messages)


def test_two_corrupt_files_in_a_small_folder_abort_naming_the_flag_and_both_files(tmp_path):
    bad = write_small_folder(tmp_path, 2)
    with pytest.raises(DataError, match=r"2 of 21 images could not be decoded") as error:
        load(train_data_dir=str(tmp_path), resolution=8, max_bad_fraction=0.01)
    message = str(error.value)
    assert "--max_bad_image_fraction" in message and all(name in message for name in bad)
    assert "\n" not in message


def test_fraction_zero_tolerates_no_corrupt_file(tmp_path):
    bad = write_small_folder(tmp_path, 1)
    with pytest.raises(DataError, match=rf"1 of 21 images.*tolerates 0\).*{bad[0]}.*--max_bad_image_fraction"):
        load(train_data_dir=str(tmp_path), resolution=8, max_bad_fraction=0)


def test_a_larger_fraction_skips_more_corrupt_files(tmp_path):
    bad = write_small_folder(tmp_path, 2)
    dataset = load(train_data_dir=str(tmp_path), resolution=8, max_bad_fraction=0.2)  # floor(0.2 * 21) = 4
    assert len(dataset) == 19 and dataset.skipped == bad


def test_abort_lists_the_first_ten_bad_files_then_counts_the_rest(tmp_path):
    save(tmp_path, "good.png", uniform("L", 1))
    bad = write_bad_files(tmp_path, 12)
    with pytest.raises(DataError, match=r"12 of 13 images") as error:
        load(train_data_dir=str(tmp_path), resolution=8)
    message = str(error.value)
    assert ", ".join(sorted(bad)[:10]) + " and 2 more;" in message and "\n" not in message


def test_tolerance_counts_as_the_fraction_reads(tmp_path):
    # 0.29 * 100 is 28.999... in floats; 29 of 100 are still within 0.29.
    for i in range(71):
        save(tmp_path, f"img_{i:02d}.png", uniform("L", i))
    write_bad_files(tmp_path, 29)
    assert len(load(train_data_dir=str(tmp_path), resolution=8, max_bad_fraction=0.29)) == 71
    with pytest.raises(DataError, match="29 of 100"):
        load(train_data_dir=str(tmp_path), resolution=8, max_bad_fraction=0.28)


def test_folder_subset_is_seeded(tmp_path):
    for i in range(20):
        save(tmp_path, f"img_{i:02d}.png", uniform("L", i * 10))
    first, again, other = (load(train_data_dir=str(tmp_path), resolution=8, max_train_samples=5, seed=s)
                           for s in (0, 0, 1))
    assert len(first) == 5 and torch.equal(first.pixels, again.pixels)
    assert not torch.equal(first.pixels, other.pixels)


def test_hidden_folders_are_ignored(tmp_path):
    save(tmp_path, "a.png", uniform("L", 1))
    save(tmp_path, ".ipynb_checkpoints/a-checkpoint.png", uniform("L", 2))
    assert len(load(train_data_dir=str(tmp_path), resolution=8)) == 1


# --------------------------------------------------------------------------- #
# `datasets` sources: parquet, arrow, save_to_disk, imagefolder
# --------------------------------------------------------------------------- #


@pytest.fixture
def hf_dataset():
    images = [uniform("RGB", (i * 20, 0, 0), size=(10, 12)) for i in range(6)]
    features = datasets.Features({"img": datasets.Image(), "caption": datasets.Value("string")})
    return datasets.Dataset.from_dict({"img": images, "caption": [f"red {i}" for i in range(6)]}, features=features)


def check_hf_load(dataset_name: str) -> None:
    dataset = load(dataset_name=dataset_name, image_column="img", caption_column="caption", resolution=8)
    assert dataset.pixels.shape == (6, 3, 8, 8)
    assert [pixel(dataset, i) for i in range(6)] == [[i * 20, 0, 0] for i in range(6)]
    assert dataset.captions == [f"red {i}" for i in range(6)] and dataset.labels is None
    assert dataset.source == dataset_name


def test_parquet_file(tmp_path, hf_dataset):
    hf_dataset.to_parquet(tmp_path / "train.parquet")
    check_hf_load(str(tmp_path / "train.parquet"))


def test_save_to_disk_folder_and_its_arrow_file(tmp_path, hf_dataset):
    hf_dataset.save_to_disk(tmp_path / "saved")
    check_hf_load(str(tmp_path / "saved"))
    check_hf_load(str(next((tmp_path / "saved").glob("*.arrow"))))


def test_save_to_disk_dataset_dict(tmp_path, hf_dataset):
    datasets.DatasetDict({"train": hf_dataset}).save_to_disk(tmp_path / "saved_dict")
    check_hf_load(str(tmp_path / "saved_dict"))


def test_imagefolder_directory_through_datasets(tmp_path):
    save(tmp_path, "a.png", uniform("L", 3))
    save(tmp_path, "b.png", uniform("L", 4))
    write_jsonl(tmp_path / "metadata.jsonl", [{"file_name": "a.png", "text": "A"}, {"file_name": "b.png", "text": "B"}])
    dataset = load(dataset_name=str(tmp_path), with_captions=True, resolution=8)
    assert dataset.channels == 1 and sorted(dataset.captions) == ["A", "B"]


def test_undecodable_rows_are_skipped_and_named(tmp_path, hf_dataset):
    garbage = [{"bytes": b"garbage", "path": None}]
    broken = datasets.Dataset.from_dict({"img": garbage}, features=datasets.Features({"img": datasets.Image()}))
    combined = datasets.concatenate_datasets([hf_dataset.remove_columns("caption"), broken])
    combined.to_parquet(tmp_path / "with_bad.parquet")
    dataset = load(dataset_name=str(tmp_path / "with_bad.parquet"), image_column="img", resolution=8,
                   max_bad_fraction=0.2)
    assert len(dataset) == 6 and dataset.skipped == ["row 6"]
    # One bad row is always tolerated (1 of 7 is over the default 1%); a fraction of 0 tolerates none.
    assert len(load(dataset_name=str(tmp_path / "with_bad.parquet"), image_column="img", resolution=8)) == 6
    with pytest.raises(DataError, match=r"1 of 7 images could not be decoded.*row 6"):
        load(dataset_name=str(tmp_path / "with_bad.parquet"), image_column="img", resolution=8, max_bad_fraction=0)


def test_missing_columns_are_listed(tmp_path, hf_dataset):
    hf_dataset.to_parquet(tmp_path / "train.parquet")
    path = str(tmp_path / "train.parquet")
    with pytest.raises(DataError, match=r"image column 'image' not found.*'img', 'caption'.*--image_column"):
        load(dataset_name=path)
    with pytest.raises(DataError, match=r"caption column 'text' not found.*'img', 'caption'.*--caption_column"):
        load(dataset_name=path, image_column="img", with_captions=True)
    hf_dataset.add_column("number", list(range(6))).to_parquet(tmp_path / "numbered.parquet")
    with pytest.raises(DataError, match=r"column 'number' holds .*not images.*--image_column"):
        load(dataset_name=str(tmp_path / "numbered.parquet"), image_column="number")


# --------------------------------------------------------------------------- #
# Argument errors
# --------------------------------------------------------------------------- #


def test_exactly_one_source_is_required(tmp_path):
    with pytest.raises(DataError, match="no training data given.*--dataset_name.*--train_data_dir.*--embedded"):
        load()
    with pytest.raises(DataError, match=r"several data sources given \(--train_data_dir, --embedded\)"):
        load(train_data_dir=str(tmp_path), embedded="digits")


@pytest.mark.parametrize("resolution", [4, 0, -32, 32.0, True, "32"])
def test_bad_resolution(resolution):
    with pytest.raises(DataError, match="resolution must be an integer >= 8"):
        load(embedded="digits", resolution=resolution)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"channels": 2}, "channels must be 1"),
        ({"max_train_samples": 0}, "max_train_samples must be a positive integer"),
        ({"max_bad_fraction": 1.5}, "max_bad_fraction must be between 0 and 1"),
        ({"embedded": "cifar"}, "unknown embedded dataset 'cifar': choose one of digits, mnist"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(DataError, match=message):
        load(**{"embedded": "digits", **options})


def test_empty_folder_lists_recognised_extensions(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"no image files found.*\.jpg.*\.png") as error:
        load(train_data_dir=str(tmp_path))
    assert all(extension in str(error.value) for extension in IMAGE_EXTENSIONS)


def test_missing_paths(tmp_path):
    with pytest.raises(DataError, match="train_data_dir .* does not exist"):
        load(train_data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="dataset path .* does not exist"):
        load(dataset_name=str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="dataset path .* does not exist"):
        load(dataset_name="data/train.parquet")
    (tmp_path / "images.zip").write_bytes(b"")
    with pytest.raises(DataError, match=r"must end in \.parquet.*--train_data_dir"):
        load(dataset_name=str(tmp_path / "images.zip"))


# --------------------------------------------------------------------------- #
# Tensor helpers
# --------------------------------------------------------------------------- #


def test_model_range_round_trip():
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    scaled = to_model_range(pixels)
    assert scaled.dtype == torch.float32 and scaled.min() == -1 and scaled.max() == 1
    assert torch.equal(from_model_range(scaled), pixels)
    assert from_model_range(torch.tensor([-3.0, 0.0, 3.0])).tolist() == [0, 128, 255]  # clamped, rounded
    with pytest.raises(TypeError, match="uint8"):
        to_model_range(scaled)


def test_random_flip_is_seeded_and_flips_about_half():
    batch = torch.arange(1000 * 4, dtype=torch.float32).view(1000, 1, 1, 4)
    first = random_flip(batch, torch.Generator().manual_seed(0))
    again = random_flip(batch, torch.Generator().manual_seed(0))
    other = random_flip(batch, torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and not torch.equal(first, other)
    flipped = (first != batch).any(dim=(1, 2, 3))
    assert torch.equal(first[flipped], batch[flipped].flip(-1))
    assert torch.equal(first[~flipped], batch[~flipped])
    assert 400 < int(flipped.sum()) < 600


# ----------------------------------------------------------------------------------------------------------------
# Class labels (class_column)
# ----------------------------------------------------------------------------------------------------------------
def test_class_labels_from_folders_a_class_label_feature_plain_values_and_the_embedded_digits(tmp_path):
    for name in ("dogs", "cats"):
        (tmp_path / "folder" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (8, 8), 60 * i).save(tmp_path / "folder" / name / f"{i}.png")
    folder = load_image_dataset(train_data_dir=str(tmp_path / "folder"), resolution=8, class_column="label",
                                show_progress=False)
    assert folder.class_names == ["cats", "dogs"] and folder.labels.tolist() == [0, 0, 1, 1]  # sorted, numbered

    images = [Image.new("L", (8, 8), i) for i in range(4)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["b", "a"])})
    datasets.Dataset.from_dict({"image": images, "label": [1, 0, 0, 1]}, features=features).save_to_disk(
        str(tmp_path / "with_class_label"))
    named = load_image_dataset(dataset_name=str(tmp_path / "with_class_label"), resolution=8, class_column="label",
                               show_progress=False)
    assert named.class_names == ["b", "a"] and named.labels.tolist() == [1, 0, 0, 1]  # the feature's own names

    datasets.Dataset.from_dict({"image": images, "kind": ["z", "y", "z", "x"]}).cast_column(
        "image", datasets.Image()).save_to_disk(str(tmp_path / "plain"))
    plain = load_image_dataset(dataset_name=str(tmp_path / "plain"), resolution=8, class_column="kind",
                               show_progress=False)
    assert plain.class_names == ["x", "y", "z"] and plain.labels.tolist() == [2, 1, 2, 0]

    digits = load_image_dataset(embedded="digits", resolution=8, class_column="anything", max_train_samples=20,
                                show_progress=False)
    assert digits.class_names == [str(d) for d in range(10)] and len(digits.labels) == 20
    assert load_image_dataset(embedded="digits", resolution=8, max_train_samples=5,
                              show_progress=False).class_names is None


def test_class_labels_that_cannot_work_are_one_line_errors(tmp_path):
    (tmp_path / "flat").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "flat" / "loose.png")
    with pytest.raises(DataError, match=r"lie at its top, e\.g\. 'loose\.png': move them into class folders"):
        load_image_dataset(train_data_dir=str(tmp_path / "flat"), resolution=8, class_column="label",
                           show_progress=False)
    (tmp_path / "one" / "only").mkdir(parents=True)
    Image.new("L", (8, 8)).save(tmp_path / "one" / "only" / "a.png")
    with pytest.raises(DataError, match="one class folder"):
        load_image_dataset(train_data_dir=str(tmp_path / "one"), resolution=8, class_column="label",
                           show_progress=False)
    datasets.Dataset.from_dict({"image": [Image.new("L", (8, 8))]}).cast_column("image", datasets.Image()).save_to_disk(
        str(tmp_path / "no_labels"))
    with pytest.raises(DataError, match="class column 'label' not found.*--class_column"):
        load_image_dataset(dataset_name=str(tmp_path / "no_labels"), resolution=8, class_column="label",
                           show_progress=False)
