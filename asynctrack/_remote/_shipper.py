"""The shipper: takes what the trackers queued, frames it, sends it, keeps it until acknowledged.

One ``Shipper`` per application process (``_spawn.WorkerProcess`` owns it) serves every
tracker of that process; each tracker has a ``Lane``: its queue (``BoundedQueue``), its
frame numbers, the requests waiting for an answer, and the frames the worker process
has not acknowledged yet.

Its thread sleeps while nothing is queued, so an idle tracker costs no wake-ups in the
application: the first record after that wakes it (``BoundedQueue.sleeping``). It then
gathers for ``_TICK`` before it ships (a backlog of ``WAKE_AT`` records, a flush or a
close wakes it at once), and ships what came meanwhile in one round, whose fixed cost
is shared by those records; if more came during the round it gathers again, else it
sleeps. So it wakes about once per ``_TICK`` while records keep coming, once per burst
when they come in bursts (a model's calls and streamed tokens), never without work, and
a record waits unshipped at most ``_TICK`` (plus the wait for the GIL).

``_TICK`` is 20 ms: a round costs the application ~200 µs of CPU beyond its records
(the wake-up, the GIL taken from a busy caller and given back, cold caches, the
write), so at 5 ms a steady sync chain paid ~2 µs per event in this thread and at
20 ms ~1.2. It also bounds what a SIGKILL of the application loses (measured up to 21 ms;
the benchmarks hold that window to 50 ms).

A round takes each lane's records in slices (``SLICE``), their fields flat as the queue
holds them (``BoundedQueue.take_fields``), marshals each slice with one C call
(``_channel.records_parts``), and writes each slice's frames to the worker's pipe with
one ``writev`` (it releases the GIL), then sleeps ``_HAND_OVER`` before the next slice
of a backlog. Per record it does no Python work: a slice is taken, framed and freed by
C calls over the whole slice.
The GIL is held in one piece for a slice's take, marshal and retention: ``SLICE`` keeps
that near 0.1 ms, what an event loop in the application may wait for it.

Retention: every ``RECORDS`` frame is kept until the worker acknowledges it (its events
are durable), to be re-sent, in order, to a new worker if this one dies (``resend``).
What is kept is bounded by ``max_queue_bytes``, because it is a second copy of what the
worker holds: under ``when_full="drop"`` the oldest frames past the bound are forgotten
(their events counted as lost only if the worker then dies before writing them); under
``"block"`` the lane is held back instead, its queue fills and the callbacks wait.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import itertools
import logging
import pickle
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Final

from .._channel import HEADER, RECORDS, Kind, encode_frame, read_records, records_parts
from .._errors import error_fields
from .._events._schema import BODY, KIND, WIDTH
from .._pipeline._queue import BoundedQueue, Control
from .._pipeline._statistics import Reporter

__all__ = ["Lane", "Request", "Shipper"]

logger = logging.getLogger("asynctrack")

_TICK: Final = 0.02  # seconds a busy shipper gathers records between two rounds
#: A real sleep between two slices of a backlog: a thread waiting for the GIL takes it.
#: The write alone does not give the GIL away (it takes it back before a waiting thread
#: has woken up): without it a backlog kept the application's event loop waiting 3-5 ms.
_HAND_OVER: Final = 0.00005
#: Records per frame: one marshal call holds the GIL while it writes them all. At 256, a
#: slice's take, marshal and retention hold it ~0.1 ms (records of ~100-byte bodies, load
#: average 6; 1024 held it ~0.4 ms, and the event loop of a busy caller waited as long).
SLICE: Final = 256
_MAX_FRAME_BYTES: Final = 1 << 20  # captured bytes per frame (a frame may pass it by one record)

Key = tuple[int, int]  # (frame kind, number)
_HEADER_SIZE: Final = HEADER.size
Parts = tuple[bytes, bytes]  # a frame's header and payload, written together (writev)


class Request(Control):
    """A flush or close request travelling through a tracker's queue behind its events.

    ``timeout`` is the caller's; ``deadline`` (``time.monotonic()``, ``None``: none) the
    worker's, which its frame carries (``_client._worker_deadline``).
    """

    __slots__ = ("deadline", "future", "kind", "number", "timeout")

    def __init__(
        self, kind: Kind, number: int, timeout: float | None = None, deadline: float | None = None
    ) -> None:
        self.kind = kind
        self.number = number
        self.timeout = timeout
        self.deadline = deadline
        self.future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()


def _cuts(fields: list[Any]) -> Iterator[list[Any]]:
    """Records' ``fields`` (flat) cut into frames near ``_MAX_FRAME_BYTES`` each (both
    processes hold a frame whole, and the worker's byte bound is applied per frame); a
    record alone may pass it."""
    start = 0
    while start < len(fields):
        # C loops only (slice, map, accumulate, bisect): no Python work per record.
        totals = list(itertools.accumulate(map(len, fields[start + BODY :: WIDTH])))
        cut = bisect.bisect_right(totals, _MAX_FRAME_BYTES)
        end = start + (max(cut, 1) if cut < len(totals) else len(totals)) * WIDTH
        yield fields[start:end]
        start = end


_MARSHALLED: Final = frozenset({str, int, float, bool, bytes, type(None)})


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` as data ``marshal`` writes, for a slice it refused as a whole: an
    exception formatted here, where its traceback lives; a subclass of a builtin type as
    that type; any other object a placeholder."""
    if type(value) in _MARSHALLED:
        return value
    if depth > 64:
        return {"$asynctrack": "max_depth"}
    if isinstance(value, BaseException):
        return {"$error": True, **error_fields(value)}
    if isinstance(value, uuid.UUID):  # a subclass of UUID as a run id: its text
        return str(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes | bytearray):  # a bytearray (a run id) as its bytes
        return bytes(value)
    if isinstance(value, dict):
        return {str(_plain(k, depth + 1)): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, tuple):  # a tuple (a run id: written as its text) stays one
        return tuple(_plain(v, depth + 1) for v in value)
    if isinstance(value, list):
        return [_plain(v, depth + 1) for v in value]
    return {"$asynctrack": "unencodable", "type": type(value).__name__}


class Lane:
    """One tracker's way to the worker process.

    Args:
        queue: the tracker's queue (its ``put`` is the tracker's hot path).
        max_retained: bytes of unacknowledged frames kept at most.
        hold_back: under ``when_full="block"``: stop shipping at ``max_retained``
            (instead of forgetting the oldest frames).
    """

    def __init__(self, queue: BoundedQueue[Request], *, max_retained: int, hold_back: bool) -> None:
        self.queue = queue
        self.tracker_id = -1
        self._max_retained = max_retained
        self.hold_back = hold_back
        self._frames = itertools.count(1)
        self._lock = threading.Lock()  # unacked: the shipper adds, the reader removes
        #: Frames the worker has not acknowledged: key -> (frame's parts, events).
        #: RECORDS frames stay until ACK; FLUSH/CLOSE frames until answered.
        self.unacked: dict[Key, tuple[Parts, int]] = {}
        self.retained_bytes = 0
        self._unretained_events = 0
        #: Held back, the worker was asked to seal and write what it has (``SEAL``):
        #: once per hold, until the lane ships again (or a new worker gets the frames).
        self.seal_asked = False
        #: Requests framed and sent, by number, until the worker answers them.
        self.waiting: dict[int, Request] = {}
        self.shipped = 0  # records framed
        self.lost = 0  # records that could not be shipped, or re-sent after a death
        #: Set by the reader: the worker cannot host this tracker (acted on by the shipper).
        self.fall_back_reason: str | None = None
        #: Called by the shipper, channel lock held, with ``fall_back_reason``.
        self.on_fall_back: Callable[[str], None] = lambda reason: None
        #: Once a thread engine took over: moves what is queued to it.
        self.forward: Callable[[], None] | None = None
        self._reporter = Reporter()  # says what the tracker's queue dropped, rate-limited

    def report_drops(self) -> None:
        """Log what the tracker's queue dropped since it was last said (at most every 10 s)."""
        dropped = self.queue.dropped
        if dropped:
            self._reporter.drops(dropped, self.queue.dropped_by)

    # -- shipper thread ------------------------------------------------------------------

    def held_back(self) -> bool:
        """Whether the lane waits for acknowledgements before shipping more."""
        return self.hold_back and not self.queue.closed and self.retained_bytes >= self._max_retained

    def ship(self, limit: int) -> tuple[list[bytes], int]:
        """Take up to ``limit`` records (and the requests among them), frame them, and keep
        each frame until the worker acknowledges or answers it: the frames' parts to write,
        in order, and how many records and requests they hold.

        One method for the round's whole take: each Python call a round makes costs the
        application ~400 instructions whether it ships one record or 256.
        """
        parts: list[bytes] = []
        count = 0
        tracker = self.tracker_id
        queue = self.queue
        lock = self._lock
        unacked = self.unacked
        while limit > 0:
            chunk, request = queue.take_fields(limit)
            if chunk:
                taken = len(chunk) // WIDTH
                limit -= taken
                self.shipped += taken
                # A take whose bodies fit is one frame: no cut to look for, no copy of it.
                for fields in _cuts(chunk) if queue.taken_bytes > _MAX_FRAME_BYTES else (chunk,):
                    number = next(self._frames)
                    try:
                        frame = records_parts(tracker, number, fields)  # one C call
                        kept = len(fields) // WIDTH
                    except ValueError:  # an exception object, an odd run id: made plain
                        frame, kept = self._plain_frame(tracker, number, fields)
                    lock.acquire()  # not ``with``: see _queue.BoundedQueue.take
                    try:
                        unacked[RECORDS, number] = (frame, kept)
                        self.retained_bytes += _HEADER_SIZE + len(frame[1])
                    finally:
                        lock.release()
                    parts += frame
                    count += kept
            if request is None:
                break
            self.waiting[request.number] = request
            payload = pickle.dumps(request.deadline)
            frame = (HEADER.pack(request.kind, tracker, request.number, len(payload)), payload)
            with lock:
                unacked[request.kind, request.number] = (frame, 0)
            parts += frame
            count += 1
        if self.retained_bytes > self._max_retained and not self.hold_back:
            with lock:
                self._forget_oldest()
        return parts, count

    def _plain_frame(self, tracker: int, number: int, fields: list[Any]) -> tuple[Parts, int]:
        """The ``RECORDS`` frame of records' ``fields`` (flat) that ``marshal`` refused as
        they are, and how many records it holds."""
        kept: list[Any] = []
        for start in range(0, len(fields), WIDTH):
            record = fields[start : start + WIDTH]
            try:
                kept += [_plain(field) for field in record]
            except Exception as exc:  # a hostile __str__ in a dict key
                self.lost += 1
                logger.warning("asynctrack: could not ship a %s event: %r", record[KIND], exc)
        return records_parts(tracker, number, kept), len(kept) // WIDTH

    def _forget_oldest(self) -> None:
        """Over the retention bound: forget the oldest unacknowledged RECORDS frames."""
        for key in list(self.unacked):
            if self.retained_bytes <= self._max_retained // 2:
                break
            if key[0] != RECORDS:
                continue
            self._unretained_events += self._forget(key)

    def _forget(self, key: Key) -> int:
        """Forget the retained frame ``key`` (the lock held): the events it held."""
        frame, events = self.unacked.pop(key)
        self.retained_bytes -= _HEADER_SIZE + len(frame[1])
        return events

    # -- reader thread ---------------------------------------------------------------------

    def acknowledged(self, number: int) -> None:
        """Every RECORDS frame up to ``number`` is durable: forget it."""
        with self._lock:
            unacked = self.unacked
            # Kept in the order they were framed, numbers rising: the scan stops at the
            # first one past ``number`` (a burst leaves hundreds unacknowledged, and the
            # reader holds the GIL for the scan).
            done = []
            for key in unacked:
                if key[0] == RECORDS:
                    if key[1] > number:
                        break
                    done.append(key)
            for key in done:
                self._forget(key)

    def answered(self, kind: Kind, number: int) -> Request | None:
        """The worker answered request ``number`` (a FLUSH or a CLOSE): its request."""
        with self._lock:
            self.unacked.pop((kind, number), None)
            if kind == Kind.CLOSE:
                # The tracker's engine there has ended: every record it got is written,
                # spooled or counted lost, and none is ever re-sent.
                for key in [key for key in self.unacked if key[0] == RECORDS]:
                    self._forget(key)
        return self.waiting.pop(number, None)

    def resend(self) -> list[bytes]:
        """For a new worker: every unacknowledged frame, in order."""
        self.seal_asked = False  # the new worker is asked again if the lane is held back
        with self._lock:
            return [header + payload for (header, payload), _ in self.unacked.values()]

    def worker_died(self) -> None:
        """The worker died: what it had but we no longer retain may be lost."""
        if self._unretained_events:
            self.lost += self._unretained_events
            logger.error(
                "asynctrack: the worker process died; %d event(s) past the retention bound "
                "(max_queue_bytes) could not be re-sent and may be lost",
                self._unretained_events,
            )
            self._unretained_events = 0

    def take_back(self) -> tuple[list[Any], list[Request]]:
        """For a fall back to a thread engine: the records shipped but not acknowledged
        and then those still queued, in order, and the requests to answer."""
        records: list[Any] = []
        with self._lock:
            for (kind, _), (frame, _) in self.unacked.items():
                if kind == RECORDS:
                    records.extend(read_records(frame[1]))
            self.unacked.clear()
            self.retained_bytes = 0
        requests = list(self.waiting.values())
        self.waiting.clear()
        for item in self.queue.drain():
            if isinstance(item, Request):
                requests.append(item)
            else:
                records.append(item)
        return records, requests


class Shipper:
    """The shipper thread of an application process: ships every lane's records.

    Args:
        send: writes frames to the worker's pipe, bytes or a list of parts in order
            (called with ``lock`` held).
        lock: the channel lock: no frame is built or sent while a restart or a fall
            back holds it.
    """

    def __init__(self, send: Callable[[bytes | list[bytes]], None], lock: threading.RLock) -> None:
        self._send = send
        self._lock = lock
        self.lanes: dict[int, Lane] = {}
        # The wake-up signal: a lock this thread holds while nothing asks for a round, and
        # that wake() releases. Both ends are one C call (an Event's set() and wait() run
        # Python lines under a Condition, on the caller's thread for set()).
        self._signal = threading.Lock()
        self._signal.acquire()
        self.stopping = False
        self._thread: threading.Thread | None = None
        #: Rounds the thread ran (each one a wake-up, by a record, a timer or a request).
        self.rounds = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="asynctrack-shipper", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Ship now (thread-safe, any thread, never blocks)."""
        try:
            self._signal.release()
        except RuntimeError:  # released already: a round is asked for
            pass

    def stop(self) -> None:
        """Ship what is queued, then end the thread (called with the channel lock held)."""
        self.ship_once()
        self.stopping = True
        self.wake()

    def _run(self) -> None:
        # Positional arguments to acquire(): it parses its arguments by name, and each
        # keyword is looked up as a new string (~1,200 instructions a call).
        acquire = self._signal.acquire
        while True:
            self.rounds += 1
            acquire(False)  # this round answers any wake() before it
            _, held = self.ship_once()
            if self.stopping:
                return
            lanes = list(self.lanes.values())
            if held:  # until an acknowledgement (or _TICK); any other lane may wake us
                for lane in lanes:
                    lane.queue.sleeping()
                acquire(True, _TICK)
                continue
            # Loops, not any() or a comprehension: each is a Python frame (~1,700-3,500
            # instructions a round).
            for lane in lanes:
                if lane.queue.length():
                    break
            else:
                # Arm every queue (no short cut: each must wake us), then sleep until
                # one does. Not while records wait: each put() would then wake us.
                empty = True
                for lane in lanes:
                    if not lane.queue.sleeping():
                        empty = False
                if empty:
                    acquire()
                    lanes = list(self.lanes.values())  # a tracker may have come meanwhile
            # Records wait: gather for _TICK before shipping them, unless a request, a
            # fall back or a stop waits. A backlog of WAKE_AT, a flush or a close that
            # comes meanwhile wakes us at once.
            if self.stopping:
                continue
            for lane in lanes:
                if lane.queue.controls_queued or lane.fall_back_reason is not None:
                    break
            else:
                for lane in lanes:
                    lane.queue.busy()
                acquire(True, _TICK)

    def ship_once(self) -> tuple[int, bool]:
        """Ship what every lane queued: (records and requests shipped, plus one per
        lane forwarded to a thread engine; whether a lane is held back with records
        queued)."""
        shipped = 0
        held = False
        channel = self._lock
        for lane in list(self.lanes.values()):
            queue = lane.queue
            if queue.dropped:
                lane.report_drops()
            queued = queue.length
            if not queued() and lane.fall_back_reason is None:
                continue
            if lane.forward is not None:  # a thread engine took over this tracker
                lane.forward()
                shipped += 1
                continue
            if lane.fall_back_reason is not None:
                with self._lock:
                    lane.on_fall_back(lane.fall_back_reason)
                if lane.forward is not None:
                    lane.forward()
                shipped += 1
                continue
            while queued():
                if lane.hold_back and lane.held_back() and not self.stopping:
                    held = True
                    if not lane.seal_asked:
                        self._ask_seal(lane)
                    break
                channel.acquire()  # not ``with``: see _queue.BoundedQueue.take
                try:
                    # A restart that gave up may have handed the tracker to a thread
                    # engine between two slices: its records are forwarded, not sent.
                    if lane.tracker_id not in self.lanes or lane.forward is not None:
                        break
                    parts, count = lane.ship(SLICE)
                    shipped += count
                    if parts:
                        lane.seal_asked = False
                        self._send(parts)
                finally:
                    channel.release()
                if queued():
                    time.sleep(_HAND_OVER)
        return shipped, held

    def _ask_seal(self, lane: Lane) -> None:
        """``lane`` is held back: ask the worker to seal and write its open batch now.

        The worker acknowledges a frame once its events are written, and its open batch is
        written once full (``max_batch_bytes``) or old (``batch_interval``): what a held
        lane shipped may be too little to fill it, and nothing more comes until an
        acknowledgement. Without this, each hold would last ``batch_interval``.
        """
        with self._lock:
            if lane.tracker_id not in self.lanes or lane.forward is not None:
                return
            lane.seal_asked = True
            self._send(encode_frame(Kind.SEAL, lane.tracker_id, 0))
