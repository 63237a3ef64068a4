# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The model card: a pipeline repo's README.md (metadata + body), rendered from the `model_card.md` Jinja template."""

import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from .resolve import PathLike, is_hub_id
from .secrets import TOKEN_SHAPE, scrub_config, secrets_to_hide

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
    "snr_gamma": "Min-SNR gamma",
    "use_ema": "EMA",
    "ema_max_decay": "EMA max decay",
    "mixed_precision": "Mixed precision",
    "resolution": "Resolution",
    "hardware": "Hardware",
    "num_processes": "Processes",
    "seed": "Seed",
}


def model_card_template_path() -> str:
    """The `model_card.md` template: the installed package's copy, else the one at the top of a source checkout."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidates = [os.path.join(here, "templates", TEMPLATE_NAME), os.path.join(os.path.dirname(here), TEMPLATE_NAME)]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"The model card template {TEMPLATE_NAME} is missing: looked in {' and '.join(candidates)}. "
        "Reinstall ddpm-hf, or pass template_path=."
    )


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


def _text_encoder_id(pipeline) -> str | None:
    encoder = getattr(pipeline, "text_encoder", None)
    if encoder is None:
        return None
    config = getattr(encoder, "config", None)
    for candidate in (getattr(config, "_name_or_path", None), getattr(encoder, "name_or_path", None)):
        if isinstance(candidate, str) and "/" in candidate and is_hub_id(candidate):
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
            if get("num_class_embeds") is not None:
                num_classes = get("num_class_embeds") - 1
                details.append(f"{num_classes} classes + a null label (label {num_classes})")
        elif config is not None and hasattr(obj, "parameters"):
            n = _n_params(obj)
            if n is not None:
                details.append(f"{n:,} parameters")
            source = getattr(config, "_name_or_path", None)
            if source is None and isinstance(config, Mapping):
                source = config.get("_name_or_path")
            if is_hub_id(source):
                details.append(f"from [`{source}`](https://huggingface.co/{source})")
        label = _COMPONENT_LABELS.get(name, name.replace("_", " ").capitalize())
        rows.append({"label": label, "value": ", ".join(details)})
    return rows


def _class_rows(pipeline) -> list[dict[str, str]] | None:
    """(label, name) rows of a class-conditional pipeline's classes; None for a pipeline that is not one."""
    unet = getattr(pipeline, "unet", None)
    num_class_embeds = getattr(getattr(unet, "config", None), "num_class_embeds", None)
    if num_class_embeds is None:
        return None
    names = getattr(pipeline, "class_names", None)
    names = list(names) if isinstance(names, (list, tuple)) else [None] * (num_class_embeds - 1)
    return [{"label": str(i), "name": _cell(name) if name is not None else "(no name recorded)"}
            for i, name in enumerate(names)]


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
    unconditional = unconditional and _class_rows(pipeline) is None  # DDPMPipeline passes no class labels
    if unconditional and "scheduler" in names:
        imports["diffusers"].add("DDPMPipeline")
        stock_pipeline = "pipe = DDPMPipeline(unet=unet, scheduler=scheduler)"
    lines = [f"from {module} import {', '.join(sorted(classes))}" for module, classes in imports.items() if classes]
    return lines, components, stock_pipeline


def _code_files(pipeline) -> list[str]:
    """The repository's code files that `trust_remote_code=True` runs (see pipeline_utils.ship_code)."""
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

    from .. import __version__

    secrets = secrets_to_hide(_secrets_to_hide)
    pipeline_tag = _pipeline_tag(pipeline)
    all_tags = ["ddpm", "ddpm-hf", "diffusers", pipeline_tag]
    class_rows = None if pipeline_tag == "text-to-image" else _class_rows(pipeline)
    for tag in ["class-conditional"] * (class_rows is not None) + list(tags or []):
        if tag not in all_tags:
            all_tags.append(tag)
    base_model = base_model or _text_encoder_id(pipeline)
    hub_dataset = is_hub_id(dataset_name)
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
    task = "text-to-image" if is_text_to_image else "unconditional image generation"
    if class_rows is not None:
        task = "class-conditional image generation"
    card = ModelCard.from_template(
        card_data,
        template_path=os.fspath(template_path) if template_path is not None else model_card_template_path(),
        repo_id=repo_id,
        title=title or repo_id.split("/")[-1],
        pipeline_class=type(pipeline).__name__,
        task=task,
        is_text_to_image=is_text_to_image,
        class_rows=class_rows,
        example_class_label=(
            (json.dumps(pipeline.class_names[0], ensure_ascii=False) if getattr(pipeline, "class_names", None) else "0")
            if class_rows else None
        ),
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
    if any(secret in text for secret in secrets) or TOKEN_SHAPE.search(text):
        raise ValueError("The rendered model card contains an access token; refusing to use it.")
    return card
