# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Class-conditional training (--class_column) with classifier-free guidance, as real trainer subprocesses."""

import json

import numpy as np
import torch
from support.training import TINY, assert_bitwise_equal, launch, unet_weights

# The tiny preset on the 8x8 digits, the digit as the class.
CLASS_RUN = [*TINY, "--embedded_dataset", "digits", "--class_column", "label", "--report_to", "none"]


def test_the_class_steers_the_image_after_a_small_budget(tmp_path):
    """Samples of class k are classified as k well above chance by the fitted judge, better with guidance; the
    pipeline carries the class names and the null class."""
    from ddpm_hf import DDPMImagePipeline
    from ddpm_hf.evaluation import class_label_accuracy, fit_digit_classifier

    run = [*CLASS_RUN, "--max_train_samples", "1797", "--train_batch_size", "64", "--learning_rate", "6e-3",
           "--max_train_steps", "400", "--ddpm_beta_schedule", "squaredcos_cap_v2", "--validation_steps", "0",
           "--checkpointing_steps", "0", "--num_validation_images", "10", "--validation_inference_steps", "10",
           "--logging_steps", "100"]
    output_dir = tmp_path / "out"
    launch(*run, "--output_dir", output_dir, timeout=400)
    index = json.loads((output_dir / "model_index.json").read_text())
    # On disk a mapping: diffusers reads every list of model_index.json as a (library, class) component.
    assert index["class_names"] == {str(digit): str(digit) for digit in range(10)}
    pipe = DDPMImagePipeline.from_pretrained(output_dir)
    assert pipe.unet.config.num_class_embeds == 11  # ten digits and the null class
    pipe.set_progress_bar_config(disable=True)
    judge = fit_digit_classifier("digits", resolution=8)
    guided = class_label_accuracy(pipe, judge, images_per_class=10, num_inference_steps=25, guidance_scale=3.0)
    plain = class_label_accuracy(pipe, judge, images_per_class=10, num_inference_steps=25, guidance_scale=1.0)
    # 100 samples at chance score 0.1 +- 0.03.
    assert guided.accuracy > 0.4, (guided.accuracy, guided.per_digit)
    assert plain.accuracy > 0.2, (plain.accuracy, plain.per_digit)
    assert (output_dir / "samples.png").is_file() and (output_dir / "samples-guidance-1.png").is_file()


def test_a_class_run_resumes_bitwise_exact_with_its_label_dropout(tmp_path):
    flags = [*CLASS_RUN, "--max_train_steps", "6", "--checkpointing_steps", "3", "--use_ema",
             "--conditioning_dropout_prob", "0.5", "--validation_steps", "0"]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    launch(*flags, "--output_dir", reference)
    launch(*flags, "--output_dir", resumed, "--max_train_steps", "3")
    launch(*flags, "--output_dir", resumed, "--resume_from_checkpoint", "latest")
    assert_bitwise_equal(unet_weights(resumed / "unet"), unet_weights(reference / "unet"))


def test_class_folders_give_the_classes(tmp_path):
    from PIL import Image

    from ddpm_hf import DDPMImagePipeline

    rng = np.random.default_rng(0)
    for name in ("circles", "squares", "stripes"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / "images" / name / f"{i}.png")
    output_dir = tmp_path / "out"
    launch(*TINY, "--train_data_dir", tmp_path / "images", "--class_column", "label", "--max_train_steps", "2",
           "--checkpointing_steps", "0", "--validation_steps", "0", "--report_to", "none", "--output_dir", output_dir)
    pipe = DDPMImagePipeline.from_pretrained(output_dir)
    assert pipe.config.class_names == ["circles", "squares", "stripes"]
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, class_labels="squares", num_inference_steps=2, output_type="pt",
                  generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (2, 1, 8, 8)
