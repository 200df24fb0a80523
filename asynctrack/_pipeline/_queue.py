"""``BoundedQueue``: the one bounded queue between the callers and a consumer thread.

Both engines use it: the thread engine's worker takes records from it, and in process
mode the shipper takes them to frame and send to the worker process.

``put()`` is the hot path. It runs on any thread, in or out of an event loop: one
``list.extend`` (atomic under the GIL) and a length check against the bounds. It takes
no lock unless the queue looks full, never does I/O and never raises. When full,
``when_full="drop"`` drops the newest record and counts it; ``"block"`` waits up to
``block_timeout`` for the consumer to make room, then drops and counts. Closing wakes
every blocked producer; later records are dropped, counted.

Records are held flat (``flat``, as both engines make their queue for the handler's
records): the queue is one list of slots, a record's ``WIDTH`` fields one after the
other (``_events._schema``), so a waiting record is no object the cyclic collector
tracks: its fields are ``str``, ``int``, ``float``, ``bytes`` or ``None`` (an
error event's ``extra`` is a dict), and the record's tuple is freed by the ``put`` that
extends the list with it (it leaves the collector's allocation count as it was). Queued
tuples would each be walked by the first collection that met them, and a backlog holds
thousands: the event loop's pauses. A control item takes ``WIDTH`` slots too (itself,
then ``None``), so every record starts at a multiple of ``WIDTH``. Otherwise (an engine
of other records, tests and benchmarks) a record, whatever it is, takes one slot.

Bounds: ``max_events`` records, and, when given, ``max_bytes`` of captured bodies
(``record[BODY]``). A record may pass the byte bound by itself: the bound is checked
before the append.

Control items (``Control``: flush and close markers, the worker process's requests)
travel in the same list behind the records they follow, and ignore the bounds (they
carry no data). The consumer takes records in chunks that stop at the first control.

Taking: the consumer copies its slice of slots and sets them to ``None`` (the slots
before ``_at`` are taken), so a slice costs the same however long the backlog behind
it; the taken slots are deleted (one ``del``, which moves what stays down) once what
stays is no longer than what goes: a slot is moved at most once per slot taken, and a
queue that is emptied is cleared. Producers compare the list's length with ``room``,
which counts the taken slots still ahead of the queued ones.

Waking the consumer: ``put()`` compares the slots it found (one ``len``, before its
append) with ``wake_at``. The consumer sets it to 0 before it sleeps with nothing
queued (``sleeping()``): the first record then wakes it, and an idle tracker costs no
wake-ups at all. While the consumer is busy it sets it to ``WAKE_AT - 1`` records past
the taken slots (``busy()``): a backlog of ``WAKE_AT`` wakes it early, and records
otherwise wait for its next round (size-or-time batching). Producers on other threads
may append between one's ``len`` and its append: the length it saw is then short, and a
backlog's wake-up comes one put later; a sleeping consumer's never does (any length is
at least 0).

Counts: ``counts()`` reads (taken, queued) under the lock ``take()`` holds, so
``recorded = taken + queued`` is exact at one instant: a record is never counted both
as taken and as still queued.

Packed items (``records_in``): in the worker process an item is a whole frame of
records, unpacked later on the consumer's thread; it takes one slot. The counts, the
count bound, the wake-up backlog and ``take()``'s limit are then in records,
``records_in(item)`` each.
"""

from __future__ import annotations

import itertools
import operator
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

from .._events._schema import BODY, WIDTH, records_of

__all__ = ["CAPTURE_RAISED", "NEVER", "WAKE_AT", "BoundedQueue", "Control"]

WAKE_AT: Final = 512  # records waiting before put() wakes a busy consumer
NEVER: Final = 2**62  # a wake_at no queue reaches: the consumer was woken already
_repeat: Final = itertools.repeat
_body_of: Final = operator.itemgetter(BODY)  # of a record (a queue not flat)
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
        max_bytes: captured bytes held at most (``None``: no byte bound).
        when_full: ``"drop"`` or ``"block"``.
        block_timeout: seconds a producer waits for room under ``"block"``.
        wake: asks the consumer to take now (thread-safe, cheap).
        records_in: how many records an item stands for, if items are packed (then
            ``put()`` only, and a full queue drops: no byte bound, no blocking).
        flat: records are tuples of ``WIDTH`` fields (``_events._schema.Record``),
            held flat (not with ``records_in``); else any objects (one slot each).
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
        flat: bool = True,
    ) -> None:
        self._flat = flat = flat and records_in is None
        #: Slots a queued item takes: a record's fields, else one.
        self.width = width = WIDTH if flat else 1
        self._padding = (None,) * (width - 1)  # after a control item
        self._items: list[Any] = []
        #: The list itself, for ``AsyncTracker._record``'s inline ``put`` (see ``room``).
        self.items = self._items
        self._add = self._items.extend if flat else self._items.append  # one record's slots
        #: Slots before this one are taken (``None``), held until deleted (``_release``).
        #: Only the consumer changes it, under ``_take_lock``.
        self._at = 0
        self._records_in = records_in
        self._packed = 0  # records queued beyond one per item (packed items)
        self._max = max_events  # -1 once closed: put() then drops
        #: What an inline ``put`` (``AsyncTracker._record``: ``_put_sized``'s fast path in
        #: the caller's frame, one Python call less per event, ~400 instructions) extends
        #: the list under: fewer slots than ``room`` (``max_events`` records' slots past
        #: the taken ones; negative once closed) and at most ``byte_room`` captured bytes;
        #: it then adds the body's length to ``bytes`` and wakes the consumer
        #: (``woken()``) if it found ``wake_at`` slots. When either bound does not let
        #: it, it calls ``put()``, which checks again exactly, then drops, counts or blocks.
        self.room = max_events * width
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
        #: put() wakes the consumer when it finds this many slots (0 at first: a
        #: consumer that serves many queues may be asleep when this one is made).
        self.wake_at = 0
        # Re-entrant: the SIGTERM handler may close while the main thread holds this
        # lock (a producer blocked under when_full="block").
        self._lock = threading.RLock()
        self._room = threading.Condition(self._lock)
        self._take_lock = threading.Lock()  # taken + queue, read together; _at
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
        #: Nonzero exactly when anything is queued, records or controls, as one C call
        #: (``__len__`` is a Python frame, ~1,000 instructions; a consumer's loop asks
        #: several times a round). Its value counts slots (taken slots are only kept
        #: ahead of queued ones): ``len()`` counts items.
        self.length: Callable[[], int] = self._items.__len__
        #: Append a record. Never blocks (unless configured), never raises. Chosen once
        #: here, not tested per record.
        self.put: Callable[[Any], None] = self._put_sized if self._sized else self._put
        if records_in is not None:
            self.put = self._put_packed

    # -- producers -------------------------------------------------------------------------

    def _put(self, record: Any) -> None:
        """``put`` without a byte bound."""
        items = self._items
        queued = len(items)
        if queued >= self.room:
            self._full(record)
            return
        self._add(record)
        if queued >= self.wake_at:
            self.woken()

    def _put_sized(self, record: Any) -> None:
        """``put`` with the byte bound: the record's body counts toward ``max_bytes``."""
        items = self._items
        queued = len(items)
        if queued >= self.room or self.bytes > self._max_bytes:
            self._full(record)
            return
        self._add(record)
        self.bytes += len(record[BODY])
        if queued >= self.wake_at:
            self.woken()

    def _put_packed(self, item: Any) -> None:
        """``put`` of an item that stands for ``records_in(item)`` records."""
        items = self._items
        count = self._records_in(item)  # type: ignore[misc]  # set with this method
        # Under the consumer's lock: take() changes the same counts, and counts() reads
        # the queue and the count together.
        with self._take_lock:
            queued = len(items) + self._packed  # slots (with the taken ones) and records beyond
            full = queued - self._at + count > self._max
            if not full:
                items.append(item)
                self._packed += count - 1
                queued += count
        if full:
            self._full(item)
        elif queued > self.wake_at:
            self.woken()

    def put_many(self, records: list[Any]) -> None:
        """``put`` each of ``records`` in order (one C call when they all fit)."""
        items = self._items
        if len(items) + len(records) * self.width > self.room or self._sized or self._records_in is not None:
            for record in records:
                self.put(record)
            return
        items.extend(itertools.chain.from_iterable(records) if self._flat else records)
        if len(items) > self.wake_at:
            self.woken()

    def put_control(self, item: C) -> None:
        """Append a control item; it ignores the bounds and wakes the consumer."""
        with self._take_lock:  # counts() reads the queue and the control count together
            # One extend: a producer's record never lands between a control and its padding.
            self._items.extend((item, *self._padding))
            self.controls_queued += 1
        self.woken()

    def count_dropped(self, n: int = 1, reason: str = CAPTURE_RAISED) -> None:
        """Count records that could not even be put (thread-safe), and why."""
        with self._lock:
            self.dropped += n
            self.dropped_by[reason] = self.dropped_by.get(reason, 0) + n

    def woken(self) -> None:
        """Wake the consumer (a producer found ``wake_at`` slots)."""
        self.wake_at = NEVER  # until the consumer says it is busy or sleeping again
        self._wake()

    def _no_room(self) -> bool:
        return len(self._items) - self._at >= self._max * self.width or self.bytes > self._max_bytes

    def _admit(self, record: Any) -> bool:
        """Append ``record`` if the bounds let it, checked exactly (the consumer holds
        ``room`` stricter than they are while it releases taken slots)."""
        with self._take_lock:
            items = self._items
            if self._no_room() or self.closed:
                return False
            queued = len(items)
            self._add(record)
            if self._sized:
                self.bytes += len(record[BODY])
        if queued >= self.wake_at:
            self.woken()
        return True

    def _full(self, record: Any) -> None:
        with self._lock:
            if self._records_in is None and self._admit(record):
                return
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
                if self._admit(record):
                    return
            if self.closed:
                reason = _AFTER_CLOSE
            elif self.bytes > self._max_bytes and len(self) + self._packed < self._max:
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
        return not self._items  # taken slots are only kept ahead of queued ones

    def busy(self) -> None:
        """The consumer is at work: only a backlog of ``WAKE_AT`` wakes it early."""
        if len(self) + self._packed < WAKE_AT:
            # Not while the backlog stays (the consumer holds back on purpose, a memory
            # bound): a wake per put() would cost every caller.
            self.wake_at = self._at + (WAKE_AT - 1) * self.width

    def _release(self, end: int) -> None:
        """The slots up to ``end`` are taken (``_take_lock`` held): delete them if what
        stays is no longer, else set those past ``_at`` to ``None``."""
        items = self._items
        at = self._at
        if end >= len(items) - end:
            # Strict first: until the delete, a put sees the taken slots as queued.
            self.room = self._max * self.width
            del items[:end]
            self._at = 0
            wake_at = self.wake_at
            if 0 < wake_at < NEVER:
                self.wake_at = max(wake_at - end, 0)
        else:
            items[at:end] = [None] * (end - at)
            self._at = end
            self.room = self._max * self.width + end
        if self.closed:  # close() may have set room while this computed it
            self.room = -1

    def take_fields(self, limit: int) -> tuple[list[Any], C | None]:
        """Up to ``limit`` records as their fields, flat (``WIDTH`` each, in order; of a
        queue not ``flat``, the records themselves), stopping after the first control item
        (returned apart). The shipper frames them as they are; ``take()`` makes them tuples.
        Not of packed items (``take()``)."""
        items = self._items
        width = self.width
        control: C | None = None
        lock = self._take_lock
        # acquire/release, not ``with``: a with block looks up and binds the lock's
        # __enter__ and __exit__ each time (~1,100 instructions more; the consumer takes
        # every round).
        lock.acquire()
        try:
            at = self._at
            stop = len(items)
            if stop - at > limit * width:
                stop = at + limit * width
            end = stop
            if self.controls_queued:  # else records only: no type check each
                controls = list(map(isinstance, items[at:stop:width], _repeat(Control)))
                if True in controls:
                    stop = at + controls.index(True) * width
                    end = stop + width
                    control = items[stop]
                    # handled after the records ahead of it
                    self.controls_queued -= 1
            # C calls over the whole slice: a copy, then the slots released (_release).
            chunk = items[at:stop]
            self._release(end)
            self._taken += (stop - at) // width
        finally:
            lock.release()
        if self._sized:
            if items:
                taken = sum(map(len, chunk[BODY::WIDTH] if self._flat else map(_body_of, chunk)))
                self.bytes -= taken
            else:
                taken = self.bytes  # all of it (less a producer's body still being added)
                self.bytes = 0  # heals the producers' unlocked additions
            self.taken_bytes = taken
        if self._blocked:
            with self._room:
                self._room.notify_all()
        return chunk, control

    def take(self, limit: int) -> tuple[list[Any], C | None]:
        """Up to ``limit`` records, stopping after the first control item (returned apart)."""
        if self._records_in is not None:
            return self._take_packed(limit)
        fields, control = self.take_fields(limit)
        return records_of(fields) if self._flat else fields, control

    def _take_packed(self, limit: int) -> tuple[list[Any], C | None]:
        """``take`` of packed items: whole items, until they hold ``limit`` records."""
        records_in = self._records_in
        assert records_in is not None
        items = self._items
        chunk: list[Any] = []
        control: C | None = None
        taken = 0
        with self._take_lock:
            end = self._at
            while end < len(items) and taken < limit:
                item = items[end]
                end += 1
                if isinstance(item, Control):
                    control = item  # type: ignore[assignment]  # put_control() admits only C
                    self.controls_queued -= 1
                    break
                chunk.append(item)
                taken += records_in(item)
            self._release(end)
            self._taken += taken
            self._packed -= taken - len(chunk)
        return chunk, control  # no producer waits: a full packed queue drops

    def drain(self) -> list[Any]:
        """Everything queued, in order, records and controls (a fall back's hand-over)."""
        records_in = self._records_in
        with self._take_lock:
            items = self._items
            end = len(items)
            fields = items[self._at : end]
            self._release(end)  # all of it: deleted
            if not self._flat:
                out = fields
                count = records_in or _one
                self._taken += sum(count(item) for item in out if not isinstance(item, Control))
            else:
                out = [group[0] if isinstance(group[0], Control) else group for group in records_of(fields)]
                self._taken += len(out) - self.controls_queued
            self.controls_queued = 0
            self._packed = 0
        self.bytes = 0
        if self._blocked:
            with self._room:
                self._room.notify_all()
        return out

    def __len__(self) -> int:
        """Items queued: records (or packed items) and controls."""
        return (len(self._items) - self._at) // self.width

    # -- readers (any thread) ------------------------------------------------------------------

    def _firsts(self) -> list[Any]:
        """Each queued item's first slot, in order: a record's kind, or a control item."""
        with self._take_lock:
            return self._items[self._at :: self.width]

    def counts(self) -> tuple[int, int]:
        """(records taken by the consumer, records still queued), at one instant."""
        with self._take_lock:
            return self._taken, len(self) - self.controls_queued + self._packed

    def queued_before(self, item: C) -> int | None:
        """Records queued ahead of ``item``; ``None`` if the consumer took it already."""
        records_in = self._records_in or _one
        queued = 0
        for first in self._firsts():
            if first is item:
                return queued
            if not isinstance(first, Control):
                queued += records_in(first)
        return None

    def controls(self) -> list[C]:
        """The control items still queued."""
        return [first for first in self._firsts() if isinstance(first, Control)]  # type: ignore[misc]  # only C
