"""The GenAI client metrics, as cumulative OTLP histograms (``/v1/metrics``).

Semantic conventions 1.41.0, for model calls (chat and text completion runs):

- ``gen_ai.client.operation.duration`` (s): the call's duration; ``error.type`` on failures;
- ``gen_ai.client.token.usage`` ({token}): input and output tokens (``gen_ai.token.type``);
- ``gen_ai.client.operation.time_to_first_chunk`` (s): streamed calls.

Each point carries ``gen_ai.operation.name``, ``gen_ai.provider.name``,
``gen_ai.request.model`` and ``gen_ai.response.model`` (when known), with the
conventions' bucket boundaries. Cumulative from the exporter's start: a request that is
lost costs nothing the next one does not carry. The messages are written by hand, like
the spans (``_protobuf``)::

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
import struct
import time
from collections.abc import Iterable
from typing import Final

from ._protobuf import attribute, repeated, text, wrap

__all__ = ["Metrics"]

_SECONDS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_TOKENS: Final = tuple(float(4**n) for n in range(14))  # 1, 4, 16, ... 67,108,864
_CUMULATIVE: Final = 2
_DURATION: Final = ("gen_ai.client.operation.duration", "GenAI operation duration.", "s", _SECONDS)
_USAGE: Final = ("gen_ai.client.token.usage", "Number of input and output tokens used.", "{token}", _TOKENS)
_FIRST_CHUNK: Final = (
    "gen_ai.client.operation.time_to_first_chunk",
    "Time to receive the first chunk of a streamed response.",
    "s",
    _SECONDS,
)

Key = tuple[tuple[str, str], ...]  # a point's attributes


class _Histogram:
    __slots__ = ("bounds", "buckets", "count", "max", "min", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")

    def add(self, value: float) -> None:
        self.buckets[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value
        if value < self.min:  # noqa: PLR1730 - a comparison, not a call: once per model call and metric
            self.min = value
        if value > self.max:  # noqa: PLR1730 - as above
            self.max = value


class Metrics:
    """Histograms of model calls, fed by the span assembler (one thread at a time)."""

    def __init__(self) -> None:
        self.start_ns = time.time_ns()
        self._points: dict[tuple[str, Key], _Histogram] = {}
        self._calls: dict[Key, tuple[_Histogram, _Histogram, _Histogram, _Histogram]] = {}
        self.changed = False

    def _histogram(self, metric: tuple[str, str, str, tuple[float, ...]], key: Key) -> _Histogram:
        histogram = self._points.get((metric[0], key))
        if histogram is None:
            histogram = self._points[metric[0], key] = _Histogram(metric[3])
        return histogram

    def model_call(
        self,
        common: Key,
        *,
        duration: float,
        error_type: str | None,
        tokens: tuple[int, int] | None,
        first_chunk: float | None,
    ) -> None:
        """Record one ended model call; ``common``: its operation, provider and models."""
        histograms = self._calls.get(common)
        if histograms is None:
            # The four points of one model setup, found by one lookup from then on (a
            # histogram not yet observed has no count: it is not sent).
            histograms = self._calls[common] = (
                self._histogram(_DURATION, common),
                self._histogram(_USAGE, (*common, ("gen_ai.token.type", "input"))),
                self._histogram(_USAGE, (*common, ("gen_ai.token.type", "output"))),
                self._histogram(_FIRST_CHUNK, common),
            )
        if error_type:
            self._histogram(_DURATION, (*common, ("error.type", error_type))).add(duration)
        else:
            histograms[0].add(duration)
        if tokens is not None:
            histograms[1].add(float(tokens[0]))
            histograms[2].add(float(tokens[1]))
        if first_chunk is not None:
            histograms[3].add(first_chunk)
        self.changed = True

    def request(self, resource: Iterable[bytes], scope: bytes, schema_url: str) -> bytes:
        """An ``ExportMetricsServiceRequest`` with every point so far (cumulative)."""
        now = time.time_ns()
        by_metric: dict[str, list[bytes]] = {}
        for (name, key), histogram in self._points.items():
            if not histogram.count:
                continue
            by_metric.setdefault(name, []).append(self._point(key, histogram, now))
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
        scope_metrics = scope + b"".join(metrics) + wrap(b"\x1a", text(schema_url))
        resource_metrics = wrap(b"\x0a", repeated(b"\x0a", resource)) + wrap(b"\x12", scope_metrics)
        self.changed = False
        return wrap(b"\x0a", resource_metrics)

    def _point(self, key: Key, histogram: _Histogram, now: int) -> bytes:
        bounds = histogram.bounds
        return (
            b"\x11"
            + struct.pack("<Q", self.start_ns)
            + b"\x19"
            + struct.pack("<Q", now)
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
