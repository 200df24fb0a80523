"""Real LangChain workloads for the export tests, and reading their recorded lines back."""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path
from typing import Any

import orjson
from _infra.openai_stub import chat_model, get_weather

SECRET = "sk-proj-PlantedSecret0123456789abcdefABCDEF"  # an OpenAI-format key: always redacted


def weather_agent(
    url: str,
    callbacks: list[Any],
    question: str = "What is the weather in Paris today?",
    metadata: dict[str, Any] | None = None,
) -> str:
    """A root chain around a tool round trip (model, tool, streamed model): 4 runs.

    ``metadata`` is the root's LangChain metadata (``session_id``, ``user_id``...)."""
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_core.runnables import RunnableConfig, RunnableLambda
    from langchain_core.tools import tool

    weather = tool(get_weather)
    llm = chat_model(url).bind_tools([weather])
    streaming = chat_model(url, stream_usage=True)

    def answer(question: str, config: RunnableConfig) -> str:
        history: list[Any] = [
            SystemMessage("You are a helpful assistant. Answer briefly."),
            HumanMessage(question),
        ]
        first = llm.invoke(history, config=config)
        history.append(first)
        for call in first.tool_calls:
            history.append(weather.invoke(call, config=config))
        return "".join(str(chunk.content) for chunk in streaming.stream(history, config=config))

    result: str = RunnableLambda(answer, name="weather_agent").invoke(
        question, config={"callbacks": callbacks, "metadata": metadata or {}}
    )
    return result


def failing_chain(callbacks: list[Any]) -> None:
    """A chain that raises ``ValueError``: one run, ended by an error."""
    from langchain_core.runnables import RunnableLambda

    def fail(_: str) -> str:
        raise ValueError("the database is down")

    try:
        RunnableLambda(fail, name="failing").invoke("x", config={"callbacks": callbacks})
    except ValueError:
        pass


def failing_model_call(callbacks: list[Any]) -> None:
    """A ``ChatOpenAI`` call whose connection is refused: one model run, ended by an error
    (a connection error: ``OpenAIConnectionError``)."""
    import socket

    import openai

    with socket.socket() as reserved:  # bound, never listening: a connection to it is refused
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        try:
            chat_model(f"http://127.0.0.1:{port}/v1").invoke("Hello?", config={"callbacks": callbacks})
        except openai.APIConnectionError:
            pass


def orphan_model_calls(
    tracker: Any, a: uuid.UUID, b: uuid.UUID, calls: list[uuid.UUID], parents: list[uuid.UUID]
) -> None:
    """Two agents given the tracker, their model calls too but not the chains between (legacy
    LangChain's AgentExecutor -> LLMChain -> model): the calls' parents are never recorded.
    The first call runs while agent ``a`` alone is open (in its tool), the second while
    both are (concurrent requests), the third after ``a`` ended."""
    from langchain_core.outputs import Generation, LLMResult

    done = LLMResult(generations=[[Generation(text="ok")]])
    step = uuid.uuid4()
    tracker.on_chain_start({}, {"q": "a"}, run_id=a, name="agent_a")
    tracker.on_tool_start({}, "x", run_id=step, parent_run_id=a, name="calculator")
    tracker.on_llm_start({}, ["1+1"], run_id=calls[0], parent_run_id=parents[0])
    tracker.on_llm_end(done, run_id=calls[0], parent_run_id=parents[0])
    tracker.on_chain_start({}, {"q": "b"}, run_id=b, name="agent_b")
    tracker.on_llm_start({}, ["b?"], run_id=calls[1], parent_run_id=parents[1])
    tracker.on_llm_end(done, run_id=calls[1], parent_run_id=parents[1])
    tracker.on_tool_end("2", run_id=step, parent_run_id=a)
    tracker.on_chain_end({"a": "2"}, run_id=a)
    tracker.on_llm_start({}, ["b!"], run_id=calls[2], parent_run_id=parents[2])
    tracker.on_llm_end(done, run_id=calls[2], parent_run_id=parents[2])
    tracker.on_chain_end({"b": "ok"}, run_id=b)


def recorded_lines(destination: Path) -> list[bytes]:
    """Every line the trackers wrote under ``destination``, per writer in batch order."""
    files = sorted(destination.rglob("*.jsonl*"), key=lambda p: (p.name.split("-", 1)[1], p.name))
    lines: list[bytes] = []
    for path in files:
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        lines.extend(data.splitlines())
    return lines


def reordered(lines: list[bytes]) -> list[bytes]:
    """The same events with ``experiment`` and ``data`` moved last: another layout than the
    writer's, which the span assembler parses whole (no part read at a known place)."""
    out = []
    for line in lines:
        event = orjson.loads(line)
        for key in ("experiment", "data"):
            event[key] = event.pop(key)
        out.append(orjson.dumps(event))
    return out
