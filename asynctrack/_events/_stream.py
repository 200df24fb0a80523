"""Streamed text joined per run for redaction: tokens, content blocks, tool-call arguments.

A secret split across streamed chunks must not be written in fragments: each piece is
redacted joined to the tail of its run's stream (``asynctrack._redact.StreamRedactor``),
and the chunk's copies of the piece (its text, its message's content) are rewritten alike.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from .._capture import valid_text
from .._redact import StreamRedactor

__all__ = ["ARGS", "BLOCK_TOKEN", "TOOL_CALL_CHUNKS", "mask_token", "stream_blocks", "stream_tool_args"]

_TOKEN_FIELDS: Final = (b'"text":', b'"content":')


def mask_token(body: bytes, raw: str, redacted: str) -> bytes:
    """``body`` with each ``text`` or ``content`` string equal to ``raw`` (a streamed
    token) replaced by ``redacted`` (what the stream made of it)."""
    try:
        old = orjson.dumps(raw)
    except orjson.JSONEncodeError:  # a lone surrogate: the capture wrote U+FFFD
        old = orjson.dumps(valid_text(raw))
    new = orjson.dumps(valid_text(redacted))
    for field in _TOKEN_FIELDS:
        body = body.replace(field + old, field + new)
    return body


#: A token of content blocks (a list: Anthropic's models, OpenAI's Responses API),
#: captured first in the body (``_handler``).
BLOCK_TOKEN: Final = b'{"data":{"token":['
#: The streamed text of a content block: its text, or a tool call's partial arguments.
_BLOCK_TEXT: Final = ("text", "partial_json")


def _stream_fields(
    streams: StreamRedactor, stream: Any, items: Any, fields: tuple[str, ...]
) -> dict[str, str]:
    """Each non-empty string ``fields`` of the dicts in ``items`` (a list), in order,
    redacted joined to ``stream`` (``StreamRedactor.token``) and set in place; returns
    what changed, original -> redacted."""
    changed: dict[str, str] = {}
    for item in items if type(items) is list else ():
        for field in fields if type(item) is dict else ():
            text = item.get(field)
            if type(text) is str and text:
                redacted = streams.token(stream, text)
                if redacted != text:
                    changed[text] = item[field] = redacted
    return changed


def _replace_fields(changed: dict[str, str], items: Any, fields: tuple[str, ...]) -> None:
    """Each ``fields`` string of the dicts in ``items`` that ``changed`` has, replaced."""
    for item in items if type(items) is list else ():
        for field in fields if type(item) is dict else ():
            if item.get(field) in changed:
                item[field] = changed[item[field]]


def _rewritten(parts: Any, body: bytes) -> bytes:
    try:
        return orjson.dumps(parts)
    except orjson.JSONEncodeError:  # never seen: what orjson read, it writes
        return body


def stream_blocks(streams: StreamRedactor, run: Any, body: bytes) -> bytes:
    """``body`` of a content-block token with each block's streamed text redacted joined
    to the run's stream, as a ``str`` token is (``StreamRedactor``): a secret split
    across chunks must not be written in fragments. The chunk's message repeats the
    blocks: they are redacted alike. Returns ``body`` itself when nothing changed."""
    try:
        parts = orjson.loads(body)
        data = parts["data"]
        blocks = data["token"]
    except Exception:  # not JSON (a placeholder): the body's own scan applies
        return body
    changed = _stream_fields(streams, run, blocks, _BLOCK_TEXT)
    if not changed:
        return body
    chunk = data.get("chunk")
    message = chunk.get("message") if type(chunk) is dict else None
    for holder, key in ((message, "content"), (chunk, "text")):
        value = holder.get(key) if type(holder) is dict else None
        if type(value) is str:
            for old, new in changed.items():
                value = value.replace(old, new)
            holder[key] = value  # type: ignore[index]
        else:
            _replace_fields(changed, value, _BLOCK_TEXT)
    return _rewritten(parts, body)


#: A chunk streaming a tool call (OpenAI's models: its arguments in pieces, the token
#: empty), and the stream its arguments are joined in (per run, beside the text's).
TOOL_CALL_CHUNKS: Final = b'"tool_call_chunks":[{'
ARGS: Final = "tool_call_args"
_ARGS_FIELD: Final = ("args",)


def stream_tool_args(streams: StreamRedactor, run: Any, body: bytes) -> bytes:
    """``body`` with the pieces of tool-call arguments in its message's
    ``tool_call_chunks`` redacted joined to the run's stream of arguments (as a token
    is joined to its run's text), and the same pieces in ``invalid_tool_calls``."""
    try:
        parts = orjson.loads(body)
        message = parts["data"]["chunk"]["message"]
        chunks = message["tool_call_chunks"]
    except Exception:  # not the shape LangChain writes: the body's own scan applies
        return body
    changed = _stream_fields(streams, (run, ARGS), chunks, _ARGS_FIELD)
    if not changed:
        return body
    _replace_fields(changed, message.get("invalid_tool_calls"), _ARGS_FIELD)
    return _rewritten(parts, body)
