"""The worker's chunk path (``EventTranslator.prepare`` + ``many``) writes exactly the
lines of the record-at-a-time path, and the worker process really takes it."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from asynctrack import TrackerConfig
from asynctrack._capture import Capturer
from asynctrack._events._encode import TranslateFailed
from asynctrack._events._translate import EventTranslator
from asynctrack._langchain._spec import TrackerSpec
from asynctrack._pipeline._durable import DurableHooks
from asynctrack.testing import InMemorySink

RUN = uuid.UUID(int=7)
CHILD = uuid.UUID(int=8)


def _body(data: dict[str, Any], metadata: dict[str, Any] | None = None) -> bytes:
    return Capturer(64 * 1024, 32)({"data": data, "tags": ("t",), "metadata": metadata or {}})


def _records() -> list[tuple[Any, ...]]:
    ts = 1_800_000_000.25
    out: list[tuple[Any, ...]] = [
        ("chain_start", 0, ts, RUN, None, "outer", _body({"inputs": {"q": "weather"}}), None),
        ("text", 1, ts, RUN, None, None, _body({"text": "plain words"}), None),
        ("text", 2, ts, RUN, None, "he\ud800llo", _body({"text": "a lone surrogate in the name"}), None),
        ("text", 3, ts, RUN, None, None, _body({"text": "password=hunter2 and more"}), None),
        ("text", 4, ts, RUN, None, None, _body({"api_key": ["sk-a", "b"]}), None),
        ("text", 5, ts, str(RUN), None, "sk-proj-" + "A" * 40, _body({}), None),
        ("llm_start", 6, ts, CHILD, RUN, "model", _body({"prompts": ["hi"]}, {"ls_model_name": "m"}), None),
        ("llm_new_token", 7, ts, CHILD, RUN, None, _body({"chunk": None}), "Hello"),
        ("llm_new_token", 8, ts, CHILD, RUN, None, _body({}), " sk-"),
        ("llm_new_token", 9, ts, CHILD, RUN, None, _body({"chunk": None}), "proj-" + "B" * 40),
        ("llm_new_token", 10, ts, CHILD, RUN, None, _body({"token": [{"type": "text"}]}), None),
        ("llm_end", 11, ts + 1, CHILD, RUN, None, _body({"response": {"generations": []}}), None),
        ("llm_error", 12, ts + 1, CHILD, RUN, None, _body({}), ValueError("token=abc123secret")),
        ("chain_end", 13, ts + 2, RUN, None, None, _body({"outputs": {"a": "ok"}}), None),
        ("text", 14, ts, RUN, None, None, b"not json at all", None),
    ]
    return out


def _translator() -> EventTranslator:
    return EventTranslator(experiment="e", run="r", writer="w", config=TrackerConfig())


def test_the_chunk_path_writes_the_same_lines_as_one_record_at_a_time() -> None:
    chunked = _translator()
    records = _records()
    chunked.prepare(records)
    lines = chunked.many(records)
    single = _translator()
    expected = [single(record) for record in _records()]
    assert lines == expected
    assert all(type(x) is tuple for x in lines)
    text = b"".join(x[1] for x in lines if type(x) is tuple)
    for secret in (b"hunter2", b"sk-a", b"A" * 40, b"B" * 40, b"abc123secret"):
        assert secret not in text
    for seq, line, kind, run_id in lines:  # type: ignore[misc]
        event = orjson.loads(line)
        assert (event["seq"], event["kind"], event["run_id"]) == (seq, kind, run_id)
    assert chunked.parameters.as_dict() == single.parameters.as_dict()


def test_a_record_that_fails_is_returned_as_its_exception_and_the_rest_are_written() -> None:
    translator = _translator()
    records: list[Any] = _records()[:3]
    records.insert(1, ("text",))  # too short to unpack
    out = translator.many(records)
    assert isinstance(out[1], TranslateFailed) and isinstance(out[1].cause, ValueError)
    assert out[1].envelope["experiment"] == "e" and out[1].envelope["seq"] is None  # not readable
    assert [type(x) for i, x in enumerate(out) if i != 1] == [tuple] * 3


def test_the_worker_process_engine_pre_checks_and_translates_by_chunk() -> None:
    # The worker process wraps the translator to see what the redact hook drops: the
    # wrapper must keep the chunk path (without it every body was scanned alone).
    calls: list[int] = []  # events in each durable batch
    dropped: list[int] = []  # sequence numbers the redact hook dropped (none here)
    spec = TrackerSpec(
        destination="memory://x",
        s3_options={},
        experiment="e",
        run="r",
        writer="w",
        config=TrackerConfig(),
    )
    engine, _ = spec.build(
        sink=InMemorySink(),
        hooks=DurableHooks(batch=lambda batch: calls.append(len(batch.seqs or ())), filtered=dropped.append),
    )
    try:
        translate = engine._translate
        assert callable(getattr(translate, "prepare", None))
        assert callable(getattr(translate, "many", None))
        for record in _records():
            engine.put(record)
        engine.flush_blocking(10)
        assert sum(calls) == len(_records())
        assert dropped == []
    finally:
        engine.close()


def _model_start(kind: str, params: dict[str, Any], metadata: dict[str, Any]) -> bytes:
    last = (
        {"messages": [[{"content": "hi", "type": "human"}]]}
        if kind == "chat_model_start"
        else {"prompts": ["hi"]}
    )
    return _body({"invocation_params": params, "options": {}, "serialized": {"name": "M"}, **last}, metadata)


def test_model_call_parameters_from_parts_equal_those_from_the_whole_body() -> None:
    """A model start's parameters are read from the text before its messages (or prompts)
    and from its metadata, parsed once per distinct text; a nested key of the same name
    makes that text no member of ``data`` and the whole body is parsed instead."""
    starts = [
        ("chat_model_start", {"model": "a", "temperature": 0.5}, {"ls_provider": "x"}),
        ("chat_model_start", {"model": "a", "temperature": 0.5}, {"ls_provider": "x"}),  # seen: skipped
        ("chat_model_start", {"model": "b", "nested": {"n": 0, "messages": [1]}}, {"ls_max_tokens": 9}),
        (
            "llm_start",
            {"model": "c", "extra": {"n": 0, "prompts": []}},
            {"n": 0, "metadata": {"ls_provider": "no"}},
        ),
        ("llm_start", {"model": "c", "seed": 3}, {"ls_model_type": "llm", "ls_temperature": 0.1}),
    ]
    fast = _translator()
    whole = _translator()
    for kind, params, metadata in starts:
        body = _model_start(kind, params, metadata)
        fast._collect(kind, body)
        parts = orjson.loads(body)  # what the whole-body path reads
        whole.parameters.model_call(parts["data"]["invocation_params"], parts["metadata"])
    assert fast.parameters.hyperparameters() == whole.parameters.hyperparameters()
    assert fast.parameters.hyperparameters()["model"] == "a, b, c"
    assert len(fast._calls_seen) == 2  # "a" once; the nested-key bodies were parsed whole


def test_token_usage_from_llm_output_alone_or_from_the_generations() -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    with_output = _body({"response": {"generations": [], "llm_output": {"token_usage": usage}, "run": None}})
    streamed = _body(
        {
            "response": {
                "generations": [
                    [
                        {
                            "message": {
                                "usage_metadata": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}
                            }
                        }
                    ]
                ],
                "llm_output": None,
                "run": None,
            }
        }
    )
    assert _translator()._usage(with_output)
    assert not _translator()._usage(streamed)  # no token_usage there: the whole body is read
    translator = _translator()
    translator._collect("llm_end", with_output)
    translator._collect("llm_end", streamed)
    assert dict(translator.parameters.tokens) == {"prompt": 6, "completion": 3, "total": 9}


UNSLASHED = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY12"  # a bare AWS secret only after a context word


def _token(seq: int, token: str) -> tuple[Any, ...]:
    return ("llm_new_token", seq, 0.0, CHILD, RUN, None, _body({"chunk": None}), token)


def test_a_clean_chunk_of_tokens_still_gives_its_text_to_the_next_chunk() -> None:
    # The first chunk is clean on its own: its tokens are written as they are, and its
    # text must still be the context of the next chunk's ("aws" makes the run a secret).
    first = [_token(0, "the "), _token(1, "aws"), _token(2, " one is ")]
    second = [_token(3, UNSLASHED), _token(4, " ok")]
    chunked = _translator()
    lines = []
    for chunk in (first, second):
        chunked.prepare(chunk)
        if chunk is first:
            assert len(chunked._streamed) == len(first)  # the path under test
        lines += chunked.many(chunk)
    single = _translator()
    assert lines == [single(r) for r in first + second]
    written = b"".join(x[1] for x in lines if type(x) is tuple)
    assert UNSLASHED.encode() not in written and b"[REDACTED]" in written


def test_content_blocks_and_text_tokens_of_one_run_in_one_chunk_are_redacted_in_order() -> None:
    blocks = _body({"token": [{"type": "text", "text": " aws"}]})
    block = ("llm_new_token", 1, 0.0, CHILD, RUN, None, blocks, None)
    records = [_token(0, "the"), block, _token(2, " key "), _token(3, UNSLASHED)]
    chunked = _translator()
    chunked.prepare(records)
    # A run with content blocks: its tokens one by one, in order.
    assert not chunked._streamed and chunked._planned is None
    lines = chunked.many(records)
    single = _translator()
    assert lines == [single(r) for r in records]
    assert UNSLASHED.encode() not in b"".join(x[1] for x in lines if type(x) is tuple)


def test_streamed_tokens_written_from_their_runs_envelope_equal_the_general_path() -> None:
    # As the worker process receives them: run ids as ints, names resolved from the start.
    ts = 1_800_000_000.125
    chat = {"text": "x", "message": {"content": "x", "id": "lc_run--1"}}

    def token(seq: int, run: int, text: str) -> tuple[Any, ...]:
        return ("llm_new_token", seq, ts + seq, run, RUN.int, None, _body({"chunk": chat}), text)

    records = [
        ("chat_model_start", 0, ts, CHILD.int, RUN.int, "he\ud800llo", _body({"messages": []}), None),
        token(1, CHILD.int, "Hello"),
        token(2, CHILD.int, " wor\ud800ld"),  # a lone surrogate in the token: the general path
        token(3, CHILD.int, ' "quoted"\n'),
        token(4, 9, "no start seen"),  # no name: null
        token(5, 10, "password=hunter2"),  # a stream to redact: the general path
        token(2**64 + 6, CHILD.int, "a seq orjson cannot write"),
        ("llm_end", 7, ts + 7, CHILD.int, RUN.int, None, _body({"response": {}}), None),
    ]
    chunked = _translator()
    chunked.prepare(records)
    lines = chunked.many(records)
    single = _translator()
    expected = []
    for record in records:
        try:
            expected.append(single(record))
        except Exception as exc:
            expected.append(exc)
    assert [x if type(x) is tuple else type(x.cause) for x in lines] == [
        x if type(x) is tuple else type(x) for x in expected
    ]
    assert len(chunked._token_heads) == 2  # the path under test: one envelope per clean run
    assert b"hunter2" not in b"".join(x[1] for x in lines if type(x) is tuple)


def test_token_usage_read_from_llm_output_is_what_the_whole_body_holds() -> None:
    outputs: list[Any] = [
        {"token_usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}, "model_name": "m"},
        {
            "token_usage": {
                "prompt_tokens": 7,
                "completion_tokens": 2,
                "total_tokens": 9,
                "completion_tokens_details": {"reasoning_tokens": 1},
                "prompt_tokens_details": {"cached_tokens": 0},
            },
            "id": "chatcmpl-1",
        },
        {"token_usage": {"prompt_tokens": 1, "note": "a } and a {", "total_tokens": 1}},
        {"model_name": "m", "token_usage": {"prompt_tokens": 4, "total_tokens": 4}},
        {"token_usage": {"prompt_tokens": 2}, "model": {"token_usage": {"prompt_tokens": 100}}},
        None,
    ]
    usage = {"input_tokens": 6, "output_tokens": 1, "total_tokens": 7}
    translator = _translator()
    for i, output in enumerate(outputs):
        message = {"content": "hi", "usage_metadata": usage}
        response = {"generations": [[{"text": "hi", "message": message}]], "llm_output": output, "run": None}
        translator(("llm_end", i, 1.0, i + 100, None, None, _body({"response": response}), None))
    expected = {"prompt": 3 + 7 + 1 + 4 + 2 + 6, "completion": 5 + 2 + 1, "total": 8 + 9 + 1 + 4 + 7}
    assert translator.parameters.tokens == expected


def test_tokens_of_runs_opened_and_ended_between_them_get_their_own_envelopes() -> None:
    ts = 1_800_000_000.5
    a, b = 2**100 + 1, 2**100 + 2

    def token(seq: int, run: int, text: str, name: str | None = None) -> tuple[Any, ...]:
        body = _body({"chunk": {"text": text, "message": {"content": text, "id": "lc_run--1"}}})
        return ("llm_new_token", seq, ts, run, None, name, body, text)

    records = [
        ("llm_start", 0, ts, a, None, "model-a", _body({"prompts": ["hi"]}), None),
        token(1, a, "One"),
        token(2, a, " two"),
        ("llm_start", 3, ts, b, a, "model-b", _body({"prompts": ["hey"]}), None),
        token(4, b, "Uno"),
        token(5, a, " three"),
        token(6, a, " four", "named"),
        token(7, a, " five"),
        ("llm_end", 8, ts + 1, a, None, None, _body({"response": {"generations": []}}), None),
        token(9, a, " after the end"),
        token(10, b, " dos"),
    ]
    chunked = _translator()
    chunked.prepare(records)
    lines = chunked.many(records)
    single = _translator()
    assert lines == [single(record) for record in records]
    names = [orjson.loads(x[1])["name"] for x in lines if type(x) is tuple]
    a_, b_ = "model-a", "model-b"
    assert names == [a_, a_, a_, b_, b_, a_, "named", a_, a_, None, b_]  # the end's name; none after it


def test_rows_of_streamed_tokens_are_written_as_the_record_at_a_time_path_writes_them() -> None:
    # The golden records (real ChatOpenAI rounds, then secrets split across tokens, in
    # tool call arguments, in a model start) in the worker process's frames of 256 and in
    # one chunk: the rows of tokens written in C loops give the same bytes.
    from test_worker_identity import _records as golden

    records = golden()
    single = EventTranslator(experiment="exp", run="r", writer="w", config=TrackerConfig())
    expected = [single(record) for record in records]
    for size in (256, len(records)):
        chunked = EventTranslator(experiment="exp", run="r", writer="w", config=TrackerConfig())
        lines: list[Any] = []
        rows = 0
        for start in range(0, len(records), size):
            chunk = records[start : start + size]
            chunked.prepare(chunk)
            if chunked._planned is chunk:
                rows += sum(type(step).__name__ == "_Row" for step in chunked._steps)
            lines += chunked.many(chunk)
        assert rows >= 3  # the path under test
        assert lines == expected


def test_a_frame_dense_with_credential_stems_is_judged_body_by_body() -> None:
    # A burst of model calls ships frames of nothing but model starts: together they hold
    # more credential-like stems ("key", "token") than a text is scanned for at once. Each
    # body is then judged alone, as the record-at-a-time path does: the clean ones are
    # written as they are and teach the clean-piece cache; a secret is still redacted.
    from test_worker_identity import _fresh
    from test_worker_identity import _records as golden

    starts = [record for record in golden() if record[0] == "chat_model_start"]
    copies = 200 // len(starts)
    frame = [  # each body a distinct object, as unmarshalled frames hold them
        (start[0], seq, *start[2:6], bytes(bytearray(start[6])), start[7])
        for seq, start in enumerate(starts * copies)
    ]
    secret = sum(b"sk-proj-Zq8" in start[6] for start in starts) * copies
    chunked = _fresh()
    chunked.prepare(frame)
    plain = len(chunked.encoder.plain)
    lines = chunked.many(frame)
    assert plain == len(frame) - secret  # the path under test
    single = _fresh()
    assert lines == [single(record) for record in frame]
    assert b"sk-proj-Zq8" not in b"".join(line[1] for line in lines if type(line) is tuple)


def test_a_model_call_like_the_last_is_compared_in_place_and_any_other_is_read() -> None:
    """The same call as the last one is known without hashing its texts (even once the set
    of texts seen starts over); a call whose texts have the last one's lengths but other
    bytes is read."""
    translator = _translator()
    translator._collect("chat_model_start", _model_start("chat_model_start", {"model": "a"}, {}))
    translator._calls_seen.clear()
    translator._collect("chat_model_start", _model_start("chat_model_start", {"model": "a"}, {}))
    assert translator._calls_seen == set()  # the last call: not looked up, not read again
    translator._collect("chat_model_start", _model_start("chat_model_start", {"model": "b"}, {"x": 1}))
    translator._collect("chat_model_start", _model_start("chat_model_start", {"model": "b"}, {"x": 2}))
    assert translator.parameters.hyperparameters()["model"] == "a, b"
    assert len(translator._calls_seen) == 2


def test_a_model_start_led_like_the_last_clean_one_but_for_a_secret_is_redacted() -> None:
    """A model start's leading part found clean is remembered as the last one, compared in
    place; a lead of the same length holding a credential is scanned and redacted."""
    secret = "sk-proj-" + "Q" * 40
    translator = _translator()
    lines = []
    plain = "x " * (len(secret) // 2)  # as long, with no run of 40 base64 characters
    for n, key in enumerate((plain, plain, secret)):
        record = (
            "chat_model_start",
            n,
            1_800_000_000.0,
            uuid.UUID(int=100 + n),
            None,
            "M",
            _model_start("chat_model_start", {"model": "a", "base": key}, {}),
            None,
        )
        translator.prepare([record])
        lines += translator.many([record])
    lead = translator._redactor._clean_leads[0]
    assert lead.startswith(b'{"data":{"invocation_params":') and plain.encode() in lead
    assert secret.encode() not in lines[2][1]
    assert b"[REDACTED]" in lines[2][1]
    assert plain.encode() in lines[1][1]


def _token_rows(tokens_of: dict[int, list[str]]) -> list[tuple[Any, ...]]:
    """Streamed tokens as the handler records them, a row per run: each body its run's
    template filled with its token (the chunk's text and its message's content)."""
    out: list[tuple[Any, ...]] = []
    for run, tokens in tokens_of.items():
        for token in tokens:
            chunk = {"text": token, "generation_info": None, "message": {"content": token, "id": f"lc_{run}"}}
            body = _body({"chunk": chunk})
            out.append(("llm_new_token", len(out), 1_800_000_000.5, run, None, None, body, token))
    return out


def _lines_one_at_a_time(records: list[tuple[Any, ...]]) -> list[Any]:
    single = _translator()
    return [single(record) for record in records]


def test_bodies_filled_from_a_clean_template_are_written_by_row_without_an_entry_each() -> None:
    """A clean chunk's token bodies known to be their row's template filled stay out of
    the plain bodies' map when every row is written whole; the lines are the same."""
    records = _token_rows({11: ["Hello", " there", ",", " friend"], 12: ["One", " two", " three"]})
    translator = _translator()
    translator.prepare(records)
    assert translator.encoder.filled_plain
    assert id(records[1][6]) not in translator.encoder.plain  # filled: no entry
    assert id(records[0][6]) in translator.encoder.plain  # its row's first body: judged
    assert translator.many(records) == _lines_one_at_a_time(records)


def test_filled_bodies_written_one_by_one_are_known_plain() -> None:
    """A run whose stream is not clean (it ends in a credential's prefix) has its tokens
    written one by one: the filled bodies are added back to the plain ones."""
    records = _token_rows({11: ["Hello", " there", " friend"], 12: ["the", " key", " sk-"]})
    translator = _translator()
    translator.prepare(records)
    assert not translator.encoder.filled_plain
    assert id(records[4][6]) in translator.encoder.plain
    assert translator.many(records) == _lines_one_at_a_time(records)


def test_a_chunk_with_a_body_to_redact_keeps_its_filled_bodies_known() -> None:
    records = _token_rows({11: ["Hello", " there", " friend"]})
    records.append(("text", 3, 1_800_000_000.5, RUN, None, None, _body({"text": "password=hunter2"}), None))
    translator = _translator()
    translator.prepare(records)
    assert not translator.encoder.filled_plain
    assert id(records[1][6]) in translator.encoder.plain
    lines = translator.many(records)
    assert lines == _lines_one_at_a_time(records)
    assert b"hunter2" not in lines[3][1]


def test_model_calls_that_alternate_are_each_compared_in_place() -> None:
    """A round of calls alternates between a few texts (a tool call, then the answer):
    the last few are known in place, not only the last one."""
    translator = _translator()
    a = _model_start("chat_model_start", {"model": "a"}, {})
    b = _model_start("chat_model_start", {"model": "b", "temperature": 0.5}, {})
    translator._collect("chat_model_start", a)
    translator._collect("chat_model_start", b)
    translator._calls_seen.clear()
    translator._collect("chat_model_start", a)
    assert translator._calls_seen == set()
    assert translator.parameters.hyperparameters()["model"] == "a, b"
