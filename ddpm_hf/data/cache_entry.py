# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""One entry of the decoded-image cache (storage.py's "memmap" and "lazy" storages): a folder holding `index.json`
and the files it lists (`kept.npy`, and for memmap `pixels.u8`), each with its size and checksum.

- Written whole: built in a hidden folder beside the entry and renamed into place (`publish_entry`), so a crash
  never leaves half an entry under the entry's name.
- Checked on every use (`entry_defect`): the index parses and has this format, every file it lists has its recorded
  size, and its checksum matches. `pixels.u8` is checksummed in full (xxh3-128, which `datasets` itself depends on:
  22 GB/s on one core here, so reading the file bounds the pass). Measured by benchmarks/bench_cache_checksum.py on
  a 1 GB file (2 cores), extrapolated to a 6 GB entry: 0.71 s from the page cache (8.5 GB/s; a plain read 0.55 s),
  3.8 s from the disk (1.6 GB/s; a plain read 3.3 s), which also pages in what training then reads. A full pass,
  not sampled blocks: sampling would miss 4 KiB overwritten. The other local processes of a machine, which open the
  entry after the local main process has checked or built it, check sizes only.
- A damaged or partial entry is set aside and rebuilt, with a warning naming it and what is wrong (`discard_entry`):
  the cache holds nothing that cannot be rebuilt from the source, as `datasets` rebuilds a cache whose fingerprint
  does not match. A stale entry never blocks its rebuild.
"""

import errno
import json
import os
import shutil
from pathlib import Path

from ..io import TEMPORARY_MARK, fsync_path, write_text_atomically
from .dataset import DataError

# Bumped whenever the index's layout changes; an entry of another format is rebuilt.
ENTRY_FORMAT = 2
CHECKSUM = "xxh3_128"
_READ_BLOCK = 16 << 20  # bytes read per call while checksumming: large enough that the per-call cost vanishes


def file_checksum(path: str | os.PathLike) -> str:
    """The xxh3-128 of a file's bytes, read in blocks into one reused buffer (memory stays flat)."""
    import xxhash  # a dependency of datasets; imported here, as datasets is

    digest, buffer = xxhash.xxh3_128(), bytearray(_READ_BLOCK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as file:
        while count := file.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest()


def write_index(folder: Path, fields: dict) -> None:
    """Write `folder`'s index.json: `fields` plus the size and checksum of every file already in `folder`."""
    files = {name: {"bytes": os.path.getsize(folder / name), CHECKSUM: file_checksum(folder / name)}
             for name in sorted(os.listdir(folder))}
    write_text_atomically(str(folder / "index.json"), json.dumps({"format": ENTRY_FORMAT, **fields, "files": files}))


def entry_defect(entry: Path, verify_pixels: bool = True) -> str | None:
    """What is wrong with the cache entry at `entry`, in a few words, or None when it is whole. Sizes and the
    checksums of the small files are always checked; the pixels' checksum only with `verify_pixels`."""
    index_path = entry / "index.json"
    if not index_path.is_file():
        return "its index.json is missing"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"its index.json does not parse ({type(err).__name__})"
    if not isinstance(index, dict) or index.get("format") != ENTRY_FORMAT or not isinstance(index.get("files"), dict):
        return "it was written by another version of ddpm-hf (format " \
               f"{index.get('format') if isinstance(index, dict) else None}, this one writes {ENTRY_FORMAT})"
    for name, recorded in index["files"].items():
        path = entry / name
        if not path.is_file():
            return f"its {name} is missing"
        size = path.stat().st_size
        if size != recorded["bytes"]:
            return f"its {name} holds {size} bytes, {recorded['bytes']} were written (truncated or overwritten)"
    for name, recorded in index["files"].items():
        if (name != "pixels.u8" or verify_pixels) and file_checksum(entry / name) != recorded[CHECKSUM]:
            return f"the {CHECKSUM} checksum of its {name} does not match the one written at build (overwritten)"
    return None


def read_index(entry: Path) -> dict:
    return json.loads((entry / "index.json").read_text())


def discard_entry(entry: Path, defect: str) -> None:
    """Set a damaged entry aside (one rename: a process that maps its file keeps reading the old inode) and
    delete it. A cache the process cannot write in is a one-line error naming the entry and the fix."""
    aside = entry.parent / f".{entry.name}.old{TEMPORARY_MARK}{os.getpid()}"
    try:
        entry.rename(aside)
    except FileNotFoundError:  # another process set it aside first
        return
    except OSError as err:
        raise DataError(f"the decoded cache entry {entry} is damaged ({defect}) and cannot be removed"
                        f" ({err.strerror}): delete it, or pass another --data_cache_dir") from None
    if aside.is_dir():
        shutil.rmtree(aside, ignore_errors=True)
    else:  # a file where the entry's folder belongs
        aside.unlink(missing_ok=True)


def publish_entry(temporary: Path, entry: Path) -> None:
    """Rename the whole new entry `temporary` into place. An entry found there was built meanwhile by another
    machine sharing the folder (the same content: theirs is kept) unless it is damaged, then it is replaced."""
    for _ in range(3):  # each round either publishes, keeps a whole entry, or removes a damaged one
        try:
            temporary.rename(entry)
            fsync_path(str(entry.parent))
            return
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        defect = entry_defect(entry, verify_pixels=False)
        if defect is None:
            return
        discard_entry(entry, defect)
    raise DataError(f"could not replace the decoded cache entry {entry}: another process keeps writing it;"
                    " delete it, or pass another --data_cache_dir")
