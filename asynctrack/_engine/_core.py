"""The engine: bounded buffer, batching worker, flush barrier, lifecycle.

It knows nothing of LangChain or AWS. Callers ``put()`` opaque records; a
``translate`` function (the adapter's) turns each into a JSON line on the worker
thread (or into an event dict, which the engine's ``Encoder`` encodes); lines are
batched by count, bytes and age into files that a ``Sink`` stores.

Threads and ordering:

- ``put()`` is the hot path. It runs on any thread, in or out of an event loop,
  and only appends to a ``collections.deque`` (atomic under the GIL, 30 ns). It
  takes no lock unless the buffer is full, never does I/O and never raises.
- One worker thread per engine runs a private asyncio loop (for aiobotocore and
  concurrent writes). It drains the deque every ``_TICK`` seconds, or at once
  when ``_WAKE_AT`` records are waiting, and hands the GIL back to the callers
  after each millisecond of encoding (``_BUDGET``).
- ``flush()`` appends a marker to the same deque. Everything put before the call
  is ahead of it, so when the worker reaches the marker it seals the open batch,
  and the marker resolves once every batch sealed so far is settled (written,
  or failed and kept for retry). Concurrent flushes each have their own marker.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import gzip
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import orjson

from .._config import TrackerConfig
from .._encode import Encoder, placeholder
from .._errors import DeadlockError, FlushError, FlushTimeoutError, PermanentSinkError, TrackerClosedError
from .._layout import Layout, new_writer_id
from .._sinks._base import Batch, ParametersSink, ParameterValue, RunInfo, RunSummary, RunSummarySink, Sink
from ._spool import Spool

__all__ = ["Engine", "Statistics"]

logger = logging.getLogger("asynctrack")

_WAKE_AT: Final = 512  # records waiting before put() wakes the worker early
_TICK: Final = 0.05  # seconds between drains when nothing wakes the worker
_CHUNK: Final = 64  # records pre-checked together, and between checks of the time budget
# The worker holds the GIL while it encodes. CPython hands the GIL to a waiting
# thread only every switch interval (5 ms), and an asyncio.sleep(0) does not help
# (epoll_wait(0) drops and retakes it at once): the caller's event loop would lag
# by 5-50 ms during a burst (measured). So after each _BUDGET of work the worker
# really sleeps for _PAUSE, which lets a waiting thread take the GIL at once.
_BUDGET: Final = 0.001
_PAUSE: Final = 0.00005
_WARN_EVERY: Final = 10.0  # seconds between repeated warnings of one kind
_RETRY_MIN: Final = 0.5  # backoff for failed batches, doubled up to _RETRY_MAX
_RETRY_MAX: Final = 30.0
_STOP_GRACE: Final = 10.0  # seconds close() waits for the worker to spool and stop


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Statistics:
    """A snapshot of a tracker's counters (see ``AsyncTracker.statistics()``).

    Attributes:
        recorded: events accepted into the buffer.
        written: events on durable storage.
        dropped: events refused: buffer full, or recorded after close.
        filtered: events the ``redact`` hook chose not to write.
        failed: events in batches whose last write failed; kept and retried.
        lost: events given up on at close (the close deadline passed and the
            spool was off or full).
        spooled: events saved to the local spool for later delivery (at close,
            or to free memory while the destination is down).
        encode_errors: events written with a placeholder for a value that failed.
        write_errors: failed write attempts (each is retried).
        batches: batch files written.
        bytes: bytes written (after compression).
        queue_depth: records waiting in the buffer for the worker.
        pending_bytes: encoded bytes held in memory, not yet written.
        parameter_errors: failed parameter writes (SageMaker, local document).
    """

    recorded: int
    written: int
    dropped: int
    filtered: int
    failed: int
    lost: int
    spooled: int
    encode_errors: int
    write_errors: int
    batches: int
    bytes: int
    queue_depth: int
    pending_bytes: int
    parameter_errors: int


class _Marker:
    """A flush request travelling through the buffer behind the events it covers."""

    __slots__ = ("future", "settling", "upto")

    def __init__(self) -> None:
        self.future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.upto = -1  # last batch id it waits for; set by the worker
        self.settling = False


@dataclasses.dataclass(slots=True)
class _OpenBatch:
    lines: list[bytes] = dataclasses.field(default_factory=list)
    size: int = 0
    first_seq: int = -1
    last_seq: int = -1
    opened: float = 0.0  # monotonic
    opened_wall: float = 0.0


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


_live: weakref.WeakSet[Engine] = weakref.WeakSet()


class Engine:
    """Buffers records and writes them in batches from a worker thread.

    Args:
        sink: where batches go.
        layout: the keys of this tracker's files.
        translate: turns a record into ``(seq, JSON line)``, or an event dict for
            the engine to encode, or ``None`` to skip it (counted as filtered);
            called on the worker thread only, so it may keep state.
        parameters: returns the run's parameters; worker thread only.
        parameter_sinks: receive the parameters at every flush and at close.
        config: buffering and encoding settings.
    """

    def __init__(
        self,
        *,
        sink: Sink,
        layout: Layout,
        translate: Callable[[Any], tuple[int, bytes] | dict[str, Any] | None],
        parameters: Callable[[], Mapping[str, ParameterValue]] | None = None,
        parameter_sinks: Sequence[ParametersSink] = (),
        config: TrackerConfig | None = None,
        run_info: RunInfo | None = None,
        spool: Spool | None = None,
    ) -> None:
        self.config = config or TrackerConfig()
        self.sink = sink
        self.layout = layout
        self._translate = translate
        self._parameters = parameters
        self._parameter_sinks = tuple(parameter_sinks)
        self.spool = spool
        #: Called (weakly) in a forked child, after the engine reset itself.
        self.on_fork: weakref.WeakMethod[Callable[[Engine], None]] | None = None
        self.run_info = run_info or RunInfo(
            experiment=layout.experiment,
            run=layout.run,
            events_uri=f"{sink.destination.rstrip('/')}/{layout.run_prefix}/",
        )
        # Re-entrant: the SIGTERM handler may close trackers while the main thread
        # holds this lock (a producer blocked under when_full="block").
        self._lock = threading.RLock()  # lifecycle, drop counters, blocked producers
        self._room = threading.Condition(self._lock)
        self._reset_state()
        _live.add(self)
        self._start()

    # -- state ---------------------------------------------------------------------

    def _reset_state(self) -> None:
        config = self.config
        self._queue: collections.deque[Any] = collections.deque()
        self._max_queue = config.max_queue_events  # set to -1 on close: put() then drops
        self._closed = False
        self._wake_requested = False
        self._blocked = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._finishing = False
        self._worker_done = threading.Event()
        # Counters. Written by the worker only, except the drop counters (under _lock).
        self._taken = 0
        self._written = 0
        self._dropped = 0
        self._dropped_warned = 0
        self._filtered = 0
        self._lost = 0
        self._spooled = 0
        self._encode_errors = 0
        self._write_errors = 0
        self._parameter_errors = 0
        self._batches = 0
        self._bytes = 0
        self._pending_bytes = 0
        self._last_error: str = ""
        self._start_error: BaseException | None = None
        self._warned_at: dict[str, float] = {}
        # Worker-only batch state.
        self._encoder = Encoder(config)
        self._open = _OpenBatch()
        self._next_batch = 0
        self._inflight: dict[int, Batch] = {}
        self._failed: dict[int, Batch] = {}
        self._failure: dict[int, str] = {}  # why each failed batch failed, last attempt
        self._retry_at = 0.0
        self._retry_delay = _RETRY_MIN
        self._markers: list[_Marker] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._sem: asyncio.Semaphore | None = None
        self._parameters_written: dict[str, ParameterValue] | None = None

    def _start(self) -> None:
        thread = threading.Thread(target=self._thread_main, name="asynctrack-worker", daemon=True)
        self._thread = thread
        thread.start()

    def set_adapter(
        self,
        translate: Callable[[Any], tuple[int, bytes] | dict[str, Any] | None],
        parameters: Callable[[], Mapping[str, ParameterValue]] | None,
    ) -> None:
        """Replace ``translate`` and ``parameters`` (after fork, before the worker runs)."""
        self._translate = translate
        self._parameters = parameters

    @property
    def last_parameters(self) -> dict[str, ParameterValue]:
        """The run parameters the last successful flush wrote (empty before one)."""
        return dict(self._parameters_written or {})

    @property
    def closed(self) -> bool:
        """Whether ``close()`` or ``aclose()`` has begun."""
        return self._closed

    # -- hot path ----------------------------------------------------------------

    def put(self, record: Any) -> None:
        """Append ``record`` to the buffer. Never blocks (unless configured), never raises."""
        queue = self._queue
        if len(queue) >= self._max_queue:
            self._full(record)
            return
        queue.append(record)
        if len(queue) >= _WAKE_AT and not self._wake_requested:
            self._request_wake()

    def count_dropped(self, n: int = 1) -> None:
        """Count events that could not even be put (thread-safe)."""
        with self._lock:
            self._dropped += n

    def _request_wake(self) -> None:
        self._wake_requested = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(wake.set)

    def _full(self, record: Any) -> None:
        with self._lock:
            if (
                not self._closed
                and self.config.when_full == "block"
                and threading.current_thread() is not self._thread
            ):
                deadline = time.monotonic() + self.config.block_timeout
                self._blocked += 1
                try:
                    while len(self._queue) >= self._max_queue and not self._closed:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._request_wake()
                        self._room.wait(remaining)
                finally:
                    self._blocked -= 1
                if len(self._queue) < self._max_queue and not self._closed:
                    self._queue.append(record)
                    return
            self._dropped += 1

    # -- caller side: flush and close --------------------------------------------

    def _enqueue_marker(self, what: str) -> _Marker:
        if self._closed:
            raise TrackerClosedError(what)
        return self._enqueue_marker_unchecked()

    def _enqueue_marker_unchecked(self) -> _Marker:
        marker = _Marker()
        self._queue.append(marker)  # markers ignore the bound: they carry no data
        self._request_wake()
        return marker

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every record put before this call is durably written.

        Args:
            timeout: seconds to wait at most; ``None`` waits as long as it takes.

        Raises:
            FlushTimeoutError: the timeout passed first; nothing was discarded.
            FlushError: a write failed; the batches are kept and retried.
            TrackerClosedError: the tracker is closed.
        """
        marker = self._enqueue_marker("flush()")
        await self._await_marker(marker, timeout)

    async def _await_marker(self, marker: _Marker, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()

        def relay(_: concurrent.futures.Future[None]) -> None:
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
            raise self._timeout_error(marker, timeout or 0.0) from None
        marker.future.result()  # raises the worker's FlushError, if any

    def flush_blocking(self, timeout: float | None = None) -> None:
        """``flush()`` for synchronous code, on any thread, in or out of an event loop.

        Raises:
            DeadlockError: called from the worker thread (a hook or sink), where
                waiting for the worker would never end.
            FlushTimeoutError, FlushError, TrackerClosedError: as ``flush()``.
        """
        if threading.current_thread() is self._thread:
            raise DeadlockError("flush_blocking()")
        marker = self._enqueue_marker("flush_blocking()")
        try:
            marker.future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise self._timeout_error(marker, timeout or 0.0) from None

    def _timeout_error(self, marker: _Marker, timeout: float) -> FlushTimeoutError:
        queued, pending, failed = self._pending_before(marker)
        return FlushTimeoutError(
            timeout=timeout,
            pending=pending,
            queued=queued,
            failed_batches=failed,
            reason=self._last_error,
        )

    def _pending_before(self, marker: _Marker) -> tuple[int, int, int]:
        """(queued, pending, failed batches) of the records put before ``marker``.

        Called from any thread: it copies the worker's containers first (``list()``
        of a deque or dict is one C call, atomic under the GIL).
        """
        inflight = list(self._inflight.items())
        failed = list(self._failed.items())
        upto = marker.upto
        if upto >= 0:
            pending = sum(b.events for i, b in inflight + failed if i <= upto)
            return 0, pending, sum(1 for i, _ in failed if i <= upto)
        queued = 0
        for item in list(self._queue):
            if item is marker:
                break
            if type(item) is not _Marker:
                queued += 1
        open_events = len(self._open.lines)
        pending = queued + open_events + sum(b.events for _, b in inflight + failed)
        return queued, pending, len(failed)

    async def aclose(self, timeout: float | None = 30.0) -> None:
        """Flush, then stop the worker. Idempotent.

        Records put after close begins are dropped and counted (``dropped``).

        Raises:
            FlushError: some events could not be written before the deadline; they
                are counted as ``lost``.
        """
        marker = self._begin_close()
        if marker is None:
            return
        try:
            await self._await_marker(marker, timeout)
        except FlushError as exc:
            await asyncio.get_running_loop().run_in_executor(None, self._stop_worker, _STOP_GRACE)
            raise self._close_error(exc) from None
        except BaseException:  # cancelled: the worker still flushes, spools and stops
            self._stopping = True
            self._request_wake()
            raise
        await asyncio.get_running_loop().run_in_executor(None, self._stop_worker, _STOP_GRACE)

    def close(self, timeout: float | None = 30.0) -> None:
        """``aclose()`` for synchronous code. Idempotent."""
        if threading.current_thread() is self._thread:
            raise DeadlockError("close()")
        marker = self._begin_close()
        if marker is None:
            return
        try:
            try:
                marker.future.result(timeout)
            except concurrent.futures.TimeoutError:
                raise self._timeout_error(marker, timeout or 0.0) from None
        except FlushError as exc:
            self._stop_worker(_STOP_GRACE)
            raise self._close_error(exc) from None
        self._stop_worker(_STOP_GRACE)

    def _close_error(self, exc: FlushError) -> FlushError:
        """The error of a close that could not write everything: what was spooled, lost."""
        where = f" in the spool {self.spool.directory}" if self.spool is not None else ""
        reason = (
            f"{exc.reason}; at close {self._spooled} event(s) were kept{where} for the next "
            f"tracker or 'asynctrack replay', {self._lost} lost"
        )
        if isinstance(exc, FlushTimeoutError):
            return FlushTimeoutError(
                timeout=exc.timeout,
                pending=exc.pending,
                queued=exc.queued,
                failed_batches=exc.failed_batches,
                reason=reason,
            )
        return FlushError(
            pending=exc.pending, queued=exc.queued, failed_batches=exc.failed_batches, reason=reason
        )

    def _begin_close(self) -> _Marker | None:
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            self._max_queue = -1
            self._room.notify_all()
        _live.discard(self)
        return self._enqueue_marker_unchecked()

    def _stop_worker(self, grace: float) -> None:
        """Ask the worker to finish (cancelling writes still running) and join it."""
        self._stopping = True
        self._request_wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(grace)
            if thread.is_alive():
                logger.error("asynctrack: the worker did not stop within %g s", grace)

    # -- statistics ----------------------------------------------------------------

    def statistics(self) -> Statistics:
        """A consistent-enough snapshot of the counters (read without locks)."""
        queued = sum(1 for item in list(self._queue) if type(item) is not _Marker)
        failed = list(self._failed.values())
        return Statistics(
            recorded=self._taken + queued,
            written=self._written,
            dropped=self._dropped,
            filtered=self._filtered,
            failed=sum(b.events for b in failed),
            lost=self._lost,
            spooled=self._spooled,
            encode_errors=self._encode_errors,
            write_errors=self._write_errors,
            batches=self._batches,
            bytes=self._bytes,
            queue_depth=queued,
            pending_bytes=self._pending_bytes,
            parameter_errors=self._parameter_errors,
        )

    # -- worker --------------------------------------------------------------------

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        loop.set_default_executor(_DaemonThreadExecutor())
        try:
            loop.run_until_complete(self._main(loop))
        except BaseException:  # pragma: no cover - the worker must never die silently
            logger.exception("asynctrack worker crashed; events are no longer written")
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._worker_done.set()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        self._wake = asyncio.Event()
        self._sem = asyncio.Semaphore(self.config.max_concurrent_writes)
        self._loop = loop
        try:
            await self.sink.start()
        except Exception as exc:
            self._start_error = exc
            self._note_error("start", f"destination not usable: {exc}", exc)
        self._recover_spool()
        wake = self._wake
        queue = self._queue
        max_bytes = self.config.max_queue_bytes
        while not self._stopping:
            if not queue or self._pending_bytes >= max_bytes:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._next_timeout()):
                        await wake.wait()
            wake.clear()
            await self._drain()
            if len(queue) < _WAKE_AT:
                # Only now may put() wake us again: while the memory bound keeps
                # records waiting, a wake per put() would cost every caller.
                self._wake_requested = False
            now = time.monotonic()
            if self._open.lines and now - self._open.opened >= self.config.batch_interval:
                self._seal()
            if self._failed and now >= self._retry_at:
                self._retry_failed()
            if self._pending_bytes >= max_bytes and self._failed and self.spool is not None:
                self._spill()
            self._warn_drops()
        await self._finish()

    def _recover_spool(self) -> None:
        """Queue the spooled batches of this destination for delivery (once each)."""
        if self.spool is None:
            return
        try:
            recovered = self.spool.pending()
        except OSError as exc:
            self._note_error("spool", f"cannot read the spool {self.spool.directory}: {exc}", exc)
            return
        for batch in recovered:
            self._failed[self._next_batch] = batch
            self._next_batch += 1
        if recovered:
            logger.info(
                "asynctrack: delivering %d spooled batch(es) (%d events) from %s",
                len(recovered),
                sum(b.events for b in recovered),
                self.spool.directory,
            )
            self._retry_at = 0.0

    def _spill(self) -> None:
        """Memory is full and the destination down: move failed batches to the spool."""
        assert self.spool is not None
        for number, batch in sorted(self._failed.items()):
            if not batch.data:
                continue
            path = self._save_to_spool(batch)
            if path is None:
                return
            self._failed[number] = dataclasses.replace(batch, data=b"", spool_path=path)
            self._pending_bytes -= len(batch.data)

    def _save_to_spool(self, batch: Batch) -> str | None:
        assert self.spool is not None
        try:
            path = self.spool.save(batch)
        except OSError as exc:
            self._note_error("spool", f"cannot write the spool {self.spool.directory}: {exc}", exc)
            return None
        if path is None:
            self._warn(
                "spool full",
                logging.ERROR,
                "asynctrack: spool %s is full (spool_max_bytes=%d); batches are no longer spooled",
                self.spool.root,
                self.spool.max_bytes,
            )
            return None
        self._spooled += batch.events
        return path

    def _next_timeout(self) -> float:
        timeout = _TICK
        if self._open.lines:
            due = self._open.opened + self.config.batch_interval - time.monotonic()
            timeout = min(timeout, max(due, 0.0))
        return timeout

    async def _drain(self, bounded: bool = True, final: bool = False) -> None:
        """Take records from the buffer and encode them into the open batch.

        ``bounded=False`` (at close, to spool everything) ignores the memory bound.
        """
        queue = self._queue
        translate = self._translate
        config = self.config
        hook = config.redact
        started = time.perf_counter()
        prepare = getattr(translate, "prepare", None)
        while queue and (final or not self._stopping):
            if bounded and self._pending_bytes >= config.max_queue_bytes:
                # Memory bound reached (the destination is slow or down): leave the
                # rest in the buffer, which then fills up and drops, counted.
                break
            chunk: list[Any] = []
            marker = None
            while queue and len(chunk) < _CHUNK:
                item = queue.popleft()
                if type(item) is _Marker:
                    marker = item  # handled after the records ahead of it
                    break
                chunk.append(item)
            if chunk and prepare is not None:
                try:
                    prepare(chunk)
                except Exception as exc:  # pre-checks only: translate still runs
                    self._note_error("translate", f"could not pre-check events: {exc!r}", exc)
            for item in chunk:
                self._taken += 1
                try:
                    out = translate(item)
                    if type(out) is dict:
                        if hook is not None:
                            edited = hook(out)
                            out = None if edited is None else dict(edited)
                        if out is not None:
                            out = (out.get("seq", -1), self._encoder.encode(out))
                except Exception as exc:
                    self._encode_errors += 1
                    self._note_error("translate", f"could not translate an event: {exc!r}", exc)
                    event = {"kind": "unknown", "data": placeholder("translate_failed", exc, error=repr(exc))}
                    out = (-1, self._encoder.encode(event))
                if out is None:
                    self._filtered += 1
                    continue
                self._add(*out)
            if marker is not None:
                self._on_marker(marker)
            now = time.perf_counter()
            if now - started >= _BUDGET:
                self._release_blocked()
                time.sleep(_PAUSE)  # noqa: ASYNC251 - on purpose: a real sleep hands the GIL over
                await asyncio.sleep(0)  # let batch writes and flush waiters run
                started = time.perf_counter()
        self._release_blocked()

    def _release_blocked(self) -> None:
        if self._blocked:
            with self._room:
                self._room.notify_all()

    def _add(self, seq: int, line: bytes) -> None:
        batch = self._open
        if batch.lines and batch.size + len(line) > self.config.max_batch_bytes:
            self._seal(write=not self._stopping)  # seal first: no file over the limit
            batch = self._open
        if not batch.lines:
            batch.opened = time.monotonic()
            batch.opened_wall = time.time()
            batch.first_seq = seq
        batch.lines.append(line)
        batch.size += len(line)
        batch.last_seq = seq
        self._pending_bytes += len(line)
        if len(batch.lines) >= self.config.max_batch_events or batch.size >= self.config.max_batch_bytes:
            self._seal(write=not self._stopping)

    def _seal(self, write: bool = True) -> None:
        batch = self._open
        if not batch.lines:
            return
        self._open = _OpenBatch()
        number = self._next_batch
        self._next_batch += 1
        data = b"".join(batch.lines)
        if self.config.gzip:
            # mtime=0: a retried or re-encoded batch has the same bytes.
            data = gzip.compress(data, compresslevel=6, mtime=0)
        self._pending_bytes += len(data) - batch.size
        sealed = Batch(
            key=self.layout.batch_key(number, batch.opened_wall),
            data=data,
            events=len(batch.lines),
            first_seq=batch.first_seq,
            last_seq=batch.last_seq,
            gzip=self.config.gzip,
        )
        if write:
            self._inflight[number] = sealed
            self._spawn(self._write(number, sealed))
        else:
            self._failed[number] = sealed

    def _spawn(self, coro: Any) -> None:
        if self._finishing:
            coro.close()  # the loop is about to close: never start work on it
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, number: int, batch: Batch) -> None:
        assert self._sem is not None
        try:
            async with self._sem:
                payload = Spool.load(batch)  # the batch itself unless it waits in the spool
                await self.sink.write_batch(payload)
                Spool.remove(batch)
        except asyncio.CancelledError:
            self._failed[number] = batch  # stopping: counted as lost by _finish
            raise
        except Exception as exc:
            self._write_errors += 1
            self._failed[number] = batch
            self._failure[number] = f"writing {batch.events} event(s) failed: {exc}"
            self._note_error("write", f"writing {batch.key} ({batch.events} events) failed: {exc}", exc)
            if self._retry_at <= time.monotonic():
                self._retry_at = time.monotonic() + self._retry_delay
                self._retry_delay = min(self._retry_delay * 2, _RETRY_MAX)
        else:
            self._written += batch.events
            self._batches += 1
            self._bytes += len(payload.data)
            self._pending_bytes -= len(batch.data)  # 0 for a batch read back from the spool
            self._retry_delay = _RETRY_MIN
            self._failure.pop(number, None)
        finally:
            self._inflight.pop(number, None)
            self._check_markers()

    def _retry_failed(self) -> None:
        failed, self._failed = self._failed, {}
        self._retry_at = time.monotonic() + self._retry_delay
        for number, batch in sorted(failed.items()):
            self._inflight[number] = batch
            self._spawn(self._write(number, batch))

    def _on_marker(self, marker: _Marker) -> None:
        if self._stopping:
            # Reached while finishing: no new writes on a loop about to close;
            # _finish spools what is unsent and resolves the marker.
            self._seal(write=False)
            self._markers.append(marker)
            return
        self._seal()
        marker.upto = self._next_batch - 1
        if self._failed:
            self._retry_failed()  # a flush retries at once
        self._markers.append(marker)
        self._check_markers()

    def _check_markers(self) -> None:
        if self._stopping:
            return  # _finish resolves every marker left
        for marker in self._markers:
            if not marker.settling and not any(n <= marker.upto for n in self._inflight):
                marker.settling = True
                self._spawn(self._settle(marker))

    async def _settle(self, marker: _Marker) -> None:
        """Resolve a marker whose batches are all settled; write parameters first."""
        try:
            error = await self._write_parameters()
        finally:
            self._markers.remove(marker)
        # Batches may have gone back in flight (a retry) while parameters were
        # written: whatever is not written now counts as not durable.
        failed = [(n, b) for n, b in [*self._failed.items(), *self._inflight.items()] if n <= marker.upto]
        if marker.future.done():
            return
        if failed:
            marker.future.set_exception(
                FlushError(
                    pending=sum(b.events for _, b in failed),
                    failed_batches=len(failed),
                    reason=self._failure.get(failed[-1][0], self._last_error)
                    + (f"; also: {error}" if error else ""),
                )
            )
        elif error is not None:
            marker.future.set_exception(FlushError(pending=0, reason=error))
        else:
            marker.future.set_result(None)

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
            self._parameter_errors += 1
            errors.append(f"run parameters not written to {self.sink.destination}: {exc}")
            self._note_error("parameters", errors[-1], exc)
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
                self._parameter_errors += 1
                errors.append(f"run parameters not recorded by {type(sink).__name__}: {exc}")
                self._note_error("parameters", errors[-1], exc)
        if not errors:
            self._parameters_written = parameters
        return "; ".join(errors) or None

    async def _finish(self) -> None:
        """Stop: cancel writes still running, count what is left as lost, close sinks."""
        self._finishing = True
        markers = [*self._markers, *(i for i in self._queue if type(i) is _Marker)]
        while self._tasks:  # cancelled writes may have started more: loop until none
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        # A write cancelled before it took the semaphore is still "in flight".
        for number, batch in list(self._inflight.items()):
            self._failed[number] = batch
        self._inflight.clear()
        if self.spool is not None:
            # Encode what is still buffered, then keep every unsent batch on disk.
            await self._drain(bounded=False, final=True)
            self._seal(write=False)
            for number, batch in sorted(self._failed.items()):
                if batch.spool_path is not None or self._save_to_spool(batch) is not None:
                    del self._failed[number]
                    self._pending_bytes -= len(batch.data)
        left = (
            len(self._open.lines)
            + sum(b.events for b in self._inflight.values())
            + sum(b.events for b in self._failed.values())
            + sum(1 for item in self._queue if type(item) is not _Marker)
        )
        self._failed.clear()
        if left:
            self._lost += left
            logger.error("asynctrack closed with %d event(s) not written: %s", left, self._last_error)
        for marker in markers:
            if not marker.future.done():
                marker.future.set_exception(
                    FlushError(pending=left, reason=f"tracker closed; {self._last_error}")
                )
        closers: list[Sink | ParametersSink] = [self.sink, *self._parameter_sinks]
        for closer in closers:
            try:
                await closer.aclose()
            except Exception as exc:
                logger.warning("asynctrack: closing %s failed: %s", type(closer).__name__, exc)

    # -- reporting -------------------------------------------------------------------

    def _note_error(self, kind: str, message: str, exc: BaseException) -> None:
        self._last_error = message
        level = logging.ERROR if isinstance(exc, PermanentSinkError) else logging.WARNING
        self._warn(kind, level, "asynctrack: %s", message)

    def _warn(self, kind: str, level: int, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._warned_at.get(kind, -_WARN_EVERY) >= _WARN_EVERY:
            self._warned_at[kind] = now
            logger.log(level, msg, *args)

    def _warn_drops(self) -> None:
        dropped = self._dropped
        if dropped != self._dropped_warned:
            now = time.monotonic()
            if now - self._warned_at.get("drop", -_WARN_EVERY) >= _WARN_EVERY:
                self._warned_at["drop"] = now
                logger.warning(
                    "asynctrack dropped %d event(s) (%d in all): buffer full (max_queue_events=%d)"
                    " or tracker closed",
                    dropped - self._dropped_warned,
                    dropped,
                    self.config.max_queue_events,
                )
                self._dropped_warned = dropped

    # -- process events ----------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """A forked child gets an empty buffer and its own worker; the parent's
        buffered events stay the parent's to write."""
        self._lock = threading.RLock()
        self._room = threading.Condition(self._lock)
        closed = self._closed
        self._reset_state()
        self.layout = dataclasses.replace(self.layout, writer=new_writer_id())
        on_fork = self.on_fork() if self.on_fork is not None else None
        if on_fork is not None:
            on_fork(self)  # the adapter renews its own per-process state
        if closed:
            self._closed = True
            self._max_queue = -1
        else:
            self._start()


def _close_all_at_exit() -> None:
    """Flush and stop every open engine when the interpreter exits normally."""
    deadline = time.monotonic() + float(os.environ.get("ASYNCTRACK_EXIT_TIMEOUT", "10"))
    for engine in list(_live):
        remaining = max(deadline - time.monotonic(), 0.1)
        try:
            engine.close(timeout=remaining)
        except Exception as exc:
            logger.error("asynctrack: at exit, %s", exc)


def _on_sigterm(signum: int, frame: Any) -> None:
    """Close every tracker (flush, spool), then die of SIGTERM as we would have."""
    _close_all_at_exit()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def install_sigterm_handler() -> None:
    """Install ``_on_sigterm`` if this is the main thread and no handler is set."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not supported here (an embedded interpreter)
        pass


def _reset_after_fork() -> None:
    for engine in list(_live):
        engine._after_fork_in_child()  # noqa: SLF001 - module-level hook of this class


import atexit  # noqa: E402 - registered once, after the definitions it names

atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
