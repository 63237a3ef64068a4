# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""What a feature network is, and the batched pass that turns uint8 images into features.

The distances compare distributions of features, not of pixels; which network gives the features decides what the
number means and what it is called: torch-fidelity's Inception-v3 gives "FID"/"KID", comparable with published
numbers; the digit network gives "digit-feature FD"/"KD", comparable only with itself. So a network carries the
names of its distances and a fingerprint of its weights, and results and caches are keyed by them.
"""

import torch
from torch import nn


class FeatureNetwork(nn.Module):
    """uint8 images (N, C, H, W) in [0, 255] -> float features (N, num_features), in eval mode and without grad.

    Subclasses set `num_features`, `name` (what the network is, for results), `fingerprint` (changes whenever the
    weights or the preprocessing change: it keys the reference cache) and `distance_names` (what the Fréchet and
    kernel distances on these features are called).
    """

    num_features: int
    name: str
    fingerprint: str
    distance_names: tuple[str, str] = ("FD", "KD")


@torch.no_grad()
def extract_features(network: nn.Module, pixels: torch.Tensor, batch_size: int = 256,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """The features of uint8 `pixels` (N, C, H, W), `batch_size` images per network call, as float64 on the CPU.

    float64 because torchmetrics accumulates the Fréchet statistics in float64 and reports in the input's dtype;
    features from a float32 network are exact in float64, so this loses nothing and keeps the distance in float64.
    """
    if pixels.dtype != torch.uint8 or pixels.dim() != 4:
        raise ValueError(f"features need uint8 images (N, C, H, W), got {pixels.dtype} {tuple(pixels.shape)}")
    if device is None:
        device = next(network.parameters(), torch.empty(0)).device
    network.eval()
    chunks = [network(pixels[start:start + batch_size].to(device)).double().cpu()
              for start in range(0, len(pixels), batch_size)]
    return torch.cat(chunks) if chunks else torch.zeros(0, network.num_features, dtype=torch.float64)


class PassThrough(nn.Module):
    """The "feature network" handed to torchmetrics: features go in, the same features come out.

    The feature pass is done once, outside the metric (`extract_features`), so that the real side can be read from
    the reference cache instead of being recomputed, and one pass serves both the Fréchet and the kernel distance.
    """

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features
