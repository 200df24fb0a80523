"""The seed notebook with SageMaker SDK v2 (``sagemaker<3``), against moto on 127.0.0.1.

The seed page's imports are v2's (``sagemaker.experiments.run.Run``,
``sagemaker.analytics.ExperimentAnalytics``, ``sagemaker.session.Session``); the main test
environment has sagemaker-core 2.27 (the v3 paths, ``tests/test_sagemaker.py``), and SDK v2
cannot be installed beside it (it pins sagemaker-core < 2). So this module runs in an
environment of its own: ``pip install -e '.[test-sagemaker-v2]'``, then
``python -m pytest -n 0 tests/test_sagemaker_v2.py``. Without v2 it skips and says why;
``ASYNCTRACK_REQUIRE_SAGEMAKER_V2=1`` turns the skip into a failure.

The three scenarios run offline on asynctrack's fake LLMs (``asynctrack demo``'s), in the
seed's cells as a user writes them, only the handler's import changed
(``_infra.aws_fixtures.run_seed_notebook``, which ``test_sagemaker.py`` runs with
sagemaker-core's classes). The moto server and its SageMaker bridges are
``_infra.aws_fixtures``'s, whose ``sdk_session`` builds its ``Session`` from this module's
``sagemaker_sdk``: v2's classes.
"""

from __future__ import annotations

import collections
import os
import types
import warnings
from collections.abc import Iterator

import pytest
from _infra.aws import MotoServer
from _infra.aws_fixtures import root_logger_kept, run_seed_notebook

from asynctrack import read_events, read_parameters
from asynctrack._demo._scenarios import EXPERIMENT_NAME, HPARAMS, SCENARIOS

pytest_plugins = ("_infra.aws_fixtures",)

pytestmark = [pytest.mark.aws, pytest.mark.usefixtures("aws_env")]

EVENTS_ARTIFACT = "asynctrack-events"


@pytest.fixture
def sagemaker_sdk(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.SimpleNamespace]:
    """SDK v2's ``Run``, ``Session`` and ``ExperimentAnalytics``: the seed's imports.

    Overrides the plugin's fixture of that name (sagemaker-core's classes). v2 warns once
    per process and feature that it is deprecated (at import, at ``Run()``); its own
    switch silences that, as the warning says.
    """
    monkeypatch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    with root_logger_kept():
        try:
            with warnings.catch_warnings():
                # Where sagemaker-core 2.x is installed instead, its import hook warns (a
                # DeprecationWarning) that v2's modules were removed, then raises ImportError.
                warnings.simplefilter("ignore", DeprecationWarning)
                from sagemaker.analytics import ExperimentAnalytics
                from sagemaker.experiments.run import Run
                from sagemaker.session import Session
        except ImportError as error:
            reason = (
                f"SageMaker SDK v2 is not importable ({str(error).splitlines()[0]}): "
                "pip install -e '.[test-sagemaker-v2]' in an environment of its own"
            )
            if os.environ.get("ASYNCTRACK_REQUIRE_SAGEMAKER_V2") == "1":
                pytest.fail(f"ASYNCTRACK_REQUIRE_SAGEMAKER_V2=1: {reason}")
            pytest.skip(reason)
        yield types.SimpleNamespace(ExperimentAnalytics=ExperimentAnalytics, Run=Run, Session=Session)


def test_seed_notebook_scenarios_with_sdk_v2(
    sagemaker_sdk: types.SimpleNamespace, sdk_session: object, moto: MotoServer, bucket: str
) -> None:
    # (sagemaker_sdk first: without v2 the test skips before moto starts.)
    assert type(sdk_session).__module__ == "sagemaker.session"  # v2's, not sagemaker-core's
    seed = run_seed_notebook(sagemaker_sdk, sdk_session)
    answers, handlers, rows = seed.answers, seed.handlers, seed.rows
    assert seed.shape[0] == 3  # one row per run
    assert sorted(rows) == sorted(SCENARIOS)
    destination = f"s3://{bucket}/asynctrack"
    for run_name, row in rows.items():
        stats = handlers[run_name].statistics()
        assert (stats.dropped, stats.lost) == (0, 0)
        assert row["Experiments"] == [EXPERIMENT_NAME]
        assert row["temperature"] == HPARAMS["temperature"]
        assert row["model_name"] == HPARAMS["model_name"]
        uri = row[f"{EVENTS_ARTIFACT} - Value"]
        assert uri == f"{destination}/experiment={EXPERIMENT_NAME}/run={run_name}/"
        assert row[f"{EVENTS_ARTIFACT} - MediaType"] == "application/x-ndjson"

        # The events on S3, read back with asynctrack's readers: every one, of this run, counted
        # and their tokens summed in the row.
        events = read_events(destination, EXPERIMENT_NAME, run_name, endpoint_url=moto.endpoint_url)
        assert [event["seq"] for event in events] == list(range(stats.written))
        assert row["events_total"] == stats.written == len(events)
        kinds = collections.Counter(event["kind"] for event in events)
        assert {kind: row[f"events_{kind}"] for kind in kinds} == dict(kinds)
        ends = [event for event in events if event["kind"] == "llm_end"]
        usage = [event["data"]["response"]["llm_output"]["token_usage"] for event in ends]
        assert row["tokens_prompt"] == sum(call["prompt_tokens"] for call in usage) > 0
        assert row["tokens_completion"] == sum(call["completion_tokens"] for call in usage) > 0
        assert row["tokens_total"] == sum(call["total_tokens"] for call in usage)
        # The run's parameter document on S3 says the same as the row.
        parameters = read_parameters(destination, EXPERIMENT_NAME, run_name, endpoint_url=moto.endpoint_url)
        assert {key: row[key] for key in parameters} == parameters

    # The agent's final answer is recorded (the old handler lost it past 30 artifacts).
    agent = read_events(destination, EXPERIMENT_NAME, "run-scenario-3", endpoint_url=moto.endpoint_url)
    finishes = [event for event in agent if event["kind"] == "agent_finish"]
    assert len(finishes) == 1
    assert answers["run-scenario-3"] in str(finishes[0]["data"])
