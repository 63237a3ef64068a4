#!/usr/bin/env python
# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The clone's entry point of the trainer, for `accelerate launch training/train.py ...` (and `python
training/train.py ...`): the same command as `ddpm-hf train` and `accelerate launch -m ddpm_hf.train` of a pip
install, whose usage, flags and exit codes ddpm_hf/train.py gives. The story of a run, flags -> data -> model ->
loop -> save, is ddpm_hf/trainer/run.py.

    accelerate launch --quiet training/train.py                        # the default: MNIST digits, ~10 min on 2 CPUs
    accelerate launch --quiet training/train.py --preset tiny --max_train_steps 50 --output_dir ddpm-tiny
"""

import sys

from ddpm_hf.train import main

if __name__ == "__main__":
    sys.exit(main())
