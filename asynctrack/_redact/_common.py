"""What the redaction modules share: the marker, span splicing, cache bounds."""

from __future__ import annotations

from typing import Final

__all__ = ["CACHE_MAX", "QUOTED_REDACTED", "REDACTED", "REDACTED_BYTES", "splice"]

REDACTED: Final = "[REDACTED]"
REDACTED_BYTES: Final = REDACTED.encode()
QUOTED_REDACTED: Final = b'"' + REDACTED_BYTES + b'"'
CACHE_MAX: Final = 10_000  # distinct keys or texts judged and remembered (they can be data)


def splice(text: bytes, spans: list[tuple[int, int, bytes]]) -> bytes:
    """``text`` with each span replaced; overlapping spans merge (the union is redacted)."""
    spans.sort()
    out = []
    last = 0
    for start, end, replacement in spans:
        if end <= last:
            continue
        # Overlapping the previous span: extend it (its marker is already written).
        out.append(text[last:start] if start >= last else b"")
        out.append(replacement if start >= last else b"")
        last = end
    out.append(text[last:])
    return b"".join(out)
