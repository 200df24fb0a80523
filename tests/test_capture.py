"""Capture on the caller's thread (``_langchain/_capture.py``): never crash, copy, spoil one field only."""

from __future__ import annotations

import collections.abc
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableLambda

from asynctrack import AsyncTracker, TrackerConfig
from asynctrack._capture import MARK, Capturer

ROOT = Path(__file__).resolve().parent.parent


def _events(root: Path) -> list[dict[str, Any]]:
    files = sorted(p for p in root.rglob("*.jsonl"))
    return [orjson.loads(line) for p in files for line in p.read_bytes().splitlines()]


def _capture(value: Any, **config: Any) -> Any:
    settings = TrackerConfig(**config)
    body = Capturer(settings.max_field_bytes, settings.max_depth)({"data": {"v": value}})
    assert type(body) is bytes
    return orjson.loads(body)["data"]["v"]


# -- never crash: a mutator thread resizing the lists being captured ---------------------------

_STRESS = textwrap.dedent(
    """
    import sys, threading, uuid, tempfile
    sys.setswitchinterval(1e-6)
    from langchain_core.messages import AIMessage, HumanMessage
    from asynctrack import AsyncTracker, TrackerConfig

    tracker = AsyncTracker(tempfile.mkdtemp(), config=TrackerConfig(handle_sigterm=False))
    records = []
    tracker._put = records.append  # capture only: the worker is not what is tested
    messages = [HumanMessage("hi"), AIMessage("hello")]
    nested = {"history": messages, "extra": [[1, 2], [3, 4]]}
    stop = threading.Event()

    def mutate():
        while not stop.is_set():
            messages.append(HumanMessage("more " * 5))
            nested["extra"].append([5, 6])
            if len(messages) > 64:
                del messages[2:]
                del nested["extra"][2:]

    threads = [threading.Thread(target=mutate) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(ROUNDS):
            tracker.on_chat_model_start({"name": "m"}, [messages], run_id=uuid.uuid4(), metadata=nested)
            tracker.on_chain_start({"name": "c"}, nested, run_id=uuid.uuid4())
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert all(type(r[6]) is bytes for r in records), "bodies are bytes"
    tracker.close(timeout=10)
    print("survived", len(records))
    """
)


def test_capture_survives_other_threads_resizing_the_captured_lists(tmp_path: Path) -> None:
    """The issue-9 crash: orjson walks a list by pointer while a Python ``default``
    lets another thread resize it. Run in a child process so that a segfault fails
    this test instead of killing pytest."""
    script = tmp_path / "stress.py"
    script.write_text(_STRESS.replace("ROUNDS", "4000"), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
        env={
            "PYTHONPATH": str(ROOT),
            "ASYNCTRACK_SPOOL_DIR": str(tmp_path / "spool"),
            "PATH": "/usr/bin:/bin",
        },
    )
    assert proc.returncode == 0, f"exit {proc.returncode} (-11 is SIGSEGV)\n{proc.stderr[-3000:]}"
    assert "survived 8000" in proc.stdout


# -- the record contract ---------------------------------------------------------------------------


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


class Hostile(type):
    def __getattr__(cls, name: str) -> Any:
        raise RuntimeError(f"metaclass refuses {name}")


class Weird(metaclass=Hostile):
    pass


class BadMapping(collections.abc.Mapping[str, Any]):
    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("no items for you")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("no iteration either")

    def __len__(self) -> int:
        return 1


class BadBool:
    def __bool__(self) -> bool:
        raise RuntimeError("truth refuses")


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        {"a": [1, 2, {"b": None}]},
        {1: "a", "1": "b"},
        "lone \ud800 surrogate",
        2**80,
        Weird(),
        BadMapping(),
        np.arange(4),
        bytearray(b"abc"),
        {"deep": _nested(40)},
        ValueError("boom"),
    ],
)
def test_every_body_is_bytes(value: Any) -> None:
    body = Capturer(1024, 32)({"data": {"v": value, "keep": "me"}})
    assert type(body) is bytes
    assert orjson.loads(body)["data"]["keep"] == "me"


def test_one_bad_field_spoils_one_field(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker()
    # The int key sends the event down the careful copy, where the hostile values are looked at.
    inputs = {"weird": Weird(), "mapping": BadMapping(), "fine": "kept", "number": 3, 7: "int key"}
    RunnableLambda(lambda x: "ok").invoke(inputs, config={"callbacks": [tracker]})
    tracker.flush_blocking(timeout=10)
    start = _events(tmp_destination)[0]
    logged = start["data"]["inputs"]
    assert logged["fine"] == "kept"
    assert logged["number"] == 3
    assert logged["weird"][MARK] == "unencodable"
    assert logged["mapping"][MARK] == "unencodable"
    assert tracker.statistics().encode_errors == 1  # counted once per event


def test_int_and_str_keys_that_collide_are_both_kept() -> None:
    assert _capture({1: "a", "1": "b"}) == {"1": "a", "1 <str>": "b"}  # the later one says its type
    assert _capture({"1": "b", 1: "a"}) == {"1": "b", "1 <int>": "a"}
    assert _capture({1: "a", "1": "b", "1 <str>": "c"}) == {"1": "a", "1 <str>": "b", "1 <str> <str>": "c"}


def test_name_is_evaluated_inside_the_callback_guard(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker()
    run = uuid.uuid4()
    tracker.on_chain_start({"name": "s"}, {"x": 1}, run_id=run, name=np.arange(3))
    tracker.on_chain_start({"name": "s"}, {"x": 1}, run_id=uuid.uuid4(), name=BadBool())
    tracker.on_chain_end({"y": 2}, run_id=run)
    tracker.flush_blocking(timeout=10)
    events = _events(tmp_destination)
    assert [e["kind"] for e in events] == ["chain_start", "chain_start", "chain_end"]
    assert events[0]["name"] == "array([0, 1, 2])"
    assert tracker.statistics().dropped == 0


def test_the_careful_path_copies_instead_of_sharing() -> None:
    """Values orjson refuses go through the Python copy: what is logged is what was passed."""
    capturer = Capturer(1 << 20, 32)
    array = np.arange(3)
    raw = bytearray(b"before")
    args = [1, 2]
    error = ValueError(args)
    big = [[i] for i in range(20_000)]  # past the node budget
    value = {
        "k": {1: "int key forces the careful path"},
        "array": array,
        "raw": raw,
        "error": error,
        "big": big,
    }
    body = capturer({"data": value})
    array[0] = 99
    raw[:] = b"after!"
    args.append(3)
    big[0].append("late")
    logged = orjson.loads(body)["data"]
    assert logged["array"] == [0, 1, 2]
    assert logged["raw"] == {MARK: "bytes", "size": 6, "text": "before"}
    assert logged["error"] == {"type": "ValueError", "message": "[1, 2]"}
    assert logged["big"][0] == [0]
    assert any(isinstance(item, dict) and item.get(MARK) == "too_many_values" for item in logged["big"])


def test_a_lone_surrogate_in_the_run_name_never_breaks_flush_or_close(tmp_destination: Path) -> None:
    tracker = AsyncTracker(tmp_destination, experiment_name="cap", run_name="run-\udcff-name")
    try:
        RunnableLambda(lambda x: "ok").invoke({"q": "x\udcfe"}, config={"callbacks": [tracker]})
        tracker.flush_blocking(timeout=10)
        tracker.flush_blocking(timeout=10)
    finally:
        tracker.close(timeout=10)
    events = _events(tmp_destination)
    assert [e["kind"] for e in events] == ["chain_start", "chain_end"]
    assert events[0]["run"] == "run-\ufffd-name"


def test_long_fields_are_cut_at_capture_so_the_buffer_holds_what_it_counts(
    make_tracker: Callable[..., AsyncTracker],
) -> None:
    tracker = make_tracker(config=TrackerConfig(max_field_bytes=64 * 1024))
    records: list[Any] = []
    tracker._put = records.append  # type: ignore[method-assign]
    prompt = "p" * (1 << 20)
    tracker.on_llm_start({"name": "m"}, [prompt], run_id=uuid.uuid4())
    body = records[0][6]
    assert type(body) is bytes
    assert len(body) < 64 * 1024 + 4096
    assert orjson.loads(body)["data"]["prompts"][0].endswith(
        f"[{MARK}: truncated, {1 << 20} characters in all]"
    )


def test_a_chat_model_start_message_list_is_captured_as_passed(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker()
    messages = [HumanMessage("first")]
    run = uuid.uuid4()
    tracker.on_chat_model_start({"name": "m"}, [messages], run_id=run)
    messages.append(HumanMessage("later"))
    messages[0].content = "changed"
    tracker.flush_blocking(timeout=10)
    logged = _events(tmp_destination)[0]["data"]["messages"]
    assert [m["content"] for m in logged[0]] == ["first"]
