"""Turn an event dict into one JSON line, whatever it holds. Runs in the worker.

The walk makes every value something orjson can write, in one pass:

- keys that look like credentials, and pydantic ``SecretStr`` values, are redacted;
- strings and bytes longer than ``max_field_bytes`` are cut, with a marker;
- objects orjson cannot write (LangChain messages and other pydantic models,
  dataclasses, sets, Decimal, numpy scalars and arrays, exceptions, arbitrary
  objects) are converted, or replaced by a marked placeholder
  ``{"$asynctrack": <reason>, "type": <python type>, ...}``;
- NaN and infinities become ``null`` (JSON has no such numbers; orjson, pandas and
  JavaScript do the same), integers beyond 64 bits become strings;
- nesting past ``max_depth`` (and so any cycle) becomes a placeholder.

Lone surrogates make orjson fail; such a line is encoded again with every string
made valid UTF-8 (bad code points become U+FFFD), and the event is marked.
Finally a bytes regex pass redacts credential-like text anywhere in the line.

That walk is the slow path. Most events never take it: the handler captured
their arguments as JSON bytes already (``_capture``), and ``assemble()`` only
splices those bytes behind the envelope. The walk runs when the captured bytes
may hold a credential-like key (a cheap substring pre-check), may hold a field
over the size limit (the bytes are longer than the limit), were not encodable at
capture time, or belong to an error event.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import enum
import math
import re
import uuid
from collections.abc import Mapping
from typing import Any, Final, overload

import orjson

from ._config import DEFAULT_REDACT_KEYS, DEFAULT_REDACT_PATTERNS, TrackerConfig
from ._langchain._capture import Captured, safe_repr, safe_str, type_name
from ._langchain._snapshot import DEPTH_EXCEEDED, FieldsSnapshot

__all__ = ["REDACTED", "Encoder", "placeholder"]

REDACTED: Final = "[REDACTED]"
_REDACTED_BYTES: Final = REDACTED.encode()
_MARK: Final = "$asynctrack"
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
_MAX_NODES: Final = 200_000  # per event; beyond it values become placeholders
#: Substrings (of the lower-cased captured bytes) that every key matching
#: ``DEFAULT_REDACT_KEYS`` contains: without one of them no key can match. Eight
#: substring searches beat finding the keys for bodies up to ``_SCAN_LIMIT``
#: bytes (measured: 4 us against 7.5 us for 600 B); longer bodies, whose length
#: is mostly values (prompts), have their keys found instead.
_DEFAULT_KEY_HINTS: Final = (
    b"key",  # api_key, apikey, private_key, access_key(_id), secret_key, x-api-key
    b"secret",
    b"passw",
    b"pwd",
    b"auth",  # auth, authorization, proxy-authorization
    b"credential",
    b"cookie",
    b'token"',  # keys ending in "token"; not "max_tokens"
)
_SCAN_LIMIT: Final = 1024
#: ``key=value`` / ``key: value`` text inside strings (a model's ``repr``, a
#: header dump, a URL's query) whose key looks like a credential. Found from each
#: separator outwards (``_redact_pairs``): the key must end right before it, in a
#: 48-character window, and the value follows it. A regex scanning the whole text
#: for the key instead backtracks over every run of letters (0.5 s for a 256 KiB
#: field, measured).
_KEY_BEFORE = (  # the words of DEFAULT_REDACT_KEYS
    r"(?i)(?:api[_-]?key|apikey|secret|password|passwd|pwd|authorization|auth|credentials?"
    r"|private[_-]?key|access[_-]?key|cookie|token)\\?['\"]?\s*\Z"
)
_VALUE_AFTER = r"(?i)\s*\\?['\"]?(?:(?:bearer|basic|token)\s+)?([^'\"\\\s,)}&]{4,})"
_PAIR_TEXT: Final = (re.compile(_KEY_BEFORE), re.compile(_VALUE_AFTER))
_PAIR_BYTES: Final = (re.compile(_KEY_BEFORE.encode()), re.compile(_VALUE_AFTER.encode()))
_PAIR_WORDS: Final = ("key", "secret", "passw", "pwd", "auth", "credential", "cookie", "token")
_PAIR_WORDS_BYTES: Final = tuple(word.encode() for word in _PAIR_WORDS)


@overload
def _redact_pairs(text: str, separators: str) -> str: ...
@overload
def _redact_pairs(text: bytes, separators: bytes) -> bytes: ...
def _redact_pairs(text: Any, separators: Any) -> Any:
    """``text`` with the value of every credential-like ``key=value`` redacted."""
    before, after = _PAIR_BYTES if isinstance(text, bytes) else _PAIR_TEXT
    words = _PAIR_WORDS_BYTES if isinstance(text, bytes) else _PAIR_WORDS
    redacted = _REDACTED_BYTES if isinstance(text, bytes) else REDACTED
    parts = []
    last = 0
    for separator in separators:
        sep = bytes([separator]) if isinstance(text, bytes) else separator
        position = text.find(sep)
        while position != -1:
            window = text[max(0, position - 48) : position].lower()
            # Substring checks first: the regex tries every start in the window.
            if any(word in window for word in words) and before.search(text, max(0, position - 48), position):
                value = after.match(text, position + 1)
                if value is not None and value.start(1) >= last:
                    parts.append((value.start(1), value.end(1)))
            position = text.find(sep, position + 1)
    if not parts:
        return text
    out = []
    for start, end in sorted(parts):
        if start < last:
            continue
        out.append(text[last:start])
        out.append(redacted)
        last = end
    out.append(text[last:])
    return text[:0].join(out)


#: Every match of a default value pattern holds a run of 20+ characters of
#: ``[A-Za-z0-9_]`` (or "-lf-" or "AIza", see ``DEFAULT_REDACT_PATTERNS``). ``_RUNS``
#: maps those characters to ``a`` and all else to a space, so one ``translate`` and
#: three substring searches tell whether any default pattern can match at all; ``-`` is
#: left out so that UUIDs (runs of at most 12) do not make every body a hit. Long
#: identifiers make a false hit: the patterns then run, which is only slower.
#: (Python's ``re`` scans ~10x slower than this pre-check.)
_RUNS: Final = bytes(
    0x61 if (0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A or b == 0x5F) else 0x20
    for b in range(256)
)
_RUN20: Final = b"a" * 20
_REGEX_META: Final = frozenset("\\.[](){}*+?|^$")


def _literal_prefix(pattern: str) -> bytes | None:
    """The literal text every match of ``pattern`` starts with (``None`` if unsure)."""
    prefix = []
    for char in pattern:
        if char in _REGEX_META:
            break
        prefix.append(char)
    if len(prefix) < 2 or (len(prefix) < len(pattern) and pattern[len(prefix)] in "*?{"):
        return None  # too short to help, or the last literal is optional
    return "".join(prefix).encode()


def placeholder(reason: str, value: object = None, **extra: Any) -> dict[str, Any]:
    """A marked stand-in for a value that could not be written as it was."""
    out: dict[str, Any] = {_MARK: reason}
    if value is not None:
        out["type"] = type_name(value)
    out.update(extra)
    return out


def _valid_unicode(s: str) -> str:
    """``s`` with each lone surrogate replaced by one U+FFFD (via UTF-16; UTF-8 gives three)."""
    return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class Encoder:
    """Encodes event dicts to JSON lines under one configuration (worker-only)."""

    def __init__(self, config: TrackerConfig) -> None:
        self._max_field = config.max_field_bytes
        self._max_depth = config.max_depth
        self._key_re = re.compile(config.redact_keys) if config.redact_keys else None
        self._key_bytes: dict[bytes, bool] = {}
        self._chunk_keys_clean = False  # set by prepare() for the chunk at hand
        self._chunk_pairs = True
        self._chunk_patterns = True
        self._key_hints: tuple[bytes, ...] | None = (
            _DEFAULT_KEY_HINTS if config.redact_keys == DEFAULT_REDACT_KEYS else None
        )
        self._redacted_keys: dict[str, bool] = {}
        self._value_res = [(_literal_prefix(p), re.compile(p.encode())) for p in config.redact_patterns]
        # Custom patterns are always run; the defaults only where they can match.
        self._value_hint = config.redact_patterns == DEFAULT_REDACT_PATTERNS
        self._nodes = 0
        self._fix_strings = False

    # -- public ------------------------------------------------------------------

    def encode(self, event: Mapping[str, Any], own_keys: tuple[str, ...] = ()) -> bytes:
        """Return ``event`` as one JSON line ending in ``\\n``. Never raises.

        ``own_keys``: fields of ``event["data"]`` exempt from key redaction (see
        ``assemble``); their values are still walked.
        """
        try:
            line = self._dumps(event, fix_strings=False, own_keys=own_keys)
        except orjson.JSONEncodeError:
            # Almost always a lone surrogate; retry with strings made valid.
            try:
                line = self._dumps(event, fix_strings=True, own_keys=own_keys)
            except Exception as exc:  # pragma: no cover - defensive: nothing else known fails
                line = orjson.dumps(
                    {**_envelope_only(event), "data": placeholder("unencodable", exc, error=str(exc))}
                )
        except Exception as exc:  # a hostile __dict__, __iter__ or __eq__ in user data
            line = orjson.dumps(
                {
                    **_envelope_only(event),
                    "data": placeholder("unencodable", exc, error=safe_repr(exc)),
                }
            )
        return self._redact_values(line) + b"\n"

    def prepare(self, bodies: list[bytes]) -> None:
        """Run the pre-checks once over a chunk of captured bodies.

        Eight substring searches and a ``translate`` over the joined chunk cost
        about what they cost over one body, plus one Python call per chunk instead
        of per event. Where the chunk is clean, ``assemble`` skips the per-body
        checks; where it is not, each body is checked again on its own.
        """
        joined = b"\x1e".join(bodies)
        hints = self._key_hints
        if self._key_re is None:
            self._chunk_keys_clean = True
        elif hints is None:
            self._chunk_keys_clean = False
        elif len(joined) > _SCAN_LIMIT * len(bodies):
            # Long bodies are mostly values (prompts): find the keys instead.
            self._chunk_keys_clean = not self._has_secret_key(joined, ())
        else:
            lowered = joined.lower()  # once, not once per hint
            self._chunk_keys_clean = not any(hint in lowered for hint in hints)
        self._chunk_pairs = self._pairs_may_match(joined)
        self._chunk_patterns = self._patterns_may_match(joined)

    def reset_chunk(self) -> None:
        """Forget the last chunk pre-check: every body is checked on its own."""
        self._chunk_keys_clean = False
        self._chunk_pairs = True
        self._chunk_patterns = True

    def assemble(
        self,
        envelope: dict[str, Any],
        body: bytes | Captured,
        error: Any = None,
        own: tuple[str, Any] | None = None,
    ) -> bytes:
        """One JSON line from an envelope of plain fields and the captured body.

        ``body`` is what the handler captured: ``{"data": {...}, "tags": ...,
        "metadata": ...}`` as JSON bytes, or a ``Captured`` copy. ``error`` is
        added to ``data`` as ``"error"`` when given; ``own`` (a field of ``data``
        the library itself sets, such as a streamed ``token``) is added first to
        ``data`` and is never taken for a credential by its name. Never raises.
        """
        if (
            type(body) is bytes
            and error is None
            and len(body) <= self._max_field
            and (self._chunk_keys_clean or not self._needs_walk(body))
        ):
            try:
                head = orjson.dumps(envelope)
                if own is not None:
                    # The body starts with '{"data":{' (the handler puts it first).
                    field = b'{"data":{"' + own[0].encode() + b'":' + orjson.dumps(own[1])
                    body = field + (b"," if body[9:10] != b"}" else b"") + body[9:]
            except (orjson.JSONEncodeError, TypeError):
                pass  # a lone surrogate in a name or token: take the careful path
            else:
                # Only the captured body can hold user text; the envelope is ours
                # (and its float timings would make the run pre-check hit).
                if self._chunk_pairs or self._chunk_patterns:
                    body = self._redact_values(body, self._chunk_pairs, self._chunk_patterns)
                return head[:-1] + b"," + body[1:] + b"\n"
        try:
            parts = orjson.loads(body) if type(body) is bytes else body.value  # type: ignore[union-attr]
            event: dict[str, Any] = {**envelope, **parts} if isinstance(parts, dict) else dict(envelope)
            data = event.get("data")
            data = data if isinstance(data, dict) else {}
            if own is not None:
                data = {own[0]: own[1], **data}
            if error is not None:
                data = {"error": error, **data}
            event["data"] = data
        except Exception as exc:  # a hostile mapping in a Captured copy
            event = {**envelope, "data": placeholder("unencodable", exc, error=safe_repr(exc))}
        return self.encode(event, (own[0],) if own is not None else ())

    def _needs_walk(self, body: bytes, own_keys: tuple[str, ...] = ()) -> bool:
        """Whether ``body`` may hold an over-long field or a credential-like key."""
        if len(body) > self._max_field:
            return True  # some field may be over the limit
        if self._key_re is None:
            return False
        if self._key_hints is not None and len(body) <= _SCAN_LIMIT:
            lowered = body.lower()
            if not own_keys:
                return any(hint in lowered for hint in self._key_hints)
            own = [f'"{key}":'.encode() for key in own_keys]
            # A hint that only our own field names account for is no hint.
            return any(lowered.count(h) > sum(k.count(h) for k in own) for h in self._key_hints)
        return self._has_secret_key(body, own_keys)

    def _has_secret_key(self, body: bytes, own_keys: tuple[str, ...]) -> bool:
        """Find keys without parsing, judging each distinct key once (cached).

        Every JSON key ends with ``":``, so the text before each ``":`` back to its
        opening quote is a key (or, for a ``":`` inside a string, some text: a
        false hit costs only the slow path). The cost grows with the number of
        keys, not with the length of the values, so long bodies use this.
        """
        pieces = body.split(b'":')
        cache = self._key_bytes
        # Our own fields come first in "data", the body's last key: their piece
        # is '{"<key>' right after a piece ending in ',"data'. Exempt each once.
        own = {b'{"' + key.encode(): False for key in own_keys}
        for index in range(len(pieces) - 1):
            piece = pieces[index]
            key = piece[piece.rfind(b'"') + 1 :]
            hit = cache.get(key)
            if hit is None:
                hit = self._is_secret_key(key.decode("utf-8", "replace"))
                if len(cache) < 10_000:  # bounded: keys can be data
                    cache[key] = hit
            if hit:
                if own.get(piece) is False and pieces[index - 1].endswith(b',"data'):
                    own[piece] = True
                    continue
                return True
        return False

    def redact_text(self, text: str) -> str:
        """``text`` with credential-looking values redacted (value patterns, key=value)."""
        redacted = self._redact_values(text.encode("utf-8", "surrogatepass"))
        out = redacted.decode("utf-8", "surrogatepass")
        return _redact_pairs(out, "=:") if self._key_re is not None else out

    def _pairs_may_match(self, line: bytes) -> bool:
        """Whether credential-like ``key=value`` / ``Authorization: ...`` text may be in ``line``."""
        return self._key_re is not None and (
            b"=" in line or b"earer " in line or b"uthorization" in line or b"ookie" in line
        )

    def _patterns_may_match(self, line: bytes) -> bool:
        """Whether a value pattern may match in ``line`` (always, for custom patterns)."""
        if not self._value_res:
            return False
        return not self._value_hint or (_RUN20 in line.translate(_RUNS) or b"-lf-" in line or b"AIza" in line)

    def _redact_values(self, line: bytes, pairs: bool = True, patterns: bool = True) -> bytes:
        """``line`` with credential-looking values redacted.

        ``pairs`` / ``patterns`` False: the caller knows (from a chunk pre-check)
        that no key=value text, or no value pattern, can match.
        """
        if pairs and self._key_re is not None:
            if b"=" in line:
                line = _redact_pairs(line, b"=")
            # ":" ends every JSON key (checked apart), so "key: value" text is only
            # looked for where the commonest such credential may be.
            if b"earer " in line or b"uthorization" in line or b"ookie" in line:
                line = _redact_pairs(line, b":")
        if not patterns or not self._patterns_may_match(line):
            return line
        for prefix, regex in self._value_res:
            if prefix is None or prefix in line:
                line = regex.sub(_REDACTED_BYTES, line)
        return line

    def jsonable(self, value: Any) -> Any:
        """Return ``value`` converted as described in the module docstring."""
        self._nodes = _MAX_NODES
        return self._walk(value, 0)

    # -- internals ---------------------------------------------------------------

    def _dumps(self, event: Mapping[str, Any], *, fix_strings: bool, own_keys: tuple[str, ...]) -> bytes:
        self._fix_strings = fix_strings
        try:
            own: dict[str, Any] = {}
            raw_data = event.get("data")
            if own_keys and isinstance(raw_data, dict):
                own = {k: raw_data[k] for k in own_keys if k in raw_data}
                event = {**event, "data": {k: v for k, v in raw_data.items() if k not in own}}
            data = self.jsonable(event)
            for key, value in own.items():
                data["data"][key] = self._walk(value, 2)
            if fix_strings:
                data["$asynctrack"] = "invalid_unicode_replaced"
            return orjson.dumps(data)
        finally:
            self._fix_strings = False

    def _is_secret_key(self, key: str) -> bool:
        hit = self._redacted_keys.get(key)
        if hit is None:
            assert self._key_re is not None
            hit = self._key_re.search(key.lower().replace("-", "_")) is not None
            if len(self._redacted_keys) < 10_000:  # bounded: keys can be data
                self._redacted_keys[key] = hit
        return hit

    def _str(self, s: str) -> str:
        if self._fix_strings:
            s = _valid_unicode(s)
        if self._key_re is not None and ("=" in s or ":" in s):
            s = _redact_pairs(s, "=:")
        limit = self._max_field
        if len(s) * 4 <= limit:
            return s
        raw = s.encode("utf-8", "surrogatepass")
        if len(raw) <= limit:
            return s
        head = raw[:limit].decode("utf-8", "ignore")
        return f"{head}...[{_MARK}: truncated, {len(s)} characters in all]"

    def _walk(self, v: Any, depth: int) -> Any:
        cls = type(v)
        if cls is str:
            return self._str(v)
        if cls is bool or v is None:
            return v
        if cls is int:
            return v if _INT_MIN <= v <= _INT_MAX else str(v)
        if cls is float:
            return v if math.isfinite(v) else None
        if depth >= self._max_depth or v is DEPTH_EXCEEDED:
            return placeholder("max_depth", max_depth=self._max_depth)
        self._nodes -= 1
        if self._nodes < 0:
            return placeholder("too_many_values", v)
        depth += 1
        if cls is dict or isinstance(v, dict):
            out: dict[str, Any] = {}
            key_re = self._key_re
            for k, x in v.items():
                key = k if type(k) is str else self._key(k)
                if self._fix_strings:
                    key = _valid_unicode(key)
                if key_re is not None and self._is_secret_key(key):
                    out[key] = REDACTED
                else:
                    out[key] = self._walk(x, depth)
            return out
        if cls is list or cls is tuple:
            return [self._walk(x, depth) for x in v]
        if cls is FieldsSnapshot:
            return self._walk(v.fields, depth - 1)
        return self._other(v, depth)

    def _key(self, k: object) -> str:
        key = self._walk(k, self._max_depth - 1)
        return key if isinstance(key, str) else orjson.dumps(key).decode()

    def _other(self, v: Any, depth: int) -> Any:
        if isinstance(v, str):  # str subclasses (StrEnum values too)
            return self._walk(str(v), depth)
        if isinstance(v, enum.Enum):
            return self._walk(v.value, depth)
        if isinstance(v, int):
            return self._walk(int(v), depth)
        if isinstance(v, float):
            return self._walk(float(v), depth)
        if isinstance(v, bytes | bytearray | memoryview):
            raw = bytes(v)
            if len(raw) > self._max_field:
                return placeholder(
                    "bytes",
                    v,
                    size=len(raw),
                    truncated=True,
                    base64=base64.b64encode(raw[: self._max_field]).decode(),
                )
            return placeholder("bytes", v, size=len(raw), base64=base64.b64encode(raw).decode())
        if isinstance(v, list | tuple):
            return [self._walk(x, depth) for x in v]
        if isinstance(v, set | frozenset):
            items = [self._walk(x, depth) for x in v]
            try:
                items.sort()
            except TypeError:
                pass
            return items
        if isinstance(v, uuid.UUID | datetime.datetime | datetime.date | datetime.time):
            return v  # orjson writes these natively (RFC 3339, canonical UUID)
        if isinstance(v, datetime.timedelta):
            return v.total_seconds()
        if isinstance(v, decimal.Decimal):
            return str(v)
        if isinstance(v, complex):
            return {"real": self._walk(v.real, depth), "imag": self._walk(v.imag, depth)}
        if isinstance(v, BaseException):
            return {"type": type_name(v), "message": self._str(safe_str(v))}
        names = {c.__name__ for c in type(v).__mro__}
        if "SecretStr" in names or "SecretBytes" in names or "Secret" in names:
            return REDACTED
        if type(v).__module__ == "numpy" or type(v).__module__.startswith("numpy."):
            return self._numpy(v, depth)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return self._walk({f.name: getattr(v, f.name, None) for f in dataclasses.fields(v)}, depth - 1)
        fields = getattr(type(v), "__pydantic_fields__", None)
        if fields is not None:
            try:
                return self._walk(dict(vars(v)), depth - 1)
            except TypeError:
                return self._walk({name: getattr(v, name, None) for name in fields}, depth - 1)
        if isinstance(v, Mapping):
            return self._walk(dict(v.items()), depth - 1)
        return placeholder("unencodable", v, repr=safe_repr(v))

    def _numpy(self, v: Any, depth: int) -> Any:
        size = getattr(v, "size", 1)
        if getattr(v, "ndim", 0) == 0 and hasattr(v, "item"):
            return self._walk(v.item(), depth)
        if size <= 10_000 and hasattr(v, "tolist"):
            return self._walk(v.tolist(), depth)
        return placeholder("array", v, shape=list(getattr(v, "shape", ())), size=int(size))


_ENVELOPE: Final = ("seq", "ts", "kind", "experiment", "run", "tracker", "run_id", "parent_run_id", "name")


def _envelope_only(event: Mapping[str, Any]) -> dict[str, Any]:
    """The plain fields of an event, for the last-resort line."""
    out: dict[str, Any] = {}
    for key in _ENVELOPE:
        value = event.get(key)
        out[key] = value if isinstance(value, str | int | float | type(None)) else str(value)
    return out
