"""Redaction: what counts as a credential in an event, and how it is found in linear time.

The spec (README "Redaction" says the same for users)
------------------------------------------------------

Every text the tracker writes passes here first: the captured body of an event
(its JSON text, so keys and every string value inside), the envelope's ``name``,
error messages and tracebacks, streamed tokens (joined per run) and the run's
parameters. A redacted value becomes ``[REDACTED]``.

1. **Key rules.** A key is split into words (``clientSecret`` -> ``client_secret``,
   ``x-api-key`` -> ``x_api_key``, ``PGPASSWORD`` -> ``pgpassword``) and the
   ``redact_keys`` regex is searched in that normalized form. The default rule
   (``DEFAULT_REDACT_KEYS`` in ``_config``) matches any word containing
   ``password``/``passwd``/``passphrase``/``pwd``/``secret``/``credential``/
   ``cookie``; ``auth``, ``authorization``, ``authentication``; ``<api|private|
   access|secret|signing|encryption|master|account|client|app|session>_key(s)``
   (glued too: ``openaiapikey``); and keys ending in ``token`` (``accessToken``,
   ``aws_session_token``), except the tokenizer's special tokens (``eos_token``
   ...). ``max_tokens``, ``token_usage``, ``total_tokens`` do not match.
   A key rule applies wherever a key meets a value:
   - JSON structure: ``{"dbPassword": "x"}`` -> the value (a string or number; a
     list or object under such a key is replaced whole). LangChain's serialized
     secret marker ``{"lc": 1, "type": "secret", "id": [...]}`` names an
     environment variable, holds no secret, and is kept as it is.
   - text: ``key=value``, ``key: value``, ``"key": "value"`` (JSON text inside a
     string, such as a tool call's ``arguments``), ``key='value'``, header dumps
     (``Authorization: Bearer xyz``, ``x-api-key: xyz``), URL queries
     (``?access_token=xyz``). The value is the quoted string, or else the run of
     characters up to whitespace, a quote, ``,``, ``;``, ``&``, ``)``, ``}``,
     ``]``, ``<``, ``>`` or a backslash; an auth scheme word (``Bearer``,
     ``Basic``, ``Token``, ``Digest``) before it is kept. Values of any length.
2. **Value detectors** (formats from the gitleaks, trufflehog and detect-secrets
   rule sets), anywhere in any text: OpenAI/Anthropic/Langfuse ``sk-...``,
   Langfuse ``pk-lf-...``, LangSmith ``lsv2_...``, AWS access key ids
   (``AKIA``/``ASIA``/``ABIA``/``ACCA`` + 16), bare AWS secret access keys (see
   below), GitHub (``ghp_ gho_ ghu_ ghs_ ghr_ github_pat_``), GitLab ``glpat-``,
   Slack ``xox?-`` tokens and webhook URLs, Stripe ``sk_live_``/``rk_live_``/
   ``sk_test_``, Google ``AIza...``, Hugging Face ``hf_``, npm ``npm_``, PyPI
   ``pypi-AgEIcHlwaS5vcmc...``, Groq ``gsk_``, xAI ``xai-``, Replicate ``r8_``,
   SendGrid ``SG.x.y``, JWTs (``eyJ...eyJ...``), ``Bearer <16+ chars>``, PEM
   private key blocks (``-----BEGIN ... PRIVATE KEY-----`` to its END line, or to
   the end of the string), and the password of a URL (``scheme://user:pw@host``).
   A bare AWS secret access key is a run of exactly 40 ``[A-Za-z0-9/+]`` with an
   upper-case letter, a lower-case letter and a digit, not part of a longer
   base64 run, and either holding ``/`` or ``+`` or having ``aws``, ``secret`` or
   an AWS key id within the 120 bytes before it (a random 40-character id
   with neither is left alone).
3. ``redact_patterns``: your own regexes, run on every text as bytes (keep them
   linear: a possessive or bounded quantifier, no nested repetition).

Not caught: a credential with no known format and no credential-like key before
it (``my pin is 1234``), a key and value separated only by a space
(``--password hunter2``), a value under a credential key that is itself JSON text
of an object or list inside a string (the keys inside it are still checked), a
secret split by an encoding the scan cannot see (base64 of a ``bytes`` value that
is not text is written as ``latin1`` text and scanned, but base64 *inside* a
string is not decoded), and in a token stream, text written by earlier tokens
before the stream showed it to be a credential (see ``StreamRedactor``).

Linear time
-----------

Each scan is a fixed number of passes over the text with C code (``bytes.find``,
``bytes.translate``, ``re`` patterns built so that every match attempt can only
start at a literal prefix or a word start, with possessive or bounded quantifiers,
so no attempt re-reads what an earlier one consumed). Python runs per *hit*, and
a hit consumes the text it covers. The hostile-corpus benchmark
(``benchmarks/hostile.py``) checks 256 KiB fields against 20 ms.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable
from typing import Final

import orjson

__all__ = ["REDACTED", "KeyRule", "Redactor", "StreamRedactor", "normalize_key"]

REDACTED: Final = "[REDACTED]"
_R: Final = REDACTED.encode()
_QR: Final = b'"' + _R + b'"'
#: LangChain's serialized ``SecretStr`` field: names an env variable, no secret.
_LC_SECRET: Final = b'{"lc":1,"type":"secret","id":['
_CACHE_MAX: Final = 10_000  # distinct keys judged and remembered (keys can be data)

# -- key rules --------------------------------------------------------------------

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_WORD = re.compile(r"[^A-Za-z0-9]+")


def normalize_key(key: str) -> str:
    """``key`` as lower-case words joined by ``_`` (``clientSecret`` -> ``client_secret``)."""
    if len(key) > 128:
        key = key[:128]
    return "_".join(w for w in _NON_WORD.split(_CAMEL.sub("_", key)) if w).lower()


class KeyRule:
    """Decides whether a key names a credential (cached per key)."""

    def __init__(self, pattern: str) -> None:
        self._re = re.compile(pattern)
        self._seen: dict[str, bool] = {}

    def __call__(self, key: str) -> bool:
        hit = self._seen.get(key)
        if hit is None:
            hit = self._re.search(normalize_key(key)) is not None
            if len(self._seen) < _CACHE_MAX:
                self._seen[key] = hit
        return hit


# -- the text scan: key rules in text and JSON text ---------------------------------

#: Substrings of the lower-cased text, one of which every key the default rule
#: matches holds, where it can be followed by a separator (a key ending in ``token``
#: is followed by its closing quote, a separator or a space). Found with
#: ``bytes.find``, ~50x faster than ``re`` over the same text.
_STEMS: Final = (
    b"pass",  # password, passwd, passphrase
    b"pwd",
    b"secret",
    b"credential",
    b"cookie",
    b"auth",
    b"key",
    # A key the default rule matches for "token" ends in it, so the key's end follows
    # (folded to '"'). LangChain's payloads hold many "..._tokens" keys: no stem.
    b'token"',
)
#: ``bytes.translate`` table: lower-case, and every byte that can end a key (a quote,
#: a backslash, a separator, a space) folded to '"'. One pass instead of ``lower()``.
_FOLD: Final = bytes((b + 32 if 0x41 <= b <= 0x5A else 0x22 if b in b"\"'\\=: \t" else b) for b in range(256))
#: Past this many stems in one text, one regex pass is cheaper than a Python loop per stem.
_DENSE: Final = 256
#: From a stem: the rest of the word, its closing quote if quoted, then ``=`` or ``:``.
_PAIR_AT: Final = re.compile(rb"([a-z0-9_.\-]{0,40}+)(\\?[\"'])?[ \t]{0,4}+[:=][ \t]{0,4}+", re.IGNORECASE)
#: The same as one regex, for texts dense with stems (linear: each attempt starts at
#: a stem and reads at most 48 bytes).
_STEM_PAIR: Final = re.compile(
    rb"((?:pass|pwd|secret|credential|cookie|auth|key|token(?![a-z0-9_.\-]))"
    rb"[a-z0-9_.\-]{0,40}+)(\\?[\"'])?[ \t]{0,4}+[:=][ \t]{0,4}+",
    re.IGNORECASE,
)


def _stem_pairs(text: bytes) -> list[re.Match[bytes]] | None:
    """Every stem of ``text`` that a separator follows, as ``_PAIR_AT`` matches;
    ``None`` when the text is dense with stems (see ``Redactor._dense``)."""
    folded = text.translate(_FOLD)
    positions: list[int] = []
    for stem in _STEMS:
        i = folded.find(stem)
        while i != -1:
            positions.append(i)
            if len(positions) > _DENSE:
                return None
            i = folded.find(stem, i + 1)
    out = []
    end = 0
    for i in sorted(positions):
        if i < end:
            continue
        m = _PAIR_AT.match(text, i)
        if m is not None:
            out.append(m)
            end = m.end()
    return out


#: A text dense with stems is searched from its separators when it has at most this
#: many (Python per separator), else with ``_STEM_PAIR`` (words are then short).
_MAX_SEPARATORS: Final = 4096
_BEFORE_KEY: Final = frozenset(b" \t")
_QUOTES: Final = frozenset(b"\"'")


class _Resumable:
    """The matches of ``pattern`` in ``text``; each search starts at ``resume`` at least
    (the caller moves it past a value it redacted, so no match inside is looked at)."""

    def __init__(self, pattern: re.Pattern[bytes], text: bytes) -> None:
        self._pattern = pattern
        self._text = text
        self._position = 0
        self.resume = 0

    def __iter__(self) -> _Resumable:
        return self

    def __next__(self) -> re.Match[bytes]:
        m = self._pattern.search(self._text, max(self._position, self.resume))
        if m is None:
            raise StopIteration
        self._position = max(m.end(), m.start() + 1)
        return m


def _dense_pairs(text: bytes) -> Iterable[re.Match[bytes]]:
    """``_PAIR_AT`` matches (from the key's first character) in a text dense with stems."""
    positions: list[int] = []
    for separator in (b"=", b":"):
        i = text.find(separator)
        while i != -1:
            positions.append(i)
            if len(positions) > _MAX_SEPARATORS:
                return _Resumable(_STEM_PAIR, text)  # linear, and no Python per stem
            i = text.find(separator, i + 1)
    words = text.translate(_WORDMAP)
    folded = text.translate(_FOLD)
    out = []
    for p in sorted(positions):
        q = p
        while q > 0 and p - q < 4 and text[q - 1] in _BEFORE_KEY:
            q -= 1
        if q > 0 and text[q - 1] in _QUOTES:
            q -= 1
            if q > 0 and text[q - 1] == 0x5C:
                q -= 1
        k0 = words.rfind(b" ", max(0, q - 64), q) + 1
        if q - k0 < 1 or not any(stem in folded[k0 : q + 1] for stem in _STEMS):
            continue
        m = _PAIR_AT.match(text, k0)
        if m is not None:
            out.append(m)
    return out


#: Key/value pairs judged per text at most; past them the rest of the text is
#: withheld (replaced by a marker). Only a hostile or junk text has so many: this
#: bounds the Python work per text (each pair costs ~1-2 us) with no leak.
_MAX_PAIRS: Final = 1024
_WITHHELD: Final = b"[REDACTED: the rest of this text is withheld, too many credential-like pairs]"


#: For a custom ``redact_keys``: every word followed by a separator is a candidate.
_ANY_PAIR: Final = re.compile(
    rb"(?<![a-z0-9_.\-])([a-z0-9_.\-]{1,128}+)(\\?[\"'])?[ \t]{0,4}+[:=][ \t]{0,4}+",
    re.IGNORECASE,
)
#: Word characters of keys -> ``a``, all else -> space (for ``rfind`` of a word's start).
_WORDMAP: Final = bytes(
    0x61 if (0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A or b in b"_.-") else 0x20
    for b in range(256)
)
_JSON_STRING: Final = re.compile(rb'"((?:[^"\\]|\\.)*+)"')
_JSON_NUMBER: Final = re.compile(rb"-?[0-9][0-9.eE+\-]*+")
_ESCAPED_STRING: Final = re.compile(rb'\\"((?:[^"\\]|\\[^"])*+)\\"')
_SINGLE_STRING: Final = re.compile(rb"'([^'\"\\]*+)'")
_BARE: Final = re.compile(rb"(?:(?:bearer|basic|token|digest)[ \t]++)?([^\s\"'\\,;&)}\]<>]++)", re.IGNORECASE)


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

#: (literal that must occur, pattern, group to redact: 0 for the whole match)
_LITERAL_FORMATS: Final[tuple[tuple[bytes, re.Pattern[bytes], int], ...]] = (
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


def _run_formats(text: bytes) -> list[tuple[int, int, bytes]]:
    """Spans of the run-based formats in ``text``."""
    spans = []
    get = _RUN_FORMATS.get
    mapped = text.translate(_TOKENMAP)
    i = mapped.find(_RUN20)
    while i != -1:
        start = i
        end = mapped.find(b" ", i)
        i = -1 if end == -1 else mapped.find(_RUN20, end)
        patterns = get(text[start : start + 2])
        if patterns is None and text[start] in _ESCAPES and start > 0 and text[start - 1] == 0x5C:
            start += 1  # "\nsk-...": the run starts after the escape's letter
            patterns = get(text[start : start + 2])
        if patterns is not None:
            for shortest, pattern in patterns:
                if end - start < shortest and end != -1:
                    continue  # a near miss: too short to match
                m = pattern.match(text, start)
                if m is not None:
                    spans.append((start, m.end(), _R))
                    break
    return spans


def _aws_secrets(text: bytes) -> list[tuple[int, int, bytes]]:
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
                spans.append((start, end, _R))
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


class Redactor:
    """Applies the spec above to JSON text (the captured bodies) and to plain text.

    Args:
        keys: the ``redact_keys`` regex (searched in normalized keys), or ``None``.
        patterns: extra regexes (``redact_patterns``), run on every text.
        detectors: run the built-in value detectors.
    """

    def __init__(self, keys: str | None, patterns: tuple[str, ...] = (), detectors: bool = True) -> None:
        # With key rules off, pydantic's SecretStr field (what its __dict__ holds) still is.
        self.key_rule: KeyRule | None = KeyRule(keys if keys is not None else _SECRET_FIELD)
        self._default_keys = keys is not None and _is_default(keys)
        self._detectors = detectors
        self._patterns = tuple(re.compile(p.encode()) for p in patterns)
        self._raw_keys: dict[bytes, bool] = {}
        self._texts: dict[str, str] = {}
        # Set by prepare(): for each body of the chunk at hand (by identity), whether it
        # needs the full path, else the spans to redact. Other texts: the full path.
        self._chunk: dict[int, tuple[bytes, bool, list[tuple[int, int, bytes]]]] = {}

    # -- chunks ----------------------------------------------------------------------------

    def prepare(self, bodies: list[bytes] | None) -> bytes:
        """Scan a chunk of bodies at once (``None``: forget the last chunk).

        The passes over the joined chunk cost about what they cost over each body,
        plus one Python call per chunk instead of per body, and each byte is scanned
        once: the spans found are kept per body, and ``json()`` of the very same
        ``bytes`` object only splices them in. A body where a credential key holds a
        list or object (or a chunk dense with stems) takes the full path instead.
        Returns the joined chunk.
        """
        if bodies is None:
            self._chunk = {}
            return b""
        joined = b"\x1e".join(bodies)
        offsets = []
        position = 0
        for body in bodies:
            offsets.append(position)
            position += len(body) + 1
        found: list[list[tuple[int, int, bytes]]] = [[] for _ in bodies]
        full = [False] * len(bodies)
        spans: list[tuple[int, int, bytes]] = []
        if self.key_rule is not None:
            keys = self._key_spans(joined)
            if keys is None:
                full = [True] * len(bodies)
            else:
                spans, containers = keys
                for position in containers:
                    full[bisect.bisect_right(offsets, position) - 1] = True
        if self._detectors:
            spans.extend(self._value_spans(joined))
        for start, end, replacement in spans:
            index = bisect.bisect_right(offsets, start) - 1
            base = offsets[index]
            found[index].append((start - base, end - base, replacement))
        self._chunk = {id(b): (b, f, sp) for b, f, sp in zip(bodies, full, found, strict=True)}
        return joined

    # -- JSON text ---------------------------------------------------------------------

    def json(self, text: bytes, own_token: bool = False) -> bytes | None:
        """``text`` (JSON as orjson writes it) with credentials redacted.

        Returns ``None`` when a credential key holds a JSON list or object: the
        caller then redacts the parsed value (``structure``) and calls this again.
        ``own_token``: the key ``token`` first in ``data`` is the library's own.
        """
        entry = self._chunk.get(id(text))
        if entry is not None and entry[0] is text and not entry[1]:
            out = _splice(text, list(entry[2])) if entry[2] else text  # scanned by prepare()
        else:
            if self.key_rule is not None:
                scanned = self._keys(text, own_token)
                if scanned is None:
                    return None
                text = scanned
            out = _splice(text, self._value_spans(text)) if self._detectors else text
        for pattern in self._patterns:
            out = pattern.sub(_R, out)
        return out

    def structure(self, value: object, own_token: bool = False) -> object:
        """``value`` (parsed JSON) with every list or object under a credential key replaced."""
        rule = self.key_rule
        if rule is None:
            return value
        if own_token and type(value) is dict and type(value.get("data")) is dict and "token" in value["data"]:
            data = dict(value["data"])
            token = self.structure(data.pop("token"))
            rest = self.structure(data)
            return {**value, "data": {"token": token, **(rest if type(rest) is dict else {})}}
        if type(value) is dict:
            out: dict[str, object] = {}
            for key, item in value.items():
                if rule(key) and not _is_lc_secret(item):
                    out[key] = REDACTED
                else:
                    out[key] = self.structure(item)
            return out
        if type(value) is list:
            return [self.structure(item) for item in value]
        return value

    def _keys(self, text: bytes, own_token: bool = False, budget: int = 0) -> bytes | None:
        """Key rules on ``text``: ``None`` when a list or object must be replaced."""
        found = self._key_spans(text, own_token, budget)
        if found is None:
            return self._dense(text, own_token)
        spans, containers = found
        if containers:
            return None
        return _splice(text, spans) if spans else text

    def _key_spans(
        self, text: bytes, own_token: bool = False, budget: int = 0
    ) -> tuple[list[tuple[int, int, bytes]], list[int]] | None:
        """The spans the key rules redact in ``text``, and the positions of lists or
        objects under credential keys; ``None`` for a text dense with stems (with no
        ``budget``: at most this many pairs judged, ``text`` being one JSON string)."""
        matches: Iterable[re.Match[bytes]] | None = (
            _stem_pairs(text) if self._default_keys else _Resumable(_ANY_PAIR, text)
        )
        containers: list[int] = []
        if matches is None:
            if not budget:
                return None
            matches = _dense_pairs(text)
        elif not matches:
            return [], containers
        words = text.translate(_WORDMAP) if self._default_keys else b""
        spans: list[tuple[int, int, bytes]] = []
        n = len(text)
        resume = 0
        for m in matches:
            if m.start() < resume:
                continue  # inside a value already redacted
            if budget:
                budget -= 1
                if not budget:
                    spans.append((m.start(), n - 1, _WITHHELD))  # up to the closing quote
                    break
            pos = m.end()
            k1 = m.end(1)
            if self._default_keys:
                s = m.start()
                k0 = words.rfind(b" ", max(0, s - 64), s) + 1
                if k0 == 0 and s > 64:
                    continue  # a word too long to be a key
            else:
                k0 = m.start(1)
            if own_token and k0 == 10 and text.startswith(b'{"data":{"token":'):
                continue  # the streamed token's own field
            raw = text[k0:k1]
            # An unescaped '"' right before ':' ends a JSON key (orjson writes no spaces).
            structural = m.group(2) == b'"' and pos == k1 + 2
            if self._judge(text, raw, k0, k1, structural) and pos < n:
                span, resume = _value_span(text, pos, structural)
                if span is None:  # a list or object under a credential key
                    containers.append(m.start())
                    continue
                if (
                    structural
                    and raw in _SECRET_KEYS
                    and text[k0 - 2 : k0] == b'{"'
                    and text[resume : resume + 1] == b"}"
                ):
                    # pydantic's SecretStr as its __dict__ ({"_secret_value": ...}): the whole object.
                    span, resume = (k0 - 2, resume + 1, _QR), resume + 1
                if span[1] > span[0]:
                    spans.append(span)
                if type(matches) is _Resumable:
                    matches.resume = resume
        return spans, containers

    def _judge(self, text: bytes, raw: bytes, k0: int, k1: int, structural: bool) -> bool:
        """Whether the key ``raw`` (``text[k0:k1]``) names a credential (cached)."""
        rule = self.key_rule
        assert rule is not None
        hit = self._raw_keys.get(raw)
        if hit is None:
            hit = rule(raw.decode("utf-8", "replace"))
            if len(self._raw_keys) < _CACHE_MAX:
                self._raw_keys[raw] = hit
        if structural and not hit and k0 > 0 and text[k0 - 1] != 0x22:
            # A JSON key may hold more than this word ("api key"): judge it whole.
            opening = text.rfind(b'"', max(0, k0 - 128), k0)
            if opening != -1:
                hit = rule(text[opening + 1 : k1].decode("utf-8", "replace"))
        return hit

    def _dense(self, text: bytes, own_token: bool) -> bytes:
        """``text`` dense with stems: key rules on the parsed structure, then each string
        on its own, with at most ``_MAX_PAIRS`` pairs judged per string."""
        try:
            parsed = self.structure(orjson.loads(text), own_token)
        except orjson.JSONDecodeError:  # not JSON (never seen): all of it is suspect
            return orjson.dumps(REDACTED)
        return orjson.dumps(self._strings(parsed))

    def _strings(self, value: object) -> object:
        if type(value) is str:
            encoded = orjson.dumps(value)
            out = self._keys(encoded, budget=_MAX_PAIRS)
            return value if out is None or out == encoded else orjson.loads(out)
        if type(value) is dict:
            return {key: self._strings(item) for key, item in value.items()}
        if type(value) is list:
            return [self._strings(item) for item in value]
        return value

    # -- any text (JSON text included) --------------------------------------------------

    def values(self, text: bytes) -> bytes:
        """``text`` with the value detectors and ``redact_patterns`` applied."""
        if self._detectors:
            text = _splice(text, self._value_spans(text))
        for pattern in self._patterns:
            text = pattern.sub(_R, text)
        return text

    def _value_spans(self, text: bytes) -> list[tuple[int, int, bytes]]:
        """The spans the value detectors redact in ``text``."""
        spans = _run_formats(text)
        present: dict[bytes, bool] = {}
        for literal, pattern, group in _LITERAL_FORMATS:
            found = present.get(literal)
            if found is None:
                found = present[literal] = literal in text
            if found:
                spans.extend((m.start(group), m.end(group), _R) for m in pattern.finditer(text))
        if len(text) >= 40:
            spans.extend(_aws_secrets(text))
        return spans

    def text(self, value: str) -> str:
        """A plain string with the whole spec applied (as if it were a JSON string value)."""
        cached = self._texts.get(value)
        if cached is not None:
            return cached
        try:
            encoded = orjson.dumps(value)
        except orjson.JSONEncodeError:  # a lone surrogate
            encoded = orjson.dumps(value.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
        out = self.json(encoded)
        result: str = value if out is None or out == encoded else orjson.loads(out)
        if len(value) <= 256 and len(self._texts) < _CACHE_MAX:
            self._texts[value] = result
        return result

    def may_match(self, text: str) -> bool:
        """Whether the spec redacts anything in ``text``."""
        raw = text.encode("utf-8", "surrogatepass")
        if self._patterns:
            return True
        if self.key_rule is not None:
            keys = self._key_spans(raw)
            if keys is None or keys[0] or keys[1]:
                return True
        return bool(self._detectors and self._value_spans(raw))


_NOTHING: Final = (0, 0, b"")


def _value_span(text: bytes, pos: int, structural: bool) -> tuple[tuple[int, int, bytes] | None, int]:
    """The span to redact of the value starting at ``pos``, and where to scan on.

    ``structural``: the value of a JSON key; else text after ``key=`` or ``key:``.
    The span is ``None`` for a JSON list or object (redacted on the parsed value),
    empty when there is nothing to redact.
    """
    first = text[pos]
    if structural:
        if first == 0x22:  # "key":"value"
            v = _JSON_STRING.match(text, pos)
            return (_NOTHING, pos) if v is None else ((v.start(1), v.end(1), _R), v.end())
        if first in (0x7B, 0x5B):  # a list or object
            if text.startswith(_LC_SECRET, pos):
                end = text.find(b"]}", pos)  # its "id" is a list of names
                return _NOTHING, (end + 2 if end != -1 else len(text))
            return None, pos
        if first == 0x2D or 0x30 <= first <= 0x39:  # a number
            v = _JSON_NUMBER.match(text, pos)
            return (_NOTHING, pos) if v is None else ((v.start(), v.end(), _QR), v.end())
        return _NOTHING, pos  # true, false, null: nothing secret
    if first == 0x5C:  # \"value\" in JSON text inside a string
        v = _ESCAPED_STRING.match(text, pos)
    elif first == 0x27:
        v = _SINGLE_STRING.match(text, pos)
    elif first == 0x22:
        return _NOTHING, pos  # the string holding "key:" ends here: no value
    else:
        v = _BARE.match(text, pos)
    return (_NOTHING, pos) if v is None else ((v.start(1), v.end(1), _R), v.end())


#: The field a pydantic ``SecretStr``/``SecretBytes`` keeps its value in.
_SECRET_FIELD: Final = r"^secret_(?:value|bytes)$"
_SECRET_KEYS: Final = frozenset((b"_secret_value", b"_secret_bytes"))


def _is_default(keys: str) -> bool:
    from ._config import DEFAULT_REDACT_KEYS

    return keys == DEFAULT_REDACT_KEYS


def _is_lc_secret(value: object) -> bool:
    return type(value) is dict and value.get("lc") == 1 and value.get("type") == "secret"


def _splice(text: bytes, spans: list[tuple[int, int, bytes]]) -> bytes:
    """``text`` with each span replaced; overlapping spans merge (the union is redacted)."""
    spans.sort()
    out = []
    last = 0
    for start, end, replacement in spans:
        if end <= last:
            continue
        # Overlapping the previous span: extend it (its marker is already written).
        out.append(text[last:start] if start >= last else b"")
        out.append(replacement if start >= last else b"")
        last = end
    out.append(text[last:])
    return b"".join(out)


# -- streamed tokens ----------------------------------------------------------------------

_TAIL: Final = 256
#: A credential format whose start the stream has shown but whose end it has not.
_OPEN_PREFIX: Final = re.compile(
    r"(?<![A-Za-z0-9_\-])(?:sk-|pk-lf-|lsv2_|gh[pousr]_|github_pat_|glpat-|xox[abposr]-"
    r"|AKIA|ASIA|AIza|eyJ)[A-Za-z0-9_\-.]*\Z"
)


_CREDENTIAL_RUN: Final = re.compile(r"[A-Za-z0-9_\-.]*+")


class StreamRedactor:
    """Redacts a run's streamed tokens as one text: each token is checked joined to the
    ``_TAIL`` characters streamed before it.

    What an earlier token already wrote cannot be taken back, so two rules keep a
    credential split across tokens out of the log: once the joined text ends in
    the start of a known credential format (``sk-``, ``ghp_``, ``eyJ``, ...), that
    text and the tokens continuing it are redacted until the run of credential
    characters ends; and a match of the full spec that reaches into the new token
    redacts the new token's part of it (a ``password=`` in one token and the value
    in the next). Left: a secret with no prefix (a bare AWS secret, a URL password)
    split across tokens has its earlier part written.
    """

    def __init__(self, redact: Callable[[str], str]) -> None:
        self._redact = redact
        self._tails: dict[object, tuple[str, bool]] = {}

    def token(self, run: object, token: str) -> str:
        tail, open_ = self._tails.pop(run, ("", False))
        out = token
        if open_:
            continued = _CREDENTIAL_RUN.match(token)
            cut = continued.end() if continued is not None else 0
            if cut:
                out = REDACTED + token[cut:]
            open_ = cut == len(token)
        joined = tail + token
        redacted = self._redact(joined)
        if redacted != joined:
            out = _token_part(joined, redacted, len(tail), out)
        if not open_:
            found = _OPEN_PREFIX.search(joined[-64:])
            if found is not None:
                start = len(joined) - len(joined[-64:]) + found.start()
                out = token[: start - len(tail)] + REDACTED if start >= len(tail) else REDACTED
                open_ = True
        if len(self._tails) >= 10_000:  # runs that never end: forget the oldest
            self._tails.pop(next(iter(self._tails)))
        self._tails[run] = (joined[-_TAIL:], open_)
        return out

    def clean(self, streams: dict[object, list[str]], may_match: Callable[[str], bool]) -> set[object]:
        """Runs whose ``streams`` (tokens in order) need no redaction at all.

        Checked on each run's tail joined to its tokens, so that nothing split across
        tokens is missed. A run that is still inside an open credential run, or whose
        text ends in a credential prefix, is never clean.
        """
        out = set()
        for run, tokens in streams.items():
            tail, open_ = self._tails.get(run, ("", False))
            joined = tail + "".join(tokens)
            if not open_ and not may_match(joined) and _OPEN_PREFIX.search(joined[-64:]) is None:
                out.add(run)
        return out

    def append(self, run: object, token: str) -> None:
        """Note a token that needs no redaction (``clean``): it only extends the tail."""
        tail, open_ = self._tails.pop(run, ("", False))
        if len(self._tails) >= 10_000:  # runs that never end: forget the oldest
            self._tails.pop(next(iter(self._tails)))
        self._tails[run] = ((tail + token)[-_TAIL:], open_)

    def end(self, run: object) -> None:
        self._tails.pop(run, None)


def _common_prefix(a: str, b: str) -> int:
    """Length of the common prefix of ``a`` and ``b`` (binary search on C comparisons)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _token_part(joined: str, redacted: str, start: int, current: str) -> str:
    """The new token's text after ``joined`` became ``redacted`` (its first ``start``
    characters were written before)."""
    prefix = _common_prefix(joined, redacted)
    limit = min(len(joined), len(redacted)) - prefix
    suffix = min(_common_prefix(joined[::-1], redacted[::-1]), limit)
    if len(joined) - suffix <= start:
        return current  # the change lies wholly in text written before
    if prefix >= start:
        return redacted[start:]
    return REDACTED + (redacted[len(redacted) - suffix :] if suffix else "")
