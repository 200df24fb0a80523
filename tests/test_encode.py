"""Encoding (``_encode``): any value becomes valid JSON Lines, marked, redacted.

Bad values go through real chains (inputs and custom-event data); the written
files are parsed with ``orjson`` (strict: no NaN literals, valid UTF-8).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import math
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.callbacks import CallbackManagerForLLMRun, dispatch_custom_event
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableLambda

import asynctrack
from asynctrack import AsyncTracker, TrackerConfig
from asynctrack._capture import Capturer
from asynctrack._config import DEFAULT_REDACT_KEYS
from asynctrack._events._encode import REDACTED, Encoder
from asynctrack._redact import KeyRule
from asynctrack._redact._keys import SECRET_FIELD

MARK = "$asynctrack"


def _files(destination: Path) -> list[Path]:
    return sorted(p for p in destination.rglob("*") if p.is_file())


def _lines(destination: Path) -> list[bytes]:
    return [line for p in _files(destination) if p.suffix == ".jsonl" for line in p.read_bytes().splitlines()]


def _strict_events(destination: Path) -> list[dict[str, Any]]:
    """Parse every line with orjson (rejects NaN/Infinity literals and invalid UTF-8)."""
    return [orjson.loads(line) for line in _lines(destination)]


# -- the bad-value corpus ----------------------------------------------------------------


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr refuses")


class BadStrError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str refuses")


@dataclasses.dataclass
class Config:
    name: str
    values: list[int]


class Model(pydantic.BaseModel):
    x: int
    password: pydantic.SecretStr


class Color(enum.Enum):
    RED = "red"


HUGE = 50 * 1024 * 1024


def _corpus() -> dict[Any, Any]:
    cyclic: dict[str, Any] = {"name": "cycle"}
    cyclic["self"] = cyclic
    looped: list[Any] = [1]
    looped.append(looped)
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(1000):
        node["d"] = {}
        node = node["d"]
    return {
        "message": HumanMessage(content="hello"),
        "document": Document(page_content="page", metadata={"source": "s"}),
        "model": Model(x=1, password=pydantic.SecretStr("corpus-hidden-pw")),
        "dataclass": Config(name="c", values=[1, 2]),
        "bytes": b"\x00\xffraw",
        "set": {3, 1, 2},
        "decimal": decimal.Decimal("1.10"),
        "np_float": np.float32(1.5),
        "np_int": np.int64(7),
        "np_array": np.arange(6).reshape(2, 3),
        "np_big_array": np.zeros(20_000),
        "exception": ValueError("bad value"),
        "bad_str_exception": BadStrError(),
        "bad_repr": BadRepr(),
        "cyclic": cyclic,
        "looped": looped,
        "nan": math.nan,
        "inf": math.inf,
        "ninf": -math.inf,
        "surrogate": "a\ud800b",
        "huge": "x" * HUGE,
        "big_int": 2**70,
        "big_negative": -(2**64),
        "keys": {1: "int", (1, 2): "tuple", None: "none", 2.5: "float"},
        "deep": deep,
        "enum": Color.RED,
        "uuid": uuid.UUID(int=1),
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "delta": datetime.timedelta(seconds=1.5),
        "complex": 1 + 2j,
        "frozen": frozenset({"b", "a"}),
    }


def _until_marker(value: Any) -> dict[str, Any]:
    """Follow single-key nesting down to the placeholder at the bottom."""
    while isinstance(value, dict | list) and not (isinstance(value, dict) and MARK in value):
        value = value[-1] if isinstance(value, list) else value[next(k for k in value if k != "name")]
    assert isinstance(value, dict)
    return value


def _check_corpus(logged: dict[str, Any], max_field: int) -> None:
    assert logged["message"]["content"] == "hello"
    assert logged["message"]["type"] == "human"
    assert logged["document"]["page_content"] == "page"
    assert logged["model"] == {"x": 1, "password": REDACTED}
    assert logged["dataclass"] == {"name": "c", "values": [1, 2]}
    # As text (latin-1 when not UTF-8), so that a credential inside is scanned like any text.
    assert logged["bytes"] == {MARK: "bytes", "size": 5, "latin1": "\x00\xffraw"}
    assert logged["set"] == [1, 2, 3]
    assert sorted(logged["frozen"]) == ["a", "b"]  # sets become lists (order not kept: see report)
    assert logged["decimal"] == "1.10"
    assert logged["np_float"] == 1.5
    assert logged["np_int"] == 7
    assert logged["np_array"] == [[0, 1, 2], [3, 4, 5]]
    assert logged["np_big_array"] == {MARK: "array", "type": "numpy.ndarray", "shape": [20000], "size": 20000}
    assert logged["exception"] == {"type": "ValueError", "message": "bad value"}
    assert logged["bad_str_exception"]["type"].endswith("BadStrError")
    assert logged["bad_repr"][MARK] == "unencodable"
    assert logged["bad_repr"]["repr"] == "<repr failed: RuntimeError>"
    assert logged["bad_repr"]["type"].endswith("BadRepr")
    assert _until_marker(logged["cyclic"])[MARK] == "max_depth"
    assert _until_marker(logged["looped"])[MARK] == "max_depth"
    assert _until_marker(logged["deep"])[MARK] == "max_depth"
    assert (logged["nan"], logged["inf"], logged["ninf"]) == (None, None, None)  # JSON has no NaN
    assert logged["surrogate"].startswith("a\ufffd")
    assert logged["surrogate"].endswith("b")
    huge = logged["huge"]
    assert huge == "x" * max_field + f"...[{MARK}: truncated, {HUGE} characters in all]"
    assert logged["big_int"] == str(2**70)
    assert logged["big_negative"] == str(-(2**64))
    assert logged["keys"] == {"1": "int", "[1,2]": "tuple", "null": "none", "2.5": "float"}
    assert logged["enum"] == "red"
    assert logged["uuid"] == "00000000-0000-0000-0000-000000000001"
    assert logged["when"] == "2024-01-02T03:04:05+00:00"
    assert logged["delta"] == 1.5
    assert logged["complex"] == {"real": 1.0, "imag": 2.0}


def test_bad_values_in_chain_inputs_and_custom_events_are_logged_with_placeholders(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker()
    corpus = _corpus()

    def step(value: dict[Any, Any]) -> str:
        dispatch_custom_event("corpus", value)
        return "survived"

    assert RunnableLambda(step).invoke(corpus, config={"callbacks": [tracker]}) == "survived"
    tracker.flush_blocking(timeout=30)

    lines = _lines(tmp_destination)
    events = _strict_events(tmp_destination)
    assert [e["kind"] for e in events] == ["chain_start", "custom_event", "chain_end"]
    max_field = tracker.config.max_field_bytes
    for line in lines:
        assert len(line) < max_field + 64 * 1024  # the 50 MB string is cut
    start, custom, end = events
    _check_corpus(start["data"]["inputs"], max_field)
    assert custom["data"]["name"] == "corpus"
    _check_corpus(custom["data"]["data"], max_field)
    assert start["$asynctrack"] == "invalid_unicode_replaced"  # the event says a string was fixed
    assert end["data"]["outputs"] == "survived"
    assert b"corpus-hidden-pw" not in b"".join(lines)
    stats = tracker.statistics()
    assert stats.written == 3
    assert stats.lost == stats.dropped == 0


def test_lone_surrogate_in_a_dict_key_keeps_the_rest_of_the_event(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    """Only string *values* are repaired on the retry; a key with a lone
    surrogate makes the retry fail too and the whole ``data`` becomes an
    ``unencodable`` placeholder."""
    tracker = make_tracker()
    RunnableLambda(lambda x: "ok").invoke({"k\ud800": 1, "keep": "me"}, config={"callbacks": [tracker]})
    tracker.flush_blocking(timeout=10)

    start = _strict_events(tmp_destination)[0]
    inputs = start["data"]["inputs"]
    assert inputs["keep"] == "me"
    assert sorted(inputs.values(), key=str) == [1, "me"]


def test_lone_surrogates_in_run_name_and_key_do_not_kill_the_worker(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    """The last-resort line dumps the envelope (``name`` included) unrepaired;
    orjson raises out of ``Encoder.encode``, through ``Engine._drain``, and the
    worker thread dies: nothing more is written and every flush times out."""
    tracker = make_tracker()
    named = RunnableLambda(lambda x: "ok", name="step\ud800")
    named.invoke({"k\ud800": 1}, config={"callbacks": [tracker]})
    RunnableLambda(lambda x: "after").invoke("next", config={"callbacks": [tracker]})
    try:
        tracker.flush_blocking(timeout=3)
    finally:
        try:
            tracker.close(timeout=0.5)  # a dead worker never answers: keep teardown short
        except asynctrack.FlushError:
            pass

    events = _strict_events(tmp_destination)
    assert len(events) == 4
    assert events[-1]["data"]["outputs"] == "after"


def test_config_max_depth_is_honoured_for_callback_arguments(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    """``TrackerConfig(max_depth=100)`` must keep 60 levels (the careful copy takes the
    configured depth, not a default of 32)."""
    tracker = make_tracker(config=TrackerConfig(max_depth=100))
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(60):
        node["d"] = {}
        node = node["d"]
    node["leaf"] = True
    RunnableLambda(lambda x: "ok").invoke({"deep": deep}, config={"callbacks": [tracker]})
    tracker.flush_blocking(timeout=10)

    start = _strict_events(tmp_destination)[0]
    logged = start["data"]["inputs"]["deep"]
    for _ in range(60):
        logged = logged["d"]
    assert logged == {"leaf": True}


def test_max_field_bytes_cuts_multibyte_text_on_a_character_boundary(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker(config=TrackerConfig(max_field_bytes=1000))
    text = "é" * 2000  # 4000 bytes of UTF-8
    RunnableLambda(lambda x: "ok").invoke(
        {"text": text, "raw": b"\x01" * 5000}, config={"callbacks": [tracker]}
    )
    tracker.flush_blocking(timeout=10)

    start = _strict_events(tmp_destination)[0]
    logged = start["data"]["inputs"]["text"]
    assert logged == "é" * 500 + f"...[{MARK}: truncated, 2000 characters in all]"
    raw = start["data"]["inputs"]["raw"]
    assert raw[MARK] == "bytes"
    assert raw["size"] == 5000
    assert raw["truncated"] is True


# -- redaction --------------------------------------------------------------------------

SK = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0"
AKIA = "AKIA" + "ABCDEFGHIJ234567"
BEARER = "Bearer " + "eyJhbGciOiJIUzI1NiJ9.payload-part.sig-part-0123456789"
PLANTED = {
    "metadata-api-key": "planted-meta-apikey-1",
    "metadata-authorization": "planted-meta-authz-2",
    "header-x-api-key": "planted-xapikey-3",
    "inputs-password": "planted-input-pw-4",
    "inputs-deep-secret": "planted-deep-secret-5",
    "inputs-token": "planted-input-token-6",
    "secretstr": "planted-secretstr-7",
    "invocation-api-key": "planted-invocation-key-8",
    "kwargs-client-secret": "planted-client-secret-9",
    "sk": SK,
    "akia": AKIA,
    "bearer-token": BEARER.split()[1],
}


class Credentials(pydantic.BaseModel):
    user: str
    key: pydantic.SecretStr


class KeyedChat(BaseChatModel):
    """A chat model whose invocation params carry a key (not a pydantic field)."""

    @property
    def _llm_type(self) -> str:
        return "keyed-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": "keyed-1",
            "api_key": PLANTED["invocation-api-key"],
            "max_tokens": 64,
            "temperature": 0.2,
        }

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = AIMessage(
            content=f"your key is {SK}",
            usage_metadata={"input_tokens": 3, "output_tokens": 5, "total_tokens": 8},
        )
        return ChatResult(
            generations=[ChatGeneration(message=message)],
            llm_output={"token_usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}},
        )


def _grep(destination: Path, secrets: Mapping[str, str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in _files(destination):
        data = path.read_bytes()
        for name, secret in secrets.items():
            if secret.encode() in data:
                found.setdefault(name, []).append(str(path.relative_to(destination)))
    return found


def test_credentials_are_redacted_by_key_type_and_pattern_everywhere(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker(config=TrackerConfig(gzip=False))
    metadata = {
        "api_key": PLANTED["metadata-api-key"],
        "request": {"headers": {"Authorization": PLANTED["metadata-authorization"]}},
        "max_tokens": 100,
    }
    inputs = {
        "question": f"my key is {SK}, aws {AKIA}, header Authorization: {BEARER}",
        "headers": {"X-Api-Key": PLANTED["header-x-api-key"], "Content-Type": "json"},
        "user": {
            "password": PLANTED["inputs-password"],
            "profile": {"deep": {"client_secret": PLANTED["inputs-deep-secret"]}},
        },
        "token": PLANTED["inputs-token"],
        "creds": Credentials(user="bob", key=pydantic.SecretStr(PLANTED["secretstr"])),
        "token_usage": {"total_tokens": 12},
        "max_tokens": 50,
    }
    chain = RunnableLambda(lambda x: [HumanMessage(content=x["question"])]) | KeyedChat()
    chain.invoke(inputs, config={"callbacks": [tracker], "metadata": metadata})
    tracker.on_text("free text " + SK, run_id=uuid.uuid4(), client_secret=PLANTED["kwargs-client-secret"])
    tracker.close(timeout=10)

    assert _grep(tmp_destination, PLANTED) == {}
    events = _strict_events(tmp_destination)
    start = events[0]
    assert start["metadata"]["api_key"] == REDACTED
    assert start["metadata"]["request"]["headers"]["Authorization"] == REDACTED
    assert start["metadata"]["max_tokens"] == 100
    logged = start["data"]["inputs"]
    assert logged["headers"] == {"X-Api-Key": REDACTED, "Content-Type": "json"}
    assert logged["user"]["password"] == REDACTED
    assert logged["user"]["profile"]["deep"]["client_secret"] == REDACTED
    assert logged["token"] == REDACTED
    assert logged["creds"] == {"user": "bob", "key": REDACTED}
    assert logged["token_usage"] == {"total_tokens": 12}
    assert logged["max_tokens"] == 50
    # The auth scheme stays readable; the credential after it does not.
    assert logged["question"] == (
        f"my key is {REDACTED}, aws {REDACTED}, header Authorization: Bearer {REDACTED}"
    )
    chat_start = next(e for e in events if e["kind"] == "chat_model_start")
    params = chat_start["data"]["invocation_params"]
    assert params["api_key"] == REDACTED
    assert params["max_tokens"] == 64
    assert params["temperature"] == 0.2
    llm_end = next(e for e in events if e["kind"] == "llm_end")
    assert llm_end["data"]["response"]["llm_output"]["token_usage"]["total_tokens"] == 8
    message = llm_end["data"]["response"]["generations"][0][0]["message"]
    assert message["usage_metadata"] == {"input_tokens": 3, "output_tokens": 5, "total_tokens": 8}
    assert message["content"] == f"your key is {REDACTED}"


def test_a_credential_in_a_hyperparameter_value_stays_out_of_the_params_document(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    """Value patterns redact event lines only: a key-looking value under an
    innocent key (a gateway URL with a key in it) is copied verbatim into
    ``params/<writer>.json`` (and to SageMaker)."""

    class GatewayChat(KeyedChat):
        @property
        def _identifying_params(self) -> dict[str, Any]:
            return {"model_name": "gw-1", "base_url": f"https://gateway.example.com/v1?key={SK}"}

    tracker = make_tracker()
    GatewayChat().invoke("hi", config={"callbacks": [tracker]})
    tracker.close(timeout=10)

    assert _grep(tmp_destination, {"sk": SK}) == {}


def test_plain_string_api_key_field_does_not_leak_through_serialized_repr(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    """LangChain's ``serialized`` for a non-serializable model carries
    ``repr(model)``, which shows a plain ``api_key: str`` field in clear; key
    redaction never sees it because it is free text."""

    class PlainKeyChat(KeyedChat):
        api_key: str = ""

    tracker = make_tracker()
    PlainKeyChat(api_key="plain-field-secret-42").invoke("hi", config={"callbacks": [tracker]})
    tracker.close(timeout=10)

    assert _grep(tmp_destination, {"api_key field": "plain-field-secret-42"}) == {}


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-" + "Ab3dEf7h_" * 4 + "Zz",  # OpenAI project key with "_" every 8 characters
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",  # Slack token
        "AIza" + "SyAb_cD3-fGh1_jKl2-mNo3_pQr4-sTu5_vW",  # Google API key
    ],
)
def test_every_default_pattern_match_is_redacted(secret: str) -> None:
    """Keys with ``-``/``_`` inside are found from their run of token characters."""
    line = Encoder(TrackerConfig()).encode({"text": f"key: {secret}"})
    assert secret.encode() not in line
    assert orjson.loads(line) == {"text": f"key: {REDACTED}"}


def test_a_large_numpy_array_keeps_the_line_bounded(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    """A 1M-element array becomes an ``array`` placeholder at capture (the hot path
    never writes numpy arrays whole), so the line stays bounded."""
    tracker = make_tracker()
    tracker.on_text("embedding", run_id=uuid.uuid4(), vector=np.zeros(1_000_000))
    tracker.flush_blocking(timeout=10)

    (line,) = _lines(tmp_destination)
    assert len(line) < 2 * tracker.config.max_field_bytes
    assert orjson.loads(line)["data"]["vector"][MARK] == "array"


def test_redact_hook_runs_on_the_worker_edits_and_drops_events(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    threads: set[str] = set()

    def hook(event: dict[str, Any]) -> dict[str, Any] | None:
        threads.add(threading.current_thread().name)
        if event["kind"] == "chain_end":
            return None
        event["metadata"] = {**event["metadata"], "hooked": True}
        return event

    tracker = make_tracker(config=TrackerConfig(redact=hook))
    for i in range(3):
        RunnableLambda(lambda x: x).invoke(i, config={"callbacks": [tracker]})
    tracker.flush_blocking(timeout=10)

    assert threads == {"asynctrack-worker"}
    events = _strict_events(tmp_destination)
    assert [e["kind"] for e in events] == ["chain_start"] * 3
    assert all(e["metadata"]["hooked"] for e in events)
    stats = tracker.statistics()
    assert stats.filtered == 3
    assert stats.written == 3
    assert stats.recorded == 6


def test_a_failing_redact_hook_is_counted_and_never_reaches_the_chain(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    def hook(event: dict[str, Any]) -> dict[str, Any] | None:
        raise RuntimeError("hook bug")

    tracker = make_tracker(config=TrackerConfig(redact=hook))
    assert RunnableLambda(lambda x: x + 1).invoke(1, config={"callbacks": [tracker]}) == 2
    tracker.flush_blocking(timeout=10)

    events = _strict_events(tmp_destination)
    assert len(events) == 2
    assert all(e["data"][MARK] == "translate_failed" for e in events)
    assert tracker.statistics().encode_errors == 2


# -- the Encoder alone ----------------------------------------------------------------------


def _plain_encoder(**overrides: Any) -> Encoder:
    return Encoder(TrackerConfig(redact_keys=None, redact_detectors=False, **overrides))


def test_encoder_marks_too_many_values() -> None:
    encoder = _plain_encoder(max_depth=64)
    wide = {"rows": [[i] for i in range(250_000)]}
    decoded = orjson.loads(encoder.encode(wide))
    assert decoded["rows"][-1][MARK] == "too_many_values"
    assert decoded["rows"][0] == [0]


def test_encoder_lines_end_with_one_newline_and_never_contain_others() -> None:
    encoder = Encoder(TrackerConfig())
    line = encoder.encode({"text": "a\nb\r\nc", "kind": "x"})
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert orjson.loads(line)["text"] == "a\nb\r\nc"


def test_default_key_regex_spares_usage_and_limits() -> None:
    key_re = re.compile(DEFAULT_REDACT_KEYS)

    def hit(key: str) -> bool:
        return key_re.search(key.lower().replace("-", "_")) is not None

    for key in (
        "api_key",
        "OPENAI_API_KEY",
        "secret",
        "token",
        "access_token",
        "password",
        "Authorization",
        "X-Api-Key",
        "client_secret",
        "aws_secret_access_key",
        "session_token",
        "Cookie",
    ):
        assert hit(key), key
    for key in (
        "max_tokens",
        "token_usage",
        "total_tokens",
        "prompt_tokens",
        "tokens",
        "author",
        "input_tokens",
        "tokenizer",
        "model_name",
        "temperature",
    ):
        assert not hit(key), key


# -- properties ---------------------------------------------------------------------------

_KEY_RULE = KeyRule(DEFAULT_REDACT_KEYS)
_SECRET_FIELD = KeyRule(SECRET_FIELD)  # redacted with key rules off too
#: Text that may trigger a value detector or a text key rule (a superset: the property
#: tests below only check values that hold none of it).
_VALUE_RE = re.compile(
    r"(?i)pass|pwd|secret|credential|cookie|auth|key|token|sk-|sk_|rk_|pk-|lsv2|akia|asia|abia|acca"
    r"|gh[pousr]_|github|glpat|xox|aiza|hf_|npm_|pypi|gsk_|xai-|r8_|sg\.|eyj|bearer|begin|://"
    r"|[A-Za-z0-9_\-]{20}|[A-Za-z0-9/+]{40}"
)
_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
_json = st.recursive(
    _leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=25,
)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _without_secret_fields(value: Any) -> bool:
    if isinstance(value, dict):
        return all(not _SECRET_FIELD(k) and _without_secret_fields(v) for k, v in value.items())
    if isinstance(value, list):
        return all(map(_without_secret_fields, value))
    return True


def _redaction_free(value: Any) -> bool:
    if isinstance(value, dict):
        return (
            all(not _KEY_RULE(k) and _redaction_free(v) for k, v in value.items())
            and _VALUE_RE.search(orjson.dumps(list(value)).decode()) is None
        )
    if isinstance(value, list):
        return all(_redaction_free(v) for v in value)
    if isinstance(value, str):
        return _VALUE_RE.search(value) is None
    return True


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(_json)
def test_json_values_round_trip_when_redaction_is_off(value: Any) -> None:
    if _depth(value) >= 30 or not _without_secret_fields(value):
        return  # pydantic's secret field ("secret_value", "SecretBytes") is redacted even so
    encoder = _plain_encoder()
    assert orjson.loads(encoder.encode({"v": value})) == {"v": value}


@settings(max_examples=100, deadline=None, database=None)
@given(_json)
def test_json_values_round_trip_under_default_redaction_unless_redacted(value: Any) -> None:
    if _depth(value) >= 30 or not _redaction_free(value):
        return
    encoder = Encoder(TrackerConfig())
    assert orjson.loads(encoder.encode({"v": value})) == {"v": value}


@settings(max_examples=100, deadline=None, database=None)
@given(st.text(max_size=300))
def test_any_string_is_encoded_valid_and_bounded(text: str) -> None:
    encoder = _plain_encoder(max_field_bytes=64)
    decoded = orjson.loads(encoder.encode({"t": text}))["t"]
    if any("\ud800" <= c <= "\udfff" for c in text):
        assert len(decoded.encode()) <= 64 + 100  # valid UTF-8 (orjson parsed it), still bounded
    elif len(text.encode()) <= 64:
        assert decoded == text
    else:
        head, _, tail = decoded.partition(f"...[{MARK}: truncated")
        assert len(head.encode()) <= 64
        assert text.startswith(head)
        assert tail == f", {len(text)} characters in all]"


@settings(max_examples=150, deadline=None, database=None)
@given(_json)
def test_the_hot_path_capture_and_the_careful_encoder_agree(value: Any) -> None:
    """Most events are captured as JSON bytes on the caller's thread and spliced
    behind the envelope; that line must read back like the careful encoder's."""
    if _depth(value) >= 30 or not _redaction_free(value):
        return
    config = TrackerConfig()
    envelope = {"seq": 7, "kind": "custom_event", "name": "n"}
    body = {"tags": ["t"], "metadata": {"m": 1}, "data": {"v": value}}
    captured = Capturer(config.max_field_bytes, config.max_depth)(body)
    fast = orjson.loads(Encoder(config).assemble(dict(envelope), captured))
    careful = orjson.loads(Encoder(config).encode({**envelope, **body}))
    assert fast == careful == {**envelope, **body}
