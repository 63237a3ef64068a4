# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""`TrainingSession`: the live objects of a run in this process, which the loop, the checkpoints, validation and the
outputs all take. A run can span several sessions (a start, then a resume after each interruption); what carries
over from one to the next is the checkpoint (checkpoints.py). Its own module because every other trainer module
takes one: run.py, which builds it, imports them all."""

import argparse
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel

from ..data.order import BatchLayout
from ..scheduling_ddpm_posterior import DDPMPosteriorScheduler
from .checkpoints import TrainerState
from .classes import ClassConditioning
from .data import MicroBatchFeed
from .publishing import HubPublisher
from .step import unwrapped_unet
from .text import TextConditioning


@dataclass
class TrainingSession:
    """What this process trains with, from its start (or resume) to the end of the run or an interruption: the
    prepared model, the optimizer and schedules, the EMA, the conditioning, the feed of micro-batches, and the
    `TrainerState` the loop advances (the counters a checkpoint carries into the next session)."""

    accelerator: Accelerator
    model: torch.nn.Module  # prepared (DDP-wrapped when distributed)
    ema: EMAModel | None
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    noise_scheduler: DDPMPosteriorScheduler
    timestep_sampler: object  # a diffusion.timestep_samplers sampler: uniform, or importance-sampled with a history
    layout: BatchLayout
    state: TrainerState
    args: argparse.Namespace
    publisher: HubPublisher | None = None  # on the main process with --push_to_hub
    text: TextConditioning | None = None  # text-to-image runs
    classes: ClassConditioning | None = None  # class-conditional runs
    feed: MicroBatchFeed | None = None  # the micro-batches the loop reads (set once the run has started)

    @property
    def conditioning(self) -> TextConditioning | ClassConditioning | None:
        return self.text if self.text is not None else self.classes

    @property
    def unet(self):
        return unwrapped_unet(self.accelerator, self.model)

    @property
    def trained_text_encoder(self):
        """The text encoder when it is trained (checkpoints hold it then), else None."""
        return self.text.text_encoder if self.text is not None and self.text.trained else None
