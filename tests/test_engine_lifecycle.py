"""The lifecycle (``_pipeline/_loop.py``, ``_engine.py``): holes found by an adversarial user, closed.

One test per hole that can be shown in this process, through the public
``AsyncTracker`` API. The holes that need a signal, a fork or a whole process exit
are in ``tests/test_process.py``; the spool's in ``tests/test_engine_spool.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from _infra.hooks import WorkerGate, slow_hook
from engine_fakes import JOIN, BlockingHook, GatedSink, MemorySink, text, wait_until

import asynctrack
from asynctrack import AsyncTracker, FlushError, FlushTimeoutError, TrackerClosedError, TrackerConfig, _exit
from asynctrack._pipeline._engine import Engine, State


def _texts(destination: Path) -> list[str]:
    return [e["data"]["text"] for e in asynctrack.read_events(destination)]


@pytest.mark.anyio
async def test_a_cancelled_aclose_still_writes_every_event(
    worker_mode: str,
    make_tracker: Callable[..., AsyncTracker],
    worker_gate: WorkerGate,
    tmp_destination: Path,
) -> None:
    """``asyncio.wait_for(tracker.aclose(), ...)`` gives up while the worker is busy (a hook
    holds it): the close goes on in the worker and writes every event to the healthy disk."""
    tracker = make_tracker(config=TrackerConfig(redact=worker_gate))
    for i in range(100):
        text(tracker, f"e{i}")
    assert worker_gate.wait_entered(JOIN)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(tracker.aclose(), timeout=0.05)
    assert tracker.closed
    worker_gate.release()
    with anyio.fail_after(JOIN):
        await tracker.aclose()  # waits for the close under way

    assert _texts(tmp_destination) == [f"e{i}" for i in range(100)]


@pytest.mark.anyio
async def test_flush_with_a_zero_timeout_returns_on_an_idle_tracker(
    worker_mode: str, make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    """Nothing to wait for, so nothing to time out: a new tracker, and one whose events
    are all written, return from ``flush(timeout=0)``. It used to send a marker to the
    worker anyway and raise FlushTimeoutError(pending=0) whenever the worker could not
    answer within the call: here another thread keeps the interpreter busy, as an
    application does (it failed about two calls in three)."""
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            sum(range(1000))

    spinner = threading.Thread(target=busy)
    spinner.start()
    try:
        tracker = make_tracker()
        await tracker.flush(timeout=0)
        tracker.flush_blocking(timeout=0)
        for i in range(3):
            text(tracker, f"e{i}")
        with anyio.fail_after(JOIN):
            await tracker.flush()
        for _ in range(100):
            await tracker.flush(timeout=0)
            tracker.flush_blocking(timeout=0)
    finally:
        stop.set()
        spinner.join(JOIN)
    assert _texts(tmp_destination) == ["e0", "e1", "e2"]


def test_recorded_never_reads_more_than_the_callbacks_made(
    worker_mode: str,
    make_tracker: Callable[..., AsyncTracker],
) -> None:
    """Four threads record while another reads ``statistics()`` as fast as it can. Each
    reading of ``recorded`` is at most the callbacks begun before it, and at the end it is
    exactly their number. (It counted records the worker took between two of its reads
    twice, as taken and as queued.) A hook makes the worker slower than the producers, so
    that the buffer is long and the worker takes records while it is being counted."""

    tracker = make_tracker(config=TrackerConfig(max_queue_events=1_000_000, redact=slow_hook))
    begun: list[int] = []  # one item per callback begun; list.append is atomic
    producers_n, per_producer = 4, 20_000
    done = threading.Event()
    overcounts: list[tuple[int, int]] = []
    readings = 0

    def produce() -> None:
        for i in range(per_producer):
            begun.append(1)
            text(tracker, f"e{i}")

    def read() -> None:
        nonlocal readings
        while not done.is_set():
            recorded = tracker.statistics().recorded
            made = len(begun)  # read after: every callback counted in `recorded` had begun
            readings += 1
            if recorded > made:
                overcounts.append((recorded, made))

    reader = threading.Thread(target=read)
    producers = [threading.Thread(target=produce) for _ in range(producers_n)]
    reader.start()
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join(JOIN)
    done.set()
    reader.join(JOIN)
    assert not reader.is_alive() and not any(t.is_alive() for t in producers)

    assert readings > 0
    assert overcounts == [], overcounts[:5]
    tracker.flush_blocking(timeout=JOIN)
    stats = tracker.statistics()
    assert stats.recorded == stats.written == producers_n * per_producer


def test_the_state_machine_moves_one_way() -> None:
    """created -> started -> closing -> closed; a second close changes nothing."""
    from asynctrack._layout import Layout

    engine = Engine(sink=MemorySink(), layout=Layout(experiment="e", run="r", writer="w"), translate=dict)
    assert engine.state in (State.CREATED, State.STARTED)
    engine.put({"seq": 0})
    engine.flush_blocking(JOIN)
    assert engine.state is State.STARTED
    engine.close(JOIN)
    assert engine.state is State.CLOSED
    assert engine.closed
    engine.close(JOIN)  # idempotent
    assert engine.state is State.CLOSED
    stats = engine.statistics()
    assert (stats.worker_mode, stats.worker_restarts, stats.retained_bytes) == ("thread", 0, 0)


def test_close_past_its_deadline_counts_lost_events(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    sink = GatedSink(tmp_destination)
    tracker = make_tracker(sink, config=TrackerConfig(spool=False))
    try:
        for i in range(3):
            text(tracker, f"e{i}")
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


def _unwritable(destination: Path) -> Path:
    """Make every write to ``destination`` fail (as root too): a file where the
    experiment's directory goes. Removing it makes the destination writable again."""
    destination.mkdir(parents=True, exist_ok=True)
    blocker = destination / "experiment=exp"
    blocker.write_bytes(b"")
    return blocker


def test_close_retries_a_destination_unwritable_for_a_moment(
    worker_mode: str, make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    """The destination refuses every write (a full disk, say) until 0.5 s into the close:
    the close retries with the backoff until its deadline, and writes every event. (It
    counted them all as lost at the first failure, 0.01 s into a 30 s close.)"""
    blocker = _unwritable(tmp_destination)
    tracker = make_tracker()
    for i in range(100):
        text(tracker, f"e{i}")
    with pytest.raises(FlushError):  # the write was tried, and failed
        tracker.flush_blocking(timeout=JOIN)
    freed = threading.Timer(0.5, blocker.unlink)
    freed.start()
    try:
        tracker.close(timeout=JOIN)
    finally:
        freed.join(JOIN)
    stats = tracker.statistics()
    assert (stats.written, stats.lost) == (100, 0), stats
    assert _texts(tmp_destination) == [f"e{i}" for i in range(100)]


def test_close_counts_what_it_could_not_write_by_its_deadline_as_lost_and_holds_none_of_it(
    worker_mode: str, make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    """A destination that stays unwritable: retried until the deadline, then counted as
    lost; the statistics then hold no bytes of it (``pending_bytes`` and, in process
    mode, ``retained_bytes`` still counted the lost batch)."""
    _unwritable(tmp_destination)
    tracker = make_tracker()
    for i in range(100):
        text(tracker, f"e{i}")
    began = time.monotonic()
    with pytest.raises(FlushError, match="100 lost"):
        tracker.close(timeout=1.0)
    assert time.monotonic() - began >= 0.9  # retried until the deadline
    stats = tracker.statistics()
    assert (stats.recorded, stats.written, stats.lost) == (100, 0, 100), stats
    assert (stats.pending_bytes, stats.retained_bytes) == (0, 0), stats


def test_events_a_stuck_worker_spools_after_its_close_gave_up_are_no_longer_lost(
    make_tracker: Callable[..., AsyncTracker], tmp_path: Path
) -> None:
    """A hook holds the worker thread past the close's deadline and grace: the close gives
    up and counts the ten events it holds as lost. Let go, the worker spools them: they
    leave ``lost`` as they enter ``spooled`` (they were counted both)."""
    hook = BlockingHook()
    sink = GatedSink(tmp_path / "dest")  # remote as far as the tracker knows: it spools
    sink.gate.set()
    tracker = make_tracker(sink, config=TrackerConfig(redact=hook))
    try:
        for i in range(10):
            text(tracker, f"e{i}")
        assert hook.entered.wait(JOIN)
        with pytest.raises(FlushTimeoutError, match="did not stop within 5 s"):
            tracker.close(timeout=0.0)
        stats = tracker.statistics()
        assert (stats.recorded, stats.lost, stats.spooled, stats.written) == (10, 10, 0, 0)
    finally:
        hook.release.set()
    wait_until(lambda: tracker.statistics().spooled == 10, "the worker to spool what it held")
    wait_until(lambda: tracker._engine.state is State.CLOSED, "the worker to end")
    stats = tracker.statistics()
    assert (stats.recorded, stats.spooled, stats.lost, stats.written) == (10, 10, 0, 0)
    assert stats.pending_bytes == 0


def test_the_exit_hook_closes_trackers_side_by_side(
    make_tracker: Callable[..., AsyncTracker], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two trackers whose destinations hold every write: the exit hook starts both closes
    before it waits for either, so the second's write begins while the first's is still
    held. (One after the other, the second tracker only got what the first left of
    ``ASYNCTRACK_EXIT_TIMEOUT``.)"""
    monkeypatch.setenv("ASYNCTRACK_EXIT_TIMEOUT", "60")
    sink_a, sink_b = GatedSink(tmp_path / "a"), GatedSink(tmp_path / "b")
    config = TrackerConfig(batch_interval=3600.0)  # only a close writes
    a, b = make_tracker(sink_a, config=config), make_tracker(sink_b, config=config)
    text(a, "a")
    text(b, "b")
    # Only these two: other tests' trackers are theirs to close, and the worker process
    # (shared by this test process) is not to be shut down.
    monkeypatch.setattr(_exit, "_live", {id(t._engine): t._engine for t in (a, b)})
    monkeypatch.setattr(_exit, "exit_hooks", [])
    closer = threading.Thread(target=_exit.close_all)
    closer.start()
    try:
        assert sink_a.entered.wait(JOIN)
        assert sink_b.entered.wait(JOIN), "the second close waited for the first"
    finally:
        sink_a.gate.set()
        sink_b.gate.set()
    closer.join(JOIN)
    assert not closer.is_alive()
    assert a.closed and b.closed
    assert (sink_a.keys and sink_b.keys) and a.statistics().written == b.statistics().written == 1
