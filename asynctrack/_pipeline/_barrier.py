"""The flush barrier: markers that travel through the buffer behind the events they cover.

``flush()`` appends a ``Marker`` to the same queue as the events, so every event put
before the call is ahead of it. When the worker takes the marker it seals the open
batch and notes the last batch number the marker covers (``upto``); the marker
resolves once none of those batches is still in flight (written, or failed and kept
for retry) and the run parameters are written. Concurrent flushes each have their
own marker. A close is a marker too (``closing``), carrying the close deadline.

The caller waits on the marker's ``concurrent.futures.Future`` from any thread: in
an event loop (``wait``) or blocking (``wait_blocking``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Collection
from typing import Any, Protocol

from ._queue import Control

__all__ = ["Barrier", "Marker", "Resolvable", "Seal", "wait", "wait_blocking"]


class Resolvable(Protocol):
    """Anything a caller waits on through its ``future`` (a marker, a worker-process request)."""

    @property
    def future(self) -> concurrent.futures.Future[Any]: ...


class Marker(Control):
    """A flush (or close) request travelling through the queue."""

    __slots__ = (
        "began",
        "closing",
        "covered",
        "deadline",
        "future",
        "reported",
        "sent",
        "settling",
        "timeout",
        "upto",
    )

    def __init__(self, *, closing: bool = False, timeout: float | None = None, deadline: float | None = None):
        self.future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.upto = -1  # last batch number it waits for; set by the worker
        self.covered = -1  # records taken from the buffer before it; set by the worker
        self.settling = False
        self.closing = closing
        self.timeout = timeout  # the close's timeout, for its error message
        self.began = time.monotonic()  # a nearer deadline (exit, signal) cuts it short: from here
        # time.monotonic() by which a close gives up, or a flush's caller stops waiting
        self.deadline = deadline
        self.sent = False  # a close marker is in the buffer
        self.reported = False  # its error was raised to a caller


class Seal(Marker):
    """Seal the open batch once the records ahead of it are taken, and write it; nothing
    waits on it (the worker process's answer to an application that holds back its
    shipping until what it shipped is durable: ``_worker._host``)."""

    __slots__ = ()


class Barrier:
    """The markers the worker has reached and not yet resolved (worker thread only).

    ``durable_upto`` is the count of records (taken from the buffer, in order) that
    the last successful flush made durable: a flush with nothing newer returns at once.
    """

    def __init__(self) -> None:
        self.markers: list[Marker] = []
        self.durable_upto = 0

    def reached(self, marker: Marker, upto: int, covered: int) -> None:
        """The worker took ``marker``: it waits for batches up to number ``upto``."""
        marker.upto = upto
        marker.covered = covered
        self.markers.append(marker)

    def ready(self, inflight: Collection[int]) -> list[Marker]:
        """Markers none of whose batches is in flight any more; each returned once."""
        out = []
        for marker in self.markers:
            if not marker.settling and not any(n <= marker.upto for n in inflight):
                marker.settling = True
                out.append(marker)
        return out

    def succeeded(self, marker: Marker) -> None:
        """``marker`` resolved without error: its records are durable."""
        self.durable_upto = max(self.durable_upto, marker.covered)

    def remove(self, marker: Marker) -> None:
        with contextlib.suppress(ValueError):
            self.markers.remove(marker)


async def wait(marker: Resolvable, timeout: float | None) -> bool:
    """Wait in the caller's event loop until ``marker`` resolves; ``False`` on timeout.

    Cancelling this wait leaves the marker alone: the worker still resolves it
    (``asyncio.wrap_future`` would cancel the worker's future instead).
    """
    if marker.future.done():
        return True
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def relay(_: concurrent.futures.Future[Any]) -> None:
        def settle() -> None:
            if not waiter.done():
                waiter.set_result(None)

        with contextlib.suppress(RuntimeError):  # the caller's loop is gone
            loop.call_soon_threadsafe(settle)

    marker.future.add_done_callback(relay)
    try:
        async with asyncio.timeout(timeout):
            await waiter
    except TimeoutError:
        return marker.future.done()
    return True


def wait_blocking(marker: Marker, timeout: float | None) -> bool:
    """Block this thread until ``marker`` resolves; ``False`` on timeout."""
    try:
        marker.future.exception(timeout)
    except concurrent.futures.TimeoutError:
        return False
    return True
