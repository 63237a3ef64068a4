# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The training command as a pip install has it (`ddpm-hf train`, `python -m ddpm_hf.train`, `accelerate launch -m
ddpm_hf.train`: ddpm_hf/train.py), and what a run checks of the machine before it starts (ddpm_hf/trainer/preflight.py:
the optional packages its flags need, the Hub for the Hub ids they name)."""

import json
import os
import subprocess
import sys

import pytest
from support.processes import free_port, run_python
from support.training import TINY, run_env

ENTRY_POINT = os.path.join(os.path.dirname(sys.executable), "ddpm-hf")
HEAVY = ("torch", "diffusers", "accelerate", "transformers", "datasets")


def run(command: list, cwd, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*map(str, command)], cwd=cwd, env=run_env(), capture_output=True, text=True,
                          timeout=timeout)


# ----------------------------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------------------------
def test_python_m_ddpm_hf_train_help_answers_before_anything_heavy_is_imported():
    """What `python -m ddpm_hf.train --help` runs (runpy, as -m does), with what it imported besides the flags'
    module."""
    out = run_python(f"""
        import contextlib, io, json, runpy, sys
        import ddpm_hf.trainer.config
        config = sorted(m for m in {HEAVY!r} if m in sys.modules)
        sys.argv = ["train.py", "--help"]
        with contextlib.redirect_stdout(io.StringIO()) as text:
            try:
                runpy.run_module("ddpm_hf.train", run_name="__main__", alter_sys=True)
            except SystemExit as done:
                code = done.code
        print(json.dumps({{"config": config, "train": sorted(m for m in {HEAVY!r} if m in sys.modules),
                          "code": code, "help": text.getvalue()}}))
    """)
    result = json.loads(out)
    assert result["code"] == 0, result
    assert "--max_train_steps" in result["help"] and "--resume_from_checkpoint" in result["help"]
    assert result["config"] == [], "ddpm_hf/trainer/config.py imports something heavy"
    assert result["train"] == [], "ddpm_hf/train.py, or --help, imports something heavy of its own"


def test_ddpm_hf_train_help_is_the_trainers(tmp_path):
    result = run([ENTRY_POINT, "train", "--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage: ddpm-hf train ")
    assert "--max_train_steps" in result.stdout and "--resume_from_checkpoint" in result.stdout


def test_ddpm_hf_train_writes_a_pipeline_that_loads(tmp_path):
    output_dir = tmp_path / "out"
    result = run([ENTRY_POINT, "train", *TINY, "--max_train_steps", "2", "--checkpointing_steps", "0",
                  "--validation_steps", "0", "--eval_fid_images", "0", "--report_to", "none",
                  "--output_dir", output_dir], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (output_dir / "model_index.json").is_file()
    assert (output_dir / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    card = (output_dir / "README.md").read_text()
    assert "| Training steps | 2 |" in card and "| Steps trained | 2 |" in card
    assert not (output_dir / ".ddpm-hf-run.lock").exists()

    from ddpm_hf import DDPMImagePipeline

    pipeline = DDPMImagePipeline.from_pretrained(output_dir)
    assert pipeline.unet.config.sample_size == 8 and pipeline.unet.config.in_channels == 1


def test_a_failure_under_accelerate_launch_quiet_prints_its_line_once(tmp_path):
    """Without --quiet, accelerate prints the child's last lines again under a CalledProcessError traceback."""
    output_dir = tmp_path / "out"
    result = run([sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--num_processes", "1",
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "ddpm_hf.train",
                  "--learning_rate", "-1", "--output_dir", output_dir],
                 cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]  # accelerate's code for any failure of its process
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "--learning_rate must be greater than 0, got -1.0" in lines[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "CalledProcessError" not in result.stderr
    assert not output_dir.exists()


# ----------------------------------------------------------------------------------------------------------------
# The machine: optional packages and the Hub, checked before anything is loaded or written (in-process)
# ----------------------------------------------------------------------------------------------------------------
def flags(*argv):
    from ddpm_hf.trainer.config import parse_args

    return parse_args(["--preset", "tiny", "--output_dir", "unused", *argv])


def test_the_optional_packages_a_run_needs_are_named_with_their_install(monkeypatch):
    from ddpm_hf.trainer.config import FlagError
    from ddpm_hf.trainer.preflight import check_optional_packages

    for package in ("wandb", "torchdata", "torch_fidelity"):
        monkeypatch.setitem(sys.modules, package, None)  # as if not installed: find_spec answers None
    check_optional_packages(flags())  # the default run needs none of them

    with pytest.raises(FlagError) as missing:
        check_optional_packages(flags("--report_to", "wandb", "--train_data_dir", "pictures",
                                      "--eval_fid_images", "8"))
    [wandb, fidelity] = str(missing.value).split("; --")
    assert wandb == "--report_to wandb needs wandb: pip install wandb (or pass --report_to tensorboard)"
    assert "install that torchvision first, from where your torch came from" in fidelity
    assert fidelity.endswith("then pip install torch-fidelity; or pass --eval_fid_images 0")
    check_optional_packages(flags("--eval_fid_images", "8"))  # embedded digits: the digit-feature FD, no Inception

    with pytest.raises(FlagError, match=r"^--streaming needs torchdata, .*: pip install torchdata$"):
        check_optional_packages(flags("--streaming", "--dataset_name", "someone/pictures", "--max_train_steps", "2"))


@pytest.fixture
def hub_unreachable(monkeypatch, tmp_path):
    """The Hub switched on, at an address where nothing listens (connection refused at once); empty caches."""
    from datasets import config as datasets_config
    from huggingface_hub import constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setattr(hub_constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(datasets_config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    return endpoint


def test_hub_ids_fail_at_once_when_the_hub_cannot_be_reached(hub_unreachable, tmp_path, caplog):
    from accelerate import PartialState

    from ddpm_hf.data import DataError
    from ddpm_hf.text.components import TextEncoderError
    from ddpm_hf.trainer.preflight import check_the_hub
    from ddpm_hf.trainer.publishing import HubRepoError

    unreachable = f"the Hub cannot be reached at {hub_unreachable} (ConnectError"
    with pytest.raises(DataError) as dataset:
        check_the_hub(flags("--dataset_name", "someone/pictures"))
    assert unreachable in str(dataset.value) and "train on local data instead (--train_data_dir" in str(dataset.value)
    with pytest.raises(TextEncoderError, match=r"is a Hub id, and the Hub cannot be reached .* builtin:tiny"):
        check_the_hub(flags("--caption_column", "text", "--text_encoder_name_or_path", "someone/clip"))
    with pytest.raises(HubRepoError, match=r"train without --push_to_hub, then publish the folder with"):
        check_the_hub(flags("--push_to_hub", "--hub_model_id", "someone/ddpm"))
    check_the_hub(flags("--dataset_name", str(tmp_path)))  # a local folder needs no Hub, nor does the default run
    check_the_hub(flags())

    # A dataset `datasets` has prepared before loads from its cache: the run goes on, told how to skip the retries.
    (tmp_path / "datasets" / "someone___pictures" / "default" / "0.0.0" / "abc123").mkdir(parents=True)
    PartialState(cpu=True)  # accelerate's logger needs it
    with caplog.at_level("WARNING"):
        check_the_hub(flags("--dataset_name", "someone/pictures"))
    assert "the cached copies of someone/pictures are used; set HF_HUB_OFFLINE=1" in caplog.text
