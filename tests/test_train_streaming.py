# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The trainer with --streaming, as real processes on a local parquet file opened by `datasets` with streaming=True:
it trains, its checkpoints carry each process's stream position, a SIGKILLed run resumes to bitwise the weights of the
uninterrupted one (the contract of ddpm_hf/data/streaming.py), and a resume on another process count is refused."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.training import (
    REPO,
    assert_bitwise_equal,
    error_lines,
    kill_when,
    latest_names,
    launch,
    launch_command,
    run_env,
    run_script,
    start_killable,
    unet_weights,
)

STEPS = 8


@pytest.fixture(scope="module")
def parquet_file(tmp_path_factory) -> Path:
    import datasets

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L") for _ in range(40)]
    table = datasets.Dataset.from_dict(
        {"image": images, "label": [index % 4 for index in range(40)]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list("wxyz"))}))
    path = tmp_path_factory.mktemp("stream") / "train.parquet"
    table.to_parquet(path)
    return path


def streaming_flags(parquet_file: Path, output_dir: Path) -> list:
    # 40 rows, 16 per step: the run crosses two epoch ends.
    return ["--preset", "tiny", "--resolution", "8", "--streaming", "--dataset_name", parquet_file,
            "--class_column", "label", "--shuffle_buffer_size", "8", "--train_batch_size", "8",
            "--gradient_accumulation_steps", "2", "--random_flip", "--use_ema", "--max_train_steps", STEPS,
            "--checkpointing_steps", "2", "--report_to", "none", "--validation_steps", "0",
            "--num_validation_images", "4", "--validation_inference_steps", "4", "--output_dir", output_dir]


@pytest.fixture(scope="module")
def streamed_run(parquet_file, tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("streamed") / "out"
    launch(*streaming_flags(parquet_file, output_dir), env={"DDPM_HF_DEBUG_RANKS": "1"})
    return output_dir


def test_a_streamed_run_trains_and_checkpoints_its_stream_position(streamed_run):
    assert (streamed_run / "model_index.json").is_file() and (streamed_run / "samples.png").is_file()
    state = json.loads((streamed_run / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    [position] = state["stream_state"]  # one per process
    assert position["num_processes"] == 1 and position["batch_size"] == 8 and position["epoch"] == 1
    batches = json.loads((streamed_run / "debug" / "rank-0.json").read_text())["micro_batches"]
    assert [step for step, _ in batches] == [step for step in range(STEPS) for _ in range(2)]
    assert len({digest for _, digest in batches}) == len(batches)  # flips and shuffles: no two batches alike


def test_a_killed_streamed_run_resumes_bitwise_to_the_uninterrupted_one(streamed_run, parquet_file, tmp_path):
    output_dir = tmp_path / "out"
    flags = streaming_flags(parquet_file, output_dir)
    process = start_killable(*flags, env={"DDPM_HF_TEST_STEP_DELAY": "0.4"})
    kill_when(process, latest_names(output_dir, 4))  # `latest` is replaced a moment after the checkpoint is whole
    assert not (output_dir / "model_index.json").exists(), "the run finished before the kill"
    launch(*flags, "--resume_from_checkpoint", "latest", env={"DDPM_HF_DEBUG_RANKS": "1"})
    resumed = json.loads((output_dir / "debug" / "rank-0.json").read_text())
    reference = json.loads((streamed_run / "debug" / "rank-0.json").read_text())
    first = resumed["micro_batches"][0][0]
    assert first >= 4 and resumed["micro_batches"] == [entry for entry in reference["micro_batches"]
                                                        if entry[0] >= first]
    assert resumed["parameters"] == reference["parameters"]
    assert_bitwise_equal(unet_weights(output_dir / "unet"), unet_weights(streamed_run / "unet"))


def test_resuming_a_stream_on_another_number_of_processes_is_refused_in_one_line(streamed_run, parquet_file,
                                                                                  tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(streamed_run / "checkpoints" / "checkpoint-4", copy / "checkpoints" / "checkpoint-4")
    # The same global batch (4 per process x 2 processes x 2 accumulation), but each shard's offset was one process's.
    result = subprocess.run(launch_command(*streaming_flags(parquet_file, copy), "--train_batch_size", "4",
                                           "--resume_from_checkpoint", "latest", num_processes=2),
                            env=run_env(), cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode != 0
    [line] = set(error_lines(result.stderr))
    assert ("the checkpoint's stream was read by 1 process(es), this run has 2: resume with --num_processes 1, or"
            " start a new run into another --output_dir") in line
    assert not (copy / "model_index.json").exists()


def test_streaming_flags_that_need_the_whole_set_are_refused(parquet_file, tmp_path):
    result = run_script(*streaming_flags(parquet_file, tmp_path / "out"), "--eval_nll_images", "4")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "--eval_nll_images and --max_train_samples need random access to the data" in result.stderr
    assert not (tmp_path / "out").exists()
