# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The pieces of training/train.py, one concept per module; the script itself tells the story (flags -> data ->
model -> loop -> save) and imports these, never the other way round.

    config       the flags: parser, presets, checks, what is saved of them
    setup        the Accelerator, the images, the UNet, scheduler, EMA, optimizer, and the pipeline around the UNet
    text         text to image: the CLIP parts, the captions, each micro-batch's conditioning
    state        `Training` (what the loop updates), and its checkpoints: resume and save
    step         one optimizer step: the micro-batches' losses, backward, clip, step
    checkpointing  what a checkpoint holds, written so that a crash at any moment leaves a usable one
    monitoring   the loss read back without stalling the device, throughput, and the test hooks
    validation   sample grids and the final variational bound
    outputs      the output folder (pipeline, pictures, model card) and the pipeline pushed at checkpoints
    publishing   the Hub repo, its uploads, and the model card's account of the run
"""
