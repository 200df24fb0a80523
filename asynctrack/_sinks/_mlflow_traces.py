"""Each LangChain root run as an MLflow trace, linked to the run ``MLflowParameters`` writes.

The spans come from the OTLP export's assembly (``_export._spans``: one span per run, the
run tree as parent links, the original timestamps), fed with the lines the worker writes,
so what MLflow gets is what the files hold, redacted the same way. Here they are read
back, given MLflow's span types, inputs, outputs and token usage, and grouped by trace:
a trace is complete when its root run ends (LangChain ends children before parents).

Each trace is logged soon after its root run ends (``MLflowTraces``: in batches, on a
thread of its own), through MLflow's client on the sink's thread (``log_spans`` for the
spans, with their ids and times, then ``start_trace`` for the run link; see
``MLflowParameters._log_traces``). A SageMaker managed MLflow server gets the same calls,
signed by the ``sagemaker-mlflow`` plugin.

MLflow's ids: the trace is ``tr-`` and the hex of the root run's id (search a trace by
the run id without dashes); span ids are the OTLP export's.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import functools
import json
import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from .._export._spans import SpanAssembler, trace_id_of
from ._base import RunInfo
from ._mlflow_plan import limit_in

if TYPE_CHECKING:
    import concurrent.futures

    from ._mlflow import MLflowParameters

__all__ = [
    "SPAN_TYPES",
    "MLflowTraces",
    "TraceGrouper",
    "TraceSpan",
    "decode_span",
    "mlflow_attributes",
    "span_type",
]

logger = logging.getLogger("asynctrack")

#: ``gen_ai.operation.name`` -> MLflow's span type; anything else (chains, graphs,
#: their steps) is a ``CHAIN``.
SPAN_TYPES: Final = {
    "chat": "CHAT_MODEL",
    "text_completion": "LLM",
    "execute_tool": "TOOL",
    "retrieval": "RETRIEVER",
    "invoke_agent": "AGENT",
    "embeddings": "EMBEDDING",
}
# The span attributes (JSON text, written only with content on) that are a run's
# inputs and outputs, by kind of run.
_INPUTS: Final = ("gen_ai.input.messages", "gen_ai.tool.call.arguments", "langchain.inputs")
_OUTPUTS: Final = ("gen_ai.output.messages", "gen_ai.tool.call.result", "langchain.outputs")
_TRACE_TAG: Final = "mlflow.traceTag."  # a root span attribute MLflow's log_spans makes a trace tag
_STATUS: Final = ("STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR")
_WARN_EVERY: Final = 10.0  # seconds between two failure warnings
#: A batch of traces goes when this many wait (MLflow links at most 100 per call), ...
MAX_BATCH_TRACES: Final = 32
#: ... or their spans hold this many bytes (encoded; one request to MLflow) ...
MAX_BATCH_BYTES: Final = 1024 * 1024
#: ... or the first one has waited this many seconds (or a flush or the close asks).
DELAY: Final = 1.0
_JOIN_GRACE: Final = 0.05  # seconds past the close's timeout for the thread to end
_OVERDUE_POLL: Final = 0.25  # seconds between two looks at the sink's call while waiting for it


@dataclasses.dataclass(slots=True, kw_only=True)
class TraceSpan:
    """One span, read back from the OTLP bytes the assembly wrote."""

    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, int, dict[str, Any]]]
    status: int  # 0 unset, 1 ok, 2 error (OTLP's codes)
    status_message: str
    size: int  # the encoded bytes: what the span holds in memory, roughly


@dataclasses.dataclass(frozen=True, slots=True)
class _Limits:
    """MLflow's limits on a trace, in characters (MLflow 3.x's; ``_limits()`` reads the installed one's).

    A store refuses a trace whose name (its root span's) is over ``tag_value`` or whose
    session id (``session.id``, ``gen_ai.conversation.id``) is over ``metadata``, and with
    it every trace of the call; tag values over 8000 and metadata values over ``metadata``
    (what every store takes) fail or are cut on some stores; previews are columns of
    ``preview``. Span names, attribute keys and values and events have no limit of their own.
    """

    tag_value: int = 4096
    metadata: int = 250
    preview: int = 1000


@functools.cache
def _limits() -> _Limits:
    default = _Limits()
    try:
        from mlflow.tracing import constant
    except ImportError:  # pragma: no cover - the traces need MLflow
        return default

    return _Limits(
        tag_value=limit_in(constant, "MAX_CHARS_IN_TRACE_INFO_TAGS_VALUE", default.tag_value),
        metadata=limit_in(constant, "MAX_CHARS_IN_TRACE_INFO_METADATA", default.metadata),
        preview=limit_in(constant, "TRACE_REQUEST_RESPONSE_PREVIEW_MAX_LENGTH_OSS", default.preview),
    )


def _cut(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters; cut, it ends with a marker that says its length."""
    if len(text) <= limit:
        return text
    mark = f"...[asynctrack: truncated, {len(text)} characters in all]"
    return text[: limit - len(mark)] + mark  # the limits are far longer than the marker


# Span attributes MLflow's store copies into a trace's metadata (session, user): cut to its limit.
_TO_METADATA: Final = ("session.id", "gen_ai.conversation.id", "user.id")


def _any_value(value: Any) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    return None if which is None else getattr(value, which)


def decode_span(encoded: bytes) -> TraceSpan:
    """An OTLP ``Span`` message (as ``SpanAssembler`` encodes it), decoded."""
    from opentelemetry.proto.trace.v1 import trace_pb2

    span = trace_pb2.Span.FromString(encoded)
    return TraceSpan(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        name=span.name,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        attributes={kv.key: _any_value(kv.value) for kv in span.attributes},
        events=[
            (e.name, e.time_unix_nano, {kv.key: _any_value(kv.value) for kv in e.attributes})
            for e in span.events
        ],
        status=int(span.status.code),
        status_message=span.status.message,
        size=len(encoded),
    )


def span_type(attributes: Mapping[str, Any]) -> str:
    """MLflow's span type of a span with these attributes."""
    return SPAN_TYPES.get(str(attributes.get("gen_ai.operation.name")), "CHAIN")


def _parsed(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text  # cut to the content limit: no longer JSON, shown as it is


def _first(attributes: Mapping[str, Any], keys: Sequence[str]) -> tuple[bool, Any]:
    for key in keys:
        if key in attributes:
            return True, _parsed(attributes[key])
    return False, None


def token_usage(attributes: Mapping[str, Any]) -> dict[str, int] | None:
    """MLflow's token usage (``mlflow.chat.tokenUsage``) from the GenAI usage attributes."""
    tokens_in = attributes.get("gen_ai.usage.input_tokens")
    tokens_out = attributes.get("gen_ai.usage.output_tokens")
    if not isinstance(tokens_in, int) and not isinstance(tokens_out, int):
        return None
    tokens_in = tokens_in if isinstance(tokens_in, int) else 0
    tokens_out = tokens_out if isinstance(tokens_out, int) else 0
    return {"input_tokens": tokens_in, "output_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}


def mlflow_attributes(span: TraceSpan, trace_id: str) -> dict[str, Any]:
    """The span's attributes in MLflow's terms (values not yet JSON-encoded).

    Every recorded attribute stays (``gen_ai.*``, ``langchain.*``, ``asynctrack.*``);
    MLflow's own keys are added: the trace id, the span type, inputs and outputs
    (the message, argument, result and chain content, parsed back from JSON) and the
    token usage.
    """
    attributes = dict(span.attributes)
    attributes["mlflow.traceRequestId"] = trace_id
    attributes["mlflow.spanType"] = span_type(span.attributes)
    found, inputs = _first(span.attributes, _INPUTS)
    if found:
        attributes["mlflow.spanInputs"] = inputs
    found, outputs = _first(span.attributes, _OUTPUTS)
    if found:
        attributes["mlflow.spanOutputs"] = outputs
    usage = token_usage(span.attributes)
    if usage is not None:
        attributes["mlflow.chat.tokenUsage"] = usage
    model = span.attributes.get("gen_ai.response.model") or span.attributes.get("gen_ai.request.model")
    if isinstance(model, str):
        attributes["mlflow.llm.model"] = model
    provider = span.attributes.get("gen_ai.provider.name")
    if isinstance(provider, str):
        attributes["mlflow.llm.provider"] = provider
    for key in _TO_METADATA:
        value = attributes.get(key)
        if isinstance(value, str):
            attributes[key] = _cut(value, _limits().metadata)
    return attributes


def _span_dict(span: TraceSpan, trace_id: str) -> dict[str, Any]:
    """The span in MLflow's stored form (``Span.to_dict``, schema 3)."""

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return {
        "trace_id": b64(span.trace_id),
        "span_id": b64(span.span_id),
        "parent_span_id": b64(span.parent_span_id) if span.parent_span_id else "",
        "name": _cut(span.name, _limits().tag_value),  # a root's is the trace's name
        "start_time_unix_nano": span.start_ns,
        "end_time_unix_nano": span.end_ns,
        "attributes": {
            k: json.dumps(v, ensure_ascii=False) for k, v in mlflow_attributes(span, trace_id).items()
        },
        "status": {
            "code": _STATUS[span.status if 0 <= span.status < 3 else 0],
            "message": span.status_message,
        },
        "events": [{"name": n, "time_unix_nano": t, "attributes": a} for n, t, a in span.events],
    }


def _preview(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return _cut(text, _limits().preview)


def mlflow_trace(
    spans: Sequence[TraceSpan], *, experiment_id: str, run_id: str, run: RunInfo
) -> tuple[Any, Any]:
    """``(TraceInfo, TraceData)`` of one trace, linked to MLflow run ``run_id``.

    Names, tag and metadata values and previews are cut to MLflow's limits (``_Limits``),
    a marker at the end: one trace over them would make MLflow refuse the whole call.
    """
    from mlflow.entities import Span, TraceData, TraceInfo, TraceLocation, TraceState

    root = spans[-1]  # a trace's root ends last (TraceGrouper)
    trace_id = "tr-" + root.trace_id.hex()
    total = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    counted = False
    for span in spans:
        usage = token_usage(span.attributes)
        if usage is not None:
            counted = True
            for key, value in usage.items():
                total[key] += value
    limits = _limits()
    metadata = {
        "mlflow.sourceRun": run_id,  # the run's Traces tab lists it (start_trace's path)
        "mlflow.trace_schema.version": "3",
        "asynctrack.experiment": _cut(run.experiment, limits.metadata),
        "asynctrack.run": _cut(run.run, limits.metadata),
    }
    if counted:
        metadata["mlflow.trace.tokenUsage"] = json.dumps(total)
    end_ns = max(s.end_ns for s in spans)
    tags = {
        "mlflow.traceName": _cut(root.name, limits.tag_value),
        "asynctrack.experiment": _cut(run.experiment, limits.tag_value),
        "asynctrack.run": _cut(run.run, limits.tag_value),
    }
    info = TraceInfo(
        trace_id=trace_id,
        trace_location=TraceLocation.from_experiment_id(experiment_id),
        request_time=root.start_ns // 1_000_000,
        state=TraceState.ERROR if root.status == 2 else TraceState.OK,
        request_preview=_preview(_first(root.attributes, _INPUTS)[1]),
        response_preview=_preview(_first(root.attributes, _OUTPUTS)[1]),
        execution_duration=max(end_ns - root.start_ns, 0) // 1_000_000,
        trace_metadata=metadata,
        tags=tags,
    )

    def mlflow_span(span: TraceSpan) -> Any:
        fields = _span_dict(span, trace_id)
        if span is root:
            # The trace's tags, where a store that makes the trace from its spans (log_spans) reads them.
            fields["attributes"].update({_TRACE_TAG + k: json.dumps(v) for k, v in tags.items()})
        return Span.from_dict(fields)

    return info, TraceData(spans=[mlflow_span(s) for s in spans])


class TraceGrouper:
    """Recorded lines -> complete traces, each a list of spans (one thread at a time).

    A trace is a run this tracker recorded whose parent it did not (a LangChain root run,
    or a run started under a parent recorded elsewhere, such as a chain without the
    callback), with every recorded run below it. It is complete when that run ends:
    LangChain ends children before parents, and a parent starts before its children, so
    a span whose parent is not open when it ends heads a trace of its own. Its MLflow
    trace id is its run's id; spans waiting for their parent are held, at most
    ``max_bytes`` (encoded), past which the oldest are given up and counted in
    ``dropped``. ``close()`` returns the rest, runs never ended included (marked
    ``asynctrack.unfinished``).
    """

    def __init__(self, *, max_bytes: int = 16 * 1024 * 1024) -> None:
        self._assembler = SpanAssembler(capture_content=True, max_open_bytes=max_bytes)
        # parent span id -> ended subtrees waiting for it, in the order they ended
        self._waiting: dict[bytes, list[TraceSpan]] = {}
        self.max_bytes = max_bytes
        self.held_bytes = 0
        self.dropped = 0  # spans given up to the memory bound
        self.dropped_parts = 0  # the subtrees they made up
        self._warned_at = -_WARN_EVERY

    def add(self, lines: Iterable[bytes]) -> list[list[TraceSpan]]:
        """Read ``lines`` in order; the traces they completed."""
        ended = [decode_span(raw) for raw in self._assembler.add(lines)]
        # A parent ended in this same batch comes after its children: still to come for them.
        coming = self._assembler.open_span_ids() | {s.span_id for s in ended}
        return self._group(ended, coming)

    def close(self) -> list[list[TraceSpan]]:
        """Every trace held, complete or not."""
        # Unfinished runs come parents first (the order they started): children first here.
        unfinished = [decode_span(raw) for raw in reversed(self._assembler.close())]
        out = self._group(unfinished, {s.span_id for s in unfinished})
        for parent, spans in self._waiting.items():  # their parent never came: each heads its own
            subtree: list[TraceSpan] = []
            for span in spans:
                subtree.append(span)
                if span.parent_span_id == parent:  # a subtree ends with its top span
                    out.append(_headed(subtree))
                    subtree = []
        self._waiting.clear()
        self.held_bytes = 0
        return out

    def _group(self, ended: list[TraceSpan], coming: set[bytes]) -> list[list[TraceSpan]]:
        done: list[list[TraceSpan]] = []
        for span in ended:
            below = self._waiting.pop(span.span_id, [])
            self.held_bytes -= sum(s.size for s in below)
            subtree = [*below, span]
            if span.parent_span_id and span.parent_span_id in coming:
                self._waiting.setdefault(span.parent_span_id, []).extend(subtree)
                self.held_bytes += sum(s.size for s in subtree)
            else:
                done.append(_headed(subtree))
        while self.held_bytes > self.max_bytes and self._waiting:
            oldest = self._waiting.pop(next(iter(self._waiting)))
            self.held_bytes -= sum(s.size for s in oldest)
            self.dropped += len(oldest)
            self.dropped_parts += 1
            now = time.monotonic()
            if now - self._warned_at < _WARN_EVERY:
                continue
            self._warned_at = now
            logger.warning(
                "asynctrack: MLflow traces: %d span(s) waiting for their parent run dropped "
                "(over %d bytes held; %d part(s) of traces dropped so far)",
                len(oldest),
                self.max_bytes,
                self.dropped_parts,
            )
        return done


def _headed(subtree: list[TraceSpan]) -> list[TraceSpan]:
    """A subtree (its top span last) as one trace, the top span its root."""
    head = subtree[-1]
    if head.parent_span_id:
        # Its parent was recorded elsewhere: the trace is named after this run, like a root's.
        run_id = head.attributes.get("langchain.run_id")
        trace_id = trace_id_of(run_id) if isinstance(run_id, str) else head.trace_id
        for span in subtree:
            span.trace_id = trace_id
        head.parent_span_id = b""
    return subtree


class MLflowTraces:
    """The ``LineExporter`` of an ``MLflowParameters``: the run's traces, logged as they end.

    ``lines()`` groups spans on the engine's thread and queues each trace as its root
    run ends (never blocks). A daemon thread of its own, started with the first trace,
    hands them to the sink's thread in batches: ``MAX_BATCH_TRACES`` traces or
    ``MAX_BATCH_BYTES``, or ``DELAY`` seconds after the first one waiting, or at once
    when a flush or the close asks. It waits for each batch's call before the next, so
    a hanging server holds one call, not a pile; traces queue meanwhile, up to
    ``max_bytes``, past which the oldest are dropped and counted. While no trace waits,
    the thread sleeps on a condition: an idle tracker costs nothing.

    ``flush(timeout)`` returns once every trace complete before it was tried (logged
    or failed), or at ``timeout`` (the sink's deadline when ``None``). ``close()``
    logs what is left, runs never ended included, until its timeout; what is still
    waiting then is counted as failed.
    """

    def __init__(
        self,
        sink: MLflowParameters,
        run: RunInfo,
        *,
        max_bytes: int = 16 * 1024 * 1024,
        delay: float = DELAY,
    ) -> None:
        self._sink = sink
        self._run = run
        self._grouper = TraceGrouper(max_bytes=max_bytes)
        self._max_bytes = max_bytes
        self._delay = delay
        self._cond = threading.Condition()  # lines(), flush(), close() and the thread
        self._ready: collections.deque[list[TraceSpan]] = collections.deque()
        self._ready_bytes = 0
        self._first_at = 0.0  # when the oldest trace waiting was queued (time.monotonic())
        self._accepted = 0  # traces queued, ever
        self._tried = 0  # of those, how many (in order) have had their attempt
        self._flushing = 0  # flush() calls waiting
        self._closing = False
        self._deadline = math.inf  # the close's (time.monotonic())
        self._inflight: concurrent.futures.Future[list[str | None]] | None = None
        self._inflight_count = 0  # traces in the call in flight
        self._thread: threading.Thread | None = None
        self._logged = 0
        self._failed = 0
        self._last_error: str | None = None
        self._error_tried = -1  # _tried when _last_error was set
        self._warned_at = -_WARN_EVERY
        self._said = (0, "")  # (failed, error) last logged

    # -- the engine's thread ---------------------------------------------------------------

    def lines(self, lines: Sequence[bytes]) -> None:
        with self._cond:
            if self._closing:
                return
            try:
                traces = self._grouper.add(lines)
            except Exception as exc:  # never into the engine: the files go on
                self._fail(1, f"traces not assembled: {exc!r}")
                return
            self._queue(traces)

    def _queue(self, traces: list[list[TraceSpan]]) -> None:
        """Queue complete traces (under the lock); wake the thread when a batch is due."""
        if not traces:
            return
        was_empty = not self._ready
        for spans in traces:
            self._ready.append(spans)
            self._ready_bytes += sum(s.size for s in spans)
            self._accepted += 1
        if was_empty:
            self._first_at = time.monotonic()
        while self._ready_bytes > self._max_bytes and len(self._ready) > 1:
            oldest = self._ready.popleft()
            self._ready_bytes -= sum(s.size for s in oldest)
            self._tried += 1  # dropped: it will have no attempt
            self._fail(1, "traces waiting for MLflow over the memory bound; the oldest dropped")
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="asynctrack-mlflow-traces", daemon=True)
            self._thread.start()
        elif was_empty or len(self._ready) >= MAX_BATCH_TRACES or self._ready_bytes >= MAX_BATCH_BYTES:
            self._cond.notify_all()

    # -- any thread --------------------------------------------------------------------------

    def flush(self, timeout: float | None) -> str | None:
        limit = self._sink.deadline if timeout is None else max(timeout, 0.0)
        start = time.monotonic()
        with self._cond:
            target, start_tried = self._accepted, self._tried
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._tried < target and self._thread is not None and self._thread.is_alive():
                    left = start + limit - time.monotonic()
                    if left <= 0:
                        return f"MLflow traces not all logged within {limit:.3g} s"
                    if self._sink.overdue():  # the traces wait behind a call past its deadline
                        return "MLflow traces not all logged: an earlier MLflow call has not returned"
                    self._cond.wait(min(left, _OVERDUE_POLL))
            finally:
                self._flushing -= 1
            if self._error_tried > start_tried and self._last_error:
                return self._last_error
            return None

    def close(self, timeout: float | None) -> None:
        limit = self._sink.deadline if timeout is None else max(timeout, 0.0)
        with self._cond:
            if self._closing:
                return
            try:
                self._queue(self._grouper.close())
            except Exception as exc:  # the spans are in the files
                self._fail(1, f"traces not assembled: {exc!r}")
            self._closing = True
            self._deadline = time.monotonic() + limit
            self._cond.notify_all()
            thread = self._thread
        end = time.monotonic() + limit + _JOIN_GRACE
        # Not past a call that outlived its deadline: what waits behind it is counted.
        while thread is not None and thread.is_alive() and not self._sink.overdue():
            left = end - time.monotonic()
            if left <= 0:
                break
            thread.join(min(left, _OVERDUE_POLL))
        with self._cond:
            inflight, self._inflight = self._inflight, None
            if inflight is not None:
                # The call still runs on the sink's thread: its outcome is no longer counted.
                self._sink.give_up_on(inflight)
                self._fail(self._inflight_count, "MLflow trace call still running at close")
            if self._ready:
                self._fail(len(self._ready), "traces not logged before close")
                self._ready.clear()
                self._ready_bytes = 0
            self._tried = self._accepted
            self._cond.notify_all()
        self._say(force=True)

    def statistics(self) -> Mapping[str, int]:
        # A part of a trace the grouper dropped (its memory bound) counts as a trace failed.
        return {
            "mlflow_traces_logged": self._logged,
            "mlflow_traces_failed": self._failed + self._grouper.dropped_parts,
        }

    # -- the thread --------------------------------------------------------------------------

    def _main(self) -> None:
        while True:
            with self._cond:
                batch = self._take()
                if batch is None:
                    return
                future = self._sink.submit_traces(self._run, batch, give_up=self._deadline)
                self._inflight, self._inflight_count = future, len(batch)
            outcome = _outcomes(future, len(batch))
            with self._cond:
                if self._inflight is not future:
                    return  # the close gave up on it and counted it
                self._inflight = None
                self._tried += len(batch)
                self._settle(outcome)
                self._cond.notify_all()
            self._say()

    def _take(self) -> list[list[TraceSpan]] | None:
        """Wait (under the lock) until a batch is due; ``None``: stop."""
        while True:
            now = time.monotonic()
            ready = self._ready
            if self._closing and (not ready or now >= self._deadline):
                return None
            if ready and (
                self._flushing
                or self._closing
                or len(ready) >= MAX_BATCH_TRACES
                or self._ready_bytes >= MAX_BATCH_BYTES
                or now - self._first_at >= self._delay
            ):
                break
            self._cond.wait(self._delay - (now - self._first_at) if ready else None)
        batch: list[list[TraceSpan]] = []
        size = 0
        while (
            ready
            and len(batch) < MAX_BATCH_TRACES
            and (not batch or size + _bytes(ready[0]) <= MAX_BATCH_BYTES)
        ):
            spans = ready.popleft()
            batch.append(spans)
            size += _bytes(spans)
        self._ready_bytes -= size
        self._first_at = time.monotonic()
        return batch

    def _settle(self, outcomes: list[str | None]) -> None:
        for outcome in outcomes:
            if outcome is None:
                self._logged += 1
            else:
                self._fail(1, outcome)

    def _fail(self, traces: int, message: str) -> None:
        """Count ``traces`` failed and keep ``message`` for the log and the flush."""
        self._failed += traces
        self._last_error = message
        self._error_tried = self._tried

    def _say(self, *, force: bool = False) -> None:
        """Log the last error with the counts: at most once per 10 s, and only news."""
        with self._cond:
            failed, error, logged = self._failed, self._last_error, self._logged
        now = time.monotonic()
        if (
            error is None
            or (failed, error) == self._said
            or (not force and now - self._warned_at < _WARN_EVERY)
        ):
            return
        if force and failed == self._said[0]:
            return  # at close: only failures not said yet
        self._warned_at = now
        self._said = (failed, error)
        logger.warning(
            "asynctrack: MLflow traces: %s (%d trace(s) failed so far, %d logged)", error, failed, logged
        )


def _bytes(spans: list[TraceSpan]) -> int:
    return sum(s.size for s in spans)


def _outcomes(future: concurrent.futures.Future[list[str | None]], count: int) -> list[str | None]:
    """The batch's outcome per trace, once its call returns (or was given up on)."""
    import concurrent.futures

    try:
        outcomes = future.result()
    except concurrent.futures.CancelledError:
        return ["given up"] * count
    except Exception as exc:
        return [f"{type(exc).__name__}: {exc}"] * count
    return (outcomes + ["no outcome"] * count)[:count]
