"""``TrackerEngine``: what a tracker needs of its engine, whichever process writes.

Two classes implement it: the thread ``Engine`` (``_pipeline._engine``: batches and
writes on a worker thread of this process) and the worker process's client
(``_remote._client.ProcessEngine``: ships the records to the worker process, which
runs a thread ``Engine`` there). The LangChain handler knows only this protocol.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Protocol

from .._sinks._base import ParameterValue, RunInfo
from ._queue import CAPTURE_RAISED
from ._statistics import Statistics

__all__ = ["ForkHook", "TrackerEngine"]

#: Called (weakly) in a forked child with the engine, once it renewed itself.
ForkHook = weakref.WeakMethod[Callable[["TrackerEngine"], None]]


class TrackerEngine(Protocol):
    """An engine: records in, batches out, flush and close barriers, statistics.

    ``put`` is the hot path: an attribute holding the queue's own method (no extra
    frame), which never raises and blocks only under ``when_full="block"``.
    """

    put: Callable[[Any], None]
    #: The adapter's hook for a forked child (set by the tracker).
    on_fork: ForkHook | None

    @property
    def closed(self) -> bool:
        """Whether ``close()`` or ``aclose()`` has begun."""
        ...

    @property
    def run_info(self) -> RunInfo:
        """The run's names and events URI."""
        ...

    @property
    def last_parameters(self) -> dict[str, ParameterValue]:
        """The run parameters the last successful flush wrote (empty before one)."""
        ...

    def count_dropped(self, n: int = 1, reason: str = CAPTURE_RAISED) -> None:
        """Count events that could not even be put (thread-safe), and why (a phrase of
        the drop warning: by default, their capture raised)."""
        ...

    async def flush(self, timeout: float | None = None) -> None:
        """Return once every record put before this call is durable."""
        ...

    def flush_blocking(self, timeout: float | None = None) -> None:
        """``flush()`` for synchronous code, on any thread."""
        ...

    async def aclose(self, timeout: float | None = 30.0) -> None:
        """Flush, then stop. Idempotent."""
        ...

    def close(self, timeout: float | None = 30.0) -> None:
        """``aclose()`` for synchronous code."""
        ...

    def statistics(self) -> Statistics:
        """A snapshot of the counters."""
        ...

    def after_fork_in_child(self) -> None:
        """Renew itself in a forked child (an empty queue, a writer id of its own)."""
        ...
