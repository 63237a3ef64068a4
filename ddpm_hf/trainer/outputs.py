# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""What a run leaves behind besides checkpoints (main process only): the pipeline, its pictures and model card in
--output_dir, and the pipeline pushed to the Hub at checkpoints."""

import json
import os
from typing import TYPE_CHECKING

from accelerate.logging import get_logger

from ..hub import render_model_card
from ..io import (
    is_out_of_space,
    out_of_space,
    save_image_atomically,
    tree_size,
    write_atomically,
    write_text_atomically,
)
from ..pipeline_utils import publication
from ..visualization import plot_loss_curve
from .config import saveable_args
from .publishing import model_card_kwargs, repo_name
from .session import TrainingSession
from .setup import ema_weights, make_pipeline
from .validation import evaluate_nll, grid_guidance, grid_path, sample_grids

if TYPE_CHECKING:
    from ..evaluation import QualityResult

logger = get_logger(__name__)


def class_names(training: TrainingSession) -> list[str] | None:
    return training.classes.names if training.classes is not None else None


def push_checkpoint_pipeline(training: TrainingSession) -> None:
    """Main process only: the current (EMA) weights to the Hub in the background, with this step's grid if any."""
    step, unet = training.state.global_step, training.unet
    # This step's main validation grid (the one samples.png would be), when validation ran at this step too.
    main_grid = next(iter(grid_guidance(training.args)))
    grid = grid_path(os.path.join(training.args.output_dir, "validation"), step, main_grid)
    with ema_weights(training.ema, unet):
        pipeline = make_pipeline(unet, training.noise_scheduler, training.text, class_names(training))
        training.publisher.push_checkpoint(pipeline, step, grid=grid if os.path.isfile(grid) else None)


def save_final_outputs(training: TrainingSession, data, quality: "QualityResult | None" = None) -> None:
    """Main process only: the pipeline (EMA weights with --use_ema), training_args.json, samples.png,
    loss_curve.png, the optional bound, and the model card (README.md): everything --push_to_hub then uploads.

    All of it is published as one set, training_args.json included (it describes a run that finished). A full disk
    stops with an OutOfSpaceError (the previous pipeline, if any, is intact: nothing is swapped in before the whole
    set is written).
    """
    try:
        _save_final_outputs(training, data, quality)
    except Exception as error:
        folder = training.args.output_dir
        needed = tree_size(os.path.join(folder, "checkpoints", f"checkpoint-{training.state.global_step}"))
        if is_out_of_space(error, folder, needed):
            raise out_of_space(folder, needed, "the final checkpoint is written: free some space and rerun with"
                               " --resume_from_checkpoint latest to write the pipeline") from error
        raise


def _save_final_outputs(training: TrainingSession, data, quality: "QualityResult | None") -> None:
    args, unet, accelerator = training.args, training.unet, training.accelerator
    if training.ema is not None:
        training.ema.copy_to(unet.parameters())  # training is over: the EMA weights are the model now
    pipeline = make_pipeline(unet, training.noise_scheduler, training.text, class_names(training))
    # One publication: the folder holds the previous pipeline with its card and pictures, or this run's, never a mix
    # of the two (see ddpm_hf.pipeline_utils.publication); checkpoints and logs stay where they are.
    with publication(args.output_dir) as staging:
        pipeline.save_pretrained(staging)
        # The flags of the last segment, and the segments: what each start and resume of the run used, from which step.
        run_args = {**saveable_args(args), "segments": training.state.segments}
        write_text_atomically(os.path.join(staging, "training_args.json"), json.dumps(run_args, indent=2) + "\n")
        grids = sample_grids(unet, training.noise_scheduler, args, training.text, training.classes)
        for index, (name, grid) in enumerate(grids.items()):  # samples.png; text to image: samples-guidance-1.png
            filename = "samples.png" if index == 0 else f"samples-{name}.png"
            save_image_atomically(grid, os.path.join(staging, filename))
        write_atomically(os.path.join(staging, "loss_curve.png"),
                         lambda temporary: plot_loss_curve(training.state.loss_history, temporary))
        metrics = {}
        if args.eval_nll_images:
            metrics.update(evaluate_nll(pipeline, data, args, training.text, training.classes, folder=staging))
        if quality is not None:
            write_text_atomically(os.path.join(staging, "fid.json"), json.dumps(quality.to_dict(), indent=2) + "\n")
            metrics.update(quality.model_card_metrics())
        repo_id = training.publisher.repo_id if training.publisher is not None else repo_name(args)
        card = render_model_card(pipeline, repo_id=repo_id, sample_grid_filename="samples.png",
                                 _secrets_to_hide=[args.hub_token],
                                 **model_card_kwargs(args, accelerator, training.state.global_step, metrics or None))
        write_text_atomically(os.path.join(staging, "README.md"), str(card))
    logger.info(f"Saved the pipeline, samples.png, loss_curve.png and README.md to {args.output_dir}")
