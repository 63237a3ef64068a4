# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""benchmarks.gpu_check, the one-shot GPU check: its --dry_run on the CPU (so that the script never rots before
the rare GPU run), its refusal without CUDA, its time budget, and its host-sync detector."""

import contextlib
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from benchmarks import gpu_check  # the repository root is on sys.path: `python -m pytest` runs from it

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("environment", "training", "host_sync", "sampling", "equality")
NO_CUDA = "no CUDA device: run with --dry_run on CPU"


def run_gpu_check(*args):
    """`python -m benchmarks.gpu_check ARGS` from the repository root, as the README runs it."""
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"))


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    result = run_gpu_check("--dry_run", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, out


def test_dry_run_reports_every_section(dry_run):
    stdout, out = dry_run
    lines = stdout.splitlines()
    assert not [line for line in lines if "FAILED" in line or "SKIPPED" in line], stdout
    for name in SECTIONS:
        assert f"== {name}" in lines
    assert "sync debug mode: skipped: no CUDA" in stdout
    summary = json.loads(lines[-1])  # the last line printed is the summary, as written to --out
    assert summary == json.loads(out.read_text())
    assert summary["dry_run"] is True and summary["device"] == "cpu"
    assert {name: summary["sections"][name]["status"] for name in SECTIONS} == dict.fromkeys(SECTIONS, "ok")


def test_dry_run_values_are_real(dry_run):
    sections = json.loads(dry_run[1].read_text())["sections"]
    training = sections["training"]
    assert training["preset"] == "tiny" and training["parameters"] > 0 and training["batch_size"] == 4
    precisions = training["precisions"]
    assert set(precisions) == {"bf16", "fp32"}
    fp32 = precisions["fp32"]
    assert fp32["status"] == "ok" and fp32["mixed_precision"] == "no"
    assert fp32["steps_per_s"] > 0 and fp32["images_per_s"] > 0 and fp32["ratio_to_paper"] > 0
    bf16 = precisions["bf16"]
    if bf16["status"] == "ok":
        assert bf16["mixed_precision"] == "bf16" and bf16["steps_per_s"] > 0 and training["bf16_speedup"] > 0
    else:
        assert bf16["status"] == "unsupported" and bf16["reason"]

    sync = sections["host_sync"]
    assert sync["steps"] > 0 and sync["sync_debug_mode"] == "skipped: no CUDA"
    assert sync["syncs"] == 0 and sync["sync_free"] is True and sync["first"] is None

    sampling = sections["sampling"]
    assert sampling["ours_images_per_s"] > 0 and sampling["diffusers_images_per_s"] > 0
    assert sampling["ratio_ours_over_diffusers"] > 0

    equality = sections["equality"]
    assert equality["generators"] == 'torch.Generator("cpu")'
    for case in equality["scheduler"]:
        assert case["steps"] > 0 and case["worst_over_tolerance"] <= 1.0 and case["max_abs_diff"] < 1e-3
        assert case["within_tolerance"] is True
    assert equality["pipeline"]["max_abs_diff"] <= equality["image_atol"] == 2e-3
    assert equality["within_tolerance"] is True


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would run for real")
def test_without_cuda_and_without_dry_run_it_exits_2_with_one_line():
    result = run_gpu_check()
    assert result.returncode == 2
    assert (result.stdout + result.stderr).strip() == NO_CUDA


def test_an_exhausted_budget_skips_the_sections_with_a_note(tmp_path):
    out = tmp_path / "gpu_check.json"
    result = run_gpu_check("--dry_run", "--budget_s", "0", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    sections = json.loads(out.read_text())["sections"]
    assert sections["environment"]["status"] == "ok"  # always: it costs nothing
    for name in SECTIONS[1:]:
        assert sections[name]["status"] == "skipped" and "budget" in sections[name]["reason"]
        assert f"SKIPPED {name}: budget" in result.stdout
    assert "FAILED" not in result.stdout


def test_sync_detector_counts_by_phase_names_the_frame_and_restores_everything():
    synchronize = torch.cuda.synchronize
    methods = {cls: cls.__dict__.get("synchronize") for cls in (torch.cuda.Stream, torch.cuda.Event)}
    detector = gpu_check.SyncDetector(cuda_debug_mode=False)  # CUDA's own warnings are faked here
    with pytest.warns(UserWarning, match="unrelated"), detector:
        detector.set_phase("step")
        warnings.warn("called a synchronizing CUDA operation", stacklevel=1)
        warnings.warn("unrelated", stacklevel=1)  # passed on, not counted
        detector.set_phase("loss_meter")
        with contextlib.suppress(Exception):  # on a CPU build the call itself fails, after being counted
            torch.cuda.synchronize()
        detector.set_phase(None)
    assert detector.count == 2 and detector.by_phase == {"step": 1, "loss_meter": 1}
    assert detector.first.startswith("sync-debug warning in step at ") and "test_gpu_check.py" in detector.first
    assert torch.cuda.synchronize is synchronize
    assert {cls: cls.__dict__.get("synchronize") for cls in methods} == methods
