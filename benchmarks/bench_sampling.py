# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Images/s of DDPMImagePipeline against diffusers.DDPMPipeline: same tiny UNet, same steps, same generator seed.

    python -m benchmarks.bench_sampling [--device cuda] [--steps 100] [--batch_size 16]

Target: ratio (ours / diffusers, in images per second) >= 1.0.
"""

import argparse
import statistics

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from ddpm_hf import DDPMImagePipeline, DDPMPosteriorScheduler

from .timing import add_threads_flag, compare, median_ratio, pin_threads


def tiny_unet(channels: int, resolution: int) -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=resolution, in_channels=channels, out_channels=channels, block_out_channels=(32, 64),
        layers_per_block=1, norm_num_groups=8, down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    ).eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    add_threads_flag(parser)
    args = parser.parse_args()
    pin_threads(args.threads)

    unet = tiny_unet(args.channels, args.resolution).to(args.device)
    pipelines = {
        "diffusers": DDPMPipeline(unet=unet, scheduler=DDPMScheduler()),
        "ours": DDPMImagePipeline(unet=unet, scheduler=DDPMPosteriorScheduler()),
    }

    def runner(pipe):
        pipe.set_progress_bar_config(disable=True)

        def run():
            generator = torch.Generator(device="cpu").manual_seed(0)
            pipe(batch_size=args.batch_size, generator=generator, num_inference_steps=args.steps, output_type="np")
        return run

    times = compare({name: runner(pipe) for name, pipe in pipelines.items()}, rounds=args.rounds, repeats=1)
    params = sum(p.numel() for p in unet.parameters())
    print(f"torch {torch.__version__}, device {args.device}, UNet {params / 1e3:.0f}k params, "
          f"{args.batch_size} images of {args.channels}x{args.resolution}x{args.resolution}, {args.steps} steps")
    for name, seconds in times.items():
        images_per_second = args.batch_size / statistics.median(seconds)
        print(f"{name:10s} {images_per_second:8.2f} images/s (median of {args.rounds} rounds)")
    ratio = median_ratio(times, "diffusers", "ours")
    print(f"ratio ours/diffusers {ratio:.3f} in images/s (median of per-round ratios; target >= 1.0)")


if __name__ == "__main__":
    main()
