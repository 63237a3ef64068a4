# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""`ddpm-hf forward`: draws of q(x_t | x_0) at a few timesteps for one image (Ho et al. 2020, eq. 4)."""

import os

import torch

from ..scheduling_ddpm_posterior import DDPMPosteriorScheduler
from ..visualization import forward_process_strip, load_image_as_tensor
from .loading import output_path


def run(args) -> None:
    out = output_path(args.out)
    if args.scheduler:
        scheduler = DDPMPosteriorScheduler.from_pretrained(args.scheduler, subfolder="scheduler")
    else:
        scheduler = DDPMPosteriorScheduler()
    T = scheduler.config.num_train_timesteps
    bad = [t for t in args.timesteps if not 0 <= t < T]
    if bad:
        raise ValueError(f"--timesteps must lie in [0, {T - 1}], got {bad}.")
    if not os.path.isfile(args.image):
        raise FileNotFoundError(f"No image file at {args.image}.")
    try:
        x_0 = load_image_as_tensor(args.image, args.resolution)
    except Exception as error:  # PIL raises several types for unreadable files
        raise ValueError(f"Cannot read {args.image} as an image ({error}).") from None
    generator = torch.Generator().manual_seed(args.seed)
    forward_process_strip(scheduler, x_0, args.timesteps, generator).save(out)
    print(f"wrote {out}")
