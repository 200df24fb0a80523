"""Secrets, names and encryption (issue: security), against moto on 127.0.0.1.

* Credentials planted wherever LangChain hands them to a callback (model fields and
  invocation parameters, headers dicts, metadata, pydantic ``SecretStr``, key-like text in
  inputs, prompts and errors) must not appear in any object written to S3 (every batch,
  gzip or not, and every parameters document), in SageMaker, or in any log record of any
  logger at DEBUG level (botocore's request dumps included).
* Experiment and run names that try to leave the prefix (``../``, ``/``, absolute paths,
  NUL, unicode, 1000 characters) make keys and files inside the configured prefix.
* SSE-KMS settings are honoured on every object: batches, parameters documents, batches
  delivered from the spool.
* The AWS secret access key never appears in a log record or an object.
"""

from __future__ import annotations

import gzip
import logging
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from _infra.aws import FaultProxy, MotoServer
from _infra.aws_fixtures import batch_events, list_keys, read_object
from botocore.client import BaseClient
from langchain_core.prompts import ChatPromptTemplate
from pydantic import Field, SecretStr
from support import closing, fail_on_finalizer_complaints

import asynctrack
from asynctrack import AsyncTracker, FlushError, SageMakerParameters, TrackerConfig
from asynctrack._cli import main as cli_main
from asynctrack._demo._fakes import FakeChatOpenAI

pytest_plugins = ("_infra.aws_fixtures",)

pytestmark = [pytest.mark.aws, pytest.mark.usefixtures("aws_env")]

# Planted secrets: each is a distinctive string that must never be written or logged.
OPENAI_KEY = "sk-proj-T3stK3yAbCdEfGhIjKlMnOpQrStUv"  # matches the sk- pattern
AWS_KEY_ID = "AKIAZ7Q4R2T8Y6U1I3O5"  # AKIA + 16
PLAIN_KEY = "plain-key-4f1d9a7c2e"  # only its key (api_key, ...) says it is secret
HEADER_KEY = "hdr-key-8b3e5d1f0a"  # under an X-Api-Key header
BEARER_TOKEN = "tok.abcDEF123456.ghiJKL7890"  # after "Bearer "
COOKIE = "sessid-cookie-6e2a9c"  # a Cookie header's value
SECRETSTR_VALUE = "secretstr-value-0b7d3f"  # inside a pydantic SecretStr
META_SECRET = "meta-secret-5c8e1a"  # metadata under a secret-looking key
PASSWORD = "hunter2-password-9d"  # under "password"
AWS_SECRET_ACCESS_KEY = "testing-secret-xyz"
SECRETS = (
    OPENAI_KEY,
    AWS_KEY_ID,
    PLAIN_KEY,
    HEADER_KEY,
    BEARER_TOKEN,
    COOKIE,
    SECRETSTR_VALUE,
    META_SECRET,
    PASSWORD,
    AWS_SECRET_ACCESS_KEY,
)


@pytest.fixture
def secret_aws_key(monkeypatch: pytest.MonkeyPatch, aws_env: None) -> str:
    """The AWS secret access key every client in the test signs with."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET_ACCESS_KEY)
    return AWS_SECRET_ACCESS_KEY


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    yield
    fail_on_finalizer_complaints()


def object_bodies(s3: BaseClient, bucket: str) -> dict[str, bytes]:
    """Every object in the bucket, gzip ones decompressed."""
    out = {}
    for key in list_keys(s3, bucket):
        data = read_object(s3, bucket, key)
        out[key] = gzip.decompress(data) if key.endswith(".gz") else data
    return out


def log_text(records: list[logging.LogRecord]) -> list[str]:
    """Each record as a handler would print it: message, exception and stack included."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    out = []
    for record in records:
        text = formatter.format(record)
        out.append(f"{text} {record.args!r}")
    return out


def assert_no_secret(where: str, text: str | bytes) -> None:
    for secret in SECRETS:
        needle: str | bytes = secret.encode() if isinstance(text, bytes) else secret
        assert needle not in text, f"{secret!r} found in {where}"  # type: ignore[operator]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------------------
# Planted secrets
# --------------------------------------------------------------------------------------


class LeakyChatModel(FakeChatOpenAI):
    """A chat model configured the way real ones are: a SecretStr key, a plain key, extra
    headers; its invocation parameters carry all of them."""

    openai_api_key: SecretStr = SecretStr(SECRETSTR_VALUE)
    api_key: str = PLAIN_KEY
    default_headers: dict[str, str] = Field(
        default_factory=lambda: {
            "Authorization": f"Bearer {BEARER_TOKEN}",
            "X-Api-Key": HEADER_KEY,
            "Cookie": f"session={COOKIE}",
        }
    )

    @property
    def _default_params(self) -> dict[str, Any]:
        return {
            **super()._default_params,
            "api_key": self.api_key,
            "openai_api_key": self.openai_api_key,
            "default_headers": self.default_headers,
            "model_kwargs": {"api_key": PLAIN_KEY, "extra_headers": {"x-api-key": HEADER_KEY}},
        }


def plant_secrets(tracker: AsyncTracker) -> None:
    """A chain run and direct callbacks, with every secret in every place it can be."""
    chain = ChatPromptTemplate.from_messages([("human", "{question}")]) | LeakyChatModel(responses=["fine"])
    answer = chain.invoke(
        {"question": f"my key is {OPENAI_KEY} and my AWS id is {AWS_KEY_ID}"},
        config={
            "callbacks": [tracker],
            "metadata": {"langfuse_secret_key": META_SECRET, "user": "bob"},
            "tags": ["secrets-test"],
        },
    )
    assert answer.content == "fine"
    run_id = uuid.uuid4()
    tracker.on_llm_start(
        {"kwargs": {"openai_api_key": {"lc": 1, "type": "secret", "id": ["K"]}, "api_key": PLAIN_KEY}},
        [f"use {OPENAI_KEY} please"],
        run_id=run_id,
        invocation_params={
            "model_name": "gpt-x",
            "api_key": PLAIN_KEY,
            "password": PASSWORD,
            "headers": {"Authorization": f"Bearer {BEARER_TOKEN}", "x-api-key": HEADER_KEY, "Cookie": COOKIE},
        },
        metadata={"api_token": META_SECRET, "db_password": PASSWORD},
    )
    tracker.on_llm_error(ValueError(f"Incorrect API key provided: {OPENAI_KEY}"), run_id=run_id)
    tracker.on_chain_start(
        {},
        {"creds": SecretStr(SECRETSTR_VALUE), "db": {"password": PASSWORD}, "note": f"AWS {AWS_KEY_ID}"},
        run_id=uuid.uuid4(),
    )
    tracker.on_tool_start(
        {"name": "http"},
        f"GET /v1 with Authorization: Bearer {BEARER_TOKEN}",
        run_id=uuid.uuid4(),
        inputs={"headers": {"X-Api-Key": HEADER_KEY, "Cookie": COOKIE}},
    )
    tracker.on_custom_event(
        "config", {"client_secret": PLAIN_KEY, "nested": [{"apiKey": PLAIN_KEY}]}, run_id=uuid.uuid4()
    )
    tracker.on_text(f"export AWS_ACCESS_KEY_ID={AWS_KEY_ID}", run_id=uuid.uuid4())


@pytest.mark.parametrize("gzipped", [False, True], ids=["jsonl", "jsonl.gz"])
def test_planted_secrets_are_never_written_nor_logged(
    moto: MotoServer,
    s3: BaseClient,
    bucket: str,
    sagemaker_client: BaseClient,
    secret_aws_key: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    gzipped: bool,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, botocore's request dumps included
    tracker = AsyncTracker(
        f"s3://{bucket}/secrets",
        experiment_name="exp-secrets",
        run_name="run-1",
        # A worker thread: botocore then logs in this process, where caplog sees every
        # DEBUG dump (the worker process's botocore logs stay in that process).
        config=TrackerConfig(gzip=gzipped, spool_dir=str(tmp_path / "spool"), worker="thread"),
        endpoint_url=moto.endpoint_url,
        parameter_sinks=[SageMakerParameters(endpoint_url=moto.endpoint_url)],
    )
    with closing(tracker):
        plant_secrets(tracker)
        tracker.flush_blocking(timeout=30)
        stats = tracker.statistics()
    assert stats.written == stats.recorded >= 12

    bodies = object_bodies(s3, bucket)
    assert any("/params/" in key for key in bodies)
    assert sum(key.endswith(".jsonl.gz" if gzipped else ".jsonl") for key in bodies) >= 1
    for key, body in bodies.items():
        assert_no_secret(f"s3://{bucket}/{key}", body)
    everything = b"".join(bodies.values())
    assert everything.count(b"[REDACTED]") >= 10  # the planted values were there, and redacted
    assert b"gpt-x" in everything and b"bob" in everything  # and the rest was kept

    component = sagemaker_client.describe_trial_component(TrialComponentName="exp-secrets-run-1")
    assert_no_secret("the SageMaker trial component", orjson.dumps(component, default=str))
    assert "temperature" in component["Parameters"]

    records = log_text(caplog.records)
    assert any("PutObject" in text for text in records)  # botocore's DEBUG dumps were captured
    for text in records:
        assert_no_secret("a log record", text)


def test_no_credential_in_logs_or_objects_when_requests_fail(
    moto: MotoServer,
    s3: BaseClient,
    bucket: str,
    proxy: FaultProxy,
    secret_aws_key: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Retries, a missing bucket and a refused connection all log errors (and botocore
    logs every request at DEBUG); the secret access key is in none of them."""
    caplog.set_level(logging.DEBUG)
    proxy.schedule(["500", "503", "reset", "truncate"])
    spool = str(tmp_path / "spool")
    faulty = AsyncTracker(
        f"s3://{bucket}/faulty",
        experiment_name="exp",
        run_name="faulty",
        config=TrackerConfig(spool_dir=spool, worker="thread"),  # botocore logs here
        endpoint_url=proxy.endpoint_url,
    )
    with closing(faulty):
        faulty.on_text("hello", run_id=uuid.uuid4())
        faulty.flush_blocking(timeout=30)
    missing = AsyncTracker(
        "s3://no-such-bucket-here/x",
        experiment_name="exp",
        run_name="missing",
        config=TrackerConfig(spool_dir=spool, worker="thread"),  # botocore logs here
        endpoint_url=moto.endpoint_url,
    )
    messages = []
    try:
        missing.on_text("hello", run_id=uuid.uuid4())
        with pytest.raises(FlushError, match="NoSuchBucket") as failed:
            missing.flush_blocking(timeout=30)
        messages.append(str(failed.value))
    finally:
        with pytest.raises(FlushError) as closed:
            missing.close(timeout=30)
        messages.append(str(closed.value))
    down = AsyncTracker(
        f"s3://{bucket}/down",
        experiment_name="exp",
        run_name="down",
        config=TrackerConfig(spool_dir=spool, worker="thread"),  # botocore logs here
        endpoint_url=closed_port_url(),
        connect_timeout=0.5,
        write_deadline=0.5,
    )
    try:
        down.on_text("hello", run_id=uuid.uuid4())
        with pytest.raises(FlushError) as failed:
            down.flush_blocking(timeout=30)
        messages.append(str(failed.value))
    finally:
        with pytest.raises(FlushError) as closed:
            down.close(timeout=30)
        messages.append(str(closed.value))

    assert proxy.stats.total_faults == 4
    records = log_text(caplog.records)
    assert any("NoSuchBucket" in text for text in records)
    assert any("Authorization" in text for text in records)  # botocore logged signed headers
    for text in [*records, *messages]:
        assert AWS_SECRET_ACCESS_KEY not in text, text
    for key, body in object_bodies(s3, bucket).items():
        assert AWS_SECRET_ACCESS_KEY.encode() not in body, key
    for path in Path(spool).rglob("*"):
        if path.is_file():
            assert AWS_SECRET_ACCESS_KEY.encode() not in path.read_bytes(), path


# --------------------------------------------------------------------------------------
# Hostile names
# --------------------------------------------------------------------------------------

HOSTILE_NAMES = [
    ("../../etc", "../run"),
    ("/absolute/exp", "a/b/c"),
    ("..", "."),
    ("exp\\..\\..\\win", "run%2F..%2Fx"),
    ("ünïcødé 実験", "naïve run ☃"),
    ("x" * 1000, "y" * 1000),
    ("nul\x00byte", "new\nline"),
    ("same/name", "same_name"),  # different names that clean to the same text
    ("same_name", "same/name"),
]


def test_hostile_names_make_keys_inside_the_prefix(moto: MotoServer, s3: BaseClient, bucket: str) -> None:
    prefix = "team/tracking"
    destination = f"s3://{bucket}/{prefix}"
    for experiment, run in HOSTILE_NAMES:
        tracker = AsyncTracker(
            destination, experiment_name=experiment, run_name=run, endpoint_url=moto.endpoint_url
        )
        with closing(tracker):
            for i in range(3):
                tracker.on_text(f"{experiment}|{run}|{i}", run_id=uuid.uuid4())
            tracker.flush_blocking(timeout=30)
    keys = list_keys(s3, bucket)
    assert keys
    partitions = set()
    for key in keys:
        assert key.startswith(f"{prefix}/experiment="), key
        segments = key.split("/")
        assert "." not in segments and ".." not in segments and "" not in segments, key
        assert len(key.encode()) <= 1024, key
        assert all(0x20 < ord(c) < 0x7F for c in key), key  # printable ASCII, no space
        partitions.add(tuple(segments[2:4]))  # experiment=..., run=...
    assert len(partitions) == len(HOSTILE_NAMES)  # no two runs share a partition
    for experiment, run in HOSTILE_NAMES:
        events = asynctrack.read_events(destination, experiment, run, endpoint_url=moto.endpoint_url)
        assert [e["data"]["text"] for e in events] == [f"{experiment}|{run}|{i}" for i in range(3)]
        assert {(e["experiment"], e["run"]) for e in events} == {(experiment, run)}


def test_hostile_names_make_files_inside_the_directory(tmp_path: Path) -> None:
    root = tmp_path / "sandbox" / "logs"
    for experiment, run in HOSTILE_NAMES:
        tracker = AsyncTracker(
            root, experiment_name=experiment, run_name=run, config=TrackerConfig(spool_dir=str(tmp_path))
        )
        with closing(tracker):
            tracker.on_text("x", run_id=uuid.uuid4())
            tracker.flush_blocking(timeout=30)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sandbox"]
    assert sorted(p.name for p in (tmp_path / "sandbox").iterdir()) == ["logs"]
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) == 2 * len(HOSTILE_NAMES)  # one batch and one parameters file each
    for path in files:
        assert path.resolve().is_relative_to(root.resolve()), path
        assert path.relative_to(root).parts[0].startswith("experiment="), path
    for experiment, run in HOSTILE_NAMES:
        assert len(asynctrack.read_events(root, experiment, run)) == 1


# --------------------------------------------------------------------------------------
# SSE-KMS
# --------------------------------------------------------------------------------------


@pytest.fixture
def kms_key(moto: MotoServer) -> tuple[str, set[str]]:
    """A KMS key in moto: (its id, the forms HeadObject may name it by: id or ARN)."""
    client = boto3.session.Session().client("kms", endpoint_url=moto.endpoint_url)
    try:
        metadata = client.create_key(Description="asynctrack security test")["KeyMetadata"]
    finally:
        client.close()
    return metadata["KeyId"], {metadata["KeyId"], metadata["Arn"]}


def assert_all_kms(s3: BaseClient, bucket: str, key_forms: set[str]) -> list[str]:
    keys = list_keys(s3, bucket)
    assert keys
    for key in keys:
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head.get("ServerSideEncryption") == "aws:kms", key
        assert head.get("SSEKMSKeyId") in key_forms, key
    return keys


def spool_through_a_down_s3(bucket: str, spool_dir: Path, key_id: str, events: int) -> None:
    """A tracker with SSE-KMS whose S3 is down: its batches end up in the spool."""
    tracker = AsyncTracker(
        f"s3://{bucket}/kms",
        experiment_name="exp-kms",
        run_name="spooled",
        config=TrackerConfig(max_batch_events=5, gzip=True, spool_dir=str(spool_dir)),
        endpoint_url=closed_port_url(),
        connect_timeout=0.5,
        server_side_encryption="aws:kms",
        sse_kms_key_id=key_id,
    )
    for i in range(events):
        tracker.on_text(f"spooled-{i}", run_id=uuid.uuid4())
    with pytest.raises(FlushError, match="spool"):
        tracker.close(timeout=1.0)
    assert tracker.statistics().spooled == events


def test_sse_kms_on_every_object_including_spooled_batches(
    moto: MotoServer, s3: BaseClient, bucket: str, kms_key: tuple[str, set[str]], tmp_path: Path
) -> None:
    key_id, key_forms = kms_key
    spool_dir = tmp_path / "spool"
    spool_through_a_down_s3(bucket, spool_dir, key_id, 12)
    tracker = AsyncTracker(
        f"s3://{bucket}/kms",
        experiment_name="exp-kms",
        run_name="live",
        config=TrackerConfig(max_batch_events=5, gzip=True, spool_dir=str(spool_dir)),
        endpoint_url=moto.endpoint_url,
        server_side_encryption="aws:kms",
        sse_kms_key_id=key_id,
    )
    with closing(tracker):
        for i in range(12):
            tracker.on_text(f"live-{i}", run_id=uuid.uuid4())
        tracker.flush_blocking(timeout=30)  # also delivers the spooled batches
    keys = assert_all_kms(s3, bucket, key_forms)
    batches = [k for k in keys if "/params/" not in k]
    assert sum("run=spooled" in k for k in batches) == 3 and sum("run=live" in k for k in batches) == 3
    assert sum("/params/" in k for k in keys) == 1
    texts = sorted(e["data"]["text"] for k in batches for e in batch_events(s3, bucket, k))
    assert texts == sorted([f"spooled-{i}" for i in range(12)] + [f"live-{i}" for i in range(12)])
    assert list(spool_dir.rglob("*.batch")) == []


def test_replay_keeps_sse_kms_on_spooled_batches(
    moto: MotoServer, s3: BaseClient, bucket: str, kms_key: tuple[str, set[str]], tmp_path: Path
) -> None:
    """Batches of a destination written with SSE-KMS that wait in the spool must not be
    written without it by ``asynctrack replay``."""
    key_id, key_forms = kms_key
    spool_dir = tmp_path / "spool"
    spool_through_a_down_s3(bucket, spool_dir, key_id, 12)
    assert cli_main(["replay", str(spool_dir), "--endpoint-url", moto.endpoint_url]) == 0
    assert list(spool_dir.rglob("*.batch")) == []
    assert_all_kms(s3, bucket, key_forms)
