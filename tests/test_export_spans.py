"""Span assembly and the GenAI conventions (``asynctrack._export._spans``, ``_semconv``).

Real runs (ChatOpenAI on the loopback stub, a tool, a failing chain) are recorded to
files by a tracker; their lines are assembled into spans, wrapped into a request by the
hand-written encoder, and every request is decoded with ``opentelemetry-proto``.
"""

from __future__ import annotations

import math
import sys
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
from _infra.openai_stub import OpenAIStub
from _infra.otlp_receiver import attributes
from export_workloads import (
    SECRET,
    failing_chain,
    orphan_model_calls,
    recorded_lines,
    reordered,
    weather_agent,
)
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from asynctrack import AsyncTracker, TrackerConfig
from asynctrack._export import _model_end, _spans
from asynctrack._export import _protobuf as pb
from asynctrack._export._metrics import Metrics
from asynctrack._export._semconv import SCHEMA_URL, end_attributes
from asynctrack._export._spans import SPLIT_BYTES, SpanAssembler, span_id_of, trace_id_of


def _decode(spans: list[bytes]) -> list[Any]:
    raw = pb.request([pb.attribute("service.name", "test")], "asynctrack", "0", spans, SCHEMA_URL)
    request = ExportTraceServiceRequest.FromString(raw)
    assert request.SerializeToString() == raw  # every byte is the canonical encoding
    (resource_spans,) = request.resource_spans
    (scope_spans,) = resource_spans.scope_spans
    assert scope_spans.schema_url == SCHEMA_URL
    return list(scope_spans.spans)


def _record(tmp_path: Path, run: Any) -> list[bytes]:
    destination = tmp_path / "logs"
    tracker = AsyncTracker(
        destination, experiment_name="exp", run_name="r1", config=TrackerConfig(worker="thread")
    )
    run(tracker)
    tracker.close()
    return recorded_lines(destination)


@pytest.fixture(scope="module")
def agent_lines(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    tmp_path = tmp_path_factory.mktemp("agent")
    with OpenAIStub() as stub:
        return _record(tmp_path, lambda t: (weather_agent(stub.url, [t]), failing_chain([t])))


def _events(lines: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in lines]


def test_one_span_per_run_in_the_run_tree(agent_lines: list[bytes]) -> None:
    assembler = SpanAssembler()
    spans = _decode(assembler.add(agent_lines))
    events = _events(agent_lines)
    runs = {e["run_id"]: e.get("parent_run_id") for e in events}
    assert len(spans) == len(runs) == 5  # workflow, chat, tool, chat (streamed); the failing chain
    assert assembler.open_runs == 0
    by_run = {attributes(s)["langchain.run_id"]: s for s in spans}
    assert set(by_run) == set(runs)
    roots = [r for r, parent in runs.items() if parent is None]
    for run_id, parent in runs.items():
        span = by_run[run_id]
        assert span.span_id == span_id_of(run_id)
        root = run_id if parent is None else parent
        assert span.trace_id == trace_id_of(root) == uuid.UUID(root).bytes
        assert span.parent_span_id == (b"" if parent is None else span_id_of(parent))
        assert span.start_time_unix_nano <= span.end_time_unix_nano
    assert len({by_run[r].trace_id for r in roots}) == 2


def test_model_tool_and_workflow_attributes(agent_lines: list[bytes]) -> None:
    spans = _decode(SpanAssembler().add(agent_lines))
    names = sorted(s.name for s in spans)
    assert names == [
        "chat gpt-4o-mini",
        "chat gpt-4o-mini",
        "execute_tool get_weather",
        "invoke_workflow failing",  # a root chain: a workflow
        "invoke_workflow weather_agent",
    ]
    by_name: dict[str, list[Any]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    tool_call, streamed = by_name["chat gpt-4o-mini"]
    a = attributes(tool_call)
    assert tool_call.kind == Span.SPAN_KIND_CLIENT
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.request.temperature"] == pytest.approx(0.2)
    assert a["gen_ai.response.model"] == "gpt-4o-mini"
    assert a["gen_ai.response.id"].startswith("chatcmpl-")
    assert a["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (57, 23)
    assert "gen_ai.request.stream" not in a
    s = attributes(streamed)
    assert s["gen_ai.request.stream"] is True
    assert s["gen_ai.usage.output_tokens"] > 0  # usage of a streamed call
    assert (
        0
        < s["gen_ai.response.time_to_first_chunk"]
        < (streamed.end_time_unix_nano - streamed.start_time_unix_nano) / 1e9
    )
    assert s["gen_ai.response.finish_reasons"] == ["stop"]
    (tool,) = by_name["execute_tool get_weather"]
    t = attributes(tool)
    assert tool.kind == Span.SPAN_KIND_INTERNAL
    assert t["gen_ai.operation.name"] == "execute_tool"
    assert t["gen_ai.tool.name"] == "get_weather"
    assert t["gen_ai.tool.description"] == "Current weather for a city."
    assert t["gen_ai.tool.call.id"].startswith("call_")
    (workflow,) = by_name["invoke_workflow weather_agent"]
    w = attributes(workflow)
    assert (w["gen_ai.operation.name"], w["gen_ai.workflow.name"]) == ("invoke_workflow", "weather_agent")
    assert (w["asynctrack.experiment"], w["asynctrack.run"]) == ("exp", "r1")
    for span in spans:
        assert not any(
            k.startswith(("gen_ai.input", "gen_ai.output", "langchain.inputs")) for k in attributes(span)
        )


def test_chains_carry_the_openinference_kind(tmp_path: Path, agent_lines: list[bytes]) -> None:
    from langchain_core.runnables import RunnableLambda

    def shout(text: str) -> str:
        return text.upper()

    chain = RunnableLambda(shout, name="shout") | RunnableLambda(shout, name="again")
    lines = _record(tmp_path, lambda t: chain.invoke("x", config={"callbacks": [t]}))
    kinds = {
        s.name: attributes(s).get("openinference.span.kind")
        for s in _decode(SpanAssembler().add(lines + agent_lines))
    }
    # Chains, root or nested, are CHAIN (Arize Phoenix shows a chain without it as
    # UNKNOWN); model calls, tools, retrievers and agents get their kind from gen_ai.*.
    assert kinds == {
        "invoke_workflow RunnableSequence": "CHAIN",
        "shout": "CHAIN",
        "again": "CHAIN",
        "invoke_workflow weather_agent": "CHAIN",
        "invoke_workflow failing": "CHAIN",
        "chat gpt-4o-mini": None,
        "execute_tool get_weather": None,
    }


def test_a_failed_run_is_an_error_span(agent_lines: list[bytes]) -> None:
    spans = _decode(SpanAssembler().add(agent_lines))
    failed = [s for s in spans if s.status.code == Status.STATUS_CODE_ERROR]
    assert [s.name for s in failed] == ["invoke_workflow failing"]
    (span,) = failed
    assert attributes(span)["error.type"] == "ValueError"
    assert span.status.message == "the database is down"
    (event,) = span.events
    assert event.name == "exception"
    assert attributes(event)["exception.type"] == "ValueError"
    assert "Traceback" in attributes(event)["exception.stacktrace"]
    assert all(s.status.code == Status.STATUS_CODE_UNSET for s in spans if s is not span)


def test_content_only_with_capture_content(tmp_path: Path) -> None:
    with OpenAIStub() as stub:
        lines = _record(
            tmp_path, lambda t: weather_agent(stub.url, [t], question=f"echo: my key is {SECRET}")
        )
    plain = b"".join(SpanAssembler().add(lines))
    assert b"my key is" not in plain
    captured = SpanAssembler(capture_content=True).add(lines)
    decoded = _decode(captured)
    spans = {s.name: attributes(s) for s in decoded}
    chat = next(attributes(s) for s in decoded if s.name == "chat gpt-4o-mini")
    messages = orjson.loads(chat["gen_ai.input.messages"])
    assert messages[0] == {
        "role": "system",
        "parts": [{"type": "text", "content": "You are a helpful assistant. Answer briefly."}],
    }
    assert messages[1]["role"] == "user"
    assert "my key is [REDACTED]" in messages[1]["parts"][0]["content"]
    assert orjson.loads(chat["gen_ai.output.messages"])[0]["role"] == "assistant"
    assert "get_weather" in chat["gen_ai.tool.definitions"]
    tool = spans["execute_tool get_weather"]
    assert "Paris" in tool["gen_ai.tool.call.arguments"]
    assert "18 degrees" in tool["gen_ai.tool.call.result"]
    assert "langchain.inputs" in spans["invoke_workflow weather_agent"]
    assert SECRET.encode() not in b"".join(captured)
    assert SECRET[8:].encode() not in b"".join(captured)


def test_ids_are_the_same_every_time(agent_lines: list[bytes]) -> None:
    first = SpanAssembler().add(agent_lines)
    second = SpanAssembler().add(agent_lines)
    assert first == second
    # Fed in pieces (as the engine's chunks come), the spans are the same bytes.
    pieces = SpanAssembler()
    third = [span for i in range(0, len(agent_lines), 3) for span in pieces.add(agent_lines[i : i + 3])]
    assert third == first


def _line(kind: str, run_id: str, parent: str | None, ts: float, **data: Any) -> bytes:
    return orjson.dumps(
        {
            "seq": 0,
            "ts": ts,
            "kind": kind,
            "experiment": "e",
            "run": "r",
            "tracker": "t",
            "run_id": run_id,
            "parent_run_id": parent,
            "name": "step",
            "duration": data.pop("duration", None),
            "data": data,
            "tags": ["seq:step:1"],
            "metadata": {},
        }
    )


def test_interleaved_streams_of_two_envelope_layouts_count_every_token() -> None:
    # A stream's tokens are found by their run id's text where their tracker's envelope
    # puts it, counted from the kind: run names of other lengths put it elsewhere, and
    # seq and ts of other lengths come before the kind. Every token counts, in each layout.
    names = {str(uuid.uuid4()): "r", str(uuid.uuid4()): "a-much-longer-run-name"}

    def line(kind: str, run_id: str, seq: int, ts: float, **data: Any) -> bytes:
        envelope = {"seq": seq, "ts": ts, "kind": kind, "experiment": "e", "run": names[run_id]}
        return orjson.dumps(
            {
                **envelope,
                "tracker": "t",
                "run_id": run_id,
                "parent_run_id": None,
                "name": "ChatOpenAI",
                "duration": None,
                "data": data,
                "tags": [],
                "metadata": {},
            }
        )

    lines = [line("chat_model_start", run_id, 1, 10.0) for run_id in names]
    times = (10.5, 10.625, 10.7000000001, 11.0, 11.25, 12.5)
    for number, ts in enumerate(times):
        lines += [line("llm_new_token", run_id, 10**number, ts, token="x") for run_id in names]
    lines += [line("llm_end", run_id, 99, 13.0, response={"generations": []}) for run_id in names]
    spans = _decode(SpanAssembler().add(lines))
    assert len(spans) == 2
    for span in spans:
        a = attributes(span)
        assert (a["asynctrack.stream.chunks"], a["gen_ai.response.time_to_first_chunk"]) == (6, 0.5)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("frame", [1, 3, 7, 64, 256])
def test_lines_told_their_kinds_and_run_ids_give_the_same_spans(
    agent_lines: list[bytes], frame: int, shared: bool
) -> None:
    # The engine tells the assembler each line's kind and run id (add_records): a stream's
    # tokens after its first are counted from them, a row at a time, not read. The workload
    # alone, and two copies of it interleaved token by token (two streams at once) with
    # tokens of a run never started; a run id that is not text (not known) has its line
    # read. ``shared``: one object per run id, as the engine gives them.
    other = {run: str(uuid.uuid4()) for run in {e["run_id"] for e in _events(agent_lines)}}
    copy = agent_lines
    for old, new in other.items():
        copy = [line.replace(old.encode(), new.encode()) for line in copy]
    interleaved = [line for pair in zip(agent_lines, copy, strict=True) for line in pair]
    stray = _line("llm_new_token", str(uuid.uuid4()), None, 1.0, token="x")
    interleaved[len(interleaved) // 2 : len(interleaved) // 2] = [stray, stray]
    for lines in (agent_lines, interleaved):
        objects: dict[str, str] = {}
        kinds = [e["kind"] for e in _events(lines)]
        runs: list[object] = [
            objects.setdefault(e["run_id"], e["run_id"]) if shared else e["run_id"] for e in _events(lines)
        ]
        assert kinds.count("llm_new_token") > 10
        runs[kinds.index("llm_new_token") + 2] = None
        told, read = SpanAssembler(), SpanAssembler()
        spans_told: list[bytes] = []
        spans_read: list[bytes] = []
        for at in range(0, len(lines), frame):
            spans_told += told.add_records(
                lines[at : at + frame], kinds[at : at + frame], runs[at : at + frame]
            )
            spans_read += read.add(lines[at : at + frame])
        assert spans_told + told.close() == spans_read + read.close()
        streamed = [attributes(span) for span in _decode(spans_told)]
        chunks = [a["asynctrack.stream.chunks"] for a in streamed if "asynctrack.stream.chunks" in a]
        assert sum(chunks) == kinds.count("llm_new_token") - (2 if lines is interleaved else 0)


@pytest.mark.parametrize("extra", [1, 3, -1])
def test_kinds_and_run_ids_that_are_not_one_a_line_are_not_used(extra: int) -> None:
    run_id = str(uuid.uuid4())
    tokens = [_line("llm_new_token", run_id, None, 1.5, token="x") for _ in range(4)]
    lines = [_line("chain_start", run_id, None, 1.0), *tokens, _line("chain_end", run_id, None, 2.0)]
    kinds = ["chain_start", *["llm_new_token"] * (4 + extra), "chain_end"]
    runs = [run_id] * len(kinds)
    assert SpanAssembler().add_records(lines, kinds, runs) == SpanAssembler().add(lines)


def test_a_run_never_ended_is_exported_at_close_marked() -> None:
    root, child = str(uuid.uuid4()), str(uuid.uuid4())
    assembler = SpanAssembler()
    assert (
        assembler.add([_line("chain_start", root, None, 10.0), _line("chain_start", child, root, 10.5)]) == []
    )
    assert assembler.add([_line("chain_end", child, root, 11.0, duration=0.5)]) != []
    (span,) = _decode(assembler.close())
    a = attributes(span)
    assert a["asynctrack.unfinished"] == "not_ended"
    assert a["langchain.tags"] == ["seq:step:1"]
    assert span.status.code == Status.STATUS_CODE_UNSET
    assert span.span_id == span_id_of(root)
    assert assembler.close() == []


def test_an_end_without_its_start_is_rebuilt() -> None:
    run = str(uuid.uuid4())
    (span,) = _decode(SpanAssembler().add([_line("tool_end", run, None, 20.0, duration=2.0, output="x")]))
    assert span.name == "execute_tool step"
    assert span.start_time_unix_nano == 18_000_000_000
    assert span.end_time_unix_nano == 20_000_000_000
    assert attributes(span)["asynctrack.start_missing"] is True


def test_open_runs_are_bounded_by_bytes() -> None:
    assembler = SpanAssembler(max_open_bytes=4096)
    runs = [str(uuid.uuid4()) for _ in range(100)]
    out = assembler.add([_line("chain_start", r, None, 1.0 + i) for i, r in enumerate(runs)])
    assert assembler.open_bytes <= 4096
    assert out, "the oldest open runs were exported"
    evicted = _decode(out)
    assert [attributes(s)["asynctrack.unfinished"] for s in evicted] == ["evicted"] * len(evicted)
    assert [s.span_id for s in evicted] == [span_id_of(r) for r in runs[: len(evicted)]]
    # Their ends come later: counted, not exported a second time.
    assert assembler.add([_line("chain_end", runs[0], None, 200.0, duration=1.0)]) == []
    assert assembler.late_ends == 1
    assert len(_decode(assembler.close())) == 100 - len(evicted)


def test_a_run_whose_parent_was_never_seen_joins_its_trackers_one_open_root(tmp_path: Path) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    calls = [uuid.uuid4() for _ in range(3)]
    parents = [uuid.uuid4() for _ in range(3)]
    lines = _record(tmp_path, lambda t: orphan_model_calls(t, a, b, calls, parents))
    spans = {attributes(s)["langchain.run_id"]: s for s in _decode(SpanAssembler().add(lines))}
    assert len(spans) == 6
    tool = next(s for s in spans.values() if s.name == "execute_tool calculator")
    # a alone open: in its trace, under its innermost open run (the tool), marked.
    first = spans[str(calls[0])]
    assert (first.trace_id, first.parent_span_id) == (a.bytes, tool.span_id)
    assert attributes(first)["asynctrack.parent_inferred"] == str(parents[0])
    # a and b open: no guess; its trace is named after its parent, the parent's span id kept.
    second = spans[str(calls[1])]
    assert (second.trace_id, second.parent_span_id) == (parents[1].bytes, span_id_of(str(parents[1])))
    assert "asynctrack.parent_inferred" not in attributes(second)
    # b alone open again: under b.
    third = spans[str(calls[2])]
    assert (third.trace_id, third.parent_span_id) == (b.bytes, span_id_of(str(b)))
    assert attributes(third)["asynctrack.parent_inferred"] == str(parents[2])
    # Read a line at a time (as the worker's chunks may cut them): the same spans.
    assembler = SpanAssembler()
    assert sorted(span for line in lines for span in assembler.add([line])) == sorted(
        SpanAssembler().add(lines)
    )


def _concurrent_orphans(
    tracker: Any, root: uuid.UUID, calls: list[uuid.UUID], parents: list[uuid.UUID]
) -> None:
    """One agent (its tool running) and ``len(calls)`` model calls open together, each under
    its parent in ``parents``, never recorded (a batch of legacy LLMChain calls)."""
    from langchain_core.outputs import Generation, LLMResult

    done = LLMResult(generations=[[Generation(text="ok")]])
    step = uuid.uuid4()
    tracker.on_chain_start({}, {"q": "a"}, run_id=root, name="agent")
    tracker.on_tool_start({}, "x", run_id=step, parent_run_id=root, name="calculator")
    for call, parent in zip(calls, parents, strict=True):
        tracker.on_llm_start({}, ["q"], run_id=call, parent_run_id=parent)
    for call, parent in zip(calls, parents, strict=True):
        tracker.on_llm_end(done, run_id=call, parent_run_id=parent)
    tracker.on_tool_end("2", run_id=step, parent_run_id=root)
    tracker.on_chain_end({}, run_id=root)


def _lines_run(lines: list[bytes]) -> tuple[list[bytes], int]:
    """The spans of ``lines`` and the lines of ``_spans`` run to assemble them (sys.settrace:
    a count that does not depend on the machine's load)."""
    code_file = _spans.__file__
    counted = 0

    def trace(frame: Any, event: str, arg: Any) -> Any:
        nonlocal counted
        if frame.f_code.co_filename != code_file:
            return None
        if event == "line":
            counted += 1
        return trace

    sys.settrace(trace)
    try:
        spans = SpanAssembler().add(lines)
    finally:
        sys.settrace(None)
    return spans, counted


def test_placing_runs_whose_parent_was_never_seen_is_linear_in_the_open_runs(tmp_path: Path) -> None:
    worked = []
    for n in (100, 400):
        root = uuid.uuid4()
        calls = [uuid.uuid4() for _ in range(n)]
        parents = [uuid.uuid4() for _ in range(n)]  # one each: each call is placed anew
        lines = _record(
            tmp_path / str(n), partial(_concurrent_orphans, root=root, calls=calls, parents=parents)
        )
        encoded, counted = _lines_run(lines)
        spans = {attributes(s)["langchain.run_id"]: s for s in _decode(encoded)}
        tool = next(s for s in spans.values() if s.name == "execute_tool calculator")
        for call, parent in zip(calls, parents, strict=True):
            span = spans[str(call)]
            assert (span.trace_id, span.parent_span_id) == (root.bytes, tool.span_id)
            assert attributes(span)["asynctrack.parent_inferred"] == str(parent)
        worked.append(counted / n)
    # The same work per call at 400 calls open as at 100 (it was 4x: every open run looked at).
    assert worked[1] < 1.2 * worked[0], worked


def _one_parents_calls(
    tracker: Any, a: uuid.UUID, b: uuid.UUID, calls: list[uuid.UUID], p: uuid.UUID, q: uuid.UUID
) -> None:
    """Model calls under two chains never recorded, ``p`` and ``q`` (each called more than
    once), while agent ``a``, ``b``, both or neither are open (the review's find_4.py)."""
    from langchain_core.outputs import Generation, LLMResult

    done = LLMResult(generations=[[Generation(text="ok")]])
    step = uuid.uuid4()

    def call(run: uuid.UUID, parent: uuid.UUID) -> None:
        tracker.on_llm_start({}, ["q"], run_id=run, parent_run_id=parent)
        tracker.on_llm_end(done, run_id=run, parent_run_id=parent)

    tracker.on_chain_start({}, {"q": "a"}, run_id=a, name="agent_a")
    tracker.on_tool_start({}, "x", run_id=step, parent_run_id=a, name="calculator")
    call(calls[0], p)  # a alone open, in its tool: placed under the tool
    tracker.on_chain_start({}, {"q": "b"}, run_id=b, name="agent_b")
    call(calls[1], p)  # a and b open: where p's first call went (the tool)
    tracker.on_tool_end("2", run_id=step, parent_run_id=a)
    call(calls[2], p)  # the tool ended: in a's trace still, under a
    call(calls[3], q)  # a and b open: not placed
    tracker.on_chain_end({}, run_id=b)
    call(calls[4], q)  # a alone open: where q's first call went (not placed)
    tracker.on_chain_end({}, run_id=a)
    call(calls[5], p)  # no root open: p's place forgotten with a; not placed


def test_the_runs_under_one_parent_never_seen_share_a_trace(tmp_path: Path) -> None:
    a, b, p, q = (uuid.uuid4() for _ in range(4))
    calls = [uuid.uuid4() for _ in range(6)]
    lines = _record(tmp_path, partial(_one_parents_calls, a=a, b=b, calls=calls, p=p, q=q))
    spans = {attributes(s)["langchain.run_id"]: s for s in _decode(SpanAssembler().add(lines))}
    tool = next(s for s in spans.values() if s.name == "execute_tool calculator")
    placed = {calls[0]: tool.span_id, calls[1]: tool.span_id, calls[2]: span_id_of(str(a))}
    for call, parent_span_id in placed.items():
        span = spans[str(call)]
        assert (span.trace_id, span.parent_span_id) == (a.bytes, parent_span_id)
        assert attributes(span)["asynctrack.parent_inferred"] == str(p)
    for call, parent in ((calls[3], q), (calls[4], q), (calls[5], p)):
        span = spans[str(call)]
        assert (span.trace_id, span.parent_span_id) == (parent.bytes, span_id_of(str(parent)))
        assert "asynctrack.parent_inferred" not in attributes(span)
    # Read a line at a time (as the worker's chunks may cut them): the same spans.
    assembler = SpanAssembler()
    assert sorted(span for line in lines for span in assembler.add([line])) == sorted(
        SpanAssembler().add(lines)
    )


def test_many_trackers_runs_whose_parent_was_never_seen_are_placed_in_their_own_roots() -> None:
    # 70 trackers, one after another, each a root and a model call whose parent was never
    # seen (a tracker's runs are kept as a tree from its first such call on; the trackers
    # with no root open are forgotten past 64), then the first one again, its call in a tool.
    def line(tracker: str, kind: str, run: str, parent: str | None, ts: float) -> bytes:
        return orjson.dumps({**orjson.loads(_line(kind, run, parent, ts)), "tracker": tracker})

    lines, homes = [], {}
    for number in [*range(70), 0]:
        tracker, root, call, tool = f"t{number}", str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
        lines.append(line(tracker, "chain_start", root, None, 1.0))
        homes[call] = (root, root)
        if len(homes) == 71:
            lines.append(line(tracker, "tool_start", tool, root, 1.0))
            homes[call] = (root, tool)
        lines += [
            line(tracker, "llm_start", call, str(uuid.uuid4()), 1.0),
            line(tracker, "llm_end", call, None, 2.0),
        ]
        if len(homes) == 71:
            lines.append(line(tracker, "tool_end", tool, root, 2.0))
        lines.append(line(tracker, "chain_end", root, None, 2.0))
    spans = {attributes(s)["langchain.run_id"]: s for s in _decode(SpanAssembler().add(lines))}
    for call, (root, home) in homes.items():
        assert (spans[call].trace_id, spans[call].parent_span_id) == (uuid.UUID(root).bytes, span_id_of(home))
        assert "asynctrack.parent_inferred" in attributes(spans[call])


def test_other_events_of_a_run_are_span_events() -> None:
    run = str(uuid.uuid4())
    lines = [
        _line("chain_start", run, None, 1.0),
        _line("agent_action", run, None, 1.1, action={"tool": "search", "tool_input": "q", "log": ""}),
        _line("retry", run, None, 1.2, attempt_number=2),
        _line("custom_event", run, None, 1.3, name="progress", data={"done": 1}),
        _line("chain_end", run, None, 2.0, duration=1.0, outputs={}),
    ]
    (span,) = _decode(SpanAssembler().add(lines))
    assert [e.name for e in span.events] == [
        "langchain.agent_action",
        "langchain.retry",
        "langchain.custom_event",
    ]
    assert [attributes(e) for e in span.events] == [
        {"gen_ai.tool.name": "search"},
        {"langchain.retry.attempt": 2},
        {"langchain.event.name": "progress"},
    ]
    assert span.events[1].time_unix_nano == 1_200_000_000


def _paused_and_resumed(checkpoint: str, ns: list[str], resumed_from: str) -> list[bytes]:
    paused, resumed = str(uuid.uuid4()), str(uuid.uuid4())
    error = {"type": "langgraph.errors.GraphInterrupt", "message": "(Interrupt(value='secret plan'),)"}
    interrupts = [{"value": "secret plan", "id": "i1"}]
    place = {"checkpoint_id": checkpoint, "checkpoint_ns": ns}
    resume = {"checkpoint_id": resumed_from, "checkpoint_ns": ns}
    return [
        _line("chain_start", paused, None, 1.0),
        _line("graph_interrupt", paused, None, 1.1, interrupts=interrupts, status="pending", **place),
        _line("chain_error", paused, None, 1.2, duration=0.2, error=error),
        _line("chain_start", resumed, None, 2.0),
        _line("graph_resume", resumed, None, 2.1, status="pending", **resume),
        _line("chain_end", resumed, None, 2.2, duration=0.2, outputs={}),
    ]


def test_a_resume_links_to_the_span_that_paused_at_its_checkpoint() -> None:
    paused, resumed = _decode(SpanAssembler().add(_paused_and_resumed("c1", ["sub", "task"], "c1")))
    assert (paused.status.code, attributes(paused)["langgraph.interrupted"]) == (
        Status.STATUS_CODE_UNSET,
        True,
    )
    assert attributes(paused.events[0]) == {
        "langgraph.checkpoint.id": "c1",
        "langgraph.checkpoint.ns": "sub|task",
        "langgraph.status": "pending",
        "langgraph.interrupt.count": 1,
        "langgraph.interrupt.ids": ["i1"],
    }
    assert b"secret plan" not in paused.SerializeToString()  # content, not captured
    (link,) = resumed.links
    assert (link.trace_id, link.span_id) == (paused.trace_id, paused.span_id)
    # Another checkpoint, or one never seen paused at: no link.
    for other in (_paused_and_resumed("c1", [], "c2"), _paused_and_resumed("c1", ["a"], "c1")[3:]):
        assert [list(span.links) for span in _decode(SpanAssembler().add(other))][-1] == []


def test_checkpoints_paused_at_are_bounded() -> None:
    assembler = SpanAssembler()
    for n in range(_spans._PAUSED + 10):
        assembler.add(_paused_and_resumed(f"c{n}", [], "none")[:3])
    assert len(assembler._paused) == _spans._PAUSED
    assert ("", "c9") not in assembler._paused and ("", f"c{_spans._PAUSED + 9}") in assembler._paused


def test_bad_lines_are_counted_and_skipped() -> None:
    run = str(uuid.uuid4())
    assembler = SpanAssembler()
    spans = assembler.add([b"not json", b'{"kind": "chain_start"}', _line("chain_start", run, None, 1.0)])
    assert (spans, assembler.bad_lines, assembler.open_runs) == ([], 2, 1)


def test_attribute_values_of_every_type_decode() -> None:
    # A span's attributes are Span fields (span_attribute), an event's KeyValues (attribute).
    attrs = [
        pb.span_attribute("s", "é\ud800"),
        pb.span_attribute("t", True),
        pb.span_attribute("f", False),
        pb.span_attribute("i", -5),
        pb.span_attribute("big", 2**40),
        pb.span_attribute("d", 1.5),
        pb.span_attribute("a", ["x", "y" * 20000]),
        pb.common_span_attribute("m", "gpt-4o-mini"),
    ]
    head = pb.span_head(b"\x01" * 16, b"\x02" * 8, None, pb.name_and_kind("n" * 300, pb.KIND_INTERNAL))
    events = [pb.event(5, "e", [pb.attribute("k", 1)])]
    span = pb.span_of(head, 1, 2**63, attrs, events, pb.STATUS_ERROR, "bad")
    (decoded,) = _decode([span])
    assert attributes(decoded) == {
        "s": "é?",
        "t": True,
        "f": False,
        "i": -5,
        "big": 2**40,
        "d": 1.5,
        "a": ["x", "y" * 20000],
        "m": "gpt-4o-mini",
    }
    assert attributes(decoded.events[0]) == {"k": 1}
    assert (decoded.end_time_unix_nano, decoded.status.message, decoded.events[0].name) == (2**63, "bad", "e")


@pytest.mark.parametrize("key", ["k", "gen_ai.usage.input_tokens", *("x" * n for n in (116, 117, 124, 130))])
def test_span_attribute_is_the_attribute_in_a_span_field(key: str) -> None:
    # span_attribute() writes short texts, small counts and floats without attribute():
    # around each size its shortcuts stop at, the same bytes as attribute() in field 9.
    values: list[pb.AttributeValue] = ["", "é\ud800", "x" * 100, "x" * 123, "x" * 124, "x" * 20000]
    values += [True, False, 0, 127, 128, 300, -5, 2**40, 1.5, float("inf"), ["a", "b"]]
    for value in values:
        kv = pb.attribute(key, value)
        assert pb.span_attribute(key, value) == pb.wrap(b"\x4a", kv), (len(key), value)


def test_long_lines_read_in_parts_give_the_spans_of_whole_lines(tmp_path: Path) -> None:
    # A 40 KB question: the model starts' messages, the root chain's inputs and the error's
    # traceback make lines far past SPLIT_BYTES, read in parts (content not captured), and
    # the ends of the chain and the tool are not parsed. The same events with the fields
    # after "kind" in another order are parsed whole: same spans, byte for byte
    # (attributes, times, events, status).
    question = "What is the weather in Paris today? " + "Tell me more about the sky. " * 1500
    with OpenAIStub() as stub:
        lines = _record(
            tmp_path,
            lambda t: (
                weather_agent(stub.url, [t], question=question),
                weather_agent(stub.url, [t], question=question + "And tomorrow?"),  # described once
                failing_chain([t]),
            ),
        )
    assert sum(len(line) >= SPLIT_BYTES for line in lines) >= 8
    for capture in (False, True):
        in_parts = SpanAssembler(capture_content=capture).add(lines)
        whole = SpanAssembler(capture_content=capture).add(reordered(lines))
        assert len(in_parts) == 9
        assert in_parts == whole
    chat = next(attributes(s) for s in _decode(in_parts) if s.name == "chat gpt-4o-mini")
    assert chat["gen_ai.request.model"] == "gpt-4o-mini"
    assert chat["gen_ai.request.temperature"] == pytest.approx(0.2)
    assert "Tell me more" in chat["gen_ai.input.messages"]


def test_a_model_start_writes_its_content_last_in_data(agent_lines: list[bytes]) -> None:
    # What reading long lines in parts relies on: the handler writes a model start's
    # messages (prompts) as the last field of data, data right after the envelope, and tags
    # right after data.
    starts = [e for e in _events(agent_lines) if e["kind"] in ("chat_model_start", "llm_start")]
    assert starts
    for event in starts:
        assert list(event["data"])[-1] in ("messages", "prompts")
    for line in agent_lines:
        keys = list(orjson.loads(line))
        assert keys[keys.index("duration") + 1 : keys.index("duration") + 4] == ["data", "tags", "metadata"]


def test_model_starts_alike_but_for_their_metadata_are_described_each(agent_lines: list[bytes]) -> None:
    # Model starts are described once per text of data (without content) and metadata:
    # a start that differs only in its metadata gets its own attributes.
    start = next(line for line in agent_lines if b'"kind":"chat_model_start"' in line)
    assert len(start) >= SPLIT_BYTES and b'"ls_provider":"openai"' in start
    run_id = orjson.loads(start)["run_id"].encode()
    lines = [start.replace(run_id, str(uuid.uuid4()).encode()) for _ in range(3)]
    lines[2] = lines[2].replace(b'"ls_provider":"openai"', b'"ls_provider":"anthropic"')
    assembler = SpanAssembler()
    assembler.add(lines)
    spans = _decode(assembler.close())
    assert [attributes(s)["gen_ai.provider.name"] for s in spans] == ["openai", "openai", "anthropic"]


def test_fields_of_unexpected_types_leave_their_attributes_out() -> None:
    # An experiment or run name that is not text (a line not written by a tracker) cannot
    # key the assembler's caches: the span is still made, without those attributes.
    run = str(uuid.uuid4())
    start = orjson.loads(_line("chain_start", run, None, 1.0))
    start["experiment"], start["run"] = ["not", "text"], {"x": 1}
    spans = _decode(SpanAssembler().add([orjson.dumps(start), _line("chain_end", run, None, 2.0)]))
    (span,) = spans
    assert "asynctrack.experiment" not in attributes(span)
    assert "asynctrack.run" not in attributes(span)
    assert attributes(span)["langchain.run_id"] == run


def test_model_starts_of_one_template_differ_in_what_their_lines_differ_in(agent_lines: list[bytes]) -> None:
    # A model start whose text but for seq, time, run id, parent and content was read
    # before is not parsed again: each field that differs still makes its span differ
    # as it does when the line is parsed whole (the same events in another field order).
    start = next(line for line in agent_lines if b'"kind":"chat_model_start"' in line)
    event = orjson.loads(start)
    variants = []
    for change in (
        {},
        {"seq": 123456789, "ts": event["ts"] + 0.5},
        {"parent_run_id": str(uuid.uuid4())},
        {"tags": ["seq:step:2"]},
        {"experiment": "other"},
        {"metadata": {**event["metadata"], "user_id": "u-2"}},
        {"name": "AnotherChatModel"},
        {
            "data": {
                **event["data"],
                "invocation_params": {**event["data"]["invocation_params"], "temperature": 0.9},
            }
        },
    ):
        for _ in range(2):  # the second of each reads a known template
            variants.append({**event, "run_id": str(uuid.uuid4()), **change})
    lines = [orjson.dumps(v) for v in variants]
    assert all(len(line) >= SPLIT_BYTES for line in lines)
    whole = [orjson.dumps({key: v[key] for key in sorted(v, key=lambda k: k == "data")}) for v in variants]
    in_parts, parsed = SpanAssembler(), SpanAssembler()
    in_parts.add(lines)
    parsed.add(whole)
    spans = in_parts.close()
    assert spans == parsed.close()
    decoded = _decode(spans)
    assert len(decoded) == 16
    assert [s.start_time_unix_nano for s in decoded[2:4]] == [int((event["ts"] + 0.5) * 1e9)] * 2
    assert [s.parent_span_id for s in decoded[4:6]] == [span_id_of(v["parent_run_id"]) for v in variants[4:6]]
    assert [attributes(s)["langchain.tags"] for s in decoded[6:8]] == [["seq:step:2"]] * 2
    assert [attributes(s)["asynctrack.experiment"] for s in decoded[8:10]] == ["other"] * 2
    assert [attributes(s)["user.id"] for s in decoded[10:12]] == ["u-2"] * 2
    assert [attributes(s)["gen_ai.request.temperature"] for s in decoded[14:16]] == [0.9] * 2
    assert [attributes(s)["langchain.run_id"] for s in decoded] == [v["run_id"] for v in variants]


# -- an llm_end read by its schema (content not captured) ------------------------------------------

_GENERATION: dict[str, Any] = {
    "text": "",
    "generation_info": {"finish_reason": "tool_calls", "logprobs": None},
    "type": "ChatGeneration",
    "message": {
        "content": "",
        "additional_kwargs": {"refusal": None},
        "response_metadata": {
            "token_usage": {"completion_tokens": 23, "prompt_tokens": 57, "total_tokens": 80},
            "model_name": "gpt-4o-mini",
            "id": "chatcmpl-1",
            "finish_reason": "tool_calls",
        },
        "type": "ai",
        "id": "lc_run--1",
        "tool_calls": [
            {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"}
        ],
        "usage_metadata": {
            "input_tokens": 57,
            "output_tokens": 23,
            "total_tokens": 80,
            "input_token_details": {"cache_read": 7},
        },
    },
}
_OUTPUT = {
    "token_usage": {"completion_tokens": 23, "prompt_tokens": 57},
    "model_name": "gpt-4o",
    "id": "chatcmpl-2",
}


def _hostile_message() -> dict[str, Any]:
    # The keys the schema reads, inside a tool call's arguments and the provider's
    # dicts, with other values; quotes, braces and the keys' text inside strings.
    message = orjson.loads(orjson.dumps(_GENERATION["message"]))
    decoy = {
        "llm_output": {"token_usage": {"prompt_tokens": 1}, "model_name": "decoy", "id": "decoy"},
        "usage_metadata": {"input_tokens": 1000, "input_token_details": {"cache_read": 999}},
        "generation_info": {"finish_reason": "decoy"},
        "response_metadata": {"id": "decoy", "finish_reason": "decoy"},
        "finish_reason": "decoy",
    }
    message["tool_calls"][0]["args"] = decoy
    message["additional_kwargs"] = {"generations": [[{"generation_info": {"finish_reason": "decoy"}}]]}
    message["content"] = '"},"llm_output":{"model_name":"decoy"},"finish_reason":"decoy" [REDACTED] \\" {'
    return message


def _responses() -> dict[str, Any]:
    """llm_end responses whose spans the schema's read must give as a whole parse does
    (``None``: the data itself is not a response)."""
    generation = _GENERATION
    message = generation["message"]
    no_info = {**generation, "generation_info": None}
    other_metadata = {"id": "chatcmpl-3", "model_name": "other", "finish_reason": "length"}
    other_usage = {"input_tokens": 2, "output_tokens": 1, "input_token_details": {"cache_read": 1}}
    other = {
        **no_info,
        "message": {**message, "response_metadata": other_metadata, "usage_metadata": other_usage},
    }
    cases: dict[str, Any] = {
        "as ChatOpenAI writes it": {"generations": [[generation]], "llm_output": _OUTPUT},
        "streamed: llm_output null, usage and model from the message": {
            "generations": [[no_info]],
            "llm_output": None,
        },
        "llm_output without usage, id or model": {"generations": [[no_info]], "llm_output": {"x": 1}},
        "two prompts, two generations each": {
            "generations": [[generation, no_info], [no_info, other]],
            "llm_output": None,
        },
        "tool arguments and provider dicts holding the keys read": {
            "generations": [[{**generation, "message": _hostile_message()}]],
            "llm_output": _OUTPUT,
        },
        "a message without response metadata or usage": {
            "generations": [[{**no_info, "message": {"content": "x", "response_metadata": None}}]],
        },
        "a serialized message: its usage in kwargs": {
            "generations": [
                [{**no_info, "message": {"lc": 1, "kwargs": {"usage_metadata": {"input_tokens": 3}}}}]
            ],
        },
        "counts of other types": {
            "generations": [[{**no_info, "message": {**message, "usage_metadata": {"input_tokens": "5"}}}]],
            "llm_output": {"token_usage": {"prompt_tokens": 2.5, "completion_tokens": True}},
        },
        "non-ASCII text": {"generations": [[{**generation, "text": "météo ☀️"}]], "llm_output": _OUTPUT},
        "no generations": {"generations": [], "llm_output": _OUTPUT},
        # Shapes the schema does not read: parsed whole.
        "a generation that is not an object": {
            "generations": [["text"], [generation]],
            "llm_output": _OUTPUT,
        },
        "generation_info not an object": {"generations": [[{**generation, "generation_info": "x"}]]},
        "llm_output not an object": {"generations": [[generation]], "llm_output": ["x"]},
        "response metadata not an object": {
            "generations": [[{**no_info, "message": {**message, "response_metadata": "x"}}]],
        },
        "usage not an object": {
            "generations": [[{**no_info, "message": {**message, "usage_metadata": [1, 2]}}]],
            "llm_output": {"token_usage": "x", "model_name": "m"},
        },
        "usage details not an object": {
            "generations": [
                [{**no_info, "message": {**message, "usage_metadata": {"input_token_details": 3}}}]
            ],
        },
        "a token count beyond 64 bits": {
            "generations": [[generation]],
            "llm_output": {"token_usage": {"prompt_tokens": _BIG, "completion_tokens": 1}},
        },
        "a cached count beyond 64 bits": {
            "generations": [
                [
                    {
                        **generation,
                        "message": {
                            **message,
                            "usage_metadata": {
                                "input_tokens": 1,
                                "input_token_details": {"cache_read": _BIG},
                            },
                        },
                    }
                ]
            ],
        },
        "a message usage beyond 64 bits": {
            "generations": [[{**no_info, "message": {**message, "usage_metadata": {"output_tokens": _BIG}}}]],
        },
        # Negative counts: no model reports one; the schema gives up, the line is parsed whole.
        "a negative token count": {
            "generations": [[generation]],
            "llm_output": {"token_usage": {"prompt_tokens": -3, "completion_tokens": 1}},
        },
        "a negative message usage": {
            "generations": [[{**no_info, "message": {**message, "usage_metadata": {"output_tokens": -2}}}]],
        },
        "a negative cached count": {
            "generations": [
                [
                    {
                        **generation,
                        "message": {
                            **message,
                            "usage_metadata": {"input_tokens": 1, "input_token_details": {"cache_read": -1}},
                        },
                    }
                ]
            ],
        },
        "no response": None,
    }
    return cases


_BIG = 123_456_789_012_345  # written as a count beyond 64 bits (_with_big_counts)


def _with_big_counts(line: bytes, case: str) -> bytes:
    # orjson writes no integer beyond 64 bits (a writer's fallback or a file edited by hand
    # may): orjson reads one back as a float, msgspec as an int.
    big = {"a token count": 2**64, "a cached count": -(2**70), "a message usage": 2**65}
    return line.replace(str(_BIG).encode(), str(big[case.split(" beyond", maxsplit=1)[0]]).encode())


def _ends(response: Any, case: str) -> list[bytes]:
    lines = []
    for number in range(2):  # one with its start, one without (rebuilt from the end)
        run = str(uuid.uuid4())
        if number == 0:
            lines.append(_line("chat_model_start", run, None, 1.0, invocation_params={"model": "gpt-4o"}))
        data = {"response": response} if response is not None else {"other": 1}
        lines.append(_line("llm_end", run, None, 2.5, duration=1.5, **data))
    return [_with_big_counts(line, case) if case.endswith("beyond 64 bits") else line for line in lines]


def _metrics() -> Metrics:
    return Metrics(
        [pb.attribute("service.name", "test")], pb.scope("asynctrack", "0"), SCHEMA_URL, backfill=True
    )


_NOT_READ = (
    "a generation that is not an object",
    "generation_info not an object",
    "llm_output not an object",
)
_NOT_READ += ("response metadata not an object", "no response")
_NOT_READ += ("usage not an object", "usage details not an object")


@pytest.mark.parametrize("case", list(_responses()))
def test_a_model_end_read_by_its_schema_is_the_span_of_a_whole_parse(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same lines in another field order are parsed whole (orjson): every span and
    # metrics point is the same, byte for byte. Ends of another shape are not read by the
    # schema, and a count beyond 64 bits makes it give up.
    lines = _ends(_responses()[case], case)
    read: list[Any] = []
    model_end = _model_end.model_end
    monkeypatch.setattr(
        _model_end,
        "model_end",
        lambda response, attrs: read.append(model_end(response, attrs)) or read[-1],
    )
    metrics = (_metrics(), _metrics())
    schema, whole = SpanAssembler(metrics=metrics[0]), SpanAssembler(metrics=metrics[1])
    spans = schema.add(lines) + schema.close()
    assert spans == whole.add(reordered(lines)) + whole.close()
    assert len(spans) == 2
    assert metrics[0].request() == metrics[1].request()
    assert (schema.bad_lines, schema.late_ends) == (whole.bad_lines, whole.late_ends)
    # Only the end whose start was seen is offered to the schema.
    if case in _NOT_READ:
        assert read == []
    elif case.endswith("beyond 64 bits") or case.startswith("a negative"):
        assert read == [None]
    else:
        assert len(read) == 1 and read[0] is not None


def test_a_model_end_that_is_not_utf8_is_a_bad_line_as_in_a_whole_parse() -> None:
    # msgspec checks only the strings it decodes; orjson, the whole line.
    run = str(uuid.uuid4())
    response = {"generations": [[{**_GENERATION, "text": "café"}]], "llm_output": _OUTPUT}
    lines = [
        _line("chat_model_start", run, None, 1.0, invocation_params={"model": "gpt-4o"}),
        _line("llm_end", run, None, 2.5, duration=1.5, response=response).replace(
            "café".encode(), b"caf\xe9"
        ),
    ]
    assert b"caf\xe9" in lines[1]
    assembler = SpanAssembler()
    spans = assembler.add(lines) + assembler.close()
    assert assembler.bad_lines == 1  # orjson refuses the line
    assert attributes(_decode(spans)[0])["asynctrack.unfinished"] == "not_ended"


def test_a_run_that_streams_again_after_its_end_counts_its_new_tokens() -> None:
    # The last token's stream is compared before it is looked up: a stream that ended is
    # not it any more, even for a line of the same run id (a run started again).
    run, other = str(uuid.uuid4()), str(uuid.uuid4())
    lines = []
    for start, count in ((1.0, 3), (5.0, 2)):
        lines.append(_line("chat_model_start", run, None, start, invocation_params={"model": "m"}))
        lines += [_line("llm_new_token", run, None, start + 0.25 + n, token="x") for n in range(count)]
        lines += [_line("llm_new_token", other, None, start + 0.5, token="y")]  # no start: a bad run
        lines.append(_line("llm_end", run, None, start + 3.0, response={"generations": []}))
    spans = SpanAssembler().add(lines)
    assert spans == SpanAssembler().add(reordered(lines))
    counted = [attributes(s) for s in _decode(spans)]
    assert [(a["asynctrack.stream.chunks"], a["gen_ai.response.time_to_first_chunk"]) for a in counted] == [
        (3, 0.25),
        (2, 0.25),
    ]


def test_recent_model_start_templates_are_tried_as_their_text_says(agent_lines: list[bytes]) -> None:
    # Two model setups alternating, each start read from a recent template by comparing
    # its text: a content holding data's own content key again, a start of a child run,
    # and one whose tail differs are the spans a whole parse makes of them.
    start = next(line for line in agent_lines if b'"kind":"chat_model_start"' in line)
    event = orjson.loads(start)
    other = {**event["data"], "invocation_params": {**event["data"]["invocation_params"], "temperature": 0.7}}
    nested = [[{"content": "x", "additional_kwargs": {"messages": [1]}, "type": "human"}]]
    variants = []
    for change in (
        {},
        {"data": other},
        {},
        {"data": {**event["data"], "messages": nested}},
        {"data": other},
        {"parent_run_id": str(uuid.uuid4())},
        {"tags": ["a"]},
        {"metadata": {**event["metadata"], "ls_provider": "openx"}},  # a tail as long
    ):
        variants.append({**event, "run_id": str(uuid.uuid4()), **change})
    lines = [orjson.dumps(v) for v in variants]
    assert all(len(line) >= SPLIT_BYTES for line in lines)
    assert b'"additional_kwargs":{"messages":[' in lines[3]
    recent, whole = SpanAssembler(), SpanAssembler()
    recent.add(lines)
    whole.add(reordered(lines))
    spans = recent.close()
    assert spans == whole.close()
    decoded = [attributes(s) for s in _decode(spans)]
    assert [a["gen_ai.request.temperature"] for a in decoded] == pytest.approx(
        [0.2, 0.7, 0.2, 0.2, 0.7, 0.2, 0.2, 0.2]
    )
    assert [a["gen_ai.provider.name"] for a in decoded] == ["openai"] * 7 + ["openx"]


def test_without_msgspec_model_ends_are_parsed_whole_to_the_same_spans(
    agent_lines: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # msgspec comes with the otel extra; without it every llm_end line is parsed by orjson.
    with_schema = SpanAssembler(metrics=_metrics())
    spans = with_schema.add(agent_lines) + with_schema.close()
    monkeypatch.setattr(_spans, "_schema", None)
    without = SpanAssembler(metrics=_metrics())
    assert without.add(agent_lines) + without.close() == spans
    assert with_schema.metrics.request() == without.metrics.request()  # type: ignore[union-attr]


@given(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(10**30), 10**30)))
def test_a_time_is_read_as_float_reads_it(number: float) -> None:
    # msgspec reads the JSON numbers; float() reads them too, to the same value.
    text = orjson.dumps(number) if isinstance(number, float) else str(number).encode()
    assert _model_end.seconds(text) == float(text)
    assert math.copysign(1.0, _model_end.seconds(text)) == math.copysign(1.0, float(text))


@pytest.mark.parametrize("text", [b"1_796.5", b" 1.5 ", b"nan", b"-inf", b"1e400", b"1.5x", b"", b'"1.5"'])
def test_a_time_that_is_not_a_json_number_is_read_by_float(text: bytes) -> None:
    try:
        expected = float(text)
    except ValueError:
        with pytest.raises(ValueError):
            _model_end.seconds(text)
        return
    read = _model_end.seconds(text)
    assert read == expected or (math.isnan(expected) and math.isnan(read))


def test_more_model_setups_in_turn_than_templates_tried_are_the_spans_of_a_whole_parse(
    agent_lines: list[bytes],
) -> None:
    # Six setups called in turn, three times: more than the recent templates kept, so the
    # template a start is tried with first (the one that followed last time) was dropped.
    start = next(line for line in agent_lines if b'"kind":"chat_model_start"' in line)
    event = orjson.loads(start)
    lines = []
    for _ in range(3):
        for setup in range(_spans._RECENT_STARTS + 2):
            params = {**event["data"]["invocation_params"], "temperature": setup / 10}
            data = {**event["data"], "invocation_params": params}
            lines.append(orjson.dumps({**event, "run_id": str(uuid.uuid4()), "data": data}))
    recent, whole = SpanAssembler(), SpanAssembler()
    recent.add(lines)
    whole.add(reordered(lines))
    spans = recent.close()
    assert spans == whole.close()
    temperatures = [attributes(s)["gen_ai.request.temperature"] for s in _decode(spans)]
    assert temperatures == pytest.approx([setup / 10 for setup in range(_spans._RECENT_STARTS + 2)] * 3)


@pytest.mark.parametrize(
    "response_id",
    ["chatcmpl-AbC123", "réponse-été", "x" * 127, "y" * 128, "z" * 300, "lone \ud800 surrogate", "☀️" * 40],
)
def test_a_response_id_is_the_attribute_of_its_text(response_id: str) -> None:
    # Written from a head kept by its UTF-8 length: the bytes of span_attribute.
    attrs, _, _ = end_attributes([], response_id, None, [], None, None)
    assert attrs == [pb.span_attribute("gen_ai.response.id", response_id)]
