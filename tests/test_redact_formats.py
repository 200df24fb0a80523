"""Value detectors (``asynctrack._redact._formats``): the bare AWS secret rule and the run
formats, in a text with a few runs (judged one by one) and with many (judged in C calls).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asynctrack._config import DEFAULT_REDACT_KEYS
from asynctrack._redact import REDACTED, Redactor
from asynctrack._redact._common import splice
from asynctrack._redact._formats import aws_secrets, run_formats

SLASHED = b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYzXAMPLEKEY"  # 40 characters, holds '/'
UNSLASHED = b"wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY12"  # 40 characters, mixed case and a digit
FILLER = b"AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCd"  # a 40-character id: no '/', no context word
MANY = 30  # runs before the one under test: past the runs judged one by one


def _secrets(text: bytes) -> list[bytes]:
    return [text[start:end] for start, end, _ in sorted(aws_secrets(text))]


def _fill(count: int, run: bytes = FILLER) -> bytes:
    return b" ".join([run] * count)


def _reference(text: bytes) -> list[int]:
    """The bare AWS secret rule of the spec, one base64 run at a time (where each starts)."""
    low = text.lower()
    ends = [
        m.start() + len(word)
        for word in (b"aws", b"secret", b"akia", b"asia")
        for m in re.finditer(b"(?=" + word + b")", low)
    ]
    out = []
    for run in re.finditer(rb"[A-Za-z0-9+/]+", text):
        start, end = run.span()
        if end - start == 41 and start > 0 and text[start - 1] == 0x5C and text[start] in b"ntrbf":
            start += 1  # "\nwJal...": the JSON escape's letter is not part of it
        secret = text[start:end]
        if len(secret) != 40 or text[start - 1 : start] == b"=" or text[end : end + 1] == b"=":
            continue
        if not all(re.search(cls, secret) for cls in (rb"[A-Z]", rb"[a-z]", rb"[0-9]")):
            continue
        if b"/" in secret or b"+" in secret or any(start - 120 <= e <= start for e in ends):
            out.append(start)
    return out


@pytest.mark.parametrize("before", [0, 3, MANY])
def test_the_secret_among_many_40_character_runs_is_redacted(before: int) -> None:
    text = _fill(before) + b" " + SLASHED + b" " + _fill(MANY)
    assert _secrets(text) == [SLASHED]


@pytest.mark.parametrize("before", [0, MANY])
def test_an_unslashed_run_is_a_secret_only_within_120_bytes_after_a_context_word(before: int) -> None:
    near = b"aws key: " + UNSLASHED
    far = b"aws " + b"." * 120 + b" " + UNSLASHED.swapcase()
    text = _fill(before) + b" " + near + b" " + far + b" " + _fill(MANY)
    assert _secrets(text) == [UNSLASHED]
    # The context word's end may be right at the start of the window.
    at_edge = b"Secret" + b"." * 120 + UNSLASHED
    assert _secrets(_fill(before) + b" " + at_edge) == [UNSLASHED]
    assert _secrets(_fill(before) + b" Secret" + b"." * 121 + UNSLASHED) == []


@pytest.mark.parametrize("before", [0, MANY])
@pytest.mark.parametrize(
    "near_miss",
    [
        SLASHED[:39],  # 39 characters
        SLASHED + b"Q",  # 41 characters
        b"Q" + SLASHED,
        SLASHED + b"=",  # the end of a longer base64 text
        b"=" + SLASHED,
        SLASHED.lower(),  # no upper-case letter
        b"wJal/XUtnFEMI/KxMDENG/bPxRfiCYzXAMPLEKEY",  # no digit
    ],
)
def test_near_misses_are_kept(before: int, near_miss: bytes) -> None:
    gap = b" " + b"." * 120 + b" "  # the filler after it is out of the context word's reach
    assert _secrets(_fill(before) + b" aws " + near_miss + gap + _fill(MANY)) == []


@pytest.mark.parametrize("before", [0, MANY])
def test_a_secret_after_a_json_escape_is_redacted(before: int) -> None:
    line = orjson.dumps({"t": _fill(before).decode() + " aws key:\n" + UNSLASHED.decode() + "\n"})
    assert _secrets(line) == [UNSLASHED]
    assert _secrets(line.replace(b"\\n", b"\\u")) == []  # not an escape whose letter glues
    assert _secrets(orjson.dumps({"t": "keys\t" + SLASHED.decode()})) == [SLASHED]


def test_a_run_at_the_start_of_the_text() -> None:
    assert _secrets(SLASHED) == [SLASHED]
    assert _secrets(SLASHED + b" " + _fill(MANY)) == [SLASHED]
    assert _secrets(UNSLASHED) == []  # no word can come before it


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_pieces = st.one_of(
    st.text(_B64, min_size=38, max_size=42),
    st.text(_B64[:62], min_size=39, max_size=41),
    st.sampled_from([" ", "=", "\\", "\\n", "\\t", '"', ".", "aws", "AKIA", "Secret", "asia", " " * 100]),
)


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(_pieces, max_size=40))
def test_bare_aws_secrets_follow_the_spec(pieces: list[str]) -> None:
    text = "".join(pieces).encode()
    assert sorted(start for start, _, _ in aws_secrets(text)) == _reference(text)


# -- run formats ---------------------------------------------------------------------------


PYPI = "pypi-AgEIcHlwaS5vcmc" + "A1b2C3d4E5" * 5
LANGFUSE_PUBLIC = "pk-lf-" + "a1b2c3d4e5f6g7h8i9"


@pytest.mark.parametrize("secret", [PYPI, LANGFUSE_PUBLIC, "sk-proj-Zq8VnR2mX5tL0wJ7bK3yH9dF6sA1pC4e"])
@pytest.mark.parametrize("before", [0, MANY])
def test_a_format_right_after_a_json_newline_is_redacted(secret: str, before: int) -> None:
    # "\npypi-..." in JSON text: the run starts with "np", npm's prefix, and the escape's
    # letter glued to the token. Before the fix only npm was tried there.
    text = _fill(before).decode() + " first line\n" + secret + "\nlast line"
    out = Redactor(DEFAULT_REDACT_KEYS).json(orjson.dumps({"t": text}))
    assert out is not None
    assert secret.encode() not in out
    assert orjson.loads(out)["t"].endswith("first line\n" + REDACTED + "\nlast line")


_token_pieces = st.one_of(
    st.sampled_from(
        [
            *("sk-", "sk_live_", "pk-lf-", "ghp_", "AKIA", "xoxb-", "eyJ", "npm_", "pypi-AgEIcHlwaS5vcmc"),
            # Formats found from a lookbehind at the run or from what follows its hex digits.
            *("ya29.", "hvs.", "dp.pt.", "12345:AA", "patAbcdefghijklmn.", "0123456789abcdef" * 2 + "-us1"),
            "0123456789abcdef" * 2 + "0123NRAL",
        ]
    ),
    st.text("abcXYZ0189_-", min_size=1, max_size=45),
    st.text("0123456789abcdef", min_size=20, max_size=70),
    st.sampled_from([" ", "\\n", "\\t", "\\", ".", "eyJabcdefghi.eyJabcdefghi.x"]),
)


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(_token_pieces, max_size=30))
def test_run_formats_do_not_depend_on_how_many_runs_come_before(pieces: list[str]) -> None:
    text = "".join(pieces).encode()
    prefix = b" ".join([b"x" * 20] * MANY) + b" "
    shifted = [(start - len(prefix), end - len(prefix)) for start, end, _ in run_formats(prefix + text)]
    assert sorted(shifted) == sorted((start, end) for start, end, _ in run_formats(text))


# -- PEM private key blocks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "kept"),
    [
        ("MIIE-pAIB--AAKC----AQEA\\n7pem-----END RSA PRIVATE KEY----- after", " after"),  # '-' inside
        ('MIIEpAIB \\"quoted\\" 7pem-----END RSA PRIVATE KEY-----', ""),  # an escaped quote inside
        ("MIIEpAIBAAKCAQEA7pem ----END not yet", ""),  # no END line: to the end of the string
    ],
)
def test_a_pem_block_is_redacted_to_its_end_line(body: str, kept: str) -> None:
    text = b'{"t":"key: -----BEGIN RSA PRIVATE KEY-----' + body.encode() + b'","u":"next"}'
    out = Redactor(DEFAULT_REDACT_KEYS).json(text)
    assert out is not None
    assert orjson.loads(out) == {"t": "key: " + REDACTED + kept, "u": "next"}


def _splice_reference(text: bytes, spans: list[tuple[int, int, bytes]]) -> bytes:
    """Overlapping spans merge into one, marked as the first of them; touching ones do not."""
    groups: list[list[Any]] = []
    for start, end, mark in sorted(spans):
        if groups and start < groups[-1][1]:
            groups[-1][1] = max(groups[-1][1], end)
        else:
            groups.append([start, end, mark])
    out, last = b"", 0
    for start, end, mark in groups:
        out += text[last:start] + mark
        last = end
    return out + text[last:]


_spans = st.lists(
    st.tuples(st.integers(0, 60), st.integers(1, 12), st.sampled_from([b"[R]", b"[R]", b"<X>"])).map(
        lambda t: (t[0], t[0] + t[1], t[2])
    ),
    max_size=20,
)


@settings(max_examples=300, deadline=None, database=None)
@given(_spans)
def test_splice_equals_a_byte_by_byte_reference(spans: list[tuple[int, int, bytes]]) -> None:
    """Few or many spans (past eight, apart and marked alike: the C path), overlapping or not."""
    text = bytes(range(65, 65 + 64))
    assert splice(text, list(spans)) == _splice_reference(text, spans)


def test_splice_of_many_spans_apart_takes_the_c_path_and_agrees() -> None:
    text = bytes(range(32, 127)) * 4
    spans = [(i, i + 3, b"[R]") for i in range(0, 360, 7)]  # apart, touching none
    assert splice(text, list(spans)) == _splice_reference(text, spans)
    touching = [(i, i + 7, b"[R]") for i in range(0, 350, 7)]  # each ends where the next starts
    assert splice(text, list(touching)) == _splice_reference(text, touching)
    assert splice(text, list(touching)).count(b"[R]") == len(touching)
