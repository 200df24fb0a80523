"""Capture callback arguments on the caller's thread: one ``orjson.dumps`` call.

LangChain hands a handler live objects: the input dict a chain keeps using, the
message lists an agent appends to. What we log must be what was passed at the
callback, so the arguments are captured right there. Encoding them to JSON bytes
at once does that in C, in about 1 µs for a typical event (a Python deep copy of
the same arguments costs 5-15 µs), and bytes are invisible to the cyclic GC, so a
full buffer costs the caller nothing in collection pauses (``../shared/NOTES.md``:
5.4 µs per event when raw records pile up).

``default`` turns what orjson cannot write natively into plain data: pydantic
models (LangChain messages, documents, generations) become their field dicts,
sets become lists, ``SecretStr`` becomes ``"[REDACTED]"``, anything unknown a
marked placeholder with its type and a short ``repr``.

When orjson refuses a value anyway (a lone surrogate, an integer beyond 64 bits,
a cycle or nesting deeper than 254, a ``default`` that raised), the arguments are
copied in Python instead (``_snapshot``) and wrapped in ``Captured``; the worker
then encodes them with the careful, slow encoder. The callback still never
raises.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import enum
import os
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson

from ._snapshot import snapshot

__all__ = ["REDACTED", "Captured", "Capturer", "safe_repr", "safe_str", "type_name"]

REDACTED: Final = "[REDACTED]"
_MARK: Final = "$asynctrack"
_OPTIONS: Final = 0  # not OPT_SERIALIZE_NUMPY: a huge array must become a placeholder
_MAX_ARRAY: Final = 10_000  # numpy arrays up to this many elements are written as lists


class Captured:
    """Arguments orjson could not encode at callback time, copied in Python."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def type_name(value: object) -> str:
    """``module.Qualname`` of ``value``'s type (``Qualname`` for builtins)."""
    cls = type(value)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def safe_repr(value: object, limit: int = 200) -> str:
    """``repr(value)`` cut to ``limit`` characters; never raises."""
    try:
        text = repr(value)
    except Exception as exc:  # user __repr__ can do anything
        return f"<repr failed: {type(exc).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _unencodable(value: object) -> dict[str, Any]:
    return {_MARK: "unencodable", "type": type_name(value), "repr": safe_repr(value)}


class Capturer:
    """Encodes callback arguments to JSON bytes, with one field-size limit."""

    def __init__(self, max_field_bytes: int, max_depth: int) -> None:
        self._max_field = max_field_bytes
        self._max_depth = max_depth
        self._handlers: dict[type, Callable[[Any], Any]] = {}

    def __call__(self, value: Any) -> bytes | Captured:
        """``value`` as JSON bytes, or a ``Captured`` copy. Never raises."""
        try:
            return orjson.dumps(value, default=self.default, option=_OPTIONS)
        except Exception:
            return Captured(snapshot(value, self._max_depth))

    def default(self, value: Any) -> Any:
        """orjson's ``default``: plain data for what orjson cannot write itself."""
        cls = type(value)
        handler = self._handlers.get(cls)
        if handler is None:
            # Racing threads may both pick a handler for a new type; they pick the same.
            handler = self._handlers[cls] = self._handler_for(cls)
        return handler(value)

    def _handler_for(self, cls: type) -> Callable[[Any], Any]:
        names = {c.__name__ for c in cls.__mro__}
        if names & {"SecretStr", "SecretBytes", "Secret"}:
            return lambda _: REDACTED
        if hasattr(cls, "__pydantic_fields__"):
            return _fields
        if issubclass(cls, BaseException):
            return lambda e: {"type": type_name(e), "message": safe_str(e)}
        if issubclass(cls, set | frozenset):
            return _sorted_list
        if issubclass(cls, decimal.Decimal):
            return str
        if issubclass(cls, bytes | bytearray | memoryview):
            return self._bytes
        if issubclass(cls, datetime.timedelta):
            return lambda d: d.total_seconds()
        if issubclass(cls, complex):
            return lambda c: {"real": c.real, "imag": c.imag}
        if issubclass(cls, enum.Enum):
            return lambda e: e.value
        if issubclass(cls, os.PathLike):
            return os.fspath
        if issubclass(cls, Mapping):
            return dict
        if issubclass(cls, list | tuple):  # subclasses orjson does not take natively
            return list
        if cls.__module__ == "numpy" or cls.__module__.startswith("numpy."):
            return _numpy
        return _unencodable

    def _bytes(self, value: bytes | bytearray | memoryview) -> dict[str, Any]:
        raw = bytes(value)
        out: dict[str, Any] = {_MARK: "bytes", "size": len(raw)}
        if len(raw) > self._max_field:
            out["truncated"] = True
            raw = raw[: self._max_field]
        out["base64"] = base64.b64encode(raw).decode()
        return out


def _fields(model: Any) -> Any:
    try:
        return model.__dict__
    except AttributeError:
        return {name: getattr(model, name, None) for name in type(model).__pydantic_fields__}


def _numpy(value: Any) -> Any:
    if getattr(value, "ndim", 1) == 0 and hasattr(value, "item"):
        return value.item()
    size = getattr(value, "size", None)
    if isinstance(size, int) and size <= _MAX_ARRAY and hasattr(value, "tolist"):
        return value.tolist()
    return {
        _MARK: "array",
        "type": type_name(value),
        "shape": list(getattr(value, "shape", ())),
        "size": size,
    }


def _sorted_list(value: set[Any] | frozenset[Any]) -> list[Any]:
    """Sets in a stable order (string hashes differ between processes)."""
    try:
        return sorted(value)
    except TypeError:  # mixed types
        return list(value)


def safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return safe_repr(exc)
