# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Publishing on the Hub (ddpm_hf.hub) against a local Hub-compatible server driven by the real huggingface_hub client.

Loads run in fresh Python processes with HF_ENDPOINT pointing at the server and HF_HOME in a temporary folder.

One server serves the whole module (`hub`), and one push of a tiny pipeline (`pushed`, with its first download in a
fresh process, `online_load`) serves the tests that read it back. Every other test writes to a repo of its own, and a
test that switches the server off or makes it refuse commits does so in a block (`server_down`, `commits_refused`)
that switches it back however it ends: each test stands alone, in any order.
"""

import contextlib
import json
import os
import subprocess
import tempfile
from concurrent.futures import Future

import huggingface_hub
import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from support.hub_clients import hub_env, this_process_on
from support.hub_server import HubServer, port_is_closed
from support.models import tiny_text_to_image_pipeline, tiny_unet
from support.processes import run_python
from support.training import TINY, launch_command, run_env, script_command

from ddpm_hf import DDPMImagePipeline, DDPMPosteriorScheduler
from ddpm_hf.hub import HubPushError, push_folder_to_hub, push_pipeline_to_hub, render_model_card

TOKEN = "hf_test_token_5kq8ZtW1nXo3BvR7"
REPO = "user/tiny-ddpm"
STEPS = 5
FAST = dict(max_retries=2, retry_backoff=0.01)


def make_pipeline(seed=0):
    pipe = DDPMImagePipeline(unet=tiny_unet(seed=seed), scheduler=DDPMPosteriorScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(pipe):
    return pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=STEPS,
                output_type="np").images


def write_grid(pipe, path):
    images = (sample(pipe)[..., 0] * 255).round().astype(np.uint8)
    Image.fromarray(np.concatenate(list(images), axis=1)).resize((128, 64), Image.NEAREST).save(path)
    return str(path)


@pytest.fixture(scope="module")
def hub():
    """The fake Hub, and this process pointed at it (online, whatever HF_HUB_OFFLINE the test session set)."""
    with HubServer(token=TOKEN) as server, this_process_on(server):
        yield server


@contextlib.contextmanager
def server_down(hub):
    """Nothing accepts connections at the Hub's address inside the block; afterwards it serves again, on the same
    port with the same repos, however the block ended."""
    hub.stop()
    try:
        yield
    finally:
        hub.start()


@contextlib.contextmanager
def commits_refused(hub, status: int = 500):
    """Every commit is answered `status` inside the block (5xx: clients retry; 4xx: they do not); accepted after."""
    hub.fail_commits, hub.state.fail_status = True, status
    try:
        yield
    finally:
        hub.fail_commits, hub.state.fail_status = 0, 500


SAMPLE_CODE = f"""
def images(pipe):
    import torch
    pipe.set_progress_bar_config(disable=True)
    return pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps={STEPS},
                output_type="np").images
"""


@pytest.fixture(scope="module")
def pushed(hub, tmp_path_factory):
    """One push of a tiny pipeline, with a sample grid, a training config (holding secrets) and metrics."""
    root = tmp_path_factory.mktemp("pushed")
    pipe = make_pipeline()
    np.save(root / "reference.npy", sample(pipe))
    grid = write_grid(pipe, root / "grid.png")
    training_config = {
        "max_train_steps": 20, "train_batch_size": 4, "ddpm_beta_schedule": "linear", "prediction_type": "epsilon",
        "variance_type": "fixed_small", "use_ema": True, "mixed_precision": "no", "hardware": "1x CPU",
        "hub_token": TOKEN, "note": f"pushed with {TOKEN}",  # secrets: must not reach the card
    }
    metrics = {"bits/dim": {"value": 7.25, "description": "variational bound on 64 test digits, T=1000"}}
    requests_before = len(hub.requests)
    info = push_pipeline_to_hub(
        pipe, REPO, token=TOKEN, extra_files={"samples.png": grid},
        model_card_kwargs=dict(training_config=training_config, metrics=metrics, dataset_name="ylecun/mnist"),
    )
    return dict(root=root, info=info, grid=grid, reference=np.load(root / "reference.npy"),
                requests=hub.requests[requests_before:])  # the push's own, whatever other tests sent before


@pytest.fixture(scope="module")
def online_load(hub, pushed, tmp_path_factory):
    """A fresh process loads REPO from the Hub (the first download, into its own HF_HOME)."""
    home, out = tmp_path_factory.mktemp("hf-home-a"), tmp_path_factory.mktemp("out-a")
    stdout = run_python(SAMPLE_CODE + f"""
import json, numpy as np, traceback
from ddpm_hf import DDPMImagePipeline
from ddpm_hf.hub import resolve_pipeline_folder
result = {{}}
try:  # the pipeline's own from_pretrained with a repo id
    pipe = DDPMImagePipeline.from_pretrained({REPO!r})
    np.save({str(out / "via_repo_id.npy")!r}, images(pipe))
    result["repo_id"] = type(pipe.scheduler).__module__
except Exception as error:
    result["repo_id_error"] = traceback.format_exc()[-1500:]
folder = resolve_pipeline_folder({REPO!r})
np.save({str(out / "via_folder.npy")!r}, images(DDPMImagePipeline.from_pretrained(folder)))
result["folder"] = folder
print(json.dumps(result))
""", env=hub_env(hub, home))
    return dict(home=home, out=out, result=json.loads(stdout.strip().splitlines()[-1]))


def test_push_then_from_pretrained_in_a_fresh_process_gives_the_same_images(pushed, online_load):
    result, out = online_load["result"], online_load["out"]
    assert result["folder"].startswith(str(online_load["home"]))  # a snapshot in that process's Hub cache
    np.testing.assert_array_equal(np.load(out / "via_folder.npy"), pushed["reference"])
    assert "repo_id_error" not in result, result.get("repo_id_error")
    assert result["repo_id"] == "ddpm_hf.scheduling_ddpm_posterior"  # the installed package's classes
    np.testing.assert_array_equal(np.load(out / "via_repo_id.npy"), pushed["reference"])


def test_diffusion_pipeline_trust_remote_code_and_stock_components_without_ddpm_hf(hub, pushed, tmp_path):
    stdout = run_python(SAMPLE_CODE + f"""
import sys
sys.modules["ddpm_hf"] = None  # not importable: everything must come from the repo
import json, numpy as np
from diffusers import DDPMPipeline, DDPMScheduler, DiffusionPipeline, UNet2DModel
pipe = DiffusionPipeline.from_pretrained({REPO!r}, trust_remote_code=True)
np.save({str(tmp_path / "remote.npy")!r}, images(pipe))
unet = UNet2DModel.from_pretrained({REPO!r}, subfolder="unet")
scheduler = DDPMScheduler.from_pretrained({REPO!r}, subfolder="scheduler")
np.save({str(tmp_path / "stock.npy")!r}, images(DDPMPipeline(unet=unet, scheduler=scheduler)))
print(json.dumps([type(pipe).__name__, type(pipe).__module__, type(pipe.scheduler).__name__]))
""", env=hub_env(hub, tmp_path / "home"))
    name, module, scheduler = json.loads(stdout.strip().splitlines()[-1])
    assert (name, scheduler) == ("DDPMImagePipeline", "DDPMPosteriorScheduler")
    assert module.startswith("diffusers_modules.")
    np.testing.assert_array_equal(np.load(tmp_path / "remote.npy"), pushed["reference"])
    np.testing.assert_allclose(np.load(tmp_path / "stock.npy"), pushed["reference"], atol=2e-3)


def test_offline_from_the_cache_with_the_server_stopped(hub, pushed, online_load, tmp_path):
    with server_down(hub):
        assert port_is_closed(hub.port)
        stdout = run_python(SAMPLE_CODE + f"""
import json, sys, numpy as np
# The card's documented offline workaround for the remote-code path, without ddpm_hf:
sys.modules["ddpm_hf"] = None
from diffusers import DiffusionPipeline
from huggingface_hub import snapshot_download
folder = snapshot_download({REPO!r}, local_files_only=True)
np.save({str(tmp_path / "remote.npy")!r}, images(DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)))
del sys.modules["ddpm_hf"]
from ddpm_hf import DDPMImagePipeline
from ddpm_hf.hub import resolve_pipeline_folder
via_folder = DDPMImagePipeline.from_pretrained(resolve_pipeline_folder({REPO!r}))
np.save({str(tmp_path / "via_folder.npy")!r}, images(via_folder))
result = {{}}
try:
    np.save({str(tmp_path / "via_repo_id.npy")!r}, images(DDPMImagePipeline.from_pretrained({REPO!r})))
except Exception as error:
    import traceback
    result["repo_id_error"] = traceback.format_exc()[-1500:]
print(json.dumps(result))
""", env=hub_env(hub, online_load["home"], HF_HUB_OFFLINE="1"))
    result = json.loads(stdout.strip().splitlines()[-1])
    np.testing.assert_array_equal(np.load(tmp_path / "via_folder.npy"), pushed["reference"])
    np.testing.assert_array_equal(np.load(tmp_path / "remote.npy"), pushed["reference"])
    assert "repo_id_error" not in result, result.get("repo_id_error")
    np.testing.assert_array_equal(np.load(tmp_path / "via_repo_id.npy"), pushed["reference"])


def test_card_metadata_body_token_and_sample_grid(hub, pushed, tmp_path):
    readme = huggingface_hub.hf_hub_download(REPO, "README.md", cache_dir=tmp_path, endpoint=hub.url)
    card = ModelCard.load(readme)
    meta = card.data.to_dict()
    assert meta["library_name"] == "diffusers"
    assert meta["pipeline_tag"] == "unconditional-image-generation"
    assert {"ddpm", "ddpm-hf", "diffusers", "unconditional-image-generation"} <= set(meta["tags"])
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["ylecun/mnist"]
    body = card.text
    for way in (f'DDPMImagePipeline.from_pretrained("{REPO}")',
                f'DiffusionPipeline.from_pretrained("{REPO}", trust_remote_code=True)',
                f'UNet2DModel.from_pretrained("{REPO}", subfolder="unet")',
                f'DDPMScheduler.from_pretrained("{REPO}", subfolder="scheduler")',
                "snapshot_download("):
        assert way in body
    assert "](samples.png)" in body and "bits/dim" in body and "| Training steps | 20 |" in body

    files = hub.files(REPO)
    with open(pushed["grid"], "rb") as f:
        assert files["samples.png"] == f.read()
    assert {"model_index.json", "pipeline_ddpm_hf.py", "scheduler/scheduling_ddpm_posterior.py",
            "scheduler/scheduler_config.json", "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors"} <= set(files)
    # The token travels only as the Authorization header of the writes, never in a file, a URL or a body.
    uploads = [u for u in hub.uploads if u.repo_id == REPO]
    assert uploads and all(TOKEN.encode() not in u.content for u in uploads)
    assert all(TOKEN.encode() not in content for content in files.values())
    writes = [r for r in pushed["requests"] if r.method == "POST" and f"/{REPO}/" in r.path]
    assert {"preupload", "commit"} <= {r.path.split("/")[5] for r in writes}
    assert all(r.bearer == TOKEN for r in writes)
    assert all(TOKEN not in r.path and TOKEN.encode() not in r.body for r in pushed["requests"])
    info = huggingface_hub.HfApi().model_info(REPO)
    assert info.sha == pushed["info"].oid and info.pipeline_tag == "unconditional-image-generation"


def test_writes_need_the_token_and_files_with_the_token_are_refused(hub, tmp_path):
    pipe = make_pipeline()
    with pytest.raises(HubPushError) as error:
        push_pipeline_to_hub(pipe, "user/wrong-token", token="hf_test_token_wrong_0000", **FAST)
    assert error.value.attempts == 1  # 401 is not retried
    assert "user/wrong-token" in str(error.value) and "401" in str(error.value)
    assert "hf_test_token_wrong_0000" not in str(error.value)
    assert hub.repo("user/wrong-token") is None

    leaky = tmp_path / "notes.txt"
    leaky.write_text(f"trained by me, token {TOKEN}\n")
    commits_before = sum("/commit/" in r.path for r in hub.requests)
    with pytest.raises(ValueError, match="notes.txt"):
        push_pipeline_to_hub(pipe, "user/leaky", token=TOKEN, extra_files={"notes.txt": str(leaky)}, **FAST)
    assert sum("/commit/" in r.path for r in hub.requests) == commits_before


def test_failed_push_retries_raises_clearly_and_keeps_the_local_folder(hub, tmp_path, caplog):
    pipe, repo = make_pipeline(seed=1), "user/failing"
    out = tmp_path / "output"
    (out / "checkpoint-10").mkdir(parents=True)
    (out / "checkpoint-10" / "state.bin").write_bytes(b"\0" * 64)  # trainer state: kept, never uploaded
    grid = write_grid(pipe, tmp_path / "grid.png")
    with commits_refused(hub), pytest.raises(HubPushError) as error:
        push_pipeline_to_hub(pipe, repo, token=TOKEN, save_dir=out, extra_files={"samples.png": grid}, **FAST)
    message = str(error.value)
    assert repo in message and "500" in message and "after 3 attempts" in message
    assert str(out) in message and "intact" in message and error.value.attempts == 3
    assert sum(f"/{repo}/commit/" in r.path and r.status == 500 for r in hub.requests) == 3

    with server_down(hub), pytest.raises(HubPushError) as error:  # now nothing even accepts the connection
        push_pipeline_to_hub(pipe, repo, token=TOKEN, save_dir=out, extra_files={"samples.png": grid}, **FAST)
    message = str(error.value)
    assert repo in message and "ConnectError" in message and "intact" in message and error.value.attempts == 3
    assert TOKEN not in caplog.text and TOKEN not in message
    assert "retrying" in caplog.text

    # The local folder is a complete pipeline, with its card and grid, and loads to the same images.
    assert {"model_index.json", "README.md", "samples.png", "checkpoint-10"} <= set(os.listdir(out))
    np.testing.assert_array_equal(sample(DDPMImagePipeline.from_pretrained(out)), sample(pipe))
    # ... from which the push can be retried once the Hub is back; trainer state stays local.
    push_folder_to_hub(out, repo, token=TOKEN, **FAST)
    files = hub.files(repo)
    assert {"README.md", "samples.png", "unet/diffusion_pytorch_model.safetensors"} <= set(files)
    assert not any(path.startswith("checkpoint-") for path in files)


def test_run_as_future_uploads_in_background_a_snapshot_of_the_weights(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # no token= : huggingface_hub resolves it from the environment
    pipe, repo, out = make_pipeline(seed=2), "user/background", tmp_path / "output"
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    temp_root = tempfile.gettempdir()
    temp_before = {n for n in os.listdir(temp_root) if n.startswith("ddpm-hf-push-")}

    future = push_pipeline_to_hub(pipe, repo, run_as_future=True, **FAST)
    # Training goes on and the output folder is saved over while the uploads run.
    future_2 = push_pipeline_to_hub(pipe, repo, save_dir=out, run_as_future=True, revision="dev", **FAST)
    with torch.no_grad():
        for p in pipe.unet.parameters():
            p.add_(1.0)
    pipe.save_pretrained(out)
    assert isinstance(future, Future) and isinstance(future_2, Future)
    info, info_2 = future.result(timeout=60), future_2.result(timeout=60)

    from safetensors.torch import load as load_safetensors

    for revision, commit in (("main", info), ("dev", info_2)):
        files = hub.files(repo, revision)
        assert hub.repo(repo).branches[revision] == commit.oid
        assert {"model_index.json", "README.md", "pipeline_ddpm_hf.py",
                "scheduler/scheduling_ddpm_posterior.py"} <= set(files)
        weights = load_safetensors(files["unet/diffusion_pytorch_model.safetensors"])
        assert all(torch.equal(weights[k], before[k]) for k in before)  # the weights as they were at the call
    assert all(r.bearer == TOKEN for r in hub.requests if r.method == "POST" and f"/{repo}/" in r.path)
    assert {n for n in os.listdir(temp_root) if n.startswith("ddpm-hf-push-")} == temp_before  # cleaned up
    assert not [n for n in os.listdir(out) if n.startswith(".ddpm-hf-upload-")]


def test_render_model_card_text_to_image_metadata():
    class DDPMTextToImagePipeline(DDPMImagePipeline):
        pass

    pipe = DDPMTextToImagePipeline(unet=tiny_unet(), scheduler=DDPMPosteriorScheduler())
    card = render_model_card(pipe, repo_id="user/t2i", base_model="openai/clip-vit-base-patch32",
                             dataset_name="/data/my-local-set", sample_grid_filename=None,
                             training_config={"api_key": "abc", "learning_rate": 1e-4})
    meta = card.data.to_dict()
    assert meta["pipeline_tag"] == "text-to-image" and "text-to-image" in meta["tags"]
    assert meta["base_model"] == "openai/clip-vit-base-patch32"
    assert "datasets" not in meta  # a local path is no Hub dataset id
    assert "abc" not in card.text and "/data/my-local-set" not in card.text and "![" not in card.text


# ----------------------------------------------------------------------------------------------------------------
# The trainer's --push_to_hub (a real `accelerate launch` run against the local Hub)
# ----------------------------------------------------------------------------------------------------------------
def trainer_command(out, repo, *extra, launcher=True):
    args = [*TINY, "--max_train_steps", "4", "--output_dir", out, "--report_to", "none", "--push_to_hub",
            "--hub_model_id", repo, "--hub_token", TOKEN, *extra]
    return launch_command(*args) if launcher else script_command(*args)


def trainer_env(hub, home):
    """A training subprocess's environment (support.training.run_env), online on the fake Hub."""
    return run_env(**hub_env(hub, home))


def test_trainer_push_to_hub_publishes_a_pipeline_that_loads_to_the_local_images(hub, tmp_path):
    repo, out = "user/trained", tmp_path / "output"
    result = subprocess.run(trainer_command(out, repo, "--checkpointing_steps", "3", "--validation_steps", "3",
                                            "--eval_nll_images", "4", "--eval_nll_steps", "5"),
                            env=trainer_env(hub, tmp_path / "home-train"), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert TOKEN not in result.stdout + result.stderr

    # The checkpoint-time push (step 3, in the background) and the final awaited one, in order, on main.
    messages = [c.message for c in reversed(hub.commits(repo))]
    assert messages == ["initial commit", "Training step 3", "Trained pipeline after 4 steps"]
    step_3 = hub.commits(repo)[1].files
    assert step_3["samples.png"] == (out / "validation" / "step-3.png").read_bytes()
    files = hub.files(repo)
    assert files["samples.png"] == (out / "samples.png").read_bytes()
    assert files["README.md"] == (out / "README.md").read_bytes()  # the card is also kept beside the pipeline
    assert not any(path.startswith(("checkpoints/", "logs/", "validation/")) for path in files)
    card = ModelCard(files["README.md"].decode())
    assert card.data.pipeline_tag == "unconditional-image-generation" and "ddpm-hf" in card.data.tags
    assert "| Training steps | 4 |" in card.text and "](samples.png)" in card.text and "digits" in card.text
    # The bound the run computed (--eval_nll_images), with how it was measured.
    nll = json.loads((out / "nll.json").read_text())
    assert nll["num_images"] == 4 and nll["steps"] == 5 and np.isfinite(nll["total_bpd"])
    assert f"| bits/dim | {round(nll['total_bpd'], 4):g}" in card.text
    assert "respaced 5-step chain on 4 training" in card.text
    for content in [*files.values(), *(u.content for u in hub.uploads if u.repo_id == repo)]:
        assert TOKEN.encode() not in content
    for path in out.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path

    # A fresh process: the repo id gives the same images as the local output folder.
    stdout = run_python(SAMPLE_CODE + f"""
import json, numpy as np
from ddpm_hf import DDPMImagePipeline
hub_pipe = DDPMImagePipeline.from_pretrained({repo!r})
same = np.array_equal(images(hub_pipe), images(DDPMImagePipeline.from_pretrained({str(out)!r})))
print(json.dumps([same, type(hub_pipe.scheduler).__module__]))
""", env=hub_env(hub, tmp_path / "home-load"))
    assert json.loads(stdout.strip().splitlines()[-1]) == [True, "ddpm_hf.scheduling_ddpm_posterior"]


def test_trainer_final_push_failure_is_one_line_exit_4_and_keeps_the_output(hub, tmp_path):
    repo, out = "user/trained-failing", tmp_path / "output"
    # The repo can be created, but every commit is refused (403: not retried, so the test does not wait out the
    # backoff of transient errors, which test_failed_push_retries_raises_clearly_... covers for pushes).
    with commits_refused(hub, status=403):
        result = subprocess.run(trainer_command(out, repo, "--checkpointing_steps", "0", launcher=False),
                                env=trainer_env(hub, tmp_path / "home"), capture_output=True, text=True,
                                timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 4, result.stderr[-3000:]
    assert len(errors) == 1 and repo in errors[0] and "403" in errors[0] and "intact" in errors[0]
    assert "Traceback" not in result.stderr and TOKEN not in result.stderr + result.stdout
    assert {"model_index.json", "README.md", "samples.png", "loss_curve.png"} <= set(os.listdir(out))
    DDPMImagePipeline.from_pretrained(out)  # complete, and loadable

    result = subprocess.run(trainer_command(tmp_path / "other", "user/x", launcher=False)[:-2] + [
        "--hub_token", "hf_test_token_wrong_0000"], env=trainer_env(hub, tmp_path / "home"), capture_output=True,
        text=True, timeout=120)
    # Refused before any training: its own exit code, not 4 (which says the output folder is complete).
    assert result.returncode == 5 and "user/x" in result.stderr and "401" in result.stderr
    assert "Nothing was trained" in result.stderr
    assert not (tmp_path / "other" / "checkpoints").exists()


def test_text_to_image_pipeline_pushed_loads_three_ways_in_fresh_processes(hub, tmp_path):
    pipe, repo = tiny_text_to_image_pipeline(tmp_path / "tokenizer"), "user/tiny-t2i"
    code = """
def images(pipe):
    import torch
    pipe.set_progress_bar_config(disable=True)
    return pipe(["a handwritten digit seven", "the digit 3"], guidance_scale=2.0, num_inference_steps=3,
                generator=torch.Generator().manual_seed(0), output_type="np").images
"""
    namespace = {}
    exec(code, namespace)
    np.save(tmp_path / "reference.npy", namespace["images"](pipe))
    push_pipeline_to_hub(pipe, repo, token=TOKEN, **FAST)
    card = ModelCard(hub.files(repo)["README.md"].decode())
    assert card.data.pipeline_tag == "text-to-image" and "text-to-image" in card.data.tags

    stdout = run_python(code + f"""
import json, sys, numpy as np
from ddpm_hf import DDPMTextToImagePipeline
np.save({str(tmp_path / "installed.npy")!r}, images(DDPMTextToImagePipeline.from_pretrained({repo!r})))
print(json.dumps("ok"))
""", env=hub_env(hub, tmp_path / "home-a"))
    assert json.loads(stdout.strip().splitlines()[-1]) == "ok"
    stdout = run_python(code + f"""
import json, sys, numpy as np
sys.modules["ddpm_hf"] = None  # not importable: the repo carries the pipeline's and the scheduler's code
from diffusers import DiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer
pipe = DiffusionPipeline.from_pretrained({repo!r}, trust_remote_code=True)
np.save({str(tmp_path / "remote.npy")!r}, images(pipe))
parts = [UNet2DConditionModel.from_pretrained({repo!r}, subfolder="unet"),
         CLIPTextModel.from_pretrained({repo!r}, subfolder="text_encoder"),
         CLIPTokenizer.from_pretrained({repo!r}, subfolder="tokenizer")]
print(json.dumps([type(pipe).__name__, type(pipe.scheduler).__name__, len(parts[2])]))
""", env=hub_env(hub, tmp_path / "home-b"))
    assert json.loads(stdout.strip().splitlines()[-1]) == ["DDPMTextToImagePipeline", "DDPMPosteriorScheduler", 49408]
    reference = np.load(tmp_path / "reference.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "installed.npy"), reference)
    np.testing.assert_array_equal(np.load(tmp_path / "remote.npy"), reference)


def test_one_rule_tells_hub_ids_from_local_paths(tmp_path, monkeypatch):
    from ddpm_hf.hub import is_hub_id, looks_like_local_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner").mkdir()
    (tmp_path / "owner" / "folder").mkdir()
    for name in ("user/tiny-ddpm", "mnist", "google/ddpm-cifar10-32", "a.b_c-d/e.f"):
        assert is_hub_id(name) and not looks_like_local_path(name), name
    # existing paths, explicit paths, deeper paths, and what the Hub refuses ("--", "..", a leading "-", too long)
    for name in ("owner/folder", "./x", "../x", "/abs/x", "~/x", "a/b/c", "x/", "a--b/c", "a..b", "-a/b", "x" * 97,
                 "", None):
        assert not is_hub_id(name), name
    assert looks_like_local_path("owner/folder") and looks_like_local_path("a/b/c")
