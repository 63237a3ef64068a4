# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The DDPM losses: the Gaussian terms of the variational bound, and the training objectives built from them.

- `normal_kl`, `discretized_gaussian_log_likelihood`, `mean_flat`: improved-diffusion's `losses.py` (Nichol & Dhariwal
  2021, appendix): the KL between two diagonal Gaussians, and the decoder's likelihood of 8-bit data.
- `vb_terms_bpd`: L_t, the term of the variational bound (Ho et al. 2020, eq. 5) at a timestep, in bits/dim: the one
  home that the training losses below and the bound (`likelihood.variational_bound`) share, as improved-diffusion's
  `training_losses` and `calc_bpd_loop` share its `_vb_terms_bpd`.
- L_simple (Ho et al. 2020, eq. 14), L_vlb (the bound's terms, eq. 5) and L_hybrid = L_simple + lambda L_vlb (Nichol &
  Dhariwal 2021, eq. 16), each per sample, on one draw of the forward process q(x_t | x_0) (Ho et al. 2020, eq. 4).
- `min_snr_weights`: Min-SNR-gamma weighting of L_simple's timesteps (Hang et al. 2023), as diffusers' training
  scripts offer it with `--snr_gamma`.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..choices import LOSS_TYPES, check_loss_config
from .timestep_samplers import UniformSampler

LN2 = math.log(2.0)
BIN_HALF_WIDTH = 1.0 / 255.0  # 8-bit data in [-1, 1]: 256 bins of width 2/255
EDGE = 0.999  # x below -EDGE is the first bin (-inf edge), above EDGE the last (+inf edge), as improved-diffusion
MIN_BIN_PROB = 1e-12  # improved-diffusion's floor on a bin's probability (log 1e-12 = -27.6 nats)


# ----------------------------------------------------------------------------------------------------------------
# Elementwise densities
# ----------------------------------------------------------------------------------------------------------------
def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats (inputs broadcast; floats allowed).

    Written as 0.5 * (expm1(d) - d + (mean1 - mean2)^2 / var2), d = logvar1 - logvar2, which equals the usual
    0.5 * (-1 + logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2)) without its
    cancellation when the two variances are close (the denoising terms of a good model).
    """
    reference = next((x for x in (mean1, logvar1, mean2, logvar2) if torch.is_tensor(x)), None)
    if reference is None:
        raise TypeError("normal_kl needs at least one tensor argument.")
    dtype = reference.dtype if reference.is_floating_point() else torch.get_default_dtype()
    mean1, logvar1, mean2, logvar2 = (
        x if torch.is_tensor(x) else torch.tensor(x, dtype=dtype, device=reference.device)
        for x in (mean1, logvar1, mean2, logvar2)
    )
    d = logvar1 - logvar2
    return 0.5 * (torch.expm1(d) - d + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(d)) for d <= 0, accurate everywhere (Maechler 2012); finite values and gradients on both branches."""
    near = d > -LN2
    tiny = torch.finfo(d.dtype).tiny
    d_near = torch.where(near, d, torch.full_like(d, -LN2)).clamp(max=-tiny)
    d_far = torch.where(near, torch.full_like(d, -1.0), d)
    return torch.where(near, torch.log(-torch.expm1(d_near)), torch.log1p(-torch.exp(d_far)))


def _log_normal_mass(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """log(Phi(upper) - Phi(lower)) for lower <= upper <= (about) 0, from log-CDFs: no cancellation, no underflow."""
    log_upper = torch.special.log_ndtr(upper)
    return log_upper + _log1mexp(torch.special.log_ndtr(lower) - log_upper)


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor, min_prob: float = MIN_BIN_PROB
) -> torch.Tensor:
    """Elementwise log-probability (nats) of 8-bit data `x` in [-1, 1] under a Gaussian discretized to 256 bins.

    The bin of x is [x - 1/255, x + 1/255], widened to (-inf, -1 + 1/255] for x = -1 and [1 - 1/255, inf) for x = 1,
    so the 256 bin probabilities sum to 1. The normal CDF is exact (`torch.special.log_ndtr`, not improved-diffusion's
    tanh approximation), and a bin's mass is taken in the tail away from the mean, in log space, so it is accurate
    for bins far from the mean too; it is computed in float64 whatever the inputs' dtype (but on MPS), and returned in
    their dtype. As improved-diffusion does, a bin's probability is floored at `min_prob` (1e-12).

    Args:
        x: the data, on the grid k / 127.5 - 1, k = 0..255.
        means, log_scales: the Gaussian's mean and log standard deviation (broadcast against x).
    """
    x, means, log_scales = torch.broadcast_tensors(x, means, log_scales)
    out_dtype = torch.promote_types(torch.promote_types(x.dtype, means.dtype), log_scales.dtype)
    if x.device.type != "mps":  # a bin is ~1e-3 of the mass: float32 CDF differences lose ~1e-5 of it, float64 does not
        x, means, log_scales = x.double(), means.double(), log_scales.double()
    inv_stdv = torch.exp(-log_scales)
    centered = x - means
    upper = (centered + BIN_HALF_WIDTH) * inv_stdv
    lower = (centered - BIN_HALF_WIDTH) * inv_stdv
    # A bin above the mean is reflected to the lower tail: Phi(u) - Phi(l) = Phi(-l) - Phi(-u).
    above = centered > 0
    log_mass = _log_normal_mass(torch.where(above, -upper, lower), torch.where(above, -lower, upper))
    log_cdf_upper = torch.special.log_ndtr(upper)  # first bin: P(X <= -1 + 1/255)
    log_sf_lower = torch.special.log_ndtr(-lower)  # last bin: P(X >= 1 - 1/255)
    log_probs = torch.where(x < -EDGE, log_cdf_upper, torch.where(x > EDGE, log_sf_lower, log_mass))
    return log_probs.clamp(min=math.log(min_prob)).to(out_dtype)


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """The mean over every dimension but the first (improved-diffusion's `mean_flat`): (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def bits_per_dim(nats: torch.Tensor) -> torch.Tensor:
    """Nats per dimension -> each sample's bits per dimension, the bound's unit: mean_flat(nats) / ln 2, (B,)."""
    return mean_flat(nats) / LN2


# ----------------------------------------------------------------------------------------------------------------
# L_t, the term of the bound at one timestep
# ----------------------------------------------------------------------------------------------------------------
def vb_terms_bpd(
    noise_scheduler, model_output: torch.Tensor, x_0: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor,
    clip_denoised: bool = False, detach_mean: bool = False,
) -> torch.Tensor:
    """L_t per row in bits/dim, (N,) in x_t's dtype, from the model's output at (x_t, t) (improved-diffusion's
    `_vb_terms_bpd`): KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)), and at the chain's last timestep (the
    decoder; t = 0 on the full chain) the discretized-Gaussian NLL -log p_theta(x_0 | x_1).

    Both terms are computed for every row and selected by timestep, so no row selection waits on the device. The true
    posterior's log variance is the clipped one (`posterior_log_variance`): it differs from log Sigma_q only at the
    chain's last step, a decoder row.

    Args:
        noise_scheduler: a `DDPMPosteriorScheduler` whose chain holds `timesteps`; its `variance_type` and
            `prediction_type` define p_theta.
        model_output: (N, C or 2C, H, W) the model's output, in x_t's dtype (2C channels for `learned_range`).
        x_0, x_t: (N, C, H, W) the data and its draw x_t ~ q(x_t | x_0); timesteps: (N,) on x_t's device.
        clip_denoised: clamp x_0's estimate to [-1, 1] before forming p_theta's mean (the bound clips, training does
            not, both as in improved-diffusion).
        detach_mean: no gradient through the prediction channels (improved-diffusion's `frozen_out`): L_hybrid trains
            the mean by L_simple alone and the variance by L_vlb alone.
    """
    prediction, predicted_variance = noise_scheduler.split_model_output(model_output, x_t)
    if detach_mean:
        prediction = prediction.detach()
    x0_hat = noise_scheduler.predict_original_sample(prediction, timesteps, x_t)
    if clip_denoised:
        x0_hat = x0_hat.clamp(-1.0, 1.0)
    model_mean = noise_scheduler.posterior_mean(x_t, x0_hat, timesteps)
    model_log_variance = noise_scheduler.model_log_variance(predicted_variance, timesteps, x_t).expand_as(x_t)

    true_mean = noise_scheduler.posterior_mean(x_t, x_0, timesteps)
    true_log_variance = noise_scheduler.posterior_log_variance(timesteps, like=x_t)
    kl = bits_per_dim(normal_kl(true_mean, true_log_variance, model_mean, model_log_variance))
    decoder_nll = -bits_per_dim(discretized_gaussian_log_likelihood(x_0, model_mean, 0.5 * model_log_variance))
    decoder_timestep = int(noise_scheduler.timesteps[-1])  # no host sync: training's chain stays on the CPU
    return torch.where(timesteps.to(kl.device) == decoder_timestep, decoder_nll, kl)


# ----------------------------------------------------------------------------------------------------------------
# The objective
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class NoisedBatch:
    """One draw of the forward process q(x_t | x_0) (Ho et al. 2020, eq. 4): x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t)
    eps at timesteps t, what the objectives below compare the model's output on x_t with."""

    x0: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor
    x_t: torch.Tensor


def training_target(noise_scheduler, batch: NoisedBatch) -> torch.Tensor:
    """What the model learns to output, by the scheduler's `prediction_type`."""
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return batch.noise
    if prediction_type == "sample":
        return batch.x0
    if prediction_type == "v_prediction":
        return noise_scheduler.get_velocity(batch.x0, batch.noise, batch.timesteps)
    raise ValueError(f"Unknown prediction_type {prediction_type!r}: choose epsilon, sample or v_prediction.")


def squared_error(model_output: torch.Tensor, batch: NoisedBatch, noise_scheduler) -> torch.Tensor:
    """(prediction - target)^2 per value, float32: the integrand of L_simple (Ho et al. 2020, eq. 14).

    A `learned_range` model's variance channels get no gradient from it (Improved DDPM trains them with L_vlb).
    """
    prediction, _ = noise_scheduler.split_model_output(model_output, batch.x0)
    return (prediction.float() - training_target(noise_scheduler, batch).float()).square()


def min_snr_weights(noise_scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023, eq. 8), (B,) float32: L_simple's per-timestep weights.

    The weight of the x_0 error is min(SNR(t), gamma), SNR(t) = alpha_prod_t / (1 - alpha_prod_t), which caps the
    easy, low-noise timesteps; the error of the model's own target carries the same weight divided by what that
    target's error already weighs: SNR(t) for eps (so min(1, gamma / SNR(t))) and SNR(t) + 1 for v. diffusers'
    training scripts compute the same weights (`compute_snr`); here the eps weight is written so that a zero terminal
    SNR gives 1, not 0 / 0.
    """
    snr = noise_scheduler.snr(timesteps, like=torch.empty(timesteps.shape, device=timesteps.device))
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        weights = torch.clamp(gamma / snr, max=1.0)
    elif prediction_type == "v_prediction":
        weights = torch.clamp(snr, max=gamma) / (snr + 1.0)
    elif prediction_type == "sample":
        weights = torch.clamp(snr, max=gamma)
    else:
        raise ValueError(f"Unknown prediction_type {prediction_type!r}: choose epsilon, sample or v_prediction.")
    return weights


def simple_losses(model_output: torch.Tensor, batch: NoisedBatch, noise_scheduler) -> torch.Tensor:
    """L_simple per sample, (B,) float32: the squared error averaged over each sample's C*H*W values."""
    return mean_flat(squared_error(model_output, batch, noise_scheduler))


HYBRID_LAMBDA = 0.001  # Improved DDPM, section 3.1: lambda of L_hybrid


def vlb_losses(model_output: torch.Tensor, batch: NoisedBatch, noise_scheduler, detach_mean: bool = False):
    """L_vlb per sample, (B,) float32: T L_t with one t ~ U{0..T-1} (improved-diffusion's RESCALED_KL: vb *
    num_timesteps), computed as improved-diffusion's training does: x_0's estimate is not clipped. `detach_mean` as
    in `vb_terms_bpd`."""
    T = noise_scheduler.config.num_train_timesteps
    if len(noise_scheduler.timesteps) != T:
        raise ValueError(
            f"L_vlb needs the scheduler's full {T}-step chain (its posterior tables follow the chain), but this one was"
            f" set to {len(noise_scheduler.timesteps)} steps: train with a scheduler on which set_timesteps never ran."
        )
    x_0, x_t = batch.x0.float(), batch.x_t.float()
    return T * vb_terms_bpd(noise_scheduler, model_output.float(), x_0, x_t, batch.timesteps, detach_mean=detach_mean)


def hybrid_losses(model_output: torch.Tensor, batch: NoisedBatch, noise_scheduler) -> torch.Tensor:
    """L_hybrid per sample = L_simple + lambda L_vlb (Improved DDPM, eq. 16), lambda = 0.001, (B,) float32.

    L_vlb sees the mean detached, so it trains only the variance channels (improved-diffusion's RESCALED_MSE: mse + vb
    * T / 1000).
    """
    check_loss_config("hybrid", noise_scheduler.config.variance_type)
    vlb = vlb_losses(model_output, batch, noise_scheduler, detach_mean=True)
    return simple_losses(model_output, batch, noise_scheduler) + HYBRID_LAMBDA * vlb


# Per-sample losses, (B,) float32: a micro-batch's loss is their (importance-weighted) mean.
LOSSES: dict[str, Callable[[torch.Tensor, NoisedBatch, object], torch.Tensor]] = {
    "simple": simple_losses,
    "hybrid": hybrid_losses,
    "vlb": vlb_losses,
}
assert tuple(LOSSES) == LOSS_TYPES  # what --loss_type offers and check_loss_config knows (ddpm_hf/choices.py)


@dataclass
class MicroBatchLoss:
    loss: torch.Tensor  # 0-d float32, what is back-propagated
    sample_losses: torch.Tensor  # (B,) float32, detached and unweighted: what a timestep sampler learns from
    timesteps: torch.Tensor  # (B,)


def diffusion_loss_terms(
    model, noise_scheduler, x0: torch.Tensor, generator=None, loss_type: str = "simple", timestep_sampler=None,
    model_kwargs: dict | None = None, snr_gamma: float | None = None,
) -> MicroBatchLoss:
    """The loss of one micro-batch of clean images `x0` (in [-1, 1]), with its per-sample values and timesteps.

    eps ~ N(0, I), then t from `timestep_sampler` (uniform on diffusers' 0..T-1 by default), both from `generator`
    (the order of the draws, noise then timesteps, is part of every seeded run's numbers: keep it); x_t by the
    scheduler's `add_noise`; the model's output on (x_t, t); the objective `loss_type` against the target of the
    scheduler's `prediction_type` (`training_target`: eps, x_0 or v). The loss is the mean of the per-sample losses,
    weighted by the sampler's importance weights when it has any, and by the Min-SNR-gamma weights when `snr_gamma`
    is given (L_simple only).
    """
    check_loss_config(loss_type, getattr(noise_scheduler.config, "variance_type", None), snr_gamma)
    T = noise_scheduler.config.num_train_timesteps
    if timestep_sampler is None:
        timestep_sampler = UniformSampler(T)
    elif timestep_sampler.num_timesteps != T:
        raise ValueError(f"The timestep sampler covers {timestep_sampler.num_timesteps} timesteps but the noise"
                         f" scheduler has num_train_timesteps={T}: build the sampler with {T}.")
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    timesteps, weights = timestep_sampler.sample(x0.shape[0], generator, x0.device)
    x_t = noise_scheduler.add_noise(x0, noise, timesteps)  # Ho et al. 2020, eq. 4
    model_output = model(x_t, timesteps, **(model_kwargs or {})).sample
    batch = NoisedBatch(x0, noise, timesteps, x_t)
    if snr_gamma is not None:
        snr_weights = min_snr_weights(noise_scheduler, timesteps, snr_gamma)
        weights = snr_weights if weights is None else weights * snr_weights
    if loss_type == "simple" and weights is None:
        # The mean over all B*C*H*W values, not the mean of the per-sample means: equal in exact arithmetic but not
        # in float32, where this one is F.mse_loss's bit for bit (the loss of diffusers' training scripts), so the
        # default preset's runs, and the numbers recorded from them, reproduce exactly.
        error = squared_error(model_output, batch, noise_scheduler)  # (prediction - target)^2, Ho et al. eq. 14
        return MicroBatchLoss(error.mean(), mean_flat(error.detach()), timesteps)
    sample_losses = LOSSES[loss_type](model_output, batch, noise_scheduler)
    weighted = sample_losses if weights is None else sample_losses * weights
    return MicroBatchLoss(weighted.mean(), sample_losses.detach(), timesteps)
