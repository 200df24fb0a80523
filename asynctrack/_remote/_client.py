"""A tracker's handle on the worker process: ``ProcessEngine``, the thread ``Engine``'s interface.

One ``WorkerProcess`` per application process (``_spawn``; a forked child
gets its own) serves every tracker of that process. Each tracker talks to it through
a ``ProcessEngine``, so the LangChain handler does not know which one it has.

Threads and costs in the application:

- ``ProcessEngine.put()`` is the hot path: one ``deque.append`` (and a length check).
- The shipper thread wakes every 5 ms (25 ms when idle, see ``_spawn``), takes
  what every tracker queued, encodes each tracker's records' fields as one ``orjson``
  array (a single C call) followed by the captured bodies as they are, and writes the
  frames to the worker's pipe (``os.write`` releases the GIL). Per event it does no
  Python work beyond taking the record off the deque.
- The reader thread reads the worker's answers: acknowledgements (frames it may
  forget), flush and close results, statistics, and log records it re-emits on the
  ``asynctrack`` logger.

Every shipped ``RECORDS`` frame is kept until the worker acknowledges it (its events
are durable); if the worker process dies, the reader starts a new one and re-sends
what was not acknowledged, in order, before anything new. What is kept is bounded by
``max_queue_bytes``: under ``when_full="drop"`` the oldest frames past it are forgotten
early, and their events counted as lost only if the worker then dies before writing
them; under ``"block"`` the shipper holds back instead.
"""

from __future__ import annotations

import bisect
import collections
import concurrent.futures
import dataclasses
import itertools
import logging
import pickle
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson

from .._capture import valid_text
from .._channel import HEADER, Kind, body_of, encode_frame, read_records, records_frame
from .._config import TrackerConfig
from .._errors import FlushError, FlushTimeoutError, TrackerClosedError, error_fields
from .._pipeline._barrier import wait
from .._pipeline._statistics import Reporter, Statistics
from .._sinks._base import ParameterValue, RunInfo
from ._spawn import WorkerProcess, live, worker_process

__all__ = ["ProcessEngine"]

logger = logging.getLogger("asynctrack")

_MAX_FRAME_RECORDS: Final = 1024  # records per RECORDS frame: one orjson call holds the GIL ~0.3 ms
_MAX_FRAME_BYTES: Final = 1 << 20  # ... and captured bytes per frame (a frame may pass it by one record)
_FLUSH_MARGIN: Final = 2.0  # seconds past a flush timeout to wait for the worker's answer
_CLOSE_MARGIN: Final = 12.0  # ... past a close timeout (the engine's 10 s stop grace, + 2)

_REQUEST_OF: Final = {Kind.FLUSHED: Kind.FLUSH, Kind.CLOSED: Kind.CLOSE}


@dataclasses.dataclass(slots=True)
class _Request:
    """A flush or close request travelling through a tracker's queue behind its events."""

    kind: Kind
    number: int
    timeout: float | None = None
    future: concurrent.futures.Future[dict[str, Any]] = dataclasses.field(
        default_factory=concurrent.futures.Future
    )


def _cut_by_bytes(items: list[Any], start: int, end: int) -> int:
    """Where a frame of ``items[start:end]`` must end to stay near ``_MAX_FRAME_BYTES``
    (a few large prompts must not make one huge frame: both processes hold a frame
    whole, and the worker's byte bound is applied per frame)."""
    # C loops only (map, itemgetter, accumulate, bisect): no Python work per record.
    totals = list(itertools.accumulate(map(len, map(body_of, itertools.islice(items, start, end)))))
    cut = bisect.bisect_right(totals, _MAX_FRAME_BYTES)
    return start + max(cut, 1) if cut < len(totals) else end


def _answer_deadline(request: _Request, timeout: float | None) -> float | None:
    """How long to wait for the worker's answer to a request with ``timeout``.

    The worker applies ``timeout`` itself and answers with the same error a thread
    engine raises (pending counts, what was spooled); the margin lets that answer
    arrive. A close may take the engine's stop grace on top (spooling what is left).
    """
    if timeout is None:
        return None
    return timeout + (_CLOSE_MARGIN if request.kind == Kind.CLOSE else _FLUSH_MARGIN)


def _ship_default(value: Any) -> Any:
    """orjson ``default`` of the shipper for a chunk with an error event: a captured body
    (JSON bytes) is given as its length (it crosses apart); errors are formatted here,
    where the traceback lives."""
    if type(value) is bytes:
        return len(value)
    if isinstance(value, BaseException):
        return {"$error": True, **error_fields(value)}
    return {"$asynctrack": "unencodable", "type": type(value).__name__}


def _scrub(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON data: lone surrogates become U+FFFD, keys strings."""
    if depth > 64:
        return {"$asynctrack": "max_depth"}
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, bytes | BaseException):
        value = _ship_default(value)
        if isinstance(value, str):
            return value
    if isinstance(value, dict):
        return {str(_scrub(k, depth + 1)): _scrub(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v, depth + 1) for v in value]
    return value


class ProcessEngine:
    """One tracker's handle on the worker process; the thread ``Engine``'s interface.

    Args:
        spec: the tracker's worker side (a picklable ``TrackerSpec``).
        destination: where batches go, for messages.
        run_info: the run's names and events URI.
        config: the tracker configuration.
        fallback: builds a thread ``Engine`` if the worker cannot host this tracker.
    """

    def __init__(
        self,
        *,
        spec: Any,
        destination: str,
        run_info: RunInfo,
        config: TrackerConfig,
        fallback: Callable[[], Any],
        worker: WorkerProcess | None = None,
    ) -> None:
        self.spec = spec
        self._base_writer: str = spec.writer
        self.destination = destination
        self.run_info = run_info
        self.config = config
        self._fallback_factory = fallback
        self.on_fork: weakref.WeakMethod[Callable[[Any], None]] | None = None
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._ack_lock = threading.Lock()  # unacked frames: shipper adds, reader removes
        self._forward_lock = threading.Lock()  # after a fall back: one forwarder at a time
        self._reset_state()
        self._worker = worker or worker_process()
        self._worker.register(self)

    def _reset_state(self) -> None:
        self._queue: collections.deque[Any] = collections.deque()
        self._max_queue = self.config.max_queue_events
        self._max_bytes = self.config.max_queue_bytes
        self._queued_bytes = 0
        self._closed = False
        self._requests = itertools.count(1)
        self._frames = itertools.count(1)
        self._controls = 0  # requests in the queue, not yet shipped
        # Frames the worker has not acknowledged: number -> (frame bytes, events).
        # RECORDS frames stay until ACK; FLUSH/CLOSE frames until answered.
        self.unacked: dict[tuple[int, int], tuple[bytes, int]] = {}
        self.retained_bytes = 0
        self._waiting: dict[int, _Request] = {}
        self._shipped = 0
        self._close_request: _Request | None = None  # the first close's, which a second one waits for
        self._dropped = 0
        self._reporter = Reporter()  # says what this process's buffer dropped, rate-limited
        self._lost = 0
        self._unretained_events = 0
        self._worker_stats: dict[str, Any] = {}
        self._last_parameters: dict[str, ParameterValue] = {}
        self._last_error = ""
        self.tracker_id = -1
        self.fallback: Any = None  # the thread Engine, once we had to fall back
        self.fall_back_reason: str | None = None  # set by the reader; acted on by the shipper

    # -- the Engine interface ------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def last_parameters(self) -> dict[str, ParameterValue]:
        if self.fallback is not None:
            return dict(self.fallback.last_parameters)
        return dict(self._last_parameters)

    def put(self, record: Any) -> None:
        """Append ``record`` (the handler's tuple). Never blocks unless configured; never raises."""
        queue = self._queue
        if len(queue) >= self._max_queue or self._queued_bytes > self._max_bytes:
            self._full(record)
            return
        queue.append(record)
        # Approximate (no lock; take() resets it every shipment): bounds the bytes that
        # wait here by max_queue_bytes, as well as the count by max_queue_events.
        self._queued_bytes += len(record[6])

    def report_drops(self) -> None:
        """Log what this process's buffer dropped since it was last said (at most every
        10 s). Called by the shipper at each of its wake-ups."""
        self._reporter.drops(self._dropped, self.config.max_queue_events)

    def count_dropped(self, n: int = 1) -> None:
        with self._lock:
            self._dropped += n

    def _full(self, record: Any) -> None:
        with self._lock:
            if not self._closed and self.config.when_full == "block":
                deadline = time.monotonic() + self.config.block_timeout
                while self._no_room() and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._room.wait(remaining)
                if not self._no_room() and not self._closed:
                    self._queue.append(record)
                    self._queued_bytes += len(record[6])
                    return
            self._dropped += 1

    def _no_room(self) -> bool:
        return len(self._queue) >= self._max_queue or self._queued_bytes > self._max_bytes

    async def flush(self, timeout: float | None = None) -> None:
        if self.fallback is not None:
            self.forward()
            await self.fallback.flush(timeout)
            return
        request = self._enqueue(Kind.FLUSH, "flush()", timeout)
        await self._await(request, timeout)

    def flush_blocking(self, timeout: float | None = None) -> None:
        if self.fallback is not None:
            self.forward()
            self.fallback.flush_blocking(timeout)
            return
        request = self._enqueue(Kind.FLUSH, "flush_blocking()", timeout)
        self._wait(request, timeout)

    async def aclose(self, timeout: float | None = 30.0) -> None:
        request = self._begin_close(timeout)
        if request is None:
            if self.fallback is not None:
                self.forward()
                await self.fallback.aclose(timeout)
            elif self._close_request is not None:  # a second close waits for the first
                await self._await(self._close_request, timeout, closing=True)
            return
        # Cancelling this await does not cancel the close: the request is queued, the
        # worker flushes and closes the engine whether or not anyone waits.
        await self._await(request, timeout, closing=True)

    def close(self, timeout: float | None = 30.0) -> None:
        request = self._begin_close(timeout)
        if request is None:
            if self.fallback is not None:
                self.forward()
                self.fallback.close(timeout)
            elif self._close_request is not None:  # a second close waits for the first
                self._wait(self._close_request, timeout, closing=True)
            return
        self._wait(request, timeout, closing=True)

    def statistics(self) -> Statistics:
        if self.fallback is not None:
            stats: Statistics = self.fallback.statistics()
            return dataclasses.replace(
                stats,
                recorded=stats.recorded + len(self._queue),  # what was shipped was re-fed to it
                dropped=stats.dropped + self._dropped,
                worker_mode="thread",
                worker_restarts=self._worker.restarts,
            )
        # Shipped first: a record leaves the queue before it is counted as shipped, so
        # read in this order it is counted once at most (never more than was recorded).
        shipped = self._shipped
        queued = len(self._queue) - self._controls
        worker = self._worker_stats
        # An event the worker had to drop (its buffer full while the destination is
        # down) was accepted here but is not recorded there: it counts as dropped, once.
        worker_dropped = worker.get("dropped", 0)
        return Statistics(
            recorded=shipped + max(queued, 0) - worker_dropped,
            written=worker.get("written", 0),
            dropped=self._dropped + worker_dropped,
            filtered=worker.get("filtered", 0),
            failed=worker.get("failed", 0),
            lost=self._lost + worker.get("lost", 0),
            spooled=worker.get("spooled", 0),
            encode_errors=worker.get("encode_errors", 0),
            write_errors=worker.get("write_errors", 0),
            batches=worker.get("batches", 0),
            bytes=worker.get("bytes", 0),
            queue_depth=max(queued, 0),
            pending_bytes=worker.get("pending_bytes", 0),  # the worker's; ours: retained_bytes
            parameter_errors=worker.get("parameter_errors", 0),
            worker_mode="process",
            worker_restarts=self._worker.restarts,
            retained_bytes=self.retained_bytes,
        )

    # -- requests ------------------------------------------------------------------

    def _enqueue(self, kind: Kind, what: str, timeout: float | None) -> _Request:
        if self._closed:
            raise TrackerClosedError(what)
        return self._enqueue_unchecked(kind, timeout)

    def _enqueue_unchecked(self, kind: Kind, timeout: float | None = None) -> _Request:
        request = _Request(kind, next(self._requests), timeout)
        with self._lock:
            self._controls += 1
            self._queue.append(request)  # requests ignore the bound: they carry no data
        self._worker.wake()
        return request

    def _begin_close(self, timeout: float | None) -> _Request | None:
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            self._max_queue = -1
            self._room.notify_all()
        live.discard(self)
        if self.fallback is not None:
            return None
        self._close_request = self._enqueue_unchecked(Kind.CLOSE, timeout)
        return self._close_request

    async def _await(self, request: _Request, timeout: float | None, closing: bool = False) -> None:
        if not await wait(request, _answer_deadline(request, timeout)):
            error = self._timeout_error(request, timeout or 0.0)
            if error is None:
                return
            raise error
        self._outcome(request, closing)

    def _wait(self, request: _Request, timeout: float | None, closing: bool = False) -> None:
        try:
            request.future.result(_answer_deadline(request, timeout))
        except concurrent.futures.TimeoutError:
            error = self._timeout_error(request, timeout or 0.0)
            if error is None:
                return
            raise error from None
        self._outcome(request, closing)

    def _outcome(self, request: _Request, closing: bool) -> None:
        outcome = request.future.result()
        if self.fallback is not None and outcome.get("fallback"):
            # The worker could not host this tracker: the thread engine took over.
            if closing:
                self.fallback.close(request.timeout)
            else:
                self.fallback.flush_blocking(request.timeout)
            return
        error = outcome.get("error")
        if error is None:
            return
        if "timeout" in error:
            raise FlushTimeoutError(
                timeout=error["timeout"],
                pending=error.get("pending", 0),
                queued=error.get("queued", 0),
                failed_batches=error.get("failed_batches", 0),
                reason=error.get("reason", ""),
            )
        raise FlushError(
            pending=error.get("pending", 0),
            queued=error.get("queued", 0),
            failed_batches=error.get("failed_batches", 0),
            reason=error.get("reason", ""),
        )

    def _timeout_error(self, request: _Request, timeout: float) -> FlushTimeoutError | None:
        """The error for a wait that ran out, or ``None`` when nothing was pending."""
        queued = 0
        for item in list(self._queue):
            if item is request:
                break
            if type(item) is not _Request:
                queued += 1
        unacked = sum(events for (kind, _), (_, events) in list(self.unacked.items()) if kind == Kind.RECORDS)
        pending = queued + unacked
        if pending == 0 and request.kind == Kind.FLUSH:
            return None  # nothing recorded before the call is waiting: the barrier holds
        return FlushTimeoutError(
            timeout=timeout,
            pending=pending,
            queued=queued,
            failed_batches=0,
            reason=self._last_error
            or "the worker process did not answer in time (it is restarted if it died)",
        )

    # -- shipper side (the worker's shipper thread) ----------------------------------

    def forward(self) -> None:
        """After a fall back: hand what is queued here to the thread engine, in order
        (the shipper does so every tick; a flush or close does it first)."""
        with self._forward_lock:
            put = self.fallback.put
            for record in self.take():
                put(record)

    def take(self, limit: int | None = None) -> list[Any]:
        """What is queued now, in order (records and requests), ``limit`` at most."""
        queue = self._queue
        count = len(queue) if limit is None else min(len(queue), limit)
        # A C loop (starmap): ~6x cheaper than a comprehension calling popleft. One
        # taker at a time (the shipper; after a fall back, forward() under its lock),
        # so the queue holds at least ``count`` items.
        items = list(itertools.starmap(queue.popleft, itertools.repeat((), count)))
        if not queue:
            self._queued_bytes = 0
        if items and self._max_queue > 0 and self.config.when_full == "block":
            with self._lock:
                self._room.notify_all()
        return items

    def frames(self, items: list[Any]) -> list[tuple[tuple[int, int], bytes, int]]:
        """Encode ``items`` as frames: ((kind, number), frame, events) in order."""
        out: list[tuple[tuple[int, int], bytes, int]] = []
        tracker = self.tracker_id
        start = 0
        n = len(items)
        controls = self._controls
        while start < n:
            if controls:
                end = start
                while end < n and type(items[end]) is not _Request and end - start < _MAX_FRAME_RECORDS:
                    end += 1
            else:
                end = min(n, start + _MAX_FRAME_RECORDS)
            end = _cut_by_bytes(items, start, end)
            if end > start:
                chunk = items[start:end]
                kept = chunk
                try:
                    # bytes.__len__ is C: orjson runs no Python mid-walk; each body
                    # crosses as it is, after the fields (see _channel.records_frame).
                    # Anything else orjson cannot write (an exception, an odd run id)
                    # makes it raise: the next line formats or marks it.
                    fields = orjson.dumps(chunk, default=bytes.__len__)
                except Exception:
                    try:  # an error event in the chunk: its exception is formatted here
                        fields = orjson.dumps(chunk, default=_ship_default)
                    except Exception:
                        fields, kept = self._careful_fields(chunk)
                number = next(self._frames)
                out.append(((Kind.RECORDS, number), records_frame(tracker, number, fields, kept), len(chunk)))
                self._shipped += len(chunk)
                start = end
                continue
            request = items[start]
            start += 1
            with self._lock:
                self._controls -= 1
                controls = self._controls
            self._waiting[request.number] = request
            payload = pickle.dumps(request.timeout)
            frame = encode_frame(request.kind, tracker, request.number, payload)
            out.append(((request.kind, request.number), frame, 0))
        return out

    def _careful_fields(self, chunk: list[Any]) -> tuple[bytes, list[Any]]:
        """One record at a time, for a chunk orjson refused as a whole (a name or token
        with lone surrogates): such strings get U+FFFD; a record that still fails is
        counted as lost and said. Returns the fields and the records they hold."""
        parts = []
        kept = []
        for record in chunk:
            try:
                parts.append(orjson.dumps(record, default=_ship_default, option=orjson.OPT_NON_STR_KEYS))
                kept.append(record)
                continue
            except Exception:
                pass
            try:
                parts.append(orjson.dumps(_scrub(record), option=orjson.OPT_NON_STR_KEYS))
                kept.append(record)
            except Exception as exc:
                self._lost += 1
                logger.warning("asynctrack: could not ship a %s event: %r", record[0], exc)
        return b"[" + b",".join(parts) + b"]", kept

    # -- reader side (the worker's reader thread) --------------------------------------

    def acknowledged(self, number: int) -> None:
        with self._ack_lock:
            for key in [k for k in self.unacked if k[0] == Kind.RECORDS and k[1] <= number]:
                frame, _ = self.unacked.pop(key)
                self.retained_bytes -= len(frame)
        if self.config.when_full == "block":
            self._worker.wake()

    def answered(self, kind: Kind, number: int, payload: bytes) -> None:
        outcome: dict[str, Any] = pickle.loads(payload)
        with self._ack_lock:
            self.unacked.pop((_REQUEST_OF[kind], number), None)
        self._apply_statistics(outcome.get("statistics") or {})
        parameters = outcome.get("parameters")
        if parameters is not None and outcome.get("error") is None:
            self._last_parameters = dict(parameters)
        error = outcome.get("error")
        if error is not None:
            self._last_error = str(error.get("reason", ""))
        request = self._waiting.pop(number, None)
        if request is not None and not request.future.done():
            request.future.set_result(outcome)
        if kind == Kind.CLOSED:
            self._worker.unregister(self)

    def _apply_statistics(self, stats: Mapping[str, Any]) -> None:
        if stats:
            self._worker_stats = dict(stats)
            if stats.get("last_error"):
                self._last_error = str(stats["last_error"])

    def statistics_from_worker(self, payload: bytes) -> None:
        self._apply_statistics(pickle.loads(payload))

    def held_back(self) -> bool:
        """Under ``when_full="block"``: wait for acknowledgements before shipping more
        than ``max_queue_bytes`` (the callbacks then wait on this process's buffer)."""
        return (
            self.config.when_full == "block"
            and not self._closed
            and self.retained_bytes >= self.config.max_queue_bytes
        )

    def retain(self, key: tuple[int, int], frame: bytes, events: int) -> None:
        with self._ack_lock:
            self.unacked[key] = (frame, events)
            if key[0] == Kind.RECORDS:
                self.retained_bytes += len(frame)
                if self.retained_bytes > self.config.max_queue_bytes and self.config.when_full == "drop":
                    self._forget_oldest()

    def _forget_oldest(self) -> None:
        """Over the retention bound: forget the oldest unacknowledged RECORDS frames."""
        for key in list(self.unacked):
            if self.retained_bytes <= self.config.max_queue_bytes // 2:
                break
            if key[0] != Kind.RECORDS:
                continue
            frame, events = self.unacked.pop(key)
            self.retained_bytes -= len(frame)
            self._unretained_events += events

    def renew_writer(self, generation: int) -> None:
        """A new worker writes under a writer id of its own: the old one's batch keys
        (``<time>-<writer>-<batch number>``) must never be written again."""
        self.spec = dataclasses.replace(self.spec, writer=f"{self._base_writer}-r{generation}")

    def worker_died(self) -> None:
        """The worker died: what it had but we no longer retain may be lost."""
        if self._unretained_events:
            self._lost += self._unretained_events
            logger.error(
                "asynctrack: the worker process died; %d event(s) past the retention bound "
                "(max_queue_bytes) could not be re-sent and may be lost",
                self._unretained_events,
            )
            self._unretained_events = 0

    def fall_back(self, reason: str) -> None:
        """The worker cannot serve this tracker: a thread engine here takes over.

        Called with the channel lock held (by the shipper, or by a restart that gave
        up), so that no frame of this tracker is being built or sent meanwhile.
        """
        self.fall_back_reason = None
        logger.warning(
            "asynctrack: the worker process cannot host this tracker (%s); using a worker "
            "thread in this process instead",
            reason,
        )
        try:
            engine = self._fallback_factory()
        except Exception as exc:
            logger.error("asynctrack: cannot start a worker thread either: %s", exc)
            return
        # Re-feed what was shipped, in order; answer the waiting requests from it.
        for (kind, _), (frame, _) in list(self.unacked.items()):
            if kind != Kind.RECORDS:
                continue
            for record in read_records(frame[HEADER.size :]):
                engine.put(tuple(record))
        self.unacked.clear()
        self.retained_bytes = 0
        with self._forward_lock:
            self.fallback = engine
            # The handler keeps calling put(): the shipper forwards what it queues from now on.
            while self._queue:
                item = self._queue.popleft()
                if type(item) is _Request:
                    self._waiting[item.number] = item
                else:
                    engine.put(item)
            self._controls = 0
        for request in list(self._waiting.values()):
            if not request.future.done():
                request.future.set_result({"fallback": True})
        self._waiting.clear()

    def after_fork_in_child(self) -> None:
        """A forked child: an empty queue of its own, a new writer id, a new worker."""
        from .._layout import new_writer_id

        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._ack_lock = threading.Lock()
        closed = self._closed
        self._reset_state()
        self.spec = dataclasses.replace(self.spec, writer=new_writer_id())
        self._base_writer = self.spec.writer
        on_fork = self.on_fork() if self.on_fork is not None else None
        if on_fork is not None:
            on_fork(self)
        if closed:
            self._closed = True
            self._max_queue = -1
        else:
            self._worker.register(self)
