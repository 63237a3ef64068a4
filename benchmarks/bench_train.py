# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Training throughput of the trainer's step against a bare PyTorch + diffusers loop doing the same work.

Both sides train the same UNet (same initial weights) on the same in-memory uint8 images with the same AdamW, LR
schedule, gradient clipping and EMA, and read the loss back every `--logging_steps` steps. The trainer's side is what
training/train.py runs per step: its micro-batch loader, `prepare_micro_batch`, `train_step` under an Accelerator
(per-step seeded generators included) and its LossMeter. Each round times both sides back to back, in alternating
order (`timing.rotating_rounds`), so a neighbour's load on the machine hits both alike; the median of the per-round
ratios is reported.

    python -m benchmarks.bench_train                       # tiny preset, 16x16, batch 16, CPU
    python -m benchmarks.bench_train --preset mnist-16 --batch_size 64 --steps 30

Run by hand; not part of the tests. Target: the trainer within 5% of the bare loop.
"""

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from ddpm_hf import DDPMPosteriorScheduler
from ddpm_hf.data.order import BatchLayout, micro_batch_loader
from ddpm_hf.presets import load_preset, unet_config_for_data
from ddpm_hf.randomness import StepRandomness
from ddpm_hf.trainer.monitoring import LossMeter
from ddpm_hf.trainer.step import prepare_micro_batch, train_step

from .timing import add_threads_flag, median_ratio, pin_threads, rotating_rounds, synchronize


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_images", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per round")
    parser.add_argument("--warmup_steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--logging_steps", type=int, default=10)
    parser.add_argument("--random_flip", action="store_true")
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even when a GPU is present")
    add_threads_flag(parser)
    return parser.parse_args()


class Setup:
    """One side's model, optimizer, LR schedule and EMA, all starting from the same weights."""

    def __init__(self, initial: UNet2DModel, device):
        self.model = copy.deepcopy(initial).to(device).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.0)
        self.lr_scheduler = get_scheduler("constant_with_warmup", optimizer=self.optimizer, num_warmup_steps=100,
                                          num_training_steps=10**6)
        self.ema = EMAModel(self.model.parameters(), decay=0.9999, use_ema_warmup=True, power=0.75, foreach=True)
        self.ema.to(device)


class TrainerSide:
    """What training/train.py does per optimizer step (minus the progress bar)."""

    name = "trainer"

    def __init__(self, initial, pixels, noise_scheduler, args):
        self.accelerator = Accelerator(cpu=args.cpu)
        setup = Setup(initial, self.accelerator.device)
        self.model, self.optimizer = self.accelerator.prepare(setup.model, setup.optimizer)
        self.lr_scheduler, self.ema = setup.lr_scheduler, setup.ema
        self.noise_scheduler, self.args = noise_scheduler, args
        layout = BatchLayout(args.batch_size)
        self.loader = iter(micro_batch_loader(pixels, seed=0, layout=layout, first_step=0, last_step=10**9,
                                              first_position=0, flip=args.random_flip))
        self.meter, self.step = LossMeter(), 0

    @property
    def device(self):
        return self.accelerator.device

    def run(self, steps: int) -> None:
        for _ in range(steps):
            output = train_step(
                self.model, [prepare_micro_batch(next(self.loader).pixels, self.device)], accelerator=self.accelerator,
                optimizer=self.optimizer, lr_scheduler=self.lr_scheduler, noise_scheduler=self.noise_scheduler,
                randomness=StepRandomness(0, self.step), max_grad_norm=1.0,
            )
            self.ema.step(self.accelerator.unwrap_model(self.model).parameters())  # as the trainer's loop does
            self.step += 1
            self.meter.add(self.step, output)
            if self.step % self.args.logging_steps == 0:
                self.meter.flush(self.accelerator)


class BareSide:
    """The same work written directly: index, scale, noise, forward, MSE, backward, clip, step, EMA."""

    name = "bare loop"

    def __init__(self, initial, pixels, noise_scheduler, args):
        self.device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
        setup = Setup(initial, self.device)
        self.model, self.optimizer = setup.model, setup.optimizer
        self.lr_scheduler, self.ema = setup.lr_scheduler, setup.ema
        self.pixels, self.noise_scheduler, self.args = pixels, noise_scheduler, args
        self.order, self.position, self.step, self.losses = torch.randperm(len(pixels)), 0, 0, []

    def next_batch(self) -> torch.Tensor:
        if self.position + self.args.batch_size > len(self.order):
            self.order, self.position = torch.randperm(len(self.pixels)), 0
        batch = self.pixels[self.order[self.position : self.position + self.args.batch_size]]
        self.position += self.args.batch_size
        if self.args.random_flip:
            flip = (torch.rand(len(batch)) < 0.5).view(-1, 1, 1, 1)
            batch = torch.where(flip, batch.flip(-1), batch)
        return batch.to(self.device).float() / 127.5 - 1

    def run(self, steps: int) -> None:
        for _ in range(steps):
            x0 = self.next_batch()
            noise = torch.randn_like(x0)
            num_train_timesteps = self.noise_scheduler.config.num_train_timesteps
            timesteps = torch.randint(0, num_train_timesteps, (len(x0),), device=self.device)
            prediction = self.model(self.noise_scheduler.add_noise(x0, noise, timesteps), timesteps).sample
            loss = F.mse_loss(prediction.float(), noise.float())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.ema.step(self.model.parameters())
            self.step += 1
            self.losses.append(loss.detach())
            if self.step % self.args.logging_steps == 0:
                torch.stack(self.losses).tolist()
                self.losses = []


def images_per_second(side, args) -> float:
    synchronize(side.device)
    start = time.perf_counter()
    side.run(args.steps)
    synchronize(side.device)
    return args.steps * args.batch_size / (time.perf_counter() - start)


def main():
    args = parse_args()
    pin_threads(args.threads)
    torch.manual_seed(0)
    architecture = load_preset(args.preset).unet
    initial = UNet2DModel.from_config(
        unet_config_for_data(architecture, channels=args.channels, resolution=args.resolution, learned_variance=False)
    )
    shape = (args.num_images, args.channels, args.resolution, args.resolution)
    pixels = torch.randint(0, 256, shape, dtype=torch.uint8)
    noise_scheduler = DDPMPosteriorScheduler()
    sides = [TrainerSide(initial, pixels, noise_scheduler, args), BareSide(initial, pixels, noise_scheduler, args)]
    for side in sides:
        side.run(args.warmup_steps)

    rates = rotating_rounds({side.name: (lambda side=side: images_per_second(side, args)) for side in sides},
                            args.rounds, show="{:.1f} images/s")
    parameters = sum(p.numel() for p in initial.parameters())
    print(f"\n{args.preset} UNet ({parameters / 1e6:.2f}M parameters), images {'x'.join(map(str, shape[1:]))},"
          f" batch {args.batch_size}, device {sides[0].device}, {torch.get_num_threads()} threads")
    print(f"trainer   {statistics.median(rates['trainer']):8.1f} images/s (median of {args.rounds} rounds)")
    print(f"bare loop {statistics.median(rates['bare loop']):8.1f} images/s")
    ratio = median_ratio(rates, "trainer", "bare loop")
    print(f"trainer / bare = {ratio:.3f} (median of per-round ratios; overhead {1 - ratio:+.1%}, target < 5%)")


if __name__ == "__main__":
    main()
