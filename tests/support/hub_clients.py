# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Clients pointed at a local `HubServer`: this test process (`this_process_on`), and fresh Python processes (the
environment `hub_env` gives them, with a Hugging Face home of their own)."""

import contextlib
import os

import pytest
from huggingface_hub import constants as hub_constants


@contextlib.contextmanager
def this_process_on(hub):
    """This process's huggingface_hub talks to `hub` (online, whatever HF_HUB_OFFLINE the test session set, and with
    no HF_TOKEN of the environment) until the block ends."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hub_constants, "ENDPOINT", hub.url)
        # Read at import time by hf_hub_download; never let a test reach huggingface.co.
        mp.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        mp.setattr(hub_constants, "HF_HUB_OFFLINE", False)
        mp.delenv("HF_TOKEN", raising=False)
        yield hub


def hub_env(hub, home, **extra) -> dict:
    """The environment variables of a fresh process that talks to `hub`, with its own HF_HOME `home` (its downloads
    and remote-code modules land there) and no token."""
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(home), "HF_MODULES_CACHE": os.path.join(str(home), "modules"),
           "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "HF_TOKEN": "", "DIFFUSERS_VERBOSITY": "error"}
    env.update(extra)
    return env
