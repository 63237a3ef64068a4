# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Publishing ddpm-hf pipelines on the Hugging Face Hub, and resolving Hub repos to local folders.

- `model_card.render_model_card`: the repo's README.md (metadata + body) from the `model_card.md` Jinja template.
- `push.push_pipeline_to_hub`: save the pipeline (the folder that loads three ways), write the card and extra files
  (e.g. a sample grid), create the repo and commit, retrying transient failures; optionally in the background.
- `push.push_folder_to_hub`: the upload half on its own, for a folder saved earlier (e.g. to retry a failed push).
- `resolve.resolve_pipeline_folder`: a Hub repo id -> a local snapshot folder (online, or offline from the cache).
- `secrets`: the token is only ever sent as an HTTP header: it is kept out of log messages, the card and every
  uploaded file, and a push refuses to upload a file that contains it.

The names below are the package's Hub API; the shipped `pipeline_ddpm_hf.py` imports them from `ddpm_hf.hub`.
"""

from .model_card import model_card_template_path, render_model_card
from .push import HubPushError, create_hub_repo, push_folder_to_hub, push_pipeline_to_hub
from .resolve import HUB_DOWNLOAD_KWARGS, is_hub_id, looks_like_local_path, resolve_pipeline_folder

__all__ = [
    "HUB_DOWNLOAD_KWARGS",
    "HubPushError",
    "create_hub_repo",
    "is_hub_id",
    "looks_like_local_path",
    "model_card_template_path",
    "push_folder_to_hub",
    "push_pipeline_to_hub",
    "render_model_card",
    "resolve_pipeline_folder",
]
