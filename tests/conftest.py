"""Shared fixtures: AWS isolation (autouse), a fresh local destination, trackers, the worker mode."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _infra.hooks import WorkerGate
from support import assert_worker_mode

from asynctrack import AsyncTracker, FlushError

if TYPE_CHECKING:
    from _infra.mlflow_server import MLflowServer
    from _infra.openai_stub import OpenAIStub
    from _infra.otlp_receiver import OTLPReceiver

#: The two places a tracker's worker can run (``TrackerConfig.worker``).
WORKER_MODES = ("process", "thread")

#: Tests that share an expensive fixture run in one pytest-xdist worker, in collection order, so
#: that the fixture is made once: the MLflow tests (they share the session's MLflow server,
#: 5-30 s to start), and the modules whose module-scoped fixture runs the demo or starts Chromium.
#: Every other test is scheduled on its own, to whichever worker is free. (A table, not
#: ``xdist_group`` marks: pytest-xdist 3.8 cannot rename node ids under pytest 9.2, so its
#: ``--dist loadgroup`` runs marked tests apart.)
XDIST_GROUPS = {
    "tests/test_mlflow.py": "mlflow",
    "tests/test_mlflow_traces.py": "mlflow",
    "tests/test_export.py::test_mlflow_server_accepts_the_spans": "mlflow",
    "tests/test_report.py": "report",
    "tests/test_cli_commands.py": "cli_commands",
    "tests/test_export_spans.py": "export_spans",
}


def xdist_group(nodeid: str) -> str:
    """The work unit of a test: its group in ``XDIST_GROUPS``, else the test itself."""
    module, _, rest = nodeid.partition("::")
    test = f"{module}::{rest.split('[', 1)[0]}"
    return XDIST_GROUPS.get(test) or XDIST_GROUPS.get(module) or nodeid


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: pytest checks it only if xdist is loaded
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``-n`` (``--dist load``, the default): tests one by one, ``XDIST_GROUPS`` together.

    The largest units go first (pytest-xdist's ``--loadscope-reorder``), so the MLflow
    group starts at once rather than ending the run.
    """
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    return GroupScheduling(config, log)


@pytest.fixture(autouse=True)
def _isolate_aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's AWS settings; boto finds dummy credentials."""
    for name in list(os.environ):
        if name.upper().startswith("AWS_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    yield


@pytest.fixture(autouse=True)
def _isolate_spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test spools into its own directory, never ~/.cache (where one test's
    leftovers would be delivered by the next test's tracker), and runs in the default
    worker mode unless it asks for ``worker_mode``."""
    monkeypatch.setenv("ASYNCTRACK_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("ASYNCTRACK_EXIT_TIMEOUT", "5")
    monkeypatch.delenv("ASYNCTRACK_WORKER", raising=False)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=WORKER_MODES)
def worker_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where the test's trackers run their worker: ``"process"``, then ``"thread"``.

    For the tests whose behaviour depends on it (like anyio's ``anyio_backend``); the
    others run once, with the default worker process. It sets ``ASYNCTRACK_WORKER``, so
    trackers made with ``worker=None`` and the child processes a test starts follow it.
    ``make_tracker`` checks that each tracker really runs there: a tracker whose hook or
    destination cannot cross to a worker process silently uses a thread.
    """
    mode: str = request.param
    monkeypatch.setenv("ASYNCTRACK_WORKER", mode)
    return mode


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, its tables made (``_infra.mlflow_server.migrated_store``):
    copy it for a store of a test's own (a new store runs MLflow's migrations, 3-10 s)."""
    from _infra.mlflow_server import migrated_store

    return migrated_store(tmp_path_factory.mktemp("mlflow-store") / "mlflow.db")


@pytest.fixture
def isolate_mlflow(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees another's tracking URI (the ARN path sets the process-wide one); used
    by the MLflow test modules (``pytestmark``): importing mlflow is not every test's cost."""
    import mlflow

    for name in (
        "MLFLOW_TRACKING_URI",
        "SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT",
        "SAGEMAKER_MLFLOW_ASSUME_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    mlflow.set_tracking_uri(None)
    yield
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def mlflow_server(mlflow_store: Path) -> Iterator[MLflowServer]:
    """One real ``mlflow server`` for the session (started on first use, 5-30 s), shared by
    the MLflow tests: each keeps to experiments of its own names."""
    from _infra.mlflow_server import MLflowServer

    with MLflowServer(store=mlflow_store) as server:
        yield server


@pytest.fixture
def tmp_destination(tmp_path: Path) -> Path:
    """A directory (not yet created) for a tracker to write into."""
    return tmp_path / "asynctrack-logs"


@pytest.fixture
def make_tracker(
    request: pytest.FixtureRequest, tmp_destination: Path
) -> Iterator[Callable[..., AsyncTracker]]:
    """Trackers on ``tmp_destination`` (or the destination given), closed at the end.

    ``make(destination=None, *, experiment_name="exp", run_name="r", **kwargs)``. In a test
    that uses ``worker_mode``, each tracker is checked to run its worker in that mode. Fake
    sinks are "remote" destinations: what they leave at close is spooled, into the test's
    own spool directory (``ASYNCTRACK_SPOOL_DIR``).
    """
    mode = request.getfixturevalue("worker_mode") if "worker_mode" in request.fixturenames else None
    made: list[AsyncTracker] = []

    def make(
        destination: Any = None, *, experiment_name: str = "exp", run_name: str = "r", **kwargs: Any
    ) -> AsyncTracker:
        tracker = AsyncTracker(
            tmp_destination if destination is None else destination,
            experiment_name=experiment_name,
            run_name=run_name,
            **kwargs,
        )
        made.append(tracker)
        if mode is not None:
            assert_worker_mode(tracker, mode)
        return tracker

    yield make
    for tracker in made:
        try:
            tracker.close(timeout=5)
        except FlushError:
            pass


@pytest.fixture
def worker_gate(tmp_path: Path, make_tracker: Callable[..., AsyncTracker]) -> Iterator[WorkerGate]:
    """A ``redact`` hook that holds the worker (thread or process) on its first event
    until ``release()``; held from the start, released at the end at the latest (before
    ``make_tracker`` closes its trackers)."""
    gate = WorkerGate(tmp_path).hold()
    try:
        yield gate
    finally:
        gate.release()


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAIStub]:
    """A loopback OpenAI-compatible server (``ChatOpenAI`` points at its ``url``), one per module."""
    from _infra.openai_stub import OpenAIStub

    with OpenAIStub() as s:
        yield s


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    """An OTLP/HTTP receiver on 127.0.0.1 that decodes what it gets with opentelemetry-proto."""
    from _infra.otlp_receiver import OTLPReceiver

    with OTLPReceiver() as r:
        yield r
