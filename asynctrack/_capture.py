"""Capture callback arguments on the caller's thread, as JSON bytes, without ever crashing.

LangChain hands a handler live objects: the input dict a chain keeps using, the
message lists an agent appends to, maybe from another thread. What we log must be
what was passed at the callback, so the arguments are encoded right there, to
bytes (immutable, invisible to the cyclic GC, and exactly as large as what we hold:
the engine's byte bound counts what is really in memory).

Why this cannot crash
---------------------

orjson walks a list through a pointer to its item array and a length it read when
it started (``ListTupleSerializer`` in ``src/serialize/per_type/list.rs``: ``data_ptr
= ob.data_ptr(); len = ob.len()``, then ``*data_ptr.add(idx)`` for ``idx in 0..len``).
While orjson's C code runs, no other thread can run (it holds the GIL and never
releases it). But a ``default=`` callback written in Python runs bytecode, and the
interpreter hands the GIL to another thread every switch interval: a thread that
appends to that list then reallocates the item array under orjson, which reads
freed memory and the process dies of SIGSEGV (python-rapidjson #238 and ultrajson
#689 are the same class of bug). So nothing here lets orjson run Python:

1. ``orjson.dumps(body, default=_DICT_OF, option=OPT_PASSTHROUGH_DATACLASS |
   OPT_PASSTHROUGH_DATETIME)``. ``_DICT_OF`` is ``operator.attrgetter("__dict__")``,
   a C function: for a pydantic model (LangChain's messages, generations,
   documents) it returns the instance's field dict through the type's C
   ``__dict__`` descriptor, with no bytecode (pydantic defines ``__getattr__``,
   which runs only when normal lookup fails, never ``__getattribute__``).
   Dataclasses and datetimes are passed through (orjson would otherwise read a
   dataclass's fields with ``PyObject_GetAttr``, which may run a property, and call
   a ``tzinfo``'s ``utcoffset``), so they fail step 1 and take step 2.
   ``str``/``int``/``dict``/``list`` subclasses are read in C (``obtype.rs``).
   An object's ``__dict__`` is not always all its data: it may be empty (the
   fields in ``__slots__`` under a base without slots, as LangGraph's ``Command``;
   or no field at all), miss slot values beside it, or miss a pydantic model's
   extra fields. So the first walk has no ``default``: with no object, its bytes
   are the body; at the first object orjson raises, and a second walk with
   ``default=found.append`` (a C method too) writes each object ``null`` and
   collects it. ``lossy()`` looks at the objects, layer by layer (their dicts walked
   by orjson the same way), with C calls and a verdict per class, and the body is
   the walk with ``DICT_OF``, or, where an object would lose data, step 2. Before
   the walk, the handler puts in place of LangChain's own objects the dicts this
   would write for them (``fields_of``: the same verdict, Python run before the walk,
   never inside it), so that the walk of a LangChain event meets no object.
2. When orjson refuses anything (a type with no ``__dict__``, a non-``str`` key, a
   lone surrogate, an integer over 64 bits, nesting over 254, a cycle), the bytes
   are longer than ``max_field_bytes`` (a field may need cutting), or an object
   would lose data, ``careful()`` copies the arguments in Python into fresh plain
   containers (each container first copied whole by one C call, ``list(d.items())`` /
   ``list.copy(seq)``, so a concurrent mutation cannot break the walk; a subclass's own
   ``__iter__`` is never run), then dumps that private copy with no ``default`` at all.
   A ``Mapping``'s ``items()`` is its own Python and may never end: it is read up to
   ``MAX_NODES`` items or ``max_field_bytes``. The result is bytes too.

What is left: orjson reads an ``Enum`` member's ``value`` with ``PyObject_GetAttr``
(``pyenum.rs``; no option turns this off), and ``enum``'s ``value`` is a Python
property; and an object whose class runs Python to look up ``__dict__`` (a Python
``__getattribute__``, a ``__dict__`` property, or a ``__getattr__`` on a class
without ``__dict__``). Only if such an object sits *inside a list another thread
is resizing at that instant* could the old crash return. And orjson does not check
that read: a plain ``Enum`` member (not an ``int`` or ``str`` one, which orjson reads
in C) whose ``value`` raises (an override) crashes the process in any thread.
Ruling both out takes a walk of each event before orjson's, in Python's C calls
(``gc.get_referents`` layer by layer): it costs more than orjson's walk itself.
LangChain's own objects are none of these. ``tests/test_capture.py`` keeps the
threaded stress test.

What is written
---------------

Every value as its data: a pydantic model (v1 or v2, its extra fields too), a
dataclass, an attrs class, a ``NamedTuple`` as its fields; an object as its
``__dict__`` and its slots; an ``Enum`` as its value; numpy arrays up to 10,000
elements as lists (on the careful path, a list, tuple, set or dict up to 10,000 items,
then a ``too_many_values`` marker with the count left out); a pandas ``DataFrame``
as ``{"$asynctrack": "dataframe", "shape", "columns", "dtypes", "index", "rows"}``
and a ``Series`` as ``{"$asynctrack": "series", "shape", "name", "dtype", "index",
"values"}``, with as many leading rows as fit in ``max_field_bytes``; a pandas
extension array or index as a list like a numpy array, and pandas' missing values
(``pd.NA``, ``pd.NaT``) as ``null``. An exception (``Capturer.error``) as ``type``,
``message``, ``args`` and ``traceback``, read in the callback.

One bad field spoils one field: a value whose conversion raises, or an object with
no field to read, becomes a marked placeholder ``{"$asynctrack": "unencodable",
"type": ..., "error"/"repr": ...}`` in its place, the rest of the event is kept
(the worker counts such events in ``encode_errors``).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import decimal
import enum
import itertools
import math
import operator
import os
import traceback
import uuid
from collections.abc import Mapping
from typing import Any, Final

import orjson

__all__ = [
    "MARK",
    "PLAIN",
    "REDACTED",
    "Capturer",
    "cut_text",
    "fields_in_lists",
    "fields_of",
    "lossy",
    "placeholder",
    "safe_repr",
    "safe_str",
    "traceback_text",
    "type_name",
    "valid_text",
]

REDACTED: Final = "[REDACTED]"
MARK: Final = "$asynctrack"
#: orjson reads these natively but may run Python doing so (see the module docstring).
OPTIONS: Final = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
#: ``default`` for orjson: a C function, so orjson never runs bytecode mid-walk.
DICT_OF: Final = operator.attrgetter("__dict__")
#: ``type.__flags__`` bit of a class defined in Python (``Py_TPFLAGS_HEAPTYPE``).
_HEAP_TYPE: Final = 1 << 9
_OBJECT_SIZE: Final = object.__basicsize__
MAX_NODES: Final = 10_000  # containers copied per callback on the careful path
_MAX_ARRAY: Final = 10_000  # numpy arrays up to this many elements are written as lists
#: Items of a list, tuple, set or dict the careful path writes (as many as numpy elements);
#: past them, one marker with the count left out: the walk's time is in what it keeps.
_MAX_ITEMS: Final = _MAX_ARRAY
_MAX_ROWS: Final = 1_000  # pandas rows looked at (those that fit in the field limit are written)
#: pandas' missing-value scalars (``pd.NA``, ``pd.NaT``), written as ``null``.
_PANDAS_MISSING: Final = frozenset({"NAType", "NaTType"})
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
_ALL: Final = slice(None)  # tuple.__getitem__(v, _ALL): a tuple subclass's items, as a tuple


def _slot_names(cls: type) -> list[str]:
    """The attribute names of ``cls``'s ``__slots__``, its bases' included (mangled)."""
    names: list[str] = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot in ("__dict__", "__weakref__"):
                continue
            private = slot.startswith("__") and not slot.endswith("__")
            name = f"_{klass.__name__.lstrip('_')}{slot}" if private else slot
            if name not in names:
                names.append(name)
    return names


def _items(v: Any, cls: type) -> Any:
    """A list's, tuple's or set's items, read in C (``list.copy``, a tuple's slice,
    ``set.copy``): never what a subclass's own ``__iter__`` or ``__getitem__`` returns,
    which may be anything, or never end. An object that only says it is one (its
    ``__class__``, as a ``Mock`` with a spec) as its iteration gives them."""
    if issubclass(cls, list):
        return list.copy(v)
    if issubclass(cls, tuple):
        return tuple.__getitem__(v, _ALL)
    if issubclass(cls, set):
        return set.copy(v)
    if issubclass(cls, frozenset):
        return frozenset.copy(v)
    return list(v)


def _fields(v: Any) -> list[tuple[str, Any]]:
    """An object's own data: its declared fields (attrs, pydantic), else its ``__dict__``
    and its slots; pydantic's extra and computed fields too."""
    cls = type(v)
    declared = getattr(cls, "__attrs_attrs__", None)
    if isinstance(declared, tuple):
        return [(a.name, getattr(v, a.name, None)) for a in declared]
    attrs = getattr(v, "__dict__", None)
    items = list(attrs.items()) if isinstance(attrs, dict) else []
    if not items and isinstance(getattr(cls, "__pydantic_fields__", None), dict):
        items = [(name, getattr(v, name, None)) for name in cls.__pydantic_fields__]
    missing = object()
    for name in _slot_names(cls):
        if name.startswith("__"):
            continue  # bookkeeping (pydantic's fields set, extra and private attributes)
        value = getattr(v, name, missing)
        if value is not missing:
            items.append((name, value))
    extra = getattr(v, "__pydantic_extra__", None)
    if isinstance(extra, dict):
        items.extend(extra.items())
    computed = getattr(cls, "__pydantic_computed_fields__", None)
    if isinstance(computed, dict):  # pydantic v2 @computed_field: model_dump() writes them
        for name in computed:
            try:
                items.append((name, getattr(v, name)))
            except Exception as exc:  # a property that raises: this field only
                items.append((name, placeholder("unencodable", error=safe_repr(exc))))
    return items


#: Classes whose instances' ``__dict__`` is all their data; the same unless the
#: instance has pydantic extra fields (``extra="allow"``); and the others (``lossy``).
_WHOLE: set[type] = set()
_LOOSE: set[type] = set()
_NOT_WHOLE: set[type] = set()
_MAX_CLASSES: Final = 4096  # classes remembered (classes made at run time come and go)


def _whole(cls: type) -> bool:
    """Whether an instance's ``__dict__`` holds all its data (pydantic extras aside)."""
    try:
        for klass in cls.__mro__[:-1]:
            if klass.__name__ in ("SecretStr", "SecretBytes", "Secret"):
                return False  # written as "[REDACTED]"
            in_c = not klass.__flags__ & _HEAP_TYPE
            if in_c and (klass.__basicsize__ != _OBJECT_SIZE or klass.__itemsize__):
                return False  # a C base holds data outside __dict__ (an exception's args)
        if cls.__module__.partition(".")[0] in ("numpy", "pandas"):
            return False  # arrays, frames: their values, not their internals
        if issubclass(cls, Mapping):
            return False  # written as its items
        if getattr(cls, "__pydantic_computed_fields__", None):
            return False  # computed fields are not in __dict__
        if dataclasses.is_dataclass(cls):
            # A field __init__ does not set (init=False) may be the class's default only.
            params: Any = getattr(cls, "__dataclass_params__", None)
            if not params.init or any(not f.init for f in dataclasses.fields(cls)):
                return False
        return all(name.startswith("__") for name in _slot_names(cls))  # no slot values beside
    except Exception:  # a hostile metaclass: the careful path judges
        return False


def _learn(cls: type) -> bool:
    """Whether an instance's ``__dict__`` is all its data (``_whole``), pydantic extras
    aside; remembered in ``_WHOLE``, ``_LOOSE`` or ``_NOT_WHOLE``."""
    if len(_WHOLE) + len(_LOOSE) + len(_NOT_WHOLE) > _MAX_CLASSES:
        _WHOLE.clear()
        _LOOSE.clear()
        _NOT_WHOLE.clear()
    if cls in _NOT_WHOLE or not _whole(cls):
        _NOT_WHOLE.add(cls)
        return False
    config = getattr(cls, "model_config", None)
    loose = isinstance(config, dict) and config.get("extra") == "allow"
    (_LOOSE if loose else _WHOLE).add(cls)
    return True


def lossy(found: list[Any], max_depth: int) -> bool:
    """Whether an object in ``found`` (the objects orjson met, collected by
    ``default=found.append``) or inside one of them would lose data written as its
    ``__dict__``: an empty ``__dict__`` (an object whose fields are in slots, or a
    sentinel), slot values beside it, a C base's data (an exception's arguments),
    pydantic extra or computed fields; or an object with no ``__dict__`` at all.

    Layer by layer: each object's ``__dict__``, class (against those known whole) and
    pydantic extras, then one orjson walk of their dicts (a C ``default`` again) that
    collects the objects inside them. Objects nested deeper than ``max_depth`` (a
    cycle) are the careful path's to cut.
    """
    try:
        for _ in range(max_depth):
            dicts = []
            for o in found:
                d = o.__dict__  # AttributeError: no __dict__
                if not d:
                    return True
                cls = type(o)
                if cls not in _WHOLE:
                    if cls in _LOOSE:
                        if o.__pydantic_extra__:
                            return True
                    elif not _learn(cls) or (cls in _LOOSE and o.__pydantic_extra__):
                        return True
                dicts.append(d)
            inside: list[Any] = []
            orjson.dumps(dicts, default=inside.append, option=OPTIONS)
            if not inside:
                return False
            found = inside
    except Exception:  # orjson refuses a value inside: the careful path will too
        return True
    return True


#: Types whose values ``fields_of`` returns as they are (no object's fields to read).
PLAIN: Final = frozenset({str, dict, list, tuple, int, float, bool, type(None)})
#: What ``fields_of`` does with an instance of a class (its entry in ``_KINDS``): return
#: it as it is (plain values, and objects whose ``__dict__`` is not all their data);
#: return its ``__dict__``; the same unless it has pydantic extra fields (``extra="allow"``);
#: or, for LangChain's classes with a field of LangChain objects, a copy of its
#: ``__dict__`` with that field's objects as their fields: a generation's message, a
#: result's generations (a list per prompt), a chat prompt's messages.
_AS_IS: Final = 0
_DICT: Final = 1
_LOOSE_DICT: Final = 2
_MESSAGE: Final = 3
_GENERATIONS: Final = 4
_MESSAGES: Final = 5
_LANGCHAIN_SHAPES: Final = {
    "ChatGeneration": _MESSAGE,
    "ChatGenerationChunk": _MESSAGE,
    "LLMResult": _GENERATIONS,
    "ChatPromptValue": _MESSAGES,
}
_KINDS: dict[type, int] = dict.fromkeys(PLAIN, _AS_IS)


def _kind(cls: type) -> int:
    """``cls``'s entry in ``_KINDS``, learnt now."""
    if len(_KINDS) > _MAX_CLASSES:
        _KINDS.clear()
        _KINDS.update(dict.fromkeys(PLAIN, _AS_IS))
    kind = _AS_IS
    if not issubclass(cls, enum.Enum) and _learn(cls):  # orjson writes a member as its value
        kind = _LOOSE_DICT if cls in _LOOSE else _DICT
        if cls.__module__.startswith("langchain_core.") and kind == _DICT:
            kind = _LANGCHAIN_SHAPES.get(cls.__name__, _DICT)
    _KINDS[cls] = kind
    return kind


def fields_of(value: Any) -> Any:
    """``value`` as the capture's walk with ``DICT_OF`` writes it, where that loses
    nothing: an object whose ``__dict__`` is all its data (``lossy``'s verdict on it
    alone) as that dict; inside LangChain's generations, results and chat prompts,
    their messages and generations the same way, in a copy of the object's dict.
    Anything else as it is: the walk meets the objects left (inside a dict too) and
    the capture's path for objects judges them. So, for LangChain's own objects, one
    walk writes the event. Never raises.

    On the hot path: one frame per object (a result with one generation and its
    message takes three), lists copied whole (one C call) before the loop over them,
    so that another thread's change to a list cannot tear it."""
    try:
        kind = _KINDS.get(type(value))
        if kind is None:
            kind = _kind(type(value))
        if not kind:
            return value
        d = value.__dict__
        if type(d) is not dict or not d:
            return value
        if kind == _DICT:
            return d
        if kind == _LOOSE_DICT:
            return value if value.__pydantic_extra__ else d
        d = d.copy()
        if kind == _MESSAGE:
            # The message read here, as fields_of(message) would (one frame less for
            # each streamed token): its class is learnt _DICT, or _LOOSE_DICT (an
            # AIMessageChunk allows extra fields); anything else takes the call.
            message: Any = d.get("message")
            inner = _KINDS.get(type(message))
            # Two comparisons, not `in` a set: both are specialised int comparisons (~200 less).
            fields = message.__dict__ if inner == _DICT or inner == _LOOSE_DICT else None  # noqa: PLR1714, SIM109
            if type(fields) is dict and fields and (inner == _DICT or not message.__pydantic_extra__):
                d["message"] = fields
            else:
                d["message"] = fields_of(message)
        elif kind == _GENERATIONS:
            rows = d.get("generations")
            if type(rows) is list:
                if len(rows) == 1 and type(row := rows[0]) is list and len(row) == 1:
                    # One prompt, one generation (a chat model's call): no loops.
                    # Another thread emptying a list meanwhile: IndexError, below.
                    d["generations"] = [[fields_of(row[0])]]
                else:
                    d["generations"] = fields_in_lists(rows)
        else:
            messages = d.get("messages")
            if type(messages) is list:
                d["messages"] = _fields_in(messages)
        return d
    except Exception:  # a hostile class or __dict__: the capture's path judges
        return value


def _fields_in(values: list[Any]) -> list[Any]:
    """``fields_of`` of each value of ``values``, a copy of it taken whole first (one C
    call): another thread's change to the list cannot tear the loop over it."""
    out = []
    for v in values.copy():
        out.append(fields_of(v))
    return out


def fields_in_lists(values: list[Any]) -> list[Any]:
    """``_fields_in`` of each list in ``values`` (a chat model's messages, a result's
    generations: a list per prompt); what is not a list, as it is. Loops, not
    comprehensions or ``map``: a third of the instructions for one list of one value."""
    out = []
    for v in values.copy():
        out.append(_fields_in(v) if type(v) is list else v)
    return out


def traceback_text(error: BaseException, limit: int) -> str:
    """The traceback Python prints for ``error``, formatted until ``limit`` characters
    are reached (a deep recursion is not formatted whole). Never raises."""
    try:
        lines = traceback.TracebackException.from_exception(error, lookup_lines=False).format()
        parts: list[str] = []
        size = 0
        for line in lines:
            parts.append(line)
            size += len(line)
            if size > limit:
                break
        return "".join(parts)
    except Exception as exc:  # a broken __str__ in a chained exception
        return f"<traceback failed: {type(exc).__name__}>"


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
    if type(text) is not str:
        return "<repr failed>"
    return text if len(text) <= limit else text[:limit] + "..."


def safe_str(exc: BaseException) -> str:
    """``str(exc)``; never raises."""
    try:
        text = str(exc)
    except Exception:
        return safe_repr(exc)
    return text if type(text) is str else safe_repr(exc)


def placeholder(reason: str, value: object = None, **extra: Any) -> dict[str, Any]:
    """A marked stand-in for a value that could not be written as it was."""
    out: dict[str, Any] = {MARK: reason}
    if value is not None:
        try:
            out["type"] = type_name(value)
        except Exception:  # a hostile metaclass
            out["type"] = "<unknown>"
    out.update(extra)
    return out


def valid_text(s: str) -> str:
    """``s`` with each lone surrogate replaced by U+FFFD."""
    return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _other_key(key: str, k: Any, out: Mapping[str, Any]) -> str:
    """The key for ``k``, whose text ``key`` is taken in ``out`` already ({1: a, "1": b}:
    both kept): the later one's key says its type, then a number if need be."""
    base = f"{key} <{type_name(k)}>"
    key, n = base, 2
    while key in out:
        key, n = f"{base} #{n}", n + 1
    return key


def _mark_cut(out: dict[str, Any], mark: dict[str, Any]) -> None:
    """``mark`` under the key ``"$asynctrack"`` of ``out``; a user's own item there moves to
    the key ``_other_key`` gives it (``"$asynctrack <str>"``): both kept, the mark where a
    reader looks for it."""
    if MARK in out:
        out[_other_key(MARK, MARK, out)] = out.pop(MARK)
    out[MARK] = mark


def cut_text(s: str, limit: int) -> str:
    """``s`` cut to its first ``limit`` bytes of UTF-8, ending in the truncation marker;
    as it is if it fits (a lone surrogate replaced by U+FFFD, as the line will have it)."""
    try:
        raw = s.encode("utf-8")
    except UnicodeEncodeError:
        s = valid_text(s)
        raw = s.encode("utf-8")
    if len(raw) <= limit:
        return s
    head = raw[:limit].decode("utf-8", "ignore")
    return f"{head}...[{MARK}: truncated, {len(s)} characters in all]"


class Capturer:
    """Encodes callback arguments to JSON bytes under one field limit and depth limit."""

    def __init__(self, max_field_bytes: int, max_depth: int) -> None:
        self._max_field = max_field_bytes
        self._max_depth = max_depth
        self._nodes = 0
        self._fixed = False

    def __call__(self, value: Any) -> bytes:
        """``value`` as JSON bytes. Never raises."""
        try:
            found: list[Any] = []
            out = orjson.dumps(value, default=found.append, option=OPTIONS)
            if found:
                if lossy(found, self._max_depth):
                    return self.careful(value)
                out = orjson.dumps(value, default=DICT_OF, option=OPTIONS)
        except Exception:
            return self.careful(value)
        if len(out) > self._max_field:
            return self.careful(value)
        return out

    def error(self, error: BaseException) -> dict[str, Any]:
        """An exception as an error event writes it, read now, on the caller's thread:
        ``type``, ``message``, ``args`` (as data) and ``traceback`` (the text Python
        prints, chained exceptions included), each cut at the field limit. Plain data
        only: later changes to the exception or its arguments do not show. Never raises.

        The ``"$error"`` key tells the worker that the dict is formatted already.
        """
        return copy.copy(self).read_error(error)  # a walker of its own, as in careful()

    def read_error(self, error: BaseException) -> dict[str, Any]:
        """``error()`` with this object's counters: call it on a copy."""
        self._nodes = MAX_NODES
        out: dict[str, Any] = {"$error": True, "type": "<unknown>", "message": "", "args": []}
        out["traceback"] = None
        try:
            out["type"] = type_name(error)
            out["message"] = self._str(safe_str(error))
            args = error.args
            out["args"] = self._walk(list(args) if type(args) is tuple else args, 0)
            out["traceback"] = self._str(traceback_text(error, self._max_field))
        except Exception as exc:  # a hostile exception class: what was read so far
            out["capture_error"] = safe_repr(exc)
        return out

    def careful(self, value: Any) -> bytes:
        """``value`` copied in Python into plain data, then encoded. Never raises."""
        try:
            # A walker of its own: callbacks on other threads may be walking at the same time.
            out, fixed = copy.copy(self).walk(value)
            if fixed and type(out) is dict:
                out[MARK] = "invalid_unicode_replaced"  # the event says a string was changed
            return orjson.dumps(out)
        except Exception as exc:  # nothing known: the walk returns only plain data
            return orjson.dumps({"data": placeholder("unencodable", value, error=safe_repr(exc))})

    # -- the careful walk: every container is new, every leaf immutable plain data ---------

    def walk(self, value: Any) -> tuple[Any, bool]:
        """``value`` as plain data, and whether a lone surrogate was replaced. Uses this
        object's counters: call it on a copy (``careful`` does)."""
        self._nodes = MAX_NODES
        self._fixed = False
        return self._walk(value, 0), self._fixed

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
        if depth >= self._max_depth:
            return placeholder("max_depth", max_depth=self._max_depth)
        self._nodes -= 1
        if self._nodes < 0:
            return placeholder("too_many_values", v)
        depth += 1
        try:
            if cls is dict or isinstance(v, dict):
                size = dict.__len__(v)
                if size > _MAX_ITEMS:
                    return self._dict_cut(v, size, depth)
                return self._dict(list(dict.items(v)), depth)
            if cls is list or cls is tuple:
                if len(v) > _MAX_ITEMS:
                    return self._list_cut(v, v[:_MAX_ITEMS], len(v), depth)
                return [self._child(x, depth) for x in list(v)]
            if isinstance(v, tuple) and type(getattr(cls, "_fields", None)) is tuple:
                # A NamedTuple: its field names are keys (and so the key rules apply).
                return self._dict(list(zip(cls._fields, _items(v, cls), strict=False)), depth)
            if isinstance(v, list | tuple):
                items = _items(v, cls)  # a subclass's: copied whole, in C
                if len(items) > _MAX_ITEMS:
                    return self._list_cut(v, items[:_MAX_ITEMS], len(items), depth)
                return [self._child(x, depth) for x in items]
            return self._other(v, depth)
        except Exception as exc:  # a hostile __dict__, __iter__, metaclass...: this value only
            return placeholder("unencodable", v, error=safe_repr(exc))

    def _child(self, v: Any, depth: int) -> Any:
        try:
            return self._walk(v, depth)
        except Exception as exc:
            return placeholder("unencodable", v, error=safe_repr(exc))

    def _dict(self, items: list[tuple[Any, Any]], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, x in items:
            key = self._key(k)
            if key in out:
                key = _other_key(key, k, out)
            out[key] = self._child(x, depth)
        return out

    def _list_cut(self, v: Any, kept: Any, size: int, depth: int) -> list[Any]:
        """``kept`` (the first ``_MAX_ITEMS`` of ``v``'s ``size`` items, read in C) walked,
        then a ``too_many_values`` placeholder with the count left out."""
        out = [self._child(x, depth) for x in kept]
        out.append(placeholder("too_many_values", v, kept=len(kept), left_out=size - len(kept)))
        return out

    def _dict_cut(self, v: dict[Any, Any], size: int, depth: int) -> dict[str, Any]:
        """A dict's first ``_MAX_ITEMS`` items (read in C, no Python runs meanwhile), then
        the key ``"$asynctrack"`` holds a ``too_many_values`` placeholder, as ``_mapping``."""
        out = self._dict(list(itertools.islice(dict.items(v), _MAX_ITEMS)), depth)
        _mark_cut(out, placeholder("too_many_values", v, kept=_MAX_ITEMS, left_out=size - _MAX_ITEMS))
        return out

    def _mapping(self, v: Mapping[Any, Any], depth: int) -> dict[str, Any]:
        """A ``Mapping``'s items as ``_dict`` writes them, read from its own ``items()``,
        which may never end: at most ``MAX_NODES`` items, and no more once those written
        hold over ``max_field_bytes``; then the key ``"$asynctrack"`` holds a
        ``too_many_values`` placeholder with the count of the items written."""
        out: dict[str, Any] = {}
        size = 0
        for kept, (k, x) in enumerate(v.items()):
            if kept >= MAX_NODES or size > self._max_field:
                _mark_cut(out, placeholder("too_many_values", v, kept=kept))
                break
            key = self._key(k)
            if key in out:
                key = _other_key(key, k, out)
            out[key] = child = self._child(x, depth)
            size += len(key) + len(orjson.dumps(child))
        return out

    def _key(self, k: Any) -> str:
        if type(k) is str:
            return self._str(k)
        # Any other key as the JSON of its value: 1 -> "1", (1, 2) -> "[1,2]", None -> "null".
        key = self._walk(k, self._max_depth - 1)
        return key if type(key) is str else orjson.dumps(key).decode()

    def _str(self, s: str) -> str:
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            s = valid_text(s)
            self._fixed = True
        if len(s) * 4 <= self._max_field:
            return s
        return cut_text(s, self._max_field)

    def _bytes(self, v: bytes | bytearray | memoryview) -> dict[str, Any]:
        # A copy (a bytearray may change later), of the buffer itself: a subclass's
        # __bytes__ is not run (an object that only says it is bytes: its own bytes()).
        raw = bytes(memoryview(v)) if issubclass(type(v), bytes | bytearray | memoryview) else bytes(v)
        out: dict[str, Any] = {MARK: "bytes", "size": len(raw)}
        if len(raw) > self._max_field:
            out["truncated"] = True
            raw = raw[: self._max_field]
        # As text, so that the worker's scan sees a credential inside (base64 would hide it).
        try:
            out["text"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            out["latin1"] = raw.decode("latin-1")
        return out

    def _other(self, v: Any, depth: int) -> Any:
        cls = type(v)
        if isinstance(v, enum.Enum):  # before str: str() of a (str, Enum) member is "Class.MEMBER"
            return self._walk(v.value, depth)
        # A subclass of str, int or float as its own value, as orjson writes it: the
        # base's method, never the subclass's __str__, __int__ or __float__ (an object
        # that only says it is one, through its __class__, as a Mock with a spec: those).
        if isinstance(v, str):
            return self._str(str.__str__(v) if issubclass(cls, str) else str(v))
        if isinstance(v, int):
            return self._walk(int.__index__(v) if issubclass(cls, int) else int(v), depth)
        if isinstance(v, float):
            return self._walk(float.__float__(v) if issubclass(cls, float) else float(v), depth)
        if isinstance(v, bytes | bytearray | memoryview):
            return self._bytes(v)
        if isinstance(v, set | frozenset):
            members = list(_items(v, cls))
            if len(members) > _MAX_ITEMS:  # the first in the set's order, then the marker
                return self._list_cut(v, members[:_MAX_ITEMS], len(members), depth)
            items = [self._child(x, depth) for x in members]
            try:
                items.sort()
            except TypeError:  # mixed types: the order of the copy
                pass
            return items
        if type(v).__name__ in _PANDAS_MISSING and type(v).__module__.startswith("pandas"):
            return None  # pd.NA, pd.NaT (a datetime subclass: before the datetimes)
        if isinstance(v, datetime.datetime | datetime.date | datetime.time):
            return v.isoformat()
        if isinstance(v, uuid.UUID):
            return str(v)
        if isinstance(v, datetime.timedelta):
            return v.total_seconds()
        if isinstance(v, decimal.Decimal):
            return str(v)
        if isinstance(v, complex):
            return {"real": self._walk(v.real, depth), "imag": self._walk(v.imag, depth)}
        if isinstance(v, BaseException):
            return {"type": type_name(v), "message": self._str(safe_str(v))}
        if isinstance(v, os.PathLike):
            return self._walk(os.fspath(v), depth)
        names = {c.__name__ for c in type(v).__mro__}
        if names & {"SecretStr", "SecretBytes", "Secret"}:
            return REDACTED
        module = type(v).__module__
        if module == "numpy" or module.startswith("numpy."):
            return self._numpy(v, depth)
        if module == "pandas" or module.startswith("pandas."):
            frame = self._pandas(v, depth)
            if frame is not None:
                return frame
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return self._dict([(f.name, getattr(v, f.name, None)) for f in dataclasses.fields(v)], depth)
        if isinstance(v, Mapping):
            return self._mapping(v, depth)
        if not isinstance(v, type) and module != "builtins":  # not a class, function or module
            items = _fields(v)
            if items:
                return self._dict(items, depth)
        # No field to read (a sentinel, a C object): its type and repr, counted.
        return placeholder("unencodable", v, repr=safe_repr(v))

    def _pandas(self, v: Any, depth: int) -> Any:
        """A DataFrame or Series as its shape, columns, dtypes and leading rows (as many
        as fit in the field limit); an extension array (``Int64``, ``string``,
        ``boolean``, categorical) or an index as a list of its values, like a numpy
        array; ``None`` for other pandas objects."""
        kind = type(v).__name__
        if any(c.__name__ in ("ExtensionArray", "Index") for c in type(v).__mro__):
            size = len(v)
            if size > _MAX_ARRAY:
                return placeholder("array", v, shape=[size], size=size)
            return [self._child(x, depth) for x in v.tolist()]  # missing values: pd.NA, NaN
        if kind == "DataFrame":
            columns = list(v.columns)
            out: dict[str, Any] = {
                MARK: "dataframe",
                "shape": list(v.shape),
                "columns": [self._child(c, depth) for c in columns],
                "dtypes": [str(t) for t in v.dtypes],
            }
            rows = v.head(_MAX_ROWS).itertuples(index=True, name=None)
        elif kind == "Series":
            out = {
                MARK: "series",
                "shape": list(v.shape),
                "name": self._child(v.name, depth),
                "dtype": str(v.dtype),
            }
            rows = iter(v.head(_MAX_ROWS).items())
        else:
            return None
        index: list[Any] = []
        values: list[Any] = []
        size = 1  # the rows' list as written: "[", each row and its "," or "]"
        for row in rows:
            label, *cells = row
            walked = self._child(cells if kind == "DataFrame" else cells[0], depth)
            size += len(orjson.dumps(walked)) + 1
            if size > self._max_field:
                break
            index.append(self._child(label, depth))
            values.append(walked)
        out["index"] = index
        out["rows" if kind == "DataFrame" else "values"] = values
        return out

    def _numpy(self, v: Any, depth: int) -> Any:
        if getattr(v, "ndim", 1) == 0 and hasattr(v, "item"):
            return self._walk(v.item(), depth)
        size = getattr(v, "size", None)
        if isinstance(size, int) and size <= _MAX_ARRAY and hasattr(v, "tolist"):
            return self._walk(v.tolist(), depth)
        return placeholder("array", v, shape=list(getattr(v, "shape", ())), size=size)
