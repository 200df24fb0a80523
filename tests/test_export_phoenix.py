"""``OTLPExporter`` and ``asynctrack export`` against a real Arize Phoenix server on 127.0.0.1.

Phoenix (``arize-phoenix``) is not in the ``test`` extra: it cannot share an environment
with the MLflow server there. Its own environment: ``pip install -e '.[test-phoenix]'``,
then ``python -m pytest tests/test_export_phoenix.py``. Without Phoenix these tests skip
and say why; ``ASYNCTRACK_REQUIRE_PHOENIX=1`` turns the skip into a failure.

What is checked is what Phoenix stores and shows, read back through its REST API: one
span per run, the run tree, the trace and span ids asynctrack derives from the run ids
(the same from the files later), the span kinds and the model, token and tool
attributes Phoenix makes from the GenAI ones, the error of a failed run, the session.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _infra.openai_stub import OpenAIStub
from _infra.phoenix_server import PhoenixServer
from export_workloads import failing_chain, recorded_lines, weather_agent

from asynctrack import AsyncTracker, OTLPExporter, TrackerConfig
from asynctrack._cli import main
from asynctrack._export._spans import SpanAssembler

# One Phoenix start per module: 35-80 s on a busy 2-core machine.
pytestmark = pytest.mark.timeout(300)

WAIT = 30.0


def _phoenix_or_skip() -> None:
    # Its distribution, not an import: importing Phoenix here would load its whole server.
    try:
        importlib.metadata.version("arize-phoenix")
        return
    except importlib.metadata.PackageNotFoundError:
        pass
    reason = "Arize Phoenix is not installed (pip install -e '.[test-phoenix]' in an environment of its own)"
    if os.environ.get("ASYNCTRACK_REQUIRE_PHOENIX") == "1":
        pytest.fail(f"ASYNCTRACK_REQUIRE_PHOENIX=1: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def phoenix() -> Iterator[PhoenixServer]:
    _phoenix_or_skip()
    with PhoenixServer() as server:
        yield server


def _project() -> str:
    """A Phoenix project of the test's own (projects are made by their first span)."""
    return f"asynctrack-{uuid.uuid4().hex[:12]}"


def _derived(destination: Path) -> dict[str, tuple[str, str | None, str]]:
    """span id -> (trace id, parent span id, name), as asynctrack derives them from the files."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    assembler = SpanAssembler()
    encoded = [*assembler.add(recorded_lines(destination)), *assembler.close()]  # runs never ended too
    spans = [Span.FromString(raw) for raw in encoded]
    return {s.span_id.hex(): (s.trace_id.hex(), s.parent_span_id.hex() or None, s.name) for s in spans}


def _shown(spans: list[dict[str, Any]]) -> dict[str, tuple[str, str | None, str]]:
    """The same, as Phoenix shows them."""
    return {s["context"]["span_id"]: (s["context"]["trace_id"], s["parent_id"], s["name"]) for s in spans}


def test_phoenix_shows_every_run_with_its_ids_kind_and_attributes(
    tmp_path: Path, phoenix: PhoenixServer, stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project()
    # Phoenix files spans under the resource's project name; the OTEL_* variables the
    # application has when the tracker is made travel to the worker process.
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"openinference.project.name={project}")
    destination = tmp_path / "logs"
    tracker = AsyncTracker(
        destination,
        experiment_name="exp",
        run_name="r1",
        exporters=[OTLPExporter(phoenix.url, capture_content=True)],
    )
    weather_agent(stub.url, [tracker], metadata={"session_id": "s-42", "user_id": "alice"})
    failing_chain([tracker])
    tracker.close(timeout=WAIT)
    stats = tracker.statistics()
    # Metrics on (the default): Phoenix takes none (405); the exporter stops sending them,
    # the spans go on, none counted as failed.
    assert (stats.worker_mode, stats.spans_exported, stats.spans_failed) == ("process", 5, 0)

    spans = phoenix.wait_for_spans(project, 5, timeout=WAIT)
    assert len(spans) == 5  # one span per run
    assert _shown(spans) == _derived(destination)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)

    # The tree: the model calls and the tool under the root chain; the trace id is the
    # root run's id.
    (root,) = by_name["invoke_workflow weather_agent"]
    assert root["parent_id"] is None
    assert root["context"]["trace_id"] == uuid.UUID(root["attributes"]["langchain.run_id"]).hex
    children = [s for s in spans if s["parent_id"] == root["context"]["span_id"]]
    assert sorted(s["name"] for s in children) == [
        "chat gpt-4o-mini",
        "chat gpt-4o-mini",
        "execute_tool get_weather",
    ]
    assert {s["context"]["trace_id"] for s in children} == {root["context"]["trace_id"]}

    # Kinds as Phoenix shows them: chains CHAIN, model calls LLM, the tool TOOL.
    assert {name: [s["span_kind"] for s in group] for name, group in by_name.items()} == {
        "invoke_workflow weather_agent": ["CHAIN"],
        "invoke_workflow failing": ["CHAIN"],
        "chat gpt-4o-mini": ["LLM", "LLM"],
        "execute_tool get_weather": ["TOOL"],
    }

    # Model calls: Phoenix's model, provider and token counts, the streamed call's too.
    chats = by_name["chat gpt-4o-mini"]
    streamed = [s["attributes"] for s in chats if s["attributes"].get("gen_ai.request.stream")]
    assert len(streamed) == 1
    for attributes in (s["attributes"] for s in chats):
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["llm.model_name"] == "gpt-4o-mini"
        assert (attributes["llm.provider"], attributes["llm.system"]) == ("openai", "openai")
        assert (
            attributes["llm.token_count.prompt"],
            attributes["llm.token_count.completion"],
            attributes["llm.token_count.total"],
        ) == (57, 23, 80)
    (tool_call,) = [s["attributes"] for s in chats if s["attributes"]["llm.finish_reason"] == "tool_calls"]
    call = "llm.output_messages.0.message.tool_calls.0.tool_call"
    assert tool_call[f"{call}.function.name"] == "get_weather"
    assert streamed[0]["llm.output_messages.0.message.content"].startswith("The weather in Paris is mild")
    (tool,) = by_name["execute_tool get_weather"]
    assert tool["attributes"]["tool.name"] == "get_weather"
    assert tool["attributes"]["tool.id"] == tool_call[f"{call}.id"]
    assert tool["attributes"]["output.value"] == "18 degrees C in Paris"

    # The failed run: status ERROR with the message, the exception event.
    (failed,) = by_name["invoke_workflow failing"]
    assert (failed["status_code"], failed["status_message"]) == ("ERROR", "the database is down")
    assert failed["attributes"]["error.type"] == "ValueError"
    (event,) = failed["events"]
    assert event["name"] == "exception"
    assert event["attributes"]["exception.type"] == "ValueError"
    assert all(s["status_code"] == "UNSET" for s in spans if s is not failed)

    # The session: every span of the trace carries it; Phoenix groups the trace under it
    # and adds up its token counts (two model calls of 57 + 23).
    assert {s["attributes"].get("session.id") for s in spans if s is not failed} == {"s-42"}
    assert {s["attributes"].get("user.id") for s in spans if s is not failed} == {"alice"}
    (session,) = phoenix.sessions(project)
    assert session["session_id"] == "s-42"
    assert [t["trace_id"] for t in session["traces"]] == [root["context"]["trace_id"]]
    assert (session["token_count_prompt"], session["token_count_total"]) == (114, 160)


def test_a_backfill_sends_the_ids_of_the_live_export(
    tmp_path: Path,
    phoenix: PhoenixServer,
    stub: OpenAIStub,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    live, later = _project(), _project()
    destination = tmp_path / "logs"
    # In thread mode, so that the exporter logs in this process.
    tracker = AsyncTracker(
        destination,
        experiment_name="exp",
        run_name="r1",
        config=TrackerConfig(worker="thread"),
        exporters=[OTLPExporter(phoenix.url, headers={"x-project-name": live})],
    )
    with caplog.at_level(logging.INFO, logger="asynctrack"):
        weather_agent(stub.url, [tracker])
        failing_chain([tracker])
        tracker.close(timeout=WAIT)
    assert (tracker.statistics().spans_exported, tracker.statistics().spans_failed) == (5, 0)
    # Phoenix answers 405 on /v1/metrics: said once, at INFO, not as a failure.
    said = [r for r in caplog.records if r.name == "asynctrack" and "OTLP" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.INFO], [r.getMessage() for r in said]
    assert f"{phoenix.url}/v1/metrics answered HTTP 405 " in said[0].getMessage()
    exported_live = phoenix.wait_for_spans(live, 5, timeout=WAIT)
    # Runs recorded to the files only: a failed one and one that never ended.
    files_only = AsyncTracker(destination, experiment_name="exp", run_name="r2")
    failing_chain([files_only])
    files_only.on_chain_start({}, {"q": 1}, run_id=uuid.uuid4(), name="never_ends")
    files_only.close(timeout=WAIT)

    status = main(
        ["export", str(destination), "--otlp-endpoint", phoenix.url, "--header", f"x-project-name={later}"]
    )
    assert status == 0
    assert capsys.readouterr().out.splitlines() == [
        f"exported 7 span(s) to {phoenix.url}/v1/traces",
        f"no metrics: {phoenix.url}/v1/metrics answered HTTP 405 Method Not Allowed (it takes none)",
    ]
    # Phoenix keys traces by their id across projects: the 5 spans already exported live
    # come back with the same ids and are kept once, in their first project; the 2 new
    # runs make the new project. All 7 travelled in one request, so once the 2 are in,
    # Phoenix has handled the 5.
    backfilled = phoenix.wait_for_spans(later, 2, timeout=WAIT)
    assert len(backfilled) == 2
    assert _shown(phoenix.spans(live)) == _shown(exported_live)
    assert {**_shown(exported_live), **_shown(backfilled)} == _derived(destination)
    by_name = {s["name"]: s for s in backfilled}
    assert set(by_name) == {"invoke_workflow failing", "invoke_workflow never_ends"}
    assert by_name["invoke_workflow failing"]["status_code"] == "ERROR"
    unfinished = by_name["invoke_workflow never_ends"]
    assert (unfinished["status_code"], unfinished["attributes"]["asynctrack.unfinished"]) == (
        "UNSET",
        "not_ended",
    )
