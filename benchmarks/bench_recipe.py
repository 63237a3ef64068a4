#!/usr/bin/env python
# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""How good are a digit model's samples, against real digits at the same resolution? The yardstick of the default
preset's recipe: run it on each candidate's pipeline (or checkpoints, to read one long run at several lengths).

For each model it draws --num-images samples (a --steps respaced chain, with the model's variance unless
--variance-type says otherwise) and prints:
- the digit-feature FD (ddpm_hf.metrics) of the samples to the train split (80%) of the embedded MNIST digits at the
  model's resolution, and the same FD of as many real digits from the held-out test split (20%) to the same
  reference: the floor a perfect model would reach with that many images, so that the ratio samples / real says how
  far from real digits the samples are;
- coverage: the share of samples the digit classifier (ddpm_hf.evaluation, an SVC fitted on real digits) gives to
  each digit, the smallest of the ten shares, and the same for the real test digits.

    python benchmarks/bench_recipe.py ddpm-digits                              # a finished run
    python benchmarks/bench_recipe.py run/checkpoints/checkpoint-{2000,3000}    # checkpoints (their EMA weights)

Run by hand; not part of the tests (500 samples at 100 steps take about 20 s per model on a 2-core CPU).
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ddpm_hf.metrics import ReferenceSet, extract_features, feature_distances, reference_features  # noqa: E402
from ddpm_hf.metrics.digit_features import digit_feature_network  # noqa: E402
from ddpm_hf.metrics.sampling import image_seeds, sample_pixels  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="pipeline folders, or checkpoint folders (their unet_ema or unet)"
                        " beside a finished run's scheduler")
    parser.add_argument("--num-images", type=int, default=500, help="samples (and real test digits) per model")
    parser.add_argument("--steps", type=int, default=100, help="respaced sampling steps")
    parser.add_argument("--variance-type", choices=["fixed_small", "fixed_large"], help="sample with this reverse"
                        " variance instead of the model's scheduler's")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def load_model(path: Path):
    """A pipeline folder, or a checkpoint folder: its EMA UNet (else its UNet) with the scheduler of the run's
    pipeline two folders up (or a default DDPMPosteriorScheduler)."""
    from diffusers import UNet2DModel

    from ddpm_hf import DDPMImagePipeline, DDPMPosteriorScheduler

    if (path / "model_index.json").is_file():
        return DDPMImagePipeline.from_pretrained(path)
    unet = UNet2DModel.from_pretrained(path / ("unet_ema" if (path / "unet_ema").is_dir() else "unet"))
    run = path.parent.parent
    scheduler = (DDPMPosteriorScheduler.from_pretrained(run / "scheduler") if (run / "scheduler").is_dir()
                 else DDPMPosteriorScheduler())
    return DDPMImagePipeline(unet=unet, scheduler=scheduler)


def shares(labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels, minlength=10) / max(1, len(labels))


def main() -> None:
    from ddpm_hf.evaluation import fit_digit_classifier

    args = parse_args()
    torch.set_grad_enabled(False)
    network = digit_feature_network()
    results, classifiers, real = [], {}, {}
    for model in args.models:
        pipeline = load_model(Path(model))
        if args.variance_type:
            pipeline.scheduler = type(pipeline.scheduler).from_config(pipeline.scheduler.config,
                                                                      variance_type=args.variance_type)
        pipeline.set_progress_bar_config(disable=True)
        resolution = pipeline.unet.config.sample_size
        if resolution not in real:  # the real floor at this resolution, once
            train, _ = reference_features(ReferenceSet("embedded:mnist", resolution, split="train"), network)
            test_set = ReferenceSet("embedded:mnist", resolution, split="test", max_images=args.num_images)
            test_pixels = test_set.load_pixels()
            real_fd = feature_distances(train, extract_features(network, test_pixels), seed=args.seed).fd
            classifiers[resolution] = fit_digit_classifier("mnist", resolution)
            real_labels = classifiers[resolution].predict(test_pixels.numpy().astype(np.float64) / 255.0)
            real[resolution] = (train, real_fd, shares(real_labels), len(test_pixels))
        train, real_fd, real_shares, real_count = real[resolution]
        started = time.perf_counter()
        pixels = sample_pixels(pipeline, image_seeds(args.seed, args.num_images), args.steps, batch_size=125)
        seconds = time.perf_counter() - started
        fd = feature_distances(train, extract_features(network, pixels), seed=args.seed).fd
        labels = classifiers[resolution].predict(pixels.numpy().astype(np.float64) / 255.0)
        results.append((model, resolution, fd, real_fd, shares(labels), seconds))
        print(f"{model}: FD {fd:.3f} (real {real_fd:.3f} from {real_count} test digits, ratio {fd / real_fd:.2f});"
              f" smallest digit share {shares(labels).min():.3f} (real {real_shares.min():.3f}); {seconds:.0f} s",
              flush=True)

    variance = args.variance_type or "the scheduler's variance"
    print(f"\n{args.num_images} samples per model, {args.steps} steps, {variance}; FD against the embedded MNIST"
          " train split\n")
    print("| model | px | digit-feature FD | real digits' FD | ratio | digits covered | smallest share |")
    print("|---|---|---|---|---|---|---|")
    for model, resolution, fd, real_fd, digit_shares, _ in results:
        covered = int((digit_shares >= 0.02).sum())
        print(f"| {model} | {resolution} | {fd:.3f} | {real_fd:.3f} | {fd / real_fd:.2f} | {covered}/10 |"
              f" {digit_shares.min():.3f} |")


if __name__ == "__main__":
    main()
