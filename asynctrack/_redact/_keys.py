"""Key rules: which keys name credentials, and where a key meets its value in JSON text.

See the package docstring for the spec. Everything here reads JSON text as orjson
writes it (no spaces; every quote inside a string escaped).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from .._config import DEFAULT_REDACT_KEYS
from ._common import CACHE_MAX, CACHED_KEY_MAX, QUOTED_REDACTED, REDACTED_BYTES

__all__ = [
    "ANY_PAIR",
    "ELEMENT",
    "MAX_PAIRS",
    "SECRET_FIELD",
    "SECRET_KEYS",
    "STEM_ELEMENT",
    "WITHHELD",
    "WORDMAP",
    "KeyRule",
    "Resumable",
    "dense_pairs",
    "is_default",
    "is_lc_secret",
    "normalize_key",
    "stem_pairs",
    "value_span",
]

#: LangChain's secret marker as ``dumpd`` writes it (a secret's env names, nothing else):
#: an object under a credential key that is anything more (another member, another
#: type) is replaced whole.
_LC_SECRET: Final = b'{"lc":1,"type":"secret","id":['
_LC_SECRET_WHOLE: Final = re.compile(
    rb'\{"lc":1,"type":"secret","id":\[(?:"[^"\\]{0,256}+"(?:,"[^"\\]{0,256}+"){0,15}+)?\]\}'
)

# -- key rules --------------------------------------------------------------------

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_WORD = re.compile(r"[^A-Za-z0-9]+")


def normalize_key(key: str) -> str:
    """``key`` as lower-case words joined by ``_`` (``clientSecret`` -> ``client_secret``):
    all of it, however long (a credential word may end a 200-character key)."""
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
            if len(self._seen) < CACHE_MAX and len(key) <= CACHED_KEY_MAX:
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
#: ``bytes.translate`` table: lower-case, and every byte that can end a key's last word
#: (anything but a letter, a digit or '_': "token", "token:", "token)") folded to '"'.
#: One pass instead of ``lower()``.
_FOLD: Final = bytes(
    (b + 32 if 0x41 <= b <= 0x5A else b if (0x30 <= b <= 0x39 or 0x61 <= b <= 0x7A or b == 0x5F) else 0x22)
    for b in range(256)
)
_FOUND: Final = (-1).__ne__  # of a find() result
#: Past this many stems in one text, one regex pass is cheaper than a Python loop per stem.
_DENSE: Final = 256
#: Blanks around a separator: spaces and tabs, a tab also as JSON text writes it (``\\t``;
#: ``\\\\t`` in JSON text inside a string), up to 64 of them (keys aligned in columns:
#: ``DB_PASSWORD        = x``); possessive: each attempt reads a bounded length (linear).
_BLANKS: Final = rb"(?:[ \t]|\\{1,2}+t){0,64}+"
#: The rest of a quoted key after a word, whatever it holds ("password ", "Password
#: (again)", "API key for prod", "password's hash"), up to the key's closing quote and
#: its ':': a JSON key (its escapes included: "password\\t"), a key of JSON text inside
#: a string (closed by '\\"'), a single-quoted key (holding no "'"). At most 256 bytes
#: (each attempt reads a bounded length: linear), not past a '"' (a key holding one is
#: judged up to it). A run without an escape or a "'" first, read by a character class:
#: most stems are in values, whose closing quote ends the attempt there. Past a "'",
#: only a '"' closes the key (single-quoted text, a Python repr, is never read across
#: its quotes: "'key-1', 'Cookie': ...").
_CLOSE: Final = rb"(?=\\?\"" + _BLANKS + rb":|'" + _BLANKS + rb":)"
_KEY_REST: Final = (
    rb"(?:[^\"'\\\n]{0,128}+(?:" + _CLOSE + rb"|(?=[\\'])"
    rb"(?:[^\"\\\n]|\\[^\"\n]){1,128}+(?=\\?\"" + _BLANKS + rb":)))?"
)
#: A key's separator: ``:`` or ``=``, and the two- and three-character operators that
#: assign or compare (``:=``, ``=>``, ``==``, ``===``, the logical assignments ``||=``,
#: ``&&=``, ``??=``): the value follows them all. ``=>`` after a key not quoted (group 2,
#: the key's closing quote) only before a quoted value (Perl's and Ruby's ``password =>
#: "x"``): else it is a JavaScript arrow function's (``token => token.trim()``), code.
_SEPARATOR: Final = (
    _BLANKS + rb"(?::=|=>(?(2)|(?=" + _BLANKS + rb"\\?[\"']))|={1,3}+(?!>)|:|\|\|=|&&=|\?\?=)" + _BLANKS
)
#: From a stem: the rest of the word (of the quoted key), its closing quote if quoted,
#: then a separator (``_SEPARATOR``). The word up to 40 characters from the stem: a longer
#: rest names something else (``PASSWORD_MIN_LENGTH_FOR_ENTERPRISE_TENANT_ACCOUNTS = 12``),
#: what comes before the stem is read however long (``_key_spans``). At most 256 attempts
#: per text (see ``stem_pairs``).
_PAIR_AT: Final = re.compile(
    rb"([a-z0-9_.\-]{0,40}+" + _KEY_REST + rb")(\\?[\"'])?" + _SEPARATOR, re.IGNORECASE
)
#: The same as one regex, for texts dense with stems (linear: each attempt starts at
#: a stem and reads at most 432 bytes).
STEM_PAIR: Final = re.compile(
    rb"((?:pass|pwd|secret|credential|cookie|auth|key|token(?![a-z0-9_]))"
    rb"[a-z0-9_.\-]{0,40}+" + _KEY_REST + rb")(\\?[\"'])?" + _SEPARATOR,
    re.IGNORECASE,
)


def stem_pairs(text: bytes) -> list[re.Match[bytes]] | None:
    """Every stem of ``text`` that a separator follows, as ``_PAIR_AT`` matches;
    ``None`` when the text is dense with stems (see ``Redactor._dense``)."""
    folded = text.translate(_FOLD)
    if not any(map(_FOUND, map(folded.find, _STEMS))):  # C calls only, for a text without one
        return []
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
#: many (Python per separator), else with ``STEM_PAIR`` (words are then short).
_MAX_SEPARATORS: Final = 4096
_BEFORE_KEY: Final = frozenset(b" \t")
_BLANKS_REVERSED: Final = re.compile(rb"(?:[ \t]|t\\{1,2}+){0,64}+")  # ``_BLANKS`` read backwards
_LOGICAL: Final = frozenset(b"|&?")  # of a logical assignment's operator
_QUOTES: Final = frozenset(b"\"'")


class Resumable:
    """The matches of ``pattern`` in ``text``; each search starts at ``resume`` at least
    (the caller moves it past a value it redacted, so no match inside is looked at)."""

    def __init__(self, pattern: re.Pattern[bytes], text: bytes) -> None:
        self._pattern = pattern
        self._text = text
        self._position = 0
        self.resume = 0

    def __iter__(self) -> Resumable:
        return self

    def __next__(self) -> re.Match[bytes]:
        m = self._pattern.search(self._text, max(self._position, self.resume))
        if m is None:
            raise StopIteration
        self._position = max(m.end(), m.start() + 1)
        return m


def dense_pairs(text: bytes) -> Iterable[re.Match[bytes]]:
    """``_PAIR_AT`` matches (from the key's first character) in a text dense with stems."""
    positions: list[int] = []
    for separator in (b"=", b":"):
        i = text.find(separator)
        while i != -1:
            positions.append(i)
            if len(positions) > _MAX_SEPARATORS:
                return Resumable(STEM_PAIR, text)  # linear, and no Python per stem
            i = text.find(separator, i + 1)
    words = text.translate(WORDMAP)
    folded = text.translate(_FOLD)
    out = []
    for p in sorted(positions):
        q = p
        if q > 1 and text[q - 1] == text[q - 2] and text[q - 1] in _LOGICAL:
            q -= 2  # '||=', '&&=', '??='
        if q > 0 and (text[q - 1] in _BEFORE_KEY or text[q - 2 : q] == b"\\t"):
            blanks = _BLANKS_REVERSED.match(text[max(0, q - 192) : q][::-1])
            q -= blanks.end() if blanks is not None else 0
        quote = -1
        if q > 0 and text[q - 1] in _QUOTES:
            q -= 1
            quote = text[q]
            if q > 0 and text[q - 1] == 0x5C:
                q -= 1
        # The key's start, however far back (linear: a word is read back to the separator
        # before it at most, a quoted key to the quote of its kind before it).
        k0 = words.rfind(b" ", 0, q) + 1
        if quote != -1 and k0 > 0 and text[k0 - 1] != quote:
            # A quoted key holding more than a word ("password ", "API key for prod"):
            # from its opening quote, as the stems' scan reads it.
            k0 = text.rfind(bytes((quote,)), 0, q) + 1 or k0
        # A stem in the key's last 40 characters (a quoted key's anywhere), as ``_PAIR_AT`` reads.
        last = k0 if quote != -1 else max(k0, q - 40)
        if q - k0 < 1 or not any(stem in folded[last : q + 1] for stem in _STEMS):
            continue
        # Matched from at most 40 characters before the key's end (``_PAIR_AT`` reads a
        # bounded length); ``_key_spans`` reads the key back to its start.
        m = _PAIR_AT.match(text, max(k0, q - 40))
        if m is not None:
            out.append(m)
    return out


#: Key/value pairs judged per text at most; past them the rest of the text is
#: withheld (replaced by a marker). Only a hostile or junk text has so many: this
#: bounds the Python work per text (each pair costs ~1-2 us) with no leak.
MAX_PAIRS: Final = 1024
WITHHELD: Final = b"[REDACTED: the rest of this text is withheld, too many credential-like pairs]"


#: For a custom ``redact_keys``: every word followed by a separator is a candidate, and
#: every quoted key that starts with a word (the rest read only there: after a quote).
#: A word however long (linear: an attempt starts only at a word's start).
ANY_PAIR: Final = re.compile(
    rb"(?<![a-z0-9_.\-])((?:(?<=[\"'])[a-z0-9_.\-]++" + _KEY_REST + rb"|[a-z0-9_.\-]++))"
    rb"(\\?[\"'])?" + _SEPARATOR,
    re.IGNORECASE,
)
#: An XML-style element (``<db_password>x</db_password>``, ``<api_key>x</api_key>``: how
#: prompts tag their parts) in JSON text: its tag name (group 1), judged as a key, and its
#: text (group 2, escapes included), up to the next '<' or the JSON string's end. Each
#: attempt starts at a '<', its text stops at the next one: linear. Not right after a word
#: character (a JSON ``\\n`` or ``\\t`` escape's letter aside): ``Promise<AccessToken>``
#: is code. ``ELEMENT``: any tag (a custom ``redact_keys``); ``STEM_ELEMENT``: a tag
#: holding a stem (the default rule).
_ELEMENT_OPEN: Final = rb"(?:(?<![A-Za-z0-9_])|(?<=\\[nt]))<"
_ELEMENT_REST: Final = (
    rb"[A-Za-z0-9_.\-:]{0,127}+)(?:[ \t](?:[^<>\"\\]|\\.){0,256}+)?>((?:[^<\"\\]|\\.)++)</\1[ \t]{0,4}+>"
)
ELEMENT: Final = re.compile(_ELEMENT_OPEN + rb"([A-Za-z_]" + _ELEMENT_REST)
STEM_ELEMENT: Final = re.compile(
    _ELEMENT_OPEN
    + rb"(?=[A-Za-z0-9_.\-:]{0,127}?(?i:pass|pwd|secret|credential|cookie|auth|key|token))([A-Za-z_]"
    + _ELEMENT_REST
)
#: Word characters of keys -> ``a``, all else -> space (for ``rfind`` of a word's start).
WORDMAP: Final = bytes(
    0x61 if (0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A or b in b"_.-") else 0x20
    for b in range(256)
)
_JSON_STRING: Final = re.compile(rb'"((?:[^"\\]|\\.)*+)"')
_JSON_NUMBER: Final = re.compile(rb"-?[0-9][0-9.eE+\-]*+")
_ESCAPED_STRING: Final = re.compile(rb'\\"((?:[^"\\]|\\[^"])*+)\\"')
_SINGLE_STRING: Final = re.compile(rb"'([^'\"\\]*+)'")
_BARE: Final = re.compile(
    rb"(?:(?:bearer|basic|token|digest)(?:[ \t]|\\{1,2}+t)++)?([^\s\"'\\,;&)}\]<>]++)", re.IGNORECASE
)


_NOTHING: Final = (0, 0, b"")


def value_span(text: bytes, pos: int, structural: bool) -> tuple[tuple[int, int, bytes] | None, int]:
    """The span to redact of the value starting at ``pos``, and where to scan on.

    ``structural``: the value of a JSON key; else text after ``key=`` or ``key:``.
    The span is ``None`` for a JSON list or object (redacted on the parsed value),
    empty when there is nothing to redact.
    """
    first = text[pos]
    if structural:
        if first == 0x22:  # "key":"value"
            v = _JSON_STRING.match(text, pos)
            return (_NOTHING, pos) if v is None else ((v.start(1), v.end(1), REDACTED_BYTES), v.end())
        if first in (0x7B, 0x5B):  # a list or object
            if text.startswith(_LC_SECRET, pos):
                marker = _LC_SECRET_WHOLE.match(text, pos)
                if marker is not None:
                    return _NOTHING, marker.end()
            return None, pos
        if first == 0x2D or 0x30 <= first <= 0x39:  # a number
            v = _JSON_NUMBER.match(text, pos)
            return (_NOTHING, pos) if v is None else ((v.start(), v.end(), QUOTED_REDACTED), v.end())
        return _NOTHING, pos  # true, false, null: nothing secret
    if first == 0x5C:  # \"value\" in JSON text inside a string
        v = _ESCAPED_STRING.match(text, pos)
    elif first == 0x27:
        v = _SINGLE_STRING.match(text, pos)
    elif first == 0x22:
        return _NOTHING, pos  # the string holding "key:" ends here: no value
    else:
        v = _BARE.match(text, pos)
    return (_NOTHING, pos) if v is None else ((v.start(1), v.end(1), REDACTED_BYTES), v.end())


#: The field a pydantic ``SecretStr``/``SecretBytes`` keeps its value in.
SECRET_FIELD: Final = r"^secret_(?:value|bytes)$"
SECRET_KEYS: Final = frozenset((b"_secret_value", b"_secret_bytes"))


def is_default(keys: str) -> bool:
    return keys == DEFAULT_REDACT_KEYS


def is_lc_secret(value: object) -> bool:
    """Whether ``value`` is LangChain's secret marker and nothing more."""
    return (
        type(value) is dict
        and value.keys() == {"lc", "type", "id"}
        and value["lc"] == 1
        and value["type"] == "secret"
        and type(value["id"]) is list
        and all(type(name) is str for name in value["id"])
    )
