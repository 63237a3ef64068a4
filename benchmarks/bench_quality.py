# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Sample quality and bits/dim of a trained pipeline against the number of sampling steps, per sampler and reverse
variance.

Each row is a sampler (`ddpm_hf.samplers`: the respaced DDPM posterior, DDIM at an eta, DPM-Solver++ 2M, UniPC, ...)
at K steps. For the DDPM posterior the rows also vary the reverse variance of the scheduler config: fixed_small
(Sigma_q, the posterior's), fixed_large (beta_t; Ho et al. 2020, section 3.2) and, when the UNet predicts it (2 x C
output channels), learned_range (Nichol & Dhariwal 2021). It prints the digit-feature FD/KD (or FID/KID with
--feature inception; Heusel et al. 2017, Binkowski et al. 2018) of --num_images samples, as the mean and standard
deviation over --draws independent sample sets (the FD of a few hundred samples varies from one set to the next as
much as between samplers), and, for the DDPM rows, the variational bound (`ddpm_hf.variational_bound`, bits/dim) of
--nll_images real images on the same K-step chain (the bound is that chain's; the other samplers have none), and
draws both against K.

    python -m benchmarks.bench_quality ddpm-digits --data embedded:mnist --num_images 1000 --nll_images 64
    python -m benchmarks.bench_quality ddpm-digits --samplers ddpm ddim ddim:1 dpm-solver++ unipc --steps 10 20 50 \
        --variances fixed_large --num_images 500 --draws 3 --nll_images 0      # the README's sampler table

A sampler is NAME or NAME:ETA (DDIM's eta). Run by hand; not part of the tests. At the defaults on a 2-core CPU this
takes hours (the 1000-step rows dominate): pass --steps 10 25 50 for a first look.
"""

import argparse
import json
import math
import sys
import time

import torch

from ddpm_hf import DDPMImagePipeline, DDPMPosteriorScheduler
from ddpm_hf.cli.loading import load_pipeline
from ddpm_hf.data import to_model_range
from ddpm_hf.diffusion.likelihood import variational_bound
from ddpm_hf.errors import one_line
from ddpm_hf.evaluation import ReferenceSet, evaluate_sample_quality
from ddpm_hf.samplers import SAMPLERS, make_scheduler

from .timing import add_threads_flag, pin_threads

STEPS = (10, 25, 50, 100, 250, 1000)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pipeline", help="a trained pipeline folder (or Hub id)")
    parser.add_argument("--data", default="embedded:mnist", help="embedded:digits, embedded:mnist or an image folder")
    parser.add_argument("--split", default="all", choices=("all", "train", "test"))
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS), help="respaced chain lengths")
    parser.add_argument("--samplers", type=sampler_spec, nargs="+", default=[("ddpm", 0.0)],
                        help=f"NAME or NAME:ETA, NAME one of {', '.join(SAMPLERS)}")
    parser.add_argument("--variances", nargs="+", choices=("fixed_small", "fixed_large", "learned_range"),
                        help="reverse variances of the ddpm rows (default: both fixed ones, and the learned one when"
                        " the UNet predicts it)")
    parser.add_argument("--draws", type=int, default=1, help="sample sets per row (seeds --seed, --seed + 1, ...)")
    parser.add_argument("--num_images", type=int, default=1000, help="samples per row for the FD/KD")
    parser.add_argument("--nll_images", type=int, default=64, help="real images per row for bits/dim (0: skip)")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--feature", default="auto", choices=("auto", "digits", "inception"))
    parser.add_argument("--fid_weights", default=None)
    parser.add_argument("--cache_dir", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out_png", default="quality_vs_steps.png")
    parser.add_argument("--out_json", default="quality_vs_steps.json")
    add_threads_flag(parser)
    return parser.parse_args()


def sampler_spec(text: str) -> tuple[str, float]:
    name, _, eta = text.partition(":")
    if name not in SAMPLERS:
        raise argparse.ArgumentTypeError(f"unknown sampler {name!r}: choose one of {', '.join(SAMPLERS)}")
    try:
        return name, float(eta or 0.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"ETA must be a number, got {eta!r}") from None


def row_name(sampler: str, eta: float, variance: str | None) -> str:
    return sampler + (f" eta={eta:g}" if sampler == "ddim" else "") + (f" {variance}" if variance else "")


def variance_types(unet) -> list[str]:
    """Both fixed variances always (a row the scheduler refuses for this UNet is printed as skipped), and the learned
    one when the UNet has the channels for it."""
    learned = unet.config.out_channels == 2 * unet.config.in_channels
    return ["fixed_small", "fixed_large"] + (["learned_range"] if learned else [])


def main() -> int:
    args = parse_args()
    pin_threads(args.threads)
    base = load_pipeline(args.pipeline, args.device)
    unet = base.unet
    size = unet.config.sample_size if isinstance(unet.config.sample_size, int) else unet.config.sample_size[0]
    reference = ReferenceSet(args.data, resolution=int(size), channels=unet.config.in_channels, split=args.split)
    nll_images = None
    if args.nll_images > 0:
        pixels = reference.load_pixels()
        chosen = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(args.seed))[: args.nll_images]
        nll_images = to_model_range(pixels[chosen.sort().values])

    rows = []
    print(f"{'sampler':>24} {'steps':>6} {'FD (mean ± sd over draws)':>26} {'KD':>16} {'bits/dim':>16} {'seconds':>8}")
    for sampler, eta in args.samplers:
        variances = (args.variances or variance_types(unet)) if sampler == "ddpm" else [None]
        for variance in variances:
            if variance is None:
                scheduler = make_scheduler(sampler, base.scheduler.config)
            else:
                scheduler = DDPMPosteriorScheduler.from_config(base.scheduler.config, variance_type=variance)
            pipe = DDPMImagePipeline(unet=unet, scheduler=scheduler).to(args.device)
            pipe.set_progress_bar_config(disable=True)
            name = row_name(sampler, eta, variance)
            for steps in args.steps:
                started = time.perf_counter()
                try:
                    draws = [evaluate_sample_quality(
                        pipe, reference, num_images=args.num_images, num_inference_steps=steps, eta=eta,
                        batch_size=args.batch_size, seed=args.seed + draw, feature=args.feature,
                        fid_weights=args.fid_weights, cache_dir=args.cache_dir,
                    ) for draw in range(args.draws)]
                    bpd = bpd_stderr = math.nan
                    if nll_images is not None and variance is not None:
                        bound = variational_bound(unet, scheduler, nll_images.to(args.device),
                                                  generator=torch.Generator().manual_seed(args.seed),
                                                  batch_size=args.batch_size, timesteps=steps, show_progress=False)
                        summary = bound.summary()
                        bpd, bpd_stderr = summary["total_bpd"], summary["total_bpd_stderr"]
                except (ValueError, OSError, RuntimeError) as error:
                    print(f"{name:>24} {steps:>6} skipped: {one_line(error)}")
                    continue
                seconds = time.perf_counter() - started
                fds = torch.tensor([quality.fd for quality in draws], dtype=torch.float64)
                fd, fd_std = float(fds.mean()), float(fds.std()) if len(fds) > 1 else math.nan
                kd, kd_std = draws[0].kd, draws[0].kd_std
                rows.append(dict(sampler=sampler, eta=eta, variance_type=variance, name=name, steps=steps,
                                 fd_name=draws[0].fd_name, fd=fd, fd_std=fd_std, fds=fds.tolist(), kd=kd,
                                 kd_std=kd_std, bpd=bpd, bpd_stderr=bpd_stderr, seconds=seconds))
                print(f"{name:>24} {steps:>6} {fd:>16.3f} ± {fd_std:<7.3f} {kd:>8.4f} ± {kd_std:<6.4f} "
                      f"{bpd:>8.4f} ± {bpd_stderr:<6.4f} {seconds:>8.1f}", flush=True)
    if not rows:
        print("no row could be measured", file=sys.stderr)
        return 1
    fd_name = rows[0]["fd_name"]
    print(f"FD column: {fd_name} of {args.num_images} samples against {reference.describe()}, mean ± sd over"
          f" {args.draws} draw(s); bits/dim of {args.nll_images} real images (ddpm rows)")
    print_table(rows, fd_name)
    with open(args.out_json, "w", encoding="utf-8") as f:
        json.dump({"pipeline": args.pipeline, "reference": reference.describe(), "num_images": args.num_images,
                   "draws": args.draws, "nll_images": args.nll_images, "seed": args.seed, "rows": rows}, f, indent=2)
        f.write("\n")
    plot(rows, fd_name, args.out_png, title=f"{args.pipeline} on {reference.describe()}")
    print(f"wrote {args.out_png} and {args.out_json}")
    return 0


def print_table(rows: list[dict], fd_name: str) -> None:
    """The rows as a Markdown table: one line per sampler, one column per step count."""
    steps = sorted({row["steps"] for row in rows})
    print(f"\n| sampler | {' | '.join(f'{k} steps' for k in steps)} |")
    print(f"|---|{'---|' * len(steps)}")
    for name in dict.fromkeys(row["name"] for row in rows):
        cells = {row["steps"]: row for row in rows if row["name"] == name}
        shown = [f"{cells[k]['fd']:.3f} ± {cells[k]['fd_std']:.3f}" if k in cells else "-" for k in steps]
        print(f"| {name} | {' | '.join(shown)} |")
    print(f"({fd_name}, mean ± standard deviation over the draws)")


def plot(rows: list[dict], fd_name: str, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_bound = any(math.isfinite(row["bpd"]) for row in rows)  # --nll_images 0: the FD panel alone
    figure, axes = plt.subplots(1, 2 if with_bound else 1, figsize=(10 if with_bound else 5.5, 4), squeeze=False)
    left, right = axes[0][0], axes[0][1] if with_bound else None
    for name in dict.fromkeys(row["name"] for row in rows):
        mine = [row for row in rows if row["name"] == name]
        steps = [row["steps"] for row in mine]
        left.errorbar(steps, [row["fd"] for row in mine], yerr=[row["fd_std"] for row in mine], marker="o",
                      capsize=3, label=name)
        if right is not None and mine[0]["variance_type"] is not None:
            right.errorbar(steps, [row["bpd"] for row in mine], yerr=[row["bpd_stderr"] for row in mine],
                           marker="o", capsize=3, label=name)
    all_steps = sorted({row["steps"] for row in rows})
    panels = [(left, f"{fd_name} (lower is better)")] + ([(right, "bits/dim bound (lower is better)")] if right else [])
    for axis, label in panels:
        axis.set_xscale("log")
        axis.set_xticks(all_steps, [str(k) for k in all_steps])  # the measured K, not 10^0 ... 10^3
        axis.minorticks_off()
        axis.set_xlabel("sampling steps")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
