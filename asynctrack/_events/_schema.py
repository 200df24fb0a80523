"""The event kinds, and the record the handler hands to the engine for each callback.

A record is the tuple the handler appends on the caller's thread::

    (kind, seq, ts, run_id, parent_run_id, name, body, extra)

``body`` is always ``bytes``: the JSON of ``{"data": {...}, "tags": ..., "metadata": ...}``,
captured on the caller's thread; ``extra`` is the exception of an error event (formatted
off the hot path) or the ``str`` of a streamed token (redacted joined to its run's stream
and spliced into ``data`` by the translator), else ``None``; ``name`` a ``str`` or ``None``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ENDS", "EVENT_KINDS", "STARTS"]

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
}

STARTS: Final = frozenset(k for k in EVENT_KINDS if k.endswith("_start"))
ENDS: Final = frozenset(k for k in EVENT_KINDS if k.endswith(("_end", "_error")))
