# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""ddpm-hf: Denoising Diffusion Probabilistic Models as first-class Hugging Face citizens.

The public names are imported lazily (PEP 562): `import ddpm_hf` costs nothing until a name is used, so the
`ddpm-hf` command and subprocesses start fast. `getattr(ddpm_hf, "DDPMImagePipeline")`, which diffusers' loader
calls, imports the pipeline module then.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.2.0"

# public name -> the module (inside this package) that defines it
_EXPORTS = {
    "DDPMPosteriorScheduler": "scheduling_ddpm_posterior",
    "DDPMPosteriorSchedulerOutput": "scheduling_ddpm_posterior",
    "DDPMImagePipeline": "pipeline_ddpm_hf",
    "DDPMPipelineOutput": "pipeline_ddpm_hf",
    "DDPMTextToImagePipeline": "pipeline_ddpm_hf",
    "DDPMTrajectory": "pipeline_ddpm_hf",
    "VariationalBound": "diffusion.likelihood",
    "variational_bound": "diffusion.likelihood",
}

__all__ = [
    "DDPMImagePipeline",
    "DDPMPipelineOutput",
    "DDPMPosteriorScheduler",
    "DDPMPosteriorSchedulerOutput",
    "DDPMTextToImagePipeline",
    "DDPMTrajectory",
    "VariationalBound",
    "__version__",
    "variational_bound",
]

if TYPE_CHECKING:  # editors and type checkers see the names; nothing is imported at run time
    from .diffusion.likelihood import VariationalBound, variational_bound
    from .pipeline_ddpm_hf import DDPMImagePipeline, DDPMPipelineOutput, DDPMTextToImagePipeline, DDPMTrajectory
    from .scheduling_ddpm_posterior import DDPMPosteriorScheduler, DDPMPosteriorSchedulerOutput


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return __all__
