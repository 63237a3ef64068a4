# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The trainer, one concept per module: `run` tells the story of a run (flags -> data -> model -> loop -> save) and
imports the others, never the other way round; the command around it (flags in, exit code out) is ddpm_hf/train.py.

    run          the run, top to bottom: train(), the loop, what a divergence sets aside
    config       the flags: parser, presets, checks, what is saved of them
    preflight    what the machine must provide before anything is written: optional packages, the Hub
    run_lock     one run per output folder; a failed start leaves no folder behind
    setup        the Accelerator, the UNet, scheduler, EMA, optimizer, and the pipeline around the UNet
    data         the images of the run and the feed of micro-batches the loop reads
    text         text to image: the CLIP parts, the captions, each micro-batch's conditioning
    classes      class-conditional runs: the labels and their names
    state        `Training` (what the loop updates), and its checkpoints: resume (to the run's own length) and save
    step         one optimizer step: the micro-batches' losses, backward, clip, step
    checkpointing  what a checkpoint holds, written so that a crash at any moment leaves a usable one
    interrupts   SIGTERM and Ctrl-C: finish the step, checkpoint, stop
    monitoring   the loss read back without stalling the device, throughput, and the test hooks
    validation   sample grids, the final variational bound and Fréchet distance
    outputs      the output folder (pipeline, pictures, model card) and the pipeline pushed at checkpoints
    publishing   the Hub repo, its uploads, and the model card's account of the run
"""
