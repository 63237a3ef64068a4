# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The CLIP tokenizer and text encoder of a text-to-image run: `builtin:tiny` / `builtin:small` (offline, random
weights), a local folder, or a Hub id; each checked against the other."""

import contextlib
import json
import os

import torch

from ..choices import BUILTIN_PREFIX, BUILTIN_TEXT_ENCODERS
from ..errors import one_line
from .encoders import TEXT_ENCODER_PRESETS, build_clip_text_encoder, build_clip_tokenizer

# The trainer offers ddpm_hf/choices.py's names without importing this module: one per encoder preset.
assert BUILTIN_TEXT_ENCODERS == tuple(BUILTIN_PREFIX + name for name in TEXT_ENCODER_PRESETS)

# Files a folder needs for each part (the tokenizer needs either set).
_TOKENIZER_FILE_SETS = (("vocab.json", "merges.txt"), ("tokenizer.json",))
_TOKENIZER_EXTRA_FILES = ("tokenizer_config.json", "special_tokens_map.json")
_WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)
_CLIP_MODEL_TYPES = ("clip_text_model", "clip")


class TextEncoderError(ValueError):
    """The text encoder or tokenizer cannot be loaded; the message names the source and what is missing."""


# ----------------------------------------------------------------------------------------------------------------
# Loading the tokenizer and the text encoder
# ----------------------------------------------------------------------------------------------------------------
def load_text_components(name_or_path: str, seed: int = 0):
    """(CLIPTokenizer, CLIPTextModel in float32, eval mode) from a builtin name, a local folder or a Hub id.

    - `builtin:tiny` / `builtin:small` (`BUILTIN_TEXT_ENCODERS`): the real CLIP vocabulary with a randomly
      initialised encoder seeded by `seed`, so captioned data trains with no network (the encoder must then be
      trained, or it only tells the captions apart by its random features).
    - a local folder: a saved `DDPMTextToImagePipeline` (tokenizer/ and text_encoder/ subfolders), a folder holding
      both parts at its top (the layout of `openai/clip-vit-base-patch32`), or a whole CLIPModel checkpoint (its
      text half is taken); the tokenizer files must be there too.
    - otherwise a Hub id, in either layout (downloaded, or read from the cache offline).

    Float32 whatever the checkpoint's dtype: the trainer casts a frozen encoder to its weight dtype itself and
    trains a trainable one in float32. Any failure is a one-line `TextEncoderError`.
    """
    name = os.fspath(name_or_path)
    if name.startswith(BUILTIN_PREFIX):
        return _builtin_text_components(name, seed)
    if os.path.isdir(name):
        encoder_dir, tokenizer_dir = _local_layout(name)
        return _load_from_folders(name, encoder_dir, tokenizer_dir)
    if os.path.exists(name):
        raise TextEncoderError(f"text encoder {name!r} is a file: pass the folder that holds config.json and the "
                               f"tokenizer files, a Hub id, or one of {', '.join(BUILTIN_TEXT_ENCODERS)}")
    return _load_from_hub(name)


def _builtin_text_components(name: str, seed: int):
    preset = name[len(BUILTIN_PREFIX):]
    if preset not in TEXT_ENCODER_PRESETS:
        raise TextEncoderError(
            f"unknown builtin text encoder {name!r}: choose one of {', '.join(BUILTIN_TEXT_ENCODERS)}"
        )
    tokenizer = build_clip_tokenizer()
    tokenizer.name_or_path = name
    # build_clip_text_encoder seeds torch's global generator; keep the caller's random state untouched.
    with torch.random.fork_rng(devices=[]):
        text_encoder = build_clip_text_encoder(preset, seed=seed)
    text_encoder.config._name_or_path = name
    return tokenizer, text_encoder.eval()


def _local_layout(folder: str) -> tuple[str, str]:
    """(encoder folder, tokenizer folder): a saved pipeline's subfolders, or the folder itself."""
    if os.path.isfile(os.path.join(folder, "text_encoder", "config.json")):
        return os.path.join(folder, "text_encoder"), os.path.join(folder, "tokenizer")
    if os.path.isfile(os.path.join(folder, "config.json")):
        return folder, folder
    raise TextEncoderError(
        f"text encoder folder {folder!r} has neither text_encoder/config.json (a saved text-to-image pipeline) nor "
        f"config.json (a CLIP text model or CLIPModel checkpoint)"
    )


def _has_tokenizer_files(folder: str) -> bool:
    return any(all(os.path.isfile(os.path.join(folder, f)) for f in files) for files in _TOKENIZER_FILE_SETS)


def _load_from_folders(source: str, encoder_dir: str, tokenizer_dir: str):
    """Load both parts from local folders, checking first what transformers would not report clearly.

    (transformers' CLIPTokenizer.from_pretrained builds an empty 2-token tokenizer from a folder without tokenizer
    files instead of failing, so their presence is checked here.)
    """
    config_path = os.path.join(encoder_dir, "config.json")
    try:
        with open(config_path, encoding="utf-8") as f:
            model_type = json.load(f).get("model_type")
    except (OSError, ValueError) as error:
        raise TextEncoderError(f"text encoder {source!r}: cannot read {config_path} ({error})") from error
    if model_type not in _CLIP_MODEL_TYPES:
        raise TextEncoderError(
            f"text encoder {source!r} holds a {model_type!r} model ({config_path}); a CLIP text model "
            f"(model_type {' or '.join(map(repr, _CLIP_MODEL_TYPES))}) is needed"
        )
    if not any(os.path.isfile(os.path.join(encoder_dir, f)) for f in _WEIGHT_FILES):
        raise TextEncoderError(f"text encoder {source!r} has no weights in {encoder_dir} (expected one of "
                               f"{', '.join(_WEIGHT_FILES)})")
    if not _has_tokenizer_files(tokenizer_dir):
        raise TextEncoderError(
            f"text encoder {source!r} has no tokenizer in {tokenizer_dir}: vocab.json and merges.txt (or "
            f"tokenizer.json) are missing; save the tokenizer there (ddpm_hf.text.encoders.write_clip_tokenizer_files "
            f"writes OpenAI CLIP's)"
        )
    from transformers import CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as transformers_logging

    try:
        tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
        # A CLIPModel checkpoint makes transformers list every vision weight as unused; missing text weights are
        # checked below instead.
        with _transformers_quiet(transformers_logging):
            text_encoder, info = CLIPTextModel.from_pretrained(encoder_dir, dtype=torch.float32,
                                                               output_loading_info=True)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise TextEncoderError(f"text encoder {source!r} cannot be loaded: {one_line(error)}") from error
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise TextEncoderError(f"text encoder {source!r} lacks {len(missing)} text-model weights in {encoder_dir}, "
                               f"e.g. {missing[:3]}")
    check_tokenizer_fits_encoder(source, tokenizer, text_encoder)
    return tokenizer, text_encoder.eval()


@contextlib.contextmanager
def _transformers_quiet(transformers_logging):
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)


def check_tokenizer_fits_encoder(source: str, tokenizer, text_encoder) -> None:
    """Refuse a tokenizer the encoder cannot embed, or one padding to more positions than the encoder has."""
    length, positions = tokenizer.model_max_length, text_encoder.config.max_position_embeddings
    if len(tokenizer) > text_encoder.config.vocab_size:
        raise TextEncoderError(f"text encoder {source!r}: the tokenizer has {len(tokenizer)} tokens but the encoder "
                               f"embeds only {text_encoder.config.vocab_size}")
    if length > positions:
        raise TextEncoderError(
            f"text encoder {source!r}: the tokenizer pads prompts to {length} tokens but the encoder has "
            f"{positions} positions; set \"model_max_length\": {positions} in its tokenizer_config.json"
        )


def _load_from_hub(repo_id: str):
    """Find the layout of Hub repo `repo_id` from its config files, then load it like a local folder.

    Fetching single files (not the whole repo) avoids downloading a pipeline's UNet, or the several weight formats a
    CLIP repo holds (only the first of `_WEIGHT_FILES` present is fetched). Offline, every file comes from the Hub
    cache.
    """
    from huggingface_hub import constants as hub_constants
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    def fetch(filename: str) -> str | None:
        """The local path of `filename` in the repo, or None when the repo has no such file."""
        try:
            return hf_hub_download(repo_id, filename)
        except (LocalEntryNotFoundError, EntryNotFoundError):  # not in the repo, or offline and not cached
            return None

    def fail(what: str):
        offline = " (HF_HUB_OFFLINE is set)" if hub_constants.is_offline_mode() else ""
        raise TextEncoderError(
            f"text encoder {repo_id!r} is not a local folder and {what}{offline}: pass one of "
            f"{', '.join(BUILTIN_TEXT_ENCODERS)} or a local folder, or go online to download it"
        )

    def in_repo(folder: str, filename: str) -> str:
        return f"{folder}/{filename}" if folder else filename

    try:
        for encoder_sub, tokenizer_sub in (("text_encoder", "tokenizer"), ("", "")):  # noqa: B007 (read after the loop)
            config = fetch(in_repo(encoder_sub, "config.json"))
            if config is not None:
                break
        else:
            fail("cannot be found on the Hub or in the Hub cache")
        tokenizer_dir = None
        for files in _TOKENIZER_FILE_SETS:
            paths = [fetch(in_repo(tokenizer_sub, f)) for f in files]
            if all(paths):
                tokenizer_dir = os.path.dirname(paths[0])
                break
        if tokenizer_dir is None:
            fail(f"has no tokenizer files (vocab.json and merges.txt, or tokenizer.json) in "
                 f"{tokenizer_sub or 'its top folder'} on the Hub or in the Hub cache")
        for extra in _TOKENIZER_EXTRA_FILES:
            fetch(in_repo(tokenizer_sub, extra))
        for weights in _WEIGHT_FILES:  # only the first format present, in transformers' order of preference
            path = fetch(in_repo(encoder_sub, weights))
            if path is not None:
                break
        else:
            fail("has no text encoder weights on the Hub or in the Hub cache")
        if weights.endswith(".index.json"):  # a sharded checkpoint: fetch its shards too
            with open(path, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            if not all(fetch(in_repo(encoder_sub, shard)) for shard in shards):
                fail(f"lacks some of the weight shards {shards}")
    except HFValidationError:
        raise TextEncoderError(
            f"text encoder {repo_id!r} is neither a local folder nor a Hub id: pass a folder that exists, a Hub id "
            f"such as openai/clip-vit-base-patch32, or one of {', '.join(BUILTIN_TEXT_ENCODERS)}"
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        fail(f"is no Hub repo one can read ({one_line(error)})")
    except (HfHubHTTPError, OSError) as error:
        fail(f"cannot be downloaded ({one_line(error)})")
    return _load_from_folders(repo_id, os.path.dirname(config), tokenizer_dir)
