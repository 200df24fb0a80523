"""The event kinds, and the record the handler hands to the engine for each callback.

A record is the tuple the handler builds on the caller's thread::

    (kind, seq, ts, run_id, parent_run_id, name, body, extra)

and appends to its queue flat, field after field (``WIDTH``: see ``_pipeline._queue``).
``run_id`` and ``parent_run_id`` are LangChain's ``UUID`` run ids as their ``int`` (a slot
read): fields of plain ``str``, ``int``, ``float``, ``bytes`` and ``None`` are nothing the
cyclic collector tracks, so waiting records are never walked (a ``UUID`` is a tracked
object); the translator writes them as UUID text (``uuid_text``). A run id that is not a ``UUID``
is passed as it is. ``body`` is always ``bytes``: the JSON of ``{"data": {...}, "tags":
..., "metadata": ...}``, captured on the caller's thread; ``extra`` is the error of an
error event (a dict of plain data read on the caller's thread, ``Capturer.error``) or
the ``str`` of a streamed token (redacted joined to its run's stream and spliced into
``data`` by the translator), else ``None``; ``name`` a ``str`` or ``None``.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any, Final

__all__ = [
    "BODY",
    "ENDS",
    "EVENT_KINDS",
    "EXTRA",
    "GRAPH_KINDS",
    "INTERRUPT_TYPES",
    "KIND",
    "NAME",
    "PARENT_RUN_ID",
    "RUN_ID",
    "SEQ",
    "STARTS",
    "TS",
    "WIDTH",
    "Record",
    "id_text",
    "id_value",
    "is_interrupt",
    "records_of",
    "uuid_text",
]

#: A record: a plain tuple built with one C call on the hot path (a ``NamedTuple`` would
#: add a Python ``__new__`` per event); its fields are read by these indices everywhere.
Record = tuple[Any, ...]

KIND: Final = 0  # str: a key of EVENT_KINDS
SEQ: Final = 1  # int: the tracker's sequence number
TS: Final = 2  # float: time.time() on the caller's thread
RUN_ID: Final = 3  # a UUID's int (see above), or None
PARENT_RUN_ID: Final = 4  # a UUID's int, or None
NAME: Final = 5  # str or None
BODY: Final = 6  # bytes: the captured JSON body
EXTRA: Final = 7  # the error of an error event, the str of a streamed token, else None
#: Fields of a record. Where records wait or travel flat (the application's queue, the
#: frames to the worker process), record ``i`` is ``fields[i * WIDTH : (i + 1) * WIDTH]``.
WIDTH: Final = EXTRA + 1


def records_of(fields: list[Any]) -> list[Record]:
    """Flat fields as records, a tuple each, in order (C loops).

    Raises:
        ValueError: ``fields`` is not whole records.
    """
    return list(zip(*[iter(fields)] * WIDTH, strict=True))


#: Every event kind, with the fields the handler puts in ``data`` (besides the
#: callback's other keyword arguments).
EVENT_KINDS: Final[dict[str, tuple[str, ...]]] = {
    "chain_start": ("serialized", "inputs"),
    "chain_end": ("outputs",),
    "chain_error": ("error",),
    "llm_start": ("serialized", "prompts", "invocation_params"),
    "chat_model_start": ("serialized", "messages", "invocation_params"),
    "llm_new_token": ("token", "chunk"),
    "llm_end": ("response",),
    "llm_error": ("error",),
    "tool_start": ("serialized", "input_str", "inputs"),
    "tool_end": ("output",),
    "tool_error": ("error",),
    "agent_action": ("action",),
    "agent_finish": ("finish",),
    "retriever_start": ("serialized", "query"),
    "retriever_end": ("documents",),
    "retriever_error": ("error",),
    "text": ("text",),
    "retry": ("attempt_number", "idle_for", "seconds_since_start", "next_sleep", "exception"),
    "custom_event": ("name", "data"),
    "stream_event": ("event",),
    # LangGraph's lifecycle (langgraph >= 1.2): the run is the graph's.
    "graph_interrupt": ("interrupts", "status", "checkpoint_id", "checkpoint_ns"),
    "graph_resume": ("status", "checkpoint_id", "checkpoint_ns"),
}

STARTS: Final = frozenset(k for k in EVENT_KINDS if k.endswith("_start"))
ENDS: Final = frozenset(k for k in EVENT_KINDS if k.endswith(("_end", "_error")))
#: LangGraph's lifecycle events (a graph paused for a human, resumed from a checkpoint).
GRAPH_KINDS: Final = frozenset({"graph_interrupt", "graph_resume"})
#: The exceptions a LangGraph node raises to pause its graph for a human (``interrupt()``).
INTERRUPT_TYPES: Final = ("langgraph.errors.GraphInterrupt", "langgraph.errors.NodeInterrupt")


def is_interrupt(error: Any) -> bool:
    """Whether an error event's ``error`` (as written: ``type``, ``message``, ...) is
    LangGraph pausing a graph for a human: control flow, not a failure."""
    return isinstance(error, dict) and error.get("type") in INTERRUPT_TYPES


def id_text(value: Any) -> str | None:
    """A session or user id from a run's metadata as text (a string or an integer), else ``None``."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


_UUID_END: Final = 1 << 128
_INT_MIN: Final = -(1 << 63)  # the least int JSON's writer (orjson) takes


def id_value(value: Any) -> Any:
    """A run id that is not a UUID's int, as written (and as a key: hashable): ``None``
    and a caller's own string or integer as they are; a ``UUID`` (a subclass of it, which
    the handler leaves as it is) as its text; ``bytes`` and ``bytearray`` as their UTF-8
    text (a byte that is not UTF-8 as its ``\\xNN`` escape); anything else (a float, a
    tuple, a ``str`` subclass) as its text: ``str.__str__``, else ``str()``."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, int):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, str):
        return str.__str__(value)
    try:
        return str(value)
    except Exception:  # a __str__ that raises: its type's name
        return f"<{type(value).__qualname__}>"


@functools.lru_cache(maxsize=4096)  # a run's id comes back in its end and its children's events
def uuid_text(value: int) -> str | int:
    """A run id's int as the UUID's text (what ``str(uuid.UUID(int=value))`` gives, without
    building the UUID); an int out of a UUID's range as it is, or as its text where it
    is over 64 bits (a number JSON's writer refuses)."""
    if 0 <= value < _UUID_END:
        h = f"{value:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return value if _INT_MIN <= value < 0 else str(value)
