"""MLflowParameters' traces: each root run as an MLflow trace, against a real MLflow server.

The server (``mlflow server``, SQLite store, on 127.0.0.1) is the session's (``mlflow_server``);
the workloads are real LangChain runs (ChatOpenAI on the loopback OpenAI stub, the demo's
agent, every callback kind). What MLflow stored is read back through its client.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from _infra.aws import FaultProxy, ProxyRequest
from _infra.mlflow_server import MLflowServer, free_port
from _infra.openai_stub import OpenAIStub
from export_workloads import SECRET, failing_chain, weather_agent
from mlflow import MlflowClient

from asynctrack import AsyncTracker, FlushError, MLflowParameters, TrackerConfig, read_events
from asynctrack._demo._scenarios import all_event_kinds
from asynctrack._sinks._mlflow_traces import TraceGrouper, mlflow_attributes, span_type


@pytest.fixture
def server(mlflow_server: MLflowServer) -> MLflowServer:
    """The session's MLflow server (``tests/conftest.py``)."""
    return mlflow_server


pytestmark = pytest.mark.usefixtures("isolate_mlflow")


def only_run(uri: str, experiment: str) -> Any:
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1
    return runs[0]


def traces_of(uri: str, experiment: str) -> list[Any]:
    """Every trace of ``experiment``, spans included, oldest first."""
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    infos = client.search_traces(locations=[found.experiment_id], include_spans=False)
    traces = [client.get_trace(t.info.trace_id) for t in infos]
    return sorted(traces, key=lambda t: t.info.request_time)


def linked_to(uri: str, run: Any) -> list[str]:
    """The ids of the traces MLflow lists for ``run`` (its Traces tab), sorted."""
    client = MlflowClient(tracking_uri=uri)
    found = client.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id, max_results=500)
    return sorted(t.info.trace_id for t in found)


def wait_for_traces(uri: str, experiment: str, count: int, timeout: float = 60.0) -> list[Any]:
    """The first ``count`` traces of ``experiment`` once MLflow has them (bounded: the worker
    imports MLflow, 1.5-4 s, before its first trace; polled every 0.1 s)."""
    client = MlflowClient(tracking_uri=uri)
    deadline = time.monotonic() + timeout
    while True:
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            infos = client.search_traces(locations=[found.experiment_id], include_spans=False)
            if len(infos) >= count:
                traces = [client.get_trace(t.info.trace_id) for t in infos]
                return sorted(traces, key=lambda t: t.info.request_time)[:count]
        assert time.monotonic() < deadline, f"waited {timeout} s for {count} trace(s) in {experiment!r}"
        time.sleep(0.1)


def by_run_id(events: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """run id -> {"start": event, "end": event} from the recorded events."""
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    for event in events:
        kind = str(event.get("kind"))
        if kind.endswith("_start"):
            runs.setdefault(event["run_id"], {})["start"] = event
        elif kind.endswith(("_end", "_error")) and kind != "agent_finish":
            runs.setdefault(event["run_id"], {})["end"] = event
    return runs


def ns(ts: float) -> int:
    return int(ts * 1e9)


def _spans_match_the_files(traces: list[Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """Asserts that the traces' spans are the recorded runs: one per run, the run tree as
    parents, the recorded start and end times, the root run's id as the trace id. Returns
    the spans by run id."""
    recorded = by_run_id(events)
    spans = [span for trace in traces for span in trace.data.spans]
    assert sorted(s.attributes["langchain.run_id"] for s in spans) == sorted(recorded)
    span_of_run = {s.attributes["langchain.run_id"]: s for s in spans}
    for run_id, span in span_of_run.items():
        start, end = recorded[run_id]["start"], recorded[run_id]["end"]
        parent = start.get("parent_run_id")
        assert span.parent_id == (span_of_run[parent].span_id if parent else None)
        assert (span.start_time_ns, span.end_time_ns) == (ns(start["ts"]), ns(end["ts"]))
        root = run_id
        while recorded[root]["start"].get("parent_run_id"):
            root = recorded[root]["start"]["parent_run_id"]
        assert span.trace_id == "tr-" + root.replace("-", "")
    return span_of_run


def test_root_runs_are_traces_linked_to_the_run_with_the_run_tree_and_its_times(
    server: MLflowServer, stub: OpenAIStub, tmp_path: Path
) -> None:
    destination = tmp_path / "logs"
    tracker = AsyncTracker(
        destination,
        experiment_name="traces",
        run_name="weather",
        parameter_sinks=[MLflowParameters(server.url)],
    )
    with tracker:
        weather_agent(stub.url, [tracker], question=f"echo: my key is {SECRET} and password=hunter2")
        failing_chain([tracker])
    stats = tracker.statistics()
    assert stats.worker_mode == "process"
    assert (stats.parameter_errors, stats.mlflow_traces_logged, stats.mlflow_traces_failed) == (0, 2, 0)
    assert (stats.spans_exported, stats.spans_failed) == (0, 0)  # the OTLP export's, apart

    run = only_run(server.url, "traces")
    traces = traces_of(server.url, "traces")
    assert len(traces) == 2  # one per root run
    assert {t.info.tags["asynctrack.run"] for t in traces} == {"weather"}
    client = MlflowClient(tracking_uri=server.url)
    linked = client.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id)
    assert sorted(t.info.trace_id for t in linked) == sorted(t.info.trace_id for t in traces)

    events = read_events(destination, "traces", "weather")
    recorded = by_run_id(events)
    span_of_run = _spans_match_the_files(traces, events)

    weather, failing = traces
    assert weather.info.tags["mlflow.traceName"] == "invoke_workflow weather_agent"
    assert sorted(s.span_type for s in weather.data.spans) == ["CHAIN", "CHAT_MODEL", "CHAT_MODEL", "TOOL"]
    assert (weather.info.state.value, failing.info.state.value) == ("OK", "ERROR")
    assert [s.status.status_code.value for s in failing.data.spans] == ["ERROR"]

    # Token usage: each model call's, and the trace's sum, as the files recorded them.
    recorded_usage = []
    for run_id, span in span_of_run.items():
        if span.span_type == "CHAT_MODEL":
            usage = span.attributes["mlflow.chat.tokenUsage"]
            assert usage["input_tokens"] == span.attributes["gen_ai.usage.input_tokens"] > 0
            recorded_usage.append(usage["total_tokens"])
            assert span.inputs and span.outputs  # the messages, redacted
            assert recorded[run_id]["end"]["kind"] == "llm_end"
    assert weather.info.token_usage["total_tokens"] == sum(recorded_usage)
    tool = next(s for s in weather.data.spans if s.span_type == "TOOL")
    assert tool.inputs is not None and "Paris" in json.dumps(tool.outputs)


def test_a_trace_is_in_mlflow_soon_after_its_root_run_ends_before_any_flush(
    server: MLflowServer, stub: OpenAIStub, tmp_path: Path
) -> None:
    """What a user watching MLflow's trace view sees while a long agent runs: each root run's
    trace, whole, with its recorded times, while the tracker is open and nothing flushed."""
    destination = tmp_path / "logs"
    tracker = AsyncTracker(
        destination, experiment_name="live", run_name="r", parameter_sinks=[MLflowParameters(server.url)]
    )
    with tracker:
        weather_agent(stub.url, [tracker])
        (first,) = wait_for_traces(server.url, "live", 1)
        failing_chain([tracker])
        live = wait_for_traces(server.url, "live", 2)
        assert tracker.statistics().parameter_errors == 0  # no flush yet: no parameter write either
    stats = tracker.statistics()
    assert stats.worker_mode == "process"
    assert (stats.mlflow_traces_logged, stats.mlflow_traces_failed, stats.parameter_errors) == (2, 0, 0)

    run = only_run(server.url, "live")  # made by the first trace; the close's parameters joined it
    assert run.data.metrics["events_total"] == stats.written
    assert linked_to(server.url, run) == sorted(t.info.trace_id for t in live)
    assert live[0].info.trace_id == first.info.trace_id
    _spans_match_the_files(live, read_events(destination, "live", "r"))
    assert live[1].info.state.value == "ERROR"


def test_traces_that_end_together_go_in_one_request_of_spans(server: MLflowServer, tmp_path: Path) -> None:
    from langchain_core.runnables import RunnableLambda

    seen: list[ProxyRequest] = []
    with FaultProxy(server.url) as proxy:
        proxy.set_filter(lambda request: seen.append(request) or False)  # record, never fault
        with AsyncTracker(
            tmp_path / "logs",
            experiment_name="batched",
            run_name="r",
            config=TrackerConfig(worker="thread"),
            parameter_sinks=[MLflowParameters(proxy.endpoint_url)],
        ) as tracker:
            step = RunnableLambda(lambda x: x + 1, name="step")
            for n in range(10):
                step.invoke(n, config={"callbacks": [tracker]})
            tracker.flush_blocking(timeout=60)
            assert tracker.statistics().mlflow_traces_logged == 10  # flush() waited for them
    # Two requests per batch (10 runs of a lambda end within the 1 s a batch waits, unless the
    # machine stalls between two of them): the spans, then the traces' link to the run.
    targets = [r.target for r in seen if "traces" in r.target]
    assert 2 <= len(targets) <= 6
    assert targets[::2] == ["/v1/traces"] * (len(targets) // 2)
    assert {t.removeprefix("/api/2.0") for t in targets[1::2]} == {"/mlflow/traces/link-to-run"}
    traces = traces_of(server.url, "batched")
    assert linked_to(server.url, only_run(server.url, "batched")) == sorted(t.info.trace_id for t in traces)
    assert len(traces) == 10


def test_a_dead_tracking_server_costs_the_chain_nothing_and_its_traces_are_counted(
    stub: OpenAIStub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = AsyncTracker(
        tmp_path / "logs",
        experiment_name="dead",
        run_name="r",
        config=TrackerConfig(worker="thread"),  # its log is this process's
        parameter_sinks=[MLflowParameters(f"http://127.0.0.1:{free_port()}", deadline=2.0)],
    )
    weather_agent(stub.url, [])  # imports and connections warm, for the time below
    with caplog.at_level("WARNING", logger="asynctrack"):
        try:
            started = time.perf_counter()
            weather_agent(stub.url, [tracker])
            failing_chain([tracker])
            chain_s = time.perf_counter() - started
        finally:
            with pytest.raises(FlushError):  # the parameters' last write failed
                tracker.close(timeout=30)
    # Each trace fails at once on the sink's thread (connection refused); the chain waits for none.
    assert chain_s < 2.0
    stats = tracker.statistics()
    assert (stats.written, stats.dropped, stats.failed, stats.lost) == (stats.recorded, 0, 0, 0)
    assert len(read_events(tmp_path / "logs", "dead", "r")) == stats.written
    assert (stats.mlflow_traces_logged, stats.mlflow_traces_failed) == (0, 2)
    assert (stats.spans_exported, stats.spans_failed) == (0, 0)
    said = [r.getMessage() for r in caplog.records if "MLflow traces" in r.getMessage()]
    assert said and "2 trace(s) failed so far, 0 logged" in said[-1]


def test_a_server_without_span_ingestion_gets_each_traces_spans_as_its_data(
    server: MLflowServer, stub: OpenAIStub, tmp_path: Path
) -> None:
    """MLflow before 3.4 (no ``/v1/traces``): asked once, then the trace data artifact."""
    with FaultProxy(server.url) as proxy:
        proxy.set_filter(lambda request: request.target == "/v1/traces")
        proxy.set_probability(1.0, ["404"])
        with AsyncTracker(
            tmp_path / "logs",
            experiment_name="no-otlp",
            run_name="r",
            config=TrackerConfig(worker="thread"),
            parameter_sinks=[MLflowParameters(proxy.endpoint_url)],
        ) as tracker:
            weather_agent(stub.url, [tracker])
            tracker.flush_blocking(timeout=60)
            failing_chain([tracker])
        refused = proxy.stats.faults["404"]
    assert refused == 1  # not asked again
    stats = tracker.statistics()
    assert (stats.mlflow_traces_logged, stats.mlflow_traces_failed, stats.parameter_errors) == (2, 0, 0)
    weather, failing = traces_of(server.url, "no-otlp")
    assert weather.info.tags.get("mlflow.trace.spansLocation") != "TRACKING_STORE"
    assert sorted(s.span_type for s in weather.data.spans) == ["CHAIN", "CHAT_MODEL", "CHAT_MODEL", "TOOL"]
    root = next(s for s in weather.data.spans if s.parent_id is None)
    assert weather.info.trace_id == "tr-" + root.attributes["langchain.run_id"].replace("-", "")
    assert [s.status.status_code.value for s in failing.data.spans] == ["ERROR"]


def test_no_planted_secret_in_anything_the_server_stored(
    server: MLflowServer, stub: OpenAIStub, tmp_path: Path
) -> None:
    with AsyncTracker(
        tmp_path / "logs",
        experiment_name="secrets",
        run_name="r",
        parameter_sinks=[MLflowParameters(server.url)],
    ) as tracker:
        weather_agent(stub.url, [tracker], question=f"echo: my key is {SECRET} and password=hunter2")

        def leak(_: str) -> str:
            raise RuntimeError(f"could not connect with api_key={SECRET}")

        from langchain_core.runnables import RunnableLambda

        with pytest.raises(RuntimeError):
            RunnableLambda(leak, name="leaky").invoke(SECRET, config={"callbacks": [tracker]})
    assert tracker.statistics().mlflow_traces_logged == 2

    client = MlflowClient(tracking_uri=server.url)
    experiment = client.get_experiment_by_name("secrets")
    assert experiment is not None
    stored = [json.dumps(client.search_traces(locations=[experiment.experiment_id])[0].info.to_dict())]
    for trace in traces_of(server.url, "secrets"):
        stored.append(trace.to_json())
    run = only_run(server.url, "secrets")
    stored.append(json.dumps(run.to_dictionary()))
    blob = "\n".join(stored)
    assert "echo: my key is" in blob  # the content is there ...
    assert SECRET not in blob and SECRET[8:30] not in blob  # ... redacted
    assert "hunter2" not in blob


def test_every_span_type_from_the_demo_runs(server: MLflowServer, tmp_path: Path) -> None:
    with AsyncTracker(
        tmp_path / "logs",
        experiment_name="kinds",
        run_name="all",
        config=TrackerConfig(worker="thread"),
        parameter_sinks=[MLflowParameters(server.url)],
    ) as tracker:
        all_event_kinds([tracker])
        tracker.flush_blocking(timeout=60)
        # flush() is a barrier for the traces ended before it: every one is in MLflow now.
        flushed = tracker.statistics().mlflow_traces_logged
        traces = traces_of(server.url, "kinds")
    stats = tracker.statistics()
    assert stats.worker_mode == "thread"
    assert (stats.mlflow_traces_failed, stats.parameter_errors) == (0, 0)
    assert flushed == len(traces) == stats.mlflow_traces_logged > 0
    types = {s.span_type for t in traces for s in t.data.spans}
    assert types >= {"CHAT_MODEL", "LLM", "TOOL", "RETRIEVER", "CHAIN", "AGENT"}


def test_traces_false_logs_none(server: MLflowServer, stub: OpenAIStub, tmp_path: Path) -> None:
    with AsyncTracker(
        tmp_path / "logs",
        experiment_name="no-traces",
        run_name="r",
        parameter_sinks=[MLflowParameters(server.url, traces=False)],
    ) as tracker:
        weather_agent(stub.url, [tracker])
    assert (tracker.statistics().mlflow_traces_logged, tracker.statistics().parameter_errors) == (0, 0)
    run = only_run(server.url, "no-traces")
    assert run.data.metrics["events_total"] > 0
    assert traces_of(server.url, "no-traces") == []


def _trace_calls(request: ProxyRequest) -> bool:
    return "/traces" in request.target or "/artifacts" in request.target


@pytest.mark.parametrize("fault", ["404", "500"])
def test_failing_trace_calls_leave_parameters_and_files_and_are_counted(
    server: MLflowServer, stub: OpenAIStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """404: a server without the trace API (said once, traces off); 500: retried, then given up."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # our retries, not MLflow's
    with FaultProxy(server.url) as proxy:
        proxy.set_filter(_trace_calls)
        proxy.set_probability(1.0, [fault])  # type: ignore[list-item]  # a FaultKind
        tracker = AsyncTracker(
            tmp_path / "logs",
            experiment_name=f"failing-{fault}",
            run_name="r",
            parameter_sinks=[MLflowParameters(proxy.endpoint_url, deadline=8.0)],  # a loaded machine
        )
        with tracker:
            weather_agent(stub.url, [tracker])
            tracker.flush_blocking(timeout=60)  # the parameters are written: no error
            first = proxy.stats.faults[fault]  # type: ignore[index]
            weather_agent(stub.url, [tracker])
        calls = proxy.stats.faults[fault]  # type: ignore[index]
    stats = tracker.statistics()
    assert (stats.written, stats.dropped, stats.failed, stats.lost) == (stats.recorded, 0, 0, 0)
    assert len(read_events(tmp_path / "logs", f"failing-{fault}", "r")) == stats.written
    assert (stats.mlflow_traces_logged, stats.mlflow_traces_failed, stats.parameter_errors) == (0, 2, 0)
    assert stats.spans_failed == 0  # an MLflow trace failure is not an OTLP one
    run = only_run(server.url, f"failing-{fault}")
    assert run.data.metrics["events_total"] == stats.written
    assert traces_of(server.url, f"failing-{fault}") == []
    if fault == "404":
        assert calls == first > 0  # the first trace's answer turned the traces off
    else:
        assert first >= 2 and calls >= first + 2  # retried, at each flush


# -- the parts, without a server ----------------------------------------------------------------


def test_span_types_and_mlflow_attributes(stub: OpenAIStub, tmp_path: Path) -> None:
    from export_workloads import recorded_lines

    with AsyncTracker(tmp_path / "logs", experiment_name="e", run_name="r") as tracker:
        weather_agent(stub.url, [tracker])
    grouper = TraceGrouper()
    lines = recorded_lines(tmp_path / "logs")
    traces = grouper.add(lines[:-1])
    assert traces == []  # the root has not ended yet
    (trace,) = grouper.add(lines[-1:])
    assert [span_type(s.attributes) for s in trace] == ["CHAT_MODEL", "TOOL", "CHAT_MODEL", "CHAIN"]
    chat = mlflow_attributes(trace[0], "tr-x")
    assert chat["mlflow.spanType"] == "CHAT_MODEL"
    assert chat["mlflow.chat.tokenUsage"]["total_tokens"] > 0
    assert isinstance(chat["mlflow.spanInputs"], list)  # the messages, parsed back from JSON
    assert grouper.close() == []


def test_the_demo_agent_is_one_trace_its_model_calls_under_it(server: MLflowServer, tmp_path: Path) -> None:
    """The demo's agent: callbacks on the agent, its tools and its model, not on the agent's
    inner LLMChain, so each model call's parent is a run this tracker never saw: each goes in
    the agent's trace, under the run of the agent open at its start (the agent, or the
    Calculator tool running the math chain)."""
    from asynctrack._demo._scenarios import scenario_3_agent

    with AsyncTracker(
        tmp_path / "logs",
        experiment_name="demo-agent",
        run_name="r",
        parameter_sinks=[MLflowParameters(server.url)],
    ) as tracker:
        scenario_3_agent([tracker])
    stats = tracker.statistics()
    assert (stats.mlflow_traces_logged, stats.mlflow_traces_failed, stats.parameter_errors) == (1, 0, 0)
    (trace,) = traces_of(server.url, "demo-agent")
    spans = trace.data.spans
    assert sorted(s.span_type for s in spans) == ["AGENT", "LLM", "LLM", "LLM", "LLM", "TOOL", "TOOL"]
    ids = {s.span_id: s for s in spans}
    (root,) = [s for s in spans if s.parent_id is None]
    assert root.span_type == "AGENT"
    models = [s for s in spans if s.span_type == "LLM"]
    assert all(s.parent_id in ids for s in spans if s.parent_id is not None)
    assert [ids[s.parent_id].span_type for s in models].count("AGENT") == 3
    assert all(s.attributes["asynctrack.parent_inferred"] for s in models)


def test_model_calls_of_concurrent_agents_are_not_guessed_into_either(tmp_path: Path) -> None:
    """A run whose parent was never seen goes in its tracker's one open root's trace; with two
    roots open it heads its own, named after its own run (its parent recorded elsewhere)."""
    import uuid

    from export_workloads import orphan_model_calls, recorded_lines

    from asynctrack._export._spans import trace_id_of

    a, b = uuid.uuid4(), uuid.uuid4()
    calls = [uuid.uuid4() for _ in range(3)]
    with AsyncTracker(tmp_path / "logs", experiment_name="e", run_name="r") as tracker:
        orphan_model_calls(tracker, a, b, calls, [uuid.uuid4() for _ in range(3)])
    grouper = TraceGrouper()
    traces = grouper.add(recorded_lines(tmp_path / "logs"))
    assert grouper.close() == []
    runs = [[s.attributes["langchain.run_id"] for s in trace] for trace in traces]
    assert [trace[-1] for trace in runs] == [str(calls[1]), str(a), str(b)]  # each as its top run ended
    assert str(calls[0]) in runs[1] and str(calls[2]) in runs[2]
    assert [{s.trace_id for s in trace} for trace in traces] == [{trace_id_of(str(r[-1]))} for r in runs]
    assert traces[0][-1].parent_span_id == b""


def test_a_sqlite_store_keeps_the_spans_in_its_tables(stub: OpenAIStub, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with AsyncTracker(
        tmp_path / "logs", experiment_name="local", run_name="r", parameter_sinks=[MLflowParameters(uri)]
    ) as tracker:
        weather_agent(stub.url, [tracker])
    assert (tracker.statistics().mlflow_traces_logged, tracker.statistics().mlflow_traces_failed) == (1, 0)
    (trace,) = traces_of(uri, "local")
    assert linked_to(uri, only_run(uri, "local")) == [trace.info.trace_id]
    assert len(trace.data.spans) == 4
    assert trace.info.tags["mlflow.trace.spansLocation"] == "TRACKING_STORE"  # log_spans, no artifact
    assert not list(tmp_path.rglob("traces.json"))


def test_names_and_ids_over_mlflows_limits_are_cut_and_cost_no_trace(
    server: MLflowServer, tmp_path: Path
) -> None:
    """MLflow refuses a trace named over 4096 characters, or with a session id over 250, and
    every trace of the call with it: each is cut to the limit, a marker at its end."""
    from langchain_core.runnables import RunnableLambda

    from asynctrack.testing import FakeChatOpenAI

    long_ids = {"session_id": "s" * 300, "user_id": "u" * 9000}
    with AsyncTracker(
        tmp_path / "logs",
        experiment_name="limits",
        run_name="r" * 5000,
        config=TrackerConfig(worker="thread"),
        parameter_sinks=[MLflowParameters(server.url)],
    ) as tracker:
        FakeChatOpenAI().invoke("a well-formed trace", config={"callbacks": [tracker]})
        FakeChatOpenAI(model_name="m" * 5000).invoke("a long model name", config={"callbacks": [tracker]})
        RunnableLambda(lambda x: x, name="n" * 5000).invoke(
            1, config={"callbacks": [tracker], "metadata": long_ids}
        )
    stats = tracker.statistics()
    assert (stats.mlflow_traces_logged, stats.mlflow_traces_failed) == (3, 0)
    well_formed, model, chain = traces_of(server.url, "limits")
    assert "m" * 100 not in well_formed.info.tags["mlflow.traceName"]
    for trace in (model, chain):
        name = trace.info.tags["mlflow.traceName"]
        assert len(name) == 4096
        assert name.endswith(" characters in all]") and "...[asynctrack: truncated, " in name
        assert trace.data.spans[-1].name == name
    mark = "...[asynctrack: truncated, 300 characters in all]"
    assert chain.info.trace_metadata["mlflow.trace.session"] == "s" * (250 - len(mark)) + mark
    assert len(chain.info.trace_metadata["mlflow.trace.user"]) == 250
    assert len(chain.info.tags["asynctrack.run"]) == 4096
    # The files keep every character.
    names = {e.get("name") for e in read_events(tmp_path / "logs", "limits", "r" * 5000)}
    assert "n" * 5000 in names


def test_a_trace_mlflow_refuses_costs_no_other_trace_of_its_call(
    server: MLflowServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A trace id already in another experiment: MLflow refuses the whole ``log_spans`` call.
    The call is split until that trace is alone; it alone fails, counted and said once."""
    import asyncio
    import uuid

    import mlflow
    from packaging.version import Version

    if Version(mlflow.__version__) < Version("3.18"):
        pytest.skip("MLflow before 3.18 takes a trace id already in another experiment: nothing to refuse")

    from export_workloads import recorded_lines
    from langchain_core.runnables import RunnableLambda

    from asynctrack._sinks._base import RunInfo
    from asynctrack._sinks._mlflow_traces import MLflowTraces

    taken = uuid.uuid4()
    step = RunnableLambda(lambda x: x + 1, name="step")

    def lines_of(name: str, run_ids: list[uuid.UUID | None]) -> list[bytes]:
        with AsyncTracker(tmp_path / name, experiment_name="e", run_name="r") as tracker:
            for n, run_id in enumerate(run_ids):
                step.invoke(n, config={"callbacks": [tracker], "run_id": run_id})
        return recorded_lines(tmp_path / name)

    def log(experiment: str, lines: list[bytes]) -> MLflowTraces:
        sink = MLflowParameters(server.url)
        exporter = MLflowTraces(sink, RunInfo(experiment=experiment, run="r", events_uri="-"), delay=3600)
        exporter.lines(lines)  # every trace queued at once: one call at the flush
        assert exporter.flush(60) is None or experiment == "second"
        exporter.close(60)
        asyncio.run(sink.aclose())
        return exporter

    assert log("first", lines_of("a", [taken])).statistics()["mlflow_traces_logged"] == 1
    with caplog.at_level("WARNING", logger="asynctrack"):
        second = log("second", lines_of("b", [None, taken, None, None]))
    assert second.statistics() == {"mlflow_traces_logged": 3, "mlflow_traces_failed": 1}
    assert len(traces_of(server.url, "second")) == 3
    said = [r.getMessage() for r in caplog.records if "MLflow traces" in r.getMessage()]
    assert len(said) == 1 and "already exists in another experiment" in said[0]
    assert "1 trace(s) failed so far, 3 logged" in said[0]


def test_a_flush_and_the_close_do_not_wait_behind_a_call_past_its_deadline(tmp_path: Path) -> None:
    """A call of the sink that outlives its deadline all the same (one no bound reaches: a
    host name that does not resolve) holds the sink's thread: a flush stops waiting for the
    traces queued behind it, and the close counts them failed, without waiting for it."""
    import threading

    from export_workloads import recorded_lines

    from asynctrack._demo._scenarios import scenario_1_llm
    from asynctrack._sinks._base import RunInfo
    from asynctrack._sinks._mlflow import _CallThread
    from asynctrack._sinks._mlflow_traces import MLflowTraces

    with AsyncTracker(tmp_path / "logs", experiment_name="e", run_name="r") as tracker:
        scenario_1_llm([tracker])  # one root run: one trace
    sink = MLflowParameters(f"sqlite:///{tmp_path / 'mlflow.db'}", deadline=1.0)
    release = threading.Event()
    caller = sink._caller = _CallThread("asynctrack-mlflow")  # the sink's thread, held below
    caller.submit(release.wait)
    exporter = MLflowTraces(sink, RunInfo(experiment="e", run="r", events_uri="-"), delay=3600)
    try:
        exporter.lines(recorded_lines(tmp_path / "logs"))
        started = time.monotonic()
        assert exporter.flush(60) == "MLflow traces not all logged: an earlier MLflow call has not returned"
        exporter.close(60)
        took = time.monotonic() - started
    finally:
        release.set()
    assert took < 1.0 + 1.5  # the deadline, then a look every 0.25 s (it waited 60 s, twice)
    assert exporter.statistics() == {"mlflow_traces_logged": 0, "mlflow_traces_failed": 1}
