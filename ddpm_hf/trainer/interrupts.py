# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Stopping on SIGTERM (what SLURM and Kubernetes send before they kill) and SIGINT (Ctrl-C) without losing work.

A request to stop only asks: the loop finishes the optimizer step it is in, writes a checkpoint and raises
`TrainingInterrupted`. A deliberate second request stops at once (KeyboardInterrupt), for a run that must die now.

One request often reaches the trainer as two signals. A signal to the job's process group (SLURM's `scancel` and
preemption, systemd's control-group kill, `kill -- -PGID`, Ctrl-C in a terminal) reaches the launcher too, and the
launchers forward it: `accelerate launch` on one process sends its child SIGTERM (also after a SIGINT) and SIGKILL
5 s later (accelerate/commands/launch.py, `_terminate_process_tree`); torchrun (`accelerate launch --multi_gpu`)
sends every rank the signal it got and SIGKILL after `--shutdown_timeout` / TORCH_ELASTIC_SHUTDOWN_TIMEOUT, default
30 s (torch/distributed/elastic/multiprocessing/api.py, `SubprocessContext._close`). Python cannot tell who sent a
signal (its handlers get no `siginfo`), so the trainer tells the copies by time: SIGINT or SIGTERM within
`SAME_REQUEST_WINDOW_S` of the first is the same request; one after it is a second request. A launcher forwards within
milliseconds (hundreds on a loaded machine); a person who means "now" after seeing the first signal's message is
slower than that, and is told the rule in that message.

On several processes every rank must stop after the same step, or the others wait in the next step's all-reduce
forever; a signal may reach one rank only, or the ranks at different steps. So each step every rank adds its own
flag to an all-reduce, and all read the sum one step later: by then it is computed, so reading it does not wait for
the device, and all ranks read the same sum after the same step.
"""

import os
import signal
import threading
import time

import torch

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# How long after the first signal another one is a copy of the same request (forwarded by a launcher, or delivered
# both to the process group and by the launcher), not a deliberate second request.
SAME_REQUEST_WINDOW_S = 3.0


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
        self._received_at = None  # time.monotonic() at the first signal
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
        name = signal.Signals(number).name
        if self.received is None:
            self.received, self._received_at = name, time.monotonic()
            self._say(f"{name} received: stopping after this step with a checkpoint (exit 75); a second signal"
                      f" {SAME_REQUEST_WINDOW_S:g} s or more from now stops at once, without one (exit 130)")
        elif time.monotonic() - self._received_at >= SAME_REQUEST_WINDOW_S:
            raise KeyboardInterrupt(f"a second {name}")
        # else: the same request again (the group's copy and the launcher's), already being honoured

    def _say(self, message: str) -> None:
        """One line on stderr, written straight to the file descriptor: the handler may interrupt a print to
        sys.stderr, and writing through the same buffered stream again from here would raise."""
        if self.accelerator.num_processes > 1:
            message = f"[rank {self.accelerator.process_index}] {message}"
        try:
            os.write(2, (message + "\n").encode())
        except OSError:  # stderr closed (a launcher gone): the stop itself matters, not the message
            pass

    def agreed(self) -> bool:
        """Whether to stop after the step just taken: at once on one process; on several, when any rank had a signal
        by the step before (the sum of the flags, all-reduced then)."""
        if self.accelerator.num_processes == 1:
            return self.received is not None
        stop = self._pending is not None and self._pending.item() > 0  # computed a step ago: no wait
        flag = torch.tensor([0 if self.received is None else 1], device=self.accelerator.device)
        self._pending = self.accelerator.reduce(flag, reduction="sum")
        return stop
