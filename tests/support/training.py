# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The trainer (training/train.py) as the tests run it: real subprocesses on the CPU with the tiny preset.

Runs that end normally go through `accelerate launch` (`launch`), as users run them. Runs whose exit code is under test
go through `python training/train.py` (`run_script`, `start_script`): `accelerate launch` replaces a failing script's
exit code with its own and adds a traceback of the launcher. Runs to be killed mid-way start in a process group of
their own (`start_killable`), so that SIGKILL reaches the launcher and the training process alike.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .processes import fork_runner, free_port

REPO = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = REPO / "training" / "train.py"

# The tiny preset on 8x8 digits: each step takes milliseconds, so a run is mostly interpreter start-up.
TINY = [
    "--preset", "tiny", "--resolution", "8", "--max_train_samples", "64", "--train_batch_size", "8",
    "--validation_inference_steps", "5", "--num_validation_images", "4", "--logging_steps", "2",
]
# What the exactness tests exercise: EMA, flips, dropout (in the tiny preset), accumulation, checkpoint pruning.
RESUMABLE = TINY + [
    "--max_train_steps", "8", "--checkpointing_steps", "2", "--checkpoints_total_limit", "2", "--use_ema",
    "--random_flip", "--gradient_accumulation_steps", "2", "--report_to", "none",
]

# One interpreter imports the trainer once, then forks a child per command line (each runs main() as
# `python training/train.py` would): eleven start-ups of torch and diffusers would cost a minute. The script imports
# the run (ddpm_hf.trainer.run, torch and all) only after parsing: it is imported here, before forking.
TRAINER_BATCH = fork_runner(setup="sys.path.insert(0, os.path.join(os.getcwd(), 'training'))\nimport train\n"
                                  "import ddpm_hf.trainer.run",
                            main="train.main", prog="train.py")


def run_env(**extra) -> dict:
    """The environment of a training subprocess: this one's, offline, on the CPU, without progress bars."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", ACCELERATE_USE_CPU="1", TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


# ----------------------------------------------------------------------------------------------------------------
# Starting runs
# ----------------------------------------------------------------------------------------------------------------
def launch_command(*args, num_processes: int = 1) -> list:
    """`accelerate launch training/train.py ARGS` as an argv, on `num_processes` CPU processes."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if num_processes > 1:
        command += ["--multi_gpu", "--main_process_port", str(free_port())]
    return command + [str(TRAIN_SCRIPT), *map(str, args)]


def launch(*args, num_processes: int = 1, env=None, timeout: int = 240) -> subprocess.CompletedProcess:
    """`accelerate launch training/train.py ARGS`; fails the test unless it succeeds."""
    result = subprocess.run(launch_command(*args, num_processes=num_processes), env=run_env(**(env or {})),
                            cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"training failed ({result.returncode}):\n{result.stderr[-5000:]}")
    return result


def script_command(*args) -> list:
    """`python training/train.py ARGS` as an argv: the trainer without a launcher, its exit code its own."""
    return [sys.executable, str(TRAIN_SCRIPT), *map(str, args)]


def run_script(*args, timeout: int = 240) -> subprocess.CompletedProcess:
    """`python training/train.py ARGS`, whatever its exit code."""
    return subprocess.run(script_command(*args), env=run_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def start_script(*args, env=None) -> subprocess.Popen:
    """`python training/train.py ARGS` in the background, its own process (signals reach it alone)."""
    return subprocess.Popen(script_command(*args), env=run_env(**(env or {})), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def start_killable(*args, env=None) -> subprocess.Popen:
    """A launch in a process group of its own, so that SIGKILL reaches the launcher and the training process."""
    return subprocess.Popen(launch_command(*args), env=run_env(**(env or {})), cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


# ----------------------------------------------------------------------------------------------------------------
# Waiting for a moment of a run, killing it there, letting it finish
# ----------------------------------------------------------------------------------------------------------------
def wait_for(condition, process: subprocess.Popen, timeout: float = 180) -> None:
    """Return once `condition()` holds (polled every 50 ms) while `process` runs; fail the test if the process ends
    first, or kill it and fail if the moment never comes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run ended before the awaited moment:\n{process.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            kill(process)
            pytest.fail("the awaited moment never came")
        time.sleep(0.05)


def kill(process: subprocess.Popen) -> None:
    """SIGKILL `process`, with its whole process group when it leads one (`start_killable`), and reap it."""
    if os.getpgid(process.pid) == process.pid:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        process.kill()
    process.wait()


def kill_when(process: subprocess.Popen, condition, timeout: float = 180) -> None:
    """SIGKILL a `start_killable` run (launcher and trainer) the moment `condition()` holds."""
    wait_for(condition, process, timeout)
    kill(process)


def latest_names(output_dir: Path, step: int):
    """The condition a kill-and-resume test needs: `latest` names checkpoint-<step> (a checkpoint's trainer_state.json
    is on disk a moment before `latest` is replaced: killed then, `latest` would still name the previous one)."""
    pointer = output_dir / "checkpoints" / "latest"
    return lambda: pointer.is_file() and pointer.read_text().strip() == f"checkpoint-{step}"


def finish(process: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    """Wait for a started run to end: (its exit code, its stderr)."""
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


# ----------------------------------------------------------------------------------------------------------------
# What a run wrote
# ----------------------------------------------------------------------------------------------------------------
def unet_weights(folder: Path) -> dict:
    return load_file(folder / "diffusion_pytorch_model.safetensors")


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"


def assert_same_result(run: Path, reference: Path) -> None:
    """`run` ended where the uninterrupted RESUMABLE `reference` did, bit for bit: its EMA weights, and the weights and
    the optimizer state of its checkpoint-8."""
    assert_bitwise_equal(unet_weights(run / "unet"), unet_weights(reference / "unet"))  # EMA weights
    checkpoint = Path("checkpoints") / "checkpoint-8"
    assert_bitwise_equal(unet_weights(run / checkpoint / "unet"), unet_weights(reference / checkpoint / "unet"))
    optimizer = [torch.load(folder / checkpoint / "optimizer.pt", weights_only=True) for folder in (run, reference)]
    assert_bitwise_equal({k: v for k, v in optimizer[0]["state"][0].items()},
                         {k: v for k, v in optimizer[1]["state"][0].items()})


def error_lines(stderr: str) -> list:
    """The one-line errors of a run's stderr (`error: ...`)."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]
