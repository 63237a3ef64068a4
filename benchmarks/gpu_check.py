# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""One unattended command for the rare GPU: the ddpm-cifar10 preset's training speed, memory, host syncs, sampling
speed against diffusers, and equality with diffusers on CUDA.

    python -m benchmarks.gpu_check --out $OUT/gpu_check.json       # one CUDA GPU, under 8 minutes
    python -m benchmarks.gpu_check --dry_run                       # CPU, tiny preset at 8x8, well under a minute

Sections, each in its own try/except (a failure prints one `FAILED <section>: ...` line and the run goes on):

1. environment: torch / diffusers / accelerate versions, the device, its capability, bf16 support, TF32 settings.
2. training: the preset's UNet at batch 128 on synthetic uint8 32x32x3 images, through the trainer's own loader, its
   step (`ddpm_hf.trainer.step.TrainingStep`, built by the trainer's builders: AdamW, LR schedule, gradient clipping,
   loss, timestep sampler and EMA from the preset) and its LossMeter, under an Accelerator with mixed_precision
   "bf16", then "no" (fp32 weights; the matmul and cuDNN TF32 settings are torch's defaults and are reported, not
   changed). Warm-up steps, then timed windows that synchronize only at their ends (where the trainer's loop reads its
   losses back); steps/s, images/s, the ratio to the paper's 21 steps/s (Ho et al. 2020, Appendix B: TPU v3-8), and
   the peak of `torch.cuda.max_memory_allocated` (reset between precisions). Both precisions run in this process:
   `AcceleratorState._reset_state(True)` before each Accelerator.
3. host syncs: training steps under `torch.cuda.set_sync_debug_mode("warn")`; every synchronizing CUDA call is
   counted, by phase of the step (data, step, loss meter), and the first one is named by its frame.
   Explicit `torch.cuda.synchronize` / `Stream.synchronize` / `Event.synchronize` calls are counted too.
4. sampling: images/s of `DDPMImagePipeline` against diffusers' `DDPMPipeline` on the same (randomly initialised)
   UNet and scheduler config, in interleaved rounds (medians, and the median of per-round ratios).
5. equality: `DDPMPosteriorScheduler.step` against `DDPMScheduler.step` along a chain, and `DDPMImagePipeline`
   against `DDPMPipeline`, with the same (CUDA) generators: max |difference| and the tolerance it is held to.

A global budget (--budget_s) skips the sections that would not fit any more, with a note; a watchdog ends the run
(with its JSON written) if a section overruns the budget by more than a grace period. Results are printed as they
come; the last line printed is the JSON summary, also written to --out after every section.
"""

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import dataclass

import torch

from ddpm_hf.errors import one_line

from .timing import add_threads_flag, compare, median_ratio, pin_threads, synchronize

NO_CUDA = "no CUDA device: run with --dry_run on CPU"
PAPER_STEPS_PER_S = 21.0  # Ho et al. 2020, Appendix B: the CIFAR-10 model, batch 128, on a TPU v3-8
WATCHDOG_GRACE_S = 45.0  # past the budget, the watchdog writes what there is and exits (420 + 45 < 8 minutes)
GIB = 2**30
# diffusers keeps alphas_cumprod in float32, DDPMPosteriorScheduler every coefficient in float64: 1 - abar near t = 0
# differs by up to ~6e-4 relative. Hence the tolerances of tests/test_scheduler_diffusers_parity.py (steps) and
# tests/test_pipeline.py (images in [0, 1]), held here too.
SCHEDULER_RTOL = 1e-3  # |ours - theirs| <= 1e-3 (1 + |theirs|)
IMAGE_ATOL = 2e-3


@dataclass(frozen=True)
class Settings:
    preset: str
    resolution: int
    channels: int
    batch_size: int
    num_images: int  # the synthetic training set
    warmup_steps: int
    timed_windows: int
    window_steps: int
    sync_warmup_steps: int
    sync_steps: int
    sync_confirm_steps: int  # under sync debug mode "error" (CUDA only)
    sample_batch: int
    sample_steps: int
    sample_rounds: int
    scheduler_shape: tuple
    scheduler_steps: int
    pipeline_batch: int
    pipeline_steps: int
    estimates: dict  # section -> the seconds it needs (with margin), to decide whether it still fits the budget


GPU = Settings(
    preset="ddpm-cifar10", resolution=32, channels=3, batch_size=128, num_images=4096, warmup_steps=10,
    timed_windows=2, window_steps=25, sync_warmup_steps=3, sync_steps=10, sync_confirm_steps=2, sample_batch=64,
    sample_steps=100, sample_rounds=3, scheduler_shape=(16, 3, 32, 32), scheduler_steps=100, pipeline_batch=16,
    pipeline_steps=100,
    estimates={"training": 150, "training/precision": 60, "host_sync": 45, "sampling": 90, "equality": 40},
)
DRY_RUN = Settings(
    preset="tiny", resolution=8, channels=3, batch_size=4, num_images=64, warmup_steps=1, timed_windows=1,
    window_steps=2, sync_warmup_steps=1, sync_steps=2, sync_confirm_steps=1, sample_batch=4, sample_steps=3,
    sample_rounds=2, scheduler_shape=(2, 3, 8, 8), scheduler_steps=5, pipeline_batch=2, pipeline_steps=5,
    estimates={"training": 20, "training/precision": 10, "host_sync": 10, "sampling": 10, "equality": 10},
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry_run", action="store_true",
                        help="everything on the CPU, tiny preset at 8x8: checks the script, measures nothing")
    parser.add_argument("--budget_s", type=float, default=420.0, help="skip the sections that would end past this")
    parser.add_argument("--out", help="also write the JSON summary here (after every section)")
    add_threads_flag(parser, why="the host only feeds the GPU; on the CPU of a dry run one thread holds up beside a"
                     " neighbour's job")
    return parser.parse_args(argv)


def failure_line(err: BaseException) -> str:
    """`Type: the message as one line (at file:line)`: what a report read long after the run needs to place it."""
    frames = traceback.extract_tb(err.__traceback__)
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    return f"{type(err).__name__}: {one_line(err)}{where}"


def free_memory(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Report:
    """The summary, printed as it grows and written to --out after every section; the budget and its watchdog."""

    def __init__(self, args, settings: Settings, device):
        self.start = time.perf_counter()
        self.budget_s, self.out, self.settings, self.device = args.budget_s, args.out, settings, device
        self.summary = {"script": "benchmarks.gpu_check", "dry_run": args.dry_run, "device": str(device),
                        "budget_s": args.budget_s, "sections": {}}
        self.current = None
        self.lock = threading.Lock()
        self.watchdog = threading.Timer(max(args.budget_s, 0) + WATCHDOG_GRACE_S, self.on_watchdog)
        self.watchdog.daemon = True
        self.watchdog.start()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    @staticmethod
    def line(text: str) -> None:
        print(text, flush=True)

    def fits(self, estimate_s: float) -> bool:
        return self.left() >= estimate_s

    def budget_note(self, estimate_s: float) -> str:
        return f"budget: {max(self.left(), 0):.0f} s of {self.budget_s:.0f} s left, this needs ~{estimate_s:.0f} s"

    def section(self, name: str, fn, estimate_s: float | None = None) -> None:
        """Run `fn(self)` (a dict of results) unless its `estimate_s` no longer fits the budget (None: always)."""
        if estimate_s is not None and not self.fits(estimate_s):
            note = self.budget_note(estimate_s)
            self.line(f"SKIPPED {name}: {note}")
            self.record(name, {"status": "skipped", "reason": note})
            return
        self.line(f"== {name}")
        self.current = name
        start = time.perf_counter()
        try:
            result = fn(self)
            result.setdefault("status", "ok")
        except (Exception, SystemExit) as err:  # SystemExit: an argparse error inside the trainer's parser
            result = {"status": "failed", "error": failure_line(err)}
            self.line(f"FAILED {name}: {result['error']}")
        finally:
            self.current = None
            free_memory(self.device)
        result["seconds"] = round(time.perf_counter() - start, 2)
        self.record(name, result)

    def record(self, name: str, result: dict) -> None:
        with self.lock:
            self.summary["sections"][name] = result
            self.write()

    def write(self) -> None:
        self.summary["elapsed_s"] = round(self.elapsed(), 2)
        if self.out:
            os.makedirs(os.path.dirname(os.path.abspath(self.out)), exist_ok=True)
            temporary = f"{self.out}.tmp"
            with open(temporary, "w", encoding="utf-8") as f:
                json.dump(self.summary, f, indent=1, default=str)
            os.replace(temporary, self.out)

    def finish(self) -> None:
        self.watchdog.cancel()
        with self.lock:
            self.write()
            print(json.dumps(self.summary, default=str), flush=True)

    def on_watchdog(self) -> None:
        with self.lock:
            name = self.current or "between sections"
            self.summary["sections"].setdefault(name, {})["status"] = "failed"
            self.summary["sections"][name]["error"] = "stopped by the watchdog: the budget plus grace ran out"
            self.summary["watchdog"] = f"exited {WATCHDOG_GRACE_S:.0f} s past the {self.budget_s:.0f} s budget"
            print(f"FAILED {name}: stopped by the watchdog, {WATCHDOG_GRACE_S:.0f} s past the budget", flush=True)
            self.write()
            print(json.dumps(self.summary, default=str), flush=True)
        os._exit(3)


class Context:
    """What the sections share: the settings, the device, the trainer's flags for the preset, its initial UNet."""

    def __init__(self, settings: Settings, device, dry_run: bool):
        from ddpm_hf.presets import load_preset
        from ddpm_hf.trainer.config import parse_args as parse_trainer_args
        from ddpm_hf.trainer.setup import build_unet

        self.settings, self.device, self.dry_run = settings, device, dry_run
        self.output_dir = tempfile.mkdtemp(prefix="gpu_check-")  # never written: the trainer's flags want one
        self.trainer_args = parse_trainer_args([
            "--preset", settings.preset, "--output_dir", self.output_dir, "--resolution", str(settings.resolution),
            "--train_batch_size", str(settings.batch_size), "--report_to", "none", "--dataloader_num_workers", "0",
            "--use_ema",  # the cifar10 preset's; the tiny one (dry run) leaves it off, but the step must be the same
        ])
        self.unet = build_unet(self.trainer_args, load_preset(settings.preset).unet, settings.channels)  # seeded
        self.parameters = sum(p.numel() for p in self.unet.parameters())
        generator = torch.Generator().manual_seed(0)
        shape = (settings.num_images, settings.channels, settings.resolution, settings.resolution)
        self.pixels = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)

    def scheduler_config(self):
        from ddpm_hf.trainer.setup import make_noise_scheduler

        return make_noise_scheduler(self.trainer_args).config


def bf16_support(device) -> tuple[bool, str]:
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return True, ""
        return False, f"torch.cuda.is_bf16_supported() is False on {torch.cuda.get_device_name(device)}"
    from accelerate.utils import is_bf16_available

    if is_bf16_available(ignore_tpu=True):
        return True, ""
    return False, "accelerate.utils.is_bf16_available() is False on this CPU"


# ----------------------------------------------------------------------------------------------------------------
# 1. Environment
# ----------------------------------------------------------------------------------------------------------------
def environment(report: Report, ctx: Context) -> dict:
    import accelerate
    import diffusers

    device = ctx.device
    bf16, reason = bf16_support(device)
    info = {
        "python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "diffusers": diffusers.__version__, "accelerate": accelerate.__version__, "device": str(device),
        "bf16_supported": bf16, "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cpu_threads": torch.get_num_threads(),
    }
    if reason:
        info["bf16_reason"] = reason
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(
            device_name=properties.name, capability=".".join(map(str, torch.cuda.get_device_capability(device))),
            total_memory_gib=round(properties.total_memory / GIB, 1), multiprocessors=properties.multi_processor_count,
            cuda_matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32, cudnn=torch.backends.cudnn.version(),
            device_count=torch.cuda.device_count(),
        )
    else:
        info.update(device_name=platform.processor() or platform.machine(), capability=None)
    report.line(f"torch {info['torch']} (CUDA {info['torch_cuda']}), diffusers {info['diffusers']}, accelerate"
                f" {info['accelerate']}, python {info['python']}")
    report.line(f"device {info['device_name']} ({device}), capability {info['capability']}, bf16 {bf16}"
                f"{' (' + reason + ')' if reason else ''}, float32 matmul precision"
                f" {info['float32_matmul_precision']}, cuDNN TF32 {info['cudnn_allow_tf32']}")
    return info


# ----------------------------------------------------------------------------------------------------------------
# 2. Training throughput (and the runner that section 3 reuses)
# ----------------------------------------------------------------------------------------------------------------
class TrainerRun:
    """What the trainer's loop does per optimizer step (minus progress bar, checkpoints and validation), on the
    synthetic images: its loader, its `TrainingStep` and its LossMeter."""

    def __init__(self, ctx: Context, mixed_precision: str):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        from ddpm_hf.data.order import BatchLayout, micro_batch_loader
        from ddpm_hf.trainer.monitoring import LossMeter
        from ddpm_hf.trainer.step import TrainingStep

        # One Accelerator per mixed precision, in one process: the state singletons are reset first.
        AcceleratorState._reset_state(reset_partial_state=True)
        args = ctx.trainer_args
        self.accelerator = Accelerator(mixed_precision=mixed_precision, cpu=ctx.dry_run)
        self.device = self.accelerator.device
        # The same initial weights for every precision.
        self.training_step = TrainingStep.build(args, self.accelerator, copy.deepcopy(ctx.unet))
        layout = BatchLayout(args.train_batch_size, 1, 0, args.gradient_accumulation_steps)
        self.loader = iter(micro_batch_loader(
            ctx.pixels, seed=args.seed, layout=layout, first_step=0, last_step=10**9, first_position=0,
            flip=args.random_flip, num_workers=0, pin_memory=self.device.type == "cuda",
        ))
        self.micro_batches = args.gradient_accumulation_steps
        self.meter = LossMeter(check_grad_norm=mixed_precision != "fp16")
        self.global_step = 0

    def run(self, steps: int, phase=None) -> None:
        """`steps` optimizer steps; `phase(name)` (if given) is called as each part of a step begins."""
        mark = phase or (lambda name: None)
        for _ in range(steps):
            mark("data")
            items = [next(self.loader) for _ in range(self.micro_batches)]
            mark("step")
            output = self.training_step(self.global_step, items)
            mark("loss_meter")
            self.global_step += 1
            self.meter.add(self.global_step, output)
        mark(None)

    def read_losses(self) -> float:
        """The loop's log-point read-back (its only host sync); the last loss."""
        return self.meter.flush(self.accelerator)[-1].loss


def measure_precision(report: Report, ctx: Context, mixed_precision: str) -> dict:
    settings, device = ctx.settings, ctx.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run = TrainerRun(ctx, mixed_precision)
    run.run(settings.warmup_steps)
    run.read_losses()
    synchronize(device)
    windows = []
    for _ in range(settings.timed_windows):
        start = time.perf_counter()
        run.run(settings.window_steps)
        last_loss = run.read_losses()  # window ends only: the read-back and a synchronize
        synchronize(device)
        windows.append(time.perf_counter() - start)
    steps = settings.timed_windows * settings.window_steps
    steps_per_s = steps / sum(windows)
    result = {
        "status": "ok", "mixed_precision": mixed_precision, "steps_per_s": round(steps_per_s, 3),
        "images_per_s": round(steps_per_s * settings.batch_size, 1),
        "ratio_to_paper": round(steps_per_s / PAPER_STEPS_PER_S, 3),
        "window_steps_per_s": [round(settings.window_steps / t, 3) for t in windows],
        "warmup_steps": settings.warmup_steps, "timed_steps": steps, "last_loss": round(last_loss, 5),
        "peak_memory_allocated_gib": None, "peak_memory_reserved_gib": None,
    }
    if device.type == "cuda":
        result["peak_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / GIB, 3)
        result["peak_memory_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / GIB, 3)
    memory = (f", peak memory {result['peak_memory_allocated_gib']:.2f} GiB allocated"
              f" ({result['peak_memory_reserved_gib']:.2f} GiB reserved)" if device.type == "cuda" else "")
    report.line(f"{mixed_precision:>4s}: {steps_per_s:7.2f} steps/s, {result['images_per_s']:8.1f} images/s,"
                f" {result['ratio_to_paper']:.2f}x the paper's {PAPER_STEPS_PER_S:.0f} steps/s (TPU v3-8); windows"
                f" {result['window_steps_per_s']} steps/s{memory}; loss {last_loss:.4f}")
    del run
    free_memory(device)
    return result


def training(report: Report, ctx: Context) -> dict:
    settings = ctx.settings
    result = {
        "preset": settings.preset, "parameters": ctx.parameters, "batch_size": settings.batch_size,
        "image_shape": [settings.channels, settings.resolution, settings.resolution],
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "precision_isolation": "one process; AcceleratorState._reset_state(True) before each Accelerator",
        "paper_steps_per_s": PAPER_STEPS_PER_S, "precisions": {},
    }
    report.line(f"{settings.preset} UNet, {ctx.parameters / 1e6:.2f}M parameters, batch {settings.batch_size} of"
                f" {'x'.join(map(str, result['image_shape']))} uint8, {settings.warmup_steps} warm-up +"
                f" {settings.timed_windows}x{settings.window_steps} timed steps, lr {ctx.trainer_args.learning_rate},"
                f" clip {ctx.trainer_args.max_grad_norm}, EMA {ctx.trainer_args.use_ema}")
    bf16, reason = bf16_support(ctx.device)
    for name, mixed_precision in (("bf16", "bf16"), ("fp32", "no")):
        estimate = settings.estimates["training/precision"]
        if name == "bf16" and not bf16:
            result["precisions"][name] = {"status": "unsupported", "reason": reason}
            report.line(f"bf16: unsupported ({reason})")
        elif not report.fits(estimate):
            note = report.budget_note(estimate)
            result["precisions"][name] = {"status": "skipped", "reason": note}
            report.line(f"SKIPPED training/{name}: {note}")
        else:
            try:
                result["precisions"][name] = measure_precision(report, ctx, mixed_precision)
            except Exception as err:
                result["precisions"][name] = {"status": "failed", "error": failure_line(err)}
                report.line(f"FAILED training/{name}: {failure_line(err)}")
            free_memory(ctx.device)
    measured = {k: v for k, v in result["precisions"].items() if v.get("status") == "ok"}
    if "bf16" in measured and "fp32" in measured:
        result["bf16_speedup"] = round(measured["bf16"]["steps_per_s"] / measured["fp32"]["steps_per_s"], 3)
        report.line(f"bf16 / fp32 = {result['bf16_speedup']:.2f} in steps/s")
    if any(v.get("status") == "failed" for v in result["precisions"].values()):
        result["status"] = "failed"
        result["error"] = "; ".join(f"{k}: {v['error']}" for k, v in result["precisions"].items() if "error" in v)
    return result


# ----------------------------------------------------------------------------------------------------------------
# 3. No host sync per step
# ----------------------------------------------------------------------------------------------------------------
SYNC_WARNING = "synchronizing CUDA operation"  # c10's warning in sync debug mode "warn"


class SyncDetector:
    """Counts the host syncs made inside the `with`: CUDA's sync-debug warnings (when `cuda_debug_mode`) and explicit
    synchronize calls, each by the phase the step was in, keeping the first one's frame."""

    def __init__(self, cuda_debug_mode: bool):
        self.cuda_debug_mode = cuda_debug_mode
        self.phase = None
        self.by_phase: dict[str, int] = {}
        self.first = None
        self.count = 0
        self.patched = []

    def set_phase(self, name) -> None:
        self.phase = name

    def event(self, what: str, frame: str) -> None:
        phase = self.phase or "outside a step"
        self.count += 1
        self.by_phase[phase] = self.by_phase.get(phase, 0) + 1
        if self.first is None:
            self.first = f"{what} in {phase} at {frame}"

    @staticmethod
    def frame_of(stack, fallback: str) -> str:
        """The innermost frame outside this file and the warnings machinery, plus the innermost ddpm_hf one."""
        here = os.path.abspath(__file__)
        frames = [f for f in stack if os.path.abspath(f.filename) != here and not f.filename.endswith("warnings.py")]
        if not frames:
            return fallback
        innermost = frames[-1]
        text = f"{innermost.filename}:{innermost.lineno} ({innermost.name}: {(innermost.line or '').strip()})"
        ours = [f for f in frames if f"{os.sep}ddpm_hf{os.sep}" in f.filename]
        if ours and ours[-1] is not innermost:
            text += f" via {os.path.relpath(ours[-1].filename)}:{ours[-1].lineno}"
        return text

    def show_warning(self, message, category, filename, lineno, file=None, line=None):
        if SYNC_WARNING in str(message):
            self.event("sync-debug warning", self.frame_of(traceback.extract_stack()[:-1], f"{filename}:{lineno}"))
        else:
            self.previous_show(message, category, filename, lineno, file, line)

    def wrap(self, owner, name: str) -> None:
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            self.event(f"{getattr(owner, '__name__', owner)}.{name}()", self.frame_of(traceback.extract_stack()[:-1],
                                                                                      "?"))
            return original(*args, **kwargs)

        self.patched.append((owner, name, owner.__dict__.get(name)))
        setattr(owner, name, counted)

    def __enter__(self):
        self.warnings = warnings.catch_warnings()
        self.warnings.__enter__()
        warnings.simplefilter("always")
        self.previous_show = warnings.showwarning
        warnings.showwarning = self.show_warning
        try:
            self.wrap(torch.cuda, "synchronize")
            self.wrap(torch.cuda.Stream, "synchronize")
            self.wrap(torch.cuda.Event, "synchronize")
            if self.cuda_debug_mode:
                torch.cuda.set_sync_debug_mode("warn")
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, *exc):
        try:
            if self.cuda_debug_mode:
                torch.cuda.set_sync_debug_mode("default")
        finally:
            for owner, name, original in reversed(self.patched):
                if original is None:
                    delattr(owner, name)
                else:
                    setattr(owner, name, original)
            self.patched = []
            self.warnings.__exit__(*exc)
        return False


def host_sync(report: Report, ctx: Context) -> dict:
    settings, device = ctx.settings, ctx.device
    cuda = device.type == "cuda"
    mixed_precision = "bf16" if bf16_support(device)[0] else "no"
    run = TrainerRun(ctx, mixed_precision)
    run.run(settings.sync_warmup_steps)
    run.read_losses()
    synchronize(device)
    with SyncDetector(cuda_debug_mode=cuda) as detector:
        run.run(settings.sync_steps, phase=detector.set_phase)
    run.read_losses()  # the log-point read-back, outside the watched steps
    error_mode = "skipped: no CUDA"
    if cuda:  # a second opinion that no warning filter can hide: mode "error" raises at the first sync
        synchronize(device)
        torch.cuda.set_sync_debug_mode("error")
        try:
            run.run(settings.sync_confirm_steps)
            error_mode = f"no sync in {settings.sync_confirm_steps} steps"
        except RuntimeError as err:
            frame = SyncDetector.frame_of(traceback.extract_tb(err.__traceback__), "?")
            error_mode = f"raised: {failure_line(err)}; first frame {frame}"
        finally:
            torch.cuda.set_sync_debug_mode("default")
        report.line(f"sync debug mode error: {error_mode}")
    result = {
        "mixed_precision": mixed_precision, "steps": settings.sync_steps, "syncs": detector.count,
        "syncs_per_step": detector.count / settings.sync_steps, "by_phase": detector.by_phase,
        "first": detector.first, "sync_free": detector.count == 0,
        "sync_debug_mode": "warn" if cuda else "skipped: no CUDA", "sync_debug_mode_error": error_mode,
    }
    if not cuda:
        report.line("sync debug mode: skipped: no CUDA (explicit synchronize calls counted only)")
    verdict = "no host sync" if detector.count == 0 else f"{detector.count} host syncs ({detector.by_phase})"
    report.line(f"{settings.sync_steps} training steps ({mixed_precision}): {verdict}"
                + (f"; first: {detector.first}" if detector.first else ""))
    del run
    return result


# ----------------------------------------------------------------------------------------------------------------
# 4. Sampling
# ----------------------------------------------------------------------------------------------------------------
def sampling_pipelines(ctx: Context, unet):
    from diffusers import DDPMPipeline, DDPMScheduler

    from ddpm_hf import DDPMImagePipeline, DDPMPosteriorScheduler

    config = ctx.scheduler_config()
    pipelines = {
        "ours": DDPMImagePipeline(unet=unet, scheduler=DDPMPosteriorScheduler.from_config(config)),
        "diffusers": DDPMPipeline(unet=unet, scheduler=DDPMScheduler.from_config(config)),
    }
    for pipe in pipelines.values():
        pipe.set_progress_bar_config(disable=True)
    return pipelines


def sample(pipe, device, batch_size: int, steps: int, seed: int = 0):
    generator = torch.Generator(device).manual_seed(seed)
    return pipe(batch_size=batch_size, generator=generator, num_inference_steps=steps, output_type="np").images


def sampling(report: Report, ctx: Context) -> dict:
    settings, device = ctx.settings, ctx.device
    unet = copy.deepcopy(ctx.unet).to(device).eval()
    pipelines = sampling_pipelines(ctx, unet)
    runners = {name: (lambda pipe=pipe: sample(pipe, device, settings.sample_batch, settings.sample_steps))
               for name, pipe in pipelines.items()}
    times = compare(runners, rounds=settings.sample_rounds, repeats=1)  # output_type "np": each call ends synced
    rates = {name: settings.sample_batch / statistics.median(seconds) for name, seconds in times.items()}
    ratio = median_ratio(times, "diffusers", "ours")  # diffusers' time / ours = ours' images/s / diffusers'
    report.line(f"{settings.sample_batch} images of {settings.channels}x{settings.resolution}x{settings.resolution},"
                f" {settings.sample_steps} steps, fp32 UNet: DDPMImagePipeline {rates['ours']:.2f} images/s,"
                f" DDPMPipeline {rates['diffusers']:.2f} images/s, ratio ours/diffusers {ratio:.3f}"
                f" (median of {settings.sample_rounds} interleaved rounds)")
    return {
        "batch_size": settings.sample_batch, "steps": settings.sample_steps, "rounds": settings.sample_rounds,
        "ours_images_per_s": round(rates["ours"], 3), "diffusers_images_per_s": round(rates["diffusers"], 3),
        "ratio_ours_over_diffusers": round(ratio, 4),
        "round_seconds": {name: [round(t, 4) for t in seconds] for name, seconds in times.items()},
    }


# ----------------------------------------------------------------------------------------------------------------
# 5. Equality with diffusers
# ----------------------------------------------------------------------------------------------------------------
def scheduler_equality(ctx: Context, config_changes: dict) -> dict:
    from diffusers import DDPMScheduler

    from ddpm_hf import DDPMPosteriorScheduler

    settings, device = ctx.settings, ctx.device
    config = {**ctx.scheduler_config(), **config_changes}
    ours, theirs = DDPMPosteriorScheduler.from_config(config), DDPMScheduler.from_config(config)
    for scheduler in (ours, theirs):
        scheduler.set_timesteps(settings.scheduler_steps)  # on the CPU, as the pipelines set them
    if not torch.equal(ours.timesteps, theirs.timesteps):
        raise AssertionError("the two schedulers' timesteps differ")
    inputs = torch.Generator(device).manual_seed(123)
    x_ours = torch.randn(settings.scheduler_shape, generator=inputs, device=device)
    x_theirs = x_ours.clone()
    g_ours, g_theirs = torch.Generator(device).manual_seed(0), torch.Generator(device).manual_seed(0)
    worst_abs, worst_rel, exact = 0.0, 0.0, 0
    for t in ours.timesteps:
        model_output = torch.randn(settings.scheduler_shape, generator=inputs, device=device)
        a = ours.step(model_output, t, x_ours, generator=g_ours).prev_sample
        b = theirs.step(model_output, t, x_theirs, generator=g_theirs).prev_sample
        difference = (a - b).abs()
        worst_abs = max(worst_abs, difference.max().item())
        worst_rel = max(worst_rel, (difference / (SCHEDULER_RTOL * (1 + b.abs()))).max().item())
        exact += int(torch.equal(a, b))
        x_ours, x_theirs = a, b
    return {"config": config_changes or "the trainer's", "steps": len(ours.timesteps),
            "max_abs_diff": worst_abs, "worst_over_tolerance": round(worst_rel, 4), "exact_steps": exact,
            "within_tolerance": worst_rel <= 1.0}


def equality(report: Report, ctx: Context) -> dict:
    settings, device = ctx.settings, ctx.device
    generator_kind = f'torch.Generator("{device.type}")'
    result = {"generators": generator_kind, "scheduler_tolerance": f"|ours - diffusers| <= {SCHEDULER_RTOL}"
              " (1 + |diffusers|) per element", "image_atol": IMAGE_ATOL,
              "tolerance_reason": "diffusers keeps alphas_cumprod in float32, DDPMPosteriorScheduler its coefficients"
              " in float64 (1 - abar near t = 0 differs by up to ~6e-4 relative): the CPU tests' tolerances"}
    result["scheduler"] = [scheduler_equality(ctx, {}),
                           scheduler_equality(ctx, {"variance_type": "fixed_large", "clip_sample": False})]
    for case in result["scheduler"]:
        report.line(f"scheduler ({case['config']}), {case['steps']} steps, {generator_kind}: max |prev_sample"
                    f" difference| {case['max_abs_diff']:.3g}, {case['worst_over_tolerance']:.3g} of the tolerance,"
                    f" {case['exact_steps']} steps bit-exact{'' if case['within_tolerance'] else ' MISMATCH'}")

    unet = copy.deepcopy(ctx.unet).to(device).eval()
    pipelines = sampling_pipelines(ctx, unet)
    images = {name: sample(pipe, device, settings.pipeline_batch, settings.pipeline_steps)
              for name, pipe in pipelines.items()}
    difference = abs(images["ours"] - images["diffusers"])
    pipeline = {"batch_size": settings.pipeline_batch, "steps": settings.pipeline_steps, "output_type": "np",
                "seed": 0, "max_abs_diff": float(difference.max()), "mean_abs_diff": float(difference.mean()),
                "equal_fraction": float((difference == 0).mean()), "within_tolerance": bool(difference.max() <=
                                                                                              IMAGE_ATOL)}
    result["pipeline"] = pipeline
    report.line(f"pipeline, {settings.pipeline_batch} images x {settings.pipeline_steps} steps,"
                f" {generator_kind}.manual_seed(0): max |image difference| {pipeline['max_abs_diff']:.3g}"
                f" (tolerance {IMAGE_ATOL}), mean {pipeline['mean_abs_diff']:.3g}, {pipeline['equal_fraction']:.1%}"
                f" of values equal{'' if pipeline['within_tolerance'] else ' MISMATCH'}")
    schedulers_ok = all(case["within_tolerance"] for case in result["scheduler"])
    result["within_tolerance"] = pipeline["within_tolerance"] and schedulers_ok
    return result


# ----------------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr, flush=True)
        return 2
    settings = DRY_RUN if args.dry_run else GPU
    device = torch.device("cpu") if args.dry_run else torch.device("cuda", torch.cuda.current_device())
    pin_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the Hub
    report = Report(args, settings, device)
    report.line(f"gpu_check: {'dry run on the CPU' if args.dry_run else 'on ' + str(device)}, preset"
                f" {settings.preset}, budget {args.budget_s:.0f} s")
    try:
        ctx = Context(settings, device, args.dry_run)
    except (Exception, SystemExit) as err:
        report.line(f"FAILED setup: {failure_line(err)}")
        report.record("setup", {"status": "failed", "error": failure_line(err)})
        report.finish()
        return 1
    report.section("environment", lambda r: environment(r, ctx))
    report.section("training", lambda r: training(r, ctx), settings.estimates["training"])
    report.section("host_sync", lambda r: host_sync(r, ctx), settings.estimates["host_sync"])
    report.section("sampling", lambda r: sampling(r, ctx), settings.estimates["sampling"])
    report.section("equality", lambda r: equality(r, ctx), settings.estimates["equality"])
    report.line(f"done in {report.elapsed():.1f} s")
    report.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
