# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Tiny models built offline: a ~30k-parameter UNet2DModel and a text-to-image pipeline around a tiny CLIP encoder.
Each is deterministic for a seed, so that two builds (in this process or a fresh one) hold the same weights."""

import torch

TINY_NUM_CLASSES = 3  # the class-conditional fixture's classes; label TINY_NUM_CLASSES is the null label


def tiny_unet(in_channels: int = 1, out_channels=None, sample_size: int = 8, seed: int = 0, num_class_embeds=None):
    """A ~30k-parameter UNet2DModel, deterministic for a seed; class-conditional with `num_class_embeds`."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels or in_channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        num_class_embeds=num_class_embeds,
    )


def tiny_text_to_image_pipeline(tokenizer_dir, in_channels: int = 1, out_channels=None, seed: int = 0):
    """DDPMTextToImagePipeline with the real CLIP tokenizer, a tiny CLIP text encoder and a tiny conditional UNet."""
    from diffusers import UNet2DConditionModel

    from ddpm_hf import DDPMPosteriorScheduler, DDPMTextToImagePipeline
    from ddpm_hf.text.encoders import build_clip_text_encoder, build_clip_tokenizer

    text_encoder = build_clip_text_encoder("tiny", seed=seed)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=out_channels or in_channels,
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=text_encoder.config.hidden_size, attention_head_dim=4,
    )
    pipe = DDPMTextToImagePipeline(
        unet=unet, scheduler=DDPMPosteriorScheduler(), text_encoder=text_encoder,
        tokenizer=build_clip_tokenizer(str(tokenizer_dir)),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
