# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Training throughput of the trainer's step against a bare PyTorch + diffusers loop doing the same work.

Both sides train the preset's UNet (the same initial weights) on the same in-memory uint8 images, with the AdamW, LR
schedule, gradient clipping, noise scheduler and EMA that the trainer's builders (ddpm_hf/trainer/setup.py) make from
the preset's flags (--use_ema on), and read the loss back every `--logging_steps` steps. The trainer's side is what
its loop runs per step: its micro-batch loader, `TrainingStep` under an Accelerator (the step's seeded generators
included) and its LossMeter. The bare side is the yardstick, its loop written out by hand: index, flip, scale, noise,
forward, MSE, backward, clip, step, EMA. Each round times both sides back to back, in alternating order
(`timing.rotating_rounds`), so a neighbour's load on the machine hits both alike; the median of the per-round ratios
is reported.

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

from ddpm_hf.data.order import BatchLayout, micro_batch_loader
from ddpm_hf.presets import load_preset
from ddpm_hf.trainer.config import parse_args as parse_trainer_args
from ddpm_hf.trainer.monitoring import LossMeter
from ddpm_hf.trainer.setup import build_unet, make_ema, make_noise_scheduler, make_optimizer
from ddpm_hf.trainer.step import TrainingStep

from .timing import add_threads_flag, median_ratio, pin_threads, rotating_rounds, synchronize

# What the bare loop writes out: L_simple on eps, t uniform, one micro-batch per step.
BARE_LOOP_FLAGS = {"loss_type": "simple", "prediction_type": "epsilon", "timestep_sampler": "uniform",
                   "snr_gamma": None, "gradient_accumulation_steps": 1}


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


def trainer_flags(args):
    """The trainer's flags for the preset at this resolution and batch, with the EMA on (both sides step one)."""
    flags = parse_trainer_args(["--preset", args.preset, "--resolution", str(args.resolution), "--train_batch_size",
                                str(args.batch_size), "--report_to", "none", "--use_ema"])
    different = {flag: getattr(flags, flag) for flag, value in BARE_LOOP_FLAGS.items() if getattr(flags, flag) != value}
    if different:
        shown = ", ".join(f"--{flag} {value}" for flag, value in different.items())
        raise SystemExit(f"preset {args.preset} trains with {shown}, which the bare loop does not write out: pick a"
                         " preset that trains L_simple on eps with uniform timesteps (tiny, mnist-16, ddpm-cifar10)")
    return flags


class TrainerSide:
    """What the trainer's loop does per optimizer step (minus the progress bar)."""

    name = "trainer"

    def __init__(self, initial, pixels, flags, args):
        self.accelerator = Accelerator(cpu=args.cpu)
        self.training_step = TrainingStep.build(flags, self.accelerator, copy.deepcopy(initial))
        self.args = args
        self.loader = iter(micro_batch_loader(pixels, seed=flags.seed, layout=BatchLayout(args.batch_size),
                                              first_step=0, last_step=10**9, first_position=0, flip=args.random_flip))
        self.meter, self.step = LossMeter(), 0

    @property
    def device(self):
        return self.accelerator.device

    def run(self, steps: int) -> None:
        for _ in range(steps):
            output = self.training_step(self.step, [next(self.loader)])
            self.step += 1
            self.meter.add(self.step, output)
            if self.step % self.args.logging_steps == 0:
                self.meter.flush(self.accelerator)


class BareSide:
    """The same work written directly: index, flip, scale, noise, forward, MSE, backward, clip, step, EMA."""

    name = "bare loop"

    def __init__(self, initial, pixels, flags, args):
        self.device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
        self.model = copy.deepcopy(initial).to(self.device).train()
        self.optimizer, self.lr_scheduler = make_optimizer(self.model, flags, flags.max_train_steps)
        self.ema = make_ema(self.model, flags)
        self.ema.to(self.device)
        self.noise_scheduler, self.max_grad_norm = make_noise_scheduler(flags), flags.max_grad_norm
        self.pixels, self.args = pixels, args
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
            if self.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
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
    flags = trainer_flags(args)
    initial = build_unet(flags, load_preset(args.preset).unet, args.channels)  # seeded by --seed
    shape = (args.num_images, args.channels, args.resolution, args.resolution)
    pixels = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    sides = [TrainerSide(initial, pixels, flags, args), BareSide(initial, pixels, flags, args)]
    for side in sides:
        side.run(args.warmup_steps)

    rates = rotating_rounds({side.name: (lambda side=side: images_per_second(side, args)) for side in sides},
                            args.rounds, show="{:.1f} images/s")
    parameters = sum(p.numel() for p in initial.parameters())
    print(f"\n{args.preset} UNet ({parameters / 1e6:.2f}M parameters), images {'x'.join(map(str, shape[1:]))},"
          f" batch {args.batch_size}, lr {flags.learning_rate} ({flags.lr_scheduler}), clip {flags.max_grad_norm},"
          f" EMA, device {sides[0].device}, {torch.get_num_threads()} threads")
    print(f"trainer   {statistics.median(rates['trainer']):8.1f} images/s (median of {args.rounds} rounds)")
    print(f"bare loop {statistics.median(rates['bare loop']):8.1f} images/s")
    ratio = median_ratio(rates, "trainer", "bare loop")
    print(f"trainer / bare = {ratio:.3f} (median of per-round ratios; overhead {1 - ratio:+.1%}, target < 5%)")


if __name__ == "__main__":
    main()
