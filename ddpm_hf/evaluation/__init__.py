# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Judging a trained model: how close its samples are to real images, and whether its condition steers them.

Sample quality, the Fréchet and kernel distances of a pipeline's samples to a reference set of real images:
- `sample_quality`: `evaluate_sample_quality(pipeline, ReferenceSet(...), num_images=..., num_inference_steps=...)`,
  the one call (on one process or on every process of `accelerate launch`), and what it returns (`QualityResult`);
- `distances`: the Fréchet distance (Heusel et al. 2017) and the kernel distance (Binkowski et al. 2018) of two
  feature sets, computed by torchmetrics' `FrechetInceptionDistance` and `KernelInceptionDistance`;
- `features`: what a feature network is, and the batched feature pass;
- `inception`: the standard FID network (torch-fidelity's Inception-v3 port, 2048-d pool features) and its weights;
- `digit_features`: a small CNN fitted once on the embedded digits, for offline digit sets ("digit-feature FD");
- `reference`: a reference set (source, split, resolution) and its features, cached on disk under a fingerprint
  (`ddpm_hf.caching`);
- `sampling`: drawing the samples, one seeded generator per image, each process its share.

The condition: `conditioning_accuracy`, a digit classifier fitted on real digits names the digit of samples drawn
for each prompt or class (`fit_digit_classifier`, `prompted_digit_accuracy`, `class_label_accuracy`).
"""

from .conditioning_accuracy import (
    DigitClassifier,
    PromptAccuracy,
    class_label_accuracy,
    fit_digit_classifier,
    prompted_digit_accuracy,
)
from .distances import FeatureDistances, feature_distances
from .features import FeatureNetwork, extract_features
from .reference import ReferenceSet, reference_features
from .sample_quality import QualityResult, evaluate_sample_quality, resolve_feature_network

__all__ = [
    "DigitClassifier",
    "FeatureDistances",
    "FeatureNetwork",
    "PromptAccuracy",
    "QualityResult",
    "ReferenceSet",
    "class_label_accuracy",
    "evaluate_sample_quality",
    "extract_features",
    "feature_distances",
    "fit_digit_classifier",
    "prompted_digit_accuracy",
    "reference_features",
    "resolve_feature_network",
]
