"""Redaction (``asynctrack._redact``): every leak shape of issue 9, and what must stay readable.

The leak tests plant distinct secrets, run real chains (a real ``ChatOpenAI``
against the loopback stub where a provider is involved), close the tracker and
search every byte written (files, the spool directory, the ``asynctrack`` log
output) for each planted secret.
"""

from __future__ import annotations

import itertools
import logging
import random
import sys
import threading
import typing
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from _infra.openai_stub import OpenAIStub, chat_model, get_weather
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.messages.tool import tool_call_chunk as create_tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.runnables import RunnableLambda

from asynctrack import AsyncTracker, TrackerConfig
from asynctrack._config import DEFAULT_REDACT_KEYS
from asynctrack._events._encode import Encoder
from asynctrack._events._translate import EventTranslator
from asynctrack._redact import REDACTED, KeyRule, Redactor, StreamRedactor, _redactor, normalize_key
from asynctrack._redact._stream import open_credential

# Distinct, greppable secrets; each is planted in one shape below.
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzXAMPLEKEY"  # 40 characters
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiaWF0IjoxNzAwMDAwMDAwfQ"
    ".c2lnbmF0dXJlLW9mLXRoZS1qd3QtdG9rZW4tZm9yLXRlc3Rz"
)
OPENAI = "sk-proj-Zq8VnR2mX5tL0wJ7bK3yH9dF6sA1pC4e"


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _leaks(roots: list[Path], log: str, secrets: dict[str, str]) -> dict[str, list[str]]:
    """Where each secret appears in any file under ``roots`` or in ``log``."""
    found: dict[str, list[str]] = {}
    for root in roots:
        for path in _files(root):
            data = path.read_bytes()
            for name, secret in secrets.items():
                if secret.encode() in data:
                    found.setdefault(name, []).append(str(path))
    for name, secret in secrets.items():
        if secret in log:
            found.setdefault(name, []).append("<log>")
    return found


def _events(root: Path) -> list[dict[str, Any]]:
    return [
        orjson.loads(line)
        for p in _files(root)
        if p.suffix == ".jsonl"
        for line in p.read_bytes().splitlines()
    ]


@pytest.fixture
def tracked(
    tmp_destination: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> Iterator[Callable[..., AsyncTracker]]:
    caplog.set_level(logging.DEBUG, logger="asynctrack")
    made: list[AsyncTracker] = []

    def make(**kwargs: Any) -> AsyncTracker:
        tracker = AsyncTracker(tmp_destination, experiment_name="redact", run_name="r", **kwargs)
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        tracker.close(timeout=10)


def _check(
    tmp_destination: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, secrets: dict[str, str]
) -> None:
    assert _leaks([tmp_destination, tmp_path / "spool"], caplog.text, secrets) == {}


# -- the key rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("clientSecret", "client_secret"),
        ("x-api-key", "x_api_key"),
        ("PGPASSWORD", "pgpassword"),
        ("openaiApiKey", "openai_api_key"),
        ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
        ("HTTPAuthorization", "http_authorization"),
    ],
)
def test_keys_are_normalized_into_words(key: str, words: str) -> None:
    assert normalize_key(key) == words


CREDENTIAL_KEYS = [
    "clientSecret", "accessToken", "refreshToken", "secretAccessKey", "sessionToken", "dbPassword",
    "openaiApiKey", "PGPASSWORD", "password", "passwd", "pwd", "api_key", "apikey", "x-api-key",
    "Authorization", "Proxy-Authorization", "auth", "cookie", "Set-Cookie", "credentials",
    "private_key", "aws_secret_access_key", "aws_session_token", "x-auth-token", "id_token",
    "MYSQL_PWD", "passphrase", "api_keys", "clientKey", "signingKey", "basicAuth",
]  # fmt: skip
READABLE_KEYS = [
    "max_tokens", "token_usage", "total_tokens", "prompt_tokens", "completion_tokens",
    "input_tokens", "output_tokens", "tokens", "tokenizer", "eos_token", "pad_token", "author",
    "authors", "keyboard", "key", "model_name", "temperature", "secretary", "monkey", "token_type",
]  # fmt: skip


@pytest.mark.parametrize("key", CREDENTIAL_KEYS)
def test_every_spelling_of_a_credential_key_matches(key: str) -> None:
    assert KeyRule(DEFAULT_REDACT_KEYS)(key)


@pytest.mark.parametrize("key", READABLE_KEYS)
def test_ordinary_keys_do_not_match(key: str) -> None:
    assert not KeyRule(DEFAULT_REDACT_KEYS)(key)


# -- shapes, one redactor call each -----------------------------------------------------------------


def _redact(value: Any) -> Any:
    return orjson.loads(Encoder(TrackerConfig()).redact(orjson.dumps({"data": {"v": value}})))["data"]["v"]


LONG = "lorem ipsum dolor sit amet " * 60  # text over 1 KiB around each shape


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"{LONG} db password=hunter2-long {LONG}", "hunter2-long"),
        (
            f"{LONG}\r\nAuthorization: Bearer opaque-token-1\r\nx-api-key: k3y-v4lue\r\n{LONG}",
            "opaque-token-1",
        ),
        (f"{LONG}\r\nx-api-key: k3y-v4lue\r\n{LONG}", "k3y-v4lue"),
        (f'{LONG} {{"password": "in-json-text", "user": "bob"}} {LONG}', "in-json-text"),
        ("PGPASSWORD=pg-s3cret psql", "pg-s3cret"),
        ("password=xud", "xud"),
        ("export AWS_SECRET_ACCESS_KEY=" + AWS_SECRET, AWS_SECRET),
        ("keys: " + AWS_SECRET, AWS_SECRET),  # bare, with '/' inside
        ("bearer of news: " + JWT, JWT),
        ("connect postgres://admin:pg-pass-1@db.internal:5432/app", "pg-pass-1"),
        ("redis://:r3d1s-pw@cache:6379/0", "r3d1s-pw"),
        ("model key " + OPENAI + " used", OPENAI),
        ("Config(api_key='py-repr-key', model='x')", "py-repr-key"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7pem\n-----END RSA PRIVATE KEY-----",
            "MIIEpAIBAAKCAQEA7pem",
        ),
        ("token: ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"),
        (
            "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
            "XXXXXXXXXXXXXXXXXXXXXXXX",
        ),
        ("AKIAIOSFODNN7EXAMPL3 in a sentence", "AKIAIOSFODNN7EXAMPL3"),
        ("line one\nwJalrXUtnFEMI+K7MDENGxbPxRfiCYzEXAMPLE1Y\n", "wJalrXUtnFEMI+K7MDENGxbPxRfiCYzEXAMPLE1Y"),
    ],
)
def test_text_shapes_are_redacted(text: str, secret: str) -> None:
    out = _redact(text)
    assert secret not in out
    assert REDACTED in out


@pytest.mark.parametrize(
    "value",
    [
        {"clientSecret": "s1", "nested": {"dbPassword": "s2", "list": [{"accessToken": "s3"}]}},
        {"credentials": {"user": "u", "pass": "s4"}},  # a whole object under a credential key
        {"api_keys": ["s5", "s6"]},
        {"PGPASSWORD": 123456},  # a number under a credential key
        {"my password": "s7"},  # a key with a space
    ],
)
def test_structured_credentials_are_redacted(value: dict[str, Any]) -> None:
    out = orjson.dumps(_redact(value))
    for secret in (b"s1", b"s2", b"s3", b"s4", b"s5", b"s6", b"123456", b"s7"):
        assert secret not in out


@pytest.mark.parametrize(
    "value",
    [
        {"max_tokens": 256, "token_usage": {"total_tokens": 80, "prompt_tokens": 57}},
        {"openai_api_key": {"lc": 1, "type": "secret", "id": ["OPENAI_API_KEY"]}},  # LangChain's marker
        {"sha": "9fceb02d0ae598e95dc970b74767f19372d61af8"},  # a git sha is 40 characters, no upper case
        {"id": "chatcmpl-AbC123dEf456GhI789jKl012", "run": str(uuid.UUID(int=7))},
        {"text": "The key to success is a secret recipe; the author keeps the password policy short."},
        {"b64": "aGVsbG8gd29ybGQgdGhpcyBpcyBhIGxvbmcgYmFzZTY0IGJsb2IgdGhhdCBpcyBub3QgYSBrZXk="},
        {"path": "/usr/local/lib/python3.11/site-packages/x"},
        {"expr": "a = b + c; key_count: 3"},
    ],
)
def test_ordinary_values_are_kept(value: dict[str, Any]) -> None:
    assert _redact(value) == value


def test_a_dense_text_is_bounded_and_leaks_nothing() -> None:
    text = "password=x1 " * 30_000
    out = _redact(text)
    assert "x1" not in out
    assert len(out) < len(text)


def test_custom_patterns_and_disabled_detectors() -> None:
    encoder = Encoder(TrackerConfig(redact_patterns=(r"EMP-[0-9]{6}+",), redact_detectors=False))
    line = orjson.loads(encoder.encode({"t": f"badge EMP-123456, key {OPENAI}"}))
    assert line["t"] == f"badge {REDACTED}, key {OPENAI}"


def test_a_pydantic_secret_never_reaches_the_bytes_even_with_key_rules_off() -> None:
    import pydantic

    encoder = Encoder(TrackerConfig(redact_keys=None))
    captured = orjson.dumps({"data": {"k": pydantic.SecretStr("ultra-secret")}}, default=lambda o: o.__dict__)
    assert b"ultra-secret" not in encoder.redact(captured)


#: Keys the key rule matches with more than a word after the credential word.
KEYS_WITH_MORE = [
    "password ", "Password:", "API_KEY ", "token ", "password,", "password\t", "Password (again)",
    "auth header", "API key for prod", "token\t", "token.", "secret (old) ", "password's hash",
]  # fmt: skip


def _redacted_body(keys: str, body: bytes) -> bytes:
    """``body`` redacted: by ``Redactor.json``, or, where it returns ``None``, its parsed
    structure redacted and encoded again."""
    redactor = Redactor(keys)
    out = redactor.json(body)
    if out is None:
        out = redactor.json(orjson.dumps(redactor.structure(orjson.loads(body))))
    assert out is not None
    return out


def _key_shapes(key: str, secret: str) -> dict[str, bytes]:
    """``{key: secret}`` as a body, as JSON text inside a string, and inside strings dense
    with stems (then judged from the separators, or with ``STEM_PAIR`` past 4,096 of them)."""
    inner = orjson.dumps({"n": 1, key: secret}).decode()
    spaced = '{"n": 1, ' + orjson.dumps(key).decode() + ": " + orjson.dumps(secret).decode() + "}"
    return {
        "json": orjson.dumps({"data": {"form": {key: secret}}}),
        "json in a string": orjson.dumps({"args": inner, "spaced": spaced.replace(secret, secret + "2")}),
        "dense": orjson.dumps({"args": "key " * 300 + inner}),
        "dense, many separators": orjson.dumps({"args": "a:" * 5000 + "key " * 300 + inner}),
    }


@pytest.mark.parametrize(
    "keys", [DEFAULT_REDACT_KEYS, DEFAULT_REDACT_KEYS + "|zzz"], ids=["default", "custom"]
)
@pytest.mark.parametrize("key", KEYS_WITH_MORE)
def test_a_key_the_rule_matches_has_its_value_redacted_whatever_follows_the_word(key: str, keys: str) -> None:
    """The scan of JSON text judges a quoted key whole, as ``KeyRule`` does (a custom
    ``redact_keys``, here the default's meaning spelled otherwise, scans every word)."""
    assert KeyRule(keys)(key)
    secret = "kwm-41-ZQxv"
    for shape, body in _key_shapes(key, secret).items():
        out = _redacted_body(keys, body)
        assert secret.encode() not in out, (shape, out[-200:])
    # A plain string holding JSON text (a tool call's arguments, an error message).
    spaced = '{"n": 1, ' + orjson.dumps(key).decode() + ': "' + secret + '"}'
    assert secret not in Redactor(keys).text(spaced)
    assert Redactor(keys).may_match(spaced)


def test_a_quoted_key_is_never_read_across_single_quoted_values() -> None:
    """A Python repr in a string: a stem in a value ('hdr-key-1') must not swallow the
    next key ('Cookie') as the rest of a key, nor hide it from the scan."""
    text = "Model(headers={'X-Api-Key': 'hdr-key-8b3e', 'Cookie': 'session=sessid-6e2a', 'n': 'a key'})"
    out = Redactor(DEFAULT_REDACT_KEYS).text(text)
    assert out == "Model(headers={'X-Api-Key': '[REDACTED]', 'Cookie': '[REDACTED]', 'n': 'a key'})"


@pytest.mark.parametrize("key", KEYS_WITH_MORE)
def test_a_value_streamed_under_a_quoted_key_the_rule_matches_is_redacted(key: str) -> None:
    """A tool call's arguments streamed one character at a time: once the stream holds
    ``"<key>": "`` the value is redacted, whatever the key holds after its word."""
    text = '{"city": "Paris", ' + orjson.dumps(key).decode() + ': "hunter2-xyz", "n": 1}'
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    stream = StreamRedactor(redactor.text, redactor.key_rule)
    written = "".join(stream.token("run", c) for c in text)
    for fragment in ("hunter2", "hun", "ter", "xyz"):
        assert fragment not in written, written
    assert written.startswith('{"city": "Paris", '), written


@pytest.mark.parametrize("shared", [False, True])
def test_a_value_cut_from_its_key_ending_in_a_comma_is_never_remembered_clean(shared: bool) -> None:
    """',"' ends a key that ends in ',': the cut for the clean-piece cache separates
    '"password,"' from ':"<value>"}'. Judged alone, the value has no key: found clean
    under another key ending in ',', it must not let the password's value through
    (another tracker of the same rules shares the cache)."""
    fields = {f"field_{i}": f"some clean value number {i}" for i in range(40)}
    warm = orjson.dumps({"data": {**fields, "long description of it,": "zq-77-hunter"}})
    attack = orjson.dumps({"data": {**fields, "password,": "zq-77-hunter"}})
    first = Redactor(DEFAULT_REDACT_KEYS)
    second = Redactor(DEFAULT_REDACT_KEYS) if shared else first
    for _ in range(2):
        first.prepare([warm])
        assert first.json(warm) == warm
    second.prepare([attack])
    out = second.json(attack)
    assert out is not None and b"zq-77-hunter" not in out, out


def test_keys_with_more_than_a_word_leak_nothing_to_files_or_the_otlp_receiver(
    tracked: Callable[..., AsyncTracker],
    tmp_destination: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    receiver: Any,
) -> None:
    """The reviewer's shapes through a chain, in the files and in the spans exported
    with ``capture_content`` (built from the redacted lines)."""
    from asynctrack import OTLPExporter

    form = {key: f"kv{i:02d}-planted-secret" for i, key in enumerate(KEYS_WITH_MORE)}
    tracker = tracked(exporters=[OTLPExporter(receiver.endpoint, capture_content=True)])
    RunnableLambda(lambda _: "ok", name="login").invoke(dict(form), config={"callbacks": [tracker]})
    tracker.close(timeout=10)
    receiver.wait_for_spans(1)
    secrets = {key: value for key, value in form.items()}
    _check(tmp_destination, tmp_path, caplog, secrets)
    sent = b"".join(receiver.raw)
    assert b"[REDACTED]" in sent
    assert [s for s in secrets.values() if s.encode() in sent] == []


#: Keys the key rule matches, with more than 64 characters before the credential word and
#: no space or quote in between (the reviewer's shapes: a long name, a constant, camelCase, a
#: flattened config key), one longer than 128 characters, and one with 34 characters from it.
LONG_KEYS = [
    "production_reporting_service_readonly_replica_database_connection_password",
    "PRODUCTION_REPORTING_SERVICE_READONLY_REPLICA_DATABASE_CONNECTION_API_KEY",
    "productionReportingServiceReadonlyReplicaDatabaseConnectionAccessToken",
    "services.reporting.production.datasource.hikari.readonly-replica.password",
    "x" * 300 + "_password",
    "READONLY_REPLICA_DATABASE_PASSWORD_FOR_THE_REPORTING_SERVICE",
]


@pytest.mark.parametrize(
    "keys", [DEFAULT_REDACT_KEYS, DEFAULT_REDACT_KEYS + "|zzz"], ids=["default", "custom"]
)
@pytest.mark.parametrize("key", LONG_KEYS, ids=lambda key: key[:24])
def test_a_long_key_is_judged_whole_wherever_it_meets_a_value(key: str, keys: str) -> None:
    """A key is read back to its start however long it is, and judged whole as ``KeyRule``
    judges it: in a body, in JSON text in a string, in strings dense with stems, in env
    dump and header lines, in a Python repr."""
    assert KeyRule(keys)(key)
    secret = "kwm-41-ZQxv"
    shapes = _key_shapes(key, secret)
    shapes["env dump"] = orjson.dumps({"shell": f"set -e\nexport {key}={secret}\n"})
    shapes["env dump, dense"] = orjson.dumps({"shell": "key " * 300 + f"export {key}={secret}\n"})
    shapes["header"] = orjson.dumps({"headers": f"Host: x\r\n{key}: {secret}\r\n"})
    shapes["python repr"] = orjson.dumps({"repr": f"Config({{'{key}': '{secret}'}})"})
    for shape, body in shapes.items():
        out = _redacted_body(keys, body)
        assert secret.encode() not in out, (shape, out[-200:])
        assert REDACTED.encode() in out, shape
    assert secret not in Redactor(keys).text(f"export {key}={secret}")
    assert Redactor(keys).may_match(f"export {key}={secret}")


@pytest.mark.parametrize("key", LONG_KEYS, ids=lambda key: key[:24])
def test_a_value_streamed_under_a_long_key_is_redacted(key: str) -> None:
    """Streamed one character at a time (a tool call's arguments, a model writing an env
    file): the value under a long key is redacted in every token that carries it."""
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    for text in (
        '{"city": "Paris", ' + orjson.dumps(key).decode() + ': "hunter2-xyz", "n": 1}',
        f"cat .env\nexport {key}=hunter2-xyz\necho done",
        f"cat .env\n{key}='hunter2-xyz'\n",
    ):
        stream = StreamRedactor(redactor.text, redactor.key_rule)
        written = "".join(stream.token("run", c) for c in text)
        for fragment in ("hunter2", "hun", "ter", "xyz"):
            assert fragment not in written, written


def test_long_keys_leak_nothing_to_files_or_the_otlp_receiver(
    tracked: Callable[..., AsyncTracker],
    tmp_destination: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    receiver: Any,
) -> None:
    """The reviewer's shapes through a chain: a dict, the same as JSON text (a tool call's
    arguments) and env dump lines, in the files and in the spans exported with
    ``capture_content``."""
    from asynctrack import OTLPExporter

    form = {key: f"lk{i:02d}-planted-secret" for i, key in enumerate(LONG_KEYS)}
    env = {key.upper().replace(".", "_"): f"ev{i:02d}-planted-secret" for i, key in enumerate(LONG_KEYS)}
    shell = "".join(f"export {key}={value}\n" for key, value in env.items())
    tracker = tracked(exporters=[OTLPExporter(receiver.endpoint, capture_content=True)])
    RunnableLambda(lambda _: "ok", name="deploy").invoke(
        {
            "config": dict(form),
            "arguments": orjson.dumps(form).decode(),
            "shell": shell,
            "prompt": XML_PROMPT,
        },
        config={"callbacks": [tracker]},
    )
    tracker.close(timeout=10)
    receiver.wait_for_spans(1)
    secrets = {
        **form,
        **{f"env {key}": value for key, value in env.items()},
        **{f"xml {i}": s for i, s in enumerate(XML_SECRETS)},
    }
    _check(tmp_destination, tmp_path, caplog, secrets)
    sent = b"".join(receiver.raw)
    assert b"[REDACTED]" in sent
    assert [s for s in secrets.values() if s.encode() in sent] == []


#: Anthropic-style prompt tags: an element whose tag name the key rule matches has its text
#: redacted; the rest is kept.
XML_PROMPT = (
    "<config>\n<db_password>Hunter2-xml</db_password>\n<api_key>Zk9Qw7Lp3Xm2</api_key>\n"
    '<secret note="a \\"b\\"">two words</secret>\n<API-KEY>\nk-3f9a-line\n</API-KEY>\n'
    "<key>Name</key>\n<max_tokens>5</max_tokens>\n<author>Ann</author>\n</config>\n"
    "const t: Promise<AccessToken> = get();"
)
XML_SECRETS = ("Hunter2-xml", "Zk9Qw7Lp3Xm2", "two words", "k-3f9a-line")


@pytest.mark.parametrize(
    "keys", [DEFAULT_REDACT_KEYS, DEFAULT_REDACT_KEYS + "|zzz"], ids=["default", "custom"]
)
def test_an_xml_style_element_under_a_credential_tag_has_its_text_redacted(keys: str) -> None:
    redactor = Redactor(keys)
    out = redactor.text(XML_PROMPT)
    expected = XML_PROMPT
    for secret in XML_SECRETS:
        expected = expected.replace(secret if secret != "k-3f9a-line" else "\nk-3f9a-line\n", REDACTED)
    assert out == expected
    assert Redactor(keys).may_match("<password>x</password>")
    body = orjson.dumps({"data": {"prompt": XML_PROMPT, "args": orjson.dumps({"p": XML_PROMPT}).decode()}})
    written = redactor.json(body)
    assert written is not None
    assert [s for s in XML_SECRETS if s.encode() in written] == []
    assert written.count(b"<key>Name</key>") == 2 and written.count(b"Promise<AccessToken>") == 2


@pytest.mark.parametrize("size", [1, 3, 7])
def test_the_text_of_a_credential_element_streamed_in_pieces_is_redacted(size: int) -> None:
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    stream = StreamRedactor(redactor.text, redactor.key_rule)
    written = "".join(stream.token("run", XML_PROMPT[i : i + size]) for i in range(0, len(XML_PROMPT), size))
    for secret in XML_SECRETS:
        assert secret[:4] not in written and secret[-4:] not in written, written
    for kept in (
        "<key>Name</key>",
        "<max_tokens>5</max_tokens>",
        "<author>Ann</author>",
        "Promise<AccessToken> = get();",
    ):
        assert kept in written


ELEMENT_STREAM = "Here: <api_key>Zk9Qw7Lp3XmQ</api_key> done"


def _pieces_of(secret: str, written: str) -> list[str]:
    return [secret[i : i + 2] for i in range(len(secret) - 1) if secret[i : i + 2] in written]


def test_a_credential_element_s_text_is_redacted_however_its_closing_tag_is_split() -> None:
    """A token ending inside the closing tag (``SECRET</``, ``SECRET</api_k``, ``SECRET<``)
    does not end the element until the tag is whole: every split into 2 and 3 tokens."""
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    text = ELEMENT_STREAM
    splits = [(i,) for i in range(1, len(text))] + list(itertools.combinations(range(1, len(text)), 2))
    for cuts in splits:
        bounds = (0, *cuts, len(text))
        tokens = [text[a:b] for a, b in itertools.pairwise(bounds)]
        stream = StreamRedactor(redactor.text, redactor.key_rule)
        written = "".join(stream.token("run", token) for token in tokens)
        assert _pieces_of("Zk9Qw7Lp3XmQ", written) == [], (tokens, written)
        assert written.startswith("Here: <api_key>") and written.endswith("> done"), (tokens, written)
    stream = StreamRedactor(redactor.text, redactor.key_rule)
    assert [stream.token("run", t) for t in ("Here: <api_key>Zk9Qw7Lp3XmQ</", "api_key> done")] == [
        f"Here: <api_key>{REDACTED}</",
        "api_key> done",
    ]


def test_a_credential_element_cut_inside_its_closing_tag_is_redacted() -> None:
    """A string cut at ``max_field_bytes`` inside the element's text or its closing tag
    (``<api_key>SECRET</api_k...[$asynctrack: truncated``): every cut in that range."""
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    secret = "Zk9Qw7Lp3XmQ2vR"
    prompt = "x" * 1000 + f" <api_key>{secret}</api_key> and the rest " + "y" * 3000
    at = prompt.index(secret)
    for limit in range(at + 1, at + len(secret) + len("</api_key>")):
        cut = prompt[:limit] + f"...[$asynctrack: truncated, {len(prompt)} characters in all]"
        out = redactor.json(orjson.dumps({"data": {"prompt": cut}}))
        assert out is not None
        written = orjson.loads(out)["data"]["prompt"]
        assert _pieces_of(secret, written) == [] and f" <api_key>{REDACTED}" in written, (limit, written)
    whole = prompt[: at + len(secret) + len("</api_key>")] + "...[$asynctrack: truncated, 9 characters]"
    out = redactor.json(orjson.dumps({"prompt": whole}))
    assert out is not None and orjson.loads(out)["prompt"] == whole.replace(secret, REDACTED)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('password := "Hunter2-go"', f'password := "{REDACTED}"'),
        ('if password == "Hunter2-py":', f'if password == "{REDACTED}":'),
        ('if (apiKey === "Hunter2-js")', f'if (apiKey === "{REDACTED}")'),
        ("$config = ['db_password' => 'Hunter2-php'];", f"$config = ['db_password' => '{REDACTED}'];"),
        ('{:password => "Hunter2-rb", :user => "bob"}', f'{{:password => "{REDACTED}", :user => "bob"}}'),
        ("DB_PASSWORD:=Hunter2-mk", f"DB_PASSWORD:={REDACTED}"),
        # logical assignments (Ruby, Perl, JavaScript)
        ('password ||= "Hunter2-rb"', f'password ||= "{REDACTED}"'),
        ("config.apiKey ??= 'Hunter2-js';", f"config.apiKey ??= '{REDACTED}';"),
        ("secret&&=Hunter2-pl", f"secret&&={REDACTED}"),
        ('my %db = (password => "Hunter2-pl");', f'my %db = (password => "{REDACTED}");'),
        # comparisons and arrows of other keys are kept
        ('if max_tokens == 5 and role == "admin":', None),
        ("x === y; a == b; total_tokens => 3", None),
        ('if (a.length == 3 && key == "x") { author => author.name }', None),
        # an arrow function whose parameter is a credential word: code, kept
        ("const clean = tokens.map(token => token.trim());", None),
        ("users.filter(password => password.length < 12)", None),
    ],
)
@pytest.mark.parametrize(
    "keys", [DEFAULT_REDACT_KEYS, DEFAULT_REDACT_KEYS + "|zzz"], ids=["default", "custom"]
)
def test_a_two_or_three_character_operator_after_a_credential_key_is_a_separator(
    keys: str, text: str, expected: str | None
) -> None:
    """``:=``, ``==``, ``===``, ``=>``, ``||=``, ``&&=``, ``??=`` after a credential key:
    the value is redacted as after ``=`` or ``:``, in a text, in JSON and in a token
    stream; ``=>`` after a key not quoted only before a quoted value (else it is an arrow
    function's)."""
    redactor = Redactor(keys)
    assert redactor.text(text) == (text if expected is None else expected)
    body = orjson.dumps({"data": {"code": text}})
    written = redactor.json(body)
    assert written is not None
    assert b"Hunter2" not in written
    if expected is None:
        assert written == body
    stream = StreamRedactor(redactor.text, redactor.key_rule)
    middle = text.find("Hunter2") + 3 if expected is not None else len(text) // 2
    streamed = stream.token("run", text[:middle]) + stream.token("run", text[middle:])
    assert "Hunter2"[:4] not in streamed and "-" + text[middle + 5 : middle + 7] not in streamed
    if expected is None:
        assert streamed == text


#: Keys aligned in columns (the review's shapes): more than four blanks before or after
#: the separator, up to 64.
ALIGNED = [
    "my %config = (\n    user          => 'bob',\n    password      => 'Hunter2-pl',\n);",
    'config.api_key      = "Hunter2-rb"',
    "DB_PASSWORD        = Hunter2-env",
    "password:" + " " * 64 + "Hunter2-yml",
    "'secret'" + " " * 20 + "=>" + " " * 20 + "'Hunter2-php'",
    "api_key" + " " * 64 + ":= Hunter2-go",
    "'API key for prod'         : 'Hunter2-quoted'",
]
#: Aligned columns that are no credential's: kept.
ALIGNED_KEPT = [
    "Setting            Default    Notes\npassword_length    12         at least\nauthor             bob",
    "max_tokens   = 5\ntotal_tokens        : 1024\ntemperature         = 0.2",
    "users.filter(password          => password.length < 12)",
    "const clean = tokens.map(token        => token.trim());",
]


@pytest.mark.parametrize("text", ALIGNED + ALIGNED_KEPT)
@pytest.mark.parametrize(
    "keys", [DEFAULT_REDACT_KEYS, DEFAULT_REDACT_KEYS + "|zzz"], ids=["default", "custom"]
)
def test_keys_aligned_with_many_blanks_around_the_separator_are_redacted(keys: str, text: str) -> None:
    """Up to 64 spaces or tabs before and after the separator: the value is redacted in a
    text, in JSON (a text dense with stems too) and in a token stream; aligned columns that
    are no credential's are kept."""
    redactor = Redactor(keys)
    secret = "Hunter2" in text
    assert (redactor.text(text) == text) is not secret
    assert "Hunter2" not in redactor.text(text)
    for body in (orjson.dumps({"code": text}), orjson.dumps({"dense": "\n".join([text] * 300)})):
        written = redactor.json(body)
        assert written is not None and b"Hunter2" not in written
        assert (written == body) is not secret
    for middle in (text.find("Hunter2") + 3, text.find("Hunter2")) if secret else (len(text) // 2,):
        stream = StreamRedactor(redactor.text, redactor.key_rule)
        streamed = stream.token("run", text[:middle]) + stream.token("run", text[middle:])
        assert "Hun" not in streamed and "ter2-" not in streamed, streamed
        assert (streamed == text) is not secret


#: A tab between a key and its value (the review's shapes): JSON writes it as ``\\t``.
TABBED = {
    "colon": "password:\tzq-tab-01",
    "env": "PGPASSWORD=\tzq-tab-02",
    "spaced": 'password\t=\t"zq-tab-03"',
    "arrow": "'db_password'\t=>\t'zq-tab-04'",
    "arrow bare key": 'password\t=>\t"zq-tab-05"',
    "header": "x-api-key:\tzq-tab-06",
    "logical": "password ||=\t'zq-tab-07'",
    "bearer": "Authorization:\tBearer\tzq-tab-08",
    "quoted key": '"API key for prod"\t:\t"zq-tab-09"',
    "aligned": "DB_PASSWORD\t\t\t\t\t\t=\tzq-tab-10",
}


@pytest.mark.parametrize(
    "keys", [DEFAULT_REDACT_KEYS, DEFAULT_REDACT_KEYS + "|zzz"], ids=["default", "custom"]
)
def test_a_tab_between_a_key_and_its_value_is_a_blank_in_json_text(keys: str) -> None:
    """A tab where a separator accepts a space, written ``\\t`` in JSON (``\\\\t`` in JSON
    text inside a string): the value is redacted in a body (one text, one dense with stems,
    JSON text in a string) and in a token stream; an arrow function after a tab is kept."""
    redactor = Redactor(keys)
    for text in TABBED.values():
        bodies = [orjson.dumps({"code": text}), orjson.dumps({"dense": "\n".join([text] * 300)})]
        if '"' not in text:  # and in JSON text inside a string (a tool call's arguments): ``\\t``
            bodies.append(orjson.dumps({"arguments": orjson.dumps({"code": text}).decode()}))
        for body in bodies:
            written = redactor.json(body)
            assert written is not None and b"zq-tab" not in written and b"[REDACTED]" in written, written
        middle = text.find("zq-tab") + 3
        stream = StreamRedactor(redactor.text, redactor.key_rule)
        streamed = stream.token("run", text[:middle]) + stream.token("run", text[middle:])
        assert "zq-" not in streamed and "tab-" not in streamed, streamed
        if '"' not in text:  # streamed as JSON text (a tool call's arguments): the tab is ``\\t`` there
            streamed_json = orjson.dumps({"code": text}).decode()
            middle = streamed_json.find("zq-tab") + 3
            stream = StreamRedactor(redactor.text, redactor.key_rule)
            streamed = stream.token("run", streamed_json[:middle]) + stream.token(
                "run", streamed_json[middle:]
            )
            assert "zq-" not in streamed and "tab-" not in streamed, streamed
    arrow = "users.filter(password\t=>\tpassword.length < 12)"
    assert redactor.json(orjson.dumps({"code": arrow})) == orjson.dumps({"code": arrow})


def test_a_tab_between_a_key_and_its_value_leaks_nothing_to_files(
    tracked: Callable[..., AsyncTracker],
    tmp_destination: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The review's shapes with a tab as a chain's input and output, in the files written."""
    tracker = tracked()
    RunnableLambda(lambda form: {**form}, name="tabbed").invoke(dict(TABBED), config={"callbacks": [tracker]})
    tracker.close(timeout=10)
    _check(
        tmp_destination,
        tmp_path,
        caplog,
        {name: text[text.find("zq-") :][:9] for name, text in TABBED.items()},
    )
    assert any("[REDACTED]" in str(event) for event in _events(tmp_destination))


#: Code and prose with a credential word more than 40 characters before the separator: names
#: of something else (the second review's cases), kept.
FAR_FROM_THE_WORD = [
    "PASSWORD_MIN_LENGTH_FOR_ENTERPRISE_TENANT_ACCOUNTS_WITH_SSO_DISABLED = 12",
    'private static final String PASSWORD_RESET_EMAIL_TEMPLATE_LOCATION_FOR_ENTERPRISE_TENANTS = "t/r.html";',
    "self.session_manager.cookie_jar.policy.max_age_seconds_for_remember_me_checkbox = 3600",
    'if user.authentication_provider_configuration.enterprise_sso_redirect_uri_template == "x":',
    "# see docs.example.com/security/password-rotation-policy-for-enterprise-customers-v2: every 90 days",
]


@pytest.mark.parametrize(
    "keys", [DEFAULT_REDACT_KEYS, DEFAULT_REDACT_KEYS + "|zzz"], ids=["default", "custom"]
)
def test_a_key_is_read_up_to_40_characters_from_its_credential_word(keys: str) -> None:
    """What precedes the credential word is read however long (``LONG_KEYS``); what follows
    it up to 40 characters from the word's start: past that, a name of something else."""
    redactor = Redactor(keys)
    default = keys == DEFAULT_REDACT_KEYS  # a custom rule reads a whole word (ANY_PAIR)
    for line in FAR_FROM_THE_WORD:
        assert (redactor.text(line) == line) is default, line
    body = orjson.dumps({"code": "\n".join(FAR_FROM_THE_WORD), "dense": "\n".join(FAR_FROM_THE_WORD * 60)})
    assert (redactor.json(body) == body) is default
    for n in (31, 32):  # "password_" and n characters: 40 from the word's start, then 41
        line = "a" * 100 + "_password_" + "x" * n + "=hunter2-far"
        assert (redactor.text(line) == line) is (default and n == 32), line
        dense = orjson.dumps({"dense": "\n".join([line] * 300)})
        out = redactor.json(dense)
        assert (out == dense) is (default and n == 32)
        assert out is not None and (b"hunter2-far" in out) is (default and n == 32)


PROSE_WITH_A_TAG = (
    "To connect, run psql -h db.local -U app and type <password> when asked.\n\n"
    "Then create the table:\n\nCREATE TABLE users (id serial primary key, name text);\n\n"
    "Finally, restart the service with systemctl restart app and check the logs."
)


@pytest.mark.parametrize("size", [0, 1, 5])
def test_a_credential_tag_named_in_prose_stops_hiding_the_stream_at_a_blank_line(size: int) -> None:
    """An element's text opened in a stream ends at a blank line (a tag used as a placeholder
    in prose does not hide the rest of the answer); a multi-line secret element's lines
    before a blank line are still redacted."""
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    stream = StreamRedactor(redactor.text, redactor.key_rule)
    text = PROSE_WITH_A_TAG
    tokens = (
        [w + " " for w in text.split(" ")]
        if not size
        else [text[i : i + size] for i in range(0, len(text), size)]
    )
    written = "".join(stream.token("run", token) for token in tokens)
    assert written.startswith(f"To connect, run psql -h db.local -U app and type <password>{REDACTED}")
    rest = PROSE_WITH_A_TAG.partition("\n\n")[2]  # written whole (the blank line's first '\n' may be hidden)
    assert written.rstrip(" ").endswith("\n" + rest), written
    secret = "<password>\nHunter2-first\nHunter2-second\n</password>\n\nAnd then the rest."
    for piece in (1, 3, 8):
        stream = StreamRedactor(redactor.text, redactor.key_rule)
        written = "".join(stream.token("run", secret[i : i + piece]) for i in range(0, len(secret), piece))
        assert "Hunt" not in written and "-first" not in written and "second" not in written, written
        assert written.endswith("</password>\n\nAnd then the rest."), written


# -- streamed tokens -------------------------------------------------------------------------------


def test_a_secret_split_across_tokens_is_redacted_in_the_joined_stream() -> None:
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    stream = StreamRedactor(redactor.text, redactor.key_rule)
    tokens = [
        "my pass",
        "word=hun",
        "ter2 and key ",
        "sk-proj-",
        "Zq8VnR2m",
        "X5tL0wJ7bK3y",
        "H9dF6sA1pC4e",
        " done",
    ]
    written = "".join(stream.token("run", t) for t in tokens)
    for piece in ("hunter2", "hun", "ter2", "Zq8VnR2m", "X5tL0wJ7bK3y", "H9dF6sA1pC4e"):
        assert piece not in written, written
    assert written.startswith("my password=") and written.endswith(" done")


def test_streamed_chat_model_tokens_through_a_real_chat_openai(
    tracked: Callable[..., AsyncTracker],
    tmp_destination: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The stub streams 3 characters per chunk, so each secret spans several tokens."""
    tracker = tracked()
    answer = f"use password=stream-pw-9 and the key {OPENAI} then the jwt {JWT} ok"
    with OpenAIStub() as stub:
        chunks = list(chat_model(stub.url).stream("echo: " + answer, config={"callbacks": [tracker]}))
    assert "".join(str(c.content) for c in chunks) == answer
    tracker.close(timeout=10)
    _check(
        tmp_destination, tmp_path, caplog, {"pw": "stream-pw-9", "openai": OPENAI[8:20], "jwt": JWT[20:40]}
    )
    events = [e for e in _events(tmp_destination) if e["kind"] == "llm_new_token"]
    tokens = [e["data"]["token"] for e in events]
    assert "".join(tokens).startswith("use password=")
    assert any(token != REDACTED and REDACTED in token for token in tokens)
    # The chunk repeats its token: the redacted one (else the fragments of a split
    # secret, three characters each, could be read back in order from the chunks).
    for event in events:
        chunk = event["data"]["chunk"]
        assert chunk["text"] == chunk["message"]["content"] == event["data"]["token"], event


def test_streamed_tool_call_arguments_through_a_real_chat_openai(
    tracked: Callable[..., AsyncTracker],
    tmp_destination: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The stub streams a tool call's arguments 4 characters per chunk: LangChain writes
    each piece in the chunk's ``tool_call_chunks`` (beside an empty token)."""
    tracker = tracked()
    arguments = '{"city": "Paris", "password": "args-pw-9x", "unit": "C"}'
    with OpenAIStub() as stub:
        llm = chat_model(stub.url).bind_tools([get_weather])
        chunks = list(llm.stream("call: " + arguments, config={"callbacks": [tracker]}))
    assert "".join(c.tool_call_chunks[0]["args"] for c in chunks if c.tool_call_chunks) == arguments
    tracker.close(timeout=10)
    events = [e for e in _events(tmp_destination) if e["kind"] == "llm_new_token"]
    pieces = [
        piece["args"] or "" for e in events for piece in e["data"]["chunk"]["message"]["tool_call_chunks"]
    ]
    written = "".join(pieces)
    assert written.startswith('{"city": "Paris", "password": "'), written
    for fragment in ("args", "pw-9", "9x"):
        assert fragment not in written, written
    _check(tmp_destination, tmp_path, caplog, {"args": "args-pw-9x"})


def test_a_secret_split_across_streamed_content_blocks_is_redacted_in_every_copy(
    tracked: Callable[..., AsyncTracker],
    tmp_destination: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Content-block models (Anthropic's, OpenAI's Responses API) stream a list of blocks:
    LangChain passes ``chunk.message.content`` as the token. The blocks' text and a tool
    call's partial arguments are joined to the run's stream like a ``str`` token."""
    tracker = tracked()
    run = uuid.uuid4()
    answer = f"use password=block-pw-7 and the key {OPENAI} ok"
    arguments = '{"city": "Paris", "password": "args-pw-8"}'
    pieces = [("text", answer[i : i + 3]) for i in range(0, len(answer), 3)]
    pieces += [("partial_json", arguments[i : i + 4]) for i in range(0, len(arguments), 4)]
    for field, piece in pieces:
        block = {"type": "text" if field == "text" else "input_json_delta", field: piece, "index": 0}
        chunk = ChatGenerationChunk(message=AIMessageChunk(content=[dict(block)]))
        tracker.on_llm_new_token([dict(block)], chunk=chunk, run_id=run)
    tracker.on_llm_end(LLMResult(generations=[]), run_id=run)
    tracker.close(timeout=10)
    events = [e for e in _events(tmp_destination) if e["kind"] == "llm_new_token"]
    assert len(events) == len(pieces)
    for copy in (
        lambda e: e["data"]["token"][0],
        lambda e: e["data"]["chunk"]["message"]["content"][0],
    ):
        written = "".join(
            next(v for k, v in copy(e).items() if k in ("text", "partial_json")) for e in events
        )
        assert written.startswith("use password=")
        for secret in ("block-pw-7", "-pw-", OPENAI[8:20], OPENAI[20:], "args-pw-8"):
            assert secret not in written, written
    _check(
        tmp_destination, tmp_path, caplog, {"pw": "block-pw-7", "args": "args-pw-8", "openai": OPENAI[8:20]}
    )


class AnthropicShapedChat(BaseChatModel):
    """Streams a tool call as langchain-anthropic's ``_make_message_chunk_from_anthropic_event``
    builds its chunks: a ``tool_use`` block start, then each ``input_json_delta`` piece both as a
    content block (``partial_json``; older releases set its type to ``tool_use``) and as
    ``tool_call_chunks[0]["args"]``. ``cuts``: where the arguments are split into pieces."""

    arguments: str
    cuts: list[int]
    block_type: str = "input_json_delta"

    @property
    def _llm_type(self) -> str:
        return "anthropic-shaped"

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        start = {"type": "tool_use", "id": "toolu_01", "name": "http_get", "input": {}, "index": 1}
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content=[start],
                tool_call_chunks=[create_tool_call_chunk(name="http_get", args="", id="toolu_01", index=1)],
            )
        )
        for a, b in itertools.pairwise([0, *self.cuts, len(self.arguments)]):
            piece = self.arguments[a:b]
            block = {"partial_json": piece, "type": self.block_type, "index": 1}
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content=[block],
                    tool_call_chunks=[create_tool_call_chunk(name=None, args=piece, id=None, index=1)],
                )
            )


@pytest.mark.parametrize(
    ("step", "block_type"), [(1, "input_json_delta"), (0, "input_json_delta"), (0, "tool_use")]
)
def test_streamed_tool_call_arguments_in_anthropic_s_shape_are_redacted_in_every_copy(
    tracked: Callable[..., AsyncTracker],
    tmp_destination: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    step: int,
    block_type: str,
) -> None:
    """Anthropic's models stream each piece of a tool call's arguments as a content block and
    in ``tool_call_chunks``: both copies are joined per run and redacted, one character per
    chunk (``step`` 1) and in odd splits (``step`` 0: pieces of 1 to 9 characters)."""
    tracker = tracked()
    key = "sk-ant-api03-Zq8VnR2mX5tL0wJ7bK3yH9dF6sA1pC4eQ"
    arguments = (
        '{"url": "https://api.example.com/v1/users", "headers": {"Authorization": "Bearer '
        + key
        + '"}, "password": "tool-arg-pw-31", "unit": "C"}'
    )
    rng = random.Random(7)
    cuts = list(range(1, len(arguments))) if step else []
    while not step and (not cuts or cuts[-1] < len(arguments) - 9):
        cuts.append((cuts[-1] if cuts else 0) + rng.choice((1, 2, 3, 5, 7, 9)))
    model = AnthropicShapedChat(arguments=arguments, cuts=cuts, block_type=block_type)
    chunks = list(model.stream("call the API", config={"callbacks": [tracker]}))
    assert "".join(c.tool_call_chunks[0]["args"] for c in chunks if c.tool_call_chunks) == arguments
    tracker.close(timeout=10)
    events = [e for e in _events(tmp_destination) if e["kind"] == "llm_new_token"]
    message = [e["data"]["chunk"]["message"] for e in events]
    copies = {
        "tool_call_chunks": "".join(c["args"] or "" for m in message for c in m["tool_call_chunks"]),
        "invalid_tool_calls": "".join(c["args"] or "" for m in message for c in m["invalid_tool_calls"]),
        "blocks": "".join(b.get("partial_json", "") for e in events for b in e["data"]["token"]),
        "message content": "".join(b.get("partial_json", "") for m in message for b in m["content"]),
    }
    for name, written in copies.items():
        if name != "invalid_tool_calls":
            assert written.startswith('{"url": "https://api.example.com/v1/users", '), (name, written)
        for secret in (key[7:19], key[19:31], key[31:], "tool-arg", "-pw-31"):
            assert secret not in written, (name, written)
    _check(tmp_destination, tmp_path, caplog, {"key": key[7:], "pw": "tool-arg-pw-31"})


#: Model parameters whose keys the key rule matches once normalized (or that hold a credential).
SECRET_PARAMETERS = {
    "api.key": "live-0001", "Api Key": "live-0002", "private.key": "live-0003",
    "Client Key": "live-0004", "auth header": "live-0005", "apiKey": "live-0006",
    "password ": "live-0007", "ghp_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7c": "live-0008",
}  # fmt: skip


class ParameterizedLLM(FakeListLLM):
    """A model whose invocation parameters hold credentials under keys of every spelling."""

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {**super()._identifying_params, **SECRET_PARAMETERS, "temperature_x": 0.5}


def test_run_parameters_judge_keys_as_the_lines_do(
    tracked: Callable[..., AsyncTracker],
    tmp_destination: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """params/<writer>.json (and what the MLflow and SageMaker sinks get: the same
    summary) leave out a parameter whose key the key rule matches, normalized as the
    event lines' keys are, or whose key holds a credential."""
    tracker = tracked()
    ParameterizedLLM(responses=["hi"]).invoke("hello", config={"callbacks": [tracker]})
    tracker.close(timeout=10)
    ghp = "ghp_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7c"
    # (The lines keep "live-0008": its key is no credential's name, only a credential.)
    secrets = {key: value for key, value in SECRET_PARAMETERS.items() if key != ghp}
    _check(tmp_destination, tmp_path, caplog, {**secrets, "ghp": ghp})
    (params,) = tmp_destination.rglob("params/*.json")
    written = orjson.loads(params.read_bytes())
    assert [value for value in SECRET_PARAMETERS.values() if value in params.read_text()] == []
    assert written["parameters"]["temperature_x"] == 0.5  # the others are kept


@pytest.mark.parametrize(
    ("secret", "shown"),
    [
        ("postgresql://app:S3cretPw99xyz@db:5432/app", 29),  # a URL's password but its last character
        ("ghp_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7c", 32),  # 32 of a GitHub token's 40
        ("backup_ghp_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7c", 39),  # glued after '_'
        ("Bearer sk-proj-Zq8VnR2mX5tL0wJ7bK3yH9dF6sA1pC4e", 30),
        ('{"url": "x", "password": "hunter2-cut-off"}', 34),  # JSON text: a quoted value opened
        ("<db_password>hunter2-cut-off</db_password>", 23),  # an element's text opened
    ],
)
def test_a_credential_split_by_the_max_field_bytes_cut_is_redacted(
    tracked: Callable[..., AsyncTracker],
    tmp_destination: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    secret: str,
    shown: int,
) -> None:
    """A string longer than ``max_field_bytes`` is cut at capture, before the worker
    redacts it: what is left of a credential the cut splits no longer matches its format.
    The end of a string cut short is judged as a token stream's end."""
    limit = 4096
    tracker = tracked(config=TrackerConfig(max_field_bytes=limit))
    filler = "log line\n" * ((limit - shown) // 9) + "." * ((limit - shown) % 9)
    document = filler + secret + "\nmore log\n"
    assert document[:limit].endswith(secret[:shown])
    RunnableLambda(lambda _: "ok", name="cut").invoke({"document": document}, config={"callbacks": [tracker]})
    plain = "word " * (limit // 5 + 10)  # nothing to redact at the cut: cut as before
    RunnableLambda(lambda _: "ok", name="plain").invoke({"document": plain}, config={"callbacks": [tracker]})
    tracker.close(timeout=10)
    starts = {e["name"]: e for e in _events(tmp_destination) if e["kind"] == "chain_start"}
    written = starts["cut"]["data"]["inputs"]["document"]
    assert written.startswith(filler) and REDACTED in written[len(filler) :], written[len(filler) :]
    assert "[$asynctrack: truncated" in written
    for fragment in ("S3cretPw", "Ab3dEf6h", "Zq8VnR2m", "hunter2", "cut-of"):
        assert fragment not in written
    kept = starts["plain"]["data"]["inputs"]["document"]
    assert kept == plain[:limit] + f"...[$asynctrack: truncated, {len(plain)} characters in all]"


def test_the_cut_s_end_is_read_from_the_string_cut_short_only() -> None:
    """The end of the string before the mark, not JSON text around it: a short string
    cut at a small ``max_field_bytes`` (the window reaches its opening quote)."""
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    cut = "sk-proj-Zq8VnR2mX5" + "...[$asynctrack: truncated, 90 characters in all]"
    body = orjson.dumps(
        {"a": "ghp_", "b": cut, "c": "x\\" + '"', "d": "plain...[$asynctrack: truncated, 9 ch]"}
    )
    for _ in range(3):  # alone, then in chunks (a piece holding the mark is never remembered clean)
        out = redactor.json(body)
        assert out is not None
        parsed = orjson.loads(out)
        assert parsed["b"] == REDACTED + cut[18:]
        assert (parsed["a"], parsed["c"], parsed["d"]) == (
            "ghp_",
            "x\\" + '"',
            "plain...[$asynctrack: truncated, 9 ch]",
        )
        redactor.prepare([body, orjson.dumps({"d": "plain...[$asynctrack: truncated, 9 ch]"})])


# -- through real chains: every written byte --------------------------------------------------------


class Endpoint(typing.NamedTuple):
    url: str
    password: str


def test_every_leak_shape_through_real_chains(
    tracked: Callable[..., AsyncTracker],
    tmp_destination: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secrets = {
        "long-kv": "long-kv-value-1",
        "header": "hdr-token-2",
        "json-in-string": "json-in-str-3",
        "arguments": "fn-args-pw-4",
        "camel": "camel-secret-5",
        "glued": "glued-pw-6",
        "run-name": "sk-runname0000000000000000000007",
        "bytes": "bytes-pw-8",
        "namedtuple": "nt-pw-9",
        "short": "xud",
        "aws": AWS_SECRET,
        "jwt": JWT,
        "url-in-error": "url-err-pw-10",
        "tool-output": "tool-out-11",
    }
    tracker = tracked()
    long_text = (
        "x" * 2000
        + f" api_key={secrets['long-kv']} "
        + "y" * 2000
        + f"\nAuthorization: Bearer {secrets['header']}\n"
    )
    inputs = {
        "document": long_text,
        "http_body": '{"status": 200, "client_secret": "' + secrets["json-in-string"] + '"}',
        "settings": {"clientSecret": secrets["camel"], "PGPASSWORD": secrets["glued"], "max_tokens": 64},
        "blob": f"password={secrets['bytes']}".encode(),
        "endpoint": Endpoint("https://x", secrets["namedtuple"]),
        "note": f"password={secrets['short']} aws {secrets['aws']} jwt {secrets['jwt']}",
    }
    RunnableLambda(lambda x: "ok").invoke(
        inputs, config={"callbacks": [tracker], "run_name": f"named {secrets['run-name']}"}
    )

    def fail(_: Any) -> None:
        raise ConnectionError(f"could not reach postgres://svc:{secrets['url-in-error']}@db:5432/app")

    with pytest.raises(ConnectionError):
        RunnableLambda(fail).invoke("x", config={"callbacks": [tracker]})

    history = [
        HumanMessage("log me in"),
        AIMessage(
            "",
            tool_calls=[
                {"name": "login", "args": {"user": "bob", "password": secrets["arguments"]}, "id": "c1"}
            ],
            additional_kwargs={
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {
                            "name": "login",
                            "arguments": orjson.dumps({"password": secrets["arguments"]}).decode(),
                        },
                    }
                ]
            },
        ),
        ToolMessage(f'HTTP 200 {{"access_token": "{secrets["tool-output"]}"}}', tool_call_id="c1"),
        HumanMessage("echo: done"),
    ]
    with OpenAIStub() as stub:
        chat_model(stub.url).invoke(history, config={"callbacks": [tracker]})
    tracker.close(timeout=10)

    _check(tmp_destination, tmp_path, caplog, secrets)
    events = _events(tmp_destination)
    start = events[0]
    assert start["name"].startswith("named ")
    logged = start["data"]["inputs"]
    assert logged["settings"]["max_tokens"] == 64
    assert logged["endpoint"] == {"url": "https://x", "password": REDACTED}
    assert logged["blob"]["text"] == f"password={REDACTED}"
    error = next(e for e in events if e["kind"] == "chain_error")
    assert "postgres://svc:" in error["data"]["error"]["message"]
    chat = next(e for e in events if e["kind"] == "chat_model_start")
    # LangChain's secret marker names the environment variable: kept as it is.
    assert chat["data"]["serialized"]["kwargs"]["openai_api_key"] == {
        "lc": 1,
        "type": "secret",
        "id": ["OPENAI_API_KEY"],
    }


def test_real_chat_openai_events_never_need_the_structural_pass(tmp_destination: Path) -> None:
    """The serialized ``openai_api_key`` marker is judged in the JSON text: no parse."""
    with OpenAIStub() as stub:
        tracker_records: list[Any] = []
        tracker = AsyncTracker(tmp_destination, config=TrackerConfig(handle_sigterm=False))
        try:
            tracker._put = tracker_records.append  # type: ignore[method-assign]
            chat_model(stub.url).invoke("hello", config={"callbacks": [tracker]})
        finally:
            tracker.close(timeout=10)
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    bodies = [r[6] for r in tracker_records]
    assert bodies and all(type(b) is bytes for b in bodies)
    for body in bodies:
        assert redactor.json(body) is not None


def test_nothing_planted_reaches_the_spool_when_s3_is_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """S3 refuses connections: close() spools the batches; the spool holds the
    redacted lines only."""
    import socket

    from asynctrack import FlushError

    caplog.set_level(logging.DEBUG, logger="asynctrack")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spool = tmp_path / "spool-down"
    tracker = AsyncTracker(
        "s3://redact-bucket/down",
        experiment_name="redact",
        run_name="down",
        config=TrackerConfig(spool_dir=str(spool)),
        endpoint_url=f"http://127.0.0.1:{port}",
        connect_timeout=0.5,
        write_deadline=60.0,
    )
    secrets = {"kv": "spool-kv-pw-1", "json": "spool-json-2", "aws": AWS_SECRET, "jwt": JWT}
    RunnableLambda(lambda x: "ok").invoke(
        {"q": f"password={secrets['kv']} {AWS_SECRET} {JWT}", "settings": {"dbPassword": secrets["json"]}},
        config={"callbacks": [tracker]},
    )
    with pytest.raises(FlushError, match="spool"):
        tracker.close(timeout=1.0)
    assert tracker.statistics().spooled == 2
    spooled = b"".join(path.read_bytes() for path in spool.rglob("*.batch"))
    assert REDACTED.encode() in spooled  # the events are there, redacted
    assert _leaks([spool], caplog.text, secrets) == {}


_PIECES = [
    "password=",
    "x-api-key: ",
    "Authorization: Bearer ",
    '{"token": "',
    "hunter2",
    OPENAI,
    AWS_SECRET,
    JWT,
    "postgres://u:pw-1@h/db",
    " ",
    "\n",
    '"',
    "=",
    ":",
    "max_tokens",
    "key",
    "sk-",
    "plain words",
    ",",  # a string ending in ',' puts a ',"' that is no cut between members (a value's end)
    "},",
]
_body_values = st.recursive(
    st.lists(st.sampled_from(_PIECES), max_size=8).map("".join) | st.integers(-(2**40), 2**40),
    lambda children: (
        st.dictionaries(
            st.sampled_from(["text", "apiKey", "n", "token_usage", "args", "password,"]), children
        )
        | st.lists(children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(_body_values, min_size=1, max_size=6))
def test_a_chunk_scanned_at_once_is_redacted_like_each_body_alone(values: list[Any]) -> None:
    bodies = [orjson.dumps({"data": {"v": value}, "tags": [], "metadata": {}}) for value in values]
    alone = Redactor(DEFAULT_REDACT_KEYS)
    chunked = Redactor(DEFAULT_REDACT_KEYS)
    chunked.prepare(bodies)
    unchanged = chunked.unchanged()  # what the worker writes as it is, with no scan of its own
    for body in bodies:
        assert chunked.json(body) == alone.json(body)
        if unchanged.get(id(body)) is body:
            assert alone.json(body) == body


@settings(max_examples=80, deadline=None, database=None)
@given(st.lists(_body_values, min_size=1, max_size=6), st.lists(_body_values, max_size=6))
def test_remembered_clean_pieces_never_change_what_is_redacted(values: list[Any], more: list[Any]) -> None:
    """The pre-check remembers the pieces (cut at ',"') of chunks it found clean and
    scans only new pieces after that: the result must stay that of each body alone."""
    bodies = [orjson.dumps({"data": {"v": value}, "tags": [], "metadata": {}}) for value in values + more]
    alone = Redactor(DEFAULT_REDACT_KEYS)
    warm = Redactor(DEFAULT_REDACT_KEYS)
    # First what the bodies become once redacted, one chunk each (each one found clean
    # has its pieces remembered), then the bodies: each secret lies in a new piece,
    # beside remembered ones.
    for body in bodies:
        out = alone.json(body)
        warm.prepare([out if out is not None else body])
    warm.prepare(bodies[len(values) :] + bodies[: len(values)])
    unchanged = warm.unchanged()
    for body in bodies:
        assert warm.json(body) == alone.json(body)
        if unchanged.get(id(body)) is body:
            assert alone.json(body) == body


_CLEAN_FIELDS = {f"field_{i}": f"some clean value number {i}" for i in range(40)}


@pytest.mark.parametrize(
    ("warm", "attack"),
    [
        ({"note": "a,"}, {"password": "hunter2QZX,"}),  # a value ending in ','
        ({"note": "a},", "x": {"y": 1}}, {"token": "hunter2QZX},", "x": {"y": 1}}),  # ... in '},'
        ({"cfg": {"note": "a,", "model": "m"}}, {"cfg": {"api_key": "hunter2QZX,", "model": "m"}}),
        ({"z": {"note": "a,"}}, {"z": {"password": "hunter2QZX,"}}),  # ... the object's last
        ({"note": ["a,"]}, {"secret": ["hunter2QZX,"]}),
    ],
)
@pytest.mark.parametrize("shared", [False, True])
def test_a_string_ending_in_a_comma_is_redacted_beside_remembered_pieces(
    tmp_path: Path, warm: dict[str, Any], attack: dict[str, Any], shared: bool
) -> None:
    """',"' also ends a string that ends in ','; a cut there split "password":"hunter2QZX
    from its closing quote, and with the rest of the body remembered clean that one new
    piece was judged clean alone (683b40f and before wrote the secret as it is)."""

    def chain(tracker: AsyncTracker, inputs: dict[str, Any]) -> None:
        run = uuid.uuid4()
        tracker.on_chain_start({"name": "x"}, {**inputs, **_CLEAN_FIELDS}, run_id=run)
        tracker.on_chain_end({"ok": 1}, run_id=run)
        tracker.flush_blocking(timeout=10)

    config = TrackerConfig(worker="thread")
    first = AsyncTracker(tmp_path / "a", experiment_name="e", run_name="r", config=config)
    second = (
        first
        if not shared
        else AsyncTracker(tmp_path / "b", experiment_name="e", run_name="r", config=config)
    )
    chain(first, warm)  # its pieces (the ones ending in ',' too) remembered clean
    chain(second, attack)
    first.close()
    second.close()
    assert _leaks([tmp_path], "", {"planted": "hunter2QZX"}) == {}
    assert REDACTED in orjson.dumps(_events(tmp_path / ("b" if shared else "a"))[-2]["data"]).decode()


def _token_body(token: str, value: Any) -> bytes:
    """A streamed token's body as the handler writes it: the token twice."""
    chunk = {"text": token, "generation_info": value, "message": {"content": token, "id": "lc_run--1"}}
    return orjson.dumps({"data": {"chunk": chunk}, "tags": [], "metadata": {}})


_tokens = st.tuples(st.lists(st.sampled_from(_PIECES), max_size=4).map("".join), _body_values)


@settings(max_examples=80, deadline=None, database=None)
@given(st.lists(_tokens, min_size=1, max_size=6), st.lists(_tokens, max_size=6))
def test_tokens_checked_against_their_runs_template_are_redacted_like_each_body_alone(
    first: list[tuple[str, Any]], more: list[tuple[str, Any]]
) -> None:
    """A streamed token's body whose template (the body without its token) is known
    clean is not cut into pieces: only its token's piece is looked up or scanned."""
    bodies = [_token_body(token, value) for token, value in first + more]
    tokens: list[bytes | None] = [orjson.dumps(token) for token, _ in first + more]
    alone = Redactor(DEFAULT_REDACT_KEYS)
    warm = Redactor(DEFAULT_REDACT_KEYS)
    for body, token in zip(bodies, tokens, strict=True):  # templates of clean bodies remembered
        out = alone.json(body)
        warm.prepare([out if out is not None else body], [token])
    warm.prepare(bodies[len(first) :] + bodies[: len(first)], tokens[len(first) :] + tokens[: len(first)])
    unchanged = warm.unchanged()
    for body in bodies:
        assert warm.json(body) == alone.json(body)
        if unchanged.get(id(body)) is body:
            assert alone.json(body) == body


def test_a_tokens_body_with_a_known_template_is_judged_by_its_token() -> None:
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    words = ["The", " weather", " in", " Paris"]
    redactor.prepare([_token_body(w, None) for w in words], [orjson.dumps(w) for w in words])
    assert len(redactor.unchanged()) == 4
    later = [" is", " mild", "."]
    rest, pieces, templates = redactor._templates(
        [_token_body(w, None) for w in later], [orjson.dumps(w) for w in later]
    )
    assert (rest, len(pieces), templates) == ([], 3, [])  # the path under test: no body cut
    # A secret in the token, the template known: found by the token's piece, as alone.
    bare = "wJalrXUtnFEMIK7MDENGbPxRfiCYzXAMPLEKEY12"  # a bare AWS secret only after a context word
    for token, secret, value in [
        ("ghp_" + "a" * 36, "ghp_" + "a" * 36, None),
        ("localhost:5432:db:user:hunter2", "hunter2", None),
        (bare, bare, "aws"),
    ]:
        redactor.prepare([_token_body(w, value) for w in words], [orjson.dumps(w) for w in words])
        body = _token_body(token, value)
        redactor.prepare([body], [orjson.dumps(token)])
        out = redactor.json(body)
        assert out == Redactor(DEFAULT_REDACT_KEYS).json(body)
        assert out is not None and secret.encode() not in out.split(b'"content":')[1]  # (after "aws")


def test_a_remembered_piece_is_judged_again_where_its_context_makes_it_a_secret() -> None:
    bare = "wJalrXUtnFEMIK7MDENGbPxRfiCYzXAMPLEKEY12"  # 40 characters, no '/' or '+'
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    first = orjson.dumps({"data": {"id": bare, "n": 1}, "tags": [], "metadata": {}})
    assert redactor.json(first) == first  # alone, a random id: kept
    redactor.prepare([first, first])
    assert redactor.unchanged()  # clean ...
    assert not any(bare.encode() in piece for piece in redactor._pieces_seen.clean)  # ... but not remembered
    second = orjson.dumps({"data": {"note": "aws", "id": bare}, "tags": [], "metadata": {}})
    redactor.prepare([second])
    assert bare.encode() not in (redactor.json(second) or b"")


def test_langchains_secret_marker_is_remembered_and_a_password_beside_it_is_not() -> None:
    marker = {"lc": 1, "type": "secret", "id": ["OPENAI_API_KEY"]}
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    clean = [
        orjson.dumps({"data": {"serialized": {"kwargs": {"openai_api_key": marker}}, "n": i}, "tags": []})
        for i in range(4)
    ]
    redactor.prepare(clean)
    assert len(redactor.unchanged()) == 4
    remembered = redactor._pieces_seen.clean
    assert any(piece.startswith(b'type":"secret"') for piece in remembered)
    # Not the piece the cut ends inside the key's value: see the test below.
    assert not any(piece.endswith(b'openai_api_key":{"lc":1') for piece in remembered)
    dirty = orjson.dumps(
        {"data": {"serialized": {"kwargs": {"openai_api_key": marker, "password": "pw-1"}}}, "tags": []}
    )
    redactor.prepare([*clean, dirty])
    assert id(dirty) not in redactor.unchanged()
    assert b"pw-1" not in (redactor.json(dirty) or b"")
    assert redactor.json(clean[0]) == clean[0]


def test_the_bodies_left_out_of_firsts_begin_as_one_kept() -> None:
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    words = ["The", " weather", "", " in", " Paris", "\u00e9t\u00e9"]
    bodies = [_token_body(w, None) for w in words] + [_token_body(w, {"n": 1}) for w in words]
    bodies.insert(3, orjson.dumps({"tags": [], "data": {"chunk": None}}))  # data not first
    redactor.prepare(
        bodies, [orjson.dumps(w) for w in words[:3]] + [None] + [orjson.dumps(w) for w in words * 2][3:]
    )
    firsts = redactor.firsts
    assert len(firsts) < len(bodies)  # the path under test
    starts = {b[: _redactor.SAME_START] for b in firsts}
    assert all(b[: _redactor.SAME_START] in starts for b in bodies)
    assert bodies[3] in firsts
    encoder = Encoder(TrackerConfig())
    encoder.prepare(
        bodies, [orjson.dumps(w) for w in words[:3]] + [None] + [orjson.dumps(w) for w in words * 2][3:]
    )
    assert encoder.plain == {}  # a body without data first: none is spliced as it is


def _start(messages: list[dict[str, Any]], **metadata: Any) -> bytes:
    """A chat model start's body as the handler writes it (messages, then metadata)."""
    return orjson.dumps({"data": {"messages": [messages]}, "tags": [], "metadata": metadata})


def _message(content: str, kind: str = "human") -> dict[str, Any]:
    return {"content": content, "additional_kwargs": {}, "response_metadata": {}, "type": kind, "id": None}


def test_a_message_known_clean_is_looked_up_whole_and_a_secret_after_it_is_found() -> None:
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    system = _message("You are a helpful assistant. Answer briefly.", "system")
    first = _start([system, _message("What is the weather in Lyon today?")], ls_provider="openai")
    redactor.prepare([first])
    assert redactor.unchanged() and redactor._pieces_seen.coarse  # clean, its parts remembered
    # The next call's start repeats the history: its parts known clean are not cut into pieces.
    history = [system, _message("What is the weather in Lyon today?"), _message("18 C and sunny.", "ai")]
    second = _start([*history, _message("And in Paris?")], ls_provider="openai")
    cut = redactor._pieces(second)
    assert cut is not None and not any(b"helpful assistant" in piece for piece in cut[0])
    redactor.prepare([second])
    assert id(second) in redactor.unchanged()
    for secret, body in [
        ("hunter2", _start([*history, _message("my password=hunter2 please")], ls_provider="openai")),
        ("s3cr3t", _start(history, ls_provider="openai", api_key="s3cr3t")),
        ("sk-proj-" + "Q" * 40, _start([*history, _message("sk-proj-" + "Q" * 40)], ls_provider="openai")),
    ]:
        redactor.prepare([first, body])
        out = redactor.json(body)
        assert out == Redactor(DEFAULT_REDACT_KEYS).json(body)
        assert out is not None and secret.encode() not in out


def test_a_coarse_part_holding_a_piece_that_is_not_remembered_is_not_remembered() -> None:
    marker = {"lc": 1, "type": "secret", "id": ["OPENAI_API_KEY"]}
    bare = "wJalrXUtnFEMIK7MDENGbPxRfiCYzXAMPLEKEY12"  # a bare AWS secret only after a context word
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    body, other = (
        orjson.dumps({"data": {"kwargs": {"openai_api_key": marker}, "n": n}, "tags": [], "metadata": {}})
        for n in (1, 2)
    )
    ids, more = (orjson.dumps({"data": {"ids": {"a": bare}, "n": n}, "tags": []}) for n in (1, 2))
    for chunk in ([body, other], [ids, more]):
        redactor.prepare(chunk)
        assert len(redactor.unchanged()) == 2  # clean
    coarse = redactor._pieces_seen.coarse
    assert coarse and not any(b'{"lc":1' in part or bare.encode() in part for part in coarse)
    # The marker's object with a password after it, where the marker's part would stand.
    dirty = orjson.dumps(
        {"data": {"kwargs": {"openai_api_key": {**marker, "x": "pw-1"}}, "n": 1}, "tags": [], "metadata": {}}
    )
    redactor.prepare([body, dirty])
    assert b"pw-1" not in (redactor.json(dirty) or b"")


def test_a_token_is_remembered_clean_only_with_its_piece() -> None:
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    words = ["The", " weather", " in", " Paris"]
    redactor.prepare([_token_body(w, None) for w in words], [orjson.dumps(w) for w in words])
    later = [" is", " mild", "."]  # the template known: the tokens' pieces scanned, remembered
    redactor.prepare([_token_body(w, None) for w in later], [orjson.dumps(w) for w in later])
    seen = redactor._pieces_seen
    assert {orjson.dumps(w) for w in later} <= seen.tokens  # (the cache is the process's)
    assert all(_redactor._token_piece(t) in seen.clean for t in seen.tokens)
    secret = "ghp_" + "a" * 36
    body = _token_body(secret, None)
    redactor.prepare([body], [orjson.dumps(secret)])
    assert orjson.dumps(secret) not in seen.tokens
    assert secret.encode() not in (redactor.json(body) or b"")


@settings(max_examples=80, deadline=None, database=None)
@given(
    st.lists(st.integers(1, 60), min_size=1, max_size=12),
    st.sampled_from([OPENAI, JWT, "password=hunter2-xyz"]),
)
def test_any_split_of_a_streamed_secret_keeps_it_out(cuts: list[int], secret: str) -> None:
    text = f"here it is: {secret} and more text"
    points = sorted({min(c, len(text) - 1) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True) if b > a]
    stream = StreamRedactor(Redactor(DEFAULT_REDACT_KEYS).text)
    written = "".join(stream.token("run", piece) for piece in pieces)
    value = secret.split("=", 1)[-1]
    # At most the first few characters of a credential can be written before the
    # stream shows what it is; never the credential itself.
    assert value[6:] not in written, (pieces, written)


GLUED_AWS = "AKIAZ7Q4R2T8Y6U1I3O5"
GLUED_GHP = "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
#: Credentials with a prefix of their own glued after a '-' or '_' (a tag, a name, a URL's user).
GLUED = {
    "tag": "tag-" + GLUED_AWS,
    "name": "prod_" + GLUED_AWS,
    "openai": "openai-" + OPENAI,
    "backup": "backup_" + GLUED_GHP,
    "url": f"https://ci-{GLUED_GHP}@github.com/x",
}


@settings(max_examples=80, deadline=None, database=None)
@given(st.lists(st.integers(1, 60), min_size=1, max_size=12), st.sampled_from(sorted(GLUED.values())))
def test_any_split_of_a_streamed_glued_credential_keeps_it_out(cuts: list[int], glued: str) -> None:
    """``ci-gh`` + ``p_A1b2...``: once the stream shows the prefix after the '-' or '_',
    the credential is redacted up to its run's end (its prefix's first characters may
    have been written before, as after a space)."""
    text = f"here it is: {glued} and more text"
    points = sorted({min(c, len(text) - 1) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True) if b > a]
    stream = StreamRedactor(Redactor(DEFAULT_REDACT_KEYS).text)
    written = "".join(stream.token("run", piece) for piece in pieces)
    credential = next(c for c in (OPENAI, GLUED_AWS, GLUED_GHP) if c in glued)
    assert credential[6:] not in written, (pieces, written)
    assert written.startswith("here it is: ") and written.endswith(" and more text"), written


@pytest.mark.parametrize(
    "pieces",
    [
        ["Closed ", "task-sk-12", " today"],
        ["Closed task-sk-1", "2 today"],
        ["label_AKIA_missing", " in docs"],
        ["the ", "report-eyJson", " file"],
        ["see ", "tab-ya29.notes", " here"],
        ["on ", "feature-sk-learn-pipeline", "-integration", " now"],
        ["hugs-xoxo-and", "-kisses-forever"],
    ],
)
def test_a_streamed_identifier_with_a_glued_prefix_the_whole_text_keeps_is_kept(pieces: list[str]) -> None:
    """A token that holds a glued prefix and what follows it (``task-sk-12``): kept, as the
    whole text keeps it (review 16c, finding 9: ``task-[REDACTED]`` at 65f6546). Only a
    prefix at the stream's very end is held back (``task-sk-``), as after a space."""
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    stream = StreamRedactor(redactor.text, redactor.key_rule)
    written = "".join(stream.token("run", piece) for piece in pieces)
    assert written == "".join(pieces) == redactor.text("".join(pieces))


def test_a_glued_credential_after_a_long_dotted_run_is_redacted_when_streamed_or_cut() -> None:
    """The detectors start a run after each '.', the stream's check reads the run with its
    dots: a glued credential after a dotted run longer than 64 characters was written
    from its 9th character on, and a string cut inside it kept it (review 16c, finding 4)."""
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    lead = "see com.example.services.reporting.production.datasource.hikari.replica-"
    assert len(lead) - lead.index("com.") > 64
    pieces = [lead, "gh", "p_A1b2", "C3d4E5f6", "G7h8I9j0", "K1l2M3n4", "O5p6Q7r8", " ok"]
    stream = StreamRedactor(redactor.text, redactor.key_rule)
    written = "".join(stream.token("run", piece) for piece in pieces)
    assert redactor.text("".join(pieces)) == f"{lead}{REDACTED} ok"
    assert written.startswith(lead + "gh" + REDACTED) and written.endswith(" ok")
    assert not any(part in written for part in pieces[2:-1])
    assert open_credential(lead + GLUED_GHP[:14], redactor.key_rule) == len(lead)


@pytest.mark.parametrize("capture_content", [False, True])
def test_glued_credentials_leak_nothing_to_files_or_the_otlp_receiver(
    tracked: Callable[..., AsyncTracker],
    tmp_destination: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    receiver: Any,
    capture_content: bool,
) -> None:
    """The reviewer's shapes through a real ``ChatOpenAI`` (the loopback stub): in a tag,
    in metadata, in a prompt, streamed back 3 characters per chunk, in a tool call's
    arguments; in the files and in every byte the OTLP receiver got."""
    from asynctrack import OTLPExporter

    tracker = tracked(exporters=[OTLPExporter(receiver.endpoint, capture_content=capture_content)])
    config: Any = {
        "callbacks": [tracker],
        "tags": [GLUED["tag"]],
        "metadata": {"note": GLUED["backup"], "user": "bob"},
    }
    answer = " and ".join(GLUED.values())
    arguments = orjson.dumps({"city": GLUED["url"], "unit": GLUED["name"]}).decode()
    with OpenAIStub() as stub:
        chunks = list(chat_model(stub.url).stream("echo: " + answer, config=config))
        assert "".join(str(c.content) for c in chunks) == answer
        call = chat_model(stub.url).bind_tools([get_weather]).invoke("call: " + arguments, config=config)
        assert call.tool_calls[0]["args"]["city"] == GLUED["url"]
    tracker.close(timeout=10)
    receiver.wait_for_spans(2)
    secrets = {"aws": GLUED_AWS, "ghp": GLUED_GHP, "openai": OPENAI[8:]}
    _check(tmp_destination, tmp_path, caplog, secrets)
    files = b"".join(p.read_bytes() for p in _files(tmp_destination))
    assert b"tag-[REDACTED]" in files and b"https://ci-[REDACTED]@github.com/x" in files
    sent = b"".join(receiver.raw)
    assert [name for name, s in secrets.items() if s.encode() in sent] == []
    assert b"tag-[REDACTED]" in sent  # the tag was exported, redacted


@settings(max_examples=80, deadline=None, database=None)
@given(st.lists(st.integers(1, 70), min_size=1, max_size=14))
def test_any_split_of_a_streamed_quoted_credential_value_keeps_it_out(cuts: list[int]) -> None:
    """A tool call's arguments streamed as JSON text: once ``"password": "`` is in the
    stream, the value is redacted up to its closing quote, however the text is split."""
    text = 'calling {"city": "Paris", "password": "hunter2-xyz", "n": 1} done'
    points = sorted({min(c, len(text) - 1) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True) if b > a]
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    stream = StreamRedactor(redactor.text, redactor.key_rule)
    written = "".join(stream.token("run", piece) for piece in pieces)
    for fragment in ("hunter2", "hun", "ter", "xyz"):
        assert fragment not in written, (pieces, written)
    assert written.startswith('calling {"city": "Paris"') and written.endswith(" done"), (pieces, written)


@pytest.mark.parametrize(
    "token",
    [
        '{"password": "abc123"}',
        "{'password': 'abc123'}",
        'config: {"api_key":"abc123"}',
        "password = 'abc123'",
    ],
)
def test_a_token_holding_a_whole_credential_pair_is_redacted_on_the_chunk_path(token: str) -> None:
    """The chunk pre-check of a run's tokens (``StreamRedactor.clean`` with ``may_match``)
    must judge the text as ``text()`` does (as a JSON string): JSON with a space after its
    colon once passed it and was written as it came."""
    translator = EventTranslator(experiment="e", run="r", writer="w", config=TrackerConfig())
    body = orjson.dumps({"data": {"chunk": None}, "tags": [], "metadata": {}})
    records = [("llm_new_token", 1, 1.0, uuid.uuid4(), None, None, body, token)]
    translator.prepare(records)
    line = translator.many(records)[0]
    assert isinstance(line, tuple)
    assert b"abc123" not in line[1], line[1]


def test_the_shared_clean_piece_cache_under_concurrent_trackers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Redactors of the same rules share one cache of clean pieces (one per process):
    threads preparing chunks at once, the cache starting over every few hundred pieces,
    the switch interval at 10 µs, must each redact exactly as a lone redactor does."""
    monkeypatch.setattr(_redactor, "_CLEAN_MAX", 300)
    words = ["alpha", "beta", "plain", "x" * 30, "gamma delta", "epsilon"] * 20
    words += ["password=hunter2", OPENAI, "api_key"]
    alone = Redactor(DEFAULT_REDACT_KEYS)
    mismatches: list[bytes] = []
    learned: list[int] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        redactor = Redactor(DEFAULT_REDACT_KEYS)
        for _ in range(150):
            chunk = [
                orjson.dumps(
                    {
                        "data": {
                            # Like LangChain's events: mostly members that repeat.
                            **{f"field_{i}": f"the same text, member {i}" for i in range(12)},
                            "t": " ".join(rng.choice(words) for _ in range(rng.randint(1, 4))),
                            rng.choice(["n", "v"] * 30 + ["apiKey"]): 1,
                        },
                        "tags": [],
                        "metadata": {},
                    }
                )
                for _ in range(16)
            ]
            redactor.prepare(chunk)
            mismatches.extend(body for body in chunk if redactor.json(body) != alone.json(body))
        learned.append(len(redactor._pieces_seen.clean))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert len(learned) == 6
    assert any(learned), "the cache was used"
    assert mismatches == []


def test_a_batch_of_tokens_holding_a_prefix_far_back_is_not_judged_clean() -> None:
    """One worker chunk may hold a streamed key's prefix and more than 64 characters after
    it: the chunk pre-check (``StreamRedactor.clean``) must see the prefix wherever its run
    of credential characters starts, or the key is written as it came."""
    secret = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L" + "QPZRY9X8GF2TVDW0S3JN54KHCE6M"
    text = f"the key is AGE-SECRET-KEY-1{secret} keep it"
    tokens = [text[i : i + 3] for i in range(0, len(text), 3)]
    translator = EventTranslator(experiment="e", run="r", writer="w", config=TrackerConfig())
    body = orjson.dumps({"data": {"chunk": None}, "tags": [], "metadata": {}})
    run = uuid.uuid4()
    records = [("llm_new_token", i, 1.0, run, None, None, body, token) for i, token in enumerate(tokens)]
    # The first chunk ends inside the key, 69 characters past its prefix's start.
    cut = (text.index("AGE-") + 69) // 3
    lines = []
    for chunk in (records[:cut], records[cut:]):
        translator.prepare(chunk)
        lines += [line[1] if isinstance(line, tuple) else line for line in translator.many(chunk)]
    written = "".join(orjson.loads(line)["data"]["token"] for line in lines if line)
    assert written.startswith("the key is ") and written.endswith(" keep it"), written
    assert secret[:8] not in written and secret[-8:] not in written, written


def test_a_model_starts_known_description_is_not_cut_again_and_its_messages_are() -> None:
    def start(message: str) -> bytes:
        data = {"invocation_params": {"model": "m", "temperature": 0.2}, "messages": [[{"content": message}]]}
        return orjson.dumps({"data": data, "tags": [], "metadata": {"ls_provider": "openai"}})

    def lead(body: bytes) -> int:
        return body.find(b',"messages":[')

    redactor = Redactor(DEFAULT_REDACT_KEYS)
    first = start("What is the weather in Paris?")
    redactor.prepare([first], [lead(first)])
    assert redactor.unchanged()
    second = start("password=hunter2, and the weather in Lyon?")
    rest, _, leads = redactor._templates([second], [lead(second)])
    assert (rest, leads) == ([second[lead(second) :]], [])  # the path under test
    redactor.prepare([second], [lead(second)])
    assert redactor.json(second) == Redactor(DEFAULT_REDACT_KEYS).json(second)
    assert b"hunter2" not in (redactor.json(second) or b"")


# -- a token judged as the text it is; a secret-keyed object never cached clean ---------------


@pytest.mark.parametrize(
    ("tokens", "secret"),
    [
        (["Sure, the line is ", "localhost:5432:db:user:pgpass-tok-1"], "pgpass-tok-1"),
        (["Here: ", "*:*:*:ro:pgpass-tok-2", " done"], "pgpass-tok-2"),
        (["Lines:\n", "db:5432:app:bob:pgpass-tok-3"], "pgpass-tok-3"),  # a line start already seen
    ],
)
def test_a_credential_line_alone_in_a_streamed_token_is_redacted_in_every_copy(
    tracked: Callable[..., AsyncTracker],
    tmp_destination: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    tokens: list[str],
    secret: str,
) -> None:
    """A token is judged as the text it is too, not only joined to the stream before it:
    a ``.pgpass`` line starts the token (as it starts its chunk's text), so it is one."""
    tracker = tracked()
    run = uuid.uuid4()
    tracker.on_chat_model_start({"name": "m"}, [[HumanMessage(content="the line?")]], run_id=run)
    for token in tokens:
        chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
        tracker.on_llm_new_token(token, chunk=chunk, run_id=run)
    tracker.on_llm_end(LLMResult(generations=[]), run_id=run)
    tracker.close(timeout=10)
    events = [e for e in _events(tmp_destination) if e["kind"] == "llm_new_token"]
    assert len(events) == len(tokens)
    assert events[0]["data"]["token"] == tokens[0]
    _check(tmp_destination, tmp_path, caplog, {"pgpass": secret})


def test_a_token_alone_is_redacted_by_the_stream_whether_its_chunk_is_clean_or_not() -> None:
    """Both token paths: ``StreamRedactor.clean`` (a chunk of a run's tokens judged at
    once) and ``StreamRedactor.token`` (one token joined to its run's tail)."""
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    tokens = ["Sure, the line is ", "localhost:5432:db:user:hunter2"]
    stream = StreamRedactor(redactor.text, redactor.key_rule)
    assert stream.clean({"run": tokens}, redactor.may_match) == set()
    written = [stream.token("run", t) for t in tokens]
    assert written == ["Sure, the line is ", f"localhost:5432:db:user:{REDACTED}"]


@pytest.mark.parametrize(
    "value",
    [
        {"lc": 1, "value": "lc-secret-hunter2"},
        {"lc": 1, "type": "not_secret", "id": ["X"], "value": "lc-secret-hunter2"},
        {"lc": 1, "type": "secret", "id": ["OPENAI_API_KEY"], "extra": "lc-secret-hunter2"},
    ],
)
def test_a_remembered_secret_marker_piece_never_lets_another_object_under_its_key_through(
    value: dict[str, Any],
) -> None:
    """The piece ``openai_api_key":{"lc":1`` (the cut at ``,"`` falls inside LangChain's
    secret marker) must not be remembered clean on its own: an object under the key that
    is not the marker is replaced whole, as it is without the cache."""
    marker = {"lc": 1, "type": "secret", "id": ["OPENAI_API_KEY"]}

    def body(key_value: object, i: int) -> bytes:
        data = {"serialized": {"kwargs": {"openai_api_key": key_value}}, "n": i}
        return orjson.dumps({"data": data, "tags": [], "metadata": {}})

    redactor = Redactor(DEFAULT_REDACT_KEYS)
    clean = [body(marker, i) for i in range(4)]
    for _ in range(2):  # learned by the full scan, then known
        redactor.prepare(clean)
        assert len(redactor.unchanged()) == 4
    dirty = body(value, 9)
    expected = Redactor(DEFAULT_REDACT_KEYS).json(dirty)
    for bodies in ([dirty], [*clean, dirty]):
        redactor.prepare(bodies)
        assert id(dirty) not in redactor.unchanged()
        out = redactor.json(dirty)
        if out is None:
            out = orjson.dumps(redactor.structure(orjson.loads(dirty)))
        assert b"lc-secret-hunter2" not in out
        assert out == (expected or orjson.dumps(Redactor(DEFAULT_REDACT_KEYS).structure(orjson.loads(dirty))))


def test_a_secret_keyed_object_after_the_marker_was_seen_is_redacted_in_the_written_files(
    tracked: Callable[..., AsyncTracker],
    tmp_destination: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through a tracker: model starts with LangChain's secret marker, then one whose
    ``openai_api_key`` holds another object (a hand-built ``serialized``)."""
    marker = {"lc": 1, "type": "secret", "id": ["OPENAI_API_KEY"]}
    tracker = tracked()
    values: list[dict[str, Any]] = [marker, marker, {"lc": 1, "value": "lc-planted-pw-1"}]
    values += [{"lc": 1, "type": "not_secret", "id": ["X"], "value": "lc-planted-pw-2"}]
    for value in values:
        run = uuid.uuid4()
        serialized = {"lc": 1, "type": "constructor", "id": ["m"], "kwargs": {"openai_api_key": value}}
        tracker.on_chat_model_start(serialized, [[HumanMessage(content="hi")]], run_id=run)
        tracker.on_llm_end(LLMResult(generations=[]), run_id=run)
        tracker.flush_blocking(timeout=10)
    tracker.close(timeout=10)
    _check(tmp_destination, tmp_path, caplog, {"pw1": "lc-planted-pw-1", "pw2": "lc-planted-pw-2"})
