# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Watching a run: the loss (read back without stalling the device), and the throughput reported to the progress bar
and the trackers. The test and debugging hooks are in debug_hooks.py."""

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .session import TrainingSession
    from .step import StepOutput


class NonFiniteLossError(RuntimeError):
    """The loss (or the gradient norm) became NaN or infinite."""

    def __init__(self, step: int, what: str, value: float):
        self.step, self.what, self.value = step, what, value
        self.checkpoints = ""  # what became of the checkpoints, said by the trainer once it has set them aside
        super().__init__(f"the {what} became {value} at step {step}")


@dataclass
class LoggedStep:
    step: int
    loss: float
    grad_norm: float | None


class LossMeter:
    """Collects each step's loss as a device tensor; `flush` reads them all with one host sync.

    `flush` averages across processes, so every process sees the same numbers and takes the same decision when one
    is not finite (a collective: call it on every process at the same steps).
    """

    def __init__(self, check_grad_norm: bool = True):
        # fp16 training overflows the gradients now and then by design; its loss scaler skips those steps.
        self.check_grad_norm = check_grad_norm
        self._steps: list[int] = []
        self._values: list[torch.Tensor] = []
        self._has_grad_norm = None

    def add(self, step: int, output: "StepOutput") -> None:
        self._has_grad_norm = output.grad_norm is not None
        values = [output.loss.float()]
        if self._has_grad_norm:
            values.append(output.grad_norm.float().to(output.loss.device))
        self._steps.append(step)
        self._values.append(torch.stack(values))

    def flush(self, accelerator) -> list[LoggedStep]:
        if not self._steps:
            return []
        values = accelerator.reduce(torch.stack(self._values), reduction="mean").tolist()
        steps, self._steps, self._values = self._steps, [], []
        logged = [LoggedStep(step, row[0], row[1] if self._has_grad_norm else None)
                  for step, row in zip(steps, values, strict=True)]
        for entry in logged:
            if not np.isfinite(entry.loss):
                raise NonFiniteLossError(entry.step, "loss", entry.loss)
            if self.check_grad_norm and entry.grad_norm is not None and not np.isfinite(entry.grad_norm):
                raise NonFiniteLossError(entry.step, "gradient norm", entry.grad_norm)
        return logged


class Throughput:
    """Images per second over the training steps since the last reading (time spent elsewhere is excluded)."""

    def __init__(self):
        self.restart()

    def restart(self) -> None:
        self.start, self.images = time.perf_counter(), 0

    def add(self, images: int) -> None:
        self.images += images

    def read(self) -> float:
        rate = self.images / max(time.perf_counter() - self.start, 1e-9)
        self.restart()
        return rate


def log_progress(training: "TrainingSession", meter: LossMeter, throughput: Throughput, progress,
                 num_images: int) -> None:
    """Read the losses since the last call back from the device, check them, and report the latest."""
    state = training.state
    logged = meter.flush(training.accelerator)  # raises NonFiniteLossError, on every process alike
    # One point per logging interval (its mean), so that checkpoints of long runs stay small.
    state.loss_history.append([logged[-1].step, sum(entry.loss for entry in logged) / len(logged)])
    logs = {"loss": logged[-1].loss, "lr": training.lr_scheduler.get_last_lr()[0],
            "images_per_second": throughput.read(), "epoch": state.samples_seen / num_images if num_images else 0.0}
    if logged[-1].grad_norm is not None:
        logs["grad_norm"] = logged[-1].grad_norm
    progress.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}", img_s=f"{logs['images_per_second']:.1f}")
    training.accelerator.log(logs, step=state.global_step)
