"""Small real LangGraph graphs: map-reduce with ``Send`` and ``Command``, a
human-in-the-loop graph that is interrupted and resumed (``interrupt()``, a checkpointer),
and a graph of one node."""

from __future__ import annotations

import operator
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send, interrupt

__all__ = ["QUESTION", "Text", "interrupt_and_resume", "map_reduce", "one_node"]

QUESTION = {"question": "Send the report to the customer?", "draft": "Dear customer, ..."}


class _Work(TypedDict):
    items: list[str]
    results: Annotated[list[str], operator.add]
    summary: str


def _fan_out(state: _Work) -> list[Send]:
    return [Send("work", {"item": item, "position": n}) for n, item in enumerate(state["items"])]


def _work(task: dict[str, Any]) -> Command[Any]:
    return Command(update={"results": [f"{task['item']} done"]}, goto="reduce")


def _reduce(state: _Work) -> dict[str, Any]:
    return {"summary": ", ".join(sorted(state["results"]))}


class Text(TypedDict):
    x: str


def one_node(node: Callable[[Text], Text]) -> Any:
    """A compiled graph of one node, ``shout``, that runs ``node`` on the state ``{"x": str}``."""
    graph = StateGraph(Text)
    graph.add_node("shout", node)
    graph.add_edge(START, "shout")
    graph.add_edge("shout", END)
    return graph.compile()


def map_reduce(callbacks: list[Any], items: list[str] | None = None) -> dict[str, Any]:
    """A map-reduce graph: a conditional edge fans out ``Send``s, each worker returns a ``Command``."""
    graph = StateGraph(_Work)
    graph.add_node("work", _work)
    graph.add_node("reduce", _reduce)
    graph.add_conditional_edges(START, _fan_out, ["work"])
    graph.add_edge("reduce", END)
    app = graph.compile()
    return app.invoke({"items": items or ["alpha", "beta", "gamma"], "results": []}, {"callbacks": callbacks})


class _Review(TypedDict):
    draft: str
    decision: str


def _ask(state: _Review) -> dict[str, Any]:
    decision = interrupt(QUESTION)  # pauses the graph until resumed with Command(resume=...)
    return {"decision": str(decision)}


def interrupt_and_resume(callbacks: list[Any], answer: str = "yes") -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the review graph until it asks a human, then resume it with ``answer``; returns
    both results (the first holds ``__interrupt__``)."""
    graph = StateGraph(_Review)
    graph.add_node("ask", _ask)
    graph.add_edge(START, "ask")
    graph.add_edge("ask", END)
    app = graph.compile(checkpointer=InMemorySaver())
    config: Any = {"callbacks": callbacks, "configurable": {"thread_id": str(uuid.uuid4())}}
    paused = app.invoke({"draft": "Dear customer, ...", "decision": ""}, config)
    resumed = app.invoke(Command(resume=answer), config)
    return paused, resumed
