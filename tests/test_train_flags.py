# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The trainer's flags as a user meets them: `--help` that describes every flag with its default (the preset's value
where a preset fills it in), and a parser that imports nothing heavy, so that help and a refused flag are instant."""

import re

import pytest
from support.processes import run_python

from ddpm_hf.presets import DEFAULT_PRESET, available_presets, load_preset
from ddpm_hf.trainer.config import SAYS_ITS_DEFAULT, build_parser, parse_args

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


def help_entries(argv, monkeypatch, capsys) -> dict[str, str]:
    """`parse_args([*argv, "--help"])`'s output, one entry per flag: its first option string -> its lines joined."""
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps to the terminal: the same lines on every machine
    with pytest.raises(SystemExit) as done:
        parse_args([*argv, "--help"])
    assert done.value.code == 0
    entries, flag = {}, None
    for line in capsys.readouterr().out.splitlines():
        starts = re.match(r"  (-[^\s,]+)", line)  # an entry's first line; its wrapped lines are indented further
        if starts:
            flag = starts.group(1)
            entries[flag] = line
        elif flag and line.startswith("   "):
            entries[flag] += line
        else:
            flag = None  # a blank line or a group's title ends the entry
    return {flag: " ".join(text.split()) for flag, text in entries.items()}


def test_every_flag_is_described_and_its_help_shows_its_default(monkeypatch, capsys):
    options = [action for action in build_parser()._actions if action.option_strings]
    entries = help_entries([], monkeypatch, capsys)
    preset = load_preset(DEFAULT_PRESET).training
    assert len(options) > 70 and set(entries) == {action.option_strings[0] for action in options}
    for action in options:
        flag, entry = action.option_strings[0], entries[action.option_strings[0]]
        assert action.help and action.help.strip(), f"{flag} has no help"
        assert len(SAYS_ITS_DEFAULT.findall(entry)) <= 1, f"{flag} says 'default' twice: {entry}"
        if action.dest in preset:
            assert f"default: {preset[action.dest]} from preset {DEFAULT_PRESET}" in entry, entry
        elif action.default is not None and flag != "-h":
            # The formatter adds it, unless the help itself says what the default is.
            assert f"(default: {action.default})" in entry or SAYS_ITS_DEFAULT.search(action.help), entry
    # What a user reads, literally: the preset's value, and the parser's where there is no preset.
    assert "(default: 4500 from preset mnist-16)" in entries["--max_train_steps"]
    assert "(default: 0.001 from preset mnist-16, otherwise 0.0001)" in entries["--learning_rate"]
    assert "(default: 100 from preset mnist-16)" in entries["--validation_inference_steps"]  # the same either way
    assert "(default: 0)" in entries["--seed"] and "(default: epsilon)" in entries["--prediction_type"]
    assert "(default: False)" in entries["--gradient_checkpointing"]
    no_preset = help_entries(["--model_config_name_or_path", "unet.json"], monkeypatch, capsys)
    assert no_preset["--learning_rate"].endswith("(default: 0.0001)") and "preset" not in no_preset["--seed"]


@pytest.mark.parametrize("name", available_presets())
def test_a_presets_help_shows_every_value_it_fills_in(name, monkeypatch, capsys):
    entries = help_entries(["--preset", name], monkeypatch, capsys)
    for flag, value in load_preset(name).training.items():
        assert f"default: {value} from preset {name}" in entries[f"--{flag}"], entries[f"--{flag}"]


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
