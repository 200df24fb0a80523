"""The batcher (``_pipeline/_batcher.py``): count, bytes and age limits, gzip, and the
properties of the batches of any stream (the engine alone, on an in-memory sink)."""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import orjson
import pytest
from engine_fakes import (
    JOIN,
    MemorySink,
    batch_files,
    events_in,
    text,
    visible_batches,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.runnables import RunnableLambda

from asynctrack import (
    AsyncTracker,
    TrackerConfig,
)
from asynctrack._layout import Layout
from asynctrack._pipeline._batcher import Batcher
from asynctrack._pipeline._engine import Engine
from asynctrack._pipeline._statistics import Counters

# -- batches --------------------------------------------------------------------------------


def _invoke(tracker: AsyncTracker, n: int) -> None:
    chain = RunnableLambda(lambda value: value)
    for i in range(n):
        chain.invoke(f"value-{i:04d}", config={"callbacks": [tracker]})


def test_max_batch_events_splits_into_whole_uniquely_named_files(
    worker_mode: str, make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker(config=TrackerConfig(max_batch_events=7))
    _invoke(tracker, 25)
    tracker.flush_blocking(timeout=JOIN)

    files = batch_files(tmp_destination)
    assert not [f for f in files if f.name.startswith(".") or f.suffix == ".tmp"]
    counts = [len(f.read_bytes().splitlines()) for f in files]
    assert sum(counts) == 50
    assert max(counts) == 7
    assert len(files) == 8
    assert len({f.name for f in files}) == len(files)
    for f in files:
        for line in f.read_bytes().splitlines():
            orjson.loads(line)
    stats = tracker.statistics()
    assert stats.batches == len(files)
    assert stats.bytes == sum(f.stat().st_size for f in files)


def test_max_batch_bytes_keeps_every_file_within_the_limit(
    worker_mode: str, make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    """A batch is sealed *before* the line that would take it past ``max_batch_bytes``
    is added, so no file is over the limit (one event alone is; see the property test)."""
    limit = 2000
    tracker = make_tracker(config=TrackerConfig(max_batch_bytes=limit))
    _invoke(tracker, 20)
    tracker.flush_blocking(timeout=JOIN)

    files = batch_files(tmp_destination)
    assert len(files) > 1
    assert sum(len(f.read_bytes().splitlines()) for f in files) == 40
    sizes = {f.name: f.stat().st_size for f in files}
    assert all(size <= limit for size in sizes.values()), sizes


def test_gzip_batches_are_valid_jsonl_gz(
    worker_mode: str, make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker(config=TrackerConfig(gzip=True, max_batch_events=10))
    _invoke(tracker, 15)
    tracker.flush_blocking(timeout=JOIN)

    files = batch_files(tmp_destination)
    assert len(files) == 3
    assert all(f.name.endswith(".jsonl.gz") for f in files)
    lines = [line for f in files for line in gzip.decompress(f.read_bytes()).splitlines()]
    assert len(lines) == 30
    assert [orjson.loads(line)["seq"] for line in lines] == list(range(30))
    assert len(events_in(tmp_destination)) == 30


@pytest.mark.anyio
async def test_batch_interval_writes_without_flush(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker(config=TrackerConfig(batch_interval=0.2))
    text(tracker, "by-time")
    with anyio.fail_after(10):
        # The one poll: nothing signals "a file appeared" but the file itself.
        while not visible_batches(tmp_destination):  # noqa: ASYNC110 - no event to wait on
            await anyio.sleep(0.02)
    assert [e["data"]["text"] for e in events_in(tmp_destination)] == ["by-time"]


# -- properties: the engine alone ----------------------------------------------------------------


_BATCH_NUMBER = re.compile(r"-(\d{8})\.jsonl$")
_ints = st.integers(-(2**63), 2**64 - 1)  # beyond 64 bits the encoder writes strings, by design
_payloads = st.one_of(_ints, st.text(max_size=200), st.lists(_ints, max_size=20))
_flush_after = st.integers(0, 9).map(lambda n: n == 0)  # a flush after ~10% of the records
_streams = st.lists(st.tuples(_payloads, _flush_after), max_size=120)


def _run_engine(
    stream: list[tuple[Any, bool]], config: TrackerConfig
) -> tuple[MemorySink, list[dict[str, Any]]]:
    sink = MemorySink()
    engine = Engine(
        sink=sink,
        layout=Layout(experiment="prop", run="r", writer="w"),
        translate=lambda record: record,
        config=config,
    )
    records = []
    try:
        for seq, (payload, flush_after) in enumerate(stream):
            record = {"seq": seq, "kind": "prop", "payload": payload}
            records.append(record)
            engine.put(record)
            if flush_after:
                engine.flush_blocking(JOIN)
        engine.flush_blocking(JOIN)
    finally:
        engine.close(JOIN)
    return sink, records


@settings(max_examples=40, deadline=None, database=None)
@given(_streams, st.integers(1, 10), st.integers(200, 3000))
def test_batches_reproduce_the_stream_in_order_with_unique_keys(
    stream: list[tuple[Any, bool]], max_events: int, max_bytes: int
) -> None:
    config = TrackerConfig(max_batch_events=max_events, max_batch_bytes=max_bytes)
    sink, records = _run_engine(stream, config)

    keys = [b.key for b in sink.batches]
    assert len(keys) == len(set(keys))
    numbers = []
    for key in keys:
        match = _BATCH_NUMBER.search(key)
        assert match is not None, key
        assert key.startswith("experiment=prop/run=r/date=")
        numbers.append(int(match.group(1)))
    ordered = [b for _, b in sorted(zip(numbers, sink.batches, strict=True), key=lambda nb: nb[0])]
    decoded = []
    for batch in ordered:
        lines = [orjson.loads(line) for line in batch.data.splitlines()]
        assert batch.events == len(lines)
        assert 1 <= batch.events <= max_events
        assert (batch.first_seq, batch.last_seq) == (lines[0]["seq"], lines[-1]["seq"])
        decoded.extend(lines)
    assert decoded == records


@settings(max_examples=40, deadline=None, database=None)
@given(_streams, st.integers(200, 3000))
def test_no_batch_is_over_max_batch_bytes(stream: list[tuple[Any, bool]], max_bytes: int) -> None:
    """A batch may exceed the byte limit only if it holds a single event."""
    sink, _ = _run_engine(stream, TrackerConfig(max_batch_bytes=max_bytes))
    for batch in sink.batches:
        assert batch.events == 1 or len(batch.data) <= max_bytes, (batch.events, len(batch.data), max_bytes)


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.lists(st.lists(st.integers(1, 700), max_size=40), max_size=6),
    st.integers(1, 12),
    st.integers(100, 2000),
)
def test_adding_lines_in_bulk_makes_the_batches_of_one_at_a_time(
    chunks: list[list[int]], max_events: int, max_bytes: int
) -> None:
    """``Batcher.add_many`` (the worker's common case) and ``add`` seal the same batches."""
    config = TrackerConfig(max_batch_events=max_events, max_batch_bytes=max_bytes)
    layout = Layout(experiment="e", run="r", writer="w")
    one, bulk = Batcher(config, layout, Counters()), Batcher(config, layout, Counters())
    by_one: list[Any] = []
    by_bulk: list[Any] = []
    seq = 0
    for sizes in chunks:
        lines = [b"x" * (size - 1) + b"\n" for size in sizes]
        seqs = list(range(seq, seq + len(lines)))
        seq += len(lines)
        for s, line in zip(seqs, lines, strict=True):
            by_one += one.add(s, line) or []
        by_bulk += bulk.add_many(seqs, lines)
    by_one += one.seal()
    by_bulk += bulk.seal()

    def shape(sealed: list[Any]) -> list[Any]:
        return [(n, b.data, b.events, b.first_seq, b.last_seq, b.seqs) for n, b in sealed]

    assert shape(by_bulk) == shape(by_one)
