"""Capture fidelity: the same real workload recorded by asynctrack and by a LangChain tracer
kept in memory; every leaf value of the tracer's runs, serialized as LangSmith serializes
them, must be in what asynctrack wrote for the same run id.

The workload: a LangGraph map-reduce graph (``Send``, ``Command``), a human-in-the-loop
graph interrupted and resumed, real ``ChatOpenAI`` calls on the loopback stub (tools,
streaming, structured output), a retriever, a tool returning the kinds ``_capture``
converts (dataclasses, slots, NamedTuple, attrs, pydantic v1 and v2, Enum, numpy,
pandas), and a tool that fails.

What is compared, per run: the tracer's ``inputs``, ``outputs`` and ``error``, through
``langsmith._internal._serde.dumps_json``. LangChain's own envelope around a message
(``{"lc": 1, "type": "constructor", "id": [...], "kwargs": {...}}``, added by the tracer's
``dumpd``) is unwrapped to its ``kwargs``: the envelope is not a value of the run. Where
LangSmith's serializer falls back to ``str(value)`` (a ``repr``), asynctrack keeps the
fields instead; those strings are counted apart, not in the figure. The error text
(``repr(error)`` then the traceback) is compared line by line with asynctrack's
``error`` (``type``, ``message``, ``traceback``).
"""

from __future__ import annotations

import dataclasses
import enum
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import attrs
import numpy as np
import orjson
import pandas as pd
import pydantic
import pydantic.v1
import pytest
from _infra.graphs import interrupt_and_resume, map_reduce
from _infra.openai_stub import OpenAIStub, chat_model, run_calls
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run
from langgraph.types import Command, Send

import asynctrack
from asynctrack import AsyncTracker
from asynctrack._capture import MARK

serde = pytest.importorskip("langsmith._internal._serde")

#: asynctrack's placeholders: a value that was not written as its data.
_PLACEHOLDERS = frozenset({"unencodable", "too_many_values", "max_depth", "array"})


# -- the workload --------------------------------------------------------------------------------


@dataclasses.dataclass
class Reading:
    station: str
    values: list[float]


@dataclasses.dataclass(slots=True, frozen=True)
class Location:
    lat: float
    lon: float


class Span(NamedTuple):
    start: int
    end: int


class Cache:
    __slots__ = ("hits", "misses")

    def __init__(self) -> None:
        self.hits = 41
        self.misses = 7


@attrs.define
class Budget:
    tokens: int = 900
    currency: str = "EUR"


class Forecast(pydantic.BaseModel):
    city: str
    days: list[int]


class LegacyForecast(pydantic.v1.BaseModel):
    city: str
    note: str


class Level(enum.Enum):
    HIGH = "high"


def _kinds() -> dict[str, Any]:
    return {
        "reading": Reading("Paris-Montsouris", [18.5, 19.25]),
        "location": Location(48.82, 2.33),
        "span": Span(3, 9),
        "cache": Cache(),
        "budget": Budget(),
        "forecast": Forecast(city="Lyon", days=[1, 2, 3]),
        "legacy": LegacyForecast(city="Nice", note="from v1"),
        "level": Level.HIGH,
        "matrix": np.array([[1, 2], [3, 4]]),
        "table": pd.DataFrame({"city": ["Oslo", "Rome"], "temp": [4.5, 21.0]}),
        "series": pd.Series([7, 8, 9], name="hours"),
        "send": Send("work", {"item": "delta"}),
        "command": Command(goto="reduce", update={"results": ["x"]}),
    }


def _inventory(question: str) -> Any:
    """Return every kind of value a tool may return."""
    return _kinds()


def _broken(question: str) -> str:
    """Always fails."""
    raise ValueError(f"no station answers for {question!r}")


class _Stations(BaseRetriever):
    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return [
            Document(page_content=f"Station {n} reports on {query}", metadata={"station": n, "ok": True})
            for n in range(3)
        ]


_STRUCTURED = {
    "title": "get_weather",
    "description": "Current weather for a city.",
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
    "required": ["city", "unit"],
}


def _workload(callbacks: list[Any], url: str) -> None:
    from langchain_core.tools import tool

    config: Any = {"callbacks": callbacks}
    map_reduce(callbacks)
    interrupt_and_resume(callbacks)
    run_calls(url, callbacks)
    structured = chat_model(url).with_structured_output(_STRUCTURED, method="function_calling")
    assert structured.invoke("What is the weather in Oslo?", config=config) == {"city": "Oslo", "unit": "C"}
    _Stations().invoke("wind", config=config)
    tool(_inventory).invoke({"question": "all"}, config=config)
    with pytest.raises(ValueError, match="no station"):
        tool(_broken).invoke({"question": "rain"}, config=config)


class _Collector(BaseTracer):
    """A LangChain tracer kept in memory: every run, as the tracer holds it at the end."""

    def __init__(self) -> None:
        # As LangSmith's tracer records a chat model: its messages (``dumpd``), not a
        # prompt text the base tracer would make of them.
        super().__init__(_schema_format="original+chat")
        self.runs: dict[str, Run] = {}

    def _on_run_create(self, run: Run) -> None:
        self.runs[str(run.id)] = run

    def _persist_run(self, run: Run) -> None:
        return None


# -- the comparison ------------------------------------------------------------------------------


def _unwrap(value: Any) -> Any:
    """LangChain's serialization envelope (``dumpd``) replaced by what it holds."""
    if isinstance(value, dict):
        if value.get("lc") == 1 and value.get("type") == "constructor" and "kwargs" in value:
            return _unwrap(value["kwargs"])
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def _placeholders(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        if value.get(MARK) in _PLACEHOLDERS:
            yield value
        for v in value.values():
            yield from _placeholders(v)
    elif isinstance(value, list):
        for v in value:
            yield from _placeholders(v)


def _key(value: Any) -> tuple[str, Any]:
    return (type(value).__name__, value)  # 1, 1.0 and True are different values


@dataclasses.dataclass
class Tally:
    leaves: int = 0
    found: int = 0
    reprs: int = 0
    missing: list[tuple[str, str, Any]] = dataclasses.field(default_factory=list)

    @property
    def figure(self) -> float:
        return self.found / self.leaves if self.leaves else 0.0


def _compare(runs: dict[str, Run], events: list[dict[str, Any]], fallbacks: set[str]) -> Tally:
    by_run: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_run.setdefault(str(event["run_id"]), []).append(event)
    tally = Tally()
    for run_id, run in runs.items():
        written = by_run.get(run_id, [])
        ours = {_key(leaf) for event in written for leaf in _leaves(event["data"])}
        texts = [leaf for event in written for leaf in _leaves(event["data"]) if isinstance(leaf, str)]
        for field in ("inputs", "outputs"):
            value = getattr(run, field)
            if not value:
                continue
            theirs = _unwrap(orjson.loads(serde.dumps_json(value)))
            for leaf in _leaves(theirs):
                if isinstance(leaf, str) and leaf in fallbacks:
                    tally.reprs += 1  # LangSmith wrote a repr; asynctrack keeps the fields
                    continue
                tally.leaves += 1
                if _key(leaf) in ours or (isinstance(leaf, str) and any(leaf in text for text in texts)):
                    tally.found += 1
                else:
                    tally.missing.append((run.name, field, leaf))
        if run.error:
            errors = [e["data"].get("error") for e in written if e["kind"].endswith("_error")]
            error = errors[0] if errors and isinstance(errors[0], dict) else {}
            shown, _, trace = run.error.partition("Traceback (most recent call last):")
            message = str(error.get("message", ""))
            lines = [("repr", shown.strip())] + [("traceback", line.strip()) for line in trace.splitlines()]
            for part, line in lines:
                if not line:
                    continue
                tally.leaves += 1
                if part == "repr":
                    ok = line.startswith(str(error.get("type", "")).rsplit(".", 1)[-1]) and message in line
                else:
                    ok = line in str(error.get("traceback", ""))
                if ok:
                    tally.found += 1
                else:
                    tally.missing.append((run.name, "error", line))
    return tally


def test_asynctrack_keeps_every_value_langsmiths_serializer_keeps(
    tmp_destination: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    collector = _Collector()
    with (
        OpenAIStub() as stub,
        AsyncTracker(tmp_destination, experiment_name="fidelity", run_name="r") as tracker,
    ):
        _workload([tracker, collector], stub.url)
    events = asynctrack.read_events(tmp_destination)

    # The strings LangSmith's serializer wrote for values it could not read (str(value)).
    fallbacks: set[str] = set()
    simple = serde._simple_default

    def remember(obj: Any) -> Any:
        out = simple(obj)
        if type(out) is str and out == str(obj) and not isinstance(obj, str | uuid.UUID):
            fallbacks.add(out)
        return out

    monkeypatch.setattr(serde, "_simple_default", remember)
    tally = _compare(collector.runs, events, fallbacks)

    placeholders = [p for event in events for p in _placeholders(event["data"])]
    kinds = {e["kind"] for e in events}
    with capsys.disabled():
        print(
            f"\nfidelity: {tally.found}/{tally.leaves} = {tally.figure:.2%} of LangSmith's values found "
            f"in {len(collector.runs)} runs; {tally.reprs} LangSmith repr fallbacks kept as fields; "
            f"{len(placeholders)} placeholders"
        )
        for missing in tally.missing[:20]:
            print("  not found:", missing)
    assert {"graph_interrupt", "graph_resume", "tool_error", "retriever_end"} <= kinds
    assert len(collector.runs) > 15
    assert tally.leaves > 300
    assert placeholders == []
    assert tracker.statistics().encode_errors == 0
    assert tally.figure >= 0.995, tally.missing[:20]


def test_the_comparison_can_fail() -> None:
    """A value the tracer kept and asynctrack did not write is counted missing."""
    run = Run(
        id=uuid.uuid4(),
        name="r",
        run_type="chain",
        start_time=pd.Timestamp.now().to_pydatetime(),
        inputs={"kept": "yes", "lost": "gone"},
        outputs={"n": 1},
        error=(
            "ValueError('bad')Traceback (most recent call last):\n"
            '  File "x.py", line 1, in f\n'
            "ValueError: bad"
        ),
        trace_id=uuid.uuid4(),
        dotted_order="x",
    )
    written = [{"run_id": str(run.id), "kind": "chain_start", "data": {"inputs": {"kept": "yes"}}}]
    written.append(
        {
            "run_id": str(run.id),
            "kind": "chain_error",
            "data": {"error": {"type": "ValueError", "message": "bad", "traceback": "ValueError: bad"}},
        }
    )
    tally = _compare({str(run.id): run}, written, set())
    assert {m[2] for m in tally.missing} == {"gone", 1, 'File "x.py", line 1, in f'}
    assert re.fullmatch(r"0\.\d+", f"{tally.figure:.2f}")
