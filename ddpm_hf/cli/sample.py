# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""`ddpm-hf sample`: a grid of samples from a saved pipeline, and optionally the reverse-process strip."""

import torch
from diffusers.utils import logging as diffusers_logging

from ..samplers import use_sampler
from ..visualization import image_grid, to_pil_images, trajectory_strip
from .loading import load_pipeline, output_path


def run(args) -> None:
    out = output_path(args.out)
    trajectory_out = output_path(args.trajectory) if args.trajectory else None  # fail before sampling, not after
    diffusers_logging.disable_progress_bar()  # "Loading pipeline components..."; the sampling bar stays
    pipeline = use_sampler(load_pipeline(args.pipeline, args.device), args.scheduler)
    every = max(1, args.steps // args.trajectory_points) if args.trajectory else None
    conditioning = {}
    if args.class_labels:  # names stay strings; numbers become ints (the pipeline checks both against its classes)
        labels = [int(label) if label.isdigit() and label not in (pipeline.config.class_names or []) else label
                  for label in args.class_labels]
        conditioning = dict(class_labels=labels, guidance_scale=args.guidance_scale)
    result = pipeline(
        **conditioning,
        batch_size=args.num_images,
        generator=torch.Generator(device="cpu").manual_seed(args.seed),
        num_inference_steps=args.steps,
        eta=args.eta,
        output_type="pt",
        trajectory_every=every,
    )
    image_grid(to_pil_images(result.images * 2 - 1)).save(out)
    print(f"wrote {out}")
    if args.trajectory:
        trajectory_strip(result.trajectory).save(trajectory_out)
        print(f"wrote {trajectory_out}")
