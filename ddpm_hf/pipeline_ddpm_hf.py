# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""DDPM pipelines: unconditional or class-conditional sampling with a UNet2DModel, and text-to-image with a CLIP
text encoder; both conditional kinds with classifier-free guidance (Ho & Salimans 2022).

The reverse chain is driven through diffusers' scheduler API as its own pipelines drive it (`init_noise_sigma`,
`scale_model_input`, `step` given `generator` / `eta` where its signature takes them, multistep `order`), so any
scheduler in `DDPMScheduler.compatibles` can replace the DDPM posterior: `pipe.scheduler =
DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)`.

This file samples, and is self-contained (torch and diffusers only) because `save_pretrained` copies it into the
saved folder: `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` then loads it where `ddpm_hf` is
not installed. Saving and loading with the package installed live in `ddpm_hf.pipeline_utils`.
"""

import inspect
import numbers
import operator
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, UNet2DConditionModel, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor

try:  # saving and loading as the README's "Loading" describes; without the package, diffusers' own behaviour
    from ddpm_hf import pipeline_utils
except ImportError:  # loaded with trust_remote_code where ddpm_hf is not installed
    pipeline_utils = None


@dataclass
class DDPMTrajectory:
    """The reverse process as recorded by a pipeline call: every k-th visited timestep.

    Args:
        timesteps (`list`): the recorded timesteps, from T-1 towards 0 (the last entry is the final sample); -1 marks
            x_T. Integers for DDPM-style schedulers; sigma-space samplers (Euler, Heun, ...) visit float timesteps.
        samples (`torch.Tensor`): (K, B, C, H, W) x_t *after* the step at each recorded timestep, in [-1, 1] range
            (not clipped); the first entry is x_T, the noise the chain starts from (times `init_noise_sigma`).
        pred_original_samples (`torch.Tensor` or None): (K, B, C, H, W) the model's x_0 estimate at each recorded
            timestep (the first entry, for x_T, is zeros); None when the scheduler does not return one (PNDM, LMS,
            DPM-Solver, UniPC, ...).
    """

    timesteps: list
    samples: torch.Tensor
    pred_original_samples: torch.Tensor | None


@dataclass
class DDPMPipelineOutput(ImagePipelineOutput):
    """`images` as in diffusers' ImagePipelineOutput, plus the trajectory when one was asked for."""

    trajectory: DDPMTrajectory | None = None


class TrajectoryRecorder:
    """Keeps every `every`-th (x_t, x_0 estimate) of a reverse chain, on the CPU so memory stays on the host."""

    def __init__(self, every: int, x_T: torch.Tensor, num_steps: int):
        if every < 1:
            raise ValueError(f"trajectory_every must be a positive integer, got {every}.")
        self.every, self.num_steps = every, num_steps
        self.timesteps = [-1]  # -1 marks x_T, before any step
        self.samples = [x_T.detach().float().cpu()]
        self.pred_original_samples = [torch.zeros_like(self.samples[0])]

    def record(self, step_index: int, timestep, sample: torch.Tensor, pred_original_sample: torch.Tensor | None):
        if pred_original_sample is None:  # this scheduler estimates no x_0: the trajectory keeps the samples only
            self.pred_original_samples = None
        if (step_index + 1) % self.every == 0 or step_index == self.num_steps - 1:
            self.timesteps.append(timestep.item() if isinstance(timestep, torch.Tensor) else timestep)
            self.samples.append(sample.detach().float().cpu())
            if self.pred_original_samples is not None:
                self.pred_original_samples.append(pred_original_sample.detach().float().cpu())

    def result(self) -> DDPMTrajectory:
        x0 = torch.stack(self.pred_original_samples) if self.pred_original_samples is not None else None
        return DDPMTrajectory(self.timesteps, torch.stack(self.samples), x0)


def check_positive_int(name: str, value) -> int:
    """`value` as an int, refusing what is not a positive whole number (bools and floats too) with a clear error."""
    # Checked up front: 0 or -1 images would otherwise fail deep inside diffusers with a reshape error.
    try:
        number = None if isinstance(value, bool) else operator.index(value)  # ints and numpy ints, not 2.0
    except TypeError:
        number = None
    if number is None or number < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}: pass a whole number, at least 1.")
    return number


def classifier_free_guidance(noise_pred: torch.Tensor, guidance_scale: float, channels: int) -> torch.Tensor:
    """eps_uncond + s (eps_cond - eps_uncond) from one batched UNet output, unconditional half first.

    Only the first `channels` output channels (the prediction) are guided; a learned variance (channels `channels:`)
    comes from the conditional half.
    """
    noise_pred_uncond, noise_pred_cond = noise_pred.chunk(2)
    guided = noise_pred_uncond[:, :channels] + guidance_scale * (
        noise_pred_cond[:, :channels] - noise_pred_uncond[:, :channels]
    )
    return torch.cat([guided, noise_pred_cond[:, channels:]], dim=1)


def postprocess_images(sample: torch.Tensor, output_type: str, numpy_to_pil: Callable):
    """[-1, 1] tensor -> `pil` images, an `np` array (B, H, W, C) in [0, 1], a `pt` tensor (B, C, H, W) in [0, 1],
    or (`latent`) the final sample itself, unclipped: these pipelines denoise in pixel space."""
    if output_type == "latent":
        return sample
    if output_type not in ("pil", "np", "pt"):
        raise ValueError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}.")
    image = (sample / 2 + 0.5).clamp(0, 1)
    if output_type == "pt":
        return image
    image = image.cpu().permute(0, 2, 3, 1).float().numpy()
    return numpy_to_pil(image) if output_type == "pil" else image


# Copied from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion.retrieve_timesteps (without sigmas)
def retrieve_timesteps(scheduler, num_inference_steps: int | None = None, device=None, timesteps=None, **kwargs):
    """Call the scheduler's `set_timesteps` (custom `timesteps` where it takes them) and return (timesteps, steps)."""
    if timesteps is not None:
        accepts_timesteps = "timesteps" in set(inspect.signature(scheduler.set_timesteps).parameters.keys())
        if not accepts_timesteps:
            raise ValueError(
                f"The current scheduler class {scheduler.__class__}'s `set_timesteps` does not support custom"
                f" timestep schedules. Please check whether you are using the correct scheduler."
            )
        scheduler.set_timesteps(timesteps=timesteps, device=device, **kwargs)
        timesteps = scheduler.timesteps
        num_inference_steps = len(timesteps)
    else:
        scheduler.set_timesteps(num_inference_steps, device=device, **kwargs)
        timesteps = scheduler.timesteps
    return timesteps, num_inference_steps


class ReverseChainMixin:
    """The sampling loop both pipelines run: x_T, the scheduler's reverse chain with the (guided) model call at each
    step, the callbacks and the properties they read. Each pipeline brings `predict` and its own conditioning."""

    # ------------------------------------------------------------------------------------------------------------
    # What a callback (and a reader) sees while the chain runs, as in diffusers' pipelines
    # ------------------------------------------------------------------------------------------------------------
    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        """diffusers' rule: guidance runs while the scale is above 1 (a callback may lower it mid-run)."""
        return self._guidance_scale > 1.0

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        """Set `pipe._interrupt = True` from a callback to skip the remaining steps."""
        return self._interrupt

    # ------------------------------------------------------------------------------------------------------------
    # The reverse chain
    # ------------------------------------------------------------------------------------------------------------
    def prepare_noise(self, batch_size: int, generator, device, dtype, latents=None) -> torch.Tensor:
        """x_T ~ N(0, I), drawn exactly as diffusers' DDPMPipeline draws it (same generator, same images); or the
        given `latents`, checked against the UNet's shape."""
        size = self.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else size
        shape = (batch_size, self.unet.config.in_channels, height, width)
        if latents is not None:
            if tuple(latents.shape) != shape:
                raise ValueError(f"latents must have shape {shape} (batch, channels, height, width), got"
                                 f" {tuple(latents.shape)}.")
            return latents.to(device=device, dtype=dtype)
        if device.type == "mps":  # randn does not exist on mps
            return randn_tensor(shape, generator=generator, dtype=dtype).to(device)
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype)

    # Copied from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion.StableDiffusionPipeline.prepare_extra_step_kwargs  # noqa: E501
    def prepare_extra_step_kwargs(self, generator, eta):
        # prepare extra kwargs for the scheduler step, since not all schedulers have the same signature
        # eta (η) is only used with the DDIMScheduler, it will be ignored for other schedulers.
        # eta corresponds to η in DDIM paper: https://huggingface.co/papers/2010.02502
        # and should be between [0, 1]

        accepts_eta = "eta" in set(inspect.signature(self.scheduler.step).parameters.keys())
        extra_step_kwargs = {}
        if accepts_eta:
            extra_step_kwargs["eta"] = eta

        # check if the scheduler accepts generator
        accepts_generator = "generator" in set(inspect.signature(self.scheduler.step).parameters.keys())
        if accepts_generator:
            extra_step_kwargs["generator"] = generator
        return extra_step_kwargs

    def check_sampling_arguments(self, batch_size: int, generator, callback_on_step_end_tensor_inputs) -> None:
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs may name {self._callback_tensor_inputs}, not {sorted(unknown)}."
            )
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators for {batch_size} images: pass one per image.")

    def sample_chain(
        self, latents, conditioning: dict, generator, eta, num_inference_steps, timesteps, callback_on_step_end,
        callback_on_step_end_tensor_inputs, trajectory_every, output_type, return_dict,
    ):
        """Algorithm 2 of Ho et al. 2020: x_T -> x_0 through the scheduler's chain, `self.predict` the model call.

        `conditioning` holds the tensors `predict` takes besides (x_t, t) (class labels, prompt embeddings); a
        callback may replace them, as it may replace the latents.
        """
        # 1. the visited timesteps, and the step's extra arguments where its signature takes them
        timesteps, num_inference_steps = retrieve_timesteps(self.scheduler, num_inference_steps, latents.device,
                                                            timesteps)
        self._num_timesteps = len(timesteps)
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        # 2. x_T at the scheduler's scale (1 for DDPM and DDIM; sigma_max for Euler, Heun, ...), set by set_timesteps
        latents = latents * self.scheduler.init_noise_sigma
        recorder = TrajectoryRecorder(trajectory_every, latents, len(timesteps)) if trajectory_every else None

        # a multistep scheduler of order k visits k timesteps per step: the bar counts steps, as diffusers' does
        num_warmup_steps = len(timesteps) - num_inference_steps * self.scheduler.order
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                # 3. the model's prediction at x_t (eps, x_0 or v), on the input the scheduler expects
                model_input = self.scheduler.scale_model_input(latents, t)
                model_output = self.predict(model_input, t, **conditioning)
                # 4. one reverse step x_t -> x_{t-1}; not every scheduler estimates x_0 on the way
                step = self.scheduler.step(model_output, t, latents, **extra_step_kwargs)
                latents = step.prev_sample
                pred_original_sample = getattr(step, "pred_original_sample", None)
                if recorder is not None:
                    recorder.record(i, t, latents, pred_original_sample)
                # 5. the callback may read and replace the latents and the conditioning (e.g. cut guidance off)
                if callback_on_step_end is not None:
                    tensors = {"latents": latents, "pred_original_sample": pred_original_sample, **conditioning}
                    callback_kwargs = {k: tensors[k] for k in callback_on_step_end_tensor_inputs}
                    outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                    latents = outputs.pop("latents", latents)
                    conditioning.update({k: v for k, v in outputs.items() if k in conditioning})
                if i == len(timesteps) - 1 or ((i + 1) > num_warmup_steps and (i + 1) % self.scheduler.order == 0):
                    progress_bar.update()

        images = postprocess_images(latents, output_type, self.numpy_to_pil)
        self.maybe_free_model_hooks()
        trajectory = recorder.result() if recorder is not None else None
        if not return_dict:
            return (images,) if trajectory is None else (images, trajectory)
        return DDPMPipelineOutput(images=images, trajectory=trajectory)

    def guided(self, model, x_t: torch.Tensor, t, **conditioning) -> torch.Tensor:
        """`model(x_t, t, **conditioning).sample`, guided when `do_classifier_free_guidance`: the conditioning then
        holds both halves (unconditional first) and the UNet sees them in one batched call."""
        if not self.do_classifier_free_guidance:
            return model(x_t, t, **conditioning).sample
        noise_pred = model(torch.cat([x_t, x_t]), t, **conditioning).sample
        return classifier_free_guidance(noise_pred, self._guidance_scale, x_t.shape[1])


class InstalledPackageMixin:
    """Saving, loading, the Hub and the bound: the installed ddpm_hf package's, reached through guarded imports, so
    this file runs without the package (diffusers' own saving and loading, or an ImportError naming the package)."""

    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True, **kwargs):
        """`DiffusionPipeline.save_pretrained`, plus the shipped code, written beside `save_directory` and swapped in.

        A crash while saving leaves the previous pipeline in `save_directory`. `safe_serialization=False` writes
        pickle weights as diffusers does, with a warning: `from_pretrained` loads them only when asked (see there).
        Without the ddpm-hf package (loaded with `trust_remote_code=True`), diffusers' own `save_pretrained`.
        """
        if pipeline_utils is None:
            return super().save_pretrained(save_directory, safe_serialization=safe_serialization, **kwargs)
        pipeline_utils.save_pipeline(self, save_directory, super().save_pretrained, safe_serialization, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """`DiffusionPipeline.from_pretrained` for a folder or a Hub repo id, online or offline from the cache.

        A Hub repo is downloaded whole first, so the installed classes load it without running the repo's code.
        Weights load from safetensors only: unpickling a `.bin` checkpoint can run arbitrary code, so a caller who
        trusts one opts in with `use_safetensors=False` (and can `save_pretrained` it once to convert it).
        """
        kwargs.setdefault("use_safetensors", True)
        name = pretrained_model_name_or_path
        if pipeline_utils is None:
            return super().from_pretrained(name, **kwargs)
        name = pipeline_utils.resolve_pretrained(cls, name, kwargs)
        pipeline = super().from_pretrained(name, **kwargs)
        pipeline_utils.check_loaded_weights(pipeline, name)
        return pipeline

    @classmethod
    def load_config(cls, *args, **kwargs):
        """Read `model_index.json` so that the installed classes load it, without running the folder's code."""
        output = super().load_config(*args, **kwargs)
        config = output[0] if isinstance(output, tuple) else output
        if pipeline_utils is not None and isinstance(config, dict):
            pipeline_utils.map_shipped_names(cls, config)
        return output

    def push_to_hub(self, repo_id: str, **kwargs):
        """Save, render the model card and upload: see `ddpm_hf.hub.push_pipeline_to_hub`."""
        try:
            from ddpm_hf.hub import push_pipeline_to_hub
        except ImportError as error:
            raise ImportError("push_to_hub needs the ddpm-hf package: pip install ddpm-hf.") from error
        return push_pipeline_to_hub(self, repo_id, **kwargs)

    def variational_bound(self, images: torch.Tensor, generator=None, batch_size: int = 64, timesteps=None, **kwargs):
        """The ELBO (Ho et al. 2020, eq. 5) in bits/dim for `images` in [-1, 1]: see `ddpm_hf.variational_bound`.

        Text-to-image pipelines pass `encoder_hidden_states=pipe.encode_prompt(prompts, device, 1, False)[0]`.
        """
        try:
            from ddpm_hf import variational_bound
        except ImportError as error:  # loaded with trust_remote_code where the package is absent
            raise ImportError("variational_bound needs the ddpm-hf package: pip install ddpm-hf.") from error
        return variational_bound(self.unet, self.scheduler, images, generator=generator, batch_size=batch_size,
                                 timesteps=timesteps, **kwargs)


def class_names_list(class_names) -> list[str] | None:
    """`class_names` as a list: from a list (the API) or from {"0": name, ...} (how model_index.json stores it)."""
    if class_names is None:
        return None
    if isinstance(class_names, dict):
        try:
            indices = sorted((int(k), v) for k, v in class_names.items())
        except (TypeError, ValueError):
            indices = None
        if indices is None or [i for i, _ in indices] != list(range(len(indices))):
            raise ValueError(f"class_names must map indices 0..N-1 to names, got keys {sorted(class_names)}.")
        names = [v for _, v in indices]
    elif isinstance(class_names, (list, tuple)):
        names = list(class_names)
    else:
        raise ValueError(f"class_names must be a list of strings, got {type(class_names).__name__}.")
    if not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"class_names must be non-empty strings, got {names!r}.")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"class_names must be unique, but {duplicates} appear more than once.")
    return names


def unet_num_classes(unet) -> int | None:
    """The classes a class-conditional UNet2DModel was trained on (its `num_class_embeds` less the null label)."""
    config = getattr(unet, "config", None)
    num_class_embeds = getattr(config, "num_class_embeds", None)
    if num_class_embeds is None:
        return None
    if getattr(config, "class_embed_type", None) is not None:
        raise ValueError(
            f"The UNet has class_embed_type={config.class_embed_type!r}; DDPMImagePipeline conditions on class labels"
            " through an embedding table only: build the UNet with class_embed_type=None and num_class_embeds."
        )
    if num_class_embeds < 2:
        raise ValueError(
            f"The UNet has num_class_embeds={num_class_embeds}, but a class-conditional UNet needs num_classes + 1"
            " embeddings (the last is the null label): build it with num_class_embeds=num_classes + 1."
        )
    return num_class_embeds - 1


class DDPMImagePipeline(ReverseChainMixin, InstalledPackageMixin, DiffusionPipeline):
    r"""
    Image generation by ancestral DDPM sampling (Ho et al. 2020, Algorithm 2): unconditional, or class-conditional
    with classifier-free guidance (Ho & Salimans 2022).

    A class-conditional UNet has `num_class_embeds = num_classes + 1` (and `class_embed_type=None`): labels
    0..num_classes-1 are the classes and the last one, `num_classes`, is the null label ("no class") that label dropout
    in training teaches, used for the unconditional half of guidance.

    Args:
        unet ([`UNet2DModel`]): the noise (or x_0, or v) predictor.
        scheduler ([`DDPMPosteriorScheduler`]): the reverse step; any scheduler in `DDPMScheduler.compatibles` works.
        class_names (`list[str]`, *optional*): the name of each class of a class-conditional UNet, in label order
            (`num_class_embeds - 1` of them); `class_labels` may then name classes. In `pipe.config.class_names`,
            saved in `model_index.json` as `{"0": name, ...}` (a mapping, which is also accepted here).
    """

    model_cpu_offload_seq = "unet"
    # `class_labels` is the UNet's label batch: [null labels; labels] while guiding (None for an unconditional UNet)
    _callback_tensor_inputs = ["latents", "pred_original_sample", "class_labels"]

    def __init__(self, unet: UNet2DModel, scheduler, class_names: list[str] | dict[str, str] | None = None):
        super().__init__()
        names = class_names_list(class_names)
        num_classes = unet_num_classes(unet) if unet is not None else None  # refuses class embeddings we cannot use
        if names is not None and unet is not None:
            if num_classes is None:
                raise ValueError(
                    f"class_names were given ({len(names)}) but the UNet is unconditional (no num_class_embeds):"
                    f" build it with num_class_embeds={len(names) + 1}, or drop class_names."
                )
            if num_classes != len(names):
                raise ValueError(
                    f"Got {len(names)} class_names but the UNet has {num_classes} classes (num_class_embeds="
                    f"{num_classes + 1}, the last being the null label): pass one name per class."
                )
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(class_names=names)  # model_index.json holds it as {"0": name, ...}: see ship_code

    @property
    def class_names(self) -> list[str] | None:
        """The class names in label order, or None (unconditional, or a class-conditional UNet saved without names)."""
        return class_names_list(getattr(self.config, "class_names", None))

    @property
    def num_classes(self) -> int | None:
        """How many classes the UNet conditions on (None for an unconditional UNet); label `num_classes` is null."""
        return unet_num_classes(self.unet)

    def class_label_tensor(self, class_labels, batch_size: int, device) -> torch.Tensor:
        """`class_labels` (an int, a name, a list of them, or a tensor) as a 1-d long tensor on `device`: one label is
        repeated `batch_size` times; several make the batch, one image each."""
        num_classes = self.num_classes
        names = self.class_names
        valid = f"indices 0..{num_classes - 1}"
        if names:
            shown = ", ".join(repr(n) for n in names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
            valid += f" or names {shown}"
        if isinstance(class_labels, torch.Tensor):
            if class_labels.ndim > 1 or class_labels.dtype.is_floating_point or class_labels.dtype.is_complex or (
                    class_labels.dtype == torch.bool):
                raise ValueError(
                    f"A class_labels tensor must hold integers in one dimension, got dtype {class_labels.dtype} and"
                    f" shape {tuple(class_labels.shape)}: pass a 1-d long tensor."
                )
            labels = class_labels.reshape(-1).to(device=device, dtype=torch.long)
            bad = labels[(labels < 0) | (labels >= num_classes)]
            if bad.numel():
                raise ValueError(f"Unknown class label {int(bad[0])}: valid labels are {valid}.")
        else:
            items = [class_labels] if isinstance(class_labels, str) or not isinstance(class_labels, (list, tuple)) \
                else list(class_labels)
            indices = []
            for item in items:
                if isinstance(item, str):
                    if not names:
                        raise ValueError(
                            f"Class name {item!r} given, but this pipeline has no class_names: pass {valid}."
                        )
                    if item not in names:
                        raise ValueError(f"Unknown class name {item!r}: valid labels are {valid}.")
                    indices.append(names.index(item))
                    continue
                try:
                    index = None if isinstance(item, bool) else operator.index(item)
                except TypeError:
                    index = None
                if index is None or not 0 <= index < num_classes:
                    raise ValueError(f"Unknown class label {item!r}: valid labels are {valid}.")
                indices.append(index)
            labels = torch.tensor(indices, dtype=torch.long, device=device)
        if labels.numel() == 1:
            return labels.expand(batch_size).clone()
        if batch_size not in (1, labels.numel()):  # a list of labels sets the batch, as in diffusers' DiTPipeline
            raise ValueError(
                f"Got {labels.numel()} class labels for batch_size={batch_size}: a list of labels makes one image"
                f" each (drop batch_size), and batch_size repeats a single label."
            )
        return labels

    def predict(self, x_t: torch.Tensor, t, class_labels: torch.Tensor | None) -> torch.Tensor:
        """The UNet's output at x_t: unconditional, class-conditional, or guided (labels [null; classes])."""
        if class_labels is None:
            return self.unet(x_t, t).sample
        return self.guided(self.unet, x_t, t, class_labels=class_labels)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[["DDPMImagePipeline", int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 (diffusers' signature; never mutated)
        timesteps: list[int] | None = None,
        trajectory_every: int | None = None,
        class_labels: int | str | list[int | str] | torch.Tensor | None = None,
        guidance_scale: float = 1.0,
        eta: float = 0.0,
        latents: torch.Tensor | None = None,
    ) -> DDPMPipelineOutput | tuple:
        r"""
        Args:
            batch_size (`int`, defaults to 1): how many images (without class labels, or to repeat one label).
            generator (`torch.Generator` or a list of them, *optional*): makes sampling deterministic.
            num_inference_steps (`int`, defaults to 1000): steps of the (respaced) chain; fewer steps are still a
                proper DDPM chain (the scheduler uses the respaced posterior).
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"`, `"pt"`, or `"latent"` (the final sample in
                [-1, 1] range, unclipped: these pipelines denoise in pixel space).
            return_dict (`bool`, defaults to True): return a [`DDPMPipelineOutput`] instead of a tuple.
            callback_on_step_end (`Callable`, *optional*): called as `callback(pipe, i, t, callback_kwargs)` after
                each step, with `callback_kwargs` holding the names in `callback_on_step_end_tensor_inputs` (any of
                `pipe._callback_tensor_inputs`: `latents` is x_{t-1}, `pred_original_sample` the x_0 estimate (None
                for schedulers without one), `class_labels` the UNet's labels); returned tensors replace them. It may
                also change `pipe._guidance_scale` or set `pipe._interrupt`, as with diffusers' pipelines.
            timesteps (`list[int]`, *optional*): custom descending timesteps instead of `num_inference_steps`.
            trajectory_every (`int`, *optional*): record every k-th x_t and x_0 estimate (plus x_T and the final
                sample) in `output.trajectory`, to draw the reverse process.
            class_labels (`int`, `str`, a list of them, or a `torch.Tensor`, *optional*): the class of each image, for
                a class-conditional UNet: indices 0..num_classes-1, or names from `pipe.class_names`. A list or a
                tensor makes one image per label (as diffusers' DiTPipeline); a single label is repeated `batch_size`
                times. Without class_labels (and without guidance) a class-conditional UNet samples the null class,
                i.e. unconditionally.
            guidance_scale (`float`, defaults to 1.0): s in eps_uncond + s (eps_cond - eps_uncond), with eps_uncond
                the prediction for the null label. As in diffusers, guidance runs for s > 1 (one batched UNet call of
                twice the batch); s <= 1 samples the labels without it. Needs `class_labels` when not 1.0.
            eta (`float`, defaults to 0.0): DDIM's eta (Song et al. 2021), passed to schedulers whose `step` takes it.
            latents (`torch.Tensor`, *optional*): x_T (batch, channels, height, width) instead of a fresh draw; it is
                multiplied by the scheduler's `init_noise_sigma`, as in diffusers.

        Returns:
            [`DDPMPipelineOutput`] with `images` (and `trajectory`), or the tuple `(images,)` / `(images, trajectory)`.
        """
        batch_size = check_positive_int("batch_size", batch_size)
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real):
            raise ValueError(f"guidance_scale must be a number, got {guidance_scale!r}: pass e.g. 3.0 (1.0: none).")
        self._guidance_scale = float(guidance_scale)
        self._interrupt = False
        num_classes = self.num_classes
        if num_classes is None and class_labels is not None:
            raise ValueError(
                "class_labels were given but this pipeline's UNet is unconditional (no num_class_embeds):"
                " drop class_labels."
            )
        if num_classes is None and guidance_scale != 1.0:
            raise ValueError(
                f"guidance_scale={guidance_scale} needs a class-conditional UNet, but this one is unconditional:"
                " drop guidance_scale."
            )
        if num_classes is not None and class_labels is None and guidance_scale != 1.0:
            raise ValueError(
                f"guidance_scale={guidance_scale} guides towards class_labels, but none were given: pass class_labels"
                " (an index or a name from pipe.class_names), or guidance_scale=1.0 to sample unconditionally."
            )
        device = self._execution_device
        labels = None
        if num_classes is not None:
            if class_labels is None:  # the null label: unconditional samples from the class-conditional UNet
                labels = torch.full((batch_size,), num_classes, dtype=torch.long, device=device)
            else:
                labels = self.class_label_tensor(class_labels, batch_size, device)
            batch_size = len(labels)
            if self.do_classifier_free_guidance:  # one batched UNet call per step: null labels first, classes second
                labels = torch.cat([torch.full_like(labels, num_classes), labels])
        self.check_sampling_arguments(batch_size, generator, callback_on_step_end_tensor_inputs)
        latents = self.prepare_noise(batch_size, generator, device, self.unet.dtype, latents)
        return self.sample_chain(
            latents, {"class_labels": labels}, generator, eta, num_inference_steps, timesteps, callback_on_step_end,
            callback_on_step_end_tensor_inputs, trajectory_every, output_type, return_dict,
        )


class DDPMTextToImagePipeline(ReverseChainMixin, InstalledPackageMixin, DiffusionPipeline):
    r"""
    Text-to-image DDPM in pixel space: every denoising step sees the same CLIP encoding of the prompt (through the
    UNet's cross-attention), with classifier-free guidance (Ho & Salimans 2022).

    Args:
        unet ([`UNet2DConditionModel`]): cross-attends to the text encoder's hidden states.
        scheduler ([`DDPMPosteriorScheduler`]): the reverse step; any scheduler in `DDPMScheduler.compatibles` works.
        text_encoder ([`transformers.CLIPTextModel`]): encodes the prompt.
        tokenizer ([`transformers.CLIPTokenizer`]): tokenizes the prompt.
    """

    model_cpu_offload_seq = "text_encoder->unet"
    # `prompt_embeds` is what the UNet cross-attends to: [negative; positive] while guiding, as in StableDiffusion
    _callback_tensor_inputs = ["latents", "pred_original_sample", "prompt_embeds"]

    def __init__(self, unet: UNet2DConditionModel, scheduler, text_encoder, tokenizer):
        super().__init__()
        check_text_components(unet, text_encoder, tokenizer)
        self.register_modules(unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer)

    def encode_prompt(
        self,
        prompt,
        device,
        num_images_per_prompt: int,
        do_classifier_free_guidance: bool,
        negative_prompt=None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        r"""
        The prompts' CLIP last hidden states, padded to the tokenizer's maximum length, as diffusers' text pipelines
        encode them: each repeated `num_images_per_prompt` times, and with guidance the negative prompts' too (the
        empty prompt by default, which the trainer's `--conditioning_dropout_prob` teaches).

        Args:
            prompt (`str` or `list[str]`): the prompts; or pass `prompt_embeds`.
            device (`torch.device`): where the encodings go.
            num_images_per_prompt (`int`): images for each prompt.
            do_classifier_free_guidance (`bool`): whether to encode the negative prompts too.
            negative_prompt (`str` or `list[str]`, *optional*): one for all prompts, or one per prompt.
            prompt_embeds / negative_prompt_embeds (`torch.Tensor`, *optional*): precomputed encodings (batch, tokens,
                hidden size).

        Returns:
            `(prompt_embeds, negative_prompt_embeds)`, the second None without guidance.
        """
        if prompt_embeds is None:
            prompt_embeds = self.encode_text(prompt, "prompt", device)
        else:
            prompt_embeds = self.checked_embeddings(prompt_embeds, "prompt_embeds", device)
        batch = prompt_embeds.shape[0]
        if do_classifier_free_guidance:
            if negative_prompt_embeds is None:
                if negative_prompt is None:
                    negative_prompt = [""] * batch
                elif isinstance(negative_prompt, str):
                    negative_prompt = [negative_prompt] * batch
                negative_prompt_embeds = self.encode_text(negative_prompt, "negative_prompt", device)
            else:
                negative_prompt_embeds = self.checked_embeddings(
                    negative_prompt_embeds, "negative_prompt_embeds", device
                )
            if negative_prompt_embeds.shape != prompt_embeds.shape:
                raise ValueError(
                    f"negative prompts give {tuple(negative_prompt_embeds.shape)} embeddings but the prompts give"
                    f" {tuple(prompt_embeds.shape)}: pass one negative prompt per prompt."
                )
            negative_prompt_embeds = negative_prompt_embeds.repeat_interleave(num_images_per_prompt, 0)
        prompt_embeds = prompt_embeds.repeat_interleave(num_images_per_prompt, 0)
        return prompt_embeds, negative_prompt_embeds

    def encode_text(self, prompt, name: str, device) -> torch.Tensor:
        """CLIP's last hidden states for a prompt or a list of them, padded to the tokenizer's maximum length."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else None
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"{name} must be a string or a non-empty list of strings, got {prompt!r}.")
        tokens = self.tokenizer(
            prompts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True,
            return_tensors="pt",
        )
        return self.text_encoder(tokens.input_ids.to(device))[0]

    def checked_embeddings(self, embeds: torch.Tensor, name: str, device) -> torch.Tensor:
        width = self.unet.config.cross_attention_dim if self.unet is not None else embeds.shape[-1]
        if embeds.ndim != 3 or embeds.shape[-1] != width:
            raise ValueError(f"{name} must be (batch, tokens, {width}), got {tuple(embeds.shape)}.")
        return embeds.to(device)

    def predict(self, x_t: torch.Tensor, t, prompt_embeds: torch.Tensor) -> torch.Tensor:
        """The UNet's output at x_t, cross-attending to the prompts (guided: [negative; positive])."""
        return self.guided(self.unet, x_t, t, encoder_hidden_states=prompt_embeds,
                           cross_attention_kwargs=self._cross_attention_kwargs)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        guidance_scale: float = 3.0,
        num_inference_steps: int = 1000,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 (diffusers' signature; never mutated)
        timesteps: list[int] | None = None,
        trajectory_every: int | None = None,
        eta: float = 0.0,
        latents: torch.Tensor | None = None,
        cross_attention_kwargs: dict | None = None,
    ) -> DDPMPipelineOutput | tuple:
        r"""
        Args:
            prompt (`str` or `list[str]`): what to draw; or pass `prompt_embeds`.
            negative_prompt (`str` or `list[str]`, *optional*): the unconditional side of guidance (default: the empty
                prompt, which the trainer's `--conditioning_dropout_prob` teaches); one per prompt when a list.
            num_images_per_prompt (`int`, defaults to 1): images for each prompt.
            guidance_scale (`float`, defaults to 3.0): w in eps_uncond + w (eps_cond - eps_uncond); as in diffusers,
                guidance runs for w > 1, and w <= 1 samples the prompts without the unconditional pass.
            num_inference_steps, generator, output_type, return_dict, timesteps, trajectory_every, eta, latents: as in
                [`DDPMImagePipeline`].
            prompt_embeds / negative_prompt_embeds (`torch.Tensor`, *optional*): precomputed text encodings
                (batch, tokens, hidden size), instead of `prompt` / `negative_prompt` (see `encode_prompt`).
            callback_on_step_end, callback_on_step_end_tensor_inputs: as in [`DDPMImagePipeline`]; the tensors are
                `latents`, `pred_original_sample` and `prompt_embeds` ([negative; positive] while guiding, so a
                callback can cut guidance off as diffusers' `SDCFGCutoffCallback` does).
            cross_attention_kwargs (`dict`, *optional*): passed to the UNet's attention processors.
        """
        num_images_per_prompt = check_positive_int("num_images_per_prompt", num_images_per_prompt)  # before encoding
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("Pass exactly one of prompt and prompt_embeds.")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("Pass at most one of negative_prompt and negative_prompt_embeds.")
        self._guidance_scale = float(guidance_scale)
        self._cross_attention_kwargs = cross_attention_kwargs
        self._interrupt = False
        device = self._execution_device
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, device, num_images_per_prompt, self.do_classifier_free_guidance, negative_prompt,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
        )
        batch_size = prompt_embeds.shape[0]
        if self.do_classifier_free_guidance:  # one batched UNet call per step: unconditional half first
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds])
        prompt_embeds = prompt_embeds.to(self.unet.dtype)
        self.check_sampling_arguments(batch_size, generator, callback_on_step_end_tensor_inputs)
        latents = self.prepare_noise(batch_size, generator, device, self.unet.dtype, latents)
        return self.sample_chain(
            latents, {"prompt_embeds": prompt_embeds}, generator, eta, num_inference_steps, timesteps,
            callback_on_step_end, callback_on_step_end_tensor_inputs, trajectory_every, output_type, return_dict,
        )


def check_text_components(unet, text_encoder, tokenizer) -> None:
    """Refuse parts that cannot work together, with the number each one has."""
    if text_encoder is None or unet is None or tokenizer is None:
        return  # diffusers builds pipelines with missing optional parts; nothing to compare
    hidden = text_encoder.config.hidden_size
    if unet.config.cross_attention_dim != hidden:
        raise ValueError(
            f"The UNet cross-attends to {unet.config.cross_attention_dim}-dim states but the text encoder emits"
            f" {hidden}: build the UNet with cross_attention_dim={hidden}."
        )
    if len(tokenizer) > text_encoder.config.vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the text encoder embeds only"
            f" {text_encoder.config.vocab_size}: use the tokenizer the encoder was trained with."
        )
