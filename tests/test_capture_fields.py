"""LangChain's objects read as their fields before the capture's walk (``fields_of``):
the same bytes as the objects' own walk, one walk, the caller's objects untouched, and
whatever would lose data left for the careful path."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation, GenerationChunk, LLMResult
from langchain_core.prompt_values import ChatPromptValue, StringPromptValue

from asynctrack import AsyncTracker
from asynctrack._capture import DICT_OF, MARK, OPTIONS, fields_of


class Slotted:
    __slots__ = ("kept",)

    def __init__(self, kept: Any) -> None:
        self.kept = kept


def _message(content: str = "Par") -> AIMessageChunk:
    return AIMessageChunk(content=content, response_metadata={"model_provider": "openai"})


_TOOL_CALL = {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"}
_VALUES = {
    "token": ChatGenerationChunk(message=_message()),
    "last-token": ChatGenerationChunk(message=_message(""), generation_info={"finish_reason": "stop"}),
    "text-token": GenerationChunk(text="tok"),
    "chat-result": LLMResult(
        generations=[[ChatGeneration(message=AIMessage("a", tool_calls=[_TOOL_CALL]))]],
        llm_output={"token_usage": {"total_tokens": 3}, "model_name": None},
    ),
    "text-result": LLMResult(generations=[[Generation(text="t"), Generation(text="u")], []]),
    "string-prompt": StringPromptValue(text="null"),
    "chat-prompt": ChatPromptValue(messages=[SystemMessage("s"), HumanMessage("h")]),
    "document": Document(page_content="p", metadata={"source": None}),
    "plain": {"outputs": [1, None, "x"]},
}


@pytest.mark.parametrize("value", _VALUES.values(), ids=_VALUES.keys())
def test_fields_are_written_as_the_objects_walk_writes_them_with_no_object_left(value: Any) -> None:
    found: list[Any] = []
    written = orjson.dumps(fields_of(value), default=found.append, option=OPTIONS)
    assert found == []  # one walk writes the event
    assert written == orjson.dumps(value, default=DICT_OF, option=OPTIONS)


class Colour(enum.Enum):
    RED = "red"


@pytest.mark.parametrize("value", [Colour.RED, {"c": Colour.RED}], ids=["member", "in-a-dict"])
def test_an_enum_member_is_left_for_orjson_which_writes_its_value(value: Any) -> None:
    assert fields_of(value) is value
    assert orjson.dumps(fields_of(value), option=OPTIONS) in (b'"red"', b'{"c":"red"}')


def test_the_callers_objects_are_not_changed() -> None:
    chunk = ChatGenerationChunk(message=_message())
    result = LLMResult(generations=[[ChatGeneration(message=AIMessage("a"))]])
    fields_of(chunk)
    fields_of(result)
    assert type(chunk.message) is AIMessageChunk
    assert type(result.generations[0][0]) is ChatGeneration
    assert type(result.generations[0][0].message) is AIMessage


def test_what_would_lose_data_is_left_as_an_object() -> None:
    """A message with an extra field (``extra="allow"``), an object without ``__dict__``
    in a generation's info: left for the walk to meet (the careful path writes them)."""
    extra = AIMessageChunk(content="x", note="kept")  # type: ignore[call-arg] # extra="allow"
    assert fields_of(ChatGenerationChunk(message=extra))["message"] is extra
    slotted = Slotted(1)
    fields = fields_of(ChatGenerationChunk(message=_message(), generation_info={"s": slotted}))
    assert fields["generation_info"]["s"] is slotted


def _tokens(tracker: AsyncTracker, *chunks: ChatGenerationChunk) -> list[dict[str, Any]]:
    """The bodies the handler's hot path captures for streamed ``chunks``."""
    records: list[Any] = []
    tracker._put = records.append  # type: ignore[method-assign]
    for chunk in chunks:
        tracker.on_llm_new_token(chunk.text, chunk=chunk, run_id=uuid.uuid4())
    return [orjson.loads(record[6])["data"] for record in records]


def test_a_streamed_chunks_message_extras_and_odd_values_are_written(
    make_tracker: Callable[..., AsyncTracker],
) -> None:
    extra = AIMessageChunk(content="x", note="kept")  # type: ignore[call-arg] # extra="allow"
    odd = ChatGenerationChunk(message=_message(), generation_info={"s": Slotted("in a slot")})
    first, second = _tokens(make_tracker(), ChatGenerationChunk(message=extra), odd)
    assert first["chunk"]["message"]["note"] == "kept"
    assert first["chunk"]["message"]["content"] == "x"
    assert second["chunk"]["generation_info"]["s"] == {"kept": "in a slot"}
    assert MARK not in second["chunk"]
