# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""How good are a digit model's samples, against real digits at the same resolution? The yardstick of the default
preset's recipe: run it on each candidate's pipeline (or checkpoints, to read one long run at several lengths).

For each model it draws --num_images samples (a --steps respaced chain, with the model's variance unless
--variance_type says otherwise) and prints:
- the digit-feature FD (ddpm_hf.evaluation) of the samples to the train split (80%) of the embedded MNIST digits at the
  model's resolution, and the same FD of as many real digits from the held-out test split (20%, 1,000 digits) to the
  same reference: the floor a perfect model would reach with that many images, so that the ratio samples / real says
  how far from real digits the samples are. Both are estimates with a spread: with 500 images, disjoint halves of
  the test digits measure 0.26 and 0.36, and two sample sets of one model differ as much, so --draws averages
  several sample sets (and as many random subsets of the test digits for the floor). The floor shrinks as 1/N (0.36
  at 500 images, 0.16 at 1,000), so a ratio is only meaningful at the N it was measured at;
- coverage: the share of samples the digit classifier (ddpm_hf.evaluation, an SVC fitted on real digits) gives to
  each digit, the smallest of the ten shares, and the same for the real test digits.

    python -m benchmarks.bench_recipe ddpm-digits                              # a finished run
    python -m benchmarks.bench_recipe ddpm-digits --draws 4                    # mean and spread of 4 sample sets
    python -m benchmarks.bench_recipe run/checkpoints/checkpoint-{2000,3000}    # checkpoints (their EMA weights)

Run by hand; not part of the tests (500 samples at 100 steps take about 20 s per model on a 2-core CPU).
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from ddpm_hf.evaluation import ReferenceSet, extract_features, feature_distances, reference_features
from ddpm_hf.evaluation.digit_features import digit_feature_network
from ddpm_hf.evaluation.sampling import image_seeds, sample_pixels

from .timing import add_threads_flag, pin_threads


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="pipeline folders, or checkpoint folders (their unet_ema or unet)"
                        " beside a finished run's scheduler")
    parser.add_argument("--num_images", type=int, default=500, help="samples (and real test digits) per model")
    parser.add_argument("--steps", type=int, default=100, help="respaced sampling steps")
    parser.add_argument("--variance_type", choices=["fixed_small", "fixed_large"], help="sample with this reverse"
                        " variance instead of the model's scheduler's")
    parser.add_argument("--draws", type=int, default=1, help="independent sample sets per model (seeds --seed,"
                        " --seed + 1, ...): the FD of a few hundred samples varies from one set to the next, so"
                        " compare models by the mean and spread over several")
    parser.add_argument("--seed", type=int, default=0)
    add_threads_flag(parser)
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
    pin_threads(args.threads)
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
            test_pixels = ReferenceSet("embedded:mnist", resolution, split="test").load_pixels()
            test_features = extract_features(network, test_pixels)
            # The floor is as noisy as the samples' FD: average it over --draws random subsets of the test digits.
            count = min(args.num_images, len(test_pixels))
            subsets = [torch.randperm(len(test_pixels), generator=torch.Generator().manual_seed(args.seed + draw))
                       [:count] for draw in range(args.draws)]
            real_fd = float(np.mean([feature_distances(train, test_features[subset], seed=args.seed).fd
                                     for subset in subsets]))
            classifiers[resolution] = fit_digit_classifier("mnist", resolution)
            real_labels = classifiers[resolution].predict(test_pixels.numpy().astype(np.float64) / 255.0)
            real[resolution] = (train, real_fd, shares(real_labels), count)
        train, real_fd, real_shares, real_count = real[resolution]
        started = time.perf_counter()
        fds, labels = [], []
        for draw in range(args.draws):
            pixels = sample_pixels(pipeline, image_seeds(args.seed + draw, args.num_images), args.steps,
                                   batch_size=125)
            fds.append(feature_distances(train, extract_features(network, pixels), seed=args.seed).fd)
            labels.append(classifiers[resolution].predict(pixels.numpy().astype(np.float64) / 255.0))
        seconds = time.perf_counter() - started
        fd, fd_spread = float(np.mean(fds)), float(np.std(fds, ddof=1)) if len(fds) > 1 else None
        digit_shares = shares(np.concatenate(labels))
        results.append((model, resolution, fd, fd_spread, real_fd, digit_shares))
        print(f"{model}: FD {fd:.3f} (draws: {', '.join(f'{value:.3f}' for value in fds)}; real {real_fd:.3f} from"
              f" {real_count} test digits, ratio {fd / real_fd:.2f}); smallest digit share {digit_shares.min():.3f}"
              f" (real {real_shares.min():.3f}); {seconds:.0f} s", flush=True)

    variance = args.variance_type or "the scheduler's variance"
    print(f"\n{args.num_images} samples per draw, {args.draws} draw(s) per model, {args.steps} steps, {variance};"
          " FD against the embedded MNIST train split (mean and standard deviation over the draws)\n")
    print("| model | px | digit-feature FD | real digits' FD | ratio | digits covered | smallest share |")
    print("|---|---|---|---|---|---|---|")
    for model, resolution, fd, fd_spread, real_fd, digit_shares in results:
        covered = int((digit_shares >= 0.02).sum())
        spread = f" ± {fd_spread:.3f}" if fd_spread is not None else ""
        print(f"| {model} | {resolution} | {fd:.3f}{spread} | {real_fd:.3f} | {fd / real_fd:.2f} | {covered}/10 |"
              f" {digit_shares.min():.3f} |")


if __name__ == "__main__":
    main()
