"""Value detectors (``asynctrack._redact._formats``): the bare AWS secret rule and the run
formats, in a text with a few runs (judged one by one) and with many (judged in C calls).
"""

from __future__ import annotations

import re
import sys
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asynctrack._config import DEFAULT_REDACT_KEYS
from asynctrack._redact import REDACTED, Redactor, _formats
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


# -- formats glued after '-' or '_' ----------------------------------------------------------

_ALNUM = "Zq8VnR2mX5tL0wJ7bK3yH9dF6sA1pC4eQ2rT5uW8"  # 40 letters and digits
_HEX64 = "9f2c4e1b7a0d3c5e8f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a6b8c0d2e"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
#: A made-up credential of every format with a prefix of its own (the formats found at a
#: run's start), in the shape of its rule.
PREFIXED = [
    "sk-proj-Zq8VnR2mX5tL0wJ7bK3yH9dF6sA1pC4e",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "whsec_RQlmRgdo54Zz7gkXkbjdhxRbNHtWIrRY",
    "pk-lf-a1b2c3d4e5f6g7h8i9",
    "lsv2_pt_" + _ALNUM,
    "ls__2c174102a1049a2cfb4fe2e3d7ae843b",
    "AKIAZ7Q4R2T8Y6U1I3O5",
    "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "github_pat_11ABCDEFG0" + _ALNUM,
    "glpat-Ab3dE6gH9jK2mN5pQ8sT",
    "GR1348941Ab3dE6gH9jK2mN5pQ8sT",
    "xoxb-123456789012-123456789012-AbCdEfGhIjKlMnOpQrStUvWx",
    "xapp-1-A0123456789-1234567890123-dd32beb15ba8",
    "AIzaSy" + _ALNUM[:33],
    "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p",
    "hf_" + _ALNUM[:34],
    "npm_" + _ALNUM[:36],
    "pypi-AgEIcHlwaS5vcmc" + "A1b2C3d4E5" * 5,
    "gsk_" + _ALNUM,
    "xai-" + _ALNUM + _ALNUM[:10],
    "r8_" + _ALNUM[:32],
    "pplx-" + _ALNUM,
    "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",
    "pcsk_4Xy7Qz_" + _ALNUM,
    "SK2f6c0a9d3e8b7f1c4a5d6e9b0c3f7a8d",
    "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",
    "sq0csp-iA7Mxf0zIQQeU2wpBdWrEUr1UyuhjzRQD4dj2Lkcuu8L",
    "EAAAEHb0c8kL2mN4pQ6rS8tU0vW2xY4zA6bC8dE0fG2hI4jK6lM8nO0pQ2rS4tU6vW8xY0zA2bC4dE6fG8",
    "NRAK-7QX2K9M4T1B8V6N3C0Z5L2J7H4G",
    "HRKU-AA0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRST_-01",
    "dop_v1_" + _HEX64,
    "ATATT3xFfGF0T4nWm2qLr8sMtSNHkVIJ82GYB4qWyw198grxrAQIEuGC9Th4FmaSqb5Savib4jQ6MIwHv3iniKq7fqwe3I6=A1B2C3D4",
    "lin_api_9dBXMkP1m88C83G83zWeCQjZma5LjkaW12t2WXxB",
    "ntn_123456789012SKJcc2uuc3Z5xO07rDYzDu5dE66la80lmKZS",
    "secret_yPIBYkvnDsTnd4xbmtyAiJxq9HbU3cKS0qqOqewcB1Y",
    "PMAK-b070cb2d9a3438b0421b81c5-b070cb2d9a3438b0421b81c599ca66e54c",
    "dapia10920578db82dfcbc7c53f695fa50cf",
    "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",
    "AGE-SECRET-KEY-1" + ("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L" * 2)[:58],
    JWT,
]
#: What a credential is glued to: a tag, a name, an identifier, a URL's user or path.
GLUES = ["tag-", "prod_", "openai-", "ci-", "backup_", "-", "_", "a-b_c-", "https://ci-", "/keys/prod-"]


def test_every_prefixed_format_has_an_example() -> None:
    formats = [f for f in _formats._RUN_FORMATS if not f.startswith((b"(?<=", b"[0-9a-f]", b"key-"))]
    assert [f for f in formats if not any(re.fullmatch(f, c.encode()) for c in PREFIXED)] == []


@pytest.mark.parametrize("glue", GLUES)
@pytest.mark.parametrize("before", [0, MANY])
def test_a_prefixed_format_glued_after_a_dash_or_underscore_is_redacted(glue: str, before: int) -> None:
    """``tag-AKIA...``, ``backup_ghp_...``: as after a space, '=' or '/' (gitleaks' rules
    match there), in a text with a few runs and with many (judged in C calls)."""
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    filler = _fill(before).decode() + " " if before else ""
    for credential in PREFIXED:
        text = f"{filler}see {glue}{credential} and {glue}{credential}@github.com/x, done"
        assert redactor.text(text) == f"{filler}see {glue}{REDACTED} and {glue}{REDACTED}@github.com/x, done"


@pytest.mark.parametrize("before", [0, MANY])
def test_glued_formats_after_one_another_and_after_a_long_word_are_redacted(before: int) -> None:
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    filler = _fill(before).decode() + " " if before else ""
    aws, ghp = PREFIXED[6], PREFIXED[7]
    text = f"{aws}-{ghp}_x-{aws} tag-{aws}-prod-{ghp} {'w' * 60}-{aws} {'a-b_' * 15}-{ghp}"
    out = redactor.text(filler + text)
    expected = f"{REDACTED}-{REDACTED}_x-{REDACTED} tag-{REDACTED}-prod-{REDACTED} {'w' * 60}-{REDACTED}"
    assert out == filler + expected + f" {'a-b_' * 15}-{REDACTED}"


LOOKALIKES = [
    "550e8400-e29b-41d4-a716-446655440000",  # UUIDs, hashes
    "run-d41d8cd9-8f00-b204-e980-0998ecf8427e",
    "cache-key-d41d8cd98f00b204e9800998ecf8427e",  # Mailgun's key- is not found glued
    "deploy-d41d8cd98f00b204e9800998ecf8427e-us21",  # nor Mailchimp's hex keys
    "sha256-e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "git-ed3a2b1c9f0e8d7c6b5a4f3e2d1c0b9a8f7e6d5c",
    "hf_hub_download_and_cache_model_weights",  # code identifiers
    "risk_level_assessment_for_enterprise_customers",
    "my_task_skeleton_generator_for_the_project",
    "test_sk_test_parametrized_case_number_one",
    "task-sk-12",
    "prompt_tokens_details_accepted_prediction_tokens",
    "some_dapi_wrapper_function_name_for_tests",
    "do_v1_something_else_entirely_here_and_more",
    "user_AKIAsomething_lower_case_not_a_key_id",
    "AKIA-style-identifier-of-a-test-fixture",
    "run-eyJhbGciOiJIUzI1NiJ9-not-a-jwt-at-all",
    "gpt-4o-mini-2024-07-18",
    "node_modules/@aws-sdk/client-s3/dist-cjs/index.js",
    "the dash-separated sentence-with-words goes on-and-on, my-xoxo-hugs",  # prose
    "ghp_" * 40,
    "x_eyJ" * 40,
    "a-" * 200,
]


@pytest.mark.parametrize("before", [0, MANY])
def test_identifiers_hashes_and_prose_with_a_glued_lookalike_are_kept(before: int) -> None:
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    filler = _fill(before).decode() + " " if before else ""
    for text in LOOKALIKES:
        assert redactor.text(filler + text) == filler + text


#: Slugs, branch names and identifiers whose part after a '-' or '_' starts with a glued
#: format's prefix and runs on in words (review 16c, finding 8: redacted at 65f6546).
SLUGS = [
    "https://github.com/org/repo/tree/feature-sk-learn-pipeline-integration",
    "docs-sk-learn-compatible-estimator",
    "locale_sk-slovak-translation-bundle",
    "hugs-xoxo-and-kisses-forever",
    "release-glft-deployment-tools-for-all",
    "release-glft-deployment-2024-tools-v2-for-all",
    "bump-sk-Learn-Release-Notes-x86_64-wheels",
    "fix_github_pat_rotation_guide_for_admins",
    "ops-HRKU-MIGRATION-RUNBOOK-STAGING",
    "team-AIza-onboarding-checklist-and-notes",
]


@pytest.mark.parametrize("before", [0, MANY])
def test_a_slug_with_a_glued_prefix_and_words_after_it_is_kept(before: int) -> None:
    """A prefix glued in a slug (``feature-sk-learn-pipeline``) whose body is words, not a
    key's mix of letters and digits, is kept; the same prefix before a key is redacted."""
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    filler = _fill(before).decode() + " " if before else ""
    for text in SLUGS:
        assert redactor.text(filler + text) == filler + text
    # A key after the words (with the words, then), or words after a key: redacted.
    openai, ghp = PREFIXED[0], PREFIXED[7]
    text = f"{filler}feature-sk-learn-{ghp} and hugs-{openai}-and-kisses-forever"
    out = f"{filler}feature-{REDACTED} and hugs-{REDACTED}"
    assert redactor.text(text) == out


def _python_calls(text: bytes) -> int:
    """Python calls (and calls of C functions from Python) in ``_formats`` that
    ``run_formats`` makes (not a garbage collector's callbacks meanwhile)."""
    calls = 0

    def count(frame: Any, event: str, arg: object) -> None:
        nonlocal calls
        calls += event in ("call", "c_call") and frame.f_code.co_filename == _formats.__file__

    sys.setprofile(count)
    try:
        run_formats(text)
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize(
    "unit",
    [
        "-s" * 32 + " ",
        "-gh" * 21 + "x ",
        "_sk_" * 16 + " ",
        "-AKIA" * 13 + " ",
        "-sk-learn",
        "-xoxb-abcdefghijklmn",
        "sk-",
        "x_eyJ",
        "-eyJhbGciOiJIUzI1NiJ9",
    ],
)
def test_glue_points_cost_no_python_per_glue_point(unit: str) -> None:
    """Text dense with glue points (review 16c, finding 5: ~30x the time at 65f6546, a
    Python step per glue point in a word's head): the glued formats are one C search,
    whatever the text's length."""
    small, large = (((unit * n)[: n * 64]).encode() for n in (256, 2048))
    assert _python_calls(large) == _python_calls(small)


_glued_pieces = st.one_of(
    _token_pieces,
    st.sampled_from(["-", "_", "tag-", "x" * 60, *(c[:30] for c in PREFIXED), *PREFIXED[:10], JWT]),
)


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(_glued_pieces, max_size=30))
def test_glued_formats_do_not_depend_on_how_many_runs_come_before(pieces: list[str]) -> None:
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
