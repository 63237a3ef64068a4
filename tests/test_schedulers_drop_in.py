# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Every scheduler in `DDPMScheduler.compatibles` as a drop-in: `pipe.scheduler = X.from_config(pipe.scheduler.config)`
gives, with each of the three pipelines (unconditional, class-conditional, text), guided and not, the images of the
loop that diffusers' scheduler API implies, written here by hand: noise times `init_noise_sigma`, `scale_model_input`
before the UNet, `step` given `generator` / `eta` only where its signature takes them, and guidance as
eps_uncond + s (eps_cond - eps_uncond).

The two halves of a guided prediction come from one UNet call on the doubled batch, as the pipelines make it: two
separate calls differ in float32 rounding (~1e-6, the convolutions' kernels depend on the batch), which the x_0
estimates near t = T amplify by 1 / sqrt(abar_t) (~150) to ~3e-4 in the images. That batching is equivalent to two
calls is tested on its own in test_class_conditional.py and test_text_to_image.py."""

import inspect

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor
from support.models import TINY_NUM_CLASSES

from ddpm_hf import DDPMPosteriorScheduler

STEPS = 6  # Heun and KDPM2 visit 2 x 6 - 1 timesteps; the multistep solvers reach their higher orders
# (row id, scheduler class name, eta): ours, then every class diffusers lists as compatible with DDPMScheduler
ROWS = [("DDPMPosteriorScheduler", "DDPMPosteriorScheduler", None)] + [
    (name, name, None) for name in sorted(c.__name__ for c in DDPMScheduler().compatibles)
] + [("DDIMScheduler-eta1", "DDIMScheduler", 1.0)]


def test_the_rows_are_every_compatible_scheduler():
    assert len(ROWS) == 17  # ours, the 15 compatibles (DDPMScheduler among them), DDIM with eta = 1
    assert {"DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "EulerAncestralDiscreteScheduler",
            "HeunDiscreteScheduler", "EDMEulerScheduler", "DPMSolverSDEScheduler"} <= {name for _, name, _ in ROWS}


def scheduler_of(name: str, config):
    """A fresh scheduler (they keep state between steps) of class `name` from `config`; the SDE one seeded."""
    import diffusers

    cls = DDPMPosteriorScheduler if name == "DDPMPosteriorScheduler" else getattr(diffusers, name)
    extra = {"noise_sampler_seed": 0} if name == "DPMSolverSDEScheduler" else {}
    return cls.from_config(config, **extra)


def textbook_images(model, scheduler, batch_size: int, shape, guidance_scale: float, eta, seed: int = 0):
    """The chain by hand; `model(x, t, guided)` is the UNet's output: for the conditional input, or (guided) for the
    unconditional and the conditional inputs stacked in that order."""
    generator = torch.Generator().manual_seed(seed)
    latents = randn_tensor((batch_size, *shape), generator=generator)
    scheduler.set_timesteps(STEPS)
    latents = latents * scheduler.init_noise_sigma
    takes = inspect.signature(scheduler.step).parameters
    step_kwargs = {"generator": generator} if "generator" in takes else {}
    if "eta" in takes and eta is not None:
        step_kwargs["eta"] = eta
    for t in scheduler.timesteps:
        x = scheduler.scale_model_input(latents, t)
        if guidance_scale > 1:
            unconditional, conditional = model(torch.cat([x, x]), t, True).chunk(2)
            prediction = unconditional + guidance_scale * (conditional - unconditional)
        else:
            prediction = model(x, t, False)
        latents = scheduler.step(prediction, t, latents, **step_kwargs).prev_sample
    return (latents / 2 + 0.5).clamp(0, 1)


BASE_CONFIG = DDPMPosteriorScheduler().config  # every row's scheduler is built from this one, as a user's would be


def pipeline_images(pipe, name, eta, **kwargs):
    pipe.scheduler = scheduler_of(name, BASE_CONFIG)
    extra = {"eta": eta} if eta is not None else {}
    return pipe(generator=torch.Generator().manual_seed(0), num_inference_steps=STEPS, output_type="pt", **extra,
                **kwargs).images


@torch.no_grad()
@pytest.mark.parametrize("row", ROWS, ids=[row[0] for row in ROWS])
def test_unconditional(unconditional_pipeline, row):
    _, name, eta = row
    pipe = unconditional_pipeline
    images = pipeline_images(pipe, name, eta, batch_size=2)
    expected = textbook_images(lambda x, t, _: pipe.unet(x, t).sample, scheduler_of(name, BASE_CONFIG),
                               2, (1, 8, 8), 1.0, eta)
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("guidance_scale", [1.0, 3.0], ids=["unguided", "guided"])
@pytest.mark.parametrize("row", ROWS, ids=[row[0] for row in ROWS])
def test_class_conditional(class_pipeline, row, guidance_scale):
    _, name, eta = row
    labels = torch.tensor([1, 2])
    images = pipeline_images(class_pipeline, name, eta, class_labels=labels, guidance_scale=guidance_scale)
    unet = class_pipeline.unet

    def model(x, t, guided):
        null = torch.full_like(labels, TINY_NUM_CLASSES)
        return unet(x, t, class_labels=torch.cat([null, labels]) if guided else labels).sample

    expected = textbook_images(model, scheduler_of(name, BASE_CONFIG), 2, (1, 8, 8),
                               guidance_scale, eta)
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("guidance_scale", [1.0, 3.0], ids=["unguided", "guided"])
@pytest.mark.parametrize("row", ROWS, ids=[row[0] for row in ROWS])
def test_text_to_image(text_pipeline, row, guidance_scale):
    _, name, eta = row
    prompts = ["a digit one", "the digit 7"]
    images = pipeline_images(text_pipeline, name, eta, prompt=prompts, guidance_scale=guidance_scale)
    pipe = text_pipeline

    def encode(texts):
        tokens = pipe.tokenizer(texts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        return pipe.text_encoder(tokens.input_ids)[0]

    conditional, unconditional = encode(prompts), encode(["", ""])

    def model(x, t, guided):
        states = torch.cat([unconditional, conditional]) if guided else conditional
        return pipe.unet(x, t, encoder_hidden_states=states).sample

    expected = textbook_images(model, scheduler_of(name, BASE_CONFIG), 2, (1, 8, 8), guidance_scale, eta)
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)


@torch.no_grad()
def test_eta_reaches_ddim_and_changes_its_images(unconditional_pipeline):
    deterministic = pipeline_images(unconditional_pipeline, "DDIMScheduler", 0.0, batch_size=2)
    stochastic = pipeline_images(unconditional_pipeline, "DDIMScheduler", 1.0, batch_size=2)
    assert (deterministic - stochastic).abs().max() > 1e-3


@torch.no_grad()
def test_the_posterior_scheduler_is_unchanged_by_the_generic_loop(unconditional_pipeline):
    """Ours as before: the same images as diffusers' DDPMPipeline with DDPMScheduler (float64 tables vs float32)."""
    from diffusers import DDPMPipeline

    pipe = unconditional_pipeline
    ours = pipeline_images(pipe, "DDPMPosteriorScheduler", None, batch_size=2)
    theirs = DDPMPipeline(unet=pipe.unet, scheduler=DDPMScheduler.from_config(BASE_CONFIG))
    theirs.set_progress_bar_config(disable=True)
    reference = theirs(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=STEPS,
                       output_type="np").images
    torch.testing.assert_close(ours.permute(0, 2, 3, 1), torch.from_numpy(reference), rtol=0, atol=2e-3)


def test_ddim_is_a_real_row():
    assert DDIMScheduler.from_config(DDPMPosteriorScheduler().config).order == 1
