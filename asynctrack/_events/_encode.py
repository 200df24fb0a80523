"""Worker side: captured bodies and envelopes -> redacted JSON lines.

The handler captured each event's arguments as JSON bytes already (``_capture``),
so most of the work here is text: the body is redacted as JSON text
(``_redact.Redactor.json``, linear in its length) and spliced behind the envelope.
Only when a credential-like key holds a list or an object is the body parsed, the
value replaced, and the text written again (``Redactor.structure``).

``encode()`` takes any event dict (the ``redact`` hook's result, the engine's own
events): it is captured with the same careful rules as the handler's arguments
(placeholders, cut fields, valid UTF-8), then redacted the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import repeat
from typing import Any, Final

import orjson

from .._capture import MARK, Capturer, placeholder, valid_text
from .._config import TrackerConfig
from .._redact import REDACTED, Redactor
from .._redact._redactor import SAME_START

__all__ = ["REDACTED", "SPLICE", "Encoder", "TranslateFailed", "placeholder"]

_DATA: Final = b'{"data":{'
SPLICE: Final = len(_DATA)  # where the fields of data start in a captured body
assert SPLICE <= SAME_START  # Redactor.firsts: the bodies that begin otherwise (prepare)
_FAILED: Final = b'"' + MARK.encode() + b'":"unencodable"'
_MARK_BYTE: Final = MARK.encode()[:1]  # b"$"


class TranslateFailed(Exception):
    """What a translator's ``many`` gives for a record it could not translate: the
    exception (``cause``), and what of the event it could read, which the worker's
    ``translate_failed`` placeholder line carries: the envelope fields (``envelope``)
    and the event's kind (``kind``)."""

    def __init__(self, cause: Exception, envelope: dict[str, Any], kind: str | None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.envelope = envelope
        self.kind = kind


class Encoder:
    """Redacts and assembles JSON lines under one configuration (worker only).

    Attributes:
        placeholders: events written with a placeholder for a value that failed
            (counted here; the engine reports them as ``encode_errors``).
    """

    def __init__(self, config: TrackerConfig) -> None:
        self.redactor = Redactor(config.redact_keys, config.redact_patterns, config.redact_detectors)
        self._capture = Capturer(config.max_field_bytes, config.max_depth)
        self.placeholders = 0
        #: The bodies of the chunk at hand (by identity) that are written as they are:
        #: ``data`` first, no placeholder, nothing to redact (see ``prepare``).
        self.plain: dict[int, bytes] = {}
        self.filled_plain = False

    def prepare(
        self,
        bodies: list[bytes],
        shared: list[bytes | int | None] | None = None,
        filled: list[bytes] | None = None,
        fillers: list[bytes] = [],  # noqa: B006 - read only
    ) -> bytes:
        """Scan a chunk of bodies at once; ``shared``: what each body shares with others,
        ``filled`` and ``fillers``: bodies of streamed tokens known to be the template of
        one of ``bodies`` filled with their token (see ``Redactor.prepare``). Returns the
        bodies joined (by ``\x1e``: a byte JSON text never holds), for searches of the
        whole chunk."""
        redactor = self.redactor
        joined = redactor.prepare(bodies, shared, filled, fillers)
        # Every body starts with '{"data":{' (the splice needs it: one C loop over the
        # bodies that do not begin as one before them; a count of the separator in the
        # joined chunk reads every byte), and none holds a placeholder (one search of
        # the joined chunk).
        starts = all(map(bytes.startswith, redactor.firsts, repeat(_DATA)))
        # (A search of its first byte first, '$': memchr, where the placeholder's text,
        # whose last byte is '"', is searched a few bytes a step.)
        failed = joined.find(_MARK_BYTE) != -1 and joined.find(_FAILED) != -1
        self.plain = redactor.unchanged() if starts and not failed else {}
        #: ``filled`` bodies all plain too, but left out of ``plain`` (see ``keep_filled``).
        self.filled_plain = starts and not failed and redactor.filled_plain
        return joined

    def keep_filled(self) -> None:
        """Add the ``filled`` bodies of the chunk at hand to ``plain`` (and to what
        ``Redactor.json`` knows) if they were left out (``filled_plain``): for a caller
        that writes them one by one."""
        self.redactor.keep_filled()  # plain is the redactor's dict (Redactor.unchanged)
        self.filled_plain = False

    def head(self, envelope: dict[str, Any]) -> bytes:
        """The envelope as a JSON object (a lone surrogate in a string becomes U+FFFD)."""
        try:
            return orjson.dumps(envelope)
        except orjson.JSONEncodeError:
            return orjson.dumps({k: valid_text(v) if type(v) is str else v for k, v in envelope.items()})

    def encode(self, event: Mapping[str, Any]) -> bytes:
        """``event`` (any dict) as one redacted JSON line ending in ``\\n``. Never raises."""
        body = self._capture.careful(event)
        return self.redact(body) + b"\n"

    def redact(self, body: bytes, own_token: bool = False) -> bytes:
        """``body`` (JSON text) with the redaction spec applied.

        ``own_token``: the body's first key in ``data`` is the library's ``token``
        field (streamed content blocks), not a credential name.
        """
        if body.find(_FAILED) != -1:
            self.placeholders += 1
        redactor = self.redactor
        out = redactor.json(body, own_token)
        if out is not None:
            return out
        try:  # a credential key holds a list or object: replace it in the parsed value
            parsed = redactor.structure(orjson.loads(body), own_token)
            out = redactor.json(orjson.dumps(parsed), own_token)
        except Exception:  # not JSON after all (never seen): keep it redacted
            return orjson.dumps({"data": placeholder("unredactable")})
        return out if out is not None else orjson.dumps({"data": placeholder("unredactable")})

    def _data_first(self, body: object) -> bytes:
        """``body`` rewritten with ``data`` first and an object (the splice needs both)."""
        try:
            parts = orjson.loads(body) if type(body) is bytes else None
        except orjson.JSONDecodeError:
            parts = None
        if not isinstance(parts, dict):
            return self._capture.careful({"data": placeholder("unencodable", body)})
        data = parts.pop("data", None)
        return orjson.dumps({"data": data if isinstance(data, dict) else {"value": data}, **parts})

    def assemble(
        self,
        envelope: dict[str, Any],
        body: bytes,
        error: dict[str, Any] | None = None,
        token: str | None = None,
        own_token: bool = False,
    ) -> bytes:
        """One JSON line: the envelope's fields, then the captured body's.

        ``error`` (the formatted exception of an error event) and ``token`` (a
        streamed token, already redacted by the caller) are added first in
        ``data``. ``own_token``: as ``redact()``. Never raises.
        """
        head = self.head(envelope)
        if type(body) is not bytes or not body.startswith(_DATA):
            body = self._data_first(body)
        return self.splice(head, self.redact(body, own_token), error, token)

    def splice(
        self, head: bytes, body: bytes, error: dict[str, Any] | None = None, token: str | None = None
    ) -> bytes:
        """One JSON line: the envelope ``head``'s fields, then the fields of ``body`` (a
        redacted body, ``data`` first), ``token`` and ``error`` added first in ``data``
        (see ``assemble``). Never raises."""
        if error is None and token is None:
            return b"".join((head[:-1], b",", body[1:], b"\n"))
        parts = [head[:-1], b',"data":{']
        if token is not None:
            try:
                text = orjson.dumps(token)
            except orjson.JSONEncodeError:
                text = orjson.dumps(valid_text(token))
            parts += (b'"token":', text, b",")
        if error is not None:
            parts += (b'"error":', self.redact(self._capture(error)), b",")
        if body[SPLICE] == 0x7D:  # data was empty: no comma after the spliced fields
            parts[-1] = b""
        parts += (body[SPLICE:], b"\n")
        return b"".join(parts)
