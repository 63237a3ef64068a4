# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The variational bound's report: nll.json and the plot of its terms, written by the trainer (--eval_nll_images)
and by `ddpm-hf nll` in one schema.

nll.json holds:
- `description`: how the number was measured, as the model card shows it;
- `pipeline`, `data`, `seed`: what was bounded, on which images (a spec `ddpm-hf nll --data` takes), from which seed;
- `steps`, `timesteps`: the chain's length and its timesteps, in the order of `mean_terms_bpd`;
- `num_images`, `total_bpd`, `total_bpd_stderr`, `prior_bpd`, `decoder_bpd`, `denoising_bpd`: the means over the
  images (`VariationalBound.summary`);
- `mean_terms_bpd`: the mean of each term L_t (Ho et al. 2020 eq. 5) per timestep; `per_image_total_bpd`: each
  image's bound.
"""

import json

from ..io import write_atomically, write_text_atomically
from ..visualization import plot_terms


def chain_name(respaced_steps: int | None) -> str:
    """How a description names the chain bounded: the full one, or a respaced one of `respaced_steps` steps."""
    return "the full chain" if respaced_steps is None else f"a respaced {respaced_steps}-step chain"


def describe_bound(bound, *, chain: str, images: str) -> str:
    """One sentence on how the bound was measured: `chain` (see `chain_name`) on `images` (e.g. "64 training
    images"), with its standard error."""
    stderr = bound.summary()["total_bpd_stderr"]
    return (f"variational bound (prior + denoising KLs + discretized decoder) of {chain} on {images}, ± {stderr:.3f}"
            f" standard error (ddpm_hf.variational_bound)")


def write_nll_report(bound, *, description: str, pipeline: str, data: str, seed: int, json_path: str | None,
                     png_path: str | None, title: str) -> dict:
    """nll.json at `json_path` and the terms plot at `png_path` (None: not written), each atomically; returns the
    record."""
    record = {
        "description": description,
        "pipeline": pipeline,
        "data": data,
        "seed": seed,
        "steps": len(bound.timesteps),
        **bound.summary(),
        "timesteps": bound.timesteps.tolist(),
        "mean_terms_bpd": bound.terms_bpd.mean(0).tolist(),
        "per_image_total_bpd": bound.total_bpd.tolist(),
    }
    if json_path:
        write_text_atomically(json_path, json.dumps(record, indent=2) + "\n")
    if png_path:
        write_atomically(png_path, lambda temporary: plot_terms(bound, temporary, title=title))
    return record
