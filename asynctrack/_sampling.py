"""Which traces are recorded: the head decision, and the application's OpenTelemetry parent.

Both processes decide the same way, from data the run carries:

- a root run (no ``parent_run_id``) started inside an application OpenTelemetry span
  follows that span's sampled flag (OTel's parent-based sampler);
- any other root is sampled when ``randomness`` of its run id (56 bits of its BLAKE2b
  hash) is at least the rejection threshold ``(1 - rate) * 2**56``: the form of OTel's
  ``TraceIdRatioBased`` (a trace a rate keeps, every higher rate keeps), on a hash of
  the id because the id's own low bits are not random: LangChain's run ids are UUID
  version 7, whose low 64 bits are the variant (``10``), a counter that steps by one
  within a millisecond, and 32 random bits;
- a child follows its root; a run whose parent the tracker never saw (a tracker given
  to a model only) is decided on its parent's id, as a root: its siblings go with it.
  Its start line says so (``SAMPLED_APART``): the export does not place it in the trace
  of a root of its tracker, whose decision may differ.

The application's span is read only if ``opentelemetry.trace`` is already imported
(never imported here), at root starts only, and recorded in the root's start event as
``data.otel_parent``: a backfill from the files puts the run in the same trace.

In the application (``sample_rate`` under ``HEAD_SKIP_BELOW``, failed traces not kept),
the tracker's class is ``head_sampled(cls)``: its callbacks skip an event of a trace not
sampled at their entry, before the capture does any work for it.
"""

from __future__ import annotations

import hashlib
import sys
import uuid
from collections.abc import Callable
from typing import Any, Final

from ._events._schema import ENDS, EVENT_KINDS, STARTS

__all__ = [
    "HEAD_SKIP_BELOW",
    "OTEL_PARENT",
    "OTEL_TRACE",
    "RANDOMNESS",
    "SAMPLED_APART",
    "application_parent",
    "head_sampled",
    "randomness",
    "ratio_threshold",
    "root_sampled",
    "run_int",
]

OTEL_TRACE: Final = "opentelemetry.trace"
_OTEL_CONTEXT: Final = "opentelemetry.context"  # imported by opentelemetry.trace
#: ``head_sampled`` pays under this rate: its wrapper skips a trace not sampled for ~1,500
#: (callbacks called directly) to ~3,500 (sync ``prompt | llm``) instructions less per
#: event, and costs an event that is sampled ~5,400 more (callgrind): even at ~0.32-0.39.
HEAD_SKIP_BELOW: Final = 0.3
#: Live runs of traces not sampled a tracker remembers (beyond: the oldest is forgotten).
MAX_UNSAMPLED: Final = 65_536
#: The key of the application span's context in a root start event's ``data``.
OTEL_PARENT: Final = "otel_parent"
#: The envelope key, ``true``, of the start line of a run decided on its parent's id, its
#: parent never seen (written at a ``sample_rate`` under 1.0 only).
SAMPLED_APART: Final = "sampled_apart"
#: The largest ``randomness``: a root's sampling is decided on 56 bits.
RANDOMNESS: Final = (1 << 56) - 1
_blake2b: Final = hashlib.blake2b
_from_bytes: Final = int.from_bytes


def randomness(run: int) -> int:
    """The 56 bits a root run's sampling is decided on: of the BLAKE2b hash of its id
    (a UUID's 128 bits; any other integer's text). ~0.45 µs, at root starts only."""
    try:
        data = run.to_bytes(16, "big")
    except OverflowError:  # a negative or longer integer given as a run id
        data = str(run).encode()
    return _from_bytes(_blake2b(data, digest_size=7).digest(), "big")


def ratio_threshold(rate: float) -> int:
    """The rejection threshold of ``rate``: a root whose ``randomness`` is under it is
    not sampled (0 at rate 1: all; ``2**56`` at rate 0: none)."""
    return round((1.0 - rate) * (RANDOMNESS + 1))


def run_int(run_id: Any) -> int | None:
    """A run id (a ``UUID``, its integer, or its text in the worker process) as an integer,
    or ``None``."""
    if type(run_id) is int:
        return run_id
    if type(run_id) is uuid.UUID:
        return run_id.int
    try:
        return uuid.UUID(str(run_id)).int
    except ValueError:
        return None


def root_sampled(run: int | None, threshold: int, parent: Any) -> bool:
    """Whether the trace of the root run ``run`` is recorded.

    Args:
        run: the root's run id as an integer (``None``: unreadable, recorded).
        threshold: ``ratio_threshold(rate)``.
        parent: the application span's context recorded with the root (``data.otel_parent``),
            or ``None``.
    """
    if type(parent) is dict:
        sampled = parent.get("sampled")
        if type(sampled) is bool:
            return sampled
    return run is None or randomness(run) >= threshold


def application_parent() -> dict[str, Any] | None:
    """The application's active OpenTelemetry span on this thread, as plain data, or ``None``.

    ``{"trace_id": 32 hex digits, "span_id": 16 hex digits, "sampled": bool}``. Costs a
    dictionary look-up when ``opentelemetry-api`` is not in use, and a read of the empty
    current OTel context when it is imported but holds no span here (LangSmith's client
    imports it: the span API's five Python calls were ~5,800 instructions a root start);
    never raises.
    """
    trace = sys.modules.get(OTEL_TRACE)
    if trace is None:
        return None
    try:
        if not sys.modules[_OTEL_CONTEXT].get_current():  # nothing in the context: no span
            return None
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return {
            "trace_id": format(context.trace_id, "032x"),
            "span_id": format(context.span_id, "016x"),
            "sampled": bool(context.trace_flags & 0x01),
        }
    except Exception:  # a broken or foreign tracer: the run is recorded as a root of its own
        return None


_HEAD_SAMPLED: dict[type[Any], type[Any]] = {}
_modules: Final = sys.modules


def head_sampled(cls: type[Any]) -> type[Any]:
    """A subclass of the tracker class ``cls`` whose callbacks skip an event of a trace not
    sampled at their entry: no capture, no arguments' dict, no call into the recording.

    Each ``on_<kind>`` callback takes the head decision itself, on the tracker's
    ``_unsampled`` (the live runs of traces not sampled), ``_threshold`` and ``_sampled_out``:
    a root start is out when its ``randomness`` is under the threshold and no application
    span is active (with one, its flag decides, in ``cls``'s method); a child start when
    its parent is out; any other event when its run is out (an end forgets the run). Every event not
    skipped goes to ``cls``'s method as it came, which decides again (``_record_sampled``):
    roots inside an application span, ids that are not ``UUID`` objects, LangGraph's
    lifecycle events.
    """
    known = _HEAD_SAMPLED.get(cls)
    if known is None:
        methods: dict[str, Any] = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        for name in dir(cls):
            if name.startswith("on_") and name[3:] in EVENT_KINDS:
                methods[name] = _skipping(getattr(cls, name), name[3:])
        known = type(cls.__name__, (cls,), methods)
        _HEAD_SAMPLED[cls] = _HEAD_SAMPLED[known] = known
    return known


def _skipping(method: Callable[..., Any], kind: str) -> Callable[..., Any]:
    """``method`` (an ``on_<kind>`` callback) behind the head decision (``head_sampled``).
    Never raises on its own: what it cannot read goes to ``method``."""
    if kind in STARTS:

        def start(self: Any, *args: Any, run_id: Any, parent_run_id: Any = None, **kwargs: Any) -> Any:
            try:
                unsampled = self._unsampled
                if parent_run_id is not None:
                    skip = parent_run_id.int in unsampled
                else:  # the ratio first: the application's span is read only to skip
                    skip = randomness(run_id.int) < self._threshold and (
                        OTEL_TRACE not in _modules or application_parent() is None
                    )
                if skip:
                    if len(unsampled) >= MAX_UNSAMPLED:  # runs that never end: forget the oldest
                        del unsampled[next(iter(unsampled))]
                    unsampled[run_id.int] = None
                    self._sampled_out += 1
                    return None
            except Exception:  # an id that is not a UUID: the method decides
                pass
            return method(self, *args, run_id=run_id, parent_run_id=parent_run_id, **kwargs)

        return start
    if kind in ENDS:

        def end(self: Any, *args: Any, run_id: Any, **kwargs: Any) -> Any:
            try:
                run = run_id.int
                unsampled = self._unsampled
                if run in unsampled:
                    del unsampled[run]
                    self._sampled_out += 1
                    return None
            except Exception:  # an id that is not a UUID (or a race on the same run)
                pass
            return method(self, *args, run_id=run_id, **kwargs)

        return end

    def during(self: Any, *args: Any, run_id: Any, **kwargs: Any) -> Any:
        try:
            if run_id.int in self._unsampled:
                self._sampled_out += 1
                return None
        except Exception:  # an id that is not a UUID: the method decides
            pass
        return method(self, *args, run_id=run_id, **kwargs)

    return during
