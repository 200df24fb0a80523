"""The bounded buffer between the callers and the worker: a deque, a bound, a policy.

``put()`` is the hot path. It runs on any thread, in or out of an event loop, and
only appends to a ``collections.deque`` (atomic under the GIL, 30 ns). It takes no
lock unless the buffer is full, never does I/O and never raises. When full,
``when_full="drop"`` drops the newest record and counts it; ``"block"`` waits up
to ``block_timeout`` for the worker to make room, then drops and counts.

The worker takes records in chunks (``take``) under a lock that only
``counts()`` shares, so ``recorded = taken + queued`` is read at one instant: a
record is never counted both as taken and as still queued.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from .._config import TrackerConfig
from ._barrier import Marker

__all__ = ["WAKE_AT", "Buffer"]

WAKE_AT: Final = 512  # records waiting before put() wakes the worker early


class Buffer:
    """Records waiting for the worker, and flush markers among them.

    Args:
        config: ``max_queue_events``, ``when_full`` and ``block_timeout``.
        wake: asks the worker to drain now (thread-safe, cheap).
    """

    def __init__(self, config: TrackerConfig, wake: Callable[[], None]) -> None:
        self._queue: collections.deque[Any] = collections.deque()
        self._max = config.max_queue_events  # -1 once closed: put() then drops
        self._max_events = config.max_queue_events
        self._block = config.when_full == "block"
        self._block_timeout = config.block_timeout
        self._wake = wake
        self.wake_requested = False  # cleared by the worker once it has drained
        # Re-entrant: the SIGTERM handler may close trackers while the main thread
        # holds this lock (a producer blocked under when_full="block").
        self._lock = threading.RLock()
        self._room = threading.Condition(self._lock)
        self._take_lock = threading.Lock()  # taken + queue, read together
        self._taken = 0
        self._markers = 0  # markers in the queue (counts() is then O(1), not O(queue))
        self._blocked = 0
        self.dropped = 0
        self.closed = False
        #: The worker's thread: it must never block on a full buffer (it empties it).
        self.worker_thread: threading.Thread | None = None

    # -- callers -------------------------------------------------------------------------

    def put(self, record: Any) -> None:
        """Append ``record``. Never blocks (unless configured), never raises."""
        queue = self._queue
        if len(queue) >= self._max:
            self._full(record)
            return
        queue.append(record)
        if len(queue) >= WAKE_AT and not self.wake_requested:
            self.request_wake()

    def put_many(self, records: list[Any]) -> None:
        """``put`` each of ``records`` in order (one C call when they all fit)."""
        queue = self._queue
        if len(queue) + len(records) > self._max:
            for record in records:
                self.put(record)
            return
        queue.extend(records)
        if len(queue) >= WAKE_AT and not self.wake_requested:
            self.request_wake()

    def put_marker(self, marker: Marker) -> None:
        """Append a flush marker; markers ignore the bound (they carry no data)."""
        with self._take_lock:  # counts() reads the queue and the marker count together
            self._queue.append(marker)
            self._markers += 1
        self.request_wake()

    def request_wake(self) -> None:
        self.wake_requested = True
        self._wake()

    def count_dropped(self, n: int = 1) -> None:
        """Count events that could not even be put (thread-safe)."""
        with self._lock:
            self.dropped += n

    def _full(self, record: Any) -> None:
        with self._lock:
            if not self.closed and self._block and threading.current_thread() is not self.worker_thread:
                deadline = time.monotonic() + self._block_timeout
                self._blocked += 1
                try:
                    while len(self._queue) >= self._max and not self.closed:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self.request_wake()
                        self._room.wait(remaining)
                finally:
                    self._blocked -= 1
                if len(self._queue) < self._max and not self.closed:
                    self._queue.append(record)
                    return
            self.dropped += 1

    def close(self) -> bool:
        """Refuse every later record; ``False`` if already closed. Wakes blocked producers."""
        with self._lock:
            if self.closed:
                return False
            self.closed = True
            self._max = -1
            self._room.notify_all()
            return True

    # -- the worker ------------------------------------------------------------------------

    def take(self, limit: int) -> tuple[list[Any], Marker | None]:
        """Up to ``limit`` records, stopping after the first marker (returned apart)."""
        queue = self._queue
        chunk: list[Any] = []
        marker = None
        with self._take_lock:
            if not self._markers:  # records only: no type check each (producers only append)
                popleft = queue.popleft
                chunk = [popleft() for _ in range(min(limit, len(queue)))]
            else:
                while queue and len(chunk) < limit:
                    item = queue.popleft()
                    if type(item) is Marker:
                        marker = item  # handled after the records ahead of it
                        self._markers -= 1
                        break
                    chunk.append(item)
            self._taken += len(chunk)
        return chunk, marker

    def release_blocked(self) -> None:
        """Wake producers waiting for room (``when_full="block"``)."""
        if self._blocked:
            with self._room:
                self._room.notify_all()

    def __len__(self) -> int:
        return len(self._queue)

    # -- readers (any thread) ------------------------------------------------------------------

    def counts(self) -> tuple[int, int]:
        """(records taken by the worker, records still queued), at one instant."""
        with self._take_lock:
            return self._taken, len(self._queue) - self._markers

    def queued_before(self, marker: Marker) -> int | None:
        """Records queued ahead of ``marker``; ``None`` if the worker took it already."""
        queued = 0
        for item in list(self._queue):
            if item is marker:
                return queued
            if type(item) is not Marker:
                queued += 1
        return None

    def markers(self) -> list[Marker]:
        """The markers still queued."""
        return [item for item in list(self._queue) if type(item) is Marker]

    @property
    def max_events(self) -> int:
        return self._max_events
