# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Where the metric caches live (fitted feature networks, reference features), and how a cache file is written."""

import hashlib
import json
import os
from pathlib import Path
from typing import Any

CACHE_ENV = "DDPM_HF_CACHE"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else $DDPM_HF_CACHE, else $HF_HOME/ddpm-hf, else ~/.cache/ddpm-hf."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "ddpm-hf"
    return Path("~/.cache/ddpm-hf").expanduser()


def fingerprint(description: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able description: the cache key of what it describes."""
    text = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def save_tensors_atomically(tensors: dict, path: Path, metadata: dict[str, str]) -> None:
    """Write a safetensors file beside `path` and rename it in: a reader never sees half a file, and two processes
    writing the same cache entry at once both leave a whole one."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file({name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}, temporary,
                  metadata=metadata)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
