# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Time DDPMPosteriorScheduler.step against diffusers' DDPMScheduler.step on a (16, 3, 32, 32) float32 batch.

    python -m benchmarks.bench_scheduler [--device cuda]

Target: ratio (ours / diffusers) <= 1.0: the posterior scheduler's float64 coefficients must cost no more per step
than diffusers' float32 ones. Both schedulers walk the same chain with the same generator. Each round walks the
chain once with each, back to back; the ratio is the median over rounds of the two walks' ratio, and the times per
step are medians over rounds.

Both draw the step noise with `randn_tensor` (so that a generator gives the same images), and on a CPU that draw is
much of a step; the benchmark times the draw alone in the same run and also prints the ratio of the rest of the step.
"""

import argparse
import statistics

import torch
from diffusers import DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

from ddpm_hf import DDPMPosteriorScheduler

from .timing import add_threads_flag, compare, median_ratio, pin_threads

CONFIGS = {
    "defaults (clip_sample, 1000 steps)": (dict(), None),
    "defaults, 50 respaced steps": (dict(), 50),
    "epsilon, no clipping, 1000 steps": (dict(clip_sample=False), None),
    "epsilon, no clipping, 50 steps": (dict(clip_sample=False), 50),
    "fixed_large, 50 steps": (dict(variance_type="fixed_large"), 50),
}


def chain_runner(scheduler, steps, device, work):
    """A function that calls `work(t, generator)` at every timestep of the scheduler's chain, and the chain's length."""
    if steps:
        scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps.tolist()
    generator = torch.Generator(device=device).manual_seed(0)

    def run():
        for t in timesteps:
            work(t, generator)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return run, len(timesteps)


def stepper(scheduler, model_output, sample):
    """`work` for chain_runner: one step of `scheduler` from `sample`, with the same model output at every t."""

    def work(t, generator):
        scheduler.step(model_output, t, sample, generator=generator)

    return work


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=15)
    add_threads_flag(parser)
    args = parser.parse_args()
    pin_threads(args.threads)
    sample = torch.randn(16, 3, 32, 32, device=args.device)
    model_output = torch.randn(16, 3, 32, 32, device=args.device)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    print(f"{'configuration':40s} {'diffusers us/step':>18s} {'ours us/step':>13s} {'ratio':>6s}"
          f" {'draw us/step':>13s} {'ratio without the draw':>23s}")

    def draw(t, generator):  # only the Gaussian draw, where both schedulers make it (t > 0 on these chains)
        if t > 0:
            randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)

    ratios = []
    for name, (config, steps) in CONFIGS.items():
        theirs, ours = DDPMScheduler(**config), DDPMPosteriorScheduler(**config)
        runs = {
            "diffusers": chain_runner(theirs, steps, args.device, stepper(theirs, model_output, sample)),
            "ours": chain_runner(ours, steps, args.device, stepper(ours, model_output, sample)),
            "draw": chain_runner(DDPMScheduler(**config), steps, args.device, draw),
        }
        n = runs["ours"][1]
        times = compare({key: run for key, (run, _) in runs.items()}, rounds=args.rounds, repeats=1)
        per_step = {key: statistics.median(values) / n * 1e6 for key, values in times.items()}
        ratio = median_ratio(times, "ours", "diffusers")
        rest = statistics.median(
            (ours - draw) / (theirs - draw)
            for ours, theirs, draw in zip(times["ours"], times["diffusers"], times["draw"], strict=True)
        )
        ratios.append(ratio)
        print(f"{name:40s} {per_step['diffusers']:18.1f} {per_step['ours']:13.1f} {ratio:6.2f}"
              f" {per_step['draw']:13.1f} {rest:23.2f}")
    print(f"worst ratio {max(ratios):.2f} (target <= 1.0)")


if __name__ == "__main__":
    main()
