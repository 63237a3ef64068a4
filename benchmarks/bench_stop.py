# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""How long from SIGTERM to the checkpoint written, against the launchers' grace before SIGKILL?

`accelerate launch` on one process forwards SIGTERM to the trainer and SIGKILLs it 5 s later (hard-coded in
accelerate/commands/launch.py, `_terminate_process_tree`); torchrun (`accelerate launch --multi_gpu`) waits
`--shutdown_timeout` / TORCH_ELASTIC_SHUTDOWN_TIMEOUT, 30 s by default. The trainer needs the rest of the step it
is in (on several processes one step more: the stop flag's all-reduce is read a step late), then one checkpoint.

Each stop is a fresh run (`python training/train.py`, so that no launcher cuts the measurement short; or under
`accelerate launch`, to see its SIGKILL) of the preset on the embedded digits at 32x32, checkpointing every 2 steps:
the save of step 4 times a step (the gap after the save of step 2, over two steps) and a save; then, a random
fraction of a step into step 5, its process group gets SIGTERM. A stop that a launcher killed first prints "lost".

    python -m benchmarks.bench_stop                                   # ddpm-cifar10 (35.7M parameters), batch 8
    python -m benchmarks.bench_stop --train_batch_size 32 --stops 1
    python -m benchmarks.bench_stop --launcher accelerate              # does the checkpoint beat the 5 s SIGKILL?

Run by hand; not part of the tests.
"""

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .timing import add_threads_flag, child_env
from .training_runs import LAUNCHERS, REPO_ROOT, trainer_command


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="ddpm-cifar10")
    parser.add_argument("--train_batch_size", type=int, default=8)
    parser.add_argument("--stops", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="of the moments the signals are sent at")
    parser.add_argument("--launcher", choices=sorted(LAUNCHERS), default="python")
    add_threads_flag(parser)  # the trainer's, through OMP_NUM_THREADS
    return parser.parse_args()


def when(condition, process, poll=0.01) -> float:
    """time.monotonic() once `condition()` holds (checked every `poll` s); fails if the run ends first."""
    while not condition():
        if process.poll() is not None:
            sys.exit(f"the run ended ({process.returncode}):\n{process.stderr.read()[-3000:]}")
        time.sleep(poll)
    return time.monotonic()


def one_stop(args, rng) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        output_dir = Path(folder) / "out"
        checkpoints = output_dir / "checkpoints"
        command = trainer_command("--preset", args.preset, "--embedded_dataset", "digits", "--resolution", "32",
                                  "--train_batch_size", args.train_batch_size, "--max_train_steps", 100000,
                                  "--checkpointing_steps", 2, "--validation_steps", 0, "--report_to", "none",
                                  "--output_dir", output_dir, launcher=args.launcher)
        env = child_env(args.threads, TQDM_DISABLE="1")
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)

        def latest_from(step):  # `latest` names checkpoint-<step> or a later one
            latest = checkpoints / "latest"
            return lambda: latest.is_file() and int(latest.read_text().strip().split("-")[1]) >= step

        def saving_from(step):  # the temporary folder of checkpoint-<step> or a later one
            return lambda: any(int(path.name.split(".")[1].split("-")[1]) >= step
                               for path in checkpoints.glob(".checkpoint-*"))

        saved_2 = when(latest_from(2), process)
        saving_4 = when(saving_from(4), process)
        saved_4 = when(latest_from(4), process)
        step_s, save_s = (saving_4 - saved_2) / 2, saved_4 - saving_4
        time.sleep(rng.uniform(0, step_s))  # into step 5 (or 6: steps vary), so the stop saves step 5 or 6
        signalled = time.monotonic()
        os.killpg(process.pid, signal.SIGTERM)
        saving_5 = saved_5 = None  # until seen: a launcher's SIGKILL may come first
        while process.poll() is None:
            now = time.monotonic()
            saving_5 = saving_5 or (now if saving_from(5)() else None)
            saved_5 = saved_5 or (now if latest_from(5)() else None)
            time.sleep(0.01)
        exited = time.monotonic()
        saved_5 = saved_5 or (exited if latest_from(5)() else None)
        if args.launcher == "python" and process.returncode != 75:
            sys.exit(f"expected exit 75, got {process.returncode}:\n{process.stderr.read()[-3000:]}")
        if saved_5 is None:
            return {"step_s": step_s, "save_s": save_s, "lost": exited - signalled}
        return {"step_s": step_s, "save_s": save_s, "rest_of_step_s": (saving_5 or saved_5) - signalled,
                "to_checkpoint_s": saved_5 - signalled, "to_exit_s": exited - signalled}


def main():
    args = parse_args()
    rng = random.Random(args.seed)
    stops = []
    for index in range(args.stops):
        stops.append(one_stop(args, rng))
        print(f"stop {index + 1}: " + ", ".join(f"{key} {value:.2f}" for key, value in stops[-1].items()), flush=True)
    kept = [stop for stop in stops if "lost" not in stop]
    summary = ", ".join(f"{key} {statistics.median(stop[key] for stop in kept):.2f}" for key in kept[0]) if kept else ""
    print(f"{args.preset}, batch {args.train_batch_size}, {args.launcher}, {args.threads} torch threads,"
          f" {os.cpu_count()} CPUs: {len(kept)} of {len(stops)} stops kept their step; medians: {summary}")


if __name__ == "__main__":
    main()
