# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""pytest hooks and fixtures only: the test session's environment (one thread, an isolated Hugging Face cache, offline),
the longest files first, and fixtures around the tiny models. What tests import lives in tests/support/."""

import os
import shutil

# Tiny models gain nothing from intra-op threads, and lose a lot when two test processes share 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from support.models import TINY_NUM_CLASSES, tiny_text_to_image_pipeline, tiny_unet

torch.set_num_threads(1)

# Keep diffusers' dynamic-module cache and the Hub cache inside the test session, and never touch the network.
_SESSION_HOME = os.path.join(os.environ.get("PYTEST_TMPDIR", "/tmp"), f"ddpm-hf-tests-{os.getpid()}")
os.environ.setdefault("HF_HOME", os.path.join(_SESSION_HOME, "hf-home"))
os.environ.setdefault("HF_MODULES_CACHE", os.path.join(_SESSION_HOME, "hf-modules"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


# The files that take longest, longest first, by their file names' stems (seconds on 2 cores, 2026-12-04: 219, 160,
# 145, 106, 86, 65, 60, 56, 41, 38, 33; test_docs and test_train_entry, added later: about 60 and 30 under load);
# every other file takes under 30 s.
LONGEST_FILES = ["test_train_reliability", "test_train_text_to_image", "test_train", "test_train_data_storage",
                 "test_train_class_conditional", "test_hub", "test_cli", "test_docs", "test_train_streaming",
                 "test_class_conditional", "test_train_signals", "test_fid", "test_train_entry"]


def pytest_collection_modifyitems(session, config, items):
    """The longest files first, longest first, the rest after: pytest-xdist's --dist loadfile hands each file to the
    next free worker in this order, so the workers finish together instead of one running a long file alone at the
    end while the other waits (greedy longest-first scheduling). A stale order costs only balance, never a result."""
    rank = {name: index for index, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: file order kept otherwise


def pytest_sessionfinish(session, exitstatus):
    """Remove this session's Hugging Face cache and module folder: nothing of a test run stays in /tmp."""
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture
def unet_factory():
    return tiny_unet


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
