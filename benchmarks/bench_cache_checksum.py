# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""What checking a memmap cache entry costs at the start of a run: `cache_entry.file_checksum` (the full xxh3-128
pass every run makes over pixels.u8) on a `--size_mb` file of random bytes, warm (the file in the page cache, as
after a build or a recent run) and cold (its pages dropped first with posix_fadvise(DONTNEED), as after a reboot:
then the disk bounds it), beside a plain read of the same bytes, and extrapolated to `--entry_gb` (6 GB by default:
ImageNet-sized data at 64 px is about that).

    python -m benchmarks.bench_cache_checksum                 # 1024 MB, 3 rounds
    python -m benchmarks.bench_cache_checksum --size_mb 512

Run by hand; not part of the tests. It times file reads and xxh3, no torch op: the one benchmark without --threads.
"""

import argparse
import os
import statistics
import tempfile
import time

from ddpm_hf.data.cache_entry import _READ_BLOCK, file_checksum


def drop_pages(path: str) -> None:
    with open(path, "rb") as file:
        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def plain_read(path: str) -> None:
    buffer = bytearray(_READ_BLOCK)
    with open(path, "rb", buffering=0) as file:
        while file.readinto(buffer):
            pass


def timed(function, path: str, cold: bool, rounds: int) -> float:
    """Median seconds of `function(path)` over `rounds`."""
    times = []
    for _ in range(rounds):
        if cold:
            drop_pages(path)
        else:
            function(path)  # pages in
        start = time.perf_counter()
        function(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size_mb", type=int, default=1024)
    parser.add_argument("--entry_gb", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work_dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    path = os.path.join(args.work_dir, "bench_cache_checksum.u8")
    size = args.size_mb << 20
    try:
        with open(path, "wb") as file:
            for _ in range(size // _READ_BLOCK):
                file.write(os.urandom(_READ_BLOCK))
        print(f"{args.size_mb} MB file, {os.cpu_count()} cores; extrapolated linearly to {args.entry_gb:g} GB")
        print(f"{'':10} {'what':10} {'s':>7} {'GB/s':>6} {f'{args.entry_gb:g} GB, s':>10}")
        for cold in (False, True):
            for name, function in (("checksum", file_checksum), ("read", plain_read)):
                seconds = timed(function, path, cold, args.rounds)
                rate = size / seconds / 1e9
                print(f"{'cold' if cold else 'warm':10} {name:10} {seconds:7.3f} {rate:6.2f}"
                      f" {args.entry_gb / rate:10.2f}")
    finally:
        os.remove(path)


if __name__ == "__main__":
    main()
