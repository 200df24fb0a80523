"""The engine (``_engine``): buffer, worker, batching, flush barrier, close, statistics.

Most tests record through an ``AsyncTracker`` (the engine's only producer) and
use fakes at the ``Sink`` seam: a gate that holds writes until released, a
sink that fails on demand, an in-memory sink for the property tests. Waits are
bounded by ``anyio.fail_after``, ``flush(timeout=...)`` or ``join(timeout)``.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.runnables import RunnableLambda

import asynctrack
from asynctrack import (
    AsyncTracker,
    Batch,
    DeadlockError,
    FlushError,
    FlushTimeoutError,
    LocalSink,
    TrackerClosedError,
    TrackerConfig,
)
from asynctrack._engine._core import Engine
from asynctrack._layout import Layout

JOIN = 30.0  # seconds any helper thread may take, at most


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def make_tracker(
    tmp_destination: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., AsyncTracker]]:
    # Fake sinks are "remote" destinations: whatever they leave at close is spooled; keep
    # that spool inside the test's directory, never in ~/.cache.
    monkeypatch.setenv("ASYNCTRACK_SPOOL_DIR", str(tmp_path / "spool"))
    made: list[AsyncTracker] = []

    def make(destination: Any = None, **kwargs: Any) -> AsyncTracker:
        tracker = AsyncTracker(
            tmp_destination if destination is None else destination,
            experiment_name="eng",
            run_name="r",
            **kwargs,
        )
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        try:
            tracker.close(timeout=5)
        except FlushError:
            pass


def _events(destination: Path) -> list[dict[str, Any]]:
    return asynctrack.read_events(destination)


def _batch_files(destination: Path) -> list[Path]:
    return sorted(p for p in destination.rglob("*") if p.is_file() and "/params/" not in str(p))


def _visible_batches(destination: Path) -> list[Path]:
    """Batch files a reader sees (renamed into place; temporary files start with '.')."""
    return [p for p in destination.rglob("*.jsonl*") if not p.name.startswith(".")]


def _text(tracker: AsyncTracker, text: str) -> None:
    tracker.on_text(text, run_id=uuid.uuid4())


def _start(thread: threading.Thread) -> threading.Thread:
    thread.start()
    return thread


def _join(*threads: threading.Thread) -> None:
    for thread in threads:
        thread.join(JOIN)
        assert not thread.is_alive(), f"{thread.name} did not finish within {JOIN} s"


class GatedSink:
    """A local directory whose batch writes wait until ``gate`` is set."""

    def __init__(self, root: Path) -> None:
        self.local = LocalSink(root)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.keys: list[str] = []

    @property
    def destination(self) -> str:
        return self.local.destination

    async def start(self) -> None:
        await self.local.start()

    async def write_batch(self, batch: Batch) -> None:
        self.entered.set()
        await asyncio.to_thread(self.gate.wait, JOIN)
        await self.local.write_batch(batch)
        self.keys.append(batch.key)

    async def write_document(self, key: str, data: bytes) -> None:
        await self.local.write_document(key, data)

    async def aclose(self) -> None:
        await self.local.aclose()


class FlakySink(GatedSink):
    """A local directory that refuses batches while ``failing`` is true."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate.set()
        self.failing = True
        self.attempts = 0

    async def write_batch(self, batch: Batch) -> None:
        self.attempts += 1
        if self.failing:
            raise OSError("disk on fire")
        await super().write_batch(batch)


class BlockingHook:
    """A ``redact`` hook that holds the worker on the first event until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(JOIN)
        return event


# -- concurrency ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_threads_tasks_and_another_loop_record_every_event_exactly_once(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker()
    config = {"callbacks": [tracker]}

    async def aidentity(value: str) -> str:
        return value

    sync_chain = RunnableLambda(lambda value: value)
    async_chain = RunnableLambda(aidentity)
    threads_n, per_thread, tasks_n, other_loop_tasks = 8, 40, 200, 50
    start = threading.Barrier(threads_n + 1)

    def thread_body(t: int) -> None:
        start.wait(JOIN)
        for i in range(per_thread):
            sync_chain.invoke(f"thread{t}-{i}", config=config)

    def other_loop() -> None:
        async def main() -> None:
            await asyncio.gather(
                *(async_chain.ainvoke(f"loop2-{i}", config=config) for i in range(other_loop_tasks))
            )

        asyncio.run(main())

    threads = [_start(threading.Thread(target=thread_body, args=(t,))) for t in range(threads_n)]
    threads.append(_start(threading.Thread(target=other_loop)))
    start.wait(JOIN)
    with anyio.fail_after(JOIN):
        async with anyio.create_task_group() as group:
            for i in range(tasks_n):
                group.start_soon(async_chain.ainvoke, f"task-{i}", config)
    await anyio.to_thread.run_sync(_join, *threads)
    with anyio.fail_after(JOIN):
        await tracker.flush()

    invokes = threads_n * per_thread + tasks_n + other_loop_tasks
    events = _events(tmp_destination)
    assert len(events) == 2 * invokes
    assert sorted(e["seq"] for e in events) == list(range(2 * invokes))
    inputs = [e["data"]["inputs"] for e in events if e["kind"] == "chain_start"]
    assert len(inputs) == len(set(inputs)) == invokes
    outputs = sorted(e["data"]["outputs"] for e in events if e["kind"] == "chain_end")
    assert outputs == sorted(inputs)
    stats = tracker.statistics()
    assert stats.recorded == stats.written == 2 * invokes
    assert stats.dropped == stats.lost == stats.failed == 0


@pytest.mark.anyio
async def test_concurrent_flushes_each_cover_what_was_recorded_before_them(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    """Each flush, from a task or a thread, returns only when every invoke that
    had *returned* before the flush was called is on disk (both its events)."""
    tracker = make_tracker()
    config = {"callbacks": [tracker]}
    done: list[str] = []  # ids of invokes that returned; list.append is atomic
    stop = threading.Event()
    problems: list[str] = []
    flushes = 0

    async def aidentity(value: str) -> str:
        return value

    def check(before: list[str], who: str) -> None:
        complete: dict[str, int] = {}
        for event in _events(tmp_destination):
            if event["kind"] == "chain_start":
                complete[event["data"]["inputs"]] = complete.get(event["data"]["inputs"], 0) + 1
            elif event["kind"] == "chain_end":
                complete[event["data"]["outputs"]] = complete.get(event["data"]["outputs"], 0) + 1
        missing = [i for i in before if complete.get(i) != 2]
        if missing:
            problems.append(f"{who}: {len(missing)} of {len(before)} not on disk, e.g. {missing[:3]}")

    def record_in_thread(t: int) -> None:
        chain = RunnableLambda(lambda value: value)
        for i in range(400):
            if stop.is_set():
                return
            chain.invoke(f"th{t}-{i}", config=config)
            done.append(f"th{t}-{i}")

    async def record_in_task(t: int) -> None:
        chain = RunnableLambda(aidentity)
        for i in range(400):
            if stop.is_set():
                return
            await chain.ainvoke(f"ta{t}-{i}", config=config)
            done.append(f"ta{t}-{i}")
            await anyio.lowlevel.checkpoint()

    def flush_in_thread(t: int) -> None:
        nonlocal flushes
        for _ in range(4):
            before = list(done)
            tracker.flush_blocking(timeout=JOIN)
            flushes += 1
            check(before, f"thread flusher {t}")

    async def flush_in_task(t: int) -> None:
        nonlocal flushes
        for _ in range(4):
            before = list(done)
            await tracker.flush(timeout=JOIN)
            flushes += 1
            check(before, f"task flusher {t}")
            await anyio.lowlevel.checkpoint()

    recorders = [_start(threading.Thread(target=record_in_thread, args=(t,))) for t in range(3)]
    flushers = [_start(threading.Thread(target=flush_in_thread, args=(t,))) for t in range(2)]
    with anyio.fail_after(JOIN):
        async with anyio.create_task_group() as group:
            for t in range(4):
                group.start_soon(record_in_task, t)

            async def flushers_then_stop() -> None:
                async with anyio.create_task_group() as inner:
                    for t in range(3):
                        inner.start_soon(flush_in_task, t)
                await anyio.to_thread.run_sync(_join, *flushers)
                stop.set()

            group.start_soon(flushers_then_stop)
    await anyio.to_thread.run_sync(_join, *recorders)

    assert flushes == 2 * 4 + 3 * 4
    assert problems == []
    with anyio.fail_after(JOIN):
        await tracker.flush()
    events = _events(tmp_destination)
    assert sorted(e["seq"] for e in events) == list(range(len(events)))
    starts = [e["data"]["inputs"] for e in events if e["kind"] == "chain_start"]
    assert len(starts) == len(set(starts)) == len(done)
    assert set(starts) == set(done)


# -- a full buffer ---------------------------------------------------------------------------


def test_full_buffer_drops_exactly_the_overflow_and_warns(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asynctrack")
    hook = BlockingHook()
    tracker = make_tracker(config=TrackerConfig(max_queue_events=10, redact=hook))
    try:
        _text(tracker, "t0")
        assert hook.entered.wait(JOIN)  # the worker holds t0; the buffer is empty
        for i in range(1, 18):
            _text(tracker, f"t{i}")  # t1..t10 fit, t11..t17 do not
        stats = tracker.statistics()
        assert stats.dropped == 7
        assert stats.queue_depth == 10
        assert stats.recorded == 11
    finally:
        hook.release.set()
    tracker.flush_blocking(timeout=JOIN)

    assert [e["data"]["text"] for e in _events(tmp_destination)] == [f"t{i}" for i in range(11)]
    stats = tracker.statistics()
    assert (stats.written, stats.dropped) == (11, 7)
    warnings = [r for r in caplog.records if r.name == "asynctrack" and r.levelno == logging.WARNING]
    assert any("dropped 7 event(s)" in r.getMessage() for r in warnings), [r.getMessage() for r in warnings]


def test_block_mode_waits_block_timeout_then_drops(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    hook = BlockingHook()
    tracker = make_tracker(
        config=TrackerConfig(max_queue_events=2, when_full="block", block_timeout=0.3, redact=hook)
    )
    try:
        _text(tracker, "held")
        assert hook.entered.wait(JOIN)
        _text(tracker, "q1")
        _text(tracker, "q2")
        began = time.monotonic()
        _text(tracker, "no room")  # waits block_timeout for room, then drops
        waited = time.monotonic() - began
        assert waited >= 0.29
        assert waited < 0.3 + 10  # bounded: the wait ends
        assert tracker.statistics().dropped == 1
    finally:
        hook.release.set()
    tracker.flush_blocking(timeout=JOIN)
    assert [e["data"]["text"] for e in _events(tmp_destination)] == ["held", "q1", "q2"]


def test_block_mode_accepts_the_event_once_the_worker_makes_room(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    hook = BlockingHook()
    tracker = make_tracker(
        config=TrackerConfig(max_queue_events=1, when_full="block", block_timeout=JOIN, redact=hook)
    )
    try:
        _text(tracker, "held")
        assert hook.entered.wait(JOIN)
        _text(tracker, "queued")
        producer = _start(threading.Thread(target=_text, args=(tracker, "waited")))
    finally:
        hook.release.set()
    _join(producer)
    tracker.flush_blocking(timeout=JOIN)
    assert [e["data"]["text"] for e in _events(tmp_destination)] == ["held", "queued", "waited"]
    assert tracker.statistics().dropped == 0


def test_block_mode_refuses_an_infinite_timeout_at_construction() -> None:
    """``block_timeout=math.inf`` would make a callback wait for ever on a full buffer (and
    ``Condition.wait(inf)`` raises ``OverflowError``): refused with a clear ``ValueError``
    where the configuration is made. Waiting long for room is shown above with a 30 s
    timeout."""
    for bad in (math.inf, float("nan"), 0, -1.0):
        with pytest.raises(ValueError, match=r"block_timeout must be a positive number of seconds"):
            TrackerConfig(max_queue_events=1, when_full="block", block_timeout=bad)


# -- flush: timeouts, failures, threads --------------------------------------------------------


@pytest.mark.anyio
async def test_flush_timeout_reports_pending_and_discards_nothing(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    sink = GatedSink(tmp_destination)
    tracker = make_tracker(sink)
    try:
        for i in range(5):
            _text(tracker, f"e{i}")
        with pytest.raises(FlushTimeoutError) as raised:
            await tracker.flush(timeout=0.2)
        error = raised.value
        assert isinstance(error, TimeoutError)
        assert isinstance(error, FlushError)
        assert error.pending == 5
        assert error.timeout == 0.2
        assert str(error).startswith("5 event(s) recorded before flush() are not yet on durable storage")
        assert "timed out after 0.2 s" in str(error)
        with pytest.raises(FlushTimeoutError) as raised_blocking:
            tracker.flush_blocking(timeout=0.2)
        assert raised_blocking.value.pending == 5
        assert _batch_files(tmp_destination) == []
    finally:
        sink.gate.set()
    with anyio.fail_after(JOIN):
        await tracker.flush()

    assert [e["data"]["text"] for e in _events(tmp_destination)] == [f"e{i}" for i in range(5)]
    assert len(sink.keys) == len(set(sink.keys)) == 1
    stats = tracker.statistics()
    assert (stats.written, stats.failed, stats.lost) == (5, 0, 0)


@pytest.mark.anyio
async def test_failed_writes_make_flush_raise_then_the_next_flush_retries(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    sink = FlakySink(tmp_destination)
    tracker = make_tracker(sink)
    for i in range(4):
        _text(tracker, f"e{i}")
    with pytest.raises(FlushError) as raised:
        await tracker.flush(timeout=JOIN)
    error = raised.value
    assert not isinstance(error, FlushTimeoutError)
    assert error.pending == 4
    assert error.failed_batches == 1
    assert "disk on fire" in str(error)
    stats = tracker.statistics()
    assert stats.failed == 4
    assert stats.write_errors >= 1
    assert stats.written == 0

    sink.failing = False
    with anyio.fail_after(JOIN):
        await tracker.flush()
    assert [e["data"]["text"] for e in _events(tmp_destination)] == [f"e{i}" for i in range(4)]
    assert len(sink.keys) == 1
    stats = tracker.statistics()
    assert (stats.written, stats.failed, stats.lost) == (4, 0, 0)


def test_flush_blocking_without_an_event_loop(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker()
    _text(tracker, "sync")
    tracker.flush_blocking(timeout=JOIN)
    assert [e["data"]["text"] for e in _events(tmp_destination)] == ["sync"]


@pytest.mark.anyio
async def test_flush_blocking_inside_a_running_loop(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker()
    _text(tracker, "in-loop")
    tracker.flush_blocking(timeout=JOIN)  # blocks this loop, but the worker is elsewhere
    assert [e["data"]["text"] for e in _events(tmp_destination)] == ["in-loop"]


def test_blocking_calls_from_the_worker_thread_raise_deadlock_error(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    outcomes: list[BaseException | None] = []
    holder: list[AsyncTracker] = []

    def hook(event: dict[str, Any]) -> dict[str, Any]:
        for call in (holder[0].flush_blocking, holder[0].close):
            try:
                call(1.0)
            except BaseException as exc:  # recorded, asserted below
                outcomes.append(exc)
            else:
                outcomes.append(None)
        return event

    tracker = make_tracker(config=TrackerConfig(redact=hook))
    holder.append(tracker)
    _text(tracker, "x")
    tracker.flush_blocking(timeout=JOIN)

    assert len(outcomes) == 2
    assert all(isinstance(o, DeadlockError) for o in outcomes), outcomes
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert "worker thread" in str(outcomes[0])
    assert not tracker.closed
    assert [e["data"]["text"] for e in _events(tmp_destination)] == ["x"]


def test_close_past_its_deadline_counts_lost_events(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    sink = GatedSink(tmp_destination)
    tracker = make_tracker(sink, config=TrackerConfig(spool=False))
    try:
        for i in range(3):
            _text(tracker, f"e{i}")
        with pytest.raises(FlushError) as raised:
            tracker.close(timeout=0.2)
        assert raised.value.pending == 3
        assert str(raised.value).endswith("3 lost")
        assert tracker.closed
        stats = tracker.statistics()
        assert stats.lost == 3
        assert stats.written == 0
    finally:
        sink.gate.set()
    with pytest.raises(TrackerClosedError):
        tracker.flush_blocking()


# -- batches --------------------------------------------------------------------------------


def _invoke(tracker: AsyncTracker, n: int) -> None:
    chain = RunnableLambda(lambda value: value)
    for i in range(n):
        chain.invoke(f"value-{i:04d}", config={"callbacks": [tracker]})


def test_max_batch_events_splits_into_whole_uniquely_named_files(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker(config=TrackerConfig(max_batch_events=7))
    _invoke(tracker, 25)
    tracker.flush_blocking(timeout=JOIN)

    files = _batch_files(tmp_destination)
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
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    """A batch is sealed *before* the line that would take it past ``max_batch_bytes``
    is added, so no file is over the limit (one event alone is; see the property test)."""
    limit = 2000
    tracker = make_tracker(config=TrackerConfig(max_batch_bytes=limit))
    _invoke(tracker, 20)
    tracker.flush_blocking(timeout=JOIN)

    files = _batch_files(tmp_destination)
    assert len(files) > 1
    assert sum(len(f.read_bytes().splitlines()) for f in files) == 40
    sizes = {f.name: f.stat().st_size for f in files}
    assert all(size <= limit for size in sizes.values()), sizes


def test_gzip_batches_are_valid_jsonl_gz(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker(config=TrackerConfig(gzip=True, max_batch_events=10))
    _invoke(tracker, 15)
    tracker.flush_blocking(timeout=JOIN)

    files = _batch_files(tmp_destination)
    assert len(files) == 3
    assert all(f.name.endswith(".jsonl.gz") for f in files)
    lines = [line for f in files for line in gzip.decompress(f.read_bytes()).splitlines()]
    assert len(lines) == 30
    assert [orjson.loads(line)["seq"] for line in lines] == list(range(30))
    assert len(_events(tmp_destination)) == 30


@pytest.mark.anyio
async def test_batch_interval_writes_without_flush(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker(config=TrackerConfig(batch_interval=0.2))
    _text(tracker, "by-time")
    with anyio.fail_after(10):
        # The one poll: nothing signals "a file appeared" but the file itself.
        while not _visible_batches(tmp_destination):  # noqa: ASYNC110 - no event to wait on
            await anyio.sleep(0.02)
    assert [e["data"]["text"] for e in _events(tmp_destination)] == ["by-time"]


# -- properties: the engine alone ----------------------------------------------------------------


class MemorySink:
    """Keeps every batch in memory."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.documents: dict[str, bytes] = {}

    @property
    def destination(self) -> str:
        return "memory://test"

    async def start(self) -> None:
        return None

    async def write_batch(self, batch: Batch) -> None:
        self.batches.append(batch)

    async def write_document(self, key: str, data: bytes) -> None:
        self.documents[key] = data

    async def aclose(self) -> None:
        return None


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


def test_engine_statistics_and_closed_engine_drops() -> None:
    sink = MemorySink()
    engine = Engine(sink=sink, layout=Layout(experiment="e", run="r", writer="w"), translate=lambda r: r)
    try:
        for seq in range(3):
            engine.put({"seq": seq})
        engine.flush_blocking(JOIN)
        stats = engine.statistics()
        assert (stats.recorded, stats.written, stats.batches) == (3, 3, 1)
        assert stats.bytes == len(sink.batches[0].data)
        assert stats.pending_bytes == 0
        assert stats.queue_depth == 0
    finally:
        engine.close(JOIN)
    engine.put({"seq": 3})
    assert engine.statistics().dropped == 1
    assert engine.closed
    with pytest.raises(TrackerClosedError):
        engine.flush_blocking()
