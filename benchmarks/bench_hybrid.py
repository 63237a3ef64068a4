# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Improved DDPM's likelihood claim, checked: L_simple with a fixed variance against L_hybrid with a learned one.

Trains two tiny UNets (preset "tiny") with training/train.py under `accelerate launch` on the embedded digits (8x8,
or upscaled to 16x16) with the same budget, seed, data subset, batch size, learning rate and EMA, differing only in
the objective and the reverse variance:

    simple: --loss_type simple --variance_type fixed_small       (Ho et al. 2020: sigma_t^2 = the posterior's)
    hybrid: --loss_type hybrid --variance_type learned_range     (Nichol & Dhariwal 2021: L_simple + 0.001 L_vlb)

then bounds -log p(x_0) of both (`ddpm_hf.variational_bound`, bits/dim) on the held-out digits, those
that the trainer's seeded subset (`--max_train_samples`) left out, on the full T-step chain (or a respaced one with
--bound_steps). All bounds use the same seed, so every model sees the very same x_t ~ q(x_t | x_0) for each
(image, t): the per-image difference is paired, and its standard error small. A third bound, not trained, puts the
simple model's UNet under sigma_t^2 = beta_t (fixed_large), to show how much of the gap a larger fixed variance
alone closes (--no-reference skips it).

Prints the bounds with their prior / decoder / denoising parts, the paired differences, the training wall times and
"hybrid bound lower: yes/no"; writes bench_hybrid.json and bench_hybrid_terms.png (mean term per t of every model,
and where the gap is made) into --out, beside the two trained pipelines and their training logs.

    python -m benchmarks.bench_hybrid                  # the real budget: about 12 minutes on 2 shared CPU cores
    python -m benchmarks.bench_hybrid --quick          # a smoke run (about 1.5 minutes); its numbers mean little
    python -m benchmarks.bench_hybrid --skip_training  # bound the pipelines already trained into --out again

Run by hand; not part of the tests.
"""

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from ddpm_hf import DDPMImagePipeline, variational_bound
from ddpm_hf.data import to_model_range
from ddpm_hf.data.options import subset_indices
from ddpm_hf.data.sources import load_image_dataset

from .estimates import mean_stderr
from .timing import add_threads_flag, child_env, pin_threads
from .training_runs import REPO_ROOT, trainer_command

DATASET = "digits"
REFERENCE = "simple, sigma^2=beta"  # not trained: the simple model's UNet sampled with variance_type fixed_large
EARLY = 10  # the decoder and the first denoising terms, where Improved DDPM says the learned variance matters

MODELS = {  # name -> the trainer flags that differ
    "simple": ["--loss_type", "simple", "--variance_type", "fixed_small"],
    "hybrid": ["--loss_type", "hybrid", "--variance_type", "learned_range"],
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="training steps of each model (default 2000;"
                        " --quick: 60)")
    parser.add_argument("--out", default="bench-hybrid-out", help="output folder (the two pipelines, logs, JSON, PNG)")
    parser.add_argument("--num_heldout", type=int, default=None, help="digits kept out of training and bounded"
                        " (default 200; --quick: 24)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (and data subset), and the bound's draws")
    parser.add_argument("--resolution", type=int, default=8, choices=[8, 16])
    parser.add_argument("--quick", action="store_true", help="a tiny budget: checks that everything runs")
    parser.add_argument("--batch_size", type=int, default=32, help="training batch size")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True, help="bound the EMA weights")
    parser.add_argument("--ddpm_num_steps", type=int, default=1000, help="T, the length of the forward process")
    parser.add_argument("--bound_steps", type=int, default=None, help="bound a respaced chain of this many steps"
                        " (default: the full T-step chain)")
    parser.add_argument("--bound_batch_size", type=int, default=256, help="(image, t) pairs per model call")
    add_threads_flag(parser)  # in training and in the bound
    parser.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True, help="also bound the"
                        " simple model with sigma^2 = beta_t (fixed_large) instead of its fixed_small: how much of the"
                        " gap a larger fixed variance alone closes")
    parser.add_argument("--skip_training", action="store_true", help="reuse the pipelines already in --out")
    args = parser.parse_args()
    for flag in ("steps", "num_heldout", "batch_size", "ddpm_num_steps", "bound_steps", "bound_batch_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag} must be at least 1, got {value}")
    if args.steps is None:
        args.steps = 60 if args.quick else 2000
    if args.num_heldout is None:
        args.num_heldout = 24 if args.quick else 200
    return args


def train(name: str, args, num_train: int) -> float:
    """Train one model into OUT/NAME; returns the whole trainer process's wall time (start-up and save included)."""
    output_dir = Path(args.out) / name
    command = trainer_command(
        "--preset", "tiny", "--embedded_dataset", DATASET, "--resolution", str(args.resolution),
        "--max_train_samples", str(num_train), "--seed", str(args.seed), "--output_dir", str(output_dir),
        "--max_train_steps", str(args.steps), "--train_batch_size", str(args.batch_size),
        "--learning_rate", str(args.learning_rate), "--lr_warmup_steps", str(min(100, args.steps // 10)),
        "--ddpm_num_steps", str(args.ddpm_num_steps), "--timestep_sampler", "uniform",
        "--report_to", "none", "--validation_steps", "0", "--checkpointing_steps", "0", "--logging_steps", "50",
        "--use_ema" if args.ema else "--no-use_ema", *MODELS[name],
    )
    env = child_env(args.threads)
    log_path = Path(args.out) / f"train-{name}.log"
    print(f"training {name} ({args.steps} steps) -> {output_dir} (log: {log_path})", flush=True)
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(" ".join(command) + "\n\n")
        log.flush()
        result = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if result.returncode:
        tail = "".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines(True)[-30:])
        raise SystemExit(f"training {name} failed (exit {result.returncode}); the end of {log_path}:\n{tail}")
    return seconds


def heldout_images(args, num_train: int) -> torch.Tensor:
    """The digits the trainer's subset (`subset_indices(count, num_train, seed)`) left out, preprocessed alike."""
    options = dict(embedded=DATASET, resolution=args.resolution, show_progress=False)
    everything = load_image_dataset(**options)
    train_indices = subset_indices(len(everything), num_train, args.seed)
    # The trainer's data is the subset in source order: check that the indices are the ones it trained on.
    trained = load_image_dataset(**options, max_train_samples=num_train, seed=args.seed)
    if not torch.equal(everything.pixels[train_indices], trained.pixels):
        raise SystemExit("The computed training indices do not reproduce the trainer's subset: cannot hold out.")
    heldout = sorted(set(range(len(everything))) - set(train_indices))
    assert len(heldout) == args.num_heldout, (len(heldout), args.num_heldout)
    return to_model_range(everything.pixels[heldout])


def seconds(value) -> str:
    return "n/a (--skip_training)" if value is None else f"{value:.1f} s"


def describe_parts(bound, early: int) -> dict:
    """The bound's summary, with the sum of the decoder and the first `early - 1` denoising terms."""
    summary = bound.summary()
    summary["total_bpd_stderr"] = mean_stderr(bound.total_bpd)[1]
    summary[f"first_{early}_terms_bpd"] = float(bound.terms_bpd[:, :early].sum(1).mean())
    return summary


def plot(bounds: dict, path: Path, title: str) -> None:
    """Mean term per t of every bound (all steps; the first 30), and where the hybrid - simple gap is made."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"simple": dict(color="C0"), "hybrid": dict(color="C1"), REFERENCE: dict(color="0.5", ls="--")}
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8), dpi=110)
    for ax, last in zip(axes[:2], (None, 30)):
        for name, bound in bounds.items():
            t = bound.timesteps.numpy()[:last]
            terms = bound.terms_bpd.mean(0).numpy()[:last]
            total, stderr = mean_stderr(bound.total_bpd)
            ax.plot(t[1:], np.maximum(terms[1:], 1e-12), lw=1.2, **styles[name],
                    label=f"{name}: total {total:.3f} ± {stderr:.3f}")
            ax.scatter(t[:1], terms[:1], color=styles[name]["color"], zorder=3,
                       label=f"{name}: decoder $L_0$ = {terms[0]:.3f}")
        ax.set_yscale("log")
        ax.set_xlabel("timestep t (diffusers, 0-based; t = 0 is the decoder)")
        ax.set_ylabel("mean term (bits/dim)")
        ax.set_title("mean term per step" if last is None else f"the first {last} steps")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    # Where the gap is made: the running sum over t (decoder first) of the paired per-step difference of the means.
    ax = axes[2]
    for name in [n for n in bounds if n != "hybrid"]:
        gap = (bounds["hybrid"].terms_bpd - bounds[name].terms_bpd).mean(0).cumsum(0).numpy()
        ax.plot(bounds[name].timesteps.numpy() + 1, gap, lw=1.4, **styles[name], label=f"hybrid - {name}")
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("t + 1 (the paper's t; log scale)")
    ax.set_ylabel("bits/dim")
    ax.set_title("running sum over steps <= t of the per-step difference", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def check_trained(name: str, args, num_train: int) -> None:
    """With --skip_training: the pipeline in OUT/NAME must come from this budget, seed and data split."""
    path = Path(args.out) / name / "training_args.json"
    if not path.is_file():
        raise SystemExit(f"--skip_training: {path} is missing; train first (run without --skip_training)")
    saved = json.loads(path.read_text(encoding="utf-8"))
    wanted = {"max_train_steps": args.steps, "seed": args.seed, "max_train_samples": num_train,
              "resolution": args.resolution, "train_batch_size": args.batch_size, "learning_rate": args.learning_rate,
              "ddpm_num_steps": args.ddpm_num_steps, "use_ema": args.ema,
              "loss_type": MODELS[name][1], "variance_type": MODELS[name][3]}
    wrong = {key: (saved.get(key), value) for key, value in wanted.items() if saved.get(key) != value}
    if wrong:
        raise SystemExit(f"--skip_training: {Path(args.out) / name} was trained otherwise (saved, asked): {wrong}")


def main():
    args = parse_args()
    pin_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    count = len(load_image_dataset(embedded=DATASET, resolution=8, show_progress=False))
    if not 1 <= args.num_heldout < count:
        raise SystemExit(f"--num_heldout must be between 1 and {count - 1}")
    num_train = count - args.num_heldout

    times_file = out / "train_seconds.json"
    if args.skip_training:
        for name in MODELS:
            check_trained(name, args, num_train)
        train_seconds = json.loads(times_file.read_text(encoding="utf-8")) if times_file.is_file() else {}
    else:
        train_seconds = {}
        for name in MODELS:
            train_seconds[name] = train(name, args, num_train)
            print(f"  {name}: {train_seconds[name]:.1f} s", flush=True)
        times_file.write_text(json.dumps(train_seconds) + "\n", encoding="utf-8")

    images = heldout_images(args, num_train)
    T = args.ddpm_num_steps
    chain = list(range(T - 1, -1, -1)) if args.bound_steps is None else args.bound_steps
    chain_name = f"the full {T}-step chain" if args.bound_steps is None else f"a respaced {args.bound_steps}-step chain"
    pipelines = {name: DDPMImagePipeline.from_pretrained(str(out / name)) for name in MODELS}
    for name, pipeline in pipelines.items():
        if pipeline.scheduler.config.variance_type != MODELS[name][3]:
            raise SystemExit(f"{out / name} has variance_type {pipeline.scheduler.config.variance_type}, not"
                             f" {MODELS[name][3]}")
    models = {name: (pipeline.unet, pipeline.scheduler) for name, pipeline in pipelines.items()}
    if args.reference:  # the simple model's UNet as it is, with the largest fixed variance instead of the smallest
        scheduler = pipelines["simple"].scheduler
        models[REFERENCE] = (pipelines["simple"].unet,
                             type(scheduler).from_config({**scheduler.config, "variance_type": "fixed_large"}))
    print(f"bounding {len(images)} held-out digits on {chain_name} ({', '.join(models)}) ...", flush=True)
    bounds, bound_seconds = {}, {}
    for name, (unet, scheduler) in models.items():
        start = time.perf_counter()
        bounds[name] = variational_bound(unet, scheduler, images, generator=torch.Generator().manual_seed(args.seed),
                                         batch_size=args.bound_batch_size, timesteps=chain, show_progress=False)
        bound_seconds[name] = time.perf_counter() - start

    parts = {name: describe_parts(bound, EARLY) for name, bound in bounds.items()}
    differences = {name: mean_stderr(bounds["hybrid"].total_bpd - bound.total_bpd)
                   for name, bound in bounds.items() if name != "hybrid"}
    diff_mean, diff_stderr = differences["simple"]
    lower = diff_mean < 0

    print(f"\nImproved-DDPM check: tiny UNet, embedded digits {args.resolution}x{args.resolution}, {num_train} training"
          f" / {len(images)} held-out images, seed {args.seed}")
    print(f"budget (each): {args.steps} steps x batch {args.batch_size}, lr {args.learning_rate:g}, T = {T}, EMA"
          f" {'on' if args.ema else 'off'}, uniform t, {args.threads} thread(s)")
    print(f"bound: {chain_name}, bits/dim on the held-out digits, the same x_t draws for every model (seed"
          f" {args.seed}); ± = standard error over images")
    for name in bounds:
        p = parts[name]
        how = "its UNet, variance fixed_large" if name == REFERENCE else " ".join(MODELS[name][1::2])
        train_time = "" if name == REFERENCE else f"train {seconds(train_seconds.get(name))}, "
        print(f"{name:>6} ({how}): total {p['total_bpd']:.4f} ± {p['total_bpd_stderr']:.4f}  [prior"
              f" {p['prior_bpd']:.2e}, decoder {p['decoder_bpd']:.4f}, denoising {p['denoising_bpd']:.4f}; decoder +"
              f" first {EARLY - 1} denoising {p[f'first_{EARLY}_terms_bpd']:.4f}]  {train_time}bound"
              f" {bound_seconds[name]:.1f} s")
    for name, (mean, stderr) in differences.items():
        print(f"hybrid - {name}: {mean:+.4f} ± {stderr:.4f} bits/dim (paired over {len(images)} images"
              + (f"; z = {mean / stderr:+.1f})" if stderr > 0 else ")"))
    print(f"hybrid bound lower: {'yes' if lower else 'no'}")

    png = out / "bench_hybrid_terms.png"
    plot(bounds, png, f"variational bound on {len(images)} held-out digits, {chain_name}; {args.steps} training"
                      f" steps each")
    record = {
        "config": vars(args), "num_train": num_train, "num_heldout": len(images), "chain": chain_name,
        "train_seconds": train_seconds, "bound_seconds": bound_seconds,
        "models": {name: {"how": "simple UNet with variance_type fixed_large" if name == REFERENCE else MODELS[name],
                          **parts[name], "mean_terms_bpd": bounds[name].terms_bpd.mean(0).tolist(),
                          "per_image_total_bpd": bounds[name].total_bpd.tolist()} for name in bounds},
        "timesteps": bounds["simple"].timesteps.tolist(),
        "paired_differences_bpd": {f"hybrid - {name}": {"mean": mean, "stderr": stderr}
                                   for name, (mean, stderr) in differences.items()},
        "hybrid_bound_lower": lower,
    }
    with open(out / "bench_hybrid.json", "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    print(f"wrote {png} and {out / 'bench_hybrid.json'}")


if __name__ == "__main__":
    main()
