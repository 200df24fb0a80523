"""The GenAI client metrics, as cumulative OTLP histograms (``/v1/metrics``).

Semantic conventions 1.41.0, for model calls (chat and text completion runs):

- ``gen_ai.client.operation.duration`` (s): the call's duration; ``error.type`` on failures;
- ``gen_ai.client.token.usage`` ({token}): input and output tokens (``gen_ai.token.type``);
- ``gen_ai.client.operation.time_to_first_chunk`` (s): streamed calls.

Each point carries ``gen_ai.operation.name``, ``gen_ai.provider.name``,
``gen_ai.request.model`` and ``gen_ai.response.model`` (when known), with the
conventions' bucket boundaries. Cumulative, one point per series (metric and
attributes) in each request: a request that is lost costs nothing the next one does not
carry. The point's times say what it covers:

- live (the exporter): one cumulative stream, as the OTel SDK's, from the exporter's
  start to the request. A worker process starts after the application's first calls
  were recorded, so the stream starts at the first counted call's start when that is
  earlier; from then on its start is fixed. Calls are counted in the order they ended
  (their measurement is at their end, as the OTel SDK records a duration), so every
  call counted ended within the point's window;
- backfill (``asynctrack export``): from the earliest start to the latest end of the
  model calls the point counts. Runs recorded earlier are counted at their own times,
  not at the time they are sent again.

The messages are written by hand, like the spans (``_protobuf``)::

    ExportMetricsServiceRequest { repeated ResourceMetrics resource_metrics = 1; }
    ResourceMetrics { Resource resource = 1; repeated ScopeMetrics scope_metrics = 2; }
    ScopeMetrics    { InstrumentationScope scope = 1; repeated Metric metrics = 2; string schema_url = 3; }
    Metric          { string name = 1; string description = 2; string unit = 3; Histogram histogram = 9; }
    Histogram       { repeated HistogramDataPoint data_points = 1; AggregationTemporality temporality = 2; }
    HistogramDataPoint { fixed64 start_time_unix_nano = 2; fixed64 time_unix_nano = 3;
                         fixed64 count = 4; double sum = 5; repeated fixed64 bucket_counts = 6;
                         repeated double explicit_bounds = 7; repeated KeyValue attributes = 9;
                         double min = 11; double max = 12; }
"""

from __future__ import annotations

import bisect
import functools
import itertools
import operator
import struct
import time
from collections.abc import Sequence
from itertools import compress
from typing import Final

from ._protobuf import attribute, repeated, text, wrap

__all__ = ["Key", "Metrics", "Series"]

_SECONDS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_TOKENS: Final = tuple(float(4**n) for n in range(14))  # 1, 4, 16, ... 67,108,864
_CUMULATIVE: Final = 2
_bisect_right: Final = bisect.bisect_right
_reduce: Final = functools.reduce
_add: Final = operator.add
_is_not: Final = operator.is_not
_sub: Final = operator.sub
_truediv: Final = operator.truediv
_BILLIONS: Final = itertools.repeat(1e9)
_NONES: Final = itertools.repeat(None)
_START: Final = operator.itemgetter(0)  # of a kept call (_Call)
_END: Final = operator.itemgetter(1)
_TOKENS_IN: Final = operator.itemgetter(2)
_TOKENS_OUT: Final = operator.itemgetter(3)
_FIRST_CHUNK_OF: Final = operator.itemgetter(4)
_DURATION: Final = ("gen_ai.client.operation.duration", "GenAI operation duration.", "s", _SECONDS)
_USAGE: Final = ("gen_ai.client.token.usage", "Number of input and output tokens used.", "{token}", _TOKENS)
_FIRST_CHUNK: Final = (
    "gen_ai.client.operation.time_to_first_chunk",
    "Time to receive the first chunk of a streamed response.",
    "s",
    _SECONDS,
)

Key = tuple[tuple[str, str], ...]  # a point's attributes
_INPUT: Final = ("gen_ai.token.type", "input")
_OUTPUT: Final = ("gen_ai.token.type", "output")


class _Histogram:
    __slots__ = ("bounds", "buckets", "count", "first_ns", "last_ns", "max", "min", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.first_ns = 2**64 - 1  # the earliest start of the calls counted
        self.last_ns = 0  # the latest end

    def add(self, value: float, start_ns: int, end_ns: int) -> None:
        """Count one call's ``value``; the call ran from ``start_ns`` to ``end_ns``."""
        self.fold((value,), start_ns, end_ns)

    def fold(self, values: Sequence[float], first_ns: int, last_ns: int) -> None:
        """Count calls' ``values`` (in the order the calls ended); the calls ran from
        ``first_ns`` (the earliest start) to ``last_ns`` (the latest end).

        The values are sorted once: a bucket's count is where its bound falls among them,
        the least and the greatest are at the ends. The sum adds them in their order, as
        one addition per call would.
        """
        ordered = sorted(values)
        if not ordered:
            return
        buckets = self.buckets
        below = 0
        for index, bound in enumerate(self.bounds):
            # bisect_left(bounds, value) is the first bound >= value: a value is in the
            # bucket of the first bound it does not exceed.
            upto = _bisect_right(ordered, bound, below)
            buckets[index] += upto - below
            below = upto
        buckets[-1] += len(ordered) - below
        self.count += len(ordered)
        self.sum = _reduce(_add, values, self.sum)
        if ordered[0] < self.min:  # noqa: PLR1730 - once per fold
            self.min = ordered[0]
        top = max(values)  # the first of equal greatest values, as one comparison per call keeps
        if top > self.max:  # noqa: PLR1730 - once per fold
            self.max = top
        if first_ns < self.first_ns:  # noqa: PLR1730 - once per fold
            self.first_ns = first_ns
        if last_ns > self.last_ns:  # noqa: PLR1730 - once per fold
            self.last_ns = last_ns


#: A model setup's attributes, its four histograms (duration, input and output tokens,
#: time to first chunk) and the calls counted in them not yet folded in (``Metrics.series``).
Series = tuple[Key, "_Histogram", "_Histogram", "_Histogram", "_Histogram", "list[_Call]"]
#: A call not yet folded into its series' histograms (failed ones are counted at once):
#: start, end, tokens in and out (or None), time to first chunk (or None).
_Call = tuple[int, int, int | None, int | None, float | None]
#: Calls held per series before they are folded in (also at every request).
_FOLD_EVERY: Final = 1024


class Metrics:
    """Histograms of model calls, fed by the span assembler (one thread at a time).

    Args:
        resource: the resource's attributes, encoded (``_protobuf.attribute``).
        scope: the ``InstrumentationScope`` field (``_protobuf.scope``).
        schema_url: the conventions' schema URL.
        backfill: each point covers the calls it counts (their earliest start to their
            latest end), for runs recorded earlier; else the exporter's start (or the
            first counted call's, if earlier) to the request: a live cumulative stream.
    """

    def __init__(
        self, resource: Sequence[bytes], scope: bytes, schema_url: str, *, backfill: bool = False
    ) -> None:
        self.start_ns = time.time_ns()
        self.backfill = backfill
        self._resource = resource
        self._scope = scope
        self._schema_url = schema_url
        self._points: dict[tuple[str, Key], _Histogram] = {}
        self._calls: dict[Key, Series] = {}
        self._counted = False  # a model call was counted
        self.changed = False

    @property
    def points(self) -> int:
        """The number of data points a request holds (one per metric and attribute set)."""
        self._fold()
        return sum(1 for histogram in self._points.values() if histogram.count)

    def _histogram(self, metric: tuple[str, str, str, tuple[float, ...]], key: Key) -> _Histogram:
        histogram = self._points.get((metric[0], key))
        if histogram is None:
            histogram = self._points[metric[0], key] = _Histogram(metric[3])
        return histogram

    def series(self, common: Key) -> Series:
        """The histograms a model call with attributes ``common`` is counted in (for
        ``model_call``; a histogram not yet observed has no count: it is not sent)."""
        found = self._calls.get(common)
        if found is None:
            found = self._calls[common] = (
                common,
                self._histogram(_DURATION, common),
                self._histogram(_USAGE, (*common, _INPUT)),
                self._histogram(_USAGE, (*common, _OUTPUT)),
                self._histogram(_FIRST_CHUNK, common),
                [],
            )
        return found

    def model_call(
        self,
        series: Series,
        start_ns: int,
        end_ns: int,
        error_type: str | None,
        tokens: tuple[int, int] | None,
        first_chunk: float | None,
    ) -> None:
        """Record one model call that ran from ``start_ns`` to ``end_ns`` (Unix ns) in
        ``series`` (``series()`` of its operation, provider and models).

        The call is kept in its series and folded into the histograms by the hundreds
        (``_FOLD_EVERY``, and at every request): one sort of the values per histogram
        instead of a bucket search and five updates per call and histogram.
        """
        if end_ns < start_ns:  # noqa: PLR1730 - a comparison, not a max() call: once per model call
            end_ns = start_ns
        if not self._counted:  # the first call counted: the live stream starts by then
            self._counted = True
            self.start_ns = min(self.start_ns, start_ns)
        self.changed = True
        calls = series[5]
        if error_type:  # rare: counted at once, after the calls kept (the sums keep their order)
            if calls:
                _fold(series)
            self._histogram(_DURATION, (*series[0], ("error.type", error_type))).add(
                (end_ns - start_ns) / 1e9, start_ns, end_ns
            )
            if tokens is not None:
                series[2].add(float(tokens[0]), start_ns, end_ns)
                series[3].add(float(tokens[1]), start_ns, end_ns)
            if first_chunk is not None:
                series[4].add(first_chunk, start_ns, end_ns)
            return
        if tokens is None:
            calls.append((start_ns, end_ns, None, None, first_chunk))
        else:
            calls.append((start_ns, end_ns, tokens[0], tokens[1], first_chunk))
        if len(calls) >= _FOLD_EVERY:
            _fold(series)

    def _fold(self) -> None:
        """Fold every series' calls into its histograms."""
        for series in self._calls.values():
            if series[5]:
                _fold(series)

    def request(self) -> bytes:
        """An ``ExportMetricsServiceRequest`` with every point so far (cumulative)."""
        self._fold()
        now = time.time_ns()
        by_metric: dict[str, list[bytes]] = {}
        for (name, key), histogram in self._points.items():
            if not histogram.count:
                continue
            if self.backfill:
                start_ns, time_ns = histogram.first_ns, histogram.last_ns
            else:
                start_ns, time_ns = self.start_ns, now
            by_metric.setdefault(name, []).append(self._point(key, histogram, start_ns, time_ns))
        metrics = []
        for name, description, unit, _bounds in (_DURATION, _USAGE, _FIRST_CHUNK):
            points = by_metric.get(name)
            if points:
                data = b"".join(wrap(b"\x0a", p) for p in points) + b"\x10" + bytes([_CUMULATIVE])
                metric = (
                    wrap(b"\x0a", text(name))
                    + wrap(b"\x12", text(description))
                    + wrap(b"\x1a", text(unit))
                    + wrap(b"\x4a", data)
                )
                metrics.append(wrap(b"\x12", metric))
        scope_metrics = self._scope + b"".join(metrics) + wrap(b"\x1a", text(self._schema_url))
        resource_metrics = wrap(b"\x0a", repeated(b"\x0a", self._resource)) + wrap(b"\x12", scope_metrics)
        self.changed = False
        return wrap(b"\x0a", resource_metrics)

    @staticmethod
    def _point(key: Key, histogram: _Histogram, start_ns: int, time_ns: int) -> bytes:
        bounds = histogram.bounds
        return (
            b"\x11"
            + struct.pack("<Q", start_ns)
            + b"\x19"
            + struct.pack("<Q", time_ns)
            + b"\x21"
            + struct.pack("<Q", histogram.count)
            + b"\x29"
            + struct.pack("<d", histogram.sum)
            + wrap(b"\x32", struct.pack(f"<{len(histogram.buckets)}Q", *histogram.buckets))
            + wrap(b"\x3a", struct.pack(f"<{len(bounds)}d", *bounds))
            + repeated(b"\x4a", (attribute(k, v) for k, v in key))
            + b"\x59"
            + struct.pack("<d", histogram.min)
            + b"\x61"
            + struct.pack("<d", histogram.max)
        )


def _fold(series: Series) -> None:
    """Fold the calls kept in ``series`` into its histograms, in the order they were counted.

    The calls' fields are taken out by ``map`` of an item getter each (``zip(*calls)`` would
    make an iterator per call), and the earliest start and latest end found once for the
    histograms that count every call.
    """
    calls = series[5]
    starts = list(map(_START, calls))
    ends = list(map(_END, calls))
    tokens_in = list(map(_TOKENS_IN, calls))
    tokens_out = list(map(_TOKENS_OUT, calls))
    first_chunks = list(map(_FIRST_CHUNK_OF, calls))
    calls.clear()
    first, last = min(starts), max(ends)
    # (end_ns - start_ns) / 1e9 of each call, as one call at a time computes it.
    series[1].fold(list(map(_truediv, map(_sub, ends, starts), _BILLIONS)), first, last)
    for histogram, counts in ((series[2], tokens_in), (series[3], tokens_out)):
        if None not in counts:
            histogram.fold(list(map(float, counts)), first, last)
        elif counts.count(None) != len(counts):  # some calls without usage
            _fold_some(histogram, counts, starts, ends)
    if first_chunks.count(None) != len(first_chunks):  # streamed calls
        _fold_some(series[4], first_chunks, starts, ends)


def _fold_some(
    histogram: _Histogram, values: list[float | int | None], starts: list[int], ends: list[int]
) -> None:
    """Fold the values that are not ``None`` (the calls that have one)."""
    held = list(map(_is_not, values, _NONES))
    kept_starts, kept_ends = list(compress(starts, held)), list(compress(ends, held))
    histogram.fold(list(map(float, compress(values, held))), min(kept_starts), max(kept_ends))  # type: ignore[arg-type]  # no None
