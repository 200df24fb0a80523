"""``AsyncTracker`` (``_tracker`` + ``_events``) driven by real LangChain code.

Every test runs LangChain runnables, chat models, tools, retrievers and agents
with the tracker as a callback, synchronises on ``flush()`` and reads the files
back with ``asynctrack.read_events``. Nothing sleeps; every wait is bounded.
"""

from __future__ import annotations

import collections
import json
import math
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from _infra.graphs import interrupt_and_resume
from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import tool

import asynctrack
from asynctrack import AsyncTracker, TrackerClosedError
from asynctrack._demo._fakes import FakeChatOpenAI, FakeOpenAI
from asynctrack._demo._scenarios import aall_event_kinds, all_event_kinds, scenario_3_agent
from asynctrack._events._schema import EVENT_KINDS
from asynctrack._read._load import COLUMNS

EXPERIMENT = "exp"  # make_tracker's names
RUN = "r"
REPLY = "Hello SageMaker, nice to meet you."
END_KINDS = {k for k in EVENT_KINDS if k.endswith(("_end", "_error"))}
START_KINDS = {k for k in EVENT_KINDS if k.endswith("_start")}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _events(destination: Path) -> list[dict[str, Any]]:
    return asynctrack.read_events(destination)


def _by_kind(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for event in events:
        out[event["kind"]].append(event)
    return out


def _chat_messages() -> list[BaseMessage]:
    return [SystemMessage(content="You are terse."), HumanMessage(content="Say hello to SageMaker.")]


class ExplodingChat(BaseChatModel):
    """A chat model whose every call fails."""

    @property
    def _llm_type(self) -> str:
        return "exploding-chat"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise ConnectionError("llm exploded: upstream 503")


class TinyRetriever(BaseRetriever):
    """Documents whose content contains the query; the query "fail" fails."""

    docs: list[Document]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        if query == "fail":
            raise LookupError("retriever index missing")
        return [doc for doc in self.docs if query in doc.page_content]


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@tool
def explode(text: str) -> str:
    """Always fails."""
    raise ValueError(f"tool exploded on {text!r}")


# -- every kind, with the envelope ------------------------------------------------


@pytest.mark.anyio
async def test_every_event_kind_is_recorded_with_its_envelope(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker()
    # Sync APIs (invoke, stream, legacy chains, agent), then the async twins.
    await anyio.to_thread.run_sync(all_event_kinds, [tracker])
    await aall_event_kinds([tracker])
    await anyio.to_thread.run_sync(interrupt_and_resume, [tracker])  # LangGraph's lifecycle kinds
    with anyio.fail_after(30):
        await tracker.flush()

    events = _events(tmp_destination)
    kinds = _by_kind(events)
    assert set(kinds) == set(EVENT_KINDS), set(EVENT_KINDS) - set(kinds)

    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    assert seqs == list(range(len(seqs)))  # one tracker: nothing lost between 0 and the last
    stats = tracker.statistics()
    assert stats.written == stats.recorded == len(events)
    assert stats.dropped == stats.lost == stats.encode_errors == 0

    for event in events:
        assert tuple(k for k in COLUMNS if k in event) == COLUMNS
        assert event["experiment"] == EXPERIMENT
        assert event["run"] == RUN
        uuid.UUID(event["run_id"])
        if event["parent_run_id"] is not None:
            uuid.UUID(event["parent_run_id"])
        assert isinstance(event["tags"], list)
        assert isinstance(event["metadata"], dict)
        assert isinstance(event["ts"], float)
        assert isinstance(event["name"], str), event
        assert isinstance(event["data"], dict)
        if event["kind"] in END_KINDS:
            assert isinstance(event["duration"], float)
            assert event["duration"] >= 0.0
        else:
            assert event["duration"] is None
    # Every run that ended had started: ends pair with starts by run_id.
    started = {e["run_id"] for e in events if e["kind"] in START_KINDS}
    assert {e["run_id"] for e in events if e["kind"] in END_KINDS} <= started


# -- payloads ------------------------------------------------------------------------


def test_sync_chain_with_chat_model_records_inputs_messages_outputs_and_usage(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker()
    prompt = ChatPromptTemplate.from_messages([("system", "You are terse."), ("human", "Greet {who}.")])
    chat = FakeChatOpenAI(responses=[REPLY], temperature=0.3, model_name="gpt-fake-1")
    chain = prompt | chat | StrOutputParser()
    config = RunnableConfig(callbacks=[tracker], tags=["unit"], metadata={"user": "u-1", "n": 3})

    assert chain.invoke({"who": "SageMaker"}, config=config) == REPLY
    tracker.flush_blocking(timeout=10)

    kinds = _by_kind(_events(tmp_destination))
    outer = kinds["chain_start"][0]
    assert outer["data"]["inputs"] == {"who": "SageMaker"}
    assert outer["parent_run_id"] is None
    assert outer["tags"] == ["unit"]
    assert outer["metadata"]["user"] == "u-1"
    assert outer["metadata"]["n"] == 3
    assert outer["name"] == "RunnableSequence"

    (start,) = kinds["chat_model_start"]
    assert start["parent_run_id"] == outer["run_id"]
    assert start["name"] == "FakeChatOpenAI"
    assert start["metadata"]["user"] == "u-1"
    assert "unit" in start["tags"]
    (messages,) = start["data"]["messages"]
    assert [(m["type"], m["content"]) for m in messages] == [
        ("system", "You are terse."),
        ("human", "Greet SageMaker."),
    ]
    params = start["data"]["invocation_params"]
    assert params["temperature"] == 0.3
    assert params["model_name"] == "gpt-fake-1"

    (end,) = kinds["llm_end"]
    assert end["run_id"] == start["run_id"]
    assert end["name"] == "FakeChatOpenAI"
    assert end["duration"] >= 0.0
    (generations,) = end["data"]["response"]["generations"]
    assert generations[0]["text"] == REPLY
    message = generations[0]["message"]
    assert message["content"] == REPLY
    usage = message["usage_metadata"]
    assert usage["output_tokens"] == 6
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    token_usage = end["data"]["response"]["llm_output"]["token_usage"]  # not redacted
    assert token_usage["total_tokens"] == usage["total_tokens"]

    outer_end = next(e for e in kinds["chain_end"] if e["run_id"] == outer["run_id"])
    assert outer_end["data"]["outputs"] == REPLY
    assert outer_end["name"] == "RunnableSequence"
    assert outer_end["tags"] == ["unit"]


def test_streaming_chat_model_records_every_token(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker()
    chat = FakeChatOpenAI(responses=[REPLY])
    streamed = "".join(str(c.content) for c in chat.stream(_chat_messages(), config={"callbacks": [tracker]}))
    assert streamed == REPLY
    tracker.flush_blocking(timeout=10)

    kinds = _by_kind(_events(tmp_destination))
    tokens = kinds["llm_new_token"]
    (start,) = kinds["chat_model_start"]
    assert {t["run_id"] for t in tokens} == {start["run_id"]}
    assert {t["name"] for t in tokens} == {"FakeChatOpenAI"}
    assert "".join(t["data"]["chunk"]["message"]["content"] for t in tokens) == REPLY
    (end,) = kinds["llm_end"]
    assert end["data"]["response"]["generations"][0][0]["text"] == REPLY
    assert end["data"]["response"]["generations"][0][0]["message"]["usage_metadata"]["output_tokens"] == 6


def test_llm_new_token_keeps_the_token_text(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    """The streamed token is the generated text, not a credential.

    ``data.token`` matches the default key-redaction regex ``(?:^|_)token$``, so
    every streamed token is written as ``"[REDACTED]"`` today.
    """
    tracker = make_tracker()
    chat = FakeChatOpenAI(responses=[REPLY])
    for _ in chat.stream(_chat_messages(), config={"callbacks": [tracker]}):
        pass
    tracker.flush_blocking(timeout=10)

    tokens = _by_kind(_events(tmp_destination))["llm_new_token"]
    assert "".join(t["data"]["token"] for t in tokens) == REPLY


@pytest.mark.anyio
async def test_async_invoke_astream_and_astream_events_v2(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker()
    config = RunnableConfig(callbacks=[tracker], metadata={"path": "async"})
    chat = FakeChatOpenAI(responses=[REPLY], temperature=0.5)

    reply = await chat.ainvoke(_chat_messages(), config=config)
    assert reply.content == REPLY
    chunks = [c async for c in chat.astream(_chat_messages(), config=config)]
    assert "".join(str(c.content) for c in chunks) == REPLY
    seen = [e["event"] async for e in chat.astream_events(_chat_messages(), config=config, version="v2")]
    assert "on_chat_model_stream" in seen
    doubled = await RunnableLambda(lambda x: x * 2).ainvoke(21, config=config)
    assert doubled == 42
    with anyio.fail_after(10):
        await tracker.flush()

    kinds = _by_kind(_events(tmp_destination))
    assert len(kinds["chat_model_start"]) == 3
    assert len(kinds["llm_end"]) == 3
    assert all(e["metadata"]["path"] == "async" for e in kinds["chat_model_start"])
    texts = [e["data"]["response"]["generations"][0][0]["text"] for e in kinds["llm_end"]]
    assert texts == [REPLY, REPLY, REPLY]
    # astream and astream_events each streamed the reply token by token.
    runs = collections.Counter(e["run_id"] for e in kinds["llm_new_token"])
    assert len(runs) == 2
    (lam_start,) = kinds["chain_start"]
    assert lam_start["data"]["inputs"] == 21
    (lam_end,) = kinds["chain_end"]
    assert lam_end["data"]["outputs"] == 42


def test_tool_start_end_and_error(make_tracker: Callable[..., AsyncTracker], tmp_destination: Path) -> None:
    tracker = make_tracker()
    config = RunnableConfig(callbacks=[tracker], metadata={"tool_meta": True})
    assert multiply.invoke({"a": 6, "b": 7}, config=config) == 42
    with pytest.raises(ValueError, match="tool exploded"):
        explode.invoke({"text": "boom"}, config=config)
    tracker.flush_blocking(timeout=10)

    kinds = _by_kind(_events(tmp_destination))
    ok_start, bad_start = kinds["tool_start"]
    assert ok_start["name"] == "multiply"
    assert ok_start["data"]["inputs"] == {"a": 6, "b": 7}
    assert "6" in ok_start["data"]["input_str"]
    assert ok_start["metadata"]["tool_meta"] is True
    (end,) = kinds["tool_end"]
    assert end["run_id"] == ok_start["run_id"]
    assert end["data"]["output"] == 42
    assert end["duration"] >= 0.0
    (error,) = kinds["tool_error"]
    assert error["run_id"] == bad_start["run_id"]
    assert error["name"] == "explode"
    assert error["data"]["error"]["type"] == "ValueError"
    assert error["data"]["error"]["message"] == "tool exploded on 'boom'"
    assert "in explode" in error["data"]["error"]["traceback"]
    assert error["duration"] >= 0.0


@pytest.mark.anyio
async def test_retriever_start_end_and_error(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker()
    retriever = TinyRetriever(
        docs=[Document(page_content="alpha beta", metadata={"id": 1}), Document(page_content="gamma")]
    )
    config = RunnableConfig(callbacks=[tracker])
    found = retriever.invoke("alpha", config=config)
    assert [d.page_content for d in found] == ["alpha beta"]
    assert len(await retriever.ainvoke("gamma", config=config)) == 1
    with pytest.raises(LookupError):
        retriever.invoke("fail", config=config)
    with anyio.fail_after(10):
        await tracker.flush()

    kinds = _by_kind(_events(tmp_destination))
    assert [e["data"]["query"] for e in kinds["retriever_start"]] == ["alpha", "gamma", "fail"]
    first_end = kinds["retriever_end"][0]
    assert first_end["data"]["documents"] == [
        {"id": None, "metadata": {"id": 1}, "page_content": "alpha beta", "type": "Document"}
    ]
    assert first_end["name"] == "TinyRetriever"
    (error,) = kinds["retriever_error"]
    assert error["data"]["error"]["type"] == "LookupError"
    assert error["data"]["error"]["message"] == "retriever index missing"


def test_chain_and_llm_errors_keep_type_message_and_traceback(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker()

    def failing_step(value: str) -> str:
        raise KeyError(f"missing {value}")

    with pytest.raises(KeyError):
        RunnableLambda(failing_step).invoke("x", config={"callbacks": [tracker]})
    with pytest.raises(ConnectionError):
        (RunnableLambda(lambda x: x) | ExplodingChat()).invoke("hi", config={"callbacks": [tracker]})
    tracker.flush_blocking(timeout=10)

    kinds = _by_kind(_events(tmp_destination))
    chain_error = next(e for e in kinds["chain_error"] if e["name"] == "failing_step")
    assert chain_error["data"]["error"]["type"] == "KeyError"
    assert chain_error["data"]["error"]["message"] == "'missing x'"
    assert "failing_step" in chain_error["data"]["error"]["traceback"]
    assert chain_error["duration"] >= 0.0

    (llm_error,) = kinds["llm_error"]
    assert llm_error["name"] == "ExplodingChat"
    assert llm_error["data"]["error"]["type"] == "ConnectionError"
    assert llm_error["data"]["error"]["message"] == "llm exploded: upstream 503"
    assert "_generate" in llm_error["data"]["error"]["traceback"]
    sequence = next(e for e in kinds["chain_start"] if e["name"] == "RunnableSequence")
    assert llm_error["parent_run_id"] == sequence["run_id"]
    # The sequence fails too, and says so.
    assert any(e["run_id"] == sequence["run_id"] for e in kinds["chain_error"])


def test_on_text_from_a_run_manager(make_tracker: Callable[..., AsyncTracker], tmp_destination: Path) -> None:
    tracker = make_tracker()

    def narrate(value: str, run_manager: Any) -> str:
        run_manager.on_text(f"narrating {value}")
        return value

    RunnableLambda(narrate).invoke("story", config={"callbacks": [tracker]})
    tracker.flush_blocking(timeout=10)

    kinds = _by_kind(_events(tmp_destination))
    (text,) = kinds["text"]
    assert text["data"]["text"] == "narrating story"
    assert text["run_id"] == kinds["chain_start"][0]["run_id"]
    assert text["name"] == "narrate"


def test_on_retry_from_langchain_retry_decorator(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    """langchain-core emits ``on_retry`` from ``create_base_retry_decorator`` (legacy LLMs)."""
    tracker = make_tracker()
    llm = FakeOpenAI(responses=["fine"], transient_failures=2, max_retries=3)
    assert llm.invoke("q", config={"callbacks": [tracker]}) == "fine"
    tracker.flush_blocking(timeout=10)

    kinds = _by_kind(_events(tmp_destination))
    (llm_start,) = kinds["llm_start"]
    assert llm_start["data"]["prompts"] == ["q"]
    assert llm_start["data"]["invocation_params"]["model_name"] == "gpt-3.5-turbo-instruct"
    assert llm_start["data"]["invocation_params"]["max_tokens"] == 256  # not redacted
    retries = kinds["retry"]
    assert [r["data"]["attempt_number"] for r in retries] == [1, 2]
    for retry in retries:
        state = retry["data"]
        assert state["next_sleep"] == 0.0
        assert state["exception"]["type"] == "asynctrack._demo._fakes.FakeTransientError"
        assert state["exception"]["message"].startswith("Simulated transient error")
        assert retry["name"] == "FakeOpenAI"
        assert retry["run_id"] == kinds["llm_start"][0]["run_id"]
    assert kinds["llm_end"][0]["data"]["response"]["generations"][0][0]["text"] == "fine"


def test_custom_event_with_metadata(make_tracker: Callable[..., AsyncTracker], tmp_destination: Path) -> None:
    from langchain_core.callbacks import dispatch_custom_event

    tracker = make_tracker()

    def step(value: int) -> int:
        dispatch_custom_event("progress", {"done": value, "of": 10})
        return value

    RunnableLambda(step).invoke(3, config={"callbacks": [tracker], "metadata": {"job": "j1"}})
    tracker.flush_blocking(timeout=10)

    kinds = _by_kind(_events(tmp_destination))
    (custom,) = kinds["custom_event"]
    assert custom["data"] == {"name": "progress", "data": {"done": 3, "of": 10}}
    assert custom["name"] == "progress"
    assert custom["metadata"]["job"] == "j1"
    assert custom["run_id"] == kinds["chain_start"][0]["run_id"]


def test_agent_action_and_finish_from_a_real_agent_executor(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker()
    answer = scenario_3_agent([tracker])
    tracker.flush_blocking(timeout=10)

    kinds = _by_kind(_events(tmp_destination))
    actions = [e["data"]["action"] for e in kinds["agent_action"]]
    assert [a["tool"] for a in actions] == ["Search", "Calculator"]
    assert actions[0]["tool_input"] == "oldest person alive"
    (finish,) = kinds["agent_finish"]
    assert finish["data"]["finish"]["return_values"]["output"] == answer
    assert finish["name"] == "AgentExecutor"
    # The tools ran under the agent: their inputs and outputs are there.
    tool_inputs = [e["data"]["input_str"] for e in kinds["tool_start"]]
    assert "oldest person alive" in tool_inputs


# -- lifecycle ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_with_closes_and_aclose_twice_is_harmless(tmp_destination: Path) -> None:
    async with AsyncTracker(tmp_destination, experiment_name="e", run_name="r") as tracker:
        RunnableLambda(lambda x: x).invoke(1, config={"callbacks": [tracker]})
    assert tracker.closed
    await tracker.aclose()
    await tracker.aclose()
    tracker.close()
    assert len(_events(tmp_destination)) == 2  # closing flushed chain_start + chain_end


def test_close_flushes_pending_events_and_later_use_is_refused(tmp_destination: Path) -> None:
    tracker = AsyncTracker(tmp_destination, experiment_name="e", run_name="r")
    with tracker:
        for i in range(5):
            RunnableLambda(lambda x: x + 1).invoke(i, config={"callbacks": [tracker]})
    assert tracker.closed
    assert len(_events(tmp_destination)) == 10

    with pytest.raises(TrackerClosedError, match=r"^flush\(\) called on a closed tracker$"):
        anyio.run(tracker.flush)
    with pytest.raises(TrackerClosedError):
        tracker.flush_blocking()
    # Recording after close never raises into the chain; each event counts as dropped.
    assert RunnableLambda(lambda x: x * 3).invoke(2, config={"callbacks": [tracker]}) == 6
    stats = tracker.statistics()
    assert stats.dropped == 2
    assert stats.written == 10
    assert len(_events(tmp_destination)) == 10


def test_run_parameters_written_beside_the_events(tmp_destination: Path) -> None:
    with AsyncTracker(tmp_destination, experiment_name="params-exp", run_name="params-run") as tracker:
        chat = FakeChatOpenAI(responses=[REPLY], temperature=0.25, model_name="gpt-fake-2", max_tokens=64)
        chat.invoke(_chat_messages(), config={"callbacks": [tracker]})
        multiply.invoke({"a": 1, "b": 2}, config={"callbacks": [tracker]})

    (params_file,) = (tmp_destination / "experiment=params-exp" / "run=params-run" / "params").glob("*.json")
    document = json.loads(params_file.read_bytes())
    assert document["experiment"] == "params-exp"
    assert document["run"] == "params-run"
    assert document["events_uri"] == tracker.events_uri
    parameters = document["parameters"]
    assert parameters["temperature"] == 0.25
    assert parameters["model_name"] == "gpt-fake-2"
    assert parameters["max_tokens"] == 64
    counts = collections.Counter(e["kind"] for e in _events(tmp_destination))
    for kind, count in counts.items():
        assert parameters[f"events_{kind}"] == count
    assert parameters["events_total"] == sum(counts.values())
    assert parameters["tokens_total"] == parameters["tokens_prompt"] + parameters["tokens_completion"]
    assert not math.isnan(parameters["tokens_total"])


def test_an_odd_run_id_is_written_as_its_text_never_a_placeholder(tmp_path: Path) -> None:
    """A run id orjson cannot write (a set) or cannot hash (a list) is written as its text
    (CAPTURE.md); the events around it are written as they were (in both worker modes:
    the shipper must not turn it into something else)."""
    good = uuid.uuid4()
    with AsyncTracker(tmp_path, experiment_name="e", run_name="r") as tracker:
        tracker.on_text("before", run_id=good)
        tracker.on_text("a set", run_id={1, 2})  # type: ignore[arg-type]
        tracker.on_text("a list", run_id=[1, 2])  # type: ignore[arg-type]
        tracker.on_text("after", run_id=good)
        tracker.flush_blocking(timeout=30)
        stats = tracker.statistics()
    events = asynctrack.read_events(tmp_path, "e", "r")
    assert [(e["data"]["text"], e["run_id"]) for e in events] == [
        ("before", str(good)),
        ("a set", "{1, 2}"),
        ("a list", "[1, 2]"),
        ("after", str(good)),
    ]
    assert stats.encode_errors == 0
