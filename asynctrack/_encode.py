"""Turn an event dict into one JSON line, whatever it holds. Runs in the worker.

The walk makes every value something orjson can write, in one pass:

- keys that look like credentials, and pydantic ``SecretStr`` values, are redacted;
- strings and bytes longer than ``max_field_bytes`` are cut, with a marker;
- objects orjson cannot write (LangChain messages and other pydantic models,
  dataclasses, sets, Decimal, numpy scalars and arrays, exceptions, arbitrary
  objects) are converted, or replaced by a marked placeholder
  ``{"$asynctrack": <reason>, "type": <python type>, ...}``;
- NaN and infinities become the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``
  (JSON has no such numbers), integers beyond 64 bits become strings;
- nesting past ``max_depth`` (and so any cycle) becomes a placeholder.

Lone surrogates make orjson fail; such a line is encoded again with every string
made valid UTF-8 (bad code points become U+FFFD), and the event is marked.
Finally a bytes regex pass redacts credential-like text anywhere in the line.
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
from typing import Any, Final

import orjson

from ._config import TrackerConfig
from ._snapshot import DEPTH_EXCEEDED, FieldsSnapshot

__all__ = ["REDACTED", "Encoder", "placeholder"]

REDACTED: Final = "[REDACTED]"
_MARK: Final = "$asynctrack"
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
_MAX_NODES: Final = 200_000  # per event; beyond it values become placeholders


def placeholder(reason: str, value: object = None, **extra: Any) -> dict[str, Any]:
    """A marked stand-in for a value that could not be written as it was."""
    out: dict[str, Any] = {_MARK: reason}
    if value is not None:
        out["type"] = _type_name(value)
    out.update(extra)
    return out


def _type_name(value: object) -> str:
    cls = type(value)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _safe_repr(value: object, limit: int = 200) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # user __repr__ can do anything
        return f"<repr failed: {type(exc).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


class Encoder:
    """Encodes event dicts to JSON lines under one configuration (worker-only)."""

    def __init__(self, config: TrackerConfig) -> None:
        self._max_field = config.max_field_bytes
        self._max_depth = config.max_depth
        self._key_re = re.compile(config.redact_keys) if config.redact_keys else None
        self._redacted_keys: dict[str, bool] = {}
        patterns = [p.encode() for p in config.redact_patterns]
        self._value_re = re.compile(b"|".join(b"(?:" + p + b")" for p in patterns)) if patterns else None
        self._nodes = 0
        self._fix_strings = False

    # -- public ------------------------------------------------------------------

    def encode(self, event: Mapping[str, Any]) -> bytes:
        """Return ``event`` as one JSON line ending in ``\\n``. Never raises."""
        try:
            line = self._dumps(event, fix_strings=False)
        except orjson.JSONEncodeError:
            # Almost always a lone surrogate; retry with strings made valid.
            try:
                line = self._dumps(event, fix_strings=True)
            except Exception as exc:  # pragma: no cover - defensive: nothing else known fails
                line = orjson.dumps(
                    {**_envelope_only(event), "data": placeholder("unencodable", exc, error=str(exc))}
                )
        except Exception as exc:  # a hostile __dict__, __iter__ or __eq__ in user data
            line = orjson.dumps(
                {
                    **_envelope_only(event),
                    "data": placeholder("unencodable", exc, error=_safe_repr(exc)),
                }
            )
        if self._value_re is not None:
            line = self._value_re.sub(REDACTED.encode(), line)
        return line + b"\n"

    def jsonable(self, value: Any) -> Any:
        """Return ``value`` converted as described in the module docstring."""
        self._nodes = _MAX_NODES
        return self._walk(value, 0)

    # -- internals ---------------------------------------------------------------

    def _dumps(self, event: Mapping[str, Any], *, fix_strings: bool) -> bytes:
        self._fix_strings = fix_strings
        try:
            data = self.jsonable(event)
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
            s = s.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
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
            return self._str(v) if (self._fix_strings or len(v) * 4 > self._max_field) else v
        if cls is bool or v is None:
            return v
        if cls is int:
            return v if _INT_MIN <= v <= _INT_MAX else str(v)
        if cls is float:
            if math.isfinite(v):
                return v
            return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
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
            return {"type": _type_name(v), "message": self._str(_safe_str(v))}
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
        return placeholder("unencodable", v, repr=_safe_repr(v))

    def _numpy(self, v: Any, depth: int) -> Any:
        size = getattr(v, "size", 1)
        if getattr(v, "ndim", 0) == 0 and hasattr(v, "item"):
            return self._walk(v.item(), depth)
        if size <= 10_000 and hasattr(v, "tolist"):
            return self._walk(v.tolist(), depth)
        return placeholder("array", v, shape=list(getattr(v, "shape", ())), size=int(size))


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return _safe_repr(exc)


_ENVELOPE: Final = ("seq", "ts", "kind", "experiment", "run", "tracker", "run_id", "parent_run_id", "name")


def _envelope_only(event: Mapping[str, Any]) -> dict[str, Any]:
    """The plain fields of an event, for the last-resort line."""
    out: dict[str, Any] = {}
    for key in _ENVELOPE:
        value = event.get(key)
        out[key] = value if isinstance(value, str | int | float | type(None)) else str(value)
    return out
