# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Saving and loading the ddpm-hf pipelines: what `pipeline_ddpm_hf.py` hands over when the package is installed.

The shipped pipeline file samples; it reaches this module through a guarded import, so a folder loaded with
`trust_remote_code=True` where ddpm-hf is absent saves and loads with diffusers' own behaviour, and no user of remote
code runs the machinery below.

- `save_pipeline`: `DiffusionPipeline.save_pretrained` into a staging folder beside the target, the code shipped in
  (so the folder loads three ways: see the README's "Loading"), then swapped into place.
- `resolve_pretrained`: a Hub id to a local snapshot (so the installed classes load it without running its code), and
  the refusal of pickle-only weights with the way to convert them.
- `map_shipped_names`: a saved `model_index.json` names code files; with the package installed they are its modules.
"""

import ctypes
import ctypes.util
import importlib
import inspect
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable

from .io import fsync_tree

# Libraries diffusers resolves by itself; any other component library is our own code, shipped in the folder.
STOCK_LIBRARIES = ("diffusers", "transformers")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


# ----------------------------------------------------------------------------------------------------------------
# Saving: a folder that loads three ways, written beside the old one and swapped in entry by entry
# ----------------------------------------------------------------------------------------------------------------
def save_pipeline(pipeline, save_directory, save_pretrained: Callable, safe_serialization: bool = True, **kwargs):
    """`save_pretrained(staging, ...)` (diffusers' own), plus the shipped code, then swapped into `save_directory`.

    A crash while saving leaves the previous pipeline in `save_directory`. Weights are safetensors unless the caller
    asks for pickles (`safe_serialization=False`, diffusers' behaviour): written, with a warning that ddpm-hf loads
    them only with `use_safetensors=False`.
    """
    if not safe_serialization:
        warnings.warn(
            "safe_serialization=False writes pickle weights (.bin); DDPMImagePipeline.from_pretrained loads them only"
            " with use_safetensors=False, since unpickling can run code. Keep the default to write safetensors.",
            stacklevel=3,
        )
    if kwargs.get("push_to_hub"):
        raise ValueError("Use pipeline.push_to_hub(repo_id) to publish; save_pretrained writes a local folder.")
    target = os.path.abspath(os.fspath(save_directory))
    if os.path.exists(target) and not os.path.isdir(target):
        raise ValueError(f"Cannot save a pipeline to {target}: it is a file, not a folder.")
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.saving-", dir=parent)
    try:
        save_pretrained(staging, safe_serialization=safe_serialization, **kwargs)
        ship_code(pipeline, staging)
        publish_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def ship_code(pipeline, folder: str) -> None:
    """Copy the pipeline's and its custom components' code into `folder` and point `model_index.json` at it.

    `_class_name` becomes ["pipeline_ddpm_hf", "<Pipeline>"] and each custom component's entry
    ["<module file>", "<Class>"] with the file at <component>/<module file>.py: the layout that
    `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` loads without ddpm_hf installed.
    """
    index_path = os.path.join(folder, "model_index.json")
    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    pipeline_file = inspect.getfile(type(pipeline))
    pipeline_stem = os.path.splitext(os.path.basename(pipeline_file))[0]
    shutil.copyfile(pipeline_file, os.path.join(folder, pipeline_stem + ".py"))
    index["_class_name"] = [pipeline_stem, type(pipeline).__name__]
    if isinstance(index.get("class_names"), list):
        # diffusers reads every list in model_index.json as a [library, class] component entry (and its Hub download
        # refuses one whose "library" is neither a module nor a file): the names go in as {"0": name, ...}.
        index["class_names"] = {str(i): name for i, name in enumerate(index["class_names"])}
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or entry[0] in STOCK_LIBRARIES or entry[0] is None:
            continue
        component_file = inspect.getfile(type(getattr(pipeline, name)))
        component_stem = os.path.splitext(os.path.basename(component_file))[0]
        shutil.copyfile(component_file, os.path.join(folder, name, component_stem + ".py"))
        index[name] = [component_stem, entry[1]]
    with open(index_path, "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")


def publish_folder(staging: str, target: str) -> None:
    """Move every entry of the complete folder `staging` into `target`, `model_index.json` last.

    Each entry is replaced atomically, so at every moment each file and component folder in `target` is complete;
    entries of `target` that the pipeline does not write (checkpoints, logs, pictures) are left alone.
    """
    fsync_tree(staging)
    os.makedirs(target, exist_ok=True)
    trash = tempfile.mkdtemp(prefix=".ddpm-hf-old-", dir=target)
    entries = sorted(os.listdir(staging), key=lambda name: name == "model_index.json")
    for name in entries:
        _move_into_place(os.path.join(staging, name), os.path.join(target, name), trash)
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(new: str, target: str, trash: str) -> None:
    """Put `new` at `target`; whatever was at `target` ends up in `trash`. Never leaves `target` half-written."""
    if not os.path.lexists(target):
        os.rename(new, target)
    elif os.path.isdir(new) or os.path.isdir(target):
        if _exchange_paths(new, target):  # target now holds the new entry, `new` holds the old one
            os.rename(new, os.path.join(trash, os.path.basename(target)))
        else:  # no atomic exchange: the old entry goes first, so a crash leaves it recoverable in `trash`
            os.rename(target, os.path.join(trash, os.path.basename(target)))
            os.rename(new, target)
    else:
        os.replace(new, target)  # atomic for files


def _exchange_paths(a: str, b: str) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    return libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0


# ----------------------------------------------------------------------------------------------------------------
# Loading: a folder or a Hub id, safetensors only, the shipped names mapped to the installed modules
# ----------------------------------------------------------------------------------------------------------------
def resolve_pretrained(pipeline_class, name_or_path, kwargs: dict) -> str:
    """The local folder `from_pretrained` should load (a Hub repo is downloaded whole first), checked for weights
    that are pickles only. Pops the Hub download arguments from `kwargs`; expects `use_safetensors` set in it."""
    from .hub import HUB_DOWNLOAD_KWARGS, resolve_pipeline_folder

    name = os.fspath(name_or_path)
    if not os.path.isdir(name):
        hub_kwargs = {k: kwargs.pop(k) for k in HUB_DOWNLOAD_KWARGS if k in kwargs}
        name = resolve_pipeline_folder(name, **hub_kwargs)
    if kwargs["use_safetensors"] and os.path.isdir(name):
        # diffusers would say only "no file named diffusion_pytorch_model.safetensors": name the part and the fix.
        component = pickle_only_component(name)
        if component is not None:
            cls = pipeline_class.__name__
            raise OSError(
                f"The {component!r} component of {name} has pickle weights but no .safetensors weights, and"
                f" {cls} loads only safetensors: if you trust this checkpoint, convert it once with"
                f" {cls}.from_pretrained({name!r}, use_safetensors=False).save_pretrained({name!r})."
            )
    return name


def pickle_only_component(folder: str) -> str | None:
    """The first component of the saved pipeline `folder` whose weights are pickles only (no .safetensors file)."""
    index_path = os.path.join(folder, "model_index.json")
    if not os.path.isfile(index_path):
        return None  # not a pipeline folder: diffusers says so
    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    for name, entry in sorted(index.items()):
        component = os.path.join(folder, name)
        if name.startswith("_") or not isinstance(entry, list) or not os.path.isdir(component):
            continue
        files = os.listdir(component)
        if any(f.endswith(PICKLE_SUFFIXES) for f in files) and not any(f.endswith(".safetensors") for f in files):
            return name
    return None


def map_shipped_names(pipeline_class, config: dict) -> None:
    """Point a loaded `model_index.json` at the installed classes instead of the folder's code files.

    The shipped layout names code files (["pipeline_ddpm_hf", ...], ["scheduling_ddpm_posterior", ...]); they become
    the package's own modules, imported now (diffusers loads a component of a non-stock library only from an
    imported module, and `import ddpm_hf` imports nothing).
    """
    package = pipeline_class.__module__.rpartition(".")[0]
    if isinstance(config.get("_class_name"), list) and config["_class_name"][1] == pipeline_class.__name__:
        config["_class_name"] = pipeline_class.__name__
    _, options = pipeline_class._get_signature_keys(pipeline_class)  # arguments such as class_names, not components
    for name, entry in config.items():
        if name.startswith("_") or name in options or not isinstance(entry, list):
            continue
        if entry[0] in STOCK_LIBRARIES:
            continue
        if entry[0] is not None and "." not in entry[0] and package:
            config[name] = [f"{package}.{entry[0]}", entry[1]]
        if package and config[name][0].startswith(package + "."):
            importlib.import_module(config[name][0])
