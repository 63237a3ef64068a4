"""Timing helpers shared by the benchmarks: best-of-N wall time, measured in alternation to share machine noise."""

import time
from typing import Callable, Dict


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
