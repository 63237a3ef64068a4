# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""`ddpm-hf fid`: FID and KID (or, on the embedded digit sets, the digit-feature FD and KD) of a pipeline's samples
against real images, with a JSON of the numbers and how they were measured.

On several processes: `accelerate launch -m ddpm_hf.cli fid ...` (each process samples its share of the images)."""

import json
import os
from typing import Any

from diffusers.utils import logging as diffusers_logging

from ..evaluation import ReferenceSet, evaluate_sample_quality
from ..evaluation.data_spec import source_arguments
from ..evaluation.sampling import rank_and_world
from ..io import write_text_atomically
from ..samplers import use_sampler
from .loading import load_pipeline


def run(args) -> dict[str, Any]:
    """`ddpm-hf fid PIPELINE --data ... --num-images N --steps K`.

    Reads args.pipeline, .data, .split, .num_images, .steps, .scheduler, .eta, .batch_size, .seed, .feature,
    .fid_weights, .cache_dir, .out (None/empty: no JSON), .device. Prints the FD and KD (± its standard deviation
    over subsets); returns the JSON record.
    """
    if args.num_images < 2:
        raise ValueError(f"--num-images must be at least 2 (a covariance needs two samples), got {args.num_images}")
    source_arguments(args.data, flag="--data")  # a bad --data is refused before the pipeline loads (seconds)
    if args.out and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise FileNotFoundError(f"Cannot write {args.out}: its folder does not exist.")
    if args.fid_weights and not os.path.isfile(args.fid_weights):
        raise FileNotFoundError(f"--fid-weights {args.fid_weights}: no such file")

    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # Joins the process group under `accelerate launch` (gloo on CPUs: without cpu=, ACCELERATE_USE_CPU=1 on a
    # machine without GPUs leaves PartialState thinking it is alone); one process otherwise.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    is_main = rank_and_world()[0] == 0
    diffusers_logging.disable_progress_bar()  # "Loading pipeline components..."; sampling keeps its own bar
    pipeline = load_pipeline(args.pipeline, args.device or (str(state.device) if state.num_processes > 1 else None))
    use_sampler(pipeline, args.scheduler)
    pipeline.set_progress_bar_config(disable=not is_main)
    config = pipeline.unet.config
    size = config.sample_size if isinstance(config.sample_size, int) else config.sample_size[0]
    reference = ReferenceSet(args.data, resolution=int(size), channels=config.in_channels, split=args.split)
    result = evaluate_sample_quality(
        pipeline, reference, num_images=args.num_images, num_inference_steps=args.steps, batch_size=args.batch_size,
        seed=args.seed, feature=args.feature, fid_weights=args.fid_weights, cache_dir=args.cache_dir, eta=args.eta,
    )
    record = {"pipeline": args.pipeline, "data": args.data, **result.to_dict()}
    if is_main:  # every process holds the same numbers; one prints them
        print(result.summary())
        if args.out:
            write_text_atomically(args.out, json.dumps(record, indent=2) + "\n")
            print(f"wrote {args.out}")
    return record
