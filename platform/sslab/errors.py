"""The errors sslab raises for bad input. The CLI prints their message on one line and exits
with the error's ``exit_code``: 1, or 2 when the directory is another command's."""
from __future__ import annotations

from pathlib import Path


class SslabError(Exception):
    """Base of every error caused by the user's input rather than a bug."""

    exit_code = 1
    """The ``sslab`` command's exit status when this error stops it."""

    def __init__(self, message: str = ""):
        super().__init__(message)
        # Kept apart from .args: Ray Data appends retry advice to the args of worker errors.
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(SslabError, ValueError):
    """A config key or value is unknown or invalid; the message names it."""


class CorpusError(SslabError):
    """The corpus is missing, empty or malformed; the message names the file (and line)."""


class RunError(SslabError):
    """A run cannot start or continue (e.g. its directory holds an incompatible run)."""


class DirectoryInUse(RunError):
    """Another sslab process owns the run, search or prepared-data directory (:mod:`sslab.owner`):
    wait for it to end, or choose another ``--out``. ``pid`` and ``host`` name the owner (None
    when it had not written them yet)."""

    exit_code = 2

    def __init__(self, directory: str | Path, pid: int | None, host: str | None):
        self.directory, self.pid, self.host = Path(directory), pid, host
        super().__init__(f"{directory} is in use by another sslab command ({describe_owner(pid, host)}); "
                         f"wait for it to end, or choose another --out")

    def __reduce__(self):  # Ray pickles a task's error with its constructor's arguments
        return type(self), (self.directory, self.pid, self.host)


def describe_owner(pid: int | None, host: str | None) -> str:
    """``pid 4242 on gpu-3``: who owns a directory."""
    return f"pid {pid} on {host}" if pid is not None else "a process that has not yet written its pid"


def first_worker_error(exc: BaseException) -> str:
    """One line for a Ray Train failure: the lowest rank's error, else the exception's own text."""
    failures = getattr(exc, "worker_failures", None) or {}
    for rank in sorted(failures):
        lines = [line for line in str(failures[rank]).splitlines() if line.strip()]
        if lines:
            return f"worker {rank}: {lines[-1].strip()}"
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(exc).__name__


def find_sslab_error(exc: BaseException) -> SslabError | None:
    """The first :class:`SslabError` in ``exc``'s cause chain (Ray wraps worker errors)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for failure in (getattr(exc, "worker_failures", None) or {}).values():  # Ray Train's WorkerGroupError
            found = find_sslab_error(failure)
            if found is not None:
                return found
        cause = getattr(exc, "cause", None)  # RayTaskError keeps the worker's exception here
        if isinstance(cause, SslabError):
            return cause
        if isinstance(exc, SslabError):
            return exc
        exc = exc.__cause__ or exc.__context__ or cause
    return None
