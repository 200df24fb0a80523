"""The LangChain workloads of the overhead benchmark, and the reference handlers.

Imports only ``langchain_core`` (and the standard library), so that the legacy-venv
worker runs exactly the same workloads as the main process.

Workloads (each measured as a whole number of *calls*; per-call figures divide by it):

- ``sync``: ``PromptTemplate | FakeListLLM``, ``invoke`` in a loop (6 events per call).
- ``async64`` / ``async1024``: the same chain, ``ainvoke`` with 64 / 1024 calls
  in flight at once (``asyncio.gather``), in rounds.
- ``stream``: ``PromptTemplate | FakeListChatModel``, ``stream`` with a 256-character
  answer streamed one character per token (262 events per call).
- ``agent``: a ``RunnableLambda`` "agent" that runs three think/act steps, each a
  nested ``prompt | llm`` call and a ``@tool`` call, then a final answer chain
  (32 events per call, three levels deep).
- ``openai``: real provider events: langchain-openai's ``ChatOpenAI`` against a loopback
  OpenAI-compatible stub (``tests/_infra/openai_stub.py``, started by the benchmark, whose
  URL is set in ``OPENAI_STUB``): a tool-call round trip (messages, tool calls, token
  usage) and a streamed answer with usage. Needs ``langchain-openai`` (the ``bench``
  extra); not run in the legacy venv.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.prompts import PromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.tools import tool

ON_METHODS = tuple(sorted(m for m in dir(BaseCallbackHandler) if m.startswith("on_")))


def _noop(self: Any, *args: Any, **kwargs: Any) -> None:
    pass


class NoOpHandler(BaseCallbackHandler):
    """The floor: every ``on_*`` overridden with ``pass``, called inline."""

    run_inline = True


for _name in ON_METHODS:
    setattr(NoOpHandler, _name, _noop)


class CountingHandler(BaseCallbackHandler):
    """Counts every callback it receives (to know events per call)."""

    run_inline = True

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.by_kind: dict[str, int] = {}


def _make_counter(name: str) -> Callable[..., None]:
    def count(self: CountingHandler, *args: Any, **kwargs: Any) -> None:
        self.count += 1
        self.by_kind[name] = self.by_kind.get(name, 0) + 1

    return count


for _name in ON_METHODS:
    setattr(CountingHandler, _name, _make_counter(_name))


STREAM_TOKENS = 256
ANSWER = "The answer is forty-two, as computed by a very deep thought."


def simple_chain() -> Runnable[Any, Any]:
    return PromptTemplate.from_template("Tell me a short fact about {topic}.") | FakeListLLM(
        responses=[ANSWER]
    )


def stream_chain() -> Runnable[Any, Any]:
    text = ("streaming tokens " * 20)[:STREAM_TOKENS]
    return PromptTemplate.from_template("Tell me a long story about {topic}.") | FakeListChatModel(
        responses=[text]
    )


def agent_runnable() -> Runnable[Any, Any]:
    think = PromptTemplate.from_template("Question: {topic}\nThought:") | FakeListLLM(
        responses=["I should look this up."]
    )
    answer = PromptTemplate.from_template("Answer using: {topic}") | FakeListLLM(responses=[ANSWER])

    @tool
    def lookup(query: str) -> str:
        """Look something up."""
        return f"facts about {query[:40]}"

    def agent(inputs: dict[str, Any], config: RunnableConfig) -> str:
        topic = inputs["topic"]
        for _ in range(3):
            thought = think.invoke({"topic": topic}, config)
            topic = lookup.invoke(thought, config)
        return answer.invoke({"topic": topic}, config)

    return RunnableLambda(agent, name="agent")


#: The stub's base URL, set by the benchmark that started it (``openai`` workload).
OPENAI_STUB: dict[str, str] = {}


def openai_runnable() -> Runnable[Any, Any]:
    import sys
    from pathlib import Path

    tests_dir = str(Path(__file__).resolve().parent.parent / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    from _infra.openai_stub import run_calls

    def provider_round(inputs: dict[str, Any], config: RunnableConfig) -> str:
        # The calls nest under this run, as a real agent's model calls do.
        run_calls(OPENAI_STUB["url"], config.get("callbacks"))  # type: ignore[arg-type]
        return "done"

    return RunnableLambda(provider_round, name="openai_round")


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # "sync", "async", "stream"
    build: Callable[[], Runnable[Any, Any]]
    concurrency: int = 1
    description: str = ""


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("sync", "sync", simple_chain, description="`invoke` of `PromptTemplate | FakeListLLM`"),
        Workload("async64", "async", simple_chain, 64, "`ainvoke`, 64 concurrent (`asyncio.gather`)"),
        Workload("async1024", "async", simple_chain, 1024, "`ainvoke`, 1024 concurrent"),
        Workload("stream", "stream", stream_chain, description=f"`stream`, {STREAM_TOKENS} tokens per call"),
        Workload("agent", "sync", agent_runnable, description="nested agent-like run tree (tool calls)"),
        Workload(
            "openai",
            "sync",
            openai_runnable,
            description="real `ChatOpenAI` (loopback stub): tool-call round trip + streamed answer",
        ),
    )
}

INPUT = {"topic": "benchmarks"}


def count_events(workload: Workload) -> tuple[int, dict[str, int]]:
    """Events per call, counted by running one call with a counting handler."""
    counter = CountingHandler()
    chain = workload.build()
    config: RunnableConfig = {"callbacks": [counter]}
    if workload.kind == "async":
        asyncio.run(chain.ainvoke(INPUT, config))
    elif workload.kind == "stream":
        for _ in chain.stream(INPUT, config):
            pass
    else:
        chain.invoke(INPUT, config)
    return counter.count, dict(counter.by_kind)


def run_sync(chain: Runnable[Any, Any], callbacks: list[Any], calls: int) -> float:
    config: RunnableConfig = {"callbacks": callbacks}
    t0 = time.perf_counter()
    for _ in range(calls):
        chain.invoke(INPUT, config)
    return time.perf_counter() - t0


def run_stream(chain: Runnable[Any, Any], callbacks: list[Any], calls: int) -> float:
    config: RunnableConfig = {"callbacks": callbacks}
    t0 = time.perf_counter()
    for _ in range(calls):
        for _chunk in chain.stream(INPUT, config):
            pass
    return time.perf_counter() - t0


async def run_async(chain: Runnable[Any, Any], callbacks: list[Any], calls: int, concurrency: int) -> float:
    config: RunnableConfig = {"callbacks": callbacks}
    t0 = time.perf_counter()
    done = 0
    while done < calls:
        n = min(concurrency, calls - done)
        await asyncio.gather(*(chain.ainvoke(INPUT, config) for _ in range(n)))
        done += n
    return time.perf_counter() - t0
