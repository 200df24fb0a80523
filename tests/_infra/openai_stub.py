"""A loopback OpenAI-compatible chat-completions server, and real ``ChatOpenAI`` calls against it.

The server answers ``POST /v1/chat/completions`` like the OpenAI API does: a tool
call when the request offers tools and the last message is the user's, a text
answer otherwise, as server-sent events when ``stream`` is set (with a final usage
chunk when ``stream_options.include_usage`` is). Nothing leaves 127.0.0.1.

For tests that plant text in the model's output: a last user message
``"echo: <text>"`` is answered with ``<text>`` (streamed 3 characters per chunk,
so that a planted credential is split across tokens), and ``"call: <json>"`` with
a tool call whose ``arguments`` are ``<json>``.

``OpenAIStubProcess`` serves the same answers from a child process of its own, for a
benchmark that reads its own process's CPU (``time.process_time``) as the application's:
then the stub's serving is not counted in it.

``record_calls()`` runs real ``langchain-openai`` calls (invoke with tool calls and
a tool answer, streaming with usage) with a recording handler and returns every
callback with its arguments, so that benchmarks and tests can replay them.
"""

from __future__ import annotations

import http.server
import json
import random
import re
import subprocess
import sys
import threading
import time
from typing import Any, Final

_ANSWER = (
    "The weather in Paris is mild today: 18 degrees with a light breeze from the west, "
    "and the forecast for the evening is clear."
)


#: Words of the varied answers (``run_calls(vary=True)``): the answer's own words, then
#: made-up ones, drawn log-uniformly (a few frequent, a long tail), like a model's.
_VOCABULARY: Final = [
    *dict.fromkeys(_ANSWER.replace(":", "").replace(",", "").replace(".", "").split()),
    *(
        f"{a}{b}{c}"
        for a in ("ba", "co", "di", "fe", "lu", "mo", "ra", "si", "te", "vo")
        for b in ("ler", "ton", "min", "sar", "vek", "dul")
        for c in ("", "s", "ed", "ing", "ly")
    ),
]
_REQUEST: Final = re.compile(r"\(request (\d+)\)")


def _varied_answer(number: int) -> str:
    """A different answer of 20-30 words for each request number (seeded, repeatable)."""
    rng = random.Random(number)
    size = len(_VOCABULARY)
    words = [_VOCABULARY[min(int(size ** rng.random()) - 1, size - 1)] for _ in range(rng.randint(20, 30))]
    return " ".join(words).capitalize() + "."


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        messages = request.get("messages") or []
        model = request.get("model", "gpt-4o-mini")
        created = int(time.time())
        last = messages[-1] if messages else {}
        said = (
            last.get("content") if last.get("role") == "user" and isinstance(last.get("content"), str) else ""
        )
        wants_tool = (bool(request.get("tools")) and last.get("role") == "user") or said.startswith("call: ")
        city = re.search(r"weather in (\w+)", said)
        arguments = json.dumps({"city": city.group(1) if city else "Paris", "unit": "C"})
        if said.startswith("call: "):
            arguments = said[6:]
        asked = _REQUEST.search(json.dumps(messages[:2]))
        answer = said[6:] if said.startswith("echo: ") else _ANSWER
        if asked is not None:
            answer = _varied_answer(int(asked.group(1)))
        usage = {"prompt_tokens": 57, "completion_tokens": 23, "total_tokens": 80}
        if request.get("stream"):
            self._stream(
                model,
                created,
                answer,
                usage,
                request,
                by_word=not said.startswith("echo: "),
                arguments=arguments if said.startswith("call: ") else None,
            )
            return
        if wants_tool:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_Xq3H7w9P0aKd2L5n",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": arguments},
                    }
                ],
            }
            finish = "tool_calls"
        else:
            message = {"role": "assistant", "content": answer}
            finish = "stop"
        body = {
            "id": "chatcmpl-AbC123dEf456GhI789jKl012",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_0ba0d124f1",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": usage,
        }
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(
        self,
        model: str,
        created: int,
        answer: str,
        usage: dict[str, int],
        request: dict[str, Any],
        by_word: bool,
        arguments: str | None = None,
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        base = {
            "id": "chatcmpl-StR123dEf456GhI789jKl012",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_0ba0d124f1",
        }
        chunks: list[dict[str, Any]] = [{"index": 0, "delta": {"role": "assistant", "content": ""}}]
        if by_word:  # word by word, like a model
            words = answer.split(" ")
            pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        else:  # planted text: 3 characters per chunk
            pieces = [answer[i : i + 3] for i in range(0, len(answer), 3)]
        if arguments is not None:  # a streamed tool call: its arguments 4 characters per chunk
            call = {"index": 0, "id": "call_S7r2mQ", "type": "function"}
            chunks = [
                {
                    "index": 0,
                    "delta": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{**call, "function": {"name": "get_weather", "arguments": ""}}],
                    },
                },
                *(
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [{"index": 0, "function": {"arguments": arguments[i : i + 4]}}]
                        },
                    }
                    for i in range(0, len(arguments), 4)
                ),
            ]
            pieces = []
        for piece in pieces:
            chunks.append({"index": 0, "delta": {"content": piece}})
        chunks.append(
            {"index": 0, "delta": {}, "finish_reason": "stop" if arguments is None else "tool_calls"}
        )
        for choice in chunks:
            choice.setdefault("logprobs", None)
            choice.setdefault("finish_reason", None)
            self._send_event({**base, "choices": [choice]})
        if (request.get("stream_options") or {}).get("include_usage"):
            self._send_event({**base, "choices": [], "usage": usage})
        self._send_raw(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _send_event(self, payload: dict[str, Any]) -> None:
        self._send_raw(b"data: " + json.dumps(payload).encode() + b"\n\n")

    def _send_raw(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that resets its kept-alive connection (an HTTP client's pool closed at
        # its exit, while the handler waits for the next request) went away: not an error
        # of the stub. Anything else is printed as socketserver does.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class OpenAIStub:
    """``with OpenAIStub() as stub:`` serves on ``stub.url`` (``http://127.0.0.1:<port>/v1``)."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="openai-stub", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> OpenAIStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class OpenAIStubProcess:
    """``with OpenAIStubProcess() as stub:`` serves on ``stub.url`` as :class:`OpenAIStub`
    does, from a child process (this file run as a script): a real HTTP server on
    127.0.0.1, port 0, none of whose work runs in this process. The child serves until its
    stdin ends: when ``__exit__`` closes it, or when this process dies."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> OpenAIStubProcess:
        process = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # a terminal's Ctrl-C stops the benchmark, which stops the stub
        )
        self._process = process
        assert process.stdout is not None
        self.url = process.stdout.readline().decode().strip()
        if not self.url:
            self.__exit__()
            raise RuntimeError(f"the OpenAI stub's process did not start (exit code {process.returncode})")
        return self

    def __exit__(self, *exc: object) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        from _infra.child_server import untether

        untether(process, timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def _serve_until_stdin_ends() -> None:
    with OpenAIStub() as stub:
        print(stub.url, flush=True)
        sys.stdin.read()


def chat_model(url: str, **kwargs: Any) -> Any:
    """A real ``ChatOpenAI`` pointed at the stub."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model="gpt-4o-mini",
        api_key="sk-proj-StubKey0000000000000000000000000000",  # type: ignore[arg-type]
        base_url=url,
        temperature=0.2,
        max_retries=0,
        timeout=10,
        **kwargs,
    )


def get_weather(city: str, unit: str = "C") -> str:
    """Current weather for a city."""
    return f"18 degrees {unit} in {city}"


def run_calls(url: str, callbacks: list[Any], rounds: int = 1, vary: bool = False) -> None:
    """Real ChatOpenAI calls with ``callbacks``: a tool round trip, then a stream with usage.

    ``vary``: each round asks about another city and is answered with other words
    (as real traffic is), instead of the same question and answer every round.
    """
    from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage
    from langchain_core.tools import tool

    weather = tool(get_weather)
    llm = chat_model(url)
    with_tools = llm.bind_tools([weather])
    config = {"callbacks": callbacks}
    for number in range(rounds):
        question = "What is the weather in Paris today?"
        if vary:
            city = _CITIES[number % len(_CITIES)]
            question = f"What is the weather in {city} today? (request {number})"
        history: list[Any] = [
            SystemMessage("You are a helpful assistant. Answer briefly."),
            HumanMessage(question),
        ]
        first = with_tools.invoke(history, config=config)
        history.append(first)
        for call in first.tool_calls:
            history.append(ToolMessage(weather.invoke(call["args"]), tool_call_id=call["id"]))
        with_tools.invoke(history, config=config)
        streaming = chat_model(url, stream_usage=True)
        for _chunk in streaming.stream(history, config=config):
            pass


_CITIES: Final = ("Paris", "Lyon", "Berlin", "Madrid", "Rome", "Vienna", "Oslo", "Lisbon", "Prague")


def record_calls(
    rounds: int = 1, vary: bool = False, stamps: list[float] | None = None
) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """Every callback of ``run_calls`` as ``(method, args, kwargs)``, in order; when
    ``stamps`` is given, each callback's ``time.perf_counter()`` is appended to it."""
    from langchain_core.callbacks import BaseCallbackHandler

    recorded: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    class Recorder(BaseCallbackHandler):
        run_inline = True

    def make(method: str) -> Any:
        def record(self: Any, *args: Any, **kwargs: Any) -> None:
            if stamps is not None:
                stamps.append(time.perf_counter())
            recorded.append((method, args, kwargs))

        return record

    for method in (
        "on_chat_model_start",
        "on_llm_start",
        "on_llm_new_token",
        "on_llm_end",
        "on_llm_error",
        "on_chain_start",
        "on_chain_end",
        "on_tool_start",
        "on_tool_end",
    ):
        setattr(Recorder, method, make(method))
    with OpenAIStub() as stub:
        run_calls(stub.url, [Recorder()], rounds, vary)
    return recorded


if __name__ == "__main__":
    _serve_until_stdin_ends()
