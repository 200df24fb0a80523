"""SageMaker Experiments (``asynctrack._sinks._sagemaker``) against a patched moto on 127.0.0.1.

``SageMakerParameters`` is checked through boto3 reads and through the SageMaker SDK
(``load_run``, ``ExperimentAnalytics``), and ``SageMakerCallbackHandler`` through the seed
notebook's own cells with a real SDK ``Run``. moto gaps that shape these tests:

* moto's ``Search`` does not know ``Parents.ExperimentName``: ``MotoServer`` patches it in
  its child process (``_infra.aws.patch_moto_sagemaker_search``).
* moto answers a Describe of a missing experiment with HTTP 500 (and of a missing trial or
  trial component with ``ValidationException``) where AWS answers ``ResourceNotFound``;
  ``SageMakerParameters`` describes before it creates, so the fixtures' moto bridges that
  too (``aws_fixtures.patch_moto_sagemaker_not_found``).
* moto's create calls overwrite an existing entity instead of failing, so ``load_run``
  (which creates, then loads on "already exists") re-creates the trial component under
  moto: what it finds is checked by name, what was written is checked before it.
* moto validates neither names nor lengths nor counts, so the limits are checked on what
  asynctrack sends; it also drops the ``Tags`` of ``CreateTrialComponent``, so the run tag
  is read off the call (a ``provide-client-params`` observer).
* The fault proxy's canned errors are S3-style 500 and 503; a real ``ThrottlingException``
  (HTTP 400) is produced by a ``before-send`` handler on the aiobotocore session instead.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import types
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import orjson
import pytest
from _infra.aws import FaultProxy, MotoServer
from _infra.aws_fixtures import RequestLog, batch_events, list_keys, run_seed_notebook
from aiobotocore.awsrequest import AioAWSResponse
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.client import BaseClient

from asynctrack import (
    AsyncTracker,
    FlushError,
    RunInfo,
    SageMakerCallbackHandler,
    SageMakerParameters,
    SinkError,
)
from asynctrack._demo._scenarios import EXPERIMENT_NAME, HPARAMS, SCENARIOS, scenario_1_llm

pytest_plugins = ("_infra.aws_fixtures",)

pytestmark = [pytest.mark.aws, pytest.mark.usefixtures("aws_env")]

EVENTS_ARTIFACT = "asynctrack-events"
RUN_TAG = {"Key": "sagemaker:trial-component-source", "Value": "run"}
VALID_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,119}")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def closing(tracker: AsyncTracker) -> Iterator[AsyncTracker]:
    try:
        yield tracker
    finally:
        tracker.close(timeout=30)


def parameters_of(component: dict[str, Any]) -> dict[str, Any]:
    """A DescribeTrialComponent's parameters as plain values."""
    return {
        name: value.get("StringValue", value.get("NumberValue"))
        for name, value in component.get("Parameters", {}).items()
    }


def events_under(s3: BaseClient, uri: str) -> list[dict[str, Any]]:
    """The events in the batch objects under an ``s3://bucket/prefix/`` URI."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    keys = [key for key in list_keys(s3, bucket, prefix) if "/params/" not in key]
    return [event for key in keys for event in batch_events(s3, bucket, key)]


async def write(sink: SageMakerParameters, run: RunInfo, parameters: dict[str, Any]) -> None:
    try:
        with anyio.fail_after(60):
            await sink.write_parameters(run, parameters)
    finally:
        await sink.aclose()


class CannedErrors:
    """A ``before-send`` handler answering the first ``times`` calls with an AWS JSON error.

    Registered on an aiobotocore session, it replaces the HTTP exchange of the matching
    operation with a canned response, the way botocore's stubbing hooks do; the rest of
    the client (parsing, error classes) runs unchanged.
    """

    def __init__(self, code: str, status: int, times: int) -> None:
        self.code, self.status, self.times = code, status, times
        self.calls = 0

    def __call__(self, request: Any, **kwargs: Any) -> AioAWSResponse | None:
        self.calls += 1
        if self.calls > self.times:
            return None  # send it for real
        body = orjson.dumps({"__type": self.code, "message": f"canned {self.code}"})

        class Raw:
            async def read(self) -> bytes:
                return body

        headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": "canned"}
        return AioAWSResponse(request.url, self.status, headers, Raw())


def session_with(hook: CannedErrors, operation: str) -> AioSession:
    """An aiobotocore session whose ``operation`` calls go through ``hook`` first.

    botocore's own retries are turned off (one attempt per call), so any retry seen is
    ``SageMakerParameters``'s. By default botocore would also retry throttling and 5xx
    itself (legacy mode, up to 5 attempts per call), below the sink's loop.
    """
    session = get_session()
    session.set_default_client_config(AioConfig(retries={"total_max_attempts": 1}))
    session.register(f"before-send.sagemaker.{operation}", hook)
    return session


# --------------------------------------------------------------------------------------
# SageMakerParameters as a tracker's parameter sink
# --------------------------------------------------------------------------------------


def test_parameter_sink_creates_the_run_the_sdk_finds(
    moto: MotoServer,
    bucket: str,
    sagemaker_client: BaseClient,
    sagemaker_sdk: types.SimpleNamespace,
    sdk_session: Any,
) -> None:
    experiment, run_name = "exp-params", "run-1"
    component = f"{experiment}-{run_name}"
    trial = f"Default-Run-Group-{experiment}"
    tracker = AsyncTracker(
        f"s3://{bucket}/events",
        experiment_name=experiment,
        run_name=run_name,
        endpoint_url=moto.endpoint_url,
        parameter_sinks=[SageMakerParameters(endpoint_url=moto.endpoint_url)],
    )
    with closing(tracker):
        scenario_1_llm([tracker])
        tracker.flush_blocking(timeout=30)
        stats = tracker.statistics()
    assert stats.parameter_errors == 0

    assert sagemaker_client.describe_experiment(ExperimentName=experiment)["ExperimentName"] == experiment
    assert sagemaker_client.describe_trial(TrialName=trial)["ExperimentName"] == experiment
    described = sagemaker_client.describe_trial_component(TrialComponentName=component)
    assert described["DisplayName"] == run_name
    parameters = parameters_of(described)
    assert parameters["temperature"] == HPARAMS["temperature"]
    assert parameters["model_name"] == HPARAMS["model_name"]
    assert parameters["events_total"] == stats.written
    assert described["OutputArtifacts"] == {
        EVENTS_ARTIFACT: {"Value": tracker.events_uri, "MediaType": "application/x-ndjson"}
    }
    listed = sagemaker_client.list_trial_components(TrialName=trial)["TrialComponentSummaries"]
    assert [summary["TrialComponentName"] for summary in listed] == [component]

    # The SDK's analytics see the run as one of the experiment's runs.
    frame = sagemaker_sdk.ExperimentAnalytics(
        experiment_name=experiment, sagemaker_session=sdk_session
    ).dataframe(force_refresh=True)
    rows = frame.to_dict(orient="records")
    assert [row["TrialComponentName"] for row in rows] == [component]
    assert rows[0]["temperature"] == HPARAMS["temperature"]
    assert rows[0][f"{EVENTS_ARTIFACT} - Value"] == tracker.events_uri
    assert rows[0]["Experiments"] == [experiment]

    # load_run names the same experiment, run group and trial component. (Under moto its
    # create-or-load re-creates the component; on AWS it loads the one written above.)
    with sagemaker_sdk.load_run(
        experiment_name=experiment, run_name=run_name, sagemaker_session=sdk_session
    ) as run:
        assert run.experiment_config == {
            "ExperimentName": experiment,
            "TrialName": trial,
            "RunName": component,
        }
    assert len(sagemaker_client.list_experiments()["ExperimentSummaries"]) == 1
    assert len(sagemaker_client.list_trial_components()["TrialComponentSummaries"]) == 1


@pytest.mark.anyio
async def test_the_trial_component_carries_the_run_tag(moto: MotoServer) -> None:
    """moto drops the tags of CreateTrialComponent, so they are read off the call itself
    (a ``provide-client-params`` observer on the aiobotocore session)."""
    calls: dict[str, dict[str, Any]] = {}

    def observe(params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        calls[model.name] = dict(params)

    session = get_session()
    session.register("provide-client-params.sagemaker.*", observe)
    sink = SageMakerParameters(session=session, endpoint_url=moto.endpoint_url)
    await write(sink, RunInfo(experiment="exp-tag", run="Run-1", events_uri="s3://b/p/"), {"x": 1})
    assert calls["CreateExperiment"] == {"ExperimentName": "exp-tag"}
    assert calls["CreateTrial"] == {"TrialName": "Default-Run-Group-exp-tag", "ExperimentName": "exp-tag"}
    # Lower-cased like the SDK's Run does, so that load_run("Run-1") finds it.
    assert calls["CreateTrialComponent"] == {
        "TrialComponentName": "exp-tag-run-1",
        "DisplayName": "Run-1",
        "Tags": [RUN_TAG],
    }
    assert calls["AssociateTrialComponent"] == {
        "TrialComponentName": "exp-tag-run-1",
        "TrialName": "Default-Run-Group-exp-tag",
    }


@pytest.mark.anyio
async def test_more_than_300_parameters_keep_300_and_warn(
    moto: MotoServer, sagemaker_client: BaseClient, caplog: pytest.LogCaptureFixture
) -> None:
    sink = SageMakerParameters(endpoint_url=moto.endpoint_url)
    hyper = {f"param{n:03d}": n for n in range(398)}
    counts = {"events_total": 5, "events_text": 5}  # counts go after hyperparameters
    with caplog.at_level(logging.WARNING, logger="asynctrack"):
        await write(
            sink, RunInfo(experiment="exp-limits", run="many", events_uri="s3://b/p/"), hyper | counts
        )
    written = parameters_of(sagemaker_client.describe_trial_component(TrialComponentName="exp-limits-many"))
    assert len(written) == 300
    assert written == {f"param{n:03d}": float(n) for n in range(300)}
    assert sink.adjustments == 100
    skipped = [r.getMessage() for r in caplog.records if "SageMaker keeps 300 per run" in r.getMessage()]
    assert len(skipped) == 100
    assert any("'events_total' skipped" in message for message in skipped)


@pytest.mark.anyio
async def test_long_strings_are_cut_and_non_finite_numbers_skipped(
    moto: MotoServer, sagemaker_client: BaseClient, caplog: pytest.LogCaptureFixture
) -> None:
    sink = SageMakerParameters(endpoint_url=moto.endpoint_url)
    long = "".join(chr(ord("a") + n % 26) for n in range(3000))
    parameters = {"prompt": long, "nan": math.nan, "inf": math.inf, "ratio": 1.5, "streaming": True}
    with caplog.at_level(logging.WARNING, logger="asynctrack"):
        await write(sink, RunInfo(experiment="exp-limits", run="cut", events_uri="s3://b/p/"), parameters)
    described = sagemaker_client.describe_trial_component(TrialComponentName="exp-limits-cut")
    assert described["Parameters"] == {
        "prompt": {"StringValue": long[:2500]},
        "ratio": {"NumberValue": 1.5},
        "streaming": {"StringValue": "true"},
    }
    messages = " | ".join(record.getMessage() for record in caplog.records)
    assert "'prompt' cut to 2500 characters (was 3000)" in messages
    assert "'nan' skipped" in messages
    assert "'inf' skipped" in messages
    assert sink.adjustments == 3


def test_invalid_names_are_sanitised(
    moto: MotoServer, bucket: str, sagemaker_client: BaseClient, caplog: pytest.LogCaptureFixture
) -> None:
    experiment, run_name = "My_Exp.v2", "r" * 199 + "!"
    expected = SageMakerParameters.names(experiment, run_name)
    exp_name, trial, component = expected
    for name in expected:
        assert VALID_NAME.fullmatch(name), name
    assert exp_name.startswith("my-exp-v2-")
    # Two names that differ only past the cut stay two runs.
    assert SageMakerParameters.names(experiment, "r" * 200)[2] != component

    tracker = AsyncTracker(
        f"s3://{bucket}/events",
        experiment_name=experiment,
        run_name=run_name,
        endpoint_url=moto.endpoint_url,
        parameter_sinks=[SageMakerParameters(endpoint_url=moto.endpoint_url)],
    )
    with caplog.at_level(logging.WARNING, logger="asynctrack"), closing(tracker):
        tracker.on_text("hello", run_id=uuid.uuid4())
        tracker.flush_blocking(timeout=30)
        assert tracker.statistics().parameter_errors == 0
    assert sagemaker_client.describe_experiment(ExperimentName=exp_name)["ExperimentName"] == exp_name
    assert sagemaker_client.describe_trial(TrialName=trial)["ExperimentName"] == exp_name
    described = sagemaker_client.describe_trial_component(TrialComponentName=component)
    assert len(described["DisplayName"]) <= 120
    assert parameters_of(described)["events_total"] == 1
    assert f"experiment name {experiment!r} is {exp_name!r} in SageMaker" in caplog.text


# --------------------------------------------------------------------------------------
# Throttling and errors
# --------------------------------------------------------------------------------------


def _is_sagemaker_call(request: Any) -> bool:
    return str(request.headers.get("x-amz-target", "")).startswith("SageMaker.")


@pytest.mark.parametrize("botocore_retries", [True, False], ids=["default-session", "sink-retries-only"])
def test_server_errors_from_sagemaker_are_retried(
    moto: MotoServer,
    bucket: str,
    sagemaker_client: BaseClient,
    proxy: FaultProxy,
    request_log: RequestLog,
    botocore_retries: bool,
) -> None:
    """HTTP 500 / 503 on SageMaker calls, injected by the proxy (its canned errors have S3
    bodies, which the JSON client still reads as server errors by their status)."""
    request_log.faultable = _is_sagemaker_call
    proxy.schedule(["500", "503", "500"])
    session = None
    if not botocore_retries:
        session = get_session()
        session.set_default_client_config(AioConfig(retries={"total_max_attempts": 1}))
    tracker = AsyncTracker(
        f"s3://{bucket}/events",
        experiment_name="exp-retry",
        run_name="run-1",
        endpoint_url=moto.endpoint_url,  # S3 directly; only SageMaker goes through the proxy
        parameter_sinks=[SageMakerParameters(session=session, endpoint_url=proxy.endpoint_url, deadline=30)],
    )
    with closing(tracker):
        tracker.on_text("hello", run_id=uuid.uuid4())
        tracker.flush_blocking(timeout=60)
        assert tracker.statistics().parameter_errors == 0
    assert proxy.pending == 0
    assert proxy.stats.faults["500"] == 2
    assert proxy.stats.faults["503"] == 1
    described = sagemaker_client.describe_trial_component(TrialComponentName="exp-retry-run-1")
    assert parameters_of(described) == {"events_text": 1, "events_total": 1}
    assert described["OutputArtifacts"][EVENTS_ARTIFACT]["Value"] == tracker.events_uri


@pytest.mark.anyio
async def test_a_stalled_call_is_given_up_within_the_deadline(
    moto: MotoServer, proxy: FaultProxy, request_log: RequestLog
) -> None:
    """``deadline`` bounds one save, a stalled endpoint included, as ``S3Sink`` bounds a
    write with ``read_timeout`` and ``write_deadline``; a flush waits for this save."""
    request_log.faultable = _is_sagemaker_call
    proxy.set_probability(1.0, ["stall"])  # every SageMaker call: no answer until the end
    sink = SageMakerParameters(endpoint_url=proxy.endpoint_url, deadline=1.0)
    run = RunInfo(experiment="exp-stall", run="run-1", events_uri="s3://b/p/")
    try:
        with anyio.fail_after(8), pytest.raises(SinkError):  # the deadline and a wide margin
            await sink.write_parameters(run, {"x": 1})
    except TimeoutError:
        pytest.fail("write_parameters(deadline=1.0) was still waiting on a stalled call after 8 s")
    finally:
        await sink.aclose()


@pytest.mark.anyio
async def test_throttling_exceptions_are_retried(moto: MotoServer, sagemaker_client: BaseClient) -> None:
    throttle = CannedErrors("ThrottlingException", 400, times=3)
    sink = SageMakerParameters(
        session=session_with(throttle, "UpdateTrialComponent"), endpoint_url=moto.endpoint_url, deadline=30
    )
    await write(sink, RunInfo(experiment="exp-throttle", run="run-1", events_uri="s3://b/p/"), {"x": 1})
    assert throttle.calls == 4  # three throttled and retried by the sink, then the real call
    described = sagemaker_client.describe_trial_component(TrialComponentName="exp-throttle-run-1")
    assert parameters_of(described) == {"x": 1}


def test_a_rejected_save_fails_the_flush_without_retrying(moto: MotoServer, bucket: str) -> None:
    rejected = CannedErrors("ValidationException", 400, times=1_000)
    tracker = AsyncTracker(
        f"s3://{bucket}/events",
        experiment_name="exp-rejected",
        run_name="run-1",
        endpoint_url=moto.endpoint_url,
        parameter_sinks=[
            SageMakerParameters(
                session=session_with(rejected, "UpdateTrialComponent"), endpoint_url=moto.endpoint_url
            )
        ],
    )
    try:
        tracker.on_text("hello", run_id=uuid.uuid4())
        with pytest.raises(FlushError, match=r"SageMakerParameters.*ValidationException") as caught:
            tracker.flush_blocking(timeout=30)
        assert caught.value.pending == 0  # the events themselves are on S3
        assert rejected.calls == 1
        stats = tracker.statistics()
        assert (stats.written, stats.parameter_errors) == (1, 1)
    finally:
        with pytest.raises(FlushError, match="ValidationException"):
            tracker.close(timeout=30)


# --------------------------------------------------------------------------------------
# SageMakerCallbackHandler: the seed notebook with a real SDK Run
# --------------------------------------------------------------------------------------


def test_seed_notebook_scenarios_with_sdk_run_and_experiment_analytics(
    bucket: str, s3: BaseClient, sagemaker_sdk: types.SimpleNamespace, sdk_session: Any
) -> None:
    seed = run_seed_notebook(sagemaker_sdk, sdk_session)
    answers, handlers, rows = seed.answers, seed.handlers, seed.rows
    assert seed.shape[0] == 3
    assert sorted(rows) == sorted(SCENARIOS)
    for run_name, row in rows.items():
        handler = handlers[run_name]
        assert row["temperature"] == HPARAMS["temperature"]
        assert row["model_name"] == HPARAMS["model_name"]
        uri = row[f"{EVENTS_ARTIFACT} - Value"]
        assert uri == f"s3://{bucket}/asynctrack/experiment={EXPERIMENT_NAME}/run={run_name}/"
        assert row[f"{EVENTS_ARTIFACT} - MediaType"] == "application/x-ndjson"
        events = events_under(s3, uri)
        written = handler.statistics().written
        assert sorted(event["seq"] for event in events) == list(range(written))
        assert {(event["experiment"], event["run"]) for event in events} == {(EXPERIMENT_NAME, run_name)}
        assert row["events_total"] == written
        assert row["Experiments"] == [EXPERIMENT_NAME]

    # The agent's final answer is recorded (the old handler lost it past 30 artifacts).
    agent_events = events_under(s3, rows["run-scenario-3"][f"{EVENTS_ARTIFACT} - Value"])
    finishes = [event for event in agent_events if event["kind"] == "agent_finish"]
    assert len(finishes) == 1
    assert answers["run-scenario-3"] in orjson.dumps(finishes[0]["data"]).decode()


def test_handler_keeps_working_after_flush_tracker(
    s3: BaseClient, sagemaker_client: BaseClient, sagemaker_sdk: types.SimpleNamespace, sdk_session: Any
) -> None:
    with sagemaker_sdk.Run(
        experiment_name="exp-again", run_name="run-1", sagemaker_session=sdk_session
    ) as run:
        handler = SageMakerCallbackHandler(run)
        try:
            scenario_1_llm([handler])
            handler.flush_tracker()
            first = handler.statistics().written
            assert first > 0
            scenario_1_llm([handler])  # after flush_tracker(): still recorded
            handler.flush_tracker()
            stats = handler.statistics()
        finally:
            handler.close(timeout=30)
    assert (stats.written, stats.dropped, stats.lost) == (2 * first, 0, 0)
    events = events_under(s3, handler.events_uri)
    assert sorted(event["seq"] for event in events) == list(range(2 * first))
    described = sagemaker_client.describe_trial_component(TrialComponentName="exp-again-run-1")
    assert parameters_of(described)["events_total"] == 2 * first
    assert described["OutputArtifacts"][EVENTS_ARTIFACT]["Value"] == handler.events_uri
