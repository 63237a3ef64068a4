# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Helpers shared by the benchmarks: wall times measured in rounds that alternate the candidates, so that a ratio taken
within a round shares the machine's noise; the trainer's command line; a mean and its standard error."""

import math
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch

TRAIN_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training", "train.py")


def trainer_command(*train_args) -> list[str]:
    """`accelerate launch training/train.py ARGS` on one process, without mixed precision or dynamo, whatever the
    machine's accelerate config says."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", TRAIN_SCRIPT, *map(str, train_args)]


def train_preset(preset: str, output_dir: str) -> float:
    """Train `preset` into `output_dir` as the README does, offline; returns the wall time in seconds."""
    import subprocess

    start = time.perf_counter()
    subprocess.run(trainer_command("--preset", preset, "--output_dir", output_dir), check=True,
                   env=dict(os.environ, HF_HUB_OFFLINE="1"))
    return time.perf_counter() - start


def best_time(fn: Callable[[], None], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def compare(candidates: dict[str, Callable[[], None]], rounds: int = 5, repeats: int = 3) -> dict[str, list[float]]:
    """Each candidate's best-of-`repeats` time in every round. The candidates run back to back within a round, in an
    order that rotates from round to round, so that a round's times share the machine's state (on a shared host its
    speed drifts by tens of per cent over seconds) and no candidate always runs in another's cache wake."""
    for fn in candidates.values():
        fn()  # warm-up
    names = list(candidates)
    times = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(best_time(candidates[name], repeats))
    return times


def median_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """The median over rounds of numerator's time / denominator's time in the same round."""
    return statistics.median(a / b for a, b in zip(times[numerator], times[denominator], strict=True))


def mean_stderr(x: torch.Tensor) -> tuple[float, float]:
    """The mean of per-image values and its standard error (0 for a single value)."""
    return float(x.mean()), (float(x.std(unbiased=True) / math.sqrt(len(x))) if len(x) > 1 else 0.0)
