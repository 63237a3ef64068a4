# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The DDPM training step, and where its data and randomness come from.

Every random draw of training is a pure function of (seed, optimizer step, process index, micro-batch):

* the data order is an endless stream of per-epoch permutations, each seeded by (seed, epoch), and each optimizer
  step consumes the next `global_batch_size` positions of it;
* the flips, the noise, the timesteps and dropout of one micro-batch come from generators seeded by
  (seed, purpose, step, process, micro-batch).

So a run resumed from a checkpoint needs only the step counter and the data position to continue with exactly the
draws the uninterrupted run would have made, whatever happened to the global RNGs in between (and, with importance-
sampled timesteps, the sampler's loss history, which is a `state_dict` of device tensors).
"""

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .data import random_flip, to_model_range
from .likelihood import LN2, discretized_gaussian_log_likelihood, mean_flat, normal_kl

# Purposes, so that the streams of one micro-batch are independent of each other.
_EPOCH, _FLIP, _NOISE, _DROPOUT, _CAPTION_DROPOUT = 0, 1, 2, 3, 4


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that is a well-mixed function of the integer `keys` (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(key) for key in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


# ----------------------------------------------------------------------------------------------------------------
# Data order
# ----------------------------------------------------------------------------------------------------------------
class DataStream:
    """Position p of the stream is sample `permutation(epoch = p // N)[p % N]` of the N training images.

    Batches may straddle an epoch boundary, so no sample is ever dropped, and a position means the same sample
    whatever the batch size or the number of processes: a checkpoint stores the position, not a batch index.
    """

    def __init__(self, num_samples: int, seed: int):
        if num_samples < 1:
            raise ValueError("The data stream needs at least one sample.")
        self.num_samples, self.seed = num_samples, seed
        self._epoch, self._permutation = None, None

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:  # consecutive batches almost always share an epoch: keep the last one
            generator = torch.Generator().manual_seed(derive_seed(self.seed, _EPOCH, epoch))
            self._epoch, self._permutation = epoch, torch.randperm(self.num_samples, generator=generator)
        return self._permutation

    def indices(self, start: int, count: int) -> torch.Tensor:
        """The sample indices at positions [start, start + count)."""
        pieces, position, end = [], start, start + count
        while position < end:
            epoch, offset = divmod(position, self.num_samples)
            take = min(end - position, self.num_samples - offset)
            pieces.append(self.permutation(epoch)[offset : offset + take])
            position += take
        return torch.cat(pieces)


@dataclass(frozen=True)
class BatchLayout:
    """How one optimizer step's global batch is split over processes and gradient-accumulation micro-batches.

    The global batch of a step is the stream positions [p, p + G), G = batch_size x processes x accumulation; micro-
    batch m of process r is the slice that starts at p + (m x processes + r) x batch_size. Each rank thus sees a
    different slice of every global batch, and all ranks together see each position once.
    """

    batch_size: int  # per process and micro-batch
    num_processes: int = 1
    process_index: int = 0
    gradient_accumulation_steps: int = 1

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_processes * self.gradient_accumulation_steps

    def micro_batch_start(self, step_position: int, micro: int) -> int:
        return step_position + (micro * self.num_processes + self.process_index) * self.batch_size


@dataclass(frozen=True)
class MicroBatchKey:
    step: int  # the optimizer step (0-based: the step that brings global_step from `step` to `step + 1`)
    micro: int  # the micro-batch within that step
    indices: torch.Tensor  # which training images


class MicroBatchKeys(torch.utils.data.Sampler):
    """The keys of this process's micro-batches for steps [first_step, last_step), starting at `first_position`."""

    def __init__(self, stream: DataStream, layout: BatchLayout, first_step: int, last_step: int, first_position: int):
        self.stream, self.layout = stream, layout
        self.first_step, self.last_step, self.first_position = first_step, last_step, first_position

    def __len__(self) -> int:
        return max(0, self.last_step - self.first_step) * self.layout.gradient_accumulation_steps

    def __iter__(self) -> Iterator[MicroBatchKey]:
        layout = self.layout
        for step in range(self.first_step, self.last_step):
            step_position = self.first_position + (step - self.first_step) * layout.global_batch_size
            for micro in range(layout.gradient_accumulation_steps):
                start = layout.micro_batch_start(step_position, micro)
                yield MicroBatchKey(step, micro, self.stream.indices(start, layout.batch_size))


class ImageBatches(torch.utils.data.Dataset):
    """A micro-batch key -> its uint8 images, flipped as the key's seed says: all the per-step CPU work on data.
    With `captions` (one caption index per image) it gives (images, their caption indices) instead.

    It runs in DataLoader workers when there are any; the images were decoded once, so this is only indexing.
    """

    def __init__(self, pixels: torch.Tensor, seed: int, process_index: int, flip: bool,
                 captions: torch.Tensor | None = None):
        self.pixels, self.seed, self.process_index, self.flip = pixels, seed, process_index, flip
        self.captions = captions

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, key: MicroBatchKey):
        batch = self.pixels[key.indices]
        if self.flip:
            seed = derive_seed(self.seed, _FLIP, key.step, self.process_index, key.micro)
            batch = random_flip(batch, torch.Generator().manual_seed(seed))
        return batch if self.captions is None else (batch, self.captions[key.indices])


def micro_batch_loader(
    pixels: torch.Tensor,
    *,
    seed: int,
    layout: BatchLayout,
    first_step: int,
    last_step: int,
    first_position: int,
    flip: bool,
    num_workers: int = 0,
    pin_memory: bool = False,
    captions: torch.Tensor | None = None,
) -> torch.utils.data.DataLoader:
    """A DataLoader over this process's uint8 micro-batches, in training order (workers keep the order).

    With `captions` (N,) caption indices, each item is (images, caption indices); else just the images.
    """
    stream = DataStream(len(pixels), seed)
    keys = MicroBatchKeys(stream, layout, first_step, last_step, first_position)
    return torch.utils.data.DataLoader(
        ImageBatches(pixels, seed, layout.process_index, flip, captions),
        sampler=keys,
        batch_size=None,  # each key already names a whole micro-batch
        num_workers=num_workers,
        pin_memory=pin_memory,
    )


# ----------------------------------------------------------------------------------------------------------------
# Timesteps, uniform or importance-sampled
# ----------------------------------------------------------------------------------------------------------------
class UniformSampler:
    """t ~ U{0..T-1} with every importance weight 1: Ho et al.'s sampling, and the default.

    It draws exactly `torch.randint(0, T, (B,), generator=generator, device=device)`. Its weights are `None` (all 1):
    the loss stays a plain mean.
    """

    def __init__(self, num_timesteps: int, device=None):  # `device`: the factory's signature; nothing is kept on it
        self.num_timesteps = num_timesteps

    def sample(self, batch_size: int, generator: torch.Generator | None, device) -> tuple[torch.Tensor, None]:
        t = torch.randint(0, self.num_timesteps, (batch_size,), generator=generator, device=device)
        return t, None

    def update(self, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """Nothing to learn."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass


class LossSecondMomentSampler:
    """Importance sampling of t (Improved DDPM, eq. 18): p_t proportional to sqrt(E[L_t^2]), weights 1 / (T p_t).

    improved-diffusion's `LossSecondMomentResampler`: E[L_t^2] is the mean of the last `history_per_term` losses seen
    at t; until every t has that many, t is uniform (and every weight 1); then p is mixed with `uniform_prob` of the
    uniform distribution, so that no t starves. Since E_{t~p}[L_t / (T p_t)] = (1/T) sum_t L_t, the weighted loss
    has the expectation of the uniform one, with less variance when the L_t differ by orders of magnitude (L_vlb's).

    The state lives on the device as tensors (`loss_history` (T, H) float64, a ring buffer per t, and `loss_counts`
    (T,) int64, every loss ever seen at t), and neither sampling nor `update` reads anything back to the host.
    """

    def __init__(self, num_timesteps: int, history_per_term: int = 10, uniform_prob: float = 0.001, device=None):
        self.num_timesteps, self.history_per_term, self.uniform_prob = num_timesteps, history_per_term, uniform_prob
        self.loss_history = torch.zeros(num_timesteps, history_per_term, dtype=torch.float64, device=device)
        self.loss_counts = torch.zeros(num_timesteps, dtype=torch.int64, device=device)

    @property
    def device(self) -> torch.device:
        return self.loss_history.device

    def to(self, device) -> "LossSecondMomentSampler":
        self.loss_history, self.loss_counts = self.loss_history.to(device), self.loss_counts.to(device)
        return self

    def probabilities(self) -> torch.Tensor:
        """p_t, (T,) float64 on the sampler's device: uniform until warm, then sqrt(E[L_t^2]) normalised and mixed."""
        T = self.num_timesteps
        uniform = torch.full((T,), 1.0 / T, dtype=torch.float64, device=self.device)
        root_second_moment = self.loss_history.square().mean(dim=1).sqrt()
        total = root_second_moment.sum()
        # All-zero losses would give 0/0: stay uniform then (a where, not an `if`, so that nothing syncs).
        p = torch.where(total > 0, root_second_moment / total, uniform)
        p = p * (1 - self.uniform_prob) + self.uniform_prob / T
        warm = (self.loss_counts >= self.history_per_term).all()
        return torch.where(warm, p, uniform)

    def sample(self, batch_size: int, generator: torch.Generator | None, device):
        """(timesteps (B,) int64, importance weights w = 1 / (T p_t) (B,) float32), both on `device`.

        The state moves to `device` on first use (the generator must live there too).
        """
        device = torch.device(device)
        if device.type != self.device.type or (device.index is not None and device.index != self.device.index):
            self.to(device)
        p = self.probabilities()
        timesteps = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        weights = 1.0 / (self.num_timesteps * p[timesteps])
        return timesteps, weights.float()

    def update(self, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-sample losses (unweighted, detached) at their timesteps, as if one at a time in the given order.

        Call it on every process with the same tensors (the losses of all processes, gathered in one fixed order),
        so that every process keeps the same state and draws the same p.
        """
        t = timesteps.detach().to(self.device).long().flatten()
        values = losses.detach().to(self.device, torch.float64).flatten()
        if t.numel() == 0:
            return
        H = self.history_per_term
        # Group the batch by t, batch order kept within a group (stable sort), and rank each loss within its group.
        order = torch.argsort(t, stable=True)
        t, values = t[order], values[order]
        first = torch.searchsorted(t, t)  # where each loss's group starts
        group_size = torch.searchsorted(t, t, right=True) - first
        rank = torch.arange(len(t), device=self.device) - first
        # One at a time, loss `rank` of t would go to slot (count_t + rank) % H, overwritten by every later loss of t
        # with the same slot. Each write carries the value of the LAST loss landing in its slot, so the several writes
        # to one slot (more than H losses of one t) agree and the result does not depend on which one wins.
        last_rank = rank + H * torch.div(group_size - 1 - rank, H, rounding_mode="floor")
        slot = (self.loss_counts[t] + rank) % H
        self.loss_history[t, slot] = values[first + last_rank]
        self.loss_counts[t] = self.loss_counts[t] + group_size  # the same value for every loss of a group, too

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"loss_history": self.loss_history.clone(), "loss_counts": self.loss_counts.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        history, counts = state["loss_history"], state["loss_counts"]
        if history.shape != self.loss_history.shape or counts.shape != self.loss_counts.shape:
            raise ValueError(
                f"The saved loss history has shape {tuple(history.shape)} but this sampler keeps"
                f" {tuple(self.loss_history.shape)} (num_timesteps x history_per_term): resume with the same"
                " num_train_timesteps."
            )
        self.loss_history.copy_(history)
        self.loss_counts.copy_(counts)


TIMESTEP_SAMPLERS = {"uniform": UniformSampler, "loss-second-moment": LossSecondMomentSampler}


def make_timestep_sampler(name: str, num_timesteps: int, device=None):
    """The sampler of a `--timestep_sampler` choice."""
    if name in TIMESTEP_SAMPLERS:
        return TIMESTEP_SAMPLERS[name](num_timesteps, device=device)
    raise ValueError(f"Unknown timestep sampler {name!r}: choose one of {', '.join(TIMESTEP_SAMPLERS)}.")


# ----------------------------------------------------------------------------------------------------------------
# The objective
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class NoisedBatch:
    """One draw of the forward process: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps at sampled timesteps.

    `weights` are the importance weights of the timesteps (None: all 1, t uniform).
    """

    x0: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor
    x_t: torch.Tensor
    weights: torch.Tensor | None = None


def noise_batch(
    noise_scheduler, x0: torch.Tensor, generator: torch.Generator | None, timestep_sampler=None
) -> NoisedBatch:
    """eps ~ N(0, I), then t from `timestep_sampler` (uniform on diffusers' 0..T-1 by default), x_t by `add_noise`.

    The order of the draws (noise, then timesteps) is part of every seeded run's numbers: keep it.
    """
    T = noise_scheduler.config.num_train_timesteps
    if timestep_sampler is None:
        timestep_sampler = UniformSampler(T)
    elif timestep_sampler.num_timesteps != T:
        raise ValueError(f"The timestep sampler covers {timestep_sampler.num_timesteps} timesteps but the noise"
                         f" scheduler has num_train_timesteps={T}: build the sampler with {T}.")
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    timesteps, weights = timestep_sampler.sample(x0.shape[0], generator, x0.device)
    return NoisedBatch(x0, noise, timesteps, noise_scheduler.add_noise(x0, noise, timesteps), weights)


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


def simple_losses(model_output: torch.Tensor, batch: NoisedBatch, noise_scheduler) -> torch.Tensor:
    """L_simple per sample, (B,) float32: the squared error averaged over each sample's C*H*W values."""
    return mean_flat(squared_error(model_output, batch, noise_scheduler))


def vlb_term_bpd(model_output: torch.Tensor, batch: NoisedBatch, noise_scheduler, detach_mean: bool = False):
    """L_t per sample, (B,) float32, in bits/dim: the term of the variational bound at each sample's timestep.

    KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) for t > 0 (diffusers' 0-based t), the discretized-Gaussian
    decoder NLL -log p_theta(x_0 | x_1) at t = 0: the quantity `likelihood.vb_terms_bpd` computes, here from an
    already computed model output (that function calls the model itself, and reads rows with a host sync) and as
    improved-diffusion's training does: x_0's estimate is not clipped, Sigma_q's log is the clipped one (it differs
    only at t = 0, a decoder row), and both terms are computed for every row and selected by t (no sync).

    `detach_mean` stops the gradient of the mean channels (improved-diffusion's `frozen_out`): the hybrid loss
    trains the mean by L_simple alone and the variance by L_vlb alone.
    """
    T = noise_scheduler.config.num_train_timesteps
    if len(noise_scheduler.timesteps) != T:
        raise ValueError(
            f"L_vlb needs the scheduler's full {T}-step chain (its posterior tables follow the chain), but this one was"
            f" set to {len(noise_scheduler.timesteps)} steps: train with a scheduler on which set_timesteps never ran."
        )
    x_0, x_t, t = batch.x0.float(), batch.x_t.float(), batch.timesteps
    prediction, predicted_variance = noise_scheduler.split_model_output(model_output.float(), x_t)
    if detach_mean:
        prediction = prediction.detach()
    x0_hat = noise_scheduler.predict_original_sample(prediction, t, x_t)
    model_mean = noise_scheduler.posterior_mean(x_t, x0_hat, t)
    model_log_variance = noise_scheduler.model_log_variance(predicted_variance, t, x_t).expand_as(x_t)

    true_mean = noise_scheduler.posterior_mean(x_t, x_0, t)
    true_log_variance = noise_scheduler.posterior_log_variance(t, like=x_t)
    kl = mean_flat(normal_kl(true_mean, true_log_variance, model_mean, model_log_variance)) / LN2
    log_likelihood = discretized_gaussian_log_likelihood(x_0, model_mean, 0.5 * model_log_variance)
    decoder_nll = -mean_flat(log_likelihood) / LN2
    return torch.where(t.to(kl.device) == 0, decoder_nll, kl)


HYBRID_LAMBDA = 0.001  # Improved DDPM, section 3.1: lambda of L_hybrid


def hybrid_losses(model_output: torch.Tensor, batch: NoisedBatch, noise_scheduler) -> torch.Tensor:
    """L_hybrid per sample = L_simple + lambda L_vlb (Improved DDPM, eq. 16), lambda = 0.001, (B,) float32.

    L_vlb = sum_t L_t, estimated with one t ~ U{0..T-1} as T L_t; L_vlb sees the mean detached, so it trains only the
    variance channels (improved-diffusion's RESCALED_MSE: mse + vb * T / 1000).
    """
    check_loss_config("hybrid", noise_scheduler.config.variance_type)
    T = noise_scheduler.config.num_train_timesteps
    vlb = T * vlb_term_bpd(model_output, batch, noise_scheduler, detach_mean=True)
    return simple_losses(model_output, batch, noise_scheduler) + HYBRID_LAMBDA * vlb


def vlb_losses(model_output: torch.Tensor, batch: NoisedBatch, noise_scheduler) -> torch.Tensor:
    """L_vlb per sample, T L_t with full gradient (improved-diffusion's RESCALED_KL: vb * num_timesteps), (B,)."""
    return noise_scheduler.config.num_train_timesteps * vlb_term_bpd(model_output, batch, noise_scheduler)


# Per-sample losses, (B,) float32: a micro-batch's loss is their (importance-weighted) mean.
LOSSES: dict[str, Callable[[torch.Tensor, NoisedBatch, object], torch.Tensor]] = {
    "simple": simple_losses,
    "hybrid": hybrid_losses,
    "vlb": vlb_losses,
}


def check_loss_config(loss_type: str, variance_type: str) -> None:
    """Raise a ValueError for a loss that cannot train with this `variance_type` (call it when setting up)."""
    if loss_type not in LOSSES:
        raise ValueError(f"Unknown loss_type {loss_type!r}: choose one of {', '.join(LOSSES)}.")
    if loss_type == "hybrid" and variance_type != "learned_range":
        raise ValueError(
            f"loss_type 'hybrid' trains the learned variance with L_vlb (the mean is trained by L_simple alone), but"
            f" variance_type={variance_type!r} has no variance to learn, so L_vlb would add no gradient: use"
            " variance_type 'learned_range' (a model with 2 x channels outputs), or loss_type 'simple' (the same"
            " training here) or 'vlb' (the bound trains the mean)."
        )


@dataclass
class MicroBatchLoss:
    loss: torch.Tensor  # 0-d float32, what is back-propagated
    sample_losses: torch.Tensor  # (B,) float32, detached and unweighted: what a timestep sampler learns from
    timesteps: torch.Tensor  # (B,)


def diffusion_loss_terms(
    model, noise_scheduler, x0: torch.Tensor, generator=None, loss_type: str = "simple", timestep_sampler=None,
    model_kwargs: dict | None = None,
) -> MicroBatchLoss:
    """The loss of one micro-batch of clean images `x0` (in [-1, 1]), with its per-sample values and timesteps.

    The loss is the mean of the per-sample losses, weighted by the sampler's importance weights when it has any.
    """
    check_loss_config(loss_type, getattr(noise_scheduler.config, "variance_type", None))
    batch = noise_batch(noise_scheduler, x0, generator, timestep_sampler)
    model_output = model(batch.x_t, batch.timesteps, **(model_kwargs or {})).sample
    if loss_type == "simple" and batch.weights is None:
        # The mean over all B*C*H*W values (what F.mse_loss computes, bit for bit), not the mean of the per-sample
        # means: the same number in exact arithmetic, and the float32 bits the default preset has always trained on.
        error = squared_error(model_output, batch, noise_scheduler)
        return MicroBatchLoss(error.mean(), mean_flat(error.detach()), batch.timesteps)
    sample_losses = LOSSES[loss_type](model_output, batch, noise_scheduler)
    weighted = sample_losses if batch.weights is None else sample_losses * batch.weights
    return MicroBatchLoss(weighted.mean(), sample_losses.detach(), batch.timesteps)


def diffusion_loss(
    model, noise_scheduler, x0: torch.Tensor, generator=None, loss_type: str = "simple", timestep_sampler=None,
    model_kwargs: dict | None = None,
) -> torch.Tensor:
    """The training loss of one micro-batch of clean images `x0` (in [-1, 1])."""
    return diffusion_loss_terms(model, noise_scheduler, x0, generator, loss_type, timestep_sampler, model_kwargs).loss


# ----------------------------------------------------------------------------------------------------------------
# One optimizer step
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepRandomness:
    """The generators of one optimizer step on one process (see the module docstring)."""

    seed: int
    step: int
    process_index: int = 0

    def noise_generator(self, micro: int, device) -> torch.Generator:
        device = torch.device(device)
        return torch.Generator(device).manual_seed(derive_seed(self.seed, _NOISE, self.step, self.process_index, micro))

    def caption_dropout_generator(self, micro: int, device) -> torch.Generator:
        """Which captions classifier-free-guidance training replaces by the empty prompt."""
        device = torch.device(device)
        seed = derive_seed(self.seed, _CAPTION_DROPOUT, self.step, self.process_index, micro)
        return torch.Generator(device).manual_seed(seed)

    def seed_dropout(self, micro: int, device) -> None:
        """Reseed the global generator that dropout on `device` draws from (validation or a library may use it too).

        Only that generator: `torch.manual_seed` seeds every backend and costs ~0.15 ms, a few % of a small step.
        """
        seed = derive_seed(self.seed, _DROPOUT, self.step, self.process_index, micro)
        device = torch.device(device)
        if device.type == "cpu":
            torch.default_generator.manual_seed(seed)
        elif device.type == "cuda":
            index = torch.cuda.current_device() if device.index is None else device.index
            torch.cuda.default_generators[index].manual_seed(seed)
        else:
            torch.manual_seed(seed)


@dataclass
class StepOutput:
    loss: torch.Tensor  # mean over the micro-batches, a 0-d device tensor (reading it is a host sync)
    grad_norm: torch.Tensor | None  # before clipping; None without clipping
    # This process's samples, micro-batch after micro-batch: what `timestep_sampler.update` takes (once gathered from
    # all processes). Device tensors, detached; the losses are per sample and unweighted.
    timesteps: torch.Tensor | None = None  # (B x micro-batches,) int64
    sample_losses: torch.Tensor | None = None  # (B x micro-batches,) float32


def prepare_micro_batch(pixels: torch.Tensor, device) -> torch.Tensor:
    """uint8 images from the loader -> float32 in [-1, 1] on `device` (uint8 crosses the bus: 4x less to copy)."""
    return to_model_range(pixels.to(device, non_blocking=True))


def train_step(
    model,
    micro_batches: Sequence[torch.Tensor],
    *,
    accelerator,
    optimizer,
    lr_scheduler,
    noise_scheduler,
    randomness: StepRandomness,
    max_grad_norm: float | None = None,
    loss_type: str = "simple",
    timestep_sampler=None,
    micro_batch_kwargs: Sequence[dict] | None = None,
) -> StepOutput:
    """One optimizer step over the gradient-accumulation `micro_batches` (clean images in [-1, 1]).

    Accumulation is explicit rather than `accelerator.accumulate`, whose hidden micro-step counter would have to be
    checkpointed too: gradients are summed over the micro-batches (each loss divided by their number) and only the
    last backward pass all-reduces them. Nothing here waits for the device.

    `timestep_sampler` draws the timesteps (None: uniform); it is not updated here: the caller gathers the output's
    `timesteps` and `sample_losses` from all processes and calls its `update`. `micro_batch_kwargs[m]` holds extra
    keyword arguments of the model call on micro-batch m (e.g. `encoder_hidden_states`).
    """
    if micro_batch_kwargs is not None and len(micro_batch_kwargs) != len(micro_batches):
        raise ValueError(f"micro_batch_kwargs has {len(micro_batch_kwargs)} entries for {len(micro_batches)}"
                         " micro-batches: pass one dict per micro-batch.")
    losses, timesteps, sample_losses = [], [], []
    for micro, x0 in enumerate(micro_batches):
        last = micro == len(micro_batches) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            randomness.seed_dropout(micro, x0.device)
            generator = randomness.noise_generator(micro, x0.device)
            terms = diffusion_loss_terms(model, noise_scheduler, x0, generator, loss_type, timestep_sampler,
                                         micro_batch_kwargs[micro] if micro_batch_kwargs is not None else None)
            accelerator.backward(terms.loss / len(micro_batches))
        losses.append(terms.loss.detach())
        timesteps.append(terms.timesteps)
        sample_losses.append(terms.sample_losses)

    grad_norm = None
    if max_grad_norm:
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    if not accelerator.optimizer_step_was_skipped:  # fp16 overflow: the loss scaler skipped this step
        lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    loss = losses[0] if len(losses) == 1 else torch.stack(losses).mean()
    return StepOutput(
        loss=loss, grad_norm=grad_norm.detach() if torch.is_tensor(grad_norm) else None,
        timesteps=torch.cat(timesteps), sample_losses=torch.cat(sample_losses),
    )


# ----------------------------------------------------------------------------------------------------------------
# Watching the loss without stalling the device
# ----------------------------------------------------------------------------------------------------------------
class NonFiniteLossError(RuntimeError):
    """The loss (or the gradient norm) became NaN or infinite."""

    def __init__(self, step: int, what: str, value: float):
        self.step, self.what, self.value = step, what, value
        super().__init__(f"the {what} became {value} at step {step}")


@dataclass
class LoggedStep:
    step: int
    loss: float
    grad_norm: float | None


class LossMeter:
    """Collects each step's loss as a device tensor; `flush` reads them all with one host sync.

    `flush` averages across processes, so every process sees the same numbers and takes the same decision when one
    is not finite (a collective: call it on every process at the same steps).
    """

    def __init__(self, check_grad_norm: bool = True):
        # fp16 training overflows the gradients now and then by design; its loss scaler skips those steps.
        self.check_grad_norm = check_grad_norm
        self._steps: list[int] = []
        self._values: list[torch.Tensor] = []
        self._has_grad_norm = None

    def add(self, step: int, output: StepOutput) -> None:
        self._has_grad_norm = output.grad_norm is not None
        values = [output.loss.float()]
        if self._has_grad_norm:
            values.append(output.grad_norm.float().to(output.loss.device))
        self._steps.append(step)
        self._values.append(torch.stack(values))

    def flush(self, accelerator) -> list[LoggedStep]:
        if not self._steps:
            return []
        values = accelerator.reduce(torch.stack(self._values), reduction="mean").tolist()
        steps, self._steps, self._values = self._steps, [], []
        logged = [LoggedStep(step, row[0], row[1] if self._has_grad_norm else None)
                  for step, row in zip(steps, values, strict=True)]
        for entry in logged:
            if not np.isfinite(entry.loss):
                raise NonFiniteLossError(entry.step, "loss", entry.loss)
            if self.check_grad_norm and entry.grad_norm is not None and not np.isfinite(entry.grad_norm):
                raise NonFiniteLossError(entry.step, "gradient norm", entry.grad_norm)
        return logged
