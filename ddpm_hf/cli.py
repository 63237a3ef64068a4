"""The `ddpm-hf` command: sample from a pipeline and draw the forward and reverse processes.

    ddpm-hf sample PIPELINE --num-images 16 --steps 100 --seed 0 --out grid.png [--trajectory traj.png]
    ddpm-hf forward IMAGE --out strip.png
    ddpm-hf nll PIPELINE --data embedded:digits --num-images 256 [--steps 100]
"""

import argparse
import os
import sys
from typing import List, Optional

import torch

FORWARD_TIMESTEPS = (0, 50, 100, 200, 400, 600, 800, 999)
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes seeds in [0, 2**64 - 1] (it wraps negative ones silently)


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad command line gives one line on stderr ("ddpm-hf sample: error: ..."), not the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="ddpm-hf", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    sample = commands.add_parser("sample", help="sample a grid of images from a pipeline (folder or Hub id)")
    sample.add_argument("pipeline", help="a folder written by save_pretrained, or a Hub repo id")
    sample.add_argument("--num-images", type=positive_int, default=16)
    sample.add_argument("--steps", type=positive_int, default=1000, help="ancestral steps (a respaced DDPM chain)")
    sample.add_argument("--seed", type=seed_int, default=0)
    sample.add_argument("--out", default="grid.png", help="where to write the grid (PNG)")
    sample.add_argument("--trajectory", help="also write the reverse-process strip (x_T ... x_0 and x_0 estimates)")
    sample.add_argument("--trajectory-points", type=positive_int, default=10, help="columns in the strip")
    sample.add_argument("--device", type=device_name, default="cuda" if torch.cuda.is_available() else "cpu")

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
    nll.add_argument("--device", type=device_name, default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


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
    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r} (cpu, cuda, cuda:1, mps, ...)") from None
    return text


def one_line(text) -> str:
    """Any message (some library errors span several lines) as one line."""
    return " ".join(str(text).split())


def looks_like_local_path(name: str) -> bool:
    """True for what can only be a folder: an existing path, ./x, ../x, /x, ~/x, or a/b/c (a Hub id is owner/name)."""
    return (
        os.path.exists(name)
        or name.startswith((".", "/", "~"))
        or name.endswith("/")
        or name.count("/") > 1
        or (os.path.sep != "/" and os.path.sep in name)
    )


def load_pipeline(name_or_path: str, device: str):
    """A saved ddpm-hf pipeline from a folder or the Hub (owner/name, or the cached copy offline), on `device`."""
    from .pipeline_ddpm_hf import DDPMImagePipeline

    if os.path.isdir(name_or_path):
        if not os.path.isfile(os.path.join(name_or_path, "model_index.json")):
            raise FileNotFoundError(f"{name_or_path} has no model_index.json: it is not a saved pipeline.")
    elif looks_like_local_path(name_or_path):
        raise FileNotFoundError(f"No pipeline folder at {name_or_path}.")
    else:
        try:
            from .hub import resolve_pipeline_folder

            name_or_path = resolve_pipeline_folder(name_or_path)
        except (OSError, ValueError) as error:  # not found, offline without a cached copy, an invalid repo id
            raise FileNotFoundError(
                f"No pipeline folder at {name_or_path}, and no Hub repo of that id ({one_line(error)})"
            ) from None
    pipeline = DDPMImagePipeline.from_pretrained(name_or_path)
    return pipeline.to(device)


def output_path(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Cannot write {path}: folder {folder} does not exist.")
    return path


def run_sample(args) -> None:
    from .visualization import image_grid, to_pil_images, trajectory_strip

    out = output_path(args.out)
    trajectory_out = output_path(args.trajectory) if args.trajectory else None  # fail before sampling, not after
    pipeline = load_pipeline(args.pipeline, args.device)
    every = max(1, args.steps // args.trajectory_points) if args.trajectory else None
    result = pipeline(
        batch_size=args.num_images,
        generator=torch.Generator(device="cpu").manual_seed(args.seed),
        num_inference_steps=args.steps,
        output_type="pt",
        trajectory_every=every,
    )
    image_grid(to_pil_images(result.images * 2 - 1)).save(out)
    print(f"wrote {out}")
    if args.trajectory:
        trajectory_strip(result.trajectory).save(trajectory_out)
        print(f"wrote {trajectory_out}")


def run_forward(args) -> None:
    from .scheduling_ddpm_posterior import DDPMPosteriorScheduler
    from .visualization import forward_process_strip, load_image_as_tensor

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


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; every failure is one line on stderr, "ddpm-hf COMMAND: error: ...", and exit status 2.

    Set DDPM_HF_TRACEBACK=1 to get the traceback of an unexpected error instead.
    """
    args = build_parser().parse_args(argv)
    from diffusers.utils import logging as diffusers_logging

    from .likelihood import run_nll_command

    diffusers_logging.disable_progress_bar()  # "Loading pipeline components..."; the sampling bar stays
    commands = {"sample": run_sample, "forward": run_forward, "nll": run_nll_command}
    prefix = f"ddpm-hf {args.command}: error:"
    try:
        commands[args.command](args)
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


if __name__ == "__main__":
    sys.exit(main())
