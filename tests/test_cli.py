# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The `ddpm-hf` console script, run as a command in fresh processes on a tiny saved pipeline.

Every Python start pays for importing torch and diffusers (~9 s of CPU here), so the file starts few of them:
`sample` runs twice as a command of its own (`python -m ddpm_hf.cli` on a folder, the installed `ddpm-hf` script
on a Hub id); `forward`, `nll`, a third `sample` and every error case run in ONE process that imports the package
once and forks a child per command line. Each child runs `ddpm_hf.cli.main(argv)` as the console script does, with
its stdout and stderr (file descriptors 1 and 2) going to files of its own, and prints the traceback of an uncaught
exception as the interpreter would, so "one line, no traceback" is checked on what a shell would show.
"""

import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from support.models import tiny_unet
from support.processes import fork_runner, run_forked

from ddpm_hf import DDPMImagePipeline, DDPMPosteriorScheduler

ENTRY_POINT = os.path.join(os.path.dirname(sys.executable), "ddpm-hf")
HUB_ID = "user/tiny-ddpm"  # put in the Hub cache by hand: resolved offline, no server needed
CELL = 64  # visualization.MIN_TILE_PIXELS: the 8x8 images are enlarged 8x
N, STEPS, SEED = 3, 10, 7  # 3 images: a 2x2 grid with one blank cell
ERROR_LINE = re.compile(r"^ddpm-hf( (sample|forward|nll))?: error: \S")


# ----------------------------------------------------------------------------------------------------------------
# The workspace: a saved pipeline, its Hub-cache copy, a real digit, a file that is not an image
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    pipe = DDPMImagePipeline(unet=tiny_unet(), scheduler=DDPMPosteriorScheduler())
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(root / "pipe")

    # The layout huggingface_hub's cache uses; with HF_HUB_OFFLINE=1 `HUB_ID` resolves to this snapshot.
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = root / "hf-home" / "hub" / ("models--" + HUB_ID.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    shutil.copytree(root / "pipe", repo / "snapshots" / sha)

    from sklearn.datasets import load_digits

    digit = np.rint(load_digits().images[0] * 255 / 16).astype(np.uint8)  # as ddpm_hf.data reads embedded:digits
    Image.fromarray(digit).save(root / "digit.png")
    (root / "not-an-image.png").write_text("this is text, not a PNG\n")
    (root / "empty-folder").mkdir()
    shutil.copytree(root / "pipe", root / "broken-pipe")
    weights = root / "broken-pipe" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    shutil.copytree(root / "pipe", root / "pickle-pipe")  # UNet weights as a pickle only: never unpickled
    (root / "pickle-pipe" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    pipe.unet.save_pretrained(root / "pickle-pipe" / "unet", safe_serialization=False)
    shutil.copytree(root / "pipe", root / "nan-pipe")  # a diverged run's weights
    diverged = DDPMImagePipeline(unet=tiny_unet(), scheduler=DDPMPosteriorScheduler())
    with torch.no_grad():
        diverged.unet.conv_out.weight.fill_(float("nan"))
    diverged.unet.save_pretrained(root / "nan-pipe" / "unet")
    return root, pipe


def cli_env(root):
    env = dict(os.environ)
    env.update(HF_HOME=str(root / "hf-home"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", DDPM_HF_TRACEBACK="")
    return env


def run_cli(root, *args, command=None):
    command = command or [sys.executable, "-m", "ddpm_hf.cli"]
    return subprocess.run([*command, *map(str, args)], cwd=root, env=cli_env(root), capture_output=True, text=True,
                          timeout=300)


def ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "L"
        return np.asarray(image).copy()


def cells(image: np.ndarray, cell: int = CELL) -> np.ndarray:
    """(rows, cols, cell, cell) view of a grid image."""
    rows, cols = image.shape[0] // cell, image.shape[1] // cell
    assert image.shape == (rows * cell, cols * cell)
    return image.reshape(rows, cell, cols, cell).transpose(0, 2, 1, 3)


def shrink(cell: np.ndarray, factor: int = CELL // 8) -> np.ndarray:
    """The small image inside a nearest-neighbour-enlarged cell (and a check that it was enlarged so)."""
    small = cell[::factor, ::factor]
    np.testing.assert_array_equal(np.kron(small, np.ones((factor, factor), dtype=np.uint8)), cell)
    return small


def to_uint8(x) -> np.ndarray:
    """[-1, 1] tensor -> uint8 as the pipeline's own PIL output does: round(255 * clamp(x / 2 + 0.5, 0, 1))."""
    return ((torch.as_tensor(x) / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def reference_images(pipe, seed, steps=STEPS, n=N) -> np.ndarray:
    """What the pipeline gives in-process for the generator the CLI builds: torch.Generator().manual_seed(seed)."""
    images = pipe(batch_size=n, generator=torch.Generator().manual_seed(seed), num_inference_steps=steps,
                  output_type="np").images
    return (images[..., 0] * 255).round().astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# Many command lines in one process: fork a child per command line after importing the package once
# ----------------------------------------------------------------------------------------------------------------
BATCH_RUNNER = fork_runner(  # what the commands import, imported once: each fork then pays only for its work
    setup="import diffusers, diffusers.utils.logging, ddpm_hf.data, ddpm_hf.hub, ddpm_hf.diffusion.likelihood, "
          "ddpm_hf.visualization, ddpm_hf.cli.sample, ddpm_hf.cli.forward, ddpm_hf.cli.nll, ddpm_hf.pipeline_ddpm_hf, "
          "ddpm_hf.pipeline_utils\nfrom diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UNet2DModel\n"
          "from ddpm_hf.cli import main",
    main="main", prog="ddpm-hf")

ERROR_RUNS = {
    # unknown pipelines
    "missing_folder": (["sample", "./no/such/pipeline"], "No pipeline folder at ./no/such/pipeline"),
    "missing_nested_path": (["sample", "runs/no/such"], "No pipeline folder at runs/no/such"),
    "not_a_pipeline": (["sample", "empty-folder"], "no model_index.json"),
    "hub_id_not_cached": (["sample", "user/not-in-the-cache", "--device", "cpu"], "no Hub repo of that id"),
    "broken_weights": (["sample", "broken-pipe", "--num-images", "1", "--steps", "2", "--device", "cpu"], None),
    "nll_missing_folder": (["nll", "./no/such/pipeline"], "no/such/pipeline"),
    "pickle_weights": (["sample", "pickle-pipe", "--num-images", "1", "--steps", "2", "--device", "cpu"],
                       "The 'unet' component of pickle-pipe has pickle weights but no .safetensors weights"),
    "nll_pickle_weights": (["nll", "pickle-pipe", "--num-images", "2", "--steps", "2", "--device", "cpu"],
                           "use_safetensors=False"),
    # unreadable or missing images
    "text_as_png": (["forward", "not-an-image.png"], "Cannot read not-an-image.png as an image"),
    "missing_image": (["forward", "no-such.png"], "No image file at no-such.png"),
    # bad arguments
    "zero_images": (["sample", "pipe", "--num-images", "0"], "--num-images: must be a positive integer"),
    "words_for_images": (["sample", "pipe", "--num-images", "many"], "--num-images: must be a positive integer"),
    "steps_above_T": (["sample", "pipe", "--steps", "1001", "--device", "cpu"], "num_train_timesteps=1000"),
    "negative_seed": (["sample", "pipe", "--seed", "-1"], "--seed: must be an integer in [0, 2**64 - 1]"),
    "huge_seed": (["forward", "digit.png", "--seed", str(2**64)], "--seed: must be an integer in [0, 2**64 - 1]"),
    "bad_device": (["sample", "pipe", "--device", "gpu0"], "--device: not a torch device"),
    "timestep_above_T": (["forward", "digit.png", "--timesteps", "0", "1000"], "--timesteps must lie in [0, 999]"),
    "out_folder_missing": (["sample", "pipe", "--out", "no-such-dir/grid.png"], "Cannot write no-such-dir/grid.png"),
    "trajectory_folder_missing": (["sample", "pipe", "--trajectory", "no-such-dir/t.png"], "Cannot write"),
    "unknown_data": (["nll", "pipe", "--data", "embedded:nope", "--num-images", "2", "--steps", "2", "--device",
                      "cpu"], "unknown embedded dataset 'nope'"),
    "nll_zero_images": (["nll", "pipe", "--num-images", "0"], "--num-images: must be a positive integer"),
    "no_command": ([], "required: command"),
    "unknown_command": (["draw", "pipe"], "invalid choice: 'draw'"),
    "missing_pipeline_argument": (["sample"], "required: pipeline"),
    "unknown_sampler": (["sample", "pipe", "--scheduler", "dpm"], "--scheduler: invalid choice: 'dpm'"),
    "out_is_a_folder": (["sample", "pipe", "--out", "empty-folder"], "Cannot write empty-folder: it is a folder"),
    "out_unknown_extension": (["sample", "pipe", "--out", "grid.txt"], "the extension must name an image format"),
    "nan_weights": (["sample", "nan-pipe", "--num-images", "1", "--steps", "2", "--device", "cpu"],
                    "The UNet of nan-pipe has NaN or infinite weights (conv_out.weight)"),
}
OTHER_SEED = SEED + 1
FORWARD_SEED, FORWARD_RESOLUTION = 3, 32
SUCCESS_RUNS = {
    "other_seed": ["sample", "pipe", "--num-images", str(N), "--steps", str(STEPS), "--seed", str(OTHER_SEED),
                   "--out", "grid-other-seed.png", "--device", "cpu"],
    "dpm_solver": ["sample", "pipe", "--num-images", str(N), "--steps", "20", "--seed", str(SEED), "--scheduler",
                   "dpm-solver++", "--out", "grid-dpm-solver.png", "--device", "cpu"],
    "ddim_eta_1": ["sample", "pipe", "--num-images", str(N), "--steps", "20", "--seed", str(SEED), "--scheduler",
                   "ddim", "--eta", "1", "--out", "grid-ddim-eta-1.png", "--device", "cpu"],
    "forward": ["forward", "digit.png", "--resolution", str(FORWARD_RESOLUTION), "--seed", str(FORWARD_SEED),
                "--out", "forward.png"],
    "nll": ["nll", "pipe", "--data", "embedded:digits", "--num-images", "4", "--steps", "5", "--seed", "0",
            "--out-png", "nll.png", "--out-json", "nll.json", "--device", "cpu"],
}


@pytest.fixture(scope="module")
def batch(ws):
    root, _ = ws
    folder = root / "batch"
    folder.mkdir()
    runs = {name: argv for name, (argv, _) in ERROR_RUNS.items()}
    runs.update(SUCCESS_RUNS)
    codes = run_forked(BATCH_RUNNER, runs, folder, cwd=root, env=cli_env(root), timeout=600)
    read = lambda name, suffix: (folder / f"{name}.{suffix}").read_text()  # noqa: E731
    return {name: (codes[name], read(name, "stdout"), read(name, "stderr")) for name in runs}


# ----------------------------------------------------------------------------------------------------------------
# sample
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sampled(ws):
    """`ddpm-hf sample pipe ... --trajectory traj.png`, run as `python -m ddpm_hf.cli`."""
    root, _ = ws
    result = ok(run_cli(root, "sample", "pipe", "--num-images", N, "--steps", STEPS, "--seed", SEED,
                        "--out", "grid.png", "--trajectory", "traj.png", "--trajectory-points", 5, "--device", "cpu"))
    assert result.stdout.split() == ["wrote", "grid.png", "wrote", "traj.png"]
    return pixels(root / "grid.png"), pixels(root / "traj.png")


def test_sample_grid_is_the_pipelines_images_for_the_seed(ws, sampled, batch):
    _, pipe = ws
    grid, _ = sampled
    assert grid.shape == (2 * CELL, 2 * CELL)  # 3 images: 2 rows of 2, the 4th cell blank
    tiles = cells(grid)
    got = np.stack([shrink(tiles[i // 2, i % 2]) for i in range(N)])
    assert not tiles[1, 1].any(), "the cell after the last image is black"
    np.testing.assert_array_equal(got, reference_images(pipe, SEED))
    assert got.std() > 5, "a blank or constant grid would not be a sample"

    assert succeeded(batch, "other_seed").split() == ["wrote", "grid-other-seed.png"]
    other = pixels(ws[0] / "grid-other-seed.png")
    np.testing.assert_array_equal(np.stack([shrink(t) for t in cells(other).reshape(-1, CELL, CELL)[:N]]),
                                  reference_images(pipe, OTHER_SEED))
    assert np.abs(other.astype(int) - grid.astype(int)).mean() > 10, "another seed gives other images"


@pytest.mark.parametrize("run, scheduler, eta", [("dpm_solver", "DPMSolverMultistepScheduler", 0.0),
                                                 ("ddim_eta_1", "DDIMScheduler", 1.0)])
def test_sample_with_a_fast_sampler_is_that_schedulers_images(ws, batch, run, scheduler, eta):
    """`--scheduler dpm-solver++ --steps 20` is `pipe.scheduler = DPMSolverMultistepScheduler.from_config(...)` on
    the loaded pipeline. (Loaded, not the in-memory one: diffusers' from_config lets the target's defaults win for
    the keys a scheduler built in memory left at their defaults, such as timestep_spacing.)"""
    import diffusers

    root, pipe = ws
    succeeded(batch, run)
    loaded = DDPMImagePipeline.from_pretrained(root / "pipe")
    swapped = DDPMImagePipeline(unet=loaded.unet, scheduler=getattr(diffusers, scheduler).from_config(
        loaded.scheduler.config, **({"algorithm_type": "dpmsolver++", "solver_order": 2} if eta == 0.0 else {})))
    swapped.set_progress_bar_config(disable=True)
    images = swapped(batch_size=N, generator=torch.Generator().manual_seed(SEED), num_inference_steps=20, eta=eta,
                     output_type="np").images
    grid = cells(pixels(root / batch[run][1].split()[-1]))
    for i, image in enumerate((images[..., 0] * 255).round().astype(np.uint8)):
        np.testing.assert_array_equal(shrink(grid[i // 2, i % 2]), image)
    assert not np.array_equal(images, reference_images(pipe, SEED, steps=20) / 255)  # not the default sampler


def test_same_seed_same_pixels_through_the_console_script_and_a_hub_id(ws, sampled):
    """The installed `ddpm-hf` script, the pipeline by Hub id (offline, from the cache), no --trajectory."""
    root, _ = ws
    assert os.path.isfile(ENTRY_POINT), f"the console script is not installed next to {sys.executable}"
    result = ok(run_cli(root, "sample", HUB_ID, "--num-images", N, "--steps", STEPS, "--seed", SEED,
                        "--out", "grid-hub.png", "--device", "cpu", command=[ENTRY_POINT]))
    assert result.stdout.split() == ["wrote", "grid-hub.png"]
    np.testing.assert_array_equal(pixels(root / "grid-hub.png"), sampled[0])


def test_trajectory_strip_runs_from_the_noise_to_the_sample(ws, sampled):
    _, pipe = ws
    grid, strip = sampled
    # --steps 10 --trajectory-points 5: every 2nd step recorded, plus x_T -> 6 columns; 2 rows per image.
    columns = 1 + STEPS // 2
    assert strip.shape == (2 * N * CELL, columns * CELL)
    tiles = cells(strip)
    samples = np.stack([[shrink(tiles[2 * b, k]) for k in range(columns)] for b in range(N)])
    estimates = np.stack([[shrink(tiles[2 * b + 1, k]) for k in range(columns)] for b in range(N)])

    x_T = torch.randn((N, 1, 8, 8), generator=torch.Generator().manual_seed(SEED))  # the CLI's generator
    np.testing.assert_array_equal(samples[:, 0], to_uint8(x_T)[:, 0])
    np.testing.assert_array_equal(samples[:, -1], np.stack([shrink(cells(grid)[i // 2, i % 2]) for i in range(N)]))
    assert (estimates[:, 0] == 128).all(), "x_T has no x_0 estimate: drawn as zeros (mid-grey)"
    # The last step (t=0) returns its x_0 estimate: the two rows end on the same image.
    np.testing.assert_array_equal(estimates[:, -1], samples[:, -1])

    # Every cell is the in-process trajectory of the same call.
    out = pipe(batch_size=N, generator=torch.Generator().manual_seed(SEED), num_inference_steps=STEPS,
               output_type="np", trajectory_every=2)
    assert out.trajectory.timesteps == [-1, 800, 600, 400, 200, 0]
    np.testing.assert_array_equal(samples, to_uint8(out.trajectory.samples)[:, :, 0].transpose(1, 0, 2, 3))
    np.testing.assert_array_equal(estimates,
                                  to_uint8(out.trajectory.pred_original_samples)[:, :, 0].transpose(1, 0, 2, 3))


# ----------------------------------------------------------------------------------------------------------------
# forward
# ----------------------------------------------------------------------------------------------------------------
def succeeded(batch, name):
    code, stdout, stderr = batch[name]
    assert code == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    return stdout


def test_forward_strip_is_x0_then_draws_of_q_xt_given_x0(ws, batch):
    root, _ = ws
    seed, resolution = FORWARD_SEED, FORWARD_RESOLUTION
    assert succeeded(batch, "forward").split() == ["wrote", "forward.png"]
    from ddpm_hf.cli import FORWARD_TIMESTEPS

    timesteps = list(FORWARD_TIMESTEPS)
    strip = pixels(root / "forward.png")
    factor = CELL // resolution
    assert strip.shape == (CELL, (1 + len(timesteps)) * CELL)  # x_0, then one cell per t
    shown = [shrink(c, factor).astype(np.float64) for c in cells(strip)[0]]

    with Image.open(root / "digit.png") as image:
        x_0 = np.asarray(image.convert("L").resize((resolution, resolution), Image.BICUBIC)).astype(np.float64)
    np.testing.assert_array_equal(shown[0], x_0)

    # q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), DDPM's linear betas, with the noise the CLI draws.
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    noise = torch.randn((len(timesteps), 1, resolution, resolution),
                        generator=torch.Generator().manual_seed(seed)).numpy()[:, 0].astype(np.float64)
    x0 = x_0 / 127.5 - 1
    for k, t in enumerate(timesteps):
        x_t = np.sqrt(abar[t]) * x0 + np.sqrt(1 - abar[t]) * noise[k]
        expected = np.round((np.clip(x_t, -1, 1) + 1) * 127.5)
        difference = np.abs(shown[k + 1] - expected)
        assert difference.max() <= 1 and (difference == 0).mean() > 0.99, (t, difference.max())

    # Seed-free: the signal fades as sqrt(abar_t) while the noise grows to N(0, I) (clipped to [-1, 1]).
    last = shown[-1] / 127.5 - 1
    assert abs(last.mean()) < 0.1  # E = 0: a clean or barely noised digit has mean below -0.2
    clipped_normal_std = math.sqrt(math.erf(1 / math.sqrt(2)) - 2 * math.exp(-0.5) / math.sqrt(2 * math.pi)
                                   + math.erfc(1 / math.sqrt(2)))
    assert abs(last.std() - clipped_normal_std) < 0.06, last.std()
    assert x0.mean() < -0.2 and x0.std() > 0.4
    correlations = [np.corrcoef(x0.ravel(), (s / 127.5 - 1).ravel())[0, 1] for s in shown[1:]]
    assert correlations[1] > 0.9 and abs(correlations[-1]) < 0.15, correlations  # t=50, t=999


# ----------------------------------------------------------------------------------------------------------------
# nll
# ----------------------------------------------------------------------------------------------------------------
def test_nll_prints_and_writes_the_bound_of_the_images(ws, batch):
    root, pipe = ws
    stdout = succeeded(batch, "nll")
    record = json.loads((root / "nll.json").read_text())
    assert record["num_images"] == 4 and record["steps"] == 5 and len(record["timesteps"]) == 5
    assert len(record["mean_terms_bpd"]) == 5 and len(record["per_image_total_bpd"]) == 4
    total, stderr = record["total_bpd"], record["total_bpd_stderr"]
    assert math.isfinite(total) and total > 0 and math.isfinite(stderr) and stderr > 0
    per_image = np.array(record["per_image_total_bpd"])
    assert total == pytest.approx(per_image.mean(), rel=1e-12)
    assert stderr == pytest.approx(per_image.std(ddof=1) / 2, rel=1e-9)
    assert total == pytest.approx(record["prior_bpd"] + record["decoder_bpd"] + record["denoising_bpd"], rel=1e-9)

    printed = re.search(r"NLL bound on 4 images \(5-step chain\): (\S+) ± (\S+) bits/dim", stdout)
    assert printed, stdout
    assert float(printed.group(1)) == round(total, 4) and float(printed.group(2)) == round(stderr, 4)
    assert "wrote nll.png" in stdout and "wrote nll.json" in stdout

    from ddpm_hf.diffusion.likelihood import variational_bound
    from ddpm_hf.evaluation.data_spec import load_evaluation_images

    images = load_evaluation_images("embedded:digits", 4, 8, 1, 0)
    bound = variational_bound(pipe.unet, pipe.scheduler, images, generator=torch.Generator().manual_seed(0),
                              timesteps=5, show_progress=False)
    np.testing.assert_allclose(per_image, bound.total_bpd.numpy(), rtol=1e-9)

    with Image.open(root / "nll.png") as plot:
        assert plot.format == "PNG" and plot.size == (840, 480)
        assert len(plot.convert("RGB").getcolors(1 << 16) or []) > 10, "the plot is not blank"


# ----------------------------------------------------------------------------------------------------------------
# errors: one line on stderr, exit status 2, no traceback
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ERROR_RUNS))
def test_errors_are_one_line(batch, name):
    code, stdout, stderr = batch[name]
    expected = ERROR_RUNS[name][1]
    assert code == 2, (code, stderr)
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and ERROR_LINE.match(lines[0]), stderr
    if expected:
        assert expected in lines[0], lines[0]
    assert "wrote" not in stdout


def test_argument_errors_name_the_command_and_its_help(batch):
    assert batch["zero_images"][2].strip() == (
        "ddpm-hf sample: error: argument --num-images: must be a positive integer, got 0 (see ddpm-hf sample --help)"
    )
    assert batch["no_command"][2].startswith("ddpm-hf: error: the following arguments are required: command")

