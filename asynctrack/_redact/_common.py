"""What the redaction modules share: the marker, span splicing, cache bounds."""

from __future__ import annotations

import operator
from typing import Final

__all__ = ["CACHED_KEY_MAX", "CACHE_MAX", "QUOTED_REDACTED", "REDACTED", "REDACTED_BYTES", "splice"]

REDACTED: Final = "[REDACTED]"
REDACTED_BYTES: Final = REDACTED.encode()
QUOTED_REDACTED: Final = b'"' + REDACTED_BYTES + b'"'
_FEW_SPANS: Final = 8  # past this many spans, splice() tries its C path
CACHE_MAX: Final = 10_000  # distinct keys or texts judged and remembered (they can be data)
CACHED_KEY_MAX: Final = 1024  # longer keys are judged each time, not remembered (bytes held)


def splice(text: bytes, spans: list[tuple[int, int, bytes]]) -> bytes:
    """``text`` with each span (non-empty) replaced; overlapping spans merge (the union is
    redacted, marked once)."""
    spans.sort()
    if len(spans) > _FEW_SPANS:
        # Many hits (a hostile text): C loops when the spans are apart and all marked alike.
        starts, ends, marks = zip(*spans, strict=True)
        apart = all(map(operator.lt, starts, ends)) and all(map(operator.le, ends, starts[1:]))
        if apart and len(set(marks)) == 1:
            mark: bytes = marks[0]
            keep = map(slice, (0, *ends), (*starts, len(text)))
            return mark.join(map(text.__getitem__, keep))
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
