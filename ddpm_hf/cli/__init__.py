# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The `ddpm-hf` command: train a DDPM, sample from a pipeline and draw the forward and reverse processes.

    ddpm-hf train --preset tiny --max_train_steps 50 --output_dir ddpm-tiny   (ddpm-hf train --help: every flag)
    ddpm-hf sample PIPELINE --num-images 16 --steps 100 --seed 0 --out grid.png [--trajectory traj.png]
    ddpm-hf sample PIPELINE --scheduler dpm-solver++ --steps 20
    ddpm-hf forward IMAGE --out strip.png
    ddpm-hf nll PIPELINE --data embedded:digits --num-images 256 [--steps 100]
    ddpm-hf fid PIPELINE --data embedded:digits --num-images 1000 --steps 100 [--out fid.json]
"""

import argparse
import importlib
import os
import sys

from ..errors import OneLineArgumentParser, one_line
from ..samplers import DEFAULT_SAMPLER, SAMPLERS

FORWARD_TIMESTEPS = (0, 50, 100, 200, 400, 600, 800, 999)
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes seeds in [0, 2**64 - 1] (it wraps negative ones silently)
# The README's recommendation for the default sampler: on the default model a respaced 100-step DDPM chain is within
# the FD's noise of 250 steps (bench_recipe), and dpm-solver++ does as well with 20 (bench_quality).
DEFAULT_STEPS = 100
STEPS_HELP = (f"steps of the sampler's chain (default {DEFAULT_STEPS}, as the README recommends for ddpm; 1000 is the"
              " full chain; dpm-solver++ does well with 20)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="ddpm-hf", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    # Listed here for `ddpm-hf --help`; `main` hands everything after `train` to the trainer, which parses it.
    commands.add_parser("train", add_help=False, help="train a DDPM into a pipeline folder (the trainer's own"
                        " flags: ddpm-hf train --help)")
    sample = commands.add_parser("sample", help="sample a grid of images from a pipeline (folder or Hub id)")
    sample.add_argument("pipeline", help="a folder written by save_pretrained, or a Hub repo id")
    sample.add_argument("--num-images", type=positive_int, default=16)
    sample.add_argument("--steps", type=positive_int, default=DEFAULT_STEPS, help=STEPS_HELP)
    add_sampler_arguments(sample)
    sample.add_argument("--seed", type=seed_int, default=0)
    sample.add_argument("--out", default="grid.png", help="where to write the grid (PNG)")
    sample.add_argument("--trajectory", help="also write the reverse-process strip (x_T ... x_0 and x_0 estimates)")
    sample.add_argument("--trajectory-points", type=positive_int, default=10, help="columns in the strip")
    sample.add_argument("--device", type=device_name, default=None, help="default: cuda if available, else cpu")
    sample.add_argument("--class", dest="class_labels", nargs="+", metavar="CLASS", help="class-conditional"
                        " pipelines: the class of every image (one), or of each (one per image): names or numbers")
    sample.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance with --class"
                        " (1: none)")

    forward = commands.add_parser("forward", help="draw q(x_t | x_0) at a few t for one image")
    forward.add_argument("image", help="an image file")
    forward.add_argument("--out", default="forward.png")
    forward.add_argument("--timesteps", type=int, nargs="+", default=list(FORWARD_TIMESTEPS))
    forward.add_argument("--resolution", type=positive_int, default=None, help="resize the image first")
    forward.add_argument("--seed", type=seed_int, default=0)
    forward.add_argument("--scheduler", help="a pipeline folder whose scheduler to use (default: DDPM's linear)")
    nll = commands.add_parser("nll", help="the variational bound (bits/dim) of a pipeline on data")
    nll.add_argument("pipeline", help="a folder written by save_pretrained, or a Hub repo id")
    nll.add_argument("--data", default="embedded:digits",
                     help="embedded:digits, embedded:mnist, an image folder, or a datasets name/path")
    nll.add_argument("--num-images", type=positive_int, default=64, help="images to evaluate (a seeded subset)")
    nll.add_argument("--batch-size", type=positive_int, default=64, help="(image, timestep) pairs per model call")
    nll.add_argument("--steps", type=positive_int, default=None,
                     help="bound a respaced chain of this many steps (default: the full training chain)")
    nll.add_argument("--seed", type=seed_int, default=0)
    nll.add_argument("--out-png", default="nll_terms.png", help="plot of the mean term per timestep")
    nll.add_argument("--out-json", default="nll.json", help="the numbers, as JSON")
    nll.add_argument("--device", type=device_name, default=None, help="default: cuda if available, else cpu")

    fid = commands.add_parser("fid", help="FID/KID (digit-feature FD/KD on embedded digits) of a pipeline's samples")
    fid.add_argument("pipeline", help="a folder written by save_pretrained, or a Hub repo id")
    fid.add_argument("--data", default="embedded:digits", help="the real images: embedded:digits, embedded:mnist, or "
                     "an image folder")
    fid.add_argument("--split", choices=("all", "train", "test"), default="all",
                     help="all the real images, or a fixed 80%% train / 20%% test part of them")
    fid.add_argument("--num-images", type=positive_int, default=1000, help="samples to draw (at least 2)")
    fid.add_argument("--steps", type=positive_int, default=DEFAULT_STEPS, help=STEPS_HELP)
    add_sampler_arguments(fid)
    fid.add_argument("--batch-size", type=positive_int, default=64, help="images per pipeline call")
    fid.add_argument("--seed", type=seed_int, default=0, help="image i is drawn with a generator seeded by (seed, i)")
    fid.add_argument("--feature", choices=("auto", "digits", "inception"), default="auto",
                     help="auto: the digit feature network on embedded sets, Inception-v3 (FID) otherwise")
    fid.add_argument("--fid-weights", default=None, help="a local Inception-v3 FID weights file (offline; default: "
                     "$DDPM_HF_FID_WEIGHTS, then torch.hub's cache, then a download)")
    fid.add_argument("--cache-dir", default=None, help="for reference features and the digit network (default: "
                     "$DDPM_HF_CACHE, else $HF_HOME/ddpm-hf, else ~/.cache/ddpm-hf)")
    fid.add_argument("--out", default="fid.json", help="the numbers and how they were measured, as JSON")
    fid.add_argument("--device", type=device_name, default=None, help="default: cuda if available, else cpu")
    return parser


def add_sampler_arguments(command) -> None:
    command.add_argument("--scheduler", choices=tuple(SAMPLERS), default=DEFAULT_SAMPLER, metavar="NAME",
                         help=f"the sampler, built from the pipeline's scheduler config: {', '.join(SAMPLERS)}"
                         f" (default: {DEFAULT_SAMPLER}, ancestral sampling on the respaced posterior)")
    command.add_argument("--eta", type=float, default=0.0, help="DDIM's eta, for the samplers that take it (0:"
                         " deterministic DDIM, 1: DDPM-like noise)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def seed_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**64 - 1], got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**64 - 1], got {text}")
    return value


def device_name(text: str) -> str:
    import torch  # only when --device is given: `--help` and the parser stay free of torch

    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r} (cpu, cuda, cuda:1, mps, ...)") from None
    return text


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr, "ddpm-hf COMMAND: error: ...", and exit status 2.

    Set DDPM_HF_TRACEBACK=1 to get the traceback of an unexpected error instead. `ddpm-hf train ...` is the trainer
    (ddpm_hf/train.py), with its own flags, one-line errors and exit codes.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        from ..train import main as train

        return train(argv[1:], prog="ddpm-hf train")
    args = build_parser().parse_args(argv)
    prefix = f"ddpm-hf {args.command}: error:"
    try:
        # Each command's module (ddpm_hf/cli/<command>.py, with its `run`) imports what it uses (torch, diffusers)
        # only now, so `ddpm-hf --help` starts in well under a second.
        importlib.import_module(f"{__name__}.{args.command}").run(args)
    except (ValueError, OSError) as error:  # OSError covers missing files and failed Hub look-ups
        print(f"{prefix} {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix} interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # torch, safetensors, a bad --device: still one line, with the error's type
        if os.environ.get("DDPM_HF_TRACEBACK"):
            raise
        print(f"{prefix} {type(error).__name__}: {one_line(error)} (DDPM_HF_TRACEBACK=1 shows where)", file=sys.stderr)
        return 2
    return 0

