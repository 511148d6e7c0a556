"""The errors sslab raises for bad input. The CLI prints their message on one line and exits 1."""


class SslabError(Exception):
    """Base of every error caused by the user's input rather than a bug."""

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
