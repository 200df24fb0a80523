"""Copy-on-callback (``_snapshot``): what is logged is what the callback saw."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableLambda

import asynctrack
from asynctrack import AsyncTracker
from asynctrack._langchain._snapshot import DEPTH_EXCEEDED, MAX_NODES, FieldsSnapshot, snapshot


@pytest.fixture
def tracker(tmp_destination: Path) -> Iterator[AsyncTracker]:
    t = AsyncTracker(tmp_destination, experiment_name="snap", run_name="r")
    yield t
    t.close(timeout=5)


def _chain_starts(destination: Path) -> list[dict[str, Any]]:
    return [e for e in asynctrack.read_events(destination) if e["kind"] == "chain_start"]


@dataclasses.dataclass
class Point:
    x: int
    tags: list[str]


@dataclasses.dataclass(slots=True)
class SlottedPoint:
    x: int


# -- through LangChain ----------------------------------------------------------------


def test_inputs_mutated_by_the_chain_are_logged_as_they_were(
    tracker: AsyncTracker, tmp_destination: Path
) -> None:
    inputs: dict[str, Any] = {
        "question": "q1",
        "history": ["a"],
        "nested": {"k": 1},
        "point": Point(1, ["p"]),
    }

    def mutate(value: dict[str, Any]) -> str:
        value["question"] = "CHANGED"
        value["history"].append("b")
        value["nested"]["k"] = 2
        value["point"].x = 99
        value["point"].tags.append("q")
        value["added"] = True
        return "done"

    RunnableLambda(mutate).invoke(inputs, config={"callbacks": [tracker]})
    tracker.flush_blocking(timeout=10)

    (start,) = _chain_starts(tmp_destination)
    assert start["data"]["inputs"] == {
        "question": "q1",
        "history": ["a"],
        "nested": {"k": 1},
        "point": {"x": 1, "tags": ["p"]},
    }


def test_messages_list_and_message_content_mutated_after_the_callback(
    tracker: AsyncTracker, tmp_destination: Path
) -> None:
    messages: list[BaseMessage] = [HumanMessage(content="first"), AIMessage(content="reply")]

    def mutate(value: list[BaseMessage]) -> int:
        value.append(HumanMessage(content="appended"))
        value[0].content = "mutated"
        value[1].additional_kwargs["extra"] = 1
        return len(value)

    assert RunnableLambda(mutate).invoke(messages, config={"callbacks": [tracker]}) == 3
    tracker.flush_blocking(timeout=10)

    (start,) = _chain_starts(tmp_destination)
    logged = start["data"]["inputs"]
    assert [(m["type"], m["content"]) for m in logged] == [("human", "first"), ("ai", "reply")]
    assert logged[1]["additional_kwargs"] == {}


def test_chat_model_start_messages_and_metadata_mutated_after_the_callback(
    tracker: AsyncTracker, tmp_destination: Path
) -> None:
    messages: list[list[BaseMessage]] = [[HumanMessage(content="hello")]]
    metadata: dict[str, Any] = {"user": "u1", "labels": ["a"]}
    run_id = uuid.uuid4()
    tracker.on_chat_model_start(
        {"name": "Model"}, messages, run_id=run_id, metadata=metadata, invocation_params={"n": 1}
    )
    messages[0].append(AIMessage(content="late"))
    messages[0][0].content = "edited"
    metadata["user"] = "u2"
    metadata["labels"].append("b")
    tracker.flush_blocking(timeout=10)

    (event,) = asynctrack.read_events(tmp_destination)
    assert event["kind"] == "chat_model_start"
    assert [m["content"] for m in event["data"]["messages"][0]] == ["hello"]
    assert event["metadata"] == {"user": "u1", "labels": ["a"]}


def test_documents_mutated_after_retriever_end(tracker: AsyncTracker, tmp_destination: Path) -> None:
    docs = [Document(page_content="text", metadata={"source": "s1"})]
    tracker.on_retriever_end(docs, run_id=uuid.uuid4())
    docs[0].page_content = "other"
    docs[0].metadata["source"] = "s2"
    docs.append(Document(page_content="late"))
    tracker.flush_blocking(timeout=10)

    (event,) = asynctrack.read_events(tmp_destination)
    assert event["data"]["documents"] == [
        {"id": None, "metadata": {"source": "s1"}, "page_content": "text", "type": "Document"}
    ]


# -- the function itself ------------------------------------------------------------------


def test_immutable_leaves_are_shared_not_copied() -> None:
    big = "x" * 10_000_000
    copied = snapshot({"big": big, "n": 1, "b": b"raw"})
    assert copied["big"] is big


def test_containers_and_model_fields_are_copied() -> None:
    source: dict[str, Any] = {"t": (1, [2]), "s": {3}, "m": HumanMessage(content="c")}
    copied = snapshot(source)
    assert copied["t"] == [1, [2]]
    assert copied["t"][1] is not source["t"][1]
    assert copied["s"] == [3]
    assert isinstance(copied["m"], FieldsSnapshot)
    assert copied["m"].type is HumanMessage
    assert copied["m"].fields["content"] == "c"


def test_slotted_dataclasses_are_shared() -> None:
    point = SlottedPoint(1)
    assert snapshot([point])[0] is point


def test_cycles_and_deep_nesting_end_in_a_marker() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    copied = snapshot(cyclic, max_depth=4)
    assert copied["self"]["self"]["self"]["self"] is DEPTH_EXCEEDED

    looped: list[Any] = []
    looped.append(looped)
    node = snapshot(looped, max_depth=3)
    assert node[0][0][0] is DEPTH_EXCEEDED


def test_shared_reference_blow_up_is_bounded_by_the_node_budget() -> None:
    value: list[Any] = []
    for _ in range(40):
        value = [value, value]  # 2**40 paths, 41 objects
    copied = snapshot(value)  # returns promptly: past the budget, values are shared
    assert isinstance(copied, list)
    assert MAX_NODES > 0


def test_never_raises_on_hostile_objects() -> None:
    @dataclasses.dataclass
    class Hostile:
        x: int

        def __getattribute__(self, name: str) -> Any:
            if name == "__dict__":
                raise RuntimeError("no dict for you")
            return object.__getattribute__(self, name)

    class ExplodingDict(dict[str, Any]):
        def items(self) -> Any:
            raise RuntimeError("items exploded")

    hostile = Hostile(1)
    assert snapshot([hostile])[0] is hostile
    exploding = ExplodingDict(a=1)
    assert snapshot(exploding) is exploding
