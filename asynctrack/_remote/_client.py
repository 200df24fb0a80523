"""``ProcessEngine``: a tracker's engine that ships its records to the worker process.

It implements ``TrackerEngine`` (``_pipeline._protocol``) like the thread ``Engine``,
so the LangChain handler does not know which one it has. One worker process per
application process (``_spawn.WorkerProcess``; a forked child gets its own) serves
every tracker of that process, and its shipper (``_shipper.Shipper``) takes each
tracker's records from the tracker's queue.

Costs in the application: ``put()`` is the hot path, the queue's own method (one
``list.extend`` of the record's fields and a length check). The shipper and the reader threads do the
rest (see ``_shipper`` and ``_spawn``).

Where ``max_queue_events``, ``max_queue_bytes`` and ``when_full`` hold, each once:

- this tracker's queue: the records waiting for the shipper, by count and by captured
  bytes (the callbacks drop or wait here, nowhere else in this process);
- the lane's retained frames (``_shipper.Lane``): the copies kept to re-send to a new
  worker, within ``max_queue_bytes``; under ``"block"`` the lane stops shipping at the
  bound, so the queue fills and the callbacks wait;
- the worker process (``_worker._host``): what it holds for the tracker, from its
  queue to its failed batches, within ``max_queue_bytes`` (it drops, counted).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import logging
import pickle
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from .._channel import ACK_COUNTS, Kind
from .._config import TrackerConfig
from .._errors import FlushError, FlushTimeoutError, TrackerClosedError
from .._layout import new_writer_id
from .._pipeline._barrier import wait
from .._pipeline._protocol import ForkHook, TrackerEngine
from .._pipeline._queue import CAPTURE_RAISED, BoundedQueue
from .._pipeline._statistics import Statistics
from .._sinks._base import ParameterValue, RunInfo
from ._shipper import Lane, Request
from ._spawn import EngineSpec, WorkerProcess, WorkerUnavailable, live, worker_process

__all__ = ["ProcessEngine"]

logger = logging.getLogger("asynctrack")

#: Seconds of a caller's timeout kept for the worker's answer to arrive, at most (a tenth
#: of a shorter timeout): the worker process is given the rest.
_ANSWER_MARGIN: Final = 0.5
#: Seconds past its deadline a close is waited for (the worker engine's ``_CLOSE_GRACE``).
_CLOSE_GRACE: Final = 5.0
#: Seconds: a later close whose deadline is not nearer than this by more leaves the worker's
#: deadline as it is (the exit's start_close and close name the same deadline).
_NEARER: Final = 0.05


def _worker_deadline(timeout: float | None) -> float | None:
    """The deadline (``time.monotonic()``) the worker process is given for a request whose
    caller gave ``timeout`` seconds; ``None``: none.

    The worker applies it itself (both processes read one monotonic clock, so the time
    the request spends on its way is not added) and answers with the outcome a thread
    engine gives (pending counts, what was spooled, what was lost). The margin inside the
    timeout lets that answer arrive in time.
    """
    if timeout is None:
        return None
    timeout = max(timeout, 0.0)
    return time.monotonic() + timeout - min(timeout / 10, _ANSWER_MARGIN)


def _answer_deadline(request: Request, timeout: float | None) -> float | None:
    """How long to wait for the worker's answer to a request whose caller gave ``timeout``.

    A flush: ``timeout`` and no longer. A close: up to ``_CLOSE_GRACE`` more, as a thread
    engine's close: its deadline is when the writes are cancelled, then it spools what
    is left (its answer says how many were spooled and how many lost), or, if a hook or
    sink blocks the worker's engine, it gives up that long after the deadline and counts
    what it held as lost. A healthy worker answers a close within ``timeout``. A worker
    that does not answer in time (stopped, blocked) gets the error built here instead;
    what it counts later reaches ``statistics()``.
    """
    if timeout is None or request.kind != Kind.CLOSE:
        return timeout
    return timeout + _CLOSE_GRACE


_REQUEST_OF: Final = {Kind.FLUSHED: Kind.FLUSH, Kind.CLOSED: Kind.CLOSE}
#: The worker's counters that only grow (the others are levels: what waits now).
_CUMULATIVE: Final = (
    "written",
    "dropped",
    "filtered",
    "lost",
    "spooled",
    "encode_errors",
    "write_errors",
    "batches",
    "bytes",
    "parameter_errors",
    "spans_exported",
    "spans_failed",
    "sampled_out",
    "mlflow_traces_logged",
    "mlflow_traces_failed",
    "sampled_out_failing",
)
#: The worker's counters its acknowledgements carry (``ACK_COUNTS``), in their order.
_ACKED: Final = ("written", "batches", "bytes")


class ProcessEngine:
    """One tracker's engine in process mode: queues here, writes in the worker process.

    Args:
        spec: the tracker's worker side (picklable).
        destination: where batches go, for messages.
        run_info: the run's names and events URI.
        config: the tracker configuration.
        fallback: builds a thread engine, from this spec under a writer id of its own,
            if the worker cannot host this tracker.
        worker: the worker process (this process's, by default).

    Raises:
        WorkerUnavailable: the worker process cannot be started here.
    """

    put: Callable[[Any], None]

    def __init__(
        self,
        *,
        spec: EngineSpec,
        destination: str,
        run_info: RunInfo,
        config: TrackerConfig,
        fallback: Callable[[EngineSpec], TrackerEngine],
        worker: WorkerProcess | None = None,
    ) -> None:
        self.spec = spec
        self._base_writer = spec.writer
        self.destination = destination
        self._run_info = run_info
        self.config = config
        self._fallback_factory = fallback
        self.on_fork: ForkHook | None = None
        self._worker = worker or worker_process()
        self._reset()
        self._worker.register(self)

    def _reset(self) -> None:
        """Fresh state: at construction, and in a forked child."""
        config = self.config
        self._queue: BoundedQueue[Request] = BoundedQueue(
            max_events=config.max_queue_events,
            max_bytes=config.max_queue_bytes,
            when_full=config.when_full,
            block_timeout=config.block_timeout,
            wake=self._worker.wake,
            flat=True,
        )
        self.put = self._queue.put
        self.lane = Lane(
            self._queue, max_retained=config.max_queue_bytes, hold_back=config.when_full == "block"
        )
        self.lane.on_fall_back = self.fall_back
        self._requests = itertools.count(1)
        self._close_request: Request | None = None  # the first close's, which a second one waits for
        self._close_deadline: float | None = None  # the worker's close deadline (monotonic)
        self._forward_lock = threading.Lock()  # after a fall back: one forwarder at a time
        self._worker_stats: dict[str, Any] = {}
        #: What the living worker's acknowledgements covered (``_ACKED``).
        self._acked_counts: tuple[int, ...] = (0,) * len(_ACKED)
        #: What the worker processes that died counted (``worker_died``), added to the
        #: living one's counters: a restart does not start the counts again.
        self._dead_stats: dict[str, int] = dict.fromkeys(_CUMULATIVE, 0)
        #: The ``_ACKED`` counts reported when the last worker died: never less after
        #: (they stay there until its successor's counts pass them, ``worker_died``).
        self._reported_at_death: dict[str, int] = dict.fromkeys(_ACKED, 0)
        #: Records taken from the queue before the fall back and not handed to the
        #: thread engine (written or dropped by the dead workers).
        self._taken_before_fallback = 0
        self._last_parameters: dict[str, ParameterValue] = {}
        self._last_error = ""
        #: The thread engine, once the worker could not host this tracker.
        self.fallback: TrackerEngine | None = None

    # -- TrackerEngine -----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._queue.closed

    @property
    def run_info(self) -> RunInfo:
        return self._run_info

    @property
    def last_parameters(self) -> dict[str, ParameterValue]:
        if self.fallback is not None:
            return self.fallback.last_parameters
        return dict(self._last_parameters)

    def count_dropped(self, n: int = 1, reason: str = CAPTURE_RAISED) -> None:
        self._queue.count_dropped(n, reason)

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
                await self._await(self._hasten_close(timeout), timeout, closing=True)
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
                self._wait(self._hasten_close(timeout), timeout, closing=True)
            return
        self._wait(request, timeout, closing=True)

    def start_close(self, timeout: float | None) -> None:
        """Begin closing (deadline ``timeout``) without waiting; ``close()`` then waits.

        The exit's ``close_all`` starts every close this way before waiting for any; a
        close under way is given that deadline if it is nearer (``_hasten_close``).
        """
        if self._begin_close(timeout) is None and self.fallback is None and self._close_request is not None:
            self._hasten_close(timeout)

    def wait_closed(self, timeout: float) -> None:
        """At exit, after ``start_close``: wait for the worker's answer up to ``timeout``
        and no longer (the exit's bound is its own: no close grace past it), and raise
        the close's error, if any."""
        if self.fallback is not None or self._close_request is None:
            self.close(timeout)
            return
        self._wait(self._close_request, timeout, closing=True, grace=False)

    def statistics(self) -> Statistics:
        taken, queued = self._queue.counts()
        dead = self._dead_stats
        if self.fallback is not None:
            stats = self.fallback.statistics()
            # The thread engine counts what it was given (what the dead worker had not
            # acknowledged, then what was queued here); the dead workers the rest.
            counts = {key: getattr(stats, key) + dead[key] for key in _CUMULATIVE}
            counts["dropped"] += self._queue.dropped
            counts["lost"] += self.lane.lost
            for key, floor in self._reported_at_death.items():
                counts[key] = max(counts[key], floor)
            return dataclasses.replace(
                stats,
                **counts,
                recorded=self._taken_before_fallback - dead["dropped"] + stats.recorded + queued,
                worker_mode="thread",
                worker_restarts=self._worker.restarts,
            )
        worker = self._worker_stats
        counts = {key: worker.get(key, 0) + dead[key] for key in _CUMULATIVE}
        # An event the worker had to drop (its memory bound reached while the destination
        # is down) was accepted here but is not recorded there: it counts as dropped, once.
        worker_dropped = counts.pop("dropped")
        counts["lost"] += self.lane.lost
        for key, floor in self._reported_at_death.items():
            counts[key] = max(counts[key], floor)
        return Statistics(
            **counts,
            recorded=taken + queued - worker_dropped,
            dropped=self._queue.dropped + worker_dropped,
            failed=worker.get("failed", 0),
            queue_depth=queued,
            pending_bytes=worker.get("pending_bytes", 0),  # the worker's; ours: retained_bytes
            worker_mode="process",
            worker_restarts=self._worker.restarts,
            retained_bytes=self.lane.retained_bytes,
        )

    # -- requests ------------------------------------------------------------------

    def _enqueue(self, kind: Kind, what: str, timeout: float | None) -> Request:
        if self._queue.closed:
            raise TrackerClosedError(what)
        return self._enqueue_unchecked(kind, timeout)

    def _enqueue_unchecked(self, kind: Kind, timeout: float | None = None) -> Request:
        request = Request(kind, next(self._requests), timeout, _worker_deadline(timeout))
        self._queue.put_control(request)  # it wakes the shipper
        return request

    def _begin_close(self, timeout: float | None) -> Request | None:
        if not self._queue.close():
            return None
        if self.fallback is not None:
            live.discard(self)  # the thread engine is closed at exit on its own
            return None
        # It stays in ``live`` until the worker answers: an exit or a signal that comes
        # during this close brings it to the exit's deadline and waits for it.
        self._close_deadline = None if timeout is None else time.monotonic() + timeout
        self._close_request = self._enqueue_unchecked(Kind.CLOSE, timeout)
        return self._close_request

    def _hasten_close(self, timeout: float | None) -> Request:
        """For a close under way: the request to wait for.

        A deadline ``timeout`` nearer than the worker's (an exit, a signal, a second
        close) goes to the worker as another CLOSE: its engine's close joins the first
        with that deadline (``Engine.close``). Both requests share one future: the
        first answer resolves the waits on either.
        """
        first = self._close_request
        assert first is not None
        if timeout is None or first.future.done():
            return first
        deadline = time.monotonic() + timeout
        if self._close_deadline is not None and deadline > self._close_deadline - _NEARER:
            return first
        self._close_deadline = deadline
        request = Request(Kind.CLOSE, next(self._requests), timeout, _worker_deadline(timeout))
        request.future = first.future
        self._queue.put_control(request)  # it wakes the shipper
        return request

    async def _await(self, request: Request, timeout: float | None, closing: bool = False) -> None:
        if not await wait(request, _answer_deadline(request, timeout)):
            error = self._timeout_error(request, timeout or 0.0)
            if error is None:
                return
            raise error
        self._outcome(request, closing)

    def _wait(
        self, request: Request, timeout: float | None, closing: bool = False, grace: bool = True
    ) -> None:
        try:
            request.future.result(_answer_deadline(request, timeout) if grace else timeout)
        except concurrent.futures.TimeoutError:
            error = self._timeout_error(request, timeout or 0.0)
            if error is None:
                return
            raise error from None
        self._outcome(request, closing)

    def _outcome(self, request: Request, closing: bool) -> None:
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

    def _timeout_error(self, request: Request, timeout: float) -> FlushTimeoutError | None:
        """The error for a wait that ran out, or ``None`` when nothing was pending."""
        queued = self._queue.queued_before(request) or 0
        unacked = sum(
            events for (kind, _), (_, events) in list(self.lane.unacked.items()) if kind == Kind.RECORDS
        )
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

    # -- the reader thread ---------------------------------------------------------------

    def answered(self, kind: Kind, number: int, payload: bytes) -> None:
        """The worker's answer to request ``number`` (FLUSHED or CLOSED)."""
        outcome: dict[str, Any] = pickle.loads(payload)
        request = self.lane.answered(_REQUEST_OF[kind], number)
        self._apply_statistics(outcome.get("statistics") or {})
        error = outcome.get("error")
        parameters = outcome.get("parameters")
        if parameters is not None and error is None:
            self._last_parameters = dict(parameters)
        if error is not None:
            self._last_error = str(error.get("reason", ""))
        if request is not None and not request.future.done():
            request.future.set_result(outcome)
        if kind == Kind.CLOSED:
            live.discard(self)
            self._worker.unregister(self)

    def _apply_statistics(self, stats: Mapping[str, Any]) -> None:
        if stats:
            self._worker_stats = dict(stats)
            if stats.get("last_error"):
                self._last_error = str(stats["last_error"])

    def acknowledged(self, payload: bytes) -> None:
        """The counts an ACK carried (see ``_ACKED``); the reader thread."""
        # ACKs may come out of order (two threads of the worker send them): the
        # counts only grow, the highest of each is the latest.
        self._acked_counts = tuple(map(max, self._acked_counts, ACK_COUNTS.unpack(payload)))

    def worker_died(self) -> None:
        """The worker process died (called before a new one starts, its reader done):
        what it counted stays counted.

        ``written``, ``batches`` and ``bytes`` are those of its last acknowledgement, not
        of its last report: what it wrote before that is never re-sent, and the events of
        the frames it had not acknowledged are re-sent and counted once, by the worker
        that writes them next (a batch the dead one wrote of them is in the files, not in
        the counts). The other counters are those it last reported.

        What ``statistics()`` reported of those three is kept as their floor: it never
        goes down, and the events the dead worker wrote of the frames re-sent count
        there until the successor writes them again (then the counts are exact again).
        """
        acked = dict(zip(_ACKED, self._acked_counts, strict=True))
        for key, floor in self._reported_at_death.items():
            reported = self._dead_stats[key] + self._worker_stats.get(key, 0)
            self._reported_at_death[key] = max(floor, reported)
        for key in _CUMULATIVE:
            self._dead_stats[key] += acked[key] if key in acked else self._worker_stats.get(key, 0)
        self._worker_stats = {}
        self._acked_counts = (0,) * len(_ACKED)

    def statistics_from_worker(self, payload: bytes) -> None:
        self._apply_statistics(pickle.loads(payload))

    def renew_writer(self, generation: int) -> None:
        """A new worker writes under a writer id of its own: the old one's batch keys
        (``<time>-<writer>-<batch number>``) must never be written again."""
        self.spec = self.spec.with_writer(f"{self._base_writer}-r{generation}")

    # -- falling back to a thread engine -----------------------------------------------------

    def fall_back(self, reason: str) -> None:
        """The worker cannot serve this tracker: a thread engine here takes over.

        Called with the channel lock held (by the shipper, or by a restart that gave
        up), so that no frame of this tracker is being built or sent meanwhile.
        """
        self.lane.fall_back_reason = None
        logger.warning(
            "asynctrack: the worker process cannot host this tracker (%s); using a worker "
            "thread in this process instead",
            reason,
        )
        try:
            # Under a writer id of its own: the first worker's batch keys differ from its
            # only by their second (<HHMMSS>-<writer>-<batch>), and both count from 0.
            engine = self._fallback_factory(self.spec.with_writer(f"{self._base_writer}-thread"))
        except Exception as exc:
            logger.error("asynctrack: cannot start a worker thread either: %s", exc)
            return
        with self._forward_lock:
            # What was shipped and not acknowledged, then what is queued, in order.
            records, requests = self.lane.take_back()
            self._taken_before_fallback = self._queue.counts()[0] - len(records)
            for record in records:
                engine.put(record)
            self.fallback = engine
            # The handler keeps calling put(): the shipper forwards what it queues from now on.
            self.lane.forward = self.forward
        for request in requests:
            if not request.future.done():
                request.future.set_result({"fallback": True})

    def forward(self) -> None:
        """After a fall back: hand what is queued here to the thread engine, in order
        (the shipper does so every round; a flush or close does it first)."""
        with self._forward_lock:
            engine = self.fallback
            if engine is None:
                return
            put = engine.put
            for item in self._queue.drain():
                if isinstance(item, Request):
                    if not item.future.done():
                        item.future.set_result({"fallback": True})
                else:
                    put(item)

    # -- fork ------------------------------------------------------------------------------

    def after_fork_in_child(self) -> None:
        """A forked child: an empty queue of its own, a new writer id, a new worker."""
        closed = self._queue.closed
        self._worker = worker_process()
        self._reset()
        self.spec = self.spec.with_writer(new_writer_id())
        self._base_writer = self.spec.writer
        if closed:
            self._queue.close()
            live.discard(self)  # the parent's close, not the child's
        else:
            try:
                self._worker.register(self)
            except WorkerUnavailable as exc:
                # No worker process in this child: a thread engine takes the tracker, and
                # records go straight to it (no shipper runs here to forward them).
                self.fall_back(str(exc))
                # No worker's list holds this client: the worker process's fork hook
                # renews it from this one in a grandchild (else its events are lost there).
                self._worker.fallen.add(self)
                if self.fallback is not None:
                    self.put = self.fallback.put
        on_fork = self.on_fork() if self.on_fork is not None else None
        if on_fork is not None:
            on_fork(self)  # after the engine is settled: the handler takes its put
