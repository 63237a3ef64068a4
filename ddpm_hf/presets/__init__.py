# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Named training recipes: a UNet2DModel architecture plus the training flags that go with it.

A preset is a JSON file in `ddpm_hf/presets/` (shipped as package data):

    {
      "description": "what it is and where its numbers come from",
      "unet": {...},      # UNet2DModel config keys, except the ones the data decides
      "training": {...}   # defaults for train.py's flags, by flag name; explicit flags win
    }

`in_channels`, `out_channels` and `sample_size` are left out of "unet" on purpose: they follow the data's channel
count, the variance type and `--resolution` (see `unet_config_for_data`).
"""

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

DEFAULT_PRESET = "mnist-16"

# Decided by the data and the objective, never by a preset or a config file.
DATA_DEPENDENT_KEYS = ("in_channels", "out_channels", "sample_size")


class PresetError(ValueError):
    """A preset or model config cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    unet: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)


def available_presets() -> list[str]:
    """Names of the shipped presets, sorted."""
    folder = resources.files(__package__)
    return sorted(entry.name[: -len(".json")] for entry in folder.iterdir() if entry.name.endswith(".json"))


def load_preset(name: str) -> Preset:
    """The shipped preset `name`; a PresetError lists the available ones when there is none."""
    path = resources.files(__package__) / f"{name}.json"
    if not path.is_file():
        raise PresetError(f"unknown preset {name!r}: choose one of {', '.join(available_presets())}")
    raw = json.loads(path.read_text(encoding="utf-8"))
    unknown = set(raw) - {"description", "unet", "training"}
    if unknown or "unet" not in raw:
        raise PresetError(f"preset file {path} must hold 'description', 'unet' and 'training', not {sorted(unknown)}")
    return Preset(name=name, description=raw.get("description", ""), unet=raw["unet"], training=raw.get("training", {}))


def downsampling_factor(unet_config: dict[str, Any]) -> int:
    """How many times the UNet halves its input: every level but the last downsamples by 2."""
    return 2 ** (len(unet_config["block_out_channels"]) - 1)


def check_resolution(resolution: int, unet_config: dict[str, Any]) -> None:
    """The UNet adds skip connections level by level, so every level's feature map must have an integer size."""
    factor = downsampling_factor(unet_config)
    if resolution % factor:
        lower, upper = max(factor, resolution - resolution % factor), resolution - resolution % factor + factor
        levels = len(unet_config["block_out_channels"])
        raise PresetError(
            f"--resolution {resolution} does not fit this UNet: its {levels} levels halve the image "
            f"{levels - 1} times, so the resolution must be a multiple of {factor} (e.g. {lower} or {upper})"
        )


def unet_config_for_data(
    architecture: dict[str, Any], *, channels: int, resolution: int, learned_variance: bool
) -> dict[str, Any]:
    """A complete UNet2DModel config: `architecture` plus what the data and the objective decide.

    A model that learns its variance (Improved DDPM's `learned_range`) outputs twice the image channels: the
    prediction, then the variance interpolation coefficient.
    """
    config = {key: value for key, value in architecture.items() if key not in DATA_DEPENDENT_KEYS}
    check_resolution(resolution, config)
    config.update(
        in_channels=channels, out_channels=2 * channels if learned_variance else channels, sample_size=resolution
    )
    return config
