# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The trainer run as a child process, as the README runs it: `accelerate launch training/train.py ...` on one
process without mixed precision or dynamo (whatever the machine's accelerate config says), or plain `python`.

training/train.py rather than `-m ddpm_hf.train`: it is the README's entry point and keeps working whichever module
holds the training story."""

import subprocess
import sys
import time
from pathlib import Path

from .timing import child_env

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO_ROOT / "training" / "train.py"
LAUNCHERS = {
    "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no"],
    "python": [sys.executable],  # no launcher: nothing forwards or escalates signals
}


def trainer_command(*train_args, launcher: str = "accelerate") -> list[str]:
    """`LAUNCHER training/train.py ARGS`."""
    return [*LAUNCHERS[launcher], str(TRAIN_SCRIPT), *map(str, train_args)]


def train_preset(preset: str, output_dir: str, threads: int) -> float:
    """Train `preset` into `output_dir` as the README does, offline, with `threads` torch threads; the wall time in
    seconds."""
    start = time.perf_counter()
    subprocess.run(trainer_command("--preset", preset, "--output_dir", output_dir), check=True,
                   env=child_env(threads))
    return time.perf_counter() - start
