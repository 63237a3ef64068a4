# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Training data storages ("memory", "memmap", "lazy") against each other: images/s delivered to the training step,
time to first step, and peak RSS per process against the decoded size.

An image folder of `--num_images` textured RGB images (`--image_size` px PNG, or JPEG, in 10 sub-folders; built once
and cached under `--work_dir`) is loaded by `load_image_dataset(train_data_dir=..., storage=...)` into each storage,
each in a child process of its own (so that each has its own peak RSS) with a fresh cache folder (so the memmap file
is built, and the lazy headers checked, in the timed load). Each child then reads micro-batches from
`micro_batch_loader` with `--num_workers` DataLoader workers, as the trainer does, in two modes:

- data: the micro-batches only, each made float by `prepare_micro_batch` (what the loader can deliver);
- unet: each micro-batch also goes through the trainer's own step (`TrainingStep`, built by the trainer's builders
  from the preset's flags: Accelerator, AdamW, LR schedule, gradient clipping, loss, the EMA when the preset has one),
  on the UNet of the preset that trains at that resolution: mnist-16 at 16 px, ddpm-cifar10 at 32 px, with the
  preset's batch size. On a CPU the ddpm-cifar10 UNet (35.7M parameters) takes about a minute per step of 128 on 2
  cores, so there the tiny preset's UNet stands in for it (faster, so it bounds the step less: if even it hides the
  data, the real one does).
  Resolutions no preset trains at (64 px by default, where the decoded set outgrows a process's own baseline RSS
  and the memory figures mean something) run the data mode only.

The three children of a resolution run side by side, idle but for the one being timed: each round times one window
of each storage back to back, in an order that rotates from round to round (`timing.rotating_rounds`), so a
ratio against memory shares the machine's load; images/s is the median over rounds, "vs memory" the median of the
per-round ratios. A window first drains what the
workers prefetched while the child was idle (2 batches per worker) and warms up, untimed.

Reported per storage and mode: images/s and its ratio to memory's; "ready": the load (decode into memory, decode into
the memmap file, or check every header); "again": the load of a second run that finds the cache entry built; "first":
seconds from the child's start (interpreter, imports, load, worker start) to its first micro-batch (unet rows: plus
building the UNet and its first step); peak RSS (VmHWM) of the main process and of the busiest worker, and how much
it rose above the main's RSS before loading, or the worker's after its first micro-batch (the loader keeps the same
workers across both modes; a forked worker starts out sharing the main's pages); RssAnon/RssFile at the end of the
mode (a memmap's pages are file-backed page cache, shared by every process that maps the file, not private memory);
the decoded size N x C x R x R.

    python -m benchmarks.bench_data                     # 20,000 images at 64 px; 16, 32 (with UNet) and 64 px
    python -m benchmarks.bench_data --quick             # 2,000 images, 16 and 32 px, batch 32: a smoke run
    python -m benchmarks.bench_data --resolutions 32 --num_workers 4 --format jpeg

Run by hand; not part of the tests. Targets: memmap and lazy within 10% of memory's images/s at the default
presets' resolutions (where the UNet bounds the step); their peak RSS per process well below the decoded size.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from .timing import add_threads_flag, median_ratio, pin_threads, rotating_rounds, synchronize

STORAGES = ("memory", "memmap", "lazy")
DEFAULT_PRESETS = ("mnist-16", "ddpm-cifar10")  # the unconditional presets; their resolutions are the defaults
CPU_STAND_INS = {"ddpm-cifar10": "tiny"}  # presets whose UNet is too slow on a CPU for this benchmark's steps
MESSAGE = "@@bench_data "  # prefix of the child's protocol lines on its stdout
MiB = 1 << 20


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_images", type=int, default=20000)
    parser.add_argument("--image_size", type=int, default=64, help="side of the generated images, in px")
    parser.add_argument("--format", choices=("png", "jpeg"), default="png")
    parser.add_argument("--resolutions", type=int, nargs="+", default=None,
                        help="training resolutions (default: the default presets' own, with their UNet, and 64)")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="micro-batch size (default: that of the preset that trains at the resolution, else 64)")
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="timed windows per storage and mode")
    parser.add_argument("--data_batches", type=int, default=30, help="timed micro-batches per data window")
    parser.add_argument("--unet_steps", type=int, default=3, help="timed steps per unet window")
    parser.add_argument("--unet_rounds", type=int, default=4, help="timed windows per storage in unet mode")
    parser.add_argument("--no_unet", action="store_true", help="data mode only")
    parser.add_argument("--unet_preset", default=None,
                        help="the UNet for every resolution (default: the preset that trains at it; see above)")
    parser.add_argument("--random_flip", action="store_true")
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even when a GPU is present")
    add_threads_flag(parser)  # each child's (its DataLoader workers keep torch's one thread each)
    parser.add_argument("--work_dir", default=os.path.join(tempfile.gettempdir(), "ddpm_hf_bench_data"),
                        help="where the image folder is built and kept for the next run")
    parser.add_argument("--quick", action="store_true", help="2,000 images, short windows: a smoke run")
    parser.add_argument("--child", choices=STORAGES, help=argparse.SUPPRESS)
    parser.add_argument("--child_config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.num_images = min(args.num_images, 2000)
        args.rounds, args.data_batches, args.unet_rounds, args.unet_steps = 2, 10, 1, 1
        args.batch_size = args.batch_size or 32
        args.resolutions = args.resolutions or default_resolutions(with_64=False)
    return args


# --------------------------------------------------------------------------- #
# The image folder
# --------------------------------------------------------------------------- #


def build_folder(args) -> str:
    """`--num_images` RGB images with some texture (coloured blocks, a gradient, pixel noise), so that decoding is
    real work, in 10 sub-folders; kept for the next run with the same settings."""
    import numpy as np
    from PIL import Image

    folder = os.path.join(args.work_dir, f"images-{args.num_images}-{args.image_size}px-{args.format}")
    marker = os.path.join(folder, ".complete")
    if os.path.isfile(marker):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    start, size = time.perf_counter(), args.image_size
    rng = np.random.default_rng(0)
    block = max(1, size // 8)
    rows = np.arange(size, dtype=np.float32)[:, None, None]
    for index in range(args.num_images):
        sub = os.path.join(folder, f"class_{index % 10}")
        os.makedirs(sub, exist_ok=True)
        blocks = rng.integers(0, 256, (-(-size // block), -(-size // block), 3), dtype=np.uint8)
        image = np.kron(blocks, np.ones((block, block, 1), dtype=np.uint8))[:size, :size].astype(np.float32)
        image += rows * rng.uniform(-2, 2, 3).astype(np.float32) + rng.normal(0, 8, (size, size, 3)).astype(np.float32)
        extension = "png" if args.format == "png" else "jpg"
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(os.path.join(sub, f"{index:06d}.{extension}"),
                                                                  quality=90)
    with open(marker, "w") as file:
        json.dump({"num_images": args.num_images, "image_size": size, "format": args.format}, file)
    on_disk = sum(entry.stat().st_size for sub in os.scandir(folder) if sub.is_dir() for entry in os.scandir(sub))
    print(f"built {args.num_images} images in {folder} ({on_disk / MiB:.0f} MiB on disk) in"
          f" {time.perf_counter() - start:.0f} s", flush=True)
    return folder


# --------------------------------------------------------------------------- #
# The child: one storage, its loader, and the step
# --------------------------------------------------------------------------- #


def proc_status(pid="self") -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem of a process, in bytes (empty when it is gone)."""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                    fields[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return fields


def reset_peak_rss() -> bool:
    """Start VmHWM again from the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
        return True
    except OSError:
        return False


class Child:
    def __init__(self, storage: str, config: dict):
        import torch

        from ddpm_hf.data.order import BatchLayout, micro_batch_loader
        from ddpm_hf.data.sources import load_image_dataset
        from ddpm_hf.trainer.step import prepare_micro_batch

        pin_threads(config["threads"], announce=False)  # the parent's header says it
        self.storage, self.config, self.torch, self.prepare = storage, config, torch, prepare_micro_batch
        self.device = torch.device(config["device"])
        self.base = proc_status()  # after the imports, before any data
        load = dict(train_data_dir=config["folder"], resolution=config["resolution"], storage=storage,
                    cache_dir=config["cache_dir"], show_progress=False)
        start = time.perf_counter()
        self.data = load_image_dataset(**load)
        self.ready_s = time.perf_counter() - start
        loader = micro_batch_loader(self.data.pixels, seed=0, layout=BatchLayout(config["batch_size"]), first_step=0,
                                    last_step=10**9, first_position=0, flip=config["random_flip"],
                                    num_workers=config["num_workers"], pin_memory=self.device.type == "cuda")
        self.batches = iter(loader)  # one loader, and one set of workers, for the child's whole life
        self.prepare(next(self.batches).pixels, self.device)
        self.first_s = time.time() - config["launched_at"]
        self.again_s = None
        if storage != "memory":  # a second run finds the entry built: listing the folder, reading the index
            start = time.perf_counter()
            load_image_dataset(**load)
            self.again_s = time.perf_counter() - start
        self.worker_start = {pid: status for pid, status in self.workers().items()}  # after their first batch
        self.step = None

    def workers(self) -> dict[int, dict[str, int]]:
        statuses = {worker.pid: proc_status(worker.pid) for worker in getattr(self.batches, "_workers", [])}
        return {pid: status for pid, status in statuses.items() if status}

    def data_window(self, batches: int) -> float:
        for _ in range(2 * self.config["num_workers"] + 2):  # drain what was prefetched while idle, then warm up
            self.prepare(next(self.batches).pixels, self.device)
        synchronize(self.device)
        start, images = time.perf_counter(), 0
        for _ in range(batches):
            pixels = next(self.batches).pixels
            self.prepare(pixels, self.device)
            images += len(pixels)
        synchronize(self.device)
        return images / (time.perf_counter() - start)

    def memory(self) -> dict:
        """The main process's RSS figures, and the busiest worker's, with how far its peak rose above its RSS after
        its first micro-batch."""
        workers = self.workers()
        for pid, status in workers.items():
            status["rise"] = status.get("VmHWM", 0) - self.worker_start.get(pid, {}).get("VmRSS", 0)
        busiest = max(workers.values(), key=lambda status: status.get("VmHWM", 0), default={})
        return {"main": proc_status(), "worker": busiest, "workers": len(workers)}

    def setup_unet(self) -> float:
        """Build the UNet and the trainer's step over it from the preset's flags, and take the first step."""
        from accelerate import Accelerator

        from ddpm_hf.presets import load_preset
        from ddpm_hf.trainer.config import parse_args as parse_trainer_args
        from ddpm_hf.trainer.setup import build_unet
        from ddpm_hf.trainer.step import TrainingStep

        self.peak_reset = reset_peak_rss()
        start = time.perf_counter()
        config = self.config
        flags = parse_trainer_args([
            "--preset", config["training_preset"] or config["unet_preset"], "--resolution", str(config["resolution"]),
            "--train_batch_size", str(config["batch_size"]), "--report_to", "none",
        ])
        unet = build_unet(flags, load_preset(config["unet_preset"]).unet, self.data.channels)  # seeded by --seed
        self.parameters = sum(parameter.numel() for parameter in unet.parameters())
        self.accelerator = Accelerator(cpu=self.device.type == "cpu")
        self.training_step = TrainingStep.build(flags, self.accelerator, unet)
        self.step = 0
        self.train_steps(1)
        return time.perf_counter() - start

    def train_steps(self, steps: int) -> int:
        """What the trainer's loop does per step, minus logging; the images trained on."""
        images = 0
        for _ in range(steps):
            item = next(self.batches)
            output = self.training_step(self.step, [item])
            self.step += 1
            images += len(item.pixels)
        output.loss.item()  # the trainer reads the loss every few steps: a host sync
        return images

    def unet_window(self, steps: int) -> float:
        self.train_steps(1)  # untimed: the first step after an idle spell
        synchronize(self.device)
        start = time.perf_counter()
        images = self.train_steps(steps)
        synchronize(self.device)
        return images / (time.perf_counter() - start)


def child_main(storage: str, config: dict) -> None:
    def send(**message):
        sys.stdout.write(MESSAGE + json.dumps(message) + "\n")
        sys.stdout.flush()

    child = Child(storage, config)
    send(ready_s=child.ready_s, again_s=child.again_s, first_s=child.first_s, base=child.base,
         count=len(child.data), channels=child.data.channels, stored=child.data.storage)
    for line in sys.stdin:
        command = json.loads(line)
        what = command["do"]
        if what == "data":
            send(rate=child.data_window(command["batches"]))
        elif what == "memory":
            send(**child.memory())
        elif what == "setup_unet":
            seconds = child.setup_unet()
            send(setup_s=seconds, parameters=child.parameters, peak_reset=child.peak_reset)
        elif what == "unet":
            send(rate=child.unet_window(command["steps"]))
        elif what == "quit":
            send()
            return


# --------------------------------------------------------------------------- #
# The parent: children side by side, rounds, the table
# --------------------------------------------------------------------------- #


class ChildProcess:
    def __init__(self, storage: str, config: dict):
        self.storage = storage
        config = dict(config, launched_at=time.time())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_data", "--child", storage, "--child_config", json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )

    def receive(self) -> dict:
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"the {self.storage} child exited (status {self.process.wait()}); see above")
            if line.startswith(MESSAGE):
                return json.loads(line[len(MESSAGE):])
            sys.stderr.write(line)  # anything else it printed

    def ask(self, **command) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self.receive()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.ask(do="quit")
                self.process.wait(timeout=60)
            except (OSError, RuntimeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def windows(children: dict[str, ChildProcess], count: int, **command) -> dict[str, list[float]]:
    """`count` windows per child (images/s), one child at a time, in rotating rounds."""
    return rotating_rounds({name: (lambda child=child: child.ask(**command)["rate"])
                            for name, child in children.items()}, count)


def add_rates(rows: dict[str, dict], rates: dict[str, list[float]], children: dict[str, ChildProcess]) -> None:
    """Each storage's row gets its median images/s, the median of its per-round ratios to memory's, the rounds'
    values, and the child's memory figures after the windows."""
    for storage in STORAGES:
        rows[storage].update(rate=statistics.median(rates[storage]), ratio=median_ratio(rates, storage, "memory"),
                             rates=rates[storage], **children[storage].ask(do="memory"))


def training_preset_for(resolution: int) -> str | None:
    from ddpm_hf.presets import load_preset

    return next((name for name in DEFAULT_PRESETS if load_preset(name).training.get("resolution") == resolution), None)


def default_resolutions(with_64: bool = True) -> list[int]:
    from ddpm_hf.presets import load_preset

    return sorted({load_preset(name).training["resolution"] for name in DEFAULT_PRESETS} | ({64} if with_64 else set()))


def measure_resolution(args, folder: str, resolution: int, device: str, scratch: str) -> list[dict]:
    """The rows of one resolution: a data row per storage, and a unet row per storage when a UNet applies."""
    from ddpm_hf.presets import load_preset

    training_preset = training_preset_for(resolution)
    unet_preset = args.unet_preset or training_preset
    if unet_preset and not args.unet_preset and device == "cpu":
        unet_preset = CPU_STAND_INS.get(unet_preset, unet_preset)
    if args.no_unet:
        unet_preset = None
    batch_size = args.batch_size or (load_preset(training_preset).training.get("train_batch_size", 64)
                                     if training_preset else 64)
    children = {}
    try:
        for storage in STORAGES:  # loaded one after the other, so that no load competes with another
            config = {"folder": folder, "resolution": resolution, "cache_dir": os.path.join(scratch, f"{storage}-"
                      f"{resolution}"), "batch_size": batch_size, "num_workers": args.num_workers,
                      "random_flip": args.random_flip, "device": device, "threads": args.threads,
                      "unet_preset": unet_preset, "training_preset": training_preset}
            children[storage] = ChildProcess(storage, config)
            children[storage].start = children[storage].receive()
        rows = {storage: {"storage": storage, "resolution": resolution, "mode": "data", "batch": batch_size,
                          **child.start} for storage, child in children.items()}
        add_rates(rows, windows(children, args.rounds, do="data", batches=args.data_batches), children)
        result = list(rows.values())
        if unet_preset:
            unet_rows = {}
            for storage, child in children.items():
                setup = child.ask(do="setup_unet")
                unet_rows[storage] = {"storage": storage, "resolution": resolution, "mode": "unet",
                                      "batch": batch_size, "preset": unet_preset, "count": child.start["count"],
                                      "channels": child.start["channels"], "base": child.start["base"],
                                      "first_s": child.start["first_s"] + setup["setup_s"], **setup}
            add_rates(unet_rows, windows(children, args.unet_rounds, do="unet", steps=args.unet_steps), children)
            result += list(unet_rows.values())
        return result
    finally:
        for child in children.values():
            child.close()


def mib(count) -> str:
    return "-" if count is None else f"{count / MiB:.0f}" if count >= 10 * MiB else f"{count / MiB:.1f}"


def seconds(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def decoded_size(row: dict) -> int:
    return row["count"] * row["channels"] * row["resolution"] ** 2


def rises(row: dict) -> tuple[int, int]:
    """How far the main process's peak RSS rose above its RSS before loading, and the busiest worker's above its
    RSS after its first micro-batch."""
    return row["main"].get("VmHWM", 0) - row["base"].get("VmRSS", 0), row["worker"].get("rise", 0)


def print_table(rows: list[dict]) -> None:
    header = ("storage", "px", "mode", "batch", "images/s", "vs memory", "ready s", "again s", "first s",
              "peak main/wkr MiB", "rise main/wkr", "anon/file main", "anon/file wkr", "decoded MiB", "rise/dec")
    table = []
    for row in rows:
        main, worker = row["main"], row["worker"]
        main_rise, worker_rise = rises(row)
        decoded, data_row = decoded_size(row), row["mode"] == "data"  # a unet row's rise is mostly the model's
        mode = row["mode"] if row["mode"] == "data" else f"unet:{row['preset']}"
        table.append((
            row["storage"], str(row["resolution"]), mode, str(row["batch"]), f"{row['rate']:.0f}",
            f"{row['ratio']:.2f}x",
            seconds(row.get("ready_s")), seconds(row.get("again_s")), seconds(row["first_s"]),
            f"{mib(main.get('VmHWM'))}/{mib(worker.get('VmHWM'))}",
            f"{mib(main_rise)}/{mib(worker_rise)}" if data_row else "-",
            f"{mib(main.get('RssAnon'))}/{mib(main.get('RssFile'))}",
            f"{mib(worker.get('RssAnon'))}/{mib(worker.get('RssFile'))}",
            mib(decoded), f"{max(main_rise, worker_rise) / decoded:.2f}" if data_row else "-",
        ))
    widths = [max(len(cells[i]) for cells in [header, *table]) for i in range(len(header))]
    print("  ".join(cell.rjust(width) for cell, width in zip(header, widths)))
    for cells in table:
        print("  ".join(cell.rjust(width) for cell, width in zip(cells, widths)))


def print_conclusion(rows: list[dict], target: float = 0.10) -> None:
    by = {(row["storage"], row["resolution"], row["mode"]): row for row in rows}
    print("\nConclusion (from the numbers above):")
    for resolution in sorted({row["resolution"] for row in rows}):
        parts = []
        for mode in ("data", "unet"):
            if ("memory", resolution, mode) not in by:
                continue
            reference = by["memory", resolution, mode]["rate"]
            ratios = {storage: by[storage, resolution, mode]["ratio"] for storage in STORAGES[1:]}
            where = "data only" if mode == "data" else f"with the {by['memory', resolution, mode]['preset']} UNet step"
            verdict = " ".join(f"{storage} {'meets' if ratio >= 1 - target else 'misses'} the 10% target;"
                               for storage, ratio in ratios.items())
            parts.append(f"{where}: memmap {ratios['memmap']:.2f}x, lazy {ratios['lazy']:.2f}x of memory's"
                         f" {reference:.0f} images/s ({verdict.rstrip(';')})")
            if mode == "unet":
                slowest = min(STORAGES, key=lambda storage: by[storage, resolution, "data"]["rate"])
                headroom = by[slowest, resolution, "data"]["rate"] / reference
                bound = "the UNet, not the data, bounds the step" if headroom > 2 else (
                    "the data loader is close to bounding the step" if headroom > 1.1 else "the data bounds the step")
                parts.append(f"{bound}: the slowest loader ({slowest}) alone delivers {headroom:.0f}x the images/s"
                             " the step consumes")
        print(f"- {resolution} px: " + "; ".join(parts) + ".")
        decoded = decoded_size(by["memory", resolution, "data"])
        figures = []
        for storage in STORAGES:
            main_rise, worker_rise = rises(by[storage, resolution, "data"])
            worker = by[storage, resolution, "data"]["worker"]
            figures.append(f"{storage} main +{mib(main_rise)} MiB, worker +{mib(worker_rise)} MiB"
                           f" (file-backed {mib(worker.get('RssFile'))} MiB)")
        base = by["memory", resolution, "data"]["base"].get("VmRSS", 0)
        print(f"  peak RSS above the process's own (about {mib(base)} MiB of interpreter and libraries), against"
              f" {mib(decoded)} MiB decoded: " + "; ".join(figures) + ".")


def main():
    args = parse_args()
    if args.child:
        child_main(args.child, json.loads(args.child_config))
        return
    import torch

    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    os.makedirs(args.work_dir, exist_ok=True)
    folder = build_folder(args)
    resolutions = args.resolutions or default_resolutions()
    scratch = tempfile.mkdtemp(prefix="caches-", dir=args.work_dir)  # fresh caches: every load builds its entry
    start, rows = time.perf_counter(), []
    print(f"{args.num_images} {args.format} images of {args.image_size} px; resolutions {resolutions};"
          f" {args.num_workers} workers; device {device}; {args.threads} torch threads per child (--threads);"
          f" {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    try:
        for resolution in resolutions:
            rows += measure_resolution(args, folder, resolution, device, scratch)
            print(f"  {resolution} px done ({time.perf_counter() - start:.0f} s)", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\nimages/s: median of {args.rounds} data windows of {args.data_batches} micro-batches and"
          f" {args.unet_rounds} unet windows of {args.unet_steps} steps per storage, in rotating rounds; load"
          f" average now {os.getloadavg()[0]:.1f}")
    print_table(rows)
    print("ready: the load; again: a second run's load (cache entry found); first: process start -> first"
          " micro-batch (unet: + building the UNet + its first step). Peak RSS is VmHWM (unet rows: since the UNet"
          " was built, where /proc/self/clear_refs allows); rise: main over its RSS before loading, worker over its"
          " own after its first micro-batch; anon/file: RssAnon/RssFile at the end of the mode.")
    print_conclusion(rows)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
