# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""What a run needs from the machine beyond valid flags, checked before anything is loaded or written.

- The optional packages its flags call for (wandb, torchdata, torch-fidelity): a missing one is named with the
  command that installs it, instead of a tracker silently dropped, or a ModuleNotFoundError after hours of training.
- The Hub, for the Hub ids it names (--dataset_name, --text_encoder_name_or_path, --push_to_hub): when it is switched
  off (HF_HUB_OFFLINE=1) or cannot be reached, an id that is not in the local caches fails in about a second with the
  way to train on local data, instead of after half a minute of the libraries' retries.
"""

import glob
import os
from importlib.util import find_spec

from accelerate.logging import get_logger
from huggingface_hub import constants as hub_constants
from huggingface_hub import get_session, try_to_load_from_cache
from huggingface_hub.file_download import repo_folder_name

from ..data.dataset import DataError
from ..errors import one_line
from ..evaluation.inception import TORCH_FIDELITY_INSTALL
from ..hub import is_hub_id
from ..text.components import BUILTIN_PREFIX, BUILTIN_TEXT_ENCODERS, TextEncoderError
from .config import FlagError
from .publishing import HubRepoError, repo_name

# One try, no retries: a Hub that answers at all answers well within this; an unreachable one fails at once (no
# route, no name) or by this deadline (packets dropped).
HUB_PROBE_TIMEOUT_S = 2.0

logger = get_logger(__name__)


def check_the_machine(args) -> None:
    """Every process, before the output folder is taken: the optional packages, then the Hub."""
    check_optional_packages(args)
    check_the_hub(args)


def check_optional_packages(args) -> None:
    """A FlagError naming every optional package the flags need and this environment lacks, with its install."""
    missing = []
    if args.report_to == "wandb" and find_spec("wandb") is None:
        missing.append("--report_to wandb needs wandb: pip install wandb (or pass --report_to tensorboard)")
    if args.streaming and find_spec("torchdata") is None:
        missing.append("--streaming needs torchdata, whose StatefulDataLoader keeps the stream's place for resuming:"
                       " pip install torchdata")
    if args.eval_fid_images and not args.embedded_dataset and None in (find_spec("torchvision"),
                                                                       find_spec("torch_fidelity")):
        missing.append(f"--eval_fid_images on an image folder measures FID with Inception-v3, which needs"
                       f" {TORCH_FIDELITY_INSTALL}; or pass --eval_fid_images 0")
    if missing:
        raise FlagError("; ".join(missing))


def check_the_hub(args) -> None:
    """With the Hub switched off or unreachable: a Hub id the caches cannot serve fails now, in one line."""
    dataset = args.dataset_name if is_hub_id(args.dataset_name) else None
    encoder = args.text_encoder_name_or_path if args.text_to_image else None
    if encoder is not None and (encoder.startswith(BUILTIN_PREFIX) or not is_hub_id(encoder)):
        encoder = None
    if dataset is None and encoder is None and not args.push_to_hub:
        return
    offline = hub_unavailable()
    if offline is None:
        return
    if dataset is not None and not dataset_is_cached(dataset):
        raise DataError(f"--dataset_name {dataset} is no local path, so it names a Hub dataset, and the Hub {offline}:"
                        " train on local data instead (--train_data_dir FOLDER of images, --dataset_name with a local"
                        " dataset folder or a .parquet/.arrow/.csv file, or --embedded_dataset digits, no download),"
                        " or go online once to download it into the cache")
    if encoder is not None and not encoder_is_cached(encoder):
        builtin = " or ".join(BUILTIN_TEXT_ENCODERS)
        raise TextEncoderError(f"--text_encoder_name_or_path {encoder} is a Hub id, and the Hub {offline}: pass a"
                               f" local folder with the encoder and its tokenizer, or {builtin} (offline, random"
                               " weights), or go online once to download it into the cache")
    if args.push_to_hub:
        raise HubRepoError(f"--push_to_hub publishes to the Hub, and the Hub {offline}: train without --push_to_hub,"
                           f" then publish the folder with ddpm_hf.hub.push_folder_to_hub({args.output_dir!r},"
                           f" {repo_name(args)!r}) once online. Nothing was trained.")
    if not hub_constants.is_offline_mode():
        logger.warning(f"The Hub {offline}: the cached copies of {' and '.join(filter(None, (dataset, encoder)))}"
                       " are used; set HF_HUB_OFFLINE=1 to skip the libraries' retries of the network")


def hub_unavailable() -> str | None:
    """Why the Hub cannot serve this run (switched off, or unreachable after one short try), or None."""
    if hub_constants.is_offline_mode():
        return "is switched off (HF_HUB_OFFLINE is set)"
    try:
        get_session().head(hub_constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT_S)  # any answer, 200 or 404, will do
    except Exception as error:  # no route, no name, refused, timed out, a proxy's or TLS failure: no answer
        return f"cannot be reached at {hub_constants.ENDPOINT} ({type(error).__name__}: {one_line(error)})"
    return None


def dataset_is_cached(repo_id: str) -> bool:
    """`datasets` can load it offline: its prepared copy (datasets' cache, <namespace>___<name>/<config>/<version>/
    <hash>, where `load_dataset` looks when offline) or its files (the Hub cache's snapshot of the dataset repo)."""
    from datasets import config as datasets_config

    prepared = os.path.join(os.path.expanduser(str(datasets_config.HF_DATASETS_CACHE)), repo_id.replace("/", "___"))
    snapshots = os.path.join(hub_constants.HF_HUB_CACHE, repo_folder_name(repo_id=repo_id, repo_type="dataset"),
                             "snapshots")
    return any(os.path.isdir(path) for path in glob.glob(os.path.join(prepared, "*", "*", "*"))) or bool(
        os.path.isdir(snapshots) and os.listdir(snapshots))


def encoder_is_cached(repo_id: str) -> bool:
    """The Hub cache holds the encoder's config, where ddpm_hf.text.components looks first (a pipeline repo's
    text_encoder/ folder, or the top folder of an encoder repo)."""
    return any(isinstance(try_to_load_from_cache(repo_id, filename), str)
               for filename in ("text_encoder/config.json", "config.json"))
