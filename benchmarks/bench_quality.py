#!/usr/bin/env python
# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Sample quality and bits/dim of a trained pipeline against the number of sampling steps and the reverse variance.

Each row respaces the chain to K steps (`num_inference_steps`) with the reverse variance of the scheduler config:
fixed_small (Sigma_q, the posterior's), fixed_large (beta_t; Ho et al. 2020, section 3.2) and, when the UNet predicts
it (2 x C output channels), learned_range (Nichol & Dhariwal 2021). It prints the digit-feature FD/KD (or FID/KID
with --feature inception; Heusel et al. 2017, Binkowski et al. 2018) of --num-images samples and the variational
bound (`ddpm_hf.variational_bound`, bits/dim) of --nll-images real images on the same K-step chain, and draws both
against K.

    python benchmarks/bench_quality.py ddpm-digits --data embedded:mnist --num-images 1000 --nll-images 64

Run by hand; not part of the tests. At the defaults on a 2-core CPU this takes hours (the 1000-step rows dominate):
pass --steps 10 25 50 for a first look.
"""

import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ddpm_hf import DDPMImagePipeline, DDPMPosteriorScheduler  # noqa: E402
from ddpm_hf.cli.loading import load_pipeline  # noqa: E402
from ddpm_hf.data import to_model_range  # noqa: E402
from ddpm_hf.diffusion.likelihood import variational_bound  # noqa: E402
from ddpm_hf.errors import one_line  # noqa: E402
from ddpm_hf.metrics import ReferenceSet, evaluate_sample_quality  # noqa: E402

STEPS = (10, 25, 50, 100, 250, 1000)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pipeline", help="a trained pipeline folder (or Hub id)")
    parser.add_argument("--data", default="embedded:mnist", help="embedded:digits, embedded:mnist or an image folder")
    parser.add_argument("--split", default="all", choices=("all", "train", "test"))
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS), help="respaced chain lengths")
    parser.add_argument("--num-images", type=int, default=1000, help="samples per row for the FD/KD")
    parser.add_argument("--nll-images", type=int, default=64, help="real images per row for bits/dim (0: skip)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--feature", default="auto", choices=("auto", "digits", "inception"))
    parser.add_argument("--fid-weights", default=None)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out-png", default="quality_vs_steps.png")
    parser.add_argument("--out-json", default="quality_vs_steps.json")
    return parser.parse_args()


def variance_types(unet) -> list[str]:
    """Both fixed variances always (a row the scheduler refuses for this UNet is printed as skipped), and the learned
    one when the UNet has the channels for it."""
    learned = unet.config.out_channels == 2 * unet.config.in_channels
    return ["fixed_small", "fixed_large"] + (["learned_range"] if learned else [])


def main() -> int:
    args = parse_args()
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
    print(f"{'variance':>13} {'steps':>6} {'FD':>10} {'KD':>16} {'bits/dim':>16} {'seconds':>8}")
    for variance in variance_types(unet):
        scheduler = DDPMPosteriorScheduler.from_config(base.scheduler.config, variance_type=variance)
        pipe = DDPMImagePipeline(unet=unet, scheduler=scheduler).to(args.device)
        pipe.set_progress_bar_config(disable=True)
        for steps in args.steps:
            started = time.perf_counter()
            try:
                quality = evaluate_sample_quality(
                    pipe, reference, num_images=args.num_images, num_inference_steps=steps,
                    batch_size=args.batch_size, seed=args.seed, feature=args.feature, fid_weights=args.fid_weights,
                    cache_dir=args.cache_dir,
                )
                bpd = bpd_stderr = math.nan
                if nll_images is not None:
                    bound = variational_bound(unet, scheduler, nll_images.to(args.device),
                                              generator=torch.Generator().manual_seed(args.seed),
                                              batch_size=args.batch_size, timesteps=steps, show_progress=False)
                    summary = bound.summary()
                    bpd, bpd_stderr = summary["total_bpd"], summary["total_bpd_stderr"]
            except (ValueError, OSError, RuntimeError) as error:
                print(f"{variance:>13} {steps:>6} skipped: {one_line(error)}")
                continue
            seconds = time.perf_counter() - started
            rows.append(dict(variance_type=variance, steps=steps, fd_name=quality.fd_name, fd=quality.fd,
                             kd=quality.kd, kd_std=quality.kd_std, bpd=bpd, bpd_stderr=bpd_stderr, seconds=seconds))
            print(f"{variance:>13} {steps:>6} {quality.fd:>10.3f} {quality.kd:>8.4f} ± {quality.kd_std:<6.4f} "
                  f"{bpd:>8.4f} ± {bpd_stderr:<6.4f} {seconds:>8.1f}", flush=True)
    if not rows:
        print("no row could be measured", file=sys.stderr)
        return 1
    fd_name = rows[0]["fd_name"]
    print(f"FD column: {fd_name} of {args.num_images} samples against {reference.describe()}; bits/dim of "
          f"{args.nll_images} real images")
    with open(args.out_json, "w", encoding="utf-8") as f:
        json.dump({"pipeline": args.pipeline, "reference": reference.describe(), "num_images": args.num_images,
                   "nll_images": args.nll_images, "seed": args.seed, "rows": rows}, f, indent=2)
        f.write("\n")
    plot(rows, fd_name, args.out_png, title=f"{args.pipeline} on {reference.describe()}")
    print(f"wrote {args.out_png} and {args.out_json}")
    return 0


def plot(rows: list[dict], fd_name: str, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for variance in dict.fromkeys(row["variance_type"] for row in rows):
        mine = [row for row in rows if row["variance_type"] == variance]
        steps = [row["steps"] for row in mine]
        left.plot(steps, [row["fd"] for row in mine], marker="o", label=variance)
        right.errorbar(steps, [row["bpd"] for row in mine], yerr=[row["bpd_stderr"] for row in mine], marker="o",
                       capsize=3, label=variance)
    all_steps = sorted({row["steps"] for row in rows})
    for axis, label in ((left, f"{fd_name} (lower is better)"), (right, "bits/dim bound (lower is better)")):
        axis.set_xscale("log")
        axis.set_xticks(all_steps, [str(k) for k in all_steps])  # the measured K, not 10^0 ... 10^3
        axis.minorticks_off()
        axis.set_xlabel("sampling steps (respaced chain)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
