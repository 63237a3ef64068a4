# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Sample quality (`ddpm_hf.evaluation`, `ddpm-hf fid`): the distances against a float64 numpy/scipy computation, their
behaviour on known shifts, two processes against one, the reference cache, the digit-feature FD's ranking, and the
one-line errors. Offline: the digit feature network is fitted once per module (a few seconds) into a temporary
cache, and no Inception weights are ever downloaded."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image
from support.models import tiny_unet
from support.processes import free_port, run_python

from ddpm_hf import DDPMImagePipeline, DDPMPosteriorScheduler
from ddpm_hf.cli import main
from ddpm_hf.data import to_model_range
from ddpm_hf.evaluation import (
    FeatureNetwork,
    ReferenceSet,
    evaluate_sample_quality,
    extract_features,
    feature_distances,
    reference_features,
)
from ddpm_hf.evaluation.digit_features import digit_feature_network
from ddpm_hf.evaluation.inception import InceptionWeightsError, inception_feature_network
from ddpm_hf.evaluation.sampling import image_seeds, sample_pixels

DIGITS_8 = ReferenceSet("embedded:digits", resolution=8)


# ----------------------------------------------------------------------------------------------------------------
# Helpers: a float64 numpy/scipy reference, a tiny deterministic feature network, tiny pipelines
# ----------------------------------------------------------------------------------------------------------------
def numpy_fd(x: np.ndarray, y: np.ndarray) -> float:
    """Heusel et al. 2017: |mu_x - mu_y|^2 + Tr(S_x + S_y - 2 (S_x S_y)^(1/2)), in float64 with scipy's sqrtm."""
    mu_x, mu_y = x.mean(0), y.mean(0)
    s_x, s_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(s_x @ s_y).real
    return float(((mu_x - mu_y) ** 2).sum() + np.trace(s_x + s_y - 2 * root))


def numpy_kd(x: np.ndarray, y: np.ndarray) -> float:
    """Binkowski et al. 2018: the unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, on the whole (equal-size) sets."""
    m, d = len(x), x.shape[1]

    def kernel(a, b):
        return (a @ b.T / d + 1) ** 3

    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.mean())


class PixelProjection(FeatureNetwork):
    """A fixed random projection of the pixels to 6 features, counting the images it sees."""

    distance_names = ("projection FD", "projection KD")

    def __init__(self, pixels: int = 64, seed: int = 0):
        super().__init__()
        self.num_features, self.name, self.fingerprint = 6, "pixel projection", f"pixel-projection-{pixels}-{seed}"
        self.weight = torch.nn.Parameter(torch.randn(pixels, 6, generator=torch.Generator().manual_seed(seed)))
        self.images_seen = 0

    def forward(self, pixels):
        self.images_seen += len(pixels)
        return pixels.flatten(1).float().div(255) @ self.weight


def tiny_pipeline(seed: int = 0) -> DDPMImagePipeline:
    pipe = DDPMImagePipeline(unet=tiny_unet(seed=seed), scheduler=DDPMPosteriorScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def briefly_trained_pipeline(reference: ReferenceSet, steps: int = 300) -> DDPMImagePipeline:
    """A tiny pipeline after `steps` Adam steps of L_simple on the reference's digits (~4 s on one core)."""
    pipe = tiny_pipeline()
    x0 = to_model_range(reference.load_pixels())
    optimizer = torch.optim.Adam(pipe.unet.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = x0[torch.randint(0, len(x0), (64,), generator=generator)]
        t = torch.randint(0, 1000, (64,), generator=generator)
        noise = torch.randn(batch.shape, generator=generator)
        loss = (pipe.unet(pipe.scheduler.add_noise(batch, noise, t), t).sample - noise).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pipe.unet.eval()
    return pipe


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A metric cache for this module, with the digit feature network already fitted."""
    folder = tmp_path_factory.mktemp("metric-cache")
    digit_feature_network(folder)
    return folder


# ----------------------------------------------------------------------------------------------------------------
# The numbers themselves
# ----------------------------------------------------------------------------------------------------------------
def test_fd_and_kd_equal_a_float64_numpy_scipy_computation_on_the_same_features():
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(120, 5, generator=generator, dtype=torch.float64)
    fake = 0.8 * torch.randn(120, 5, generator=generator, dtype=torch.float64) + 0.3
    # One subset of all 120 of each: the unbiased MMD^2 does not depend on the order torchmetrics draws.
    got = feature_distances(real, fake, kd_subsets=1, kd_subset_size=120)
    assert got.fd == pytest.approx(numpy_fd(real.numpy(), fake.numpy()), rel=1e-9)
    assert got.kd == pytest.approx(numpy_kd(real.numpy(), fake.numpy()), rel=1e-9)
    assert (got.num_real, got.num_fake, got.kd_subset_size, got.kd_std) == (120, 120, 120, 0.0)


def test_evaluate_sample_quality_equals_numpy_on_the_features_of_the_same_samples(cache):
    network = PixelProjection()
    reference = ReferenceSet("embedded:digits", resolution=8, max_images=48)
    pipe = tiny_pipeline()
    result = evaluate_sample_quality(pipe, reference, num_images=48, num_inference_steps=4, batch_size=20, seed=3,
                                     feature=network, cache_dir=cache)
    # The same samples, redrawn from the recorded seeds in other batches; the same network on the real images.
    samples = sample_pixels(pipe, result.image_seeds, num_inference_steps=4, batch_size=48)
    fake = extract_features(network, samples).numpy()
    real = extract_features(network, reference.load_pixels()).numpy()
    assert result.fd == pytest.approx(numpy_fd(real, fake), rel=1e-6)
    assert result.kd == pytest.approx(numpy_kd(real, fake), rel=1e-6)
    assert (result.fd_name, result.kd_name, result.num_images, result.num_reference_images) == (
        "projection FD", "projection KD", 48, 48)
    assert result.image_seeds == image_seeds(3, 48) and len(set(result.image_seeds)) == 48
    assert (result.num_inference_steps, result.seed, result.num_processes) == (4, 3, 1)
    rows = result.model_card_metrics()
    assert set(rows) == {"projection FD", "projection KD"} and "48 samples (4-step chain, seed 3)" in \
        rows["projection FD"]["description"]


def test_fd_of_a_set_with_itself_is_zero_and_grows_with_the_shift(cache):
    network = digit_feature_network(cache)
    real, _ = reference_features(DIGITS_8, network, cache_dir=cache)
    itself = feature_distances(real, real, kd_subsets=10)
    assert abs(itself.fd) < 1e-6 and abs(itself.kd) < 0.01  # KD is unbiased: ~0 either sign (noise images: ~2)
    # A shift of the features by delta in every one of the d dimensions adds exactly d delta^2.
    for delta in (0.1, 0.5, 2.0):
        assert feature_distances(real, real + delta, kd_subsets=1).fd == pytest.approx(64 * delta**2, rel=1e-6)
    # Pixel noise of growing strength: the digit-feature FD and KD grow with it.
    pixels = DIGITS_8.load_pixels()
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(pixels.shape, generator=generator)
    noised = [(pixels + sigma * noise).clamp(0, 255).round().to(torch.uint8) for sigma in (8, 24, 48, 96)]
    distances = [feature_distances(real, extract_features(network, images), kd_subsets=10) for images in noised]
    fds, kds = [d.fd for d in distances], [d.kd for d in distances]
    assert fds == sorted(fds) and fds[0] > 0.01, fds
    assert kds == sorted(kds), kds


def test_digit_feature_fd_ranks_held_out_digits_before_a_trained_pipeline_before_noise_and_an_untrained_one(cache):
    train = ReferenceSet("embedded:digits", resolution=8, split="train")
    held_out = ReferenceSet("embedded:digits", resolution=8, split="test")
    network = digit_feature_network(cache)
    real, _ = reference_features(train, network, cache_dir=cache)

    def fd_of(pixels):
        return feature_distances(real, extract_features(network, pixels)).fd

    generator = torch.Generator().manual_seed(0)
    uniform_noise = torch.randint(0, 256, (256, 1, 8, 8), dtype=torch.uint8, generator=generator)
    x_T = torch.randn(256, 1, 8, 8, generator=generator)  # what the chain starts from, shown as an image
    x_T = (x_T / 2 + 0.5).clamp(0, 1).mul(255).round().to(torch.uint8)
    options = dict(num_images=256, num_inference_steps=10, batch_size=128, cache_dir=cache, kd_subsets=10)
    untrained = evaluate_sample_quality(tiny_pipeline(), train, **options).fd
    trained = evaluate_sample_quality(briefly_trained_pipeline(train), train, **options).fd
    held = fd_of(held_out.load_pixels())
    assert held < trained < min(fd_of(uniform_noise), fd_of(x_T)), (held, trained, fd_of(uniform_noise), fd_of(x_T))
    # A random tiny UNet's samples are saturated speckle (its x_0 estimates blow up and are clipped), further from
    # digits than uniform or Gaussian noise: training is what brings the samples closer.
    assert trained < untrained


# ----------------------------------------------------------------------------------------------------------------
# The reference cache
# ----------------------------------------------------------------------------------------------------------------
def test_a_second_evaluation_reads_the_reference_features_and_a_changed_reference_misses(cache, tmp_path):
    network = PixelProjection()
    pipe = tiny_pipeline()
    options = dict(num_images=8, num_inference_steps=2, feature=network, cache_dir=tmp_path)
    first = evaluate_sample_quality(pipe, DIGITS_8, **options)
    assert not first.reference_from_cache and network.images_seen == 1797 + 8
    network.images_seen = 0
    second = evaluate_sample_quality(pipe, DIGITS_8, **options)
    assert second.reference_from_cache and network.images_seen == 8  # the samples only: no pass over real digits
    assert (second.fd, second.kd) == (first.fd, first.kd)

    # Another resolution, source, split or network is another entry; the first one stays valid.
    _, hit = reference_features(ReferenceSet("embedded:digits", resolution=16), PixelProjection(256),
                                cache_dir=tmp_path)
    assert not hit
    _, hit = reference_features(ReferenceSet("embedded:mnist", resolution=8), network, cache_dir=tmp_path)
    assert not hit
    _, hit = reference_features(ReferenceSet("embedded:digits", resolution=8, split="test"), network,
                                cache_dir=tmp_path)
    assert not hit
    _, hit = reference_features(DIGITS_8, PixelProjection(seed=1), cache_dir=tmp_path)
    assert not hit
    assert reference_features(DIGITS_8, network, cache_dir=tmp_path)[1]

    # A folder: an added image changes its fingerprint.
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        Image.fromarray(np.full((8, 8), 40 * index, np.uint8)).save(folder / f"{index}.png")
    reference = ReferenceSet(str(folder), resolution=8)
    assert not reference_features(reference, network, cache_dir=tmp_path)[1]
    assert reference_features(reference, network, cache_dir=tmp_path)[1]
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(folder / "3.png")
    features, hit = reference_features(reference, network, cache_dir=tmp_path)
    assert not hit and len(features) == 4


# ----------------------------------------------------------------------------------------------------------------
# Two processes against one, through `accelerate launch -m ddpm_hf.cli fid`
# ----------------------------------------------------------------------------------------------------------------
def test_two_processes_sampling_half_each_give_the_numbers_of_one_process(cache, tmp_path):
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "pipe")
    # First, so that the reference features are cached and both launched processes read them.
    one = evaluate_sample_quality(pipe, DIGITS_8, num_images=13, num_inference_steps=3, batch_size=4, seed=5,
                                  cache_dir=cache)
    args = ["fid", str(tmp_path / "pipe"), "--data", "embedded:digits", "--num-images", "13", "--steps", "3",
            "--batch-size", "4", "--seed", "5", "--cache-dir", str(cache), "--device", "cpu"]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--multi_gpu", "--main_process_port",
               str(free_port()), "-m", "ddpm_hf.cli", *args, "--out", str(tmp_path / "two.json")]
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    launched = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-4000:]
    assert launched.stdout.count("digit-feature FD:") == 1  # printed by the main process only
    two = json.loads((tmp_path / "two.json").read_text())

    assert (two["num_processes"], one.num_processes) == (2, 1)
    assert two["image_seeds"] == one.image_seeds and two["num_images"] == one.num_images == 13
    assert two["num_reference_images"] == one.num_reference_images == 1797
    assert two["reference_from_cache"]
    # The same images in other batches: equal up to float32 rounding of the convolutions.
    assert two["fd"] == pytest.approx(one.fd, rel=1e-5)
    assert two["kd"] == pytest.approx(one.kd, rel=1e-4, abs=1e-6)
    assert two["kd_std"] == pytest.approx(one.kd_std, rel=1e-4, abs=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Errors: one line, naming the problem and the fix; no download is ever attempted
# ----------------------------------------------------------------------------------------------------------------
def test_missing_inception_weights_offline_give_one_line_naming_both_ways(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("DDPM_HF_FID_WEIGHTS", raising=False)

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    with pytest.raises(InceptionWeightsError) as missing:
        inception_feature_network()
    message = str(missing.value)
    assert "\n" not in message and "offline" in message and "go online" in message
    assert "DDPM_HF_FID_WEIGHTS" in message and "--fid-weights" in message and "weights-inception" in message

    monkeypatch.setenv("DDPM_HF_FID_WEIGHTS", str(tmp_path / "nowhere.pth"))
    with pytest.raises(InceptionWeightsError, match="no Inception-v3 FID weights file at .*nowhere.pth"):
        inception_feature_network()
    pickled = tmp_path / "pickled.pth"
    torch.save({"not": object()}, pickled)  # a pickle that plain-tensor loading refuses
    with pytest.raises(InceptionWeightsError, match="not a plain tensor state dict"):
        inception_feature_network(fid_weights=pickled)


def run_main(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([*map(str, argv)])
    except SystemExit as done:  # argparse's errors
        code = done.code
    out, err = capsys.readouterr()
    return code, out, err


def test_fid_command_writes_its_json_and_every_bad_argument_is_one_line(cache, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny_pipeline().save_pretrained(tmp_path / "pipe")
    pipe = tmp_path / "pipe"
    common = ["--num-images", "6", "--steps", "2", "--cache-dir", cache, "--device", "cpu"]
    code, out, err = run_main(capsys, "fid", pipe, *common, "--out", tmp_path / "fid.json")
    assert code == 0, err
    assert "digit-feature FD:" in out and "digit-feature KD:" in out and "±" in out and "FID" not in out
    record = json.loads((tmp_path / "fid.json").read_text())
    assert record["fd_name"] == "digit-feature FD" and record["num_images"] == 6 and record["seed"] == 0
    assert record["reference"]["source"] == "embedded:digits" and record["num_inference_steps"] == 2
    assert (record["scheduler"], record["eta"]) == ("DDPMPosteriorScheduler", 0.0)
    code, out, err = run_main(capsys, "fid", pipe, *common, "--scheduler", "ddim", "--eta", "1",
                              "--out", tmp_path / "fid-ddim.json")
    assert code == 0, err
    ddim = json.loads((tmp_path / "fid-ddim.json").read_text())
    assert (ddim["scheduler"], ddim["eta"]) == ("DDIMScheduler", 1.0) and ddim["fd"] != record["fd"]

    bad = {
        ("--data", "embedded:cifar"): "unknown embedded dataset 'cifar': use embedded:digits or embedded:mnist",
        ("--data", tmp_path / "nowhere"): "neither embedded:digits, embedded:mnist nor an image folder",
        ("--num-images", "1"): "at least 2",
        ("--steps", "0"): "--steps: must be a positive integer",
        ("--feature", "clip"): "--feature: invalid choice",
        ("--feature", "inception"): "Inception-v3 FID weights are not available",
        ("--fid-weights", tmp_path / "none.pth"): "no such file",
        ("--out", tmp_path / "no-folder" / "fid.json"): "its folder does not exist",
    }
    for extra, expected in bad.items():
        code, out, err = run_main(capsys, "fid", pipe, *common, *extra)
        assert code == 2 and expected in err and err.count("\n") == 1, (extra, err)
        assert err.startswith("ddpm-hf fid: error:"), err


def test_fid_help_imports_neither_torch_nor_diffusers():
    out = run_python("""
        import contextlib, io, sys
        from ddpm_hf.cli import main
        with contextlib.redirect_stdout(io.StringIO()) as text:
            try:
                main(["fid", "--help"])
            except SystemExit as done:
                assert done.code == 0
        assert "--num-images" in text.getvalue()
        print(sorted(m for m in ("torch", "diffusers") if m in sys.modules))
    """)
    assert out.strip() == "[]"
