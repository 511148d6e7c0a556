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


def find_sslab_error(exc: BaseException) -> SslabError | None:
    """The first :class:`SslabError` in ``exc``'s cause chain (Ray wraps worker errors)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        cause = getattr(exc, "cause", None)  # RayTaskError keeps the worker's exception here
        if isinstance(cause, SslabError):
            return cause
        if isinstance(exc, SslabError):
            return exc
        exc = exc.__cause__ or exc.__context__ or cause
    return None
