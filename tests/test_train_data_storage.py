# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The trainer on each data storage (--data_storage memory, memmap, lazy), as real processes on real image files:
the same weights bit for bit, exact resume after SIGKILL, one decoded copy for the processes of a machine, and files
damaged while training skipped, counted, and past the tolerated fraction a stop that keeps the last checkpoint."""

import json
from pathlib import Path

import pytest
from support.images import write_folder
from support.processes import run_forked
from support.training import (
    REPO,
    RESUMABLE,
    TRAINER_BATCH,
    assert_bitwise_equal,
    assert_same_result,
    error_lines,
    finish,
    kill_when,
    latest_names,
    launch,
    run_env,
    start_killable,
    start_script,
    unet_weights,
    wait_for,
)

FOLDER_FLAGS = [flag for flag in RESUMABLE if flag not in ("--max_train_samples", "64")]


def debug_record(output_dir: Path, rank: int = 0) -> dict:
    return json.loads((output_dir / "debug" / f"rank-{rank}.json").read_text())


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("data") / "images", count=40, rgb_every=4)


@pytest.fixture(scope="module")
def storage_runs(images, tmp_path_factory) -> dict:
    """The same resumable run from each storage (lazy through two dataloader workers), in one interpreter."""
    root = tmp_path_factory.mktemp("storage_runs")
    runs = {storage: [*FOLDER_FLAGS, "--train_data_dir", str(images), "--data_storage", storage,
                      "--data_cache_dir", str(root / "cache"), "--output_dir", str(root / storage),
                      "--dataloader_num_workers", "2" if storage == "lazy" else "0"]
            for storage in ("memory", "memmap", "lazy")}
    codes = run_forked(TRAINER_BATCH, runs, root, cwd=REPO, env=run_env(DDPM_HF_DEBUG_RANKS="1"), timeout=400)
    assert codes == {"memory": 0, "memmap": 0, "lazy": 0}, {name: (root / f"{name}.stderr").read_text()[-2000:]
                                                             for name, code in codes.items() if code}
    return {"root": root, **{storage: root / storage for storage in runs}}


def test_memmap_and_lazy_storage_train_bitwise_the_weights_of_memory_storage(storage_runs):
    reference = debug_record(storage_runs["memory"])
    assert reference["data"]["storage"] == "memory" and len(reference["micro_batches"]) == 8 * 2
    for storage in ("memmap", "lazy"):
        record = debug_record(storage_runs[storage])
        assert record["data"]["storage"] == storage and record["data"]["built_cache_entry"] is True
        assert record["micro_batches"] == reference["micro_batches"], storage  # every micro-batch, hashed
        assert record["parameters"] == reference["parameters"], storage
        weights = [unet_weights(storage_runs[name] / "unet") for name in (storage, "memory")]
        assert_bitwise_equal(*weights)
    log = (storage_runs["root"] / "memmap.stderr").read_text()
    assert "Data: 40 images from" in log and "storage memmap (memory-mapped" in log and "built now" in log


@pytest.mark.parametrize("storage", ["memmap", "lazy"])
def test_resume_after_sigkill_is_bitwise_exact_on_stored_data(storage, storage_runs, images, tmp_path):
    output_dir = tmp_path / "out"
    flags = [*FOLDER_FLAGS, "--train_data_dir", images, "--data_storage", storage,
             "--data_cache_dir", storage_runs["root"] / "cache", "--output_dir", output_dir]
    process = start_killable(*flags, env={"DDPM_HF_TEST_STEP_DELAY": "0.4"})
    kill_when(process, latest_names(output_dir, 4))  # `latest` is replaced a moment after the checkpoint is whole
    assert not (output_dir / "model_index.json").exists(), "the run finished before the kill"
    launch(*flags, "--resume_from_checkpoint", "latest")
    assert_same_result(output_dir, storage_runs["memory"])


def test_two_processes_decode_once_map_one_file_and_read_disjoint_batches(images, tmp_path):
    output_dir, cache = tmp_path / "out", tmp_path / "cache"
    launch(*FOLDER_FLAGS, "--train_data_dir", images, "--data_storage", "memmap", "--data_cache_dir", cache,
           "--train_batch_size", "4", "--output_dir", output_dir, num_processes=2, env={"DDPM_HF_DEBUG_RANKS": "1"})
    ranks = [debug_record(output_dir, rank) for rank in range(2)]
    [entry] = list((cache / "decoded").iterdir())  # one entry, nothing half-built beside it
    assert [rank["data"] for rank in ranks] == [
        {"storage": "memmap", "cache_entry": str(entry), "built_cache_entry": True},  # the local main decoded
        {"storage": "memmap", "cache_entry": str(entry), "built_cache_entry": False},  # the other one waited
    ]
    assert (entry / "pixels.u8").stat().st_size == 40 * 3 * 8 * 8
    batches = [{digest for _, digest in rank["micro_batches"]} for rank in ranks]
    assert len(batches[0]) == len(batches[1]) == 8 * 2 and not batches[0] & batches[1]
    assert ranks[0]["parameters"] == ranks[1]["parameters"]

    # Resumed on one process (the data position is a count of samples, so any layout continues it): the stream
    # goes on where the two processes left it, from the same cache entry.
    launch(*FOLDER_FLAGS, "--train_data_dir", images, "--data_storage", "memmap", "--data_cache_dir", cache,
           "--train_batch_size", "8", "--output_dir", output_dir, "--max_train_steps", "10",
           "--resume_from_checkpoint", "latest", env={"DDPM_HF_DEBUG_RANKS": "1"})
    resumed = debug_record(output_dir)
    assert resumed["data"]["built_cache_entry"] is False and {step for step, _ in resumed["micro_batches"]} == {8, 9}
    state = json.loads((output_dir / "checkpoints" / "checkpoint-10" / "trainer_state.json").read_text())
    assert state["samples_seen"] == 10 * 16 and state["num_processes"] == 1


def test_lazy_files_damaged_while_training_are_skipped_then_too_many_stop_the_run(tmp_path):
    images = write_folder(tmp_path / "images", count=32)
    flags = ["--preset", "tiny", "--resolution", "8", "--train_batch_size", "8", "--report_to", "none",
             "--validation_steps", "0", "--logging_steps", "1", "--checkpointing_steps", "2", "--train_data_dir",
             images, "--data_storage", "lazy", "--data_cache_dir", tmp_path / "cache", "--max_bad_image_fraction",
             "0.05"]  # tolerates 1 of 32

    def damage(name):  # the header survives (the check before training passes it); the pixel data does not
        path = images / name
        path.write_bytes(path.read_bytes()[:60])

    # One damaged file: left out of its micro-batches, named once, and the run completes.
    damage("a/003.png")
    code, stderr = finish(start_script(*flags, "--max_train_steps", "8", "--output_dir", tmp_path / "tolerant"))
    assert code == 0, stderr[-3000:]
    assert stderr.count("Left out of training: a/003.png (could not be decoded; 1 so far)") == 1
    assert (tmp_path / "tolerant" / "model_index.json").is_file()

    # Files damaged mid-run, past the tolerated fraction: exit 2 naming them; the checkpoints written stay whole.
    output_dir = tmp_path / "stopped"
    process = start_script(*flags, "--max_train_steps", "40", "--output_dir", output_dir,
                           env={"DDPM_HF_TEST_STEP_DELAY": "0.3"})
    wait_for((output_dir / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file, process)
    for index in (5, 7, 9, 11):
        damage(f"a/{index:03d}.png")
    code, stderr = finish(process)
    assert code == 2, stderr[-3000:]
    [line] = error_lines(stderr)
    assert "images could not be decoded" in line and "a/003.png" in line and "--max_bad_image_fraction" in line
    checkpoints = sorted((output_dir / "checkpoints").glob("checkpoint-*"))
    assert checkpoints and all((path / "trainer_state.json").is_file() for path in checkpoints)
    assert not (output_dir / "model_index.json").exists()
    # The last good checkpoint resumes (here with the files repaired): nothing was lost.
    write_folder(tmp_path / "images", count=32)
    code, stderr = finish(start_script(*flags, "--max_train_steps", str(int(checkpoints[-1].name.split("-")[1]) + 1),
                                       "--output_dir", output_dir, "--resume_from_checkpoint", "latest"))
    assert code == 0, stderr[-3000:]


def test_a_damaged_cache_entry_is_rebuilt_not_trained_on_and_a_cache_path_that_is_a_file_is_one_line(storage_runs,
                                                                                                      images, tmp_path):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(storage_runs["root"] / "cache", cache)
    [entry] = [path for path in (cache / "decoded").iterdir() if "-memmap-" in path.name]
    with open(entry / "pixels.u8", "r+b") as file:  # 4 KiB of the pixels overwritten, sizes unchanged
        file.seek(1024)
        file.write(b"\xff" * 4096)
    (tmp_path / "not_a_folder").write_text("")
    common = [*FOLDER_FLAGS, "--train_data_dir", str(images), "--data_storage", "memmap", "--dataloader_num_workers",
              "0"]
    runs = {"damaged": [*common, "--data_cache_dir", str(cache), "--output_dir", str(tmp_path / "damaged")],
            "file": [*common, "--data_cache_dir", str(tmp_path / "not_a_folder"), "--output_dir", str(tmp_path / "f")]}
    codes = run_forked(TRAINER_BATCH, runs, tmp_path, cwd=REPO, env=run_env(DDPM_HF_DEBUG_RANKS="1"), timeout=400)
    log = (tmp_path / "damaged.stderr").read_text()
    assert codes["damaged"] == 0, log[-3000:]
    assert f"The decoded cache entry {entry} is damaged (the xxh3_128 checksum of its pixels.u8" in log
    assert "built now" in log and "found built" not in log
    # What trained is the source's pixels: every micro-batch and the weights are the memory run's.
    record, reference = debug_record(tmp_path / "damaged"), debug_record(storage_runs["memory"])
    assert record["micro_batches"] == reference["micro_batches"] and record["parameters"] == reference["parameters"]

    stderr = (tmp_path / "file.stderr").read_text()
    assert codes["file"] == 2 and "Traceback" not in stderr, stderr[-3000:]
    [line] = error_lines(stderr)
    assert "not_a_folder is a file; pass a folder with --data_cache_dir" in line
