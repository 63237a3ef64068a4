# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""diffusers' pipeline conventions on the three pipelines: `callback_on_step_end` with `_callback_tensor_inputs`,
`output_type="latent"`, the `num_timesteps` / `guidance_scale` / `do_classifier_free_guidance` / `interrupt`
properties, `latents`, class labels that set the batch, and the text pipeline's `encode_prompt` convention."""

import pytest
import torch
from diffusers import PNDMScheduler
from diffusers.callbacks import SDCFGCutoffCallback
from diffusers.utils.torch_utils import randn_tensor

from ddpm_hf import DDPMPosteriorScheduler
from ddpm_hf.visualization import trajectory_strip

STEPS = 4


def unet_batches(pipe):
    """The batch of every UNet call, until the returned hook is removed."""
    batches = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    return batches, hook


def call(pipe, **kwargs):
    arguments = dict(num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0), output_type="pt")
    return pipe(**{**arguments, **kwargs})


PIPELINES = {  # fixture name -> the inputs that make it sample two images with guidance
    "unconditional_pipeline": dict(batch_size=2),
    "class_pipeline": dict(class_labels=[0, 2], guidance_scale=3.0),
    "text_pipeline": dict(prompt=["a digit one", "the digit 7"], guidance_scale=3.0),
}


@pytest.mark.parametrize("name", PIPELINES)
def test_latent_output_is_the_final_sample_unclipped(request, name):
    pipe, inputs = request.getfixturevalue(name), PIPELINES[name]
    latents = call(pipe, output_type="latent", **inputs).images
    images = call(pipe, **inputs).images
    assert latents.shape == images.shape and latents.dtype == torch.float32
    torch.testing.assert_close((latents / 2 + 0.5).clamp(0, 1), images, rtol=0, atol=0)


@pytest.mark.parametrize("name", PIPELINES)
def test_callback_sees_every_tensor_input_and_can_replace_the_latents(request, name):
    pipe, inputs = request.getfixturevalue(name), PIPELINES[name]
    seen = []

    def zero_at_last_step(pipe, i, t, callback_kwargs):
        seen.append((i, sorted(callback_kwargs)))
        if i == pipe.num_timesteps - 1:
            callback_kwargs["latents"] = torch.zeros_like(callback_kwargs["latents"])
        return callback_kwargs

    out = call(pipe, output_type="latent", callback_on_step_end=zero_at_last_step,
               callback_on_step_end_tensor_inputs=pipe._callback_tensor_inputs, **inputs).images
    assert pipe.num_timesteps == STEPS and [i for i, _ in seen] == list(range(STEPS))
    assert seen[0][1] == sorted(pipe._callback_tensor_inputs)
    assert out.abs().sum() == 0
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs may name"):
        call(pipe, callback_on_step_end=zero_at_last_step, callback_on_step_end_tensor_inputs=["noise"], **inputs)


@pytest.mark.parametrize("name", ["class_pipeline", "text_pipeline"])
def test_a_callback_reads_and_changes_the_guidance_scale_mid_run(request, name):
    """diffusers' `callback_cfg` pattern: the scale a step uses is `pipe._guidance_scale` at that step."""
    pipe, inputs = request.getfixturevalue(name), {**PIPELINES[name], "guidance_scale": 2.0}
    scales = []

    def increase_guidance(pipe, i, t, callback_kwargs):
        scales.append((pipe.guidance_scale, pipe.do_classifier_free_guidance))
        pipe._guidance_scale += 1.0
        return callback_kwargs

    changed = call(pipe, callback_on_step_end=increase_guidance, **inputs).images
    assert scales == [(2.0 + i, True) for i in range(STEPS)]
    assert pipe.guidance_scale == 2.0 + pipe.num_timesteps
    assert (changed - call(pipe, **inputs).images).abs().max() > 1e-4  # the later steps were guided harder


def test_diffusers_cfg_cutoff_callback_ends_guidance_on_the_text_pipeline(text_pipeline):
    """SDCFGCutoffCallback keeps the conditional half of `prompt_embeds` and sets the scale to 0: from then on one
    UNet call of the plain batch per step, as in StableDiffusionPipeline."""
    batches, hook = unet_batches(text_pipeline)
    try:
        call(text_pipeline, prompt="a digit one", guidance_scale=3.0,
             callback_on_step_end=SDCFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=1),
             callback_on_step_end_tensor_inputs=["prompt_embeds"])
    finally:
        hook.remove()
    assert batches == [2, 2, 1, 1] and not text_pipeline.do_classifier_free_guidance


@pytest.mark.parametrize("name", PIPELINES)
def test_interrupt_skips_the_remaining_steps(request, name):
    pipe, inputs = request.getfixturevalue(name), PIPELINES[name]

    def stop_after_two(pipe, i, t, callback_kwargs):
        if i == 1:
            pipe._interrupt = True
        return callback_kwargs

    batches, hook = unet_batches(pipe)
    try:
        call(pipe, callback_on_step_end=stop_after_two, **inputs)
    finally:
        hook.remove()
    assert len(batches) == 2 and pipe.interrupt


def test_given_latents_replace_the_draw(unconditional_pipeline):
    noise = randn_tensor((2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    drawn = call(unconditional_pipeline, batch_size=2).images
    given = unconditional_pipeline(batch_size=2, latents=noise, num_inference_steps=STEPS, output_type="pt",
                          generator=torch.Generator().manual_seed(0)).images
    assert not torch.equal(drawn, given)  # the generator's first draw was x_T; with latents given it noises steps
    replayed = call(unconditional_pipeline, batch_size=2, latents=noise.clone(),
                    generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(replayed.images, given, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"latents must have shape \(2, 1, 8, 8\)"):
        call(unconditional_pipeline, batch_size=2, latents=noise[:1])


def test_a_list_of_class_labels_sets_the_batch_as_in_dit(class_pipeline):
    generators = [torch.Generator().manual_seed(s) for s in range(3)]
    images = class_pipeline(class_labels=[2, 0, 1], generator=generators, num_inference_steps=STEPS,
                               output_type="pt").images
    assert images.shape[0] == 3
    assert call(class_pipeline, class_labels=torch.tensor([1, 1, 0, 2])).images.shape[0] == 4
    assert call(class_pipeline, class_labels=1, batch_size=5).images.shape[0] == 5  # one label, repeated


def test_encode_prompt_follows_diffusers(text_pipeline):
    embeds, negative = text_pipeline.encode_prompt(["a", "b"], "cpu", 3, True, negative_prompt="c")
    assert embeds.shape == negative.shape == (6, 77, 32)
    alone, none = text_pipeline.encode_prompt(["a", "b"], "cpu", 3, False)
    assert none is None and torch.equal(alone, embeds)
    torch.testing.assert_close(negative[0], text_pipeline.encode_prompt("c", "cpu", 1, False)[0][0])
    assert torch.equal(embeds[0], embeds[2]) and not torch.equal(embeds[0], embeds[3])  # per prompt, then repeated
    again, _ = text_pipeline.encode_prompt(None, "cpu", 2, False, prompt_embeds=alone[:1])
    assert again.shape == (2, 77, 32)


def test_cross_attention_kwargs_reach_the_attention_processors(text_pipeline):
    from diffusers.models.attention_processor import AttnProcessor

    seen = []

    class Recording(AttnProcessor):
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                     marker=None):
            seen.append(marker)
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)

    original = text_pipeline.unet.attn_processors
    text_pipeline.unet.set_attn_processor(Recording())
    try:
        call(text_pipeline, prompt="a digit one", cross_attention_kwargs={"marker": "here"})
    finally:
        text_pipeline.unet.set_attn_processor(original)
    assert seen and set(seen) == {"here"}


def test_a_scheduler_without_x0_estimates_gives_a_trajectory_of_samples(unconditional_pipeline):
    pipe = unconditional_pipeline
    pipe.scheduler = PNDMScheduler.from_config(pipe.scheduler.config, skip_prk_steps=True)
    try:
        trajectory = call(unconditional_pipeline, batch_size=2, trajectory_every=1).trajectory
    finally:
        unconditional_pipeline.scheduler = DDPMPosteriorScheduler.from_config(unconditional_pipeline.scheduler.config)
    assert trajectory.pred_original_samples is None and trajectory.samples.shape[:2] == (STEPS + 2, 2)
    strip = trajectory_strip(trajectory)  # one row per image: the samples alone
    assert strip.size[1] == 2 * strip.size[0] // (STEPS + 2)
