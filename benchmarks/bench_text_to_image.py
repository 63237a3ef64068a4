# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Does the text steer the image? Prompt-following accuracy of a text-to-image DDPM trained on captioned digits.

    python -m benchmarks.bench_text_to_image --train   # train the README-sized run (mnist-16-text), then judge it
    python -m benchmarks.bench_text_to_image --pipeline ddpm-digits-text   # judge a pipeline trained earlier

For each digit d it samples `--images_per_digit` images of the prompt "a handwritten digit <word>" and asks a
support-vector classifier fitted on real MNIST digits (held-out accuracy printed) which digit each one is. It prints
the fraction classified as the prompted digit with classifier-free guidance and without it (chance: 0.1; target after
the README-sized run: above 0.8 with guidance), per digit, and writes the ten prompts' grid (one row per digit).
"""

import argparse
import time

import numpy as np

from ddpm_hf import DDPMTextToImagePipeline
from ddpm_hf.evaluation import prompted_digit_accuracy

from .digit_judging import digit_rows_grid, pipeline_and_judge
from .timing import add_threads_flag, pin_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", default="ddpm-digits-text", help="a trained DDPMTextToImagePipeline folder")
    parser.add_argument("--train", action="store_true", help="train --pipeline first with the mnist-16-text preset")
    parser.add_argument("--images_per_digit", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100, help="respaced sampling chain")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="text_to_image_prompts.png", help="the ten prompts' grid (guided)")
    add_threads_flag(parser)  # the training run's too
    args = parser.parse_args()
    pin_threads(args.threads)

    pipe, classifier = pipeline_and_judge(DDPMTextToImagePipeline, args.pipeline, "mnist-16-text", args.train,
                                          args.threads)
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
    digit_rows_grid(results[args.guidance].images, args.images_per_digit).save(args.out)
    print(f"wrote {args.out} (row d: the prompt 'a handwritten digit <d>', guidance {args.guidance:g})")


if __name__ == "__main__":
    main()
