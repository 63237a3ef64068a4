# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Resuming a run: which checkpoint --resume_from_checkpoint names, checked against this run's flags and UNet before
any work; loading it into the session (falling back past damaged ones for `latest`); and what a resume may change:
the run's length, the run-defining flags --allow_changed_flags names, the learning-rate schedule. The state then
records the segment this session adds to the run's history. What a checkpoint holds, and saving one, is
checkpoints.py's."""

import os

import torch
from accelerate.logging import get_logger

from ..io import remove_stale_temporaries
from .checkpoints import (
    CheckpointError,
    DamagedCheckpointError,
    TrainerState,
    check_same_unet,
    checkpoint_folder,
    list_checkpoints,
    load_checkpoint_contents,
    read_trainer_state,
    read_unet_config,
    resolve_checkpoint,
    set_aside_abandoned,
)
from .config import BATCH_LAYOUT_FLAGS, RUN_DEFINING_FLAGS, saveable_args
from .session import TrainingSession
from .setup import make_lr_scheduler, unet_class_and_config

logger = get_logger(__name__)


def find_checkpoint_to_resume(args, num_processes: int, architecture: dict) -> str | None:
    """The checkpoint --resume_from_checkpoint names (None: start afresh), found and checked against this run's flags
    and UNet before any work, so that a wrong name or a changed run fails in seconds and leaves nothing behind."""
    if not args.resume_from_checkpoint:
        return None
    folder = resolve_checkpoint(checkpoint_folder(args.output_dir), args.resume_from_checkpoint)
    if folder is not None:
        try:
            saved_state, saved_unet = read_trainer_state(folder), read_unet_config(folder)
        except DamagedCheckpointError:
            return folder  # the load names the damaged file (or, for `latest`, falls back to an older checkpoint)
        changed_run_flags(saved_state, args, num_processes, folder)
        continue_the_runs_length(args, saved_state, folder)
        # The UNet the flags describe, with what only the data decides taken from the checkpoint (its channels, its
        # number of classes, its text encoder's width): the check after the data is loaded then finds only those.
        unet_class, config = unet_class_and_config(
            args, architecture, channels=saved_unet.get("in_channels", 3),
            cross_attention_dim=saved_unet.get("cross_attention_dim") if args.text_to_image else None,
            num_class_embeds=saved_unet.get("num_class_embeds") if args.class_column else None)
        with torch.device("meta"):  # the config only: no weights are allocated
            check_same_unet(folder, unet_class.from_config(config).config)
    return folder


def changed_run_flags(saved: TrainerState, args, num_processes: int, folder: str) -> dict[str, tuple]:
    """The run-defining flags (config.py, RUN_DEFINING_FLAGS) whose values differ from the checkpoint's, as
    {flag: (there, now)}; the batch layout's only when the global batch changes. A change that --allow_changed_flags
    does not name is refused, in one line naming each flag and both values."""
    there = {**saved.args, "num_processes": saved.num_processes}
    now = {**saveable_args(args), "num_processes": num_processes}
    changed = {flag: (there[flag], now.get(flag)) for flag in RUN_DEFINING_FLAGS
               if flag in there and there[flag] != now.get(flag)}
    if saved.global_batch_size and saved.global_batch_size != (
            args.train_batch_size * num_processes * args.gradient_accumulation_steps):
        changed.update({flag: (there[flag], now[flag]) for flag in BATCH_LAYOUT_FLAGS
                        if flag in there and there[flag] != now[flag]})
    refused = [flag for flag in changed if flag not in args.allow_changed_flags]
    if refused:
        shown = ", ".join(f"--{flag} {changed[flag][0]} there, {changed[flag][1]} now" for flag in refused)
        raise CheckpointError(f"{folder} was trained with other run-defining flags ({shown}): resume with the"
                              f" checkpoint's values, or pass --allow_changed_flags {','.join(refused)} if the change"
                              f" is meant (from step {saved.global_step} on)")
    return changed


# The flags that set the length of a run: given on a resumed run's command line, they extend (or end) it anew.
LENGTH_FLAGS = ("max_train_steps", "num_epochs")


def continue_the_runs_length(args, saved: TrainerState, folder: str) -> None:
    """A resume trains to the length the run was started with (the checkpoint's --max_train_steps), not to the one
    the preset or --num_epochs would give afresh, unless the command line sets a length; one below the steps the
    checkpoint has trained is refused."""
    if not set(LENGTH_FLAGS) & set(getattr(args, "_explicit_flags", ())):
        args.max_train_steps = saved.args.get("max_train_steps", args.max_train_steps)
    check_run_length(args, saved.global_step, folder, target=saved.args.get("max_train_steps"))


def check_run_length(args, trained_steps: int, folder: str, target: int | None = None) -> None:
    """Refuse a --max_train_steps below the `trained_steps` of the checkpoint `folder`, naming both and the fix."""
    if args.max_train_steps is None or args.max_train_steps >= trained_steps:
        return
    given = getattr(args, "_explicit_flags", ())
    from_epochs = "num_epochs" in given and "max_train_steps" not in given
    length = (f"--num_epochs {args.num_epochs:g} ({args.max_train_steps} steps)" if from_epochs
              else f"--max_train_steps {args.max_train_steps}")
    keep = f", leave it out to train to the run's own {target} steps" if target and target >= trained_steps else ""
    raise CheckpointError(f"{length} is below the {trained_steps} steps {os.path.basename(folder)} has trained: pass"
                          f" --max_train_steps {trained_steps} or more to go on from there{keep}, or start afresh in"
                          " another --output_dir")


# The flags that shape the learning rate: given explicitly on a resumed run, they override the checkpoint's.
LR_FLAGS = ("learning_rate", "lr_scheduler", "lr_warmup_steps")


def start_or_resume(training: TrainingSession, num_images: int, resume_from: str | None) -> None:
    """Clear what interrupted saves left behind, then load the checkpoint `resume_from`, if any.

    With --resume_from_checkpoint latest, a damaged newest checkpoint (a file truncated or corrupted) is skipped for
    the newest one that loads, saying so; a checkpoint named explicitly must load. The checkpoints of steps beyond
    the one the run starts from are another line's: they are set aside (`set_aside_abandoned`), so that pruning and
    `latest` see only this line's. The state records the segment this run adds to the run's history.
    """
    accelerator, args = training.accelerator, training.args
    checkpoints, changed = checkpoint_folder(args.output_dir), {}
    if accelerator.is_main_process:  # the run lock is held: no other run is writing here
        for stale in remove_stale_temporaries(checkpoints) + remove_stale_temporaries(args.output_dir):
            logger.info(f"Removed {stale}, left by an interrupted save")
    accelerator.wait_for_everyone()

    if resume_from is not None:
        candidates = [resume_from]
        if args.resume_from_checkpoint == "latest":
            candidates += [path for _, path in reversed(list_checkpoints(checkpoints)) if path != resume_from]
        damaged = []
        for candidate in candidates:
            try:
                # Every process reads the checkpoint (a shared filesystem, as with accelerator.load_state).
                training.state = load_checkpoint_contents(
                    candidate, unet=training.unet, ema=training.ema, optimizer=training.optimizer,
                    lr_scheduler=training.lr_scheduler, grad_scaler=accelerator.scaler,
                    restore_rng=accelerator.is_main_process,  # the main process wrote its own RNG states
                    timestep_sampler=training.timestep_sampler, text_encoder=training.trained_text_encoder,
                )
            except DamagedCheckpointError as error:
                if len(candidates) == 1:
                    raise CheckpointError(f"{error}; resume from another checkpoint: "
                                          f"{usable_names(checkpoints, exclude=candidate)}") from None
                logger.warning(f"{error}; trying the next older checkpoint")
                damaged.append(os.path.basename(candidate))
                continue
            resume_from = candidate
            break
        else:
            raise CheckpointError(f"no checkpoint in {checkpoints} can be read (damaged: {', '.join(damaged)}):"
                                  " start afresh without --resume_from_checkpoint, or into another --output_dir")
        if damaged:
            logger.warning(f"Resuming from {os.path.basename(resume_from)}, the newest checkpoint that loads"
                           f" (damaged: {', '.join(damaged)})")
        # The data position is a count of samples, so it carries over to any number of processes.
        logger.info(f"Resumed from {resume_from}: step {training.state.global_step}, data position"
                    f" {training.state.samples_seen} (saved by {training.state.num_processes} process(es), now"
                    f" {accelerator.num_processes})")
        if num_images and training.state.num_images != num_images:  # a stream (0) has no size
            logger.warning(f"The checkpoint was trained on {training.state.num_images} images, this run has"
                           f" {num_images}: the data order after resuming differs from the original run's.")
        check_run_length(args, training.state.global_step, resume_from)  # a length from --num_epochs, counted now
        changed = changed_run_flags(training.state, args, accelerator.num_processes, resume_from)
        if changed:
            shown = ", ".join(f"--{flag} {there} -> {now}" for flag, (there, now) in changed.items())
            logger.warning(f"Resuming with changed run-defining flags, as --allow_changed_flags allows: {shown};"
                           f" training_args.json records them from step {training.state.global_step} on")
            apply_changed_hyperparameters(training, changed)
        override_learning_rate(training)
    elif args.resume_from_checkpoint:
        logger.info(f"No checkpoint in {checkpoints} yet: starting a new run")
    accelerator.wait_for_everyone()  # every process has read its checkpoint: the later ones may move
    if accelerator.is_main_process:
        abandoned = set_aside_abandoned(checkpoints, training.state.global_step, resume_from)
        if abandoned is not None:
            logger.warning(f"This run starts at step {training.state.global_step}: the checkpoints of later steps"
                           f" ({', '.join(sorted(os.listdir(abandoned)))}) belong to a line it abandons; moved to"
                           f" {abandoned} (they still resume by path; delete the folder when they are not needed)")

    # The history of the run: a segment per start or resume, with the flags it used.
    state = training.state
    if resume_from is not None and not state.segments:  # a checkpoint written before segments were recorded
        state.segments = [{"first_step": 0, "args": state.args}]
    state.num_images = num_images
    state.num_processes = accelerator.num_processes
    state.global_batch_size = training.layout.global_batch_size
    state.args = saveable_args(args)
    segment = {"first_step": state.global_step, "args": state.args}
    if resume_from is not None and changed:
        segment["changed_flags"] = {flag: list(values) for flag, values in changed.items()}
    state.segments = [*state.segments, segment]


def apply_changed_hyperparameters(training: TrainingSession, changed: dict) -> None:
    """The optimizer's and the EMA's hyperparameters come back from the checkpoint with their states: an allowed
    change of their flags is put into the live objects, so that what training_args.json records is what is used."""
    args = training.args
    if {"adam_beta1", "adam_beta2", "adam_weight_decay", "adam_epsilon"} & set(changed):
        for group in training.optimizer.param_groups:
            group.update(betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.adam_weight_decay,
                         eps=args.adam_epsilon)
    if training.ema is not None and {"ema_max_decay", "ema_min_decay", "ema_inv_gamma", "ema_power"} & set(changed):
        training.ema.decay, training.ema.min_decay = args.ema_max_decay, args.ema_min_decay
        training.ema.inv_gamma, training.ema.power = args.ema_inv_gamma, args.ema_power


def override_learning_rate(training: TrainingSession) -> None:
    """A resumed run restores the optimizer's and the schedule's state, learning rate included. When the command line
    gives --learning_rate, --lr_scheduler or --lr_warmup_steps anew (after a divergence, say), the schedule is rebuilt
    from them as it stands at the resumed step, and the optimizer's rate follows; Adam's moments are kept."""
    args, saved = training.args, training.state.args
    given = getattr(args, "_explicit_flags", ())
    changed = [flag for flag in LR_FLAGS
               if flag in given and saved.get(flag, getattr(args, flag)) != getattr(args, flag)]
    if not changed:
        return
    training.lr_scheduler = make_lr_scheduler(training.optimizer, args, args.max_train_steps,
                                              steps_done=training.state.global_step)
    shown = ", ".join(f"--{flag} {saved.get(flag)} -> {getattr(args, flag)}" for flag in changed)
    logger.info(f"The learning-rate schedule follows the new flags ({shown}): rate"
                f" {training.lr_scheduler.get_last_lr()[0]:.3g} at step {training.state.global_step}")


def usable_names(checkpoints: str, exclude: str) -> str:
    names = [os.path.basename(path) for _, path in list_checkpoints(checkpoints) if path != exclude]
    return ", ".join(names) or f"(none other in {checkpoints})"
