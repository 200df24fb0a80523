"""Offline, deterministic reproduction of the LangChain SageMaker-tracking demo.

The LangChain docs notebook for the (sunset) `SageMakerCallbackHandler` runs
three scenarios against OpenAI and SerpAPI. This module reproduces them with
`asynctrack._demo._fakes.FakeOpenAI` and a local fake search tool, so they run
without network access and always produce the same output:

* `scenario_1_llm`: a single `LLMChain` ("tell me a joke about {topic}").
* `scenario_2_sequential`: a `SimpleSequentialChain` of two `LLMChain`s
  (play synopsis, then a review).
* `scenario_3_agent`: a zero-shot ReAct agent with a "Search" tool and a
  "Calculator" tool (the real `LLMMathChain`, evaluated with numexpr).

Callbacks are attached exactly where the notebook attaches them: on the LLM,
on the chains and on the tools (constructor callbacks, not `config`).

It also provides `all_event_kinds` / `aall_event_kinds`, small runs that
together make langchain-core emit every callback kind of
`BaseCallbackHandler`, for exercising callback handlers.

LangChain deprecation warnings raised by the legacy APIs the notebook uses
(`LLMChain`, `Chain.run`, `initialize_agent`, `LLMMathChain`, ...) and the
beta warning of `stream_events(version="v3")` are silenced with
`warnings.catch_warnings()` around those calls only; the global warning
filters are left untouched.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, Final

from langchain_classic.agents import AgentExecutor, AgentType, initialize_agent
from langchain_classic.chains import LLMChain, LLMMathChain, SimpleSequentialChain
from langchain_core._api import LangChainBetaWarning, LangChainDeprecationWarning
from langchain_core._api.deprecation import LangChainPendingDeprecationWarning
from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
    adispatch_custom_event,
    dispatch_custom_event,
)
from langchain_core.documents import Document
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.prompts import PromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import BaseTool, StructuredTool, Tool

from asynctrack._demo._fakes import FakeChatOpenAI, FakeOpenAI

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from langchain_core.callbacks import BaseCallbackHandler

__all__ = [
    "EXPERIMENT_NAME",
    "HPARAMS",
    "SCENARIOS",
    "SCENARIO_1_INPUT",
    "SCENARIO_2_INPUT",
    "SCENARIO_3_QUESTION",
    "aall_event_kinds",
    "all_event_kinds",
    "scenario_1_llm",
    "scenario_2_sequential",
    "scenario_3_agent",
]

# --------------------------------------------------------------------------
# Notebook constants
# --------------------------------------------------------------------------

HPARAMS: Final[dict[str, Any]] = {
    "temperature": 0.1,
    "model_name": "gpt-3.5-turbo-instruct",
}
"""LLM hyperparameters of the notebook."""

EXPERIMENT_NAME: Final = "langchain-sagemaker-tracker"
"""Experiment name of the notebook."""

SCENARIO_1_TEMPLATE: Final = "tell me a joke about {topic}"
SCENARIO_1_INPUT: Final[dict[str, str]] = {"topic": "fish"}

SCENARIO_2_TEMPLATE_1: Final = (
    "You are a playwright. Given the title of play, it is your job to write a "
    "synopsis for that title.\n"
    "Title: {title}\n"
    "Playwright: This is a synopsis for the above play:"
)
SCENARIO_2_TEMPLATE_2: Final = (
    "You are a play critic from the New York Times. Given the synopsis of play, "
    "it is your job to write a review for that play.\n"
    "Play Synopsis: {synopsis}\n"
    "Review from a New York Times play critic of the above play:"
)
SCENARIO_2_INPUT: Final[dict[str, str]] = {
    "input": "documentary about good video games that push the boundary of game design"
}

SCENARIO_3_QUESTION: Final = (
    "Who is the oldest person alive? And what is their current age raised to the power of 1.51?"
)

# --------------------------------------------------------------------------
# Scripted model outputs
# --------------------------------------------------------------------------

_JOKE: Final = "\n\nWhy don't fish play basketball? Because they're afraid of the net!"

_SYNOPSIS: Final = (
    "\n\nLevel Up is a documentary that follows five game designers as they "
    "build games that break the rules: a puzzle game without words, a shooter "
    "without violence and a story told entirely through sound. Interviews and "
    "behind-the-scenes footage show how risk, failure and play push the "
    "boundaries of game design."
)
_REVIEW: Final = (
    "\n\nLevel Up is a warm, funny and surprisingly moving portrait of the "
    "people who refuse to make the same game twice. It celebrates "
    "experimentation without ignoring its cost, and it leaves the audience "
    "convinced that video games are one of the most inventive art forms of "
    "our time."
)

_SEARCH_ANSWER: Final = (
    "Ethel Caterham (born 21 August 1909) is the oldest living person in the world, aged 116 years."
)
_AGE: Final = 116
_EXPONENT: Final = 1.51
_MATH_EXPRESSION: Final = f"{_AGE}**{_EXPONENT}"
_MATH_RESULT: Final = "1310.1818044262159"  # numexpr.evaluate("116**1.51")

_AGENT_STEP_1: Final = (
    " I need to find out who the oldest person alive is and how old they are."
    "\nAction: Search"
    "\nAction Input: oldest person alive"
)
_AGENT_STEP_2: Final = (
    f" Ethel Caterham is the oldest person alive and she is {_AGE} years old."
    f" I need to calculate {_AGE} raised to the power of {_EXPONENT}."
    "\nAction: Calculator"
    f"\nAction Input: {_AGE}^{_EXPONENT}"
)
# What LLMMathChain expects; the fake truncates at LLMMathChain's stop
# sequence "```output", just like the real API.
_MATH_STEP: Final = (
    f"```text\n{_MATH_EXPRESSION}\n```\n"
    f'...numexpr.evaluate("{_MATH_EXPRESSION}")...\n'
    f"```output\n{_MATH_RESULT}\n```"
)
_FINAL_ANSWER: Final = (
    f"Ethel Caterham is the oldest person alive, aged {_AGE}; {_AGE} raised to "
    f"the power of {_EXPONENT} is approximately {float(_MATH_RESULT):.2f}."
)
_AGENT_STEP_3: Final = f" I now know the final answer.\nFinal Answer: {_FINAL_ANSWER}"

_AGENT_RESPONSES: Final[tuple[str, ...]] = (
    _AGENT_STEP_1,
    _AGENT_STEP_2,
    _MATH_STEP,
    _AGENT_STEP_3,
)
"""LLM calls of scenario 3, in call order (agent, agent, math chain, agent)."""


@contextmanager
def _quiet_langchain_warnings() -> Iterator[None]:
    """Silence LangChain deprecation/beta warnings inside the block only.

    Yields:
        Nothing; the previous warning filters are restored on exit.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LangChainDeprecationWarning)
        warnings.simplefilter("ignore", LangChainPendingDeprecationWarning)
        warnings.simplefilter("ignore", LangChainBetaWarning)
        yield


# --------------------------------------------------------------------------
# The three notebook scenarios
# --------------------------------------------------------------------------


def scenario_1_llm(callbacks: list[BaseCallbackHandler]) -> str:
    """Scenario 1 - single LLM: an `LLMChain` telling a joke about fish.

    Args:
        callbacks: Handlers attached to the LLM and to the chain.

    Returns:
        The joke.
    """
    with _quiet_langchain_warnings():
        llm = FakeOpenAI(callbacks=callbacks, responses=[_JOKE], **HPARAMS)
        prompt = PromptTemplate.from_template(template=SCENARIO_1_TEMPLATE)
        chain = LLMChain(llm=llm, prompt=prompt, callbacks=callbacks)
        output: str = chain.run(**SCENARIO_1_INPUT)
    return output


def scenario_2_sequential(callbacks: list[BaseCallbackHandler]) -> str:
    """Scenario 2 - sequential chain: play synopsis, then a critic's review.

    Args:
        callbacks: Handlers attached to the LLM and to all three chains.

    Returns:
        The review (output of the second chain).
    """
    with _quiet_langchain_warnings():
        prompt_template1 = PromptTemplate.from_template(template=SCENARIO_2_TEMPLATE_1)
        prompt_template2 = PromptTemplate.from_template(template=SCENARIO_2_TEMPLATE_2)
        llm = FakeOpenAI(callbacks=callbacks, responses=[_SYNOPSIS, _REVIEW], **HPARAMS)
        chain1 = LLMChain(llm=llm, prompt=prompt_template1, callbacks=callbacks)
        chain2 = LLMChain(llm=llm, prompt=prompt_template2, callbacks=callbacks)
        overall_chain = SimpleSequentialChain(chains=[chain1, chain2], callbacks=callbacks)
        output: str = overall_chain.run(**SCENARIO_2_INPUT)
    return output


def _fake_search(query: str) -> str:
    """Stand-in for SerpAPI: always returns the same answer.

    Args:
        query: The search query (ignored).

    Returns:
        A fixed answer about the oldest living person.
    """
    del query
    return _SEARCH_ANSWER


async def _afake_search(query: str) -> str:
    """Async `_fake_search`.

    Args:
        query: The search query (ignored).

    Returns:
        A fixed answer about the oldest living person.
    """
    return _fake_search(query)


def _build_agent(callbacks: list[BaseCallbackHandler]) -> AgentExecutor:
    """Build scenario 3's agent the way the notebook does (`load_tools`).

    Must be called with LangChain deprecation warnings silenced.

    Args:
        callbacks: Handlers attached to the LLM, the tools and the agent.

    Returns:
        A zero-shot ReAct `AgentExecutor` with "Search" and "Calculator".
    """
    llm = FakeOpenAI(callbacks=callbacks, responses=list(_AGENT_RESPONSES), **HPARAMS)
    # Equivalent of load_tools(["serpapi", "llm-math"], llm=llm, callbacks=...).
    math_chain = LLMMathChain.from_llm(llm=llm)
    tools: list[BaseTool] = [
        Tool(
            name="Search",
            description=(
                "A search engine. Useful for when you need to answer questions "
                "about current events. Input should be a search query."
            ),
            func=_fake_search,
            coroutine=_afake_search,
            callbacks=callbacks,
        ),
        Tool(
            name="Calculator",
            description="Useful for when you need to answer questions about math.",
            func=math_chain.run,
            coroutine=math_chain.arun,
            callbacks=callbacks,
        ),
    ]
    return initialize_agent(
        tools,
        llm,
        agent=AgentType.ZERO_SHOT_REACT_DESCRIPTION,
        callbacks=callbacks,
    )


def scenario_3_agent(callbacks: list[BaseCallbackHandler]) -> str:
    """Scenario 3 - agent with tools (chain of thought): Search + Calculator.

    The scripted ReAct trace is: Search("oldest person alive") -> Calculator
    ("116^1.51", solved by the real `LLMMathChain` + numexpr) -> Final Answer.

    Args:
        callbacks: Handlers attached to the LLM, the tools and the agent.

    Returns:
        The agent's final answer.
    """
    with _quiet_langchain_warnings():
        agent = _build_agent(callbacks)
        output: str = agent.run(input=SCENARIO_3_QUESTION)
    return output


async def _ascenario_3_agent(callbacks: list[BaseCallbackHandler]) -> str:
    """Async scenario 3 (`AgentExecutor.ainvoke`).

    Args:
        callbacks: Handlers attached to the LLM, the tools and the agent.

    Returns:
        The agent's final answer.
    """
    with _quiet_langchain_warnings():
        agent = _build_agent(callbacks)
        result = await agent.ainvoke({"input": SCENARIO_3_QUESTION})
    output: str = result["output"]
    return output


SCENARIOS: Final[dict[str, Callable[[list[BaseCallbackHandler]], str]]] = {
    "run-scenario-1": scenario_1_llm,
    "run-scenario-2": scenario_2_sequential,
    "run-scenario-3": scenario_3_agent,
}
"""Notebook run names mapped to the scenario functions."""

# --------------------------------------------------------------------------
# Every callback kind
# --------------------------------------------------------------------------

_DOCS: Final[tuple[Document, ...]] = (
    Document(page_content="SageMaker Experiments tracks ML runs.", metadata={"id": 1}),
    Document(page_content="LangChain callbacks observe LLM runs.", metadata={"id": 2}),
)


class _KeywordRetriever(BaseRetriever):
    """Tiny retriever: documents containing any query word; fails on "fail"."""

    documents: list[Document]
    """The corpus."""

    def _search(self, query: str) -> list[Document]:
        """Return documents sharing a word with `query`.

        Args:
            query: The query.

        Returns:
            The matching documents.

        Raises:
            LookupError: If the query contains the word "fail".
        """
        words = set(query.lower().split())
        if "fail" in words:
            msg = f"retriever failure requested by query {query!r}"
            raise LookupError(msg)
        return [doc for doc in self.documents if words & set(doc.page_content.lower().rstrip(".").split())]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return self._search(query)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        return self._search(query)


def _word_count(text: str) -> int:
    """Count the words in a text.

    Args:
        text: The text.

    Returns:
        The number of words.
    """
    return len(text.split())


def _failing_tool(text: str) -> str:
    """Fail, always (a tool that cannot succeed).

    Args:
        text: Ignored.

    Raises:
        ValueError: Always.
    """
    msg = f"tool failure for input {text!r}"
    raise ValueError(msg)


def _failing_step(value: str) -> str:
    """Fail, always (an LCEL step that cannot succeed).

    Args:
        value: Ignored.

    Raises:
        RuntimeError: Always.
    """
    msg = f"chain failure for input {value!r}"
    raise RuntimeError(msg)


def _custom_event_step(value: str) -> str:
    """Upper-case the input after dispatching a custom event.

    Args:
        value: The input, returned upper-cased.

    Returns:
        `value.upper()`.
    """
    dispatch_custom_event("asynctrack.progress", {"step": "upper", "input": value})
    return value.upper()


async def _acustom_event_step(value: str) -> str:
    """Async `_custom_event_step`.

    Args:
        value: The input, returned upper-cased.

    Returns:
        `value.upper()`.
    """
    await adispatch_custom_event("asynctrack.progress", {"step": "upper", "input": value})
    return value.upper()


def _tools() -> tuple[BaseTool, BaseTool]:
    """Build a working structured tool and a failing tool.

    Returns:
        `(word_count, always_fails)`.
    """
    ok = StructuredTool.from_function(
        func=_word_count, name="word_count", description="Count words in a text."
    )
    failing = StructuredTool.from_function(
        func=_failing_tool, name="always_fails", description="Always fails."
    )
    return ok, failing


def _chat_messages() -> list[SystemMessage | HumanMessage]:
    """Return a small chat prompt.

    Returns:
        A system and a human message.
    """
    return [
        SystemMessage(content="You are a terse assistant."),
        HumanMessage(content="Say hello to SageMaker."),
    ]


_CHAT_REPLY: Final = "Hello SageMaker, nice to meet you."


def all_event_kinds(callbacks: list[BaseCallbackHandler]) -> None:
    """Make langchain-core emit every callback kind (sync APIs).

    All handlers are passed through `config={"callbacks": callbacks}` (or as
    constructor callbacks, for the agent). Errors are caught; the function
    returns normally. Which call triggers which event:

    * `LLMChain(...).invoke(...)`: `on_chain_start`, `on_text` (the formatted
      prompt), `on_llm_start`, `on_llm_end` (`llm_output["token_usage"]`),
      `on_chain_end`.
    * `FakeOpenAI.stream(...)`: `on_llm_start`, `on_llm_new_token` (per word,
      `chunk=GenerationChunk`), `on_llm_end`.
    * `FakeOpenAI(transient_failures=1).invoke(...)`: `on_llm_start`,
      `on_retry` (from `create_base_retry_decorator`), `on_llm_end`.
    * `LLMChain` over a `FakeOpenAI` that keeps failing: `on_chain_start`,
      `on_llm_start`, `on_retry`, `on_llm_error`, `on_chain_error`.
    * `FakeChatOpenAI.invoke(...)`: `on_chat_model_start`, `on_llm_end`.
    * `FakeChatOpenAI.stream(...)`: `on_chat_model_start`,
      `on_llm_new_token` (`chunk=ChatGenerationChunk`), `on_llm_end`.
    * `FakeChatOpenAI.stream_events(..., version="v3")`:
      `on_chat_model_start`, `on_stream_event` (per protocol event),
      `on_llm_new_token`, `on_llm_end`.
    * `RunnableLambda(failing).invoke(...)`: `on_chain_start`,
      `on_chain_error`.
    * `RunnableLambda(...)` calling `dispatch_custom_event`: `on_chain_start`,
      `on_custom_event`, `on_chain_end`.
    * `StructuredTool.invoke(...)`: `on_tool_start` (with `inputs=`),
      `on_tool_end`; a failing tool: `on_tool_start`, `on_tool_error`.
    * `BaseRetriever.invoke(...)`: `on_retriever_start`, `on_retriever_end`;
      a failing query: `on_retriever_start`, `on_retriever_error`.
    * `scenario_3_agent(callbacks)`: `on_agent_action` (x2),
      `on_agent_finish`, plus chain/LLM/tool/text events.

    Args:
        callbacks: The handlers to drive.
    """
    config = RunnableConfig(callbacks=callbacks)
    with _quiet_langchain_warnings():
        # Legacy chain: chain start/end, on_text, llm start/end.
        chain = LLMChain(
            llm=FakeOpenAI(responses=[_JOKE], **HPARAMS),
            prompt=PromptTemplate.from_template(SCENARIO_1_TEMPLATE),
        )
        chain.invoke(SCENARIO_1_INPUT, config=config)

        # Legacy chain whose LLM keeps failing: on_retry, llm + chain error.
        failing_chain = LLMChain(
            llm=FakeOpenAI(transient_failures=10, max_retries=1, **HPARAMS),
            prompt=PromptTemplate.from_template(SCENARIO_1_TEMPLATE),
        )
        with suppress(RuntimeError):
            failing_chain.invoke(SCENARIO_1_INPUT, config=config)

        # Streaming chat model through the v3 event protocol: on_stream_event.
        chat_stream = FakeChatOpenAI(responses=[_CHAT_REPLY]).stream_events(
            _chat_messages(), config=config, version="v3"
        )
        for _event in chat_stream:
            pass

    # Text-completion LLM: streaming tokens, and a retried transient error.
    llm = FakeOpenAI(responses=[_JOKE], **HPARAMS)
    for _chunk in llm.stream("tell me a joke about fish", config=config):
        pass
    FakeOpenAI(responses=[_JOKE], transient_failures=1, **HPARAMS).invoke(
        "tell me a joke about fish", config=config
    )

    # Chat model: chat model start, llm end, streaming tokens.
    chat = FakeChatOpenAI(responses=[_CHAT_REPLY], temperature=0.1)
    chat.invoke(_chat_messages(), config=config)
    for _msg_chunk in chat.stream(_chat_messages(), config=config):
        pass

    # LCEL: chain error and custom event.
    with suppress(RuntimeError):
        RunnableLambda(_failing_step).invoke("boom", config=config)
    RunnableLambda(_custom_event_step).invoke("progress", config=config)

    # Tools: start/end and start/error.
    ok_tool, failing_tool = _tools()
    ok_tool.invoke({"text": "one two three"}, config=config)
    with suppress(ValueError):
        failing_tool.invoke({"text": "boom"}, config=config)

    # Retriever: start/end and start/error.
    retriever = _KeywordRetriever(documents=list(_DOCS))
    retriever.invoke("langchain callbacks", config=config)
    with suppress(LookupError):
        retriever.invoke("please fail", config=config)

    # Agent: agent action / finish (constructor callbacks, as in the notebook).
    scenario_3_agent(callbacks)


async def aall_event_kinds(callbacks: list[BaseCallbackHandler]) -> None:
    """Async twin of `all_event_kinds`, using the async LangChain APIs.

    Same runs and same events as `all_event_kinds` (see there), using
    `ainvoke` / `astream` / `astream_events(version="v3")` /
    `adispatch_custom_event` / `AgentExecutor.ainvoke`. Errors are caught;
    the function returns normally.

    Note: on the async path `create_base_retry_decorator` schedules
    `on_retry` as a background task on the running loop, so it is delivered
    shortly after the retry rather than synchronously.

    Args:
        callbacks: The handlers to drive.
    """
    config = RunnableConfig(callbacks=callbacks)
    with _quiet_langchain_warnings():
        chain = LLMChain(
            llm=FakeOpenAI(responses=[_JOKE], **HPARAMS),
            prompt=PromptTemplate.from_template(SCENARIO_1_TEMPLATE),
        )
        await chain.ainvoke(SCENARIO_1_INPUT, config=config)

        failing_chain = LLMChain(
            llm=FakeOpenAI(transient_failures=10, max_retries=1, **HPARAMS),
            prompt=PromptTemplate.from_template(SCENARIO_1_TEMPLATE),
        )
        with suppress(RuntimeError):
            await failing_chain.ainvoke(SCENARIO_1_INPUT, config=config)

        chat_stream = await FakeChatOpenAI(responses=[_CHAT_REPLY]).astream_events(
            _chat_messages(), config=config, version="v3"
        )
        async for _event in chat_stream:
            pass

    llm = FakeOpenAI(responses=[_JOKE], **HPARAMS)
    async for _chunk in llm.astream("tell me a joke about fish", config=config):
        pass
    await FakeOpenAI(responses=[_JOKE], transient_failures=1, **HPARAMS).ainvoke(
        "tell me a joke about fish", config=config
    )

    chat = FakeChatOpenAI(responses=[_CHAT_REPLY], temperature=0.1)
    await chat.ainvoke(_chat_messages(), config=config)
    async for _msg_chunk in chat.astream(_chat_messages(), config=config):
        pass

    with suppress(RuntimeError):
        await RunnableLambda(_failing_step).ainvoke("boom", config=config)
    await RunnableLambda(_acustom_event_step).ainvoke("progress", config=config)

    ok_tool, failing_tool = _tools()
    await ok_tool.ainvoke({"text": "one two three"}, config=config)
    with suppress(ValueError):
        await failing_tool.ainvoke({"text": "boom"}, config=config)

    retriever = _KeywordRetriever(documents=list(_DOCS))
    await retriever.ainvoke("langchain callbacks", config=config)
    with suppress(LookupError):
        await retriever.ainvoke("please fail", config=config)

    await _ascenario_3_agent(callbacks)
