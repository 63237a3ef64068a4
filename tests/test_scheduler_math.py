"""The mathematics of DDPMPosteriorScheduler, checked against independent float64 numpy and by simulation.

Notation (diffusers' 0-based timesteps, t = 0 is the paper's t = 1):
    alpha_prod_t = prod_{s <= t} (1 - beta_s),  q(x_t | x_0) = N(sqrt(alpha_prod_t) x_0, 1 - alpha_prod_t)
    on a chain of visited timesteps, prev is the next visited timestep (alpha_prod_t_prev = 1 after the last one) and
    alpha_t = alpha_prod_t / alpha_prod_t_prev, beta_t = 1 - alpha_t,
    mu_q    = (sqrt(alpha_t)(1 - alpha_prod_t_prev) x_t + sqrt(alpha_prod_t_prev) beta_t x_0) / (1 - alpha_prod_t)
            = (x_t - beta_t / sqrt(1 - alpha_prod_t) eps) / sqrt(alpha_t)
    Sigma_q = beta_t (1 - alpha_prod_t_prev) / (1 - alpha_prod_t)

Every reference value below is computed here, in numpy float64, from these formulas; nothing is read back from the
scheduler's private tables. Statistical checks use fixed seeds and tolerances of 5 standard errors.
"""

import math

import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from ddpm_hf.scheduling_ddpm_posterior import DDPMPosteriorScheduler

try:
    from scipy import stats as scipy_stats
except ImportError:  # pragma: no cover - scipy ships with scikit-learn, a dependency
    scipy_stats = None

T = 1000
F64 = torch.float64
N_SIGMA = 5.0  # tolerance of every statistical check, in standard errors


# ----------------------------------------------------------------------------------------------------------------
# Independent float64 references
# ----------------------------------------------------------------------------------------------------------------
def np_betas(schedule, num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, trained_betas=None):
    """beta_t of each schedule, written from the papers (not from the scheduler's code)."""
    n = num_train_timesteps
    if trained_betas is not None:
        return np.asarray(trained_betas, dtype=np.float64)
    if schedule == "linear":  # Ho et al. 2020
        return np.linspace(beta_start, beta_end, n, dtype=np.float64)
    if schedule == "scaled_linear":  # latent diffusion: linear in sqrt(beta)
        return np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), n, dtype=np.float64) ** 2
    if schedule == "squaredcos_cap_v2":  # Nichol & Dhariwal 2021, eq. 17, s = 0.008, beta <= 0.999
        s = 0.008
        f = np.cos((np.arange(n + 1, dtype=np.float64) / n + s) / (1 + s) * np.pi / 2) ** 2
        alphas_cumprod = f / f[0]
        return np.minimum(1.0 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0.999)
    if schedule == "sigmoid":  # GeoDiff
        x = np.linspace(-6.0, 6.0, n, dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-x)) * (beta_end - beta_start) + beta_start
    raise AssertionError(schedule)


def np_alphas_cumprod(**kw):
    return np.cumprod(1.0 - np_betas(**kw))


def np_chain_tables(alphas_cumprod, chain):
    """Posterior coefficients on a chain of visited timesteps, float64 numpy, indexed like `chain`."""
    chain = np.asarray(chain, dtype=np.int64)
    a_t = alphas_cumprod[chain]
    a_prev = np.append(alphas_cumprod[chain[1:]], 1.0)
    alpha = a_t / a_prev
    beta = 1.0 - alpha
    var = beta * (1.0 - a_prev) / (1.0 - a_t)
    log_var = np.log(np.where(var > 0, var, 1.0))
    if len(chain) > 1:
        log_var[-1] = np.log(var[-2])  # Improved DDPM: the last step's log(0) replaced by the step before's
    return {
        "alpha_prod_t": a_t,
        "alpha_prod_t_prev": a_prev,
        "alpha": alpha,
        "beta": beta,
        "xt_coef": np.sqrt(alpha) * (1.0 - a_prev) / (1.0 - a_t),
        "x0_coef": np.sqrt(a_prev) * beta / (1.0 - a_t),
        "eps_coef": beta / np.sqrt(1.0 - a_t),
        "var": var,
        "log_var": log_var,
    }


# A few trained betas (any increasing sequence in (0, 1) will do).
TRAINED_BETAS = np.sort(np.random.default_rng(1234).uniform(1e-4, 0.05, T)).tolist()

# schedule id -> (scheduler kwargs, np_betas kwargs)
SCHEDULES = {
    "linear": ({"beta_schedule": "linear"}, {"schedule": "linear"}),
    "scaled_linear": (
        {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
        {"schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    ),
    "squaredcos_cap_v2": ({"beta_schedule": "squaredcos_cap_v2"}, {"schedule": "squaredcos_cap_v2"}),
    "sigmoid": (
        {"beta_schedule": "sigmoid", "beta_start": 1e-4, "beta_end": 0.03},
        {"schedule": "sigmoid", "beta_start": 1e-4, "beta_end": 0.03},
    ),
    "trained_betas": ({"trained_betas": TRAINED_BETAS}, {"schedule": None, "trained_betas": TRAINED_BETAS}),
}

# chain id -> (set_timesteps kwargs or None for the full chain, timestep_spacing, the expected chain)
CHAINS = {
    "full": (None, "leading", np.arange(T - 1, -1, -1)),
    "leading50": ({"num_inference_steps": 50}, "leading", np.arange(0, T, 20)[::-1]),
    "linspace50": ({"num_inference_steps": 50}, "linspace", np.round(np.linspace(0, T - 1, 50))[::-1].astype(int)),
    "trailing50": ({"num_inference_steps": 50}, "trailing", np.arange(T - 1, 0, -20)),
    "custom": ({"timesteps": [999, 900, 777, 500, 321, 100, 42, 5, 0]}, "leading", None),
    "custom_not0": ({"timesteps": [950, 700, 300, 60]}, "leading", None),
}
RESPACED = [c for c in CHAINS if c != "full"]


def make(schedule="linear", chain="full", **config):
    sched_kw, np_kw = SCHEDULES[schedule]
    set_kw, spacing, expected = CHAINS[chain]
    scheduler = DDPMPosteriorScheduler(**sched_kw, timestep_spacing=spacing, **config)
    if set_kw is not None:
        scheduler.set_timesteps(**set_kw)
    if expected is None:
        expected = np.asarray(set_kw["timesteps"])
    np.testing.assert_array_equal(scheduler.timesteps.numpy(), expected)
    return scheduler, np_alphas_cumprod(**np_kw), np.asarray(expected, dtype=np.int64)


def probe_indices(n):
    """Positions on a chain of length n worth checking: the first steps, the middle, the last two."""
    return sorted({0, 1, n // 3, n // 2, n - 2, n - 1} & set(range(n)))


def assert_close(actual, expected, rtol=1e-10, atol=1e-12):
    if torch.is_tensor(actual):
        actual = actual.detach().cpu().numpy()
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=rtol, atol=atol)


def check_normal(samples, mean, var, what=""):
    """samples (1-D float64 tensor) ~ N(mean, var): mean and variance within 5 standard errors, and a KS test."""
    x = samples.double().flatten()
    n = x.numel()
    m, v = x.mean().item(), x.var().item()
    se_mean = math.sqrt(var / n)
    se_var = var * math.sqrt(2.0 / (n - 1))
    assert abs(m - mean) <= N_SIGMA * se_mean, f"{what}: mean {m} vs {mean} (5 SE = {N_SIGMA * se_mean:.3g})"
    assert abs(v - var) <= N_SIGMA * se_var, f"{what}: variance {v} vs {var} (5 SE = {N_SIGMA * se_var:.3g})"
    z = ((x - mean) / math.sqrt(var)).numpy()
    if scipy_stats is not None:
        p = scipy_stats.kstest(z, "norm").pvalue
        assert p > 1e-6, f"{what}: KS test against N({mean}, {var}) rejects, p = {p:.3g}"
    else:  # a few quantiles, each within 5 standard errors of an order statistic
        for q, zq in ((0.05, -1.6448536), (0.25, -0.6744898), (0.5, 0.0), (0.75, 0.6744898), (0.95, 1.6448536)):
            density = math.exp(-zq * zq / 2) / math.sqrt(2 * math.pi)
            se = math.sqrt(q * (1 - q) / n) / density
            assert abs(np.quantile(z, q) - zq) <= N_SIGMA * se, f"{what}: quantile {q}"


# ----------------------------------------------------------------------------------------------------------------
# Beta schedules
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_schedule_tables_match_numpy(schedule):
    scheduler, alphas_cumprod, _ = make(schedule)
    betas = np_betas(**SCHEDULES[schedule][1])
    assert np.all((betas > 0) & (betas < 1))
    # The public tables are float32 (as in diffusers): equal to float64 numpy up to float32 rounding.
    assert scheduler.betas.dtype == torch.float32 and scheduler.alphas_cumprod.dtype == torch.float32
    np.testing.assert_allclose(scheduler.betas.double().numpy(), betas, rtol=1e-6, atol=0)
    # alphas = 1 - betas in float32, as diffusers computes it: float32 cancellation where beta is near 1
    np.testing.assert_allclose(scheduler.alphas.double().numpy(), 1.0 - betas, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(scheduler.alphas_cumprod.double().numpy(), alphas_cumprod, rtol=1e-6, atol=0)
    # The scheduler computes in float64: q(x_t | x_0) in closed form exposes sqrt(alpha_prod_t), sqrt(1 - alpha_prod_t).
    t = torch.arange(T)
    ones, zeros = torch.ones(T, dtype=F64), torch.zeros(T, dtype=F64)
    assert_close(scheduler.add_noise(ones, zeros, t), np.sqrt(alphas_cumprod), rtol=1e-12)
    assert_close(scheduler.add_noise(zeros, ones, t), np.sqrt(1.0 - alphas_cumprod), rtol=1e-12)


def test_cosine_schedule_caps_beta():
    betas = np_betas("squaredcos_cap_v2")
    assert betas[-1] == 0.999  # the cap binds at the end of the cosine schedule
    scheduler = DDPMPosteriorScheduler(beta_schedule="squaredcos_cap_v2")
    assert abs(scheduler.betas[-1].item() - 0.999) < 1e-6
    assert scheduler.betas.max().item() <= 0.999 + 1e-7


def test_rescale_zero_terminal_snr():
    """Lin et al. 2023: sqrt(alphas_cumprod) shifted and scaled so that alpha_prod_{T-1} = 0, alpha_prod_0 kept."""
    scheduler = DDPMPosteriorScheduler(rescale_betas_zero_snr=True)
    s = np.sqrt(np_alphas_cumprod(schedule="linear"))
    expected = ((s - s[-1]) * s[0] / (s[0] - s[-1])) ** 2
    t = torch.arange(T)
    got = scheduler.add_noise(torch.ones(T, dtype=F64), torch.zeros(T, dtype=F64), t).numpy() ** 2
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-15)
    assert got[-1] == 0.0 and abs(got[0] - (1 - 1e-4)) < 1e-12


# ----------------------------------------------------------------------------------------------------------------
# The posterior q(x_{t-1} | x_t, x_0)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chain", list(CHAINS))
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_posterior_matches_numpy(schedule, chain):
    scheduler, alphas_cumprod, ts = make(schedule, chain)
    ref = np_chain_tables(alphas_cumprod, ts)
    idx = probe_indices(len(ts))
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(len(idx), 2, 3, generator=g, dtype=F64)
    x_0 = torch.randn(len(idx), 2, 3, generator=g, dtype=F64)
    xt_np, x0_np = x_t.numpy(), x_0.numpy()

    # One int timestep at a time (the step's path) ...
    for row, i in enumerate(idx):
        t = int(ts[i])
        mean = ref["xt_coef"][i] * xt_np[row] + ref["x0_coef"][i] * x0_np[row]
        assert_close(scheduler.posterior_mean(x_t[row], x_0[row], t), mean)
        assert_close(scheduler.posterior_variance(t), ref["var"][i])
        assert_close(scheduler.posterior_log_variance(t), ref["log_var"][i])
        # a 0-dim tensor timestep is the same as an int
        assert_close(scheduler.posterior_variance(torch.tensor(t)), ref["var"][i])

    # ... and a batch of per-sample timesteps (the training path).
    t_batch = torch.as_tensor(ts[idx])
    mean = ref["xt_coef"][idx, None, None] * xt_np + ref["x0_coef"][idx, None, None] * x0_np
    assert_close(scheduler.posterior_mean(x_t, x_0, t_batch), mean)
    var = scheduler.posterior_variance(t_batch, like=x_t)
    assert var.dtype == F64 and var.shape == (len(idx), 1, 1)
    assert_close(var.flatten(), ref["var"][idx])
    assert_close(scheduler.posterior_log_variance(t_batch, like=x_t).flatten(), ref["log_var"][idx])


@pytest.mark.parametrize("chain", list(CHAINS))
def test_posterior_log_variance_clipped_at_last_step(chain):
    """Improved DDPM: Sigma_q = 0 at the chain's last step; its log is the previous visited step's log variance."""
    scheduler, alphas_cumprod, ts = make("linear", chain)
    last, before = int(ts[-1]), int(ts[-2])
    assert scheduler.posterior_variance(last) == 0.0
    assert scheduler.posterior_variance(before) > 0.0
    log_before = math.log(scheduler.posterior_variance(before))
    assert log_before == pytest.approx(math.log(np_chain_tables(alphas_cumprod, ts)["var"][-2]), abs=1e-10)
    assert scheduler.posterior_log_variance(last) == pytest.approx(log_before, abs=1e-12)
    assert scheduler.posterior_log_variance(before) == pytest.approx(log_before, abs=1e-12)


@pytest.mark.parametrize("chain", list(CHAINS))
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_posterior_mean_equals_the_noise_form(schedule, chain):
    """mu_q(x_t, x_0) == (x_t - beta_t / sqrt(1 - alpha_prod_t) eps) / sqrt(alpha_t) (Ho et al. 2020, eq. 11) when
    x_t = add_noise(x_0, eps, t)."""
    scheduler, alphas_cumprod, ts = make(schedule, chain)
    ref = np_chain_tables(alphas_cumprod, ts)
    idx = probe_indices(len(ts))
    g = torch.Generator().manual_seed(1)
    x_0 = torch.randn(len(idx), 3, 4, generator=g, dtype=F64)
    eps = torch.randn(len(idx), 3, 4, generator=g, dtype=F64)
    t_batch = torch.as_tensor(ts[idx])
    x_t = scheduler.add_noise(x_0, eps, t_batch)
    from_x0 = scheduler.posterior_mean(x_t, x_0, t_batch)
    expected = (x_t.numpy() - ref["eps_coef"][idx, None, None] * eps.numpy()) / np.sqrt(ref["alpha"][idx, None, None])
    assert_close(from_x0, expected, rtol=1e-9, atol=1e-10)
    for row, i in enumerate(idx):  # int timesteps
        assert_close(scheduler.posterior_mean(x_t[row], x_0[row], int(ts[i])), expected[row], rtol=1e-9, atol=1e-10)


# ----------------------------------------------------------------------------------------------------------------
# Forward process: add_noise, get_velocity, predict_original_sample
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_add_noise_matches_numpy(schedule):
    scheduler, alphas_cumprod, _ = make(schedule)
    g = torch.Generator().manual_seed(2)
    ts = torch.tensor([0, 1, 2, 17, 250, 500, 998, 999])
    x_0 = torch.randn(len(ts), 3, 4, 4, generator=g, dtype=F64)
    eps = torch.randn(len(ts), 3, 4, 4, generator=g, dtype=F64)
    a = alphas_cumprod[ts.numpy()][:, None, None, None]
    expected = np.sqrt(a) * x_0.numpy() + np.sqrt(1.0 - a) * eps.numpy()
    assert_close(scheduler.add_noise(x_0, eps, ts), expected)
    mean, log_variance = scheduler.forward_mean_log_variance(x_0, ts)  # q(x_t | x_0)'s parameters
    assert_close(mean, np.sqrt(a) * x_0.numpy())
    assert_close(log_variance, np.log(1.0 - a))
    for row, t in enumerate(ts.tolist()):  # one timestep for the whole batch
        assert_close(scheduler.add_noise(x_0[row], eps[row], t), expected[row])
        assert scheduler.forward_mean_log_variance(x_0[row], t)[1] == pytest.approx(math.log(1 - a[row, 0, 0, 0]))
    # the forward process does not depend on the sampling chain
    scheduler.set_timesteps(10)
    assert_close(scheduler.add_noise(x_0, eps, ts), expected)


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_snr_matches_numpy(schedule):
    scheduler, alphas_cumprod, _ = make(schedule)
    ts = torch.tensor([0, 1, 17, 500, 999])
    expected = alphas_cumprod[ts.numpy()] / (1.0 - alphas_cumprod[ts.numpy()])
    assert_close(scheduler.snr(ts, like=torch.empty(len(ts), dtype=F64)), expected)
    without_like = scheduler.snr(ts)  # a flat float64 tensor on the timesteps' device
    assert without_like.dtype == F64 and without_like.shape == ts.shape and without_like.device == ts.device
    assert_close(without_like, expected)
    assert scheduler.snr(17) == pytest.approx(expected[2], rel=1e-12)
    scheduler.set_timesteps(10)  # a property of q(x_t | x_0): the sampling chain does not change it
    assert_close(scheduler.snr(ts, like=torch.empty(len(ts), dtype=F64)), expected)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
def test_predict_original_sample_round_trip(schedule, prediction_type):
    """Build the model target from known x_0 and eps, feed it as the model output, recover x_0."""
    scheduler, alphas_cumprod, _ = make(schedule, prediction_type=prediction_type, clip_sample=False)
    g = torch.Generator().manual_seed(3)
    ts = torch.tensor([0, 1, 10, 300, 700, 999])
    x_0 = torch.randn(len(ts), 2, 4, 4, generator=g, dtype=F64)
    eps = torch.randn(len(ts), 2, 4, 4, generator=g, dtype=F64)
    x_t = scheduler.add_noise(x_0, eps, ts)
    target = {"epsilon": eps, "sample": x_0, "v_prediction": scheduler.get_velocity(x_0, eps, ts)}[prediction_type]
    # v against numpy: v = sqrt(alphas_cumprod) eps - sqrt(1 - alphas_cumprod) x_0
    a = alphas_cumprod[ts.numpy()][:, None, None, None]
    v = np.sqrt(a) * eps.numpy() - np.sqrt(1.0 - a) * x_0.numpy()
    assert_close(scheduler.get_velocity(x_0, eps, ts), v)
    tol = dict(rtol=1e-9, atol=1e-9)  # x_0 from eps divides by sqrt(alpha_prod_999) ~ 6e-3
    assert_close(scheduler.predict_original_sample(target, ts, x_t), x_0.numpy(), **tol)
    for row, t in enumerate(ts.tolist()):
        assert_close(scheduler.predict_original_sample(target[row], t, x_t[row]), x_0[row].numpy(), **tol)
        # the step reports the same estimate
        out = scheduler.step(target[row : row + 1], t, x_t[row : row + 1], generator=torch.Generator().manual_seed(0))
        assert_close(out.pred_original_sample[0], x_0[row].numpy(), **tol)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_predict_original_sample_off_chain_after_set_timesteps(prediction_type):
    """x_0 = (x_t - sqrt(1 - alpha_prod_t) eps) / sqrt(alpha_prod_t) does not depend on the sampling chain, like
    add_noise and get_velocity. After set_timesteps (a pipeline sharing the training scheduler calls it), predicting
    x_0 at a timestep the 10-step chain does not visit must still work (training-time x_0 / SNR losses use it)."""
    scheduler = DDPMPosteriorScheduler(prediction_type=prediction_type)
    scheduler.set_timesteps(10)  # visits 900, 800, ..., 0
    g = torch.Generator().manual_seed(4)
    ts = torch.tensor([5, 123, 999])  # not on the chain
    x_0 = torch.randn(3, 2, 4, 4, generator=g, dtype=F64)
    eps = torch.randn(3, 2, 4, 4, generator=g, dtype=F64)
    x_t = scheduler.add_noise(x_0, eps, ts)
    target = eps if prediction_type == "epsilon" else scheduler.get_velocity(x_0, eps, ts)
    got = scheduler.predict_original_sample(target, ts, x_t)
    n_bad = int((~torch.isfinite(got)).sum())
    assert n_bad == 0, f"predict_original_sample gives {n_bad}/{got.numel()} non-finite values off the sampling chain"
    assert_close(got, x_0.numpy(), rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------------------------------------------
# Ho et al. 2020's derivations (eq. 4, 7, 11), by simulation
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "schedule_kw",
    [
        {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.2},
        {"beta_schedule": "squaredcos_cap_v2"},
    ],
    ids=["linear", "squaredcos_cap_v2"],
)
def test_closed_form_by_iterating_forward_steps(schedule_kw):
    """q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t) applied t times is q(x_t | x_0) = N(sqrt(alpha_prod_t) x_0,
    1 - alpha_prod_t). T = 100 keeps the simulation fast; beta_end = 0.2 drives the linear chain close to pure noise."""
    n_train = 100
    scheduler = DDPMPosteriorScheduler(num_train_timesteps=n_train, **schedule_kw)
    np_kw = {k: v for k, v in schedule_kw.items() if k != "beta_schedule"}
    betas = np_betas(schedule_kw["beta_schedule"], num_train_timesteps=n_train, **np_kw)
    n, x0 = 200_000, 1.3
    checkpoints = {1, 2, 10, 50, 100}  # the paper's t (diffusers' t - 1)
    g = torch.Generator().manual_seed(5)
    x = torch.full((n,), x0, dtype=F64)
    one = torch.ones(1, dtype=F64)
    for paper_t in range(1, n_train + 1):
        beta = betas[paper_t - 1]
        x.mul_(math.sqrt(1.0 - beta)).add_(torch.randn(n, generator=g, dtype=F64), alpha=math.sqrt(beta))
        if paper_t in checkpoints:
            t = paper_t - 1
            mean = scheduler.add_noise(x0 * one, 0 * one, t).item()  # sqrt(alpha_prod_t) x_0
            var = scheduler.add_noise(0 * one, one, t).item() ** 2  # 1 - alpha_prod_t
            check_normal(x, mean, var, what=f"t={paper_t}")


BAYES_CASES = [
    ("full", [999, 500, 100, 10, 1]),
    ("leading50", [980, 500, 100, 20]),
    ("trailing50", [999, 499, 39]),
    ("custom", [999, 777, 100, 42, 5]),
]


@pytest.mark.parametrize("chain,timesteps", BAYES_CASES, ids=[c for c, _ in BAYES_CASES])
@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
def test_bayes_consistency(schedule, chain, timesteps):
    """x_t ~ q(x_t | x_0) followed by x_prev ~ q(x_prev | x_t, x_0) is distributed as q(x_prev | x_0) =
    N(sqrt(alpha_prod_t_prev) x_0, 1 - alpha_prod_t_prev), prev the previous visited timestep."""
    scheduler, alphas_cumprod, ts = make(schedule, chain)
    n, x0 = 100_000, -0.8
    g = torch.Generator().manual_seed(6)
    x_0 = torch.full((n,), x0, dtype=F64)
    for t in timesteps:
        prev = scheduler.previous_timestep(t)
        i = int(np.flatnonzero(ts == t)[0])
        assert prev == (int(ts[i + 1]) if i + 1 < len(ts) else -1)
        x_t = scheduler.add_noise(x_0, torch.randn(n, generator=g, dtype=F64), t)
        std = math.sqrt(scheduler.posterior_variance(t))
        x_prev = scheduler.posterior_mean(x_t, x_0, t) + std * torch.randn(n, generator=g, dtype=F64)
        a_prev = alphas_cumprod[prev]
        check_normal(x_prev, math.sqrt(a_prev) * x0, 1.0 - a_prev, what=f"{chain} t={t} -> {prev}")


def test_bayes_consistency_at_last_step_is_x0():
    """At the chain's last step alpha_prod_t_prev = 1: the posterior is the point mass at x_0."""
    for chain in ("full", "trailing50", "custom_not0"):
        scheduler, _, ts = make("linear", chain)
        t = int(ts[-1])
        x_0 = torch.randn(1000, generator=torch.Generator().manual_seed(7), dtype=F64)
        x_t = scheduler.add_noise(x_0, torch.randn(1000, generator=torch.Generator().manual_seed(8), dtype=F64), t)
        assert scheduler.posterior_variance(t) == 0.0
        assert_close(scheduler.posterior_mean(x_t, x_0, t), x_0.numpy(), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# The reverse step
# ----------------------------------------------------------------------------------------------------------------
STEP_CASES = [("full", [999, 50, 1]), ("leading50", [980, 20]), ("custom", [900, 5])]
SHAPE = (25, 4, 32, 32)  # 102,400 draws per step


def _step_residual_variance(variance_type, chain, t, predicted_v=None):
    scheduler, alphas_cumprod, ts = make(
        "linear", chain, prediction_type="sample", clip_sample=False, variance_type=variance_type
    )
    g = torch.Generator().manual_seed(100 + t)
    x_0 = torch.randn(SHAPE, generator=g, dtype=F64)
    x_t = scheduler.add_noise(x_0, torch.randn(SHAPE, generator=g, dtype=F64), t)
    model_output = x_0  # a perfect x_0 predictor
    if predicted_v is not None:
        model_output = torch.cat([x_0, torch.full(SHAPE, predicted_v, dtype=F64)], dim=1)
    out = scheduler.step(model_output, t, x_t, generator=torch.Generator().manual_seed(200 + t))
    residual = out.prev_sample - scheduler.posterior_mean(x_t, x_0, t)
    ref = np_chain_tables(alphas_cumprod, ts)
    return residual, ref, int(np.flatnonzero(ts == t)[0])


@pytest.mark.parametrize("chain,timesteps", STEP_CASES, ids=[c for c, _ in STEP_CASES])
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_small_log", "fixed_large", "learned_range"])
def test_step_sampling_statistics(variance_type, chain, timesteps):
    """prev_sample ~ N(mu_q(x_t, x_0), sigma_t^2) with sigma_t^2 by variance_type."""
    v = 0.3
    for t in timesteps:
        residual, ref, i = _step_residual_variance(
            variance_type, chain, t, predicted_v=v if variance_type == "learned_range" else None
        )
        if variance_type in ("fixed_small", "fixed_small_log"):
            var = ref["var"][i]  # Sigma_q
        elif variance_type == "fixed_large":
            var = ref["beta"][i]  # beta_t (1 - alpha_prod_t / alpha_prod_t_prev on a respaced chain)
        else:
            frac = (v + 1) / 2
            var = math.exp(frac * math.log(ref["beta"][i]) + (1 - frac) * math.log(ref["var"][i]))
        check_normal(residual, 0.0, var, what=f"{variance_type} {chain} t={t}")


@pytest.mark.parametrize("chain", ["full", "leading50", "linspace50", "trailing50", "custom", "custom_not0"])
@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
def test_epsilon_step_mean_is_seed_noise_form(schedule, chain):
    """epsilon prediction, no clipping: prev = (x_t - beta_t / sqrt(1 - alpha_prod_t) eps) / sqrt(alpha_t) + sigma z,
    with z reproduced from the same generator seed, in float64 numpy."""
    scheduler, alphas_cumprod, ts = make(schedule, chain, prediction_type="epsilon", clip_sample=False,
                                         thresholding=False)
    ref = np_chain_tables(alphas_cumprod, ts)
    shape = (2, 3, 5, 5)
    for i in probe_indices(len(ts)):
        t = int(ts[i])
        g = torch.Generator().manual_seed(300 + i)
        x_t = torch.randn(shape, generator=g, dtype=F64)
        eps = torch.randn(shape, generator=g, dtype=F64)
        out = scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(400 + i))
        mean = (x_t.numpy() - ref["eps_coef"][i] * eps.numpy()) / np.sqrt(ref["alpha"][i])
        if i == len(ts) - 1:
            expected = mean  # no noise on the last step
        else:
            z = randn_tensor(shape, generator=torch.Generator().manual_seed(400 + i), dtype=F64)
            expected = mean + np.sqrt(ref["var"][i]) * z.numpy()
        assert_close(out.prev_sample, expected, rtol=1e-10, atol=1e-10)
        x0 = (x_t.numpy() - np.sqrt(1 - ref["alpha_prod_t"][i]) * eps.numpy()) / np.sqrt(ref["alpha_prod_t"][i])
        assert_close(out.pred_original_sample, x0, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("chain", ["full", "trailing50", "custom", "custom_not0"])
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_no_noise_on_last_step(prediction_type, variance_type, chain):
    """Algorithm 2 of Ho et al.: z = 0 at the chain's last step, whatever that timestep is."""
    scheduler, alphas_cumprod, ts = make("linear", chain, prediction_type=prediction_type, variance_type=variance_type)
    t = int(ts[-1])
    g = torch.Generator().manual_seed(9)
    x_t = torch.randn(2, 3, 4, 4, generator=g, dtype=F64)
    model_output = torch.randn(2, 6 if variance_type == "learned_range" else 3, 4, 4, generator=g, dtype=F64)
    outs = [
        scheduler.step(model_output, t, x_t, generator=gen).prev_sample
        for gen in (torch.Generator().manual_seed(0), torch.Generator().manual_seed(1), None)
    ]
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    torch.testing.assert_close(outs[0], outs[2], rtol=0, atol=0)
    # and it is the posterior mean at the (clipped) x_0 estimate, i.e. that estimate itself (alpha_prod_t_prev = 1)
    out = scheduler.step(model_output, t, x_t)
    assert_close(out.prev_sample, out.pred_original_sample.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_train,n", [(1000, 61), (1000, 103), (100, 29), (1000, 50)])
def test_set_timesteps_trailing_yields_a_valid_chain(n_train, n):
    """set_timesteps(n) must give n strictly descending timesteps in [0, T) (or refuse with a ValueError), and the
    posterior queries must agree with the chain at every visited timestep.

    For some n, trailing spacing (np.arange with a float step, as in diffusers) yields n + 1 values, the last one -1;
    (1000, 50) is a control that passes.
    """
    scheduler = DDPMPosteriorScheduler(num_train_timesteps=n_train, timestep_spacing="trailing")
    try:
        scheduler.set_timesteps(n)
    except ValueError:
        return  # refusing is acceptable
    ts = scheduler.timesteps.numpy()
    assert len(ts) == n, f"set_timesteps({n}) gave {len(ts)} timesteps, ending {ts[-3:].tolist()}"
    assert ts.min() >= 0 and ts.max() < n_train and np.all(np.diff(ts) < 0)
    ref = np_chain_tables(np_alphas_cumprod(schedule="linear", num_train_timesteps=n_train), ts)
    for i, t in enumerate(ts.tolist()):
        assert scheduler.previous_timestep(t) == (int(ts[i + 1]) if i + 1 < len(ts) else -1)
        assert_close(scheduler.posterior_variance(t), ref["var"][i])


CONSISTENCY_CHAINS = {
    "full": {},
    "leading50": {"num_inference_steps": 50},
    "trailing50": {"num_inference_steps": 50},
    "trailing61": {"num_inference_steps": 61},
    "custom": {"timesteps": [999, 900, 777, 500, 321, 100, 42, 5, 0]},
}


@pytest.mark.parametrize("chain", list(CONSISTENCY_CHAINS))
def test_step_agrees_with_posterior_queries(chain):
    """At every visited timestep t >= 0, step() (fixed_small, x_0 prediction) returns
    posterior_mean(x_t, x_0, t) + sqrt(posterior_variance(t)) z, z the generator's draw (none on the last step)."""
    scheduler = DDPMPosteriorScheduler(
        timestep_spacing="trailing" if chain.startswith("trailing") else "leading",
        prediction_type="sample",
        clip_sample=False,
    )
    if CONSISTENCY_CHAINS[chain]:
        try:
            scheduler.set_timesteps(**CONSISTENCY_CHAINS[chain])
        except ValueError:
            return  # a chain the scheduler refuses to build cannot be inconsistent
    ts = [t for t in scheduler.timesteps.tolist() if t >= 0]
    if chain == "full":
        ts = ts[:3] + ts[500:502] + ts[-3:]
    shape = (1, 2, 3, 3)
    for t in ts:
        g = torch.Generator().manual_seed(t)
        x_t = torch.randn(shape, generator=g, dtype=F64)
        x_0 = torch.randn(shape, generator=g, dtype=F64)
        out = scheduler.step(x_0, t, x_t, generator=torch.Generator().manual_seed(10_000 + t))
        z = randn_tensor(shape, generator=torch.Generator().manual_seed(10_000 + t), dtype=F64)
        if scheduler.previous_timestep(t) < 0:
            z = torch.zeros_like(z)
        expected = scheduler.posterior_mean(x_t, x_0, t) + math.sqrt(scheduler.posterior_variance(t)) * z
        torch.testing.assert_close(out.prev_sample, expected, rtol=1e-12, atol=1e-12, msg=lambda m, t=t: f"t={t}: {m}")


# ----------------------------------------------------------------------------------------------------------------
# fixed_large's decoder variance, as the reference implementations define it
# ----------------------------------------------------------------------------------------------------------------
def np_improved_diffusion_fixed_large_log_variance(alphas_cumprod, chain):
    """improved-diffusion's FIXED_LARGE log variance, log np.append(posterior_variance[1], betas[1:]), in float64
    numpy, for the timesteps of `chain`, returned in the chain's (descending) order.

    On the training chain this is Ho et al.'s diffusion_utils_2.py "fixedlarge" too: beta_t everywhere but t = 0,
    where it is the posterior variance at t = 1. On a respaced chain improved-diffusion first respaces the betas
    (SpacedDiffusion: beta'_i = 1 - alpha_prod_{t_i} / alpha_prod_{t_{i-1}} over the kept timesteps in ascending
    order, alpha_prod = 1 before the first), then builds that table, so the decoder's variance is the posterior
    variance of the respaced chain's second-smallest visited timestep, the step just before the last one sampled.
    """
    kept = sorted(int(t) for t in chain)
    betas, last = [], 1.0
    for t in kept:
        betas.append(1.0 - alphas_cumprod[t] / last)
        last = alphas_cumprod[t]
    betas = np.asarray(betas)
    alphas_cumprod = np.cumprod(1.0 - betas)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    return np.log(np.append(posterior_variance[1], betas[1:]))[::-1]


@pytest.mark.parametrize("chain", list(CHAINS))
@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
def test_fixed_large_log_variance_is_the_references(schedule, chain):
    scheduler, alphas_cumprod, ts = make(schedule, chain, variance_type="fixed_large")
    expected = np_improved_diffusion_fixed_large_log_variance(alphas_cumprod, ts)
    # beta_t (respaced) at every step but the last, the decoder's
    np.testing.assert_allclose(expected[:-1], np.log(np_chain_tables(alphas_cumprod, ts)["beta"][:-1]), rtol=1e-10)
    like = torch.zeros(len(ts), 1, dtype=F64)
    assert_close(scheduler.model_log_variance(None, torch.tensor(ts.tolist()), like).flatten(), expected)
    for i in probe_indices(len(ts)):
        assert scheduler.model_log_variance(None, int(ts[i]), like) == pytest.approx(expected[i], rel=1e-10)
    # learned_range keeps log beta_t as its upper end at the last step (Improved DDPM's max_log = log betas)
    learned, _, _ = make(schedule, chain, variance_type="learned_range")
    v = torch.ones(1, 1, dtype=F64)  # v = 1: all of the upper end
    last = int(ts[-1])
    expected_upper = np.log(np_chain_tables(alphas_cumprod, ts)["beta"][-1])
    assert_close(learned.model_log_variance(v, last, v), expected_upper, rtol=1e-10)


def test_fixed_large_decoder_variance_does_not_change_sampling():
    """The last step adds no noise, so the decoder's variance does not reach the samples; a one-step chain, which has
    no step before its last, keeps log beta_t."""
    scheduler = DDPMPosteriorScheduler(variance_type="fixed_large", clip_sample=False)
    g = torch.Generator().manual_seed(11)
    x_t, eps = torch.randn(2, 3, 4, 4, generator=g, dtype=F64), torch.randn(2, 3, 4, 4, generator=g, dtype=F64)
    out = scheduler.step(eps, 0, x_t, generator=torch.Generator().manual_seed(0)).prev_sample
    betas = np_betas("linear")
    assert_close(out, ((x_t - betas[0] / math.sqrt(betas[0]) * eps) / math.sqrt(1 - betas[0])).numpy())
    scheduler.set_timesteps(timesteps=[500])
    alphas_cumprod = np_alphas_cumprod(schedule="linear")
    assert scheduler.model_log_variance(None, 500, x_t) == pytest.approx(math.log(1 - alphas_cumprod[500]), rel=1e-12)
