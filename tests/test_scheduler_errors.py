"""Every bad configuration or call raises a ValueError whose message names the problem and the fix."""

import re

import numpy as np
import pytest
import torch

from ddpm_hf.scheduling_ddpm_posterior import DDPMPosteriorScheduler

T = 1000


def raises_naming(fn, *words):
    """fn() raises ValueError and its message contains every word (case-insensitive)."""
    with pytest.raises(ValueError) as info:
        fn()
    message = str(info.value)
    for word in words:
        assert re.search(re.escape(word), message, flags=re.IGNORECASE), f"{word!r} not in message: {message}"
    return message


# ----------------------------------------------------------------------------------------------------------------
# Construction
# ----------------------------------------------------------------------------------------------------------------
BAD_BETAS = {
    "beta_end_1.5": {"beta_end": 1.5},
    "beta_start_0": {"beta_start": 0.0},
    "beta_start_negative": {"beta_start": -0.01},
    "scaled_linear_beta_end_2": {"beta_schedule": "scaled_linear", "beta_end": 2.0},
    "sigmoid_beta_end_1.2": {"beta_schedule": "sigmoid", "beta_end": 1.2},
    "trained_with_0": {"num_train_timesteps": 4, "trained_betas": [0.0, 0.1, 0.2, 0.3]},
    "trained_negative": {"num_train_timesteps": 4, "trained_betas": [0.1, -0.1, 0.2, 0.3]},
    "trained_1": {"num_train_timesteps": 4, "trained_betas": [0.1, 0.2, 0.3, 1.0]},
    "trained_above_1": {"num_train_timesteps": 4, "trained_betas": [0.1, 0.2, 1.5, 0.3]},
    "trained_nan": {"num_train_timesteps": 4, "trained_betas": [0.1, float("nan"), 0.2, 0.3]},
}


@pytest.mark.parametrize("kwargs", list(BAD_BETAS.values()), ids=list(BAD_BETAS))
def test_betas_outside_unit_interval(kwargs):
    message = raises_naming(
        lambda: DDPMPosteriorScheduler(**kwargs), "beta", "(0, 1)", "beta_start/beta_end", "trained_betas"
    )
    assert re.search(r"beta\[\d+\]", message), "the message points at the offending index"


def test_trained_beta_index_is_reported():
    message = raises_naming(
        lambda: DDPMPosteriorScheduler(num_train_timesteps=4, trained_betas=[0.1, 0.2, 1.5, 0.3]), "beta[2]", "1.5"
    )
    assert "(0, 1)" in message


@pytest.mark.parametrize(
    "key,value,choices",
    [
        ("beta_schedule", "cosine", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"]),
        ("variance_type", "fixed", ["fixed_small", "fixed_large", "learned_range"]),
        ("prediction_type", "x0", ["epsilon", "sample", "v_prediction"]),
        ("timestep_spacing", "uniform", ["leading", "linspace", "trailing"]),
    ],
    ids=["beta_schedule", "variance_type", "prediction_type", "timestep_spacing"],
)
def test_unknown_choice(key, value, choices):
    raises_naming(lambda: DDPMPosteriorScheduler(**{key: value}), key, repr(value), "choose", *choices)


@pytest.mark.parametrize("length", [999, 1001])
def test_trained_betas_length_mismatch(length):
    betas = np.linspace(1e-4, 0.02, length).tolist()
    raises_naming(
        lambda: DDPMPosteriorScheduler(trained_betas=betas), "trained_betas", "num_train_timesteps=1000", f"({length},)"
    )


def test_trained_betas_not_flat():
    raises_naming(
        lambda: DDPMPosteriorScheduler(num_train_timesteps=4, trained_betas=[[0.1, 0.2], [0.3, 0.4]]),
        "trained_betas", "flat",
    )


@pytest.mark.parametrize("n", [0, -5])
def test_num_train_timesteps_not_positive(n):
    raises_naming(lambda: DDPMPosteriorScheduler(num_train_timesteps=n), "num_train_timesteps", "positive integer")


# ----------------------------------------------------------------------------------------------------------------
# set_timesteps
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [T + 1, 5000, 0, -1])
def test_num_inference_steps_out_of_range(n):
    scheduler = DDPMPosteriorScheduler()
    raises_naming(
        lambda: scheduler.set_timesteps(n), f"num_inference_steps={n}", "between 1 and", "num_train_timesteps=1000"
    )


def test_num_inference_steps_missing():
    raises_naming(lambda: DDPMPosteriorScheduler().set_timesteps(), "num_inference_steps", "timesteps")


@pytest.mark.parametrize(
    "timesteps",
    [[10, 20, 0], [999, 500, 500, 0], [0, 1, 2], [999, 1000 - 1]],
    ids=["ascending_pair", "repeated", "ascending", "repeated_end"],
)
def test_custom_timesteps_not_strictly_descending(timesteps):
    raises_naming(lambda: DDPMPosteriorScheduler().set_timesteps(timesteps=timesteps), "strictly descending", "repeats")


@pytest.mark.parametrize("timesteps", [[1000, 500, 0], [5000, 1], [500, 10, -1]], ids=["T", "far_above", "negative"])
def test_custom_timesteps_out_of_range(timesteps):
    scheduler = DDPMPosteriorScheduler()
    raises_naming(lambda: scheduler.set_timesteps(timesteps=timesteps), "[0, 999]", "num_train_timesteps=1000")


def test_custom_timesteps_empty():
    raises_naming(lambda: DDPMPosteriorScheduler().set_timesteps(timesteps=[]), "timesteps", "non-empty")


def test_both_num_inference_steps_and_timesteps():
    raises_naming(
        lambda: DDPMPosteriorScheduler().set_timesteps(num_inference_steps=3, timesteps=[900, 500, 0]),
        "either", "num_inference_steps", "timesteps", "not both",
    )


def test_steps_offset_past_last_timestep():
    scheduler = DDPMPosteriorScheduler(timestep_spacing="leading", steps_offset=1)
    raises_naming(lambda: scheduler.set_timesteps(T), "steps_offset=1", "T-1=999", "lower it")


def test_failed_set_timesteps_keeps_the_previous_chain():
    scheduler = DDPMPosteriorScheduler()
    scheduler.set_timesteps(10)
    before = scheduler.timesteps.clone()
    with pytest.raises(ValueError):
        scheduler.set_timesteps(timesteps=[5, 10])
    assert torch.equal(scheduler.timesteps, before)
    assert scheduler.previous_timestep(900) == 800


# ----------------------------------------------------------------------------------------------------------------
# step and the posterior queries
# ----------------------------------------------------------------------------------------------------------------
def test_learned_range_without_variance_channels():
    scheduler = DDPMPosteriorScheduler(variance_type="learned_range")
    sample = torch.zeros(2, 3, 4, 4)
    raises_naming(
        lambda: scheduler.step(torch.zeros(2, 3, 4, 4), 999, sample),
        "learned_range", "2 x 3 channels", "got 3", "out_channels=6", "fixed_small",
    )


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_small_log", "fixed_large"])
def test_variance_channels_without_learned_range(variance_type):
    scheduler = DDPMPosteriorScheduler(variance_type=variance_type)
    sample = torch.zeros(2, 3, 4, 4)
    raises_naming(
        lambda: scheduler.step(torch.zeros(2, 6, 4, 4), 999, sample), "6 channels", "sample has 3", "learned_range"
    )


def test_learned_range_with_wrong_channel_count():
    scheduler = DDPMPosteriorScheduler(variance_type="learned_range")
    sample = torch.zeros(1, 3, 4, 4)
    raises_naming(lambda: scheduler.step(torch.zeros(1, 5, 4, 4), 999, sample), "learned_range", "got 5")


@pytest.mark.parametrize(
    "set_kw,t",
    [
        ({"num_inference_steps": 50}, 5),
        ({"num_inference_steps": 50}, 999),  # leading spacing visits 980, ..., 0
        ({"timesteps": [900, 500, 0]}, 501),
        (None, 1000),  # past the end of the full chain
        (None, -1),
    ],
    ids=["leading50-t5", "leading50-t999", "custom-t501", "full-t1000", "full-t-1"],
)
def test_step_at_timestep_not_on_chain(set_kw, t):
    scheduler = DDPMPosteriorScheduler()
    if set_kw is not None:
        scheduler.set_timesteps(**set_kw)
    x = torch.zeros(1, 3, 4, 4)
    raises_naming(
        lambda: scheduler.step(x, t, x), f"Timestep {t}", "not on this scheduler's chain", "scheduler.timesteps"
    )
    raises_naming(lambda: scheduler.step(x, torch.tensor(t), x), "not on this scheduler's chain")


def test_posterior_queries_at_timestep_not_on_chain():
    """The int path of the posterior queries raises the same explanatory error as `step`."""
    scheduler = DDPMPosteriorScheduler()
    scheduler.set_timesteps(50)
    x = torch.zeros(2, 3, dtype=torch.float64)
    for fn in (
        lambda: scheduler.posterior_variance(7),
        lambda: scheduler.posterior_log_variance(7),
        lambda: scheduler.posterior_mean(x, x, 7),
        lambda: scheduler.previous_timestep(7),
    ):
        raises_naming(fn, "Timestep 7", "not on this scheduler's chain", "set_timesteps")


def test_posterior_queries_at_tensor_timesteps_not_on_chain():
    """A batch of timesteps with some off the chain raises, naming them, instead of reading NaN for those rows."""
    scheduler = DDPMPosteriorScheduler()
    scheduler.set_timesteps(50)  # leading spacing: 980, 960, ..., 0
    x = torch.zeros(4, 3, dtype=torch.float64)
    bad = torch.tensor([7, 20, 7, 1000])
    for fn in (
        lambda: scheduler.posterior_variance(bad, like=x),
        lambda: scheduler.posterior_log_variance(bad, like=x),
        lambda: scheduler.posterior_mean(x, x, bad),
        lambda: scheduler.model_log_variance(None, bad, x),
    ):
        raises_naming(fn, "Timesteps [7, 1000]", "not on this scheduler's chain", "scheduler.timesteps")
    raises_naming(lambda: scheduler.posterior_variance(torch.tensor([20, -1]), like=x[:2]), "Timestep -1 is",
                  "not on this scheduler's chain")
    on_chain = scheduler.timesteps[[0, 10, -2, -1]]
    variance = scheduler.posterior_variance(on_chain, like=x)
    assert variance.shape == (4, 1) and torch.isfinite(variance).all() and variance[-1] == 0
    assert torch.isfinite(scheduler.posterior_mean(x, x, on_chain.tolist())).all()  # a list of timesteps too


@pytest.mark.parametrize("bad", [[-1], [5, 1000], [-3, 999, 4000]], ids=["negative", "T", "both"])
def test_forward_process_at_timesteps_outside_range(bad):
    """add_noise and get_velocity refuse t < 0 (which would wrap to t = T-1) and t >= T (an index error)."""
    scheduler = DDPMPosteriorScheduler()
    x = torch.ones(len(bad), 1, 2, 2)
    names = sorted({t for t in bad if not 0 <= t < T})
    shown = f"Timestep {names[0]} is" if len(names) == 1 else f"Timesteps [{', '.join(map(str, names))}] are"
    for timesteps in (torch.tensor(bad), bad, np.array(bad)):
        for fn in (scheduler.add_noise, scheduler.get_velocity):
            raises_naming(lambda fn=fn, t=timesteps: fn(x, x, t), shown, "outside [0, 999]", "torch.randint(0, 1000")
        raises_naming(lambda t=timesteps: scheduler.forward_mean_log_variance(x, t), shown, "outside [0, 999]")
    raises_naming(lambda: scheduler.predict_original_sample(x, torch.tensor(bad), x), "outside [0, 999]")


def test_forward_process_at_timesteps_in_range_and_on_a_respaced_chain():
    """Every t in [0, T) noises, whatever chain the scheduler is on (the forward process does not depend on it)."""
    scheduler = DDPMPosteriorScheduler()
    scheduler.set_timesteps(10)
    x, noise = torch.ones(3, 1, 2, 2), torch.zeros(3, 1, 2, 2)
    x_t = scheduler.add_noise(x, noise, torch.tensor([0, 7, 999]))
    expected = scheduler.alphas_cumprod[[0, 7, 999]].sqrt().reshape(-1, 1, 1, 1).expand_as(x)
    torch.testing.assert_close(x_t, expected)
    assert scheduler.add_noise(x[:0], noise[:0], torch.tensor([], dtype=torch.long)).shape == (0, 1, 2, 2)


@pytest.mark.parametrize("n", [2.5, 3.0, True, "10"], ids=["2.5", "3.0", "True", "str"])
def test_num_inference_steps_not_an_integer(n):
    raises_naming(lambda: DDPMPosteriorScheduler().set_timesteps(n), "num_inference_steps must be an integer",
                  repr(n), "whole number")


@pytest.mark.parametrize("n", [3, np.int64(3), np.int32(3)], ids=["int", "int64", "int32"])
def test_num_inference_steps_integer_types(n):
    scheduler = DDPMPosteriorScheduler()
    scheduler.set_timesteps(n)
    assert scheduler.timesteps.tolist() == [666, 333, 0] and scheduler.num_inference_steps == 3
    assert type(scheduler.num_inference_steps) is int
