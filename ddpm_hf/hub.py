# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Publishing ddpm-hf pipelines on the Hugging Face Hub, and resolving Hub repos to local folders.

- `render_model_card`: the repo's README.md (metadata + body) from the `model_card.md` Jinja template.
- `push_pipeline_to_hub`: save the pipeline (the folder that loads three ways), write the card and extra files
  (e.g. a sample grid), create the repo and commit, retrying transient failures; optionally in the background.
- `push_folder_to_hub`: the upload half on its own, for a folder saved earlier (e.g. to retry a failed push).
- `resolve_pipeline_folder`: a Hub repo id -> a local snapshot folder (online, or offline from the cache).

The token is resolved by huggingface_hub (explicit `token=` > `HF_TOKEN` > the login cache). It is only ever sent
as an HTTP header: it is kept out of log messages, the card and every uploaded file, and a push refuses to upload a
file that contains it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union

from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
    ModelCard,
    ModelCardData,
    snapshot_download,
)
from huggingface_hub import (
    constants as hub_constants,
)
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import get_token

try:  # the HTTP client huggingface_hub uses (httpx2 in huggingface_hub 2.x, httpx before)
    import httpx2 as _http_client
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    try:
        import httpx as _http_client
    except ImportError:
        _http_client = None

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "HUB_DOWNLOAD_KWARGS",
    "HubPushError",
    "create_hub_repo",
    "model_card_template_path",
    "push_folder_to_hub",
    "push_pipeline_to_hub",
    "render_model_card",
    "resolve_pipeline_folder",
]

# ----------------------------------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------------------------------
TEMPLATE_NAME = "model_card.md"

# Pipeline class name -> Hub pipeline tag (looked up along the MRO, so subclasses inherit their parent's tag).
PIPELINE_TAGS = {
    "DDPMTextToImagePipeline": "text-to-image",
    "DDPMImagePipeline": "unconditional-image-generation",
}
DEFAULT_PIPELINE_TAG = "unconditional-image-generation"

# training_config keys shown first, with a readable label; other keys follow in alphabetical order.
TRAINING_LABELS = {
    "max_train_steps": "Training steps",
    "num_train_steps": "Training steps",
    "global_step": "Steps trained",
    "num_epochs": "Epochs",
    "train_batch_size": "Batch size (per device)",
    "batch_size": "Batch size",
    "gradient_accumulation_steps": "Gradient accumulation steps",
    "learning_rate": "Learning rate",
    "lr_scheduler": "Learning-rate schedule",
    "lr_warmup_steps": "Warm-up steps",
    "ddpm_num_steps": "Diffusion steps (T)",
    "num_train_timesteps": "Diffusion steps (T)",
    "ddpm_beta_schedule": "Noise schedule",
    "beta_schedule": "Noise schedule",
    "prediction_type": "Prediction type",
    "variance_type": "Variance type",
    "loss_type": "Loss",
    "use_ema": "EMA",
    "ema_max_decay": "EMA max decay",
    "mixed_precision": "Mixed precision",
    "resolution": "Resolution",
    "hardware": "Hardware",
    "num_processes": "Processes",
    "seed": "Seed",
}

# Keys whose values are secrets (or could be): never rendered.
_SECRET_KEY = re.compile(r"token|secret|passw|api[_-]?key|credential|authorization|cookie", re.IGNORECASE)
# The shape of Hugging Face access tokens.
_TOKEN_SHAPE = re.compile(r"hf_[A-Za-z0-9]{30,}")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


def model_card_template_path() -> str:
    """The `model_card.md` template: the installed package's copy, else the one at the top of a source checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.path.join(here, "templates", TEMPLATE_NAME), os.path.join(os.path.dirname(here), TEMPLATE_NAME)]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"The model card template {TEMPLATE_NAME} is missing: looked in {' and '.join(candidates)}. "
        "Reinstall ddpm-hf, or pass template_path=."
    )


def _secrets(extra: Iterable[str | None] = ()) -> list[str]:
    """The token strings that must never be written anywhere (the resolved Hub token, plus any given)."""
    found = set()
    for value in list(extra) + [_resolved_token(None)]:
        if isinstance(value, str) and len(value) >= 8:
            found.add(value)
    return sorted(found)


def _resolved_token(token) -> str | None:
    if isinstance(token, str):
        return token
    if token is False:
        return None
    try:
        return get_token()
    except Exception:  # a broken login cache must not break publishing
        return None


def _is_secret_value(value: Any, secrets: Sequence[str]) -> bool:
    text = value if isinstance(value, str) else repr(value)
    return bool(_TOKEN_SHAPE.search(text)) or any(secret in text for secret in secrets)


def scrub_config(config: Mapping[str, Any] | None, secrets: Sequence[str] = ()) -> dict[str, Any]:
    """`config` without the entries that are, or contain, secrets (by key name, by token shape, by value)."""
    clean = {}
    for key, value in (config or {}).items():
        if _SECRET_KEY.search(str(key)) or _is_secret_value(value, secrets):
            continue
        clean[str(key)] = value
    return clean


def _cell(value: Any) -> str:
    """A value as a markdown table cell."""
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, numbers.Integral):
        text = str(int(value))
    elif isinstance(value, numbers.Real):
        value = float(value)
        text = str(value) if math.isnan(value) or math.isinf(value) else f"{value:.6g}"
    elif isinstance(value, (list, tuple)):
        text = ", ".join(_cell(v) for v in value) if value else "(none)"
    elif isinstance(value, Mapping):
        text = ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    else:
        text = str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip() or " "


def _pipeline_tag(pipeline) -> str:
    for klass in type(pipeline).__mro__:
        if klass.__name__ in PIPELINE_TAGS:
            return PIPELINE_TAGS[klass.__name__]
    return DEFAULT_PIPELINE_TAG


def _looks_like_hub_id(name: str | None) -> bool:
    return bool(name) and bool(_HUB_ID.match(name)) and not os.path.exists(name)


def _text_encoder_id(pipeline) -> str | None:
    encoder = getattr(pipeline, "text_encoder", None)
    if encoder is None:
        return None
    config = getattr(encoder, "config", None)
    for candidate in (getattr(config, "_name_or_path", None), getattr(encoder, "name_or_path", None)):
        if isinstance(candidate, str) and "/" in candidate and _looks_like_hub_id(candidate):
            return candidate
    return None


def _components(pipeline) -> dict[str, Any]:
    components = getattr(pipeline, "components", None) or {}
    return {name: obj for name, obj in components.items() if obj is not None}


def _n_params(module) -> int | None:
    try:
        return sum(p.numel() for p in module.parameters())
    except Exception:
        return None


_COMPONENT_LABELS = {"unet": "UNet", "vae": "VAE", "text_encoder": "Text encoder", "tokenizer": "Tokenizer",
                     "scheduler": "Scheduler"}


def _model_rows(pipeline) -> list[dict[str, str]]:
    rows = [{"label": "Pipeline", "value": f"`{type(pipeline).__name__}` (ddpm-hf)"}]
    for name, obj in _components(pipeline).items():
        klass = type(obj).__name__
        config = getattr(obj, "config", None)
        get = (lambda key, default=None: config.get(key, default)) if isinstance(config, Mapping) else (  # noqa: B023
            lambda key, default=None: getattr(config, key, default))  # noqa: B023 (used in this iteration only)
        details = [f"`{klass}`"]
        if name == "scheduler" and config is not None:
            details.append(f"T = {get('num_train_timesteps')} diffusion steps")
            schedule = f"{get('beta_schedule')} beta schedule"
            if get("beta_schedule") == "linear":
                schedule += f" ({_cell(get('beta_start'))} to {_cell(get('beta_end'))})"
            details += [schedule, f"prediction type `{get('prediction_type')}`",
                        f"variance `{get('variance_type')}`", f"clip sample {_cell(get('clip_sample'))}"]
        elif name.startswith("unet") and config is not None:
            n = _n_params(obj)
            if n is not None:
                details.append(f"{n:,} parameters")
            size = get("sample_size")
            details.append(f"{size}x{size} samples" if isinstance(size, int) else f"{_cell(size)} samples")
            details.append(f"{get('in_channels')} -> {get('out_channels')} channels")
            details.append(f"blocks {_cell(get('block_out_channels'))}, {get('layers_per_block')} layers per block")
        elif config is not None and hasattr(obj, "parameters"):
            n = _n_params(obj)
            if n is not None:
                details.append(f"{n:,} parameters")
            source = getattr(config, "_name_or_path", None)
            if source is None and isinstance(config, Mapping):
                source = config.get("_name_or_path")
            if _looks_like_hub_id(source):
                details.append(f"from [`{source}`](https://huggingface.co/{source})")
        label = _COMPONENT_LABELS.get(name, name.replace("_", " ").capitalize())
        rows.append({"label": label, "value": ", ".join(details)})
    return rows


def _stock_loading(pipeline) -> tuple[list[str], list[dict[str, str]], str | None]:
    """Import lines, (component, stock class) pairs and the stock pipeline line for the third loading way."""
    from diffusers import SchedulerMixin

    imports: dict[str, set] = {"diffusers": set(), "transformers": set()}
    components = []
    for name, obj in _components(pipeline).items():
        module = type(obj).__module__.split(".")[0]
        if module in imports:
            class_name = type(obj).__name__
        elif isinstance(obj, SchedulerMixin):
            module, class_name = "diffusers", "DDPMScheduler"  # our scheduler's config is a DDPMScheduler config
        else:
            continue
        imports[module].add(class_name)
        components.append({"name": name, "class_name": class_name})
    names = {c["name"]: c["class_name"] for c in components}
    stock_pipeline = None
    unconditional = set(_components(pipeline)) == {"unet", "scheduler"} and names.get("unet") == "UNet2DModel"
    if unconditional and "scheduler" in names:
        imports["diffusers"].add("DDPMPipeline")
        stock_pipeline = "pipe = DDPMPipeline(unet=unet, scheduler=scheduler)"
    lines = [f"from {module} import {', '.join(sorted(classes))}" for module, classes in imports.items() if classes]
    return lines, components, stock_pipeline


def _code_files(pipeline) -> list[str]:
    """The repository's code files that `trust_remote_code=True` runs (see pipeline_ddpm_hf.ship_code)."""
    import inspect

    from diffusers import DiffusionPipeline

    files = []
    try:
        files.append(os.path.basename(inspect.getfile(type(pipeline))))
    except TypeError:
        pass
    for name, obj in _components(pipeline).items():
        module = type(obj).__module__.split(".")[0]
        if module in ("diffusers", "transformers") or isinstance(obj, DiffusionPipeline):
            continue
        try:
            files.append(f"{name}/{os.path.basename(inspect.getfile(type(obj)))}")
        except TypeError:
            continue
    return files


def _metric_rows(metrics: Mapping[str, Any] | None, secrets: Sequence[str]) -> list[dict[str, str]]:
    rows = []
    for name, value in scrub_config(metrics, secrets).items():
        how = ""
        if isinstance(value, Mapping):
            how = value.get("description") or value.get("how") or value.get("method") or ""
            value = value.get("value")
        rows.append({"name": _cell(name), "value": _cell(value), "how": _cell(how) if how else "-"})
    return rows


def _training_rows(training_config: Mapping[str, Any] | None, secrets: Sequence[str]) -> list[dict[str, str]]:
    config = {k: v for k, v in scrub_config(training_config, secrets).items() if v is not None}
    ordered = [k for k in TRAINING_LABELS if k in config]
    ordered += sorted(k for k in config if k not in TRAINING_LABELS)
    return [{"label": TRAINING_LABELS.get(k, f"`{_cell(k)}`"), "value": _cell(config[k])} for k in ordered]


def render_model_card(
    pipeline,
    *,
    repo_id: str,
    training_config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    dataset_name: str | None = None,
    license: str = "apache-2.0",
    base_model: str | None = None,
    sample_grid_filename: str | None = "samples.png",
    sample_caption: str | None = None,
    title: str | None = None,
    tags: Sequence[str] | None = None,
    template_path: PathLike | None = None,
    _secrets_to_hide: Sequence[str] = (),
) -> ModelCard:
    """The model card (README.md) of a pipeline repo, rendered from the `model_card.md` Jinja template.

    Args:
        pipeline: the pipeline being published (its class picks the pipeline tag; its components fill the model table
            and the loading examples).
        repo_id: the Hub repo (`"user/name"`), used in the loading examples.
        training_config: the trainer's arguments (one table row per key, None values left out). Entries whose key
            names a secret (token, password, ...) or whose value looks like or contains the Hub token are dropped.
        metrics: `{name: value}` or `{name: {"value": v, "description": "how it was measured"}}`,
            e.g. `{"bits/dim": {"value": 3.75, "description": "variational bound on the test set, T=1000"}}`.
        dataset_name: the training data; a Hub dataset id also goes into the `datasets` metadata.
        license: the `license` metadata.
        base_model: the `base_model` metadata; defaults to the text encoder's Hub id when the pipeline has one.
        sample_grid_filename: path, inside the repo, of a sample grid to show (None: no picture).
        sample_caption, title, tags: the caption under the grid, the heading, extra metadata tags.
        template_path: another Jinja template (defaults to `model_card_template_path()`).

    Returns:
        a `huggingface_hub.ModelCard`; `str(card)` is the README.md text, `card.data` its metadata.
    """
    import diffusers

    from . import __version__

    secrets = _secrets(_secrets_to_hide)
    pipeline_tag = _pipeline_tag(pipeline)
    all_tags = ["ddpm", "ddpm-hf", "diffusers", pipeline_tag]
    for tag in list(tags or []):
        if tag not in all_tags:
            all_tags.append(tag)
    base_model = base_model or _text_encoder_id(pipeline)
    hub_dataset = _looks_like_hub_id(dataset_name)
    card_data = ModelCardData(
        license=license,
        library_name="diffusers",
        pipeline_tag=pipeline_tag,
        tags=all_tags,
        datasets=[dataset_name] if hub_dataset else None,
        base_model=base_model,
    )
    stock_imports, stock_components, stock_pipeline = _stock_loading(pipeline)
    is_text_to_image = pipeline_tag == "text-to-image"
    card = ModelCard.from_template(
        card_data,
        template_path=os.fspath(template_path) if template_path is not None else model_card_template_path(),
        repo_id=repo_id,
        title=title or repo_id.split("/")[-1],
        pipeline_class=type(pipeline).__name__,
        task="text-to-image" if is_text_to_image else "unconditional image generation",
        is_text_to_image=is_text_to_image,
        sample_grid_filename=sample_grid_filename,
        sample_caption=sample_caption or "Uncurated samples from this pipeline.",
        dataset_name=dataset_name if dataset_name and not os.path.isabs(dataset_name) else (
            os.path.basename(dataset_name.rstrip("/")) if dataset_name else None),
        dataset_url=f"https://huggingface.co/datasets/{dataset_name}" if hub_dataset else None,
        model_rows=_model_rows(pipeline),
        training_rows=_training_rows(training_config, secrets),
        metric_rows=_metric_rows(metrics, secrets),
        code_files=_code_files(pipeline),
        stock_imports=stock_imports,
        stock_components=stock_components,
        stock_pipeline=stock_pipeline,
        ddpm_hf_version=__version__,
        diffusers_version=diffusers.__version__,
    )
    text = str(card)
    if any(secret in text for secret in secrets) or _TOKEN_SHAPE.search(text):
        raise ValueError("The rendered model card contains an access token; refusing to use it.")
    return card


# ----------------------------------------------------------------------------------------------------------------
# Pushing
# ----------------------------------------------------------------------------------------------------------------
class HubPushError(RuntimeError):
    """A push that did not reach the Hub; `repo_id`, `folder` (the local folder, or None) and `attempts` say more."""

    def __init__(self, message: str, *, repo_id: str, folder: str | None, attempts: int):
        super().__init__(message)
        self.repo_id, self.folder, self.attempts = repo_id, folder, attempts


_APIS: dict[str, HfApi] = {}
_APIS_LOCK = threading.Lock()


def _api(endpoint: str | None) -> HfApi:
    """One HfApi per endpoint, so background pushes share its single worker thread and commit in order."""
    from . import __version__

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
    """A one-line description of `error`, with any secret blanked out."""
    text = f"{type(error).__name__}: {error}".strip()
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    first_line = text.splitlines()[0] if text else type(error).__name__
    if status is not None and str(status) not in first_line:
        first_line = f"HTTP {status}: {first_line}"
    for secret in secrets:
        first_line = first_line.replace(secret, "***")
    return _TOKEN_SHAPE.sub("hf_***", first_line)


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


_TEXT_SUFFIXES = (".md", ".json", ".py", ".txt", ".yaml", ".yml", ".cfg", ".toml", ".ini", ".csv", ".jsonl")


def _assert_no_secret(folder: str, files: Sequence[str], secrets: Sequence[str]) -> None:
    """Refuse to upload a file that contains a secret (any file) or a token-shaped string (text files).

    Tensor data of .safetensors files is not scanned, their JSON header is.
    """
    needles = [s.encode() for s in secrets]
    overlap = max((len(n) for n in needles), default=0)
    for rel in files:
        path = os.path.join(folder, rel)
        text_like = rel.lower().endswith(_TEXT_SUFFIXES)
        with open(path, "rb") as f:
            if rel.endswith(".safetensors"):
                head = f.read(8)
                size = int.from_bytes(head, "little") if len(head) == 8 else 0
                chunks: Iterable[bytes] = [f.read(min(size, 100_000_000))]
                text_like = True
            else:
                chunks = iter(lambda: f.read(1 << 22), b"")
            tail = b""
            for chunk in chunks:
                window = tail + chunk
                if any(n in window for n in needles) or (
                        text_like and _TOKEN_SHAPE.search(window.decode("utf-8", "replace"))):
                    raise ValueError(
                        f"Refusing to upload {rel}: it contains a Hugging Face access token. Remove it (and keep "
                        "secrets out of configs and training arguments) before publishing."
                    )
                tail = window[-(max(overlap, 64)):]


def _write_atomic(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
    secrets = _secrets([token if isinstance(token, str) else None])
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
    secrets = _secrets([token if isinstance(token, str) else None])
    _assert_no_secret(folder, files, secrets)
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
    from . import __version__

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
    secrets = _secrets([token if isinstance(token, str) else None])
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
        _write_atomic(os.path.join(folder, "README.md"), str(card).encode("utf-8"))
        files.append("README.md")
        for rel, source in extra.items():
            target = os.path.join(folder, rel)
            if rel in files:
                raise ValueError(f"extra_files[{rel!r}] would overwrite a pipeline file.")
            if not (os.path.exists(target) and os.path.samefile(source, target)):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                tmp = f"{target}.tmp-{os.getpid()}"
                shutil.copyfile(source, tmp)
                os.replace(tmp, target)
            files.append(rel)
        if grid_in_save_dir and grid not in files:
            files.append(grid)
        _assert_no_secret(folder, files, secrets)
    except BaseException:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
        raise
    message = commit_message or f"Upload {type(pipeline).__name__} with ddpm-hf {__version__}"
    return _start_upload(folder, files, repo_id, token=token, private=private, revision=revision,
                         commit_message=message, run_as_future=run_as_future, max_retries=max_retries,
                         retry_backoff=retry_backoff, endpoint=endpoint, secrets=secrets,
                         kept_folder=None if temporary is not None else folder, temporary=temporary)


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------
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
    from . import __version__

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
