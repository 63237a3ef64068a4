# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The DDPM reverse step, written as the posterior q(x_{t-1} | x_t, x_0).

This file is self-contained (it imports torch, numpy and diffusers only) because it is copied into every saved
pipeline folder, so that `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` works where
`ddpm_hf` is not installed.

Notation follows the derivation in the seed article (and Ho et al. 2020), with diffusers' 0-based timesteps:
diffusers' `t = 0` is the paper's t = 1, the first noising step.

    forward step      q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, (1 - alpha_t) I),       alpha_t = 1 - beta_t
    closed form       q(x_t | x_0)     = N(sqrt(abar_t) x_0, (1 - abar_t) I),              abar_t = alpha_1 ... alpha_t
    posterior         q(x_{t-1} | x_t, x_0) = N(mu_q, Sigma_q I) with
                      mu_q    = (sqrt(alpha_t) (1 - abar_{t-1}) x_t + sqrt(abar_{t-1}) (1 - alpha_t) x_0) / (1 - abar_t)
                      Sigma_q = (1 - alpha_t) (1 - abar_{t-1}) / (1 - abar_t)
    noise form        x_0  = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
                      mu_q = (x_t - (1 - alpha_t) / sqrt(1 - abar_t) eps) / sqrt(alpha_t)

Respaced chains: after `set_timesteps`, the chain visits only `self.timesteps`. Its steps are still a DDPM chain whose
cumulative products are the original abar at the visited timesteps, so every "alpha_t" above means
abar_t / abar_prev, where prev is the next visited timestep (and abar_prev = 1 after the last one).
"""

import math
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Tuple, Union

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
    pred_original_sample: Optional[torch.Tensor] = None


class StepCoefficients(NamedTuple):
    """Every number one reverse step needs, for one visited timestep, as Python floats (computed in float64)."""

    prev_timestep: int  # -1 after the last visited timestep
    x0_hat_xt_coef: float  # x_0's estimate is x0_hat_xt_coef x_t - x0_hat_output_coef model_output (see
    x0_hat_output_coef: float  # DDPMPosteriorScheduler.predict_original_sample; unused for `sample` prediction)
    x0_coef: float  # sqrt(abar_{t-1}) (1 - alpha_t) / (1 - abar_t)
    xt_coef: float  # sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t)
    inv_sqrt_alpha: float  # 1 / sqrt(alpha_t)
    eps_coef_over_sqrt_alpha: float  # (1 - alpha_t) / (sqrt(1 - abar_t) sqrt(alpha_t))
    posterior_std: float  # sqrt(Sigma_q)
    beta_std: float  # sqrt(beta_t)
    log_beta: float  # log(beta_t)
    posterior_log_variance: float  # log(Sigma_q), clipped at the last step as in Improved DDPM


_FLOAT64 = torch.empty(0, dtype=torch.float64)  # the `like` of table queries that have no tensor to follow


def _weighted_sum(a, x: torch.Tensor, b, y: torch.Tensor, into: Optional[torch.Tensor] = None) -> torch.Tensor:
    """a x + b y, added in place to `into` when one is given; two kernels when a and b are numbers (the sampling hot
    path, where every pass over the batch counts)."""
    if isinstance(a, float) and isinstance(b, float):
        out = torch.mul(x, a) if into is None else into.add_(x, alpha=a)
        return out.add_(y, alpha=b)
    out = a * x + b * y  # per-sample coefficient tensors (training's batches of timesteps)
    return out if into is None else into.add_(out)


def step_noise(std: float, generator, like: torch.Tensor) -> torch.Tensor:
    """std * z, z the step noise diffusers draws: `randn_tensor(like.shape, generator, like.device, like.dtype)`.

    Where randn_tensor would call `torch.randn` on the batch's own device (no generator, or one generator there), z is
    drawn by `normal_(0, std)` instead: the same generator calls make the same z, scaled as they are written, which
    saves a pass over the batch; a step is only a handful of such passes besides the draw.
    """
    device_type = like.device.type
    same_device = generator is None or (isinstance(generator, torch.Generator) and generator.device.type == device_type)
    if same_device and device_type in ("cpu", "cuda"):
        noise = torch.empty_like(like, memory_format=torch.contiguous_format)  # randn's layout, whatever like's strides
        return noise.normal_(0.0, std, generator=generator)
    return randn_tensor(like.shape, generator=generator, device=like.device, dtype=like.dtype).mul_(std)


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

        def alpha_bar(s):
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)])
    if beta_schedule == "sigmoid":  # GeoDiff
        return 1 / (1 + np.exp(-np.linspace(-6, 6, T))) * (beta_end - beta_start) + beta_start
    _require_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. 2023, Algorithm 1: shift and scale sqrt(abar) so that abar_T = 0 (same as diffusers)."""
    sqrt_alpha_bar = np.sqrt(np.cumprod(1 - betas))
    first, last = sqrt_alpha_bar[0], sqrt_alpha_bar[-1]
    sqrt_alpha_bar = (sqrt_alpha_bar - last) * first / (first - last)
    alpha_bar = sqrt_alpha_bar**2
    alphas = np.concatenate([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1 - alphas


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
            (`fixed_small_log` is the same distribution, kept for diffusers configs), `fixed_large` is beta_t, and
            `learned_range` reads a second set of C channels v from the model and uses
            exp(frac log beta_t + (1 - frac) log Sigma_q) with frac = (v + 1) / 2 (Improved DDPM, eq. 15).
        clip_sample (`bool`, defaults to True), clip_sample_range (`float`, defaults to 1.0): clip x_0's estimate.
        prediction_type (`str`, defaults to `"epsilon"`): what the model predicts: `epsilon` (the noise, the seed's
            choice), `sample` (x_0) or `v_prediction` (v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0).
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
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
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

        # float64 master tables; the float32 copies below are diffusers' public attributes.
        self._betas64 = betas
        self._alphas_cumprod64 = np.cumprod(1.0 - betas)
        # The forward process does not depend on the sampling chain: its tables are fixed at construction.
        with np.errstate(divide="ignore"):  # abar_T = 0 under a zero terminal SNR
            self._train_tables = {
                "sqrt_alpha_bar_train": np.sqrt(self._alphas_cumprod64),
                "sqrt_one_minus_alpha_bar_train": np.sqrt(1.0 - self._alphas_cumprod64),
                "sqrt_recip_alpha_bar_train": 1.0 / np.sqrt(self._alphas_cumprod64),
                "sqrt_recipm1_alpha_bar_train": np.sqrt(1.0 / self._alphas_cumprod64 - 1.0),
            }
        # x_0's estimate, x_0 = a x_t - b model_output: epsilon x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t),
        # v x_0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v; `sample` predicts x_0 itself (a = 0, b = -1).
        a, b = {
            "epsilon": ("sqrt_recip_alpha_bar_train", "sqrt_recipm1_alpha_bar_train"),
            "v_prediction": ("sqrt_alpha_bar_train", "sqrt_one_minus_alpha_bar_train"),
        }.get(prediction_type, (None, None))
        T = num_train_timesteps
        self._train_tables["x0_hat_xt_coef"] = self._train_tables[a] if a else np.zeros(T)
        self._train_tables["x0_hat_output_coef"] = self._train_tables[b] if b else -np.ones(T)
        self.betas = torch.tensor(betas, dtype=torch.float32)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.tensor(self._alphas_cumprod64, dtype=torch.float32)
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.custom_timesteps = False
        self._set_chain(np.arange(num_train_timesteps - 1, -1, -1, dtype=np.int64), device=None)

    # ------------------------------------------------------------------------------------------------------------
    # The chain of visited timesteps and its per-timestep tables
    # ------------------------------------------------------------------------------------------------------------
    def _set_chain(self, timesteps: np.ndarray, device) -> None:
        """Precompute, once per chain, every coefficient a step or a posterior query needs (float64)."""
        T = self.config.num_train_timesteps
        A = self._alphas_cumprod64
        prev = np.append(timesteps[1:], -1)
        a_t = A[timesteps]
        a_prev = np.where(prev >= 0, A[np.maximum(prev, 0)], 1.0)
        alpha = a_t / a_prev  # the respaced alpha_t
        beta = 1.0 - alpha
        variance = beta * (1.0 - a_prev) / (1.0 - a_t)  # Sigma_q
        # Improved DDPM clips log Sigma_q at the last step (where Sigma_q = 0) to the step before's value.
        clipped = variance.copy()
        if len(clipped) > 1:
            clipped[-1] = clipped[-2]
        with np.errstate(divide="ignore"):
            tables = {
                "prev_timestep": prev,
                "alphas_cumprod_prev": a_prev,
                "x0_coef": np.sqrt(a_prev) * beta / (1.0 - a_t),
                "xt_coef": np.sqrt(alpha) * (1.0 - a_prev) / (1.0 - a_t),
                "eps_coef": beta / np.sqrt(1.0 - a_t),
                "inv_sqrt_alpha": 1.0 / np.sqrt(alpha),
                "posterior_variance": variance,
                "posterior_std": np.sqrt(variance),
                "posterior_log_variance": np.log(np.maximum(clipped, 1e-20)),
                "beta": beta,
                "beta_std": np.sqrt(beta),
                "log_beta": np.log(beta),
            }
        tables["eps_coef_over_sqrt_alpha"] = tables["eps_coef"] * tables["inv_sqrt_alpha"]
        # Index every table by timestep (0..T-1); timesteps outside the chain hold NaN so misuse is loud.
        self._chain_tables = {}
        for name, values in tables.items():
            full = np.full(T, -2 if name == "prev_timestep" else np.nan)
            full[timesteps] = values
            self._chain_tables[name] = full
        for name in ("x0_hat_xt_coef", "x0_hat_output_coef"):  # valid at any timestep: not a chain table
            tables[name] = self._train_tables[name][timesteps]
        self._step_coefficients = {
            int(t): StepCoefficients(int(prev[i]), *(float(tables[f][i]) for f in StepCoefficients._fields[1:]))
            for i, t in enumerate(timesteps)
        }
        self._tensor_cache = {}
        self.timesteps = torch.from_numpy(timesteps.copy()).to(device)

    def set_timesteps(
        self,
        num_inference_steps: Optional[int] = None,
        device: Union[str, torch.device, None] = None,
        timesteps: Optional[List[int]] = None,
    ) -> None:
        """
        Choose the visited timesteps (run before inference), exactly as `DDPMScheduler.set_timesteps` does. The
        posterior of every later step uses the respaced betas 1 - abar_t / abar_prev, so a 50-step chain is a
        proper 50-step DDPM chain.

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
            if not 1 <= num_inference_steps <= T:
                raise ValueError(
                    f"num_inference_steps={num_inference_steps} must be between 1 and num_train_timesteps={T}: the model"
                    f" was trained on {T} timesteps and cannot take more."
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
                raise ValueError(f"steps_offset={self.config.steps_offset} pushes timesteps past T-1={T - 1}: lower it.")
        self._set_chain(np.ascontiguousarray(chain), device)

    def previous_timestep(self, timestep: int) -> int:
        """The next visited timestep after `timestep` (-1 after the last one)."""
        return self._coefficients_at(timestep).prev_timestep

    def _coefficients_at(self, timestep) -> StepCoefficients:
        t = int(timestep)
        try:
            return self._step_coefficients[t]
        except KeyError:
            raise ValueError(
                f"Timestep {t} is not on this scheduler's chain (first visited {int(self.timesteps[0])}, last"
                f" {int(self.timesteps[-1])}): step through `scheduler.timesteps` after `set_timesteps`."
            ) from None

    def _table(self, name: str, timesteps, like: torch.Tensor) -> Union[float, torch.Tensor]:
        """Table `name` at `timesteps`: a float for one timestep, else a tensor broadcastable against `like`.

        The tensor path does no host sync (it runs in training's hot path); a timestep off the chain reads NaN there.
        """
        table = self._chain_tables.get(name)
        if table is None:
            table = self._train_tables[name]
        if isinstance(timesteps, (int, np.integer)) or (torch.is_tensor(timesteps) and timesteps.ndim == 0):
            value = table[int(timesteps)]
            if math.isnan(value):
                self._coefficients_at(timesteps)  # raises the explanatory error
            return float(value)
        key = (name, like.device, like.dtype)
        if key not in self._tensor_cache:
            self._tensor_cache[key] = torch.from_numpy(table).to(device=like.device, dtype=like.dtype)
        index = torch.as_tensor(timesteps, device=like.device).long().flatten()
        return self._tensor_cache[key][index].reshape(-1, *([1] * (like.ndim - 1)))

    # ------------------------------------------------------------------------------------------------------------
    # The forward process and the posterior, as public formulas
    # ------------------------------------------------------------------------------------------------------------
    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps) -> torch.Tensor:
        """q(x_t | x_0): x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, for one timestep or one per sample."""
        sqrt_a = self._table("sqrt_alpha_bar_train", timesteps, original_samples)
        sqrt_1ma = self._table("sqrt_one_minus_alpha_bar_train", timesteps, original_samples)
        return sqrt_a * original_samples + sqrt_1ma * noise

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps) -> torch.Tensor:
        """The v-prediction target v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022)."""
        sqrt_a = self._table("sqrt_alpha_bar_train", timesteps, sample)
        sqrt_1ma = self._table("sqrt_one_minus_alpha_bar_train", timesteps, sample)
        return sqrt_a * noise - sqrt_1ma * sample

    def posterior_mean(self, x_t: torch.Tensor, x_0: torch.Tensor, timesteps) -> torch.Tensor:
        """mu_q(x_t, x_0) = (sqrt(alpha_t)(1 - abar_{t-1}) x_t + sqrt(abar_{t-1})(1 - alpha_t) x_0) / (1 - abar_t)."""
        return _weighted_sum(self._table("xt_coef", timesteps, x_t), x_t, self._table("x0_coef", timesteps, x_t), x_0)

    def posterior_mean_from_noise(self, x_t: torch.Tensor, noise: torch.Tensor, timesteps) -> torch.Tensor:
        """mu_q in the seed's noise form: (x_t - (1 - alpha_t) / sqrt(1 - abar_t) eps) / sqrt(alpha_t)."""
        return (x_t - self._table("eps_coef", timesteps, x_t) * noise) * self._table("inv_sqrt_alpha", timesteps, x_t)

    def posterior_variance(self, timesteps, like: Optional[torch.Tensor] = None):
        """Sigma_q = (1 - alpha_t)(1 - abar_{t-1}) / (1 - abar_t); 0 at the last step of the chain."""
        return self._table("posterior_variance", timesteps, like if like is not None else _FLOAT64)

    def posterior_log_variance(self, timesteps, like: Optional[torch.Tensor] = None):
        """log Sigma_q, with the last step's (log 0) replaced by the step before's, as Improved DDPM does."""
        return self._table("posterior_log_variance", timesteps, like if like is not None else _FLOAT64)

    def predict_original_sample(self, model_output: torch.Tensor, timesteps, sample: torch.Tensor) -> torch.Tensor:
        """x_0's estimate from the model's prediction, by `prediction_type` (any timestep, on the chain or not):
        epsilon x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), v x_0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v, and
        `sample` is x_0 itself."""
        a = self._table("x0_hat_xt_coef", timesteps, sample)
        b = self._table("x0_hat_output_coef", timesteps, sample)
        return self._x0_hat(model_output, sample, a, b)

    def _x0_hat(self, model_output: torch.Tensor, sample: torch.Tensor, a, b) -> torch.Tensor:
        """a x_t - b model_output, or the model output itself when it predicts x_0."""
        if self.config.prediction_type == "sample":
            return model_output
        return _weighted_sum(a, sample, -b, model_output)

    def model_log_variance(self, predicted_variance: Optional[torch.Tensor], timesteps, like: torch.Tensor):
        """log of p_theta's variance at `timesteps`, by `variance_type` (a float unless it is learned)."""
        variance_type = self.config.variance_type
        if variance_type in ("fixed_small", "fixed_small_log"):
            return self._table("posterior_log_variance", timesteps, like)
        if variance_type == "fixed_large":
            return self._table("log_beta", timesteps, like)
        frac = (predicted_variance + 1) / 2  # learned_range: Improved DDPM eq. 15, v in [-1, 1]
        max_log = self._table("log_beta", timesteps, like)
        min_log = self._table("posterior_log_variance", timesteps, like)
        return frac * max_log + (1 - frac) * min_log

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
    def scale_model_input(self, sample: torch.Tensor, timestep: Optional[int] = None) -> torch.Tensor:
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
        timestep: Union[int, torch.Tensor],
        sample: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        return_dict: bool = True,
    ) -> Union[DDPMPosteriorSchedulerOutput, Tuple]:
        """
        One ancestral step x_t -> x_{t-1} ~ p_theta(x_{t-1} | x_t) = N(mu_q(x_t, x_0_hat), sigma_t^2 I).

        With `epsilon` prediction and no clipping the mean is the seed's noise form
        (x_t - (1 - alpha_t) / sqrt(1 - abar_t) eps) / sqrt(alpha_t); otherwise it is mu_q's x_0 form evaluated
        at the (clipped or thresholded) x_0 estimate. The noise is drawn as diffusers draws it, and not at all on
        the chain's last step (Algorithm 2 of Ho et al.: z = 0 there).
        """
        c = self._coefficients_at(timestep)
        model_output, predicted_variance = self.split_model_output(model_output, sample)
        pred_original_sample = self._x0_hat(model_output, sample, c.x0_hat_xt_coef, c.x0_hat_output_coef)

        config = self.config
        if config.thresholding:
            pred_original_sample = self._threshold_sample(pred_original_sample)
        elif config.clip_sample:
            bound = config.clip_sample_range
            if pred_original_sample is model_output:  # x_0 predicted directly: never clamp the caller's tensor
                pred_original_sample = pred_original_sample.clamp(-bound, bound)
            else:  # a fresh tensor of ours: clamp where it is
                pred_original_sample = pred_original_sample.clamp_(-bound, bound)
        # x_{t-1} = mu + sigma_t z. The noise term is drawn first and the mean is added into it, so that a step makes
        # no tensor beyond its two outputs: on a CPU the draw and each pass over the batch are what a step costs.
        prev_sample = None
        if c.prev_timestep >= 0:  # Algorithm 2 of Ho et al.: z = 0 on the chain's last step
            if config.variance_type == "learned_range":
                log_variance = self.model_log_variance(predicted_variance, int(timestep), sample)
                prev_sample = torch.exp(0.5 * log_variance) * step_noise(1.0, generator, model_output)
            else:
                std = c.beta_std if config.variance_type == "fixed_large" else c.posterior_std
                prev_sample = step_noise(std, generator, model_output)

        if config.prediction_type == "epsilon" and not (config.thresholding or config.clip_sample):
            # The seed's final form, mu = (x_t - (1 - alpha_t) / sqrt(1 - abar_t) eps) / sqrt(alpha_t), its two
            # coefficients multiplied out.
            prev_sample = _weighted_sum(c.inv_sqrt_alpha, sample, -c.eps_coef_over_sqrt_alpha, model_output, prev_sample)
        else:  # mu_q's x_0 form at the (clipped) estimate
            prev_sample = _weighted_sum(c.xt_coef, sample, c.x0_coef, pred_original_sample, prev_sample)

        if not return_dict:
            return (prev_sample, pred_original_sample)
        return DDPMPosteriorSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    def __len__(self) -> int:
        return self.config.num_train_timesteps
