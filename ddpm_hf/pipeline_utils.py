# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Saving and loading the ddpm-hf pipelines: what `pipeline_ddpm_hf.py` hands over when the package is installed.

The shipped pipeline file samples; it reaches this module through a guarded import, so a folder loaded with
`trust_remote_code=True` where ddpm-hf is absent saves and loads with diffusers' own behaviour, and no user of remote
code runs the machinery below.

- `save_pipeline`: `DiffusionPipeline.save_pretrained` into a staging folder, the code shipped in (so the folder
  loads three ways: see the README's "Loading"), then published whole (`publication`, which the trainer uses too
  for the pipeline with its card and pictures).
- `resolve_pretrained`: a Hub id to a local snapshot (so the installed classes load it without running its code), and
  the refusal of pickle-only weights with the way to convert them.
- `map_shipped_names`: a saved `model_index.json` names code files; with the package installed they are its modules.
"""

import glob
import importlib
import inspect
import json
import os
import shutil
import warnings
from collections.abc import Callable
from contextlib import contextmanager

from .io import fsync_path, fsync_tree, write_text_atomically

# Libraries diffusers resolves by itself; any other component library is our own code, shipped in the folder.
STOCK_LIBRARIES = ("diffusers", "transformers")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# A publication's journal inside the target folder (hidden, so `checkpoint-*` patterns and uploads skip it)
STAGING, READY, RETIRED = ".publishing", "READY", ".publishing-old"
# The package's modules that define pipeline components (what ship_code names): the only ones a load imports
COMPONENT_MODULES = ("scheduling_ddpm_posterior",)


# ----------------------------------------------------------------------------------------------------------------
# Saving: a folder that loads three ways, published whole
# ----------------------------------------------------------------------------------------------------------------
def save_pipeline(pipeline, save_directory, save_pretrained: Callable, safe_serialization: bool = True, **kwargs):
    """`save_pretrained(staging, ...)` (diffusers' own), plus the shipped code, published whole into
    `save_directory` (see `publication`).

    Weights are safetensors unless the caller asks for pickles (`safe_serialization=False`, diffusers' behaviour):
    written, with a warning that ddpm-hf loads them only with `use_safetensors=False`.
    """
    if not safe_serialization:
        warnings.warn(
            "safe_serialization=False writes pickle weights (.bin); DDPMImagePipeline.from_pretrained loads them only"
            " with use_safetensors=False, since unpickling can run code. Keep the default to write safetensors.",
            stacklevel=3,
        )
    if kwargs.get("push_to_hub"):
        raise ValueError("Use pipeline.push_to_hub(repo_id) to publish; save_pretrained writes a local folder.")
    with publication(save_directory) as staging:
        save_pretrained(staging, safe_serialization=safe_serialization, **kwargs)
        ship_code(pipeline, staging)


@contextmanager
def publication(folder):
    """`with publication(folder) as staging:` write complete new entries (a pipeline, its pictures, its card) into
    `staging`; at the end of the block they replace their namesakes in `folder` as one set.

    The set is journaled: `staging` is `folder/.publishing`, and the READY file in it says it is complete. The swap
    then takes the old `model_index.json` out first and puts the new one in last, so at every instant `folder` holds
    the previous complete pipeline, the new complete one, or (during the renames) no `model_index.json` at all,
    which no loader takes for a pipeline, with READY saying how to finish: the next publication into `folder` (a
    save, a resumed run) or `finish_interrupted_publication` completes the swap. Entries the set does not name
    (checkpoints, logs) are left alone. An error inside the block leaves `folder` as it was.
    """
    target = os.path.abspath(os.fspath(folder))
    if os.path.exists(target) and not os.path.isdir(target):
        raise ValueError(f"Cannot save a pipeline to {target}: it is a file, not a folder.")
    os.makedirs(target, exist_ok=True)
    finish_interrupted_publication(target)
    staging = os.path.join(target, STAGING)
    os.makedirs(staging)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_tree(staging)
    write_text_atomically(os.path.join(staging, READY), "complete: move every entry into the folder\n")
    _swap_in(target)


def finish_interrupted_publication(folder) -> bool:
    """Complete a publication into `folder` that a crash interrupted (True), or discard one that never became
    complete; also remove what interrupted saves of earlier versions left (`.ddpm-hf-old-*`, `.NAME.saving-*`)."""
    target = os.path.abspath(os.fspath(folder))
    for stale in glob.glob(os.path.join(target, ".ddpm-hf-old-*")) + glob.glob(
            os.path.join(os.path.dirname(target), f".{glob.escape(os.path.basename(target))}.saving-*")):
        shutil.rmtree(stale, ignore_errors=True)
    staging = os.path.join(target, STAGING)
    if os.path.isfile(os.path.join(staging, READY)):
        _swap_in(target)
        return True
    shutil.rmtree(staging, ignore_errors=True)  # never complete: the folder still holds the previous set
    shutil.rmtree(os.path.join(target, RETIRED), ignore_errors=True)
    return False


def _swap_in(target: str) -> None:
    """Move the complete staged set into `target`: the old index out first, the new one in last. Each rename is
    repeatable, so a crash at any point leaves a state that this function, run again, completes."""
    staging, retired = os.path.join(target, STAGING), os.path.join(target, RETIRED)
    os.makedirs(retired, exist_ok=True)
    index = os.path.join(target, "model_index.json")
    if os.path.exists(os.path.join(staging, "model_index.json")) and os.path.exists(index):
        os.replace(index, os.path.join(retired, "model_index.json"))  # from here on the folder is no pipeline
    for name in sorted(set(os.listdir(staging)) - {READY, "model_index.json"}):
        new, old = os.path.join(staging, name), os.path.join(target, name)
        if os.path.lexists(old) and (os.path.isdir(old) or os.path.isdir(new)):  # a rename cannot replace a folder
            shutil.rmtree(os.path.join(retired, name), ignore_errors=True)
            os.rename(old, os.path.join(retired, name))
        os.replace(new, old)
    if os.path.exists(os.path.join(staging, "model_index.json")):
        os.replace(os.path.join(staging, "model_index.json"), index)  # the new set is complete and loadable
    fsync_path(target)
    os.remove(os.path.join(staging, READY))  # done: what is left of the journal is only to delete
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(retired, ignore_errors=True)


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


# ----------------------------------------------------------------------------------------------------------------
# Loading: a folder or a Hub id, safetensors only, the shipped names mapped to the installed modules
# ----------------------------------------------------------------------------------------------------------------
def resolve_pretrained(pipeline_class, name_or_path, kwargs: dict) -> str:
    """The local folder `from_pretrained` should load (a Hub repo is downloaded whole first), checked: a complete
    pipeline (`check_pipeline_folder`) whose weights are not pickles only. Pops the Hub download arguments from
    `kwargs`; expects `use_safetensors` set in it."""
    from .hub import HUB_DOWNLOAD_KWARGS, resolve_pipeline_folder

    name = os.fspath(name_or_path)
    if not os.path.isdir(name):
        hub_kwargs = {k: kwargs.pop(k) for k in HUB_DOWNLOAD_KWARGS if k in kwargs}
        name = resolve_pipeline_folder(name, **hub_kwargs)
    index = check_pipeline_folder(name)
    if kwargs["use_safetensors"]:
        # diffusers would say only "no file named diffusion_pytorch_model.safetensors": name the part and the fix.
        component = pickle_only_component(name, index)
        if component is not None:
            cls = pipeline_class.__name__
            raise OSError(
                f"The {component!r} component of {name} has pickle weights but no .safetensors weights, and"
                f" {cls} loads only safetensors: if you trust this checkpoint, convert it once with"
                f" {cls}.from_pretrained({name!r}, use_safetensors=False).save_pretrained({name!r})."
            )
    return name


def check_pipeline_folder(folder: str) -> dict:
    """`folder`'s model_index.json, or an OSError that says in one line why the folder holds no complete pipeline
    and what to do: finish an interrupted save, resume the run that stopped before its save, or fix the JSON."""
    index_path = os.path.join(folder, "model_index.json")
    resume = "resume the run with --resume_from_checkpoint latest"
    if os.path.isfile(os.path.join(folder, STAGING, READY)):
        raise OSError(
            f"The pipeline in {folder} was being saved when its process stopped: {resume} (or call"
            f" ddpm_hf.pipeline_utils.finish_interrupted_publication({folder!r})) to complete it."
        )
    if not os.path.isfile(index_path):
        if os.path.isdir(os.path.join(folder, "checkpoints")):
            raise OSError(f"{folder} has checkpoints but no saved pipeline (no model_index.json): the run stopped"
                          f" before saving it; {resume}.")
        raise OSError(f"{folder} has no model_index.json: it is not a saved pipeline.")
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise OSError(f"{index_path} is not valid JSON ({error}): save the pipeline again, or restore the file."
                      ) from None
    if not isinstance(index, dict):
        raise OSError(f"{index_path} holds a {type(index).__name__}, not a JSON object: save the pipeline again.")
    return index


def check_loaded_weights(pipeline, folder: str) -> None:
    """Refuse a loaded pipeline with weights its files lacked: diffusers only warns ("newly initialized") and leaves
    them on the meta device, where sampling fails later or, worse, silently."""
    import torch

    for name, component in pipeline.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        missing = [key for key, tensor in (*component.named_parameters(), *component.named_buffers())
                   if tensor.is_meta]
        if missing:
            shown = ", ".join(missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
            raise OSError(f"The {name!r} component of {folder} lacks weights its config needs ({shown}): the weights"
                          " file is incomplete or from another model; save the pipeline again, or resume its run with"
                          " --resume_from_checkpoint latest.")


def pickle_only_component(folder: str, index: dict) -> str | None:
    """The first component of the saved pipeline `folder` whose weights are pickles only (no .safetensors file)."""
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
    imported module, and `import ddpm_hf` imports nothing). Only the modules a saved pipeline can name are imported:
    a folder naming any other (`ddpm_hf.cli.__main__` would run the command line) is refused.
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
            module = config[name][0][len(package) + 1:]
            if module not in COMPONENT_MODULES:
                raise ValueError(
                    f"model_index.json names the module {config[name][0]!r} for its {name!r} component, but a saved"
                    f" ddpm-hf pipeline names only {', '.join(COMPONENT_MODULES)}: this folder was not written by"
                    f" ddpm-hf; load it only if you trust it, with DiffusionPipeline.from_pretrained."
                )
            importlib.import_module(config[name][0])
