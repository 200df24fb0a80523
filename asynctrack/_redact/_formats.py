"""Value detectors: credential formats found anywhere in a text, in linear passes."""

from __future__ import annotations

import bisect
import re
from typing import Final

from ._common import REDACTED_BYTES

__all__ = ["LITERAL_FORMATS", "aws_secrets", "run_formats"]

# -- value detectors ------------------------------------------------------------------
#
# Most formats are a literal prefix and a long run of token characters. They are
# found from the runs: one ``translate`` and a ``find`` per run find every run of
# 20+ ``[A-Za-z0-9_-]``, and a run is matched against the formats whose prefix
# starts it (a dict lookup on its first two bytes). The rest are found
# from a literal with ``bytes.find``.

#: ``bytes.translate`` table: token characters ``[A-Za-z0-9_-]`` -> ``a``, all else -> space.
_TOKENMAP: Final = bytes(
    0x61 if (0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A or b in b"_-") else 0x20
    for b in range(256)
)
_RUN20: Final = b"a" * 20  # the shortest format below is 20 characters long
_ESCAPES: Final = frozenset(b"ntrbf")  # JSON escapes whose letter glues to a run

#: First two bytes of a run -> (shortest match, format) that may start there.
_RUN_FORMATS: Final[dict[bytes, tuple[tuple[int, re.Pattern[bytes]], ...]]] = {}
for _prefix, _shortest, _pattern in (
    (b"sk", 23, rb"sk-[A-Za-z0-9_\-]{20,}+"),  # OpenAI (sk-proj-), Anthropic (sk-ant-), Langfuse (sk-lf-)
    (b"sk", 24, rb"sk_(?:live|test)_[A-Za-z0-9]{16,}+"),  # Stripe
    (b"rk", 24, rb"rk_live_[A-Za-z0-9]{16,}+"),
    (b"pk", 22, rb"pk-lf-[A-Za-z0-9_\-]{16,}+"),  # Langfuse public
    (b"ls", 25, rb"lsv2_[A-Za-z0-9_]{20,}+"),  # LangSmith
    (b"AK", 20, rb"AKIA[0-9A-Z]{16}(?![0-9A-Za-z])"),  # AWS access key ids
    (b"AS", 20, rb"ASIA[0-9A-Z]{16}(?![0-9A-Za-z])"),
    (b"AB", 20, rb"ABIA[0-9A-Z]{16}(?![0-9A-Za-z])"),
    (b"AC", 20, rb"ACCA[0-9A-Z]{16}(?![0-9A-Za-z])"),
    (b"gh", 34, rb"gh[pousr]_[A-Za-z0-9]{30,}+"),  # GitHub
    (b"gi", 33, rb"github_pat_[A-Za-z0-9_]{22,}+"),
    (b"gl", 26, rb"glpat-[A-Za-z0-9_\-]{20,}+"),  # GitLab
    (b"xo", 20, rb"xox[abposr]-[A-Za-z0-9\-]{15,}+"),  # Slack
    (b"AI", 39, rb"AIza[0-9A-Za-z_\-]{35,}+"),  # Google
    (b"hf", 33, rb"hf_[A-Za-z0-9]{30,}+"),  # Hugging Face
    (b"np", 40, rb"npm_[A-Za-z0-9]{36,}+"),  # npm
    (b"py", 60, rb"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{40,}+"),  # PyPI
    (b"gs", 44, rb"gsk_[A-Za-z0-9]{40,}+"),  # Groq
    (b"xa", 54, rb"xai-[A-Za-z0-9]{50,}+"),  # xAI
    (b"r8", 33, rb"r8_[A-Za-z0-9]{30,}+"),  # Replicate
    (b"ey", 20, rb"eyJ[A-Za-z0-9_\-]{8,}+\.eyJ[A-Za-z0-9_\-]{8,}+\.[A-Za-z0-9_\-]*+"),  # JWT
):
    _RUN_FORMATS[_prefix] = (*_RUN_FORMATS.get(_prefix, ()), (_shortest, re.compile(_pattern)))

#: Past this many runs in one text, ``_PREFIXED_RUN`` finds the candidates instead.
_DENSE_RUNS: Final = 512
#: A run of 20+ token characters that starts with a format's prefix (after a JSON
#: escape's letter too), at a run start.
_PREFIXED_RUN: Final = re.compile(
    rb"(?:(?<![A-Za-z0-9_\-])|(?<=\\[ntrbf]))(?:"
    + b"|".join(re.escape(prefix) for prefix in _RUN_FORMATS)
    + rb")[A-Za-z0-9_\-]{18,}+"
)

#: (literal that must occur, pattern, group to redact: 0 for the whole match)
LITERAL_FORMATS: Final[tuple[tuple[bytes, re.Pattern[bytes], int], ...]] = (
    (
        b"-----BEGIN",
        re.compile(
            rb"-----BEGIN (?:[A-Z0-9]{1,20}+ ){0,4}PRIVATE KEY(?: BLOCK)?-----"
            rb"(?:(?!-----END)[^\"\\]|\\.)*+(?:-----END[A-Z0-9 ]{0,60}+-----)?"
        ),
        0,
    ),
    # The password of a URL: the user part stops at ':', the password may hold '@'
    # and ':' (the last '@' before the host wins, within 256 bytes).
    (b"://", re.compile(rb"://[^\s/?#@:\"'\\]{0,256}+:([^\s/?#\"'\\]{1,256})@"), 1),
    (b"://", re.compile(rb"hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9/_\-]{10,}+"), 0),
    (
        b"earer",
        re.compile(rb"earer(?<=[Bb]earer)(?<![A-Za-z0-9].earer)[ \t]++([A-Za-z0-9._~+/=\-]{16,}+)"),
        1,
    ),
    (b"BEARER", re.compile(rb"BEARER(?<![A-Za-z0-9]BEARER)[ \t]++([A-Za-z0-9._~+/=\-]{16,}+)"), 1),
    (b"SG.", re.compile(rb"SG\.(?<![A-Za-z0-9_\-]SG\.)[A-Za-z0-9_\-]{16,}+\.[A-Za-z0-9_\-]{16,}+"), 0),
)

#: ``bytes.translate`` table: base64 characters -> ``a``, everything else -> space.
_B64: Final = bytes(
    0x61 if (0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A or b in (0x2B, 0x2F)) else 0x20
    for b in range(256)
)
_RUN40: Final = b"a" * 40
_AWS_WORDS: Final = (b"aws", b"secret", b"akia", b"asia")  # in the lower-cased 120 bytes before
#: An upper-case letter, a lower-case letter and a digit (one C call per candidate).
_MIXED: Final = re.compile(rb"(?=[^A-Z]*+[A-Z])(?=[^a-z]*+[a-z])(?=[^0-9]*+[0-9])")


def run_formats(text: bytes) -> list[tuple[int, int, bytes]]:
    """Spans of the run-based formats in ``text``."""
    spans: list[tuple[int, int, bytes]] = []
    mapped = text.translate(_TOKENMAP)
    i = mapped.find(_RUN20)
    runs = 0
    while i != -1:
        runs += 1
        if runs > _DENSE_RUNS:
            # Many long runs (a hostile or binary-like text): one regex pass that only
            # stops at runs starting with a known prefix, instead of Python per run.
            for m in _PREFIXED_RUN.finditer(text, i):
                _match_run(text, m.start(), m.end(), spans)
            return spans
        end = mapped.find(b" ", i)
        _match_run(text, i, end, spans)
        i = -1 if end == -1 else mapped.find(_RUN20, end)
    return spans


def _match_run(text: bytes, start: int, end: int, spans: list[tuple[int, int, bytes]]) -> None:
    """Match the formats whose prefix starts the run ``text[start:end]`` (``end`` -1: to the end)."""
    patterns = _RUN_FORMATS.get(text[start : start + 2])
    if patterns is None and text[start] in _ESCAPES and start > 0 and text[start - 1] == 0x5C:
        start += 1  # "\nsk-...": the run starts after the escape's letter
        patterns = _RUN_FORMATS.get(text[start : start + 2])
    if patterns is not None:
        for shortest, pattern in patterns:
            if end - start < shortest and end != -1:
                continue  # a near miss: too short to match
            m = pattern.match(text, start)
            if m is not None:
                spans.append((start, m.end(), REDACTED_BYTES))
                return


def aws_secrets(text: bytes) -> list[tuple[int, int, bytes]]:
    """Spans of bare AWS secret access keys (see the module docstring)."""
    mapped = text.translate(_B64)
    spans = []
    context: list[int] = []
    i = mapped.find(_RUN40)
    while i != -1:
        end = mapped.find(b" ", i)
        if end == -1:
            end = len(mapped)
        start = i
        # In JSON text a key right after a newline reads "\nwJal...": the 'n' is the escape.
        if end - start == 41 and start > 0 and text[start - 1] == 0x5C and text[start] in _ESCAPES:
            start += 1
        if end - start == 40 and text[start - 1 : start] != b"=" and text[end : end + 1] != b"=":
            candidate = text[start:end]
            if _MIXED.match(candidate) is not None and (
                b"/" in candidate or b"+" in candidate or _near(context, text, start)
            ):
                spans.append((start, end, REDACTED_BYTES))
        i = mapped.find(_RUN40, end)
    return spans


def _near(context: list[int], text: bytes, start: int) -> bool:
    """Whether a context word ends in the 120 bytes before ``start`` (``context``: their
    positions, found on first use: one ``find`` loop per word instead of a regex per key)."""
    if not context:
        low = text.lower()
        for word in _AWS_WORDS:
            i = low.find(word)
            while i != -1:
                context.append(i + len(word))
                i = low.find(word, i + 1)
        context.append(-(1 << 62))  # marks the list as computed; never in range
        context.sort()
    index = bisect.bisect_left(context, start - 120)
    return index < len(context) and context[index] <= start
