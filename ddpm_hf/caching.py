# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""What ddpm-hf can rebuild and keeps to save time (fitted metric networks, reference features, decoded training
sets): where it lives, and the key of an entry."""

import hashlib
import json
import os
from pathlib import Path
from typing import Any

CACHE_ENV = "DDPM_HF_CACHE"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ddpm-hf keeps what it can rebuild (fitted metric networks, reference features, decoded training sets):
    `cache_dir`, else $DDPM_HF_CACHE, else $HF_HOME/ddpm-hf, else ~/.cache/ddpm-hf."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "ddpm-hf"
    return Path("~/.cache/ddpm-hf").expanduser()


def fingerprint(description: Any) -> str:
    """A short stable hash of a JSON-able description (a dict, a list): the cache key of what it describes."""
    text = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]
