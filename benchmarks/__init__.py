# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The benchmarks: each `bench_*.py` (and `gpu_check.py`) measures one claim of the README, by hand, never in the tests.

Run them as modules from the repository root, where `ddpm_hf` is the checkout's (or the editable install's):

    python -m benchmarks.bench_train --help

They share three helpers, imported package-relative (`from .timing import ...`): `timing` (pinned torch threads,
rotating rounds, per-round ratios), `training_runs` (the trainer's command line) and `estimates` (a mean and its
standard error); `digit_judging` serves the two benchmarks that judge conditional samples with a digit classifier.
"""
