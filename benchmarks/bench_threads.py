# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""How many torch threads should a CPU training process use, on an idle machine and beside another CPU job?

Each configuration is a fresh process (OMP_WAIT_POLICY is read once, when torch's OpenMP starts) that runs the
default preset's training step (mnist-16: its UNet, batch 64 at 16x16, L_simple, AdamW) and prints its median
seconds per step. The configurations: 1 and `nproc` threads (or the --threads given), OMP_WAIT_POLICY unset, passive
and active, each alone and beside a competing job (a one-core busy loop, the load of a neighbour's process on a shared
machine). Each round runs every configuration once, in an order that rotates from round to round; the medians over
rounds are reported, with each one's ratio to one thread in the same round and load.

    python -m benchmarks.bench_threads                 # 3 rounds, 20 timed steps per configuration
    python -m benchmarks.bench_threads --rounds 5 --steps 30

Run by hand; not part of the tests. It sets its own threads: nothing else should run on the machine meanwhile.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from .timing import child_env, median_ratio, pin_threads, rotating_rounds

WAIT_POLICIES = ("unset", "passive", "active")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration (after 3 warm-up steps)")
    # The benchmarks' --threads, several counts here: each configuration's child pins its own (timing.pin_threads).
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}),
                        help="the torch thread counts compared (default: 1 and every core); 1 is always included,"
                        " as the peer of every ratio")
    parser.add_argument("--child_threads", type=int, help=argparse.SUPPRESS)  # internal: run one configuration
    return parser.parse_args()


def time_steps(threads: int, steps: int) -> float:
    """The median seconds of one training step of the default preset, with `threads` torch threads."""
    import torch
    import torch.nn.functional as F
    from diffusers import UNet2DModel

    from ddpm_hf import DDPMPosteriorScheduler
    from ddpm_hf.presets import load_preset, unet_config_for_data

    pin_threads(threads, announce=False)  # the parent prints the counts
    torch.manual_seed(0)
    unet = UNet2DModel(**unet_config_for_data(load_preset("mnist-16").unet, channels=1, resolution=16,
                                            learned_variance=False)).train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    scheduler = DDPMPosteriorScheduler()
    images = torch.rand(64, 1, 16, 16) * 2 - 1
    durations = []
    for step in range(3 + steps):
        start = time.perf_counter()
        noise = torch.randn_like(images)
        timesteps = torch.randint(0, 1000, (len(images),))
        loss = F.mse_loss(unet(scheduler.add_noise(images, noise, timesteps), timesteps).sample, noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= 3:
            durations.append(time.perf_counter() - start)
    return statistics.median(durations)


def run_configuration(threads: int, policy: str, steps: int) -> float:
    """A fresh process's median seconds per step with `threads` threads and OMP_WAIT_POLICY `policy`."""
    env = child_env(threads)
    env.pop("OMP_WAIT_POLICY", None)
    if policy != "unset":
        env["OMP_WAIT_POLICY"] = policy
    command = [sys.executable, "-m", "benchmarks.bench_threads", "--child_threads", str(threads), "--steps", str(steps)]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main():
    args = parse_args()
    if args.child_threads:
        print(time_steps(args.child_threads, args.steps))
        return
    thread_counts = sorted({1, *args.threads})
    print(f"torch threads compared: {', '.join(map(str, thread_counts))} (--threads); {os.cpu_count()} CPUs",
          flush=True)
    configurations = {f"threads={threads} OMP_WAIT_POLICY={policy}": (threads, policy)
                      for threads in thread_counts for policy in WAIT_POLICIES}
    results = {}  # load -> configuration name -> seconds per step, one per round
    for load in ("idle", "busy"):
        print(f"{load}:", file=sys.stderr, flush=True)
        competitor = (subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "busy" else None)
        try:
            results[load] = rotating_rounds(
                {name: (lambda threads=threads, policy=policy: run_configuration(threads, policy, args.steps))
                 for name, (threads, policy) in configurations.items()}, args.rounds, show="{:.3f} s/step")
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()

    print(f"{'load':5} {'threads':>7} {'OMP_WAIT_POLICY':>15} {'s/step':>8} {'vs 1 thread, same policy':>25}")
    table = []
    for load, by_name in results.items():
        for name, (threads, policy) in configurations.items():
            ratio = median_ratio(by_name, name, f"threads=1 OMP_WAIT_POLICY={policy}")
            median = statistics.median(by_name[name])
            print(f"{load:5} {threads:>7} {policy:>15} {median:>8.3f} {ratio:>24.2f}x")
            table.append({"load": load, "threads": threads, "omp_wait_policy": policy, "seconds_per_step": median,
                          "ratio_to_one_thread": ratio, "rounds": by_name[name]})
    print(json.dumps(table))

if __name__ == "__main__":
    main()
