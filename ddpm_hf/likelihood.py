# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Where pipeline folders saved by ddpm-hf 0.1.0 look for the bound: their shipped `pipeline_ddpm_hf.py` imports
`ddpm_hf.likelihood.variational_bound`. The bound lives in `ddpm_hf.diffusion.likelihood`; import it from there."""

from .diffusion.likelihood import VariationalBound, variational_bound

__all__ = ["VariationalBound", "variational_bound"]
