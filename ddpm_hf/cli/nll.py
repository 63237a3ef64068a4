# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""`ddpm-hf nll`: the variational bound (bits/dim) of a saved pipeline on a data set, with a plot of its terms."""

import json
import os
from pathlib import Path
from typing import Any

import torch
from diffusers.utils import logging as diffusers_logging

from ..data.hf_datasets import is_saved_dataset
from ..data.pixels import to_model_range
from ..data.sources import load_image_dataset
from ..diffusion.likelihood import as_posterior_scheduler, variational_bound
from ..io import write_text_atomically
from ..visualization import plot_terms
from .loading import load_pipeline


def load_evaluation_images(data: str, num_images: int, resolution: int, channels: int, seed: int) -> torch.Tensor:
    """`num_images` images of `data` (embedded:NAME, an image folder, or a datasets name/path) in [-1, 1]."""
    options = dict(resolution=resolution, channels=channels, max_train_samples=num_images, seed=seed)
    if data.startswith("embedded:"):
        dataset = load_image_dataset(embedded=data.split(":", 1)[1], **options)
    elif os.path.isdir(data) and not is_saved_dataset(Path(data)):
        dataset = load_image_dataset(train_data_dir=data, **options)
    else:
        dataset = load_image_dataset(dataset_name=data, **options)
    return to_model_range(dataset.pixels)


def run(args) -> dict[str, Any]:
    """`ddpm-hf nll PIPELINE --data ... --num-images N`: the bound of a saved pipeline on a data set.

    Reads args.pipeline, .data, .num_images, .batch_size, .steps (None: the full chain), .seed, .out_png, .out_json
    (either may be None/empty to skip), .device. Prints the mean total bits/dim with its standard error and the
    prior and decoder means; returns the JSON record.
    """
    for out in (args.out_png, args.out_json):
        if out and not os.path.isdir(os.path.dirname(os.path.abspath(out))):
            raise FileNotFoundError(f"Cannot write {out}: its folder does not exist.")
    diffusers_logging.disable_progress_bar()  # "Loading pipeline components..."; the bound's bar stays
    pipeline = load_pipeline(args.pipeline, args.device)
    unet, scheduler = pipeline.unet, pipeline.scheduler
    size = unet.config.sample_size
    if not isinstance(size, int):
        if len(set(size)) != 1:
            raise ValueError(f"The UNet's sample_size {tuple(size)} is not square; nll needs square images.")
        size = int(size[0])
    images = load_evaluation_images(args.data, args.num_images, size, unet.config.in_channels, args.seed)

    if args.steps is None:  # the full training chain, whatever chain the saved scheduler was left on
        scheduler = as_posterior_scheduler(scheduler)
        steps = list(range(scheduler.config.num_train_timesteps - 1, -1, -1))
    else:
        steps = args.steps
    bound = variational_bound(
        unet, scheduler, images, generator=torch.Generator().manual_seed(args.seed), batch_size=args.batch_size,
        timesteps=steps,
    )
    summary = bound.summary()
    print(
        f"NLL bound on {summary['num_images']} images ({len(bound.timesteps)}-step chain): "
        f"{summary['total_bpd']:.4f} ± {summary['total_bpd_stderr']:.4f} bits/dim "
        f"(prior {summary['prior_bpd']:.3g}, decoder {summary['decoder_bpd']:.4f}, "
        f"denoising {summary['denoising_bpd']:.4f})"
    )
    record = {
        "pipeline": args.pipeline,
        "data": args.data,
        "seed": args.seed,
        "steps": len(bound.timesteps),
        **summary,
        "timesteps": bound.timesteps.tolist(),
        "mean_terms_bpd": bound.terms_bpd.mean(0).tolist(),
        "per_image_total_bpd": bound.total_bpd.tolist(),
    }
    if args.out_png:
        plot_terms(bound, args.out_png, title=f"{args.pipeline} on {args.data}")
        print(f"wrote {args.out_png}")
    if args.out_json:
        write_text_atomically(args.out_json, json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out_json}")
    return record
