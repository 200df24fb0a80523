"""The open batch: encoded lines gathered until a count, a size or an age seals them.

A batch is sealed *before* the line that would take it past ``max_batch_bytes`` is
added (so no file is over the limit unless one event alone is), once it holds
``max_batch_events`` lines or ``max_batch_bytes`` bytes, once its oldest line has
waited ``batch_interval`` seconds, and at every flush. Sealing joins the lines,
gzips them if asked (``mtime=0``: a re-encoded batch has the same bytes) and gives
the batch its number and key. Worker thread only.
"""

from __future__ import annotations

import bisect
import dataclasses
import gzip
import itertools
import time

from .._config import TrackerConfig
from .._layout import Layout
from .._sinks._base import Batch
from ._statistics import Counters

__all__ = ["Batcher"]


@dataclasses.dataclass(slots=True)
class _OpenBatch:
    lines: list[bytes] = dataclasses.field(default_factory=list)
    seqs: list[int] = dataclasses.field(default_factory=list)
    size: int = 0
    first_seq: int = -1
    last_seq: int = -1
    opened: float = 0.0  # monotonic
    opened_wall: float = 0.0


class Batcher:
    """Gathers lines into batches and numbers them.

    Args:
        config: the batch limits and ``gzip``.
        layout: names the batches.
        counters: ``pending_bytes`` counts the lines held here.
    """

    def __init__(self, config: TrackerConfig, layout: Layout, counters: Counters) -> None:
        self._max_events = config.max_batch_events
        self._max_bytes = config.max_batch_bytes
        self._interval = config.batch_interval
        self._gzip = config.gzip
        self._layout = layout
        self._counters = counters
        self._open = _OpenBatch()
        self._next = 0

    @property
    def open_events(self) -> int:
        """Lines in the open batch."""
        return len(self._open.lines)

    @property
    def last_number(self) -> int:
        """The number of the last batch sealed (or reserved); -1 before any."""
        return self._next - 1

    def reserve(self) -> int:
        """A batch number for a batch made elsewhere (one recovered from the spool)."""
        number = self._next
        self._next += 1
        return number

    def add(self, seq: int, line: bytes) -> list[tuple[int, Batch]] | None:
        """Add one line; the batches it sealed, or ``None`` (most calls: none)."""
        return self.add_many([seq], [line]) or None

    def add_many(self, seqs: list[int], lines: list[bytes]) -> list[tuple[int, Batch]]:
        """Add lines in order, with C loops per line; the batches sealed, in order.

        A batch is sealed before the line that would take it past ``max_batch_bytes``
        (unless it is empty: one line alone over the limit is a batch of its own), and
        once it holds ``max_batch_events`` lines or ``max_batch_bytes`` bytes.
        """
        sealed: list[tuple[int, Batch]] = []
        start, n = 0, len(lines)
        max_bytes = self._max_bytes
        while start < n:
            batch = self._open
            room = min(n, start + self._max_events - len(batch.lines))
            totals = list(itertools.accumulate(map(len, itertools.islice(lines, start, room))))
            take = bisect.bisect_right(totals, max_bytes - batch.size)
            if take == 0:
                if batch.lines:
                    sealed += self.seal()  # seal first: no file over the limit
                    continue
                take = 1  # one line alone over the limit: a batch of its own
            end = start + take
            if not batch.lines:
                batch.opened = time.monotonic()
                batch.opened_wall = time.time()
                batch.first_seq = seqs[start]
            batch.lines += lines[start:end]
            batch.seqs += seqs[start:end]
            size = totals[take - 1]
            batch.size += size
            batch.last_seq = seqs[end - 1]
            self._counters.pending_bytes += size
            if len(batch.lines) >= self._max_events or batch.size >= max_bytes:
                sealed += self.seal()
            start = end
        return sealed

    def seal(self) -> list[tuple[int, Batch]]:
        """Seal the open batch: ``[(number, batch)]``, or ``[]`` if it is empty."""
        batch = self._open
        if not batch.lines:
            return []
        self._open = _OpenBatch()
        number = self.reserve()
        data = b"".join(batch.lines)
        if self._gzip:
            data = gzip.compress(data, compresslevel=6, mtime=0)
        self._counters.pending_bytes += len(data) - batch.size
        return [
            (
                number,
                Batch(
                    key=self._layout.batch_key(number, batch.opened_wall),
                    data=data,
                    events=len(batch.lines),
                    first_seq=batch.first_seq,
                    last_seq=batch.last_seq,
                    gzip=self._gzip,
                    seqs=batch.seqs,
                ),
            )
        ]

    def due_in(self, now: float) -> float | None:
        """Seconds until the open batch is due by age (<= 0: due now); ``None`` if empty."""
        if not self._open.lines:
            return None
        return self._open.opened + self._interval - now
