"""The engine as a whole (``_pipeline/_engine.py``): every event exactly once from threads,
tasks and loops; the engine alone, without a tracker.

Most tests record through an ``AsyncTracker`` (the engine's only producer) and use fakes
at the ``Sink`` seam (``engine_fakes``). The engine's parts have their own modules:
``test_engine_buffer``, ``test_engine_barrier``, ``test_engine_batcher``,
``test_engine_lifecycle``, ``test_engine_spool``. Waits are bounded by
``anyio.fail_after``, ``flush(timeout=...)`` or ``join(timeout)``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import types
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import anyio.lowlevel
import orjson
import pytest
from engine_fakes import (
    JOIN,
    MemorySink,
    events_in,
    join_threads,
    start_thread,
)
from export_workloads import recorded_lines
from langchain_core.runnables import RunnableLambda

from asynctrack import (
    AsyncTracker,
    TrackerClosedError,
    TrackerConfig,
)
from asynctrack._layout import Layout
from asynctrack._pipeline import _loop
from asynctrack._pipeline._engine import Engine

# -- concurrency ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_threads_tasks_and_another_loop_record_every_event_exactly_once(
    worker_mode: str, make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
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

    threads = [start_thread(threading.Thread(target=thread_body, args=(t,))) for t in range(threads_n)]
    threads.append(start_thread(threading.Thread(target=other_loop)))
    start.wait(JOIN)
    with anyio.fail_after(JOIN):
        async with anyio.create_task_group() as group:
            for i in range(tasks_n):
                group.start_soon(async_chain.ainvoke, f"task-{i}", config)
    await anyio.to_thread.run_sync(join_threads, *threads)
    with anyio.fail_after(JOIN):
        await tracker.flush()

    invokes = threads_n * per_thread + tasks_n + other_loop_tasks
    events = events_in(tmp_destination)
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
    worker_mode: str, make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
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
        for event in events_in(tmp_destination):
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

    recorders = [start_thread(threading.Thread(target=record_in_thread, args=(t,))) for t in range(3)]
    flushers = [start_thread(threading.Thread(target=flush_in_thread, args=(t,))) for t in range(2)]
    with anyio.fail_after(JOIN):
        async with anyio.create_task_group() as group:
            for t in range(4):
                group.start_soon(record_in_task, t)

            async def flushers_then_stop() -> None:
                async with anyio.create_task_group() as inner:
                    for t in range(3):
                        inner.start_soon(flush_in_task, t)
                await anyio.to_thread.run_sync(join_threads, *flushers)
                stop.set()

            group.start_soon(flushers_then_stop)
    await anyio.to_thread.run_sync(join_threads, *recorders)

    assert flushes == 2 * 4 + 3 * 4
    assert problems == []
    with anyio.fail_after(JOIN):
        await tracker.flush()
    events = events_in(tmp_destination)
    assert sorted(e["seq"] for e in events) == list(range(len(events)))
    starts = [e["data"]["inputs"] for e in events if e["kind"] == "chain_start"]
    assert len(starts) == len(set(starts)) == len(done)
    assert set(starts) == set(done)


# -- the engine alone ---------------------------------------------------------------------


@pytest.mark.parametrize("packed", [False, True], ids=["application", "worker process"])
def test_the_worker_hands_the_gil_over_between_budgets_only_in_the_application(
    packed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In the application, the engine sleeps _PAUSE after each _BUDGET of encoding, so that
    # a caller waiting for the GIL takes it at once; the worker process's engine (packed
    # frames of records) has no caller to hand it to, and a pause is ~120 µs of wall time.
    pauses = []

    class _Time(types.SimpleNamespace):
        def sleep(self, seconds: float) -> None:
            if seconds == _loop._PAUSE:
                pauses.append(seconds)
            time.sleep(seconds)

    monkeypatch.setattr(_loop, "time", _Time(perf_counter=time.perf_counter, monotonic=time.monotonic))

    def translate(item: list[int]) -> list[tuple[int, bytes]]:
        spin = time.perf_counter() + 2 * _loop._BUDGET  # encoding that takes its time
        while time.perf_counter() < spin:
            pass
        return [(seq, b'{"seq":%d}\n' % seq) for seq in item]

    engine = Engine(
        sink=MemorySink(),
        layout=Layout(experiment="e", run="r", writer="w"),
        translate=translate,  # type: ignore[arg-type]  # a list of lines per packed item
        records_in=len if packed else None,
    )
    try:
        for seq in range(0, 20, 2):
            engine.put([seq, seq + 1] if packed else [seq])
        engine.flush_blocking(JOIN)
    finally:
        engine.close(JOIN)
    assert engine.statistics().written == (20 if packed else 10)
    assert bool(pauses) is not packed


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


# -- exporters ---------------------------------------------------------------------------------


class _Told:
    """An exporter (its configuration and its running part at once) that keeps what the
    engine hands it: lines with their kinds and run ids (``records``), or lines alone."""

    def __init__(self) -> None:
        self.told: list[tuple[bytes, object, object]] = []
        self.untold: list[bytes] = []

    def start(self) -> _Told:
        return self

    def lines(self, lines: Sequence[bytes]) -> None:
        self.untold += lines

    def records(self, lines: Sequence[bytes], kinds: Sequence[str], runs: Sequence[object]) -> None:
        self.told += zip(lines, kinds, runs, strict=True)

    def flush(self, timeout: float | None) -> str | None:
        return None

    def close(self, timeout: float | None) -> None:
        return None

    def statistics(self) -> dict[str, int]:
        return {}


@pytest.mark.parametrize("hook", [False, True])
def test_exporters_are_told_each_line_s_kind_and_run_id(tmp_path: Path, hook: bool) -> None:
    # The engine knows each line's kind and run id as it writes it, and tells an exporter
    # that takes them (RecordExporter); with a redact hook, which may change any field,
    # it hands the lines alone.
    exporter = _Told()
    config = TrackerConfig(worker="thread", redact=(lambda event: event) if hook else None)
    tracker = AsyncTracker(tmp_path / "logs", config=config, exporters=[exporter])
    for i in range(20):
        run_id = uuid.uuid4()
        tracker.on_chain_start({}, {"x": i}, run_id=run_id, name="step")
        for token in ("a", "b", "c"):
            tracker.on_llm_new_token(token, run_id=run_id)
        tracker.on_chain_end({"y": i}, run_id=run_id)
    tracker.close()
    written = sorted(recorded_lines(tmp_path / "logs"))  # (without their newlines)
    assert len(written) == 100
    if hook:
        assert (exporter.told, sorted(line.rstrip() for line in exporter.untold)) == ([], written)
        return
    assert (exporter.untold, sorted(line.rstrip() for line, _, _ in exporter.told)) == ([], written)
    for line, kind, run_id in exporter.told:
        event = orjson.loads(line)
        assert (kind, run_id) == (event["kind"], event["run_id"])
