# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""What a user chooses from, as plain data: the names behind the trainer's flags, importable without torch,
diffusers or transformers, so that the trainer's `--help` and its flag checks take a fraction of a second.

One home for each list:
- the data modules import theirs from here (`data.storage`, `data.sources`);
- the registries that implement a list are keyed by its names and assert so where they are defined
  (`diffusion.losses.LOSSES`, `diffusion.timestep_samplers.TIMESTEP_SAMPLERS`, `text.components`);
- the lists owned by code that cannot be imported lightly are copies, which tests/test_train_flags.py compares with
  their source: diffusers' learning-rate schedules, and the scheduler's names (`scheduling_ddpm_posterior` imports
  nothing of ddpm_hf: it is copied into every saved pipeline).
The samplers' names are in `ddpm_hf.samplers`, light already.
"""

# The objective: L_simple (Ho et al. 2020, eq. 14), L_hybrid (Nichol & Dhariwal 2021, eq. 16), L_vlb (eq. 5), and
# how t is drawn for them (uniformly, or by importance: Nichol & Dhariwal 2021, eq. 18).
LOSS_TYPES = ("simple", "hybrid", "vlb")
TIMESTEP_SAMPLER_NAMES = ("uniform", "loss-second-moment")

# The scheduler's (scheduling_ddpm_posterior: BETA_SCHEDULES, PREDICTION_TYPES, VARIANCE_TYPES). The trainer offers
# the variance types but fixed_small_log, the same distribution as fixed_small, kept for diffusers' configs.
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TRAINED_VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")

# diffusers.optimization.SchedulerType's values, in its order.
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "piecewise_constant")

# The data (data.sources, data.storage): digit sets shipped inside installed packages, where decoded images live, and
# the smallest resolution the loader accepts.
EMBEDDED_DATASETS = ("digits", "mnist")
STORAGES = ("auto", "memory", "memmap", "lazy")
MIN_RESOLUTION = 8

# Offline text encoders: the real CLIP tokenizer with a small, randomly initialised CLIPTextModel, one per
# text.encoders.TEXT_ENCODER_PRESETS entry.
BUILTIN_PREFIX = "builtin:"
BUILTIN_TEXT_ENCODERS = ("builtin:tiny", "builtin:small")


def check_loss_config(loss_type: str, variance_type: str, snr_gamma: float | None = None) -> None:
    """Raise a ValueError for a loss that cannot train with this `variance_type` or Min-SNR-gamma weighting (call it
    when setting up)."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"Unknown loss_type {loss_type!r}: choose one of {', '.join(LOSS_TYPES)}.")
    if snr_gamma is not None and not snr_gamma > 0:
        raise ValueError(f"snr_gamma must be positive (Hang et al. 2023 recommend 5), got {snr_gamma}.")
    if snr_gamma is not None and loss_type != "simple":
        raise ValueError(
            f"snr_gamma weights the timesteps of L_simple, but loss_type is {loss_type!r}, whose L_vlb terms are the"
            " bound's own weighting: use loss_type 'simple' with snr_gamma, or drop snr_gamma."
        )
    if loss_type == "hybrid" and variance_type != "learned_range":
        raise ValueError(
            f"loss_type 'hybrid' trains the learned variance with L_vlb (the mean is trained by L_simple alone), but"
            f" variance_type={variance_type!r} has no variance to learn, so L_vlb would add no gradient: use"
            " variance_type 'learned_range' (a model with 2 x channels outputs), or loss_type 'simple' (the same"
            " training here) or 'vlb' (the bound trains the mean)."
        )
