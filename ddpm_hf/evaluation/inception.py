# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The standard FID feature network: torch-fidelity's port of the TensorFlow Inception-v3 of the FID paper
(Heusel et al. 2017), its 2048-d pool features, built by torchmetrics (`FrechetInceptionDistance(feature=2048)`).

Weights: online, torch-fidelity downloads them once into torch.hub's cache ($TORCH_HOME/hub/checkpoints); offline,
point `fid_weights=` (or $DDPM_HF_FID_WEIGHTS, or `ddpm-hf fid --fid-weights`) at a copy of that file
(weights-inception-2015-12-05-6726825d.pth from torch-fidelity's v0.2.0 release), which torchmetrics passes to
torch-fidelity as `feature_extractor_weights_path`. There is no fallback to another network: a number called FID
always comes from these weights.
"""

import os
from pathlib import Path

import torch

from .features import FeatureNetwork

WEIGHTS_ENV = "DDPM_HF_FID_WEIGHTS"
WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"  # the name torch-fidelity downloads it under
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"
# pip would replace the user's torch to satisfy a torchvision it picks itself: so no extra of ddpm-hf installs these.
TORCH_FIDELITY_INSTALL = (
    f"torch-fidelity, which needs a torchvision built for your torch ({torch.__version__}): install that torchvision"
    " first, from where your torch came from (a CPU torch: pip install torchvision --index-url"
    " https://download.pytorch.org/whl/cpu), then pip install torch-fidelity"
)


class InceptionWeightsError(FileNotFoundError):
    """The Inception-v3 FID weights are not at hand (no local file, nothing cached, and no download possible)."""


class InceptionFeatureNetwork(FeatureNetwork):
    distance_names = ("FID", "KID")

    def __init__(self, weights_path: str | None):
        super().__init__()
        from torchmetrics.image.fid import FrechetInceptionDistance

        # The very network torchmetrics' FID computes with: its `inception` module (torch-fidelity's port, which
        # resizes to 299x299 itself), taken out so that one feature pass feeds both FID and KID and the real side
        # can come from the reference cache.
        self.inception = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=weights_path).inception
        self.num_features = 2048
        self.name = "inception-v3-compat pool3 (torch-fidelity's port of the FID Inception-v3, 2048-d)"
        self.fingerprint = f"inception-v3-compat-2048-{WEIGHTS_FILE}"

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.shape[1] == 1:  # grayscale: the same image in R, G and B, as PIL's convert("RGB") gives
            pixels = pixels.expand(-1, 3, -1, -1)
        return self.inception(pixels)


def inception_feature_network(fid_weights: str | os.PathLike | None = None,
                              device: torch.device | str = "cpu") -> InceptionFeatureNetwork:
    """The FID network, with weights from `fid_weights`, $DDPM_HF_FID_WEIGHTS, torch.hub's cache or a download."""
    from importlib.util import find_spec

    path = resolve_inception_weights(fid_weights)  # first: offline, the weights are the harder thing to get
    if find_spec("torch_fidelity") is None:
        raise ModuleNotFoundError(f"FID needs {TORCH_FIDELITY_INSTALL}")
    try:
        network = InceptionFeatureNetwork(path)
    except OSError as error:  # the download failed (no network, a proxy, a firewall)
        raise InceptionWeightsError(_missing_weights_message(f"downloading them failed ({error})")) from None
    return network.to(device).eval().requires_grad_(False)


def resolve_inception_weights(fid_weights: str | os.PathLike | None = None) -> str | None:
    """The local weights file to load, or None when torch-fidelity should download it (online, nothing cached)."""
    given = fid_weights or os.environ.get(WEIGHTS_ENV)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise InceptionWeightsError(f"no Inception-v3 FID weights file at {given} (from "
                                        f"{'fid_weights' if fid_weights else '$' + WEIGHTS_ENV}); "
                                        f"download {WEIGHTS_URL} and point there")
        return _checked(path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE
    if cached.is_file():
        return _checked(cached)
    if _offline():
        raise InceptionWeightsError(_missing_weights_message(f"offline (HF_HUB_OFFLINE) and none cached at {cached}"))
    return None


def _checked(path: Path) -> str:
    """`path`, once it has loaded as plain tensors: torch-fidelity loads it with `weights_only=False`, so a file that
    is not a plain state dict would run its pickled code; refuse it here instead."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InceptionWeightsError(f"{path} is not a plain tensor state dict (not loaded, to run no pickled code: "
                                    f"{type(error).__name__}); download {WEIGHTS_URL} again") from None
    if not isinstance(state, dict) or "Conv2d_1a_3x3.conv.weight" not in state:
        raise InceptionWeightsError(f"{path} does not hold torch-fidelity's Inception-v3 FID weights; "
                                    f"download {WEIGHTS_URL}")
    return str(path)


def _missing_weights_message(why: str) -> str:
    return (f"the Inception-v3 FID weights are not available: {why}; either go online once (torch-fidelity downloads "
            f"them into $TORCH_HOME/hub/checkpoints) or download {WEIGHTS_URL} elsewhere and pass its path "
            f"(fid_weights=, ${WEIGHTS_ENV} or --fid-weights)")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
