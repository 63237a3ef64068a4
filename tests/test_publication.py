# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""A pipeline folder is published whole (ddpm_hf.pipeline_utils.publication): a process killed at any instant of a
save leaves the previous complete set, the new complete one, or a folder without model_index.json whose message says
how to finish; the next save (or finish_interrupted_publication) completes it, and no hidden leftover survives.

Each kill is a forked child that ends itself with os._exit at one chosen point of the save: inside the block (the
staging half-written), before READY, at every rename of the swap, after the swap."""

import json
import os
import shutil

import pytest
import torch
from support.models import tiny_unet

import ddpm_hf.pipeline_utils as pipeline_utils
from ddpm_hf import DDPMImagePipeline, DDPMPosteriorScheduler
from ddpm_hf.pipeline_utils import finish_interrupted_publication, publication

VERSIONS = {"old": dict(seed=0, variance_type="fixed_small"), "new": dict(seed=1, variance_type="fixed_large")}


def version(name: str) -> DDPMImagePipeline:
    """Two pipelines that differ in every component: UNet weights, scheduler config, and an extra file."""
    settings = VERSIONS[name]
    return DDPMImagePipeline(unet=tiny_unet(seed=settings["seed"]),
                             scheduler=DDPMPosteriorScheduler(variance_type=settings["variance_type"]))


def publish(folder, name: str) -> None:
    """What the trainer's final save does: the pipeline and the files that describe it, as one publication."""
    with publication(folder) as staging:
        version(name).save_pretrained(staging)
        with open(os.path.join(staging, "training_args.json"), "w") as f:
            json.dump({"version": name}, f)


def which_version(folder) -> str:
    """'old' or 'new' if the folder loads, and every part of it is of that version; raises if it does not load."""
    pipe = DDPMImagePipeline.from_pretrained(folder)
    seen = set()
    for name, settings in VERSIONS.items():
        reference = tiny_unet(seed=settings["seed"]).state_dict()
        if all(torch.equal(reference[k], v) for k, v in pipe.unet.state_dict().items()):
            seen.add(("unet", name))
        if pipe.scheduler.config.variance_type == settings["variance_type"]:
            seen.add(("scheduler", name))
    if (folder / "training_args.json").is_file():
        seen.add(("training_args", json.loads((folder / "training_args.json").read_text())["version"]))
    versions = {name for _, name in seen}
    assert len(versions) == 1 and len(seen) >= 2, f"a mix of two versions: {sorted(seen)}"
    return versions.pop()


class Killer:
    """Counts the renames `pipeline_utils` makes (its own `os` only) and ends the process at the chosen one."""

    def __init__(self, real_os, at: int):
        self._os, self.at, self.count = real_os, at, 0

    def __getattr__(self, name):
        return getattr(self._os, name)

    def _counted(self, function, *args):
        self.count += 1
        if self.count == self.at:
            self._os._exit(9)
        return function(*args)



    def rename(self, *args):
        return self._counted(self._os.rename, *args)

    def replace(self, *args):
        return self._counted(self._os.replace, *args)


class Cleanup:
    """`shutil` for `pipeline_utils`, ending the process when it deletes `staging` the second time (the first is
    the stale-journal check at the start of a publication, the second its cleanup at the end)."""

    def __init__(self, real_shutil, staging: str):
        self._shutil, self.staging, self.calls = real_shutil, staging, 0

    def __getattr__(self, name):
        return getattr(self._shutil, name)

    def rmtree(self, path, *args, **kwargs):
        if path == self.staging:
            self.calls += 1
            if self.calls == 2:
                os._exit(9)
        return self._shutil.rmtree(path, *args, **kwargs)


def killed_publish(folder, point, plain_save: bool = False) -> bool:
    """Publish 'new' over 'old' in a forked child that dies at `point` (('rename', k) or a named moment); True if it
    died there, False if it got through. `plain_save`: the child calls `save_pretrained(folder)` instead."""
    pid = os.fork()
    if pid == 0:
        try:
            kind, at = point
            if kind == "rename":
                pipeline_utils.os = Killer(os, at)
            elif kind == "after_swap":  # the journal's deletion, once the new index is in place
                pipeline_utils.shutil = Cleanup(shutil, str(folder / pipeline_utils.STAGING))
            elif kind == "before_ready":
                pipeline_utils.write_text_atomically = lambda *args: os._exit(9)
            if plain_save:
                version("new").save_pretrained(folder)
                os._exit(0)
            with publication(folder) as staging:
                if kind == "writing":
                    version("new").unet.save_pretrained(os.path.join(staging, "unet"))
                    os._exit(9)  # mid-write: a UNet in staging, nothing else
                version("new").save_pretrained(staging)
                with open(os.path.join(staging, "training_args.json"), "w") as f:
                    json.dump({"version": "new"}, f)
            os._exit(0)
        except BaseException:
            os._exit(3)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    assert status in (0, 9), f"the child failed ({status})"
    return status == 9


def test_a_kill_at_any_point_of_a_save_never_leaves_a_mix(tmp_path):
    publish(tmp_path / "probe", "old")
    renames = count_renames(tmp_path / "probe")
    points = [("writing", 0), ("before_ready", 0)] + [("rename", k) for k in range(1, renames + 1)]
    states = []
    for point in [*points, ("after_swap", 0)]:
        folder = tmp_path / f"{point[0]}-{point[1]}"
        publish(folder, "old")
        assert killed_publish(folder, point)
        try:
            state = which_version(folder)
        except OSError as error:  # during the swap's renames: no model_index.json, and the message says why
            message = str(error)
            assert "\n" not in message and "was being saved when its process stopped" in message
            assert "--resume_from_checkpoint latest" in message and "finish_interrupted_publication" in message
            state = "incomplete"
        states.append(state)
        completed = finish_interrupted_publication(folder)  # rolls a complete journal forward, drops any other
        assert which_version(folder) == ("new" if completed else state)
        publish(folder, "new")  # a later successful save leaves no hidden entry behind
        assert which_version(folder) == "new"
        assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]
    # In the order of the kill points: the old set while the new one is written (the nested save's own renames are
    # inside the staging folder), no pipeline during the swap, then the new set.
    runs = [state for i, state in enumerate(states) if i == 0 or states[i - 1] != state]
    assert runs == ["old", "incomplete", "new"], states
    publish(tmp_path / "through", "old")
    assert not killed_publish(tmp_path / "through", ("rename", renames + 1))  # no rename left to die at
    assert which_version(tmp_path / "through") == "new"


def test_a_kill_at_any_rename_of_save_pretrained_never_leaves_a_loadable_mix(tmp_path):
    """The same for `save_pretrained(folder)` alone (before publications it swapped entry by entry: a kill between
    the scheduler and the UNet left a folder that loaded the new scheduler with the old UNet)."""
    for k in range(1, 40):  # until a save gets through (a dozen renames)
        folder = tmp_path / f"rename-{k}"
        version("old").save_pretrained(folder)
        if not killed_publish(folder, ("rename", k), plain_save=True):
            assert which_version(folder) == "new"
            return
        try:
            which_version(folder)  # asserts that whatever loads is one version
        except OSError as error:
            assert "--resume_from_checkpoint latest" in str(error)
    pytest.fail("the save never got through")


def count_renames(folder) -> int:
    """How many renames `pipeline_utils` makes to publish 'new' over 'old' in `folder` (in a child, as exit code)."""
    pid = os.fork()
    if pid == 0:
        killer = Killer(os, at=None)
        pipeline_utils.os = killer
        publish(folder, "new")
        os._exit(killer.count)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_an_interrupted_publication_is_finished_by_the_next_save(tmp_path):
    folder = tmp_path / "p"
    publish(folder, "old")
    renames = count_renames(tmp_path / "probe") if publish(tmp_path / "probe", "old") is None else None
    assert killed_publish(folder, ("rename", renames))  # the last one: the new model_index.json
    with pytest.raises(OSError, match="was being saved"):
        DDPMImagePipeline.from_pretrained(folder)
    version("old").save_pretrained(folder)  # any save into the folder completes the interrupted one first
    assert DDPMImagePipeline.from_pretrained(folder).scheduler.config.variance_type == "fixed_small"
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_leftovers_of_older_saves_are_removed(tmp_path):
    folder = tmp_path / "p"
    publish(folder, "old")
    (folder / ".ddpm-hf-old-abc123" / "unet").mkdir(parents=True)
    (tmp_path / ".p.saving-xyz").mkdir()
    (folder / ".publishing").mkdir()  # a publication that never became complete
    (folder / ".publishing" / "unet").mkdir()
    publish(folder, "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert which_version(folder) == "new"


def test_a_folder_with_checkpoints_but_no_pipeline_names_the_resume(tmp_path):
    (tmp_path / "run" / "checkpoints" / "checkpoint-10").mkdir(parents=True)
    with pytest.raises(OSError, match="has checkpoints but no saved pipeline.*--resume_from_checkpoint latest"):
        DDPMImagePipeline.from_pretrained(tmp_path / "run")


def test_a_malformed_model_index_is_named(tmp_path):
    publish(tmp_path / "p", "old")
    (tmp_path / "p" / "model_index.json").write_text('{"_class_name": ')
    with pytest.raises(OSError, match=r"model_index.json is not valid JSON \(.*\): save the pipeline again"):
        DDPMImagePipeline.from_pretrained(tmp_path / "p")


def test_a_weight_missing_from_the_safetensors_file_is_named(tmp_path):
    """diffusers only warns ("newly initialized") and leaves the weight on the meta device."""
    from safetensors.torch import load_file, save_file

    publish(tmp_path / "p", "old")
    weights_file = tmp_path / "p" / "unet" / "diffusion_pytorch_model.safetensors"
    weights = load_file(weights_file)
    del weights["conv_out.weight"]
    save_file(weights, weights_file)
    with pytest.raises(OSError, match=r"The 'unet' component of .* lacks weights its config needs \(conv_out.weight\)"):
        DDPMImagePipeline.from_pretrained(tmp_path / "p")


def test_loading_imports_only_the_modules_a_saved_pipeline_can_name(tmp_path):
    """An untrusted folder naming ddpm_hf.cli.__main__ would run the command line (and its sys.exit) on import."""
    import sys

    publish(tmp_path / "p", "old")
    index = json.loads((tmp_path / "p" / "model_index.json").read_text())
    index["scheduler"] = ["ddpm_hf.cli.__main__", "DDPMPosteriorScheduler"]
    (tmp_path / "p" / "model_index.json").write_text(json.dumps(index))
    sys.modules.pop("ddpm_hf.cli.__main__", None)
    with pytest.raises(ValueError, match="names the module 'ddpm_hf.cli.__main__' for its 'scheduler' component"):
        DDPMImagePipeline.from_pretrained(tmp_path / "p")
    assert "ddpm_hf.cli.__main__" not in sys.modules
