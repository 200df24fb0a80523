"""What the engine counts, and how it says what went wrong (OTel's ``_processor_metrics``).

``Counters`` are written by the worker thread only (the drop counter lives in the
buffer, under its lock); ``Statistics`` is the frozen snapshot callers get. The
``Reporter`` keeps the last error (for ``FlushError`` messages) and rate-limits
the log: one line per kind of trouble per ``_WARN_EVERY`` seconds.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Final, Literal

from .._errors import PermanentSinkError

__all__ = ["Counters", "Reporter", "Statistics"]

logger = logging.getLogger("asynctrack")

_WARN_EVERY: Final = 10.0  # seconds between repeated warnings of one kind


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Statistics:
    """A snapshot of a tracker's counters (see ``AsyncTracker.statistics()``).

    Attributes:
        recorded: events accepted into the buffer (never more than callbacks made).
        written: events on durable storage.
        dropped: events refused: buffer full (``max_queue_events`` or
            ``max_queue_bytes``), recorded after close, or whose capture raised (the
            drop warning says which).
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
        worker_mode: where the worker runs: ``"thread"`` (in this interpreter) or
            ``"process"`` (a separate worker process).
        worker_restarts: times the worker process died and was started again
            (always 0 in thread mode).
        retained_bytes: captured bytes kept by the application for re-sending to
            a restarted worker process (always 0 in thread mode).
        spans_exported: spans the exporters (``OTLPExporter``) delivered.
        spans_failed: spans the exporters gave up on (refused after retries, or
            dropped when their queue was full).
        mlflow_traces_logged: traces ``MLflowParameters`` logged to MLflow.
        mlflow_traces_failed: traces ``MLflowParameters`` did not log: refused
            after retries, a server without traces, over the memory bound, or
            still waiting at close.
        sampled_out: events of traces not sampled (``sample_rate``) and not
            written: skipped by the callbacks, or held by the worker and dropped
            because none of the trace's runs failed (or pushed out by the
            bound on held lines, ``max_queue_bytes // 4``).
        sampled_out_failing: of ``sampled_out``, events of traces not sampled
            that failed (``sample_keep_errors``) but had been pushed out by that
            bound before: the trace's failure and later events are written, these
            are not (a warning says it, once per tracker).
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
    worker_mode: Literal["thread", "process"] = "thread"
    worker_restarts: int = 0
    retained_bytes: int = 0
    spans_exported: int = 0
    spans_failed: int = 0
    sampled_out: int = 0
    mlflow_traces_logged: int = 0
    mlflow_traces_failed: int = 0
    sampled_out_failing: int = 0


class Counters:
    """The worker's running totals (plain attributes: one writer, the worker thread)."""

    __slots__ = (
        "batches",
        "bytes",
        "encode_errors",
        "filtered",
        "lost",
        "parameter_errors",
        "pending_bytes",
        "spooled",
        "write_errors",
        "written",
    )

    def __init__(self) -> None:
        self.written = 0
        self.filtered = 0
        self.lost = 0
        self.spooled = 0
        self.encode_errors = 0
        self.write_errors = 0
        self.parameter_errors = 0
        self.batches = 0
        self.bytes = 0
        self.pending_bytes = 0


class Reporter:
    """The last error, and a log that says each kind of trouble at most every 10 s."""

    def __init__(self) -> None:
        self.last_error = ""
        self._warned_at: dict[str, float] = {}
        self._dropped_warned = 0
        self._reasons_warned: dict[str, int] = {}

    def error(self, kind: str, message: str, exc: BaseException) -> None:
        """Remember ``message`` as the last error and log it (rate-limited per ``kind``)."""
        self.last_error = message
        level = logging.ERROR if isinstance(exc, PermanentSinkError) else logging.WARNING
        self.warn(kind, level, "asynctrack: %s", message)

    def warn(self, kind: str, level: int, msg: str, *args: object) -> None:
        """Log ``msg`` unless a message of this ``kind`` was logged in the last 10 s."""
        now = time.monotonic()
        if now - self._warned_at.get(kind, -_WARN_EVERY) >= _WARN_EVERY:
            self._warned_at[kind] = now
            logger.log(level, msg, *args)

    def drops(self, dropped: int, reasons: Mapping[str, int]) -> None:
        """Say how many events were dropped since the last time it was said, and why
        (``dropped`` in all; ``reasons``: how many for each reason, the queue's
        ``dropped_by``)."""
        if dropped == self._dropped_warned:
            return
        now = time.monotonic()
        if now - self._warned_at.get("drop", -_WARN_EVERY) >= _WARN_EVERY:
            self._warned_at["drop"] = now
            counts = dict(reasons)  # one C call: the producers may count more meanwhile
            dropped = sum(counts.values())
            said = self._reasons_warned
            why = ", ".join(
                f"{n - said.get(reason, 0)} {reason}"
                for reason, n in counts.items()
                if n != said.get(reason, 0)
            )
            logger.warning(
                "asynctrack dropped %d event(s) (%d in all): %s", dropped - self._dropped_warned, dropped, why
            )
            self._dropped_warned = dropped
            self._reasons_warned = counts
