# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""What ddpm-hf can rebuild and keeps to save time (fitted metric networks, reference features, decoded training
sets): where it lives, the key of an entry, and how a tensor entry is written."""

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .io import write_atomically

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


def save_tensors_atomically(tensors: dict, path: Path, metadata: dict[str, str]) -> None:
    """A safetensors cache file, written through `io.write_atomically`: a reader never sees half a file, and two
    processes writing the same entry at once (each to its own temporary) both leave a whole one."""
    from safetensors.torch import save_file

    contiguous = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    write_atomically(str(path), lambda temporary: save_file(contiguous, temporary, metadata=metadata))
