# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Samplers by the names users know them by: each a scheduler built from a pipeline's own scheduler config.

    pipe.scheduler = make_scheduler("dpm-solver++", pipe.scheduler.config)   # then 20 steps instead of 1000

is diffusers' `DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)`: the same betas, prediction type and
clipping as the model was trained with. The names are plain data so that `ddpm-hf --help` lists them without
importing diffusers. `benchmarks/bench_quality.py` measures each against the number of steps.
"""

# name -> (scheduler class, the arguments that make it the sampler of that name)
SAMPLERS = {
    "ddpm": ("DDPMPosteriorScheduler", {}),  # Ho et al. 2020, Algorithm 2, on the respaced posterior (the default)
    "ddim": ("DDIMScheduler", {}),  # Song et al. 2021; deterministic at eta = 0, DDPM-like at eta = 1
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),  # pseudo linear multistep (PLMS)
    "dpm-solver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),  # 2M
    "dpm-solver++-sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "dpm-solver-singlestep": ("DPMSolverSinglestepScheduler", {"lower_order_final": True}),  # as diffusers advises
    "unipc": ("UniPCMultistepScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "kdpm2": ("KDPM2DiscreteScheduler", {}),
    "kdpm2-a": ("KDPM2AncestralDiscreteScheduler", {}),
}
DEFAULT_SAMPLER = "ddpm"


def make_scheduler(name: str, config):
    """The scheduler of sampler `name` (see SAMPLERS), from a scheduler's `config`."""
    if name not in SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}: choose one of {', '.join(SAMPLERS)}.")
    class_name, arguments = SAMPLERS[name]
    if class_name == "DDPMPosteriorScheduler":
        from .scheduling_ddpm_posterior import DDPMPosteriorScheduler as scheduler_class
    else:
        import diffusers

        scheduler_class = getattr(diffusers, class_name)
    return scheduler_class.from_config(config, **arguments)


def use_sampler(pipeline, name: str):
    """Give `pipeline` the scheduler of sampler `name`, built from the one it has; returns the pipeline."""
    pipeline.scheduler = make_scheduler(name, pipeline.scheduler.config)
    return pipeline
