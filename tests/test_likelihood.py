# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The variational bound (bits/dim): its densities, an oracle model whose bound is known in closed form, and a real
tiny UNet. Every expected number is computed here independently of ddpm_hf (numpy float64, math.erf)."""

import json
import math
import os
import types

import numpy as np
import pytest
import torch

from ddpm_hf import DDPMPosteriorScheduler
from ddpm_hf.cli.nll import run as run_nll
from ddpm_hf.diffusion.likelihood import VariationalBound, as_posterior_scheduler, variational_bound
from ddpm_hf.diffusion.losses import bits_per_dim, discretized_gaussian_log_likelihood, normal_kl

T = 50
GRID = torch.arange(256, dtype=torch.float64) / 255 * 2 - 1  # every 8-bit value in [-1, 1]


def numpy_alphas_cumprod(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02):
    return np.cumprod(1.0 - np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64))


def random_image(shape=(1, 1, 4, 4), seed=0):
    """8-bit data in [-1, 1] with both edge values present."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, 256, shape, generator=g)
    k.view(-1)[0], k.view(-1)[1] = 0, 255
    return k.double() / 127.5 - 1


class OracleUNet(torch.nn.Module):
    """For a data set holding one image per batch row, the optimal noise prediction
    eps* = (x_t - sqrt(alpha_prod_t) x_0) / sqrt(1 - alpha_prod_t), with x_0 read from `encoder_hidden_states` when
    given."""

    def __init__(self, x_0, alphas_cumprod, dtype=torch.float64):
        super().__init__()
        self.register_buffer("alphas_cumprod", torch.tensor(alphas_cumprod, dtype=torch.float64))
        self.register_buffer("x_0", x_0.to(torch.float64))
        self.dtype_anchor = torch.nn.Parameter(torch.zeros((), dtype=dtype), requires_grad=False)

    def forward(self, sample, timestep, encoder_hidden_states=None):
        a = self.alphas_cumprod[timestep.long()].view(-1, 1, 1, 1)
        x_0 = self.x_0 if encoder_hidden_states is None else encoder_hidden_states.reshape(sample.shape).double()
        eps = (sample.double() - a.sqrt() * x_0) / (1 - a).sqrt()
        return types.SimpleNamespace(sample=eps.to(sample.dtype))


def decoder_nll_bpd(x_0, variance):
    """-log p(x_0 | x_1) in bits/dim when p's mean is x_0 itself and its variance `variance`, with math.erf."""
    z = (1 / 255) / math.sqrt(2 * variance)
    interior, edge = math.erf(z), 0.5 * (1 + math.erf(z))
    x = x_0.flatten().numpy()
    probs = np.where(np.abs(x) > 0.999, edge, interior)
    return -np.log(probs).mean() / math.log(2)


def prior_bpd_numpy(x_0, alpha_prod_T):
    x = x_0.flatten().numpy()
    kl = 0.5 * (-1 - np.log(1 - alpha_prod_T) + (1 - alpha_prod_T) + alpha_prod_T * x**2)
    return kl.mean() / math.log(2)


# ----------------------------------------------------------------------------------------------------------------
# normal_kl
# ----------------------------------------------------------------------------------------------------------------
def test_normal_kl_matches_numpy_closed_form():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=100), rng.normal(size=100)
    lv1, lv2 = rng.normal(size=100) * 2, rng.normal(size=100) * 2
    expected = 0.5 * (-1 + lv2 - lv1 + np.exp(lv1 - lv2) + (m1 - m2) ** 2 * np.exp(-lv2))
    got = normal_kl(*(torch.from_numpy(a) for a in (m1, lv1, m2, lv2))).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    assert np.all(got >= 0)


def test_normal_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    for m1, lv1, m2, lv2 in [(0.3, -1.0, -0.2, 0.5), (1.0, 0.2, 0.0, 0.0), (0.0, -3.0, 0.1, -2.5)]:
        x = m1 + math.exp(lv1 / 2) * torch.randn(400_000, generator=g, dtype=torch.float64)
        log_n1 = -0.5 * lv1 - (x - m1) ** 2 / (2 * math.exp(lv1))
        log_n2 = -0.5 * lv2 - (x - m2) ** 2 / (2 * math.exp(lv2))
        log_ratio = log_n1 - log_n2
        estimate, stderr = log_ratio.mean().item(), (log_ratio.std() / math.sqrt(len(x))).item()
        exact = normal_kl(torch.tensor(m1, dtype=torch.float64), lv1, m2, lv2).item()
        assert abs(estimate - exact) < 5 * stderr, (estimate, exact, stderr)


def test_normal_kl_of_identical_gaussians_is_zero_and_broadcasts():
    mean = torch.randn(3, 4, dtype=torch.float64)
    logvar = torch.randn(3, 1, dtype=torch.float64)
    assert torch.equal(normal_kl(mean, logvar, mean, logvar), torch.zeros(3, 4, dtype=torch.float64))
    # close variances: no cancellation (0.5 * (expm1(d) - d) ~ d^2 / 4)
    d = 1e-6
    assert normal_kl(torch.zeros(1), torch.tensor([d]), 0.0, 0.0).item() == pytest.approx(d**2 / 4, rel=1e-3)


# ----------------------------------------------------------------------------------------------------------------
# The discretized Gaussian decoder
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("mean,scale", [(0.0, 0.1), (0.3, 1e-3), (-0.77, 0.02), (0.999, 0.5), (-3.0, 2.0), (0.1, 50.0)])
def test_decoder_bins_sum_to_one(mean, scale, dtype):
    log_p = discretized_gaussian_log_likelihood(
        GRID.to(dtype), torch.tensor(mean, dtype=dtype), torch.tensor(math.log(scale), dtype=dtype)
    )
    assert log_p.shape == (256,) and torch.all(log_p <= 0)
    assert abs(log_p.double().exp().sum().item() - 1) < 1e-6


@pytest.mark.parametrize("mean", [3.0, 40.0, -3.0, -40.0])
def test_decoder_edge_bins_capture_the_tails(mean):
    log_p = discretized_gaussian_log_likelihood(GRID, mean * torch.ones(1), math.log(0.2) * torch.ones(1))
    edge = 255 if mean > 0 else 0
    assert log_p[edge].exp().item() > 1 - 1e-6
    assert log_p.exp().sum().item() == pytest.approx(1, abs=1e-6)
    # the inside bins are floored at 1e-12, as improved-diffusion does
    assert log_p[128].item() == pytest.approx(math.log(1e-12))


def test_decoder_bins_match_erf_including_far_tails():
    def exact_log_mass(x, mean, scale):
        if x < -0.999:
            return math.log(0.5 * math.erfc(-(x + 1 / 255 - mean) / (scale * math.sqrt(2))))
        if x > 0.999:
            return math.log(0.5 * math.erfc((x - 1 / 255 - mean) / (scale * math.sqrt(2))))
        lo, hi = (x - 1 / 255 - mean) / scale, (x + 1 / 255 - mean) / scale
        if lo > 0:  # upper tail: difference of erfc, no cancellation
            return math.log(0.5 * (math.erfc(lo / math.sqrt(2)) - math.erfc(hi / math.sqrt(2))))
        return math.log(0.5 * (math.erfc(-hi / math.sqrt(2)) - math.erfc(-lo / math.sqrt(2))))

    mean, scale = 0.1, 0.05
    x = GRID
    f64 = dict(dtype=torch.float64)
    got = discretized_gaussian_log_likelihood(x, torch.tensor(mean, **f64), torch.tensor(math.log(scale), **f64))
    for i in range(256):
        expected = exact_log_mass(float(x[i]), mean, scale)
        if expected > math.log(1e-12):
            assert got[i].item() == pytest.approx(expected, rel=1e-9, abs=1e-12), i
    # a bin ~6 sigma above the mean, where 1 - CDF cancels catastrophically in float32: accurate in log space
    x6, mean6 = torch.tensor([0.6], dtype=torch.float32), torch.tensor([0.3], dtype=torch.float32)
    got6 = discretized_gaussian_log_likelihood(x6, mean6, torch.tensor([math.log(0.05)]))
    assert got6.item() == pytest.approx(exact_log_mass(0.6, 0.3, 0.05), rel=1e-4)


def test_bits_per_dim_unit_on_a_hand_example():
    # 1.5 bits per dimension of a 3x4x4 image is 1.5 * ln 2 nats in each of its 48 dimensions
    nats = torch.full((2, 3, 4, 4), 1.5 * math.log(2), dtype=torch.float64)
    nats[1] = 100.0 / 48
    per_image = bits_per_dim(nats)
    assert per_image.shape == (2,) and per_image[0].item() == pytest.approx(1.5, rel=1e-15)
    assert per_image[1].item() == pytest.approx(100 / (48 * 0.6931471805599453), rel=1e-15)
    # the bound is per dimension: a 1x1x2 image with pixels -1, 1 under the oracle's decoder, by hand
    x_0 = torch.tensor([[[[-1.0, 1.0]]]], dtype=torch.float64)
    log_p = discretized_gaussian_log_likelihood(x_0, x_0, torch.tensor(math.log(1 / 255), dtype=torch.float64))
    # each edge bin holds Phi(1) = 0.841344746...: -log2(0.841344746) bits per pixel
    assert -bits_per_dim(log_p).item() == pytest.approx(-math.log2(0.8413447460685429), rel=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# The bound with the oracle model
# ----------------------------------------------------------------------------------------------------------------
def oracle_bound(x_0, scheduler, **kwargs):
    unet = OracleUNet(x_0, numpy_alphas_cumprod())
    kwargs.setdefault("generator", torch.Generator().manual_seed(0))
    return variational_bound(unet, scheduler, x_0, clip_denoised=False, show_progress=False, **kwargs)


@pytest.mark.parametrize("respaced", [False, True])
def test_oracle_bound_is_prior_plus_decoder(respaced):
    x_0 = random_image()
    scheduler = DDPMPosteriorScheduler(num_train_timesteps=T, clip_sample=False, variance_type="fixed_small")
    if respaced:
        scheduler.set_timesteps(10)
    chain = scheduler.timesteps.tolist()
    bound = oracle_bound(x_0, scheduler)

    K = len(chain)
    assert bound.terms_bpd.shape == (1, K) and bound.prior_bpd.shape == (1,) and bound.total_bpd.shape == (1,)
    assert bound.timesteps.tolist() == chain[::-1]
    assert torch.all(bound.terms_bpd[:, 1:].abs() < 1e-6)  # every denoising KL vanishes
    alphas_cumprod = numpy_alphas_cumprod()
    assert bound.prior_bpd.item() == pytest.approx(prior_bpd_numpy(x_0, alphas_cumprod[chain[0]]), rel=1e-10)
    # the decoder: mean x_0 exactly, variance Sigma_q of the chain's second-to-last step (Improved DDPM's clip)
    t, prev = chain[-2], chain[-1]
    beta = 1 - alphas_cumprod[t] / alphas_cumprod[prev]
    variance = beta * (1 - alphas_cumprod[prev]) / (1 - alphas_cumprod[t])
    assert bound.decoder_bpd.item() == pytest.approx(decoder_nll_bpd(x_0, variance), rel=1e-9)
    assert torch.equal(bound.decoder_bpd, bound.terms_bpd[:, 0])
    assert bound.total_bpd.item() == pytest.approx(bound.prior_bpd.item() + bound.decoder_bpd.item(), abs=1e-6)


def test_timesteps_argument_bounds_a_respaced_chain_without_changing_the_scheduler():
    x_0 = random_image()
    scheduler = DDPMPosteriorScheduler(num_train_timesteps=T, clip_sample=False)
    via_argument = oracle_bound(x_0, scheduler, timesteps=10)
    assert len(scheduler.timesteps) == T  # untouched
    custom = oracle_bound(x_0, scheduler, timesteps=[40, 20, 3])
    assert custom.timesteps.tolist() == [3, 20, 40]
    scheduler.set_timesteps(10)
    direct = oracle_bound(x_0, scheduler)
    assert torch.equal(via_argument.total_bpd, direct.total_bpd)
    assert torch.equal(via_argument.timesteps, direct.timesteps)


def test_stock_diffusers_scheduler_is_accepted():
    from diffusers import DDPMScheduler

    x_0 = random_image()
    ours = oracle_bound(x_0, DDPMPosteriorScheduler(num_train_timesteps=T, clip_sample=False))
    stock = oracle_bound(x_0, DDPMScheduler(num_train_timesteps=T, clip_sample=False))
    assert torch.equal(ours.total_bpd, stock.total_bpd)


def test_the_shipped_copy_of_the_scheduler_is_converted_on_its_chain():
    """A folder loaded with trust_remote_code runs its own copy of scheduling_ddpm_posterior.py, a class of its own
    (maybe an older version): the bound rebuilds this package's scheduler from its config and chain."""
    import importlib.util

    import ddpm_hf.scheduling_ddpm_posterior as home

    spec = importlib.util.spec_from_file_location("shipped_scheduling_ddpm_posterior", home.__file__)
    shipped = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shipped)
    copy = shipped.DDPMPosteriorScheduler(num_train_timesteps=T, variance_type="fixed_large")
    copy.set_timesteps(timesteps=[40, 20, 3])
    converted = as_posterior_scheduler(copy)
    assert type(converted) is DDPMPosteriorScheduler and converted.config.variance_type == "fixed_large"
    assert converted.timesteps.tolist() == [40, 20, 3]
    ours = DDPMPosteriorScheduler(num_train_timesteps=T)
    assert as_posterior_scheduler(ours) is ours


def test_conditioning_is_gathered_per_pair():
    """Three images, each x_0 handed to the model as its `encoder_hidden_states`: the oracle is exact only if every
    (image, t) pair gets its own image's conditioning."""
    x_0 = torch.cat([random_image(seed=s) for s in range(3)])
    scheduler = DDPMPosteriorScheduler(num_train_timesteps=T, clip_sample=False)
    unet = OracleUNet(torch.zeros(1, 1, 4, 4), numpy_alphas_cumprod())
    bound = variational_bound(
        unet, scheduler, x_0, generator=torch.Generator().manual_seed(1), batch_size=7, clip_denoised=False,
        show_progress=False, encoder_hidden_states=x_0.reshape(3, 1, 16),
    )
    assert torch.all(bound.terms_bpd[:, 1:].abs() < 1e-6)
    for b in range(3):
        expected = prior_bpd_numpy(x_0[b], numpy_alphas_cumprod()[T - 1])
        assert bound.prior_bpd[b].item() == pytest.approx(expected, rel=1e-10)


def test_reproducible_and_independent_of_batch_size():
    x_0 = torch.cat([random_image(seed=s) for s in range(2)])
    scheduler = DDPMPosteriorScheduler(num_train_timesteps=T, clip_sample=False)

    class Imperfect(OracleUNet):  # a model whose KL terms depend on the draws
        def forward(self, sample, timestep, encoder_hidden_states=None):
            out = super().forward(sample, timestep, encoder_hidden_states)
            return types.SimpleNamespace(sample=out.sample + 0.05 * torch.sin(7 * sample))

    unet = Imperfect(torch.zeros(1, 1, 4, 4), numpy_alphas_cumprod())
    results = [
        variational_bound(unet, scheduler, x_0, generator=torch.Generator().manual_seed(seed), batch_size=bs,
                          show_progress=False, model_kwargs={"encoder_hidden_states": x_0.reshape(2, 1, 16)})
        for seed, bs in [(3, 64), (3, 64), (3, 1), (3, 13), (4, 64)]
    ]
    for other in results[1:4]:
        assert torch.equal(results[0].terms_bpd, other.terms_bpd)
        assert torch.equal(results[0].total_bpd, other.total_bpd)
    assert not torch.equal(results[0].terms_bpd, results[4].terms_bpd)  # another seed, other draws
    assert torch.all(results[0].terms_bpd[:, 1:] > 0)


def test_terms_match_a_direct_recomputation_from_the_models_inputs():
    """A model that predicts eps = 0.5 x_t records what it sees; every term is recomputed from those inputs with the
    formulas of Ho et al. 2020 (eq. 4, 5, 7) in numpy (respaced chain, clipping on, fixed_large variance)."""
    x_0 = torch.cat([random_image(seed=s) for s in range(2)])
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros((), dtype=torch.float64), requires_grad=False)

        def forward(self, sample, timestep):
            seen.append((sample.clone(), timestep.clone()))
            return types.SimpleNamespace(sample=0.5 * sample)

    scheduler = DDPMPosteriorScheduler(num_train_timesteps=T, variance_type="fixed_large")
    bound = variational_bound(Recorder(), scheduler, x_0, generator=torch.Generator().manual_seed(0), batch_size=4,
                              timesteps=[49, 30, 12, 4, 0], show_progress=False)
    chain = [49, 30, 12, 4, 0]
    alphas_cumprod = numpy_alphas_cumprod()
    x_t_all = torch.cat([s for s, _ in seen]).numpy()
    t_all = torch.cat([t for _, t in seen]).numpy()
    assert len(t_all) == 2 * len(chain)
    for row, (x_t, t) in enumerate(zip(x_t_all, t_all)):
        b, k = divmod(row, len(chain))  # image-major, ascending t
        assert t == chain[::-1][k]
        x0 = x_0[b].numpy()
        i = chain.index(t)
        a_t = alphas_cumprod[t]
        a_prev = alphas_cumprod[chain[i + 1]] if i + 1 < len(chain) else 1.0
        beta = 1 - a_t / a_prev
        x0_hat = np.clip((x_t - math.sqrt(1 - a_t) * 0.5 * x_t) / math.sqrt(a_t), -1, 1)

        def mean(x0_):  # called in this iteration only
            return (math.sqrt(a_prev) * beta * x0_ + math.sqrt(1 - beta) * (1 - a_prev) * x_t) / (1 - a_t)  # noqa: B023

        if k == 0:  # decoder: fixed_large's sigma^2 there is Sigma_q of the step before (Ho et al.'s fixedlarge)
            a_1, a_0 = alphas_cumprod[chain[-2]], alphas_cumprod[chain[-1]]
            decoder_var = (1 - a_1 / a_0) * (1 - a_0) / (1 - a_1)
            z_hi = (x0 + 1 / 255 - mean(x0_hat)) / math.sqrt(2 * decoder_var)
            z_lo = (x0 - 1 / 255 - mean(x0_hat)) / math.sqrt(2 * decoder_var)
            erf = np.vectorize(math.erf)
            p = np.where(x0 < -0.999, 0.5 * (1 + erf(z_hi)),
                         np.where(x0 > 0.999, 0.5 * (1 - erf(z_lo)), 0.5 * (erf(z_hi) - erf(z_lo))))
            expected = -np.log(np.maximum(p, 1e-12)).mean() / math.log(2)
        else:
            var_q = beta * (1 - a_prev) / (1 - a_t)
            kl = 0.5 * (-1 + math.log(beta) - math.log(var_q) + var_q / beta + (mean(x0) - mean(x0_hat)) ** 2 / beta)
            expected = kl.mean() / math.log(2)
        assert bound.terms_bpd[b, k].item() == pytest.approx(expected, rel=1e-7, abs=1e-9), (b, k)
    assert torch.allclose(bound.total_bpd, bound.prior_bpd + bound.terms_bpd.sum(1))


def test_rejects_images_outside_the_model_range():
    scheduler = DDPMPosteriorScheduler(num_train_timesteps=T)
    unet = OracleUNet(torch.zeros(1, 1, 4, 4), numpy_alphas_cumprod())
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        variational_bound(unet, scheduler, torch.full((1, 1, 4, 4), 200.0), show_progress=False)


# ----------------------------------------------------------------------------------------------------------------
# A real tiny UNet
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variance_type", ["fixed_small", "learned_range"])
def test_tiny_unet_gives_a_finite_positive_bound(unet_factory, variance_type):
    out_channels = 2 if variance_type == "learned_range" else 1
    unet = unet_factory(in_channels=1, out_channels=out_channels, sample_size=8)
    unet.train()
    scheduler = DDPMPosteriorScheduler(num_train_timesteps=T, variance_type=variance_type)
    x_0 = torch.cat([random_image((1, 1, 8, 8), seed=s) for s in range(2)]).float()
    bound = variational_bound(unet, scheduler, x_0, generator=torch.Generator().manual_seed(0), batch_size=32,
                              timesteps=20 if variance_type == "learned_range" else None, show_progress=False)
    K = 20 if variance_type == "learned_range" else T
    assert isinstance(bound, VariationalBound)
    assert bound.terms_bpd.shape == (2, K) and bound.timesteps.shape == (K,)
    assert bound.prior_bpd.shape == bound.decoder_bpd.shape == bound.total_bpd.shape == (2,)
    assert torch.all(torch.isfinite(bound.terms_bpd)) and torch.all(bound.total_bpd > 0)
    assert torch.all(bound.terms_bpd[:, 1:] >= 0)
    assert torch.allclose(bound.total_bpd, bound.prior_bpd + bound.terms_bpd.sum(1))
    assert unet.training  # the mode is restored
    again = variational_bound(unet, scheduler, x_0, generator=torch.Generator().manual_seed(0), batch_size=5,
                              timesteps=20 if variance_type == "learned_range" else None, show_progress=False)
    torch.testing.assert_close(again.terms_bpd, bound.terms_bpd, rtol=1e-5, atol=1e-6)


def test_nll_command_writes_json_and_png(tmp_path, unet_factory, capsys):
    from ddpm_hf import DDPMImagePipeline

    folder = tmp_path / "pipe"
    scheduler = DDPMPosteriorScheduler(num_train_timesteps=T)
    pipeline = DDPMImagePipeline(unet=unet_factory(sample_size=8), scheduler=scheduler)
    pipeline.save_pretrained(folder)
    args = types.SimpleNamespace(
        pipeline=str(folder), data="embedded:digits", num_images=3, batch_size=32, steps=5, seed=0,
        out_png=str(tmp_path / "terms.png"), out_json=str(tmp_path / "nll.json"), device="cpu",
    )
    run_nll(args)
    record = json.loads((tmp_path / "nll.json").read_text())
    assert record["num_images"] == 3 and len(record["timesteps"]) == 5 and len(record["mean_terms_bpd"]) == 5
    assert math.isfinite(record["total_bpd"]) and record["total_bpd"] > 0 and record["total_bpd_stderr"] >= 0
    assert os.path.getsize(tmp_path / "terms.png") > 1000
    assert "bits/dim" in capsys.readouterr().out


def test_the_bound_is_part_of_the_public_api():
    import ddpm_hf
    from ddpm_hf.diffusion import likelihood

    assert ddpm_hf.variational_bound is likelihood.variational_bound
    assert ddpm_hf.VariationalBound is likelihood.VariationalBound


def test_x0_clipping_is_the_bounds_own_choice_not_the_schedulers(unet_factory):
    """clip_denoised=True by default (improved-diffusion's convention), whatever the scheduler's clip_sample says."""
    unet = unet_factory(in_channels=1, sample_size=8)
    x_0 = torch.cat([random_image((1, 1, 8, 8), seed=s) for s in range(2)]).float()

    def bound(clip_sample, **kwargs):
        scheduler = DDPMPosteriorScheduler(num_train_timesteps=T, clip_sample=clip_sample)
        return variational_bound(unet, scheduler, x_0, generator=torch.Generator().manual_seed(0), batch_size=64,
                                 show_progress=False, **kwargs).terms_bpd

    clipped, unclipped = bound(True, clip_denoised=True), bound(False, clip_denoised=False)
    assert not torch.allclose(clipped, unclipped)  # an untrained model's x_0 estimate leaves [-1, 1]: clipping shows
    torch.testing.assert_close(bound(False), clipped, rtol=0, atol=0)  # default clips, the scheduler says no
    torch.testing.assert_close(bound(True), clipped, rtol=0, atol=0)
    torch.testing.assert_close(bound(True, clip_denoised=False), unclipped, rtol=0, atol=0)
