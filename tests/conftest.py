# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Shared fixtures: tiny models built offline, and an isolated Hugging Face cache per test session."""

import os
import shutil
import subprocess
import sys
import textwrap

# Tiny models gain nothing from intra-op threads, and lose a lot when two test processes share 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

torch.set_num_threads(1)

# Keep diffusers' dynamic-module cache and the Hub cache inside the test session, and never touch the network.
_SESSION_HOME = os.path.join(os.environ.get("PYTEST_TMPDIR", "/tmp"), f"ddpm-hf-tests-{os.getpid()}")
os.environ.setdefault("HF_HOME", os.path.join(_SESSION_HOME, "hf-home"))
os.environ.setdefault("HF_MODULES_CACHE", os.path.join(_SESSION_HOME, "hf-modules"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


# The files that run whole real trainings, longest first (seconds on 2 cores, 2026-12-04: 219, 160, 145, 106, 86,
# 65, 60, 56, 41, 38, 33); every other file takes under 30 s.
LONGEST_FILES = ["test_train_reliability", "test_train_text_to_image", "test_train", "test_train_data_storage",
                 "test_train_class_conditional", "test_hub", "test_cli", "test_train_streaming",
                 "test_class_conditional", "test_train_signals", "test_fid"]


def pytest_collection_modifyitems(session, config, items):
    """The longest files first, longest first, the rest after: pytest-xdist's --dist loadfile hands each file to the
    next free worker in this order, so the workers finish together instead of one running a long file alone at the
    end while the other waits (greedy longest-first scheduling). A stale order costs only balance, never a result."""
    rank = {name: index for index, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: file order kept otherwise


def pytest_sessionfinish(session, exitstatus):
    """Remove this session's Hugging Face cache and module folder: nothing of a test run stays in /tmp."""
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


def tiny_unet(in_channels: int = 1, out_channels=None, sample_size: int = 8, seed: int = 0, num_class_embeds=None):
    """A ~30k-parameter UNet2DModel, deterministic for a seed; class-conditional with `num_class_embeds`."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels or in_channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        num_class_embeds=num_class_embeds,
    )


@pytest.fixture
def unet_factory():
    return tiny_unet


TINY_NUM_CLASSES = 3  # the class-conditional fixture's classes; label TINY_NUM_CLASSES is the null label


@pytest.fixture(scope="module")
def unconditional_pipeline():
    """DDPMImagePipeline around tiny_unet (one per test module: tests that swap its scheduler put it back)."""
    from ddpm_hf import DDPMImagePipeline, DDPMPosteriorScheduler

    pipe = DDPMImagePipeline(unet=tiny_unet(), scheduler=DDPMPosteriorScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def class_pipeline():
    """DDPMImagePipeline around a class-conditional tiny_unet of TINY_NUM_CLASSES classes."""
    from ddpm_hf import DDPMImagePipeline, DDPMPosteriorScheduler

    pipe = DDPMImagePipeline(unet=tiny_unet(num_class_embeds=TINY_NUM_CLASSES + 1),
                             scheduler=DDPMPosteriorScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def text_pipeline(tmp_path_factory):
    return tiny_text_to_image_pipeline(tmp_path_factory.mktemp("clip-tokenizer"))


def run_python(code: str, cwd=None, env=None, timeout: int = 300) -> str:
    """Run `code` in a fresh Python process; return its stdout, fail the test with its stderr otherwise."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=full_env, capture_output=True, text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        pytest.fail(f"subprocess failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


def fork_runner(setup: str, main: str, prog: str) -> str:
    """Python code for `python -c CODE RUNS FOLDER`: run `setup` once (the slow imports), then each command line of
    RUNS (JSON {name: argv}) in a forked child, as `sys.exit(<main>(argv))` would, its output in FOLDER/<name>.stdout
    and .stderr; print the exit codes as JSON. Many command lines for the price of one interpreter start-up."""
    return textwrap.dedent("""
        import json, os, sys, traceback
        {setup}

        runs, folder = json.loads(sys.argv[1]), sys.argv[2]
        codes = {{}}
        for name, argv in runs.items():
            sys.stdout.flush(); sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                for fd, suffix in ((1, "stdout"), (2, "stderr")):
                    path = os.path.join(folder, f"{{name}}.{{suffix}}")
                    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
                sys.argv = [{prog!r}, *argv]
                try:  # what `sys.exit(main())` does, and what the interpreter prints if it raises
                    code = {main}(argv)
                except SystemExit as exit:
                    code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
                except BaseException:
                    traceback.print_exc()
                    code = 1
                sys.stdout.flush(); sys.stderr.flush()
                os._exit(code or 0)
            codes[name] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        print(json.dumps(codes))
    """).format(setup=setup, main=main, prog=prog)


def run_forked(runner: str, runs: dict, folder, cwd=None, env=None, timeout: int = 300) -> dict:
    """Run a `fork_runner` program over `runs` ({name: argv}); their output lands in FOLDER/<name>.stdout and
    .stderr. Returns {name: exit code}; fails the test if the runner itself fails."""
    import json

    result = subprocess.run([sys.executable, "-c", runner, json.dumps(runs), str(folder)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"the fork runner failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def tiny_text_to_image_pipeline(tokenizer_dir, in_channels: int = 1, out_channels=None, seed: int = 0):
    """DDPMTextToImagePipeline with the real CLIP tokenizer, a tiny CLIP text encoder and a tiny conditional UNet."""
    from diffusers import UNet2DConditionModel

    from ddpm_hf import DDPMPosteriorScheduler, DDPMTextToImagePipeline
    from ddpm_hf.text.encoders import build_clip_text_encoder, build_clip_tokenizer

    text_encoder = build_clip_text_encoder("tiny", seed=seed)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=out_channels or in_channels,
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=text_encoder.config.hidden_size, attention_head_dim=4,
    )
    pipe = DDPMTextToImagePipeline(
        unet=unet, scheduler=DDPMPosteriorScheduler(), text_encoder=text_encoder,
        tokenizer=build_clip_tokenizer(str(tokenizer_dir)),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
