"""ddpm-hf: Denoising Diffusion Probabilistic Models as first-class Hugging Face citizens."""

__version__ = "0.1.0"

from .scheduling_ddpm_posterior import DDPMPosteriorScheduler, DDPMPosteriorSchedulerOutput
from .pipeline_ddpm_hf import DDPMImagePipeline, DDPMPipelineOutput, DDPMTextToImagePipeline, DDPMTrajectory
from .likelihood import VariationalBound, variational_bound

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
