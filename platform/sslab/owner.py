"""One owner per directory: a run, a search or a prepared-data entry is written by one sslab
process at a time.

The owner holds an OS lock (``flock(2)``) on ``.sslab.lock`` inside the directory for as long as
it writes there, and writes its pid and host into the file for whoever finds it taken. The kernel
drops the lock when the owner's process ends, however it ends (SIGKILL included), so no lock is
ever left stale; the file itself goes when its owner lets go.

On a local disk this holds between any two processes of the machine. On NFSv4 (and NFSv3 with
its lock manager) Linux turns ``flock`` into an NFS byte-range lock, which every client sees; a
filesystem that keeps locks on one machine only (some FUSE mounts, ``nolock`` NFS mounts)
protects a directory from a second command on the same machine only. (NFS's lock is a POSIX one,
which belongs to a process: there two owners within one process do not exclude each other.)
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sslab.errors import DirectoryInUse, RunError, describe_owner

LOCK_FILE = ".sslab.lock"
POLL_S = 0.2
HELD: dict[Path, int] = {}
"""Directories this process holds, and the thread that holds each: the same thread holding one
again (the CLI takes its ``--out`` before the imports of a run, which takes it too) is a no-op;
another thread is refused as another process is."""


@contextlib.contextmanager
def hold(directory: Path, label: str, wait_s: float | None = 0.0,
         waiting: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Own ``directory`` (created when missing) while the body runs; release it however the
    body ends. A directory this call created and the body left empty is removed again.

    ``label`` names the directory in errors (``"run.out='runs/x'"``). Another owner makes this
    wait up to ``wait_s`` seconds (None: until it ends; 0: not at all), then raise
    :class:`~sslab.errors.DirectoryInUse`; ``waiting`` is told who owns it, once, when it waits."""
    directory = Path(directory).expanduser().resolve()
    if HELD.get(directory) == threading.get_ident():
        yield directory
        return
    existed = directory.is_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = acquire(directory / LOCK_FILE, wait_s, waiting)
    except OSError as e:
        raise RunError(f"{label} is not a writable directory ({e.strerror})") from None
    HELD[directory] = threading.get_ident()
    try:
        yield directory
    finally:
        HELD.pop(directory, None)
        with contextlib.suppress(OSError):
            (directory / LOCK_FILE).unlink()  # before the lock goes: see acquire
        os.close(fd)
        if not existed:
            with contextlib.suppress(OSError):
                directory.rmdir()  # only when empty


def acquire(path: Path, wait_s: float | None, waiting: Callable[[str], None] | None) -> int:
    """An open descriptor of ``path`` holding its exclusive lock, with this process's pid and host in it."""
    deadline = None if wait_s is None else time.monotonic() + wait_s
    told = False
    while True:
        fd = try_lock(path)
        if fd is not None:
            try:
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
            except OSError:
                os.close(fd)
                raise
            return fd
        if deadline is not None and time.monotonic() >= deadline:
            pid, host = owner_of(path)
            raise DirectoryInUse(path.parent, pid, host)
        if waiting is not None and not told:
            waiting(describe_owner(*owner_of(path)))
            told = True
        time.sleep(POLL_S)


def try_lock(path: Path) -> int | None:
    """``path`` opened and locked, or None when another descriptor holds its lock."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # an owner that created the directory removed it as it let go
            path.parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        # An owner unlinks the file as it lets go: a lock taken on the file it unlinked (opened
        # just before) guards nothing, so take the one at the path now.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def owner_of(path: Path) -> tuple[int | None, str | None]:
    """The pid and host written into a held lock file (None when it cannot be read yet)."""
    for _ in range(10):  # its owner writes them just after it takes the lock
        try:
            data = json.loads(path.read_text())
            return int(data["pid"]), str(data["host"])
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return None, None
