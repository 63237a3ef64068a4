"""DDPMPosteriorScheduler is a drop-in for diffusers.DDPMScheduler: same steps for the same generator, same config.

Known numerics: diffusers keeps alphas_cumprod in float32, so 1 - alpha_prod_t near t = 0 carries a relative error of up
to ~6e-4 there, while DDPMPosteriorScheduler computes every coefficient in float64. Step outputs are therefore compared
with |ours - theirs| <= 1e-3 (1 + |theirs|), and `test_ours_is_the_exact_one` shows which side is exact.

Known deliberate difference: ours adds no noise on the chain's last step even when that timestep is > 0 (trailing
spacing, custom timesteps not ending in 0), diffusers adds noise whenever t > 0. The equality grid therefore does not
compare that step for fixed_large / learned_range on such chains (with fixed_small diffusers' variance there is
1e-20, so it is compared); `test_last_step_noise_difference` documents it.
"""

import inspect

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from ddpm_hf.scheduling_ddpm_posterior import DDPMPosteriorScheduler

T = 1000
SHAPE = (2, 3, 8, 8)
N_FIRST, N_LAST = 12, 3  # steps compared: the chain's first 12 and its last 3

SCHEDULES = {
    "linear": {"beta_schedule": "linear"},
    "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    "squaredcos_cap_v2": {"beta_schedule": "squaredcos_cap_v2"},
    "sigmoid": {"beta_schedule": "sigmoid", "beta_start": 1e-4, "beta_end": 0.03},
}
CHAINS = {  # id -> (timestep_spacing, set_timesteps kwargs or None for the full chain)
    "full": ("leading", None),
    "leading50": ("leading", {"num_inference_steps": 50}),
    "linspace50": ("linspace", {"num_inference_steps": 50}),
    "trailing50": ("trailing", {"num_inference_steps": 50}),
    "custom": ("leading", {"timesteps": [999, 990, 950, 900, 850, 777, 700, 650, 600, 500, 420, 321, 250, 200,
                                         150, 100, 75, 50, 42, 30, 20, 10, 5, 2, 1, 0]}),
}
CLIP_MODES = {
    "noclip": {"clip_sample": False, "thresholding": False},
    "clip": {"clip_sample": True, "thresholding": False},
    "threshold": {"clip_sample": False, "thresholding": True, "sample_max_value": 1.5},
}
VARIANCE_TYPES = ["fixed_small", "fixed_large", "learned_range"]
PREDICTION_TYPES = ["epsilon", "sample", "v_prediction"]


def make_pair(config, chain):
    spacing, set_kw = CHAINS[chain]
    ours = DDPMPosteriorScheduler(timestep_spacing=spacing, **config)
    theirs = DDPMScheduler(timestep_spacing=spacing, **config)
    for s in (ours, theirs):
        if set_kw is not None:
            s.set_timesteps(**set_kw)
    assert torch.equal(ours.timesteps, theirs.timesteps)
    return ours, theirs


def model_outputs(n_steps, learned_range):
    """Random but fixed model outputs, one per step; learned_range gets C more channels of v in [-1, 1]."""
    outs = []
    for i in range(n_steps):
        g = torch.Generator().manual_seed(1000 + i)
        out = torch.randn(SHAPE, generator=g)
        if learned_range:
            out = torch.cat([out, torch.rand(SHAPE, generator=g) * 2 - 1], dim=1)
        outs.append(out)
    return outs


def compared_indices(n):
    return sorted(set(range(min(N_FIRST, n))) | set(range(max(0, n - N_LAST), n)))


def assert_rel_close(ours, theirs, what):
    diff = (ours - theirs).abs()
    bound = 1e-3 * (1 + theirs.abs())
    worst = (diff / bound).max().item()
    assert worst <= 1.0, f"{what}: |ours - diffusers| reaches {worst:.3g} x the tolerance 1e-3 (1 + |diffusers|)"


def run_both(ours, theirs, seed=0):
    """Feed each scheduler its own previous output over the compared steps; yield (t, ours_out, theirs_out)."""
    ts = ours.timesteps.tolist()
    idx = compared_indices(len(ts))
    outs = cached_model_outputs(len(idx), ours.config.variance_type == "learned_range")
    x_ours = torch.randn(SHAPE, generator=torch.Generator().manual_seed(123))
    x_theirs = x_ours.clone()
    g_ours, g_theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    for k, i in enumerate(idx):
        t = ts[i]
        a = ours.step(outs[k], t, x_ours, generator=g_ours)
        b = theirs.step(outs[k], t, x_theirs, generator=g_theirs)
        yield t, i == len(ts) - 1, a, b
        x_ours, x_theirs = a.prev_sample, b.prev_sample


def grid():
    """linear: every prediction type x clip mode; the other schedules: three of those nine per case, chosen so that
    each prediction type meets each clip mode once per schedule and chain (a Latin square rotated by variance type)."""
    combos = [(p, c) for p in PREDICTION_TYPES for c in CLIP_MODES]
    cases = []
    for schedule in SCHEDULES:
        for chain in CHAINS:
            for v, variance_type in enumerate(VARIANCE_TYPES):
                if schedule == "linear":
                    chosen = combos
                else:
                    clips = list(CLIP_MODES)
                    chosen = [(p, clips[(k + v) % 3]) for k, p in enumerate(PREDICTION_TYPES)]
                cases.append(
                    pytest.param(schedule, chain, variance_type, chosen, id=f"{schedule}-{chain}-{variance_type}")
                )
    return cases


_OUTPUTS = {}


def cached_model_outputs(n_steps, learned_range):
    key = (n_steps, learned_range)
    if key not in _OUTPUTS:
        _OUTPUTS[key] = model_outputs(n_steps, learned_range)
    return _OUTPUTS[key]


@pytest.mark.parametrize("schedule,chain,variance_type,combos", grid())
def test_step_parity(schedule, chain, variance_type, combos):
    """The chosen prediction type x clip mode combinations, for this schedule, chain and variance type."""
    for prediction_type, clip_mode in combos:
        config = dict(
            SCHEDULES[schedule], variance_type=variance_type, prediction_type=prediction_type, **CLIP_MODES[clip_mode]
        )
        ours, theirs = make_pair(config, chain)
        # On a chain ending at t > 0 diffusers adds noise on the last step and ours does not (deliberate).
        skip_last = int(ours.timesteps[-1]) > 0 and variance_type != "fixed_small"
        n_compared = 0
        for t, is_last, a, b in run_both(ours, theirs):
            if is_last and skip_last:
                continue
            what = f"{prediction_type}/{clip_mode} t={t}"
            assert_rel_close(a.pred_original_sample, b.pred_original_sample, what + " pred_original_sample")
            assert_rel_close(a.prev_sample, b.prev_sample, what + " prev_sample")
            n_compared += 1
        assert n_compared == len(compared_indices(len(ours.timesteps))) - skip_last


@pytest.mark.parametrize("variance_type", VARIANCE_TYPES)
@pytest.mark.parametrize("chain", ["leading50", "trailing50"])
def test_step_parity_zero_terminal_snr(chain, variance_type):
    """rescale_betas_zero_snr (alpha_prod_{T-1} = 0, beta_{T-1} = 1) with v_prediction, as Lin et al. recommend."""
    config = dict(rescale_betas_zero_snr=True, prediction_type="v_prediction", variance_type=variance_type,
                  clip_sample=False)
    ours, theirs = make_pair(config, chain)
    skip_last = int(ours.timesteps[-1]) > 0 and variance_type != "fixed_small"
    for t, is_last, a, b in run_both(ours, theirs):
        if not (is_last and skip_last):
            assert torch.isfinite(a.prev_sample).all()
            assert_rel_close(a.prev_sample, b.prev_sample, f"t={t}")


def test_ours_is_the_exact_one():
    """Our coefficients match float64 numpy to 1e-12; diffusers' float32 ones do not even to 1e-6 near t = 0."""
    betas = np.linspace(1e-4, 0.02, T, dtype=np.float64)
    alphas_cumprod = np.cumprod(1.0 - betas)
    ts = np.arange(0, 5)
    ours, theirs = DDPMPosteriorScheduler(), DDPMScheduler()

    def rel_err(got, exact):
        return float(np.max(np.abs(np.asarray(got, dtype=np.float64) - exact) / np.abs(exact)))

    # sqrt(1 - alpha_prod_t), as used by add_noise (float64 inputs)
    exact = np.sqrt(1.0 - alphas_cumprod[ts])
    zeros, ones = torch.zeros(len(ts), dtype=torch.float64), torch.ones(len(ts), dtype=torch.float64)
    tt = torch.tensor(ts)
    assert rel_err(ours.add_noise(zeros, ones, tt).numpy(), exact) < 1e-12
    assert rel_err(theirs.add_noise(zeros, ones, tt).numpy(), exact) > 1e-6

    # Sigma_q = beta_t (1 - alpha_prod_t_prev) / (1 - alpha_prod_t) for t = 1..4
    t1 = ts[1:]
    exact = betas[t1] * (1.0 - alphas_cumprod[t1 - 1]) / (1.0 - alphas_cumprod[t1])
    assert rel_err([ours.posterior_variance(int(t)) for t in t1], exact) < 1e-12
    assert rel_err([theirs._get_variance(int(t)).item() for t in t1], exact) > 1e-6


@pytest.mark.parametrize("variance_type", ["fixed_large", "learned_range", "fixed_small"])
@pytest.mark.parametrize("chain", ["trailing50", "custom_not0"])
def test_last_step_noise_difference(chain, variance_type):
    """On a chain whose last timestep is > 0, ours is deterministic on that step (Ho et al., Algorithm 2: z = 0 on
    the last step), diffusers adds noise with its (respaced) variance because t > 0."""
    if chain == "trailing50":
        spacing, set_kw = "trailing", {"num_inference_steps": 50}  # visits 999, 979, ..., 19
    else:
        spacing, set_kw = "leading", {"timesteps": [900, 500, 60]}
    config = dict(variance_type=variance_type, prediction_type="epsilon", clip_sample=False, timestep_spacing=spacing)
    ours, theirs = DDPMPosteriorScheduler(**config), DDPMScheduler(**config)
    ours.set_timesteps(**set_kw)
    theirs.set_timesteps(**set_kw)
    t = int(ours.timesteps[-1])
    assert t > 0 and t == int(theirs.timesteps[-1])
    g = torch.Generator().manual_seed(5)
    x_t = torch.randn(SHAPE, generator=g)
    out = torch.randn(SHAPE, generator=g)
    if variance_type == "learned_range":
        out = torch.cat([out, torch.rand(SHAPE, generator=g) * 2 - 1], dim=1)  # v in [-1, 1]

    ours_runs = [ours.step(out, t, x_t, generator=torch.Generator().manual_seed(s)).prev_sample for s in (0, 1)]
    theirs_runs = [theirs.step(out, t, x_t, generator=torch.Generator().manual_seed(s)).prev_sample for s in (0, 1)]
    assert torch.equal(ours_runs[0], ours_runs[1])  # ours: no noise at all
    spread = (theirs_runs[0] - theirs_runs[1]).abs().max().item()
    gap = (theirs_runs[0] - ours_runs[0]).abs().max().item()
    if variance_type == "fixed_small":
        # diffusers' Sigma_q there is clamped to 1e-20: noise of std 1e-10, negligible
        assert spread < 1e-8
        assert_rel_close(ours_runs[0], theirs_runs[0], "fixed_small last step")
    else:
        assert spread > 1e-2 and gap > 1e-2  # visibly random in diffusers
    # The means agree: diffusers' output minus its own noise is ours.
    noise_free = DDPMScheduler(**dict(config, variance_type="fixed_small"))
    noise_free.set_timesteps(**set_kw)
    assert_rel_close(ours_runs[0], noise_free.step(out[:, :3], t, x_t).prev_sample, "mean")


# ----------------------------------------------------------------------------------------------------------------
# Configuration interchange
# ----------------------------------------------------------------------------------------------------------------
def init_parameters(cls):
    params = inspect.signature(cls.__init__).parameters
    return {name: p.default for name, p in params.items() if name not in ("self", "kwargs")}


def test_same_init_keys_and_defaults():
    ours, theirs = init_parameters(DDPMPosteriorScheduler), init_parameters(DDPMScheduler)
    assert set(ours) == set(theirs)
    for name in theirs:
        assert ours[name] == theirs[name] and type(ours[name]) is type(theirs[name]), name
    # and the instantiated configs agree
    a, b = DDPMPosteriorScheduler().config, DDPMScheduler().config
    for name in theirs:
        assert a[name] == b[name], name


CONFIGS = {
    "defaults": {},
    "cosine_vpred_learned": {
        "num_train_timesteps": 500, "beta_schedule": "squaredcos_cap_v2", "variance_type": "learned_range",
        "prediction_type": "v_prediction", "clip_sample": False, "timestep_spacing": "trailing",
        "rescale_betas_zero_snr": True,
    },
    "scaled_threshold": {
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "thresholding": True,
        "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5, "clip_sample_range": 2.0,
        "timestep_spacing": "leading", "steps_offset": 1, "variance_type": "fixed_large", "prediction_type": "sample",
    },
    "trained_betas": {"num_train_timesteps": 10, "trained_betas": [0.01 * (i + 1) for i in range(10)],
                      "variance_type": "fixed_small_log"},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_interchange(name):
    kwargs = CONFIGS[name]
    keys = set(init_parameters(DDPMScheduler))
    theirs = DDPMScheduler(**kwargs)
    ours_from_theirs = DDPMPosteriorScheduler.from_config(theirs.config)
    theirs_from_ours = DDPMScheduler.from_config(DDPMPosteriorScheduler(**kwargs).config)
    for key in keys:
        assert ours_from_theirs.config[key] == theirs.config[key], key
        assert theirs_from_ours.config[key] == theirs.config[key], key
    for key, value in kwargs.items():
        assert ours_from_theirs.config[key] == value, key
    # the float32 public tables agree too
    torch.testing.assert_close(ours_from_theirs.alphas_cumprod, theirs.alphas_cumprod, rtol=1e-5, atol=1e-9)


# Values of num_inference_steps for which np.arange with a float step gives exactly n timesteps (see
# test_scheduler_math.py::test_set_timesteps_trailing_yields_a_valid_chain for those that do not, e.g. 61).
STEP_COUNTS = [1, 2, 3, 7, 10, 25, 50, 100, 250, 999, 1000]


@pytest.mark.parametrize(
    "spacing,steps_offset",
    [("leading", 0), ("leading", 1), ("linspace", 0), ("trailing", 0)],
    ids=["leading", "leading-offset1", "linspace", "trailing"],
)
def test_set_timesteps_identical(spacing, steps_offset):
    ours = DDPMPosteriorScheduler(timestep_spacing=spacing, steps_offset=steps_offset)
    theirs = DDPMScheduler(timestep_spacing=spacing, steps_offset=steps_offset)
    assert torch.equal(ours.timesteps, theirs.timesteps)  # the full chain before set_timesteps
    for n in STEP_COUNTS:
        theirs.set_timesteps(n)
        if steps_offset and int(theirs.timesteps[0]) >= T:
            with pytest.raises(ValueError, match="steps_offset"):  # diffusers would index past T - 1
                ours.set_timesteps(n)
            continue
        ours.set_timesteps(n)
        assert torch.equal(ours.timesteps, theirs.timesteps), n
        assert ours.timesteps.dtype == theirs.timesteps.dtype == torch.int64
        assert ours.num_inference_steps == theirs.num_inference_steps == n
    custom = [999, 500, 17, 3, 0]
    ours.set_timesteps(timesteps=custom)
    theirs.set_timesteps(timesteps=custom)
    assert torch.equal(ours.timesteps, theirs.timesteps)
    assert ours.custom_timesteps and theirs.custom_timesteps
    for t in custom:
        assert ours.previous_timestep(t) == int(theirs.previous_timestep(t))


# ----------------------------------------------------------------------------------------------------------------
# Drop-in helpers: previous_timestep and _get_variance
# ----------------------------------------------------------------------------------------------------------------
DROP_IN_CHAINS = {**CHAINS, "custom_not0": ("leading", {"timesteps": [950, 700, 300, 60]})}


@pytest.mark.parametrize("chain", list(DROP_IN_CHAINS))
def test_previous_timestep_types_match_diffusers(chain):
    """An int for an int, a tensor for a tensor (diffusers returns a tensor there; code calls `.item()` on it)."""
    spacing, set_kw = DROP_IN_CHAINS[chain]
    ours, theirs = DDPMPosteriorScheduler(timestep_spacing=spacing), DDPMScheduler(timestep_spacing=spacing)
    for s in (ours, theirs):
        if set_kw is not None:
            s.set_timesteps(**set_kw)
    for t in ours.timesteps:  # 0-dim int64 tensors, as a pipeline's loop over `scheduler.timesteps` gives them
        got, expected = ours.previous_timestep(t), theirs.previous_timestep(t)
        assert torch.is_tensor(got) and got.ndim == 0 and got.dtype == torch.int64
        assert got.item() == int(expected)
        got_int = ours.previous_timestep(int(t))
        assert type(got_int) is int and got_int == int(theirs.previous_timestep(int(t)))


DIFFUSERS_VARIANCE_TYPES = ["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned",
                            "learned_range"]


@pytest.mark.parametrize("variance_type", DIFFUSERS_VARIANCE_TYPES)
@pytest.mark.parametrize("chain", list(DROP_IN_CHAINS))
def test_get_variance_matches_diffusers(chain, variance_type):
    """_get_variance(t, predicted_variance, variance_type) is diffusers' at every visited timestep, for every variance
    type diffusers knows (including the two our config refuses, fixed_large_log and learned, which it takes only as an
    argument), and whatever the configured variance type. diffusers is given float64 cumulative products, so that its
    formulas run in float64 and the two agree to rounding (its own float32 ones are off by up to ~1e-3 near t = 0)."""
    spacing, set_kw = DROP_IN_CHAINS[chain]
    ours, theirs = DDPMPosteriorScheduler(timestep_spacing=spacing), DDPMScheduler(timestep_spacing=spacing)
    theirs_float32 = DDPMScheduler(timestep_spacing=spacing)
    for s in (ours, theirs, theirs_float32):
        if set_kw is not None:
            s.set_timesteps(**set_kw)
    theirs.alphas_cumprod = torch.from_numpy(np.cumprod(1.0 - np.linspace(1e-4, 0.02, T, dtype=np.float64)))
    theirs.one = torch.tensor(1.0, dtype=torch.float64)
    predicted_variance = torch.rand(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    timesteps = ours.timesteps.tolist()
    for t in timesteps[:N_FIRST] + timesteps[-N_LAST:]:
        got = ours._get_variance(t, predicted_variance=predicted_variance, variance_type=variance_type)
        expected = theirs._get_variance(t, predicted_variance=predicted_variance, variance_type=variance_type)
        assert torch.is_tensor(got) and got.shape == expected.shape, (t, variance_type)
        torch.testing.assert_close(got, expected.double(), rtol=1e-10, atol=0, msg=lambda m, t=t: f"t={t}: {m}")
        # and against diffusers as it is (float32), to its float32 rounding
        loose = theirs_float32._get_variance(t, predicted_variance=predicted_variance.float(),
                                             variance_type=variance_type)
        torch.testing.assert_close(got.float(), loose, rtol=2e-3, atol=1e-6, msg=lambda m, t=t: f"t={t}: {m}")
    # With no variance_type it reads the config's, as diffusers does.
    for configured in ("fixed_small", "fixed_large"):
        a = DDPMPosteriorScheduler(variance_type=configured)._get_variance(500)
        b = DDPMScheduler(variance_type=configured)._get_variance(500)
        assert a.item() == pytest.approx(b.item(), rel=1e-5)
