# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""What makes a wall time on a shared machine mean something: pinned torch threads, rounds that alternate the
candidates, and ratios taken within a round.

On a shared host the speed drifts by tens of per cent over seconds, and with another job on two cores two torch
threads ran 3.7x slower than one (issue 27). So every benchmark that runs torch pins its threads (`--threads`,
applied before anything is timed), times its candidates back to back in an order that rotates from round to round (a
round's values share the machine's state, and no candidate always runs in another's cache wake), and reports the
median of the per-round ratios.

torch is imported where it is used, so that a benchmark's parent process (which only starts children) stays light.
"""

import os
import statistics
import sys
import time
from collections.abc import Callable

DEFAULT_THREADS = 1  # the fastest and the least noisy setting beside a neighbour's job (issue 27 item 7)


def add_threads_flag(parser, default: int = DEFAULT_THREADS,
                     why: str = "on a shared CPU one thread holds up beside a neighbour's job") -> None:
    """`--threads`, with its default and the reason for it in the help."""
    parser.add_argument("--threads", type=int, default=default,
                        help=f"torch threads, set before anything is timed (default {default}: {why})")


def pin_threads(threads: int, announce: bool = True) -> None:
    """Set torch's intra-op threads before anything is timed, and (`announce`) print the count torch reports back,
    as the first line of the benchmark's output."""
    import torch

    if threads < 1:
        raise SystemExit(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    if announce:
        print(f"torch threads: {torch.get_num_threads()} (--threads)", flush=True)


def child_env(threads: int, **extra: str) -> dict[str, str]:
    """The environment of a child process that runs torch with `threads` threads (torch reads OMP_NUM_THREADS at
    start-up; `accelerate launch` passes it on to the trainer), offline."""
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", **extra)


def synchronize(device) -> None:
    """Wait for the device's queued work, so that a wall time covers it (a no-op on the CPU)."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def rotating_rounds(measures: dict[str, Callable[[], float]], rounds: int, show: str | None = None,
                    ) -> dict[str, list[float]]:
    """Every measure's value in each of `rounds` rounds. Within a round the measures run back to back, in an order
    that rotates from round to round. `show` (e.g. "{:.2f} s") prints each round's values on stderr as it ends."""
    names = list(measures)
    values = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            values[name].append(measures[name]())
        if show:
            print(f"round {index + 1}/{rounds}: " + ", ".join(f"{name} {show.format(values[name][-1])}"
                                                            for name in names), file=sys.stderr, flush=True)
    return values


def best_time(fn: Callable[[], None], repeats: int) -> float:
    """The shortest of `repeats` wall times of `fn()`, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def compare(candidates: dict[str, Callable[[], None]], rounds: int = 5, repeats: int = 3) -> dict[str, list[float]]:
    """Each candidate's best-of-`repeats` seconds in every round, after one warm-up call each (`rotating_rounds`)."""
    for fn in candidates.values():
        fn()
    return rotating_rounds({name: (lambda fn=fn: best_time(fn, repeats)) for name, fn in candidates.items()}, rounds)


def median_ratio(values: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """The median over rounds of numerator's value / denominator's value in the same round."""
    return statistics.median(a / b for a, b in zip(values[numerator], values[denominator], strict=True))
