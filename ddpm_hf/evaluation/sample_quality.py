# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""`evaluate_sample_quality`: a pipeline's samples against a reference set, as FID/KID (Inception-v3 features) or
digit-feature FD/KD (the embedded digits' own feature network), with everything needed to reproduce the number.

One process, or every process of `accelerate launch` (torch.distributed initialised, e.g. by the trainer's
`Accelerator`): each process samples its contiguous share of the images and extracts their features, torchmetrics
sums and gathers the metric states across processes, and every process returns the same result.
"""

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .distances import KID_SUBSET_SIZE, KID_SUBSETS, feature_distances
from .features import FeatureNetwork, extract_features
from .reference import ReferenceSet, reference_features
from .sampling import image_seeds, main_process_first, rank_and_world, sample_pixels, share

FEATURES = ("auto", "digits", "inception")


@dataclass
class QualityResult:
    fd_name: str  # "FID" or "digit-feature FD" (or a custom network's names)
    kd_name: str
    fd: float
    kd: float
    kd_std: float  # over the KD subsets
    num_images: int  # samples, over all processes
    num_inference_steps: int
    seed: int
    batch_size: int
    reference: dict  # the ReferenceSet's fields
    num_reference_images: int
    feature_network: str
    feature_fingerprint: str
    kd_subsets: int
    kd_subset_size: int
    num_processes: int
    reference_from_cache: bool
    sampling_seconds: float
    image_seeds: list[int] = field(repr=False)  # image i was drawn with torch.Generator().manual_seed(image_seeds[i])
    scheduler: str = "DDPMPosteriorScheduler"  # the sampler's class (see ddpm_hf.samplers)
    eta: float = 0.0

    def summary(self) -> str:
        return (f"{self.fd_name}: {self.fd:.4f}   {self.kd_name}: {self.kd:.5f} ± {self.kd_std:.5f}   "
                f"({self.num_images} samples, {self.num_inference_steps} steps of {self.scheduler}, seed {self.seed};"
                f" reference "
                f"{ReferenceSet(**self.reference).describe()}, {self.num_reference_images} images)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def model_card_metrics(self) -> dict[str, dict[str, Any]]:
        """Rows for `ddpm_hf.hub.model_card`'s `metrics=`: {name: {"value": v, "description": how}}."""
        how = (f"{self.num_images} samples ({self.num_inference_steps}-step chain, seed {self.seed}) against "
               f"{ReferenceSet(**self.reference).describe()}, {self.num_reference_images} images; features: "
               f"{self.feature_network}")
        return {
            self.fd_name: {"value": round(self.fd, 4), "description": how},
            self.kd_name: {"value": round(self.kd, 6),
                           "description": f"± {self.kd_std:.6f} over {self.kd_subsets} subsets of "
                                          f"{self.kd_subset_size}; {how}"},
        }


def resolve_feature_network(feature: str | FeatureNetwork, reference: ReferenceSet, *, fid_weights=None,
                            cache_dir=None, device: torch.device | str = "cpu") -> FeatureNetwork:
    """"auto" (digit features for the embedded digit sets, Inception-v3 for anything else), "digits", "inception",
    or a FeatureNetwork of your own."""
    if isinstance(feature, torch.nn.Module):
        return feature.to(device).eval()
    if feature not in FEATURES:
        raise ValueError(f"unknown feature network {feature!r}: choose one of {', '.join(FEATURES)}")
    if feature == "digits" or (feature == "auto" and reference.is_embedded_digits):
        from .digit_features import digit_feature_network

        return digit_feature_network(cache_dir, device)
    from .inception import inception_feature_network

    return inception_feature_network(fid_weights, device)


def evaluate_sample_quality(
    pipeline,
    reference: ReferenceSet | str,
    *,
    num_images: int,
    num_inference_steps: int,
    batch_size: int = 64,
    seed: int = 0,
    feature: str | FeatureNetwork = "auto",
    fid_weights: str | None = None,
    cache_dir: str | None = None,
    device: torch.device | str | None = None,
    kd_subsets: int = KID_SUBSETS,
    kd_subset_size: int = KID_SUBSET_SIZE,
    eta: float = 0.0,
) -> QualityResult:
    """FD and KD between `num_images` samples of `pipeline` (a `num_inference_steps` respaced chain) and `reference`.

    reference: a ReferenceSet, or a source ("embedded:digits", "embedded:mnist", an image folder) whose whole set is
        taken at the pipeline's resolution and channels.
    feature: see `resolve_feature_network`; fid_weights: a local Inception weights file (see `inception`).
    cache_dir: for the fitted digit network and the reference features (default: see `ddpm_hf.caching.cache_root`).
    device: where the feature network runs (default: the pipeline's device, e.g. `accelerator.device`).
    eta: DDIM's eta, for a pipeline whose scheduler takes it (the sampler is the pipeline's scheduler).

    Under torch.distributed, call it on every process with the same arguments; the pipeline need not be wrapped.
    """
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 2:
        raise ValueError(f"num_images must be an integer >= 2 (a covariance needs two samples), got {num_images!r}")
    config = pipeline.unet.config
    size = config.sample_size if isinstance(config.sample_size, int) else config.sample_size[0]
    if isinstance(reference, str):
        reference = ReferenceSet(reference, resolution=int(size), channels=config.in_channels)
    if (reference.resolution, reference.channels) != (size, config.in_channels):
        raise ValueError(f"the pipeline draws {config.in_channels}-channel {size}x{size} images but the reference is "
                         f"{reference.channels}-channel {reference.resolution}x{reference.resolution}: build the "
                         f"ReferenceSet at the pipeline's resolution and channels")
    device = torch.device(device) if device is not None else pipeline.device
    rank, world = rank_and_world()

    with main_process_first():  # process 0 fits/caches the network and the reference features; the others read them
        network = resolve_feature_network(feature, reference, fid_weights=fid_weights, cache_dir=cache_dir,
                                          device=device)
        real, from_cache = reference_features(reference, network, cache_dir=cache_dir, device=device)
    seeds = image_seeds(seed, num_images)
    sample_share = share(num_images, rank, world)  # the images this process draws
    started = time.perf_counter()
    pixels = sample_pixels(pipeline, seeds[sample_share.start:sample_share.stop], num_inference_steps, batch_size,
                           eta=eta)
    sampling_seconds = time.perf_counter() - started
    fake = extract_features(network, pixels, batch_size, device)
    real_share = share(len(real), rank, world)  # each reference feature counted once over all processes
    distances = feature_distances(real[real_share.start:real_share.stop], fake, seed=seed, kd_subsets=kd_subsets,
                                  kd_subset_size=kd_subset_size, device=device)
    fd_name, kd_name = getattr(network, "distance_names", ("FD", "KD"))
    return QualityResult(
        fd_name=fd_name, kd_name=kd_name, fd=distances.fd, kd=distances.kd, kd_std=distances.kd_std,
        num_images=distances.num_fake, num_inference_steps=num_inference_steps, seed=seed, batch_size=batch_size,
        reference=asdict(reference), num_reference_images=distances.num_real,
        feature_network=getattr(network, "name", type(network).__name__),
        feature_fingerprint=getattr(network, "fingerprint", "unknown"), kd_subsets=distances.kd_subsets,
        kd_subset_size=distances.kd_subset_size, num_processes=world, reference_from_cache=from_cache,
        sampling_seconds=sampling_seconds, image_seeds=seeds, scheduler=type(pipeline.scheduler).__name__, eta=eta,
    )
