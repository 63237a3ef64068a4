# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""DDPMTextToImagePipeline: guidance, clear errors, the offline CLIP tokenizer, and loading in fresh processes."""

import json
import tempfile

import numpy as np
import pytest
import torch
from support.models import tiny_text_to_image_pipeline
from support.processes import run_python
from transformers import CLIPTokenizer

from ddpm_hf import DDPMTextToImagePipeline
from ddpm_hf.text.encoders import CLIP_VOCAB_SIZE, build_clip_text_encoder, build_clip_tokenizer

STEPS = 5
CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]  # CLIP's ids: <|startoftext|> a photo of a cat <|endoftext|>


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("clip-tokenizer")


@pytest.fixture(scope="module")
def pipe(tokenizer_dir):
    return tiny_text_to_image_pipeline(tokenizer_dir)


def generate(pipe, prompt, seed=0, **kwargs):
    return pipe(prompt, generator=torch.Generator().manual_seed(seed), num_inference_steps=STEPS, output_type="np",
                **kwargs).images


def test_real_clip_vocabulary(tokenizer_dir):
    tokenizer = build_clip_tokenizer(str(tokenizer_dir))
    assert len(tokenizer) == CLIP_VOCAB_SIZE == 49408
    assert tokenizer("a photo of a cat").input_ids == CAT_IDS


def test_clip_tokenizer_without_a_folder_leaves_nothing_behind_and_still_saves(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    tokenizer = build_clip_tokenizer()
    assert list((tmp_path / "tmp").iterdir()) == []  # its temporary files are gone: it holds the vocabulary itself
    tokenizer.save_pretrained(tmp_path / "saved")
    assert CLIPTokenizer.from_pretrained(tmp_path / "saved")("a photo of a cat").input_ids == CAT_IDS


def count_unet_batches(pipe):
    batches = []
    handle = pipe.unet.register_forward_pre_hook(lambda module, args, kwargs: batches.append(args[0].shape[0]),
                                                 with_kwargs=True)
    return batches, handle


def test_guidance_is_one_batched_call_and_scale_one_skips_it(pipe):
    batches, handle = count_unet_batches(pipe)
    try:
        generate(pipe, ["a digit one", "a digit two"], guidance_scale=4.0, num_images_per_prompt=3)
        assert batches == [12] * STEPS  # 2 prompts x 3 images, conditional and unconditional halves together
        batches.clear()
        generate(pipe, ["a digit one", "a digit two"], guidance_scale=1.0)
        assert batches == [2] * STEPS
    finally:
        handle.remove()


def test_prompt_steers_and_embeddings_match_prompts(pipe):
    a = generate(pipe, "a handwritten digit seven", guidance_scale=5.0)
    b = generate(pipe, "a handwritten digit one", guidance_scale=5.0)
    assert np.abs(a - b).max() > 1e-4  # the text enters every step
    embeds, negative = pipe.encode_prompt(["a handwritten digit seven"], "cpu", 1, True)  # diffusers' convention
    assert torch.equal(negative, pipe.encode_prompt([""], "cpu", 1, False)[0])  # the empty prompt by default
    c = generate(pipe, None, guidance_scale=5.0, prompt_embeds=embeds, negative_prompt_embeds=negative)
    np.testing.assert_allclose(a, c, atol=1e-6)


def test_learned_variance_guides_only_the_prediction(tokenizer_dir):
    from ddpm_hf import DDPMPosteriorScheduler

    pipe = tiny_text_to_image_pipeline(tokenizer_dir, out_channels=2)
    pipe.scheduler = DDPMPosteriorScheduler(variance_type="learned_range")
    assert generate(pipe, "a digit", guidance_scale=3.0).shape == (1, 8, 8, 1)


def test_clear_errors(pipe, tokenizer_dir):
    with pytest.raises(ValueError, match="one negative prompt per prompt"):
        generate(pipe, ["a", "b"], negative_prompt=["c"], guidance_scale=2.0)
    with pytest.raises(ValueError, match="exactly one of prompt"):
        generate(pipe, None)
    with pytest.raises(ValueError, match="cross-attends to 32-dim states but the text encoder emits 48"):
        DDPMTextToImagePipeline(unet=pipe.unet, scheduler=pipe.scheduler,
                                text_encoder=build_clip_text_encoder("tiny", hidden_size=48), tokenizer=pipe.tokenizer)
    small_vocab = build_clip_text_encoder("tiny", vocab_size=1000)
    with pytest.raises(ValueError, match="49408 tokens but the text encoder embeds only 1000"):
        DDPMTextToImagePipeline(unet=pipe.unet, scheduler=pipe.scheduler, text_encoder=small_vocab,
                                tokenizer=pipe.tokenizer)


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("t2i") / "pipeline"
    pipe.save_pretrained(folder)
    np.save(folder.parent / "reference.npy", generate(pipe, "a handwritten digit three", guidance_scale=2.0))
    return folder


SAMPLE = """
        pipe.set_progress_bar_config(disable=True)
        images = pipe("a handwritten digit three", generator=torch.Generator().manual_seed(0),
                      num_inference_steps={steps}, guidance_scale=2.0, output_type="np").images
        print(np.abs(images - np.load({reference!r})).max())
"""


def test_saved_layout_names_stock_text_classes(saved):
    index = json.loads((saved / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_ddpm_hf", "DDPMTextToImagePipeline"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["tokenizer"][0] == "transformers" and index["tokenizer"][1].startswith("CLIPTokenizer")
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]


def test_loads_three_ways_in_fresh_processes(saved):
    sample = SAMPLE.format(steps=STEPS, reference=str(saved.parent / "reference.npy"))
    installed = run_python(f"""
        import numpy as np, torch
        from ddpm_hf import DDPMTextToImagePipeline
        pipe = DDPMTextToImagePipeline.from_pretrained({str(saved)!r})
        assert type(pipe) is DDPMTextToImagePipeline
    """ + sample)
    remote = run_python(f"""
        import sys
        sys.modules["ddpm_hf"] = None
        import numpy as np, torch
        from diffusers import DiffusionPipeline
        pipe = DiffusionPipeline.from_pretrained({str(saved)!r}, trust_remote_code=True)
        assert type(pipe).__name__ == "DDPMTextToImagePipeline"
        assert type(pipe.scheduler).__name__ == "DDPMPosteriorScheduler"
    """ + sample)
    assert float(installed.split()[-1]) == 0.0 and float(remote.split()[-1]) == 0.0
    stock = run_python(f"""
        from diffusers import DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer
        folder = {str(saved)!r}
        parts = [UNet2DConditionModel.from_pretrained(folder, subfolder="unet"),
                 DDPMScheduler.from_pretrained(folder, subfolder="scheduler"),
                 CLIPTextModel.from_pretrained(folder, subfolder="text_encoder"),
                 CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")]
        print(len(parts[3]), parts[2].config.hidden_size)
    """)
    assert stock.split()[-2:] == ["49408", "32"]
