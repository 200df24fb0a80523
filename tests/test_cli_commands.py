"""The ``asynctrack`` command on a local directory: demo, runs, show, athena-ddl, replay, help."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.outputs import Generation, LLMResult
from langchain_core.runnables import RunnableLambda

import asynctrack
from asynctrack import AsyncTracker
from asynctrack._cli import main
from asynctrack._cli._athena import create_table
from asynctrack._cli._common import Colour
from asynctrack._cli._show import cut, render
from asynctrack._demo._scenarios import EXPERIMENT_NAME, SCENARIOS
from asynctrack._read._tree import scan_run_summaries, summarize_runs

GOLDEN = Path(__file__).parent / "golden"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The demo's output (run once for the module), and what it printed."""
    root = tmp_path_factory.mktemp("cli") / "logs"
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", out)
        assert main(["demo", "--destination", str(root)]) == 0
    yield root, out.getvalue()


def _run_names(root: Path) -> list[str]:
    return sorted(p.name.removeprefix("run=") for p in (root / f"experiment={EXPERIMENT_NAME}").iterdir())


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"asynctrack {asynctrack.__version__}"
    for argv in (
        ["--help"],
        *([command, "--help"] for command in ("demo", "runs", "show", "report", "replay")),
    ):
        with pytest.raises(SystemExit):
            main(argv)
        text = capsys.readouterr().out
        assert "``" not in text and ":func:" not in text, text  # no raw reST markup
        assert "usage: asynctrack" in text
    main_help = subprocess.run(
        [sys.executable, "-c", "from asynctrack._cli import main; main(['--help'])"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for command in ("demo", "runs", "show", "report", "athena-ddl", "replay"):
        assert re.search(rf"^    {command}\b", main_help, re.MULTILINE), command


def test_demo_writes_new_runs_each_time_and_prints_working_hints(demo_dir: tuple[Path, str]) -> None:
    root, out = demo_dir
    names = _run_names(root)
    assert len(names) == 3
    suffix = names[0].removeprefix("run-scenario-1-")
    assert names == [f"{scenario}-{suffix}" for scenario in SCENARIOS]
    assert f"Read them back with: asynctrack.load({str(root)!r}, experiment_name={EXPERIMENT_NAME!r})" in out
    assert f"asynctrack runs {root}\n" in out
    assert f"asynctrack show {root} {names[2]}\n" in out

    # Re-running adds three new runs and leaves the first three as they were.
    before = {name: len(asynctrack.read_events(root, EXPERIMENT_NAME, name)) for name in names}
    second = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", second)
        assert main(["demo", "--destination", str(root)]) == 0
    assert len(_run_names(root)) == 6
    assert {name: len(asynctrack.read_events(root, EXPERIMENT_NAME, name)) for name in names} == before
    for line in re.findall(r"== (\S+): (\d+) events \((\d+) written", second.getvalue()):
        assert line[0] not in names
        assert line[1] == line[2]  # this run's count is this invocation's


def test_demo_on_an_unwritable_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["demo", "--destination", str(blocker / "logs")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("asynctrack demo: ") and "cannot create directory" in err[0]


def test_runs_table_and_json(demo_dir: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = demo_dir
    assert main(["runs", str(root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["experiment"] for row in rows} == {EXPERIMENT_NAME}
    assert [row["last_event"] for row in rows] == sorted((row["last_event"] for row in rows), reverse=True)
    for row in rows:
        events = asynctrack.read_events(root, EXPERIMENT_NAME, row["run"])
        assert row["events"] == len(events)
        assert row["llm_calls"] == sum(e["kind"] == "llm_start" for e in events)
        parameters = asynctrack.read_parameters(root, EXPERIMENT_NAME, row["run"])
        assert (row["tokens_in"], row["tokens_out"]) == (
            parameters["tokens_prompt"],
            parameters["tokens_completion"],
        )
        assert row["duration"] == pytest.approx(max(e["ts"] for e in events) - min(e["ts"] for e in events))
        assert row["errors"] == 0

    assert main(["runs", str(root), "--experiment", EXPERIMENT_NAME]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["EXPERIMENT", "RUN", "EVENTS", "ERRORS"]
    assert [line.split()[1] for line in table[1:]] == [row["run"] for row in rows]
    assert not ANSI.search("\n".join(table))


def test_runs_without_polars_gives_the_same_rows(
    demo_dir: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = demo_dir
    assert main(["runs", str(root), "--json"]) == 0
    with_polars = capsys.readouterr().out
    monkeypatch.setattr("asynctrack._cli._runs.polars_installed", lambda: False)
    assert main(["runs", str(root), "--json"]) == 0
    assert capsys.readouterr().out == with_polars
    assert main(["runs", str(root / "typo")]) == 1
    assert capsys.readouterr().err.strip() == f"asynctrack runs: no such directory: {root / 'typo'}"


def test_runs_says_what_was_not_found(demo_dir: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = demo_dir
    assert main(["runs", str(root / "typo")]) == 1
    assert capsys.readouterr().err.strip() == f"asynctrack runs: no such directory: {root / 'typo'}"
    assert main(["runs", str(root), "--experiment", "langchain"]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"asynctrack runs: no experiment 'langchain' under {root} (experiments there: {EXPERIMENT_NAME})"
    )


def test_show_the_agent_run_as_a_tree(demo_dir: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = demo_dir
    agent_run = next(name for name in _run_names(root) if name.startswith("run-scenario-3-"))
    assert main(["show", str(root), agent_run, "--width", "40"]) == 0
    out = capsys.readouterr().out
    assert not ANSI.search(out)  # not a terminal: no colour
    lines = out.splitlines()
    assert lines[0].startswith(f"{agent_run}  experiment {EXPERIMENT_NAME}")
    assert lines[1] == "17 events, 4 LLM calls, tokens 705 in / 83 out, 0 errors"
    assert lines[2].startswith("└─ chain AgentExecutor  ")
    tools = [line for line in lines if "─ tool " in line]
    assert [line.split("─ tool ")[1].split()[0] for line in tools] == ["Search", "Calculator"]
    models = [line for line in lines if "─ llm FakeOpenAI" in line]
    assert len(models) == 4
    assert all("gpt-3.5-turbo-instruct" in line and "tokens" in line for line in models)
    assert "168→23 tokens" in models[0]
    assert any("· action Search(oldest person alive)" in line for line in lines)
    # The model's long prompt is cut at 40 characters with a marker.
    prompt = next(line for line in lines if "in:  Answer the following" in line)
    assert re.search(r"in:  .{40}…\[\+\d+ chars\]$", prompt)


def test_the_destination_defaults_to_the_trackers(
    demo_dir: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = demo_dir
    assert root.name == "logs"
    monkeypatch.chdir(root.parent)
    (root.parent / "asynctrack-logs").symlink_to(root)
    run = _run_names(root)[0]
    assert main(["show", run]) == 0
    assert capsys.readouterr().out.startswith(run)
    assert main(["runs", "--json"]) == 0
    assert run in {row["run"] for row in json.loads(capsys.readouterr().out)}


@pytest.fixture
def failing_run(tmp_path: Path) -> Path:
    root = tmp_path / "logs"

    def explode(value: str) -> str:
        raise ValueError(f"cannot handle {value[:10]}")

    chain = RunnableLambda(lambda value: value) | RunnableLambda(explode)
    with (
        AsyncTracker(root, experiment_name="errs", run_name="bad") as tracker,
        pytest.raises(ValueError, match="cannot handle"),
    ):
        chain.invoke("x" * 500, config={"callbacks": [tracker]})
    return root


def test_show_errors_in_red_on_a_terminal_only(failing_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = asynctrack.read_events(failing_run, "errs", "bad")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    coloured = render(events, width=30, colour=Colour(Terminal()))
    error_lines = [line for line in coloured if "ValueError: cannot handle" in line]
    assert error_lines and all("\x1b[31m" in line for line in error_lines)
    assert any("\x1b[31m" in line and "ERROR" in line for line in coloured)
    assert "\x1b[31m2 errors" in coloured[1]

    assert main(["show", str(failing_run), "bad"]) == 0
    plain = capsys.readouterr().out
    assert not ANSI.search(plain)
    assert "error: ValueError: cannot handle xxxxxxxxxx" in plain
    assert "2 errors" in plain


def test_run_summaries_by_polars_match_those_from_every_event(
    demo_dir: tuple[Path, str], failing_run: Path
) -> None:
    for root in (demo_dir[0], failing_run):
        by_polars = scan_run_summaries(root)
        assert by_polars == summarize_runs(asynctrack.read_events(root))
        assert by_polars
    assert [(row.errors, row.events) for row in scan_run_summaries(failing_run)] == [(2, 6)]


def test_show_says_what_was_not_found(demo_dir: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = demo_dir
    assert main(["show", str(root), "run-scenario-9"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"asynctrack show: no run 'run-scenario-9' in {root} (runs there: run-scenario-1-")


def test_show_with_the_run_forgotten_says_so(
    demo_dir: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``show DEST`` (no RUN): a usage error saying the run is missing, not the destination
    taken as a run name and the default destination blamed."""
    root, _ = demo_dir
    for destination in (str(root), "s3://bucket/prefix"):
        with pytest.raises(SystemExit) as exited:
            main(["show", destination])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert f"asynctrack show: error: the following arguments are required: run ({destination!r}" in err
        assert "no such directory" not in err


def test_show_a_run_named_as_a_folder_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``show agent`` beside an ``agent/`` folder (the application's source, no recorded
    files): the run ``agent`` of the default destination, not a forgotten RUN."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "__init__.py").write_text("")
    tracker = AsyncTracker("./asynctrack-logs", experiment_name="exp", run_name="agent")
    RunnableLambda(lambda x: x, name="the-chain").invoke(1, config={"callbacks": [tracker]})
    tracker.close()
    assert main(["show", "agent"]) == 0
    assert "the-chain" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:  # a folder holding recorded files: the destination
        main(["show", "asynctrack-logs"])
    assert exited.value.code == 2
    assert "('asynctrack-logs' is the destination" in capsys.readouterr().err


def test_cut_marks_what_it_left_out() -> None:
    assert cut("short", 10) == "short"
    assert cut("a  b\n c", 10) == "a b c"
    assert cut("x" * 25, 10) == "x" * 10 + "…[+15 chars]"


def test_athena_ddl_matches_the_golden_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["athena-ddl", "s3://my-bucket/traces", "--table", "analytics.llm_events"]) == 0
    out = capsys.readouterr().out
    assert out == (GOLDEN / "athena_ddl.sql").read_text()
    assert create_table("s3://my-bucket/traces/", "analytics.llm_events") == out
    assert "'projection.experiment.type' = 'injected'" in out
    assert "LOCATION 's3://my-bucket/traces/'" in out
    assert main(["athena-ddl", "./local", "--table", "t"]) == 1
    assert "must be s3://bucket/prefix" in capsys.readouterr().err
    assert main(["athena-ddl", "s3://b", "--table", "x; DROP TABLE y"]) == 1
    assert "table must be a name" in capsys.readouterr().err


def test_replay_on_a_missing_directory_fails_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-spool"
    assert main(["replay", str(missing)]) == 1
    assert capsys.readouterr().err.strip() == f"asynctrack replay: no spool directory at {missing}"
    (tmp_path / "empty").mkdir()
    assert main(["replay", str(tmp_path / "empty")]) == 0
    assert "nothing spooled" in capsys.readouterr().out


def test_replay_defaults_to_the_trackers_spool_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = tmp_path / "my-spool"
    spool.mkdir()
    monkeypatch.setenv("ASYNCTRACK_SPOOL_DIR", str(spool))
    assert main(["replay"]) == 0
    assert capsys.readouterr().out.strip() == f"nothing spooled in {spool}"
    monkeypatch.delenv("ASYNCTRACK_SPOOL_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert main(["replay"]) == 1
    assert "no spool directory at ~/.cache/asynctrack/spool" in capsys.readouterr().err


def test_show_lone_events_and_lost_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run whose start event is missing and an event without a run still show."""
    root = tmp_path / "logs"
    with AsyncTracker(root, experiment_name="e", run_name="partial") as tracker:
        run_id = uuid.uuid4()
        tracker.on_chain_end({"answer": 42}, run_id=run_id)
        tracker.on_text("loose text", run_id=uuid.uuid4())
    assert main(["show", str(root), "partial"]) == 0
    out = capsys.readouterr().out
    assert "chain" in out and "out: 42" in out
    assert "loose text" in out


def test_show_asks_for_the_experiment_when_a_run_name_is_in_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "logs"
    for experiment in ("exp-a", "exp-b"):
        with AsyncTracker(root, experiment_name=experiment, run_name="same") as tracker:
            tracker.on_text(experiment, run_id=uuid.uuid4())
    assert main(["show", str(root), "same"]) == 1
    assert capsys.readouterr().err.strip() == (
        "asynctrack show: run 'same' is in several experiments (exp-a, exp-b): pass --experiment"
    )
    assert main(["show", str(root), "same", "--experiment", "exp-b"]) == 0
    assert "text exp-b" in capsys.readouterr().out


def test_the_readme_documents_every_command_and_flag() -> None:
    import argparse

    from asynctrack._cli._main import _parser

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## The command line", 1)[1].split("\n## ", 1)[0]
    parser = _parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert "--version" in section
    for name, command in commands.choices.items():
        assert f"`asynctrack {name}" in section, name
        for action in command._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert flag in section, (name, flag)


#: Recorded text that would drive a terminal: clear the screen, retitle the window, hide
#: text, return to the start of the line, ring the bell; a C1 CSI and DEL too; and reorder
#: the line (bidirectional overrides, isolates and marks: "\u202egnp.exe" reads "exe.png").
HOSTILE = (
    "ok\x1b[2J\x1b]0;pwned\x07\x1b[8mHIDDEN\x1b[0m\rfake\x9b31m\x7f\x00end"
    "\u202egnp.exe\u202a\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
)
CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def test_recorded_control_characters_are_printed_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "logs"
    run_name = "r" + HOSTILE
    for experiment in ("e" + HOSTILE, "f" + HOSTILE):
        with AsyncTracker(root, experiment_name=experiment, run_name=run_name) as tracker:
            chain, model, tool = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
            metadata = {"session_id": "s" + HOSTILE, "user_id": "u" + HOSTILE}
            tracker.on_chain_start(
                {"name": "c"}, {"q": HOSTILE}, run_id=chain, metadata=metadata, name="c" + HOSTILE
            )
            tracker.on_llm_start(
                {},
                [HOSTILE],
                run_id=model,
                parent_run_id=chain,
                invocation_params={"model_name": "m" + HOSTILE},
            )
            tracker.on_llm_end(LLMResult(generations=[[Generation(text=HOSTILE)]]), run_id=model)
            tracker.on_tool_start({}, HOSTILE, run_id=tool, parent_run_id=chain, name="t" + HOSTILE)
            tracker.on_tool_error(ValueError(HOSTILE), run_id=tool)
            tracker.on_text(HOSTILE, run_id=chain)
            tracker.on_chain_end({"answer": HOSTILE}, run_id=chain)

    # show: the run's name, experiment, span names, model, inputs, outputs, errors and notes
    assert main(["show", str(root), run_name, "--experiment", "e" + HOSTILE, "--width", "500"]) == 0
    out = capsys.readouterr().out
    assert not CONTROLS.search(out.replace("\n", ""))
    escaped = (
        "ok\\x1b[2J\\x1b]0;pwned\\x07\\x1b[8mHIDDEN\\x1b[0m\\x0dfake\\x9b31m\\x7f\\x00end"
        "\\u202egnp.exe\\u202a\\u2066\\u2067\\u2068\\u2069\\u200e\\u200f\\u061c"
    )
    flat = escaped.replace("\\x0d", " ")  # inputs, outputs, errors, notes: whitespace runs are one space
    head = out.splitlines()[0]
    assert head.startswith(f"r{escaped}  experiment e{escaped}, ")
    for shown in (
        f"chain c{escaped}",
        f"m{escaped}",
        f"tool t{escaped}",
        f"in:  {flat}",
        f"out: {flat}",
    ):
        assert shown in out, shown
    assert f"error: ValueError: {flat}" in out and f"· text {flat}" in out
    # An error message naming recorded names (two experiments hold the run).
    assert main(["show", str(root), run_name]) == 1
    err = capsys.readouterr().err
    assert not CONTROLS.search(err.rstrip("\n")) and f"(e{flat}, f{flat})" in err

    # runs: the experiment, run, session and user columns
    for polars in (True, False):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("asynctrack._cli._runs.polars_installed", lambda polars=polars: polars)
            assert main(["runs", str(root)]) == 0
            table = capsys.readouterr().out
            assert not CONTROLS.search(table.replace("\n", ""))
            assert all(f"{first}{escaped}" in table for first in "efrsu")
            assert main(["runs", str(root), "--json"]) == 0
            rows = json.loads(capsys.readouterr().out)  # exact JSON: the text as recorded
            assert [(row["run"], row["sessions"], row["users"]) for row in rows] == [
                (run_name, ["s" + HOSTILE], ["u" + HOSTILE])
            ] * 2

    # report: the line it prints names the file written
    output = tmp_path / "report\x1b]0;pwned\x07.html"
    assert main(["report", str(root), "-o", str(output)]) == 0
    err = capsys.readouterr().err
    assert (
        output.exists() and not CONTROLS.search(err.rstrip("\n")) and "report\\x1b]0;pwned\\x07.html" in err
    )


def test_runs_with_and_without_polars_agree_on_interrupts_and_odd_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An error that merely carries a GraphInterrupt is an error; a session or user id that
    is neither a string nor an integer is none; the same with Polars as without."""
    from langgraph.errors import GraphInterrupt

    root = tmp_path / "logs"
    ids: list[Any] = [True, False, 1.5, {"a": 1}, [1], "true", "1.5", '{"a": 1}', 7, -2, "", None, "s"]
    with AsyncTracker(root, experiment_name="e", run_name="r") as tracker:
        for index, session in enumerate(ids):
            run_id = uuid.uuid4()
            metadata = {"session_id": session, "user_id": ids[-1 - index]}
            if index % 3 == 0:
                metadata["thread_id"] = f"t{index}"
            tracker.on_chain_start({}, {}, run_id=run_id, metadata=metadata)
            if index % 2:
                tracker.on_chain_error(RuntimeError("failed while paused", GraphInterrupt()), run_id=run_id)
            else:
                tracker.on_chain_error(GraphInterrupt(), run_id=run_id)
    (core,) = summarize_runs(asynctrack.read_events(root))
    assert core.errors == len(ids) // 2
    assert core.sessions == ("-2", "1.5", "7", "s", "t0", "t3", "true", '{"a": 1}')
    assert core.users == ("-2", "1.5", "7", "s", "true", '{"a": 1}')
    assert scan_run_summaries(root) == [core]
    for session in (None, "true", "1.5", "t3", "7"):
        flags = ["--session", session] if session else []
        assert main(["runs", str(root), "--json", *flags]) == 0
        with_polars = capsys.readouterr().out
        with monkeypatch.context() as patch:
            patch.setattr("asynctrack._cli._runs.polars_installed", lambda: False)
            assert main(["runs", str(root), "--json", *flags]) == 0
        assert capsys.readouterr().out == with_polars
        assert json.loads(with_polars)[0]["events"] == (2 * len(ids) if session is None else 2)
