"""Tests for the local AWS test doubles in ``_infra.aws``.

Everything talks to a moto server on 127.0.0.1, directly or through the fault proxy.
Every wait is bounded: client connect/read timeouts, the server's start timeout, and
``_wait_for`` deadlines; nothing sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from _infra.aws import (
    FAULT_KINDS,
    FaultKind,
    FaultProxy,
    MotoServer,
    ProxyRequest,
)
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ReadTimeoutError,
    ResponseStreamingError,
)

pytestmark = pytest.mark.aws

BUCKET = "asynctrack-test"
REGION = "us-east-1"
# Read timeout for clients meant to hit a "stall" fault: long enough that a loaded CI
# machine still answers ordinary requests in time, short enough to keep tests quick.
STALL_READ_TIMEOUT = 2.0

# A fake SigV4 header: moto routes a request to a service by its credential scope, and
# does not check signatures.
_FAKE_S3_AUTH = (
    "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"
)

# The SageMaker SDK reads its defaults from files unless given a config; this one only
# opts out of telemetry, which would otherwise call a public AWS endpoint.
_SAGEMAKER_CONFIG = {
    "SchemaVersion": "1.0",
    "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
}


# --------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    """One moto child process per module; tests isolate state with ``reset()``."""
    with MotoServer() as server:
        yield server


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Use dummy credentials, a fixed region, and nothing else from the environment."""
    for name in list(os.environ):
        upper = name.upper()
        if upper.startswith("AWS_") or upper in (
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "NO_PROXY",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    # Point the shared config files at nothing, so a developer's ~/.aws cannot add a
    # profile, an endpoint or a retry mode.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-creds"))


@pytest.fixture
def moto(moto_server: MotoServer, aws_env: None) -> MotoServer:
    """Return the shared moto server, emptied."""
    moto_server.reset()
    return moto_server


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[FaultProxy]:
    """Yield a fault proxy in front of moto; stalls last until the proxy stops."""
    with FaultProxy(moto.endpoint_url, stall_seconds=60.0) as fault_proxy:
        yield fault_proxy


@contextlib.contextmanager
def s3_client(endpoint_url: str, *, attempts: int = 1, read_timeout: float = 10.0) -> Iterator[BaseClient]:
    """Yield a sync S3 client with an exact number of attempts and bounded timeouts."""
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        config=Config(
            retries={"mode": "standard", "total_max_attempts": attempts},
            connect_timeout=5,
            read_timeout=read_timeout,
        ),
    )
    try:
        yield client
    finally:
        client.close()


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.01)


def _read(client: BaseClient, key: str) -> bytes:
    body: bytes = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return body


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# --------------------------------------------------------------------------------------
# MotoServer
# --------------------------------------------------------------------------------------


def test_moto_server_serves_s3_and_resets(moto: MotoServer) -> None:
    assert moto.endpoint_url == f"http://127.0.0.1:{moto.port}"
    with s3_client(moto.endpoint_url) as s3:
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"v")
        assert _read(s3, "k") == b"v"
        moto.reset()
        assert s3.list_buckets()["Buckets"] == []


def test_moto_server_stop_ends_the_child(aws_env: None) -> None:
    server = MotoServer().start()
    port = server.port
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = server.endpoint_url
    # The child is reaped by stop(), so its listening socket is gone.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_moto_server_start_is_bounded() -> None:
    server = MotoServer(start_timeout=0.0)
    with pytest.raises(TimeoutError, match="did not report its port"):
        server.start()
    # The failed start cleaned up after itself and the object is reusable.
    with pytest.raises(RuntimeError):
        _ = server.port


# --------------------------------------------------------------------------------------
# FaultProxy: pass-through
# --------------------------------------------------------------------------------------


def test_proxy_forwards_and_keeps_connections_alive(proxy: FaultProxy) -> None:
    with s3_client(proxy.endpoint_url) as s3:
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"x" * 100_000)  # Expect: 100-continue
        assert _read(s3, "k") == b"x" * 100_000
        assert s3.head_object(Bucket=BUCKET, Key="k")["ContentLength"] == 100_000
        assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]] == ["k"]
    stats = proxy.stats
    assert stats.requests == stats.forwarded == 5
    assert stats.total_faults == 0
    # moto's werkzeug server closes every connection; the proxy still keeps the
    # client's connection open, as AWS does.
    assert stats.connections == 1


def test_proxy_forwards_chunked_request_bodies(proxy: FaultProxy) -> None:
    with s3_client(proxy.endpoint_url) as s3:
        s3.create_bucket(Bucket=BUCKET)
        conn = http.client.HTTPConnection("127.0.0.1", _port(proxy.endpoint_url), timeout=10)
        try:
            conn.request(
                "PUT",
                f"/{BUCKET}/chunked",
                body=iter([b"hello ", b"chunked ", b"world"]),
                headers={"Authorization": _FAKE_S3_AUTH},
                encode_chunked=True,
            )
            response = conn.getresponse()
            response.read()
            assert response.status == 200
        finally:
            conn.close()
        assert _read(s3, "chunked") == b"hello chunked world"


def test_proxy_answers_502_when_the_upstream_is_down(aws_env: None) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        dead_port = placeholder.getsockname()[1]
    with FaultProxy(f"http://127.0.0.1:{dead_port}") as fault_proxy:
        conn = http.client.HTTPConnection("127.0.0.1", _port(fault_proxy.endpoint_url), timeout=10)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
    assert response.status == 502


# --------------------------------------------------------------------------------------
# FaultProxy: each fault kind with the sync botocore client
# --------------------------------------------------------------------------------------

_EXPECTED_ERROR: dict[str, type[Exception]] = {
    "500": ClientError,
    "503": ClientError,
    "reset": ConnectionClosedError,
    "stall": ReadTimeoutError,
    "truncate": ResponseStreamingError,
}
_EXPECTED_CODE = {"500": "InternalError", "503": "SlowDown"}


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_fault_is_seen_by_a_client_without_retries(proxy: FaultProxy, kind: FaultKind) -> None:
    timeout = STALL_READ_TIMEOUT if kind == "stall" else 10.0
    with s3_client(proxy.endpoint_url, attempts=1, read_timeout=timeout) as s3:
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"0123456789" * 10)
        proxy.reset_stats()
        proxy.schedule([kind])

        with pytest.raises(_EXPECTED_ERROR[kind]) as caught:
            _read(s3, "k")

        if kind in _EXPECTED_CODE:
            assert isinstance(caught.value, ClientError)
            assert caught.value.response["Error"]["Code"] == _EXPECTED_CODE[kind]
        stats = proxy.stats
        assert stats.requests == 1
        assert stats.faults[kind] == 1
        assert stats.total_faults == 1
        assert proxy.pending == 0
        # The next request goes through (on a new connection if the fault ended one).
        assert _read(s3, "k") == b"0123456789" * 10


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_fault_is_retried_by_a_client_with_retries(proxy: FaultProxy, kind: FaultKind) -> None:
    timeout = STALL_READ_TIMEOUT if kind == "stall" else 10.0
    with s3_client(proxy.endpoint_url, attempts=2, read_timeout=timeout) as s3:
        s3.create_bucket(Bucket=BUCKET)
        proxy.reset_stats()
        proxy.schedule([kind])

        s3.put_object(Bucket=BUCKET, Key="k", Body=b"retried")

        stats = proxy.stats
        assert stats.requests == 2
        assert stats.faults[kind] == 1
        assert _read(s3, "k") == b"retried"


def test_truncated_put_took_effect_upstream(proxy: FaultProxy) -> None:
    """A truncated response hides the outcome of a request that did succeed."""
    with s3_client(proxy.endpoint_url, attempts=1) as s3:
        s3.create_bucket(Bucket=BUCKET)
        proxy.schedule(["truncate"])
        with pytest.raises(ConnectionClosedError):
            s3.put_object(Bucket=BUCKET, Key="k", Body=b"written anyway")
        assert _read(s3, "k") == b"written anyway"
    assert proxy.stats.forwarded == 3


def test_error_faults_keep_the_connection_alive(proxy: FaultProxy) -> None:
    with s3_client(proxy.endpoint_url, attempts=3) as s3:
        s3.create_bucket(Bucket=BUCKET)
        proxy.schedule(["500", "503"])
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"v")
    stats = proxy.stats
    assert (stats.faults["500"], stats.faults["503"], stats.requests) == (1, 1, 4)
    assert stats.connections == 1


# --------------------------------------------------------------------------------------
# FaultProxy: schedule, probability, filter, stop
# --------------------------------------------------------------------------------------


def test_schedule_entries_apply_in_order_and_none_forwards(proxy: FaultProxy) -> None:
    with s3_client(proxy.endpoint_url, attempts=1) as s3:
        s3.create_bucket(Bucket=BUCKET)
        proxy.schedule([None, "500"])
        s3.put_object(Bucket=BUCKET, Key="a", Body=b"a")
        with pytest.raises(ClientError):
            s3.put_object(Bucket=BUCKET, Key="b", Body=b"b")
        s3.put_object(Bucket=BUCKET, Key="c", Body=b"c")
    assert proxy.stats.faults["500"] == 1


def test_unknown_fault_kinds_and_probabilities_are_rejected(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        proxy.schedule(["500", "teapot"])  # type: ignore[list-item]
    assert proxy.pending == 0
    with pytest.raises(ValueError, match="probability"):
        proxy.set_probability(1.5)
    with pytest.raises(ValueError, match="kinds"):
        proxy.set_probability(0.5, kinds=[])


def _statuses(fault_proxy: FaultProxy, count: int) -> list[int]:
    """Send ``count`` requests on one keep-alive connection; return the statuses."""
    conn = http.client.HTTPConnection("127.0.0.1", _port(fault_proxy.endpoint_url), timeout=10)
    statuses = []
    try:
        for _ in range(count):
            conn.request("GET", "/", headers={"Authorization": _FAKE_S3_AUTH})
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        conn.close()
    return statuses


def test_random_faults_are_reproducible_with_a_seed(moto: MotoServer) -> None:
    runs = []
    for _ in range(2):
        with FaultProxy(moto.endpoint_url, probability=0.5, kinds=["500", "503"], seed=7) as fault_proxy:
            runs.append(_statuses(fault_proxy, 30))
            stats = fault_proxy.stats
            assert stats.faults["500"] + stats.faults["503"] == sum(status != 200 for status in runs[-1])
    assert runs[0] == runs[1]
    assert {200, 500, 503} <= set(runs[0])


def test_probability_can_change_while_running(proxy: FaultProxy) -> None:
    proxy.set_probability(1.0, kinds=["503"])
    assert _statuses(proxy, 3) == [503, 503, 503]
    proxy.set_probability(0.0)
    assert _statuses(proxy, 2) == [200, 200]
    proxy.set_probability(1.0)
    proxy.clear_faults()
    assert _statuses(proxy, 1) == [200]


def test_filter_limits_faults_to_matching_requests(proxy: FaultProxy) -> None:
    seen: list[ProxyRequest] = []

    def only_puts(request: ProxyRequest) -> bool:
        seen.append(request)
        return request.method == "PUT" and request.target.endswith("/target")

    with s3_client(proxy.endpoint_url, attempts=1) as s3:
        s3.create_bucket(Bucket=BUCKET)
        proxy.set_filter(only_puts)
        proxy.schedule(["500"])
        s3.put_object(Bucket=BUCKET, Key="other", Body=b"o")
        assert _read(s3, "other") == b"o"
        assert proxy.pending == 1  # filtered requests do not consume the schedule
        with pytest.raises(ClientError):
            s3.put_object(Bucket=BUCKET, Key="target", Body=b"t")
    assert [r.method for r in seen] == ["PUT", "GET", "PUT"]
    assert seen[0].headers["content-length"] == "1"


def test_stall_does_not_block_other_connections_and_ends_on_stop(
    moto: MotoServer,
) -> None:
    stalled = threading.Event()
    outcome: list[BaseException | None] = []

    def stall_only_slow_key(request: ProxyRequest) -> bool:
        if request.target.endswith("/slow"):
            stalled.set()
            return True
        return False

    fault_proxy = FaultProxy(moto.endpoint_url, stall_seconds=3600.0).start()
    try:
        with s3_client(fault_proxy.endpoint_url) as s3:
            s3.create_bucket(Bucket=BUCKET)
        fault_proxy.set_filter(stall_only_slow_key)
        fault_proxy.schedule(["stall"])

        def stalled_put() -> None:
            with s3_client(fault_proxy.endpoint_url, read_timeout=60.0) as slow:
                try:
                    slow.put_object(Bucket=BUCKET, Key="slow", Body=b"s")
                except (BotoCoreError, ClientError) as exc:
                    outcome.append(exc)
                else:
                    outcome.append(None)

        thread = threading.Thread(target=stalled_put)
        thread.start()
        assert stalled.wait(10), "the stalled request never reached the proxy"
        _wait_for(lambda: fault_proxy.stats.faults["stall"] == 1)

        # Another connection is served while the first one stalls.
        with s3_client(fault_proxy.endpoint_url) as s3:
            s3.put_object(Bucket=BUCKET, Key="fast", Body=b"f")
            assert _read(s3, "fast") == b"f"
        assert thread.is_alive()
    finally:
        # stop() must not wait for the stall (an hour): bounded by a join far shorter than
        # that, not by a wall-clock figure this machine may or may not meet.
        stopper = threading.Thread(target=fault_proxy.stop)
        stopper.start()
        stopper.join(60)
    assert not stopper.is_alive(), "stop() waited for the stalled request"
    thread.join(60)
    assert not thread.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], ConnectionClosedError)


# --------------------------------------------------------------------------------------
# FaultProxy with aiobotocore
# --------------------------------------------------------------------------------------


def test_aiobotocore_works_through_the_proxy(proxy: FaultProxy) -> None:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    async def scenario() -> bytes:
        session = get_session()
        async with session.create_client(
            "s3",
            endpoint_url=proxy.endpoint_url,
            region_name=REGION,
            config=AioConfig(
                retries={"mode": "standard", "total_max_attempts": 3},
                connect_timeout=5,
                read_timeout=STALL_READ_TIMEOUT,
            ),
        ) as s3:
            await s3.create_bucket(Bucket=BUCKET)
            # One schedule per call: aiohttp itself silently re-sends a request whose
            # reused connection was reset, which would shift a longer schedule.
            proxy.schedule(["503", "stall"])
            await s3.put_object(Bucket=BUCKET, Key="k", Body=b"async")
            proxy.schedule(["500"])
            await s3.put_object(Bucket=BUCKET, Key="k2", Body=b"async2")
            proxy.schedule(["reset"])
            response = await s3.get_object(Bucket=BUCKET, Key="k")
            async with response["Body"] as body:
                data: bytes = await body.read()
            return data

    assert asyncio.run(scenario()) == b"async"
    stats = proxy.stats
    assert stats.total_faults == 4
    assert all(stats.faults[kind] == 1 for kind in ("500", "503", "reset", "stall"))


# --------------------------------------------------------------------------------------
# The moto Search bridge, through the SageMaker SDK
# --------------------------------------------------------------------------------------


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    """Undo the SDK's import-time ``logging.basicConfig(level=INFO)``."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)


def test_experiment_analytics_finds_runs_of_an_experiment(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch, restore_root_logger: None
) -> None:
    # The SDK's S3 clients ignore a custom sagemaker_client: only the global endpoint
    # setting reaches every client it creates.
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint_url)
    from sagemaker.core.analytics import ExperimentAnalytics
    from sagemaker.core.experiments.run import Run
    from sagemaker.core.helper.session_helper import Session

    boto_session = boto3.session.Session(region_name=REGION)
    boto_session.client("s3").create_bucket(Bucket=BUCKET)
    # An explicit default bucket: deriving one calls STS on a hard-coded endpoint.
    session = Session(
        boto_session=boto_session,
        default_bucket=BUCKET,
        sagemaker_config=_SAGEMAKER_CONFIG,
    )
    try:
        for index, run_name in enumerate(["run-a", "run-b"]):
            with Run(experiment_name="exp-bridge", run_name=run_name, sagemaker_session=session) as run:
                assert run.experiment_config == {
                    "ExperimentName": "exp-bridge",
                    "TrialName": "Default-Run-Group-exp-bridge",
                    "RunName": f"exp-bridge-{run_name}",
                }
                run.log_parameters({"temperature": 0.5 + index, "model": f"m{index}"})
                run.log_artifact("events", f"s3://{BUCKET}/{run_name}.jsonl", "text/plain")
        # A run of another experiment must not show up.
        with Run(experiment_name="exp-other", run_name="run-c", sagemaker_session=session) as run:
            run.log_parameter("temperature", 9)

        frame = ExperimentAnalytics(experiment_name="exp-bridge", sagemaker_session=session).dataframe()
    finally:
        for client in (
            session.sagemaker_client,
            session.sagemaker_runtime_client,
            session.sagemaker_featurestore_runtime_client,
            session.sagemaker_metrics_client,
            session.s3_client,
            session.s3_resource.meta.client,
        ):
            client.close()

    rows = sorted(frame.to_dict(orient="records"), key=lambda row: row["DisplayName"])
    assert [row["TrialComponentName"] for row in rows] == [
        "exp-bridge-run-a",
        "exp-bridge-run-b",
    ]
    assert [row["temperature"] for row in rows] == [0.5, 1.5]
    assert [row["model"] for row in rows] == ["m0", "m1"]
    assert rows[0]["events - Value"] == f"s3://{BUCKET}/run-a.jsonl"
    assert rows[0]["events - MediaType"] == "text/plain"
    assert rows[0]["Trials"] == ["Default-Run-Group-exp-bridge"]
    assert rows[0]["Experiments"] == ["exp-bridge"]
