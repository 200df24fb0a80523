"""GenAI client metrics (``/v1/metrics``): the live export's, the backfill's, and receivers
that take none.

Against the loopback receiver that decodes every request with ``opentelemetry-proto``
(``ExportMetricsServiceRequest``), on real ChatOpenAI runs (the loopback stub, and a
call whose connection is refused). The backfill's points are checked against what the
live export sent for the same runs: counts, sums, bucket counts, bounds, attributes,
and their times against the runs' spans.
"""

from __future__ import annotations

import bisect
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from _infra.openai_stub import OpenAIStub
from _infra.otlp_receiver import OTLPReceiver, attributes
from export_workloads import failing_chain, failing_model_call, weather_agent
from hypothesis import given, settings
from hypothesis import strategies as st

from asynctrack import AsyncTracker, OTLPExporter, TrackerConfig
from asynctrack._cli import main
from asynctrack._export import _metrics
from asynctrack._export._metrics import Metrics

WAIT = 30.0
DURATION = "gen_ai.client.operation.duration"
USAGE = "gen_ai.client.token.usage"
FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"

Series = tuple[str, tuple[tuple[str, Any], ...]]  # a metric's name and a point's attributes


def _tracker(
    destination: Path, exporter: OTLPExporter, worker: str = "process", run_name: str = "r1"
) -> AsyncTracker:
    return AsyncTracker(
        destination,
        experiment_name="exp",
        run_name=run_name,
        config=TrackerConfig(worker=worker),
        exporters=[exporter],
    )


def _points(request: Any) -> dict[Series, Any]:
    """A metrics request's data points by series (every metric here is a histogram)."""
    (resource_metrics,) = request.resource_metrics
    (scope_metrics,) = resource_metrics.scope_metrics
    points: dict[Series, Any] = {}
    for metric in scope_metrics.metrics:
        assert metric.histogram.aggregation_temporality == 2  # cumulative
        for point in metric.histogram.data_points:
            series = (metric.name, tuple(sorted(attributes(point).items())))
            assert series not in points  # one point per series
            points[series] = point
    return points


def _instance(resource_owner: Any) -> str:
    """The ``service.instance.id`` of a request's resource (a ``ResourceSpans`` or ``ResourceMetrics``)."""
    return str(attributes(resource_owner.resource)["service.instance.id"])


def _model_spans(receiver: OTLPReceiver) -> dict[Series, list[Any]]:
    """The live export's model-call spans, grouped by the metric series they count in."""
    groups: dict[Series, list[Any]] = {}
    for span in receiver.spans:
        found = attributes(span)
        if found.get("gen_ai.operation.name") != "chat":
            continue
        common = {
            k: found[k]
            for k in ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model")
            if k in found
        }
        if "gen_ai.response.model" in found:
            common["gen_ai.response.model"] = found["gen_ai.response.model"]
        error = {"error.type": found["error.type"]} if "error.type" in found else {}
        series = [(DURATION, {**common, **error})]
        if "gen_ai.usage.input_tokens" in found:
            series += [(USAGE, {**common, "gen_ai.token.type": kind}) for kind in ("input", "output")]
        if "gen_ai.response.time_to_first_chunk" in found:
            series.append((FIRST_CHUNK, common))
        for name, attrs in series:
            groups.setdefault((name, tuple(sorted(attrs.items()))), []).append(span)
    return groups


def test_metrics_of_the_model_calls(tmp_path: Path, receiver: OTLPReceiver, stub: OpenAIStub) -> None:
    tracker = _tracker(tmp_path / "logs", OTLPExporter(receiver.endpoint))
    weather_agent(stub.url, [tracker])
    tracker.close(timeout=WAIT)
    requests = receiver.wait_for_metrics(1)
    last = requests[-1]  # cumulative: the last request holds every point
    (resource_metrics,) = last.resource_metrics
    assert attributes(resource_metrics.resource)["service.name"] == "asynctrack"
    (scope_metrics,) = resource_metrics.scope_metrics
    metrics = {m.name: m for m in scope_metrics.metrics}
    assert set(metrics) == {
        "gen_ai.client.operation.duration",
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.time_to_first_chunk",
    }
    duration = metrics["gen_ai.client.operation.duration"]
    assert duration.unit == "s"
    assert duration.histogram.aggregation_temporality == 2  # cumulative
    (point,) = duration.histogram.data_points
    assert point.count == 2  # the two chat calls (the second streamed)
    assert sum(point.bucket_counts) == 2
    assert list(point.explicit_bounds)[:3] == [0.01, 0.02, 0.04]
    assert attributes(point) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",
    }
    usage = {
        attributes(p)["gen_ai.token.type"]: p
        for p in metrics["gen_ai.client.token.usage"].histogram.data_points
    }
    spans = [attributes(s) for s in receiver.spans if s.name.startswith("chat")]
    assert usage["input"].sum == sum(s["gen_ai.usage.input_tokens"] for s in spans)
    assert usage["output"].sum == sum(s["gen_ai.usage.output_tokens"] for s in spans)
    (first_chunk,) = metrics["gen_ai.client.operation.time_to_first_chunk"].histogram.data_points
    assert first_chunk.count == 1


@pytest.mark.parametrize("status", [404, 405, 415, 501])
def test_a_receiver_without_metrics_gets_traces_only(
    tmp_path: Path, receiver: OTLPReceiver, stub: OpenAIStub, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    # 404: MLflow's server; 405: Arize Phoenix; 415, 501: no protobuf metrics, no metrics.
    receiver.metrics_status = status
    tracker = _tracker(tmp_path / "logs", OTLPExporter(receiver.endpoint), worker="thread")
    with caplog.at_level(logging.INFO, logger="asynctrack"):
        weather_agent(stub.url, [tracker])
        tracker.flush_blocking(timeout=WAIT)
        receiver.wait_for_metrics(1)
        weather_agent(stub.url, [tracker])
        tracker.close(timeout=WAIT)
    assert receiver.metrics_attempts == 1  # not retried (501 neither), never sent again
    stats = tracker.statistics()
    assert (stats.spans_exported, stats.spans_failed) == (8, 0)
    said = [r for r in caplog.records if r.name == "asynctrack" and "OTLP" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.INFO], [r.getMessage() for r in said]
    assert f"{receiver.endpoint}/v1/metrics answered HTTP {status} " in said[0].getMessage()
    assert "takes no metrics" in said[0].getMessage()


def test_backfill_sends_the_metrics_of_the_live_export_at_the_runs_times(
    tmp_path: Path, receiver: OTLPReceiver, stub: OpenAIStub, capsys: pytest.CaptureFixture[str]
) -> None:
    destination = tmp_path / "logs"
    tracker = _tracker(destination, OTLPExporter(receiver.endpoint))
    weather_agent(stub.url, [tracker])
    failing_model_call([tracker])
    weather_agent(stub.url, [tracker])
    failing_chain([tracker])
    tracker.close(timeout=WAIT)
    live_request = receiver.wait_for_metrics(1)[-1]  # cumulative: the last holds every point
    live = _points(live_request)
    groups = _model_spans(receiver)
    assert live.keys() == groups.keys()
    errors = [dict(attrs).get("error.type") for name, attrs in live if name == DURATION]
    assert len(errors) == 2 and None in errors  # the calls that succeeded, the one that failed
    assert str(next(e for e in errors if e)).endswith("ConnectionError")

    with OTLPReceiver() as second:
        assert main(["export", str(destination), "--otlp-endpoint", second.endpoint]) == 0
        assert capsys.readouterr().out.splitlines() == [
            f"exported 10 span(s) to {second.endpoint}/v1/traces",
            f"exported 5 metric point(s) to {second.endpoint}/v1/metrics",
        ]
        (backfill_request,) = second.metrics  # one request, after the spans
    backfilled = _points(backfill_request)

    # The same resource, scope and schema as live, and the same points; the backfill is a
    # writer of its own (its metric streams must not be taken for the live process's).
    (live_rm,), (back_rm,) = live_request.resource_metrics, backfill_request.resource_metrics
    live_resource, back_resource = attributes(live_rm.resource), attributes(back_rm.resource)
    assert live_resource.pop("service.instance.id") != back_resource.pop("service.instance.id")
    assert back_resource == live_resource
    assert back_rm.scope_metrics[0].scope == live_rm.scope_metrics[0].scope
    assert (
        back_rm.scope_metrics[0].schema_url
        == live_rm.scope_metrics[0].schema_url
        == ("https://opentelemetry.io/schemas/1.41.0")
    )
    assert backfilled.keys() == live.keys()
    for series, point in backfilled.items():
        was = live[series]
        assert (point.count, point.sum, point.min, point.max) == (was.count, was.sum, was.min, was.max), (
            series
        )
        assert list(point.bucket_counts) == list(was.bucket_counts), series
        assert list(point.explicit_bounds) == list(was.explicit_bounds), series
        # Each point covers the calls it counts: the earliest start to the latest end.
        spans = groups[series]
        assert point.count == len(spans)
        assert point.start_time_unix_nano == min(s.start_time_unix_nano for s in spans), series
        assert point.time_unix_nano == max(s.end_time_unix_nano for s in spans), series
        # The live point is the exporter's stream: every call it counts ended within it
        # (the worker process started after the first calls: the stream starts by them).
        assert was.start_time_unix_nano <= min(s.end_time_unix_nano for s in spans), series
        assert was.time_unix_nano >= point.time_unix_nano
    name_of = {name for name, _ in backfilled}
    assert name_of == {DURATION, USAGE, FIRST_CHUNK}
    durations = [
        (s.end_time_unix_nano - s.start_time_unix_nano) / 1e9
        for series, spans in groups.items()
        if series[0] == DURATION
        for s in spans
    ]
    assert sum(p.sum for (name, _), p in backfilled.items() if name == DURATION) == pytest.approx(
        sum(durations)
    )
    usage = {dict(attrs)["gen_ai.token.type"]: p for (name, attrs), p in backfilled.items() if name == USAGE}
    assert (usage["input"].sum, usage["output"].sum, usage["input"].count) == (4 * 57, 4 * 23, 4)


def test_backfill_of_two_trackers_sends_one_point_per_series(
    tmp_path: Path, receiver: OTLPReceiver, stub: OpenAIStub, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each tracker's live stream is its own; the backfill adds them up in one point."""
    destination = tmp_path / "logs"
    first = _tracker(destination, OTLPExporter(receiver.endpoint), worker="thread", run_name="r1")
    weather_agent(stub.url, [first])
    first.close(timeout=WAIT)
    after_first = len(receiver.wait_for_metrics(1))
    second = _tracker(destination, OTLPExporter(receiver.endpoint), worker="thread", run_name="r2")
    weather_agent(stub.url, [second])
    weather_agent(stub.url, [second])
    second.close(timeout=WAIT)
    requests = receiver.wait_for_metrics(after_first + 1)
    live = [_points(requests[after_first - 1]), _points(requests[-1])]
    groups = _model_spans(receiver)

    with OTLPReceiver() as other:
        assert main(["export", str(destination), "--otlp-endpoint", other.endpoint]) == 0
        (request,) = other.metrics
    backfilled = _points(request)
    assert backfilled.keys() == live[0].keys() == live[1].keys()
    for series, point in backfilled.items():
        assert point.count == live[0][series].count + live[1][series].count == len(groups[series])
        assert point.sum == pytest.approx(live[0][series].sum + live[1][series].sum)
        buckets = [
            a + b for a, b in zip(live[0][series].bucket_counts, live[1][series].bucket_counts, strict=True)
        ]
        assert list(point.bucket_counts) == buckets
        assert point.start_time_unix_nano == min(s.start_time_unix_nano for s in groups[series])
        assert point.time_unix_nano == max(s.end_time_unix_nano for s in groups[series])
    # Only one tracker's runs: only its calls.
    with OTLPReceiver() as other:
        assert main(["export", str(destination), "--otlp-endpoint", other.endpoint, "--run", "r1"]) == 0
        (request,) = other.metrics
    assert {s: p.count for s, p in _points(request).items()} == {s: p.count for s, p in live[0].items()}
    capsys.readouterr()


def test_backfill_to_a_receiver_without_metrics_and_with_no_metrics(
    tmp_path: Path, receiver: OTLPReceiver, stub: OpenAIStub, capsys: pytest.CaptureFixture[str]
) -> None:
    destination = tmp_path / "logs"
    tracker = AsyncTracker(
        destination, experiment_name="exp", run_name="r1", config=TrackerConfig(worker="thread")
    )
    weather_agent(stub.url, [tracker])
    tracker.close(timeout=WAIT)
    url = f"{receiver.endpoint}/v1/metrics"

    receiver.metrics_status = 405  # as Arize Phoenix: the spans go, the metrics are said once
    assert main(["export", str(destination), "--otlp-endpoint", receiver.endpoint]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"exported 4 span(s) to {receiver.endpoint}/v1/traces",
        f"no metrics: {url} answered HTTP 405 Method Not Allowed (it takes none)",
    ]
    assert (len(receiver.spans), receiver.metrics_attempts) == (4, 1)

    receiver.metrics_status = 400  # a refusal of the metrics themselves is a failure
    assert main(["export", str(destination), "--otlp-endpoint", receiver.endpoint]) == 1
    assert "HTTP 400" in capsys.readouterr().err
    assert receiver.metrics_attempts == 2

    assert main(["export", str(destination), "--otlp-endpoint", receiver.endpoint, "--no-metrics"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"exported 4 span(s) to {receiver.endpoint}/v1/traces"]
    assert (len(receiver.spans), receiver.metrics_attempts) == (12, 2)  # spans only


def test_metrics_can_be_turned_off(tmp_path: Path, receiver: OTLPReceiver) -> None:
    tracker = _tracker(tmp_path / "logs", OTLPExporter(receiver.endpoint, metrics=False))
    failing_chain([tracker])
    tracker.close(timeout=WAIT)
    assert (len(receiver.spans), receiver.metrics_attempts) == (1, 0)


def test_each_live_tracker_is_a_writer_of_its_own(
    tmp_path: Path, receiver: OTLPReceiver, stub: OpenAIStub, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two trackers alive at once, one resource from the environment: each sends its spans
    and its cumulative metric streams under a ``service.instance.id`` of its own, else a
    backend would take two writers' points for one stream's. A backfill is a third."""
    destination = tmp_path / "logs"
    first = _tracker(destination, OTLPExporter(receiver.endpoint), run_name="r1")
    second = _tracker(destination, OTLPExporter(receiver.endpoint), run_name="r2")
    weather_agent(stub.url, [first])
    weather_agent(stub.url, [second])
    weather_agent(stub.url, [second])
    first.close(timeout=WAIT)
    second.close(timeout=WAIT)
    assert first.statistics().worker_mode == second.statistics().worker_mode == "process"
    spans: dict[str, int] = {}
    for request in receiver.requests:
        for resource_spans in request.resource_spans:
            instance = _instance(resource_spans)
            spans[instance] = spans.get(instance, 0) + sum(len(s.spans) for s in resource_spans.scope_spans)
    calls: dict[str, int] = {}  # the chat calls counted in each writer's last (cumulative) point
    for request in receiver.wait_for_metrics(2):
        (resource_metrics,) = request.resource_metrics
        points = _points(request).items()
        calls[_instance(resource_metrics)] = sum(p.count for (name, _), p in points if name == DURATION)
    assert len(spans) == 2 and spans.keys() == calls.keys()
    assert sorted(spans.values()) == [4, 8]  # one writer per tracker, its spans and its metrics
    assert sorted((spans[i], calls[i]) for i in spans) == [(4, 2), (8, 4)]
    for instance in spans:
        assert uuid.UUID(instance).version == 4

    with OTLPReceiver() as other:
        assert main(["export", str(destination), "--otlp-endpoint", other.endpoint]) == 0
        capsys.readouterr()
        backfill = {_instance(rs) for request in other.requests for rs in request.resource_spans}
        backfill |= {_instance(rm) for request in other.metrics for rm in request.resource_metrics}
    (instance,) = backfill  # one writer: its spans and its metrics
    assert instance not in spans


def test_an_instance_id_set_by_the_user_is_kept(
    tmp_path: Path, receiver: OTLPReceiver, stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=pod-7,deployment.environment=prod")
    tracker = _tracker(tmp_path / "logs", OTLPExporter(receiver.endpoint))
    weather_agent(stub.url, [tracker])
    tracker.close(timeout=WAIT)
    assert tracker.statistics().worker_mode == "process"  # the environment crossed to the worker
    owners = [rs for request in receiver.requests for rs in request.resource_spans]
    owners += [rm for request in receiver.wait_for_metrics(1) for rm in request.resource_metrics]
    assert {_instance(owner) for owner in owners} == {"pod-7"}


# -- the histograms themselves -----------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    calls=st.lists(
        st.tuples(
            st.integers(0, 10**11),  # duration, ns
            st.booleans(),  # failed
            st.one_of(st.none(), st.tuples(st.integers(0, 5 * 4**13), st.integers(0, 4**7))),  # tokens
            st.one_of(st.none(), st.floats(0.0, 90.0)),  # time to first chunk
        ),
        max_size=40,
    ),
    requests=st.sets(st.integers(0, 40)),
)
def test_calls_kept_and_folded_count_as_one_call_at_a_time(
    calls: list[tuple[int, bool, tuple[int, int] | None, float | None]], requests: set[int]
) -> None:
    """Every histogram's buckets, count, sum, least and greatest value and time span are
    those of counting each call as it comes (bisect, then five updates), with requests
    (which fold the calls kept) at any point."""
    metrics = Metrics([], b"", "", backfill=True)
    series = metrics.series((("gen_ai.operation.name", "chat"),))
    expected: dict[str, list[tuple[float, int, int]]] = {}
    for number, (duration_ns, failed, tokens, first_chunk) in enumerate(calls):
        if number in requests:
            metrics.request()
        start_ns = 1_800_000_000_000_000_000 + number * 10**9
        end_ns = start_ns + duration_ns
        metrics.model_call(series, start_ns, end_ns, "Boom" if failed else None, tokens, first_chunk)
        measured = [("failed" if failed else "duration", duration_ns / 1e9)]
        if tokens is not None:
            measured += [("in", float(tokens[0])), ("out", float(tokens[1]))]
        if first_chunk is not None:
            measured.append(("first", first_chunk))
        for name, value in measured:
            expected.setdefault(name, []).append((value, start_ns, end_ns))
    metrics.request()
    histograms = {
        "duration": series[1],
        "in": series[2],
        "out": series[3],
        "first": series[4],
        "failed": metrics._histogram(_metrics._DURATION, (*series[0], ("error.type", "Boom"))),
    }
    for name, histogram in histograms.items():
        values = expected.get(name, [])
        buckets = [0] * (len(histogram.bounds) + 1)
        total = 0.0
        for value, _, _ in values:
            buckets[bisect.bisect_left(histogram.bounds, value)] += 1
            total += value
        assert histogram.buckets == buckets
        assert (histogram.count, histogram.sum) == (len(values), total)
        if values:
            assert histogram.min == min(v for v, _, _ in values)
            assert histogram.max == max(v for v, _, _ in values)
            assert histogram.first_ns == min(s for _, s, _ in values)
            assert histogram.last_ns == max(e for _, _, e in values)


def test_the_calls_kept_before_folding_are_bounded() -> None:
    metrics = Metrics([], b"", "")
    series = metrics.series((("gen_ai.operation.name", "chat"),))
    for number in range(3 * _metrics._FOLD_EVERY):
        metrics.model_call(series, number, number + 10**9, None, (10, 20), None)
        assert len(series[5]) < _metrics._FOLD_EVERY
    assert series[1].count + len(series[5]) == 3 * _metrics._FOLD_EVERY
