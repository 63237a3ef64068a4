# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The trainer under misuse and faults, as real subprocesses: two runs in one folder, divergence, signals, damaged
checkpoints, a full disk, and flags out of range. Each test reproduces a defect the trainer once had."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support.processes import run_forked
from support.training import (
    REPO,
    RESUMABLE,
    TINY,
    TRAINER_BATCH,
    assert_same_result,
    error_lines,
    finish,
    launch,
    run_env,
    run_script,
    start_script,
    wait_for,
)

from ddpm_hf.trainer.setup import physical_cores

FAST = [*TINY, "--report_to", "none", "--validation_steps", "0"]


# ----------------------------------------------------------------------------------------------------------------
# One run per folder
# ----------------------------------------------------------------------------------------------------------------
def test_a_second_run_into_a_held_folder_stops_at_once_naming_the_holder(tmp_path):
    output_dir = tmp_path / "out"
    # The first run takes 60 x 0.25 s: the second starts (in a few seconds) while it trains.
    first = start_script(*FAST, "--max_train_steps", "60", "--checkpointing_steps", "4", "--seed", "1",
                         "--output_dir", output_dir, env={"DDPM_HF_TEST_STEP_DELAY": "0.25"})
    wait_for(lambda: (output_dir / "checkpoints" / "checkpoint-4" / "trainer_state.json").is_file(), first)

    second = run_script(*FAST, "--max_train_steps", "60", "--seed", "2", "--learning_rate", "1e-2",
                        "--checkpointing_steps", "2", "--output_dir", output_dir, timeout=60)
    assert first.poll() is None, "the first run ended before the second started: the test proves nothing"
    assert second.returncode == 2, second.stderr[-3000:]
    [line] = error_lines(second.stderr)
    assert "in use by another training run" in line and f"PID {first.pid}" in line and "--output_dir" in line

    code, stderr = finish(first)
    assert code == 0, stderr[-3000:]
    for step in range(4, 61, 4):  # every checkpoint is the first run's, and the second wrote none of its own
        state = json.loads((output_dir / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").read_text())
        assert state["args"]["seed"] == 1
    steps = {int(path.name.split("-")[1]) for path in (output_dir / "checkpoints").glob("checkpoint-*")}
    assert steps == set(range(4, 61, 4))
    assert json.loads((output_dir / "training_args.json").read_text())["seed"] == 1
    assert not (output_dir / ".ddpm-hf-run.lock").exists()  # released


def test_a_lock_left_by_a_dead_run_is_taken_over(tmp_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / ".ddpm-hf-run.lock").write_text(json.dumps({"host": "gone", "pid": 999999, "started": "then"}))
    result = run_script(*FAST, "--max_train_steps", "2", "--output_dir", output_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Took over" in result.stderr and "pid" in result.stderr.lower() and "999999" in result.stderr


def test_a_released_lock_leaves_no_lock_file_nor_a_folder_it_made_and_left_empty(tmp_path):
    from ddpm_hf.trainer.run_lock import LOCK_FILE, RunLock, RunLockedError

    RunLock(str(tmp_path / "new" / "out")).release()  # a run that failed its checks
    assert os.listdir(tmp_path) == []  # both folders it made, empty: gone
    existing = tmp_path / "existing"
    existing.mkdir()
    first = RunLock(str(existing / "out"))
    with pytest.raises(RunLockedError):
        RunLock(str(existing / "out"))
    (existing / "out" / "samples.png").write_bytes(b"written by the run")
    first.release()
    assert os.listdir(existing / "out") == ["samples.png"]  # written into: kept, without the lock file
    again = RunLock(str(existing))  # a folder that was there before: kept as it was
    assert (existing / LOCK_FILE).is_file()
    again.release()
    assert os.listdir(existing) == ["out"]


# ----------------------------------------------------------------------------------------------------------------
# Divergence
# ----------------------------------------------------------------------------------------------------------------
def test_divergence_names_a_checkpoint_that_is_good_and_a_new_learning_rate_takes_effect_on_resume(tmp_path):
    output_dir = tmp_path / "out"
    # Adam moves every weight by about the learning rate each step: at 1e4 the loss is non-finite within a few steps.
    result = run_script(*FAST, "--max_train_steps", "20", "--learning_rate", "1e4", "--lr_warmup_steps", "0",
                        "--checkpointing_steps", "1", "--logging_steps", "1", "--output_dir", output_dir)
    assert result.returncode == 3, result.stderr[-3000:]
    [line] = error_lines(result.stderr)
    first_bad = int(line.split("at step ")[1].split(";")[0])
    checkpoints = output_dir / "checkpoints"
    good = sorted(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*"))
    set_aside = sorted(int(p.name.split("-")[2]) for p in checkpoints.glob("diverged-checkpoint-*"))
    assert set_aside == list(range(first_bad - 1, first_bad)), (first_bad, set_aside)  # the weights of step D-1
    assert good == list(range(1, first_bad - 1))
    if good:
        assert f"the last good checkpoint is {checkpoints / f'checkpoint-{good[-1]}'}" in line
        assert (checkpoints / "latest").read_text().strip() == f"checkpoint-{good[-1]}"
    else:
        assert "no checkpoint before it was verified good" in line and not (checkpoints / "latest").exists()

    # The advice works: a lower rate, resumed from latest, trains on at that rate.
    resumed = run_script(*FAST, "--max_train_steps", "20", "--learning_rate", "1e-3", "--lr_warmup_steps", "0",
                         "--checkpointing_steps", "20", "--logging_steps", "1", "--output_dir", output_dir,
                         "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    if good:
        assert "The learning-rate schedule follows the new flags (--learning_rate 10000.0 -> 0.001)" in resumed.stderr
    optimizer = torch.load(checkpoints / "checkpoint-20" / "optimizer.pt", weights_only=True)
    assert optimizer["param_groups"][0]["lr"] == pytest.approx(1e-3)
    weights = load_file(output_dir / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_a_resume_without_rate_flags_keeps_the_checkpoints_rate(tmp_path):
    output_dir = tmp_path / "out"
    common = [*FAST, "--checkpointing_steps", "2", "--lr_scheduler", "constant", "--output_dir", output_dir]
    assert run_script(*common, "--learning_rate", "2e-3", "--max_train_steps", "4").returncode == 0
    resumed = run_script(*common, "--max_train_steps", "6", "--resume_from_checkpoint", "latest")  # preset's rate
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "follows the new flags" not in resumed.stderr
    optimizer = torch.load(output_dir / "checkpoints" / "checkpoint-6" / "optimizer.pt", weights_only=True)
    assert optimizer["param_groups"][0]["lr"] == pytest.approx(2e-3)


# ----------------------------------------------------------------------------------------------------------------
# Signals
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("uninterrupted") / "out"
    launch(*RESUMABLE, "--output_dir", output_dir)
    return output_dir


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_finishes_the_step_checkpoints_and_resumes_bitwise_exact(stop_signal, uninterrupted, tmp_path):
    output_dir = tmp_path / "out"
    checkpoints = output_dir / "checkpoints"
    process = start_script(*RESUMABLE, "--output_dir", output_dir, env={"DDPM_HF_TEST_STEP_DELAY": "0.4"})
    wait_for(lambda: (checkpoints / "checkpoint-2" / "trainer_state.json").is_file(), process)
    time.sleep(0.5)  # into step 3 or 4: a step between scheduled checkpoints, most likely
    process.send_signal(stop_signal)
    code, stderr = finish(process)

    assert code == 75, stderr[-3000:]
    assert "Traceback" not in stderr
    [line] = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    step = int(line.split("at step ")[1].split(";")[0])
    assert line == (f"interrupted by {signal.Signals(stop_signal).name} at step {step}; resume with"
                    " --resume_from_checkpoint latest")
    assert (checkpoints / "latest").read_text().strip() == f"checkpoint-{step}"
    assert not (output_dir / "model_index.json").exists()

    # The README's resume: the same command, without the length. The run goes on to the 8 steps it was started with,
    # not to the tiny preset's 200.
    length = RESUMABLE.index("--max_train_steps")
    launch(*RESUMABLE[:length], *RESUMABLE[length + 2:], "--output_dir", output_dir, "--resume_from_checkpoint",
           "latest")
    assert_same_result(output_dir, uninterrupted)
    card = (output_dir / "README.md").read_text()
    assert "| Training steps | 8 |" in card and "| Steps trained | 8 |" in card


# ----------------------------------------------------------------------------------------------------------------
# Damaged checkpoints and a full disk
# ----------------------------------------------------------------------------------------------------------------
def test_a_damaged_newest_checkpoint_falls_back_with_latest_and_is_named_otherwise(tmp_path):
    output_dir = tmp_path / "out"
    flags = [*FAST, "--checkpointing_steps", "2", "--use_ema", "--output_dir", output_dir]
    assert run_script(*flags, "--max_train_steps", "4").returncode == 0
    weights = output_dir / "checkpoints" / "checkpoint-4" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated, as by a full disk

    named = run_script(*flags, "--max_train_steps", "6", "--resume_from_checkpoint", "checkpoint-4")
    assert named.returncode == 2, named.stderr[-3000:]
    [line] = error_lines(named.stderr)
    assert str(weights) in line and "damaged" in line and "checkpoint-2" in line

    latest = run_script(*flags, "--max_train_steps", "6", "--resume_from_checkpoint", "latest")
    assert latest.returncode == 0, latest.stderr[-3000:]
    assert str(weights) in latest.stderr and "Resuming from checkpoint-2, the newest checkpoint that loads" in \
        latest.stderr
    state = json.loads((output_dir / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6


def test_a_failed_checkpoint_write_for_want_of_space_keeps_the_previous_one(tmp_path):
    from ddpm_hf.io import OutOfSpaceError
    from ddpm_hf.trainer.checkpoints import STATE_FILE, latest_checkpoint, save_checkpoint

    def good(folder):
        Path(folder, "weights").write_bytes(b"x" * 1000)
        Path(folder, STATE_FILE).write_text("{}")

    def full(folder):
        Path(folder, "weights").write_bytes(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    save_checkpoint(str(tmp_path), 2, good)
    with pytest.raises(OutOfSpaceError, match=r"no space left on .*free, 1002 bytes needed; checkpoint-4 was not"
                                              r" written \(checkpoint-2 and `latest` are intact\)"):
        save_checkpoint(str(tmp_path), 4, full)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-2", "latest"]  # no temporary left on the full disk
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-2")


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs (mounting needs root: elsewhere the test is skipped, saying so)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}); the in-process test covers it")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_during_a_checkpoint_says_so_and_keeps_the_previous_checkpoint(small_disk):
    output_dir = small_disk / "out"
    filler = small_disk / "filler"
    flags = [*FAST, "--max_train_steps", "8", "--checkpointing_steps", "4", "--use_ema", "--output_dir", output_dir]
    process = start_script(*flags, env={"DDPM_HF_TEST_STEP_DELAY": "0.4"})
    wait_for(lambda: (output_dir / "checkpoints" / "checkpoint-4" / "trainer_state.json").is_file(), process)
    with open(filler, "wb") as f:  # fill the disk up to 100 KiB: checkpoint-8 cannot fit
        f.truncate(0)
        os.posix_fallocate(f.fileno(), 0, shutil.disk_usage(small_disk).free - 100 * 1024)
    code, stderr = finish(process)

    assert code == 6, stderr[-3000:]
    [line] = error_lines(stderr)
    assert f"no space left on {output_dir / 'checkpoints'}" in line and "KiB free" in line and "needed" in line
    assert "checkpoint-4 and `latest` are intact" in line and "Traceback" not in stderr
    checkpoints = output_dir / "checkpoints"
    assert sorted(os.listdir(checkpoints)) == ["checkpoint-4", "latest"]  # the temporary went
    assert not (output_dir / "training_args.json").exists()  # the run did not finish

    filler.unlink()
    resumed = run_script(*flags, "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (output_dir / "model_index.json").is_file() and (output_dir / "training_args.json").is_file()


# ----------------------------------------------------------------------------------------------------------------
# Flags: every number checked before any work, exit 2
# ----------------------------------------------------------------------------------------------------------------
BAD_FLAGS = {
    "resolution_zero": (["--resolution", "0"], "--resolution must be at least 8, got 0"),
    "negative_rate": (["--learning_rate", "-1"], "--learning_rate must be greater than 0, got -1.0"),
    "nan_rate": (["--learning_rate", "nan"], "--learning_rate must be a finite number"),
    "beta_one": (["--adam_beta1", "1"], "--adam_beta1 must be at least 0 and below 1"),
    "ema_decay_above_one": (["--ema_max_decay", "1.5"], "--ema_max_decay must be between 0 and 1"),
    "negative_clip": (["--max_grad_norm", "-1"], "--max_grad_norm must be 0 or more"),
    "negative_seed": (["--seed", "-3"], "--seed must be between 0 and 4294967295"),
    "zero_epochs": (["--num_epochs", "0"], "--num_epochs must be greater than 0"),
    "bad_image_fraction": (["--max_bad_image_fraction", "2"], "--max_bad_image_fraction must be between 0 and 1"),
    "fp16_on_cpu": (["--mixed_precision", "fp16"], "--mixed_precision fp16 needs a GPU"),
    "missing_checkpoint": (["--resume_from_checkpoint", "checkpoint-7"], "checkpoint 'checkpoint-7' not found"),
    "snr_gamma_zero": (["--snr_gamma", "0"], "snr_gamma must be positive"),
    "snr_gamma_with_vlb": (["--snr_gamma", "5", "--loss_type", "vlb"], "use loss_type 'simple' with snr_gamma"),
    # Offline (run_env sets HF_HUB_OFFLINE=1): a Hub id fails before the data, saying how to train on local data.
    "offline_dataset": (["--dataset_name", "someone/pictures"], "--dataset_name someone/pictures is no local path, so"
                        " it names a Hub dataset, and the Hub is switched off (HF_HUB_OFFLINE is set): train on local"
                        " data instead (--train_data_dir"),
    "offline_text_encoder": (["--caption_column", "text", "--text_encoder_name_or_path", "someone/clip"],
                             "is a Hub id, and the Hub is switched off (HF_HUB_OFFLINE is set): pass a local folder"),
}

def test_a_flag_out_of_range_fails_at_once_with_one_line_and_writes_nothing(tmp_path):
    runs = {name: [*flags, "--max_train_steps", "1", "--report_to", "none", "--output_dir", str(tmp_path / name)]
            for name, (flags, _) in BAD_FLAGS.items()}
    codes = run_forked(TRAINER_BATCH, runs, tmp_path, cwd=REPO, env=run_env(), timeout=300)
    for name, (_, expected) in BAD_FLAGS.items():
        stderr = (tmp_path / f"{name}.stderr").read_text()
        assert codes[name] == 2, (name, stderr[-2000:])
        assert "Traceback" not in stderr and "Data:" not in stderr, name  # no data was loaded
        [line] = [line for line in stderr.splitlines() if "error:" in line]
        assert expected in line, (name, line)
        assert not (tmp_path / name).exists(), name  # not even the folder, nor its lock file


# A resume that changes what the checkpoint's arithmetic depends on: each case resumes a copy of the uninterrupted
# run's checkpoint-8 with the RESUMABLE flags plus these, and is refused naming the flag and both values.
CHANGED_RUNS = {
    "seed": (["--seed", "5"], "--seed 0 there, 5 now"),
    "global_batch": (["--train_batch_size", "16"], "--train_batch_size 8 there, 16 now"),
    "objective": (["--prediction_type", "v_prediction", "--ddpm_beta_schedule", "squaredcos_cap_v2"],
                  "--ddpm_beta_schedule linear there, squaredcos_cap_v2 now, --prediction_type epsilon there,"
                  " v_prediction now"),
    "steps": (["--ddpm_num_steps", "500"], "--ddpm_num_steps 1000 there, 500 now"),
    # Allowed, the flag still cannot make another UNet fit: found from the checkpoint's config, before the data.
    "unet": (["--resolution", "16", "--allow_changed_flags", "resolution"],
             "holds a different UNet (sample_size: 8 there, 16 now)"),
    # Not run-defining, but a run cannot be shorter than what it has trained (the card would say 5 steps of 8).
    "length": (["--max_train_steps", "5"], "--max_train_steps 5 is below the 8 steps checkpoint-8 has trained: pass"
               " --max_train_steps 8 or more to go on from there, leave it out to train to the run's own 8 steps"),
}


def test_a_resume_that_changes_the_run_is_refused_in_one_line_before_the_data(uninterrupted, tmp_path):
    runs, checkpoint = {}, uninterrupted / "checkpoints" / "checkpoint-8"
    for name, (flags, _) in CHANGED_RUNS.items():
        shutil.copytree(checkpoint, tmp_path / name / "checkpoints" / "checkpoint-8")
        runs[name] = [*map(str, RESUMABLE), "--max_train_steps", "10", "--output_dir", str(tmp_path / name),
                      "--resume_from_checkpoint", "latest", *flags]
    codes = run_forked(TRAINER_BATCH, runs, tmp_path, cwd=REPO, env=run_env(), timeout=300)
    for name, (flags, expected) in CHANGED_RUNS.items():
        stderr = (tmp_path / f"{name}.stderr").read_text()
        assert codes[name] == 2, (name, stderr[-2000:])
        assert "Traceback" not in stderr and "Data:" not in stderr, name  # refused before any data was loaded
        [line] = error_lines(stderr)
        assert expected in line, (name, line)
        if name not in ("unet", "length"):
            changed = ",".join(sorted(flag.lstrip("-") for flag in flags[::2]))
            assert f"pass --allow_changed_flags {changed} if the change is meant (from step 8 on)" in line, line
        assert sorted(os.listdir(tmp_path / name / "checkpoints")) == ["checkpoint-8"], name  # nothing moved


def test_an_output_folder_that_cannot_hold_the_run_is_refused_in_one_line(tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.new("L", (8, 8), color=40 * i).save(images / f"{i}.png")
    (tmp_path / "a_file").write_text("not a folder")
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(read_only)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:  # not root: a folder without write permission fails the same way
        read_only.chmod(0o555)
    cases = {
        "inside_the_data": (["--train_data_dir", images, "--output_dir", images / "out"],
                            f"--output_dir {images / 'out'} is inside --train_data_dir {images}: the next run would"
                            " train on its samples.png"),
        "the_data_itself": (["--train_data_dir", images, "--output_dir", images], "is inside --train_data_dir"),
        "a_file": (["--output_dir", tmp_path / "a_file"], "is a file, not a folder: pass the path of a folder"),
        "under_a_file": (["--output_dir", tmp_path / "a_file" / "out"], "a file stands in its path"),
        "read_only": (["--output_dir", read_only / "out"], "cannot be written (Read-only file system)"
                      if mounted.returncode == 0 else "cannot be written (Permission denied)"),
    }
    runs = {name: [*map(str, FAST), "--max_train_steps", "1", *map(str, flags)] for name, (flags, _) in cases.items()}
    try:
        codes = run_forked(TRAINER_BATCH, runs, tmp_path, cwd=REPO, env=run_env(), timeout=300)
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(read_only)], check=False)
    for name, (_, expected) in cases.items():
        stderr = (tmp_path / f"{name}.stderr").read_text()
        assert codes[name] == 2 and "Traceback" not in stderr, (name, stderr[-2000:])
        [line] = [line for line in stderr.splitlines() if "error:" in line]
        assert expected in line, (name, line)
    assert sorted(path.name for path in images.iterdir()) == ["0.png", "1.png"]  # nothing written into the data


def test_the_bad_image_flag_reaches_the_loader(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.new("L", (8, 8), color=60 * i).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    flags = [*FAST, "--train_data_dir", folder, "--max_train_steps", "1", "--checkpointing_steps", "0"]
    refused = run_script(*flags, "--max_bad_image_fraction", "0", "--output_dir", tmp_path / "a")
    assert refused.returncode == 2 and "broken.png" in refused.stderr and "--max_bad_image_fraction" in refused.stderr
    tolerated = run_script(*flags, "--output_dir", tmp_path / "b")  # one bad image is always tolerated by default
    assert tolerated.returncode == 0, tolerated.stderr[-3000:]


def test_a_huggingface_hub_warning_is_printed_once(tmp_path):
    out = subprocess.run([sys.executable, "-c", f"""
import logging, sys
import huggingface_hub  # its logging set up first, as when datasets or diffusers import it
from ddpm_hf.trainer.config import parse_args
from ddpm_hf.trainer.setup import make_accelerator
make_accelerator(parse_args(["--report_to", "none", "--output_dir", {str(tmp_path / 'out')!r}]))
logging.getLogger("huggingface_hub.file_download").warning("probe warning")
"""], env=run_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.count("probe warning") == 1, out.stderr


def test_idle_cores_advice_names_the_launcher_flag_for_cpu_runs_only():
    from ddpm_hf.trainer.setup import idle_cores_advice

    advice = idle_cores_advice("cpu", threads=1, cores=8, local_processes=2)
    assert "--num_cpu_threads_per_process 3" in advice  # 7 cores for two processes, one spare
    assert idle_cores_advice("cpu", threads=3, cores=8, local_processes=2) is None
    assert idle_cores_advice("cuda", threads=1, cores=8, local_processes=1) is None
    assert idle_cores_advice("cpu", threads=1, cores=2, local_processes=1) is None  # one thread, one spare core
    assert idle_cores_advice("cpu", threads=1, cores=1, local_processes=1) is None


def test_a_cpu_run_that_leaves_more_than_a_spare_core_idle_is_told_the_flag(tmp_path):
    probe = f"""
from ddpm_hf.trainer.config import parse_args
from ddpm_hf.trainer.setup import make_accelerator
make_accelerator(parse_args(["--report_to", "none", "--output_dir", {str(tmp_path / 'out')!r}]))
"""
    # One thread is what `accelerate launch` sets by default: told only where that leaves more than one core idle.
    for threads, told in (("1", physical_cores() > 2), (str(physical_cores()), False)):
        out = subprocess.run([sys.executable, "-c", probe], env=run_env(OMP_NUM_THREADS=threads),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        assert ("--num_cpu_threads_per_process" in out.stderr) is told, out.stderr
