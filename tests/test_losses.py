# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Improved DDPM's training objectives (L_hybrid, L_vlb) and importance-sampled timesteps.

The math is checked against independent float64 numpy formulas (Ho et al. 2020, eq. 7 for the posterior; the
Gaussian KL in closed form; the discretized Gaussian decoder with scipy's normal CDF), in float32 as training computes
it and in float64 as the bound does; the sampler against a re-implementation of improved-diffusion's
LossSecondMomentResampler.
"""

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import ndtr
from support.models import tiny_unet

from ddpm_hf import DDPMPosteriorScheduler
from ddpm_hf.data.order import MicroBatch
from ddpm_hf.diffusion.losses import (
    LOSSES,
    NoisedBatch,
    check_loss_config,
    diffusion_loss_terms,
    hybrid_losses,
    min_snr_weights,
    simple_losses,
    vb_terms_bpd,
    vlb_losses,
)
from ddpm_hf.diffusion.timestep_samplers import LossSecondMomentSampler, UniformSampler, make_timestep_sampler
from ddpm_hf.randomness import StepRandomness
from ddpm_hf.trainer.step import TrainingStep

T = 1000
TIMESTEPS = [0, 0, 1, 2, 10, 500, 998, 999]  # decoder rows, the smallest KL steps, the middle and the end


# ----------------------------------------------------------------------------------------------------------------
# An independent float64 reference of the per-t term of the bound
# ----------------------------------------------------------------------------------------------------------------
def reference_term_bpd(x0, x_t, eps_hat, v, t):
    """L_t in bits/dim per sample, numpy float64, from the paper's formulas (epsilon prediction, learned_range)."""
    betas = np.linspace(1e-4, 0.02, T, dtype=np.float64)
    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    beta_tilde = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)  # Ho et al. eq. 7
    log_beta_tilde_clipped = np.log(np.append(beta_tilde[1], beta_tilde[1:]))  # Improved DDPM: log 0 at t = 0
    b = lambda table: table[t].reshape(-1, 1, 1, 1)  # noqa: E731

    def posterior_mean(x_start):  # Ho et al. eq. 7
        return (np.sqrt(b(alphas_cumprod_prev)) * b(betas) / (1 - b(alphas_cumprod))) * x_start + (
            np.sqrt(b(alphas)) * (1 - b(alphas_cumprod_prev)) / (1 - b(alphas_cumprod))) * x_t

    x0_hat = (x_t - np.sqrt(1 - b(alphas_cumprod)) * eps_hat) / np.sqrt(b(alphas_cumprod))  # unclipped, as in training
    model_mean = posterior_mean(x0_hat)
    frac = (v + 1) / 2  # Improved DDPM eq. 15
    model_logvar = frac * np.log(b(betas)) + (1 - frac) * b(log_beta_tilde_clipped)
    true_mean, true_logvar = posterior_mean(x0), b(log_beta_tilde_clipped)
    kl = 0.5 * (-1 + model_logvar - true_logvar + np.exp(true_logvar - model_logvar)
                + (true_mean - model_mean) ** 2 * np.exp(-model_logvar))

    std = np.exp(0.5 * model_logvar)
    upper, lower = (x0 - model_mean + 1 / 255) / std, (x0 - model_mean - 1 / 255) / std
    above = x0 - model_mean > 0  # take the mass in the lower tail, where ndtr is accurate
    mass = np.where(above, ndtr(-lower) - ndtr(-upper), ndtr(upper) - ndtr(lower))
    mass = np.where(x0 < -0.999, ndtr(upper), np.where(x0 > 0.999, ndtr(-lower), mass))
    nll = -np.log(np.maximum(mass, 1e-12))

    per_dim = np.where(t.reshape(-1, 1, 1, 1) == 0, nll, kl)
    return per_dim.reshape(len(t), -1).mean(axis=1) / math.log(2.0)


def learned_range_case(seed=0):
    """A batch at TIMESTEPS on 8-bit data, and a model output (eps_hat near the true noise, v in [-1, 1])."""
    g = torch.Generator().manual_seed(seed)
    scheduler = DDPMPosteriorScheduler(variance_type="learned_range")
    x0 = torch.randint(0, 256, (len(TIMESTEPS), 1, 8, 8), generator=g) / 127.5 - 1
    x0[0, 0, 0, :2] = torch.tensor([-1.0, 1.0])  # both edge bins of the decoder
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor(TIMESTEPS)
    batch = NoisedBatch(x0, noise, t, scheduler.add_noise(x0, noise, t))
    eps_hat = noise + 0.3 * torch.randn(x0.shape, generator=g)
    v = torch.rand(x0.shape, generator=g) * 2 - 1
    return scheduler, batch, torch.cat([eps_hat, v], dim=1)


def test_vb_terms_bpd_matches_the_closed_form_in_float32_and_float64():
    """The one L_t: float32 as L_vlb trains on it (T L_t), float64 as the bound computes it."""
    scheduler, batch, output = learned_range_case()
    d = lambda x: x.double().numpy()  # noqa: E731
    expected = reference_term_bpd(d(batch.x0), d(batch.x_t), d(output[:, :1]), d(output[:, 1:]), np.array(TIMESTEPS))
    assert np.all(expected > 0) and np.all(np.isfinite(expected))

    term = vlb_losses(output, batch, scheduler) / T
    assert term.dtype == torch.float32 and term.shape == (len(TIMESTEPS),)
    torch.testing.assert_close(term.double(), torch.from_numpy(expected), rtol=1e-4, atol=0)

    exact = vb_terms_bpd(scheduler, output.double(), batch.x0.double(), batch.x_t.double(), batch.timesteps)
    assert exact.dtype == torch.float64
    torch.testing.assert_close(exact, torch.from_numpy(expected), rtol=1e-9, atol=0)
    torch.testing.assert_close(term.double(), exact, rtol=1e-4, atol=0)


def test_hybrid_is_mse_plus_lambda_T_vlb_term():
    scheduler, batch, output = learned_range_case(seed=1)
    d = lambda x: x.double().numpy()  # noqa: E731
    term = reference_term_bpd(d(batch.x0), d(batch.x_t), d(output[:, :1]), d(output[:, 1:]), np.array(TIMESTEPS))
    mse = ((d(output[:, :1]) - d(batch.noise)) ** 2).reshape(len(TIMESTEPS), -1).mean(axis=1)
    expected = mse + 0.001 * T * term  # improved-diffusion's RESCALED_MSE: mse + vb * T / 1000

    hybrid = hybrid_losses(output, batch, scheduler)
    assert hybrid.dtype == torch.float32
    torch.testing.assert_close(hybrid.double(), torch.from_numpy(expected), rtol=1e-5, atol=0)
    torch.testing.assert_close(vlb_losses(output, batch, scheduler).double(), torch.from_numpy(T * term),
                               rtol=1e-4, atol=0)
    assert LOSSES["hybrid"] is hybrid_losses and LOSSES["vlb"] is vlb_losses and LOSSES["simple"] is simple_losses


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_losses_are_float32_for_a_half_precision_output(dtype):
    scheduler, batch, output = learned_range_case(seed=2)
    for loss in (simple_losses, hybrid_losses, vlb_losses):
        value = loss(output.to(dtype), batch, scheduler)
        assert value.dtype == torch.float32 and torch.isfinite(value).all()
        torch.testing.assert_close(value, loss(output.to(dtype).float(), batch, scheduler))


def test_hybrid_stops_the_vlb_gradient_of_the_mean_only():
    scheduler, batch, output = learned_range_case(seed=3)
    output.requires_grad_(True)

    def grad(loss):
        (g,) = torch.autograd.grad(loss(output, batch, scheduler).sum(), output)
        assert torch.isfinite(g).all()
        return g[:, :1], g[:, 1:]

    mean_hybrid, var_hybrid = grad(hybrid_losses)
    mean_simple, var_simple = grad(simple_losses)
    mean_vlb, var_vlb = grad(vlb_losses)
    # The mean channels learn from L_simple alone (improved-diffusion's frozen_out), the variance from L_vlb alone.
    assert torch.equal(mean_hybrid, mean_simple)
    assert torch.count_nonzero(var_simple) == 0
    assert (var_hybrid.flatten(1).norm(dim=1) > 0).all()  # every row: the KL rows and the decoder rows
    torch.testing.assert_close(var_hybrid, 0.001 * var_vlb)  # lambda L_vlb, the same term
    # Without the stop-gradient, L_vlb trains the mean too.
    assert (mean_vlb.flatten(1).norm(dim=1) > 0).all()


def test_vlb_trains_the_mean_with_a_fixed_variance():
    scheduler = DDPMPosteriorScheduler(variance_type="fixed_small")
    _, batch, output = learned_range_case(seed=4)
    mean = output[:, :1].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(vlb_losses(mean, batch, scheduler).sum(), mean)
    assert torch.isfinite(g).all() and (g.flatten(1).norm(dim=1) > 0).all()


def test_hybrid_trains_a_tiny_unet_end_to_end():
    scheduler = DDPMPosteriorScheduler(variance_type="learned_range")
    model = tiny_unet(out_channels=2)
    x0 = torch.randint(0, 256, (6, 1, 8, 8), generator=torch.Generator().manual_seed(0)) / 127.5 - 1
    terms = diffusion_loss_terms(model, scheduler, x0, torch.Generator().manual_seed(1), "hybrid")
    terms.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    torch.testing.assert_close(terms.loss.detach(), terms.sample_losses.mean())
    assert not terms.sample_losses.requires_grad and terms.timesteps.shape == (6,)


def test_check_loss_config():
    for variance_type in ("fixed_small", "fixed_small_log", "fixed_large", "learned_range"):
        check_loss_config("simple", variance_type)
        check_loss_config("vlb", variance_type)
    check_loss_config("hybrid", "learned_range")
    for variance_type in ("fixed_small", "fixed_large"):
        with pytest.raises(ValueError, match="learned_range"):
            check_loss_config("hybrid", variance_type)
    with pytest.raises(ValueError, match="simple, hybrid, vlb"):
        check_loss_config("kl", "learned_range")
    # The loss functions refuse it too, not only the set-up check.
    model = tiny_unet()
    with pytest.raises(ValueError, match="learned_range"):
        diffusion_loss_terms(model, DDPMPosteriorScheduler(), torch.zeros(2, 1, 8, 8), loss_type="hybrid")


# ----------------------------------------------------------------------------------------------------------------
# Min-SNR-gamma weighting (Hang et al. 2023)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_min_snr_weights_match_the_closed_form_and_diffusers(prediction_type):
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    gamma, t = 5.0, torch.tensor([0, 1, 30, 100, 300, 500, 999])
    alphas_cumprod = np.cumprod(1.0 - np.linspace(1e-4, 0.02, T, dtype=np.float64))[t.numpy()]
    snr = alphas_cumprod / (1.0 - alphas_cumprod)
    x0_weight = np.minimum(snr, gamma)  # Hang et al. eq. 8, for the error of x_0
    expected = {"epsilon": x0_weight / snr, "v_prediction": x0_weight / (snr + 1), "sample": x0_weight}
    weights = min_snr_weights(DDPMPosteriorScheduler(prediction_type=prediction_type), t, gamma)
    assert weights.dtype == torch.float32 and weights.shape == (len(t),)
    np.testing.assert_allclose(weights.numpy(), expected[prediction_type], rtol=1e-6)
    assert (snr > gamma)[0] and not (snr > gamma)[-1]  # both sides of the cap are tested

    if prediction_type != "sample":  # diffusers' train_text_to_image.py: min(snr, gamma) / snr (eps), / (snr + 1) (v)
        snr_diffusers = compute_snr(DDPMScheduler(prediction_type=prediction_type), t)
        reference = torch.minimum(snr_diffusers, torch.full_like(snr_diffusers, gamma))
        reference = reference / (snr_diffusers if prediction_type == "epsilon" else snr_diffusers + 1)
        # diffusers takes 1 - alpha_prod_t in float32 (4 digits at t = 0, where alpha_prod_t = 0.9999); ours in float64.
        torch.testing.assert_close(weights, reference.float(), rtol=1e-3, atol=0)


def test_min_snr_weights_are_finite_under_a_zero_terminal_snr():
    scheduler = DDPMPosteriorScheduler(rescale_betas_zero_snr=True)
    weights = min_snr_weights(scheduler, torch.arange(T), 5.0)
    assert torch.isfinite(weights).all() and weights[-1] == 1.0  # eps: min(1, gamma / 0) = 1, not 0 / 0


def test_snr_weighted_loss_is_the_weighted_mean_of_the_per_sample_errors():
    scheduler, model = DDPMPosteriorScheduler(), tiny_unet()
    x0 = torch.rand(32, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        terms = diffusion_loss_terms(model, scheduler, x0, torch.Generator().manual_seed(4), snr_gamma=5.0)
        plain = diffusion_loss_terms(model, scheduler, x0, torch.Generator().manual_seed(4))
        generator = torch.Generator().manual_seed(4)  # the same draws, in the same order: noise, then timesteps
        noise = torch.randn(x0.shape, generator=generator)
        timesteps = torch.randint(0, T, (32,), generator=generator)
        errors = (model(scheduler.add_noise(x0, noise, timesteps), timesteps).sample - noise).pow(2).mean(dim=(1, 2, 3))
        # The weights are independent of the loss code: min(1, gamma / SNR) from alphas_cumprod in float64.
        alphas_cumprod = torch.from_numpy(np.cumprod(1.0 - np.linspace(1e-4, 0.02, T)))[timesteps]
        weights = torch.clamp(5.0 * (1 - alphas_cumprod) / alphas_cumprod, max=1.0).float()
        huge_gamma = diffusion_loss_terms(model, scheduler, x0, torch.Generator().manual_seed(4), snr_gamma=1e12).loss
    torch.testing.assert_close(terms.loss, (weights * errors).mean())
    torch.testing.assert_close(terms.sample_losses, errors)  # unweighted: what a timestep sampler learns from
    assert (weights < 1).any() and (weights == 1).any()  # this draw has timesteps on both sides of the cap
    assert torch.equal(terms.timesteps, plain.timesteps) and terms.loss < plain.loss
    torch.testing.assert_close(huge_gamma, plain.loss)  # gamma above every SNR: plain L_simple


def test_snr_gamma_needs_a_positive_gamma_and_l_simple():
    check_loss_config("simple", "fixed_small", 5.0)
    with pytest.raises(ValueError, match="positive"):
        check_loss_config("simple", "fixed_small", 0.0)
    with pytest.raises(ValueError, match="use loss_type 'simple' with snr_gamma"):
        check_loss_config("hybrid", "learned_range", 5.0)
    with pytest.raises(ValueError, match="use loss_type 'simple' with snr_gamma"):
        diffusion_loss_terms(tiny_unet(), DDPMPosteriorScheduler(), torch.zeros(2, 1, 8, 8), loss_type="vlb",
                             snr_gamma=5.0)


def test_vlb_refuses_a_respaced_scheduler():
    scheduler, batch, output = learned_range_case()
    scheduler.set_timesteps(50)
    with pytest.raises(ValueError, match="full 1000-step chain"):
        vlb_losses(output, batch, scheduler)


# ----------------------------------------------------------------------------------------------------------------
# The default path keeps its numbers
# ----------------------------------------------------------------------------------------------------------------
def test_default_loss_is_bit_identical_to_the_historical_formula():
    scheduler = DDPMPosteriorScheduler()
    model = tiny_unet()
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    generator = torch.Generator().manual_seed(3)  # the historical draws, in their order: noise, then timesteps
    noise = torch.randn(x0.shape, generator=generator)
    timesteps = torch.randint(0, T, (4,), generator=generator)
    with torch.no_grad():
        prediction = model(scheduler.add_noise(x0, noise, timesteps), timesteps).sample
        expected = F.mse_loss(prediction.float(), noise.float())

        default = diffusion_loss_terms(model, scheduler, x0, torch.Generator().manual_seed(3))
        terms = diffusion_loss_terms(model, scheduler, x0, torch.Generator().manual_seed(3),
                                     timestep_sampler=UniformSampler(T))
    assert torch.equal(default.loss, expected) and torch.equal(terms.loss, expected)
    assert torch.equal(terms.timesteps, timesteps)
    torch.testing.assert_close(terms.sample_losses, (prediction - noise).pow(2).mean(dim=(1, 2, 3)))


def test_uniform_sampler_draws_what_randint_draws():
    draws, weights = UniformSampler(T).sample(16, torch.Generator().manual_seed(5), "cpu")
    assert torch.equal(draws, torch.randint(0, T, (16,), generator=torch.Generator().manual_seed(5)))
    assert weights is None
    assert isinstance(make_timestep_sampler("uniform", T), UniformSampler)
    assert isinstance(make_timestep_sampler("loss-second-moment", T), LossSecondMomentSampler)
    with pytest.raises(ValueError, match="loss-second-moment"):
        make_timestep_sampler("importance", T)
    with pytest.raises(ValueError, match="num_train_timesteps=1000"):
        diffusion_loss_terms(tiny_unet(), DDPMPosteriorScheduler(), torch.zeros(2, 1, 8, 8), None,
                             timestep_sampler=UniformSampler(10))


# ----------------------------------------------------------------------------------------------------------------
# The second-moment sampler
# ----------------------------------------------------------------------------------------------------------------
class ReferenceResampler:
    """improved-diffusion's LossSecondMomentResampler (history shifted, one loss at a time), in numpy."""

    def __init__(self, num_timesteps, history_per_term=10, uniform_prob=0.001):
        self.history_per_term, self.uniform_prob = history_per_term, uniform_prob
        self.loss_history = np.zeros([num_timesteps, history_per_term], dtype=np.float64)
        self.loss_counts = np.zeros([num_timesteps], dtype=np.int64)

    def weights(self):
        if not (self.loss_counts == self.history_per_term).all():
            return np.ones([len(self.loss_counts)], dtype=np.float64) / len(self.loss_counts)
        weights = np.sqrt(np.mean(self.loss_history**2, axis=-1))
        weights /= np.sum(weights)
        weights *= 1 - self.uniform_prob
        weights += self.uniform_prob / len(weights)
        return weights

    def update(self, ts, losses):
        for t, loss in zip(ts, losses):
            if self.loss_counts[t] == self.history_per_term:
                self.loss_history[t, :-1] = self.loss_history[t, 1:]
                self.loss_history[t, -1] = loss
            else:
                self.loss_history[t, self.loss_counts[t]] = loss
                self.loss_counts[t] += 1


def known_second_moments(num_timesteps=8):
    """Ten losses per t, c_t (1 +- 0.5) alternately: E[L_t^2] = 1.25 c_t^2, in a shuffled order."""
    c = np.array([0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0])[:num_timesteps]
    t = np.repeat(np.arange(num_timesteps), 10)
    losses = c[t] * np.where(np.arange(len(t)) % 2 == 0, 1.5, 0.5)
    order = np.random.default_rng(0).permutation(len(t))
    return c, torch.from_numpy(t[order]), torch.from_numpy(losses[order])


def test_second_moment_sampler_is_uniform_until_warm():
    sampler = LossSecondMomentSampler(8)
    c, t, losses = known_second_moments()
    last_of_t7 = int(np.flatnonzero(t.numpy() == 7)[-1])
    keep = torch.ones(len(t), dtype=torch.bool)
    keep[last_of_t7] = False
    sampler.update(t[keep], losses[keep])  # t = 7 has 9 losses, every other t 10
    assert torch.equal(sampler.probabilities(), torch.full((8,), 1 / 8, dtype=torch.float64))
    draws, weights = sampler.sample(40_000, torch.Generator().manual_seed(0), "cpu")
    assert torch.equal(weights, torch.ones(40_000))
    frequencies = torch.bincount(draws, minlength=8) / 40_000
    assert (frequencies - 1 / 8).abs().max() < 5 * math.sqrt(1 / 8 * 7 / 8 / 40_000)


def test_second_moment_sampler_probabilities_weights_and_frequencies():
    sampler, reference = LossSecondMomentSampler(8), ReferenceResampler(8)
    c, t, losses = known_second_moments()
    sampler.update(t, losses)
    reference.update(t.numpy(), losses.numpy())

    root_second_moment = np.sqrt(1.25) * c
    expected = root_second_moment / root_second_moment.sum() * (1 - 0.001) + 0.001 / 8
    p = sampler.probabilities()
    torch.testing.assert_close(p, torch.from_numpy(expected), rtol=1e-14, atol=0)
    torch.testing.assert_close(p, torch.from_numpy(reference.weights()), rtol=1e-14, atol=0)

    n = 200_000
    draws, weights = sampler.sample(n, torch.Generator().manual_seed(1), "cpu")
    frequencies = (torch.bincount(draws, minlength=8) / n).double()
    assert ((frequencies - p).abs() <= 5 * torch.sqrt(p * (1 - p) / n)).all()
    assert weights.dtype == torch.float32
    assert torch.equal(weights, (1 / (8 * p[draws])).float())  # w = 1 / (T p_t)

    # Unbiased (Improved DDPM eq. 18): E_{t~p}[w_t L_t] = sum_t p_t L_t / (T p_t) = the uniform mean of the L_t.
    per_t_loss = torch.from_numpy(c**2 + 3.0)
    weight_of_t = torch.zeros(8, dtype=torch.float64).index_copy_(0, draws, weights.double())
    torch.testing.assert_close((p * weight_of_t * per_t_loss).sum(), per_t_loss.mean(), rtol=1e-6, atol=0)
    estimate = (weights.double() * per_t_loss[draws]).mean()  # and the Monte Carlo estimate agrees with it
    spread = (weights.double() * per_t_loss[draws]).std() / math.sqrt(n)
    assert abs(estimate - per_t_loss.mean()) < 5 * spread


def test_second_moment_sampler_update_equals_one_at_a_time():
    # Duplicates of a t in one update, more than the history holds, all in one call: the same state as feeding the
    # losses one by one, and the same p as improved-diffusion's shifted history.
    g = torch.Generator().manual_seed(0)
    t = torch.cat([torch.randint(0, 6, (60,), generator=g), torch.full((25,), 2)])
    losses = torch.rand(len(t), generator=g, dtype=torch.float64) * 10
    batched, one_by_one, reference = LossSecondMomentSampler(6), LossSecondMomentSampler(6), ReferenceResampler(6)
    for half in (slice(0, 40), slice(40, None)):
        batched.update(t[half], losses[half])
    for i in range(len(t)):
        one_by_one.update(t[i : i + 1], losses[i : i + 1])
    reference.update(t.numpy(), losses.numpy())
    assert torch.equal(batched.loss_history, one_by_one.loss_history)
    assert torch.equal(batched.loss_counts, one_by_one.loss_counts)
    assert torch.equal(batched.loss_counts, torch.bincount(t, minlength=6))
    torch.testing.assert_close(batched.probabilities(), torch.from_numpy(reference.weights()), rtol=1e-13, atol=0)
    # Same losses per t as the reference's last ten, as multisets (a ring buffer instead of a shifted one).
    assert torch.equal(batched.loss_history.sort(dim=1).values,
                       torch.from_numpy(np.sort(reference.loss_history, axis=1)))


def test_second_moment_sampler_same_t_twice_in_one_update():
    sampler = LossSecondMomentSampler(8)
    sampler.update(torch.tensor([5, 3, 5]), torch.tensor([1.0, 2.0, 3.0]))
    assert sampler.loss_history[5, :3].tolist() == [1.0, 3.0, 0.0]  # both, in the batch's order
    assert sampler.loss_history[3, :2].tolist() == [2.0, 0.0]
    assert sampler.loss_counts.tolist() == [0, 0, 0, 1, 0, 2, 0, 0]


def test_second_moment_sampler_state_dict_round_trip():
    sampler = LossSecondMomentSampler(8)
    c, t, losses = known_second_moments()
    sampler.update(t, losses)
    state = sampler.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = LossSecondMomentSampler(8)
    restored.load_state_dict(torch.load(buffer, weights_only=True))

    more_t, more_losses = torch.tensor([1, 1, 6]), torch.tensor([100.0, 0.1, 7.0])
    for _ in range(2):
        a = sampler.sample(64, torch.Generator().manual_seed(9), "cpu")
        b = restored.sample(64, torch.Generator().manual_seed(9), "cpu")
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        sampler.update(more_t, more_losses)
        restored.update(more_t, more_losses)
    assert not torch.equal(state["loss_history"], sampler.loss_history)  # the state was a copy
    with pytest.raises(ValueError, match="num_train_timesteps"):
        LossSecondMomentSampler(9).load_state_dict(state)


def test_importance_weighted_loss_is_the_weighted_mean_of_the_sample_losses():
    scheduler = DDPMPosteriorScheduler(variance_type="learned_range", num_train_timesteps=8)
    sampler = LossSecondMomentSampler(8)
    _, t, losses = known_second_moments()
    sampler.update(t, losses)
    model = tiny_unet(out_channels=2)
    x0 = torch.randint(0, 256, (6, 1, 8, 8), generator=torch.Generator().manual_seed(0)) / 127.5 - 1
    with torch.no_grad():
        terms = diffusion_loss_terms(model, scheduler, x0, torch.Generator().manual_seed(2), "vlb", sampler)
    generator = torch.Generator().manual_seed(2)  # the same draws, in the same order: noise, then timesteps
    torch.randn(x0.shape, generator=generator)
    timesteps, weights = sampler.sample(6, generator, "cpu")
    assert torch.equal(terms.timesteps, timesteps)
    assert torch.equal(weights, (1 / (8 * sampler.probabilities()[timesteps])).float())
    torch.testing.assert_close(terms.loss, (terms.sample_losses * weights).mean())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_second_moment_sampler_does_not_sync_on_cuda():
    sampler = LossSecondMomentSampler(1000, device="cuda")
    generator = torch.Generator("cuda").manual_seed(0)
    t = torch.randint(0, 1000, (20_000,), device="cuda", generator=generator)
    sampler.update(t, torch.rand(20_000, device="cuda", generator=generator))  # warm
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch_size in (1, 128):
            draws, weights = sampler.sample(batch_size, generator, "cuda")
            sampler.update(draws, weights * 2)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ----------------------------------------------------------------------------------------------------------------
# The trainer's step: conditioning per micro-batch, the EMA, the sampler's update
# ----------------------------------------------------------------------------------------------------------------
class ConditionedModel(torch.nn.Module):
    """A tiny UNet that records the extra keyword argument of each call."""

    def __init__(self):
        super().__init__()
        self.unet, self.seen = tiny_unet(), []

    def forward(self, x_t, timesteps, tag=None):
        self.seen.append(tag)
        return self.unet(x_t, timesteps)


class Tags:
    """A conditioning that names each micro-batch's conditions and the first draw of its dropout generator."""

    def model_kwargs(self, conditions, generator):
        return {"tag": (conditions.tolist(), torch.rand(1, generator=generator, device=generator.device).item())}


def test_training_step_conditions_each_micro_batch_steps_the_ema_and_feeds_the_sampler():
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    accelerator = Accelerator()  # the settings test_train's in-process Accelerator has: one state per process
    device = accelerator.device
    model = ConditionedModel().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler, sampler = DDPMPosteriorScheduler(), LossSecondMomentSampler(T, device=device)
    ema = EMAModel(model.unet.parameters())
    step = TrainingStep(accelerator, model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
                        scheduler, sampler, seed=0, ema=ema, conditioning=Tags())
    pixels = torch.randint(0, 256, (2, 3, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    items = [MicroBatch(pixels[m], torch.tensor([m, 10 + m])) for m in range(2)]
    before = [p.detach().clone() for p in model.unet.parameters()]
    randomness = StepRandomness(seed=0, step=4)
    with torch.no_grad():  # the losses of the step's draws, on the weights before it
        expected = [diffusion_loss_terms(model, scheduler, pixels[m].to(device) / 127.5 - 1,
                                         randomness.noise_generator(m, device), timestep_sampler=sampler)
                    for m in range(2)]
    model.seen.clear()
    output = step(4, items)

    dropout_draws = [torch.rand(1, generator=randomness.conditioning_dropout_generator(m, device), device=device).item()
                     for m in range(2)]
    assert model.seen == [([0, 10], dropout_draws[0]), ([1, 11], dropout_draws[1])]
    torch.testing.assert_close(output.loss, torch.stack([e.loss for e in expected]).mean())
    assert output.grad_norm is None  # no clipping asked for
    # The sampler learnt each micro-batch's timesteps and unweighted losses, once.
    timesteps = torch.cat([e.timesteps for e in expected])
    assert sampler.loss_counts.sum() == 6 and (sampler.loss_counts[timesteps] > 0).all()
    learnt = sampler.loss_history[sampler.loss_counts > 0, :2].sum(dim=1).float()  # 1 or 2 losses at each t seen
    by_t = torch.zeros(T, device=device).index_add_(0, timesteps, torch.cat([e.sample_losses for e in expected]))
    torch.testing.assert_close(learnt, by_t[sampler.loss_counts > 0])
    # The EMA stepped once, on the UNet's new weights (which moved): diffusers' decay is 0 at an EMA's first step.
    after = [p.detach() for p in model.unet.parameters()]
    assert ema.optimization_step == 1 and any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    for shadow, a in zip(ema.shadow_params, after, strict=True):
        torch.testing.assert_close(shadow, a)  # shadow - (shadow - a): equal up to rounding
