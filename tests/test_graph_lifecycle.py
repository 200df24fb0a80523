"""LangGraph's lifecycle (``on_interrupt``/``on_resume``, langgraph >= 1.2): recorded as
``graph_interrupt``/``graph_resume`` events of the graph's run, shown by ``show`` and the report."""

from __future__ import annotations

import datetime
import io
import textwrap
from pathlib import Path
from typing import Any

import pytest
from _infra.graphs import QUESTION, interrupt_and_resume
from langgraph.callbacks import GraphCallbackHandler
from support import ROOT, run_script

import asynctrack
from asynctrack import AsyncTracker
from asynctrack._cli._common import Colour
from asynctrack._cli._show import render
from asynctrack._read._report import report_data
from asynctrack._read._tree import scan_run_summaries, summarize_runs


@pytest.fixture
def events(tmp_destination: Path) -> list[dict[str, Any]]:
    with AsyncTracker(tmp_destination, experiment_name="review", run_name="r") as tracker:
        assert isinstance(tracker, GraphCallbackHandler)
        assert isinstance(tracker, AsyncTracker)
        paused, resumed = interrupt_and_resume([tracker], answer="approved")
    assert "__interrupt__" in paused
    assert resumed["decision"] == "approved"
    return asynctrack.read_events(tmp_destination)


def _roots(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == "chain_start" and e["parent_run_id"] is None]


def test_an_interrupt_and_its_resume_are_events_of_the_graphs_runs(events: list[dict[str, Any]]) -> None:
    first, second = _roots(events)  # the paused invoke, then the resuming one
    (interrupt,) = [e for e in events if e["kind"] == "graph_interrupt"]
    (resume,) = [e for e in events if e["kind"] == "graph_resume"]
    assert interrupt["run_id"] == first["run_id"]
    assert interrupt["name"] == first["name"] == "LangGraph"
    data = interrupt["data"]
    assert [i["value"] for i in data["interrupts"]] == [QUESTION]
    assert isinstance(data["interrupts"][0]["id"], str)
    assert data["status"] in ("pending", "interrupt_before", "interrupt_after")
    assert isinstance(data["checkpoint_id"], str) and data["checkpoint_id"]
    assert data["checkpoint_ns"] == []
    assert resume["run_id"] == second["run_id"]
    assert resume["data"]["checkpoint_id"] == data["checkpoint_id"]  # resumed where it paused
    assert set(resume["data"]) == {"status", "checkpoint_id", "checkpoint_ns"}


def test_show_and_the_report_say_the_graph_was_interrupted_and_resumed(
    events: list[dict[str, Any]], tmp_destination: Path
) -> None:
    lines = "\n".join(render(events, width=200, colour=Colour(io.StringIO())))
    assert "INTERRUPTED" in lines
    assert 'interrupt {"question":"Send the report to the customer?"' in lines
    (interrupt,) = [e for e in events if e["kind"] == "graph_interrupt"]
    paused = datetime.datetime.fromtimestamp(interrupt["ts"], datetime.UTC)
    checkpoint = interrupt["data"]["checkpoint_id"]
    assert f"resume from checkpoint {checkpoint} (paused there at {paused:%H:%M:%S} UTC)" in lines
    assert "ERROR" not in lines  # the node's GraphInterrupt is control flow, not a failure
    (summary,) = summarize_runs(events)
    assert summary.errors == 0
    (scanned,) = scan_run_summaries(tmp_destination)  # the Polars path of `asynctrack runs`
    assert scanned.errors == 0
    assert scanned.events == summary.events
    (run,) = report_data(events, title="t")["runs"]
    kinds = [span["kind"] for span in run["spans"]]
    assert kinds.count("graph_interrupt") == 1
    assert kinds.count("graph_resume") == 1
    assert next(span["status"] for span in run["spans"] if span["kind"] == "chain") == "interrupted"


_WITHOUT = textwrap.dedent(
    """
    import sys, tempfile
    if MODE == "absent":
        sys.modules["langgraph"] = None  # import langgraph raises ImportError
    from langchain_core.runnables import RunnableLambda
    import asynctrack
    from asynctrack import AsyncTracker

    destination = tempfile.mkdtemp()
    with AsyncTracker(destination, experiment_name="e", run_name="r") as tracker:
        RunnableLambda(lambda x: x).invoke(1, config={"callbacks": [tracker]})
    bases = [c.__module__ for c in type(tracker).__mro__]
    assert not any(m.startswith("langgraph") for m in bases), bases
    assert len(asynctrack.read_events(destination)) == 2
    print("imported" if any(m.startswith("langgraph") for m in sys.modules if sys.modules[m]) else "clean")
    """
)

_BEFORE = textwrap.dedent(
    """
    import sys, tempfile
    import asynctrack
    from asynctrack import AsyncTracker

    destination = tempfile.mkdtemp()
    with AsyncTracker(destination, experiment_name="e", run_name="r") as tracker:
        assert not [m for m in sys.modules if m.startswith("langgraph")], "imported at creation"
        from _infra.graphs import interrupt_and_resume  # the graph's module imports langgraph

        paused, resumed = interrupt_and_resume([tracker], answer="ok")
        from langgraph.callbacks import GraphCallbackHandler

        assert isinstance(tracker, GraphCallbackHandler) and isinstance(tracker, AsyncTracker)
    kinds = [e["kind"] for e in asynctrack.read_events(destination)]
    print(kinds.count("graph_interrupt"), kinds.count("graph_resume"))
    """
)


def test_a_tracker_made_before_langgraph_is_imported_records_the_first_graphs_lifecycle(
    tmp_path: Path,
) -> None:
    """Nothing of langgraph is imported when the tracker is made; the graph imported and
    run afterwards has its interrupt and resume recorded, from its first run."""
    proc = run_script(
        tmp_path / "before.py",
        _BEFORE,
        {
            "PYTHONPATH": f"{ROOT / 'tests'}:{ROOT}",
            "PATH": "/usr/bin:/bin",
            "ASYNCTRACK_WORKER": "thread",
        },
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["1", "1"]


@pytest.mark.parametrize("mode", ["absent", "old"])
def test_without_langgraph_or_with_an_older_one_the_tracker_works(tmp_path: Path, mode: str) -> None:
    """No langgraph, or an older one (no ``langgraph.callbacks``): a plain handler, and
    nothing of langgraph is imported."""
    if mode == "old":  # a langgraph package without the callbacks module
        (tmp_path / "langgraph").mkdir()
        (tmp_path / "langgraph" / "__init__.py").write_text("", encoding="utf-8")
    proc = run_script(
        tmp_path / "without.py",
        _WITHOUT.replace("MODE", repr(mode)),
        {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin", "ASYNCTRACK_WORKER": "thread"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "clean"
