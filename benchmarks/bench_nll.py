# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Compare two DDPM pipelines by their variational bound (bits/dim) on the same images.

Both bounds use the same seed, and `variational_bound` seeds each draw x_t ~ q(x_t | x_0) by (seed, image, t): the
two models see the very same x_t (common random numbers), so the per-image difference of their bounds has a much
smaller standard error than the two bounds themselves.

    python -m benchmarks.bench_nll PIPELINE_A PIPELINE_B --data embedded:digits --num_images 64 --steps 100
    python -m benchmarks.bench_nll --demo       # two random tiny UNets on embedded digits (a smoke run)

Run by hand; not part of the tests.
"""

import argparse
import time

import torch

from ddpm_hf.diffusion.likelihood import variational_bound
from ddpm_hf.evaluation.data_spec import load_evaluation_images

from .estimates import mean_stderr
from .timing import add_threads_flag, pin_threads


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pipelines", nargs="*", help="two pipeline folders or Hub ids")
    parser.add_argument("--demo", action="store_true", help="compare two random tiny UNets instead")
    parser.add_argument("--data", default="embedded:digits")
    parser.add_argument("--num_images", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="respaced chain length (default: the full chain)")
    parser.add_argument("--batch_size", type=int, default=256, help="(image, t) pairs per model call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_threads_flag(parser)
    args = parser.parse_args()
    if not args.demo and len(args.pipelines) != 2:
        parser.error("pass two pipelines, or --demo")
    return args


def demo_models():
    from diffusers import UNet2DModel

    from ddpm_hf import DDPMPosteriorScheduler

    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                           norm_num_groups=8, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)
        models.append((f"random tiny UNet (seed {seed})", unet, DDPMPosteriorScheduler(num_train_timesteps=200)))
    return models


def load_models(names, device):
    from ddpm_hf import DDPMImagePipeline

    models = []
    for name in names:
        pipeline = DDPMImagePipeline.from_pretrained(name).to(device)
        models.append((name, pipeline.unet, pipeline.scheduler))
    return models


def main():
    args = parse_args()
    pin_threads(args.threads)
    models = demo_models() if args.demo else load_models(args.pipelines, args.device)
    shapes = {(unet.config.sample_size, unet.config.in_channels) for _, unet, _ in models}
    if len(shapes) != 1:
        raise SystemExit(f"The two UNets take different images (sample_size, channels): {sorted(shapes)}.")
    size, channels = shapes.pop()
    images = load_evaluation_images(args.data, args.num_images, size, channels, args.seed)

    bounds = []
    for name, unet, scheduler in models:
        unet.to(args.device)
        start = time.perf_counter()
        bound = variational_bound(unet, scheduler, images, generator=torch.Generator().manual_seed(args.seed),
                                  batch_size=args.batch_size, timesteps=args.steps, show_progress=False)
        seconds = time.perf_counter() - start
        mean, stderr = mean_stderr(bound.total_bpd)
        pairs = bound.terms_bpd.numel()
        print(f"{name}: {mean:.4f} ± {stderr:.4f} bits/dim over {len(images)} images, {len(bound.timesteps)} steps"
              f" (prior {float(bound.prior_bpd.mean()):.3g}, decoder {float(bound.decoder_bpd.mean()):.4f});"
              f" {seconds:.1f} s, {pairs / seconds:.0f} pairs/s")
        bounds.append(bound)
    difference = bounds[1].total_bpd - bounds[0].total_bpd
    mean, stderr = mean_stderr(difference)
    print(f"B - A: {mean:+.4f} ± {stderr:.4f} bits/dim (paired, same x_t draws)"
          + (f"; z = {mean / stderr:+.1f}" if stderr > 0 else ""))


if __name__ == "__main__":
    main()
