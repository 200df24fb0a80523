"""Shared AWS fixtures for ``test_s3.py`` and ``test_sagemaker.py``: moto on 127.0.0.1.

Load them with ``pytest_plugins = ("_infra.aws_fixtures",)`` in a test module. Nothing here is
autouse (a plugin's fixtures are visible to the whole session); each module opts in.
The helpers (``list_keys``, ``batch_events``, ...) are imported by name, so this module is
imported before pytest registers it as a plugin; PYTEST_DONT_REWRITE (it has no asserts)
keeps pytest from warning that it can no longer rewrite it.

* ``moto_server``: one patched moto server per session, in a child process
  (``BridgedMotoServer``, an ``_infra.aws.MotoServer`` with one more
  documented moto patch); ``moto`` resets it before each test.
* ``aws_env``: dummy credentials, ``us-east-1``, no config files, no proxies, a spool
  directory of the test's own (``ASYNCTRACK_SPOOL_DIR``), and a guard
  that refuses to resolve any host other than the loopback one, so no test can reach
  the internet even by mistake (every client must point at 127.0.0.1).
* ``moto_endpoint_env``: ``AWS_ENDPOINT_URL`` set to the server, for code that only
  honours the global setting (the SageMaker SDK's S3 clients).
* ``bucket`` (a fresh bucket), ``s3`` (a boto3 client), ``proxy`` (a ``FaultProxy``),
  ``request_log`` (the proxy's requests), ``sagemaker_sdk`` and ``sdk_session``.
* ``run_seed_notebook``: the seed notebook's cells with an SDK's classes (v3's or v2's).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import itertools
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import orjson
import pytest
from botocore.client import BaseClient
from botocore.config import Config

from _infra.aws import FaultProxy, MotoServer, ProxyRequest

if TYPE_CHECKING:
    from asynctrack import SageMakerCallbackHandler

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

#: The SageMaker SDK reads its defaults from files unless given a config; this one only
#: opts out of telemetry, which would otherwise call a public AWS endpoint.
SAGEMAKER_CONFIG: dict[str, Any] = {
    "SchemaVersion": "1.0",
    "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
}

_bucket_numbers = itertools.count()


# --------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials, a fixed region, nothing from the developer's AWS setup.

    Also makes name resolution refuse every non-loopback host for the test's duration:
    botocore (urllib3) and aiohttp's default resolver both go through
    ``socket.getaddrinfo``, so a client that is not pointed at moto fails at once with a
    clear message instead of reaching AWS.
    """
    for name in list(os.environ):
        upper = name.upper()
        if upper.startswith("AWS_") or upper in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    # A developer's ~/.aws must not add a profile, an endpoint or a retry mode.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    # Trackers spool what a destination refused at close; keep that out of ~/.cache, and
    # keep one test's leftovers from being delivered by the next.
    monkeypatch.setenv("ASYNCTRACK_SPOOL_DIR", str(tmp_path / "spool"))

    real_getaddrinfo = socket.getaddrinfo

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name not in LOOPBACK_HOSTS:
            raise OSError(f"test guard: {name!r} is not 127.0.0.1; every AWS client must point at moto")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)


# --------------------------------------------------------------------------------------
# The moto server, with one more bridged gap
# --------------------------------------------------------------------------------------


def patch_moto_sagemaker_not_found() -> None:
    """Make moto answer a Describe of a missing experiment, trial or component like AWS.

    The gap: for a name that does not exist, moto 5.2.5's ``DescribeExperiment`` raises a
    ``KeyError`` (HTTP 500, which every client retries as a server error) and
    ``DescribeTrial`` / ``DescribeTrialComponent`` answer ``ValidationException``, where
    AWS answers ``ResourceNotFound`` (HTTP 400) to all three. ``SageMakerParameters``
    describes each entity first and creates it on ``ResourceNotFound``, so without this
    bridge it never creates anything under moto.

    The bridge wraps the three backend methods: a missing name raises moto's own
    ``ResourceNotFound``; everything else goes to moto unchanged. Applying it twice is a
    no-op.
    """
    from moto.sagemaker.exceptions import ResourceNotFound
    from moto.sagemaker.models import SageMakerModelBackend

    for method, store, what in (
        ("describe_experiment", "experiments", "Experiment"),
        ("describe_trial", "trials", "Trial"),
        ("describe_trial_component", "trial_components", "TrialComponent"),
    ):
        original = getattr(SageMakerModelBackend, method)
        if getattr(original, "_asynctrack_bridge", False):
            continue

        def describe(
            self: Any,
            *args: Any,
            _original: Any = original,
            _store: str = store,
            _what: str = what,
            **kwargs: Any,
        ) -> Any:
            name = args[0] if args else next(iter(kwargs.values()))
            if name not in getattr(self, _store):
                raise ResourceNotFound(message=f"{_what} '{name}' does not exist.")
            return _original(self, *args, **kwargs)

        describe._asynctrack_bridge = True  # type: ignore[attr-defined]
        setattr(SageMakerModelBackend, method, describe)


class BridgedMotoServer(MotoServer):
    """``MotoServer`` whose child also applies ``patch_moto_sagemaker_not_found``.

    The child runs this file (see the ``__main__`` block at the end), which applies the
    patch and then hands over to ``_infra.aws.main`` (Search patch, server,
    port line, exit on stdin EOF). Only the command differs from ``MotoServer.start``.
    """

    def start(self) -> BridgedMotoServer:
        if self._process is not None:
            raise RuntimeError("MotoServer is already running")
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop(), as in MotoServer
        try:
            self._process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=self._child_env(),
                start_new_session=True,
            )
            self._port = self._read_port(self._process)
        except BaseException:
            if self._process is not None:
                self._process.kill()
            self.stop()
            raise
        return self


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto child process for the session (started on first use)."""
    with BridgedMotoServer() as server:
        yield server


@pytest.fixture
def moto(moto_server: MotoServer, aws_env: None) -> MotoServer:
    """The shared moto server with every bucket, key and experiment forgotten."""
    moto_server.reset()
    return moto_server


@pytest.fixture
def moto_endpoint_env(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """``AWS_ENDPOINT_URL`` pointing at moto (every boto3/aiobotocore client honours it)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint_url)
    return moto.endpoint_url


# --------------------------------------------------------------------------------------
# S3
# --------------------------------------------------------------------------------------


@pytest.fixture
def s3(moto: MotoServer) -> Iterator[BaseClient]:
    """A boto3 S3 client on moto: one attempt per call, bounded timeouts."""
    client = boto3.session.Session(region_name=REGION).client(
        "s3",
        endpoint_url=moto.endpoint_url,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=10),
    )
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def bucket(s3: BaseClient) -> str:
    """A new, empty bucket with a name no other test used."""
    name = f"asynctrack-test-{os.getpid()}-{next(_bucket_numbers)}"
    s3.create_bucket(Bucket=name)
    return name


def list_keys(s3: BaseClient, bucket: str, prefix: str = "") -> list[str]:
    """Every key under ``prefix``, sorted."""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)


def read_object(s3: BaseClient, bucket: str, key: str) -> bytes:
    body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def batch_events(s3: BaseClient, bucket: str, key: str) -> list[dict[str, Any]]:
    """The events of one batch object (``.jsonl`` or ``.jsonl.gz``)."""
    data = read_object(s3, bucket, key)
    if key.endswith(".gz"):
        data = gzip.decompress(data)
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


# --------------------------------------------------------------------------------------
# Fault proxy and its request log
# --------------------------------------------------------------------------------------


class RequestLog:
    """Records every request through a ``FaultProxy`` and decides which may get faults.

    Installed as the proxy's filter (which sees every request, without its body): it
    logs the request, then returns whether ``faultable`` allows a fault for it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[ProxyRequest] = []
        self.faultable: Callable[[ProxyRequest], bool] = lambda request: True

    def __call__(self, request: ProxyRequest) -> bool:
        with self._lock:
            self._requests.append(request)
        return self.faultable(request)

    @property
    def requests(self) -> list[ProxyRequest]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[FaultProxy]:
    """A fault proxy in front of moto. A stall lasts until the client gives up."""
    with FaultProxy(moto.endpoint_url, stall_seconds=30.0) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def request_log(proxy: FaultProxy) -> RequestLog:
    """The requests that went through ``proxy`` (also its fault filter)."""
    log = RequestLog()
    proxy.set_filter(log)
    return log


# --------------------------------------------------------------------------------------
# The SageMaker SDK
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def root_logger_kept() -> Iterator[None]:
    """Put the root logger's level and handlers back on exit.

    Importing the SDK's experiments module runs ``logging.basicConfig(level=INFO)`` (once per
    process); without this, the rest of the session is flooded with botocore INFO lines.
    """
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        root.setLevel(level)
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)


@pytest.fixture
def sagemaker_sdk() -> Iterator[types.SimpleNamespace]:
    """The SDK's ``Run``, ``load_run``, ``Session``, ``ExperimentAnalytics``, imported quietly.

    sagemaker-core's (the v3 paths). ``tests/test_sagemaker_v2.py`` overrides this fixture
    with SDK v2's classes; ``sdk_session`` builds its ``Session`` from whichever is in force.
    """
    with root_logger_kept():
        from sagemaker.core.analytics import ExperimentAnalytics
        from sagemaker.core.experiments.run import Run, load_run
        from sagemaker.core.helper.session_helper import Session

        yield types.SimpleNamespace(
            ExperimentAnalytics=ExperimentAnalytics, Run=Run, load_run=load_run, Session=Session
        )


@pytest.fixture
def sdk_session(moto_endpoint_env: str, bucket: str, sagemaker_sdk: types.SimpleNamespace) -> Iterator[Any]:
    """A SageMaker SDK ``Session`` on moto, with ``bucket`` as its default bucket.

    ``AWS_ENDPOINT_URL`` is set (the SDK's S3 clients ignore a custom sagemaker client) and
    the default bucket is explicit (deriving one calls STS on a hard-coded endpoint).
    """
    session = sagemaker_sdk.Session(
        boto_session=boto3.session.Session(region_name=REGION),
        default_bucket=bucket,
        sagemaker_config=SAGEMAKER_CONFIG,
    )
    try:
        yield session
    finally:
        for client in (
            session.sagemaker_client,
            session.sagemaker_runtime_client,
            session.sagemaker_featurestore_runtime_client,
            session.sagemaker_metrics_client,
            session.s3_client,
            session.s3_resource.meta.client,
        ):
            if client is not None:
                client.close()


@dataclasses.dataclass
class SeedNotebook:
    """What the seed notebook's cells left: each scenario's answer and handler by run name,
    ``ExperimentAnalytics(...).dataframe()``'s rows by run name and its shape."""

    answers: dict[str, str]
    handlers: dict[str, SageMakerCallbackHandler]
    rows: dict[str, dict[str, Any]]
    shape: tuple[int, int]


def run_seed_notebook(sdk: types.SimpleNamespace, session: Any) -> SeedNotebook:
    """The seed notebook's cells as its users write them, with the SDK classes given.

    ``sdk`` is the ``sagemaker_sdk`` fixture's (sagemaker-core's, or v2's in
    ``test_sagemaker_v2.py``). Each scenario (``asynctrack demo``'s, on fake LLMs) runs in its
    ``with Run(...)`` cell with a ``SageMakerCallbackHandler(run)`` and ``flush_tracker()``; the
    handlers are closed before the last cell, ``ExperimentAnalytics(...).dataframe()``.
    """
    from asynctrack import SageMakerCallbackHandler
    from asynctrack._demo._scenarios import EXPERIMENT_NAME, SCENARIOS

    Run = sdk.Run
    answers: dict[str, str] = {}
    handlers: dict[str, SageMakerCallbackHandler] = {}
    with contextlib.ExitStack() as cleanup:
        for RUN_NAME, scenario in SCENARIOS.items():
            with Run(experiment_name=EXPERIMENT_NAME, run_name=RUN_NAME, sagemaker_session=session) as run:
                # Create SageMaker Callback
                sagemaker_callback = SageMakerCallbackHandler(run)
                cleanup.callback(sagemaker_callback.close, timeout=30)
                # Build the cell's LLM / chains / agent with the callback and run it
                answers[RUN_NAME] = scenario([sagemaker_callback])
                # Reset the callback
                sagemaker_callback.flush_tracker()
            handlers[RUN_NAME] = sagemaker_callback

    # Load
    logs = sdk.ExperimentAnalytics(experiment_name=EXPERIMENT_NAME, sagemaker_session=session)
    # Convert as pandas dataframe
    df = logs.dataframe(force_refresh=True)

    rows = {
        row["TrialComponentName"].removeprefix(f"{EXPERIMENT_NAME}-"): row for row in df.to_dict("records")
    }
    return SeedNotebook(answers=answers, handlers=handlers, rows=rows, shape=df.shape)


@pytest.fixture
def sagemaker_client(moto: MotoServer) -> Iterator[BaseClient]:
    """A boto3 SageMaker client on moto, to look at what was written."""
    client = boto3.session.Session(region_name=REGION).client(
        "sagemaker",
        endpoint_url=moto.endpoint_url,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=10),
    )
    try:
        yield client
    finally:
        client.close()


if __name__ == "__main__":
    # The child process of BridgedMotoServer.
    from _infra.aws import main

    patch_moto_sagemaker_not_found()
    main()
