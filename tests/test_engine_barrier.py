"""The flush barrier (``_pipeline/_barrier.py``) and delivery (``_delivery.py``): timeouts,
failed writes, blocking flushes from any thread, the worker's own thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from engine_fakes import (
    JOIN,
    FlakySink,
    GatedSink,
    batch_files,
    events_in,
    join_threads,
    start_thread,
    text,
)

from asynctrack import (
    AsyncTracker,
    DeadlockError,
    FlushError,
    FlushTimeoutError,
    TrackerConfig,
)

# -- flush: timeouts, failures, threads --------------------------------------------------------


@pytest.mark.anyio
async def test_flush_timeout_reports_pending_and_discards_nothing(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    sink = GatedSink(tmp_destination)
    tracker = make_tracker(sink)
    try:
        for i in range(5):
            text(tracker, f"e{i}")
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
        assert batch_files(tmp_destination) == []
    finally:
        sink.gate.set()
    with anyio.fail_after(JOIN):
        await tracker.flush()

    assert [e["data"]["text"] for e in events_in(tmp_destination)] == [f"e{i}" for i in range(5)]
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
        text(tracker, f"e{i}")
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
    assert [e["data"]["text"] for e in events_in(tmp_destination)] == [f"e{i}" for i in range(4)]
    assert len(sink.keys) == 1
    stats = tracker.statistics()
    assert (stats.written, stats.failed, stats.lost) == (4, 0, 0)


def test_flush_blocking_without_an_event_loop(
    worker_mode: str, make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker()
    text(tracker, "sync")
    tracker.flush_blocking(timeout=JOIN)
    assert [e["data"]["text"] for e in events_in(tmp_destination)] == ["sync"]


@pytest.mark.anyio
async def test_flush_blocking_inside_a_running_loop(
    worker_mode: str, make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    tracker = make_tracker()
    text(tracker, "in-loop")
    tracker.flush_blocking(timeout=JOIN)  # blocks this loop, but the worker is elsewhere
    assert [e["data"]["text"] for e in events_in(tmp_destination)] == ["in-loop"]


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
    text(tracker, "x")
    tracker.flush_blocking(timeout=JOIN)

    assert len(outcomes) == 2
    assert all(isinstance(o, DeadlockError) for o in outcomes), outcomes
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert "worker thread" in str(outcomes[0])
    assert not tracker.closed
    assert [e["data"]["text"] for e in events_in(tmp_destination)] == ["x"]


def test_a_close_cut_short_by_a_nearer_deadline_says_how_long_it_waited(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    """A second close (the application's exit, a signal) brings a close's deadline nearer:
    the error (raised to one of the two callers) says the time the close had, not the
    first close's timeout (thread mode)."""
    sink = GatedSink(tmp_destination)
    tracker = make_tracker(sink)
    errors: list[FlushError] = []

    def close(timeout: float) -> None:
        try:
            tracker.close(timeout=timeout)
        except FlushError as exc:
            errors.append(exc)

    try:
        text(tracker, "held")
        closer = start_thread(threading.Thread(target=close, args=(JOIN,)))
        began = time.monotonic()
        while tracker._engine._worker.close_marker is None:  # the first close is under way
            assert time.monotonic() - began < JOIN
            time.sleep(0.001)
        close(0.3)
        join_threads(closer)
    finally:
        sink.gate.set()
    (error,) = errors
    assert isinstance(error, FlushTimeoutError)
    waited = float(re.search(r"timed out after (\S+) s", str(error))[1])  # type: ignore[index]
    assert 0.3 <= waited < JOIN / 2 and error.timeout == waited


class _SlowClosingSink(GatedSink):
    """Writes at once; its ``aclose`` waits for ``gate`` (the worker is then past its
    deadline's scope, in the close's last steps)."""

    async def write_batch(self, batch: Any) -> None:
        await self.local.write_batch(batch)

    async def aclose(self) -> None:
        self.entered.set()
        await asyncio.to_thread(self.gate.wait, JOIN)
        await self.local.aclose()


def test_a_nearer_deadline_during_the_close_s_last_steps_is_no_error(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A second close that arrives while the first one closes the sinks (the worker's
    timeout has finished) brings the deadline nearer without an error in the worker's
    loop ("Cannot change state of finished Timeout" was logged by asyncio)."""
    sink = _SlowClosingSink(tmp_destination)
    tracker = make_tracker(sink)
    text(tracker, "written")
    closer = start_thread(threading.Thread(target=tracker.close, kwargs={"timeout": JOIN}))
    try:
        assert sink.entered.wait(JOIN)  # the first close is in the sink's aclose
        with caplog.at_level(logging.ERROR, logger="asyncio"), contextlib.suppress(FlushError):
            tracker.close(timeout=0.2)
    finally:
        sink.gate.set()
        join_threads(closer)
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text
    assert [e["data"]["text"] for e in events_in(tmp_destination)] == ["written"]
