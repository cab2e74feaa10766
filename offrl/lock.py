"""Exclusive locks between processes, for the three things two offrl processes must not write at once:
a run folder (two `offrl run --resume DIR` would interleave checkpoints and append every result row twice),
a cache entry (two CSVE runs on one dataset would both spend an hour fitting the same dynamics model), and a
generated dataset (two first runs would both build it, and one would delete the folder the other reads).

A lock is `fcntl.flock` on a small file, which holds the holder's pid and host for the message another
process prints. The kernel drops the lock when its holder exits, killed or not, so a crash never leaves a
stale lock behind; the file itself stays (deleting it would race with a process about to lock it).
flock conflicts between two opens of the file even in one process, so threads can stand in for processes in
tests. Where fcntl does not exist (Windows) nothing is locked.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Callable

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None


class Locked(Exception):
    """The lock is held by another process; str() names the holder."""


class FileLock:
    """An exclusive lock on `path` (created if missing). `acquire(wait=False)` raises Locked if another process
    holds it; `acquire(wait=True)` calls `on_wait(holder)` once and blocks until the lock is free. `waited`
    then says whether it had to wait, i.e. whether another process may have done the work meanwhile."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None
        self.waited = False

    def holder(self) -> str:
        """Who holds the lock, as its holder wrote it ("pid 123 on host"), or "another process"."""
        try:
            text = self.path.read_text().strip()
        except OSError:
            text = ""
        return text or "another process"

    def acquire(self, wait: bool = False, on_wait: Callable[[str], None] | None = None) -> "FileLock":
        if fcntl is None or self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    raise Locked(self.holder()) from None
                self.waited = True
                if on_wait is not None:
                    on_wait(self.holder())
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # interpreter shutdown may have torn down fcntl/os already; the kernel frees it anyway
            pass


def held_by(path: str | os.PathLike) -> str | None:
    """Who holds the lock on `path` now (as FileLock.holder says), or None if nobody does. Reads only: the
    file is neither created nor written, and is opened read-only."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file: nobody has ever locked it
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return FileLock(path).holder()
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
