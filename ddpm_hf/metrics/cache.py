# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The metric caches (fitted feature networks, reference features, under `io.cache_root`): their keys, and how a
cache file is written."""

import hashlib
import json
from pathlib import Path
from typing import Any

from ..io import cache_root, write_atomically

__all__ = ["cache_root", "fingerprint", "save_tensors_atomically"]

def fingerprint(description: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able description: the cache key of what it describes."""
    text = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def save_tensors_atomically(tensors: dict, path: Path, metadata: dict[str, str]) -> None:
    """A safetensors cache file, written through `io.write_atomically`: a reader never sees half a file, and two
    processes writing the same entry at once (each to its own temporary) both leave a whole one."""
    from safetensors.torch import save_file

    contiguous = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    write_atomically(str(path), lambda temporary: save_file(contiguous, temporary, metadata=metadata))
