# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The trainer's flags as a user meets them: `--help` that describes every flag with its default (the preset's value
where a preset fills it in), and a parser that imports nothing heavy, so that help and a refused flag are instant."""

from conftest import run_python

HEAVY_MODULES = ("torch", "diffusers", "transformers", "accelerate", "datasets", "numpy", "PIL", "sklearn")


def test_parsing_and_help_import_no_heavy_module(tmp_path):
    """Deterministic where a timing is not: what is not imported costs nothing (the whole --help took 5.3 s while
    the flags' names came from the modules that implement them)."""
    out = run_python(f"""
        import contextlib, io, sys
        from ddpm_hf.trainer.config import parse_args
        for argv in ([], ["--preset", "tiny"], ["--caption_column", "text"], ["--preset", "mnist-16-class"],
                     ["--loss_type", "hybrid", "--variance_type", "learned_range", "--timestep_sampler",
                      "loss-second-moment", "--lr_scheduler", "cosine", "--data_storage", "memmap"]):
            parse_args(argv)
        codes = []
        # Help, a preset's help, and refusals: a range, a loss that cannot train, a flag without its value.
        for argv in (["--help"], ["--preset", "ddpm-cifar10", "--help"], ["--resolution", "4"],
                     ["--loss_type", "hybrid"], ["--preset"]):
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                try:
                    parse_args(argv)
                except SystemExit as done:
                    codes.append(done.code)
        print(codes)
        print(sorted(name for name in {HEAVY_MODULES!r} if name in sys.modules))
    """, cwd=tmp_path)
    assert out.splitlines() == ["[0, 0, 2, 2, 2]", "[]"]


def test_the_names_behind_the_flags_are_the_ones_their_implementations_know():
    """ddpm_hf/choices.py keeps the names light; each is the list of the code that implements it (the registries
    also assert theirs at import; the scheduler and diffusers cannot import choices.py, so this is their check)."""
    from diffusers.optimization import SchedulerType

    from ddpm_hf import choices
    from ddpm_hf import scheduling_ddpm_posterior as scheduler
    from ddpm_hf.diffusion.losses import LOSSES
    from ddpm_hf.diffusion.timestep_samplers import TIMESTEP_SAMPLERS
    from ddpm_hf.text.encoders import TEXT_ENCODER_PRESETS

    assert choices.LR_SCHEDULERS == tuple(kind.value for kind in SchedulerType)
    assert choices.BETA_SCHEDULES == scheduler.BETA_SCHEDULES
    assert choices.PREDICTION_TYPES == scheduler.PREDICTION_TYPES
    # The trainer leaves out fixed_small_log only: the same distribution as fixed_small, kept for diffusers' configs.
    assert set(scheduler.VARIANCE_TYPES) - set(choices.TRAINED_VARIANCE_TYPES) == {"fixed_small_log"}
    assert choices.LOSS_TYPES == tuple(LOSSES)
    assert choices.TIMESTEP_SAMPLER_NAMES == tuple(TIMESTEP_SAMPLERS)
    assert choices.BUILTIN_TEXT_ENCODERS == tuple(choices.BUILTIN_PREFIX + name for name in TEXT_ENCODER_PRESETS)
