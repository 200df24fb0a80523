"""OTLP trace messages in the protobuf wire format, written by hand (no dependency).

Only what an export request needs, from ``opentelemetry/proto`` (trace/v1, common/v1,
resource/v1, collector/trace/v1)::

    ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
    ResourceSpans  { Resource resource = 1; repeated ScopeSpans scope_spans = 2; }
    Resource       { repeated KeyValue attributes = 1; }
    ScopeSpans     { InstrumentationScope scope = 1; repeated Span spans = 2; string schema_url = 3; }
    Span           { bytes trace_id = 1; bytes span_id = 2; bytes parent_span_id = 4; string name = 5;
                     SpanKind kind = 6; fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8;
                     repeated KeyValue attributes = 9; repeated Event events = 11; repeated Link links = 13;
                     Status status = 15; }
    Span.Event     { fixed64 time_unix_nano = 1; string name = 2; repeated KeyValue attributes = 3; }
    Span.Link      { bytes trace_id = 1; bytes span_id = 2; repeated KeyValue attributes = 4; }
    Status         { string message = 2; StatusCode code = 3; }
    KeyValue       { string key = 1; AnyValue value = 2; }
    AnyValue       { oneof { string string_value = 1; bool bool_value = 2; int64 int_value = 3;
                             double double_value = 4; ArrayValue array_value = 5; } }
    ArrayValue     { repeated AnyValue values = 1; }

Each function returns a complete field (tag, length, payload), so a message is the
concatenation of its fields. Writing the bytes in Python costs about half of building
the same message with the ``opentelemetry-proto`` classes (35.6 against 78.7 µs a
ChatOpenAI span, ``benchmarks/export.py`` on 2026-12-07); the tests decode every request
with those classes. The span assembler writes a span's head and its last join itself
(``span_head`` and ``span_of`` without their frames, on its hot path).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable, Sequence
from typing import Final

__all__ = [
    "KIND_CLIENT",
    "KIND_INTERNAL",
    "STATUS_ERROR",
    "STATUS_OK",
    "STATUS_UNSET",
    "TIMES",
    "AttributeValue",
    "attribute",
    "common_span_attribute",
    "event",
    "link",
    "name_and_kind",
    "repeated",
    "request",
    "scope",
    "span_attribute",
    "span_head",
    "span_of",
    "text",
    "wrap",
]

KIND_INTERNAL: Final = 1
KIND_CLIENT: Final = 3
STATUS_UNSET: Final = 0
STATUS_OK: Final = 1
STATUS_ERROR: Final = 2

AttributeValue = str | bool | int | float | Sequence[str]

_VARINTS: Final = tuple(
    bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7]) for n in range(1 << 14)
)
_FIXED64: Final = struct.Struct("<Q").pack
_DOUBLE: Final = struct.Struct("<d").pack
_INT64: Final = (1 << 64) - 1
# A KeyValue's value field of a string shorter than _SHORT bytes, but the string's bytes:
# the AnyValue's tag and length, inside the value field's tag and length.
_SHORT: Final = 126
_SHORT_STRING: Final = tuple(b"\x12" + bytes([n + 2, 0x0A, n]) for n in range(_SHORT))
# A Span's attributes field (9) of a KeyValue shorter than 128 bytes, but the KeyValue.
_SPAN_ATTRIBUTE: Final = tuple(b"\x4a" + bytes([n]) for n in range(128))
_KEYS: dict[str, bytes] = {}  # attribute key -> its KeyValue.key field (keys are few)
_KEYS_MAX: Final = 4096


def varint(n: int) -> bytes:
    """``n`` (0 <= n < 2**64) as a base-128 varint."""
    if n < 16384:
        return _VARINTS[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def text(s: str) -> bytes:
    return s.encode("utf-8", "replace")  # a lone surrogate becomes '?': proto strings are UTF-8


def _any(value: AttributeValue) -> bytes:
    """An ``AnyValue`` message's fields."""
    if isinstance(value, str):
        data = value.encode("utf-8", "replace")
        size = len(data)
        return b"\x0a" + (_VARINTS[size] if size < 16384 else varint(size)) + data
    if value is True:
        return b"\x10\x01"
    if value is False:
        return b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + varint(value & _INT64)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    items = b"".join(wrap(b"\x0a", _any(item)) for item in value)
    return wrap(b"\x2a", items)


def wrap(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


def _key(key: str) -> bytes:
    field = _KEYS.get(key)
    if field is None:
        field = wrap(b"\x0a", text(key))
        if len(_KEYS) < _KEYS_MAX:
            _KEYS[key] = field
    return field


def attribute(key: str, value: AttributeValue) -> bytes:
    """A ``KeyValue`` message (its fields, without a tag of its own)."""
    field = _KEYS.get(key) or _key(key)
    if type(value) is str:
        data = value.encode("utf-8", "replace")
        size = len(data)
        if size < _SHORT:
            return b"".join((field, _SHORT_STRING[size], data))
        payload = b"\x0a" + varint(size) + data
    elif type(value) is int and 0 <= value < 16384:
        number = _VARINTS[value]
        return b"".join((field, b"\x12", _VARINTS[len(number) + 1], b"\x18", number))
    elif type(value) is float:
        return b"".join((field, b"\x12\x09\x21", _DOUBLE(value)))
    else:
        payload = _any(value)
    size = len(payload)
    return b"".join((field, b"\x12", _VARINTS[size] if size < 16384 else varint(size), payload))


def span_attribute(key: str, value: AttributeValue) -> bytes:
    """An ``attributes`` field (number 9) of a ``Span``: its tag, its length, ``attribute()``.

    A span's attributes are kept as fields, so that its message is their concatenation.
    """
    field = _KEYS.get(key) or _key(key)
    # The most frequent ones (short texts, small counts, durations) without attribute().
    if type(value) is str:
        data = value.encode("utf-8", "replace")
        size = len(field) + 4 + len(data)
        if size < 128:
            return b"".join((_SPAN_ATTRIBUTE[size], field, _SHORT_STRING[len(data)], data))
    elif type(value) is int and 0 <= value < 128 and len(field) < 124:
        return b"".join((_SPAN_ATTRIBUTE[len(field) + 4], field, b"\x12\x02\x18", _VARINTS[value]))
    elif type(value) is float and len(field) < 117:
        return b"".join((_SPAN_ATTRIBUTE[len(field) + 11], field, b"\x12\x09\x21", _DOUBLE(value)))
    payload = attribute(key, value)
    size = len(payload)
    return (_SPAN_ATTRIBUTE[size] if size < 128 else b"\x4a" + varint(size)) + payload


_SEEN: dict[tuple[str, str], bytes] = {}
_SEEN_MAX: Final = 8192
_SEEN_VALUE_MAX: Final = 200


def common_span_attribute(key: str, value: str) -> bytes:
    """``span_attribute()`` of a string that repeats (a model, a provider, an experiment), cached.

    Most attributes of most spans are a few such values: encoding each once per process
    halves the encoding time of a span (measured by ``benchmarks/export.py``).
    """
    found = _SEEN.get((key, value))
    if found is None:
        found = span_attribute(key, value)
        if len(value) <= _SEEN_VALUE_MAX and len(_SEEN) < _SEEN_MAX:
            _SEEN[key, value] = found
    return found


def repeated(tag: bytes, messages: Iterable[bytes]) -> bytes:
    """A repeated message field: each message with ``tag`` and its length."""
    return b"".join([_field(tag, m) for m in messages])


def _field(tag: bytes, message: bytes) -> bytes:
    size = len(message)
    return b"".join((tag, _VARINTS[size] if size < 16384 else varint(size), message))


def event(time_ns: int, name: str, attributes: Iterable[bytes] = ()) -> bytes:
    """A ``Span.Event`` message; ``attributes`` from ``attribute()``."""
    return b"\x09" + _FIXED64(time_ns) + wrap(b"\x12", text(name)) + repeated(b"\x1a", attributes)


def link(trace_id: bytes, span_id: bytes, attributes: Iterable[bytes] = ()) -> bytes:
    """A ``Span``'s ``links`` field (13): a ``Span.Link`` to another trace's span (ids of 16
    and 8 bytes; ``attributes`` from ``attribute()``). Appended to a ``span_of()``."""
    return wrap(b"\x6a", b"\x0a\x10" + trace_id + b"\x12\x08" + span_id + repeated(b"\x22", attributes))


def name_and_kind(name: str, kind: int) -> bytes:
    """A ``Span``'s name and kind fields (the same for every span of a run's kind and name)."""
    name_bytes = name.encode("utf-8", "replace")
    return b"".join((b"\x2a", varint(len(name_bytes)), name_bytes, b"\x30", _VARINTS[kind]))


def span_head(trace_id: bytes, span_id: bytes, parent_span_id: bytes | None, name_kind: bytes) -> bytes:
    """A ``Span``'s fields before its times: ids (16 and 8 bytes), name and kind (``name_and_kind``)."""
    if parent_span_id:
        return b"".join((b"\x0a\x10", trace_id, b"\x12\x08", span_id, b"\x22\x08", parent_span_id, name_kind))
    return b"".join((b"\x0a\x10", trace_id, b"\x12\x08", span_id, name_kind))


#: A Span's start_time_unix_nano (7) and end_time_unix_nano (8) fields: ``TIMES(0x39, start, 0x41, end)``.
TIMES: Final = struct.Struct("<BQBQ").pack


def span_of(
    head: bytes,
    start_ns: int,
    end_ns: int,
    attributes: Iterable[bytes],
    events: Iterable[bytes] = (),
    status: int = STATUS_UNSET,
    status_message: str = "",
) -> bytes:
    """A ``Span`` message from its ``span_head()``, times, attributes, events and status."""
    out = [head, TIMES(0x39, start_ns, 0x41, end_ns), *attributes]
    for item in events:
        size = len(item)
        out += (b"\x5a", _VARINTS[size] if size < 16384 else varint(size), item)
    if status:
        message = wrap(b"\x12", text(status_message)) if status_message else b""
        out.append(wrap(b"\x7a", message + b"\x18" + _VARINTS[status]))
    return b"".join(out)


def scope(name: str, version: str) -> bytes:
    """The ``InstrumentationScope`` field (number 1) of a ``ScopeSpans`` or ``ScopeMetrics``."""
    return wrap(b"\x0a", wrap(b"\x0a", text(name)) + wrap(b"\x12", text(version)))


_SPAN_FIELDS: dict[int, bytes] = {}  # a Span's field tag and length (2) by its length
_SPAN_FIELDS_KEPT: Final = 16384


def _span_field(length: int) -> bytes:
    """The ``spans`` field's tag and ``length`` (a ``ScopeSpans``'s), kept for the next span as long."""
    field = b"\x12" + varint(length)
    if len(_SPAN_FIELDS) < _SPAN_FIELDS_KEPT:
        _SPAN_FIELDS[length] = field
    return field


def request(
    resource: Iterable[bytes], scope_name: str, scope_version: str, spans: Iterable[bytes], schema_url: str
) -> bytes:
    """An ``ExportTraceServiceRequest`` with one resource and one scope holding ``spans``.

    Written in one join: the spans' bytes are copied once, not once per enclosing message.
    """
    head = scope(scope_name, scope_version)
    spans = spans if type(spans) is list else list(spans)
    lengths = list(map(len, spans))
    # Each span's field tag and length, looked up by its length (a few hundred lengths
    # recur): written in C, not by a Python loop over the spans.
    found = list(map(_SPAN_FIELDS.get, lengths))
    prefixes: list[bytes] = (
        [prefix or _span_field(length) for prefix, length in zip(found, lengths, strict=True)]
        if None in found
        else found  # type: ignore[assignment]  # no None in it
    )
    tail = wrap(b"\x1a", text(schema_url))
    # The three enclosing messages' tags and lengths (set below), then the scope, the spans
    # and the schema URL: the spans' bytes are copied once.
    parts = [
        b"",
        b"",
        b"",
        b"",
        b"",
        head,
        *itertools.chain.from_iterable(zip(prefixes, spans, strict=True)),
        tail,
    ]
    size = len(head) + sum(lengths) + sum(map(len, prefixes)) + len(tail)  # ScopeSpans
    resource_field = wrap(b"\x0a", repeated(b"\x0a", resource))
    scope_length = varint(size)
    size += len(resource_field) + 1 + len(scope_length)  # ResourceSpans
    parts[:5] = (b"\x0a", varint(size), resource_field, b"\x12", scope_length)
    return b"".join(parts)
