"""Helpers shared by the benchmarks: best-of-N wall time, measured in alternation to share machine noise; the
trainer's command line."""

import os
import sys
import time
from typing import Callable, Dict, List

TRAIN_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training", "train.py")


def trainer_command(*train_args) -> List[str]:
    """`accelerate launch training/train.py ARGS` on one process, without mixed precision or dynamo, whatever the
    machine's accelerate config says."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", TRAIN_SCRIPT, *map(str, train_args)]


def best_time(fn: Callable[[], None], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def compare(candidates: Dict[str, Callable[[], None]], rounds: int = 5, repeats: int = 3) -> Dict[str, float]:
    """Best time of each candidate, alternating between them every round so load affects all alike."""
    for fn in candidates.values():
        fn()  # warm-up
    best = {name: float("inf") for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            best[name] = min(best[name], best_time(fn, repeats))
    return best
