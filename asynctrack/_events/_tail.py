"""Traces not sampled, kept if a run fails: ``TailSampler`` (worker side).

With ``sample_rate`` under 1.0 and ``sample_keep_errors`` on, the application captures
every trace and the worker decides, from the same data and by the same rule as the
application would (``asynctrack._sampling``). A sampled trace's lines pass through.
A trace not sampled has its lines held here, in order:

- when one of its runs fails, the held lines and every later one are written, each
  marked ``"sampled": false`` (kept for its error, not by the sample); a LangGraph
  interrupt (a graph paused for a human) is not a failure;
- when its root ends with no failure, the held lines are dropped and counted
  (``sampled_out``); a child that ends later is dropped too; so are the lines still
  held when the worker stops (``finish``).

A run whose parent was never seen (a tracker given to a model only) is decided on the
parent's id; not sampled, it is held as a trace of its own.

Held lines are bounded by bytes (``max_queue_bytes // 4``): past the bound the oldest
held trace's lines are dropped, counted in ``sampled_out``, and the trace goes on: its
later lines are held again. If one of its runs fails after that, what it still holds,
the failure and every later line (the root's end or error among them) are written as
above; the lines it lost to the bound are counted apart (``sampled_out_failing``, a
part of ``sampled_out``) and a warning says it, once per tracker: the trace's start
(its root's start among them) may be missing from the files. Held lines are resolved for
the worker process's acknowledgements when they are held (an empty list is returned
for them), so a long trace does not hold back the application's retention: if the
worker process dies, the held lines of traces not sampled are lost, at most that bound.
The files and the exporters get the same lines, so they see the same traces.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson

from .._config import TrackerConfig
from .._sampling import OTEL_PARENT, ratio_threshold, root_sampled, run_int
from ._schema import BODY, ENDS, EXTRA, KIND, PARENT_RUN_ID, RUN_ID, STARTS, id_value, is_interrupt

if TYPE_CHECKING:
    from .._pipeline._loop import ChunkTranslate

__all__ = ["TailSampler"]

logger = logging.getLogger("asynctrack")

_MAX_RUNS: Final = 100_000  # live runs remembered (the oldest forgotten)
_MARK: Final = b',"sampled":false}\n'
_PARENT_KEY: Final = b'"' + OTEL_PARENT.encode() + b'":{'


class _Trace:
    """A trace not sampled: its held lines, or whether it is kept or dropped."""

    __slots__ = ("dropped", "evicted", "held", "kept", "lines", "root")

    def __init__(self, root: Any) -> None:
        self.root = root
        self.lines: list[tuple[Any, ...]] = []  # (seq, line, ...) as the translator gave them
        self.held = 0
        self.kept = False  # a run failed: its lines are written
        self.dropped = False  # its root ended: its lines are dropped
        self.evicted = 0  # its lines dropped to the bound (its later lines are held again)


_SAMPLED: Final = _Trace(None)  # the trace of every live run of a trace sampled


class TailSampler:
    """A translator behind the sampling decision (a ``ChunkTranslate``).

    Per record, ``many`` returns what the inner translator did, or a list of lines:
    empty for a held or dropped line, the trace's held lines for the first failure.

    Attributes:
        sampled_out: lines held and then dropped (their trace had no failure, or
            they were pushed out by the bound).
        sampled_out_failing: of those, the lines pushed out of traces that failed
            later (written in part: from what was held at the failure on).
    """

    def __init__(self, translator: ChunkTranslate, config: TrackerConfig) -> None:
        self._inner = translator
        self._threshold = ratio_threshold(config.sample_rate)
        self.max_held = config.max_queue_bytes // 4
        self.held_bytes = 0
        self.sampled_out = 0
        self.sampled_out_failing = 0
        self._runs: dict[Any, _Trace] = {}  # a live run -> its trace (_SAMPLED: sampled)
        self._traces: dict[Any, _Trace] = {}  # root -> trace holding lines, oldest first

    def prepare(self, records: Sequence[Any], /) -> None:
        self._inner.prepare(records)

    def finish(self) -> None:
        """The worker stops: the traces still held (no run failed, the root never ended)
        are dropped, counted."""
        for trace in list(self._traces.values()):
            self.sampled_out += len(trace.lines)
            self._release(trace)
            trace.dropped = True

    def __call__(self, record: Any, /) -> Any:
        out = self.many((record,))[0]
        if isinstance(out, Exception):
            raise out
        return out

    def many(self, records: Sequence[Any], /) -> list[Any]:
        results = self._inner.many(records)
        runs = self._runs
        out: list[Any] = []
        for record, result in zip(records, results, strict=True):
            kind = record[KIND]
            run_id = record[RUN_ID]
            run = run_id
            if type(run) is not int:  # keyed as the translator keys it (a bytearray: hashable)
                run = run.int if type(run) is uuid.UUID else id_value(run)
            trace = runs.get(run)
            if trace is None:
                if kind in STARTS:
                    trace = self._decide(run, record)
                if trace is None:
                    out.append(result)
                    continue
            if kind in ENDS:
                runs.pop(run, None)
            out.append(result if trace is _SAMPLED else self._hold(trace, kind, run, result, record))
        return out

    def _decide(self, run: Any, record: Any) -> _Trace:
        """A start of a run not known: its trace (``_SAMPLED`` if that is sampled).

        A run whose parent was never seen (the tracker given to a model only) is decided
        on its parent's id, as a root: its siblings go the same way. Not sampled, it is a
        trace of its own (its end drops it; its failure keeps it)."""
        parent_run_id = record[PARENT_RUN_ID]
        if parent_run_id is None:
            if root_sampled(run_int(run), self._threshold, _recorded_parent(record[BODY])):
                trace = _SAMPLED
            else:
                trace = self._traces[run] = _Trace(run)
        else:
            parent = parent_run_id
            if type(parent) is not int:
                parent = parent.int if type(parent) is uuid.UUID else id_value(parent)
            found = self._runs.get(parent)
            if found is not None:
                trace = found
            elif root_sampled(run_int(parent), self._threshold, None):
                trace = _SAMPLED
            else:
                trace = self._traces[run] = _Trace(run)
        runs = self._runs
        if len(runs) >= _MAX_RUNS:
            runs.pop(next(iter(runs)))
        runs[run] = trace
        return trace

    def _hold(self, trace: _Trace, kind: str, run: Any, result: Any, record: Any) -> Any:
        if type(result) is not tuple:  # dropped by the redact hook, or failed: as it is
            return result
        if trace.kept:
            return (result[0], _marked(result[1]))
        if trace.dropped:
            self.sampled_out += 1
            return []
        # A failure keeps the trace: everything held, then this line. LangGraph pausing a
        # graph for a human (its GraphInterrupt) is control flow, not a failure.
        if kind.endswith("_error") and not is_interrupt(record[EXTRA]):
            if trace.evicted:
                self._lost_to_bound(trace)
            lines = [(held[0], _marked(held[1])) for held in trace.lines]
            lines.append((result[0], _marked(result[1])))
            self._release(trace)
            trace.kept = True
            return lines
        if kind in ENDS and run == trace.root:  # the root ended, nothing failed
            self.sampled_out += len(trace.lines) + 1
            self._release(trace)
            trace.dropped = True
            return []
        if trace.evicted and not trace.lines:
            self._traces[trace.root] = trace  # pushed out before: held again, the newest
        trace.lines.append(result)
        size = len(result[1])
        trace.held += size
        self.held_bytes += size
        while self.held_bytes > self.max_held and self._traces:
            oldest = self._traces[next(iter(self._traces))]
            self.sampled_out += len(oldest.lines)
            oldest.evicted += len(oldest.lines)
            self._release(oldest)
        return []

    def _lost_to_bound(self, trace: _Trace) -> None:
        """A trace pushed out by the bound failed: count its lost lines; say it once."""
        if not self.sampled_out_failing:
            logger.warning(
                "asynctrack: a trace not sampled failed after %d of its events were dropped: it held "
                "more than max_queue_bytes // 4 (%d bytes) waiting for a failure. Its failure and "
                'later events are written ("sampled": false), its earlier ones are not '
                "(statistics().sampled_out_failing counts them; said once per tracker)",
                trace.evicted,
                self.max_held,
            )
        self.sampled_out_failing += trace.evicted
        trace.evicted = 0

    def _release(self, trace: _Trace) -> None:
        self.held_bytes -= trace.held
        trace.held = 0
        trace.lines = []
        self._traces.pop(trace.root, None)


def _marked(line: bytes) -> bytes:
    return line[:-2] + _MARK if line.endswith(b"}\n") else line


def _recorded_parent(body: Any) -> Any:
    """The application span recorded with a root start (``data.otel_parent``), or ``None``."""
    if type(body) is not bytes or _PARENT_KEY not in body:
        return None
    try:
        data = orjson.loads(body).get("data")
        return data.get(OTEL_PARENT) if type(data) is dict else None
    except Exception:  # not ours to judge: the root is decided by its id
        return None
