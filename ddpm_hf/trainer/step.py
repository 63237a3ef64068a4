# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""One optimizer step of DDPM training: the loss of each gradient-accumulation micro-batch, backward, clip, step.

Its random draws come from `ddpm_hf.randomness.StepRandomness`: a pure function of (seed, step, process, micro-batch).
"""

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..data.pixels import to_model_range
from ..diffusion.losses import diffusion_loss_terms
from ..randomness import StepRandomness


@dataclass
class StepOutput:
    loss: torch.Tensor  # mean over the micro-batches, a 0-d device tensor (reading it is a host sync)
    grad_norm: torch.Tensor | None  # before clipping; None without clipping
    # This process's samples, micro-batch after micro-batch: what `timestep_sampler.update` takes (once gathered from
    # all processes). Device tensors, detached; the losses are per sample and unweighted.
    timesteps: torch.Tensor | None = None  # (B x micro-batches,) int64
    sample_losses: torch.Tensor | None = None  # (B x micro-batches,) float32


def prepare_micro_batch(pixels: torch.Tensor, device) -> torch.Tensor:
    """uint8 images from the loader -> float32 in [-1, 1] on `device` (uint8 crosses the bus: 4x less to copy)."""
    return to_model_range(pixels.to(device, non_blocking=True))


def train_step(
    model,
    micro_batches: Sequence[torch.Tensor],
    *,
    accelerator,
    optimizer,
    lr_scheduler,
    noise_scheduler,
    randomness: StepRandomness,
    max_grad_norm: float | None = None,
    loss_type: str = "simple",
    timestep_sampler=None,
    micro_batch_kwargs: Sequence[dict] | None = None,
    snr_gamma: float | None = None,
) -> StepOutput:
    """One optimizer step over the gradient-accumulation `micro_batches` (clean images in [-1, 1]).

    Accumulation is explicit rather than `accelerator.accumulate`, whose hidden micro-step counter would have to be
    checkpointed too: gradients are summed over the micro-batches (each loss divided by their number) and only the
    last backward pass all-reduces them. Nothing here waits for the device.

    `timestep_sampler` draws the timesteps (None: uniform); it is not updated here: the caller gathers the output's
    `timesteps` and `sample_losses` from all processes and calls its `update`. `micro_batch_kwargs[m]` holds extra
    keyword arguments of the model call on micro-batch m (e.g. `encoder_hidden_states`). `snr_gamma` weights
    L_simple's timesteps by Min-SNR-gamma (`ddpm_hf.diffusion.losses.min_snr_weights`).
    """
    if micro_batch_kwargs is not None and len(micro_batch_kwargs) != len(micro_batches):
        raise ValueError(f"micro_batch_kwargs has {len(micro_batch_kwargs)} entries for {len(micro_batches)}"
                         " micro-batches: pass one dict per micro-batch.")
    losses, timesteps, sample_losses = [], [], []
    for micro, x0 in enumerate(micro_batches):
        last = micro == len(micro_batches) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            randomness.seed_dropout(micro, x0.device)
            generator = randomness.noise_generator(micro, x0.device)
            terms = diffusion_loss_terms(model, noise_scheduler, x0, generator, loss_type, timestep_sampler,
                                         micro_batch_kwargs[micro] if micro_batch_kwargs is not None else None,
                                         snr_gamma)
            accelerator.backward(terms.loss / len(micro_batches))
        losses.append(terms.loss.detach())
        timesteps.append(terms.timesteps)
        sample_losses.append(terms.sample_losses)

    grad_norm = None
    if max_grad_norm:
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    if not accelerator.optimizer_step_was_skipped:  # fp16 overflow: the loss scaler skipped this step
        lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    loss = losses[0] if len(losses) == 1 else torch.stack(losses).mean()
    return StepOutput(
        loss=loss, grad_norm=grad_norm.detach() if torch.is_tensor(grad_norm) else None,
        timesteps=torch.cat(timesteps), sample_losses=torch.cat(sample_losses),
    )
