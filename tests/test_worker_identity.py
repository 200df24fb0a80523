"""The worker's file pipeline writes the same bytes for the same records, release to release.

``golden/worker_records.marshal.gz`` holds handler records captured once (real ChatOpenAI
calls on the loopback stub: tool round trips and streamed answers, six rounds; then
copies of some of them carrying credentials: a key split across streamed tokens, a
``.pgpass`` line and a ``password=`` in tokens, a key in a message of a model start, a
credential key in a start's metadata, tool call arguments streamed with a password, an
AWS key pair in a model's answer), and ``golden/worker_digests.json`` the SHA-256 of the
lines and the run's parameters that asynctrack 683b40f wrote of them: in the engine's
chunks of 64 with every cache empty, again with the clean-piece caches kept from a first
pass (as in a long run), in chunks of 7, and one record at a time. A change that makes any
byte of a line differ fails here.

``python tests/test_worker_identity.py record`` records the records again (then
``digests`` writes the digests of the code at hand: only for a change of the output that
is meant).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import marshal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from asynctrack import AsyncTracker, TrackerConfig
from asynctrack._events import _schema
from asynctrack._events._translate import EventTranslator
from asynctrack._redact import _redactor

GOLDEN = Path(__file__).parent / "golden"
RECORDS = GOLDEN / "worker_records.marshal.gz"
DIGESTS = GOLDEN / "worker_digests.json"
_SECRETS = (b"sk-proj-Zq8", b"hunter2", b"s3cr3t-pw", b"AKIAIOSFODNN7EXAMPLE", b"wJalrXUtnFEMI")


def _records() -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = marshal.loads(gzip.decompress(RECORDS.read_bytes()))
    return out


def _fresh(warm: bool = False) -> EventTranslator:
    """A new translator; unless ``warm``, with the process's shared caches emptied."""
    if not warm:
        _redactor._SHARED.clear()
        _schema.uuid_text.cache_clear()
    return EventTranslator(experiment="exp", run="r", writer="w", config=TrackerConfig())


def _chunked(translator: EventTranslator, records: Sequence[tuple[Any, ...]], size: int) -> list[bytes]:
    lines: list[bytes] = []
    for start in range(0, len(records), size):
        chunk = list(records[start : start + size])
        translator.prepare(chunk)
        for out in translator.many(chunk):
            assert type(out) is tuple
            lines.append(out[1])
    return lines


def _digest(translator: EventTranslator, lines: list[bytes]) -> str:
    summary = translator.redacted_parameters()
    parameters = orjson.dumps(
        {"hyper": summary.hyperparameters, "metrics": summary.metrics, "flat": dict(summary.flat)},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(b"".join(lines) + parameters).hexdigest()


def _chunks_of_64() -> str:
    translator = _fresh()
    return _digest(translator, _chunked(translator, _records(), 64))


def _chunks_of_64_warm() -> str:
    records = _records()
    _chunked(_fresh(), records, 64)  # a first pass fills the clean-piece caches
    translator = _fresh(warm=True)
    return _digest(translator, _chunked(translator, records, 64))


def _chunks_of_7() -> str:
    translator = _fresh()
    return _digest(translator, _chunked(translator, _records(), 7))


def _one_at_a_time() -> str:
    translator = _fresh()
    lines = []
    for record in _records():
        out = translator(record)
        assert out is not None
        lines.append(out[1])
    return _digest(translator, lines)


_CASES: dict[str, Callable[[], str]] = {
    "chunks of 64": _chunks_of_64,
    "chunks of 64, caches warm": _chunks_of_64_warm,
    "chunks of 7": _chunks_of_7,
    "one at a time": _one_at_a_time,
}


def test_the_golden_records_cover_the_secrets_and_the_kinds() -> None:
    records = _records()
    kinds = {record[_schema.KIND] for record in records}
    assert {"chat_model_start", "llm_new_token", "llm_end"} <= kinds
    translator = _fresh()
    written = b"".join(_chunked(translator, records, 64))
    for secret in _SECRETS:
        assert secret not in written
        assert any(secret in record[_schema.BODY] or secret in str(record[-1]).encode() for record in records)


@pytest.mark.parametrize("case", sorted(_CASES))
def test_lines_are_the_bytes_of_683b40f(case: str) -> None:
    assert _CASES[case]() == json.loads(DIGESTS.read_text())[case]


# -- recording (by hand) ---------------------------------------------------------------


def _edited(
    record: tuple[Any, ...], seq: int, run: int, edit: Callable[[Any], None], token: Any = None
) -> tuple[Any, ...]:
    """``record`` with its body parsed, edited in place by ``edit`` and written again."""
    body = orjson.loads(record[_schema.BODY])
    edit(body)
    fields = list(record)
    fields[_schema.SEQ] = seq
    fields[_schema.RUN_ID] = run
    fields[_schema.BODY] = orjson.dumps(body)
    if token is not None:
        fields[_schema.EXTRA] = token
    return tuple(fields)


def _with_secrets(records: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:  # pragma: no cover
    """Copies of a streamed call's records (another run id) carrying credentials."""
    start = next(r for r in records if r[_schema.KIND] == "chat_model_start")
    run = start[_schema.RUN_ID]
    tokens = [r for r in records if r[_schema.KIND] == "llm_new_token"][:8]
    end = next(
        r for r in records if r[_schema.KIND] == "llm_end" and r[_schema.RUN_ID] == tokens[0][_schema.RUN_ID]
    )
    seq = max(r[_schema.SEQ] for r in records) + 1
    new_run = run + 1
    out = []

    def message(body: Any) -> None:
        body["data"]["messages"][0][-1]["content"] = "my key is sk-proj-Zq8" + "x" * 40 + " thanks"
        body["metadata"]["api_key"] = "s3cr3t-pw"

    out.append(_edited(start, seq, new_run, message))
    texts = [
        "The key: sk-",
        "proj-Zq8",
        "A" * 24,
        "B" * 20,
        " done.",
        "\nlocalhost:5432:db:me:hunter2",
        " password=",
        "s3cr3t-pw",
    ]
    for i, (record, text) in enumerate(zip(tokens, texts, strict=True)):

        def token(body: Any, text: str = text) -> None:
            body["data"]["chunk"]["text"] = text
            body["data"]["chunk"]["message"]["content"] = text

        out.append(_edited(record, seq + 1 + i, new_run, token, text))

    def tool_args(body: Any) -> None:
        body["data"]["chunk"]["message"]["tool_call_chunks"] = [
            {
                "name": "login",
                "args": '{"user": "me", "password": "hunter2"}',
                "id": "call_1",
                "index": 0,
                "type": "tool_call_chunk",
            }
        ]

    out.append(_edited(tokens[0], seq + 9, new_run, tool_args, ""))

    def answer(body: Any) -> None:
        generation = body["data"]["response"]["generations"][0][0]
        generation["text"] = (
            "aws_access_key_id=AKIAIOSFODNN7EXAMPLE"
            " aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
        )
        generation["message"]["content"] = generation["text"]

    out.append(_edited(end, seq + 10, new_run, answer))
    return out


def _record() -> None:  # pragma: no cover - run by hand, see the module docstring
    from _infra.openai_stub import record_calls

    calls = record_calls(6, vary=True)
    with tempfile.TemporaryDirectory() as tmp:
        tracker = AsyncTracker(tmp, config=TrackerConfig(handle_sigterm=False))
        records: list[tuple[Any, ...]] = []
        try:
            tracker._put = records.append  # type: ignore[method-assign]
            for method, args, kwargs in calls:
                getattr(tracker, method)(*args, **kwargs)
        finally:
            tracker.close(timeout=10)
    records += _with_secrets(records)
    RECORDS.write_bytes(gzip.compress(marshal.dumps(records, 4), mtime=0))


def _write_digests() -> None:  # pragma: no cover - run by hand, see the module docstring
    DIGESTS.write_text(json.dumps({case: make() for case, make in _CASES.items()}, indent=1) + "\n")


if __name__ == "__main__":  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).parent))
    {"record": _record, "digests": _write_digests}[sys.argv[1]]()
