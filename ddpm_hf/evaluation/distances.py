# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The Fréchet distance and the kernel distance of two feature sets, computed by torchmetrics.

Fréchet distance (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium"): fit a Gaussian to each feature set and take
    FD = |mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)),
the squared 2-Wasserstein distance of the two Gaussians. It is biased upwards at small sample sizes, so compare
numbers measured on the same number of samples.

Kernel distance (Binkowski et al. 2018, "Demystifying MMD GANs"): the unbiased squared MMD with the cubic polynomial
kernel k(x, y) = (x.y / d + 1)^3, averaged over `subsets` random subsets of `subset_size` of each set; its standard
deviation over the subsets says how much the number moves with the draw. Unbiased: it is ~0 (and can be slightly
negative) for two samples of the same distribution.

Both are computed by `torchmetrics.image.FrechetInceptionDistance` / `KernelInceptionDistance`, fed precomputed
features (see `features.PassThrough`). On several processes (torch.distributed initialised, e.g. by
`accelerate launch`) each process passes only its share of the features, and torchmetrics sums the Fréchet
statistics and gathers the kernel features across processes at `compute()`: every process gets the same numbers,
those of all the features together.
"""

import warnings
from dataclasses import dataclass

import torch

from .features import PassThrough

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000  # Binkowski et al.'s subset size; smaller sets use all their samples per subset


@dataclass
class FeatureDistances:
    fd: float  # Fréchet distance
    kd: float  # kernel distance: the mean over subsets of the unbiased MMD^2
    kd_std: float  # its standard deviation over the subsets
    num_real: int  # feature counts over all processes
    num_fake: int
    kd_subsets: int
    kd_subset_size: int


def feature_distances(real: torch.Tensor, fake: torch.Tensor, *, seed: int = 0, kd_subsets: int = KID_SUBSETS,
                      kd_subset_size: int = KID_SUBSET_SIZE, device: torch.device | str = "cpu") -> FeatureDistances:
    """FD and KD between this process's share of the real and the generated features, (n, d) each.

    `seed` fixes KD's random subsets (torchmetrics draws them from torch's global generator, which is forked and
    restored here, so the caller's random state is untouched). The subset size is capped by the smaller set.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and generated features must be (n, d) with the same d, got {tuple(real.shape)} and"
                         f" {tuple(fake.shape)}")
    num_real, num_fake = _total_rows(real, device), _total_rows(fake, device)
    if min(num_real, num_fake) < 2:
        raise ValueError(f"the distances need at least 2 real and 2 generated images, got {num_real} and {num_fake}")
    subset_size = min(kd_subset_size, num_real, num_fake)
    dim = real.shape[1]
    # float64 in, float64 out: torchmetrics reports in the dtype of the features it was given.
    real, fake = real.to(device, torch.float64), fake.to(device, torch.float64)

    fid = FrechetInceptionDistance(feature=PassThrough(dim)).to(device)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    fd = float(fid.compute())

    with warnings.catch_warnings():  # "will save all extracted features": yes, KD needs them (and so does the cache)
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=PassThrough(dim), subsets=kd_subsets, subset_size=subset_size)
    kid = kid.to(device)
    # One update per side and process: torchmetrics gathers list states element by element, so equal-length lists
    # (one tensor each) keep the gathered order = process order = the order of a single process.
    kid.update(real, real=True)
    kid.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kd, kd_std = (float(value) for value in kid.compute())
    return FeatureDistances(fd, kd, kd_std, num_real, num_fake, kd_subsets, subset_size)


def _total_rows(features: torch.Tensor, device) -> int:
    """The number of feature rows over all processes (this process's count when not distributed)."""
    count = torch.tensor([features.shape[0]], device=device, dtype=torch.int64)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(count)
    return int(count.item())
