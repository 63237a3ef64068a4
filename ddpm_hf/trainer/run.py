# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The training run, read top to bottom: train a DDPM (Ho et al. 2020) noise predictor with Accelerate, and save it as
a `DDPMImagePipeline`. The command around it, which parses the flags and turns failures into exit codes, is
ddpm_hf/train.py (`ddpm-hf train`, `accelerate launch training/train.py`).

With captions (--caption_column, or --text_encoder_name_or_path) it trains a DDPMTextToImagePipeline instead: a
UNet2DConditionModel cross-attending to a CLIP text encoder (frozen, or trained with --train_text_encoder), with
captions dropped now and then (--conditioning_dropout_prob) so that classifier-free guidance works.

The story: check that the machine has what the flags call for (optional packages, the Hub), take the output folder,
load the images (decoded once, into memory or a memory-mapped cache that a machine's processes share, or decoded as
read: --data_storage, --streaming), build the UNet, the noise scheduler, the optimizer and the EMA, resume from a
checkpoint if asked, then loop over optimizer steps (logging, checkpointing and drawing validation grids now and
then), and finally write the pipeline, samples.png, loss_curve.png and training_args.json into --output_dir.
This module is that story; its pieces are the other modules of ddpm_hf/trainer/ (the flags in config.py, the
machine's checks in preflight.py, the data in data.py, the builders in setup.py, the checkpoints in checkpoints.py,
resuming from one in resume.py, the grids and the bound in validation.py, the output folder in outputs.py).

Every random draw is a function of (seed, step, process, micro-batch) and checkpoints store the data position, so a
resumed run continues exactly as the uninterrupted one would have (see ddpm_hf/randomness.py), to the length it was
started with unless --max_train_steps says otherwise; a resume that would change a run-defining flag (the seed, the
global batch, the objective, ...) is refused unless --allow_changed_flags names it, and checkpoints beyond the step
resumed from are set aside as another line's (ddpm_hf/trainer/resume.py). Checkpoints are written atomically (see
ddpm_hf/trainer/checkpoints.py). With --push_to_hub the pipeline is also published on the Hub: in the background at
every checkpoint, and awaited at the end (see ddpm_hf/hub/push.py). One run at a time holds --output_dir (a lock
file, gone on exit; a run that fails before it trains leaves no folder it created). SIGTERM or Ctrl-C finishes the
current step, writes a checkpoint and raises TrainingInterrupted, whatever copies of the signal the launchers forward
within 3 s; a signal after that stops at once (KeyboardInterrupt).
"""

import math

from accelerate.logging import get_logger
from tqdm.auto import tqdm

from ..data.order import BatchLayout
from ..diffusion.timestep_samplers import make_timestep_sampler
from ..presets import check_resolution
from ..text.conditioning import TextConditionedUNet
from .checkpoints import TrainerState, checkpoint_folder, save_training_checkpoint, set_aside_diverged
from .classes import load_class_conditioning
from .config import default_resolution, model_architecture, tracker_config
from .data import MicroBatchFeed, load_training_data
from .debug_hooks import DebugHooks
from .interrupts import StopRequests, TrainingInterrupted
from .monitoring import LossMeter, NonFiniteLossError, Throughput, log_progress
from .outputs import push_checkpoint_pipeline, save_final_outputs
from .preflight import check_the_machine
from .publishing import make_publisher
from .resume import find_checkpoint_to_resume, start_or_resume
from .run_lock import lock_output_dir
from .session import TrainingSession
from .setup import build_unet, make_accelerator, make_ema, make_noise_scheduler, make_optimizer
from .step import TrainingStep
from .text import load_text_conditioning
from .validation import evaluate_fid, log_validation

logger = get_logger(__name__)


def train(args) -> None:
    """The whole run, on every process: `args` come from `parse_args` (ddpm_hf/trainer/config.py)."""
    accelerator = make_accelerator(args)
    check_the_machine(args)  # the optional packages the flags need, and the Hub for the Hub ids they name
    lock = lock_output_dir(args.output_dir, accelerator)  # one run per folder, from here to the end
    try:
        set_up_and_train(args, accelerator)
    except NonFiniteLossError as err:  # while the folder is still held: the main process sets checkpoints aside
        err.checkpoints = diverged_checkpoints(args, err.step) if accelerator.is_main_process else ""
        raise
    finally:
        if lock is not None:
            lock.release()


def set_up_and_train(args, accelerator) -> None:
    """The run itself, while `train` holds the output folder: the checks, the data, the model, the resumed state,
    the loop, and the outputs."""
    # The UNet's depth decides which resolutions work; a checkpoint to resume must have been trained with the same
    # run-defining flags and UNet. All checked before any time is spent on the data.
    architecture = model_architecture(args)
    if args.resolution is None:
        args.resolution = default_resolution(architecture)
    check_resolution(args.resolution, architecture)
    resume_from = find_checkpoint_to_resume(args, accelerator.num_processes, architecture)
    publisher = make_publisher(args, accelerator)  # a bad token or repo name fails in seconds

    # Data.
    data = load_training_data(args, accelerator)
    text = load_text_conditioning(args, data, accelerator) if args.text_to_image else None
    classes = load_class_conditioning(args, data) if args.class_column else None

    # Model, EMA, optimizer, and the timestep sampler.
    unet = build_unet(args, architecture, data.channels,
                      cross_attention_dim=text.text_encoder.config.hidden_size if text is not None else None,
                      num_class_embeds=classes.num_class_embeds if classes is not None else None)
    ema = make_ema(unet, args) if args.use_ema else None
    layout = BatchLayout(args.train_batch_size, accelerator.num_processes, accelerator.process_index,
                         args.gradient_accumulation_steps)
    num_images = 0 if args.streaming else len(data)  # a stream has no length (--max_train_steps is required then)
    if args.max_train_steps is None:
        args.max_train_steps = math.ceil(args.num_epochs * num_images / layout.global_batch_size)
    trained = TextConditionedUNet(unet, text.text_encoder) if text is not None and text.trained else unet
    optimizer, lr_scheduler = make_optimizer(trained, args, args.max_train_steps)
    # The dataloader is not prepared either: we shard each global batch ourselves, so that its position is exact.
    model, optimizer = accelerator.prepare(trained, optimizer)
    if ema is not None:
        ema.to(accelerator.device)
    sampler = make_timestep_sampler(args.timestep_sampler, args.ddpm_num_steps, device=accelerator.device)
    training = TrainingSession(accelerator, model, ema, optimizer, lr_scheduler, make_noise_scheduler(args), sampler,
                               layout, TrainerState(), args, publisher, text, classes)
    start_or_resume(training, num_images, resume_from)  # a barrier: the main process clears stale temporaries first

    # The loop.
    accelerator.init_trackers("ddpm-hf", config=tracker_config(args))
    state = training.state
    training.feed = MicroBatchFeed(training, data, first_step=state.global_step)
    final_position = state.samples_seen + (args.max_train_steps - state.global_step) * layout.global_batch_size
    epochs = (f", epoch {state.samples_seen / num_images:.2f} to {final_position / num_images:.2f}" if num_images
              else "")
    logger.info(
        f"Training on {data.source} ({data.channels}x{args.resolution}x{args.resolution}),"
        f" {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M parameters, {args.max_train_steps} steps of"
        f" {layout.global_batch_size} images ({args.train_batch_size} per process x {accelerator.num_processes}"
        f" processes x {args.gradient_accumulation_steps} accumulation){epochs}"
    )
    run_loop(training, num_images=num_images)

    # The Fréchet distance of the samples (every process samples its share), then save (main process only, after a
    # barrier): pipeline, pictures, model card, then the upload to the Hub.
    quality = evaluate_fid(training) if args.eval_fid_images else None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_final_outputs(training, data, quality)
        if training.publisher is not None:
            training.publisher.push_output_folder(training.state.global_step)
    accelerator.end_training()


def run_loop(training: TrainingSession, num_images: int) -> None:
    """Optimizer steps until --max_train_steps: the device runs ahead of the host except where noted."""
    accelerator, state, args = training.accelerator, training.state, training.args
    meter = LossMeter(check_grad_norm=accelerator.mixed_precision != "fp16")
    throughput = Throughput()
    debug = DebugHooks(args.output_dir, accelerator.process_index)
    debug.data_storage(training.feed.data)
    progress = tqdm(total=args.max_train_steps, initial=state.global_step, desc="Steps", dynamic_ncols=True,
                    disable=not accelerator.is_local_main_process)
    last_checkpoint_step = state.global_step or None  # a resumed run starts at its checkpoint's step
    step = TrainingStep.from_flags(args, accelerator, training.model, training.optimizer, training.lr_scheduler,
                                   training.noise_scheduler, training.timestep_sampler, ema=training.ema,
                                   conditioning=training.conditioning)

    def every(n) -> bool:
        return bool(n) and state.global_step % n == 0

    # The progress bar is closed on errors too, so that a message printed after it starts on a line of its own.
    with progress, StopRequests(accelerator) as stop:
        while state.global_step < args.max_train_steps:
            items = training.feed.next_step()  # the step's micro-batches: uint8 images and their conditions
            debug.micro_batches(state.global_step, [item.pixels for item in items])
            output = step(state.global_step, items)  # losses, backward, clip, optimizer, EMA, timestep sampler
            state.global_step += 1
            state.samples_seen += training.layout.global_batch_size
            meter.add(state.global_step, output)
            throughput.add(training.layout.global_batch_size)
            progress.update(1)
            debug.after_step()

            # SIGTERM or Ctrl-C: this step is done, so keep it and stop. On several processes a collective each
            # step, read a step late so that it never waits for the device.
            interrupted = stop.agreed()
            scheduled_checkpoint, validation_due = every(args.checkpointing_steps), every(args.validation_steps)
            checkpoint_due = scheduled_checkpoint or interrupted
            last_step = state.global_step == args.max_train_steps
            if checkpoint_due or validation_due or last_step or every(args.logging_steps):
                # The loop's only host sync; it also stops a diverged run before it can write a checkpoint.
                log_progress(training, meter, throughput, progress, num_images)
            if checkpoint_due:
                save_training_checkpoint(training)  # copies the state to the host; a barrier
                last_checkpoint_step = state.global_step
            if interrupted:
                raise TrainingInterrupted(state.global_step, stop.received or "a signal to another process")
            if validation_due and accelerator.is_main_process:
                log_validation(training)  # main process only: the others wait in the next step's collectives
            if scheduled_checkpoint and training.publisher is not None:
                push_checkpoint_pipeline(training)
            if checkpoint_due or validation_due:
                throughput.restart()  # time spent saving or sampling is not training time

    # A final checkpoint, so that the run can be extended later (resume with a larger --max_train_steps).
    if args.checkpointing_steps and last_checkpoint_step != state.global_step:
        save_training_checkpoint(training)
    debug.finish(training.accelerator.unwrap_model(training.model), training.timestep_sampler)  # + a trained encoder


def diverged_checkpoints(args, first_bad_step: int) -> str:
    """Set aside the checkpoints whose weights gave the non-finite loss; what the message says of them."""
    renamed, good = set_aside_diverged(checkpoint_folder(args.output_dir), first_bad_step)
    kept = f"the last good checkpoint is {good}" if good else "no checkpoint before it was verified good"
    if renamed:
        kept += f" ({', '.join(renamed)}: written from the weights that diverged, renamed so that latest skips them)"
    return kept
