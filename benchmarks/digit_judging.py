# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""What the two conditional benchmarks (bench_class_conditional, bench_text_to_image) share: the trained pipeline
(trained first when asked), the digit classifier that judges its samples, and the grid that shows them."""

import numpy as np
from PIL import Image

from ddpm_hf.evaluation import fit_digit_classifier

from .training_runs import train_preset


def pipeline_and_judge(pipeline_class, folder: str, preset: str, train: bool, threads: int):
    """The pipeline in `folder` (trained there first when `train`: `preset`, `threads` torch threads), its progress bar
    off, and a digit classifier fitted on real MNIST digits at its resolution, whose held-out accuracy is printed."""
    if train:
        print(f"training {folder}: {train_preset(preset, folder, threads) / 60:.1f} min")
    pipe = pipeline_class.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    resolution = pipe.unet.config.sample_size
    judge = fit_digit_classifier("mnist", resolution=resolution)
    print(f"digit classifier (RBF SVM on real {resolution}x{resolution} MNIST): held-out accuracy"
          f" {judge.heldout_accuracy:.3f}")
    return pipe, judge


def digit_rows_grid(images: np.ndarray, images_per_digit: int, cell: int = 48) -> Image.Image:
    """Grey images in [0, 1], ten rows of `images_per_digit` (row d: digit d), scaled up (nearest) so that 16x16
    digits are visible."""
    rows = images.reshape(10, images_per_digit, *images.shape[1:])
    tiles = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    grid = Image.fromarray((tiles * 255).round().astype(np.uint8), "L")
    scale = max(1, cell // images.shape[1])
    return grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
