"""The exception tree.

    AsyncTrackError
    ├── FlushError                     flush() could not make every event durable
    │   └── FlushTimeoutError          ... within the timeout (also a TimeoutError)
    ├── TrackerClosedError             flush() on a closed tracker (also a RuntimeError)
    ├── DeadlockError                  a blocking wait from a thread that would never wake
    │                                   (also a RuntimeError)
    └── SinkError                      a destination refused a batch or parameters
        └── PermanentSinkError         ... for a reason retrying cannot fix

Messages are built in ``__init__`` so that every raise site reads the same.
"""

from __future__ import annotations

import traceback
from typing import Any

__all__ = [
    "AsyncTrackError",
    "DeadlockError",
    "FlushError",
    "FlushTimeoutError",
    "PermanentSinkError",
    "SinkError",
    "TrackerClosedError",
]


class AsyncTrackError(Exception):
    """Root of every error asynctrack raises on purpose."""


class FlushError(AsyncTrackError):
    """Some events recorded before ``flush()`` are not on durable storage.

    Nothing is discarded: the events stay buffered (or spooled) and are retried.

    Attributes:
        pending: events recorded before the call that are not yet durable.
        queued: of those, how many the worker had not yet taken from the buffer.
        failed_batches: batches whose last write attempt failed.
        reason: what went wrong, in words.
    """

    def __init__(
        self,
        *,
        pending: int,
        queued: int = 0,
        failed_batches: int = 0,
        reason: str,
    ) -> None:
        self.pending = pending
        self.queued = queued
        self.failed_batches = failed_batches
        self.reason = reason
        super().__init__(self._message())

    def _message(self) -> str:
        return (
            f"{self.pending} event(s) recorded before flush() are not yet on durable "
            f"storage ({self.queued} still queued, {self.failed_batches} failed "
            f"batch(es) kept for retry): {self.reason}"
        )


class FlushTimeoutError(FlushError, TimeoutError):
    """``flush(timeout=...)`` ran out of time; nothing was discarded."""

    def __init__(
        self,
        *,
        timeout: float,
        pending: int,
        queued: int = 0,
        failed_batches: int = 0,
        reason: str = "",
    ) -> None:
        self.timeout = timeout
        if reason.startswith("timed out after"):  # already built (a close error)
            why = reason
        else:
            why = (
                f"timed out after {timeout:g} s"
                + ("" if pending else " writing the run parameters")
                + (f"; last error: {reason}" if reason else "")
            )
        super().__init__(pending=pending, queued=queued, failed_batches=failed_batches, reason=why)


class TrackerClosedError(AsyncTrackError, RuntimeError):
    """The tracker was closed; it records nothing more and cannot flush."""

    def __init__(self, what: str = "flush()") -> None:
        super().__init__(f"{what} called on a closed tracker")


class DeadlockError(AsyncTrackError, RuntimeError):
    """A blocking call would wait for the thread it runs on."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} was called from asynctrack's own worker thread (for example from a "
            "redact hook or a sink); it would wait for itself forever. Use the async "
            "variant or call it from another thread."
        )


class SinkError(AsyncTrackError):
    """A destination failed to store a batch or the run parameters."""

    def __init__(self, destination: str, reason: str) -> None:
        self.destination = destination
        self.reason = reason
        super().__init__(f"{destination}: {reason}")


class PermanentSinkError(SinkError):
    """A failure that retrying will not fix (no such bucket, access denied, ...)."""


def error_fields(error: object) -> dict[str, Any]:
    """An exception as logged in an error event: ``{"type", "message", "traceback"}``.

    Never raises: a broken ``__str__`` gives a placeholder message, a broken chained
    exception no traceback.
    """
    if not isinstance(error, BaseException):
        return {"type": type(error).__name__, "message": str(error), "traceback": None}
    try:
        tb: str | None = "".join(traceback.format_exception(error))
    except Exception:  # a broken __str__ in a chained exception
        tb = None
    cls = type(error)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    try:
        message = str(error)
    except Exception:
        message = "<str() failed>"
    return {"type": name, "message": message, "traceback": tb}
