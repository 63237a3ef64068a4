# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""One run per output folder: the main process holds `<output_dir>/.ddpm-hf-run.lock` from start to exit.

Two trainers writing into one folder would interleave their checkpoints and replace each other's pipeline, and each
would delete the other's half-written saves as "stale". The lock is an exclusive `fcntl.flock` on a file that also
names its holder (host, PID, start time). The operating system drops a flock when its process dies, however it dies,
so a lock left behind by a killed run is recognised by the flock being free and is taken over (the file's contents
say whose it was). On several processes only the main one locks; the others learn the outcome through a collective.

Releasing deletes the file, and the folders the lock created if they are still empty: a run that failed its checks
leaves nothing behind (a folder that existed before is kept as it was), and a finished run leaves no lock file.
Because a released lock file is deleted, taking one checks that the file locked is still the one in the folder.
"""

import contextlib
import fcntl
import json
import os
import socket
import time

from accelerate.logging import get_logger
from accelerate.utils import broadcast_object_list

from .config import FlagError

LOCK_FILE = ".ddpm-hf-run.lock"

logger = get_logger(__name__)


class RunLockedError(RuntimeError):
    """Another run holds the output folder; the message names it."""


class RunLock:
    """The exclusive hold of one output folder; `release` (or process exit) lets it go."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, LOCK_FILE)
        self.previous_holder = None  # what a run that died holding the folder wrote into the file
        self.created_folders = []  # the folders made for the run, deepest first: removed on release if left empty
        self._fd = None
        while self._fd is None:
            self._fd = self._lock_the_file(output_dir)
        self.previous_holder = _read_holder(self._fd)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                        "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)

    def _lock_the_file(self, output_dir: str) -> int | None:
        """The locked file's descriptor, or None when it must be tried again: the file was deleted or replaced by its
        holder's release between our open and our flock (the flock would then hold a file nobody else sees)."""
        try:
            self.created_folders = _make_folders(output_dir) + self.created_folders
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # a run that just ended removed the empty folder it had made: make it again
                return None
        except OSError as error:
            self.remove_created_folders()
            if isinstance(error, (FileExistsError, NotADirectoryError)):
                raise FlagError(f"--output_dir {output_dir}: a file stands in its path: pass the path of a"
                                " folder") from None
            # A read-only file system, no permission.
            raise FlagError(f"--output_dir {output_dir} cannot be written ({error.strerror}): pass an --output_dir on a"
                            " writable file system") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read_holder(fd))
            os.close(fd)
            self.remove_created_folders()
            raise RunLockedError(
                f"{output_dir} is in use by another training run ({holder}): wait for it to finish, or pass another"
                " --output_dir"
            ) from None
        try:
            still_there = os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            still_there = False
        if not still_there:
            os.close(fd)
            return None
        return fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):  # deleted under the run by hand: nothing to remove
                os.unlink(self.path)  # while still held: a run starting now finds no file, or makes a new one
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            self.remove_created_folders()

    def remove_created_folders(self) -> None:
        """The folders this lock made, as long as nothing was written into them (a failed start's, not a run's)."""
        for folder in self.created_folders:
            try:
                os.rmdir(folder)
            except OSError:  # not empty (the run wrote something), or gone: keep it and the ones above it
                break
        self.created_folders = []


def _make_folders(path: str) -> list[str]:
    """Create `path` and its missing parents; the ones created, deepest first."""
    missing, folder = [], os.path.abspath(path)
    while not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    os.makedirs(path, exist_ok=True)
    return missing


def _read_holder(fd: int) -> dict | None:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "null")
    except ValueError:
        return None


def _describe(holder: dict | None) -> str:
    if not holder:
        return "holder unknown"
    return f"host {holder.get('host')}, PID {holder.get('pid')}, started {holder.get('started')}"


def lock_output_dir(output_dir: str, accelerator) -> RunLock | None:
    """The main process's RunLock (None on the others); every process raises alike when the folder is held by another
    run (RunLockedError) or cannot be written (FlagError)."""
    lock, failure = None, None
    if accelerator.is_main_process:
        try:
            lock = RunLock(output_dir)
        except (RunLockedError, FlagError) as err:
            failure = (type(err).__name__, str(err))
    if accelerator.num_processes > 1:
        # A collective on every process, so that the others stop too instead of waiting for the main one forever.
        failure = broadcast_object_list([failure])[0]
    if failure is not None:
        kind, message = failure
        raise (FlagError if kind == FlagError.__name__ else RunLockedError)(message)
    if lock is not None and lock.previous_holder:
        logger.warning(f"Took over {lock.path} from a run that ended without releasing it"
                       f" ({_describe(lock.previous_holder)})")
    return lock
