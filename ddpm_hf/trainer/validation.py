# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Judging the model as it trains: sample grids from a fixed seed (validation/step-N.png, the trackers, samples.png),
and at the end the variational bound on training images (nll.json, nll_terms.png) and the Fréchet distance of its
samples to the training source (fid.json, written with the pipeline by outputs.save_final_outputs)."""

import os
from typing import TYPE_CHECKING

import numpy as np
import torch
from accelerate.logging import get_logger

from ..data.pixels import to_model_range
from ..diffusion.likelihood import variational_bound
from ..errors import one_line
from ..evaluation.data_spec import embedded_spec
from ..evaluation.nll_report import chain_name, describe_bound, write_nll_report
from ..io import save_image_atomically
from ..samplers import use_sampler
from ..visualization import enlarge, filled_grid_rows, image_grid
from .classes import ClassConditioning
from .setup import ema_weights, make_pipeline
from .text import TextConditioning

if TYPE_CHECKING:
    from ..evaluation import QualityResult

logger = get_logger(__name__)


def grid_guidance(args) -> dict:
    """{name: guidance scale} of the grids `sample_grids` draws, in its order; the first becomes samples.png."""
    if not args.text_to_image and not args.class_column:
        return {"": None}
    return {f"guidance-{scale:g}": scale for scale in (args.validation_guidance_scale, 1.0)}


@torch.no_grad()
def sample_grids(unet, noise_scheduler, args, text: TextConditioning | None,
                 classes: ClassConditioning | None = None) -> dict:
    """{name: grid} from a fixed generator, so successive grids are comparable; the first is the run's samples.png.

    Unconditional: one grid of `num_validation_images`. Text to image: one row per validation prompt; class-
    conditional: one row per class (the first ten); each drawn with guidance and, from the same noise, without it.
    """
    pipeline = make_pipeline(unet, noise_scheduler, text, classes.names if classes is not None else None)
    use_sampler(pipeline, args.validation_scheduler)
    pipeline.set_progress_bar_config(disable=True)
    common = dict(num_inference_steps=args.validation_inference_steps, eta=args.validation_eta, output_type="pil")
    def generator():
        return torch.Generator("cpu").manual_seed(args.seed)  # the same noise on every device
    modules = [unet] if text is None else [unet, text.text_encoder]
    was_training = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        if classes is not None:
            rows = classes.validation_labels()
            per_class = max(1, args.num_validation_images // len(rows))
            labels = [label for label in rows for _ in range(per_class)]
            return {name: sample_grid(pipeline(batch_size=len(labels), class_labels=labels, guidance_scale=scale,
                                               generator=generator(), **common).images, rows=len(rows))
                    for name, scale in grid_guidance(args).items()}
        if text is None:
            images = pipeline(batch_size=args.num_validation_images, generator=generator(), **common).images
            return {"": sample_grid(images, rows=filled_grid_rows(len(images)))}
        per_prompt = max(1, args.num_validation_images // len(text.prompts))
        grids = {}
        for name, scale in grid_guidance(args).items():
            images = pipeline(prompt=text.prompts, num_images_per_prompt=per_prompt, guidance_scale=scale,
                              generator=generator(), **common).images
            grids[name] = sample_grid(images, rows=len(text.prompts))
        return grids
    finally:
        for module, mode in zip(modules, was_training, strict=True):
            module.train(mode)


def sample_grid(images, rows: int):
    """An RGB grid of `rows` full rows, each image enlarged (nearest) so that small digits are visible."""
    return image_grid([enlarge(image) for image in images], rows=rows, mode="RGB")


def grid_path(folder: str, step: int, name: str) -> str:
    return os.path.join(folder, f"step-{step}{'-' + name if name else ''}.png")


def log_validation(training) -> None:
    """Main process only: sample grids to output_dir/validation/step-N[-name].png and to the trackers.

    No collectives in here: the other processes do not call it."""
    args, step = training.args, training.state.global_step
    unet = training.unet
    with ema_weights(training.ema, unet):
        grids = sample_grids(unet, training.noise_scheduler, args, training.text, training.classes)
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


@torch.no_grad()
def evaluate_nll(pipeline, data, args, text: TextConditioning | None, classes: ClassConditioning | None = None,
                 folder: str | None = None) -> dict:
    """The variational bound of the trained model on --eval_nll_images training images (given their captions or
    classes, when it is conditional): nll.json and nll_terms.png in `folder` (default --output_dir), and the metric
    for the model card."""
    count = min(args.eval_nll_images, len(data))
    chosen = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))[:count]
    images = to_model_range(data.pixels[chosen]).to(pipeline.unet.device)
    model_kwargs = None
    if text is not None:
        caption_indices = text.bank.caption_indices[chosen.to(text.bank.caption_indices.device)]
        model_kwargs = {"encoder_hidden_states": text.encodings(caption_indices)}
    elif classes is not None:
        model_kwargs = {"class_labels": classes.labels[chosen].to(pipeline.unet.device)}
    steps = args.eval_nll_steps or args.ddpm_num_steps
    chain = list(range(args.ddpm_num_steps - 1, -1, -1)) if steps == args.ddpm_num_steps else steps
    was_training = pipeline.unet.training
    pipeline.unet.eval()
    try:
        bound = variational_bound(pipeline.unet, pipeline.scheduler, images, batch_size=256, timesteps=chain,
                                  generator=torch.Generator().manual_seed(args.seed), model_kwargs=model_kwargs)
    finally:
        pipeline.unet.train(was_training)
    given = " given their captions" if text is not None else " given their classes" if classes is not None else ""
    how = describe_bound(bound, chain=chain_name(None if steps == args.ddpm_num_steps else steps),
                         images=f"{count} training images{given}")
    folder = folder or args.output_dir
    record = write_nll_report(bound, description=how, pipeline=args.output_dir, data=training_data_spec(args),
                              seed=args.seed, json_path=os.path.join(folder, "nll.json"),
                              png_path=os.path.join(folder, "nll_terms.png"),
                              title="variational bound of the trained model")
    logger.info(f"Variational bound: {record['total_bpd']:.4f} ± {record['total_bpd_stderr']:.4f} bits/dim on"
                f" {count} training images ({steps}-step chain)")
    return {"bits/dim": {"value": round(record["total_bpd"], 4), "description": how}}


# ----------------------------------------------------------------------------------------------------------------


def training_data_spec(args) -> str:
    """The training data as a spec `ddpm-hf nll --data` (and, for embedded sets and folders, `ddpm-hf fid`) takes:
    what nll.json names, and the reference the run's samples are measured against."""
    if args.embedded_dataset:
        return embedded_spec(args.embedded_dataset)
    return args.train_data_dir or args.dataset_name


def evaluate_fid(training) -> "QualityResult | None":
    """On every process (each samples its share; torchmetrics sums the states): the Fréchet and kernel distances of
    --eval_fid_images samples of the EMA weights to the training source, logged to the trackers; the final save
    writes them to fid.json and the card. None (with a warning) where they cannot be measured."""
    from ..evaluation import evaluate_sample_quality  # torchmetrics: imported only by runs that ask for it

    args, unet = training.args, training.unet
    steps = args.eval_fid_steps or args.validation_inference_steps
    with ema_weights(training.ema, unet):
        pipeline = make_pipeline(unet, training.noise_scheduler, None,
                                 training.classes.names if training.classes is not None else None)
        use_sampler(pipeline, args.validation_scheduler)
        pipeline.set_progress_bar_config(disable=not training.accelerator.is_local_main_process)
        was_training = unet.training
        unet.eval()
        try:
            result = evaluate_sample_quality(pipeline, training_data_spec(args), num_images=args.eval_fid_images,
                                             num_inference_steps=steps, seed=args.seed, fid_weights=args.fid_weights,
                                             device=training.accelerator.device, eta=args.validation_eta)
        except (ValueError, OSError) as error:  # e.g. no Inception weights offline: keep the pipeline
            logger.warning(f"No Fréchet distance: {one_line(error)}; the pipeline is saved without it")
            return None
        finally:
            unet.train(was_training)
    if training.accelerator.is_main_process:
        logger.info(result.summary())
    training.accelerator.log({result.fd_name: result.fd, result.kd_name: result.kd}, step=training.state.global_step)
    return result
