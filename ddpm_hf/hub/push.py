# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Pushing a pipeline to the Hub: save it, write the card and extra files, create the repo and commit, retrying
transient failures; optionally in huggingface_hub's background worker."""

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from ..errors import one_line
from ..io import copy_file_atomically, write_text_atomically
from .model_card import render_model_card
from .resolve import PathLike
from .secrets import assert_no_secret, scrub_text, secrets_to_hide

try:  # the HTTP client huggingface_hub uses (httpx2 in huggingface_hub 2.x, httpx before)
    import httpx2 as _http_client
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    try:
        import httpx as _http_client
    except ImportError:
        _http_client = None

logger = logging.getLogger(__name__)


class HubPushError(RuntimeError):
    """A push that did not reach the Hub; `repo_id`, `folder` (the local folder, or None) and `attempts` say more."""

    def __init__(self, message: str, *, repo_id: str, folder: str | None, attempts: int):
        super().__init__(message)
        self.repo_id, self.folder, self.attempts = repo_id, folder, attempts


_APIS: dict[str, HfApi] = {}
_APIS_LOCK = threading.Lock()


def _api(endpoint: str | None) -> HfApi:
    """One HfApi per endpoint, so background pushes share its single worker thread and commit in order."""
    from .. import __version__

    endpoint = (endpoint or hub_constants.ENDPOINT).rstrip("/")
    with _APIS_LOCK:
        if endpoint not in _APIS:
            _APIS[endpoint] = HfApi(endpoint=endpoint, library_name="ddpm-hf", library_version=__version__)
        return _APIS[endpoint]


def _is_transient(error: BaseException) -> bool:
    """Worth retrying: 5xx / 408 / 429 answers, and connection-level failures."""
    if isinstance(error, OfflineModeIsEnabled):
        return False
    if isinstance(error, HfHubHTTPError):
        response = getattr(error, "response", None)
        status = getattr(response, "status_code", None)
        return status is not None and (status >= 500 or status in (408, 429))
    if _http_client is not None and isinstance(error, _http_client.TransportError):
        return not isinstance(error, getattr(_http_client, "UnsupportedProtocol", ()))
    return isinstance(error, (ConnectionError, TimeoutError))


def _describe(error: BaseException, secrets: Sequence[str]) -> str:
    """`error` as one line for a log or a HubPushError: its type, the HTTP status if any, no secret."""
    text = f"{type(error).__name__}: {one_line(error)}"
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status is not None and str(status) not in text:
        text = f"HTTP {status}: {text}"
    return scrub_text(text, secrets)


def _pipeline_files(folder: str) -> list[str]:
    """Relative paths of the files a saved pipeline consists of, read from its `model_index.json`."""
    import json

    index_path = os.path.join(folder, "model_index.json")
    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    files = ["model_index.json"]
    class_name = index.get("_class_name")
    if isinstance(class_name, list) and class_name and class_name[0]:
        files.append(f"{class_name[0]}.py")
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or entry[0] is None:
            continue
        component = os.path.join(folder, name)
        for root, dirs, names in os.walk(component):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
            for file_name in sorted(names):
                if file_name.startswith(".") or file_name.endswith(".pyc"):
                    continue
                files.append(os.path.relpath(os.path.join(root, file_name), folder).replace(os.sep, "/"))
    missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise FileNotFoundError(f"{folder} is not a complete saved pipeline: missing {', '.join(missing)}.")
    return files


def _check_repo_path(path_in_repo: str) -> str:
    rel = path_in_repo.replace("\\", "/").strip()
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == ".git":
        raise ValueError(f"extra_files: {path_in_repo!r} is not a valid path inside a repo.")
    return rel


def _link_or_copy_tree(folder: str, files: Sequence[str], snapshot: str) -> None:
    """Hard-link (copy where linking fails) `files` of `folder` into `snapshot`: later saves into `folder` replace
    files by renaming, so the snapshot keeps the versions being uploaded."""
    for rel in files:
        source, target = os.path.join(folder, rel), os.path.join(snapshot, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)


def _ensure_repo(api: HfApi, repo_id: str, *, token, private: bool | None, revision: str | None) -> str:
    """Create the repo (and the `revision` branch) when missing; the full "namespace/name" id."""
    repo_url = api.create_repo(repo_id, token=token, private=private, exist_ok=True)
    target = getattr(repo_url, "repo_id", None) or repo_id
    if revision not in (None, hub_constants.DEFAULT_REVISION):
        api.create_branch(target, branch=revision, token=token, exist_ok=True)
    return target


def _retrying(action, api: HfApi, repo_id: str, *, what: str, max_retries: int, retry_backoff: float,
              secrets: Sequence[str], kept_folder: str | None, advice: str | None = None):
    """`action()`, retrying transient failures with exponential backoff; a HubPushError when it finally fails.

    The error's message ends with `advice`, by default what became of the local copy and how to retry the push.
    """
    attempts = 0
    while True:
        attempts += 1
        try:
            return action()
        except Exception as error:
            transient = _is_transient(error)
            if transient and attempts <= max_retries:
                wait = min(retry_backoff * (2 ** (attempts - 1)), 60.0)
                logger.warning("%s %s failed (%s); retrying in %.1fs (attempt %d of %d).", what, repo_id,
                               _describe(error, secrets), wait, attempts + 1, max_retries + 1)
                time.sleep(wait)
                continue
            kept = advice or (f"The local folder {kept_folder} is intact (nothing local was changed); retry with "
                    f"ddpm_hf.hub.push_folder_to_hub({kept_folder!r}, {repo_id!r})." if kept_folder else
                    "Nothing local was changed: the pipeline object is intact; call the push again, or "
                    "save_pretrained() it and use ddpm_hf.hub.push_folder_to_hub.")
            reason = f"after {attempts} attempts" if attempts > 1 else "(not retried: not a transient error)"
            if not transient and isinstance(error, OfflineModeIsEnabled):
                reason += "; HF_HUB_OFFLINE is set"
            raise HubPushError(
                f"Could not {what.lower()} the Hub repo '{repo_id}' at {api.endpoint} {reason}:"
                f" {_describe(error, secrets)}. " + kept,
                repo_id=repo_id, folder=kept_folder, attempts=attempts,
            ) from error


def _upload(
    api: HfApi,
    folder: str,
    files: Sequence[str],
    repo_id: str,
    *,
    token,
    private: bool | None,
    revision: str | None,
    commit_message: str,
    max_retries: int,
    retry_backoff: float,
    secrets: Sequence[str],
    kept_folder: str | None,
    cleanup: str | None,
):
    """create_repo (+ create_branch) + one commit of `files`, retrying transient failures with exponential backoff."""

    def create_and_commit():
        target = _ensure_repo(api, repo_id, token=token, private=private, revision=revision)
        operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=os.path.join(folder, rel)) for rel in files]
        info = api.create_commit(target, operations=operations, commit_message=commit_message, revision=revision,
                                 token=token)
        logger.info("Pushed %d files to %s (%s).", len(files), target, getattr(info, "oid", "?"))
        return info

    try:
        return _retrying(create_and_commit, api, repo_id, what="Push to", max_retries=max_retries,
                         retry_backoff=retry_backoff, secrets=secrets, kept_folder=kept_folder)
    finally:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)


def create_hub_repo(
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    max_retries: int = 3,
    retry_backoff: float = 2.0,
    endpoint: str | None = None,
) -> str:
    """Create `repo_id` (and the `revision` branch) if needed and return its full "namespace/name" id.

    The trainer calls it before training, so that a wrong token or repo name fails in seconds, not after the run.
    Raises HubPushError (one line, the token blanked) when the Hub refuses or cannot be reached.
    """
    api = _api(endpoint)
    secrets = secrets_to_hide([token if isinstance(token, str) else None])
    return _retrying(lambda: _ensure_repo(api, repo_id, token=token, private=private, revision=revision), api,
                     repo_id, what="Create", max_retries=max_retries, retry_backoff=retry_backoff, secrets=secrets,
                     kept_folder=None, advice="Check the repo name and that the token may write to it (--hub_token,"
                     " HF_TOKEN or `hf auth login`).")


def push_folder_to_hub(
    folder: PathLike,
    repo_id: str,
    *,
    files: Sequence[str] | None = None,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    run_as_future: bool = False,
    max_retries: int = 3,
    retry_backoff: float = 2.0,
    endpoint: str | None = None,
):
    """Upload a saved pipeline folder: its pipeline files (from model_index.json), README.md and top-level images.

    Other entries of the folder (checkpoints, logs) are not uploaded; pass `files` (paths relative to `folder`) to
    choose exactly. Same retry, secret and background behaviour as `push_pipeline_to_hub`; the folder is never
    modified (with `run_as_future=True` a hard-linked snapshot of it is uploaded, so it may be saved over meanwhile).
    """
    folder = os.path.abspath(os.fspath(folder))
    if files is None:
        files = _pipeline_files(folder)
        for name in sorted(os.listdir(folder)):
            if name == "README.md" or name.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".gif")):
                if os.path.isfile(os.path.join(folder, name)):
                    files.append(name)
    files = [_check_repo_path(f) for f in files]
    secrets = secrets_to_hide([token if isinstance(token, str) else None])
    assert_no_secret(folder, files, secrets)
    return _start_upload(folder, files, repo_id, token=token, private=private, revision=revision,
                         commit_message=commit_message or "Upload pipeline with ddpm-hf", run_as_future=run_as_future,
                         max_retries=max_retries, retry_backoff=retry_backoff, endpoint=endpoint, secrets=secrets,
                         kept_folder=folder, temporary=None)


def _start_upload(folder, files, repo_id, *, token, private, revision, commit_message, run_as_future, max_retries,
                  retry_backoff, endpoint, secrets, kept_folder, temporary):
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}.")
    api = _api(endpoint)
    upload_root, cleanup = folder, temporary
    if run_as_future and temporary is None:
        # Upload a snapshot of the user's folder, so that it can be saved over while the upload runs.
        cleanup = upload_root = tempfile.mkdtemp(prefix=".ddpm-hf-upload-", dir=folder)
        _link_or_copy_tree(folder, files, upload_root)
    kwargs = dict(token=token, private=private, revision=revision, commit_message=commit_message,
                  max_retries=max_retries, retry_backoff=retry_backoff, secrets=secrets, kept_folder=kept_folder,
                  cleanup=cleanup)
    if run_as_future:
        return api.run_as_future(_upload, api, upload_root, list(files), repo_id, **kwargs)
    return _upload(api, upload_root, list(files), repo_id, **kwargs)


def push_pipeline_to_hub(
    pipeline,
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    model_card_kwargs: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, PathLike] | None = None,
    run_as_future: bool = False,
    max_retries: int = 3,
    retry_backoff: float = 2.0,
    save_dir: PathLike | None = None,
    endpoint: str | None = None,
):
    """Publish `pipeline` to the Hub repo `repo_id`: weights, configs, shipped code, README.md and extra files.

    The pipeline is saved with its `save_pretrained` (the folder that loads three ways), the model card
    (`render_model_card(pipeline, repo_id=..., **model_card_kwargs)`) is written as README.md and `extra_files`
    (`{path_in_repo: local_path}`, e.g. `{"samples.png": grid_path}`) are copied beside it; then the repo is created
    if needed (`private` applies to a new repo only), the `revision` branch too, and everything is one commit.

    Args:
        token: explicit token; by default huggingface_hub's (`HF_TOKEN`, then the login cache).
        save_dir: save into this folder (kept; e.g. the trainer's output dir, whose checkpoints and logs are not
            uploaded) instead of a temporary folder that is removed after the upload.
        run_as_future: save now, upload in huggingface_hub's background worker (one per endpoint, pushes run in
            order) and return a `concurrent.futures.Future` of the commit info; the pipeline may be trained on
            meanwhile, and `save_dir` saved over.
        max_retries, retry_backoff: transient failures (5xx, 408/429, connection errors) are retried up to
            `max_retries` times, after `retry_backoff * 2**k` seconds.
        endpoint: a Hub endpoint other than `HF_ENDPOINT` / huggingface.co.

    Returns:
        `huggingface_hub.CommitInfo`, or a Future of it with `run_as_future=True`.

    Raises:
        HubPushError: the upload failed (after the retries, for transient errors); the message names the repo and
            the failure. The local folder (`save_dir`) is left complete.
        ValueError: a file to upload contains the access token.
    """
    from .. import __version__

    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}.")
    model_card_kwargs = dict(model_card_kwargs or {})
    extra = {_check_repo_path(k): os.path.abspath(os.fspath(v)) for k, v in (extra_files or {}).items()}
    for rel, source in extra.items():
        if not os.path.isfile(source):
            raise FileNotFoundError(f"extra_files[{rel!r}]: {source} is not a file.")
        if rel == "README.md":
            raise ValueError("extra_files cannot hold README.md: the model card is written from model_card_kwargs.")
    images = [rel for rel in extra if rel.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".gif"))]
    grid = model_card_kwargs.get("sample_grid_filename", "samples.png" if "samples.png" in extra else (
        images[0] if images else None))
    grid_in_save_dir = bool(grid and grid not in extra and save_dir and os.path.isfile(os.path.join(save_dir, grid)))
    if grid is not None and grid not in extra and not grid_in_save_dir:
        logger.warning("The model card names %s as its sample grid, but that file is not uploaded: leaving it out.",
                       grid)
        grid = None
    model_card_kwargs["sample_grid_filename"] = grid
    secrets = secrets_to_hide([token if isinstance(token, str) else None])
    card = render_model_card(pipeline, repo_id=repo_id, _secrets_to_hide=secrets, **model_card_kwargs)

    temporary = None
    if save_dir is None:
        temporary = tempfile.mkdtemp(prefix="ddpm-hf-push-")
        folder = os.path.join(temporary, "pipeline")
    else:
        folder = os.path.abspath(os.fspath(save_dir))
    try:
        pipeline.save_pretrained(folder)
        files = _pipeline_files(folder)
        write_text_atomically(os.path.join(folder, "README.md"), str(card))
        files.append("README.md")
        for rel, source in extra.items():
            target = os.path.join(folder, rel)
            if rel in files:
                raise ValueError(f"extra_files[{rel!r}] would overwrite a pipeline file.")
            if not (os.path.exists(target) and os.path.samefile(source, target)):
                copy_file_atomically(source, target)
            files.append(rel)
        if grid_in_save_dir and grid not in files:
            files.append(grid)
        assert_no_secret(folder, files, secrets)
    except BaseException:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
        raise
    message = commit_message or f"Upload {type(pipeline).__name__} with ddpm-hf {__version__}"
    return _start_upload(folder, files, repo_id, token=token, private=private, revision=revision,
                         commit_message=message, run_as_future=run_as_future, max_retries=max_retries,
                         retry_backoff=retry_backoff, endpoint=endpoint, secrets=secrets,
                         kept_folder=None if temporary is not None else folder, temporary=temporary)
