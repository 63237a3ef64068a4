# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""A small digit feature network for the embedded digit sets, where the Inception weights may not be at hand.

It is a two-layer CNN classifier fitted once (seeded, on one thread, a few seconds on a CPU) on all the real digits
that ship inside installed packages (embedded:mnist and embedded:digits), and cached; its features are the 64-d
layer before the class scores, the way FID takes Inception's last pool layer. Taken before the ReLU: no dead
dimension, so the feature covariances are full rank. Any input resolution is resized to 16x16 first (with
antialiasing), so one fitted network serves every resolution; colour is averaged to gray.

Its distances are called "digit-feature FD" and "digit-feature KD", never FID: the number depends on this network,
and is comparable only with numbers from the same network (same `fingerprint`).
"""

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..caching import cache_root, fingerprint, save_tensors_atomically
from .features import FeatureNetwork

logger = logging.getLogger(__name__)

INPUT_SIZE = 16
NUM_FEATURES = 64
# Everything that changes the fitted weights: bump "version" whenever the code below changes what it fits.
RECIPE = {"version": 2, "data": ["embedded:mnist", "embedded:digits"], "input_size": INPUT_SIZE,
          "features": NUM_FEATURES, "epochs": 6, "batch_size": 128, "learning_rate": 2e-3, "seed": 0}


class DigitFeatureNetwork(FeatureNetwork):
    distance_names = ("digit-feature FD", "digit-feature KD")

    def __init__(self):
        super().__init__()
        self.num_features = NUM_FEATURES
        self.name = f"digit-features-v{RECIPE['version']} (a CNN fitted on the embedded digits, 64-d)"
        self.fingerprint = f"digit-features-{fingerprint(RECIPE)}"
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16x16 -> 8x8
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # -> 4x4
            nn.Flatten(), nn.Linear(32 * 4 * 4, NUM_FEATURES),
        )
        self.classify = nn.Sequential(nn.ReLU(), nn.Linear(NUM_FEATURES, 10))
        # Set after fitting so that the real digits' features have mean 0 and variance 1 in every dimension: the
        # kernel distance's (x.y / d + 1)^3 then sees features of the scale it was designed for (KD ~ 0.01, as KID),
        # instead of numbers in the thousands.
        self.register_buffer("feature_mean", torch.zeros(NUM_FEATURES))
        self.register_buffer("feature_std", torch.ones(NUM_FEATURES))

    @staticmethod
    def prepare(pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float (N, 1, 16, 16) in [0, 1]."""
        x = pixels.float().div(255.0).mean(dim=1, keepdim=True)
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
        return x

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (self.body(self.prepare(pixels)) - self.feature_mean) / self.feature_std


def digit_feature_network(cache_dir=None, device: torch.device | str = "cpu") -> DigitFeatureNetwork:
    """The fitted digit feature network: read from the cache, or fitted now and cached."""
    from safetensors.torch import load_file

    with torch.random.fork_rng(devices=[]):  # a seeded initialisation, leaving the caller's random state alone
        torch.manual_seed(RECIPE["seed"])
        network = DigitFeatureNetwork()
    path = Path(cache_root(cache_dir)) / "feature-networks" / f"{network.fingerprint}.safetensors"
    if path.is_file():
        network.load_state_dict(load_file(path))
    else:
        logger.info("fitting the digit feature network once (cached in %s)", path)
        fit_digit_features(network)
        save_tensors_atomically(network.state_dict(), path, {"recipe": repr(RECIPE)})
    return network.to(device).eval().requires_grad_(False)


@torch.enable_grad()  # it trains: also when the caller evaluates under no_grad
def fit_digit_features(network: DigitFeatureNetwork) -> float:
    """Fit `network` as a digit classifier on the embedded digits; returns its final training accuracy."""
    pixels, labels = _embedded_digits()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same weights on any machine with this torch build, whatever its core count
    try:
        generator = torch.Generator().manual_seed(RECIPE["seed"])
        x = DigitFeatureNetwork.prepare(pixels)
        optimizer = torch.optim.Adam(network.parameters(), lr=RECIPE["learning_rate"])
        network.train()
        for _ in range(RECIPE["epochs"]):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), RECIPE["batch_size"]):
                batch = order[start:start + RECIPE["batch_size"]]
                loss = F.cross_entropy(network.classify(network.body(x[batch])), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        network.eval()
        with torch.no_grad():
            hidden = network.body(x)
            accuracy = float((network.classify(hidden).argmax(1) == labels).float().mean())
            network.feature_mean.copy_(hidden.mean(0))
            network.feature_std.copy_(hidden.std(0).clamp_min(1e-6))
    finally:
        torch.set_num_threads(threads)
    logger.info("digit feature network fitted: %.1f%% training accuracy", 100 * accuracy)
    return accuracy


def _embedded_digits() -> tuple[torch.Tensor, torch.Tensor]:
    from ..data import load_image_dataset

    sets = [load_image_dataset(embedded=name, resolution=INPUT_SIZE, channels=1, show_progress=False)
            for name in ("mnist", "digits")]
    pixels = torch.cat([data.pixels for data in sets])
    labels = torch.cat([data.labels for data in sets]).long()
    return pixels, labels
