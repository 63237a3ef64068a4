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
    session      `TrainingSession`: what this process trains with, and the `TrainerState` the loop advances
    step         one optimizer step: the micro-batches' losses, backward, clip, optimizer, EMA, timestep sampler
    checkpoints  a checkpoint: what it holds (`TrainerState`), written crash-safe; found, pruned, set aside
    resume       resuming: which checkpoint, checked against the flags; what a resume may change (length, flags, rate)
    interrupts   SIGTERM and Ctrl-C: finish the step, checkpoint, stop
    monitoring   the loss read back without stalling the device, and the throughput
    debug_hooks  the hooks tests and debugging use, set by environment variables (DDPM_HF_TEST_*, DDPM_HF_DEBUG_RANKS)
    validation   sample grids, the final variational bound and Fréchet distance
    outputs      the output folder (pipeline, pictures, model card) and the pipeline pushed at checkpoints
    publishing   the Hub repo, its uploads, and the model card's account of the run
"""
