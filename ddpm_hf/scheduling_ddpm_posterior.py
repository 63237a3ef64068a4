# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The DDPM reverse step, written as the posterior q(x_{t-1} | x_t, x_0).

This file is self-contained (it imports torch, numpy and diffusers only) because it is copied into every saved
pipeline folder, so that `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` works where
`ddpm_hf` is not installed.

Notation and equation numbers follow Ho et al. 2020, "Denoising Diffusion Probabilistic Models"
(arXiv:2006.11239), with diffusers' 0-based timesteps: diffusers' `t = 0` is the paper's t = 1, the first noising
step.

The paper's alpha-bar_t is spelled as diffusers spells it: `alphas_cumprod[t]`, `alpha_prod_t` in a formula, and
`alpha_prod_t_prev` for its alpha-bar_{t-1}.

    forward step  q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, (1 - alpha_t) I),  alpha_t = 1 - beta_t         (eq. 2)
    closed form   q(x_t | x_0) = N(sqrt(alpha_prod_t) x_0, (1 - alpha_prod_t) I),  alpha_prod_t = alpha_1 ... alpha_t
                                                                                                             (eq. 4)
    posterior     q(x_{t-1} | x_t, x_0) = N(mu_q, Sigma_q I) with                                           (eq. 7)
                  mu_q    = (sqrt(alpha_prod_t_prev) beta_t / (1 - alpha_prod_t)) x_0
                            + (sqrt(alpha_t) (1 - alpha_prod_t_prev) / (1 - alpha_prod_t)) x_t
                  Sigma_q = (1 - alpha_prod_t_prev) / (1 - alpha_prod_t) beta_t
    noise form    x_0  = (x_t - sqrt(1 - alpha_prod_t) eps) / sqrt(alpha_prod_t)                    (eq. 4, eq. 15)
                  mu_q = (x_t - beta_t / sqrt(1 - alpha_prod_t) eps) / sqrt(alpha_t)                        (eq. 11)
    sampling      x_{t-1} = mu + sigma_t z, z ~ N(0, I), and z = 0 at the last step               (Algorithm 2)

Respaced chains: after `set_timesteps`, the chain visits only `self.timesteps`. Its steps are still a DDPM chain whose
cumulative products are the original alphas_cumprod at the visited timesteps, so every "alpha_t" above means
alpha_prod_t / alpha_prod_t_prev, where prev is the next visited timestep (alpha_prod_t_prev = 1 after the last one).
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "learned_range")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SPACINGS = ("leading", "linspace", "trailing")


@dataclass
class DDPMPosteriorSchedulerOutput(BaseOutput):
    """
    Args:
        prev_sample (`torch.Tensor`): x_{t-1}, a draw from p_theta(x_{t-1} | x_t); the next model input.
        pred_original_sample (`torch.Tensor`): the model's estimate of x_0 (after clipping or thresholding).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


def _require_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}: choose one of {', '.join(map(repr, choices))}.")


def betas_for_schedule(
    beta_schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float
) -> np.ndarray:
    """The beta_t of a named schedule, in float64 (the same formulas as diffusers' DDPMScheduler)."""
    T = num_train_timesteps
    if beta_schedule == "linear":  # Ho et al. 2020: 1e-4 .. 0.02 over T = 1000
        return np.linspace(beta_start, beta_end, T, dtype=np.float64)
    if beta_schedule == "scaled_linear":  # latent diffusion: linear in sqrt(beta)
        return np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=np.float64) ** 2
    if beta_schedule == "squaredcos_cap_v2":  # Nichol & Dhariwal 2021, eq. 17, beta capped at 0.999

        def alpha_prod(s):  # alphas_cumprod at the continuous time s in [0, 1]
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array([min(1 - alpha_prod((i + 1) / T) / alpha_prod(i / T), 0.999) for i in range(T)])
    if beta_schedule == "sigmoid":  # GeoDiff
        return 1 / (1 + np.exp(-np.linspace(-6, 6, T))) * (beta_end - beta_start) + beta_start
    _require_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. 2023, Algorithm 1: shift and scale sqrt(alphas_cumprod) so that its last value is 0 (as diffusers)."""
    sqrt_alphas_cumprod = np.sqrt(np.cumprod(1 - betas))
    first, last = sqrt_alphas_cumprod[0], sqrt_alphas_cumprod[-1]
    sqrt_alphas_cumprod = (sqrt_alphas_cumprod - last) * first / (first - last)
    alphas_cumprod = sqrt_alphas_cumprod**2
    alphas = np.concatenate([alphas_cumprod[:1], alphas_cumprod[1:] / alphas_cumprod[:-1]])
    return 1 - alphas


class PosteriorCoefficients(NamedTuple):
    """q(x_{t-1} | x_t, x_0) = N(pred_original_sample_coeff x_0 + current_sample_coeff x_t, variance I), Ho et al.
    2020, eq. 7, with the step's alpha_t and beta_t (respaced: alpha_t = alpha_prod_t / alpha_prod_t_prev)."""

    pred_original_sample_coeff: float | np.ndarray
    current_sample_coeff: float | np.ndarray
    variance: float | np.ndarray  # Sigma_q (beta tilde)
    current_alpha_t: float | np.ndarray
    current_beta_t: float | np.ndarray


def posterior_coefficients(alpha_prod_t, alpha_prod_t_prev) -> PosteriorCoefficients:
    """The posterior of a step from the alphas_cumprod of its timestep and of the next visited one (1 after the last).

    The one home of eq. 7: `step` evaluates it on one step's floats, as diffusers' `DDPMScheduler.step` does (its
    numbered blocks, its local names), and `_set_chain` on the chain's float64 arrays, the tables behind the batched
    queries of the loss and the bound. The operations are the same in both; `** 0.5` is numpy's sqrt on an array
    and libm's pow on a float (they differ in the last bit of ~1 value in 1000), and sampling keeps the float one.
    """
    beta_prod_t = 1 - alpha_prod_t
    beta_prod_t_prev = 1 - alpha_prod_t_prev
    current_alpha_t = alpha_prod_t / alpha_prod_t_prev
    current_beta_t = 1 - current_alpha_t
    return PosteriorCoefficients(
        pred_original_sample_coeff=alpha_prod_t_prev**0.5 * current_beta_t / beta_prod_t,
        current_sample_coeff=current_alpha_t**0.5 * beta_prod_t_prev / beta_prod_t,
        variance=beta_prod_t_prev / beta_prod_t * current_beta_t,
        current_alpha_t=current_alpha_t,
        current_beta_t=current_beta_t,
    )


class DDPMPosteriorScheduler(SchedulerMixin, ConfigMixin):
    """
    Ancestral DDPM sampling whose reverse step is the Gaussian posterior q(x_{t-1} | x_t, x_0) with x_0 replaced by
    the model's estimate. A drop-in for `diffusers.DDPMScheduler`: the same config keys and defaults, and the same
    step noise for the same generator.

    Args:
        num_train_timesteps (`int`, defaults to 1000): T, the length of the forward process.
        beta_start (`float`, defaults to 1e-4), beta_end (`float`, defaults to 0.02): ends of the beta schedule.
        beta_schedule (`str`, defaults to `"linear"`): `linear`, `scaled_linear`, `squaredcos_cap_v2` (cosine) or
            `sigmoid`.
        trained_betas (`list[float]`, *optional*): explicit betas, each in (0, 1); overrides the schedule.
        variance_type (`str`, defaults to `"fixed_small"`): the reverse-step variance. `fixed_small` is Sigma_q
            (`fixed_small_log` is the same distribution, kept for diffusers configs), `fixed_large` is beta_t (Ho et
            al. 2020, section 3.2, with their decoder's variance at the last step: see `model_log_variance`), and
            `learned_range` reads a second set of C channels v from the model and uses
            exp(frac log beta_t + (1 - frac) log Sigma_q) with frac = (v + 1) / 2 (Improved DDPM, eq. 15).
        clip_sample (`bool`, defaults to True), clip_sample_range (`float`, defaults to 1.0): clip x_0's estimate.
        prediction_type (`str`, defaults to `"epsilon"`): what the model predicts: `epsilon` (the noise, Ho et al.
            2020's choice, eq. 11), `sample` (x_0) or `v_prediction` (v = sqrt(alpha_prod_t) eps - sqrt(1 -
            alpha_prod_t) x_0).
        thresholding (`bool`, defaults to False), dynamic_thresholding_ratio (`float`, 0.995), sample_max_value
            (`float`, 1.0): Imagen's dynamic thresholding of x_0's estimate (pixel-space models only).
        timestep_spacing (`str`, defaults to `"leading"`), steps_offset (`int`, defaults to 0): how `set_timesteps`
            picks the visited timesteps, exactly as in diffusers.
        rescale_betas_zero_snr (`bool`, defaults to False): rescale betas to a zero terminal SNR (use with
            `v_prediction`).
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        variance_type: str = "fixed_small",
        clip_sample: bool = True,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ):
        _require_choice("variance_type", variance_type, VARIANCE_TYPES)
        _require_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        _require_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        if not isinstance(num_train_timesteps, int) or num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be a positive integer, got {num_train_timesteps!r}.")

        if trained_betas is not None:
            betas = np.asarray(trained_betas, dtype=np.float64)
            if betas.ndim != 1 or len(betas) != num_train_timesteps:
                raise ValueError(
                    f"trained_betas must be a flat list of num_train_timesteps={num_train_timesteps} numbers, got shape"
                    f" {betas.shape}: pass num_train_timesteps=len(trained_betas)."
                )
        else:
            _require_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
            betas = betas_for_schedule(beta_schedule, num_train_timesteps, beta_start, beta_end)
        if rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        # The last beta may reach 1 only when a zero terminal SNR was asked for.
        upper_ok = betas <= 1 if rescale_betas_zero_snr else betas < 1
        if not (np.all(betas > 0) and np.all(upper_ok)):
            bad = int(np.flatnonzero(~((betas > 0) & upper_ok))[0])
            raise ValueError(
                f"Every beta_t must lie in (0, 1), but beta[{bad}] = {betas[bad]!r}: choose beta_start/beta_end or"
                " trained_betas inside that interval."
            )

        # The forward process does not depend on the sampling chain: its float64 tables are fixed at construction and
        # valid at every timestep 0..T-1 (named as improved-diffusion names them). The float32 copies below are
        # diffusers' public attributes.
        alphas_cumprod = np.cumprod(1.0 - betas)
        with np.errstate(divide="ignore"):  # the last alphas_cumprod is 0 under a zero terminal SNR
            self._forward_tables = {
                "alphas_cumprod": alphas_cumprod,
                "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
                "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
                "log_one_minus_alphas_cumprod": np.log(1.0 - alphas_cumprod),
                # x_0 = (x_t - sqrt(1 - alpha_prod_t) eps) / sqrt(alpha_prod_t), multiplied out as improved-diffusion
                "sqrt_recip_alphas_cumprod": 1.0 / np.sqrt(alphas_cumprod),
                "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1.0),
                "snr": alphas_cumprod / (1.0 - alphas_cumprod),
            }
        self.betas = torch.tensor(betas, dtype=torch.float32)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.tensor(alphas_cumprod, dtype=torch.float32)
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.custom_timesteps = False
        self._set_chain(np.arange(num_train_timesteps - 1, -1, -1, dtype=np.int64), device=None)

    # ------------------------------------------------------------------------------------------------------------
    # The chain of visited timesteps and its per-timestep tables
    # ------------------------------------------------------------------------------------------------------------
    def _set_chain(self, timesteps: np.ndarray, device) -> None:
        """Precompute, once per chain, the float64 tables the posterior queries read, each named after its formula.

        The queries take a batch of timesteps in training's hot path, where the coefficients are gathered from these
        tables rather than computed from alphas_cumprod in the batch's (float32) precision.
        """
        T = self.config.num_train_timesteps
        alphas_cumprod = self._forward_tables["alphas_cumprod"]
        prev = np.append(timesteps[1:], -1)
        alpha_prod_t_prev = np.where(prev >= 0, alphas_cumprod[np.maximum(prev, 0)], 1.0)
        posterior = posterior_coefficients(alphas_cumprod[timesteps], alpha_prod_t_prev)
        current_beta_t, posterior_variance = posterior.current_beta_t, posterior.variance  # respaced beta_t, Sigma_q
        # Sigma_q = 0 at the last step, so its log is clipped to the step before's value, as Improved DDPM (Nichol &
        # Dhariwal 2021) does; only the likelihood and learned_range read the log there.
        clipped = posterior_variance.copy()
        if len(clipped) > 1:
            clipped[-1] = clipped[-2]
        # fixed_large is beta_t, except on the last step, the decoder p(x_0 | x_1): there both reference
        # implementations take the posterior variance of the step before (Ho et al.'s diffusion_utils_2.py, "for
        # fixedlarge, we set the initial (log-)variance like so to get a better decoder log likelihood", and
        # improved-diffusion's FIXED_LARGE, np.append(posterior_variance[1], betas[1:])). improved-diffusion respaces
        # the betas before it builds that table, so on a respaced chain the step before is the chain's second-to-last
        # visited timestep. A one-step chain has no step before and keeps beta_t. Sampling adds no noise on that step.
        fixed_large = current_beta_t.copy()
        if len(fixed_large) > 1:
            fixed_large[-1] = posterior_variance[-2]
        tables = {
            "prev_timestep": prev.astype(np.float64),  # exact below 2**53; NaN marks the timesteps off the chain
            "pred_original_sample_coeff": posterior.pred_original_sample_coeff,
            "current_sample_coeff": posterior.current_sample_coeff,
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": np.log(np.maximum(clipped, 1e-20)),
            "log_beta": np.log(current_beta_t),
            "fixed_large_log_variance": np.log(fixed_large),
        }
        # Index every table by timestep (0..T-1); the timesteps the chain does not visit hold NaN, so misuse is loud.
        self._chain_tables: dict[str, np.ndarray] = {}
        for name, values in tables.items():
            full = np.full(T, np.nan)
            full[timesteps] = values
            self._chain_tables[name] = full
        self._tensor_cache = {}
        self._full_chain = len(timesteps) == T  # strictly descending in [0, T): every timestep is on the chain
        self.timesteps = torch.from_numpy(timesteps.copy()).to(device)

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """
        Choose the visited timesteps (run before inference), exactly as `DDPMScheduler.set_timesteps` does. The
        posterior of every later step uses the respaced betas 1 - alpha_prod_t / alpha_prod_t_prev, so a 50-step chain
        is a proper 50-step DDPM chain.

        Args:
            num_inference_steps (`int`, *optional*): how many steps, spaced by `config.timestep_spacing`.
            device (`str` or `torch.device`, *optional*): where `self.timesteps` lives.
            timesteps (`list[int]`, *optional*): strictly descending custom timesteps in [0, T); excludes
                `num_inference_steps`.
        """
        T = self.config.num_train_timesteps
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError("Pass either num_inference_steps or timesteps, not both.")
        if timesteps is not None:
            chain = np.asarray(list(timesteps), dtype=np.int64)
            if chain.ndim != 1 or len(chain) == 0:
                raise ValueError("timesteps must be a non-empty list of integers.")
            if np.any(np.diff(chain) >= 0):
                raise ValueError(f"Custom timesteps must be strictly descending, got {chain.tolist()}: sort them from"
                                 " high to low and drop repeats.")
            if chain[0] >= T or chain[-1] < 0:
                raise ValueError(f"Custom timesteps must lie in [0, {T - 1}] (num_train_timesteps={T}), got"
                                 f" {chain[0]}..{chain[-1]}.")
            self.custom_timesteps = True
            self.num_inference_steps = len(chain)
        else:
            if num_inference_steps is None:
                raise ValueError("Pass num_inference_steps (or custom timesteps).")
            # A float would be spaced as round(T / n) apart and silently give another count (2.5 -> 3 steps); a bool
            # is an int to Python but never a step count.
            if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)):
                raise ValueError(
                    f"num_inference_steps must be an integer, got {num_inference_steps!r}: pass a whole number of"
                    f" steps between 1 and {T}."
                )
            num_inference_steps = int(num_inference_steps)
            if not 1 <= num_inference_steps <= T:
                raise ValueError(
                    f"num_inference_steps={num_inference_steps} must be between 1 and num_train_timesteps={T}: the"
                    f" model was trained on {T} timesteps and cannot take more."
                )
            self.custom_timesteps = False
            self.num_inference_steps = num_inference_steps
            spacing = self.config.timestep_spacing
            if spacing == "linspace":
                chain = np.linspace(0, T - 1, num_inference_steps).round()[::-1].astype(np.int64)
            elif spacing == "leading":
                ratio = T // num_inference_steps
                chain = (np.arange(0, num_inference_steps) * ratio).round()[::-1].astype(np.int64)
                chain = chain + self.config.steps_offset
            else:  # trailing; a float step can overshoot to a spurious -1 (e.g. 61 steps of 1000): keep n
                chain = np.round(np.arange(T, 0, -T / num_inference_steps)).astype(np.int64) - 1
                chain = chain[:num_inference_steps]
            if chain[0] >= T or chain[-1] < 0 or np.any(np.diff(chain) >= 0):
                raise ValueError(
                    f"steps_offset={self.config.steps_offset} pushes timesteps past T-1={T - 1}: lower it."
                )
        self._set_chain(np.ascontiguousarray(chain), device)

    def previous_timestep(self, timestep: int | torch.Tensor) -> int | torch.Tensor:
        """The next visited timestep after `timestep` (-1 after the last one): an int for an int, a tensor for a
        tensor (as `DDPMScheduler.previous_timestep` returns)."""
        prev = int(self._table("prev_timestep", int(timestep)))
        if torch.is_tensor(timestep):
            return torch.tensor(prev, dtype=torch.int64, device=timestep.device)
        return prev

    def _table(self, name: str, timesteps, like: torch.Tensor | None = None) -> float | torch.Tensor:
        """Table `name` at `timesteps`: a float for one timestep; else a tensor in `like`'s dtype, on its device and
        shaped to broadcast against it (without `like`: a flat float64 tensor on the timesteps' device).

        A timestep outside [0, T) (which indexing would wrap: -1 reads t = T-1), or off the chain for a chain table
        (which holds NaN there), raises an explanatory error. The tensor path runs in training's hot path, once per
        micro-batch, so it must not add a host sync: timesteps on the CPU are checked there before they move (they
        are host memory already, no sync), CUDA timesteps with `torch._assert_async` (queued on the stream, no sync;
        a failure is a device-side assert, as an index past the table's end already is), and timesteps on other
        devices (mps, xpu, ...) are not checked, because `_assert_async` is not implemented on all of them.
        """
        chain_table = self._chain_tables.get(name)
        table = self._forward_tables[name] if chain_table is None else chain_table
        if isinstance(timesteps, (int, np.integer)) or (torch.is_tensor(timesteps) and timesteps.ndim == 0):
            t = int(timesteps)
            value = float(table[t]) if 0 <= t < len(table) else math.nan
            if math.isnan(value):
                raise self._timestep_error([t], on_chain=chain_table is not None)
            return value
        index = torch.as_tensor(timesteps).long().flatten()  # a tensor keeps its device; a list lands on the CPU
        device, dtype, ndim = (index.device, torch.float64, 1) if like is None else (like.device, like.dtype, like.ndim)
        key = (name, device, dtype)
        if key not in self._tensor_cache:
            self._tensor_cache[key] = torch.from_numpy(table).to(device=device, dtype=dtype)
        if index.device.type == "cpu":
            t = index.numpy()
            T = len(table)
            # One reduction checks both ends: as uint64, a negative timestep is above 2**63. Every timestep of a full
            # chain is on it, so only a respaced chain's tables need the NaN check.
            off_chain = chain_table is not None and not self._full_chain
            if t.size and (t.view(np.uint64).max() >= T or (off_chain and np.isnan(table[t]).any())):
                in_range = (t >= 0) & (t < T)
                bad = ~in_range
                bad[in_range] = np.isnan(table[t[in_range]])
                raise self._timestep_error(np.unique(t[bad]).tolist(), on_chain=chain_table is not None)
        index = index.to(device)
        values = self._tensor_cache[key][index]
        if index.device.type == "cuda":
            T = len(table)
            valid = ((index >= 0) & (index < T)).all()
            message = f"a timestep is outside [0, {T - 1}]"
            if chain_table is not None and not self._full_chain:
                valid = valid & ~torch.isnan(values).any()
                message = "a timestep is not on the scheduler's chain: use scheduler.timesteps"
            torch._assert_async(valid, message)
        return values.reshape(-1, *([1] * (ndim - 1)))

    def _timestep_error(self, timesteps: list[int], on_chain: bool) -> ValueError:
        """The error for the distinct bad `timesteps` of a query (the first few are named)."""
        shown = ", ".join(map(str, timesteps[:8])) + (", ..." if len(timesteps) > 8 else "")
        subject = f"Timestep {shown} is" if len(timesteps) == 1 else f"Timesteps [{shown}] are"
        T = self.config.num_train_timesteps
        if not on_chain:
            return ValueError(
                f"{subject} outside [0, {T - 1}] (num_train_timesteps={T}): draw timesteps from that range, e.g."
                f" torch.randint(0, {T}, (batch_size,))."
            )
        return ValueError(
            f"{subject} not on this scheduler's chain (first visited {int(self.timesteps[0])}, last"
            f" {int(self.timesteps[-1])}): step through `scheduler.timesteps` after `set_timesteps`."
        )

    # ------------------------------------------------------------------------------------------------------------
    # The forward process and the posterior, as public formulas (one timestep, or one per sample)
    # ------------------------------------------------------------------------------------------------------------
    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps) -> torch.Tensor:
        """q(x_t | x_0) (Ho et al. 2020, eq. 4): x_t = sqrt(alpha_prod_t) x_0 + sqrt(1 - alpha_prod_t) eps."""
        sqrt_alpha_prod = self._table("sqrt_alphas_cumprod", timesteps, original_samples)
        sqrt_one_minus_alpha_prod = self._table("sqrt_one_minus_alphas_cumprod", timesteps, original_samples)
        return sqrt_alpha_prod * original_samples + sqrt_one_minus_alpha_prod * noise

    def forward_mean_log_variance(self, original_samples: torch.Tensor, timesteps):
        """(mean, log variance) of q(x_t | x_0) = N(sqrt(alpha_prod_t) x_0, (1 - alpha_prod_t) I) (Ho et al. 2020,
        eq. 4); the log variance is a float for one timestep. The bound's prior term compares it with N(0, I)."""
        sqrt_alpha_prod = self._table("sqrt_alphas_cumprod", timesteps, original_samples)
        log_variance = self._table("log_one_minus_alphas_cumprod", timesteps, original_samples)
        return sqrt_alpha_prod * original_samples, log_variance

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps) -> torch.Tensor:
        """The v-prediction target v = sqrt(alpha_prod_t) eps - sqrt(1 - alpha_prod_t) x_0 (Salimans & Ho 2022)."""
        sqrt_alpha_prod = self._table("sqrt_alphas_cumprod", timesteps, sample)
        sqrt_one_minus_alpha_prod = self._table("sqrt_one_minus_alphas_cumprod", timesteps, sample)
        return sqrt_alpha_prod * noise - sqrt_one_minus_alpha_prod * sample

    def snr(self, timesteps, like: torch.Tensor | None = None):
        """The signal-to-noise ratio of q(x_t | x_0), SNR(t) = alpha_prod_t / (1 - alpha_prod_t) (Kingma et al. 2021,
        eq. 2 with Ho et al. 2020's eq. 4): what Min-SNR-gamma loss weighting caps. Float64 without `like`."""
        return self._table("snr", timesteps, like)

    def posterior_mean(self, x_t: torch.Tensor, x_0: torch.Tensor, timesteps) -> torch.Tensor:
        """mu_q(x_t, x_0) = pred_original_sample_coeff x_0 + current_sample_coeff x_t (Ho et al. 2020, eq. 7; the
        coefficients are `posterior_coefficients`')."""
        pred_original_sample_coeff = self._table("pred_original_sample_coeff", timesteps, x_t)
        current_sample_coeff = self._table("current_sample_coeff", timesteps, x_t)
        return pred_original_sample_coeff * x_0 + current_sample_coeff * x_t

    def posterior_variance(self, timesteps, like: torch.Tensor | None = None):
        """Sigma_q = (1 - alpha_prod_t_prev) / (1 - alpha_prod_t) beta_t (Ho et al. 2020, eq. 7); 0 at the chain's
        last step. Float64 without `like`."""
        return self._table("posterior_variance", timesteps, like)

    def posterior_log_variance(self, timesteps, like: torch.Tensor | None = None):
        """log Sigma_q, with the last step's (log 0) replaced by the step before's, as Improved DDPM does. Float64
        without `like`."""
        return self._table("posterior_log_variance_clipped", timesteps, like)

    def predict_original_sample(self, model_output: torch.Tensor, timesteps, sample: torch.Tensor) -> torch.Tensor:
        """x_0's estimate from the model's prediction, by `prediction_type` (any timestep, on the chain or not):
        epsilon x_0 = (x_t - sqrt(1 - alpha_prod_t) eps) / sqrt(alpha_prod_t) (Ho et al. 2020, eq. 15), multiplied out
        as improved-diffusion does; v x_0 = sqrt(alpha_prod_t) x_t - sqrt(1 - alpha_prod_t) v (Salimans & Ho 2022);
        and `sample` is x_0 itself."""
        prediction_type = self.config.prediction_type
        if prediction_type == "sample":
            return model_output
        if prediction_type == "epsilon":
            sqrt_recip_alpha_prod = self._table("sqrt_recip_alphas_cumprod", timesteps, sample)
            sqrt_recipm1_alpha_prod = self._table("sqrt_recipm1_alphas_cumprod", timesteps, sample)
            return sqrt_recip_alpha_prod * sample - sqrt_recipm1_alpha_prod * model_output
        sqrt_alpha_prod = self._table("sqrt_alphas_cumprod", timesteps, sample)
        sqrt_one_minus_alpha_prod = self._table("sqrt_one_minus_alphas_cumprod", timesteps, sample)
        return sqrt_alpha_prod * sample - sqrt_one_minus_alpha_prod * model_output

    def model_log_variance(self, predicted_variance: torch.Tensor | None, timesteps, like: torch.Tensor):
        """log of p_theta's variance at `timesteps`, by `variance_type` (a float unless it is learned).

        fixed_small is log Sigma_q (clipped at the last step); fixed_large is log beta_t, but on the chain's last step
        (the decoder) the reference implementations' log Sigma_q of the step before (see `_set_chain`);
        learned_range interpolates log beta_t and the clipped log Sigma_q (Improved DDPM, eq. 15, v in [-1, 1]).
        """
        variance_type = self.config.variance_type
        if variance_type in ("fixed_small", "fixed_small_log"):
            return self._table("posterior_log_variance_clipped", timesteps, like)
        if variance_type == "fixed_large":
            return self._table("fixed_large_log_variance", timesteps, like)
        frac = (predicted_variance + 1) / 2
        max_log = self._table("log_beta", timesteps, like)
        min_log = self._table("posterior_log_variance_clipped", timesteps, like)
        return frac * max_log + (1 - frac) * min_log

    def _get_variance(
        self, t: int | torch.Tensor, predicted_variance: torch.Tensor | None = None,
        variance_type: str | None = None,
    ) -> torch.Tensor:
        """`DDPMScheduler._get_variance`, for code written against diffusers, from our float64 tables.

        As in diffusers: Sigma_q clamped at 1e-20 (`fixed_small`), its square root (`fixed_small_log`: a standard
        deviation, not a log), beta_t (`fixed_large`, with no decoder correction), log beta_t (`fixed_large_log`),
        the model's output (`learned`) or the interpolated log variance (`learned_range`); a 0-dim float64 tensor for
        the fixed types. `step` and `model_log_variance` do not use it.
        """
        prev_t = self.previous_timestep(int(t))
        alpha_prod_t = self._table("alphas_cumprod", int(t))
        alpha_prod_t_prev = self._table("alphas_cumprod", prev_t) if prev_t >= 0 else 1.0
        posterior = posterior_coefficients(alpha_prod_t, alpha_prod_t_prev)
        current_beta_t = posterior.current_beta_t
        variance = max(posterior.variance, 1e-20)  # diffusers' clamp

        variance_type = self.config.variance_type if variance_type is None else variance_type
        if variance_type == "learned":
            return predicted_variance
        if variance_type == "learned_range":
            frac = (predicted_variance + 1) / 2
            return frac * math.log(current_beta_t) + (1 - frac) * math.log(variance)
        value = {
            "fixed_small": variance,
            "fixed_small_log": math.sqrt(variance),
            "fixed_large": current_beta_t,
            "fixed_large_log": math.log(current_beta_t),
        }[variance_type]
        return torch.tensor(value, dtype=torch.float64)

    def split_model_output(self, model_output: torch.Tensor, sample: torch.Tensor):
        """(prediction, predicted variance or None): `learned_range` models output 2C channels, the rest C."""
        channels = sample.shape[1]
        if self.config.variance_type == "learned_range":
            if model_output.shape[1] != 2 * channels:
                raise ValueError(
                    f"variance_type='learned_range' needs a model output with 2 x {channels} channels (prediction, then"
                    f" variance), got {model_output.shape[1]}: build the UNet with out_channels={2 * channels}, or use"
                    " variance_type='fixed_small'."
                )
            return torch.split(model_output, channels, dim=1)
        if model_output.shape[1] != channels:
            raise ValueError(
                f"The model output has {model_output.shape[1]} channels but the sample has {channels}: a model that"
                " predicts its variance needs variance_type='learned_range'."
            )
        return model_output, None

    # ------------------------------------------------------------------------------------------------------------
    # The reverse step
    # ------------------------------------------------------------------------------------------------------------
    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """DDPM does not scale its input; present for interchangeability with other schedulers."""
        return sample

    def _threshold_sample(self, sample: torch.Tensor) -> torch.Tensor:
        """Imagen's dynamic thresholding: clamp x_0 to [-s, s] and divide by s, s a per-image quantile of |x_0|."""
        dtype = sample.dtype
        batch_size = sample.shape[0]
        flat = sample.reshape(batch_size, -1)
        if dtype not in (torch.float32, torch.float64):
            flat = flat.float()  # quantile needs a full float type
        s = torch.quantile(flat.abs(), self.config.dynamic_thresholding_ratio, dim=1)
        s = torch.clamp(s, min=1, max=self.config.sample_max_value).unsqueeze(1)
        return (torch.clamp(flat, -s, s) / s).reshape(sample.shape).to(dtype)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> DDPMPosteriorSchedulerOutput | tuple:
        """
        One ancestral step x_t -> x_{t-1} ~ p_theta(x_{t-1} | x_t) = N(mu_q(x_t, x_0_hat), sigma_t^2 I), Algorithm 2
        of Ho et al. 2020, laid out as `DDPMScheduler.step`.

        With `epsilon` prediction and no clipping the mean is the noise form of eq. 11,
        (x_t - beta_t / sqrt(1 - alpha_prod_t) eps) / sqrt(alpha_t); otherwise it is eq. 7's posterior mean at the
        (clipped or thresholded) x_0 estimate. The noise z is `randn_tensor`'s draw, as in diffusers (the same
        generator gives the same images), and there is none on the chain's last step (Algorithm 2: z = 0 there),
        whatever timestep that is.
        """
        config = self.config
        t = int(timestep)
        prev_t = self.previous_timestep(t)  # -1 after the chain's last step; raises for a timestep off the chain
        model_output, predicted_variance = self.split_model_output(model_output, sample)

        # 1. compute alphas, betas (float64 floats; on a respaced chain alpha_t = alpha_prod_t / alpha_prod_t_prev)
        alpha_prod_t = self._table("alphas_cumprod", t)
        alpha_prod_t_prev = self._table("alphas_cumprod", prev_t) if prev_t >= 0 else 1.0
        beta_prod_t = 1 - alpha_prod_t
        posterior = posterior_coefficients(alpha_prod_t, alpha_prod_t_prev)  # eq. 7
        current_alpha_t, current_beta_t = posterior.current_alpha_t, posterior.current_beta_t

        # 2. compute predicted original sample (x_0's estimate)
        if config.prediction_type == "epsilon":  # Ho et al. 2020, eq. 15 (eq. 4 solved for x_0)
            pred_original_sample = (sample - beta_prod_t**0.5 * model_output) / alpha_prod_t**0.5
        elif config.prediction_type == "sample":
            pred_original_sample = model_output
        else:  # v_prediction, v = sqrt(alpha_prod_t) eps - sqrt(1 - alpha_prod_t) x_0 (Salimans & Ho 2022)
            pred_original_sample = alpha_prod_t**0.5 * sample - beta_prod_t**0.5 * model_output

        # 3. clip or threshold x_0's estimate (out of place: with `sample` prediction it is the caller's tensor)
        clipped = config.thresholding or config.clip_sample
        if config.thresholding:
            pred_original_sample = self._threshold_sample(pred_original_sample)
        elif config.clip_sample:
            pred_original_sample = pred_original_sample.clamp(-config.clip_sample_range, config.clip_sample_range)

        # 4. compute the posterior mean mu_q
        if config.prediction_type == "epsilon" and not clipped:
            # Eq. 11, mu = (x_t - beta_t / sqrt(1 - alpha_prod_t) eps) / sqrt(alpha_t): the same mean as eq. 7 at
            # x_0's unclipped estimate, without the round trip through 1 / sqrt(alpha_prod_t) (~160 at t = 999 on the
            # linear schedule), which would amplify the rounding of a float32 batch.
            pred_prev_sample = (sample - current_beta_t / beta_prod_t**0.5 * model_output) / current_alpha_t**0.5
        else:  # eq. 7
            pred_prev_sample = (
                posterior.pred_original_sample_coeff * pred_original_sample + posterior.current_sample_coeff * sample
            )

        # 5. compute the variance, only where it is used: Algorithm 2 adds no noise on the chain's last step, the
        # decoder, whose mean is the output (with alpha_prod_t_prev = 1, mu_q is x_0's estimate).
        if prev_t >= 0:
            if config.variance_type == "learned_range":  # Improved DDPM, eq. 15
                std_dev_t = torch.exp(0.5 * self.model_log_variance(predicted_variance, t, sample))
            elif config.variance_type == "fixed_large":  # sigma_t^2 = beta_t (Ho et al. 2020, section 3.2)
                std_dev_t = current_beta_t**0.5
            else:  # fixed_small(_log): sigma_t^2 = Sigma_q (eq. 7)
                std_dev_t = posterior.variance**0.5

            # 6. x_{t-1} = mu + sigma z, z drawn exactly as diffusers draws it
            variance_noise = randn_tensor(
                model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
            )
            pred_prev_sample = pred_prev_sample + std_dev_t * variance_noise

        if not return_dict:
            return (pred_prev_sample, pred_original_sample)
        return DDPMPosteriorSchedulerOutput(prev_sample=pred_prev_sample, pred_original_sample=pred_original_sample)

    def __len__(self) -> int:
        return self.config.num_train_timesteps
