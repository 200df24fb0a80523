"""The public API as users type it; checked by ``mypy --strict tests/typed_usage.py``.

``tests/test_public_api.py`` also runs ``run()`` so this file cannot rot.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig, RunnableLambda

import asynctrack
from asynctrack import (
    AsyncTracker,
    AsyncTrackError,
    Batch,
    FlushError,
    FlushTimeoutError,
    LocalSink,
    OTLPExporter,
    ParametersSink,
    RunInfo,
    Sink,
    Statistics,
    TrackerClosedError,
    TrackerConfig,
)


class MemorySink:
    """A user-written destination: satisfies the ``Sink`` protocol structurally."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.documents: dict[str, bytes] = {}

    @property
    def destination(self) -> str:
        return "memory://typed"

    async def start(self) -> None:
        return None

    async def write_batch(self, batch: Batch) -> None:
        self.batches.append(batch)

    async def write_document(self, key: str, data: bytes) -> None:
        self.documents[key] = data

    async def aclose(self) -> None:
        return None


class PrintParameters:
    """A user-written parameters sink."""

    def __init__(self) -> None:
        self.seen: list[tuple[RunInfo, dict[str, str | int | float]]] = []

    async def write_parameters(self, run: RunInfo, parameters: Mapping[str, str | int | float]) -> None:
        self.seen.append((run, dict(parameters)))

    async def aclose(self) -> None:
        return None


def double(value: int) -> int:
    return value * 2


def increment(value: int) -> int:
    return value + 1


def drop_text_events(event: dict[str, Any]) -> dict[str, Any] | None:
    return None if event.get("kind") == "text" else event


def configure() -> TrackerConfig:
    return TrackerConfig(
        max_batch_events=100,
        max_batch_bytes=1024 * 1024,
        batch_interval=1.0,
        when_full="block",
        block_timeout=0.5,
        gzip=True,
        redact=drop_text_events,
    )


def sampled(stats: Statistics) -> tuple[TrackerConfig, int]:
    config = TrackerConfig(sample_rate=0.25, sample_keep_errors=False)
    skipped: int = stats.sampled_out
    return config, skipped


async def record_async(destination: Path) -> Statistics:
    parameters = PrintParameters()
    sinks: list[ParametersSink] = [parameters]
    async with AsyncTracker(
        destination, experiment_name="typed", run_name="async", config=configure(), parameter_sinks=sinks
    ) as tracker:
        config: RunnableConfig = {"callbacks": [tracker], "tags": ["typed"]}
        doubled: int = await RunnableLambda(double).ainvoke(21, config=config)
        assert doubled == 42
        tracker.on_text("dropped by the hook", run_id=uuid.uuid4())
        try:
            await tracker.flush(timeout=10.0)
        except FlushTimeoutError as exc:
            pending: int = exc.pending
            raise AssertionError(f"{pending} pending") from exc
        except FlushError as exc:
            raise AssertionError(exc.reason) from exc
        stats = tracker.statistics()
    assert parameters.seen
    return stats


def record_sync(destination: Path) -> Statistics:
    sink: Sink = LocalSink(destination)
    tracker = AsyncTracker(sink, experiment_name="typed", run_name="sync")
    with tracker:
        RunnableLambda(increment).invoke(1, config={"callbacks": [tracker]})
        tracker.flush_blocking(timeout=10.0)
        where: str = tracker.events_uri
        assert where.startswith(str(destination))
    try:
        tracker.flush_blocking()
    except TrackerClosedError:
        pass
    except AsyncTrackError as exc:
        raise AssertionError("unexpected") from exc
    return tracker.statistics()


def run(destination: Path) -> tuple[Statistics, Statistics, int]:
    """Record, flush and read back through the public API only."""
    first = asyncio.run(record_async(destination))
    second = record_sync(destination)
    memory = MemorySink()
    exporter = OTLPExporter("http://127.0.0.1:4318", headers={"x-team": "search"}, capture_content=False)
    assert exporter.timeout == 10.0 and exporter.metrics
    with AsyncTracker(memory, experiment_name="typed", run_name="memory") as tracker:
        tracker.on_text("into memory", run_id=uuid.uuid4())
    events: list[dict[str, Any]] = asynctrack.read_events(destination, experiment_name="typed")
    frame = asynctrack.load(destination, experiment_name="typed", run_name="sync")
    parameters: dict[str, Any] = asynctrack.read_parameters(destination, "typed", "sync")
    lazy = asynctrack.scan(destination, "typed", "sync", since="2000-01-01")
    assert lazy.select("seq").collect().height == 2
    assert len(frame) == 2
    assert parameters["events_total"] == 2
    assert sum(b.events for b in memory.batches) == 1
    return first, second, len(events)
