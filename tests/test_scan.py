"""``asynctrack.scan()`` (``_read/_scan.py``): a lazy Polars frame, pruned by partition."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from _infra.aws import MotoServer
from botocore.client import BaseClient
from langchain_core.runnables import RunnableLambda

import asynctrack
from asynctrack import AsyncTracker, TrackerConfig
from asynctrack._read._scan import find_event_files

pytest_plugins = ("_infra.aws_fixtures",)

EXPERIMENT = "scan-exp"


def _event(experiment: str, run: str, tracker: str, seq: int, ts: float, pad: str) -> dict[str, Any]:
    ending = seq % 2 == 1
    return {
        "seq": seq,
        "ts": ts,
        "kind": "chain_end" if ending else "chain_start",
        "experiment": experiment,
        "run": run,
        "tracker": tracker,
        "run_id": f"00000000-0000-0000-0000-{seq // 2:012d}",
        "parent_run_id": None,
        "name": "RunnableLambda",
        "duration": 0.001 if ending else None,
        "data": {"outputs": pad} if ending else {"inputs": {"q": pad, "n": seq}},
        "tags": ["t"],
        "metadata": {},
    }


def _batch(experiment: str, run: str, tracker: str, first: int, count: int, pad: str) -> bytes:
    return b"".join(
        orjson.dumps(_event(experiment, run, tracker, seq, 1_795_000_000.0 + seq, pad)) + b"\n"
        for seq in range(first, first + count)
    )


def _key(experiment: str, run: str, date: str, number: int, gz: bool = False) -> str:
    return f"experiment={experiment}/run={run}/date={date}/000000-w-{number:08d}.jsonl" + (
        ".gz" if gz else ""
    )


# --------------------------------------------------------------------------------------
# Local
# --------------------------------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> Path:
    """Two runs over two dates, one file gzipped, plus files a scan must ignore."""
    root = tmp_path / "events"
    layout = [
        ("run-a", "2026-11-01", 0, False),
        ("run-a", "2026-11-02", 1, True),
        ("run-b", "2026-11-02", 0, False),
    ]
    for run, date, number, gz in layout:
        path = root / _key(EXPERIMENT, run, date, number, gz)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _batch(EXPERIMENT, run, f"w-{run}", number * 10, 10, "x")
        path.write_bytes(gzip.compress(data) if gz else data)
    (root / f"experiment={EXPERIMENT}/run=run-a/params").mkdir()
    (root / f"experiment={EXPERIMENT}/run=run-a/params/w.json").write_text('{"parameters": {}}')
    (root / f"experiment={EXPERIMENT}/run=run-b/date=2026-11-02/.half.jsonl.1.tmp").write_bytes(b'{"broken')
    return root


def test_scan_is_lazy_and_typed(local: Path) -> None:
    frame = asynctrack.scan(local)
    assert isinstance(frame, pl.LazyFrame)
    schema = frame.collect_schema()
    assert schema["seq"] == pl.Int64
    assert schema["ts"] == pl.Float64
    assert schema["tags"] == pl.List(pl.String)
    assert schema["date"] == pl.Date
    assert schema["data"] == pl.String
    rows = frame.collect()
    assert len(rows) == 30
    assert sorted(set(rows["run"])) == ["run-a", "run-b"]


def test_payloads_stay_valid_json_text(tmp_path: Path) -> None:
    # Backslashes, control characters, U+2028 and quotes: the text of ``data``
    # must parse back to exactly what was written.
    hostile = 'a\\b "q" \n\t\x01 \u2028 </script> \\u0041'
    path = tmp_path / _key("e", "r", "2026-11-01", 0)
    path.parent.mkdir(parents=True)
    event = _event("e", "r", "w", 0, 1.0, hostile)
    path.write_bytes(orjson.dumps(event) + b"\n\n")
    (row,) = asynctrack.scan(tmp_path).collect().to_dicts()
    assert orjson.loads(row["data"]) == event["data"]
    assert orjson.loads(row["metadata"]) == {}


def test_pruning_by_experiment_run_and_date(local: Path) -> None:
    only_a = find_event_files(local, EXPERIMENT, "run-a")
    assert [Path(uri).parent.name for uri in only_a.uris] == ["date=2026-11-01", "date=2026-11-02"]
    assert all("run=run-a" in uri for uri in only_a.uris)
    second_day = find_event_files(local, since="2026-11-02")
    assert len(second_day.uris) == 2
    assert all("date=2026-11-02" in uri for uri in second_day.uris)

    frame = asynctrack.scan(local, EXPERIMENT, "run-a", until="2026-11-01").collect()
    assert frame["seq"].to_list() == list(range(10))
    assert set(frame["date"].cast(pl.String)) == {"2026-11-01"}
    gz_only = asynctrack.scan(local, EXPERIMENT, "run-a", since="2026-11-02").collect()
    assert gz_only["seq"].to_list() == list(range(10, 20))


def test_scan_says_what_was_not_found(local: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such directory"):
        asynctrack.scan(local / "missing")
    with pytest.raises(FileNotFoundError, match=r"no experiment 'scan-exq' .*experiments there: scan-exp"):
        asynctrack.scan(local, "scan-exq")
    with pytest.raises(FileNotFoundError, match=r"no run 'run-c' .*runs there: run-a, run-b"):
        asynctrack.scan(local, EXPERIMENT, "run-c")
    with pytest.raises(FileNotFoundError, match="date range"):
        asynctrack.scan(local, since="2027-01-01")
    with pytest.raises(ValueError, match="S3 options"):
        asynctrack.scan(local, endpoint_url="http://127.0.0.1:1")


def test_a_long_list_of_runs_is_cut_in_the_message(tmp_path: Path) -> None:
    for number in range(25):
        path = tmp_path / _key("e", f"run-{number:02d}", "2026-11-01", 0)
        path.parent.mkdir(parents=True)
        path.write_bytes(_batch("e", f"run-{number:02d}", "w", 0, 1, "x"))
    listed = ", ".join(f"run-{number:02d}" for number in range(20))
    with pytest.raises(FileNotFoundError, match=rf"\(runs there: {listed}, and 5 more\)$"):
        asynctrack.scan(tmp_path, "e", "run-99")


def test_scan_of_a_tracker_run_matches_read_events(tmp_destination: Path) -> None:
    with AsyncTracker(
        tmp_destination, experiment_name="e", run_name="r", config=TrackerConfig(gzip=True)
    ) as tracker:
        for n in range(5):
            tracker.on_text(f"text {n}", run_id=uuid.uuid4())
    events = asynctrack.read_events(tmp_destination, "e", "r")
    rows = asynctrack.scan(tmp_destination, "e", "r").sort("seq").collect().to_dicts()
    assert [row["seq"] for row in rows] == [event["seq"] for event in events]
    assert [orjson.loads(row["data"]) for row in rows] == [event["data"] for event in events]


# --------------------------------------------------------------------------------------
# S3 (moto)
# --------------------------------------------------------------------------------------


def test_scan_on_s3_with_the_tracker_options(moto: MotoServer, bucket: str, s3: BaseClient) -> None:
    destination = f"s3://{bucket}/traces"
    s3.put_object(
        Bucket=bucket,
        Key="traces/" + _key("e", "r1", "2026-11-01", 0),
        Body=_batch("e", "r1", "w", 0, 4, "x"),
    )
    s3.put_object(
        Bucket=bucket,
        Key="traces/" + _key("e", "r2", "2026-11-01", 0, gz=True),
        Body=gzip.compress(_batch("e", "r2", "w", 0, 6, "y")),
    )
    s3.put_object(Bucket=bucket, Key="elsewhere/" + _key("e", "r1", "2026-11-01", 0), Body=b"not json\n")
    frame = asynctrack.scan(destination, endpoint_url=moto.endpoint_url).collect()
    assert sorted(frame.group_by("run").len().rows()) == [("r1", 4), ("r2", 6)]
    only = asynctrack.scan(destination, "e", "r2", endpoint_url=moto.endpoint_url).collect()
    assert only["seq"].sort().to_list() == list(range(6))
    with pytest.raises(FileNotFoundError, match=r"no run 'r3' in experiment 'e' \(runs there: r1, r2\)"):
        asynctrack.scan(destination, "e", "r3", endpoint_url=moto.endpoint_url)
    frame = asynctrack.load(destination, "e", "r1", endpoint_url=moto.endpoint_url)
    assert frame["seq"].tolist() == [0, 1, 2, 3]


_MEASURE = textwrap.dedent(
    """
    import json, sys, time
    import asynctrack

    def status(field):
        with open("/proc/self/status") as file:
            for line in file:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024

    destination, endpoint, experiment, run = sys.argv[1:5]
    # Warm up: imports, Polars' thread pool, one tiny read, so the baseline holds them.
    asynctrack.scan(destination, experiment, "warm-up", endpoint_url=endpoint).collect()
    baseline = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as file:
        file.write("5")  # reset the peak (VmHWM) to the current RSS
    started = time.perf_counter()
    frame = asynctrack.scan(destination, experiment or None, run or None, endpoint_url=endpoint).collect()
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": len(frame), "seconds": seconds, "baseline": baseline, "peak": status("VmHWM")}))
    """
)


def _measure(destination: str, endpoint: str, run: str) -> dict[str, float]:
    """Scan ``run`` (or every run, for ``""``) in a fresh process; its rows, seconds and peak RSS."""
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, destination, endpoint, EXPERIMENT, run],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stderr
    figures: dict[str, float] = json.loads(result.stdout)
    figures["grown"] = figures["peak"] - figures["baseline"]
    return figures


@pytest.mark.aws
def test_a_filtered_scan_of_a_million_events_reads_only_its_run(
    moto: MotoServer, bucket: str, s3: BaseClient
) -> None:
    """10^6 events in 20 runs on moto; reading one run peaks at a fraction of reading all."""
    runs, files_per_run, events_per_file = 20, 5, 10_000
    pad = "p" * 80
    total_bytes = 0
    started = time.perf_counter()
    for run_number in range(runs):
        run = f"run-{run_number:02d}"
        for file_number in range(files_per_run):
            body = _batch(
                EXPERIMENT, run, f"w{run_number}", file_number * events_per_file, events_per_file, pad
            )
            total_bytes += len(body)
            # Uncompressed: gzip here tripled the test's time (gzip is read in the small tests).
            s3.put_object(
                Bucket=bucket, Key=f"big/{_key(EXPERIMENT, run, '2026-11-02', file_number)}", Body=body
            )
    body = _batch(EXPERIMENT, "warm-up", "w", 0, 2, pad)
    s3.put_object(Bucket=bucket, Key=f"big/{_key(EXPERIMENT, 'warm-up', '2026-11-02', 0)}", Body=body)
    written = time.perf_counter() - started
    run_bytes = total_bytes // runs

    one = _measure(f"s3://{bucket}/big", moto.endpoint_url, "run-07")
    events = runs * files_per_run * events_per_file
    print(
        f"\n{events} events, {total_bytes / 2**20:.0f} MiB, written in {written:.1f} s; one run "
        f"({run_bytes / 2**20:.1f} MiB): {one['rows']:.0f} rows in {one['seconds']:.2f} s, peak RSS "
        f"{one['peak'] / 2**20:.0f} MiB (+{one['grown'] / 2**20:.0f} MiB over the warmed-up baseline)"
    )
    assert one["rows"] == files_per_run * events_per_file
    # A generous bound in the run's size (Polars' decoding buffers and reader threads
    # add a fixed part): 166 MiB here, half of all the bytes, which reading every run
    # needs just to hold its lines. Measured on this machine: one run +86-99 MiB in
    # 0.7-3 s; all 20 runs (same script, run="") +512-544 MiB in 7-19 s.
    assert one["grown"] < min(8 * run_bytes + 32 * 2**20, total_bytes / 2), (one["grown"], run_bytes)


# --------------------------------------------------------------------------------------
# The README's DuckDB query
# --------------------------------------------------------------------------------------


def _readme_duckdb_query() -> str:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    match = re.search(r"<!-- duckdb-query -->\s*```sql\n(.*?)```", readme, re.DOTALL)
    assert match, "README.md lost its DuckDB query (after <!-- duckdb-query -->)"
    return match.group(1)


def test_the_readme_duckdb_query_runs_on_local_files(tmp_destination: Path) -> None:
    import duckdb

    chain = RunnableLambda(lambda value: value)
    for run, calls in (("run-1", 3), ("run-2", 2)):
        with AsyncTracker(
            tmp_destination, experiment_name="my-exp", run_name=run, config=TrackerConfig(gzip=run == "run-2")
        ) as tracker:
            for n in range(calls):
                chain.invoke(n, config={"callbacks": [tracker]})
    with AsyncTracker(tmp_destination, experiment_name="other", run_name="run-1") as tracker:
        chain.invoke("not counted", config={"callbacks": [tracker]})

    query = _readme_duckdb_query().replace("s3://my-bucket/traces", tmp_destination.as_posix())
    rows = duckdb.sql(query).fetchall()
    assert [(run, kind, events) for run, kind, events, _ in rows] == [
        ("run-1", "chain_end", 3),
        ("run-2", "chain_end", 2),
    ]
    for run, _, _, seconds in rows:
        expected = sum(
            e["duration"] for e in asynctrack.read_events(tmp_destination, "my-exp", run) if e["duration"]
        )
        assert seconds == pytest.approx(expected)
