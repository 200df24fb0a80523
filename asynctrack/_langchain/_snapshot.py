"""Copy callback arguments in Python: the fallback of ``_capture``.

The hot path captures arguments with one ``orjson.dumps``. When orjson refuses a
value (a lone surrogate, an integer beyond 64 bits, a cycle, nesting deeper than
254), the arguments are copied here instead, still on the caller's thread, so that
later mutations cannot change what is logged: containers (dict, list, tuple, set)
and the field dicts of pydantic models and dataclasses are copied; strings,
numbers and other immutable leaves are shared (a 50 MB prompt costs a pointer, and
is cut down to the field limit later, in the worker's careful encoder).

Two bounds keep this safe on any input: ``max_depth`` (cycles and absurd nesting
become a marked placeholder) and a per-call node budget (a shared-reference blow
up such as ``a = [a, a]`` forty times); past the budget, values are kept by
reference and walked by the encoder, off the hot path.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import uuid
from typing import Any, Final

__all__ = ["DEPTH_EXCEEDED", "FieldsSnapshot", "snapshot"]

#: Copy at most this many containers per callback; past it, values are shared.
MAX_NODES: Final = 10_000


class _DepthExceeded:
    """Marks a value nested deeper than ``max_depth`` (or part of a cycle)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DEPTH_EXCEEDED"


DEPTH_EXCEEDED: Final = _DepthExceeded()


class FieldsSnapshot:
    """The fields of a pydantic model or dataclass, copied at callback time."""

    __slots__ = ("fields", "type")

    def __init__(self, type_: type, fields: dict[str, Any]) -> None:
        self.type = type_
        self.fields = fields


_ATOM, _DICT, _SEQ, _FIELDS, _SHARED = range(5)

_KINDS: dict[type, int] = {
    t: _ATOM
    for t in (
        str,
        int,
        float,
        bool,
        type(None),
        bytes,
        complex,
        uuid.UUID,
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        decimal.Decimal,
    )
}
_KINDS.update({dict: _DICT, list: _SEQ, tuple: _SEQ, set: _SEQ, frozenset: _SEQ})


def _classify(cls: type) -> int:
    if issubclass(cls, dict):
        return _DICT
    if issubclass(cls, list | tuple | set | frozenset):
        return _SEQ
    if issubclass(cls, str | int | float | bytes | enum.Enum | BaseException):
        # Exceptions are kept by reference: their type, message and traceback are
        # what we log, and LangChain does not change them after raising.
        return _ATOM
    if "SecretStr" in {c.__name__ for c in cls.__mro__}:
        return _ATOM  # immutable, and redacted by the encoder
    if hasattr(cls, "__pydantic_fields__") or dataclasses.is_dataclass(cls):
        # Instances must carry a __dict__ for us to copy; slotted dataclasses
        # are shared instead.
        return _FIELDS if hasattr(cls, "__dict__") and "__slots__" not in cls.__dict__ else _SHARED
    return _SHARED


def _kind(cls: type) -> int:
    kind = _KINDS.get(cls)
    if kind is None:
        # Racing threads may both classify a new type; they compute the same value.
        kind = _KINDS[cls] = _classify(cls)
    return kind


def snapshot(value: Any, max_depth: int = 32) -> Any:
    """Return a copy of ``value`` that later mutations of the original cannot change.

    Never raises: whatever cannot be copied is shared, and the encoder deals with it.
    """
    budget = [MAX_NODES]
    kinds = _KINDS

    def copy(v: Any, depth: int) -> Any:
        kind = kinds.get(type(v))
        if kind is None:
            kind = _kind(type(v))
        if kind in (_ATOM, _SHARED):
            return v
        if depth >= max_depth:
            return DEPTH_EXCEEDED
        budget[0] -= 1
        if budget[0] < 0:
            return v
        depth += 1
        if kind == _DICT:
            return {k: copy(x, depth) for k, x in v.items()}
        if kind == _SEQ:
            return [copy(x, depth) for x in v]
        try:
            fields = v.__dict__
        except AttributeError:
            return v
        return FieldsSnapshot(type(v), {k: copy(x, depth) for k, x in fields.items()})

    try:
        return copy(value, 0)
    except Exception:  # a __dict__ property or a dict mutated by another thread
        return value
