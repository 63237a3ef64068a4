# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Does the class steer the image? Class accuracy and digit-feature FD of a class-conditional DDPM per guidance scale.

    python -m benchmarks.bench_class_conditional --train   # train the README-sized run (mnist-16-class), then judge
    python -m benchmarks.bench_class_conditional --pipeline ddpm-digits-class   # judge a pipeline trained earlier

For each guidance scale it samples `--images_per_class` images of each digit class, asks a support-vector classifier
fitted on real MNIST digits which digit each one is (chance: 0.1), and measures the digit-feature FD of those samples
to the embedded MNIST digits (`ddpm_hf.evaluation`; lower is better, comparable only with itself). Guidance trades
diversity for fidelity, so the accuracy rises with the scale while the FD has a minimum. It writes the ten-class grid
(one row per class) at `--grid_guidance`.
"""

import argparse

import numpy as np
import torch

from ddpm_hf import DDPMImagePipeline
from ddpm_hf.evaluation import (
    ReferenceSet,
    class_label_accuracy,
    feature_distances,
    reference_features,
    resolve_feature_network,
)
from ddpm_hf.evaluation.features import extract_features

from .digit_judging import digit_rows_grid, pipeline_and_judge
from .timing import add_threads_flag, pin_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", default="ddpm-digits-class", help="a trained class-conditional pipeline folder")
    parser.add_argument("--train", action="store_true", help="train --pipeline first with the mnist-16-class preset")
    parser.add_argument("--images_per_class", type=int, default=50)
    parser.add_argument("--steps", type=int, default=100, help="respaced sampling chain")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0])
    parser.add_argument("--grid_guidance", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="class_conditional_grid.png")
    add_threads_flag(parser)  # the training run's too
    args = parser.parse_args()
    pin_threads(args.threads)

    pipe, judge = pipeline_and_judge(DDPMImagePipeline, args.pipeline, "mnist-16-class", args.train, args.threads)
    resolution = pipe.unet.config.sample_size
    reference = ReferenceSet("embedded:mnist", resolution=resolution, channels=1)
    network = resolve_feature_network("digits", reference)
    real, _ = reference_features(reference, network)

    n = 10 * args.images_per_class
    print(f"{'guidance':>8} {'accuracy':>16} {'digit-feature FD':>17}   per class")
    for scale in args.guidance:
        result = class_label_accuracy(pipe, judge, images_per_class=args.images_per_class, guidance_scale=scale,
                                      num_inference_steps=args.steps, seed=args.seed)
        pixels = torch.from_numpy((result.images * 255).round().astype(np.uint8))[:, None]
        fd = feature_distances(real, extract_features(network, pixels, 256, "cpu"), seed=args.seed).fd
        stderr = np.sqrt(result.accuracy * (1 - result.accuracy) / n)
        print(f"{scale:>8g} {result.accuracy:>9.3f} ± {stderr:.3f} {fd:>17.3f}   "
              f"{' '.join(f'{a:.2f}' for a in result.per_digit)}")
        if scale == args.grid_guidance:
            digit_rows_grid(result.images, args.images_per_class).save(args.out)
            print(f"wrote {args.out} (row d: class d, guidance {scale:g})")


if __name__ == "__main__":
    main()
