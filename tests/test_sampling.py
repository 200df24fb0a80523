"""Sampling (``sample_rate``, ``sample_keep_errors``), a root inside an application
OpenTelemetry span, and sessions and users: real LangChain chains, both worker modes
where the mode matters, the files and a loopback OTLP receiver."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from _infra.graphs import Text, interrupt_and_resume, one_node
from _infra.otlp_receiver import OTLPReceiver, attributes
from export_workloads import recorded_lines
from langchain_core.utils.uuid import uuid7
from opentelemetry import trace as otel_trace
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from asynctrack import AsyncTracker, OTLPExporter, TrackerConfig
from asynctrack._cli import main
from asynctrack._events._tail import TailSampler
from asynctrack._events._translate import EventTranslator
from asynctrack._export._spans import SpanAssembler
from asynctrack._read._tree import scan_run_summaries, summarize_runs
from asynctrack._sampling import (
    HEAD_SKIP_BELOW,
    RANDOMNESS,
    application_parent,
    randomness,
    ratio_threshold,
    root_sampled,
)

WAIT = 30.0
EVENTS_PER_TRACE = 4  # outer start, inner start, inner end, outer end


@pytest.fixture(params=["process", "thread"])
def worker_mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


def _tracker(
    destination: Path, worker: str, exporters: list[OTLPExporter] | None = None, **config: Any
) -> AsyncTracker:
    return AsyncTracker(
        destination,
        experiment_name="exp",
        run_name="r1",
        config=TrackerConfig(worker=worker, **config),
        exporters=exporters or [],
    )


def _trace(tracker: AsyncTracker, run_id: uuid.UUID, *, fail: bool = False, **config: Any) -> None:
    """A root chain calling a child chain: two runs, four events; the child may fail
    (the root catches it and ends normally)."""
    from langchain_core.runnables import RunnableConfig, RunnableLambda

    def inner(x: str) -> str:
        if fail:
            raise ValueError("the database is down")
        return x.upper()

    child = RunnableLambda(inner, name="inner")

    def outer(x: str, config: RunnableConfig) -> str:
        try:
            return child.invoke(x, config=config)
        except ValueError:
            return "recovered"

    RunnableLambda(outer, name="outer").invoke(
        "hi", config={"callbacks": [tracker], "run_id": run_id, **config}
    )


def _traces(lines: list[bytes]) -> dict[str, list[dict[str, Any]]]:
    """The recorded events by root run id (a child's root is its parent here)."""
    events = [orjson.loads(line) for line in lines]
    root_of: dict[str, str] = {}
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        run, parent = event["run_id"], event["parent_run_id"]
        root = root_of.setdefault(run, root_of.get(parent, parent) if parent else run)
        out[root].append(event)
    return out


def test_the_rate_is_validated() -> None:
    for bad in (-0.1, 1.5, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match=r"sample_rate must be a number from 0\.0 to 1\.0"):
            TrackerConfig(sample_rate=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sample_keep_errors must be a bool"):
        TrackerConfig(sample_keep_errors=1)  # type: ignore[arg-type]
    assert TrackerConfig(sample_rate=0).sample_rate == 0


def test_each_root_is_sampled_at_the_rate_whatever_its_ids_layout() -> None:
    # LangChain's run ids are UUID v7 with a counter: a burst's ids share most of their
    # low bits (and every UUID's top two low bits are its variant). Each root must still be
    # sampled at the rate, on its own: checked on a burst of LangChain's ids (a few
    # milliseconds) and on random ones, within 5 standard deviations.
    bursts = {
        "uuid7 burst": [uuid7().int for _ in range(20_000)],
        "uuid4": [uuid.uuid4().int for _ in range(20_000)],
    }
    for rate in (0.0, 0.01, 0.1, 0.25, 0.5, 0.9, 1.0):
        threshold = ratio_threshold(rate)
        for layout, runs in bursts.items():
            kept = sum(root_sampled(run, threshold, None) for run in runs)
            deviation = (len(runs) * rate * (1 - rate)) ** 0.5
            assert abs(kept - len(runs) * rate) <= 5 * deviation, (layout, rate, kept)
    # Decided from the id alone, the same in every process; what a rate keeps, every
    # higher rate keeps (as OpenTelemetry's ratio sampler).
    runs = bursts["uuid7 burst"]
    low, high = ratio_threshold(0.1), ratio_threshold(0.3)
    assert all(root_sampled(run, high, None) for run in runs if root_sampled(run, low, None))
    assert [randomness(run) for run in runs[:100]] == [randomness(run) for run in runs[:100]]
    assert ratio_threshold(1.0) == 0 and ratio_threshold(0.0) > RANDOMNESS
    # Any integer given as a run id is decided too (its text hashed).
    assert root_sampled(-5, ratio_threshold(1.0), None) and not root_sampled(
        1 << 200, ratio_threshold(0.0), None
    )
    # A recorded application span's flag decides, whatever the ratio.
    assert root_sampled(0, ratio_threshold(0.0), {"sampled": True}) is True
    assert root_sampled(0, ratio_threshold(1.0), {"sampled": False}) is False


def test_head_sampling_keeps_whole_traces_at_the_rate(tmp_path: Path, worker_mode: str) -> None:
    rate = 0.3
    tracker = _tracker(tmp_path / "logs", worker_mode, sample_rate=rate, sample_keep_errors=False)
    run_ids = [uuid.uuid4() for _ in range(120)]
    for run_id in run_ids:
        _trace(tracker, run_id, fail=run_id.int % 7 == 0)  # errors are not kept either
    tracker.close()
    expected = {str(r) for r in run_ids if root_sampled(r.int, ratio_threshold(rate), None)}
    assert 10 <= len(expected) <= 70  # ~36 of 120
    traces = _traces(recorded_lines(tmp_path / "logs"))
    assert set(traces) == expected
    assert all(len(events) == EVENTS_PER_TRACE for events in traces.values())  # whole traces
    stats = tracker.statistics()
    assert stats.worker_mode == worker_mode
    assert stats.sampled_out == EVENTS_PER_TRACE * (len(run_ids) - len(expected))
    assert stats.recorded == stats.written == EVENTS_PER_TRACE * len(expected)
    assert (stats.dropped, stats.lost) == (0, 0)


def test_rate_zero_captures_nothing(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path / "logs", "thread", sample_rate=0.0, sample_keep_errors=False)
    for _ in range(10):
        _trace(tracker, uuid.uuid4())
    tracker.close()
    stats = tracker.statistics()
    assert (stats.recorded, stats.written, stats.sampled_out) == (0, 0, 10 * EVENTS_PER_TRACE)


def test_a_trace_not_sampled_is_not_captured(tmp_path: Path) -> None:
    """At rate 0 a trace's callbacks skip it at their entry: nothing of their arguments
    is read (the capture would read an error's text and an output object's fields)."""
    read: list[str] = []

    class Watched(Exception):
        def __str__(self) -> str:
            read.append("error")
            return "watched"

    class Output:
        def __init__(self) -> None:
            self.text = "answer"

        def __getattribute__(self, name: str) -> Any:
            read.append(name)
            return object.__getattribute__(self, name)

    tracker = _tracker(tmp_path / "logs", "thread", sample_rate=0.0, sample_keep_errors=False)
    root, child = uuid.uuid4(), uuid.uuid4()
    tracker.on_chain_start({}, {"q": 1}, run_id=root)
    tracker.on_llm_start({}, ["q"], run_id=child, parent_run_id=root)
    tracker.on_llm_new_token("a", run_id=child, parent_run_id=root)
    tracker.on_llm_error(Watched(), run_id=child, parent_run_id=root)
    tracker.on_chain_end(Output(), run_id=root)  # type: ignore[arg-type]
    assert read == []
    # A run this tracker never saw start is not known to be out: it is recorded.
    tracker.on_chain_end(Output(), run_id=uuid.uuid4())  # type: ignore[arg-type]
    assert read
    tracker.close()
    stats = tracker.statistics()
    assert (stats.sampled_out, stats.recorded) == (5, 1)
    # Where most traces are sampled, the skip at entry would cost more than it saves:
    # the callbacks are the capture's own (the decision is taken in _record_sampled).
    assert type(tracker).on_llm_end is not AsyncTracker.on_llm_end
    for rate in (HEAD_SKIP_BELOW, 0.9, 1.0):
        other = _tracker(tmp_path / "other", "thread", sample_rate=rate, sample_keep_errors=False)
        assert type(other).on_llm_end is AsyncTracker.on_llm_end
        other.close()


def test_traces_with_a_failed_run_are_kept_whole(tmp_path: Path, worker_mode: str) -> None:
    rate = 0.2
    tracker = _tracker(tmp_path / "logs", worker_mode, sample_rate=rate)
    failing = {uuid.uuid4() for _ in range(8)}
    fine = {uuid.uuid4() for _ in range(40)}
    for run_id in [*failing, *fine]:
        _trace(tracker, run_id, fail=run_id in failing)
    tracker.flush_blocking(timeout=WAIT)
    stats = tracker.statistics()
    assert stats.worker_mode == worker_mode
    if worker_mode == "process":
        # Held, written and dropped events are all acknowledged: nothing is kept for re-sending.
        assert stats.retained_bytes == 0
    tracker.close()
    threshold = ratio_threshold(rate)
    sampled = {str(r) for r in failing | fine if root_sampled(r.int, threshold, None)}
    kept = {str(r) for r in failing} - sampled
    traces = _traces(recorded_lines(tmp_path / "logs"))
    assert set(traces) == sampled | kept
    for root, events in traces.items():
        assert len(events) == EVENTS_PER_TRACE  # whole: the root's end came after the failure
        marks = {event.get("sampled") for event in events}
        assert marks == ({False} if root in kept else {None})
    dropped = len(failing | fine) - len(sampled | kept)
    stats = tracker.statistics()
    assert stats.sampled_out == EVENTS_PER_TRACE * dropped
    assert stats.recorded == stats.written + stats.sampled_out
    assert (stats.dropped, stats.lost, stats.filtered) == (0, 0, 0)


def _children_only(tracker: AsyncTracker, run_id: uuid.UUID, *, fail: bool = False) -> None:
    """A root chain the tracker is not given to, calling two child chains it is given to
    (as to a model's constructor): the tracker sees two runs whose parent it never saw.
    The second may fail (the root catches it)."""
    from langchain_core.runnables import RunnableConfig, RunnableLambda

    def inner(x: str) -> str:
        if fail and x == "second":
            raise ValueError("the database is down")
        return x.upper()

    child = RunnableLambda(inner, name="inner").with_config(callbacks=[tracker])

    def outer(x: str, config: RunnableConfig) -> str:
        child.invoke("first", config=config)
        try:
            return child.invoke("second", config=config)
        except ValueError:
            return "recovered"

    RunnableLambda(outer, name="outer").invoke("hi", config={"run_id": run_id})


@pytest.mark.parametrize("keep_errors", [False, True])
def test_runs_under_a_parent_never_seen_are_sampled_by_its_id(
    tmp_path: Path, worker_mode: str, keep_errors: bool
) -> None:
    """The tracker given to the children only: they are decided on their parent's id, as a
    root is (siblings together), and a failure keeps the run that failed."""
    rate = 0.2  # under HEAD_SKIP_BELOW: without keep_errors, the callbacks' skip at entry too
    tracker = _tracker(tmp_path / "logs", worker_mode, sample_rate=rate, sample_keep_errors=keep_errors)
    roots = [uuid.uuid4() for _ in range(60)]
    for root in roots:
        _children_only(tracker, root, fail=root.int % 3 == 0)
    tracker.close()
    threshold = ratio_threshold(rate)
    sampled = {str(r) for r in roots if root_sampled(r.int, threshold, None)}
    failed = {str(r) for r in roots if r.int % 3 == 0} - sampled
    assert 2 <= len(sampled) <= 30  # ~12 of 60
    traces = _traces(recorded_lines(tmp_path / "logs"))  # by the parent never seen
    assert set(traces) == (sampled | failed if keep_errors else sampled)
    for parent, events in traces.items():
        assert all(event["parent_run_id"] == parent for event in events)
        if parent in sampled:
            assert len(events) == 4 and all("sampled" not in event for event in events)
        else:  # kept for the run that failed: that run only, marked
            assert [(e["kind"], e["sampled"]) for e in events] == [
                ("chain_start", False),
                ("chain_error", False),
            ]
    stats = tracker.statistics()
    assert stats.written == sum(map(len, traces.values()))
    assert stats.sampled_out == 4 * len(roots) - stats.written
    assert (stats.dropped, stats.lost) == (0, 0)


@pytest.mark.parametrize("keep_errors", [False, True])
def test_a_run_sampled_on_its_parents_id_stays_out_of_the_roots_trace(
    tmp_path: Path, keep_errors: bool
) -> None:
    """The demo's agent (its model calls' parent, an LLMChain, never recorded) under a rate:
    the calls are decided on their parent's id, apart from the agent, so their start lines
    say so and the export leaves each in the trace named after its parent (decided whole),
    never in the agent's (a trace sampled in part); at rate 1.0 they join it, unmarked."""
    from asynctrack._demo._scenarios import scenario_3_agent
    from asynctrack._export._spans import trace_id_of

    for rate in (0.5, 1.0):
        destination = tmp_path / str(rate)
        tracker = _tracker(destination, "thread", sample_rate=rate, sample_keep_errors=keep_errors)
        for _ in range(8):
            scenario_3_agent([tracker])
        tracker.close()
        lines = recorded_lines(destination)
        starts = {e["run_id"]: e for e in map(orjson.loads, lines) if e["kind"].endswith("_start")}
        apart = {run for run, e in starts.items() if e["parent_run_id"] and e["parent_run_id"] not in starts}
        assert len(apart) > (0 if rate < 1.0 else 31)  # 32 calls, each kept at 0.5 (all kept: 2**-32)
        assert {run for run, e in starts.items() if "sampled_apart" in e} == (apart if rate < 1.0 else set())
        assert all(starts[run]["sampled_apart"] is True for run in apart if rate < 1.0)
        spans = [Span.FromString(raw) for raw in SpanAssembler().add(lines)]
        for span in spans:
            run = attributes(span)["langchain.run_id"]
            placed = "asynctrack.parent_inferred" in attributes(span)
            assert placed == (run in apart and rate == 1.0)
            if run in apart and not placed:
                assert span.trace_id == trace_id_of(starts[run]["parent_run_id"])


def test_a_graph_paused_for_a_human_is_not_a_failure(tmp_path: Path, worker_mode: str) -> None:
    # LangGraph's interrupt() raises GraphInterrupt through the graph's runs (error events):
    # control flow, as the readers say. Failed traces are kept (the default); a paused one
    # is not, and its resume neither.
    tracker = _tracker(tmp_path / "logs", worker_mode, sample_rate=0.0)
    paused, resumed = interrupt_and_resume([tracker], answer="approved")
    assert "__interrupt__" in paused and resumed["decision"] == "approved"
    tracker.close()
    assert recorded_lines(tmp_path / "logs") == []
    stats = tracker.statistics()
    assert stats.sampled_out == stats.recorded > 0
    assert (stats.written, stats.dropped, stats.lost) == (0, 0, 0)


def test_a_trace_still_held_at_close_is_counted(tmp_path: Path, worker_mode: str) -> None:
    tracker = _tracker(tmp_path / "logs", worker_mode, sample_rate=0.0)
    root = uuid.uuid4()
    tracker.on_chain_start({}, {"q": 1}, run_id=root)
    tracker.on_text("thinking", run_id=root)  # the root never ends
    tracker.close()
    stats = tracker.statistics()
    assert stats.worker_mode == worker_mode
    assert (stats.recorded, stats.written, stats.sampled_out, stats.lost) == (2, 0, 2, 0)
    assert recorded_lines(tmp_path / "logs") == []


def test_the_exporter_sees_the_traces_the_files_hold(tmp_path: Path, receiver: OTLPReceiver) -> None:
    destination = tmp_path / "logs"
    tracker = AsyncTracker(
        destination,
        experiment_name="exp",
        run_name="r1",
        config=TrackerConfig(sample_rate=0.0),
        exporters=[OTLPExporter(receiver.endpoint)],
    )
    failed, fine = uuid.uuid4(), uuid.uuid4()
    _trace(tracker, fine)
    _trace(tracker, failed, fail=True)
    tracker.close()
    spans = receiver.spans
    assert {span.trace_id for span in spans} == {failed.bytes}
    assert len(spans) == 2
    assert all(attributes(span)["asynctrack.sampled"] is False for span in spans)
    assert set(_traces(recorded_lines(destination))) == {str(failed)}


def test_held_lines_are_bounded_by_bytes() -> None:
    config = TrackerConfig(
        sample_rate=0.0, max_batch_bytes=4096, max_queue_bytes=4 * 4096, max_field_bytes=1024
    )
    translator = EventTranslator(experiment="e", run="r", writer="w", config=config)
    sampler = TailSampler(translator, config)
    assert sampler.max_held == 4096
    body = orjson.dumps({"data": {"inputs": "x" * 900}, "tags": [], "metadata": {}})
    roots = [uuid.uuid4() for _ in range(3)]
    seq = 0
    for root in roots:  # three traces, never ended, each over a third of the bound
        for _ in range(2):
            seq += 1
            kind = "chain_start" if seq % 2 else "text"
            out = sampler.many([[kind, seq, 1.0, root, None, "r", body, None]])
            assert out == [[]]  # held
    assert sampler.held_bytes <= sampler.max_held
    assert sampler.sampled_out == 4  # the two oldest traces were pushed out, counted
    # A failure in the first trace writes the failure (its held lines were pushed out:
    # counted apart, as lines of a failing trace) ...
    out = sampler.many([["chain_error", 99, 2.0, roots[0], None, "r", b'{"data":{}}', _error()]])
    assert [seq for seq, _ in out[0]] == [99]
    assert (sampler.sampled_out, sampler.sampled_out_failing) == (4, 2)
    # ... and one in the last writes its held lines, then the failure, marked.
    out = sampler.many([["chain_error", 100, 2.0, roots[2], None, "r", b'{"data":{}}', _error()]])
    (lines,) = out
    assert [seq for seq, _ in lines] == [5, 6, 100]
    assert all(orjson.loads(line)["sampled"] is False for _, line in lines)
    assert orjson.loads(lines[0][1])["data"] == orjson.loads(body)["data"]  # the held line, as recorded
    assert sampler.held_bytes == 0


def test_a_failing_trace_over_the_bound_keeps_its_failure_and_is_counted_apart(
    tmp_path: Path, worker_mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A trace not sampled that holds more than ``max_queue_bytes // 4`` before it fails:
    its earliest lines are pushed out, counted in ``sampled_out_failing`` (and in
    ``sampled_out``), said once; its failure, the root's error and what it still held
    are written."""
    from langchain_core.runnables import RunnableLambda

    tracker = _tracker(
        tmp_path / "logs",
        worker_mode,
        sample_rate=0.0,
        max_queue_bytes=256 * 1024,
        max_batch_bytes=64 * 1024,
        when_full="block",  # none dropped by the application's queue
    )
    step = RunnableLambda(len, name="step")

    def body(x: int) -> int:
        for n in range(12):  # 12 steps of ~20 KB inputs: twice the 64 KiB held
            step.invoke(f"{n}" + "p" * 20_000)
        raise RuntimeError("the database is down")

    root = RunnableLambda(body, name="root")
    with caplog.at_level("WARNING", logger="asynctrack"):
        for _ in range(2):
            with pytest.raises(RuntimeError):
                root.invoke(1, config={"callbacks": [tracker]})
        tracker.close()
    events = [orjson.loads(line) for line in recorded_lines(tmp_path / "logs")]
    errors = [(e["kind"], e["name"], e["sampled"]) for e in events if e["kind"] == "chain_error"]
    assert errors == [("chain_error", "root", False)] * 2
    assert all(e["sampled"] is False for e in events)
    stats = tracker.statistics()
    assert stats.worker_mode == worker_mode
    assert stats.recorded == stats.written + stats.sampled_out == 2 * (2 + 2 * 12)
    assert stats.sampled_out_failing == stats.sampled_out > 0
    assert (stats.dropped, stats.lost) == (0, 0)
    if worker_mode == "thread":  # the worker process's log comes through its pipe, later
        said = [r.getMessage() for r in caplog.records if "trace not sampled failed" in r.getMessage()]
        assert len(said) == 1 and "max_queue_bytes // 4 (65536 bytes)" in said[0]


def _error() -> dict[str, Any]:
    return {"$error": True, "type": "ValueError", "message": "boom"}


# -- a root inside an application OpenTelemetry span --------------------------------------


def test_a_root_inside_an_application_span_joins_its_trace(
    tmp_path: Path, receiver: OTLPReceiver, worker_mode: str
) -> None:
    destination = tmp_path / "logs"
    tracker = _tracker(destination, worker_mode, [OTLPExporter(receiver.endpoint)])
    tracer = TracerProvider().get_tracer("app")
    with tracer.start_as_current_span("handle_request") as app_span:
        _trace(tracker, uuid.uuid4())
    _trace(tracker, uuid.uuid4())  # outside: a trace of its own
    assert tracker.statistics().worker_mode == worker_mode
    tracker.close()
    context = app_span.get_span_context()
    assert len(receiver.spans) == 4
    inside = [s for s in receiver.spans if s.trace_id == context.trace_id.to_bytes(16, "big")]
    assert len(inside) == 2
    (root,) = [s for s in inside if s.parent_span_id == context.span_id.to_bytes(8, "big")]
    (child,) = [s for s in inside if s is not root]
    assert child.parent_span_id == root.span_id
    others = [s for s in receiver.spans if s not in inside]
    assert sum(not s.parent_span_id for s in others) == 1
    # The files hold the context: a backfill from them gives the same trace.
    assembler = SpanAssembler()
    backfill = assembler.add(recorded_lines(destination))
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    decoded = [Span.FromString(raw) for raw in backfill]
    assert {(s.trace_id, s.span_id, s.parent_span_id) for s in decoded} == {
        (s.trace_id, s.span_id, s.parent_span_id) for s in receiver.spans
    }


@pytest.mark.parametrize("keep_errors", [False, True])
def test_a_root_follows_its_application_spans_sampled_flag(tmp_path: Path, keep_errors: bool) -> None:
    tracker = _tracker(tmp_path / "logs", "thread", sample_rate=0.0, sample_keep_errors=keep_errors)
    sampled_tracer = TracerProvider().get_tracer("app")
    unsampled_tracer = TracerProvider(sampler=ALWAYS_OFF).get_tracer("app")
    kept, skipped = uuid.uuid4(), uuid.uuid4()
    with sampled_tracer.start_as_current_span("sampled"):
        _trace(tracker, kept)  # rate 0, but the application's span is sampled
    with unsampled_tracer.start_as_current_span("not sampled") as span:
        assert span.get_span_context().is_valid
        _trace(tracker, skipped)
    tracker.close()
    traces = _traces(recorded_lines(tmp_path / "logs"))
    assert set(traces) == {str(kept)}
    (root_start,) = [e for e in traces[str(kept)] if e["kind"] == "chain_start" and not e["parent_run_id"]]
    assert root_start["data"]["otel_parent"]["sampled"] is True
    assert tracker.statistics().sampled_out == EVENTS_PER_TRACE


def test_a_context_without_a_span_is_no_parent() -> None:
    """A current OTel context that holds other values (baggage) but no span: no parent;
    the same context with a span inside: that span (the empty-context shortcut is exact)."""
    from opentelemetry import baggage
    from opentelemetry import context as otel_context

    assert application_parent() is None
    token = otel_context.attach(baggage.set_baggage("tenant", "t-1"))
    try:
        assert otel_context.get_current()  # not empty
        assert application_parent() is None
        with TracerProvider().get_tracer("app").start_as_current_span("request") as span:
            found = application_parent()
    finally:
        otel_context.detach(token)
    assert found == {
        "trace_id": format(span.get_span_context().trace_id, "032x"),
        "span_id": format(span.get_span_context().span_id, "016x"),
        "sampled": True,
    }


def test_without_an_application_span_nothing_is_added(tmp_path: Path) -> None:
    assert otel_trace.get_current_span().get_span_context().is_valid is False
    tracker = _tracker(tmp_path / "logs", "thread")
    _trace(tracker, uuid.uuid4())
    tracker.close()
    assert all(b"otel_parent" not in line for line in recorded_lines(tmp_path / "logs"))


# -- sessions and users ----------------------------------------------------------------


def _session_traces(tracker: AsyncTracker) -> None:
    _trace(tracker, uuid.uuid4(), metadata={"session_id": "s-1", "user_id": "alice"})
    _trace(tracker, uuid.uuid4(), metadata={"session_id": "s-1", "user_id": "alice"}, fail=True)
    _trace(tracker, uuid.uuid4(), metadata={"thread_id": "t-9", "user_id": 42})
    _trace(tracker, uuid.uuid4())


def test_sessions_and_users_are_on_every_span(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path / "logs", "thread")
    _session_traces(tracker)
    tracker.close()
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    spans = [Span.FromString(raw) for raw in SpanAssembler().add(recorded_lines(tmp_path / "logs"))]
    assert len(spans) == 8
    seen = defaultdict(set)
    for span in spans:
        attrs = attributes(span)
        seen[span.trace_id].add(
            (attrs.get("session.id"), attrs.get("gen_ai.conversation.id"), attrs.get("user.id"))
        )
    assert sorted(map(sorted, seen.values()), key=str) == sorted(
        [
            [("s-1", "s-1", "alice")],
            [("s-1", "s-1", "alice")],
            [("t-9", "t-9", "42")],
            [(None, None, None)],
        ],
        key=str,
    )


def test_a_session_set_below_the_root_reaches_the_spans_open_or_started_after(tmp_path: Path) -> None:
    """``with_config(metadata=...)`` on a nested step: the root (open then) and the steps
    after take its session and user; the step that ended before it started was sent."""
    from langchain_core.runnables import RunnableLambda
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    tracker = _tracker(tmp_path / "logs", "thread")
    answer = RunnableLambda(lambda x: x, name="answer").with_config(
        metadata={"session_id": "sess-42", "user_id": "alice"}
    )
    chain = RunnableLambda(lambda x: x, name="before") | answer | RunnableLambda(lambda x: x, name="after")
    chain.invoke("q", config={"callbacks": [tracker]})
    tracker.close()
    spans = [Span.FromString(raw) for raw in SpanAssembler().add(recorded_lines(tmp_path / "logs"))]
    seen = {
        span.name: (attributes(span).get("session.id"), attributes(span).get("user.id")) for span in spans
    }
    assert seen == {
        "before": (None, None),
        "answer": ("sess-42", "alice"),
        "after": ("sess-42", "alice"),
        "invoke_workflow RunnableSequence": ("sess-42", "alice"),
    }


@pytest.mark.parametrize(
    ("root", "nested", "inside", "around"),
    [
        ({"user_id": "U-1"}, {"session_id": "S-1"}, ("S-1", "U-1"), ("S-1", "U-1")),
        ({"session_id": "S-1"}, {"user_id": "U-1"}, ("S-1", "U-1"), ("S-1", "U-1")),
        ({"session_id": "S-1", "user_id": "U-1"}, {"user_id": "U-2"}, ("S-1", "U-2"), ("S-1", "U-1")),
        ({"user_id": "U" * 300}, {"session_id": "S" * 300}, ("S" * 300, "U" * 300), ("S" * 300, "U" * 300)),
    ],
    ids=["user-then-session", "session-then-user", "own-user-wins", "long-ids"],
)
def test_a_session_or_user_set_below_the_root_is_merged_key_by_key(
    tmp_path: Path,
    receiver: OTLPReceiver,
    root: dict[str, str],
    nested: dict[str, str],
    inside: tuple[str, str],
    around: tuple[str, str],
) -> None:
    """The root carries one of the two, a nested step sets the other: the spans open then
    and those started after carry both (a run's own win, for it and its children), the
    step that ended before only the root's; the live export and a backfill agree."""
    from langchain_core.runnables import RunnableLambda
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    inner = RunnableLambda(lambda x: x, name="inner").with_config(metadata=nested)
    before = RunnableLambda(lambda x: x, name="before")
    later = RunnableLambda(lambda x: x, name="later")
    outer = RunnableLambda(lambda x: later.invoke(inner.invoke(before.invoke(x))), name="outer")
    destination = tmp_path / "logs"
    tracker = _tracker(destination, "thread", [OTLPExporter(receiver.endpoint, metrics=False)])
    outer.invoke(1, config={"callbacks": [tracker], "metadata": root})
    tracker.close()
    backfill = [Span.FromString(raw) for raw in SpanAssembler().add(recorded_lines(destination))]
    for spans in (receiver.spans, backfill):
        seen = {s.name: (attributes(s).get("session.id"), attributes(s).get("user.id")) for s in spans}
        own = (root.get("session_id"), root.get("user_id"))
        assert seen == {"before": own, "invoke_workflow outer": around, "inner": inside, "later": around}
    assert sorted(s.SerializeToString() for s in receiver.spans) == sorted(
        s.SerializeToString() for s in backfill
    )


def test_a_user_set_in_a_langgraph_node_reaches_the_thread_s_spans(tmp_path: Path) -> None:
    """Every run of a graph with a thread id has a session: a user set on a step inside a
    node still reaches the graph, the node and the steps after."""
    from langchain_core.runnables import RunnableLambda
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    login = RunnableLambda(lambda x: x, name="login").with_config(metadata={"user_id": "bob"})
    reply = RunnableLambda(lambda x: x + "!", name="reply")

    def node(state: Text) -> Text:
        return {"x": reply.invoke(login.invoke(state["x"]))}

    tracker = _tracker(tmp_path / "logs", "thread")
    one_node(node).invoke({"x": "a"}, config={"callbacks": [tracker], "configurable": {"thread_id": "t-7"}})
    tracker.close()
    spans = [Span.FromString(raw) for raw in SpanAssembler().add(recorded_lines(tmp_path / "logs"))]
    assert len(spans) == 4  # the graph, its node, login, reply
    for span in spans:
        attrs = attributes(span)
        people = (attrs["gen_ai.conversation.id"], attrs["session.id"], attrs.get("user.id"))
        assert people == ("t-7", "t-7", "bob"), span.name


def test_a_langgraph_thread_is_the_conversation(tmp_path: Path) -> None:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    def node(state: Text) -> Text:
        return {"x": state["x"] + "!"}

    tracker = _tracker(tmp_path / "logs", "thread")
    one_node(node).invoke(
        {"x": "a"},
        config={"callbacks": [tracker], "configurable": {"thread_id": "t-7"}, "metadata": {"user_id": "bob"}},
    )
    tracker.close()
    spans = [Span.FromString(raw) for raw in SpanAssembler().add(recorded_lines(tmp_path / "logs"))]
    assert len(spans) == 2  # the graph and its node
    for span in spans:
        attrs = attributes(span)
        people = (attrs["gen_ai.conversation.id"], attrs["session.id"], attrs["user.id"])
        assert people == ("t-7", "t-7", "bob")


def test_runs_lists_and_filters_sessions_and_users(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    destination = tmp_path / "logs"
    tracker = _tracker(destination, "thread")
    _session_traces(tracker)
    tracker.close()
    assert main(["runs", str(destination), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["sessions"], row["users"], row["events"]) == (["s-1", "t-9"], ["42", "alice"], 16)
    assert main(["runs", str(destination), "--session", "s-1", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["sessions"], row["users"], row["events"], row["errors"]) == (["s-1"], ["alice"], 8, 1)
    assert main(["runs", str(destination), "--user", "42", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["sessions"], row["events"], row["errors"]) == (["t-9"], 4, 0)
    assert main(["runs", str(destination), "--user", "nobody", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["runs", str(destination)]) == 0
    table = capsys.readouterr().out
    assert "SESSIONS" in table and "s-1, t-9" in table
    # The core install's path (every event in memory) gives the same rows as Polars'.
    import asynctrack

    events = asynctrack.read_events(destination)
    for session, user in ((None, None), ("s-1", None), (None, "42"), ("t-9", "42")):
        assert summarize_runs(events, session=session, user=user) == scan_run_summaries(
            destination, session=session, user=user
        )
