# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Does the text steer the image? Prompt-following accuracy of a text-to-image DDPM trained on captioned digits.

    python benchmarks/bench_text_to_image.py --train   # train the README-sized run (mnist-16-text), then judge it
    python benchmarks/bench_text_to_image.py --pipeline ddpm-digits-text   # judge a pipeline trained earlier

For each digit d it samples `--images-per-digit` images of the prompt "a handwritten digit <word>" and asks a
support-vector classifier fitted on real MNIST digits (held-out accuracy printed) which digit each one is. It prints
the fraction classified as the prompted digit with classifier-free guidance and without it (chance: 0.1; target after
the README-sized run: above 0.8 with guidance), per digit, and writes the ten prompts' grid (one row per digit).
"""

import argparse
import os
import sys
import time

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from common import train_preset  # noqa: E402

from ddpm_hf import DDPMTextToImagePipeline  # noqa: E402
from ddpm_hf.evaluation import fit_digit_classifier, prompted_digit_accuracy  # noqa: E402


def prompt_grid(images: np.ndarray, images_per_digit: int, cell: int = 48) -> Image.Image:
    """One row per prompted digit, scaled up (nearest) so that 16x16 digits are visible."""
    rows = images.reshape(10, images_per_digit, *images.shape[1:])
    tiles = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    grid = Image.fromarray((tiles * 255).round().astype(np.uint8), "L")
    scale = max(1, cell // images.shape[1])
    return grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", default="ddpm-digits-text", help="a trained DDPMTextToImagePipeline folder")
    parser.add_argument("--train", action="store_true", help="train --pipeline first with the mnist-16-text preset")
    parser.add_argument("--images-per-digit", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100, help="respaced sampling chain")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="text_to_image_prompts.png", help="the ten prompts' grid (guided)")
    args = parser.parse_args()

    if args.train:
        print(f"training {args.pipeline}: {train_preset('mnist-16-text', args.pipeline) / 60:.1f} min")
    pipe = DDPMTextToImagePipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    resolution = pipe.unet.config.sample_size
    classifier = fit_digit_classifier("mnist", resolution=resolution)
    print(f"digit classifier (RBF SVM on real {resolution}x{resolution} MNIST): held-out accuracy"
          f" {classifier.heldout_accuracy:.3f}")

    results = {}
    for scale in (args.guidance, 1.0):
        start = time.perf_counter()
        results[scale] = prompted_digit_accuracy(pipe, classifier, images_per_digit=args.images_per_digit,
                                                 guidance_scale=scale, num_inference_steps=args.steps, seed=args.seed)
        n = 10 * args.images_per_digit
        accuracy = results[scale].accuracy
        stderr = np.sqrt(accuracy * (1 - accuracy) / n)
        print(f"guidance {scale:g}: {accuracy:.3f} ± {stderr:.3f} of {n} samples classified as the prompted digit"
              f" (chance 0.100); per digit {' '.join(f'{a:.2f}' for a in results[scale].per_digit)}"
              f" [{time.perf_counter() - start:.0f} s]")
    verdict = "yes" if results[args.guidance].accuracy > 0.8 else "no"
    print(f"target (> 0.8 with guidance {args.guidance:g}) met: {verdict}")
    prompt_grid(results[args.guidance].images, args.images_per_digit).save(args.out)
    print(f"wrote {args.out} (row d: the prompt 'a handwritten digit <d>', guidance {args.guidance:g})")


if __name__ == "__main__":
    main()
