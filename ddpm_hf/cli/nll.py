# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""`ddpm-hf nll`: the variational bound (bits/dim) of a saved pipeline on a data set, with a plot of its terms."""

import os
from typing import Any

import torch
from diffusers.utils import logging as diffusers_logging

from ..diffusion.likelihood import as_posterior_scheduler, variational_bound
from ..evaluation.data_spec import load_evaluation_images, source_arguments
from ..evaluation.nll_report import chain_name, describe_bound, write_nll_report
from .loading import load_pipeline


def run(args) -> dict[str, Any]:
    """`ddpm-hf nll PIPELINE --data ... --num-images N`: the bound of a saved pipeline on a data set.

    Reads args.pipeline, .data, .num_images, .batch_size, .steps (None: the full chain), .seed, .out_png, .out_json
    (either may be None/empty to skip), .device. Prints the mean total bits/dim with its standard error and the
    prior and decoder means; returns the JSON record.
    """
    for out in (args.out_png, args.out_json):
        if out and not os.path.isdir(os.path.dirname(os.path.abspath(out))):
            raise FileNotFoundError(f"Cannot write {out}: its folder does not exist.")
    source_arguments(args.data, flag="--data", datasets=True)  # an unknown embedded set, before the pipeline loads
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
    how = describe_bound(bound, chain=chain_name(args.steps), images=f"{len(images)} images of {args.data}")
    record = write_nll_report(bound, description=how, pipeline=args.pipeline, data=args.data, seed=args.seed,
                              json_path=args.out_json, png_path=args.out_png, title=f"{args.pipeline} on {args.data}")
    print(
        f"NLL bound on {record['num_images']} images ({record['steps']}-step chain): "
        f"{record['total_bpd']:.4f} ± {record['total_bpd_stderr']:.4f} bits/dim "
        f"(prior {record['prior_bpd']:.3g}, decoder {record['decoder_bpd']:.4f}, "
        f"denoising {record['denoising_bpd']:.4f})"
    )
    for out in (args.out_png, args.out_json):
        if out:
            print(f"wrote {out}")
    return record
