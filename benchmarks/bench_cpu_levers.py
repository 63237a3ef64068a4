# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Which CPU speed levers are real for the default preset's training step? Each variant trains the same UNet
(same initial weights, same batches) and is timed against plain eager float32 in the same rounds.

Variants: eager float32 on --threads threads (the peer; default every core), one thread, `channels_last` memory
format, bf16 autocast (fast only on CPUs with AMX or avx512_bf16), and `torch.compile` (inductor; its compile time is
printed apart).
A step is what the trainer does per step: noise and timesteps, the UNet forward, L_simple, backward, AdamW.
Each round times every variant back to back in a rotating order, so a neighbour's load hits them alike; the median
of the per-round ratios against eager is reported.

    python -m benchmarks.bench_cpu_levers                                  # mnist-16, batch 64, 16x16
    python -m benchmarks.bench_cpu_levers --variants eager,compile --steps 20

Run by hand; not part of the tests.
"""

import argparse
import copy
import os
import statistics
import time

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

from ddpm_hf import DDPMPosteriorScheduler
from ddpm_hf.presets import load_preset, unet_config_for_data

from .timing import add_threads_flag, median_ratio, pin_threads, rotating_rounds

VARIANTS = ("eager", "one_thread", "channels_last", "bf16_autocast", "compile")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mnist-16")
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    add_threads_flag(parser, default=os.cpu_count() or 1, why="every core, the eager peer's, which the one_thread"
                     " variant is timed against")
    return parser.parse_args()


class Variant:
    """One way of running the training step, on its own copy of the model and optimizer."""

    def __init__(self, name: str, initial: UNet2DModel):
        self.name = name
        self.model = copy.deepcopy(initial).train()
        if name == "channels_last":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.0)
        self.forward = torch.compile(self.model) if name == "compile" else self.model
        self.threads = 1 if name == "one_thread" else torch.get_num_threads()

    def step(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, scheduler) -> torch.Tensor:
        x_t = scheduler.add_noise(x0, noise, timesteps)
        if self.name == "channels_last":
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.name == "bf16_autocast"):
            prediction = self.forward(x_t, timesteps).sample
        loss = F.mse_loss(prediction.float(), noise)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def run(self, batches, scheduler) -> float:
        """Seconds for `batches`, under this variant's thread count (reading the last loss is the one sync)."""
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            started = time.perf_counter()
            for x0, noise, timesteps in batches:
                loss = self.step(x0, noise, timesteps, scheduler)
            loss.item()
            return time.perf_counter() - started
        finally:
            torch.set_num_threads(threads)


def main() -> None:
    args = parse_args()
    pin_threads(args.threads)
    names = [name.strip() for name in args.variants.split(",")]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}: choose from {', '.join(VARIANTS)}")
    if "eager" not in names:
        names.insert(0, "eager")  # the peer every ratio is taken against
    preset = load_preset(args.preset)
    config = unet_config_for_data(preset.unet, channels=1, resolution=args.resolution, learned_variance=False)
    torch.manual_seed(0)
    initial = UNet2DModel.from_config(config)
    scheduler = DDPMPosteriorScheduler()
    g = torch.Generator().manual_seed(0)
    shape = (args.batch_size, 1, args.resolution, args.resolution)
    batches = [(torch.rand(shape, generator=g) * 2 - 1, torch.randn(shape, generator=g),
                torch.randint(0, scheduler.config.num_train_timesteps, (args.batch_size,), generator=g))
               for _ in range(args.steps)]

    variants = [Variant(name, initial) for name in names]
    for variant in variants:  # warm-up; for torch.compile this is the compilation (forward and backward graphs)
        started = time.perf_counter()
        variant.run(batches[:3], scheduler)
        print(f"{variant.name}: first 3 steps {time.perf_counter() - started:.1f} s"
              + (" (includes compilation)" if variant.name == "compile" else ""), flush=True)

    seconds = rotating_rounds({variant.name: (lambda variant=variant: variant.run(batches, scheduler))
                               for variant in variants}, args.rounds, show="{:.2f} s")

    print(f"\n{args.preset} UNet, batch {args.batch_size}, {args.resolution}x{args.resolution}, {args.steps} steps per"
          f" round, {args.rounds} rounds, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| variant | steps/s (median) | ratio to eager (median of rounds) |")
    print("|---|---|---|")
    for name, values in seconds.items():
        speedup = median_ratio(seconds, "eager", name)  # eager's seconds over this variant's: > 1 is faster
        print(f"| {name} | {args.steps / statistics.median(values):.1f} | {speedup:.2f}x |")


if __name__ == "__main__":
    main()
