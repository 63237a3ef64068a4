# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The trainer (training/train.py), run as real subprocesses on the CPU with the tiny preset.

Runs that end normally go through `accelerate launch`, as users run them. Runs whose exit code is under test go
through `python training/train.py`: `accelerate launch` replaces a failing script's exit code with its own and adds
a traceback of the launcher.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support.training import (
    RESUMABLE,
    TINY,
    assert_bitwise_equal,
    assert_same_result,
    error_lines,
    kill_when,
    latest_names,
    launch,
    run_script,
    start_killable,
    unet_weights,
)


# ----------------------------------------------------------------------------------------------------------------
# A whole run: outputs, the saved pipeline, TensorBoard
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("run") / "out"
    launch(*TINY, "--max_train_steps", "6", "--validation_steps", "3", "--checkpointing_steps", "3",
           "--eval_fid_images", "24", "--eval_fid_steps", "2", "--report_to", "tensorboard", "--output_dir", output_dir)
    return output_dir


def test_run_writes_pipeline_pictures_and_args(finished_run):
    for name in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                 "scheduler/scheduler_config.json", "samples.png", "loss_curve.png", "training_args.json",
                 "validation/step-3.png", "validation/step-6.png", "checkpoints/checkpoint-6/trainer_state.json"):
        assert (finished_run / name).is_file(), name
    assert not [p.name for p in finished_run.iterdir() if p.name.startswith(".publishing")]  # published whole
    args = json.loads((finished_run / "training_args.json").read_text())
    assert args["preset"] == "tiny" and args["max_train_steps"] == 6 and args["embedded_dataset"] == "digits"
    assert not [key for key in args if "token" in key]
    from PIL import Image

    assert Image.open(finished_run / "samples.png").size == (128, 128)  # 2x2 grid of 8x8 digits scaled to 64 px


def test_run_ends_with_the_digit_feature_fd_in_fid_json_the_card_and_the_trackers(finished_run):
    quality = json.loads((finished_run / "fid.json").read_text())
    assert quality["fd_name"] == "digit-feature FD" and quality["num_images"] == 24  # never called FID offline
    assert quality["num_inference_steps"] == 2 and quality["reference"]["source"] == "embedded:digits"
    assert quality["fd"] > 0
    card = (finished_run / "README.md").read_text()
    assert "digit-feature FD" in card and f"{round(quality['fd'], 4)}" in card
    assert f"-step respaced chain, seed 0); digit-feature FD of the run's samples: {round(quality['fd'], 4)}" in card


def test_saved_pipeline_loads_and_samples(finished_run):
    from ddpm_hf import DDPMImagePipeline, DDPMPosteriorScheduler

    pipeline = DDPMImagePipeline.from_pretrained(finished_run)
    assert isinstance(pipeline.scheduler, DDPMPosteriorScheduler)
    assert pipeline.scheduler.config.num_train_timesteps == 1000
    assert pipeline.unet.config.in_channels == 1 and pipeline.unet.config.sample_size == 8
    images = pipeline(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=3,
                      output_type="np").images
    assert images.shape == (2, 8, 8, 1)


def test_tensorboard_logs_scalars_and_images(finished_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_files = list((finished_run / "logs").rglob("events.out.tfevents.*"))
    assert event_files
    tags = {"scalars": set(), "images": set()}
    for event_file in event_files:
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        for kind in tags:
            tags[kind] |= set(accumulator.Tags()[kind])
    assert {"loss", "lr", "images_per_second", "grad_norm", "digit-feature FD"} <= tags["scalars"]
    assert any(tag.startswith("validation") for tag in tags["images"])


# ----------------------------------------------------------------------------------------------------------------
# Exact resume, atomic saves, pruning
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """The uninterrupted run that interrupted ones must reproduce bit for bit."""
    output_dir = tmp_path_factory.mktemp("reference") / "out"
    launch(*RESUMABLE, "--output_dir", output_dir)
    return output_dir


def test_resume_after_sigkill_is_bitwise_exact(reference_run, tmp_path):
    output_dir = tmp_path / "out"
    process = start_killable(*RESUMABLE, "--output_dir", output_dir, env={"DDPM_HF_TEST_STEP_DELAY": "0.4"})
    kill_when(process, latest_names(output_dir, 4))
    assert not (output_dir / "model_index.json").exists(), "the run finished before the kill"

    launch(*RESUMABLE, "--output_dir", output_dir, "--resume_from_checkpoint", "latest")
    assert_same_result(output_dir, reference_run)


def test_kill_during_a_save_leaves_the_previous_checkpoint_usable(reference_run, tmp_path):
    output_dir = tmp_path / "out"
    checkpoints = output_dir / "checkpoints"
    process = start_killable(*RESUMABLE, "--output_dir", output_dir, env={"DDPM_HF_TEST_PAUSE_IN_SAVE": "4"})
    kill_when(process, lambda: any(checkpoints.glob(".checkpoint-4.*tmp-*/PAUSED")))

    # Half of checkpoint 4 is on disk, hidden; `latest` still names the complete checkpoint 2.
    assert (checkpoints / "latest").read_text().strip() == "checkpoint-2"
    assert (checkpoints / "checkpoint-2" / "trainer_state.json").is_file()
    assert sorted(path.name for path in checkpoints.glob("checkpoint-*")) == ["checkpoint-2"]

    launch(*RESUMABLE, "--output_dir", output_dir, "--resume_from_checkpoint", "latest")
    assert not [name for name in os.listdir(checkpoints) if ".tmp-" in name], "stale temporaries were not removed"
    assert_same_result(output_dir, reference_run)


def test_hybrid_loss_with_importance_sampling_resumes_bitwise_exact(tmp_path):
    """The sampler's loss history is part of the checkpoint: a resumed run draws the same timesteps."""
    flags = [*TINY, "--train_batch_size", "16", "--max_train_steps", "10", "--checkpointing_steps", "5",
             "--variance_type", "learned_range", "--loss_type", "hybrid", "--timestep_sampler", "loss-second-moment",
             "--ddpm_num_steps", "4", "--validation_inference_steps", "4", "--validation_steps", "0",
             "--report_to", "none"]
    reference = tmp_path / "reference"
    launch(*flags, "--output_dir", reference)
    halfway = load_file(reference / "checkpoints" / "checkpoint-5" / "timestep_sampler.safetensors")
    assert int(halfway["loss_counts"].min()) >= 10, "the sampler should be past its uniform warm-up by step 5"

    resumed = tmp_path / "resumed"
    launch(*flags, "--output_dir", resumed, "--resume_from_checkpoint", reference / "checkpoints" / "checkpoint-5")
    assert_bitwise_equal(unet_weights(resumed / "unet"), unet_weights(reference / "unet"))
    final = [load_file(run / "checkpoints" / "checkpoint-10" / "timestep_sampler.safetensors")
             for run in (reference, resumed)]
    assert_bitwise_equal(final[0], final[1])


def test_checkpoints_total_limit_keeps_the_newest(reference_run):
    checkpoints = reference_run / "checkpoints"
    assert sorted(os.listdir(checkpoints)) == ["checkpoint-6", "checkpoint-8", "latest"]
    assert (checkpoints / "latest").read_text().strip() == "checkpoint-8"


@pytest.fixture(scope="module")
def resumed_from_an_older_checkpoint(reference_run, tmp_path_factory) -> tuple[Path, str]:
    """The reference run's checkpoints 6 and 8, resumed from 6 to step 7 with a checkpoint every step, a limit of
    one, and the seed changed on purpose: (the output folder, the run's stderr)."""
    output_dir = tmp_path_factory.mktemp("older") / "out"
    shutil.copytree(reference_run / "checkpoints", output_dir / "checkpoints")
    result = launch(*RESUMABLE, "--output_dir", output_dir, "--max_train_steps", "7", "--checkpointing_steps", "1",
                    "--checkpoints_total_limit", "1", "--resume_from_checkpoint", "checkpoint-6",
                    "--seed", "5", "--allow_changed_flags", "seed")
    return output_dir, result.stderr


def test_a_resume_from_an_older_checkpoint_sets_the_later_ones_aside_and_keeps_what_it_writes(
        resumed_from_an_older_checkpoint):
    from ddpm_hf.trainer.checkpoints import resolve_checkpoint

    output_dir, _ = resumed_from_an_older_checkpoint
    checkpoints = output_dir / "checkpoints"
    # Once, pruning kept the newest by step (the abandoned checkpoint-8) and deleted the checkpoint-7 just written,
    # while `latest` named it; `latest` then resumed checkpoint-8.
    [abandoned] = checkpoints.glob("abandoned-*-after-6")
    assert sorted(path.name for path in abandoned.iterdir()) == ["checkpoint-8"]
    assert sorted(path.name for path in checkpoints.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-7"]
    assert (checkpoints / "latest").read_text().strip() == "checkpoint-7"
    assert resolve_checkpoint(str(checkpoints), "latest") == str(checkpoints / "checkpoint-7")


def test_an_allowed_change_of_a_run_defining_flag_is_warned_and_recorded_per_segment(
        resumed_from_an_older_checkpoint):
    output_dir, stderr = resumed_from_an_older_checkpoint
    assert ("Resuming with changed run-defining flags, as --allow_changed_flags allows: --seed 0 -> 5;"
            " training_args.json records them from step 6 on") in stderr
    recorded = json.loads((output_dir / "training_args.json").read_text())
    assert recorded["seed"] == 5 and recorded["max_train_steps"] == 7  # the last segment's flags, as before
    [first, second] = recorded["segments"]
    assert (first["first_step"], first["args"]["seed"], first["args"]["max_train_steps"]) == (0, 0, 8)
    assert "changed_flags" not in first
    assert (second["first_step"], second["args"]["seed"], second["changed_flags"]) == (6, 5, {"seed": [0, 5]})
    state = json.loads((output_dir / "checkpoints" / "checkpoint-7" / "trainer_state.json").read_text())
    assert state["segments"] == recorded["segments"]  # the history travels with the checkpoints


def test_pruning_never_removes_the_checkpoint_it_has_just_written_nor_the_one_latest_names(tmp_path):
    from ddpm_hf.trainer.checkpoints import (
        LATEST_FILE,
        STATE_FILE,
        list_checkpoints,
        prune_checkpoints,
        save_checkpoint,
    )

    def write(folder):
        Path(folder, STATE_FILE).write_text("{}")

    for step in (10, 20):  # checkpoint-20 of another line (copied in by hand, say)
        save_checkpoint(str(tmp_path), step, write)
    save_checkpoint(str(tmp_path), 15, write, total_limit=1)
    assert [step for step, _ in list_checkpoints(str(tmp_path))] == [10, 15]  # 10: the one before, verified
    assert (tmp_path / LATEST_FILE).read_text().strip() == "checkpoint-15"
    (tmp_path / LATEST_FILE).write_text("checkpoint-10\n")
    prune_checkpoints(str(tmp_path), 1)
    assert [step for step, _ in list_checkpoints(str(tmp_path))] == [10]


def test_pruning_removes_only_complete_checkpoints(tmp_path):
    from ddpm_hf.trainer.checkpoints import STATE_FILE, list_checkpoints, prune_checkpoints

    for step, complete in ((1, True), (2, False), (3, True), (4, True)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / STATE_FILE).write_text("{}")
    prune_checkpoints(str(tmp_path), 2)
    assert [step for step, _ in list_checkpoints(str(tmp_path))] == [3, 4]
    assert (tmp_path / "checkpoint-2").is_dir()  # not a checkpoint of ours: left alone


def test_saving_a_step_again_replaces_it_and_stale_temporaries_go(tmp_path):
    from ddpm_hf.io import remove_stale_temporaries
    from ddpm_hf.trainer.checkpoints import STATE_FILE, latest_checkpoint, save_checkpoint

    def writer(text):
        def write(folder):
            Path(folder, "content").write_text(text)
            Path(folder, STATE_FILE).write_text("{}")
        return write

    save_checkpoint(str(tmp_path), 5, writer("first"))
    save_checkpoint(str(tmp_path), 5, writer("second"))  # a run resumed from an older checkpoint reaches step 5 again
    assert (tmp_path / "checkpoint-5" / "content").read_text() == "second"
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-5")
    (tmp_path / ".checkpoint-6.new.tmp-123").mkdir()  # what a crash mid-save leaves
    assert remove_stale_temporaries(str(tmp_path)) == [".checkpoint-6.new.tmp-123"]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-5", "latest"]


def test_non_finite_loss_stops_naming_the_step(tmp_path):
    output_dir = tmp_path / "out"
    # Adam moves every weight by about the learning rate: 1e30 overflows float32 activations at the next step.
    result = run_script(*TINY, "--max_train_steps", "10", "--learning_rate", "1e30", "--lr_warmup_steps", "0",
                        "--checkpointing_steps", "1", "--logging_steps", "1", "--report_to", "none",
                        "--output_dir", output_dir)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    [line] = error_lines(result.stderr)
    # The loss of step 2 came from the weights of step 1: checkpoint-1 holds them, so it is set aside, not "good".
    assert "at step 2" in line and "no checkpoint before it was verified good" in line
    assert "diverged-checkpoint-1" in line
    checkpoints = output_dir / "checkpoints"
    assert not (checkpoints / "latest").exists()
    assert sorted(path.name for path in checkpoints.iterdir()) == ["diverged-checkpoint-1"]
    assert not (output_dir / "model_index.json").exists()


# ----------------------------------------------------------------------------------------------------------------
# Two processes
# ----------------------------------------------------------------------------------------------------------------
def test_two_processes_shard_the_data_and_stay_in_sync(tmp_path):
    output_dir = tmp_path / "out"
    # With Improved DDPM's objective and importance-sampled t (T = 4, so the sampler's history fills up): every
    # process must keep the same loss history, from all processes' losses.
    # Class-conditional too (the digit's label, dropped now and then for guidance): the label dropout must draw the
    # same way on both processes' shards as the noise does.
    launch(*TINY, "--max_train_steps", "4", "--train_batch_size", "4", "--gradient_accumulation_steps", "2",
           "--random_flip", "--use_ema", "--checkpointing_steps", "2", "--report_to", "none", "--class_column", "label",
           "--variance_type", "learned_range", "--loss_type", "hybrid", "--timestep_sampler", "loss-second-moment",
           "--ddpm_num_steps", "4", "--validation_inference_steps", "4",
           "--output_dir", output_dir, num_processes=2, env={"DDPM_HF_DEBUG_RANKS": "1"})
    ranks = [json.loads((output_dir / "debug" / f"rank-{i}.json").read_text()) for i in range(2)]
    assert ranks[0]["parameters"] == ranks[1]["parameters"]
    assert ranks[0]["timestep_sampler"] == ranks[1]["timestep_sampler"]
    sampler = load_file(output_dir / "checkpoints" / "checkpoint-4" / "timestep_sampler.safetensors")
    assert int(sampler["loss_counts"].sum()) == 4 * 16  # both processes' losses, every step
    batches = [rank["micro_batches"] for rank in ranks]
    assert len(batches[0]) == len(batches[1]) == 4 * 2
    assert {step for step, _ in batches[0]} == {0, 1, 2, 3}
    assert not {digest for _, digest in batches[0]} & {digest for _, digest in batches[1]}
    state = json.loads((output_dir / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["num_processes"] == 2 and state["samples_seen"] == 4 * 16
    assert (output_dir / "model_index.json").is_file()


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one line, exit code 2, no traceback
# ----------------------------------------------------------------------------------------------------------------
def _image_folder(root: Path) -> Path:
    from PIL import Image

    root.mkdir()
    for i in range(2):
        Image.new("L", (8, 8), color=40 * i).save(root / f"{i}.png")
    return root


@pytest.mark.parametrize(
    "case",
    ["empty folder", "missing column", "bad resolution"],
)
def test_bad_input_gives_a_one_line_error(case, tmp_path):
    if case == "empty folder":
        (tmp_path / "empty").mkdir()
        flags, expected = ["--train_data_dir", tmp_path / "empty"], "no image files found"
    elif case == "missing column":
        flags = ["--dataset_name", _image_folder(tmp_path / "images"), "--image_column", "picture"]
        expected = "image column 'picture' not found"
    else:  # the default preset has three levels: resolutions must be multiples of 4
        flags, expected = ["--resolution", "18"], "multiple of 4 (e.g. 16 or 20)"
    result = run_script(*flags, "--max_train_steps", "1", "--report_to", "none", "--output_dir", tmp_path / "out")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    [line] = error_lines(result.stderr)
    assert expected in line, line


# ----------------------------------------------------------------------------------------------------------------
# Presets and flags (in-process, no training)
# ----------------------------------------------------------------------------------------------------------------
def unet_parameter_count(unet_config: dict) -> int:
    """The parameters of a real UNet2DModel built from `unet_config`, on the meta device (no weights allocated)."""
    from diffusers import UNet2DModel

    with torch.device("meta"):
        return sum(parameter.numel() for parameter in UNet2DModel.from_config(unet_config).parameters())


def test_ddpm_cifar10_preset_is_the_papers_network():
    from ddpm_hf.presets import load_preset, unet_config_for_data

    preset = load_preset("ddpm-cifar10")
    config = unet_config_for_data(preset.unet, channels=3, resolution=32, learned_variance=False)
    assert abs(unet_parameter_count(config) - 35.7e6) / 35.7e6 < 0.01
    training = preset.training
    assert (training["learning_rate"], training["train_batch_size"], training["lr_warmup_steps"]) == (2e-4, 128, 5000)
    assert (training["max_grad_norm"], training["ema_max_decay"], training["random_flip"]) == (1.0, 0.9999, True)


def test_learned_range_doubles_the_output_channels():
    from ddpm_hf.presets import load_preset, unet_config_for_data

    config = unet_config_for_data(load_preset("tiny").unet, channels=3, resolution=16, learned_variance=True)
    assert (config["in_channels"], config["out_channels"], config["sample_size"]) == (3, 6, 16)


def test_every_preset_parses_and_explicit_flags_win():
    from ddpm_hf.presets import DEFAULT_PRESET, available_presets, load_preset
    from ddpm_hf.trainer.config import parse_args

    assert {"tiny", "ddpm-cifar10", DEFAULT_PRESET} <= set(available_presets())
    for name in available_presets():
        args = parse_args(["--preset", name])
        for flag, value in load_preset(name).training.items():
            assert getattr(args, flag) == value, (name, flag)
        unet_parameter_count(dict(load_preset(name).unet, in_channels=1, out_channels=1))  # the UNet builds
    assert parse_args([]).preset == DEFAULT_PRESET
    args = parse_args(["--preset", "ddpm-cifar10", "--learning_rate", "1e-3", "--no-use_ema"])
    assert (args.learning_rate, args.use_ema, args.train_batch_size) == (1e-3, False, 128)
    # A data source on the command line replaces all of the preset's data settings.
    args = parse_args(["--preset", "ddpm-cifar10", "--train_data_dir", "pictures"])
    assert (args.dataset_name, args.image_column, args.train_data_dir) == (None, "image", "pictures")
    # So does a training length: --num_epochs replaces the preset's step count.
    args = parse_args(["--preset", "ddpm-cifar10", "--num_epochs", "2"])
    assert (args.num_epochs, args.max_train_steps) == (2, None)
    # Another data source drops the default preset's Fréchet distance (measured against its data); an explicit
    # --eval_fid_images keeps the preset's data.
    assert parse_args(["--train_data_dir", "pictures"]).eval_fid_images == 0
    args = parse_args(["--preset", "tiny", "--eval_fid_images", "8"])
    assert (args.embedded_dataset, args.eval_fid_images) == ("digits", 8)
    # A class column is no data source: the CIFAR-10 preset keeps its data and trains on its labels.
    args = parse_args(["--preset", "ddpm-cifar10", "--class_column", "label"])
    assert (args.dataset_name, args.image_column, args.class_column) == ("uoft-cs/cifar10", "img", "label")


@pytest.mark.parametrize("resumed", [False, True])
def test_a_changed_number_of_images_is_reported_only_on_a_real_resume(resumed, tmp_path, monkeypatch, caplog):
    from types import SimpleNamespace

    from accelerate import PartialState

    from ddpm_hf.trainer import resume
    from ddpm_hf.trainer.checkpoints import TrainerState

    PartialState(cpu=True)  # accelerate's logger needs it
    if resumed:  # a checkpoint of a run on 100 images
        monkeypatch.setattr(resume, "load_checkpoint_contents",
                            lambda folder, **parts: TrainerState(global_step=2, samples_seen=16, num_images=100))
    accelerator = SimpleNamespace(is_main_process=True, num_processes=1, scaler=None, wait_for_everyone=lambda: None,
                                  unwrap_model=lambda model, keep_fp32_wrapper: model)
    training = SimpleNamespace(accelerator=accelerator, unet=None, ema=None, optimizer=None, lr_scheduler=None,
                               timestep_sampler=None, trained_text_encoder=None, state=TrainerState(),
                               layout=SimpleNamespace(global_batch_size=8),
                               args=SimpleNamespace(output_dir=str(tmp_path), resume_from_checkpoint="latest",
                                                    max_train_steps=8))
    with caplog.at_level("INFO"):
        resume.start_or_resume(training, 64, str(tmp_path / "checkpoint-2") if resumed else None)
    warned = [record for record in caplog.records if "images, this run has 64" in record.getMessage()]
    assert len(warned) == int(resumed), caplog.text
    assert ("Resumed from" in caplog.text) == resumed and ("starting a new run" in caplog.text) != resumed
    assert (training.state.num_images, training.state.global_step) == (64, 2 if resumed else 0)


def test_data_position_is_independent_of_the_process_layout():
    from ddpm_hf.data.order import BatchLayout, DataStream, MicroBatchKeys

    stream = DataStream(num_samples=10, seed=3)
    one = BatchLayout(batch_size=8)
    [key] = list(MicroBatchKeys(stream, one, first_step=1, last_step=2, first_position=8))
    # Two processes x two micro-batches of 2 images cover the same global batch, each position once.
    shards = [list(MicroBatchKeys(stream, BatchLayout(2, 2, rank, 2), 1, 2, 8)) for rank in range(2)]
    union = sorted(torch.cat([k.indices for shard in shards for k in shard]).tolist())
    assert union == sorted(key.indices.tolist())
    assert stream.indices(0, 20)[:10].sort().values.tolist() == list(range(10))  # epoch 0 is a permutation
    assert not torch.equal(stream.indices(0, 10), stream.indices(10, 10))  # and epoch 1 another one


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_loss_is_l_simple_on_the_schedulers_forward_process(prediction_type):
    from types import SimpleNamespace

    from ddpm_hf import DDPMPosteriorScheduler
    from ddpm_hf.diffusion.losses import diffusion_loss_terms

    scheduler = DDPMPosteriorScheduler(prediction_type=prediction_type)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    seen = {}

    def model(x_t, timesteps):
        seen.update(x_t=x_t, timesteps=timesteps)
        return SimpleNamespace(sample=torch.zeros_like(x_t))

    loss = diffusion_loss_terms(model, scheduler, x0, torch.Generator().manual_seed(7)).loss
    generator = torch.Generator().manual_seed(7)  # the same draws, in the same order: noise, then timesteps
    noise = torch.randn(x0.shape, generator=generator)
    timesteps = torch.randint(0, 1000, (4,), generator=generator)
    assert torch.equal(seen["timesteps"], timesteps)
    assert torch.equal(seen["x_t"], scheduler.add_noise(x0, noise, timesteps))
    target = {"epsilon": noise, "sample": x0, "v_prediction": scheduler.get_velocity(x0, noise, timesteps)}
    torch.testing.assert_close(loss, target[prediction_type].pow(2).mean())


def test_validation_grids_use_the_chosen_sampler_and_the_card_says_so(unet_factory):
    """--validation_scheduler ddim --validation_eta 1: the grid is DDIM's images (the run's scheduler config), and
    the samples caption names the chain; the default stays the DDPM posterior."""
    from diffusers import DDIMScheduler

    from ddpm_hf import DDPMImagePipeline, DDPMPosteriorScheduler
    from ddpm_hf.trainer.config import parse_args
    from ddpm_hf.trainer.publishing import model_card_kwargs
    from ddpm_hf.trainer.validation import sample_grid, sample_grids

    unet, noise_scheduler = unet_factory(), DDPMPosteriorScheduler(num_train_timesteps=1000)
    flags = ["--preset", "tiny", "--resolution", "8", "--validation_inference_steps", "5",
             "--num_validation_images", "4", "--output_dir", "unused"]
    args = parse_args([*flags, "--validation_scheduler", "ddim", "--validation_eta", "1"])
    grid = sample_grids(unet, noise_scheduler, args, None)[""]
    pipeline = DDPMImagePipeline(unet=unet, scheduler=DDIMScheduler.from_config(noise_scheduler.config))
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline(batch_size=4, generator=torch.Generator("cpu").manual_seed(args.seed), num_inference_steps=5,
                      eta=1.0).images
    assert list(grid.getdata()) == list(sample_grid(images, rows=2).getdata())
    assert list(grid.getdata()) != list(sample_grids(unet, noise_scheduler, parse_args(flags), None)[""].getdata())

    class Accelerator:
        num_processes, device = 1, torch.device("cpu")

    caption = model_card_kwargs(args, Accelerator(), step=6)["sample_caption"]
    assert caption.startswith("Uncurated samples after 6 training steps (5-step ddim chain, eta 1, seed 0)")
