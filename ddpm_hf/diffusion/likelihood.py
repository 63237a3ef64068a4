# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The variational bound on -log p(x_0) of a DDPM, in bits per dimension (Ho et al. 2020, eq. 5; Nichol & Dhariwal
2021, section 2 and appendix; openai/improved-diffusion's `_prior_bpd` and `calc_bpd_loop`). The term at each timestep
is `losses.vb_terms_bpd`, the one training's L_vlb computes (improved-diffusion's `_vb_terms_bpd`).

Ho et al. 2020 (eq. 5) bound the log-likelihood of an image by

    log p(x_0) >= E_q[log p(x_0 | x_1)]                                       decoder term   (-L_0)
                  - KL(q(x_T | x_0) || p(x_T))                                 prior term     (L_T)
                  - sum_{t=2..T} E_q[KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))]   denoising terms (L_{t-1})

so -log p(x_0) <= L_T + sum_t L_{t-1} + L_0. Here every term is estimated with ONE draw x_t ~ q(x_t | x_0) per
(image, timestep), the terms are averaged over the C*H*W dimensions and divided by ln 2 (bits/dim), and the sum is
taken over the steps of the scheduler's chain: after `scheduler.set_timesteps(n)` the same code bounds the n-step
respaced chain (its alpha_t = alpha_prod_t / alpha_prod_t_prev, already in the scheduler's tables).

Timesteps are diffusers' 0-based ones: the chain's last visited timestep (0 on the full chain, the paper's t = 1) is
the decoder step, where x_{t-1} is x_0 itself and the term is the negative log-likelihood of the 8-bit image under
the discretized Gaussian p_theta(x_0 | x_1).

    bound = variational_bound(pipe.unet, pipe.scheduler, images, generator=torch.Generator().manual_seed(0))
    bound.total_bpd.mean()        # bits/dim, an upper bound on the model's negative log-likelihood
"""

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..randomness import derive_seed
from ..scheduling_ddpm_posterior import DDPMPosteriorScheduler
from .losses import bits_per_dim, normal_kl, vb_terms_bpd


# ----------------------------------------------------------------------------------------------------------------
# The bound
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class VariationalBound:
    """The terms of the variational bound, per image, in bits/dim.

    Args:
        prior_bpd (`torch.Tensor`): (B,) KL(q(x_T | x_0) || N(0, I)), T the chain's first (largest) timestep.
        terms_bpd (`torch.Tensor`): (B, K) one term per step of the chain, in ascending timestep order: column 0 is
            the decoder term -log p(x_0 | x_1) at the chain's last timestep, column k > 0 the denoising KL term
            KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) at t = timesteps[k].
        decoder_bpd (`torch.Tensor`): (B,) terms_bpd[:, 0].
        total_bpd (`torch.Tensor`): (B,) prior_bpd + terms_bpd.sum(1): the bound on -log2 p(x_0) / (C H W).
        timesteps (`torch.Tensor`): (K,) the chain's timesteps, ascending (scheduler.timesteps reversed).
    """

    prior_bpd: torch.Tensor
    terms_bpd: torch.Tensor
    decoder_bpd: torch.Tensor
    total_bpd: torch.Tensor
    timesteps: torch.Tensor

    def summary(self) -> dict[str, float]:
        """Means over the images, with the standard error of the total (0 for a single image)."""
        n = self.total_bpd.shape[0]
        stderr = float(self.total_bpd.std(unbiased=True) / math.sqrt(n)) if n > 1 else 0.0
        return {
            "num_images": n,
            "total_bpd": float(self.total_bpd.mean()),
            "total_bpd_stderr": stderr,
            "prior_bpd": float(self.prior_bpd.mean()),
            "decoder_bpd": float(self.decoder_bpd.mean()),
            "denoising_bpd": float(self.terms_bpd[:, 1:].sum(1).mean()),
        }


def _module_device_dtype(module: torch.nn.Module):
    tensor = next(module.parameters(), None)
    if tensor is None:
        tensor = next(module.buffers(), None)
    if tensor is None:
        return torch.device("cpu"), torch.float32
    return tensor.device, tensor.dtype


def as_posterior_scheduler(scheduler) -> DDPMPosteriorScheduler:
    """The scheduler itself when it is this package's `DDPMPosteriorScheduler`; otherwise one built from its config,
    on its chain: a stock diffusers DDPM scheduler, or the copy of the scheduler's file that a pipeline folder loaded
    with trust_remote_code ships (a class of its own, and maybe an older version)."""
    if isinstance(scheduler, DDPMPosteriorScheduler):
        return scheduler
    converted = DDPMPosteriorScheduler.from_config(scheduler.config)
    if getattr(scheduler, "num_inference_steps", None):
        converted.set_timesteps(timesteps=[int(t) for t in scheduler.timesteps])
    return converted


def _base_seed(generator: torch.Generator | None) -> int:
    if generator is None:
        return int(torch.randint(0, 2**62, (1,)))
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))


def _pair_noise(base_seed: int, images: Sequence[int], timesteps: Sequence[int], shape, dtype) -> torch.Tensor:
    """One N(0, I) draw per (image index, timestep), on the CPU, from a seed of its own (`randomness.derive_seed`).

    The draw for a pair depends only on (base seed, image index, timestep), so it does not change with the batch
    size, the order of evaluation, the chain (a timestep shared by two chains gets the same x_t) or the device.
    """
    noise = torch.empty((len(images), *shape), dtype=dtype)
    generator = torch.Generator()
    for row, (b, t) in enumerate(zip(images, timesteps)):
        generator.manual_seed(derive_seed(base_seed, b, t))
        noise[row] = torch.randn(shape, generator=generator, dtype=dtype)
    return noise


def _gather_model_kwargs(model_kwargs: dict[str, Any], num_images: int, index: torch.Tensor) -> dict[str, Any]:
    """Per-pair model kwargs: a tensor whose first dimension is the number of images is indexed by each pair's image."""
    gathered = {}
    for key, value in model_kwargs.items():
        if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == num_images:
            value = value[index.to(value.device)]
        gathered[key] = value
    return gathered


def _model_output(unet, x_t, t, kwargs) -> torch.Tensor:
    output = unet(x_t, t, **kwargs)
    if hasattr(output, "sample"):
        return output.sample
    if isinstance(output, (tuple, list)):
        return output[0]
    return output


def prior_bpd(scheduler, x_0: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
    """KL(q(x_T | x_0) || N(0, I)) per image in bits/dim, in closed form; T = the chain's first timestep by default.

    q(x_T | x_0) = N(sqrt(alpha_prod_T) x_0, (1 - alpha_prod_T) I); it does not depend on the model.
    """
    t = int(scheduler.timesteps[0]) if timestep is None else int(timestep)
    mean, log_variance = scheduler.forward_mean_log_variance(x_0, t)
    return bits_per_dim(normal_kl(mean, log_variance, 0.0, 0.0))


@torch.no_grad()
def variational_bound(
    unet: torch.nn.Module,
    scheduler,
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    timesteps: None | int | Sequence[int] = None,
    show_progress: bool = True,
    clip_denoised: bool = True,
    model_kwargs: dict[str, Any] | None = None,
    encoder_hidden_states: torch.Tensor | None = None,
) -> VariationalBound:
    """The variational bound on -log p(x_0) of `images` under the DDPM (unet, scheduler), per image and per step.

    Args:
        unet: called as `unet(x_t, t, **model_kwargs).sample` (a UNet2DModel, or a UNet2DConditionModel with
            `encoder_hidden_states`); evaluated in eval mode, on its own device and dtype.
        scheduler: a `DDPMPosteriorScheduler` (a stock diffusers DDPM scheduler is converted from its config). Its
            `variance_type` and `prediction_type` define p_theta; its current chain (`scheduler.timesteps`) is the
            chain bounded, unless `timesteps` is given.
        images (`torch.Tensor`): (B, C, H, W) 8-bit data mapped to [-1, 1] (`ddpm_hf.data.to_model_range`).
        generator (`torch.Generator`, *optional*): fixes the draws x_t ~ q(x_t | x_0). One draw per (image, t),
            seeded from (a number drawn from `generator`, image index, t): results do not depend on `batch_size`.
        batch_size (`int`, defaults to 64): (image, timestep) pairs per model call.
        timesteps (`int` or `list[int]`, *optional*): bound a respaced chain: a number of steps (spaced by the
            scheduler's `timestep_spacing`) or descending custom timesteps. The scheduler passed in is not changed.
        show_progress (`bool`, defaults to True): a tqdm bar over the pairs.
        clip_denoised (`bool`, defaults to True): clamp the x_0 estimate to [-1, 1] before forming p_theta's mean
            (improved-diffusion's `clip_denoised`). It does not follow the scheduler's `clip_sample` on purpose:
            improved-diffusion's `calc_bpd_loop` clips by default whatever the sampler does, so bits/dim reported
            here compare with its figures and between pipelines saved with different `clip_sample` settings. Pass
            `clip_denoised=scheduler.config.clip_sample` to bound p_theta exactly as the sampler is configured.
        model_kwargs (`dict`, *optional*): extra model arguments; a tensor whose first dimension is B is indexed by
            each pair's image (e.g. `encoder_hidden_states` (B, L, D)); anything else is passed as is.
        encoder_hidden_states (`torch.Tensor`, *optional*): (B, L, D) text conditioning, a shortcut for
            `model_kwargs={"encoder_hidden_states": ...}`.

    Returns:
        [`VariationalBound`], on the CPU in float64. The arithmetic of the bound is float64 (float32 on MPS); the
        model runs in its own dtype.
    """
    if not torch.is_tensor(images) or images.ndim != 4:
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images))}.")
    if not images.is_floating_point():
        raise TypeError(f"images must be floats in [-1, 1] (use ddpm_hf.data.to_model_range), got {images.dtype}.")
    if images.numel() and (images.min() < -1 - 1e-6 or images.max() > 1 + 1e-6):
        raise ValueError(
            f"images must lie in [-1, 1] (8-bit data mapped by ddpm_hf.data.to_model_range), got values in"
            f" [{float(images.min()):.3g}, {float(images.max()):.3g}]."
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    scheduler = as_posterior_scheduler(scheduler)
    if timesteps is not None:
        scheduler = copy.deepcopy(scheduler)
        if isinstance(timesteps, (int, np.integer)):
            scheduler.set_timesteps(int(timesteps))
        else:
            scheduler.set_timesteps(timesteps=[int(t) for t in timesteps])
    model_kwargs = dict(model_kwargs or {})
    if encoder_hidden_states is not None:
        model_kwargs["encoder_hidden_states"] = encoder_hidden_states

    device, model_dtype = _module_device_dtype(unet)
    work_dtype = torch.float32 if device.type == "mps" else torch.float64
    chain = scheduler.timesteps.detach().cpu().long()
    ascending = chain.flip(0)  # column 0 = the chain's last step (the decoder)
    num_images, num_steps = images.shape[0], len(ascending)
    sample_shape = tuple(images.shape[1:])
    x_0_all = images.to(device=device, dtype=work_dtype)

    prior = prior_bpd(scheduler, x_0_all).cpu().double()
    terms = torch.empty(num_images, num_steps, dtype=torch.float64)
    base_seed = _base_seed(generator)

    from tqdm.auto import tqdm

    total_pairs = num_images * num_steps
    was_training = unet.training
    unet.eval()
    try:
        with tqdm(total=total_pairs, unit="pair", desc="variational bound", disable=not show_progress) as bar:
            # Pairs in a fixed order, image-major then ascending t; a model call takes `batch_size` consecutive pairs.
            for start in range(0, total_pairs, batch_size):
                pair = torch.arange(start, min(start + batch_size, total_pairs))
                b, k = pair // num_steps, pair % num_steps
                t = ascending[k]
                noise = _pair_noise(base_seed, b.tolist(), t.tolist(), sample_shape, work_dtype).to(device)
                x_0, t_device = x_0_all[b.to(device)], t.to(device)
                x_t = scheduler.add_noise(x_0, noise, t_device)
                kwargs = _gather_model_kwargs(model_kwargs, num_images, b)
                output = _model_output(unet, x_t.to(model_dtype), t_device, kwargs).to(work_dtype)
                terms[b, k] = vb_terms_bpd(scheduler, output, x_0, x_t, t_device, clip_denoised).cpu().double()
                bar.update(len(pair))
    finally:
        unet.train(was_training)

    return VariationalBound(
        prior_bpd=prior,
        terms_bpd=terms,
        decoder_bpd=terms[:, 0].clone(),
        total_bpd=prior + terms.sum(dim=1),
        timesteps=ascending,
    )
