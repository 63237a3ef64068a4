# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""One optimizer step of DDPM training, everything the trainer does per step, in the one place that the run's loop
(`run.run_loop`) and every benchmark of the trainer's step (benchmarks/bench_train.py, bench_data.py, gpu_check.py)
call, so that what they time is what the trainer runs:

    the micro-batches to the device
    per micro-batch: its generators, its conditioning, the loss (`diffusion_loss_terms`), backward
    clip the gradients, step the optimizer and the LR schedule
    step the EMA of the UNet's weights
    feed an importance sampler every process's timesteps and losses

Its random draws come from `ddpm_hf.randomness.StepRandomness`: a pure function of (seed, step, process, micro-batch).
"""

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel

from ..data.order import MicroBatch
from ..data.pixels import to_model_range
from ..diffusion.losses import diffusion_loss_terms
from ..diffusion.timestep_samplers import UniformSampler, make_timestep_sampler
from ..randomness import StepRandomness
from ..scheduling_ddpm_posterior import DDPMPosteriorScheduler
from ..text.conditioning import TextConditionedUNet
from .setup import make_ema, make_noise_scheduler, make_optimizer


class Conditioning(Protocol):
    """What a conditional run's step needs of its conditions (trainer/text.py's TextConditioning, classes.py's
    ClassConditioning): the model's keyword arguments for a micro-batch's conditions, some dropped for guidance."""

    def model_kwargs(self, conditions: torch.Tensor, generator: torch.Generator) -> dict: ...


@dataclass
class StepOutput:
    loss: torch.Tensor  # mean over the micro-batches, a 0-d device tensor (reading it is a host sync)
    grad_norm: torch.Tensor | None  # before clipping; None without clipping


def prepare_micro_batch(pixels: torch.Tensor, device) -> torch.Tensor:
    """uint8 images from the loader -> float32 in [-1, 1] on `device` (uint8 crosses the bus: 4x less to copy)."""
    return to_model_range(pixels.to(device, non_blocking=True))


@dataclass
class TrainingStep:
    """The trainer's optimizer step, built once per run and called once per step: `step(global_step, items)`."""

    accelerator: Accelerator
    model: torch.nn.Module  # prepared (DDP-wrapped when distributed): the UNet, or the UNet with a trained encoder
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    noise_scheduler: DDPMPosteriorScheduler
    timestep_sampler: object  # a diffusion.timestep_samplers sampler: uniform, or importance-sampled with a history
    seed: int
    max_grad_norm: float | None = None  # None or 0: no clipping
    loss_type: str = "simple"
    snr_gamma: float | None = None  # Min-SNR-gamma weights for L_simple (`ddpm_hf.diffusion.losses.min_snr_weights`)
    ema: EMAModel | None = None  # of the UNet's weights only (never a trained text encoder's)
    conditioning: Conditioning | None = None  # None: an unconditional run
    unet: torch.nn.Module = field(init=False)  # the UNet inside `model`, unwrapped: what the EMA averages

    def __post_init__(self):
        self.unet = unwrapped_unet(self.accelerator, self.model)

    @classmethod
    def from_flags(cls, args, accelerator, model, optimizer, lr_scheduler, noise_scheduler, timestep_sampler, *,
                   ema=None, conditioning=None) -> "TrainingStep":
        """The step of the trainer's flags (ddpm_hf/trainer/config.py) over a run's pieces."""
        return cls(accelerator, model, optimizer, lr_scheduler, noise_scheduler, timestep_sampler, seed=args.seed,
                   max_grad_norm=args.max_grad_norm, loss_type=args.loss_type, snr_gamma=args.snr_gamma, ema=ema,
                   conditioning=conditioning)

    @classmethod
    def build(cls, args, accelerator, unet) -> "TrainingStep":
        """A fresh unconditional run's step on `unet`, its pieces built by the trainer's own builders as the run
        builds them (EMA, optimizer and LR schedule, `accelerator.prepare`, noise scheduler, timestep sampler): what
        the benchmarks time as the trainer's step."""
        ema = make_ema(unet, args) if args.use_ema else None
        optimizer, lr_scheduler = make_optimizer(unet, args, args.max_train_steps)
        model, optimizer = accelerator.prepare(unet, optimizer)
        if ema is not None:
            ema.to(accelerator.device)
        sampler = make_timestep_sampler(args.timestep_sampler, args.ddpm_num_steps, device=accelerator.device)
        return cls.from_flags(args, accelerator, model, optimizer, lr_scheduler, make_noise_scheduler(args), sampler,
                              ema=ema)

    def __call__(self, step: int, items: Sequence[MicroBatch]) -> StepOutput:
        """Optimizer step `step` (the run's global step, counted from 0) over this process's gradient-accumulation
        micro-batches `items` (uint8 images from the loader, and their conditions).

        Accumulation is explicit rather than `accelerator.accumulate`, whose hidden micro-step counter would have to
        be checkpointed too: gradients are summed over the micro-batches (each loss divided by their number) and only
        the last backward pass all-reduces them. Nothing here waits for the device.
        """
        accelerator, device = self.accelerator, self.accelerator.device
        randomness = StepRandomness(self.seed, step, accelerator.process_index)
        micro_batches = [prepare_micro_batch(item.pixels, device) for item in items]
        model_kwargs = [None] * len(items) if self.conditioning is None else [
            self.conditioning.model_kwargs(item.conditions.to(device, non_blocking=True),
                                           randomness.conditioning_dropout_generator(micro, device))
            for micro, item in enumerate(items)]
        losses, timesteps, sample_losses = [], [], []
        for micro, x0 in enumerate(micro_batches):
            last = micro == len(micro_batches) - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(self.model):
                randomness.seed_dropout(micro, x0.device)
                generator = randomness.noise_generator(micro, x0.device)
                terms = diffusion_loss_terms(self.model, self.noise_scheduler, x0, generator, self.loss_type,
                                             self.timestep_sampler, model_kwargs[micro], self.snr_gamma)
                accelerator.backward(terms.loss / len(micro_batches))
            losses.append(terms.loss.detach())
            timesteps.append(terms.timesteps)
            sample_losses.append(terms.sample_losses)

        grad_norm = None
        if self.max_grad_norm:
            grad_norm = accelerator.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        if not accelerator.optimizer_step_was_skipped:  # fp16 overflow: the loss scaler skipped this step
            self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.step(self.unet.parameters())  # the UNet's, also when the model holds the text encoder
        if not isinstance(self.timestep_sampler, UniformSampler):
            # A collective (no host sync): every process feeds the importance sampler all processes' losses, so that
            # all keep the same loss history and draw t from the same distribution.
            self.timestep_sampler.update(accelerator.gather(torch.cat(timesteps)),
                                         accelerator.gather(torch.cat(sample_losses)))
        loss = losses[0] if len(losses) == 1 else torch.stack(losses).mean()
        return StepOutput(loss=loss, grad_norm=grad_norm.detach() if torch.is_tensor(grad_norm) else None)


def unwrapped_unet(accelerator, model) -> torch.nn.Module:
    """The UNet inside a prepared model (DDP-wrapped, or beside a trained text encoder). Accelerate's mixed-precision
    wrapper is kept: `keep_fp32_wrapper=False` strips autocast off the model in place, and a bf16/fp16 run would go on
    in float32 from then on."""
    model = accelerator.unwrap_model(model, keep_fp32_wrapper=True)
    return model.unet if isinstance(model, TextConditionedUNet) else model
