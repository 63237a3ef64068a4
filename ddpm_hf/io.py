# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Durable, atomic file writes: a reader (or a crash) sees the old file or the whole new one, never half of one.

Every write goes to a hidden temporary beside its target (`.<name>.<purpose>.tmp-<pid>`), is flushed to disk, and is
renamed into place in one step. A temporary that a crash leaves behind is hidden, so it never matches a pattern such
as `checkpoint-*`, and `remove_stale_temporaries` deletes it on the next run.

`pipeline_utils.publication` publishes a whole pipeline folder as one set, on top of these.
"""

import errno
import os
import shutil
from collections.abc import Callable

TEMPORARY_MARK = ".tmp-"
def fsync_path(path: str) -> None:
    """Flush a file's or a folder's entry list to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            fsync_path(os.path.join(folder, name))
        fsync_path(folder)


def temporary_path(path: str, purpose: str = "new") -> str:
    """A hidden name beside `path`: where its new version is written, or (purpose "old") where it goes to die."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.{purpose}{TEMPORARY_MARK}{os.getpid()}")


def write_atomically(path: str, write: Callable[[str], None]) -> None:
    """Call `write(temporary)` and rename the result onto `path`: readers see the old file or the whole new one."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = temporary_path(path)
    try:
        write(temporary)
        fsync_path(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    fsync_path(os.path.dirname(os.path.abspath(path)))


def write_text_atomically(path: str, text: str) -> None:
    def write(temporary):
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)

    write_atomically(path, write)


def copy_file_atomically(source: str, path: str) -> None:
    write_atomically(path, lambda temporary: shutil.copyfile(source, temporary))


def save_image_atomically(image, path: str) -> None:
    """A PIL image to `path`, in the format its extension names."""
    file_format = os.path.splitext(path)[1].lstrip(".").upper().replace("JPG", "JPEG")
    write_atomically(path, lambda temporary: image.save(temporary, format=file_format))


def remove_stale_temporaries(folder: str) -> list[str]:
    """Delete what interrupted writes left in `folder` (hidden `.<name>...tmp-<pid>` entries); returns their names."""
    if not os.path.isdir(folder):
        return []
    stale = [name for name in os.listdir(folder) if name.startswith(".") and TEMPORARY_MARK in name]
    for name in stale:
        path = os.path.join(folder, name)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
    return stale


# ----------------------------------------------------------------------------------------------------------------
# A full disk, said plainly
# ----------------------------------------------------------------------------------------------------------------
class OutOfSpaceError(OSError):
    """A write failed for want of disk space; the message names the place, what is free and what was needed."""


def tree_size(path: str) -> int:
    """Bytes of the files under `path` (a file's own size for a file; 0 when it does not exist)."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(path) for name in names)


def format_bytes(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def is_out_of_space(error: BaseException, folder: str, needed: int) -> bool:
    """Did `error` come from a full disk? ENOSPC anywhere in its chain, or (torch's writer reports it as a bare
    "file write failed" RuntimeError, with no errno) less free space left in `folder` than `needed`."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    return shutil.disk_usage(folder).free < needed


def out_of_space(folder: str, needed: int, advice: str) -> OutOfSpaceError:
    free = shutil.disk_usage(folder).free
    error = OutOfSpaceError(f"no space left on {folder}: {format_bytes(free)} free, {format_bytes(needed)} needed;"
                            f" {advice}")
    error.errno = errno.ENOSPC
    return error
