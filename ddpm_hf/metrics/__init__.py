# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Sample quality: Fréchet and kernel distances between a pipeline's samples and a reference set of real images.

- `evaluation`: `evaluate_sample_quality(pipeline, ReferenceSet(...), num_images=..., num_inference_steps=...)`, the
  one call (on one process or on every process of `accelerate launch`), and what it returns (`QualityResult`);
- `distances`: the Fréchet distance (Heusel et al. 2017) and the kernel distance (Binkowski et al. 2018) of two
  feature sets, computed by torchmetrics' `FrechetInceptionDistance` and `KernelInceptionDistance`;
- `features`: what a feature network is, and the batched feature pass;
- `inception`: the standard FID network (torch-fidelity's Inception-v3 port, 2048-d pool features) and its weights;
- `digit_features`: a small CNN fitted once on the embedded digits, for offline digit sets ("digit-feature FD");
- `reference`: a reference set (source, split, resolution) and its features, cached on disk under a fingerprint;
- `sampling`: drawing a process's share of the samples, one seeded generator per image.
"""

from .distances import FeatureDistances, feature_distances
from .evaluation import QualityResult, evaluate_sample_quality, resolve_feature_network
from .features import FeatureNetwork, extract_features
from .reference import ReferenceSet, reference_features

__all__ = [
    "FeatureDistances",
    "FeatureNetwork",
    "QualityResult",
    "ReferenceSet",
    "evaluate_sample_quality",
    "extract_features",
    "feature_distances",
    "reference_features",
    "resolve_feature_network",
]
