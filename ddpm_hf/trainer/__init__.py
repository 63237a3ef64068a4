# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The pieces of training/train.py, one concept per module; the script itself tells the story (flags -> data ->
model -> loop -> save) and imports these, never the other way round.

    config       the flags: parser, presets, checks, what is saved of them
    setup        the Accelerator, the images, the UNet, scheduler, EMA, optimizer, and the pipeline around the UNet
    text         text to image: the CLIP parts, the captions, each micro-batch's conditioning
    state        `Training` (what the loop updates), and its checkpoints: resume and save
    monitoring   loss and throughput reports, and the test hooks
    validation   sample grids and the final variational bound
    outputs      the output folder (pipeline, pictures, model card) and the pipeline pushed at checkpoints
    publishing   the Hub repo, its uploads, and the model card's account of the run
"""
