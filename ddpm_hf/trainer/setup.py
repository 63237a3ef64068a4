# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""What a run is built from: the Accelerator, the UNet, the noise scheduler, the EMA, the optimizer, and
the pipeline that wraps the trained UNet for sampling and saving."""

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Optional

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import UNet2DConditionModel, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from ..pipeline_ddpm_hf import DDPMImagePipeline, DDPMTextToImagePipeline
from ..presets import unet_config_for_data
from ..scheduling_ddpm_posterior import DDPMPosteriorScheduler
from ..text.conditioning import conditional_unet_config
from .config import FlagError

if TYPE_CHECKING:
    from .text import TextConditioning

logger = get_logger(__name__)


def make_accelerator(args) -> Accelerator:
    """The Accelerator of the run; fp16 on a CPU is refused (autocast there is bfloat16 or nothing, and the gradient
    scaler that fp16 needs is CUDA's), rather than training in some other precision without a word."""
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
        ),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO if accelerator.is_local_main_process else logging.ERROR)
    # huggingface_hub gives its loggers a stderr handler of their own and lets them propagate to the root logger too,
    # which now has one: each of its warnings would be printed twice. Ours alone prints them.
    hub_logger = logging.getLogger("huggingface_hub")
    for handler in list(hub_logger.handlers):
        hub_logger.removeHandler(handler)
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise FlagError("--mixed_precision fp16 needs a GPU (this run is on the CPU): pass --mixed_precision bf16 or"
                        " no, or set mixed_precision in `accelerate config`")
    advice = idle_cores_advice(accelerator.device.type, torch.get_num_threads(), physical_cores(),
                               int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    if advice is not None:
        logger.warning(advice, main_process_only=True)
    return accelerator


def physical_cores() -> int:
    """The cores `accelerate launch --cpu` divides among its processes (psutil comes with accelerate)."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def recommended_threads(cores: int, local_processes: int) -> int:
    """Torch threads per training process on a CPU: the machine's cores but one, shared by its processes. The spare
    core is for the machine's other work: on 2 cores, two threads train 1.3x faster than one when the machine is
    idle, but 2.5x slower beside one competing CPU job (an OpenMP step waits for its slowest thread), while one
    thread is not slowed at all (benchmarks.bench_threads; OMP_WAIT_POLICY passive or active helps neither case)."""
    return max(1, (cores - 1) // max(1, local_processes))


def idle_cores_advice(device_type: str, threads: int, cores: int, local_processes: int) -> str | None:
    """What to pass when a CPU run leaves more than the spare core idle (see `recommended_threads`), else None.
    `accelerate launch` sets OMP_NUM_THREADS=1 unless it is given --num_cpu_threads_per_process (or --cpu)."""
    recommended = recommended_threads(cores, local_processes)
    if device_type != "cpu" or threads >= recommended:
        return None
    return (f"training on the CPU with {threads} thread(s) per process, {cores} cores for {local_processes}"
            f" process(es): pass --num_cpu_threads_per_process {recommended} to `accelerate launch` (it sets"
            f" OMP_NUM_THREADS=1 unless told); that leaves one core for the machine's other work")


def build_unet(args, architecture: dict, channels: int, cross_attention_dim: int | None = None,
               num_class_embeds: int | None = None):
    """A UNet2DModel (with `num_class_embeds`, one that adds a class embedding to the timestep's), or with
    `cross_attention_dim` a UNet2DConditionModel of the same shape that attends to text."""
    if args.variance_type == "learned_range" and args.loss_type == "simple":
        logger.warning("--variance_type learned_range with --loss_type simple: L_simple does not train the variance"
                       " channels, so sampling uses an untrained variance.")
    set_seed(args.seed)  # the same initial weights on every process
    unet_class, config = unet_class_and_config(args, architecture, channels, cross_attention_dim, num_class_embeds)
    unet = unet_class.from_config(config)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    return unet


def unet_class_and_config(args, architecture: dict, channels: int, cross_attention_dim: int | None = None,
                          num_class_embeds: int | None = None) -> tuple[type, dict]:
    """What `build_unet` builds, without building it (a resume compares it with the checkpoint's first)."""
    config = unet_config_for_data(architecture, channels=channels, resolution=args.resolution,
                                  learned_variance=args.variance_type == "learned_range")
    if cross_attention_dim is None:
        return UNet2DModel, {**config, "num_class_embeds": num_class_embeds}
    return UNet2DConditionModel, conditional_unet_config(config, cross_attention_dim)


def make_noise_scheduler(args) -> DDPMPosteriorScheduler:
    return DDPMPosteriorScheduler(
        num_train_timesteps=args.ddpm_num_steps,
        beta_schedule=args.ddpm_beta_schedule,
        prediction_type=args.prediction_type,
        variance_type=args.variance_type,
    )


def make_ema(unet, args) -> EMAModel:
    return EMAModel(
        unet.parameters(),
        decay=args.ema_max_decay,
        min_decay=args.ema_min_decay,
        use_ema_warmup=True,
        inv_gamma=args.ema_inv_gamma,
        power=args.ema_power,
        foreach=True,
        model_cls=type(unet),
        model_config=unet.config,
    )


@contextlib.contextmanager
def ema_weights(ema, unet):
    """Temporarily put the EMA weights into `unet` (exactly restored afterwards); a no-op without EMA."""
    if ema is None:
        yield unet
        return
    ema.store(unet.parameters())
    ema.copy_to(unet.parameters())
    try:
        yield unet
    finally:
        ema.restore(unet.parameters())


def make_optimizer(model, args, max_train_steps: int):
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay, eps=args.adam_epsilon,
    )
    return optimizer, make_lr_scheduler(optimizer, args, max_train_steps)


def make_lr_scheduler(optimizer, args, max_train_steps: int, steps_done: int = 0):
    """--lr_scheduler from --learning_rate, as it stands after `steps_done` optimizer steps.

    Not passed to accelerator.prepare, which would step it once per process: we step it once per optimizer step.
    """
    if steps_done:  # LambdaLR starting at a later step reads each group's base rate from "initial_lr"
        for group in optimizer.param_groups:
            group["initial_lr"] = args.learning_rate
    return get_scheduler(args.lr_scheduler, optimizer=optimizer, num_warmup_steps=args.lr_warmup_steps,
                         num_training_steps=max_train_steps, last_epoch=steps_done - 1)


def make_pipeline(unet, noise_scheduler, text: Optional["TextConditioning"], class_names: list[str] | None = None):
    """The pipeline the run trains, around `unet` (with a fresh scheduler, so sampling never touches training's)."""
    scheduler = DDPMPosteriorScheduler.from_config(noise_scheduler.config)
    if text is None and class_names is not None:
        return DDPMImagePipeline(unet=unet, scheduler=scheduler, class_names=class_names)
    if text is None:
        return DDPMImagePipeline(unet=unet, scheduler=scheduler)
    return DDPMTextToImagePipeline(unet=unet, scheduler=scheduler, text_encoder=text.text_encoder,
                                   tokenizer=text.tokenizer)
