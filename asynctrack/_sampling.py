"""Which traces are recorded: the head decision, and the application's OpenTelemetry parent.

Both processes decide the same way, from data the run carries:

- a root run (no ``parent_run_id``) started inside an application OpenTelemetry span
  follows that span's sampled flag (OTel's parent-based sampler);
- any other root is sampled when the low 64 bits of its run id are under
  ``rate * 2**64``: OTel's ``TraceIdRatioBased`` rule, on the id the export uses as the
  trace id, so a collector with the same ratio keeps the same traces;
- a child follows its root.

The application's span is read only if ``opentelemetry.trace`` is already imported
(never imported here), at root starts only, and recorded in the root's start event as
``data.otel_parent``: a backfill from the files puts the run in the same trace.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any, Final

__all__ = [
    "LOW_64",
    "OTEL_PARENT",
    "OTEL_TRACE",
    "application_parent",
    "ratio_bound",
    "root_sampled",
    "run_int",
]

OTEL_TRACE: Final = "opentelemetry.trace"
_OTEL_CONTEXT: Final = "opentelemetry.context"  # imported by opentelemetry.trace
#: The key of the application span's context in a root start event's ``data``.
OTEL_PARENT: Final = "otel_parent"
#: The bits of a root's id the ratio is decided on (the trace id's low 64 bits).
LOW_64: Final = (1 << 64) - 1


def ratio_bound(rate: float) -> int:
    """The bound the low 64 bits of a root's id must be under (``TraceIdRatioBased``'s)."""
    return round(rate * (LOW_64 + 1))


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


def root_sampled(run: int | None, bound: int, parent: Any) -> bool:
    """Whether the trace of the root run ``run`` is recorded.

    Args:
        run: the root's run id as an integer (``None``: unreadable, recorded).
        bound: ``ratio_bound(rate)``.
        parent: the application span's context recorded with the root (``data.otel_parent``),
            or ``None``.
    """
    if type(parent) is dict:
        sampled = parent.get("sampled")
        if type(sampled) is bool:
            return sampled
    return run is None or run & LOW_64 < bound


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
