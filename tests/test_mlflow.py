"""MLflow (``asynctrack._sinks._mlflow``) against a real ``mlflow server`` and a SQLite store.

The server is the full ``mlflow`` package (test extra), started once for this module on
127.0.0.1 (``_infra.mlflow_server``); the fault proxy of ``_infra.aws`` sits in front of
it to answer 500 or to stall, and records the headers the ARN path sends. Nothing
reaches SageMaker: the ``sagemaker-mlflow`` plugin is pointed at the loopback proxy with
its own ``SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT`` setting.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib
import os
import pickle
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from _infra.aws import FaultProxy, ProxyRequest
from _infra.mlflow_server import MLflowServer, free_port
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from support import silent_endpoint

from asynctrack import (
    AsyncTracker,
    FlushError,
    MLflowParameters,
    ParametersSink,
    RunInfo,
    RunSummary,
    RunSummarySink,
    TrackerConfig,
    read_events,
)
from asynctrack._cli._main import main
from asynctrack._demo._scenarios import EXPERIMENT_NAME, HPARAMS, SCENARIOS, scenario_1_llm
from asynctrack._events._parameters import RunParameters
from asynctrack._sinks._mlflow import (
    RUN_KEY_TAG,
    MLflowLimits,
    _CallThread,
    batches,
    mlflow_key,
    plan_write,
    run_key,
)

ARN = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/asynctrack-test"
METRIC_NAMES = {"events_total", "llm_calls", "errors", "tokens_in", "tokens_out", "tokens_total"}


@pytest.fixture
def server(mlflow_server: MLflowServer) -> MLflowServer:
    """The session's MLflow server (``tests/conftest.py``)."""
    return mlflow_server


@pytest.fixture
def sqlite_uri(tmp_path: Path, mlflow_store: Path) -> str:
    """A SQLite store of the test's own (``tmp_path/mlflow.db``), empty, tables made."""
    shutil.copyfile(mlflow_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


pytestmark = pytest.mark.usefixtures("isolate_mlflow")


@pytest.fixture
def proxy(server: MLflowServer) -> Iterator[FaultProxy]:
    with FaultProxy(server.url, stall_seconds=60.0) as running:
        yield running


def runs_of(uri: str, experiment: str) -> list[Any]:
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return list(client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"]))


def run_scenarios(uri: str, destination: Path, experiment: str, **sink_options: Any) -> list[AsyncTracker]:
    trackers = []
    for run_name, scenario in SCENARIOS.items():
        tracker = AsyncTracker(
            destination,
            experiment_name=experiment,
            run_name=run_name,
            parameter_sinks=[MLflowParameters(uri, **sink_options)],
        )
        with tracker:
            scenario([tracker])
            tracker.flush_blocking(timeout=60)
        assert tracker.statistics().parameter_errors == 0
        trackers.append(tracker)
    return trackers


def steps(uri: str, run_id: str, key: str = "events_total") -> list[int]:
    return sorted(m.step for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, key))


# --------------------------------------------------------------------------------------
# The demo's three scenarios: SQLite (the CLI) and the server
# --------------------------------------------------------------------------------------


def test_demo_logs_three_runs_to_sqlite_and_a_second_demo_adds_three_more(
    sqlite_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = sqlite_uri
    destination = tmp_path / "logs"
    assert main(["demo", "--destination", str(destination), "--mlflow", uri]) == 0
    out = capsys.readouterr().out
    assert f"MLflow ({uri}): 3 of 3 run(s) logged" in out
    assert f"mlflow ui --backend-store-uri {uri}" in out

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    table = mlflow.search_runs(experiment_names=[EXPERIMENT_NAME])
    # Each demo invocation writes new runs: run-scenario-N-<UTC time>-<random>.
    names = sorted(table["tags.mlflow.runName"])
    assert [name.rsplit("-", 3)[0] for name in names] == list(SCENARIOS)
    for _, row in table.iterrows():
        run_name = row["tags.mlflow.runName"]
        events = read_events(destination, EXPERIMENT_NAME, run_name)
        kinds = collections.Counter(str(e["kind"]) for e in events)
        assert row["params.model_name"] == HPARAMS["model_name"]
        assert float(row["params.temperature"]) == HPARAMS["temperature"]
        assert row["metrics.events_total"] == len(events)
        assert row["metrics.llm_calls"] == kinds["llm_start"] + kinds["chat_model_start"]
        assert row["metrics.errors"] == 0
        assert row["metrics.events_llm_end"] == kinds["llm_end"]
        assert row["metrics.tokens_in"] > 0 and row["metrics.tokens_out"] > 0
        for group in ("chain", "llm"):
            p50, p95, top = (row[f"metrics.latency_{group}_{s}"] for s in ("p50", "p95", "max"))
            assert 0 < p50 <= p95 <= top
        assert row["tags.asynctrack.events_uri"] == (
            f"{destination}/experiment={EXPERIMENT_NAME}/run={run_name}/"
        )
        assert str(destination) in row["tags.mlflow.note.content"]
        assert row["status"] == "FINISHED"
    agent = table[table["tags.mlflow.runName"].str.startswith("run-scenario-3-")].iloc[0]
    assert agent["metrics.latency_tool_max"] > 0  # the agent's two tool calls

    # A second demo: three new runs beside the first three, which keep their one step.
    # (Updating a run under the same names is test_server_gets_three_runs_and_a_second...)
    assert main(["demo", "--destination", str(tmp_path / "logs-2"), "--mlflow", uri]) == 0
    again = mlflow.search_runs(experiment_names=[EXPERIMENT_NAME])
    assert len(again) == 6 and len(set(again["tags.mlflow.runName"])) == 6
    for run_id in table["run_id"]:
        assert steps(uri, run_id) == [0]
    new = again[~again["run_id"].isin(table["run_id"])]
    assert set(new["tags.asynctrack.events_uri"].str.startswith(str(tmp_path / "logs-2"))) == {True}


def test_server_gets_three_runs_and_a_second_tracker_updates_not_duplicates(
    server: MLflowServer, tmp_path: Path
) -> None:
    experiment = "server-demo"
    trackers = run_scenarios(server.url, tmp_path / "logs", experiment)
    runs = runs_of(server.url, experiment)
    assert [r.info.run_name for r in runs] == list(SCENARIOS)
    for run, tracker in zip(runs, trackers, strict=True):
        assert run.data.params["model_name"] == HPARAMS["model_name"]
        assert set(run.data.metrics) >= METRIC_NAMES
        assert run.data.metrics["events_total"] == tracker.statistics().written
        assert run.data.tags["asynctrack.events_uri"] == tracker.events_uri
        assert run.data.tags[RUN_KEY_TAG] == run_key(experiment, tracker.run_name)
        assert run.info.status == "FINISHED"

    # A new tracker, the same names, two flushes: one run, steps 1 and 2 after step 0.
    sink = MLflowParameters(server.url)
    with AsyncTracker(
        tmp_path / "logs", experiment_name=experiment, run_name="run-scenario-1", parameter_sinks=[sink]
    ) as tracker:
        scenario_1_llm([tracker])
        tracker.flush_blocking(timeout=60)
        reopened = MlflowClient(tracking_uri=server.url).get_run(runs[0].info.run_id)
        assert reopened.info.status == "RUNNING"  # open again while a tracker writes to it
        scenario_1_llm([tracker])
        tracker.flush_blocking(timeout=60)
    after = runs_of(server.url, experiment)
    assert [r.info.run_id for r in after] == [r.info.run_id for r in runs]
    assert steps(server.url, runs[0].info.run_id) == [0, 1, 2]
    assert after[0].data.metrics["llm_calls"] == 2  # this tracker's own count, replacing
    assert after[0].info.status == "FINISHED"


def test_tracking_uri_from_the_environment(
    sqlite_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = sqlite_uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    sink = MLflowParameters()
    assert sink.tracking_uri is None
    with AsyncTracker(
        tmp_path / "logs", experiment_name="env", run_name="r", parameter_sinks=[sink]
    ) as tracker:
        scenario_1_llm([tracker])
        tracker.flush_blocking(timeout=60)
    assert [r.info.run_name for r in runs_of(uri, "env")] == ["r"]


# --------------------------------------------------------------------------------------
# Parameters that change, limits, racing trackers
# --------------------------------------------------------------------------------------


def summary(hyper: dict[str, Any], metrics: dict[str, float]) -> RunSummary:
    return RunSummary(hyperparameters=hyper, metrics=metrics, flat={**hyper, **metrics})


def test_parameters_are_logged_once_and_a_changed_value_goes_to_a_tag(
    sqlite_uri: str, tmp_path: Path
) -> None:
    uri = sqlite_uri
    run = RunInfo(experiment="changes", run="r", events_uri="/logs/experiment=changes/run=r/")
    sink = MLflowParameters(uri)

    async def go() -> None:
        try:
            await sink.write_summary(run, summary({"temperature": 0.1, "model": "a"}, {"events_total": 2}))
            await sink.write_summary(
                run, summary({"temperature": "0.1, 0.7", "model": "a"}, {"events_total": 5})
            )
        finally:
            await sink.aclose()

    asyncio.run(go())
    (found,) = runs_of(uri, "changes")
    assert found.data.params == {"temperature": "0.1", "model": "a"}  # MLflow keeps the first
    assert found.data.tags["asynctrack.param.temperature"] == "0.1, 0.7"
    assert found.data.metrics["events_total"] == 5
    assert steps(uri, found.info.run_id) == [0, 1]


def test_a_run_deleted_in_mlflow_is_made_again_at_the_next_flush(sqlite_uri: str, tmp_path: Path) -> None:
    uri = sqlite_uri
    run = RunInfo(experiment="deleted", run="r", events_uri="/logs/")
    sink = MLflowParameters(uri)
    client = MlflowClient(tracking_uri=uri)

    async def go() -> None:
        try:
            await sink.write_summary(run, summary({"a": 1}, {"events_total": 1}))
            (first,) = runs_of(uri, "deleted")
            client.delete_run(first.info.run_id)  # a person cleans up in the UI
            await sink.write_summary(run, summary({"a": 1}, {"events_total": 2}))
        finally:
            await sink.aclose()

    asyncio.run(go())
    (again,) = runs_of(uri, "deleted")
    assert again.data.metrics["events_total"] == 2 and again.data.params == {"a": "1"}


def test_limits_are_applied_before_the_call(
    sqlite_uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri = sqlite_uri
    limits = MLflowLimits.installed()
    long_value = "x" * (limits.param_value_length + 10)
    hyper: dict[str, Any] = {"bad/key:with*chars": 1, "long": long_value, "nan": float("nan")}
    hyper.update({f"p{i:03d}": i for i in range(150)})  # more than one batch of parameters
    metrics = {"inf": float("inf"), **{f"m{i:04d}": float(i) for i in range(1200)}}  # > 1000 per batch
    run = RunInfo(experiment="limits", run="r", events_uri="/logs/")
    sink = MLflowParameters(uri)

    async def go() -> None:
        try:
            await sink.write_summary(run, summary(hyper, metrics))
        finally:
            await sink.aclose()

    with caplog.at_level("WARNING", logger="asynctrack"):
        asyncio.run(go())
    (found,) = runs_of(uri, "limits")
    assert found.data.params["long"] == long_value[: limits.param_value_length]
    renamed = mlflow_key("bad/key:with*chars")
    assert re.fullmatch(r"bad_key_with_chars-[0-9a-f]{8}", renamed)
    assert found.data.params[renamed] == "1"
    assert "nan" not in found.data.params and "inf" not in found.data.metrics
    assert len([k for k in found.data.params if k.startswith("p")]) == 150
    assert len([k for k in found.data.metrics if k.startswith("m")]) == 1200
    assert sink.adjustments == 4
    assert "cut to 6000 characters" in caplog.text or f"cut to {limits.param_value_length}" in caplog.text


def test_plan_and_batches_keep_every_entity_within_the_limits() -> None:
    limits = MLflowLimits(
        key_length=20, param_value_length=5, tag_value_length=8, params_tags_per_batch=3,
        metrics_per_batch=4, entities_per_batch=5, request_bytes=600,
    )  # fmt: skip
    run = RunInfo(experiment="e" * 30, run="r", events_uri="/logs/")
    plan = plan_write(run, summary({"k" * 40: "abcdefgh", "ok": True}, {"m": 1}), {"t": "v"}, limits)
    assert plan.parameters == {mlflow_key("k" * 40, 20): "abcde", "ok": "true"}
    assert all(len(key) <= 20 for key in [*plan.parameters, *plan.metrics])
    assert plan.tags["asynctrack.experiment"] == "e" * 8
    metrics = [Metric(f"m{i}", float(i), 0, 0) for i in range(9)]
    params = [Param(f"p{i}", "v" * 100) for i in range(7)]
    tags = [RunTag(f"t{i}", "w") for i in range(4)]
    calls = batches(metrics, params, tags, limits)
    for call_metrics, call_params, call_tags in calls:
        assert len(call_metrics) <= 4 and len(call_params) <= 3 and len(call_tags) <= 3
        assert len(call_metrics) + len(call_params) + len(call_tags) <= 5
        assert any((call_metrics, call_params, call_tags))
    assert [m for c in calls for m in c[0]] == metrics
    assert [p for c in calls for p in c[1]] == params
    assert [t for c in calls for t in c[2]] == tags


def test_mlflow_key_keeps_names_distinct() -> None:
    assert mlflow_key("temperature") == "temperature"
    assert mlflow_key("a b.c-d_e") == "a b.c-d_e"
    assert mlflow_key("a/b") != mlflow_key("a:b")
    assert mlflow_key("..").startswith("_")
    assert len(mlflow_key("x" * 400)) == 250


def test_trackers_racing_to_create_the_run_end_with_one(sqlite_uri: str, tmp_path: Path) -> None:
    """Four trackers' first flushes at the same moment may create twins; by their second
    flush every tracker writes to the same run and the twins are deleted."""
    uri = sqlite_uri
    MlflowClient(tracking_uri=uri).create_experiment("race")  # the tables exist before the race
    run = RunInfo(experiment="race", run="r", events_uri="/logs/")
    racers = 4
    first_flush, second_flush = threading.Barrier(racers), threading.Barrier(racers)
    errors: list[BaseException] = []

    def one(number: int) -> None:
        sink = MLflowParameters(uri)

        async def go() -> None:
            try:
                first_flush.wait(timeout=60)
                await sink.write_summary(run, summary({"a": 1}, {"events_total": 1, f"r{number}": 1}))
                second_flush.wait(timeout=60)  # every racer's first write is in
                await sink.write_summary(run, summary({"a": 1}, {"events_total": 2, f"r{number}": 2}))
            finally:
                await sink.aclose()

        try:
            asyncio.run(go())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not errors
    (found,) = runs_of(uri, "race")
    assert {f"r{n}" for n in range(racers)} <= set(found.data.metrics)  # all four wrote there
    assert {found.data.metrics[f"r{n}"] for n in range(racers)} == {2.0}


# --------------------------------------------------------------------------------------
# A server that is down, answers 500, or hangs: the chain pays nothing, flush() reports
# --------------------------------------------------------------------------------------


def chain_with(sink: MLflowParameters, tmp_path: Path, run_name: str) -> tuple[FlushError, FlushError]:
    """Scenario 1 with ``sink``: the flush and the close both report; every event is on disk.

    Returns:
        What the flush raised, and what the close raised (its own last write failed too).
    """
    tracker = AsyncTracker(
        tmp_path / "logs", experiment_name="faults", run_name=run_name, parameter_sinks=[sink]
    )
    try:
        scenario_1_llm([tracker])
        with pytest.raises(FlushError) as flushed:
            tracker.flush_blocking(timeout=60)  # the sink's deadline is far below this
    finally:
        with pytest.raises(FlushError) as closed:
            tracker.close(timeout=60)
    stats = tracker.statistics()
    assert stats.written == len(read_events(tmp_path / "logs", "faults", run_name)) == 5
    assert stats.parameter_errors == 2
    return flushed.value, closed.value


def test_a_server_that_is_down_costs_the_chain_nothing(tmp_path: Path) -> None:
    sink = MLflowParameters(f"http://127.0.0.1:{free_port()}", deadline=2.0)
    error, _ = chain_with(sink, tmp_path, "down")
    assert "MLflow (http://127.0.0.1:" in str(error)
    assert "connection refused: nothing listens there" in str(error)  # said at once, not retried


@pytest.mark.parametrize("peer", ["nothing listening", "never answering", "never answering, a trace first"])
def test_flush_and_close_take_no_longer_than_the_deadline_whatever_mlflow_s_own_settings(
    peer: str, tmp_path: Path
) -> None:
    """MLflow's settings stay the application's (7 retries with backoff, 120 s per
    request: a refused connection took MLflow 4 minutes): the sink's own calls are bounded
    by its deadline. A refused connection fails the flush at once; a server that never
    answers, at the deadline; the close right after waits for neither the server nor the
    trace behind the call. In a worker thread: the worker process imports MLflow outside
    the deadline, which ``test_demo_with_nothing_listening_...`` covers. A trace batch
    already waiting on the server when the flush begins does not add its wait to the
    flush's deadline (it took 8 s of a 4 s deadline when the batch came first)."""
    importlib.import_module("mlflow")  # the sink's import (1.5-4 s) is not what is timed here
    deadline = 4.0
    with contextlib.ExitStack() as stack:
        if peer == "nothing listening":
            uri = f"http://127.0.0.1:{free_port()}"
        else:
            uri = stack.enter_context(silent_endpoint())
        sink = MLflowParameters(uri, deadline=deadline)
        tracker = AsyncTracker(
            tmp_path / "logs", experiment_name="faults", run_name="bounded",
            parameter_sinks=[sink], config=TrackerConfig(worker="thread"),
        )  # fmt: skip
        scenario_1_llm([tracker])
        if peer.endswith("first"):  # the root's trace batch is on the sink's thread, waiting
            waited = time.monotonic()
            while sink._caller is None or sink._caller.busy_for() < 1.0:
                assert time.monotonic() - waited < 30
                time.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(FlushError) as flushed:
            tracker.flush_blocking(timeout=60)
        flush_took = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(FlushError) as closed:
            tracker.close(timeout=60)
        close_took = time.monotonic() - started
    stats = tracker.statistics()
    assert (stats.written, stats.parameter_errors, stats.mlflow_traces_failed) == (5, 2, 1)
    if peer == "nothing listening":
        assert "connection refused: nothing listens there" in str(flushed.value)
        assert flush_took < deadline / 2
    else:
        assert f"gave up after {deadline:g} s (deadline)" in str(flushed.value)
        assert flush_took < deadline + 1.5
        assert peer.endswith("first") or deadline - 0.5 < flush_took
        assert "not sent again within" in str(closed.value)
    assert close_took < 1.5
    assert not {"MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"} & set(os.environ)


def test_demo_with_nothing_listening_at_the_mlflow_uri_says_so_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    assert main(["demo", "--destination", str(tmp_path / "logs"), "--mlflow", uri]) == 1
    # Each write fails at once (it took 3 x 88 s): the worker's import of MLflow dominates.
    assert time.monotonic() - started < 60
    captured = capsys.readouterr()
    assert f"MLflow ({uri}): 0 of 3 run(s) logged" in captured.out
    assert captured.err.splitlines()[-1] == (
        f"asynctrack demo: MLflow ({uri}): 0 of 3 run(s) logged: connection refused: nothing listens there"
    )


def test_a_server_answering_500_is_retried_then_reported(
    proxy: FaultProxy, server: MLflowServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # our retries, not MLflow's
    proxy.set_probability(1.0, ["500"])
    sink = MLflowParameters(proxy.endpoint_url, deadline=2.0)
    error, _ = chain_with(sink, tmp_path, "five-hundred")
    assert "deadline" in str(error)
    assert proxy.stats.faults["500"] >= 2  # retried, not given up at the first answer

    # The server comes back: the next tracker's run is there.
    proxy.clear_faults()
    proxy.set_probability(0.0)
    with AsyncTracker(
        tmp_path / "logs", experiment_name="faults", run_name="five-hundred",
        parameter_sinks=[MLflowParameters(proxy.endpoint_url, deadline=30.0)],
    ) as tracker:  # fmt: skip
        scenario_1_llm([tracker])
        tracker.flush_blocking(timeout=60)
    assert [r.info.run_name for r in runs_of(server.url, "faults")] == ["five-hundred"]


def test_a_hanging_server_holds_a_flush_no_longer_than_the_deadline(
    proxy: FaultProxy, tmp_path: Path
) -> None:
    """MLflow's own retries and 120 s timeout stay set (no environment override): the
    deadline bounds the flush and the sink's requests, and the close's write right after
    fails at once."""
    proxy.set_probability(1.0, ["stall"])
    sink = MLflowParameters(proxy.endpoint_url, deadline=1.0)
    flushed, closed = chain_with(sink, tmp_path, "hang")
    assert "gave up after 1 s (deadline)" in str(flushed)
    assert "deadline" in str(closed)  # not sent again within it, or tried again until it


# --------------------------------------------------------------------------------------
# SageMaker managed MLflow (ARN): the sagemaker-mlflow plugin signs with SigV4
# --------------------------------------------------------------------------------------


def test_arn_requests_are_signed_by_the_sagemaker_plugin(
    proxy: FaultProxy, server: MLflowServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[ProxyRequest] = []
    proxy.set_filter(lambda request: seen.append(request) or False)  # record, never fault
    monkeypatch.setenv("SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT", proxy.endpoint_url)
    with AsyncTracker(
        tmp_path / "logs", experiment_name="arn", run_name="signed", parameter_sinks=[MLflowParameters(ARN)]
    ) as tracker:
        scenario_1_llm([tracker])
        tracker.flush_blocking(timeout=60)
    assert seen
    for request in seen:
        # MLflow's REST API, its version (asked once before the first spans) and its OTLP endpoint.
        assert request.target.startswith("/api/") or request.target in ("/version", "/v1/traces"), (
            request.target
        )
        authorization = request.headers.get("authorization", "")
        assert re.match(
            r"AWS4-HMAC-SHA256 Credential=testing/\d{8}/us-east-1/sagemaker-mlflow/aws4_request, ",
            authorization,
        ), authorization
        assert request.headers["x-mlflow-sm-tracking-server-arn"] == ARN
    (found,) = runs_of(server.url, "arn")
    assert found.info.run_name == "signed"
    assert found.data.params["model_name"] == HPARAMS["model_name"]
    # The run's trace went through the same signed client: its spans, then its link to the run.
    assert [r.target for r in seen if "traces" in r.target] == [
        "/v1/traces",
        "/api/2.0/mlflow/traces/link-to-run",
    ]
    (trace,) = MlflowClient(tracking_uri=server.url).search_traces(
        locations=[found.info.experiment_id], run_id=found.info.run_id
    )
    assert trace.info.tags["mlflow.traceName"] == "invoke_workflow LLMChain"


# --------------------------------------------------------------------------------------
# The protocol: compatible, picklable, latency collected on the worker
# --------------------------------------------------------------------------------------


def test_sink_pickles_before_and_after_use(sqlite_uri: str, tmp_path: Path) -> None:
    uri = sqlite_uri
    sink = MLflowParameters(uri, tags={"team": "a"}, deadline=7.0)
    copy = pickle.loads(pickle.dumps(sink))
    assert (copy.tracking_uri, copy._tags, copy._deadline) == (uri, {"team": "a"}, 7.0)
    run = RunInfo(experiment="pickle", run="r", events_uri="/logs/")

    async def go() -> None:
        try:
            await sink.write_summary(run, summary({"a": 1}, {"events_total": 1}))
        finally:
            await sink.aclose()

    asyncio.run(go())
    after = pickle.loads(pickle.dumps(sink))
    assert after.tracking_uri == uri
    (found,) = runs_of(uri, "pickle")
    assert found.data.tags["team"] == "a"


def test_a_forked_child_writes_through_its_own_thread_and_client(sqlite_uri: str, tmp_path: Path) -> None:
    uri = sqlite_uri
    run = RunInfo(experiment="fork", run="r", events_uri="/logs/")
    sink = MLflowParameters(uri)
    asyncio.run(sink.write_summary(run, summary({"a": 1}, {"events_total": 1})))  # parent's thread runs
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 only if its write went through
        code = 1
        try:
            asyncio.run(asyncio.wait_for(sink.write_summary(run, summary({"a": 1}, {"events_total": 7})), 60))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    asyncio.run(sink.aclose())
    assert os.waitstatus_to_exitcode(status) == 0
    (found,) = runs_of(uri, "fork")
    assert found.data.metrics["events_total"] == 7
    assert steps(uri, found.info.run_id) == [0, 1]  # the child continued the parent's run


def test_a_directory_uri_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert MLflowParameters("mlruns").tracking_uri == str(tmp_path / "mlruns")
    assert MLflowParameters("sqlite:///x.db").tracking_uri == "sqlite:///x.db"
    with pytest.raises(ValueError, match="deadline"):
        MLflowParameters(deadline=0)


def test_protocols_and_the_summary_mapping() -> None:
    sink = MLflowParameters("sqlite:///unused.db")
    assert isinstance(sink, ParametersSink) and isinstance(sink, RunSummarySink)
    flat = {"model_name": "m", "events_total": 3}
    run_summary = RunSummary(hyperparameters={"model_name": "m"}, metrics={"events_total": 3.0}, flat=flat)
    assert run_summary == flat and dict(run_summary) == flat and len(run_summary) == 2
    copy = pickle.loads(pickle.dumps(run_summary))  # crosses to a worker process as it is
    assert copy == flat and copy.metrics == {"events_total": 3.0}


def test_a_plain_parameters_sink_still_gets_the_flat_parameters(tmp_path: Path) -> None:
    class Plain:
        def __init__(self) -> None:
            self.got: list[dict[str, Any]] = []

        async def write_parameters(self, run: RunInfo, parameters: Any) -> None:
            assert type(parameters) is dict
            self.got.append(parameters)

        async def aclose(self) -> None:
            pass

    plain = Plain()
    with AsyncTracker(
        tmp_path / "logs", experiment_name="e", run_name="r", parameter_sinks=[plain]
    ) as tracker:
        scenario_1_llm([tracker])
        tracker.flush_blocking(timeout=60)
    assert plain.got[-1]["model_name"] == HPARAMS["model_name"]
    assert plain.got[-1]["events_total"] == 5
    assert not any(key.startswith(("latency_", "llm_calls")) for key in plain.got[-1])


def test_latency_percentiles_and_a_bounded_sample() -> None:
    params = RunParameters(None)
    for i in range(1, 101):
        params.ended("llm_end", i / 100)
    params.ended("tool_error", 2.0)
    params.ended("agent_finish", 9.0)  # not a run with a duration group
    params.counts.update({"llm_start": 60, "chat_model_start": 40, "tool_error": 1, "llm_end": 100})
    metrics = params.metrics()
    assert metrics["latency_llm_p50"] == 0.5
    assert metrics["latency_llm_p95"] == 0.95
    assert metrics["latency_llm_max"] == 1.0
    assert metrics["latency_tool_max"] == metrics["latency_tool_p50"] == 2.0
    assert metrics["llm_calls"] == 100 and metrics["errors"] == 1
    assert not any(key.startswith("latency_agent") for key in metrics)

    many = RunParameters(None)
    for i in range(20_000):
        many.ended("chain_end", float(i))
    assert len(many.latency["chain"].sample) == 4096
    assert many.metrics()["latency_chain_max"] == 19_999.0
    assert 8_000 < many.metrics()["latency_chain_p50"] < 12_000  # a uniform sample's median


# --------------------------------------------------------------------------------------
# The sink's call thread: busy is waited for, overdue fails at once, given up is skipped
# --------------------------------------------------------------------------------------


def test_the_call_thread_tells_a_busy_call_from_an_overdue_one_and_skips_abandoned_calls() -> None:
    caller = _CallThread("asynctrack-mlflow-test")
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def slow() -> str:
        ran.append("slow")
        started.set()
        assert release.wait(60)
        return "slow"

    running = caller.submit(slow)
    queued = caller.submit(lambda: ran.append("queued"))
    try:
        assert started.wait(60)
        assert caller.stuck_for(deadline=60.0) == 0.0  # busy, within the deadline: wait for it
        assert caller.stuck_for(deadline=0.0) > 0.0  # past the deadline: overdue
        caller.give_up(queued)  # its caller left before it started: it never runs
        caller.give_up(running)  # its caller left while it runs: overdue at once
        assert caller.stuck_for(deadline=60.0) > 0.0
    finally:
        release.set()
    done = caller.submit(lambda: "after")
    assert done.result(timeout=60) == "after"
    assert ran == ["slow"]  # the abandoned queued call was skipped
    assert caller.stuck_for(deadline=0.0) == 0.0  # idle
    caller.stop()
