# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Class-conditional DDPMImagePipeline: class labels, classifier-free guidance, saved class names, the model card.

Convention: a class-conditional UNet2DModel has num_class_embeds = num_classes + 1, the last label being the null
label ("no class") used for the unconditional half of guidance.
"""

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import UNet2DModel
from diffusers.utils.torch_utils import randn_tensor
from huggingface_hub import ModelCard
from support.hub_clients import hub_env, this_process_on
from support.hub_server import HubServer
from support.models import tiny_unet
from support.processes import fork_runner, run_forked, run_python

from ddpm_hf import DDPMImagePipeline, DDPMPosteriorScheduler
from ddpm_hf.hub import push_pipeline_to_hub, render_model_card

STEPS = 4
NAMES = ["zero", "one", "two"]
NULL = len(NAMES)


def class_unet(out_channels: int = 1, seed: int = 0, num_class_embeds: int = NULL + 1) -> UNet2DModel:
    """support.models.tiny_unet with a class-embedding table (nn.Embedding, added to the time embedding)."""
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=8, in_channels=1, out_channels=out_channels, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=8, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        num_class_embeds=num_class_embeds,
    )


def make_pipeline(out_channels: int = 1, class_names=NAMES, **scheduler_kwargs) -> DDPMImagePipeline:
    pipe = DDPMImagePipeline(unet=class_unet(out_channels), scheduler=DDPMPosteriorScheduler(**scheduler_kwargs),
                             class_names=class_names)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(pipe, seed: int = 0, batch_size: int = 2, **kwargs) -> torch.Tensor:
    return pipe(batch_size=batch_size, generator=torch.Generator().manual_seed(seed), num_inference_steps=STEPS,
                output_type="pt", **kwargs).images


def reference(pipe, labels: list[int], guidance_scale: float, seed: int = 0) -> torch.Tensor:
    """The chain by hand, in float32: the conditional and the unconditional (null) predictions as two UNet calls."""
    unet, scheduler = pipe.unet, pipe.scheduler
    generator = torch.Generator().manual_seed(seed)
    shape = (len(labels), unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    x = randn_tensor(shape, generator=generator, dtype=torch.float32)
    cond, null = torch.tensor(labels), torch.full((len(labels),), NULL)
    scheduler.set_timesteps(STEPS)
    with torch.no_grad():
        for t in scheduler.timesteps:
            conditional = unet(x, t, class_labels=cond).sample
            if guidance_scale == 1.0:
                model_output = conditional
            else:
                unconditional = unet(x, t, class_labels=null).sample
                eps = unconditional[:, :1] + guidance_scale * (conditional[:, :1] - unconditional[:, :1])
                model_output = torch.cat([eps, conditional[:, 1:]], dim=1)  # a learned variance: conditional
            x = scheduler.step(model_output, t, x, generator=generator).prev_sample
    return (x / 2 + 0.5).clamp(0, 1)


class UNetCalls:
    """Counts the UNet's forward calls and records the batch and class labels of each."""

    def __init__(self, unet):
        self.calls = []
        self.handle = unet.register_forward_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs, output):
        sample = args[0] if args else kwargs["sample"]
        labels = kwargs.get("class_labels")
        self.calls.append((sample.shape[0], None if labels is None else labels.tolist()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_labels_by_int_name_and_tensor_give_the_same_images():
    pipe = make_pipeline()
    by_int = sample(pipe, class_labels=[0, 2])
    assert torch.equal(sample(pipe, class_labels=["zero", "two"]), by_int)
    assert torch.equal(sample(pipe, class_labels=torch.tensor([0, 2])), by_int)
    assert torch.equal(sample(pipe, class_labels=[np.int64(0), "two"]), by_int)  # numpy ints and names mixed
    assert not torch.equal(sample(pipe, class_labels=[1, 1]), by_int)  # the label does condition the UNet


def test_one_label_broadcasts_to_the_batch():
    pipe = make_pipeline()
    full = sample(pipe, batch_size=3, class_labels=[1, 1, 1])
    for one in (1, "one", [1], ["one"], torch.tensor(1), torch.tensor([1])):
        assert torch.equal(sample(pipe, batch_size=3, class_labels=one), full), one


def test_guidance_one_is_one_plain_conditional_call_per_step():
    pipe = make_pipeline()
    with UNetCalls(pipe.unet) as calls:
        images = sample(pipe, class_labels=[2, 0], guidance_scale=1.0)
    assert calls.calls == [(2, [2, 0])] * STEPS  # no unconditional half
    assert torch.equal(images, reference(pipe, [2, 0], 1.0))
    assert torch.equal(sample(pipe, class_labels=[2, 0]), images)  # 1.0 is the default


@pytest.mark.parametrize("out_channels, variance_type", [(1, "fixed_small"), (2, "learned_range")])
def test_guidance_is_one_batched_call_and_matches_two_separate_calls(out_channels, variance_type):
    pipe = make_pipeline(out_channels, variance_type=variance_type)
    with UNetCalls(pipe.unet) as calls:
        guided = sample(pipe, class_labels=[1, 2], guidance_scale=3.0)
    assert calls.calls == [(4, [NULL, NULL, 1, 2])] * STEPS  # [x, x] with [null, labels], one call per step
    expected = reference(pipe, [1, 2], 3.0)
    torch.testing.assert_close(guided, expected, rtol=0, atol=1e-5)  # float32 rounding of batched vs separate
    assert not torch.allclose(guided, sample(pipe, class_labels=[1, 2]), atol=1e-3)  # guidance changes the images


def test_no_labels_and_no_guidance_sample_the_null_class():
    pipe = make_pipeline()
    with UNetCalls(pipe.unet) as calls:
        images = sample(pipe)
    assert calls.calls == [(2, [NULL, NULL])] * STEPS
    null = torch.full((2,), NULL)  # the reference: the null label as the only one
    generator = torch.Generator().manual_seed(0)
    x = randn_tensor((2, 1, 8, 8), generator=generator)
    pipe.scheduler.set_timesteps(STEPS)
    with torch.no_grad():
        for t in pipe.scheduler.timesteps:
            x = pipe.scheduler.step(pipe.unet(x, t, class_labels=null).sample, t, x, generator=generator).prev_sample
    assert torch.equal(images, (x / 2 + 0.5).clamp(0, 1))


def test_class_names_are_optional_and_indices_still_work():
    pipe = make_pipeline(class_names=None)
    assert pipe.class_names is None and pipe.config.class_names is None and pipe.num_classes == NULL
    assert torch.equal(sample(pipe, class_labels=[0, 2]), sample(make_pipeline(), class_labels=[0, 2]))


def error_of(call) -> str:
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    return message


VALID = "valid labels are indices 0..2 or names 'zero', 'one', 'two'"


@pytest.mark.parametrize("labels, expected", [
    ("cow", f"Unknown class name 'cow': {VALID}."),
    (NULL, f"Unknown class label 3: {VALID}."),  # the null label is no class
    ([0, -1], f"Unknown class label -1: {VALID}."),
    (True, f"Unknown class label True: {VALID}."),
    (1.0, f"Unknown class label 1.0: {VALID}."),
    (torch.tensor([0, 7]), f"Unknown class label 7: {VALID}."),
    (torch.tensor([0.0, 1.0]), "A class_labels tensor must hold integers in one dimension, got dtype torch.float32"),
    ([0, 1], "Got 2 class labels for batch_size=3: a list of labels makes one image each (drop batch_size), and"
             " batch_size repeats a single label."),
])
def test_bad_class_labels_are_one_line_errors_naming_the_valid_ones(labels, expected):
    pipe = make_pipeline()
    assert error_of(lambda: sample(pipe, batch_size=3, class_labels=labels)).startswith(expected)


def test_errors_for_conditioning_that_cannot_work_name_the_fix():
    unconditional = DDPMImagePipeline(unet=tiny_unet(), scheduler=DDPMPosteriorScheduler())
    conditional, unnamed = make_pipeline(), make_pipeline(class_names=None)
    assert error_of(lambda: sample(unconditional, class_labels=0)) == (
        "class_labels were given but this pipeline's UNet is unconditional (no num_class_embeds): drop class_labels.")
    assert error_of(lambda: sample(unconditional, guidance_scale=2.0)).endswith("unconditional: drop guidance_scale.")
    assert error_of(lambda: sample(conditional, guidance_scale=2.0)) == (
        "guidance_scale=2.0 guides towards class_labels, but none were given: pass class_labels (an index or a name"
        " from pipe.class_names), or guidance_scale=1.0 to sample unconditionally.")
    assert error_of(lambda: sample(conditional, class_labels=0, guidance_scale="3")).startswith(
        "guidance_scale must be a number, got '3'")
    assert error_of(lambda: sample(unnamed, class_labels="one")) == (
        "Class name 'one' given, but this pipeline has no class_names: pass indices 0..2.")
    assert error_of(lambda: DDPMImagePipeline(tiny_unet(), DDPMPosteriorScheduler(), class_names=NAMES)) == (
        "class_names were given (3) but the UNet is unconditional (no num_class_embeds): build it with"
        " num_class_embeds=4, or drop class_names.")
    assert error_of(lambda: DDPMImagePipeline(class_unet(), DDPMPosteriorScheduler(), class_names=["a", "b"])) == (
        "Got 2 class_names but the UNet has 3 classes (num_class_embeds=4, the last being the null label): pass one"
        " name per class.")
    assert "must be unique" in error_of(
        lambda: DDPMImagePipeline(class_unet(), DDPMPosteriorScheduler(), class_names=["a", "b", "a"]))
    assert "num_class_embeds=num_classes + 1" in error_of(
        lambda: DDPMImagePipeline(class_unet(num_class_embeds=1), DDPMPosteriorScheduler(), class_names=None))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("class-pipe") / "pipeline"
    pipe = make_pipeline(clip_sample=False)
    pipe.save_pretrained(folder)
    np.save(folder.parent / "reference.npy", sample(pipe, class_labels=["two", "zero"], guidance_scale=2.0).numpy())
    return folder


def test_class_names_are_saved_and_load_back_in_process(saved):
    index = json.loads((saved / "model_index.json").read_text())
    # Not a list: diffusers reads every list in model_index.json as a [library, class] component entry.
    assert index["class_names"] == {"0": "zero", "1": "one", "2": "two"}
    assert index["_class_name"] == ["pipeline_ddpm_hf", "DDPMImagePipeline"]
    pipe = DDPMImagePipeline.from_pretrained(saved)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.class_names == pipe.class_names == NAMES and pipe.num_classes == NULL
    images = sample(pipe, class_labels=["two", "zero"], guidance_scale=2.0).numpy()
    assert np.array_equal(images, np.load(saved.parent / "reference.npy"))
    pipe.save_pretrained(saved.parent / "again")  # a loaded pipeline saves the same names
    again = json.loads((saved.parent / "again" / "model_index.json").read_text())
    assert again["class_names"] == index["class_names"]


def test_class_names_as_a_mapping_or_a_list_on_disk_both_load(saved, tmp_path):
    shuffled = {"2": "two", "0": "zero", "1": "one"}  # the model_index.json form, in any key order
    assert DDPMImagePipeline(class_unet(), DDPMPosteriorScheduler(), class_names=shuffled).config.class_names == NAMES
    folder = tmp_path / "list-on-disk"  # as a plain DiffusionPipeline.save_config would write it
    shutil.copytree(saved, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "class_names": NAMES}))
    assert DDPMImagePipeline.from_pretrained(folder).config.class_names == NAMES


def test_class_names_load_with_installed_classes_and_stock_parts_in_fresh_process(saved):
    out = run_python(f"""
        import numpy as np, torch
        from diffusers import DDPMScheduler, DiffusionPipeline, UNet2DModel
        from ddpm_hf import DDPMImagePipeline
        reference = np.load({str(saved.parent / 'reference.npy')!r})
        # DiffusionPipeline.from_pretrained needs trust_remote_code=True (it runs the shipped code), ddpm_hf or not
        for pipe in (DDPMImagePipeline.from_pretrained({str(saved)!r}),
                     DiffusionPipeline.from_pretrained({str(saved)!r}, trust_remote_code=True)):
            pipe.set_progress_bar_config(disable=True)
            assert type(pipe).__name__ == "DDPMImagePipeline", type(pipe)
            assert pipe.config.class_names == pipe.class_names == {NAMES!r}, pipe.config.class_names
            images = pipe(batch_size=2, class_labels=["two", "zero"], guidance_scale=2.0, num_inference_steps={STEPS},
                          generator=torch.Generator().manual_seed(0), output_type="pt").images
            print(np.abs(images.numpy() - reference).max())
        assert type(DDPMImagePipeline.from_pretrained({str(saved)!r})) is DDPMImagePipeline
        unet = UNet2DModel.from_pretrained({str(saved)!r}, subfolder="unet")
        DDPMScheduler.from_pretrained({str(saved)!r}, subfolder="scheduler")
        print(unet.config.num_class_embeds)
    """)
    assert out.split() == ["0.0", "0.0", str(NULL + 1)]


def test_class_names_load_with_remote_code_where_ddpm_hf_is_not_importable(saved):
    out = run_python(f"""
        import sys
        sys.modules["ddpm_hf"] = None  # the package cannot be imported at all
        import numpy as np, torch
        from diffusers import DiffusionPipeline
        pipe = DiffusionPipeline.from_pretrained({str(saved)!r}, trust_remote_code=True)
        pipe.set_progress_bar_config(disable=True)
        assert type(pipe).__name__ == "DDPMImagePipeline" and type(pipe).__module__ != "ddpm_hf.pipeline_ddpm_hf"
        assert not any(name.startswith("ddpm_hf.") for name in sys.modules)
        assert pipe.config.class_names == pipe.class_names == {NAMES!r}, pipe.config.class_names
        images = pipe(batch_size=2, class_labels=["two", "zero"], guidance_scale=2.0, num_inference_steps={STEPS},
                      generator=torch.Generator().manual_seed(0), output_type="pt").images
        print(np.abs(images.numpy() - np.load({str(saved.parent / 'reference.npy')!r})).max())
    """)
    assert float(out.strip().splitlines()[-1]) == 0.0


def test_model_card_lists_the_classes_and_shows_guided_sampling_without_ddpm_pipeline():
    card = render_model_card(make_pipeline(class_names=["cat", "dog", "a|b"]), repo_id="user/classes",
                             sample_grid_filename=None)
    text = card.text
    assert "class-conditional" in card.data.to_dict()["tags"]
    assert "## Classes" in text and "| 0 | cat |\n| 1 | dog |\n| 2 | a\\|b |" in text
    assert "3 classes + a null label (label 3)" in text
    assert 'pipe(batch_size=16, class_labels="cat", guidance_scale=3.0,' in text
    assert "DDPMPipeline(" not in text and "import DDPMPipeline" not in text and ", DDPMPipeline" not in text
    assert 'UNet2DModel.from_pretrained("user/classes", subfolder="unet")' in text  # the stock parts still load

    unnamed = render_model_card(make_pipeline(class_names=None), repo_id="user/x", sample_grid_filename=None).text
    assert "| 0 | (no name recorded) |" in unnamed and "class_labels=0, guidance_scale=3.0" in unnamed
    unconditional = DDPMImagePipeline(unet=tiny_unet(), scheduler=DDPMPosteriorScheduler())
    plain = render_model_card(unconditional, repo_id="user/u", sample_grid_filename=None).text
    assert "pipe = DDPMPipeline(unet=unet, scheduler=scheduler)" in plain and "## Classes" not in plain


def test_pushed_to_the_hub_loads_with_remote_code_from_the_repo_id_without_ddpm_hf(saved, tmp_path):
    """diffusers' Hub download reads every list in model_index.json as a component: class_names must not be one."""
    token, repo = "hf_test_token_c1a55names0000000", "user/class-ddpm"
    with HubServer(token=token) as hub, this_process_on(hub):
        push_pipeline_to_hub(DDPMImagePipeline.from_pretrained(saved), repo, token=token)
        card = ModelCard(hub.files(repo)["README.md"].decode())
        assert "| 1 | one |" in card.text and "DDPMPipeline(" not in card.text
        home = tmp_path / "home"
        out = run_python(f"""
            import sys
            sys.modules["ddpm_hf"] = None  # not importable: everything comes from the repo
            import numpy as np, torch
            from diffusers import DiffusionPipeline
            pipe = DiffusionPipeline.from_pretrained({repo!r}, trust_remote_code=True)
            pipe.set_progress_bar_config(disable=True)
            assert type(pipe).__name__ == "DDPMImagePipeline", type(pipe)
            assert pipe.config.class_names == pipe.class_names == {NAMES!r}, pipe.config.class_names
            images = pipe(batch_size=2, class_labels=["two", "zero"], guidance_scale=2.0, num_inference_steps={STEPS},
                          generator=torch.Generator().manual_seed(0), output_type="pt").images
            print(np.abs(images.numpy() - np.load({str(saved.parent / 'reference.npy')!r})).max())
        """, env=hub_env(hub, home))
    assert float(out.strip().splitlines()[-1]) == 0.0


def test_the_sample_command_takes_classes_by_name_or_number(saved, tmp_path):
    """`ddpm-hf sample --class`: names and numbers both reach the pipeline; a bad class is one line, exit 2. The three
    command lines run in one interpreter, each in a forked child (support.processes.fork_runner)."""
    def argv(*labels, out="grid.png"):
        return ["sample", str(saved), "--num-images", "2", "--steps", "2", "--device", "cpu", "--out",
                str(tmp_path / out), "--class", *labels, "--guidance-scale", "2"]

    runs = {"by_name": argv(NAMES[1], out="a.png"), "by_number": argv("1", out="b.png"), "bad": argv("cow")}
    runner = fork_runner(setup="import ddpm_hf.cli.sample, ddpm_hf.pipeline_ddpm_hf\nfrom ddpm_hf.cli import main",
                         main="main", prog="ddpm-hf")
    codes = run_forked(runner, runs, tmp_path)
    stderr = {name: (tmp_path / f"{name}.stderr").read_text() for name in runs}
    assert codes["by_name"] == 0 and codes["by_number"] == 0, stderr["by_name"][-2000:] + stderr["by_number"][-2000:]
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert codes["bad"] == 2 and len(stderr["bad"].strip().splitlines()) == 1 and "cow" in stderr["bad"]
