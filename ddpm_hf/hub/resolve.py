# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Hub ids and local paths: which a name is, and a Hub repo resolved to a local folder (online, or offline from the
cache)."""

import os
from typing import Union

from huggingface_hub import constants as hub_constants
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

PathLike = Union[str, "os.PathLike[str]"]


def looks_like_local_path(name: str) -> bool:
    """True for what can only be a folder: an existing path, ./x, ../x, /x, ~/x, or a/b/c (a Hub id is owner/name)."""
    return (
        os.path.exists(name)
        or name.startswith((".", "/", "~"))
        or name.endswith("/")
        or name.count("/") > 1
        or (os.path.sep != "/" and os.path.sep in name)
    )


def is_hub_id(name: str | None) -> bool:
    """True for a name that can only be a Hub repo: "name" or "owner/name" by huggingface_hub's rules, no local path."""
    if not isinstance(name, str) or not name or looks_like_local_path(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


# The keyword arguments of `from_pretrained` that `resolve_pipeline_folder` consumes.
HUB_DOWNLOAD_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "token")


def resolve_pipeline_folder(
    name_or_path: PathLike,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: PathLike | None = None,
    local_files_only: bool | None = None,
    force_download: bool = False,
    proxies: dict | None = None,
) -> str:
    """A local folder holding the pipeline `name_or_path`: the folder itself, or a snapshot of the Hub repo.

    A Hub repo is downloaded whole with `huggingface_hub.snapshot_download` into the Hub cache. (Whole, so that a
    later `snapshot_download(repo_id, local_files_only=True)` finds the snapshot complete: with no patterns it
    refuses a cached snapshot that lacks any file of the repo.) With `local_files_only=True`, with
    `HF_HUB_OFFLINE=1`, or when the Hub cannot be reached, the cached snapshot of `revision` is returned instead
    (an error when there is none).
    """
    from .. import __version__

    del proxies  # huggingface_hub 2.x takes proxies from the environment (HTTP(S)_PROXY)
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        return path
    if local_files_only is None:
        local_files_only = hub_constants.is_offline_mode()
    return snapshot_download(
        path,
        revision=revision,
        token=token,
        cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
        local_files_only=bool(local_files_only),
        force_download=force_download,
        library_name="ddpm-hf",
        library_version=__version__,
    )
