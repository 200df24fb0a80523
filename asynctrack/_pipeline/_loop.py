"""The worker: one thread, one private event loop, and the engine's lifecycle as one state machine.

    CREATED ──► STARTED ──► CLOSING ──► CLOSED
        └───────────────────►┘

- CREATED: the engine exists; its worker thread is starting.
- STARTED: the worker runs: it drains the buffer, batches, writes, retries.
- CLOSING: ``close()`` began. No record is accepted any more; the close marker
  travels behind the last ones. The worker writes everything, resolves the
  marker, closes the sinks. The close's deadline is the worker's own (an
  ``asyncio.timeout`` around its loop, rescheduled from any thread), so a close finishes in time even when the
  caller who asked for it was cancelled, interrupted or killed by a signal, and
  even when the destination never answers: at the deadline the writes are
  cancelled, what is unsent is spooled (or counted lost) and the close marker
  says which.
- CLOSED: the worker thread has ended. Nothing more is written.

Why asyncio's ``Timeout`` and not an anyio cancel scope: anyio loads its asyncio
backend on first use, and on a worker that first uses it during interpreter exit
that import runs ``exec`` (dataclasses), which makes CPython forget that the
process is ending on an uncaught ``KeyboardInterrupt``: Ctrl-C then exits with
status 1 instead of dying of SIGINT (tests/test_process.py checks it). asyncio's
``Timeout.reschedule`` does the same job with nothing to load.

Threads and time: the worker sleeps until something is due (the open batch's
``batch_interval``, a retry of failed batches, the close deadline) or until the queue
wakes it: on the first record after it slept with nothing queued, on ``WAKE_AT``
records waiting, on a flush or close marker, or when a write settles; with exporters,
also ``_EXPORT_LAG`` after it went to sleep with a batch open, so that a run's span
leaves soon after the run ends. An idle engine wakes not at all. It hands the GIL back
to the callers after each millisecond of encoding (``_BUDGET``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import logging
import math
import operator
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol, runtime_checkable

from .._config import TrackerConfig
from .._errors import FlushError, FlushTimeoutError
from .._events._encode import Encoder, TranslateFailed, placeholder
from .._export._protocol import LineExporter, RecordExporter
from .._sinks._base import Batch, ParametersSink, Sink
from ._barrier import Barrier, Marker, Seal
from ._batcher import Batcher
from ._delivery import Delivery
from ._queue import BoundedQueue
from ._statistics import Counters, Reporter

__all__ = ["ChunkTranslate", "Finishing", "State", "Translate", "Worker"]

logger = logging.getLogger("asynctrack")

_SEQ: Final = operator.itemgetter(0)  # of a translated (seq, line[, kind, run id])
_LINE: Final = operator.itemgetter(1)
_KIND: Final = operator.itemgetter(2)
_RUN: Final = operator.itemgetter(3)
_CHUNK: Final = 64  # records pre-checked together, and between checks of the time budget
# The worker holds the GIL while it encodes. CPython hands the GIL to a waiting
# thread only every switch interval (5 ms), and an asyncio.sleep(0) does not help
# (epoll_wait(0) drops and retakes it at once): the caller's event loop would lag
# by 5-50 ms during a burst (measured). So after each _BUDGET of work the worker
# really sleeps for _PAUSE, which lets a waiting thread take the GIL at once. Not in
# the worker process, which has no application thread to hand it to (its reader and
# exporter threads take it at the switch interval): there a _PAUSE sleeps ~120 µs of
# wall time (timer slack and the wake-up, measured), ~12% of a burst's drain.
_BUDGET: Final = 0.001
_PAUSE: Final = 0.00005
# Of what is left of a flush caller's timeout, the share the exporters may not use (between
# 50 ms and 1 s): the marker still has to settle and, from the worker process, be answered.
_EXPORT_MARGIN: Final = 0.1
# With exporters, records wait at most this long to be read while a batch is open (else
# up to its batch_interval, 5 s): the exporters see a run end within about a second. One
# wake-up a second, only while a batch is open.
_EXPORT_LAG: Final = 1.0
_SINK_CLOSE: Final = 2.0  # seconds each sink's aclose() may take at the end
_SINK_CLOSE_LATE: Final = 0.25  # ... once the close deadline has passed (measured: ~1 s on hung S3)


#: A translated line: ``(seq, line)``, or ``(seq, line, kind, run id)`` (the line's own).
Line = tuple[int, bytes] | tuple[int, bytes, str, Any]
#: What a translator makes of a record (see ``Translate``).
Translated = Line | list[Line] | dict[str, Any] | None


class Translate(Protocol):
    """Turns a record into ``(seq, JSON line)`` or ``(seq, JSON line, kind, run id)`` (the
    kind and run id written in the line: exporters that take them are told them), an
    event dict for the engine to encode, ``None`` (dropped by the ``redact`` hook,
    counted as filtered), or a list of such lines to add now, maybe none (sampling holds
    lines back, and writes them later). Worker thread only, so it may keep state."""

    def __call__(self, record: Any, /) -> Translated: ...


@runtime_checkable
class ChunkTranslate(Translate, Protocol):
    """A translator that takes a whole chunk at once (the LangChain adapter's).

    ``prepare`` pre-checks the chunk's bodies together; ``many`` returns, per record,
    what ``__call__`` would, or the exception that stopped it (counted, written as a
    placeholder).
    """

    def prepare(self, records: Sequence[Any], /) -> None: ...

    def many(self, records: Sequence[Any], /) -> Sequence[Translated | Exception]: ...


class _PerRecord:
    """A plain ``Translate`` as a ``ChunkTranslate``: one call per record."""

    def __init__(self, translate: Translate) -> None:
        self._translate = translate

    def __call__(self, record: Any, /) -> Translated:
        return self._translate(record)

    def prepare(self, records: Sequence[Any], /) -> None:
        return None

    def many(self, records: Sequence[Any], /) -> list[Translated | Exception]:
        out: list[Translated | Exception] = []
        for record in records:
            try:
                out.append(self._translate(record))
            except Exception as exc:
                out.append(exc)
        return out


@runtime_checkable
class Finishing(Protocol):
    """A translator that holds records back (sampling): told when the worker stops, so
    that it counts what it still holds (it writes nothing more)."""

    def finish(self) -> None: ...


def chunked(translate: Translate) -> ChunkTranslate:
    """``translate`` as a ``ChunkTranslate`` (itself if it is one)."""
    return translate if isinstance(translate, ChunkTranslate) else _PerRecord(translate)


class State(enum.Enum):
    """Where an engine is in its life (see the module docstring)."""

    CREATED = "created"
    STARTED = "started"
    CLOSING = "closing"
    CLOSED = "closed"


_NEXT: Final = {
    State.CREATED: (State.STARTED, State.CLOSING),
    State.STARTED: (State.CLOSING,),
    State.CLOSING: (State.CLOSED,),
    State.CLOSED: (),
}


class _DaemonThreadExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs each job on a fresh daemon thread.

    asyncio (aiohttp's DNS look-ups, for instance) uses the loop's default executor;
    a ``ThreadPoolExecutor`` refuses work once the interpreter starts shutting
    down, which is exactly when the exit flush needs it.
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the awaiting coroutine
                future.set_exception(exc)

        threading.Thread(target=run, name="asynctrack-executor", daemon=True).start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None


class Worker:
    """The worker thread and its loop: drain, batch, deliver, settle markers, close.

    Args:
        config: buffering and encoding settings.
        sink: where batches go (closed at the end).
        parameter_sinks: closed at the end too.
        buffer, barrier, batcher, delivery, counters, reporter: the engine's parts.
        translate: the adapter's record -> line function (worker thread only).
        write_parameters: writes the run parameters; ``None`` or the error text.
        on_closed: called on the worker thread once the state is CLOSED.
        exporters: get every line added to a batch; flushed with each flush marker
            and closed at the end.
        hand_over: after each ``_BUDGET`` of encoding, sleep ``_PAUSE`` so that a
            waiting application thread takes the GIL (not in the worker process).
    """

    def __init__(
        self,
        *,
        config: TrackerConfig,
        sink: Sink,
        parameter_sinks: Sequence[ParametersSink],
        buffer: BoundedQueue[Marker],
        barrier: Barrier,
        batcher: Batcher,
        delivery: Delivery,
        counters: Counters,
        reporter: Reporter,
        translate: Translate,
        write_parameters: Callable[[], Awaitable[str | None]],
        on_closed: Callable[[], None],
        exporters: Sequence[LineExporter] = (),
        hand_over: bool = True,
    ) -> None:
        self._config = config
        self._hand_over = hand_over
        self._sink = sink
        self._parameter_sinks = tuple(parameter_sinks)
        self._buffer = buffer
        self._barrier = barrier
        self._batcher = batcher
        self._delivery = delivery
        self._counters = counters
        self._reporter = reporter
        self.translate: ChunkTranslate = chunked(translate)
        self._write_parameters = write_parameters
        self._on_closed = on_closed
        self._exporters = tuple(exporters)
        # Each exporter's records() if it takes the lines' kinds and run ids (RecordExporter).
        self._records = tuple(e.records if isinstance(e, RecordExporter) else None for e in self._exporters)
        self._encoder = Encoder(config)
        self.state = State.CREATED
        self._lock = threading.Lock()  # state, loop, timeout and deadline, together
        self.done = threading.Event()
        self.thread: threading.Thread | None = None
        self.close_marker: Marker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._timeout: asyncio.Timeout | None = None
        self._deadline = math.inf  # time.monotonic() by which the worker stops (the close's)
        self._stopping = False
        self._close_settled: asyncio.Event | None = None
        self._close_error: FlushError | None = None
        self._late_markers: list[Marker] = []

    # -- any thread --------------------------------------------------------------------

    def advance(self, to: State) -> bool:
        """Move to state ``to`` if that is the next step from here; whether it moved."""
        with self._lock:
            if to not in _NEXT[self.state]:
                return False
            self.state = to
            return True

    def start(self) -> None:
        thread = threading.Thread(target=self._thread_main, name="asynctrack-worker", daemon=True)
        self.thread = thread
        self._buffer.consumer = thread
        thread.start()

    def wake(self) -> None:
        """Ask the worker to drain now (thread-safe; a no-op before its loop runs)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(wake.set)

    def set_deadline(self, deadline: float) -> None:
        """Stop by ``deadline`` (``time.monotonic()``) at the latest; only ever moves earlier."""
        with self._lock:
            if deadline >= self._deadline:
                return
            self._deadline = deadline
            loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing: it stops anyway
                loop.call_soon_threadsafe(self._apply_deadline)

    def _apply_deadline(self) -> None:
        with self._lock:
            timeout, deadline = self._timeout, self._deadline
        if timeout is not None and not timeout.expired() and not math.isinf(deadline):
            when = timeout.when()
            if when is None or deadline < when:
                # The loop's clock, loop.time(), is time.monotonic().
                timeout.reschedule(deadline)

    # -- the thread ----------------------------------------------------------------------

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        loop.set_default_executor(_DaemonThreadExecutor())
        try:
            loop.run_until_complete(self._main(loop))
        except BaseException:  # pragma: no cover - the worker must never die silently
            logger.exception("asynctrack worker crashed; events are no longer written")
            self._buffer.close()
            self.advance(State.CLOSING)
            self._fail_markers(0, "the worker crashed")
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self.advance(State.CLOSED)
            self.done.set()
            self._on_closed()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        self._wake = asyncio.Event()
        timeout = asyncio.timeout(None)
        try:
            async with timeout:
                with self._lock:
                    self._loop = loop
                    self._timeout = timeout
                self._apply_deadline()  # a close may have begun before the loop ran
                self._delivery.begin()
                self.advance(State.STARTED)
                await self._run()
        except TimeoutError:
            if not timeout.expired():
                raise
        finally:
            with self._lock:  # finished: a deadline set from now on is _finish's to read
                self._timeout = None
        await self._finish(timed_out=timeout.expired())

    async def _run(self) -> None:
        """Drain, batch and deliver until the close marker is settled."""
        buffer, batcher, delivery, counters = self._buffer, self._batcher, self._delivery, self._counters
        wake = self._wake
        assert wake is not None
        max_bytes = self._config.max_queue_bytes
        while True:
            held = counters.pending_bytes >= max_bytes  # records wait in the queue meanwhile
            if held or not len(buffer):
                # Nothing to take (or not now): sleep until something is due. With
                # nothing open either, the next record wakes us (an idle engine does
                # not wake at all); else a backlog of WAKE_AT does, a flush or close
                # marker, or a settled write (which may lift the memory bound).
                timeout = self._next_timeout()
                if held or batcher.open_events or buffer.sleeping():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(timeout):
                            await wake.wait()
            wake.clear()
            closing = await self._drain()
            if closing is not None:
                await self._close(closing)
                return
            buffer.busy()
            now = time.monotonic()
            due = batcher.due_in(now)
            if due is not None and due <= 0:
                self._dispatch(batcher.seal())
            if delivery.retry_due(now):
                delivery.retry_failed()
            if counters.pending_bytes >= max_bytes and delivery.failed and delivery.spool is not None:
                delivery.spill()
            self._reporter.drops(buffer.dropped, buffer.dropped_by)

    def _next_timeout(self) -> float | None:
        """Seconds until the open batch or a retry is due; ``None`` if neither is."""
        now = time.monotonic()
        due = self._batcher.due_in(now)
        if due is not None and self._exporters:
            due = min(due, _EXPORT_LAG)
        retry = self._delivery.retry_in(now)
        if due is None:
            return retry
        return max(due, 0.0) if retry is None else max(min(due, retry), 0.0)

    async def _drain(self, *, final: bool = False) -> Marker | None:
        """Take records from the buffer and encode them into the open batch.

        Stops at the close marker and returns it. ``final=True`` (stopping) takes
        everything, ignores the memory bound and keeps the markers it meets for
        ``_finish`` to resolve.
        """
        buffer = self._buffer
        counters = self._counters
        max_bytes = self._config.max_queue_bytes
        started = time.perf_counter()
        while len(buffer):
            if not final and counters.pending_bytes >= max_bytes:
                # Memory bound reached (the destination is slow or down): leave the
                # rest in the buffer, which then fills up and drops, counted.
                break
            chunk, marker = buffer.take(_CHUNK)
            if chunk:
                self._encode(chunk)
            if marker is not None:
                if type(marker) is Seal:  # no barrier: nothing waits on it
                    if not final:  # (stopping: _finish seals what is left)
                        self._dispatch(self._batcher.seal())
                elif final:
                    self._late_markers.append(marker)
                elif marker.closing:
                    return marker
                else:
                    self._on_marker(marker)
            now = time.perf_counter()
            if now - started >= _BUDGET:
                if self._hand_over:
                    time.sleep(_PAUSE)  # noqa: ASYNC251 - on purpose: a real sleep hands the GIL over
                await asyncio.sleep(0)  # let batch writes and flush waiters run
                started = time.perf_counter()
        return None

    def _encode(self, chunk: list[Any]) -> None:
        """Translate, redact and encode one chunk of records into the open batch.

        The hot loop of the worker: every name it uses per record is a local; the
        translator takes the whole chunk in one call.
        """
        translate = self.translate
        try:
            translate.prepare(chunk)
        except Exception as exc:  # pre-checks only: translate still runs
            self._reporter.error("translate", f"could not pre-check events: {exc!r}", exc)
        try:
            results: Sequence[Any] = translate.many(chunk)
        except Exception as exc:  # never seen: many() catches per record
            results = [exc] * len(chunk)
        if all(map(tuple.__instancecheck__, results)):  # lines only (the common case): in bulk
            lines = list(map(_LINE, results))
            batches = self._batcher.add_many(list(map(_SEQ, results)), lines)
            if self._exporters:
                self._export(lines, results)
            if batches:
                self._dispatch(batches)
            return
        self._encode_each(results)

    def _encode_each(self, results: Sequence[Any]) -> None:
        """``_encode``'s path for results that are not all lines: one at a time."""
        hook = self._config.redact
        encoder = self._encoder
        counters = self._counters
        add = self._batcher.add
        exported: list[bytes] = []
        for result in results:
            out = result
            if type(out) is list:  # lines held back before (sampling), added now; or none yet
                for held in out:
                    sealed = add(held[0], held[1])
                    exported.append(held[1])
                    if sealed is not None:
                        self._dispatch(sealed)
                continue
            if type(out) is not tuple:
                if out is None:
                    counters.filtered += 1
                    continue
                try:
                    if isinstance(out, Exception):
                        raise out
                    # An event dict (a translator that returns dicts, the engine's own).
                    if hook is not None:
                        edited = hook(out)
                        out = None if edited is None else dict(edited)
                    if out is None:
                        counters.filtered += 1
                        continue
                    out = (out.get("seq", -1), encoder.encode(out))
                except Exception as exc:
                    counters.encode_errors += 1
                    # The placeholder is an event of its run (its seq, time, names and
                    # ids, as far as the translator could read them), of kind "unknown".
                    event: dict[str, Any] = {"kind": "unknown"}
                    failed: dict[str, Any] = {}
                    if isinstance(exc, TranslateFailed):
                        if exc.kind is not None:
                            failed["kind"] = exc.kind
                        event, exc = exc.envelope, exc.cause
                    self._reporter.error("translate", f"could not translate an event: {exc!r}", exc)
                    event["data"] = placeholder("translate_failed", exc, error=repr(exc), **failed)
                    seq = event.get("seq")
                    out = (seq if type(seq) is int else -1, encoder.encode(event))
            sealed = add(out[0], out[1])
            exported.append(out[1])
            if sealed is not None:
                self._dispatch(sealed)
        if self._exporters and exported:
            self._export(exported)

    def _export(self, lines: list[bytes], results: Sequence[tuple[Any, ...]] = ()) -> None:
        """Hand the lines just added to the batches to every exporter (they never block);
        with ``results`` (the translator's, one per line), also their kinds and run ids to
        the exporters that take them, if the translator gave them for every line."""
        kinds: list[Any] | None = None
        runs: list[Any] = []
        for exporter, records in zip(self._exporters, self._records, strict=True):
            try:
                if records is not None and results and (kinds is not None or min(map(len, results)) == 4):
                    if kinds is None:
                        kinds, runs = list(map(_KIND, results)), list(map(_RUN, results))
                    records(lines, kinds, runs)
                else:
                    exporter.lines(lines)
            except Exception as exc:  # an exporter's bug must not stop the files
                self._reporter.error("export", f"exporter {type(exporter).__name__} failed: {exc!r}", exc)

    def _dispatch(self, sealed: list[tuple[int, Batch]]) -> None:
        for number, batch in sealed:
            if self._stopping:
                self._delivery.keep(number, batch)
            else:
                self._delivery.submit(number, batch)

    # -- markers ---------------------------------------------------------------------------

    def _on_marker(self, marker: Marker) -> None:
        self._dispatch(self._batcher.seal())
        # Every record ahead of the marker has been taken: the buffer's count is exactly them.
        self._barrier.reached(marker, self._batcher.last_number, self._buffer.counts()[0])
        if self._delivery.failed:
            self._delivery.retry_failed()  # a flush retries at once
        self.check_markers()

    def settled(self) -> None:
        """A write settled (loop thread): settle the markers it completes, and run the
        loop once more (the memory bound may be lifted, a retry or spill may be due)."""
        self.check_markers()
        if self._wake is not None:
            self._wake.set()

    def check_markers(self) -> None:
        """Settle the markers whose batches are all settled."""
        if self._stopping:
            return  # _finish resolves every marker left
        for marker in self._barrier.ready(self._delivery.inflight):
            self._delivery.spawn(self._settle(marker))

    async def _settle(self, marker: Marker) -> None:
        """Resolve a marker whose batches are all settled; write parameters first."""
        try:
            error = await self._write_parameters()
            await self._flush_exporters(marker)
        finally:
            self._barrier.remove(marker)
        # The drops counted so far are said before the marker is answered: a returned
        # flush has had its drops logged (in process mode, the LOG frame goes first).
        self._reporter.drops(self._buffer.dropped, self._buffer.dropped_by)
        # Batches may have gone back in flight (a retry) while parameters were
        # written: whatever is not written now counts as not durable.
        failed = self._delivery.failed_upto(marker.upto)
        outcome: FlushError | None = None
        if failed:
            outcome = FlushError(
                pending=sum(b.events for _, b in failed),
                failed_batches=len(failed),
                reason=self._delivery.failure.get(failed[-1][0], self._reporter.last_error)
                + (f"; also: {error}" if error else ""),
            )
        elif error is not None:
            outcome = FlushError(pending=0, reason=error)
        else:
            self._barrier.succeeded(marker)
        if marker.closing:
            self._close_error = outcome
            assert self._close_settled is not None
            self._close_settled.set()
        elif not marker.future.done():
            if outcome is None:
                marker.future.set_result(None)
            else:
                marker.future.set_exception(outcome)

    async def _flush_exporters(self, marker: Marker) -> None:
        """Let the exporters send what the marker's lines finished, on threads of their own.

        A flush waits for them at most their own timeout and never past its caller's
        (less a margin, for the marker to settle). A close does not wait here: the
        exporters' close (``_finish``) sends what is left until the deadline.
        Their failures are theirs to count and log: the files are written either way.
        """
        if not self._exporters or marker.closing:
            return
        deadline = marker.deadline
        timeout = None
        if deadline is not None and not math.isinf(deadline):
            left = deadline - time.monotonic()
            margin = min(max(left * _EXPORT_MARGIN, 0.05), 1.0)
            timeout = max(left - margin, 0.0)
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(None, exporter.flush, timeout) for exporter in self._exporters),
            return_exceptions=True,
        )

    async def _close_exporters(self, limit: float | None) -> None:
        """Close the exporters together, each given ``limit`` seconds (the close's deadline)."""
        loop = asyncio.get_running_loop()

        async def close(exporter: LineExporter) -> None:
            try:
                async with asyncio.timeout(None if limit is None else limit + 1.0):
                    await loop.run_in_executor(None, exporter.close, limit)
            except Exception as exc:
                logger.warning("asynctrack: closing exporter %s failed: %r", type(exporter).__name__, exc)

        await asyncio.gather(*(close(exporter) for exporter in self._exporters))

    # -- the end ---------------------------------------------------------------------------

    async def _close(self, marker: Marker) -> None:
        """The close marker is reached: write everything, then wait for it to settle.

        Batches that failed and have no spool to go to (a local disk full for a moment)
        are retried with the backoff until the close's deadline (whose timeout ends
        this wait); only then are they counted as lost. Without a deadline the close
        settles at the first failure, as a flush does.
        """
        settled = self._close_settled = asyncio.Event()
        self._on_marker(marker)
        await settled.wait()
        delivery = self._delivery
        while (
            self._close_error is not None
            and delivery.failed
            and delivery.spool is None
            and not math.isinf(self._deadline)
        ):
            await asyncio.sleep(delivery.retry_in(time.monotonic()) or 0.0)
            settled.clear()
            self._close_error = None
            marker.settling = False
            self._barrier.reached(marker, marker.upto, marker.covered)  # waits for them again
            delivery.retry_failed()
            self.check_markers()
            await settled.wait()

    async def _finish(self, *, timed_out: bool) -> None:
        """Stop: cancel writes, spool or count what is unsent, resolve markers, close sinks."""
        self._stopping = True
        delivery, counters = self._delivery, self._counters
        markers = list(self._barrier.markers)  # before the cancellations remove them
        await delivery.stop()
        await self._drain(final=True)  # encode what is still buffered: it is spooled too
        # A worker held by the memory bound sleeps through the drops its full queue made.
        self._reporter.drops(self._buffer.dropped, self._buffer.dropped_by)
        if isinstance(self.translate, Finishing):
            self.translate.finish()
        for number, batch in self._batcher.seal():
            delivery.keep(number, batch)
        spooled_before = counters.spooled
        delivery.spool_unsent()
        spooled = counters.spooled - spooled_before
        left = delivery.unsent_events()
        delivery.failed.clear()
        counters.pending_bytes = 0  # nothing is held any more: written, spooled or counted lost
        if left:
            counters.lost += left
            logger.error(
                "asynctrack closed with %d event(s) not written: %s", left, self._reporter.last_error
            )
        close_marker = self.close_marker
        self._fail_markers(left, f"tracker closed; {self._reporter.last_error}", markers, skip=close_marker)
        if self._exporters:
            # The exporters send what is left (runs never ended too) until the deadline.
            left_s = None if math.isinf(self._deadline) else self._deadline - time.monotonic()
            await self._close_exporters(_SINK_CLOSE_LATE if timed_out else left_s)
        closers: list[Sink | ParametersSink] = [self._sink, *self._parameter_sinks]
        # Past the deadline the connections are likely hung: closing them gets little time.
        limit = _SINK_CLOSE_LATE if timed_out else _SINK_CLOSE
        for closer in closers:
            try:
                async with asyncio.timeout(limit):
                    await closer.aclose()
            except Exception as exc:
                logger.warning("asynctrack: closing %s failed: %s", type(closer).__name__, exc)
        # CLOSED before the close marker resolves: a close() that returned finds it so.
        self.advance(State.CLOSED)
        self._on_closed()
        if close_marker is not None and not close_marker.future.done():
            self._resolve_close(close_marker, timed_out=timed_out, pending=left + spooled)

    def _resolve_close(self, marker: Marker, *, timed_out: bool, pending: int) -> None:
        counters = self._counters
        spool = self._delivery.spool
        where = f" in the spool {spool.directory}" if spool is not None else ""
        at_close = (
            f"at close {counters.spooled} event(s) were kept{where} for the next "
            f"tracker or 'asynctrack replay', {counters.lost} lost"
        )
        last = self._reporter.last_error
        settled = self._close_settled is not None and self._close_settled.is_set()
        if timed_out and self._close_error is None and (pending or not settled):
            waited = marker.timeout or 0.0
            if self._deadline < (math.inf if marker.deadline is None else marker.deadline):
                waited = round(max(self._deadline - marker.began, 0.0), 3)  # cut short by a nearer one
            why = f"timed out after {waited:g} s" + (f"; last error: {last}" if last else "")
            marker.future.set_exception(
                FlushTimeoutError(
                    timeout=waited,
                    pending=pending,
                    failed_batches=0,
                    reason=f"{why}; {at_close}",
                )
            )
        elif self._close_error is not None:
            error = self._close_error
            marker.future.set_exception(
                FlushError(
                    pending=error.pending,
                    queued=error.queued,
                    failed_batches=error.failed_batches,
                    reason=f"{error.reason}; {at_close}",
                )
            )
        elif pending:
            marker.future.set_exception(FlushError(pending=pending, reason=f"{last}; {at_close}"))
        else:
            marker.future.set_result(None)

    def _fail_markers(
        self, pending: int, reason: str, markers: Sequence[Marker] = (), skip: Marker | None = None
    ) -> None:
        for marker in (*markers, *self._late_markers, *self._buffer.controls()):
            if marker is not skip and not marker.future.done():
                marker.future.set_exception(FlushError(pending=pending, reason=reason))
