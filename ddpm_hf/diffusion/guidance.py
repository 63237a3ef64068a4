# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Classifier-free guidance's training half (Ho & Salimans 2022): now and then the condition (a caption, a class) is
replaced by a null one, so that one network learns both the conditional and the unconditional prediction, which
sampling then extrapolates between: eps = eps_null + s (eps_cond - eps_null). The sampling half lives in the shipped
pipeline file."""

import torch


def drop_conditions(indices: torch.Tensor, probability: float, null_index: int,
                    generator: torch.Generator) -> torch.Tensor:
    """Each condition index (a caption's, a class label) becomes `null_index` with `probability`.

    One uniform draw per index from `generator`, on its device (no host synchronisation), whatever the probability:
    the generator's stream does not depend on it.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"the conditioning dropout probability must be in [0, 1], got {probability!r}")
    if indices.device.type != generator.device.type:
        raise ValueError(f"the condition indices are on {indices.device} but the generator on {generator.device}")
    drop = torch.rand(indices.shape, generator=generator, device=indices.device) < probability
    return indices.masked_fill(drop, null_index)
