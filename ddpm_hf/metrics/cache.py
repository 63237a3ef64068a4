# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The metric caches (fitted feature networks, reference features, under `caching.cache_root`), and how a cache
file is written."""

from pathlib import Path

from ..caching import cache_root, fingerprint
from ..io import write_atomically

__all__ = ["cache_root", "fingerprint", "save_tensors_atomically"]

def save_tensors_atomically(tensors: dict, path: Path, metadata: dict[str, str]) -> None:
    """A safetensors cache file, written through `io.write_atomically`: a reader never sees half a file, and two
    processes writing the same entry at once (each to its own temporary) both leave a whole one."""
    from safetensors.torch import save_file

    contiguous = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    write_atomically(str(path), lambda temporary: save_file(contiguous, temporary, metadata=metadata))
