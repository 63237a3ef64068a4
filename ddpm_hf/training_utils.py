# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The DDPM training step, and where its data and randomness come from.

Every random draw of training is a pure function of (seed, optimizer step, process index, micro-batch):

* the data order is an endless stream of per-epoch permutations, each seeded by (seed, epoch), and each optimizer
  step consumes the next `global_batch_size` positions of it;
* the flips, the noise, the timesteps and dropout of one micro-batch come from generators seeded by
  (seed, purpose, step, process, micro-batch).

So a run resumed from a checkpoint needs only the step counter and the data position to continue with exactly the
draws the uninterrupted run would have made, whatever happened to the global RNGs in between.
"""

import contextlib
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data import random_flip, to_model_range

# Purposes, so that the streams of one micro-batch are independent of each other.
_EPOCH, _FLIP, _NOISE, _DROPOUT = 0, 1, 2, 3


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

    def epoch_of(self, position: int) -> float:
        return position / self.num_samples


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

    It runs in DataLoader workers when there are any; the images were decoded once, so this is only indexing.
    """

    def __init__(self, pixels: torch.Tensor, seed: int, process_index: int, flip: bool):
        self.pixels, self.seed, self.process_index, self.flip = pixels, seed, process_index, flip

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, key: MicroBatchKey) -> torch.Tensor:
        batch = self.pixels[key.indices]
        if self.flip:
            seed = derive_seed(self.seed, _FLIP, key.step, self.process_index, key.micro)
            batch = random_flip(batch, torch.Generator().manual_seed(seed))
        return batch


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
) -> torch.utils.data.DataLoader:
    """A DataLoader over this process's uint8 micro-batches, in training order (workers keep the order)."""
    stream = DataStream(len(pixels), seed)
    keys = MicroBatchKeys(stream, layout, first_step, last_step, first_position)
    return torch.utils.data.DataLoader(
        ImageBatches(pixels, seed, layout.process_index, flip),
        sampler=keys,
        batch_size=None,  # each key already names a whole micro-batch
        num_workers=num_workers,
        pin_memory=pin_memory,
    )


# ----------------------------------------------------------------------------------------------------------------
# The objective
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class NoisedBatch:
    """One draw of the forward process: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps at uniform timesteps."""

    x0: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor
    x_t: torch.Tensor


def noise_batch(noise_scheduler, x0: torch.Tensor, generator: Optional[torch.Generator]) -> NoisedBatch:
    """t ~ U{0..T-1} (diffusers' 0-based indexing), eps ~ N(0, I), x_t by the scheduler's own `add_noise`."""
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    timesteps = torch.randint(
        0, noise_scheduler.config.num_train_timesteps, (x0.shape[0],), generator=generator, device=x0.device
    )
    return NoisedBatch(x0, noise, timesteps, noise_scheduler.add_noise(x0, noise, timesteps))


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


def simple_loss(model_output: torch.Tensor, batch: NoisedBatch, noise_scheduler) -> torch.Tensor:
    """L_simple (Ho et al. 2020, eq. 14): the mean squared error of the prediction, in float32.

    A `learned_range` model's variance channels get no gradient from it (Improved DDPM trains them with L_vlb).
    """
    prediction, _ = noise_scheduler.split_model_output(model_output, batch.x0)
    return F.mse_loss(prediction.float(), training_target(noise_scheduler, batch).float())


# Improved DDPM's "hybrid" (L_simple + lambda L_vlb) and "vlb" go here: same signature, they read the variance channels.
LOSSES: Dict[str, Callable[[torch.Tensor, NoisedBatch, object], torch.Tensor]] = {"simple": simple_loss}


def diffusion_loss(model, noise_scheduler, x0: torch.Tensor, generator=None, loss_type: str = "simple"):
    """The training loss of one micro-batch of clean images `x0` (in [-1, 1])."""
    batch = noise_batch(noise_scheduler, x0, generator)
    model_output = model(batch.x_t, batch.timesteps).sample
    return LOSSES[loss_type](model_output, batch, noise_scheduler)


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
    grad_norm: Optional[torch.Tensor]  # before clipping; None without clipping


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
    max_grad_norm: Optional[float] = None,
    ema=None,
    loss_type: str = "simple",
) -> StepOutput:
    """One optimizer step over the gradient-accumulation `micro_batches` (clean images in [-1, 1]).

    Accumulation is explicit rather than `accelerator.accumulate`, whose hidden micro-step counter would have to be
    checkpointed too: gradients are summed over the micro-batches (each loss divided by their number) and only the
    last backward pass all-reduces them. Nothing here waits for the device.
    """
    losses = []
    for micro, x0 in enumerate(micro_batches):
        last = micro == len(micro_batches) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            randomness.seed_dropout(micro, x0.device)
            generator = randomness.noise_generator(micro, x0.device)
            loss = diffusion_loss(model, noise_scheduler, x0, generator, loss_type)
            accelerator.backward(loss / len(micro_batches))
        losses.append(loss.detach())

    grad_norm = None
    if max_grad_norm:
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    if not accelerator.optimizer_step_was_skipped:  # fp16 overflow: the loss scaler skipped this step
        lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if ema is not None:
        ema.step(model.parameters())
    loss = losses[0] if len(losses) == 1 else torch.stack(losses).mean()
    return StepOutput(loss=loss, grad_norm=grad_norm.detach() if torch.is_tensor(grad_norm) else None)


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
    grad_norm: Optional[float]


class LossMeter:
    """Collects each step's loss as a device tensor; `flush` reads them all with one host sync.

    `flush` averages across processes, so every process sees the same numbers and takes the same decision when one
    is not finite (a collective: call it on every process at the same steps).
    """

    def __init__(self, check_grad_norm: bool = True):
        # fp16 training overflows the gradients now and then by design; its loss scaler skips those steps.
        self.check_grad_norm = check_grad_norm
        self._steps: List[int] = []
        self._values: List[torch.Tensor] = []
        self._has_grad_norm = None

    def add(self, step: int, output: StepOutput) -> None:
        self._has_grad_norm = output.grad_norm is not None
        values = [output.loss.float()]
        if self._has_grad_norm:
            values.append(output.grad_norm.float().to(output.loss.device))
        self._steps.append(step)
        self._values.append(torch.stack(values))

    def flush(self, accelerator) -> List[LoggedStep]:
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
