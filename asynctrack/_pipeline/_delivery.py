"""Delivery: sealed batches written to the sink, failures kept, retried, spooled.

Each sealed batch becomes one write task on the worker's loop, at most
``max_concurrent_writes`` at once. A failed batch is kept (``failed``) under its
number and key and retried with backoff (0.5 s doubling to 30 s), and at once by
every flush; a retry can only overwrite an object with identical bytes. While the
destination is down and memory is full, failed batches move to the spool
(``spill``); at close, what is still unsent goes there too (``spool_unsent``).
Batches left by earlier trackers are claimed from the spool at start
(``recover``). Worker thread only, except the read-only copies taken by
``pending``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

from .._sinks._base import Batch, Sink
from ._spool import Spool
from ._statistics import Counters, Reporter

__all__ = ["Delivery"]

logger = logging.getLogger("asynctrack")

_RETRY_MIN: Final = 0.5  # backoff for failed batches, doubled up to _RETRY_MAX
_RETRY_MAX: Final = 30.0


class Delivery:
    """The batches being written or waiting to be, and the sink they go to.

    Args:
        sink: the destination.
        spool: where unsent batches wait, if spooling is on.
        max_concurrent: batch writes in flight at once.
        counters: ``written``, ``batches``, ``bytes``, ``pending_bytes``, ``spooled``.
        reporter: failures are logged and remembered there.
        settled: called on the worker's loop after each write ends (the barrier's check).
    """

    def __init__(
        self,
        *,
        sink: Sink,
        spool: Spool | None,
        max_concurrent: int,
        counters: Counters,
        reporter: Reporter,
        settled: Callable[[], None],
    ) -> None:
        self.sink = sink
        self.spool = spool
        self._max_concurrent = max_concurrent
        self._counters = counters
        self._reporter = reporter
        self._settled = settled
        self.inflight: dict[int, Batch] = {}
        self.failed: dict[int, Batch] = {}
        self.failure: dict[int, str] = {}  # why each failed batch failed, last attempt
        self._retry_at = 0.0
        self._retry_delay = _RETRY_MIN
        self._tasks: set[asyncio.Task[None]] = set()
        self._sem: asyncio.Semaphore | None = None
        self._started: asyncio.Event | None = None
        self._stopped = False
        self.start_error: BaseException | None = None

    # -- on the worker's loop -------------------------------------------------------------

    def begin(self) -> None:
        """Start the sink in the background; writes wait for it (called on the loop).

        It runs beside the worker's loop rather than before it: a destination that
        never answers must not keep the worker from reaching a close and its deadline.
        """
        self._sem = asyncio.Semaphore(self._max_concurrent)
        self._started = asyncio.Event()
        self.spawn(self._start_sink())

    async def _start_sink(self) -> None:
        assert self._started is not None
        try:
            await self.sink.start()
        except Exception as exc:
            self.start_error = exc
            self._reporter.error("start", f"destination not usable: {exc}", exc)
        finally:
            self._started.set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task the stop cancels; never once stopping began."""
        if self._stopped:
            coro.close()  # the loop is about to close: never start work on it
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def submit(self, number: int, batch: Batch) -> None:
        """Write ``batch`` now (a task)."""
        self.inflight[number] = batch
        self.spawn(self._write(number, batch))

    def keep(self, number: int, batch: Batch) -> None:
        """Hold ``batch`` unsent (stopping: it goes to the spool or is counted lost)."""
        self.failed[number] = batch

    async def _write(self, number: int, batch: Batch) -> None:
        assert self._sem is not None and self._started is not None
        try:
            await self._started.wait()
            async with self._sem:
                payload = Spool.load(batch)  # the batch itself unless it waits in the spool
                if payload.events:  # a damaged spool file may hold none whole
                    await self.sink.write_batch(payload)
                Spool.remove(batch)
        except asyncio.CancelledError:
            self.failed[number] = batch  # stopping: spooled or counted as lost by the worker
            raise
        except FileNotFoundError as exc:
            if batch.spool_path is None:  # the sink's own error (a local disk)
                self._failed_write(number, batch, exc)
            else:
                # Its spool file is gone: nothing left to send, so nothing to retry for ever.
                self._counters.lost += batch.events
                self._reporter.error("spool", f"spooled batch {batch.key} vanished: {exc}", exc)
        except Exception as exc:
            self._failed_write(number, batch, exc)
        else:
            # Fewer than the batch's events from a damaged spool file: the rest is lost
            # (``Spool.load`` said so).
            self._counters.lost += batch.events - payload.events
            self._counters.written += payload.events
            if payload.events:
                self._counters.batches += 1
                self._counters.bytes += len(payload.data)
            self._counters.pending_bytes -= len(batch.data)  # 0 for a batch read back from the spool
            self._retry_delay = _RETRY_MIN
            self.failure.pop(number, None)
        finally:
            self.inflight.pop(number, None)
            self._settled()

    def _failed_write(self, number: int, batch: Batch, exc: Exception) -> None:
        self._counters.write_errors += 1
        self.failed[number] = batch
        self.failure[number] = f"writing {batch.events} event(s) failed: {exc}"
        self._reporter.error("write", f"writing {batch.key} ({batch.events} events) failed: {exc}", exc)
        now = time.monotonic()
        if self._retry_at <= now:
            self._retry_at = now + self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, _RETRY_MAX)

    def retry_due(self, now: float) -> bool:
        return bool(self.failed) and now >= self._retry_at

    def retry_in(self, now: float) -> float | None:
        """Seconds until failed batches are retried; ``None`` with none failed."""
        return max(self._retry_at - now, 0.0) if self.failed else None

    def retry_failed(self) -> None:
        """Write every failed batch again, now."""
        failed, self.failed = self.failed, {}
        self._retry_at = time.monotonic() + self._retry_delay
        for number, batch in sorted(failed.items()):
            self.submit(number, batch)

    async def stop(self) -> None:
        """Cancel every write still running; what they held is ``failed`` afterwards."""
        self._stopped = True
        while self._tasks:  # a cancelled write may have started more: loop until none
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        # A write cancelled before it started is still "in flight".
        for number, batch in list(self.inflight.items()):
            self.failed[number] = batch
        self.inflight.clear()

    # -- the spool ------------------------------------------------------------------------

    def recover(self, reserve: Callable[[], int]) -> None:
        """Claim the spooled batches of this destination for delivery (once each)."""
        if self.spool is None:
            return
        try:
            recovered = self.spool.claim()
        except OSError as exc:
            self._reporter.error("spool", f"cannot read the spool {self.spool.directory}: {exc}", exc)
            return
        for batch in recovered:
            self.failed[reserve()] = batch
        if recovered:
            logger.info(
                "asynctrack: delivering %d spooled batch(es) (%d events) from %s",
                len(recovered),
                sum(b.events for b in recovered),
                self.spool.directory,
            )
            self._retry_at = 0.0

    def spill(self) -> None:
        """Memory is full and the destination down: move failed batches to the spool."""
        assert self.spool is not None
        for number, batch in sorted(self.failed.items()):
            if not batch.data:
                continue
            path = self._save(batch, claimed=True)
            if path is None:
                return
            self.failed[number] = dataclasses.replace(batch, data=b"", spool_path=path)
            self._counters.pending_bytes -= len(batch.data)

    def spool_unsent(self) -> None:
        """Stopping: every unsent batch to the spool (claimed ones back to it)."""
        if self.spool is None:
            return
        for number, batch in sorted(self.failed.items()):
            if batch.spool_path is not None:
                kept = self.spool.release(batch)
            else:
                kept = self._save(batch) is not None
                if kept:
                    self._counters.pending_bytes -= len(batch.data)
            if kept:
                del self.failed[number]
        self.spool.close()

    def _save(self, batch: Batch, *, claimed: bool = False) -> str | None:
        assert self.spool is not None
        try:
            path = self.spool.save(batch, claimed=claimed)
        except OSError as exc:
            self._reporter.error("spool", f"cannot write the spool {self.spool.directory}: {exc}", exc)
            return None
        if path is None:
            self._reporter.warn(
                "spool full",
                logging.ERROR,
                "asynctrack: spool %s is full (spool_max_bytes=%d); batches are no longer spooled",
                self.spool.root,
                self.spool.max_bytes,
            )
            return None
        self._counters.spooled += batch.events
        return path

    # -- readers ---------------------------------------------------------------------------

    def unsent_events(self) -> int:
        return sum(b.events for b in self.inflight.values()) + sum(b.events for b in self.failed.values())

    def pending(self, upto: int | None) -> tuple[int, int]:
        """(events not yet written, failed batches) among batches numbered <= ``upto``.

        Any thread: it copies the worker's dicts first (one C call each, atomic).
        """
        inflight = list(self.inflight.items())
        failed = list(self.failed.items())
        if upto is None:
            return sum(b.events for _, b in inflight + failed), len(failed)
        return (
            sum(b.events for n, b in inflight + failed if n <= upto),
            sum(1 for n, _ in failed if n <= upto),
        )

    def failed_upto(self, upto: int) -> list[tuple[int, Batch]]:
        """Batches numbered <= ``upto`` that are not written (failed or back in flight)."""
        return [(n, b) for n, b in [*self.failed.items(), *self.inflight.items()] if n <= upto]
