# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""DDPM pipelines: unconditional or class-conditional sampling with a UNet2DModel, and text-to-image with a CLIP
text encoder; both conditional kinds with classifier-free guidance (Ho & Salimans 2022).

This file samples, and is self-contained (torch and diffusers only) because `save_pretrained` copies it into the
saved folder: `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` then loads it where `ddpm_hf` is
not installed. Saving and loading with the package installed live in `ddpm_hf.pipeline_utils`.
"""

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
        timesteps (`list[int]`): the recorded timesteps, from T-1 towards 0 (the last entry is the final sample).
        samples (`torch.Tensor`): (K, B, C, H, W) x_t *after* the step at each recorded timestep, in [-1, 1] range
            (not clipped); the first entry is x_T, the pure noise the chain starts from.
        pred_original_samples (`torch.Tensor`): (K, B, C, H, W) the model's x_0 estimate at each recorded timestep
            (the first entry, for x_T, is zeros).
    """

    timesteps: list[int]
    samples: torch.Tensor
    pred_original_samples: torch.Tensor


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

    def record(self, step_index: int, timestep: int, sample: torch.Tensor, pred_original_sample: torch.Tensor):
        if (step_index + 1) % self.every == 0 or step_index == self.num_steps - 1:
            self.timesteps.append(int(timestep))
            self.samples.append(sample.detach().float().cpu())
            self.pred_original_samples.append(pred_original_sample.detach().float().cpu())

    def result(self) -> DDPMTrajectory:
        return DDPMTrajectory(self.timesteps, torch.stack(self.samples), torch.stack(self.pred_original_samples))


def positive_int(name: str, value) -> int:
    """`value` as an int, refusing what is not a positive whole number (bools and floats too) with a clear error."""
    # Checked up front: 0 or -1 images would otherwise fail deep inside diffusers with a reshape error.
    try:
        number = None if isinstance(value, bool) else operator.index(value)  # ints and numpy ints, not 2.0
    except TypeError:
        number = None
    if number is None or number < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}: pass a whole number, at least 1.")
    return number


def classifier_free_guidance(both: torch.Tensor, guidance_scale: float, channels: int) -> torch.Tensor:
    """eps_uncond + s (eps_cond - eps_uncond) from one batched UNet output, unconditional half first.

    Only the first `channels` output channels (the prediction) are guided; a learned variance (channels `channels:`)
    comes from the conditional half.
    """
    unconditional, conditional = both.chunk(2)
    c = channels
    guided = unconditional[:, :c] + guidance_scale * (conditional[:, :c] - unconditional[:, :c])
    return torch.cat([guided, conditional[:, c:]], dim=1)


def postprocess_images(sample: torch.Tensor, output_type: str, numpy_to_pil: Callable):
    """[-1, 1] tensor -> `pil` images, an `np` array (B, H, W, C) in [0, 1], or a `pt` tensor (B, C, H, W) in [0, 1]."""
    if output_type not in ("pil", "np", "pt"):
        raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}.")
    image = (sample / 2 + 0.5).clamp(0, 1)
    if output_type == "pt":
        return image
    image = image.cpu().permute(0, 2, 3, 1).float().numpy()
    return numpy_to_pil(image) if output_type == "pil" else image


class DDPMHFPipelineMixin:
    """What the ddpm-hf pipelines share: saving and loading (see the README's "Loading" section) and the chain."""

    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True, **kwargs):
        """`DiffusionPipeline.save_pretrained`, plus the shipped code, written beside `save_directory` and swapped in.

        Weights are always safetensors. A crash while saving leaves the previous pipeline in `save_directory`.
        Without the ddpm-hf package (loaded with `trust_remote_code=True`), diffusers' own `save_pretrained`.
        """
        if pipeline_utils is None:
            return super().save_pretrained(save_directory, safe_serialization=safe_serialization, **kwargs)
        pipeline_utils.save_pipeline(self, save_directory, super().save_pretrained, safe_serialization, **kwargs)

    def prepare_noise(self, batch_size: int, generator, device, dtype) -> torch.Tensor:
        """x_T ~ N(0, I), drawn exactly as diffusers' DDPMPipeline draws it (same generator, same images)."""
        size = self.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else size
        shape = (batch_size, self.unet.config.in_channels, height, width)
        if device.type == "mps":  # randn does not exist on mps
            return randn_tensor(shape, generator=generator, dtype=dtype).to(device)
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype)

    def check_sampling_arguments(self, batch_size: int, generator, callback_on_step_end_tensor_inputs) -> None:
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs may name {self._callback_tensor_inputs}, not {sorted(unknown)}."
            )
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators for {batch_size} images: pass one per image.")

    def sample_chain(
        self, latents, predict, generator, num_inference_steps, timesteps, callback_on_step_end,
        callback_on_step_end_tensor_inputs, trajectory_every, output_type, return_dict,
    ):
        """Algorithm 2 of Ho et al.: x_T -> x_0 through the scheduler's chain; `predict(x_t, t)` is the model call."""
        if timesteps is not None:
            self.scheduler.set_timesteps(timesteps=timesteps)
        else:
            self.scheduler.set_timesteps(num_inference_steps)
        chain = self.scheduler.timesteps
        recorder = TrajectoryRecorder(trajectory_every, latents, len(chain)) if trajectory_every else None

        for i, t in enumerate(self.progress_bar(chain)):
            step = self.scheduler.step(predict(latents, t), t, latents, generator=generator)
            latents, pred_original_sample = step.prev_sample, step.pred_original_sample
            if recorder is not None:
                recorder.record(i, t, latents, pred_original_sample)
            if callback_on_step_end is not None:
                tensors = {"latents": latents, "pred_original_sample": pred_original_sample}
                outputs = callback_on_step_end(self, i, t, {k: tensors[k] for k in callback_on_step_end_tensor_inputs})
                latents = (outputs or {}).get("latents", latents)

        images = postprocess_images(latents, output_type, self.numpy_to_pil)
        self.maybe_free_model_hooks()
        trajectory = recorder.result() if recorder is not None else None
        if not return_dict:
            return (images,) if trajectory is None else (images, trajectory)
        return DDPMPipelineOutput(images=images, trajectory=trajectory)

    def variational_bound(self, images: torch.Tensor, generator=None, batch_size: int = 64, timesteps=None, **kwargs):
        """The ELBO (Ho et al. 2020, eq. 5) in bits/dim for `images` in [-1, 1]: see `ddpm_hf.variational_bound`.

        Text-to-image pipelines pass `encoder_hidden_states=pipe.encode_prompt(prompts, device)`.
        """
        try:
            from ddpm_hf import variational_bound
        except ImportError as error:  # loaded with trust_remote_code where the package is absent
            raise ImportError("variational_bound needs the ddpm-hf package: pip install ddpm-hf.") from error
        return variational_bound(self.unet, self.scheduler, images, generator=generator, batch_size=batch_size,
                                 timesteps=timesteps, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """`DiffusionPipeline.from_pretrained` for a folder or a Hub repo id, online or offline from the cache.

        A Hub repo is downloaded whole first, so the installed classes load it without running the repo's code.
        Weights load from safetensors only: unpickling a `.bin` checkpoint can run arbitrary code, so a caller who
        trusts one opts in with `use_safetensors=False` (and can `save_pretrained` it once to convert it).
        """
        kwargs.setdefault("use_safetensors", True)
        name = pretrained_model_name_or_path
        if pipeline_utils is not None:
            name = pipeline_utils.resolve_pretrained(cls, name, kwargs)
        return super().from_pretrained(name, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs):
        """Save, render the model card and upload: see `ddpm_hf.hub.push_pipeline_to_hub`."""
        try:
            from ddpm_hf.hub import push_pipeline_to_hub
        except ImportError as error:
            raise ImportError("push_to_hub needs the ddpm-hf package: pip install ddpm-hf.") from error
        return push_pipeline_to_hub(self, repo_id, **kwargs)

    @classmethod
    def load_config(cls, *args, **kwargs):
        """Read `model_index.json` so that the installed classes load it, without running the folder's code."""
        output = super().load_config(*args, **kwargs)
        config = output[0] if isinstance(output, tuple) else output
        if pipeline_utils is not None and isinstance(config, dict):
            pipeline_utils.map_shipped_names(cls, config)
        return output


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


class DDPMImagePipeline(DDPMHFPipelineMixin, DiffusionPipeline):
    r"""
    Image generation by ancestral DDPM sampling (Ho et al. 2020, Algorithm 2): unconditional, or class-conditional
    with classifier-free guidance (Ho & Salimans 2022).

    A class-conditional UNet has `num_class_embeds = num_classes + 1` (and `class_embed_type=None`): labels
    0..num_classes-1 are the classes and the last one, `num_classes`, is the null label ("no class") that label dropout
    in training teaches, used for the unconditional half of guidance.

    Args:
        unet ([`UNet2DModel`]): the noise (or x_0, or v) predictor.
        scheduler ([`DDPMPosteriorScheduler`]): the reverse step; any diffusers scheduler with the same API works.
        class_names (`list[str]`, *optional*): the name of each class of a class-conditional UNet, in label order
            (`num_class_embeds - 1` of them); `class_labels` may then name classes. In `pipe.config.class_names`,
            saved in `model_index.json` as `{"0": name, ...}` (a mapping, which is also accepted here).
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["latents", "pred_original_sample"]

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
        """`class_labels` (an int, a name, a list of them, or a tensor) as a (batch_size,) long tensor on `device`."""
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
        if labels.numel() != batch_size:
            raise ValueError(
                f"Got {labels.numel()} class labels for batch_size={batch_size}: pass one label (used for every"
                f" image) or one per image."
            )
        return labels

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
    ) -> DDPMPipelineOutput | tuple:
        r"""
        Args:
            batch_size (`int`, defaults to 1): how many images.
            generator (`torch.Generator` or a list of them, *optional*): makes sampling deterministic.
            num_inference_steps (`int`, defaults to 1000): steps of the (respaced) chain; fewer steps are still a
                proper DDPM chain (the scheduler uses the respaced posterior).
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"` or `"pt"`.
            return_dict (`bool`, defaults to True): return a [`DDPMPipelineOutput`] instead of a tuple.
            callback_on_step_end (`Callable`, *optional*): called as `callback(pipe, i, t, tensors)` after each step,
                with `tensors` holding the names in `callback_on_step_end_tensor_inputs` (`latents` is x_{t-1},
                `pred_original_sample` the x_0 estimate); a returned `latents` replaces x_{t-1}.
            timesteps (`list[int]`, *optional*): custom descending timesteps instead of `num_inference_steps`.
            trajectory_every (`int`, *optional*): record every k-th x_t and x_0 estimate (plus x_T and the final
                sample) in `output.trajectory`, to draw the reverse process.
            class_labels (`int`, `str`, a list of them, or a `torch.Tensor`, *optional*): the class of each image, for
                a class-conditional UNet: indices 0..num_classes-1, or names from `pipe.class_names`. One label is
                used for every image; otherwise pass one per image (`batch_size` of them). Without class_labels (and
                `guidance_scale=1.0`) a class-conditional UNet samples the null class, i.e. unconditionally.
            guidance_scale (`float`, defaults to 1.0): s in eps_uncond + s (eps_cond - eps_uncond), with eps_uncond
                the prediction for the null label; 1.0 disables guidance and skips the unconditional pass. Needs
                `class_labels` when not 1.0.

        Returns:
            [`DDPMPipelineOutput`] with `images` (and `trajectory`), or the tuple `(images,)` / `(images, trajectory)`.
        """
        batch_size = positive_int("batch_size", batch_size)
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real):
            raise ValueError(f"guidance_scale must be a number, got {guidance_scale!r}: pass e.g. 3.0 (1.0: none).")
        guidance_scale = float(guidance_scale)
        do_guidance = guidance_scale != 1.0
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
        self.check_sampling_arguments(batch_size, generator, callback_on_step_end_tensor_inputs)
        device = self._execution_device
        if num_classes is not None:
            if class_labels is None:  # the null label: unconditional samples from the class-conditional UNet
                labels = torch.full((batch_size,), num_classes, dtype=torch.long, device=device)
            else:
                labels = self.class_label_tensor(class_labels, batch_size, device)
            if do_guidance:  # one batched UNet call per step: unconditional (null) half first, conditional second
                labels = torch.cat([torch.full_like(labels, num_classes), labels])
        latents = self.prepare_noise(batch_size, generator, device, self.unet.dtype)

        def predict(x_t, t):
            if num_classes is None:
                return self.unet(x_t, t).sample
            if not do_guidance:
                return self.unet(x_t, t, class_labels=labels).sample
            both = self.unet(torch.cat([x_t, x_t]), t, class_labels=labels).sample
            return classifier_free_guidance(both, guidance_scale, x_t.shape[1])

        return self.sample_chain(
            latents, predict, generator, num_inference_steps, timesteps, callback_on_step_end,
            callback_on_step_end_tensor_inputs, trajectory_every, output_type, return_dict,
        )


class DDPMTextToImagePipeline(DDPMHFPipelineMixin, DiffusionPipeline):
    r"""
    Text-to-image DDPM in pixel space: every denoising step sees the same CLIP encoding of the prompt (through the
    UNet's cross-attention), with classifier-free guidance (Ho & Salimans 2022).

    Args:
        unet ([`UNet2DConditionModel`]): cross-attends to the text encoder's hidden states.
        scheduler ([`DDPMPosteriorScheduler`]): the reverse step.
        text_encoder ([`transformers.CLIPTextModel`]): encodes the prompt.
        tokenizer ([`transformers.CLIPTokenizer`]): tokenizes the prompt.
    """

    model_cpu_offload_seq = "text_encoder->unet"
    _callback_tensor_inputs = ["latents", "pred_original_sample"]

    def __init__(self, unet: UNet2DConditionModel, scheduler, text_encoder, tokenizer):
        super().__init__()
        check_text_components(unet, text_encoder, tokenizer)
        self.register_modules(unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer)

    def encode_prompt(self, prompt: list[str], device) -> torch.Tensor:
        """CLIP's last hidden states for each prompt, padded to the tokenizer's maximum length."""
        tokens = self.tokenizer(
            prompt, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True,
            return_tensors="pt",
        )
        return self.text_encoder(tokens.input_ids.to(device))[0]

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
    ) -> DDPMPipelineOutput | tuple:
        r"""
        Args:
            prompt (`str` or `list[str]`): what to draw; or pass `prompt_embeds`.
            negative_prompt (`str` or `list[str]`, *optional*): the unconditional side of guidance (default: the empty
                prompt, which the trainer's `--conditioning_dropout_prob` teaches); one per prompt when a list.
            num_images_per_prompt (`int`, defaults to 1): images for each prompt.
            guidance_scale (`float`, defaults to 3.0): w in eps_uncond + w (eps_cond - eps_uncond); 1.0 disables
                guidance and skips the unconditional pass.
            num_inference_steps, generator, output_type, return_dict, callback_on_step_end,
            callback_on_step_end_tensor_inputs, timesteps, trajectory_every: as in [`DDPMImagePipeline`].
            prompt_embeds / negative_prompt_embeds (`torch.Tensor`, *optional*): precomputed text encodings
                (batch, tokens, hidden size), instead of `prompt` / `negative_prompt`.
        """
        num_images_per_prompt = positive_int("num_images_per_prompt", num_images_per_prompt)  # before encoding
        device = self._execution_device
        prompt_embeds = self.prompt_embeddings(prompt, prompt_embeds, "prompt", device)
        batch = prompt_embeds.shape[0]
        do_guidance = guidance_scale != 1.0
        if do_guidance:
            if negative_prompt is None and negative_prompt_embeds is None:
                negative_prompt = [""] * batch
            elif isinstance(negative_prompt, str):
                negative_prompt = [negative_prompt] * batch
            negative_prompt_embeds = self.prompt_embeddings(
                negative_prompt, negative_prompt_embeds, "negative_prompt", device
            )
            if negative_prompt_embeds.shape != prompt_embeds.shape:
                raise ValueError(
                    f"negative prompts give {tuple(negative_prompt_embeds.shape)} embeddings but the prompts give"
                    f" {tuple(prompt_embeds.shape)}: pass one negative prompt per prompt."
                )
            # One batched UNet call per step: unconditional half first, conditional half second.
            embeds = torch.cat([negative_prompt_embeds, prompt_embeds]).repeat_interleave(num_images_per_prompt, 0)
        else:
            embeds = prompt_embeds.repeat_interleave(num_images_per_prompt, 0)
        embeds = embeds.to(self.unet.dtype)
        batch_size = batch * num_images_per_prompt
        self.check_sampling_arguments(batch_size, generator, callback_on_step_end_tensor_inputs)
        latents = self.prepare_noise(batch_size, generator, device, self.unet.dtype)

        def predict(x_t, t):
            if not do_guidance:
                return self.unet(x_t, t, encoder_hidden_states=embeds).sample
            both = self.unet(torch.cat([x_t, x_t]), t, encoder_hidden_states=embeds).sample
            return classifier_free_guidance(both, guidance_scale, x_t.shape[1])

        return self.sample_chain(
            latents, predict, generator, num_inference_steps, timesteps, callback_on_step_end,
            callback_on_step_end_tensor_inputs, trajectory_every, output_type, return_dict,
        )

    def prompt_embeddings(self, prompt, embeds, name: str, device) -> torch.Tensor:
        """Exactly one of a prompt (or list) and precomputed embeddings, as a (batch, tokens, hidden) tensor."""
        if (prompt is None) == (embeds is None):
            raise ValueError(f"Pass exactly one of {name} and {name}_embeds.")
        if embeds is not None:
            if embeds.ndim != 3 or embeds.shape[-1] != self.unet.config.cross_attention_dim:
                raise ValueError(
                    f"{name}_embeds must be (batch, tokens, {self.unet.config.cross_attention_dim}), got"
                    f" {tuple(embeds.shape)}."
                )
            return embeds.to(device)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"{name} must be a string or a non-empty list of strings.")
        return self.encode_prompt(prompts, device)


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
