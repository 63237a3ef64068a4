# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""DDPMImagePipeline: sampling conventions, equality with diffusers, and the three loading paths (fresh processes)."""

import json
import os
import re
import shutil

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler
from safetensors.torch import load_file
from support.models import tiny_text_to_image_pipeline, tiny_unet
from support.processes import run_python

from ddpm_hf import DDPMImagePipeline, DDPMPosteriorScheduler

STEPS = 20


def make_pipeline(in_channels=1, **scheduler_kwargs):
    pipe = DDPMImagePipeline(unet=tiny_unet(in_channels), scheduler=DDPMPosteriorScheduler(**scheduler_kwargs))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(pipe, seed=0, batch_size=2, **kwargs):
    return pipe(batch_size=batch_size, generator=torch.Generator().manual_seed(seed), num_inference_steps=STEPS,
                output_type="np", **kwargs).images


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipe") / "pipeline"
    pipe = make_pipeline(clip_sample=False, variance_type="fixed_large")
    pipe.save_pretrained(folder)
    np.save(folder.parent / "reference.npy", sample(pipe))
    return folder


def test_output_types_and_modes():
    gray, color = make_pipeline(1), make_pipeline(3)
    assert gray(batch_size=2, num_inference_steps=3).images[0].mode == "L"
    assert color(batch_size=1, num_inference_steps=3).images[0].mode == "RGB"
    array = sample(gray)
    assert array.shape == (2, 8, 8, 1) and array.min() >= 0 and array.max() <= 1
    tensor = gray(batch_size=2, num_inference_steps=3, output_type="pt").images
    assert tensor.shape == (2, 1, 8, 8) and isinstance(tensor, torch.Tensor)
    as_tuple = gray(batch_size=1, num_inference_steps=3, output_type="np", return_dict=False)
    assert isinstance(as_tuple, tuple) and as_tuple[0].shape == (1, 8, 8, 1)
    with pytest.raises(ValueError, match="output_type"):
        gray(num_inference_steps=2, output_type="jpeg")


def test_same_generator_same_images_and_different_seeds_differ():
    pipe = make_pipeline()
    np.testing.assert_array_equal(sample(pipe, seed=3), sample(pipe, seed=3))
    assert np.abs(sample(pipe, seed=3) - sample(pipe, seed=4)).max() > 0.05


@pytest.mark.parametrize("config", [
    dict(),
    dict(clip_sample=False, variance_type="fixed_large"),
    dict(prediction_type="v_prediction", beta_schedule="squaredcos_cap_v2"),
])
def test_images_equal_diffusers_ddpm_pipeline(config):
    """Same UNet, same scheduler config, same generator: the same images as diffusers.DDPMPipeline."""
    ours = make_pipeline(**config)
    theirs = DDPMPipeline(unet=ours.unet, scheduler=DDPMScheduler(**config))
    theirs.set_progress_bar_config(disable=True)
    a = ours(batch_size=2, generator=torch.Generator().manual_seed(1), num_inference_steps=50, output_type="np")
    b = theirs(batch_size=2, generator=torch.Generator().manual_seed(1), num_inference_steps=50, output_type="np")
    # diffusers keeps abar in float32; ours in float64 (see test_scheduler_diffusers_parity).
    np.testing.assert_allclose(a.images, b.images, atol=2e-3)


def test_trajectory_records_every_kth_step():
    pipe = make_pipeline(clip_sample=False)
    out = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=10, output_type="pt",
               trajectory_every=3)
    trajectory = out.trajectory
    assert trajectory.timesteps == [-1, 700, 400, 100, 0]
    assert trajectory.samples.shape == (5, 2, 1, 8, 8) == trajectory.pred_original_samples.shape
    # The last recorded sample is the final image; the first is x_T.
    torch.testing.assert_close((trajectory.samples[-1] / 2 + 0.5).clamp(0, 1), out.images)
    generator = torch.Generator().manual_seed(0)
    x_T = torch.randn((2, 1, 8, 8), generator=generator)
    torch.testing.assert_close(trajectory.samples[0], x_T)


def test_callback_sees_and_replaces_latents():
    pipe = make_pipeline(clip_sample=False)
    seen = []

    def zero_at_last_step(pipeline, i, t, tensors):
        seen.append((i, int(t), sorted(tensors)))
        return {"latents": torch.zeros_like(tensors["latents"])} if i == 2 else {}

    out = pipe(batch_size=1, num_inference_steps=3, output_type="np", callback_on_step_end=zero_at_last_step,
               callback_on_step_end_tensor_inputs=["latents", "pred_original_sample"])
    assert [s[0] for s in seen] == [0, 1, 2] and seen[0][2] == ["latents", "pred_original_sample"]
    np.testing.assert_allclose(out.images, 0.5)
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        pipe(num_inference_steps=2, callback_on_step_end=zero_at_last_step, callback_on_step_end_tensor_inputs=["x"])


@pytest.mark.parametrize("bad", [0, -1, 2.5, 2.0, True, "2"], ids=["0", "-1", "2.5", "2.0", "True", "str"])
def test_batch_size_must_be_a_positive_integer(bad):
    pipe = make_pipeline()
    with pytest.raises(ValueError, match=f"^batch_size must be a positive integer, got {re.escape(repr(bad))}: "):
        pipe(batch_size=bad, num_inference_steps=2)


def test_batch_size_accepts_numpy_integers():
    assert sample(make_pipeline(), batch_size=np.int64(3)).shape == (3, 8, 8, 1)


@pytest.mark.parametrize("bad", [0, -1, 1.5], ids=["0", "-1", "1.5"])
def test_num_images_per_prompt_must_be_a_positive_integer(tmp_path, bad):
    pipe = tiny_text_to_image_pipeline(tmp_path)
    with pytest.raises(ValueError, match=f"^num_images_per_prompt must be a positive integer, got {bad!r}: "):
        pipe("a cat", num_images_per_prompt=bad, num_inference_steps=2)


def test_saved_layout(saved):
    index = json.loads((saved / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_ddpm_hf", "DDPMImagePipeline"]
    assert index["scheduler"] == ["scheduling_ddpm_posterior", "DDPMPosteriorScheduler"]
    assert index["unet"] == ["diffusers", "UNet2DModel"]
    assert (saved / "pipeline_ddpm_hf.py").is_file()
    assert (saved / "scheduler" / "scheduling_ddpm_posterior.py").is_file()
    weights = list((saved / "unet").iterdir())
    assert any(p.name.endswith(".safetensors") for p in weights)
    assert not any(p.suffix in (".bin", ".pt", ".pth", ".ckpt") for p in weights)
    assert not [p for p in saved.parent.iterdir() if ".saving-" in p.name], "staging folder left behind"
    assert not [p.name for p in saved.iterdir() if p.name.startswith(".")], "publication journal left behind"


def test_load_with_installed_class_in_fresh_process(saved):
    out = run_python(f"""
        import json, numpy as np, torch
        from safetensors.torch import load_file
        from ddpm_hf import DDPMImagePipeline, DDPMPosteriorScheduler
        pipe = DDPMImagePipeline.from_pretrained({str(saved)!r})
        pipe.set_progress_bar_config(disable=True)
        assert type(pipe) is DDPMImagePipeline and type(pipe.scheduler) is DDPMPosteriorScheduler
        assert pipe.scheduler.config.variance_type == "fixed_large" and pipe.scheduler.config.clip_sample is False
        saved_weights = load_file({str(saved / 'unet' / 'diffusion_pytorch_model.safetensors')!r})
        assert all(torch.equal(saved_weights[k], v) for k, v in pipe.unet.state_dict().items())
        images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps={STEPS},
                      output_type="np").images
        print(np.abs(images - np.load({str(saved.parent / 'reference.npy')!r})).max())
    """)
    assert float(out.strip().splitlines()[-1]) == 0.0


def test_load_with_remote_code_where_ddpm_hf_is_not_importable(saved):
    out = run_python(f"""
        import sys
        sys.modules["ddpm_hf"] = None  # the package cannot be imported at all
        import numpy as np, torch
        from diffusers import DiffusionPipeline
        pipe = DiffusionPipeline.from_pretrained({str(saved)!r}, trust_remote_code=True)
        pipe.set_progress_bar_config(disable=True)
        assert type(pipe).__name__ == "DDPMImagePipeline", type(pipe)
        assert type(pipe.scheduler).__name__ == "DDPMPosteriorScheduler", type(pipe.scheduler)
        assert not any(name.startswith("ddpm_hf.") for name in sys.modules)
        images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps={STEPS},
                      output_type="np").images
        print(np.abs(images - np.load({str(saved.parent / 'reference.npy')!r})).max())
    """)
    assert float(out.strip().splitlines()[-1]) == 0.0


def test_stock_diffusers_classes_load_the_parts(saved):
    out = run_python(f"""
        from diffusers import DDPMScheduler, UNet2DModel
        unet = UNet2DModel.from_pretrained({str(saved)!r}, subfolder="unet")
        scheduler = DDPMScheduler.from_pretrained({str(saved)!r}, subfolder="scheduler")
        print(type(unet).__name__, scheduler.config.variance_type, scheduler.config.num_train_timesteps)
    """)
    assert out.split() == ["UNet2DModel", "fixed_large", "1000"]


def test_save_keeps_foreign_entries(tmp_path):
    pipe = make_pipeline()
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "samples.png").write_bytes(b"png")
    (tmp_path / "p" / "checkpoints").mkdir()
    pipe.save_pretrained(tmp_path / "p")
    pipe.save_pretrained(tmp_path / "p")  # overwrite an existing pipeline
    names = sorted(os.listdir(tmp_path / "p"))
    assert names == ["checkpoints", "model_index.json", "pipeline_ddpm_hf.py", "samples.png", "scheduler", "unet"]


def test_pickle_weights_are_written_when_asked_and_loaded_only_when_asked(tmp_path):
    """safe_serialization=False writes .bin as diffusers does, with a warning; loading it still needs the opt-in."""
    pipe = make_pipeline()
    with pytest.warns(UserWarning, match="use_safetensors=False"):
        pipe.save_pretrained(tmp_path / "p", safe_serialization=False)
    assert sorted(os.listdir(tmp_path / "p" / "unet")) == ["config.json", "diffusion_pytorch_model.bin"]
    with pytest.raises(OSError, match="has pickle weights but no .safetensors weights"):
        DDPMImagePipeline.from_pretrained(tmp_path / "p")
    loaded = DDPMImagePipeline.from_pretrained(tmp_path / "p", use_safetensors=False)
    assert all(torch.equal(v, loaded.unet.state_dict()[k]) for k, v in pipe.unet.state_dict().items())


def test_failed_save_leaves_previous_pipeline(tmp_path, monkeypatch):
    import ddpm_hf.pipeline_utils as module

    folder = tmp_path / "p"
    make_pipeline().save_pretrained(folder)
    before = load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(module, "ship_code", broken)
    other = DDPMImagePipeline(unet=tiny_unet(seed=1), scheduler=DDPMPosteriorScheduler())
    with pytest.raises(OSError, match="disk full"):
        other.save_pretrained(folder)
    after = load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sorted(os.listdir(tmp_path)) == ["p"], "staging folder left behind"


def pickle_only_copy(saved, folder):
    """A copy of the saved pipeline whose UNet weights are a pickle (`diffusion_pytorch_model.bin`) only."""
    shutil.copytree(saved, folder)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    DDPMImagePipeline.from_pretrained(saved).unet.save_pretrained(folder / "unet", safe_serialization=False)
    assert sorted(p.name for p in (folder / "unet").iterdir()) == ["config.json", "diffusion_pytorch_model.bin"]
    return folder


def test_pickle_weights_load_only_when_asked(saved, tmp_path):
    """from_pretrained never unpickles by default; use_safetensors=False loads a trusted .bin, and saving converts."""
    folder = pickle_only_copy(saved, tmp_path / "pickled")
    with pytest.raises(OSError) as info:
        DDPMImagePipeline.from_pretrained(folder)
    message = str(info.value)
    assert "\n" not in message
    for words in ("'unet' component", "no .safetensors weights", "use_safetensors=False", ".save_pretrained("):
        assert words in message, message

    pipe = DDPMImagePipeline.from_pretrained(folder, use_safetensors=False)
    reference = load_file(saved / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(reference[k], v) for k, v in pipe.unet.state_dict().items())
    pipe.save_pretrained(folder)  # the conversion the message suggests
    assert sorted(p.name for p in (folder / "unet").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    converted = DDPMImagePipeline.from_pretrained(folder)
    assert all(torch.equal(reference[k], v) for k, v in converted.unet.state_dict().items())
