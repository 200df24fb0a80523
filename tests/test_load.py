"""Reading back (``_load``): ``read_events``, ``load`` and ``read_parameters``."""

from __future__ import annotations

import gzip
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from langchain_core.runnables import RunnableLambda

import asynctrack
from asynctrack import AsyncTracker, TrackerConfig
from asynctrack._read._load import COLUMNS


def _record(destination: Path, experiment: str, run: str, n: int, **config: Any) -> AsyncTracker:
    """Write ``n`` invokes (2 events each) for one experiment/run and close."""
    with AsyncTracker(
        destination, experiment_name=experiment, run_name=run, config=TrackerConfig(**config)
    ) as tracker:
        chain = RunnableLambda(lambda value: value)
        for i in range(n):
            chain.invoke(f"{experiment}/{run}/{i}", config={"callbacks": [tracker]})
    return tracker


@pytest.fixture
def populated(tmp_destination: Path) -> Path:
    _record(tmp_destination, "exp a", "run/1", 2)
    _record(tmp_destination, "exp a", "run-2", 3, gzip=True)
    _record(tmp_destination, "exp-b", "run/1", 1)
    return tmp_destination


def test_load_returns_the_documented_columns_in_order(populated: Path) -> None:
    frame = asynctrack.load(populated)
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 12
    assert isinstance(frame["ts"].dtype, pd.DatetimeTZDtype)
    assert str(frame["ts"].dt.tz) == "UTC"
    assert set(frame["kind"]) == {"chain_start", "chain_end"}
    ends = frame[frame["kind"] == "chain_end"]
    assert ends["duration"].notna().all()
    assert (ends["duration"] >= 0).all()
    starts = frame[frame["kind"] == "chain_start"]
    assert starts["duration"].isna().all()
    assert all(isinstance(d, dict) for d in frame["data"])


def test_filtering_by_experiment_and_run(populated: Path) -> None:
    def inputs(frame: pd.DataFrame) -> set[str]:
        return {d["inputs"] for k, d in zip(frame["kind"], frame["data"], strict=True) if k == "chain_start"}

    assert inputs(asynctrack.load(populated, experiment_name="exp a")) == {
        "exp a/run/1/0",
        "exp a/run/1/1",
        "exp a/run-2/0",
        "exp a/run-2/1",
        "exp a/run-2/2",
    }
    assert inputs(asynctrack.load(populated, run_name="run/1")) == {
        "exp a/run/1/0",
        "exp a/run/1/1",
        "exp-b/run/1/0",
    }
    assert inputs(asynctrack.load(populated, experiment_name="exp a", run_name="run-2")) == {
        "exp a/run-2/0",
        "exp a/run-2/1",
        "exp a/run-2/2",
    }


def test_load_says_what_was_not_found(populated: Path) -> None:
    # An empty frame for a typo hid the mistake (issue 10): now it is an error
    # that names what is missing and what is there instead.
    with pytest.raises(
        FileNotFoundError, match=r"no experiment 'nope' under .* \(experiments there: exp-b, exp_a-"
    ):
        asynctrack.load(populated, experiment_name="nope")
    with pytest.raises(
        FileNotFoundError, match=r"no run 'run-3' in experiment 'exp a' \(runs there: run-2, run_1-"
    ):
        asynctrack.load(populated, experiment_name="exp a", run_name="run-3")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        asynctrack.load(populated / "typo")


def test_gzip_files_are_read(populated: Path) -> None:
    gz = list(populated.rglob("*.jsonl.gz"))
    assert gz
    assert all(gzip.decompress(p.read_bytes()) for p in gz)
    events = asynctrack.read_events(populated, experiment_name="exp a", run_name="run-2")
    assert [e["seq"] for e in events] == list(range(6))


def test_read_events_orders_each_tracker_by_seq_and_skips_temporary_files(populated: Path) -> None:
    partition = next((populated / "experiment=exp-b").rglob("date=*"))
    (partition / ".half-written.jsonl.1234.tmp").write_bytes(b'{"broken":')
    events = asynctrack.read_events(populated)
    assert len(events) == 12
    by_tracker: dict[str, list[int]] = {}
    for event in events:
        by_tracker.setdefault(event["tracker"], []).append(event["seq"])
    assert len(by_tracker) == 3
    for seqs in by_tracker.values():
        assert seqs == list(range(len(seqs)))


def test_read_parameters_sums_counts_across_writers(tmp_destination: Path) -> None:
    for _ in range(2):
        with AsyncTracker(tmp_destination, experiment_name="e", run_name="shared") as tracker:
            tracker.on_text("hello", run_id=uuid.uuid4())
    parameters = asynctrack.read_parameters(tmp_destination, "e", "shared")
    assert parameters["events_text"] == 2
    assert parameters["events_total"] == 2
    assert len(list(tmp_destination.rglob("params/*.json"))) == 2


def test_a_name_with_a_lone_surrogate_is_found_by_the_name_given(
    tmp_destination: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tracker writes U+FFFD for a lone surrogate (``os.fsdecode`` of a non-UTF-8
    name, a command-line argument); every reader is given the name as the user has it."""
    from asynctrack._cli import main

    experiment, run = "exp \udcff", "run \udcfe"
    _record(tmp_destination, experiment, run, 2)
    events = asynctrack.read_events(tmp_destination, experiment, run)
    assert len(events) == 4
    assert {(e["experiment"], e["run"]) for e in events} == {("exp \ufffd", "run \ufffd")}
    assert len(asynctrack.load(tmp_destination, experiment, run)) == 4
    assert asynctrack.scan(tmp_destination, experiment, run).collect().height == 4
    assert asynctrack.read_parameters(tmp_destination, experiment, run)["events_chain_start"] == 2
    assert main(["runs", str(tmp_destination), "--experiment", experiment, "--json"]) == 0
    assert main(["show", str(tmp_destination), run, "--experiment", experiment]) == 0
    report = tmp_destination / "report.html"
    assert main(["report", str(tmp_destination), "--experiment", experiment, "-o", str(report)]) == 0
    assert report.stat().st_size > 0
    assert "run \ufffd" in capsys.readouterr().out


def _runs_counts_5_and_warns_once(
    destination: Path, said: re.Pattern[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``asynctrack runs --json``, with Polars and with the core alone: one run of 5 events,
    and one warning line, as ``said``."""
    from asynctrack._cli import main

    for polars in (True, False):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("asynctrack._cli._runs.polars_installed", lambda polars=polars: polars)
            assert main(["runs", str(destination), "--json"]) == 0
            out, err = capsys.readouterr()
            assert [row["events"] for row in json.loads(out)] == [5]
            (line,) = err.splitlines()
            assert said.match(line.removeprefix("asynctrack runs: "))


def _every_reader_keeps_5_and_warns_once(destination: Path, said: re.Pattern[str]) -> None:
    """``read_events``, ``load`` and ``scan`` read 5 events of run ``e``/``r`` and warn once, as ``said``."""
    for read in (
        lambda: asynctrack.read_events(destination, "e", "r"),
        lambda: asynctrack.load(destination, "e", "r"),
        lambda: asynctrack.scan(destination).collect(),
    ):
        with pytest.warns(UserWarning) as caught:
            assert len(read()) == 5
        assert [said.match(str(warning.message)) is not None for warning in caught] == [True]


def test_names_that_differ_only_in_case_are_read_apart_in_a_shared_directory(
    tmp_destination: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a case-insensitive file system (macOS, Windows, some SMB/EFS mounts) ``Run`` and
    ``run`` are one directory; every reader keeps the events (and run parameters) whose own
    fields are the names asked. Simulated here: the files moved into one directory, then
    the other spellings linked to it, as such a file system resolves them."""
    from asynctrack._cli import main

    names = [("e", "run"), ("e", "Run"), ("E", "run")]
    for experiment, run in names:
        _record(tmp_destination, experiment, run, {"run": 1, "Run": 2}[run] + (experiment == "E") * 2)
    shared = tmp_destination / "experiment=e" / "run=run"
    for path in [
        *tmp_destination.glob("experiment=E/run=run/*/*"),
        *tmp_destination.glob("experiment=e/run=Run/*/*"),
    ]:
        (shared / path.parent.name).mkdir(exist_ok=True)
        path.rename(shared / path.parent.name / path.name)
    for path in (tmp_destination / "experiment=E/run=run", tmp_destination / "experiment=e/run=Run"):
        for folder in path.iterdir():
            folder.rmdir()
        path.rmdir()
    (tmp_destination / "experiment=E").rmdir()
    assert len(list(shared.glob("date=*/*.jsonl"))) == 3 and len(list(shared.glob("params/*.json"))) == 3

    def inputs(events: list[dict[str, Any]]) -> list[str]:
        return sorted(e["data"]["inputs"] for e in events if e["kind"] == "chain_start")

    assert inputs(asynctrack.read_events(tmp_destination, "e", "run")) == ["e/run/0"]
    # A placeholder for an event that could not be translated has its names.
    config = TrackerConfig(redact=_fails_on_bad)
    with AsyncTracker(tmp_destination, experiment_name="e", run_name="run", config=config) as tracker:
        tracker.on_text("bad", run_id=uuid.uuid4())
    kinds = ["chain_end", "chain_start", "unknown"]
    assert sorted(e["kind"] for e in asynctrack.read_events(tmp_destination, "e", "run")) == kinds
    assert asynctrack.scan(tmp_destination, "e", "run").collect()["kind"].sort().to_list() == [
        "chain_end",
        "chain_start",
        "unknown",
    ]
    for path in shared.glob("date=*/*.jsonl"):
        if b"translate_failed" in path.read_bytes():
            path.unlink()
    assert inputs(asynctrack.read_events(tmp_destination, run_name="run")) == [
        "E/run/0",
        "E/run/1",
        "E/run/2",
        "e/run/0",
    ]
    assert inputs(asynctrack.read_events(tmp_destination, "e")) == ["e/Run/0", "e/Run/1", "e/run/0"]
    assert len(asynctrack.read_events(tmp_destination)) == 2 * (1 + 2 + 3)
    assert list(asynctrack.load(tmp_destination, "e", "run")["run"]) == ["run", "run"]
    assert asynctrack.scan(tmp_destination, "e", "run").collect()["run"].to_list() == ["run", "run"]
    assert asynctrack.scan(tmp_destination, "e").collect().height == 6
    assert asynctrack.read_parameters(tmp_destination, "e", "run")["events_chain_start"] == 1

    assert main(["show", str(tmp_destination), "run", "--experiment", "e"]) == 0
    assert capsys.readouterr().out.startswith("run  experiment e, ")
    for polars in (True, False):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("asynctrack._cli._runs.polars_installed", lambda polars=polars: polars)
            assert main(["runs", str(tmp_destination), "--experiment", "e", "--json"]) == 0
            rows = json.loads(capsys.readouterr().out)
            assert sorted((row["run"], row["events"]) for row in rows) == [("Run", 4), ("run", 2)]
    report = tmp_destination.parent / "report.html"
    assert main(["report", str(tmp_destination), "--experiment", "e", "--run", "run", "-o", str(report)]) == 0
    assert capsys.readouterr().err.startswith(f"wrote {report}: 1 run(s), 2 events")

    # The other spellings resolve to the shared directory, as the file system would.
    (tmp_destination / "experiment=e" / "run=Run").symlink_to(shared)
    (tmp_destination / "experiment=e" / "run=RUN").symlink_to(shared)
    (tmp_destination / "experiment=E").symlink_to(tmp_destination / "experiment=e")
    assert inputs(asynctrack.read_events(tmp_destination, "e", "Run")) == ["e/Run/0", "e/Run/1"]
    assert inputs(asynctrack.read_events(tmp_destination, "E", "run")) == ["E/run/0", "E/run/1", "E/run/2"]
    assert asynctrack.scan(tmp_destination, "E", "run").collect().height == 6
    assert asynctrack.read_parameters(tmp_destination, "E", "run")["events_chain_start"] == 3
    assert main(["show", str(tmp_destination), "Run", "--experiment", "e"]) == 0
    assert capsys.readouterr().out.startswith("Run  experiment e, ")
    assert main(["show", str(tmp_destination), "RUN", "--experiment", "e"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"asynctrack show: no events of experiment 'e' and run 'RUN' under {tmp_destination}"
    )


def test_an_unreadable_line_is_skipped_counted_and_its_file_named(
    tmp_destination: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file cut short, copied or synced in part (the tracker's own writes are whole):
    every reader skips its bad lines, and says once per file how many, never a traceback."""
    from asynctrack._cli import main

    _record(tmp_destination, "e", "r", 3)
    (path,) = tmp_destination.rglob("*.jsonl")
    lines = path.read_bytes().splitlines(keepends=True)
    damaged = [lines[0], b"garbage\n", b"[1, 2]\n", b'{"x": "\x01"}\n', *lines[1:-1], lines[-1][:-20]]
    path.write_bytes(b"".join(damaged))
    said = re.compile(rf"skipped 4 unreadable line\(s\) in \S*{re.escape(path.name)}\b")

    _every_reader_keeps_5_and_warns_once(tmp_destination, said)

    _runs_counts_5_and_warns_once(tmp_destination, said, capsys)
    assert main(["show", str(tmp_destination), "r"]) == 0
    out, err = capsys.readouterr()
    assert "5 events" in out.splitlines()[1] and said.match(err.removeprefix("asynctrack show: "))
    report = tmp_destination.parent / "report.html"
    assert main(["report", str(tmp_destination), "-o", str(report)]) == 0
    (warned, wrote) = capsys.readouterr().err.splitlines()
    assert said.match(warned.removeprefix("asynctrack report: ")) and wrote.startswith(
        f"wrote {report}: 1 run(s), 5 events"
    )


def test_a_line_without_the_envelope_or_of_other_types_is_not_an_event_for_any_reader(
    tmp_destination: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An object with a ``data`` is not an event yet: its envelope fields must be there,
    of their types. The core readers and the Polars ones skip the same lines, say so once
    per file, and read an event whose fields are in another order (not the tracker's) alike."""
    from asynctrack._cli import main

    _record(tmp_destination, "e", "r", 2)
    (path,) = tmp_destination.rglob("*.jsonl")
    first, *rest = path.read_bytes().splitlines(keepends=True)
    event = json.loads(first)

    def line(**fields: Any) -> bytes:
        return json.dumps({**event, **fields}).encode() + b"\n"

    odd = [
        b'{"data": {}}\n',
        line(ts="2026-12-07"),
        line(ts=1e300),
        line(seq="1"),
        line(seq=1.5),
        line(seq=True),
        line(seq=2**63),
        line(kind=5),
        line(experiment=None),
        line(run=["r"]),
        line(run_id=[1]),
        line(name={"a": 1}),
        line(duration="1s"),
        line(tags=[["a"]]),
        line(data=None),
    ]
    reordered = json.dumps(dict(reversed(event.items())) | {"seq": 9, "data": {"x": 1}}).encode() + b"\n"
    path.write_bytes(b"".join([first, *odd, reordered, *rest]))
    said = re.compile(rf"skipped {len(odd)} unreadable line\(s\) in \S*{re.escape(path.name)}\b")

    _every_reader_keeps_5_and_warns_once(tmp_destination, said)
    with pytest.warns(UserWarning):
        (kept,) = [e for e in asynctrack.read_events(tmp_destination, "e", "r") if e["seq"] == 9]
        frame = asynctrack.load(tmp_destination, "e", "r")
    row = frame[frame["seq"] == 9].iloc[0]
    assert (row["run_id"], row["data"], row["tags"]) == (kept["run_id"], {"x": 1}, kept["tags"])
    _runs_counts_5_and_warns_once(tmp_destination, said, capsys)
    assert main(["show", str(tmp_destination), "r"]) == 0
    assert "5 events" in capsys.readouterr().out.splitlines()[1]
    report = tmp_destination.parent / "report.html"
    assert main(["report", str(tmp_destination), "-o", str(report)]) == 0
    assert capsys.readouterr().err.splitlines()[1].startswith(f"wrote {report}: 1 run(s), 5 events")


def test_a_placeholder_for_an_event_that_could_not_be_translated_is_a_row(tmp_destination: Path) -> None:
    """The worker writes ``{"kind": "unknown", "data": {"$asynctrack": "translate_failed", ...}}``
    for an event it could not translate (here, a redact hook raised): ``load()`` reads it
    as ``read_events()`` does, a row marking the failure (no metadata, no tags)."""
    config = TrackerConfig(redact=_fails_on_bad)
    with AsyncTracker(tmp_destination, experiment_name="e", run_name="r", config=config) as tracker:
        tracker.on_text("kept", run_id=uuid.uuid4())
        tracker.on_text("bad", run_id=uuid.uuid4())
    events = asynctrack.read_events(tmp_destination, "e", "r")
    frame = asynctrack.load(tmp_destination, "e", "r")
    assert list(frame["kind"]) == [e["kind"] for e in events] == ["text", "unknown"]
    assert list(frame["data"]) == [e["data"] for e in events]
    assert frame["data"][1]["$asynctrack"] == "translate_failed"
    assert (frame["metadata"][1], frame["tags"][1], frame["metadata"][0], frame["tags"][0]) == (
        None,
        None,
        {},
        [],
    )


def _fails_on_bad(event: dict[str, Any]) -> dict[str, Any]:
    """A ``redact`` hook with a bug: it raises on the start of a run given "bad", and on
    the text "bad"."""
    data = event["data"]
    if event["kind"] != "chain_end" and "bad" in (data.get("inputs"), data.get("text")):
        raise ValueError("hook bug")
    return event


def test_a_placeholder_for_an_event_that_could_not_be_translated_is_an_event_of_its_run(
    tmp_destination: Path, capsys: pytest.CaptureFixture[str], worker_mode: str
) -> None:
    """The worker's placeholder line for an event it could not translate carries the
    envelope (seq, time, names, run ids; kind "unknown", the event's kind in ``data``),
    so that every reader reads it as a row of its run, and agrees; it is counted."""
    from asynctrack._cli import main

    with AsyncTracker(
        tmp_destination, experiment_name="e", run_name="r", config=TrackerConfig(redact=_fails_on_bad)
    ) as tracker:
        chain = RunnableLambda(lambda value: value)
        chain.invoke("good", config={"callbacks": [tracker]})
        chain.invoke("bad", config={"callbacks": [tracker]})
        tracker.flush_blocking(timeout=30)
        stats = tracker.statistics()
    assert (stats.written, stats.encode_errors, stats.worker_mode) == (4, 1, worker_mode)
    events = asynctrack.read_events(tmp_destination, "e", "r")
    assert [e["kind"] for e in events] == ["chain_start", "chain_end", "unknown", "chain_end"]
    failed, end = events[2:]
    assert failed["data"]["$asynctrack"] == "translate_failed" and failed["data"]["kind"] == "chain_start"
    assert (failed["experiment"], failed["run"], failed["tracker"]) == ("e", "r", end["tracker"])
    assert (failed["run_id"], failed["parent_run_id"]) == (end["run_id"], None)
    assert failed["seq"] == end["seq"] - 1 and isinstance(failed["ts"], float)

    frame = asynctrack.load(tmp_destination, "e", "r")
    assert list(frame["kind"]) == [e["kind"] for e in events]
    assert list(frame["data"]) == [e["data"] for e in events]
    assert asynctrack.scan(tmp_destination).collect()["seq"].sort().to_list() == [e["seq"] for e in events]
    for polars in (True, False):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("asynctrack._cli._runs.polars_installed", lambda polars=polars: polars)
            assert main(["runs", str(tmp_destination), "--json"]) == 0
            assert [(row["run"], row["events"]) for row in json.loads(capsys.readouterr().out)] == [("r", 4)]
            assert main(["show", str(tmp_destination), "r"]) == 0
            assert "4 events" in capsys.readouterr().out.splitlines()[1]
    report = tmp_destination.parent / "report.html"
    assert main(["report", str(tmp_destination), "-o", str(report)]) == 0
    assert capsys.readouterr().err.startswith(f"wrote {report}: 1 run(s), 4 events")


def test_an_empty_name_is_refused_by_every_reader(
    populated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the tracker refuses it: ``None`` is every experiment or run, ``""`` is a mistake."""
    from asynctrack._cli import main

    for names in (("", None), (None, ""), ("exp a", "")):
        for read in (asynctrack.read_events, asynctrack.load, asynctrack.scan):
            with pytest.raises(ValueError, match=r"(experiment|run)_name must be a non-empty string or None"):
                read(populated, *names)
    with pytest.raises(ValueError, match="run_name must be a non-empty string"):
        asynctrack.read_parameters(populated, "exp a", "")
    assert main(["show", str(populated), ""]) == 1
    assert capsys.readouterr().err.startswith("asynctrack show: run_name must be a non-empty string")
    for polars in (True, False):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("asynctrack._cli._runs.polars_installed", lambda polars=polars: polars)
            assert main(["runs", str(populated), "--experiment", ""]) == 1
            assert capsys.readouterr().err.startswith("asynctrack runs: experiment_name must be a non-empty")
