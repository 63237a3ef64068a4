# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""What the loop updates (`Training`), and its checkpoints: starting afresh or resuming, and saving."""

import argparse
import os
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from diffusers.training_utils import EMAModel

from ..data.order import BatchLayout
from ..io import remove_stale_temporaries
from ..scheduling_ddpm_posterior import DDPMPosteriorScheduler
from ..text.conditioning import TextConditionedUNet
from ..trainer.checkpointing import (
    TrainerState,
    read_training_state,
    resolve_checkpoint,
    save_checkpoint,
    write_training_state,
)
from .config import saveable_args
from .publishing import HubPublisher
from .text import TextConditioning

logger = get_logger(__name__)


@dataclass
class Training:
    """What the loop updates, and how it is laid out over processes."""

    accelerator: Accelerator
    model: torch.nn.Module  # prepared (DDP-wrapped when distributed)
    ema: EMAModel | None
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    noise_scheduler: DDPMPosteriorScheduler
    timestep_sampler: object  # a training_utils sampler: uniform, or importance sampling with a loss history
    layout: BatchLayout
    state: TrainerState
    args: argparse.Namespace
    publisher: HubPublisher | None = None  # on the main process with --push_to_hub
    text: TextConditioning | None = None  # text-to-image runs

    @property
    def unet(self):
        model = self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)
        return model.unet if isinstance(model, TextConditionedUNet) else model

    @property
    def trained_text_encoder(self):
        """The text encoder when it is trained (checkpoints hold it then), else None."""
        return self.text.text_encoder if self.text is not None and self.text.trained else None


def checkpoint_folder(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def start_or_resume(training: Training, num_images: int) -> None:
    """Clear what interrupted saves left behind, then load the checkpoint asked for, if any."""
    accelerator, args = training.accelerator, training.args
    checkpoints = checkpoint_folder(args.output_dir)
    if accelerator.is_main_process:
        os.makedirs(checkpoints, exist_ok=True)
        for stale in remove_stale_temporaries(checkpoints) + remove_stale_temporaries(args.output_dir):
            logger.info(f"Removed {stale}, left by an interrupted save")
    accelerator.wait_for_everyone()

    resume_from = resolve_checkpoint(checkpoints, args.resume_from_checkpoint) if args.resume_from_checkpoint else None
    if resume_from is not None:
        # Every process reads the checkpoint (a shared filesystem, as with accelerator.load_state).
        training.state = read_training_state(
            resume_from, unet=training.unet, ema=training.ema, optimizer=training.optimizer,
            lr_scheduler=training.lr_scheduler, grad_scaler=accelerator.scaler,
            restore_rng=accelerator.is_main_process,  # the main process wrote its own RNG states
            timestep_sampler=training.timestep_sampler, text_encoder=training.trained_text_encoder,
        )
        # The data position is a count of samples, so it carries over to any number of processes.
        logger.info(f"Resumed from {resume_from}: step {training.state.global_step}, data position"
                    f" {training.state.samples_seen} (saved by {training.state.num_processes} process(es), now"
                    f" {accelerator.num_processes})")
        if training.state.num_images != num_images:
            logger.warning(f"The checkpoint was trained on {training.state.num_images} images, this run has"
                           f" {num_images}: the data order after resuming differs from the original run's.")
    elif args.resume_from_checkpoint:
        logger.info(f"No checkpoint in {checkpoints} yet: starting a new run")
    training.state.num_images = num_images
    training.state.num_processes = accelerator.num_processes
    training.state.global_batch_size = training.layout.global_batch_size
    training.state.args = saveable_args(args)


def save_training_checkpoint(training: Training) -> None:
    """The main process writes (the state is identical on every process); everyone waits for it, outside the branch."""
    accelerator, state = training.accelerator, training.state
    if accelerator.is_main_process:

        def write(folder):
            write_training_state(folder, unet=training.unet, ema=training.ema, optimizer=training.optimizer,
                                 lr_scheduler=training.lr_scheduler, grad_scaler=accelerator.scaler, state=state,
                                 step=state.global_step, timestep_sampler=training.timestep_sampler,
                                 text_encoder=training.trained_text_encoder)

        path = save_checkpoint(checkpoint_folder(training.args.output_dir), state.global_step, write,
                               total_limit=training.args.checkpoints_total_limit)
        logger.info(f"Saved {path}")
    accelerator.wait_for_everyone()
