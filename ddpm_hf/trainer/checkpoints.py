# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""A training checkpoint: what it holds, writing it so that a crash at any moment leaves a usable one, and the folder
of them (finding one by name, pruning, setting aside those a run gives up). Which checkpoint a run resumes from, and
what a resume may change, is resume.py's.

Layout of `<output_dir>/checkpoints/`:

    checkpoint-<step>/              one complete checkpoint (never a partial one: see `save_checkpoint`)
        unet/                       the trained weights (UNet2DModel.from_pretrained loads it)
        unet_ema/                   the EMA weights and the EMA's counters, with --use_ema (EMAModel.from_pretrained)
        text_encoder/               the trained text encoder, with --train_text_encoder (CLIPTextModel.from_pretrained)
        optimizer.pt, lr_scheduler.pt, grad_scaler.pt (fp16 only), random_states.pt
        timestep_sampler.safetensors  the importance sampler's loss history (--timestep_sampler loss-second-moment)
        trainer_state.json          step, data position, loss history; written last
    latest                          a text file naming the newest complete checkpoint
    abandoned-<time>-after-<step>/  checkpoints of a line given up when a run resumed from an older step (kept)
    diverged-checkpoint-<step>/     a checkpoint written from weights whose loss came out non-finite (kept)

A checkpoint is written into a hidden temporary folder beside its final place, flushed to disk, and renamed into
place in one step; `latest` is then replaced atomically. A temporary left by a crash is hidden (its name starts with
a dot, so it never matches `checkpoint-*`) and removed by the next run. The names of these files and folders and the
keys of trainer_state.json are the format: checkpoints written by earlier versions resume, so they do not change.
"""

import json
import os
import pickle
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from accelerate.logging import get_logger
from accelerate.utils import broadcast_object_list
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import one_line
from ..io import (
    OutOfSpaceError,
    fsync_path,
    fsync_tree,
    is_out_of_space,
    out_of_space,
    temporary_path,
    tree_size,
    write_text_atomically,
)
from .debug_hooks import pause_in_save

if TYPE_CHECKING:
    from .session import TrainingSession

logger = get_logger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
LATEST_FILE = "latest"
STATE_FILE = "trainer_state.json"  # written last: its presence marks a complete checkpoint
_CHECKPOINT_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message says why."""


class DamagedCheckpointError(CheckpointError):
    """A file of a checkpoint cannot be read (truncated, corrupted): `latest` may fall back to an older checkpoint."""


# ----------------------------------------------------------------------------------------------------------------
# Finding checkpoints
# ----------------------------------------------------------------------------------------------------------------
def checkpoint_folder(output_dir: str) -> str:
    """Where a run keeps its checkpoints: <output_dir>/checkpoints."""
    return os.path.join(output_dir, "checkpoints")


def is_complete(path: str) -> bool:
    return os.path.isfile(os.path.join(path, STATE_FILE))


def list_checkpoints(root: str) -> list[tuple[int, str]]:
    """The complete checkpoints in `root` as (step, path), oldest first."""
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        match = _CHECKPOINT_NAME.match(name)
        if match and is_complete(os.path.join(root, name)):
            found.append((int(match.group(1)), os.path.join(root, name)))
    return sorted(found)


def latest_checkpoint(root: str) -> str | None:
    """The checkpoint `latest` names, or the newest complete one if that is missing (None when there is none)."""
    pointer = os.path.join(root, LATEST_FILE)
    if os.path.isfile(pointer):
        with open(pointer, encoding="utf-8") as f:
            path = os.path.join(root, f.read().strip())
        if is_complete(path):
            return path
    checkpoints = list_checkpoints(root)
    return checkpoints[-1][1] if checkpoints else None


def resolve_checkpoint(root: str, name_or_path: str) -> str | None:
    """`--resume_from_checkpoint`: "latest" (None when there is no checkpoint yet), a path, or a name in `root`."""
    if name_or_path == "latest":
        return latest_checkpoint(root)
    for path in (name_or_path, os.path.join(root, name_or_path)):
        if is_complete(path):
            return path
    if os.path.isdir(name_or_path):
        raise CheckpointError(f"{name_or_path} is not a complete checkpoint (it has no {STATE_FILE})")
    raise CheckpointError(
        f"checkpoint {name_or_path!r} not found; pass 'latest', a checkpoint folder, or one of: "
        + (", ".join(os.path.basename(path) for _, path in list_checkpoints(root)) or f"(none in {root})")
    )


# ----------------------------------------------------------------------------------------------------------------
# Saving and pruning
# ----------------------------------------------------------------------------------------------------------------
def save_training_checkpoint(training: "TrainingSession") -> None:
    """Checkpoint the run at its current step. The main process writes (the state is identical on every process);
    every process learns the outcome.

    A failed write (a full disk) leaves the previous checkpoints and `latest` as they were, and stops every process
    with the same error (a collective: the others do not wait for the main one forever).
    """
    accelerator, state = training.accelerator, training.state
    if training.feed is not None and training.feed.streaming:
        state.stream_state = training.feed.stream_state()  # a collective, before the main process writes
    failure = None
    if accelerator.is_main_process:

        def write(folder):
            write_checkpoint_contents(folder, unet=training.unet, ema=training.ema, optimizer=training.optimizer,
                                      lr_scheduler=training.lr_scheduler, grad_scaler=accelerator.scaler, state=state,
                                      timestep_sampler=training.timestep_sampler,
                                      text_encoder=training.trained_text_encoder)

        try:
            path = save_checkpoint(checkpoint_folder(training.args.output_dir), state.global_step, write,
                                   total_limit=training.args.checkpoints_total_limit)
            logger.info(f"Saved {path}")
        except OutOfSpaceError as error:
            failure = error
    if accelerator.num_processes > 1:
        message = broadcast_object_list([str(failure) if failure else None])[0]
        if message and failure is None:
            failure = OutOfSpaceError(message)
    else:
        accelerator.wait_for_everyone()
    if failure is not None:
        raise failure


def save_checkpoint(
    root: str, step: int, write_contents: Callable[[str], None], total_limit: int | None = None
) -> str:
    """Write checkpoint `step` with `write_contents(folder)`, atomically; then point `latest` at it and prune.

    `write_contents` must write STATE_FILE last. A crash at any moment leaves the previous checkpoints and a
    `latest` that names a complete one; so does a failed write (a full disk says so: `OutOfSpaceError`), whose
    temporary folder is removed at once. Pruning keeps the newest `total_limit` checkpoints and, besides them, the
    one before this step's: the newest whose weights are known to give a finite loss (see `set_aside_diverged`).
    """
    os.makedirs(root, exist_ok=True)
    name = f"{CHECKPOINT_PREFIX}{step}"
    final, temporary = os.path.join(root, name), temporary_path(os.path.join(root, name))
    previous = list_checkpoints(root)
    if os.path.exists(temporary):
        shutil.rmtree(temporary)
    try:
        os.makedirs(temporary)
        write_contents(temporary)
        fsync_tree(temporary)
    except Exception as error:
        written = tree_size(temporary)
        shutil.rmtree(temporary, ignore_errors=True)
        needed = max(tree_size(previous[-1][1]) if previous else 0, written)
        if is_out_of_space(error, root, needed):
            kept = f"{os.path.basename(previous[-1][1])} and `latest` are intact" if previous else "nothing was kept"
            raise out_of_space(root, needed, f"{name} was not written ({kept}); free some space and resume with"
                               " --resume_from_checkpoint latest") from error
        raise
    if os.path.exists(final):  # a run resumed from an older checkpoint reaches this step again
        _remove_checkpoint(final)
    os.rename(temporary, final)
    fsync_path(root)
    write_text_atomically(os.path.join(root, LATEST_FILE), name + "\n")
    if total_limit is not None:
        verified = [path for saved_step, path in previous if saved_step < step][-1:]
        prune_checkpoints(root, total_limit, keep=[final, *verified])
    return final


def prune_checkpoints(root: str, total_limit: int, keep: Sequence[str] = ()) -> list[str]:
    """Delete the oldest complete checkpoints so that at most `total_limit` remain besides those in `keep`; never
    the one `latest` names (the one a resume would pick), whatever its step."""
    protected = {*keep, *([latest] if (latest := latest_checkpoint(root)) else [])}
    checkpoints = [path for _, path in list_checkpoints(root) if path not in protected]
    doomed = checkpoints[: max(0, len(checkpoints) + len(protected) - max(1, total_limit))]
    for path in doomed:
        _remove_checkpoint(path)
    return doomed


def _remove_checkpoint(path: str) -> None:
    # Rename first: a crash half-way through rmtree then leaves a hidden temporary, not a broken checkpoint-N.
    doomed = temporary_path(path, purpose="old")
    os.rename(path, doomed)
    shutil.rmtree(doomed)


ABANDONED_PREFIX = "abandoned-"


def set_aside_abandoned(root: str, resumed_step: int, resumed_from: str | None) -> str | None:
    """A run that starts at `resumed_step` (0: afresh) gives up the checkpoints of later steps: they are another
    line's (the run that once went further), and left in place pruning would keep them as "the newest" and
    `latest` could pick them. They move, whole, into `abandoned-<UTC time>-after-<step>/` (not deleted: they are work,
    and the older resume may have been a mistake; any of them still resumes by its path). Returns that folder, or
    None when there was nothing to set aside."""
    later = [path for step, path in list_checkpoints(root) if step > resumed_step and path != resumed_from]
    if not later:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = os.path.join(root, f"{ABANDONED_PREFIX}{stamp}-after-{resumed_step}")
    folder, count = base, 1
    while os.path.exists(folder):  # two resumes within one second
        count += 1
        folder = f"{base}-{count}"
    # `latest` first: a crash half-way through the moves leaves it naming the line that goes on.
    pointer = os.path.join(root, LATEST_FILE)
    if resumed_from is not None and os.path.dirname(os.path.abspath(resumed_from)) == os.path.abspath(root):
        write_text_atomically(pointer, os.path.basename(resumed_from) + "\n")
    elif os.path.isfile(pointer) and latest_checkpoint(root) in later:
        os.remove(pointer)
    os.makedirs(folder)
    for path in later:
        os.rename(path, os.path.join(folder, os.path.basename(path)))
    fsync_path(root)
    return folder


DIVERGED_PREFIX = "diverged-"


def set_aside_diverged(root: str, first_bad_step: int) -> tuple[list[str], str | None]:
    """After the loss of step `first_bad_step` came out non-finite, rename the checkpoints its weights could be in.

    The loss of step s is computed from the weights after step s - 1, so the checkpoint of step first_bad_step - 1
    (and any later one) holds weights that diverged; those of earlier steps were followed by a finite loss. They are
    renamed `diverged-checkpoint-<step>` (kept for inspection; `latest` never picks them) and `latest` names the
    newest good one. Returns (the renamed folders' names, the newest good checkpoint or None).
    """
    renamed = []
    for step, path in list_checkpoints(root):
        if step >= first_bad_step - 1:
            target = os.path.join(root, DIVERGED_PREFIX + os.path.basename(path))
            if os.path.exists(target):
                shutil.rmtree(target)
            os.rename(path, target)
            renamed.append(os.path.basename(target))
    good = list_checkpoints(root)
    pointer = os.path.join(root, LATEST_FILE)
    if good:
        write_text_atomically(pointer, os.path.basename(good[-1][1]) + "\n")
    elif os.path.exists(pointer):
        os.remove(pointer)
    return renamed, good[-1][1] if good else None


# ----------------------------------------------------------------------------------------------------------------
# What a training checkpoint holds
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class TrainerState:
    """The loop's own counters, saved as trainer_state.json like transformers.TrainerState (whose role and file name
    it mirrors: global_step, the loss history, the run's flags). With them, resuming needs nothing else: every random
    draw derives from them."""

    global_step: int = 0  # optimizer steps done
    samples_seen: int = 0  # the position in the data stream: (epoch, index in epoch) = divmod(samples_seen, num_images)
    num_images: int = 0  # the size of the training set (a different size reorders the stream)
    num_processes: int = 1  # informational: how the run that wrote the checkpoint was laid out
    global_batch_size: int = 0
    loss_history: list[list[float]] = field(default_factory=list)  # [step, mean loss] per logging interval
    args: dict[str, Any] = field(default_factory=dict)  # the flags of the run that wrote the checkpoint
    # --streaming: each process's stream loader state (shard, offset, epoch), in process order; the stream's position
    stream_state: list[dict] | None = None
    # What each segment of the run (a start, then each resume) used: {"first_step", "args", "changed_flags"}, in order
    segments: list[dict] = field(default_factory=list)


def capture_random_states() -> dict[str, Any]:
    """The global RNG states as tensors and numbers only, so that `torch.load(weights_only=True)` reads them."""
    python_version, python_state, python_gauss = random.getstate()
    numpy_name, numpy_keys, numpy_pos, numpy_has_gauss, numpy_gauss = np.random.get_state()
    states = {
        "python": (python_version, torch.tensor(python_state, dtype=torch.int64), python_gauss),
        "numpy": (numpy_name, torch.from_numpy(numpy_keys.astype(np.int64)), numpy_pos, numpy_has_gauss, numpy_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict[str, Any]) -> None:
    python_version, python_state, python_gauss = states["python"]
    random.setstate((python_version, tuple(python_state.tolist()), python_gauss))
    numpy_name, numpy_keys, *numpy_rest = states["numpy"]
    np.random.set_state((numpy_name, numpy_keys.numpy().astype(np.uint32), *numpy_rest))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


SAMPLER_FILE = "timestep_sampler.safetensors"
TEXT_ENCODER_FOLDER = "text_encoder"


def write_checkpoint_contents(
    folder: str, *, unet, ema, optimizer, lr_scheduler, grad_scaler, state: TrainerState, timestep_sampler=None,
    text_encoder=None,
) -> None:
    """Everything an exactly resumed run needs, into `folder` (trainer_state.json last); `text_encoder` only when it
    is trained."""
    unet.save_pretrained(os.path.join(folder, "unet"))  # safetensors
    pause_in_save(state.global_step, folder)  # a test hook (debug_hooks.py)
    if ema is not None:
        ema.save_pretrained(os.path.join(folder, "unet_ema"))  # weights + the EMA's counters in its config.json
    if text_encoder is not None:
        text_encoder.save_pretrained(os.path.join(folder, TEXT_ENCODER_FOLDER))  # model.safetensors
    torch.save(optimizer.state_dict(), os.path.join(folder, "optimizer.pt"))
    torch.save(lr_scheduler.state_dict(), os.path.join(folder, "lr_scheduler.pt"))
    if grad_scaler is not None:
        torch.save(grad_scaler.state_dict(), os.path.join(folder, "grad_scaler.pt"))
    sampler_state = timestep_sampler.state_dict() if timestep_sampler is not None else {}
    if sampler_state:
        save_file({key: value.contiguous().cpu() for key, value in sampler_state.items()},
                  os.path.join(folder, SAMPLER_FILE))
    # Training itself reseeds every draw per step; these cover anything else that draws from the global RNGs.
    torch.save(capture_random_states(), os.path.join(folder, "random_states.pt"))
    with open(os.path.join(folder, STATE_FILE), "w", encoding="utf-8") as f:
        json.dump(asdict(state), f)


def _architecture(config) -> dict[str, Any]:
    return {key: value for key, value in dict(config).items() if not key.startswith("_")}


def read_unet_config(folder: str) -> dict[str, Any]:
    return _read(os.path.join(folder, "unet", "config.json"), _load_json)


def check_same_unet(folder: str, config) -> None:
    """Refuse a checkpoint whose UNet is not the one `config` describes, naming every key that differs."""
    saved, current = _architecture(read_unet_config(folder)), _architecture(config)
    differences = sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))
    if differences:
        shown = ", ".join(f"{key}: {saved.get(key)!r} there, {current.get(key)!r} now" for key in differences)
        raise CheckpointError(f"{folder} holds a different UNet ({shown}); resume with the flags that trained it")


def read_trainer_state(folder: str) -> TrainerState:
    return TrainerState(**_read(os.path.join(folder, STATE_FILE), _load_json))


def load_checkpoint_contents(
    folder: str, *, unet, ema, optimizer, lr_scheduler, grad_scaler, restore_rng: bool, timestep_sampler=None,
    text_encoder=None,
) -> TrainerState:
    """Load a checkpoint written by `write_checkpoint_contents` into the live objects; returns its TrainerState.
    `text_encoder`: the trained encoder to restore (None when it is frozen: its weights come from where it was
    loaded)."""
    check_same_unet(folder, unet.config)
    unet.load_state_dict(_read(os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors"), load_file))

    ema_folder = os.path.join(folder, "unet_ema")
    if ema is not None:
        if not os.path.isdir(ema_folder):
            raise CheckpointError(f"{folder} has no EMA weights: resume without --use_ema, or from a run that had it")
        # EMAModel.save_pretrained wrote the averaged weights as a UNet and the EMA's counters into its config.
        ema_config = _read(os.path.join(ema_folder, "config.json"), _load_json)
        counters = {key: ema_config[key] for key in ema.state_dict() if key in ema_config}
        weights = _read(os.path.join(ema_folder, "diffusion_pytorch_model.safetensors"), load_file)
        device = ema.shadow_params[0].device
        ema.load_state_dict({**counters, "shadow_params": [weights[name] for name, _ in unet.named_parameters()]})
        ema.to(device)

    encoder_folder = os.path.join(folder, TEXT_ENCODER_FOLDER)
    if text_encoder is not None:
        if not os.path.isdir(encoder_folder):
            raise CheckpointError(f"{folder} has no text encoder weights: it was trained with a frozen encoder; resume"
                                  " without --train_text_encoder")
        text_encoder.load_state_dict(_read(os.path.join(encoder_folder, "model.safetensors"), load_file))
    elif os.path.isdir(encoder_folder):
        raise CheckpointError(f"{folder} holds a trained text encoder: resume with --train_text_encoder")

    optimizer.load_state_dict(_read(os.path.join(folder, "optimizer.pt"), _load_tensors))
    lr_scheduler.load_state_dict(_read(os.path.join(folder, "lr_scheduler.pt"), _load_tensors))
    scaler_file = os.path.join(folder, "grad_scaler.pt")
    if grad_scaler is not None and os.path.isfile(scaler_file):
        grad_scaler.load_state_dict(_read(scaler_file, _load_tensors))
    if timestep_sampler is not None and timestep_sampler.state_dict():
        sampler_file = os.path.join(folder, SAMPLER_FILE)
        if not os.path.isfile(sampler_file):
            raise CheckpointError(f"{folder} has no timestep sampler state: resume with the --timestep_sampler that"
                                  " wrote it")
        timestep_sampler.load_state_dict(_read(sampler_file, load_file))
    if restore_rng:
        restore_random_states(_read(os.path.join(folder, "random_states.pt"), _load_tensors))
    return read_trainer_state(folder)


def _read(path: str, load: Callable[[str], Any]) -> Any:
    """`load(path)`; a file that is missing, truncated or corrupted raises DamagedCheckpointError naming it."""
    try:
        return load(path)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError, SafetensorError) as error:
        raise DamagedCheckpointError(f"{path} cannot be read, the checkpoint is damaged ({one_line(error)})") from None


def _load_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _load_tensors(path: str) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)  # tensors and numbers only: never unpickles code
