"""``Engine``: the facade over the engine's parts, and what callers see of it.

It knows nothing of LangChain or AWS. Callers ``put()`` opaque records; a
``translate`` function (the adapter's) turns each into a JSON line on the worker
thread (or into an event dict, which the engine's ``Encoder`` encodes); lines are
batched by count, bytes and age into files that a ``Sink`` stores.

The parts, one concept each::

    _queue       the bounded queue: drop/block policy, exact recorded count
    _barrier     flush markers and the waits on them
    _batcher     the open batch: count, bytes, age; sealing and numbering
    _delivery    writes, retries with backoff, the concurrency limit, spool use
    _spool       batches kept on local disk, claimed atomically
    _loop        the worker thread and loop; the lifecycle state machine
    _statistics  the Statistics snapshot, counters, rate-limited reporting
    _protocol    TrackerEngine, what a tracker needs of an engine (this one or the
                 worker process's client)
    ../_exit     atexit, SIGTERM/SIGINT, fork

This module wires them together and holds the caller-side half: flush and close
waits, their errors, the statistics snapshot, and the run-parameters write.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import orjson

from .._config import TrackerConfig
from .._errors import DeadlockError, FlushTimeoutError, TrackerClosedError
from .._exit import forget, install_sigterm_handler, register
from .._export._protocol import LineExporter
from .._layout import Layout, new_writer_id
from .._sinks._base import ParametersSink, ParameterValue, RunInfo, RunSummary, RunSummarySink, Sink
from ._barrier import Barrier, Marker, Seal, wait, wait_blocking
from ._batcher import Batcher
from ._delivery import Delivery
from ._loop import State, Translate, Worker, chunked
from ._protocol import ForkHook
from ._queue import CAPTURE_RAISED, BoundedQueue
from ._spool import Spool
from ._statistics import Counters, Reporter, Statistics

__all__ = ["Engine", "State", "Statistics", "install_sigterm_handler"]

logger = logging.getLogger("asynctrack")

# Seconds a caller waits past the close deadline for the worker to finish on its own
# (cancel writes, spool, close sinks: milliseconds when healthy) before it reports the
# worker stuck and counts what it holds as lost.
_CLOSE_GRACE: Final = 5.0


class Engine:
    """Buffers records and writes them in batches from a worker thread.

    ``put(record)`` (an attribute: the buffer's own method, no extra frame on the hot
    path) appends a record; it never blocks unless ``when_full="block"`` and never
    raises.

    Args:
        sink: where batches go.
        layout: the keys of this tracker's files.
        translate: turns a record into ``(seq, JSON line)``, or an event dict for
            the engine to encode, or ``None`` to skip it (counted as filtered);
            called on the worker thread only, so it may keep state.
        parameters: returns the run's parameters; worker thread only.
        parameter_sinks: receive the parameters at every flush and at close.
        config: buffering and encoding settings.
        run_info: the run's names and events URI (derived from ``layout`` by default).
        spool: where unsent batches are kept (remote destinations).
        exporters: get every line written, and flush and close with the engine.
        start_exporters: starts the exporters again in a forked child (whose copies of
            the parent's are dead: their threads did not survive the fork).
        placeholders: the adapter's count of events written with a placeholder.
        sampled_out: the adapter's count of events held and dropped by sampling.
        queue_events: the count bound of the queue (``max_queue_events`` by default).
        queue_bytes: the byte bound of the queue, in captured bytes (``record[BODY]`` and
            a streamed token, ``record[EXTRA]``: see ``_events._schema``): ``None``
            (default) for none, and then the records may be any objects.
        records_in: how many records a queue item stands for, if items are packed
            (the worker process's frames; see ``BoundedQueue``).
        sampled_out_failing: the adapter's count of those events whose trace failed later.
        flat: records are the handler's (``_events._schema.Record``): the queue holds
            them flat, nothing the cyclic collector tracks (see ``BoundedQueue``).
    """

    put: Callable[[Any], None]
    put_many: Callable[[list[Any]], None]

    def __init__(
        self,
        *,
        sink: Sink,
        layout: Layout,
        translate: Translate,
        parameters: Callable[[], Mapping[str, ParameterValue]] | None = None,
        parameter_sinks: Sequence[ParametersSink] = (),
        config: TrackerConfig | None = None,
        run_info: RunInfo | None = None,
        spool: Spool | None = None,
        placeholders: Callable[[], int] | None = None,
        exporters: Sequence[LineExporter] = (),
        start_exporters: Callable[[], Sequence[LineExporter]] | None = None,
        queue_events: int | None = None,
        queue_bytes: int | None = None,
        sampled_out: Callable[[], int] | None = None,
        records_in: Callable[[Any], int] | None = None,
        sampled_out_failing: Callable[[], int] | None = None,
        flat: bool = False,
    ) -> None:
        self.config = config or TrackerConfig()
        self._records_in = records_in
        self._flat = flat
        self.exporters = tuple(exporters)
        self._start_exporters = start_exporters
        self._queue_events = self.config.max_queue_events if queue_events is None else queue_events
        self._queue_bytes = queue_bytes
        self.sink = sink
        self.layout = layout
        self._translate = translate
        self._parameters = parameters
        # Events the adapter wrote with a placeholder for a bad value (its own count).
        self._placeholders = placeholders
        self._sampled_out = sampled_out
        self._sampled_out_failing = sampled_out_failing
        self._parameter_sinks = tuple(parameter_sinks)
        self.spool = spool
        #: Called (weakly) in a forked child, after the engine reset itself.
        self.on_fork: ForkHook | None = None
        self.run_info = run_info or RunInfo(
            experiment=layout.experiment,
            run=layout.run,
            events_uri=f"{sink.destination.rstrip('/')}/{layout.run_prefix}/",
        )
        self._build()
        self._claim_spool()
        register(self)
        self._worker.start()

    def _claim_spool(self) -> None:
        # On the caller's thread, before the worker starts: a directory listing and a
        # rename per batch. Then the first flush knows what it has to wait for.
        self._delivery.recover(self._batcher.reserve)

    def _build(self) -> None:
        """Fresh parts: at construction, and in a forked child."""
        self._counters = Counters()
        self._reporter = Reporter()
        self._barrier = Barrier()
        self._batcher = Batcher(self.config, self.layout, self._counters)
        self._delivery = Delivery(
            sink=self.sink,
            spool=self.spool,
            max_concurrent=self.config.max_concurrent_writes,
            counters=self._counters,
            reporter=self._reporter,
            settled=self._check_markers,
        )
        config = self.config
        # The captured bytes waiting here are bounded apart from the encoded bytes the
        # worker holds (it stops taking records at max_queue_bytes, and this queue then
        # fills up to its own bounds).
        self._buffer: BoundedQueue[Marker] = BoundedQueue(
            max_events=self._queue_events,
            max_bytes=self._queue_bytes,
            when_full=config.when_full,
            block_timeout=config.block_timeout,
            wake=self._wake,
            records_in=self._records_in,
            flat=self._flat,
        )
        self._worker = Worker(
            config=self.config,
            sink=self.sink,
            parameter_sinks=self._parameter_sinks,
            buffer=self._buffer,
            barrier=self._barrier,
            batcher=self._batcher,
            delivery=self._delivery,
            counters=self._counters,
            reporter=self._reporter,
            translate=self._translate,
            write_parameters=self._write_parameters,
            on_closed=self._on_closed,
            exporters=self.exporters,
            # Packed records are the worker process's: no application thread there.
            hand_over=self._records_in is None,
        )
        self.put = self._buffer.put
        self.put_many = self._buffer.put_many
        self._close_lock = threading.RLock()
        self._gave_up = False  # a close gave up on a stuck worker: what it holds counts as lost
        self._parameters_written: dict[str, ParameterValue] | None = None

    def _wake(self) -> None:
        self._worker.wake()

    def _check_markers(self) -> None:
        self._worker.settled()

    def _on_closed(self) -> None:
        forget(self)

    def set_adapter(
        self,
        translate: Translate,
        parameters: Callable[[], Mapping[str, ParameterValue]] | None,
        placeholders: Callable[[], int] | None = None,
        sampled_out: Callable[[], int] | None = None,
        sampled_out_failing: Callable[[], int] | None = None,
    ) -> None:
        """Replace the adapter's callbacks (after fork, before the worker runs)."""
        self._translate = translate
        self._parameters = parameters
        self._placeholders = placeholders
        self._sampled_out = sampled_out
        self._sampled_out_failing = sampled_out_failing
        self._worker.translate = chunked(translate)

    @property
    def state(self) -> State:
        """Where the engine is in its life: created, started, closing, closed."""
        return self._worker.state

    @property
    def closed(self) -> bool:
        """Whether ``close()`` or ``aclose()`` has begun."""
        return self._worker.state in (State.CLOSING, State.CLOSED)

    @property
    def last_error(self) -> str:
        """The last failure's message (empty before one)."""
        return self._reporter.last_error

    @property
    def last_parameters(self) -> dict[str, ParameterValue]:
        """The run parameters the last successful flush wrote (empty before one)."""
        return dict(self._parameters_written or {})

    def count_dropped(self, n: int = 1, reason: str = CAPTURE_RAISED) -> None:
        """Count events that could not even be put (thread-safe), and why."""
        self._buffer.count_dropped(n, reason)

    def seal_soon(self) -> None:
        """Seal the open batch once the records queued now are taken, and write it, without
        waiting for ``batch_interval`` (thread-safe; nothing to wait on). The worker process
        calls it for an application that ships no more until what it shipped is durable."""
        if not self.closed:
            self._buffer.put_control(Seal())

    # -- flush -------------------------------------------------------------------------------

    def _flush_marker(self, what: str, timeout: float | None) -> Marker | None:
        """A marker in the buffer, or ``None`` when there is nothing to wait for."""
        if self.closed:
            raise TrackerClosedError(what)
        if self._idle():
            return None
        # The deadline tells the exporters how long the caller waits (they never hold it longer).
        marker = Marker(deadline=None if timeout is None else time.monotonic() + max(timeout, 0.0))
        self._buffer.put_control(marker)
        return marker

    def _idle(self) -> bool:
        """Nothing recorded since the last flush that succeeded, nothing being written.

        Then a flush returns at once, whatever its timeout (``flush(timeout=0)`` on an
        idle tracker returns). Batches claimed from the spool are ``failed`` until
        written: a flush waits for them.
        """
        taken, queued = self._buffer.counts()
        delivery = self._delivery
        return (
            queued == 0
            and taken == self._barrier.durable_upto
            and self._batcher.open_events == 0
            and not delivery.inflight
            and not delivery.failed
        )

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every record put before this call is durably written.

        Args:
            timeout: seconds to wait at most; ``None`` waits as long as it takes.

        Raises:
            FlushTimeoutError: the timeout passed first; nothing was discarded.
            FlushError: a write failed; the batches are kept and retried.
            TrackerClosedError: the tracker is closed.
        """
        marker = self._flush_marker("flush()", timeout)
        if marker is None:
            return
        if not await wait(marker, timeout):
            raise self._timeout_error(marker, timeout or 0.0)
        _raise_outcome(marker)

    def flush_blocking(self, timeout: float | None = None) -> None:
        """``flush()`` for synchronous code, on any thread, in or out of an event loop.

        Raises:
            DeadlockError: called from the worker thread (a hook or sink), where
                waiting for the worker would never end.
            FlushTimeoutError, FlushError, TrackerClosedError: as ``flush()``.
        """
        if threading.current_thread() is self._worker.thread:
            raise DeadlockError("flush_blocking()")
        marker = self._flush_marker("flush_blocking()", timeout)
        if marker is None:
            return
        if not wait_blocking(marker, timeout):
            raise self._timeout_error(marker, timeout or 0.0)
        _raise_outcome(marker)

    def _timeout_error(self, marker: Marker, timeout: float) -> FlushTimeoutError:
        queued = self._buffer.queued_before(marker)
        if queued is None and marker.upto >= 0:  # the worker reached it
            queued = 0
            pending, failed = self._delivery.pending(marker.upto)
        else:
            queued = queued or 0
            unsent, failed = self._delivery.pending(None)
            pending = queued + self._batcher.open_events + unsent
        return FlushTimeoutError(
            timeout=timeout,
            pending=pending,
            queued=queued,
            failed_batches=failed,
            reason=self._reporter.last_error,
        )

    # -- close -------------------------------------------------------------------------------

    def _begin_close(self, timeout: float | None) -> Marker | None:
        """Stop accepting records and send the close marker; ``None`` if already closing."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        marker = Marker(closing=True, timeout=timeout, deadline=deadline)
        # Re-entrant: the SIGTERM handler may close while this thread is in here.
        with self._close_lock:
            if self._buffer.closed:
                return None
            self._worker.close_marker = marker  # first: whoever finds the buffer closed finds it
            self._buffer.close()
        self._send_close(marker)
        return marker

    def start_close(self, timeout: float | None) -> None:
        """Begin closing (deadline ``timeout``) without waiting; ``close()`` then waits.

        The exit hook starts every engine's close this way before waiting for any.
        """
        if self._begin_close(timeout) is None:
            self._join_close(timeout)

    def _send_close(self, marker: Marker) -> None:
        """Put the close marker in the buffer (if no one has yet) with its deadline.

        Also called by a second close, in case a signal interrupted the first between
        closing the buffer and sending its marker. Sent twice, the worker closes at the
        first and ignores the second.
        """
        self._worker.advance(State.CLOSING)
        if marker.deadline is not None:
            self._worker.set_deadline(marker.deadline)
        if not marker.sent:
            marker.sent = True
            self._buffer.put_control(marker)

    def _join_close(self, timeout: float | None) -> tuple[Marker | None, float | None]:
        """For a close already under way: its marker, and how long to wait for it.

        A later close may only bring the deadline nearer (at exit, on a signal).
        """
        marker = self._worker.close_marker
        if marker is not None and self._worker.state is not State.CLOSED:
            self._send_close(marker)
        if timeout is not None:
            self._worker.set_deadline(time.monotonic() + max(timeout, 0.0))
        return marker, None if timeout is None else timeout + _CLOSE_GRACE

    async def aclose(self, timeout: float | None = 30.0) -> None:
        """Flush, then stop the worker. Idempotent.

        The close goes on in the worker if this call is cancelled: the events are
        still written (or spooled) by the deadline ``timeout``. A second call waits for
        the first's close to end (and raises its error if no one has yet). Records put
        after close begins are dropped and counted (``dropped``).

        Raises:
            FlushError: some events could not be written before the deadline; the
                message says how many were spooled and how many are ``lost``.
        """
        marker = self._begin_close(timeout)
        if marker is None:
            joined, wait_for = self._join_close(timeout)
            if joined is not None:
                if not await wait(joined, wait_for):
                    raise self._give_up(timeout)
                _raise_outcome(joined)
            return
        if not await wait(marker, None if timeout is None else timeout + _CLOSE_GRACE):
            raise self._give_up(timeout)
        _raise_outcome(marker)

    def close(self, timeout: float | None = 30.0) -> None:
        """``aclose()`` for synchronous code. Idempotent; interruptible (the close goes on).

        Raises:
            DeadlockError: called from the worker thread.
            FlushError: as ``aclose()``.
        """
        if threading.current_thread() is self._worker.thread:
            raise DeadlockError("close()")
        marker = self._begin_close(timeout)
        if marker is None:
            joined, wait_for = self._join_close(timeout)
            if joined is not None:
                if not wait_blocking(joined, wait_for):
                    raise self._give_up(timeout)
                _raise_outcome(joined)
            return
        if not wait_blocking(marker, None if timeout is None else timeout + _CLOSE_GRACE):
            raise self._give_up(timeout)
        _raise_outcome(marker)

    def _give_up(self, timeout: float | None) -> FlushTimeoutError:
        """The worker is stuck past the deadline and grace (a hook or sink blocking its
        thread): count what it holds as lost, say so, and return the error to raise."""
        self._gave_up = True
        held = self._held()
        message = (
            f"the worker did not stop within {_CLOSE_GRACE:g} s of the close deadline; "
            f"{held} event(s) neither written nor spooled are counted as lost"
        )
        logger.error("asynctrack: %s", message)
        return FlushTimeoutError(timeout=timeout or 0.0, pending=held, reason=message)

    def _held(self) -> int:
        """Events a worker given up on still holds: lost, until it writes, spools or counts
        them after all (then they leave this count as they enter theirs: none is counted
        twice). None once the worker has ended: its own counts then say where each went."""
        if not self._gave_up or self._worker.done.is_set():
            return 0
        taken, queued = self._buffer.counts()
        c = self._counters
        return max(taken + queued - c.written - c.filtered - c.spooled - c.lost, 0)

    # -- statistics ------------------------------------------------------------------------------

    def statistics(self) -> Statistics:
        """A snapshot of the counters; ``recorded`` is exact (read at one instant)."""
        taken, queued = self._buffer.counts()
        c = self._counters
        exported = failed = traces_logged = traces_failed = 0
        for exporter in self.exporters:
            counts = exporter.statistics()
            exported += counts.get("spans_exported", 0)
            failed += counts.get("spans_failed", 0)
            traces_logged += counts.get("mlflow_traces_logged", 0)
            traces_failed += counts.get("mlflow_traces_failed", 0)
        return Statistics(
            recorded=taken + queued,
            written=c.written,
            dropped=self._buffer.dropped,
            filtered=c.filtered,
            failed=sum(b.events for b in list(self._delivery.failed.values())),
            lost=c.lost + self._held(),
            spooled=c.spooled,
            encode_errors=c.encode_errors + (self._placeholders() if self._placeholders else 0),
            write_errors=c.write_errors,
            batches=c.batches,
            bytes=c.bytes,
            queue_depth=queued,
            pending_bytes=c.pending_bytes,
            parameter_errors=c.parameter_errors,
            worker_mode="thread",
            worker_restarts=0,
            retained_bytes=0,
            spans_exported=exported,
            spans_failed=failed,
            sampled_out=self._sampled_out() if self._sampled_out else 0,
            mlflow_traces_logged=traces_logged,
            mlflow_traces_failed=traces_failed,
            sampled_out_failing=self._sampled_out_failing() if self._sampled_out_failing else 0,
        )

    # -- run parameters (worker thread) ------------------------------------------------------------

    async def _write_parameters(self) -> str | None:
        """Hand the run's parameters to the local document and the parameter sinks."""
        if self._parameters is None:
            return None
        errors: list[str] = []
        try:
            produced = self._parameters()
            parameters = dict(produced)
            if parameters == self._parameters_written:
                return None  # nothing new since the last flush: no request at all
            document = orjson.dumps(
                {
                    "experiment": self.layout.experiment,
                    "run": self.layout.run,
                    "writer": self.layout.writer,
                    "events_uri": self.run_info.events_uri,
                    "parameters": parameters,
                },
                option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
            )
            await self.sink.write_document(self.layout.params_key, document)
        except Exception as exc:
            self._counters.parameter_errors += 1
            errors.append(f"run parameters not written to {self.sink.destination}: {exc}")
            self._reporter.error("parameters", errors[-1], exc)
            return "; ".join(errors)
        for sink in self._parameter_sinks:
            try:
                if isinstance(sink, RunSummarySink):  # parameters and metrics apart (MLflow)
                    summary = (
                        produced
                        if isinstance(produced, RunSummary)
                        else RunSummary(hyperparameters=parameters, metrics={}, flat=parameters)
                    )
                    await sink.write_summary(self.run_info, summary)
                else:
                    await sink.write_parameters(self.run_info, parameters)
            except Exception as exc:
                self._counters.parameter_errors += 1
                errors.append(f"run parameters not recorded by {type(sink).__name__}: {exc}")
                self._reporter.error("parameters", errors[-1], exc)
        if not errors:
            self._parameters_written = parameters
        return "; ".join(errors) or None

    # -- fork ----------------------------------------------------------------------------------------

    def after_fork_in_child(self) -> None:
        """A forked child gets an empty buffer and its own worker; the parent's
        buffered events stay the parent's to write."""
        closed = self.closed
        self.layout = dataclasses.replace(self.layout, writer=new_writer_id())
        # The exporters' threads did not survive the fork, and what they hold (runs open,
        # spans queued) is the parent's to send: the child starts exporters of its own,
        # which see its runs only, as `asynctrack export` of its writer's files would.
        self.exporters = ()
        if self._start_exporters is not None and not closed:
            self.exporters = tuple(self._start_exporters())
        self._build()
        if closed:
            # Closing or closed in the parent: nothing of it runs here.
            self._buffer.close()
            self._worker.advance(State.CLOSING)
            self._worker.advance(State.CLOSED)
            forget(self)
            return
        on_fork = self.on_fork() if self.on_fork is not None else None
        if on_fork is not None:
            on_fork(self)  # the adapter renews its own per-process state
        self._claim_spool()
        self._worker.start()


def _raise_outcome(marker: Marker) -> None:
    """Raise the marker's error, once: a close's error goes to the first caller who
    waits for it (its own, or the exit hook after an interrupted or background close);
    later closes return quietly."""
    error = marker.future.exception(0)
    if error is not None and not marker.reported:
        marker.reported = True
        raise error
