# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The training command: train a DDPM (Ho et al. 2020) and save it as a pipeline folder in --output_dir.

    ddpm-hf train                                          # the default: MNIST digits, ~10 min on 2 CPU cores
    ddpm-hf train --preset tiny --max_train_steps 50 --output_dir ddpm-tiny   # a smoke run in seconds
    python -m ddpm_hf.train --preset ddpm-cifar10          # the paper's CIFAR-10 model (data from the Hub)
    accelerate launch --quiet -m ddpm_hf.train --preset tiny --train_data_dir my_pictures --resolution 32
    accelerate launch --quiet training/train.py --preset mnist-16-text    # from a clone: text to image on digits
    ddpm-hf train --help                                   # every flag, with its default

`ddpm-hf train` and `python -m ddpm_hf.train` train in this process (one CPU, or one GPU); `accelerate launch` runs one
process per GPU (or --num_processes on CPUs) and passes its own flags (mixed precision, threads) to each. The run
itself, flags -> data -> model -> loop -> save, is ddpm_hf/trainer/run.py.

Failures print one line, "error: ...", saying what to do, and exit with a code that tells them apart:
0 done, 2 bad flags, data or checkpoint, a missing optional package, or the folder is in use, 3 the loss diverged,
4 the final upload to the Hub failed (the output folder is complete), 5 the Hub repo could not be created before
training, 6 no space left to write, 75 interrupted (resume with --resume_from_checkpoint latest), 130 stopped at once
by a second signal (3 s or more after the first). `accelerate launch` reports any failure of its processes as its own
exit code 1: pass it --quiet (`accelerate launch --quiet ...`), or it prints the trainer's last lines again under a
traceback of its own; the line printed says which failure it was.
"""

import os
import sys

from .presets import PresetError
from .trainer.config import parse_args


def main(argv=None, prog: str | None = None) -> int:
    """Train as the command line says; the exit code (see the module's docstring). `prog`: what usage and errors call
    the command (default: the script's name)."""
    try:
        args = parse_args(argv, prog=prog)  # --help and a bad flag exit here (SystemExit: 0, or 2 and one line)
    except PresetError as err:
        report(f"error: {err}")
        return 2
    # Imported after parsing, so that --help and a bad flag answer before torch loads.
    from .data import DataError
    from .hub import HubPushError
    from .io import OutOfSpaceError
    from .text.components import TextEncoderError
    from .trainer.checkpoints import CheckpointError
    from .trainer.config import FlagError
    from .trainer.interrupts import TrainingInterrupted
    from .trainer.monitoring import NonFiniteLossError
    from .trainer.publishing import HubRepoError
    from .trainer.run import train
    from .trainer.run_lock import RunLockedError

    # The failures whose own message is the line to print, and their exit codes.
    exit_codes = {DataError: 2, PresetError: 2, CheckpointError: 2, TextEncoderError: 2, FlagError: 2,
                  RunLockedError: 2, HubPushError: 4, HubRepoError: 5, OutOfSpaceError: 6}
    try:
        train(args)
    except tuple(exit_codes) as err:
        report(f"error: {err}")
        return next(code for kind, code in exit_codes.items() if isinstance(err, kind))
    except NonFiniteLossError as err:
        report(f"error: training diverged: {err}; {err.checkpoints}. Lower --learning_rate (or"
               " lengthen --lr_warmup_steps), then rerun with --resume_from_checkpoint latest: the new rate takes"
               " effect from the resumed step.")
        return 3
    except TrainingInterrupted as err:
        report(f"{err}; resume with --resume_from_checkpoint latest")
        return 75
    except KeyboardInterrupt:
        report("stopped at once by a second signal; resume from the newest checkpoint with"
               " --resume_from_checkpoint latest")
        return 130
    return 0


def report(message: str) -> None:
    """Print a one-line message once, from the first process of the launch (every process fails the same way)."""
    if os.environ.get("RANK", "0") == "0":
        print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
