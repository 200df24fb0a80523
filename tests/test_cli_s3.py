"""The ``asynctrack`` command on S3 (moto): demo, runs, show, report, replay without options."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from _infra.aws import MotoServer
from botocore.client import BaseClient

import asynctrack
from asynctrack import AsyncTracker, FlushError, TrackerConfig
from asynctrack._cli import main
from asynctrack._demo._scenarios import EXPERIMENT_NAME

pytest_plugins = ("_infra.aws_fixtures",)


@pytest.fixture
def demo_on_s3(
    moto: MotoServer, bucket: str, capsys: pytest.CaptureFixture[str]
) -> tuple[str, list[str], str]:
    destination = f"s3://{bucket}/demo"
    assert main(["demo", "--destination", destination, "--endpoint-url", moto.endpoint_url]) == 0
    out = capsys.readouterr().out
    return destination, re.findall(r"^== (\S+):", out, re.MULTILINE), out


def test_demo_then_runs_show_and_report_on_s3(
    moto: MotoServer,
    demo_on_s3: tuple[str, list[str], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    destination, runs, out = demo_on_s3
    hint = (
        f"asynctrack.load({destination!r}, experiment_name={EXPERIMENT_NAME!r}, "
        f"endpoint_url={moto.endpoint_url!r})"
    )
    assert hint in out
    assert f"asynctrack runs {destination} --endpoint-url {moto.endpoint_url}\n" in out
    # The printed hint works as printed.
    frame = eval(hint, {"asynctrack": asynctrack})  # the exact line a user would paste
    assert sorted(set(frame["run"])) == sorted(runs)

    endpoint = ["--endpoint-url", moto.endpoint_url]
    assert main(["runs", destination, "--json", *endpoint]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(row["run"] for row in rows) == sorted(runs)
    assert sum(row["events"] for row in rows) == 36

    assert main(["show", destination, runs[2], "--experiment", EXPERIMENT_NAME, *endpoint]) == 0
    assert "└─ chain AgentExecutor" in capsys.readouterr().out

    output = tmp_path / "report.html"
    assert (
        main(["report", destination, "--run", runs[0], "--run", runs[1], "-o", str(output), *endpoint]) == 0
    )
    html = output.read_text()
    assert runs[0] in html and runs[1] in html and runs[2] not in html

    assert main(["runs", destination, "--experiment", "nope", *endpoint]) == 1
    assert "no experiment 'nope'" in capsys.readouterr().err


def test_demo_with_a_bad_bucket_is_one_line(moto: MotoServer, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--destination", "s3://no-such-bucket/x", "--endpoint-url", moto.endpoint_url])
    assert code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        captured.err.strip()
        == "asynctrack demo: s3://no-such-bucket/x: bucket not usable: 404 (HTTP 404): Not Found"
    )


def test_replay_needs_no_endpoint_the_spool_remembers_it(
    moto: MotoServer, bucket: str, s3: BaseClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = tmp_path / "spool"
    destination = f"s3://{bucket}/spooled"
    # The bucket disappears while the tracker runs, so its batches are spooled at close.
    tracker = AsyncTracker(
        destination,
        experiment_name="e",
        run_name="r",
        config=TrackerConfig(spool_dir=str(spool)),
        endpoint_url=moto.endpoint_url,
        write_deadline=0.5,
    )
    try:
        s3.delete_bucket(Bucket=bucket)
        for n in range(3):
            tracker.on_text(f"text {n}", run_id=uuid.uuid4())
    finally:
        with pytest.raises(FlushError, match="spool"):
            tracker.close(timeout=5)
    options = json.loads(next(spool.glob("*/options.json")).read_text())
    assert options["endpoint_url"] == moto.endpoint_url

    s3.create_bucket(Bucket=bucket)
    capsys.readouterr()
    assert main(["replay", str(spool)]) == 0  # no --endpoint-url
    assert f"{destination}: delivered 1 batch(es), 3 event(s); 0 still spooled" in capsys.readouterr().out
    assert len(asynctrack.read_events(destination, "e", "r", endpoint_url=moto.endpoint_url)) == 3


def test_reading_s3_without_the_extra_names_it() -> None:
    code = (
        "import sys; sys.modules['aiobotocore'] = None\n"
        "import asynctrack\n"
        "for read in (asynctrack.read_events, asynctrack.load, asynctrack.scan):\n"
        "    try:\n"
        "        read('s3://bucket/prefix')\n"
        "    except ImportError as exc:\n"
        "        print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    lines = result.stdout.strip().splitlines()
    assert (
        lines
        == ["reading s3://bucket/prefix needs the s3 extra (aiobotocore): pip install 'asynctrack[s3]'"] * 3
    )


def test_a_profile_gives_the_credentials_to_the_polars_reader_too(
    moto: MotoServer,
    bucket: str,
    s3: BaseClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    destination = f"s3://{bucket}/p"
    with AsyncTracker(
        destination, experiment_name="e", run_name="r", endpoint_url=moto.endpoint_url
    ) as tracker:
        tracker.on_text("hello", run_id=uuid.uuid4())
    # Credentials only in a named profile: none in the environment, none by default.
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[moto-profile]\naws_access_key_id = from-profile\naws_secret_access_key = secret\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    endpoint = ["--endpoint-url", moto.endpoint_url]
    assert main(["runs", destination, "--json", "--profile", "moto-profile", *endpoint]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["run"], row["events"]) == ("r", 1)
    frame = asynctrack.scan(destination, profile="moto-profile", endpoint_url=moto.endpoint_url).collect()
    assert frame["kind"].to_list() == ["text"]
    # Without the profile there are no credentials at all, and the read says so.
    assert main(["runs", destination, "--json", *endpoint]) == 1
    assert "credentials" in capsys.readouterr().err.lower()
