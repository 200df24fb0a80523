"""The worker process: hosts one engine per tracker of its application.

Started by the application (``python .../_worker/_boot.py``) with two pipes: it
reads frames on stdin and answers on stdout (see ``_channel``). Everything after the
capture runs here: envelope, redaction, batching, compression, uploads, retries, spool,
run parameters, SageMaker calls. The application's process only captures and ships.

Wake-ups: on a shared 2-core machine a thread's wake-up costs ~35 µs of CPU before
any work, and the work right after it runs with cold caches (unmarshalling a frame of
7 records: ~4 µs in a loop, ~40 µs after a 30 ms sleep; measured). So the fixed cost
per frame is kept to one thread's wake-up and little work: the boot script's reader
thread dispatches each read's frames itself (``_Host.feed``), and queues a frame's
records still packed (``_Tracker.records``: its bytes and its record count). The
engine's thread unpacks them when it takes them, right before it translates them, a
chunk at a time; it wakes only on a backlog, a control item, a due batch, or the first
record after it slept with nothing open.

Lifetime: when the application closes its end (it exited, was killed, crashed), the
reader sees end of file, closes every engine (flush, spool what cannot be written)
within ``ASYNCTRACK_EXIT_TIMEOUT`` seconds, and exits. A watchdog ends the process a
little after that deadline whatever happens, so the worker never outlives its
application by more than the bounded drain time.

Acknowledgements: the application keeps every ``RECORDS`` frame until it is
acknowledged, to re-send it to a new worker if this one dies. A frame is acknowledged
once each of its events is durable (in a written batch or in the spool) or resolved
otherwise (dropped by the ``redact`` hook); ``ACK n`` says so for every frame up to ``n``.
Its payload (``ACK_COUNTS``) is ``(written, batches, bytes)``: the events of the acknowledged
frames in written batches (and those written again from the spool), and the batches and
bytes written, all since this worker started. An ACK goes out after each written batch,
even one that acknowledges no new frame, so the counts of a worker that dies are exact up
to its last ACK: an application never re-sends what they cover, and a re-sent frame's
events are counted by the worker that writes them next (``_client.worker_died``).
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import itertools
import logging
import operator
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from .._channel import ACK_COUNTS, FrameReader, Kind, encode_frame, read_records, records_count, write_all
from .._errors import FlushError, FlushTimeoutError
from .._events._schema import SEQ
from .._exit import exit_timeout
from .._langchain._spec import TrackerSpec
from .._pipeline._durable import DurableHooks, Packed, apply_environ, batch_seqs
from .._pipeline._queue import NEVER
from .._pipeline._statistics import Statistics
from .._sinks._base import Batch

__all__ = ["main"]

logger = logging.getLogger("asynctrack")

_SEQ: Final = operator.itemgetter(SEQ)
_COUNT: Final = operator.itemgetter(2)  # of a queued [frame, payload, records]
#: The counters whose change sends statistics to the application.
_CHANGES: Final = (
    "written",
    "failed",
    "lost",
    "spooled",
    "write_errors",
    "dropped",
    "spans_exported",
    "spans_failed",
    "sampled_out",
    "mlflow_traces_logged",
    "mlflow_traces_failed",
    "sampled_out_failing",
)
_CHANGED: Final = operator.attrgetter(*_CHANGES)
_STATS_EVERY: Final = 0.25  # seconds between unsolicited statistics of a busy tracker
_GRACE: Final = 2.0  # seconds past the exit timeout before the watchdog ends the process
#: The worker process's collector: young collections every 10,000 net allocations, not
#: 700. Its allocations are records that live a few milliseconds (one list per event,
#: from the frame to the batch): at 700, every young collection finds a frame's records
#: alive and promotes them, and the older collections walk them again (measured: ~200 ms
#: of 2.3 s of the worker's CPU for 300k events at 700; ~70 ms with this and ``freeze``).
_GC_THRESHOLD: Final = (10_000, 10, 10)


class _Out:
    """The answering pipe, shared by every thread of the worker."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self.broken = False

    def send(self, kind: Kind, tracker: int, number: int, payload: bytes = b"") -> None:
        frame = encode_frame(kind, tracker, number, payload)
        with self._lock:
            if self.broken:
                return
            try:
                write_all(self._fd, frame)
            except OSError:  # the application is gone; the drain goes on regardless
                self.broken = True


class _LogForwarder(logging.Handler):
    """Sends the worker's log records to the application's ``asynctrack`` logger."""

    def __init__(self, out: _Out) -> None:
        super().__init__(logging.INFO)
        self._out = out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message += f" ({record.exc_info[1]!r})"
            self._out.send(Kind.LOG, 0, 0, pickle.dumps((record.levelno, message)))
        except Exception:  # logging must never break the worker
            pass


class _Tracker:
    """One tracker's engine and the bookkeeping of what is acknowledged."""

    def __init__(self, number: int, out: _Out, spec: TrackerSpec) -> None:
        self.number = number
        self._out = out
        self._lock = threading.Lock()
        self._frame_of: dict[int, int] = {}  # seq -> RECORDS frame holding it
        self._remaining: dict[int, int] = {}  # frame -> events not yet resolved (ordered)
        self._written: dict[int, int] = {}  # frame -> its events in written batches, until acked
        self._acked = 0
        # What the acknowledgements cover (sent with each ACK): the events of acknowledged
        # frames in written batches, the batches and bytes written.
        self._acked_written = 0
        self._batches = 0
        self._bytes = 0
        self._stats_sent: object = ()
        # Bytes of the frames not yet acknowledged: what this worker holds for the
        # tracker, from its engine's queue to its failed batches. The worker's memory
        # bound (max_queue_bytes) is kept here, and only here, under "drop"; under
        # "block" the application's lane ships no more than max_queue_bytes beyond what
        # is acknowledged, which bounds it already.
        self._frame_bytes: dict[int, int] = {}
        self._held_bytes = 0
        self._max_bytes = spec.config.max_queue_bytes
        self._drop_over_bytes = spec.config.when_full == "drop"
        # The drop warning's reason (the worker's drops are logged by its engine).
        slow = "held by the worker process: the destination is slow or down"
        self._over_bytes = f"over max_queue_bytes={self._max_bytes} {slow}"
        # One reader thread builds the engines one at a time: the environment set here
        # is this tracker's while its sinks are made (its sinks read it when they start).
        apply_environ(spec.environ)
        config = spec.config
        # One reader thread feeds every tracker's engine: a full queue must never make it
        # wait (one stalled destination would stall every tracker of the application), so
        # the engine here drops. Its queue has no count bound of its own: the count bound
        # holds in the application's queue, and the bytes held here are bounded above.
        engine_config = dataclasses.replace(config, when_full="drop", handle_sigterm=False)
        self.engine, _ = spec.build(
            hooks=DurableHooks(
                batch=self._durable_batch, filtered=self._resolved_one, spooled=self._spooled_batch
            ),
            config=engine_config,
            queue_events=NEVER,
            packed=Packed(records_in=_COUNT, unpack=self._unpack),
        )

    # -- records in ------------------------------------------------------------------

    def records(self, frame: int, payload: bytes) -> None:
        """Queue the records of ``frame`` for the engine, packed: its thread unpacks
        them (``_unpack``) when it takes them, right before it translates them."""
        try:
            count = records_count(payload)
        except ValueError as exc:  # never seen: the application wrote every frame
            self._unreadable(frame, 1, exc)
            return
        size = len(payload)
        if not count:
            self._settle_unread(frame)  # nothing in it to wait for
            return
        if self._drop_over_bytes and self._held_bytes + size > self._max_bytes and self._frame_bytes:
            # Memory bound by bytes (the destination is slow or down): what this worker
            # holds for the tracker, from its buffer to its failed batches, stays within
            # max_queue_bytes (plus one frame). The frame is dropped, counted, resolved.
            self.engine.count_dropped(count, self._over_bytes)
            self._settle_unread(frame)
            return
        with self._lock:
            self._held_bytes += size
            self._frame_bytes[frame] = size
            self._remaining[frame] = count
        self.engine.put([frame, payload, count])

    def _unpack(self, items: Sequence[list[Any]]) -> list[tuple[Any, ...]]:
        """The records of queued frames, ``[frame, payload, count]`` each, in order (engine
        worker thread).

        Records arrive as tuples, (kind, seq, ts, run_id, parent_run_id, name, body,
        extra): the translator's shape, the run ids as ints, the bodies bytes.
        """
        records: list[tuple[Any, ...]] = []
        for item in items:
            frame, payload, count = item
            item[1] = b""  # the records hold the bodies now: the payload is not kept twice
            try:
                unpacked = read_records(payload)
            except ValueError as exc:  # never seen: the application wrote every frame
                self._unreadable(frame, count, exc)
                continue
            seqs = list(map(_SEQ, unpacked))
            with self._lock:
                self._frame_of.update(dict.fromkeys(seqs, frame))
            records += unpacked
        return records

    def _unreadable(self, frame: int, count: int, exc: ValueError) -> None:
        logger.error("asynctrack worker: a frame of events was unreadable, its events are lost (%s)", exc)
        self.engine.count_dropped(count, "in a frame the worker process could not read")
        self._settle_unread(frame)

    def _settle_unread(self, frame: int) -> None:
        """``frame`` is resolved without its events (dropped, counted)."""
        with self._lock:
            self._remaining[frame] = 0
            self._frame_bytes[frame] = 0
        self._advance()

    # -- durability (engine worker thread) -------------------------------------------

    def _durable_batch(self, batch: Batch) -> None:
        """``batch`` is written (its bytes are ``batch.data``)."""
        try:
            seqs = batch_seqs(batch)
        except Exception:  # pragma: no cover - our own batch bytes
            logger.exception("asynctrack worker: cannot read back a written batch")
            seqs = []
        self._resolve(seqs, len(batch.data))

    def _spooled_batch(self, batch: Batch) -> None:
        """``batch`` is saved to the spool: durable, not written."""
        try:
            seqs = batch_seqs(batch)
        except Exception:  # pragma: no cover - our own batch bytes
            logger.exception("asynctrack worker: cannot read back a spooled batch")
            return
        self._resolve(seqs)

    def _resolved_one(self, seq: int) -> None:
        self._resolve((seq,))

    def _resolve(self, seqs: Iterable[int], written: int | None = None) -> None:
        """``seqs`` are resolved; ``written``: the bytes of the batch that wrote them."""
        with self._lock:
            remaining = self._remaining
            # One C loop takes the frame of each sequence number (None: resolved before).
            frames = collections.Counter(map(self._frame_of.pop, seqs, itertools.repeat(None)))
            if written is None:
                for frame, count in frames.items():
                    if frame is not None:
                        remaining[frame] -= count
                report = False
            else:
                self._batches += 1
                self._bytes += written
                pending = self._written
                for frame, count in frames.items():
                    if frame is None:  # written again from the spool, or held by sampling
                        self._acked_written += count
                    else:
                        remaining[frame] -= count
                        pending[frame] = pending.get(frame, 0) + count
                report = True
        self._advance(report)

    def _advance(self, report: bool = False) -> None:
        """Acknowledge the frames now resolved, if any; ``report``: send the counts even
        if none is (a batch was written)."""
        acked = None
        with self._lock:
            remaining = self._remaining
            written = self._written
            while remaining:
                frame = next(iter(remaining))
                if remaining[frame] > 0:
                    break
                del remaining[frame]
                self._held_bytes -= self._frame_bytes.pop(frame, 0)
                self._acked_written += written.pop(frame, 0)
                acked = frame
            if acked is not None:
                self._acked = acked
            elif not report:
                return
            number = self._acked
            counts = (self._acked_written, self._batches, self._bytes)
        # Two threads may send out of order: the counts only grow, the application keeps
        # the highest of each.
        self._out.send(Kind.ACK, self.number, number, ACK_COUNTS.pack(*counts))

    # -- control -----------------------------------------------------------------------

    def statistics(self, snapshot: Statistics | None = None) -> dict[str, Any]:
        """``snapshot`` (by default the engine's statistics now) as the dict that crosses."""
        stats = dataclasses.asdict(snapshot if snapshot is not None else self.engine.statistics())
        # What the last failure was, for a flush that times out in the application.
        stats["last_error"] = self.engine.last_error
        return stats

    def send_statistics_if_changed(self) -> bool:
        """Send the statistics if they changed; whether the engine is at rest (nothing
        queued, open, pending or failed: nothing changes until new records come)."""
        snapshot = self.engine.statistics()
        key = _CHANGED(snapshot)
        if key != self._stats_sent:
            # The dict and the pickle only when something changed (a tick that finds
            # none, most of a trickle's, reads the counters alone).
            self._stats_sent = key
            self._out.send(Kind.STATS, self.number, 0, pickle.dumps(self.statistics(snapshot)))
            return False
        return not (snapshot.queue_depth or snapshot.pending_bytes or snapshot.failed or self._remaining)

    def answer(self, kind: Kind, request: int, error: BaseException | None) -> None:
        outcome: dict[str, Any] = {
            "error": _error_fields(error),
            "statistics": self.statistics(),
            "parameters": self.engine.last_parameters,
        }
        self._out.send(kind, self.number, request, pickle.dumps(outcome))

    def flush(self, request: int, timeout: float | None) -> None:
        self._answer_after(Kind.FLUSHED, request, self.engine.flush_blocking, timeout)

    def close(self, request: int, timeout: float | None) -> None:
        self._answer_after(Kind.CLOSED, request, self.engine.close, timeout)

    def _answer_after(
        self, kind: Kind, request: int, call: Callable[[float | None], object], timeout: float | None
    ) -> None:
        """Run ``call(timeout)``, then answer ``request`` with its error, if any."""
        try:
            call(timeout)
        except Exception as exc:
            self.answer(kind, request, exc)
        else:
            self.answer(kind, request, None)


def _error_fields(error: BaseException | None) -> dict[str, Any] | None:
    if error is None:
        return None
    if isinstance(error, FlushError):
        fields: dict[str, Any] = {
            "pending": error.pending,
            "queued": error.queued,
            "failed_batches": error.failed_batches,
            "reason": error.reason,
        }
        if isinstance(error, FlushTimeoutError):
            fields["timeout"] = error.timeout
        return fields
    return {"pending": 0, "reason": f"{type(error).__name__}: {error}"}


class _Host:
    def __init__(self, out_fd: int) -> None:
        self.out = _Out(out_fd)
        self._frames = FrameReader()
        self._trackers: dict[int, _Tracker] = {}
        self._closing: list[threading.Thread] = []  # closes the application asked for
        #: Trackers whose close is under way: a later CLOSE, or the drain, may bring its
        #: deadline nearer.
        self._closing_entries: dict[int, _Tracker] = {}
        self._ended = threading.Event()  # the channel ended (or broke): drain
        self._done = threading.Event()
        #: Set by every frame that arrives: the statistics ticker runs again.
        self._activity = threading.Event()

    def serve(self, channel: Callable[[Callable[[bytes], None]], None]) -> None:
        """Take the channel's bytes (``channel(self.feed)``) until it ends, then drain."""
        ticker = threading.Thread(target=self._tick, name="asynctrack-worker-stats", daemon=True)
        ticker.start()
        channel(self.feed)
        self._ended.wait()
        self._drain()

    def feed(self, data: bytes) -> None:
        """Dispatch the frames that ``data``, the channel's next bytes, completes (``b""``:
        the end of file). On the reader thread; never raises."""
        if self._ended.is_set():
            return  # the channel broke: nothing after that is read
        try:
            for kind, tracker, number, payload in self._frames.feed(data):
                self._dispatch(kind, tracker, number, payload)
        except ValueError as exc:
            logger.error("asynctrack worker: the channel broke (%s); draining what arrived", exc)
            self._ended.set()
        except Exception:  # a bug: the application starts a new worker and re-sends
            logger.exception("asynctrack worker: a frame could not be handled; draining what arrived")
            self._ended.set()
        if not data:
            self._ended.set()

    def _dispatch(self, kind: Kind, tracker: int, number: int, payload: bytes) -> None:
        if not self._activity.is_set():
            self._activity.set()
        if kind is Kind.RECORDS:
            entry = self._trackers.get(tracker)
            if entry is not None:
                entry.records(number, payload)
            return
        if kind is Kind.OPEN:
            try:
                spec = pickle.loads(payload)
                if not isinstance(spec, TrackerSpec):
                    raise TypeError(f"a tracker's spec is a {type(spec).__name__}")
                self._trackers[tracker] = _Tracker(tracker, self.out, spec)
            except Exception as exc:
                self.out.send(Kind.OPENED, tracker, 0, pickle.dumps(f"{type(exc).__name__}: {exc}"))
            else:
                self.out.send(Kind.OPENED, tracker, 0, pickle.dumps(None))
            return
        entry = self._trackers.get(tracker)
        if entry is None:
            entry = self._closing_entries.get(tracker)
            if entry is None or kind is not Kind.CLOSE:
                return
        if kind is Kind.SEAL:
            # The application ships no more until what it shipped is acknowledged: what
            # it shipped must not wait for batch_interval (nor more records) to be written.
            entry.engine.seal_soon()
            return
        # The request's deadline, on the clock both processes read (``time.monotonic()``):
        # what remains of it is the timeout here.
        deadline = pickle.loads(payload) if payload else None
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        if kind is Kind.FLUSH:
            threading.Thread(target=entry.flush, args=(number, timeout), daemon=True).start()
        elif kind is Kind.CLOSE:
            # A second CLOSE (the application's exit, a signal, a second close()) joins
            # the close under way, with its deadline if nearer (``Engine.close``); each
            # CLOSE is answered.
            self._trackers.pop(tracker, None)
            self._closing_entries[tracker] = entry
            closer = threading.Thread(target=self._close, args=(tracker, entry, number, timeout), daemon=True)
            closer.start()
            # The drain waits for it too; those that ended are let go (one close per
            # tracker, for the worker's life). Only this thread, the reader, changes it.
            self._closing = [thread for thread in self._closing if thread.is_alive()]
            self._closing.append(closer)

    def _close(self, tracker: int, entry: _Tracker, number: int, timeout: float | None) -> None:
        entry.close(number, timeout)
        self._closing_entries.pop(tracker, None)

    def _tick(self) -> None:
        """Send each tracker's changed statistics every ``_STATS_EVERY`` while any is at
        work; once every one is at rest, sleep until a frame arrives (an idle worker
        does not wake)."""
        while not self._done.is_set():
            self._activity.wait()
            while not self._done.wait(_STATS_EVERY):
                # Cleared before the look: a frame that comes after it sets it again.
                self._activity.clear()
                at_rest = True
                for entry in list(self._trackers.values()):
                    try:
                        at_rest = entry.send_statistics_if_changed() and at_rest
                    except Exception:  # pragma: no cover - statistics are best effort
                        pass
                if at_rest:
                    break

    def _drain(self) -> None:
        """The application is gone (or closed the channel): write everything, then exit."""
        timeout = max(exit_timeout(), 0.1)
        deadline = time.monotonic() + timeout
        watchdog = threading.Timer(timeout + _GRACE, os._exit, args=(3,))
        watchdog.daemon = True
        watchdog.start()
        closers = [thread for thread in self._closing if thread.is_alive()]
        for entry in list(self._closing_entries.values()):
            # A close under way (its deadline may be later) ends by the drain's deadline
            # too: its engine's close joins it with that deadline (its closer answers).
            thread = threading.Thread(
                target=_join_close, args=(entry, max(deadline - time.monotonic(), 0.1)), daemon=True
            )
            thread.start()
            closers.append(thread)
        for entry in list(self._trackers.values()):
            thread = threading.Thread(
                target=entry.close, args=(0, max(deadline - time.monotonic(), 0.1)), daemon=True
            )
            thread.start()
            closers.append(thread)
        for thread in closers:
            thread.join(max(deadline - time.monotonic(), 0.0) + _GRACE / 2)
        self._done.set()
        self._activity.set()


def _join_close(entry: _Tracker, timeout: float) -> None:
    """Bring ``entry``'s close under way to the deadline ``timeout`` and wait for it (its
    own closer reports the outcome)."""
    try:
        entry.engine.close(timeout)
    except Exception:  # said by the close under way
        pass


def main(channel: Callable[[Callable[[bytes], None]], None]) -> None:
    """The worker process's entry point (``_boot.py`` calls it with its ``serve``).

    ``channel(feed)`` hands ``feed`` the channel's bytes, in order (``b""`` at end of
    file): first what the boot script's thread read since the interpreter started,
    then each read on that thread.
    """
    # Keep stdout for frames only: a stray print() in a hook or a library must not
    # corrupt the channel. Stdin stays with the boot script's reader.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    # The application decides when we stop (it closes the channel); a Ctrl-C meant for
    # it must not cut our drain short. SIGTERM sent to this process ends it at once
    # (the application then starts a new worker and re-sends what was not acknowledged).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Ours to tune, this process (never the application's): what the imports made lives
    # as long as the process, so full collections need not walk it (``gc.freeze``), and
    # the young generation is sized for a stream of short-lived records.
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLD)
    host = _Host(out_fd)
    root = logging.getLogger("asynctrack")
    root.addHandler(_LogForwarder(host.out))
    root.setLevel(logging.INFO)
    root.propagate = False
    host.serve(channel)
    sys.stderr.flush()
    os._exit(0)
