"""Capture on the caller's thread (``_langchain/_capture.py``): never crash, copy, spoil one field only."""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import gc
import inspect
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock

import attrs
import numpy as np
import orjson
import pandas as pd
import pydantic
import pydantic.v1
import pytest
from _infra.openai_stub import OpenAIStub, chat_model
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.messages import HumanMessage
from langchain_core.prompts import PromptTemplate
from langchain_core.runnables import RunnableLambda
from langgraph.types import Command, Interrupt, Send
from support import ROOT, run_script

from asynctrack import AsyncTracker, TrackerConfig
from asynctrack._capture import MARK, Capturer
from asynctrack._events._schema import uuid_text


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
    # Objects the fast path refuses, objects whose __dict__ is not all their data (a
    # message with an extra field), an object holding a list being resized: the
    # careful copy and the check of the objects (lossy) walk the same live lists.
    from langgraph.types import Command, Send

    class Holder:
        def __init__(self):
            self.items = nested["extra"]

    kinds = [
        lambda: Send("n", {"i": [1, 2]}),
        lambda: Command(update={"k": [3]}),
        lambda: HumanMessage("m"),
        lambda: HumanMessage("m", note=nested["extra"]),
        Holder,
    ]

    def mutate():
        n = 0
        while not stop.is_set():
            n += 1
            messages.append(kinds[n % len(kinds)]())
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
    proc = run_script(
        tmp_path / "stress.py",
        _STRESS.replace("ROUNDS", "4000"),
        {
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


@pytest.mark.parametrize(
    ("serialized", "name"),
    [
        ({"name": "FakeListLLM", "id": ["fake", "Other"]}, "FakeListLLM"),
        ({"name": 3, "id": ["fake", "FromId"]}, "FromId"),  # a name that is not text: the id's
        ({"id": ["fake", "FromId"]}, "FromId"),
        ({"name": None}, None),
        (None, None),
        (["not", "a", "dict"], None),
    ],
)
def test_a_start_without_a_name_is_named_from_serialized(
    make_tracker: Callable[..., AsyncTracker], serialized: Any, name: str | None
) -> None:
    tracker = make_tracker()
    records: list[Any] = []
    tracker._put = records.append  # type: ignore[method-assign]
    tracker.on_llm_start(serialized, ["p"], run_id=uuid.uuid4())
    tracker.on_tool_start(serialized, "q", run_id=uuid.uuid4())
    assert [record[5] for record in records] == [name, name]


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


# -- every value as its data, or a counted placeholder: never a bare {} ----------------------------


class Slotted:
    __slots__ = ("__sauce", "name")

    def __init__(self) -> None:
        self.name = "slotted"
        self.__sauce = [1, 2]


class Unslotted:
    pass


class SlotsOverADict(Unslotted):
    """Its instances have a ``__dict__`` (the base's), empty: the fields are in slots."""

    __slots__ = ("x",)

    def __init__(self) -> None:
        self.x = "in a slot"


class Hollow:
    """No field at all: a sentinel."""


class Tagged(Unslotted):
    """Slots beside a non-empty ``__dict__`` (the base's)."""

    __slots__ = ("label",)

    def __init__(self) -> None:
        self.label = "in a slot"
        self.note = "in the dict"


class Coded(ValueError):
    """An exception with attributes of its own: its message is not in its ``__dict__``."""

    def __init__(self) -> None:
        super().__init__("bad code")
        self.code = 5


class Priced(pydantic.BaseModel):
    net: int = 2

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def gross(self) -> int:
        return self.net * 2


class Loose(pydantic.BaseModel):
    """Extra fields allowed: pydantic keeps them outside ``__dict__``."""

    model_config = pydantic.ConfigDict(extra="allow")
    kept: int = 1


@dataclasses.dataclass(slots=True)
class SlottedData:
    p: int = 1
    q: str = "q"


@dataclasses.dataclass
class Data:
    p: list[int] = dataclasses.field(default_factory=lambda: [1])


@dataclasses.dataclass
class Paid:
    """A field ``__init__`` does not set: its class default is not in ``__dict__``."""

    item: str = "book"
    status: str = dataclasses.field(default="PAID", init=False)


@dataclasses.dataclass
class Totalled:
    item: str = "book"
    total: float = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.total = 42.5


@dataclasses.dataclass(frozen=True)
class Referenced:
    item: str = "book"
    ref: str = dataclasses.field(default="REF-9", init=False)


class Pair(NamedTuple):
    a: int
    b: str


@attrs.define
class AttrsSlotted:
    x: int = 3


@attrs.define(slots=False)
class AttrsPlain:
    y: str = "y"


class ModelV2(pydantic.BaseModel):
    f: int = 2


class ModelV1(pydantic.v1.BaseModel):
    g: str = "v1"


class Colour(enum.Enum):
    RED = "red"


_FRAME = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})

_KINDS: list[tuple[Any, Any]] = [
    (Send("work", {"i": 1}), {"node": "work", "arg": {"i": 1}, "timeout": None}),
    (
        Command(goto="next", update={"k": 1}),
        {"graph": None, "update": {"k": 1}, "resume": None, "goto": "next"},
    ),
    (Interrupt(value={"q": "?"}, id="i1"), {"value": {"q": "?"}, "id": "i1", "response_schema": None}),
    (Slotted(), {"name": "slotted", "_Slotted__sauce": [1, 2]}),
    (SlotsOverADict(), {"x": "in a slot"}),
    (Tagged(), {"note": "in the dict", "label": "in a slot"}),
    (Coded(), {"type": f"{__name__}.Coded", "message": "bad code"}),
    (Loose(extra_note="x"), {"kept": 1, "extra_note": "x"}),
    (pydantic.SecretStr("hunter2"), "[REDACTED]"),
    (Priced(), {"net": 2, "gross": 4}),
    (SlottedData(), {"p": 1, "q": "q"}),
    (Data(), {"p": [1]}),
    (Paid(), {"item": "book", "status": "PAID"}),
    (Totalled(), {"item": "book", "total": 42.5}),
    (Referenced(), {"item": "book", "ref": "REF-9"}),
    (Pair(1, "b"), {"a": 1, "b": "b"}),
    (AttrsSlotted(), {"x": 3}),
    (AttrsPlain(), {"y": "y"}),
    (ModelV2(), {"f": 2}),
    (ModelV1(), {"g": "v1"}),
    (Colour.RED, "red"),
    (np.arange(3), [0, 1, 2]),
    (
        _FRAME,
        {
            MARK: "dataframe",
            "shape": [3, 2],
            "columns": ["a", "b"],
            "dtypes": [str(_FRAME["a"].dtype), str(_FRAME["b"].dtype)],
            "index": [0, 1, 2],
            "rows": [[1, "x"], [2, "y"], [3, "z"]],
        },
    ),
    (
        _FRAME["a"],
        {
            MARK: "series",
            "shape": [3],
            "name": "a",
            "dtype": "int64",
            "index": [0, 1, 2],
            "values": [1, 2, 3],
        },
    ),
]


def _recorded(tracker: AsyncTracker, value: Any) -> Any:
    """``value`` as the handler's own hot path captures it (the inlined fast path)."""
    records: list[Any] = []
    tracker._put = records.append  # type: ignore[method-assign]
    tracker.on_chain_end({"v": value}, run_id=uuid.uuid4())
    return orjson.loads(records[0][6])["data"]["outputs"]["v"]


@pytest.mark.parametrize(("value", "expected"), _KINDS, ids=[type(v).__name__ for v, _ in _KINDS])
def test_values_are_written_as_their_data(
    value: Any, expected: Any, make_tracker: Callable[..., AsyncTracker]
) -> None:
    assert _capture(value) == expected
    assert _recorded(make_tracker(), value) == expected
    assert _capture([value, {"plain": {}}]) == [expected, {"plain": {}}]  # beside a real {}


def test_an_object_without_fields_is_a_counted_placeholder_never_a_bare_dict(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker()
    logged = _recorded(tracker, Hollow())
    assert logged[MARK] == "unencodable"
    assert logged["type"] == f"{__name__}.Hollow"
    assert logged["repr"].startswith("<") and "Hollow object" in logged["repr"]
    tracker._put = tracker._engine.put  # type: ignore[method-assign]
    RunnableLambda(lambda x: {"out": Hollow(), "empty": {}}).invoke({"q": 1}, config={"callbacks": [tracker]})
    tracker.flush_blocking(timeout=10)
    end = _events(tmp_destination)[-1]
    assert end["data"]["outputs"]["empty"] == {}
    assert end["data"]["outputs"]["out"][MARK] == "unencodable"
    assert tracker.statistics().encode_errors == 1


_LOSSY: list[tuple[str, Any, Any]] = [
    ("hollow", Hollow(), {MARK: "unencodable"}),
    ("request_kwargs", SlotsOverADict(), {"x": "in a slot"}),
    ("response_metadata", Hollow(), {MARK: "unencodable"}),
    ("tagged", Tagged(), {"note": "in the dict", "label": "in a slot"}),
    ("loose", Loose(extra_note="x"), {"kept": 1, "extra_note": "x"}),
]


@pytest.mark.parametrize("padding", [0, 20_000], ids=["small", "over-16KiB"])
@pytest.mark.parametrize(("key", "value", "expected"), _LOSSY, ids=[k for k, _, _ in _LOSSY])
def test_an_objects_data_is_kept_in_any_event_under_any_key(
    key: str, value: Any, expected: Any, padding: int, make_tracker: Callable[..., AsyncTracker]
) -> None:
    """Each object alone in its event (beside a long string, or not), under a plain key
    or one named like LangChain's own dict fields."""
    for logged in (_recorded(make_tracker(), {"pad": "p" * padding, key: value}), _capture({key: value})):
        assert expected.items() <= logged[key].items()


class Node:
    """A cycle through objects: the check of each layer of objects stops at ``max_depth``."""

    def __init__(self, other: Node | None = None) -> None:
        self.other = other


def test_a_cycle_through_objects_is_cut_at_max_depth(make_tracker: Callable[..., AsyncTracker]) -> None:
    first = Node()
    first.other = Node(first)
    for logged in (_recorded(make_tracker(), first), _capture(first)):
        value, depth = logged, 0
        while MARK not in value:
            value, depth = value["other"], depth + 1
        assert value[MARK] == "max_depth"
        assert 20 < depth < 40


def test_model_events_keep_message_extras_and_the_objects_in_metadata(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    """A real ChatOpenAI call: its chat_model_start holds the user's message (with an
    extra field, as LangChain's messages allow) and the run's metadata."""
    tracker = make_tracker()
    with OpenAIStub() as stub:
        message = HumanMessage("echo: hello", trace_note="kept")
        metadata = {key: value for key, value, _ in _LOSSY}
        chat_model(stub.url).invoke([message], config={"callbacks": [tracker], "metadata": metadata})
    tracker.flush_blocking(timeout=10)
    start = next(e for e in _events(tmp_destination) if e["kind"] == "chat_model_start")
    assert start["data"]["messages"][0][0]["trace_note"] == "kept"
    for key, _, expected in _LOSSY:
        assert expected.items() <= start["metadata"][key].items()
    assert tracker.statistics().encode_errors == 1  # the hollow objects, one event


def test_a_dataframe_keeps_the_leading_rows_that_fit_in_the_field_limit() -> None:
    frame = pd.DataFrame({"n": range(10_000), "text": ["row text " * 4] * 10_000})
    logged = _capture(frame, max_field_bytes=4096)
    assert logged["shape"] == [10_000, 2]
    assert logged["columns"] == ["n", "text"]
    assert 10 < len(logged["rows"]) < 200
    assert logged["rows"][0] == [0, "row text " * 4]
    assert logged["index"] == list(range(len(logged["rows"])))
    assert len(orjson.dumps(logged["rows"])) <= 4096


_MISSING: list[tuple[str, Any, Any]] = [
    ("NA", pd.NA, None),
    ("NaT", pd.NaT, None),
    ("Int64", pd.array([1, None], dtype="Int64"), [1, None]),
    ("string", pd.array(["a", None], dtype="string"), ["a", None]),
    ("boolean", pd.array([True, None], dtype="boolean"), [True, None]),
    ("categorical", pd.Categorical(["x", None, "x"]), ["x", None, "x"]),
    ("index", pd.Index(["a", None]), ["a", None]),
    (
        "frame",
        pd.DataFrame(
            {
                "o": pd.Series(["x", pd.NA, np.nan, pd.NaT], dtype=object),
                "t": pd.to_datetime(["2024-01-01", None, "2024-01-02", None]),
                "i": pd.array([1, None, 3, None], dtype="Int64"),
            }
        ),
        [
            ["x", "2024-01-01T00:00:00", 1],
            [None, None, None],
            [None, "2024-01-02T00:00:00", 3],
            [None, None, None],
        ],
    ),
    ("series", pd.Series([1, None], dtype="Int64"), [1, None]),
]


@pytest.mark.parametrize(("value", "expected"), [v for _, *v in _MISSING], ids=[k for k, _, _ in _MISSING])
def test_pandas_missing_values_and_extension_arrays_are_written_as_their_data(
    value: Any, expected: Any, make_tracker: Callable[..., AsyncTracker]
) -> None:
    for logged in (_capture(value), _recorded(make_tracker(), value)):
        key = (
            "rows" if isinstance(value, pd.DataFrame) else "values" if isinstance(value, pd.Series) else None
        )
        assert (logged if key is None else logged[key]) == expected


# -- errors are read in the callback ----------------------------------------------------------------


def _failing(depth: int) -> None:
    if depth:
        _failing(depth - 1)
    raise ValueError("deep " * 1000)


def test_an_error_is_read_in_the_callback_not_later(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker()
    items = ["before"]
    try:
        raise ValueError(items, Slotted())
    except ValueError as exc:
        error = exc
    tracker.on_chain_error(error, run_id=uuid.uuid4())
    items.append("after")  # the application changes the exception's argument afterwards
    error.args = ("replaced",)
    tracker.flush_blocking(timeout=10)
    logged = _events(tmp_destination)[0]["data"]["error"]
    assert logged["type"] == "ValueError"
    assert "'before'" in logged["message"] and "after" not in logged["message"]
    assert logged["args"] == [["before"], {"name": "slotted", "_Slotted__sauce": [1, 2]}]
    assert logged["traceback"].startswith("Traceback (most recent call last):")
    assert "ValueError: (['before']," in logged["traceback"]
    assert "$error" not in logged


def test_a_long_traceback_is_cut_at_the_field_limit(make_tracker: Callable[..., AsyncTracker]) -> None:
    tracker = make_tracker(config=TrackerConfig(max_field_bytes=2048))
    records: list[Any] = []
    tracker._put = records.append  # type: ignore[method-assign]
    try:
        _failing(3)
    except ValueError as exc:
        tracker.on_tool_error(exc, run_id=uuid.uuid4())
    error = records[0][7]
    assert error["message"].startswith("deep deep")
    assert error["message"].endswith("characters in all]")
    assert error["traceback"].endswith("characters in all]")
    assert len(error["traceback"].encode()) < 2048 + 100


# -- what a record holds: nothing the cyclic collector walks -----------------------------------


def test_records_of_a_chain_hold_nothing_the_collector_tracks(
    make_tracker: Callable[..., AsyncTracker],
) -> None:
    """LangChain's run ids are ``UUID`` objects, which the collector tracks: records
    holding them would be walked by every collection while they wait for the shipper."""
    chain = PromptTemplate.from_template("Say {q}.") | FakeListLLM(responses=["said"])
    tracker = make_tracker()
    records: list[Any] = []
    tracker._put = records.append  # type: ignore[method-assign]  # capture only
    chain.invoke({"q": "x"}, config={"callbacks": [tracker]})
    gc.collect()
    assert [r[0] for r in records] == [
        "chain_start",
        "chain_start",
        "chain_end",
        "llm_start",
        "llm_end",
        "chain_end",
    ]
    for record in records:
        assert not gc.is_tracked(record), record
    outer = records[0][3]
    assert type(outer) is int and records[0][4] is None
    assert [r[4] for r in records[1:5]] == [outer] * 4


def test_run_ids_are_written_as_langchains_uuid_text(
    worker_mode: str, make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker()
    root, child = uuid.uuid4(), uuid.UUID(int=1)
    tracker.on_chain_start({}, {"q": 1}, run_id=root)
    tracker.on_chain_start({}, {"q": 2}, run_id=child, parent_run_id=root)
    tracker.on_text("t", run_id="a run id of the caller's own", parent_run_id=child)  # type: ignore[arg-type]

    class RunId(uuid.UUID):  # a subclass: read as its int on the caller's thread, like a UUID
        pass

    odd = RunId(int=7)
    tracker.on_text("u", run_id=odd, parent_run_id=child)
    tracker.flush_blocking(timeout=30)
    events = sorted(_events(tmp_destination), key=lambda e: e["seq"])
    assert [(e["run_id"], e["parent_run_id"]) for e in events] == [
        (str(root), None),
        (str(child), str(root)),
        ("a run id of the caller's own", str(child)),
        (str(odd), str(child)),
    ]


def test_uuid_text_is_the_uuids_own() -> None:
    for value in (0, 1, 2**64, (1 << 128) - 1, uuid.uuid4().int, uuid.uuid1().int):
        assert uuid_text(value) == str(uuid.UUID(int=value))
    assert uuid_text(-1) == -1  # not a UUID's int: as it is
    assert uuid_text(1 << 128) == str(1 << 128)  # over 64 bits: its text (JSON's writer refuses it)


#: The keywords LangChain passes beside the named ones, by callback, in its call order.
_REGULAR_KEYWORDS = {
    "on_chain_start": ("run_type",),
    "on_llm_start": ("invocation_params", "options", "batch_size"),
    "on_chat_model_start": ("invocation_params", "options", "batch_size"),
    "on_tool_start": ("color", "tool_call_id"),
    "on_tool_end": ("color",),
}


def test_langchains_regular_keywords_are_parameters_written_as_passed(
    make_tracker: Callable[..., AsyncTracker],
) -> None:
    """A keyword that lands in ``**kwargs`` costs CPython a string comparison with every
    parameter name: LangChain's regular ones are parameters. The event's data is the same:
    each one passed in its place (before the callback's own arguments), none made up."""
    tracker = make_tracker()
    records: list[Any] = []
    tracker._put = records.append  # type: ignore[method-assign]  # capture only
    first = {"on_tool_end": ("out",), "on_chain_start": (None, {"q": 1}), "on_tool_start": ({}, "in")}
    chain = PromptTemplate.from_template("Say {q}.") | FakeListLLM(responses=["said"])
    tracker_calls = [
        (method, first.get(method, ({}, [])), dict.fromkeys(names, 1))
        for method, names in _REGULAR_KEYWORDS.items()
    ]
    for method, names in _REGULAR_KEYWORDS.items():
        assert set(names) <= set(inspect.signature(getattr(tracker, method)).parameters), method
    for method, args, keywords in tracker_calls:
        getattr(tracker, method)(*args, run_id=uuid.uuid4(), other=2, **keywords)
        getattr(tracker, method)(*args, run_id=uuid.uuid4())
    chain.invoke({"q": "x"}, config={"callbacks": [tracker]})
    datas = [orjson.loads(r[6])["data"] for r in records]
    for (method, _, keywords), passed, bare in zip(tracker_calls, datas[::2], datas[1::2], strict=False):
        assert list(passed)[: len(keywords) + 1] == ["other", *keywords], method
        assert not set(keywords) & set(bare), method
    llm_start = datas[-3]
    assert list(llm_start)[:3] == ["invocation_params", "options", "batch_size"]
    assert llm_start["batch_size"] == 1 and datas[-5]["run_type"] == "prompt"


def _endless(first: Any) -> Iterator[Any]:
    """An iterator that never ends (within a test: one that raises after a million items)."""
    for i in range(1_000_000):
        yield first(i)
    raise RuntimeError("the iterator was walked whole")


class Streamed(list[int]):
    def __iter__(self) -> Iterator[int]:
        return _endless(int)


class StreamedTuple(tuple[int, ...]):
    def __iter__(self) -> Iterator[int]:
        return _endless(int)


class StreamedPair(NamedTuple):
    a: int
    b: int

    def __iter__(self) -> Iterator[int]:  # type: ignore[override]
        return _endless(int)


class StreamedSet(frozenset[int]):
    def __iter__(self) -> Iterator[int]:
        return _endless(int)


class EndlessMapping(collections.abc.Mapping[str, Any]):
    """A Mapping whose ``items()`` never ends: ``value(i)`` for the i-th item."""

    def __init__(self, value: Callable[[int], Any]) -> None:
        self.value = value

    def __getitem__(self, key: str) -> Any:
        return self.value(int(key[1:]))

    def __iter__(self) -> Iterator[str]:
        return _endless(lambda i: f"k{i}")

    def __len__(self) -> int:
        return 1

    def items(self) -> Any:
        return _endless(lambda i: (f"k{i}", self.value(i)))


def test_the_careful_path_reads_containers_in_c_and_bounds_a_mappings_items() -> None:
    """A list, tuple or set subclass is read as its own items (in C), whatever its
    __iter__ does; a Mapping's items() (its own Python) is read up to 10,000 items or
    max_field_bytes, then a placeholder with the count written. The callback returns."""
    capture = Capturer(256 * 1024, 32)
    values = {
        "list": Streamed([1, 2]),
        "tuple": StreamedTuple((3, 4)),
        "pair": StreamedPair(5, 6),
        "set": StreamedSet({7, 8}),
        "counted": EndlessMapping(int),
        "sized": EndlessMapping(lambda i: "x" * 1000),
        "slotted": Slotted(),  # sends the event down the careful path
    }
    logged = orjson.loads(capture({"data": values}))["data"]
    assert logged["list"] == [1, 2]
    assert logged["tuple"] == [3, 4]
    assert logged["pair"] == {"a": 5, "b": 6}
    assert logged["set"] == [7, 8]
    counted = logged["counted"]
    assert counted.pop(MARK) == {
        MARK: "too_many_values",
        "type": f"{__name__}.EndlessMapping",
        "kept": 10_000,
    }
    assert counted == {f"k{i}": i for i in range(10_000)}
    sized = logged["sized"]
    kept = sized.pop(MARK)["kept"]
    assert sized == {f"k{i}": "x" * 1000 for i in range(kept)}
    assert 256 * 1024 < kept * (1000 + 10) < 256 * 1024 + 2048  # each item: its value, its key


def test_a_long_list_tuple_set_or_dict_keeps_its_first_10000_items_and_says_how_many_not(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    """Past 10,000 items (as numpy arrays), in an event over max_field_bytes: the first
    10,000 are written, then a placeholder with the count left out (a dict: under the key
    "$asynctrack"), so the callback walks what it keeps, not the value (3M ints: 22 MB and
    ~1 s in the callback before). Up to 10,000, a value is whole."""
    many = list(range(100_000))
    values = {
        "list": many,
        "tuple": tuple(many),
        "rows": Rows(many),
        "set": set(many),
        "dict": dict.fromkeys(map(str, many), 0),
        "whole": list(range(10_000)),
    }
    tracker = make_tracker()
    tracker.on_chain_start({}, values, run_id=uuid.uuid4())
    tracker.flush_blocking(timeout=60)
    (event,) = [e for e in _events(tmp_destination) if e["kind"] == "chain_start"]
    logged = event["data"]["inputs"]
    for key, type_name in (
        ("list", "list"),
        ("tuple", "tuple"),
        ("rows", f"{__name__}.Rows"),
        ("set", "set"),
    ):
        *kept, marker = logged[key]
        assert marker == {MARK: "too_many_values", "type": type_name, "kept": 10_000, "left_out": 90_000}
        assert len(kept) == 10_000 and (key == "set" or kept == many[:10_000])
    table = logged["dict"]
    assert table.pop(MARK) == {MARK: "too_many_values", "type": "dict", "kept": 10_000, "left_out": 90_000}
    assert table == dict.fromkeys(map(str, range(10_000)), 0)
    assert logged["whole"] == list(range(10_000))


class MarkedMapping(EndlessMapping):
    """An ``EndlessMapping`` whose sixth item's key is "$asynctrack"."""

    def items(self) -> Any:
        return _endless(lambda i: (MARK, "the user's value") if i == 5 else (f"k{i}", self.value(i)))


def test_a_cut_containers_own_asynctrack_key_is_kept_beside_the_mark() -> None:
    """A dict past 10,000 items (or a Mapping past its bound) holding its own key
    "$asynctrack" among the items kept: that item moves to "$asynctrack <str>" (as a key
    taken already), the mark takes "$asynctrack", and "kept" counts the items written."""
    capture = Capturer(1 << 20, 32)
    table = {**{f"k{i}": i for i in range(9_999)}, MARK: "the user's value", "zz": 1, "zzz": 2}
    endless = MarkedMapping(int)
    logged = orjson.loads(capture.careful({"data": {"table": table, "endless": endless}}))["data"]
    for key, mark in (
        ("table", {MARK: "too_many_values", "type": "dict", "kept": 10_000, "left_out": 2}),
        ("endless", {MARK: "too_many_values", "type": f"{__name__}.MarkedMapping", "kept": 10_000}),
    ):
        written = logged[key]
        assert written.pop(MARK) == mark
        assert written.pop(f"{MARK} <str>") == "the user's value"
        assert len(written) + 1 == mark["kept"]


class Shown(str):
    __slots__ = ()

    def __str__(self) -> str:
        return "display-form"


class Count(int):
    def __int__(self) -> int:
        return 999

    def __index__(self) -> int:
        return 998


class Ratio(float):
    def __float__(self) -> float:
        return 9.5


class Rows(list[int]):
    def __iter__(self) -> Iterator[Any]:
        return iter(["only-this"])


_SUBCLASSED: list[tuple[Any, Any]] = [
    (Shown("real text"), "real text"),
    (Count(5), 5),
    (Ratio(1.5), 1.5),
    (Rows([1, 2, 3]), [1, 2, 3]),
]


@pytest.mark.parametrize(("value", "expected"), _SUBCLASSED, ids=[type(v).__name__ for v, _ in _SUBCLASSED])
def test_a_builtin_subclass_is_written_as_its_own_value_on_both_paths(
    value: Any, expected: Any, make_tracker: Callable[..., AsyncTracker]
) -> None:
    """Not what its overridden __str__, __int__, __float__ or __iter__ returns: the
    careful path (a slotted object beside it) writes what orjson's fast path writes."""
    assert _recorded(make_tracker(), value) == expected
    assert _capture(value) == expected
    assert _capture({"v": value, "slotted": Slotted()})["v"] == expected
    if not isinstance(value, list):  # as a key (the careful path)
        assert _capture({value: "key"}) == {orjson.dumps(expected).decode().strip('"'): "key"}


class Shown(bytes):
    def __bytes__(self) -> bytes:
        return b"what __bytes__ says"


class ShownArray(bytearray):
    def __bytes__(self) -> bytes:
        return b"what __bytes__ says"


@pytest.mark.parametrize("value", [Shown(b"real bytes"), ShownArray(b"real bytes")])
def test_a_bytes_subclass_is_written_as_its_own_bytes(value: Any) -> None:
    """The buffer itself, never what an overridden ``__bytes__`` returns."""
    expected = {"$asynctrack": "bytes", "size": 10, "text": "real bytes"}
    assert _capture(value) == expected
    assert _capture({"v": value, "slotted": Slotted()})["v"] == expected


class Hue(str, enum.Enum):  # noqa: UP042 - the mix-in, not StrEnum, is tested
    RED = "red"


class Shade(str, enum.Enum):  # noqa: UP042
    """A member whose text is not its value (its own __new__)."""

    def __new__(cls, value: str, label: str) -> Shade:
        member = str.__new__(cls, label)
        member._value_ = value
        return member

    DARK = ("dark", "Dark shade")


class Level(enum.IntEnum):
    HIGH = 3


class Mode(enum.Flag):
    READ = 1
    WRITE = 2


class Letter(enum.StrEnum):
    A = "a"


_MEMBERS: list[tuple[Any, Any]] = [
    (Hue.RED, "red"),
    (Shade.DARK, "dark"),
    (Level.HIGH, 3),
    (Mode.READ | Mode.WRITE, 3),
    (Letter.A, "a"),
    (Colour.RED, "red"),
]


@pytest.mark.parametrize(("member", "value"), _MEMBERS, ids=[type(m).__name__ for m, _ in _MEMBERS])
def test_an_enum_member_is_its_value_as_a_value_a_key_and_in_a_set(
    member: Any, value: Any, make_tracker: Callable[..., AsyncTracker]
) -> None:
    key = value if type(value) is str else str(value)
    assert _capture({"v": member, "slotted": Slotted()})["v"] == value  # the careful path
    assert _capture({member: 1}) == {key: 1}
    assert _capture({member}) == [value]
    if type(member) is not Shade:  # orjson writes a str member as its text (the fast path)
        assert _capture(member) == value
        assert _recorded(make_tracker(), member) == value


def test_a_long_streamed_token_and_name_are_cut_like_any_string(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    """A token passed as a str travels beside the body, a name in the envelope: both
    are cut at capture like the body's strings (what the record holds is bounded)."""
    tracker = make_tracker(config=TrackerConfig(max_field_bytes=64 * 1024))
    run = uuid.uuid4()
    long = 1 << 20
    tracker.on_llm_start({"name": "m"}, ["p"], run_id=run)
    tracker.on_llm_new_token("T" * long, run_id=run)
    tracker.on_llm_new_token("é" * 20_000, run_id=run)  # 40,000 bytes: fits, kept whole
    tracker.on_chain_start({"name": "c"}, {}, run_id=uuid.uuid4(), name="N" * long)
    tracker.on_chain_start({"name": "S" * long}, {}, run_id=uuid.uuid4())
    tracker.flush_blocking(timeout=30)
    events = sorted(_events(tmp_destination), key=lambda e: e["seq"])
    marker = f"...[{MARK}: truncated, {long} characters in all]"
    assert events[1]["data"]["token"] == "T" * 64 * 1024 + marker
    assert events[2]["data"]["token"] == "é" * 20_000
    assert events[3]["name"] == "N" * 64 * 1024 + marker
    assert events[4]["name"] == "S" * 64 * 1024 + marker


def test_a_run_id_int_over_64_bits_is_written_as_its_text(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    """The event is kept (not replaced by a translate_failed record); ints a UUID holds
    are the UUID's text as before, a negative one within 64 bits a number."""
    tracker = make_tracker()
    huge, low = 1 << 130, -(1 << 70)
    tracker.on_text("a", run_id=huge, parent_run_id=low)  # type: ignore[arg-type]
    tracker.on_text("b", run_id=-5, parent_run_id=huge)  # type: ignore[arg-type]
    tracker.flush_blocking(timeout=30)
    events = sorted(_events(tmp_destination), key=lambda e: e["seq"])
    assert [(e["kind"], e["run_id"], e["parent_run_id"]) for e in events] == [
        ("text", str(huge), str(low)),
        ("text", -5, str(huge)),
    ]
    assert tracker.statistics().encode_errors == 0


class _Text(str):
    def __str__(self) -> str:
        return "not its text"


@pytest.mark.usefixtures("worker_mode")
def test_a_run_id_of_another_type_is_written_as_its_text_never_lost(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    """CAPTURE.md: a caller's id that is not a UUID is written as given: bytes as their
    UTF-8 text (a byte that is not UTF-8 as its escape), a float, a tuple or a str subclass
    as its text; the event is kept, never a translate_failed placeholder, in both modes,
    and behind tail sampling (an id that is no UUID: recorded)."""
    ids = [b"rid-1", bytearray(b"a\xffb"), 1.5, ("a", 1), "not-a-uuid", _Text("mine")]
    texts = ["rid-1", "a\\xffb", "1.5", "('a', 1)", "not-a-uuid", "mine"]
    sampled = TrackerConfig(sample_rate=0.5, sample_keep_errors=True)
    for destination, config in ((tmp_destination, None), (tmp_destination / "sampled", sampled)):
        tracker = make_tracker(destination, config=config)
        for i, run_id in enumerate(ids):
            tracker.on_chain_start({"name": "c"}, {"i": i}, run_id=run_id, parent_run_id=run_id)  # type: ignore[arg-type]
            tracker.on_chain_end({"i": i}, run_id=run_id)  # type: ignore[arg-type]
        tracker.flush_blocking(timeout=30)
        events = sorted(_events(destination), key=lambda e: e["seq"])
        assert [(e["kind"], e["run_id"]) for e in events] == [
            (kind, text) for text in texts for kind in ("chain_start", "chain_end")
        ]
        assert [e["parent_run_id"] for e in events if e["kind"] == "chain_start"] == texts
        assert all(e["duration"] is not None for e in events if e["kind"] == "chain_end")  # its start found
        assert tracker.statistics().encode_errors == 0


class _Tool(str, enum.Enum):  # noqa: UP042 - the case reported: a (str, Enum), not a StrEnum
    SEARCH = "search"


def test_a_runnable_named_by_a_str_subclass_is_recorded_by_its_text(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    """A ``(str, Enum)`` tool name in ``serialized["name"]`` (or in its ``id``) is the
    event's name, its text, as the same value given as ``name=`` is; never its
    ``__str__`` (was: no name)."""
    tracker = make_tracker()
    tracker.on_tool_start({"name": _Tool.SEARCH}, "q", run_id=uuid.uuid4())
    tracker.on_chain_start({"name": _Text("my_chain")}, {}, run_id=uuid.uuid4())
    tracker.on_chain_start({"id": ["m", _Text("by_id")]}, {}, run_id=uuid.uuid4())
    tracker.on_tool_start({"name": "x"}, "q", run_id=uuid.uuid4(), name=_Tool.SEARCH)
    tracker.flush_blocking(timeout=30)
    events = sorted(_events(tmp_destination), key=lambda e: e["seq"])
    assert [e["name"] for e in events] == ["search", "my_chain", "by_id", "search"]


def test_an_object_that_only_says_it_is_a_builtin_is_read_as_before() -> None:
    """A Mock with a spec says it is a list, set, int or str (its __class__) without being
    one: read through its own methods (the base's C reads refuse it), not a placeholder."""
    assert _capture({"v": mock.MagicMock(spec=list), "slotted": Slotted()})["v"] == []
    assert _capture({"v": mock.MagicMock(spec=frozenset), "slotted": Slotted()})["v"] == []
    assert _capture({"v": mock.MagicMock(spec=int), "slotted": Slotted()})["v"] == 1
    assert _capture({"v": mock.MagicMock(spec=float), "slotted": Slotted()})["v"] == 1.0
    assert _capture({"v": mock.MagicMock(spec=str), "slotted": Slotted()})["v"].startswith("<MagicMock")
