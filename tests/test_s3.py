"""S3 destination (``asynctrack._sinks._s3``) against a moto server on 127.0.0.1.

Faults are injected at the HTTP level by ``FaultProxy`` between aiobotocore and moto.
Every wait is bounded (``flush_blocking(timeout=...)``, client timeouts); every tracker is
closed. What moto does not enforce is said where it matters:

* ``ExpectedBucketOwner``: moto 5.2.5 ignores it (a wrong owner is accepted), so the test
  checks that the header is sent on every request, through the proxy's request log.
* SSE-KMS: moto records the algorithm and key id and returns them from HeadObject, but it
  does not check that the key exists (a bogus key id is accepted), so "KMS key not found"
  cannot be tested here.
* Credentials: moto accepts any by default; the bad-credentials test runs its own moto
  with ``INITIAL_NO_AUTH_ACTION_COUNT`` so that it checks them.
"""

from __future__ import annotations

import calendar
import contextlib
import gzip
import os
import re
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import boto3
import orjson
import pytest
from _infra.aws import FaultKind, FaultProxy, MotoServer
from _infra.aws_fixtures import (
    ACCOUNT_ID,
    RequestLog,
    batch_events,
    list_keys,
    read_object,
)
from botocore.client import BaseClient
from langchain_core.prompts import PromptTemplate

import asynctrack
from asynctrack import AsyncTracker, FlushError, PermanentSinkError, S3Sink, TrackerConfig
from asynctrack._cli import main as cli_main
from asynctrack._demo._fakes import FakeOpenAI
from asynctrack._demo._scenarios import EXPERIMENT_NAME, SCENARIOS
from asynctrack._read._load import COLUMNS

pytest_plugins = ("_infra.aws_fixtures",)

pytestmark = [pytest.mark.aws, pytest.mark.usefixtures("aws_env")]

EXPERIMENT = "exp-s3"
RUN = "run-1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def record(tracker: AsyncTracker, count: int) -> None:
    """Record ``count`` text events through the public callback API."""
    for number in range(count):
        tracker.on_text(f"event-{number}", run_id=uuid.uuid4())


@contextlib.contextmanager
def closing(tracker: AsyncTracker) -> Iterator[AsyncTracker]:
    """Close the tracker at the end even if the test fails (close is idempotent)."""
    try:
        yield tracker
    finally:
        tracker.close(timeout=30)


def run_prefix(prefix: str, experiment: str = EXPERIMENT, run: str = RUN) -> str:
    return f"{prefix}/experiment={experiment}/run={run}"


def split_keys(keys: list[str]) -> tuple[list[str], list[str]]:
    """(batch keys, params keys)."""
    params = [key for key in keys if "/params/" in key]
    return [key for key in keys if key not in params], params


def all_events(s3: BaseClient, bucket: str, keys: list[str]) -> list[dict[str, Any]]:
    return [event for key in keys for event in batch_events(s3, bucket, key)]


def assert_exactly_once(events: list[dict[str, Any]], count: int) -> None:
    """Every event ``0 .. count-1`` is there once, with the text it was recorded with."""
    seqs = sorted(event["seq"] for event in events)
    assert seqs == list(range(count))
    assert all(event["data"] == {"text": f"event-{event['seq']}"} for event in events)


def s3_tracker(
    bucket: str, prefix: str, endpoint_url: str, config: TrackerConfig | None = None, **options: Any
) -> tuple[AsyncTracker, S3Sink]:
    sink = S3Sink(f"s3://{bucket}/{prefix}", endpoint_url=endpoint_url, **options)
    tracker = AsyncTracker(sink, experiment_name=EXPERIMENT, run_name=RUN, config=config)
    return tracker, sink


# --------------------------------------------------------------------------------------
# Layout and content
# --------------------------------------------------------------------------------------


def test_batches_land_under_hive_keys_with_every_event_once(
    moto: MotoServer, s3: BaseClient, bucket: str
) -> None:
    prefix = "team/tracking"
    before = time.time()
    tracker = AsyncTracker(
        f"s3://{bucket}/{prefix}/",
        experiment_name=EXPERIMENT,
        run_name=RUN,
        config=TrackerConfig(max_batch_events=10),
        endpoint_url=moto.endpoint_url,
    )
    with closing(tracker):
        assert tracker.destination == f"s3://{bucket}/{prefix}"
        assert tracker.events_uri == f"s3://{bucket}/{run_prefix(prefix)}/"
        record(tracker, 25)
        tracker.flush_blocking(timeout=30)
        after = time.time()

        batches, params = split_keys(list_keys(s3, bucket))
        assert len(params) == 1
        writer = params[0].rsplit("/", 1)[1].removesuffix(".json")
        assert params[0] == f"{run_prefix(prefix)}/params/{writer}.json"
        assert re.fullmatch(rf"[A-Za-z0-9._-]+-{os.getpid()}-[0-9a-f]{{12}}", writer)

        pattern = re.compile(
            rf"{re.escape(run_prefix(prefix))}/date=(\d{{4}}-\d{{2}}-\d{{2}})/"
            rf"(\d{{6}})-{re.escape(writer)}-(\d{{8}})\.jsonl"
        )
        assert len(batches) == 3  # 10 + 10 + 5
        numbers = []
        for key in batches:
            match = pattern.fullmatch(key)
            assert match, key
            date, hhmmss, number = match.groups()
            # The key is dated by the batch's first event (UTC), between start and flush.
            stamp = calendar.timegm(time.strptime(date + hhmmss, "%Y-%m-%d%H%M%S"))
            assert int(before) <= stamp <= after
            numbers.append(int(number))
            head = s3.head_object(Bucket=bucket, Key=key)
            assert head["ContentType"] == "application/x-ndjson"
            events = batch_events(s3, bucket, key)
            seqs = [event["seq"] for event in events]
            assert seqs == sorted(seqs)  # one batch holds consecutive events, in order
            assert {(e["experiment"], e["run"], e["tracker"], e["kind"]) for e in events} == {
                (EXPERIMENT, RUN, writer, "text")
            }
        assert sorted(numbers) == [0, 1, 2]
        assert_exactly_once(all_events(s3, bucket, batches), 25)

        head = s3.head_object(Bucket=bucket, Key=params[0])
        assert head["ContentType"] == "application/json"
        document = orjson.loads(read_object(s3, bucket, params[0]))
        assert document == {
            "experiment": EXPERIMENT,
            "run": RUN,
            "writer": writer,
            "events_uri": tracker.events_uri,
            "parameters": {"events_text": 25, "events_total": 25},
        }
    stats = tracker.statistics()
    assert (stats.written, stats.batches, stats.dropped, stats.lost) == (25, 3, 0, 0)


def test_gzip_batches_decompress_to_the_events(moto: MotoServer, s3: BaseClient, bucket: str) -> None:
    tracker, _ = s3_tracker(
        bucket, "gz", moto.endpoint_url, config=TrackerConfig(gzip=True, max_batch_events=50)
    )
    with closing(tracker):
        record(tracker, 120)
        tracker.flush_blocking(timeout=30)
    batches, params = split_keys(list_keys(s3, bucket))
    assert len(batches) == 3
    for key in batches:
        assert key.endswith(".jsonl.gz")
        assert s3.head_object(Bucket=bucket, Key=key)["ContentType"] == "application/gzip"
        assert gzip.decompress(read_object(s3, bucket, key)).endswith(b"\n")
    assert_exactly_once(all_events(s3, bucket, batches), 120)
    # The parameters document stays plain JSON.
    assert [s3.head_object(Bucket=bucket, Key=key)["ContentType"] for key in params] == ["application/json"]


@pytest.mark.parametrize("algorithm", ["AES256", "aws:kms"])
def test_server_side_encryption_on_every_object(
    moto: MotoServer, s3: BaseClient, bucket: str, algorithm: str
) -> None:
    options: dict[str, Any] = {"server_side_encryption": algorithm}
    key_forms: set[str] = set()
    if algorithm == "aws:kms":
        kms_client = boto3.session.Session().client("kms", endpoint_url=moto.endpoint_url)
        try:
            metadata = kms_client.create_key(Description="asynctrack test key")["KeyMetadata"]
        finally:
            kms_client.close()
        options["sse_kms_key_id"] = metadata["KeyId"]
        # AWS answers with the key's ARN, moto with the id it was given: either is the key.
        key_forms = {metadata["KeyId"], metadata["Arn"]}
    tracker, _ = s3_tracker(
        bucket, "sse", moto.endpoint_url, config=TrackerConfig(max_batch_events=5), **options
    )
    with closing(tracker):
        record(tracker, 12)
        tracker.flush_blocking(timeout=30)
    keys = list_keys(s3, bucket)
    batches, params = split_keys(keys)
    assert (len(batches), len(params)) == (3, 1)
    for key in keys:
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == algorithm, key
        if algorithm == "aws:kms":
            assert head["SSEKMSKeyId"] in key_forms, key
        else:
            assert "SSEKMSKeyId" not in head
    assert_exactly_once(all_events(s3, bucket, batches), 12)


def test_expected_bucket_owner_is_sent_on_every_request(
    s3: BaseClient, bucket: str, proxy: FaultProxy, request_log: RequestLog
) -> None:
    """moto 5.2.5 does not enforce ExpectedBucketOwner (a wrong owner is accepted too),
    so what can be checked is that the header goes out on every call, the bucket check
    included."""
    tracker, _ = s3_tracker(
        bucket,
        "owned",
        proxy.endpoint_url,
        config=TrackerConfig(max_batch_events=4),
        expected_bucket_owner=ACCOUNT_ID,
    )
    with closing(tracker):
        record(tracker, 10)
        tracker.flush_blocking(timeout=30)
    requests = request_log.requests
    methods = sorted(request.method for request in requests)
    assert methods == ["HEAD"] + ["PUT"] * 4  # HeadBucket, 3 batches, the params document
    for request in requests:
        assert request.headers.get("x-amz-expected-bucket-owner") == ACCOUNT_ID, request
    batches, _ = split_keys(list_keys(s3, bucket))
    assert_exactly_once(all_events(s3, bucket, batches), 10)


def test_concurrent_writes_of_10k_events_make_100_objects(
    moto: MotoServer, s3: BaseClient, bucket: str
) -> None:
    tracker, sink = s3_tracker(
        bucket,
        "many",
        moto.endpoint_url,
        config=TrackerConfig(max_concurrent_writes=8, max_batch_events=100),
    )
    with closing(tracker):
        record(tracker, 10_000)
        tracker.flush_blocking(timeout=60)
        stats = tracker.statistics()
    assert (stats.written, stats.batches, stats.dropped, stats.write_errors) == (10_000, 100, 0, 0)
    batches, params = split_keys(list_keys(s3, bucket))
    assert (len(batches), len(params)) == (100, 1)
    assert sorted(int(key[-14:-6]) for key in batches) == list(range(100))
    per_object = [batch_events(s3, bucket, key) for key in batches]
    assert {len(events) for events in per_object} == {100}
    assert_exactly_once([event for events in per_object for event in events], 10_000)
    assert sink.retries == 0
    assert sink.attempts == 101


# --------------------------------------------------------------------------------------
# Retries
# --------------------------------------------------------------------------------------


def _is_put(request: Any) -> bool:
    return bool(request.method == "PUT")


# aiohttp (under aiobotocore) re-sends an idempotent request (PUT) once, at once and on a
# new connection, when the connection drops (reset, or a response cut short). That retry
# happens below the sink and is not counted in ``S3Sink.attempts``; only a second drop in
# a row reaches the sink's own retry loop.
_ABSORBED_BY_AIOHTTP: dict[str, int] = {"reset": 1, "truncate": 1}


@pytest.mark.parametrize("kind", ["500", "503", "reset", "truncate", "stall"])
def test_transient_faults_are_retried_under_the_same_key(
    s3: BaseClient, bucket: str, proxy: FaultProxy, request_log: RequestLog, kind: FaultKind
) -> None:
    faults = 2
    request_log.faultable = _is_put
    # Two faults in a row on the first PUT: one write at a time makes the order exact.
    proxy.schedule([kind] * faults)
    tracker, sink = s3_tracker(
        bucket,
        "faulty",
        proxy.endpoint_url,
        config=TrackerConfig(max_batch_events=10, max_concurrent_writes=1),
        read_timeout=1.0,  # a stalled response is given up on after 1 s
        write_deadline=30.0,
    )
    with closing(tracker):
        record(tracker, 30)
        tracker.flush_blocking(timeout=60)
        stats = tracker.statistics()
    assert proxy.pending == 0
    assert proxy.stats.faults[kind] == faults
    keys = list_keys(s3, bucket)
    batches, params = split_keys(keys)
    assert (len(batches), len(params)) == (3, 1)
    assert_exactly_once(all_events(s3, bucket, batches), 30)
    assert (stats.written, stats.batches, stats.write_errors, stats.parameter_errors) == (30, 3, 0, 0)
    # The sink retried, and every PUT (its attempts and aiohttp's re-sends) went to a key
    # that exists now: a retried batch keeps its key, so no duplicate object.
    assert sink.retries == faults - _ABSORBED_BY_AIOHTTP.get(kind, 0)
    assert sink.attempts == len(keys) + sink.retries > len(keys)
    puts = [request for request in request_log.requests if request.method == "PUT"]
    assert len(puts) == len(keys) + faults
    targets = {urllib.parse.unquote(request.target.split("?")[0]) for request in puts}
    assert targets == {f"/{bucket}/{key}" for key in keys}


def test_a_batch_that_runs_out_of_write_deadline_is_kept_and_written_by_a_later_flush(
    s3: BaseClient, bucket: str, proxy: FaultProxy, request_log: RequestLog
) -> None:
    request_log.faultable = _is_put
    proxy.set_probability(1.0, ["503"])
    # Long enough for a healthy PUT through the proxy on a loaded machine (0.5 s was not, with
    # four test workers on 2 cores at load average 15); the 503s run it out all the same.
    tracker, sink = s3_tracker(bucket, "later", proxy.endpoint_url, write_deadline=2.0)
    with closing(tracker):
        record(tracker, 20)
        with pytest.raises(FlushError, match="SlowDown") as caught:
            tracker.flush_blocking(timeout=30)
        assert caught.value.pending == 20
        assert caught.value.failed_batches == 1
        assert list_keys(s3, bucket) == []

        proxy.clear_faults()
        # A retry loop that began before the faults stopped may still run out of its
        # deadline; once the flush that waits for it has settled, every later attempt
        # meets a healthy endpoint, so the next flush must succeed.
        with contextlib.suppress(FlushError):
            tracker.flush_blocking(timeout=30)
        tracker.flush_blocking(timeout=30)
        stats = tracker.statistics()
    assert (stats.written, stats.failed, stats.lost) == (20, 0, 0)
    assert sink.retries > 0
    batches, params = split_keys(list_keys(s3, bucket))
    assert (len(batches), len(params)) == (1, 1)
    assert_exactly_once(all_events(s3, bucket, batches), 20)


# --------------------------------------------------------------------------------------
# Permanent errors
# --------------------------------------------------------------------------------------


def test_no_such_bucket_fails_flush_but_never_the_chain(moto: MotoServer) -> None:
    tracker, sink = s3_tracker("no-such-bucket-here", "x", moto.endpoint_url)
    try:
        chain = PromptTemplate.from_template("tell me a joke about {topic}") | FakeOpenAI(
            responses=["a joke"]
        )
        # The chain runs to the end: the tracker never raises into it.
        assert chain.invoke({"topic": "fish"}, config={"callbacks": [tracker]}) == "a joke"
        with pytest.raises(FlushError, match="NoSuchBucket") as caught:
            tracker.flush_blocking(timeout=30)
        recorded = tracker.statistics().recorded
        assert caught.value.pending == recorded > 0
        assert "no-such-bucket-here" in str(caught.value)
        # Permanent: one request per attempt (batch and params document), no retry inside
        # a write. The engine delivers a failed batch again after 0.5 s (its backoff), so
        # on a loaded machine more attempts may have been made by now: at least the two.
        assert sink.retries == 0
        assert sink.attempts >= 2
    finally:
        with pytest.raises(FlushError, match="NoSuchBucket"):
            tracker.close(timeout=30)
    stats = tracker.statistics()
    assert (stats.written, stats.spooled, stats.lost) == (0, recorded, 0)  # kept on local disk


def test_spooled_batches_are_delivered_under_their_keys_once_the_bucket_exists(
    moto: MotoServer, s3: BaseClient
) -> None:
    bucket = f"created-later-{uuid.uuid4().hex[:12]}"
    first, _ = s3_tracker(bucket, "late", moto.endpoint_url, config=TrackerConfig(max_batch_events=4))
    record(first, 10)
    with pytest.raises(FlushError, match="NoSuchBucket"):
        first.close(timeout=30)
    assert (first.statistics().spooled, first.statistics().lost) == (10, 0)

    s3.create_bucket(Bucket=bucket)
    second, sink = s3_tracker(bucket, "late", moto.endpoint_url)
    with closing(second):
        second.flush_blocking(timeout=30)  # delivers what the first tracker spooled
    batches, params = split_keys(list_keys(s3, bucket))
    events = all_events(s3, bucket, batches)
    assert_exactly_once(events, 10)
    # 4 + 4 + 2 events, under the keys the first tracker gave them.
    (writer,) = {event["tracker"] for event in events}
    assert len(batches) == 3
    assert all(f"-{writer}-" in key for key in batches)
    # The second tracker recorded nothing: only its parameters document is its own.
    assert len(params) == 1
    assert writer not in params[0]
    assert sink.attempts == len(batches) + len(params)


@pytest.mark.anyio
async def test_sink_start_reports_a_missing_bucket_as_permanent(moto: MotoServer) -> None:
    sink = S3Sink("s3://no-such-bucket-here/p", endpoint_url=moto.endpoint_url)
    try:
        with anyio.fail_after(30), pytest.raises(PermanentSinkError, match="no-such-bucket-here"):
            await sink.start()
    finally:
        await sink.aclose()


@pytest.fixture
def moto_checking_credentials(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    """A moto of its own that checks credentials after its first request.

    moto accepts any credentials unless ``INITIAL_NO_AUTH_ACTION_COUNT`` is set (read by
    the server process at start); 1 lets the bucket be created without an IAM user.
    """
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "1")
    with MotoServer() as server:
        yield server


def test_bad_credentials_are_permanent(moto_checking_credentials: MotoServer) -> None:
    endpoint = moto_checking_credentials.endpoint_url
    client = boto3.session.Session().client("s3", endpoint_url=endpoint)
    try:
        client.create_bucket(Bucket="auth-bucket")
    finally:
        client.close()
    tracker, sink = s3_tracker("auth-bucket", "x", endpoint)
    try:
        record(tracker, 3)
        with pytest.raises(FlushError, match="InvalidAccessKeyId"):
            tracker.flush_blocking(timeout=30)
        assert sink.retries == 0
    finally:
        with pytest.raises(FlushError, match="InvalidAccessKeyId"):
            tracker.close(timeout=30)


# --------------------------------------------------------------------------------------
# Reading back, and the CLI
# --------------------------------------------------------------------------------------


def test_load_and_read_events_from_s3(moto: MotoServer, bucket: str) -> None:
    destination = f"s3://{bucket}/data"
    for run, count in (("run-a", 7), ("run-b", 4)):
        tracker = AsyncTracker(
            destination,
            experiment_name=EXPERIMENT,
            run_name=run,
            config=TrackerConfig(max_batch_events=3),
            endpoint_url=moto.endpoint_url,
        )
        with closing(tracker):
            record(tracker, count)
            tracker.flush_blocking(timeout=30)

    frame = asynctrack.load(destination, endpoint_url=moto.endpoint_url)
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 11
    assert sorted(frame.groupby("run").size().items()) == [("run-a", 7), ("run-b", 4)]
    assert str(frame["ts"].dt.tz) == "UTC"

    only_b = asynctrack.load(destination, EXPERIMENT, "run-b", endpoint_url=moto.endpoint_url)
    assert only_b["seq"].tolist() == [0, 1, 2, 3]
    assert [data["text"] for data in only_b["data"]] == [f"event-{n}" for n in range(4)]

    events = asynctrack.read_events(destination, EXPERIMENT, "run-a", endpoint_url=moto.endpoint_url)
    assert_exactly_once(events, 7)
    assert [event["seq"] for event in events] == list(range(7))  # in order
    assert asynctrack.read_parameters(destination, EXPERIMENT, "run-a", endpoint_url=moto.endpoint_url) == {
        "events_text": 7,
        "events_total": 7,
    }


def test_cli_demo_writes_to_s3_and_prints_the_runs(
    moto: MotoServer, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    destination = f"s3://{bucket}/demo"
    code = cli_main(["demo", "--destination", destination, "--endpoint-url", moto.endpoint_url])
    out = capsys.readouterr().out
    assert code == 0
    assert f"written to {destination}" in out
    # Each demo invocation writes new runs: <scenario>-<UTC time>-<random>.
    runs = re.findall(r"^== (\S+):", out, re.MULTILINE)
    assert [run.rsplit("-", 3)[0] for run in runs] == list(SCENARIOS)
    for run in runs:
        events = asynctrack.read_events(destination, EXPERIMENT_NAME, run, endpoint_url=moto.endpoint_url)
        assert events, run
        assert re.search(rf"== {run}: {len(events)} events \({len(events)} written, 0 dropped\)", out)
        assert f"files:          {destination}/experiment={EXPERIMENT_NAME}/run={run}/" in out
    finale = asynctrack.read_events(destination, EXPERIMENT_NAME, runs[2], endpoint_url=moto.endpoint_url)
    assert "agent_finish" in {event["kind"] for event in finale}
