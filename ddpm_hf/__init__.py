"""ddpm-hf: Denoising Diffusion Probabilistic Models as first-class Hugging Face citizens."""

__version__ = "0.1.0"

from .scheduling_ddpm_posterior import DDPMPosteriorScheduler, DDPMPosteriorSchedulerOutput

__all__ = ["DDPMPosteriorScheduler", "DDPMPosteriorSchedulerOutput", "__version__"]
