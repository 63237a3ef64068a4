# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Stopping on SIGTERM (what SLURM and Kubernetes send before they kill) and SIGINT (Ctrl-C) without losing work.

The first signal only asks: the loop finishes the optimizer step it is in, writes a checkpoint and raises
`TrainingInterrupted`. A second signal stops at once (KeyboardInterrupt), for a run that must die now.

On several processes every rank must stop after the same step, or the others wait in the next step's all-reduce
forever; a signal may reach one rank only, or the ranks at different steps. So each step every rank adds its own
flag to an all-reduce, and all read the sum one step later: by then it is computed, so reading it does not wait for
the device, and all ranks read the same sum after the same step.
"""

import signal
import threading

import torch

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """The run stopped on a signal after `step`, with a checkpoint of that step written."""

    def __init__(self, step: int, signal_name: str):
        self.step, self.signal_name = step, signal_name
        super().__init__(f"interrupted by {signal_name} at step {step}")


class StopRequests:
    """Within `with StopRequests(accelerator) as stop:`, SIGINT and SIGTERM set a flag that `stop.agreed()` reads."""

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.received = None  # the name of the first signal
        self._previous = {}
        self._pending = None  # the all-reduce of the last step's flags, read at the next step

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # Python delivers signals to the main thread only
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._ask)
        return self

    def __exit__(self, *exc_info):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        return False

    def _ask(self, number, frame):
        if self.received is not None:
            raise KeyboardInterrupt(f"a second {signal.Signals(number).name}")
        self.received = signal.Signals(number).name

    def agreed(self) -> bool:
        """Whether to stop after the step just taken: at once on one process; on several, when any rank had a signal
        by the step before (the sum of the flags, all-reduced then)."""
        if self.accelerator.num_processes == 1:
            return self.received is not None
        stop = self._pending is not None and self._pending.item() > 0  # computed a step ago: no wait
        flag = torch.tensor([0 if self.received is None else 1], device=self.accelerator.device)
        self._pending = self.accelerator.reduce(flag, reduction="sum")
        return stop
