"""``BoundedQueue``: the one bounded queue between the callers and a consumer thread.

Both engines use it: the thread engine's worker takes records from it, and in process
mode the shipper takes them to frame and send to the worker process.

``put()`` is the hot path. It runs on any thread, in or out of an event loop: one
``collections.deque.append`` (atomic under the GIL, ~30 ns) and a length check
against the bounds. It takes no lock unless the queue is full, never does I/O and
never raises. When full, ``when_full="drop"`` drops the newest record and counts it;
``"block"`` waits up to ``block_timeout`` for the consumer to make room, then drops
and counts. Closing wakes every blocked producer; later records are dropped, counted.

Bounds: ``max_events`` records, and, when given, ``max_bytes`` of captured bodies
(``record[BODY]``, see ``_events._schema``). A record may pass the byte bound by
itself: the bound is checked before the append.

Control items (``Control``: flush and close markers, the worker process's requests)
travel in the same deque behind the records they follow, and ignore the bounds (they
carry no data). The consumer takes records in chunks that stop at the first control.

Waking the consumer: ``put()`` compares the items it found queued (one ``len``, before
its append) with ``wake_at``. The consumer sets it to 0 before it sleeps with nothing
queued (``sleeping()``): the first record then wakes it, and an idle tracker costs no
wake-ups at all. While the consumer is busy it sets it to ``WAKE_AT - 1`` (``busy()``):
a backlog of ``WAKE_AT`` wakes it early, and records otherwise wait for its next round
(size-or-time batching). Producers on other threads may append between one's ``len``
and its append: the length it saw is then short, and a backlog's wake-up comes one
put later; a sleeping consumer's never does (any length is at least 0).

Counts: ``counts()`` reads (taken, queued) under the lock ``take()`` holds, so
``recorded = taken + queued`` is exact at one instant: a record is never counted both
as taken and as still queued.

Packed items (``records_in``): in the worker process an item is a whole frame of
records, unpacked later on the consumer's thread. The counts, the count bound, the
wake-up backlog and ``take()``'s limit are then in records, ``records_in(item)`` each.
"""

from __future__ import annotations

import collections
import itertools
import operator
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

from .._events._schema import BODY

__all__ = ["CAPTURE_RAISED", "NEVER", "WAKE_AT", "BoundedQueue", "Control"]

WAKE_AT: Final = 512  # records waiting before put() wakes a busy consumer
NEVER: Final = 2**62  # a wake_at no queue reaches: the consumer was woken already
_body_of: Final = operator.itemgetter(BODY)  # what the byte bound counts of a record
_starmap: Final = itertools.starmap
_repeat: Final = itertools.repeat
_popleft: Final = collections.deque.popleft
_MAP_UP_TO: Final = 64  # records taken with map (fewer) or starmap (more): see take()
#: Why records are dropped, as the drop warning says it (``dropped_by``).
CAPTURE_RAISED: Final = "whose capture raised"  # count_dropped's default: the callback's
_AFTER_CLOSE: Final = "recorded after the tracker closed"


def _one(item: Any) -> int:
    return 1


class Control:
    """Base of the items that travel in the queue without data: flush and close markers,
    the worker process's requests. They ignore the bounds and stop ``take()``."""

    __slots__ = ()


C = TypeVar("C", bound=Control)


class BoundedQueue(Generic[C]):
    """Records waiting for one consumer, and control items among them.

    Args:
        max_events: records held at most.
        max_bytes: captured bytes held at most (``None``: no byte bound, and the
            records may be any objects).
        when_full: ``"drop"`` or ``"block"``.
        block_timeout: seconds a producer waits for room under ``"block"``.
        wake: asks the consumer to take now (thread-safe, cheap).
        records_in: how many records an item stands for, if items are packed (then
            ``put()`` only, and a full queue drops: no byte bound, no blocking).
    """

    def __init__(
        self,
        *,
        max_events: int,
        max_bytes: int | None = None,
        when_full: str = "drop",
        block_timeout: float = 1.0,
        wake: Callable[[], None],
        records_in: Callable[[Any], int] | None = None,
    ) -> None:
        self._items: collections.deque[Any] = collections.deque()
        #: The deque itself, for ``AsyncTracker._record``'s inline ``put`` (see ``room``).
        self.items = self._items
        self._records_in = records_in
        self._packed = 0  # records queued beyond one per item (packed items)
        self._max = max_events  # -1 once closed: put() then drops
        #: What an inline ``put`` (``AsyncTracker._record``: ``_put_sized``'s fast path in
        #: the caller's frame, one Python call less per event, ~400 instructions) appends
        #: under: fewer items queued than ``room`` (``max_events``; -1 once closed) and at
        #: most ``byte_room`` captured bytes; it then adds the body's length to ``bytes``
        #: and wakes the consumer (``woken()``) if it found ``wake_at`` items queued. When
        #: either bound does not let it, it calls ``put()``, which drops, counts or blocks.
        self.room = max_events
        self.max_events = max_events
        self._sized = max_bytes is not None
        self._max_bytes = max_bytes if max_bytes is not None else NEVER
        self.byte_room = self._max_bytes
        self.max_bytes = max_bytes
        #: Captured bytes queued (approximate: producers add without a lock, the
        #: consumer subtracts what it takes and resets it when the queue is empty).
        self.bytes = 0
        self._block = when_full == "block" and records_in is None
        self._block_timeout = block_timeout
        self._wake = wake
        #: put() wakes the consumer when it finds this many items queued (0 at first:
        #: a consumer that serves many queues may be asleep when this one is made).
        self.wake_at = 0
        # Re-entrant: the SIGTERM handler may close while the main thread holds this
        # lock (a producer blocked under when_full="block").
        self._lock = threading.RLock()
        self._room = threading.Condition(self._lock)
        self._take_lock = threading.Lock()  # taken + queue, read together
        self._taken = 0
        #: Control items queued (a request waits for the consumer): counts() is then
        #: O(1), not O(queue). An attribute, not a property: the consumer reads it a round.
        self.controls_queued = 0
        self._blocked = 0
        self.dropped = 0
        #: ``dropped`` by reason (phrases of the drop warning), changed under ``_lock``.
        self.dropped_by: dict[str, int] = {}
        self._over_events = f"over max_queue_events={max_events} (the buffer was full)"
        self._over_bytes = f"over max_queue_bytes={max_bytes} (the buffer was full)"
        self.closed = False
        #: Captured bytes of the records the last ``take()`` returned (approximate, like
        #: ``bytes``; ``NEVER`` without a byte bound). The shipper cuts frames by it.
        self.taken_bytes = NEVER
        #: The consumer's thread: it must never block on a full queue (it empties it).
        self.consumer: threading.Thread | None = None
        #: Items queued, records and controls: ``len()`` as one C call (``__len__`` is a
        #: Python frame, ~1,000 instructions; a consumer's loop asks several times a round).
        self.length: Callable[[], int] = self._items.__len__
        #: Append a record. Never blocks (unless configured), never raises. Chosen once
        #: here, not tested per record: without a byte bound records may be any objects.
        self.put: Callable[[Any], None] = self._put_sized if self._sized else self._put
        if records_in is not None:
            self.put = self._put_packed

    # -- producers -------------------------------------------------------------------------

    def _put(self, record: Any) -> None:
        """``put`` without a byte bound."""
        items = self._items
        queued = len(items)
        if queued >= self._max:
            self._full(record)
            return
        items.append(record)
        if queued >= self.wake_at:
            self.woken()

    def _put_sized(self, record: Any) -> None:
        """``put`` with the byte bound: the record's body counts toward ``max_bytes``."""
        items = self._items
        queued = len(items)
        if queued >= self._max or self.bytes > self._max_bytes:
            self._full(record)
            return
        items.append(record)
        self.bytes += len(record[BODY])
        if queued >= self.wake_at:
            self.woken()

    def _put_packed(self, item: Any) -> None:
        """``put`` of an item that stands for ``records_in(item)`` records."""
        items = self._items
        count = self._records_in(item)  # type: ignore[misc]  # set with this method
        if len(items) + self._packed + count > self._max:
            self._full(item)
            return
        # Under the consumer's lock: take() changes the same count, and counts() reads
        # the queue and the count together.
        with self._take_lock:
            items.append(item)
            self._packed += count - 1
        if len(items) + self._packed > self.wake_at:
            self.woken()

    def put_many(self, records: list[Any]) -> None:
        """``put`` each of ``records`` in order (one C call when they all fit)."""
        items = self._items
        if len(items) + len(records) > self._max or self._sized:
            for record in records:
                self.put(record)
            return
        items.extend(records)
        if len(items) > self.wake_at:
            self.woken()

    def put_control(self, item: C) -> None:
        """Append a control item; it ignores the bounds and wakes the consumer."""
        with self._take_lock:  # counts() reads the queue and the control count together
            self._items.append(item)
            self.controls_queued += 1
        self.woken()

    def count_dropped(self, n: int = 1, reason: str = CAPTURE_RAISED) -> None:
        """Count records that could not even be put (thread-safe), and why."""
        with self._lock:
            self.dropped += n
            self.dropped_by[reason] = self.dropped_by.get(reason, 0) + n

    def woken(self) -> None:
        """Wake the consumer (a producer found ``wake_at`` items queued)."""
        self.wake_at = NEVER  # until the consumer says it is busy or sleeping again
        self._wake()

    def _no_room(self) -> bool:
        return len(self._items) >= self._max or self.bytes > self._max_bytes

    def _full(self, record: Any) -> None:
        with self._lock:
            if not self.closed and self._block and threading.current_thread() is not self.consumer:
                deadline = time.monotonic() + self._block_timeout
                self._blocked += 1
                try:
                    while self._no_room() and not self.closed:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self.woken()
                        self._room.wait(remaining)
                finally:
                    self._blocked -= 1
                if not self._no_room() and not self.closed:
                    self._items.append(record)
                    if self._sized:
                        self.bytes += len(record[BODY])
                    return
            if self.closed:
                reason = _AFTER_CLOSE
            elif self.bytes > self._max_bytes and len(self._items) + self._packed < self._max:
                reason = self._over_bytes
            else:  # the count bound (or room made since the put found none: it was that)
                reason = self._over_events
            self.count_dropped(1 if self._records_in is None else self._records_in(record), reason)

    def close(self) -> bool:
        """Refuse every later record; ``False`` if already closed. Wakes blocked producers."""
        with self._lock:
            if self.closed:
                return False
            self.closed = True
            self._max = -1
            self.room = -1
            self._room.notify_all()
            return True

    # -- the consumer ----------------------------------------------------------------------

    def sleeping(self) -> bool:
        """The consumer is about to sleep: the next record wakes it. ``False`` if something
        is queued already (then it must not sleep)."""
        self.wake_at = 0
        # After the store: a producer that appended before it is seen here; one that
        # appends after it sees wake_at == 0 and wakes the consumer.
        return not self._items

    def busy(self) -> None:
        """The consumer is at work: only a backlog of ``WAKE_AT`` wakes it early."""
        if len(self._items) + self._packed < WAKE_AT:
            # Not while the backlog stays (the consumer holds back on purpose, a memory
            # bound): a wake per put() would cost every caller.
            self.wake_at = WAKE_AT - 1

    def take(self, limit: int) -> tuple[list[Any], C | None]:
        """Up to ``limit`` records, stopping after the first control item (returned apart)."""
        if self._records_in is not None:
            return self._take_packed(limit)
        items = self._items
        control: C | None = None
        lock = self._take_lock
        # acquire/release, not ``with``: a with block looks up and binds the lock's
        # __enter__ and __exit__ each time (~1,100 instructions more; the consumer takes
        # every round).
        lock.acquire()
        try:
            if not self.controls_queued:  # records only: no type check each (producers only append)
                count = len(items)
                if count > limit:  # noqa: PLR1730 - min() is a call: ~750 instructions more
                    count = limit
                # C loops: ~6x cheaper a record than a comprehension calling popleft. map's
                # set-up is the cheaper one (~3,000 instructions against ~4,900), starmap's
                # loop (~190 a record against ~220).
                if count <= _MAP_UP_TO:
                    chunk = list(map(_popleft, [items] * count))
                else:
                    chunk = list(_starmap(items.popleft, _repeat((), count)))
            else:
                chunk = []
                while items and len(chunk) < limit:
                    item = items.popleft()
                    if isinstance(item, Control):
                        control = item  # type: ignore[assignment]  # put_control() admits only C
                        # handled after the records ahead of it
                        self.controls_queued -= 1
                        break
                    chunk.append(item)
            self._taken += len(chunk)
        finally:
            lock.release()
        if self._sized:
            if items:
                taken = sum(map(len, map(_body_of, chunk)))
                self.bytes -= taken
            else:
                taken = self.bytes  # all of it (less a producer's body still being added)
                self.bytes = 0  # heals the producers' unlocked additions
            self.taken_bytes = taken
        if self._blocked:
            with self._room:
                self._room.notify_all()
        return chunk, control

    def _take_packed(self, limit: int) -> tuple[list[Any], C | None]:
        """``take`` of packed items: whole items, until they hold ``limit`` records."""
        records_in = self._records_in
        assert records_in is not None
        items = self._items
        chunk: list[Any] = []
        control: C | None = None
        taken = 0
        with self._take_lock:
            while items and taken < limit:
                item = items.popleft()
                if isinstance(item, Control):
                    control = item  # type: ignore[assignment]  # put_control() admits only C
                    self.controls_queued -= 1
                    break
                chunk.append(item)
                taken += records_in(item)
            self._taken += taken
            self._packed -= taken - len(chunk)
        return chunk, control  # no producer waits: a full packed queue drops

    def drain(self) -> list[Any]:
        """Everything queued, in order, records and controls (a fall back's hand-over)."""
        records_in = self._records_in or _one
        with self._take_lock:
            out = list(itertools.starmap(self._items.popleft, itertools.repeat((), len(self._items))))
            self._taken += sum(records_in(item) for item in out if not isinstance(item, Control))
            self.controls_queued = 0
            self._packed = 0
        self.bytes = 0
        if self._blocked:
            with self._room:
                self._room.notify_all()
        return out

    def __len__(self) -> int:
        return len(self._items)

    # -- readers (any thread) ------------------------------------------------------------------

    def counts(self) -> tuple[int, int]:
        """(records taken by the consumer, records still queued), at one instant."""
        with self._take_lock:
            return self._taken, len(self._items) - self.controls_queued + self._packed

    def queued_before(self, item: C) -> int | None:
        """Records queued ahead of ``item``; ``None`` if the consumer took it already."""
        records_in = self._records_in or _one
        queued = 0
        for queued_item in list(self._items):
            if queued_item is item:
                return queued
            if not isinstance(queued_item, Control):
                queued += records_in(queued_item)
        return None

    def controls(self) -> list[C]:
        """The control items still queued."""
        return [item for item in list(self._items) if isinstance(item, Control)]  # type: ignore[misc]  # only C
