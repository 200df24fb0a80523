"""Tests for the offline demo scenarios and the fake OpenAI models.

A plain `BaseCallbackHandler` subclass records every callback it receives;
the tests prove that each notebook scenario runs offline, which callbacks it
fires (with which payloads), and that `all_event_kinds` + `aall_event_kinds`
together fire every `on_*` method `BaseCallbackHandler` defines.
"""

from __future__ import annotations

import asyncio
import inspect
import warnings
from dataclasses import dataclass
from typing import Any

import pytest
from langchain_core._api import LangChainDeprecationWarning
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.outputs import ChatGenerationChunk, GenerationChunk, LLMResult

from asynctrack._demo._fakes import FakeChatOpenAI, FakeOpenAI, FakeTransientError
from asynctrack._demo._scenarios import (
    EXPERIMENT_NAME,
    HPARAMS,
    SCENARIO_3_QUESTION,
    SCENARIOS,
    aall_event_kinds,
    all_event_kinds,
    scenario_1_llm,
    scenario_2_sequential,
    scenario_3_agent,
)

# Every `on_*` callback method of the installed langchain-core, by
# introspection (langchain-core 1.7: 20 methods, incl. `on_stream_event`).
CALLBACK_METHODS: frozenset[str] = frozenset(
    name for name, _ in inspect.getmembers(BaseCallbackHandler, inspect.isfunction) if name.startswith("on_")
)

# Callback methods the installed langchain-core cannot emit, with the reason.
# Empty for langchain-core 1.7.x: every method has an emitting code path.
# Two are only reachable through specific paths, which `all_event_kinds` uses:
# * `on_retry`: only `langchain_core.language_models.llms.
#   create_base_retry_decorator(..., run_manager=...)` calls it (legacy
#   provider retry loops; `FakeOpenAI(transient_failures=...)` uses it).
#   `Runnable.with_retry()` does NOT emit `on_retry`; it only re-runs the
#   child with a "retry:attempt:N" tag.
# * `on_stream_event`: only chat models streamed via
#   `stream_events(version="v3")` / `astream_events(version="v3")` (beta), or
#   invoked while a `_V2StreamingCallbackHandler` is attached.
UNEMITTABLE: dict[str, str] = {}

# Methods LangChain has always had; guards against the introspection above
# silently shrinking (e.g. if the base class were refactored).
KNOWN_METHODS: frozenset[str] = frozenset(
    {
        "on_agent_action",
        "on_agent_finish",
        "on_chain_end",
        "on_chain_error",
        "on_chain_start",
        "on_chat_model_start",
        "on_custom_event",
        "on_llm_end",
        "on_llm_error",
        "on_llm_new_token",
        "on_llm_start",
        "on_retriever_end",
        "on_retriever_error",
        "on_retriever_start",
        "on_retry",
        "on_text",
        "on_tool_end",
        "on_tool_error",
        "on_tool_start",
    }
)


@dataclass
class Call:
    """One recorded callback invocation."""

    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def _recorder(method_name: str) -> Any:
    """Build a recording `on_*` method.

    Args:
        method_name: The callback method's name.

    Returns:
        A method appending a `Call` to `self.calls`.
    """

    def method(self: RecordingHandler, *args: Any, **kwargs: Any) -> None:
        self.calls.append(Call(method_name, args, kwargs))

    method.__name__ = method_name
    return method


class RecordingHandler(BaseCallbackHandler):
    """Plain `BaseCallbackHandler` recording every `on_*` call it receives.

    The methods are generated from `CALLBACK_METHODS`, so the handler
    overrides every callback of the installed langchain-core (in particular
    `on_chat_model_start`, whose base implementation raises
    `NotImplementedError` to fall back to `on_llm_start`).
    """

    def __init__(self) -> None:
        """Start with an empty log."""
        self.calls: list[Call] = []

    @property
    def names(self) -> list[str]:
        """Names of the callbacks received, in order."""
        return [call.name for call in self.calls]

    def of(self, name: str) -> list[Call]:
        """Return the recorded calls of one callback method.

        Args:
            name: The callback method's name.

        Returns:
            The matching calls, in order.
        """
        return [call for call in self.calls if call.name == name]


def _token(call: Call) -> Any:
    """Return the token of an `on_llm_new_token` call.

    The sync callback manager passes it as `token=`, the async one
    positionally.

    Args:
        call: A recorded `on_llm_new_token` call.

    Returns:
        The token.
    """
    return call.kwargs["token"] if "token" in call.kwargs else call.args[0]


for _name in CALLBACK_METHODS:
    setattr(RecordingHandler, _name, _recorder(_name))


# --------------------------------------------------------------------------
# Introspection sanity
# --------------------------------------------------------------------------


def test_callback_methods_introspection() -> None:
    assert KNOWN_METHODS <= CALLBACK_METHODS
    assert set(UNEMITTABLE) <= CALLBACK_METHODS
    handler = RecordingHandler()
    for name in CALLBACK_METHODS:
        assert getattr(RecordingHandler, name) is not getattr(BaseCallbackHandler, name), name
    assert handler.calls == []


def test_constants() -> None:
    assert HPARAMS == {"temperature": 0.1, "model_name": "gpt-3.5-turbo-instruct"}
    assert EXPERIMENT_NAME == "langchain-sagemaker-tracker"
    assert list(SCENARIOS) == ["run-scenario-1", "run-scenario-2", "run-scenario-3"]
    assert SCENARIOS["run-scenario-1"] is scenario_1_llm
    assert SCENARIOS["run-scenario-2"] is scenario_2_sequential
    assert SCENARIOS["run-scenario-3"] is scenario_3_agent


# --------------------------------------------------------------------------
# The three notebook scenarios
# --------------------------------------------------------------------------


def _assert_llm_payloads(handler: RecordingHandler) -> None:
    """Check the hyperparameters and token usage every LLM run reports.

    Args:
        handler: The recording handler of a scenario run.
    """
    starts = handler.of("on_llm_start")
    assert starts
    for call in starts:
        serialized, prompts = call.args
        assert serialized["id"][-1] == "FakeOpenAI"
        assert isinstance(prompts, list)
        assert all(isinstance(p, str) for p in prompts)
        params = call.kwargs["invocation_params"]
        assert params["temperature"] == HPARAMS["temperature"]
        assert params["model_name"] == HPARAMS["model_name"]
        assert params["_type"] == "fake-openai"
        assert {"max_tokens", "top_p", "stop"} <= set(params)
        # Legacy chains call `generate_prompt`, which (unlike `invoke`) adds
        # no `ls_*` tracing params to `metadata`.
        assert isinstance(call.kwargs["metadata"], dict)
    for call in handler.of("on_llm_end"):
        (response,) = call.args
        assert isinstance(response, LLMResult)
        assert response.llm_output is not None
        usage = response.llm_output["token_usage"]
        assert usage["total_tokens"] == (usage["prompt_tokens"] + usage["completion_tokens"])
        assert usage["completion_tokens"] == len(response.generations[0][0].text.split())


def test_scenario_1_llm() -> None:
    handler = RecordingHandler()
    output = scenario_1_llm([handler])

    assert "fish" in output
    assert handler.names == [
        "on_chain_start",
        "on_text",
        "on_llm_start",
        "on_llm_end",
        "on_chain_end",
    ]
    chain_start = handler.of("on_chain_start")[0]
    assert chain_start.args[1] == {"topic": "fish"}
    assert chain_start.kwargs["name"] == "LLMChain"
    assert handler.of("on_llm_start")[0].args[1] == ["tell me a joke about fish"]
    assert handler.of("on_chain_end")[0].args[0] == {"text": output}
    usage = handler.of("on_llm_end")[0].args[0].llm_output["token_usage"]
    assert usage["prompt_tokens"] == 6  # words in the prompt
    _assert_llm_payloads(handler)


def test_scenario_2_sequential() -> None:
    handler = RecordingHandler()
    output = scenario_2_sequential([handler])

    assert output.strip().startswith("Level Up is a warm")  # the scripted review
    assert handler.names.count("on_chain_start") == 3
    assert handler.names.count("on_chain_end") == 3
    assert handler.names.count("on_llm_start") == 2
    first, second = (c.args[1][0] for c in handler.of("on_llm_start"))
    assert first.startswith("You are a playwright.")
    assert "Title: documentary about good video games" in first
    assert second.startswith("You are a play critic from the New York Times.")
    outer_start = handler.of("on_chain_start")[0]
    assert outer_start.kwargs["name"] == "SimpleSequentialChain"
    assert outer_start.args[1] == {
        "input": ("documentary about good video games that push the boundary of game design")
    }
    assert handler.of("on_chain_end")[-1].args[0] == {"output": output}
    _assert_llm_payloads(handler)


def test_scenario_3_agent() -> None:
    handler = RecordingHandler()
    output = scenario_3_agent([handler])

    assert "116" in output
    assert "1310.18" in output
    actions = [c.args[0] for c in handler.of("on_agent_action")]
    assert [a.tool for a in actions] == ["Search", "Calculator"]
    assert actions[0].tool_input == "oldest person alive"
    assert actions[1].tool_input == "116^1.51"
    (finish,) = handler.of("on_agent_finish")
    assert finish.args[0].return_values == {"output": output}
    tool_starts = handler.of("on_tool_start")
    assert [c.args[0]["name"] for c in tool_starts] == ["Search", "Calculator"]
    tool_outputs = [c.args[0] for c in handler.of("on_tool_end")]
    assert "116" in tool_outputs[0]
    assert tool_outputs[1].startswith("Answer: 1310.18")
    # agent x3 + LLMMathChain x1 share the same LLM
    assert handler.names.count("on_llm_start") == 4
    agent_start = handler.of("on_chain_start")[0]
    assert agent_start.kwargs["name"] == "AgentExecutor"
    assert agent_start.args[1] == {"input": SCENARIO_3_QUESTION}
    _assert_llm_payloads(handler)


@pytest.mark.parametrize("run_name", list(SCENARIOS))
def test_scenarios_are_deterministic(run_name: str) -> None:
    scenario = SCENARIOS[run_name]
    first, second = RecordingHandler(), RecordingHandler()
    assert scenario([first]) == scenario([second])
    assert first.names == second.names


def test_deprecation_filter_is_scoped() -> None:
    before = list(warnings.filters)
    for scenario in SCENARIOS.values():
        scenario([RecordingHandler()])
    assert warnings.filters == before
    # The deprecation filter is not global: LangChain deprecation warnings
    # outside the scenarios still surface (and fail under `-W error`).
    with pytest.warns(LangChainDeprecationWarning):
        warnings.warn("outside", LangChainDeprecationWarning, stacklevel=1)


# --------------------------------------------------------------------------
# Every callback kind
# --------------------------------------------------------------------------


def test_all_event_kinds_fire_every_callback() -> None:
    sync_handler, async_handler = RecordingHandler(), RecordingHandler()
    all_event_kinds([sync_handler])  # returns normally despite the errors
    assert asyncio.run(aall_event_kinds([async_handler])) is None

    expected = CALLBACK_METHODS - set(UNEMITTABLE)
    fired = set(sync_handler.names) | set(async_handler.names)
    assert fired == expected, f"missing: {sorted(expected - fired)}"
    # Each run covers everything by itself, too. On the async path `on_retry`
    # is delivered from a background task, so it is not required there.
    assert set(sync_handler.names) == expected
    assert expected - set(async_handler.names) <= {"on_retry"}


@pytest.mark.parametrize("use_async", [False, True])
def test_all_event_kinds_payloads(use_async: bool) -> None:
    handler = RecordingHandler()
    if use_async:
        asyncio.run(aall_event_kinds([handler]))
    else:
        all_event_kinds([handler])

    # Streaming tokens: text LLM -> GenerationChunk, chat -> ChatGenerationChunk.
    chunks = [c.kwargs["chunk"] for c in handler.of("on_llm_new_token")]
    assert any(isinstance(c, GenerationChunk) for c in chunks)
    assert any(isinstance(c, ChatGenerationChunk) for c in chunks)
    assert all(isinstance(_token(c), str) for c in handler.of("on_llm_new_token"))

    # Chat model start: messages are list[list[BaseMessage]] + invocation_params.
    chat_start = handler.of("on_chat_model_start")[0]
    assert isinstance(chat_start.args[1][0][-1], HumanMessage)
    assert chat_start.kwargs["invocation_params"]["_type"] == "fake-openai-chat"

    # Chat model end carries usage_metadata on the AIMessage.
    chat_ends = [
        gen.message
        for c in handler.of("on_llm_end")
        for gen in c.args[0].generations[0]
        if hasattr(gen, "message")
    ]
    assert chat_ends
    assert all(m.usage_metadata is not None for m in chat_ends)

    # Structured tool: `inputs` kwarg holds the dict input.
    tool_inputs = [c.kwargs.get("inputs") for c in handler.of("on_tool_start")]
    assert {"text": "one two three"} in tool_inputs

    (custom,) = handler.of("on_custom_event")
    assert custom.args == (
        "asynctrack.progress",
        {"step": "upper", "input": "progress"},
    )

    errors = [type(c.args[0]) for c in handler.of("on_llm_error")]
    assert errors == [FakeTransientError]
    assert {type(c.args[0]) for c in handler.of("on_chain_error")} == {
        FakeTransientError,
        RuntimeError,
    }
    (retriever_end,) = handler.of("on_retriever_end")
    assert [d.metadata["id"] for d in retriever_end.args[0]] == [2]
    stream_events = [c.args[0]["event"] for c in handler.of("on_stream_event")]
    assert stream_events[0] == "message-start"
    assert stream_events[-1] == "message-finish"


# --------------------------------------------------------------------------
# The fakes
# --------------------------------------------------------------------------


def test_fake_openai_cycles_streams_and_stops() -> None:
    # `model=` is accepted as an alias of `model_name=` (like langchain-openai).
    alias: dict[str, Any] = {"model": "m-1"}
    llm = FakeOpenAI(responses=["one two", "three four five"], **alias)
    assert llm.model_name == "m-1"
    assert llm.invoke("a") == "one two"
    assert llm.invoke("b") == "three four five"
    assert llm.invoke("c") == "one two"
    assert llm.invoke("d", stop=[" four"]) == "three"

    handler = RecordingHandler()
    streamed = list(llm.stream("e", config={"callbacks": [handler]}))
    assert streamed == ["one ", "two"]
    assert [_token(c) for c in handler.of("on_llm_new_token")] == streamed

    result = llm.generate(["x y z"])
    assert result.llm_output == {
        "token_usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
        "model_name": "m-1",
    }


def test_fake_openai_streaming_flag_and_async() -> None:
    handler = RecordingHandler()
    llm = FakeOpenAI(responses=["a b c"], streaming=True, temperature=0.2)
    assert llm.invoke("q", config={"callbacks": [handler]}) == "a b c"
    assert handler.names.count("on_llm_new_token") == 3
    assert asyncio.run(llm.ainvoke("q")) == "a b c"

    async def collect() -> list[str]:
        return [tok async for tok in llm.astream("q")]

    assert asyncio.run(collect()) == ["a ", "b ", "c"]


def test_fake_openai_retries_and_errors() -> None:
    handler = RecordingHandler()
    llm = FakeOpenAI(responses=["ok"], transient_failures=2, max_retries=2)
    assert llm.invoke("q", config={"callbacks": [handler]}) == "ok"
    assert handler.names == ["on_llm_start", "on_retry", "on_retry", "on_llm_end"]

    handler = RecordingHandler()
    failing = FakeOpenAI(transient_failures=5, max_retries=0)
    with pytest.raises(FakeTransientError):
        failing.invoke("q", config={"callbacks": [handler]})
    assert handler.names == ["on_llm_start", "on_llm_error"]


def test_fake_chat_openai() -> None:
    chat = FakeChatOpenAI(responses=["hi there"], temperature=0.1, model_name="gpt-4o")
    message = chat.invoke([HumanMessage(content="say hi")])
    assert isinstance(message, AIMessage)
    assert message.content == "hi there"
    assert message.usage_metadata == {
        "input_tokens": 2,
        "output_tokens": 2,
        "total_tokens": 4,
    }
    assert message.response_metadata["model_name"] == "gpt-4o"

    handler = RecordingHandler()
    chunks = list(chat.stream("say hi", config={"callbacks": [handler]}))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(str(c.content) for c in chunks) == "hi there"
    assert chunks[-1].usage_metadata is not None
    assert handler.names[0] == "on_chat_model_start"
    assert handler.names[-1] == "on_llm_end"
    params = handler.of("on_chat_model_start")[0].kwargs["invocation_params"]
    assert params["temperature"] == 0.1
    assert params["model_name"] == "gpt-4o"

    async def run() -> AIMessage:
        return await chat.ainvoke("x")

    assert asyncio.run(run()).content == "hi there"
