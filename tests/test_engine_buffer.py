"""The bounded buffer (``_pipeline/_queue.py``): drop and block policies, counts, in both worker modes."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _infra.hooks import WorkerGate
from engine_fakes import (
    JOIN,
    BlockingHook,
    GatedSink,
    events_in,
    join_threads,
    start_thread,
    text,
    wait_until,
)

from asynctrack import (
    AsyncTracker,
    FlushError,
    TrackerConfig,
)
from asynctrack._pipeline._queue import BoundedQueue, Control
from asynctrack._pipeline._statistics import Reporter
from asynctrack._remote import _spawn

# -- a full buffer ---------------------------------------------------------------------------


def test_full_buffer_drops_exactly_the_overflow_and_warns(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The exact count, in the application's buffer: a worker thread that holds t0 takes
    nothing more, so of t1..t17 the buffer keeps ten and drops seven."""
    caplog.set_level(logging.WARNING, logger="asynctrack")
    hook = BlockingHook()
    tracker = make_tracker(config=TrackerConfig(max_queue_events=10, redact=hook, worker="thread"))
    try:
        text(tracker, "t0")
        assert hook.entered.wait(JOIN)  # the worker holds t0; the buffer is empty
        for i in range(1, 18):
            text(tracker, f"t{i}")  # t1..t10 fit, t11..t17 do not
        stats = tracker.statistics()
        assert stats.dropped == 7
        assert stats.queue_depth == 10
        assert stats.recorded == 11
    finally:
        hook.release.set()
    tracker.flush_blocking(timeout=JOIN)

    assert [e["data"]["text"] for e in events_in(tmp_destination)] == [f"t{i}" for i in range(11)]
    stats = tracker.statistics()
    assert (stats.written, stats.dropped) == (11, 7)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    said = "dropped 7 event(s) (7 in all): 7 over max_queue_events=10 (the buffer was full)"
    assert any(message.endswith(said) for message in warnings), warnings


def test_an_event_over_the_byte_bound_is_dropped_and_the_warning_names_max_queue_bytes(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A body larger than ``max_queue_bytes`` is taken alone (the bound is checked before
    the append); the small event after it is dropped by the byte bound, not the count.
    Process mode: the application's queue holds the byte bound there."""
    caplog.set_level(logging.WARNING, logger="asynctrack")
    config = TrackerConfig(max_queue_bytes=64 * 1024, max_batch_bytes=64 * 1024, worker="process")
    tracker = make_tracker(config=config)
    text(tracker, "t0")
    tracker.flush_blocking(timeout=JOIN)  # the worker process is up
    with _spawn.worker_process()._lock:  # the shipper takes nothing meanwhile
        text(tracker, "big" + "x" * 100_000)
        text(tracker, "small")
        assert (tracker.statistics().dropped, tracker.statistics().queue_depth) == (1, 1)
    tracker.flush_blocking(timeout=JOIN)
    assert [e["data"]["text"][:3] for e in events_in(tmp_destination)] == ["t0", "big"]

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]

    wait_until(lambda: bool(said()), "the drop warning")
    assert said() == [
        "asynctrack dropped 1 event(s) (1 in all): 1 over max_queue_bytes=65536 (the buffer was full)"
    ]


class _RunIdThatRaises:
    """A run id whose ``.int`` raises: the callback cannot capture the event."""

    @property
    def int(self) -> int:
        raise RuntimeError("no int")


def test_an_event_whose_capture_raised_is_dropped_and_the_warning_says_so(
    worker_mode: str,
    make_tracker: Callable[..., AsyncTracker],
    tmp_destination: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="asynctrack")
    tracker = make_tracker()
    tracker.on_text("lost", run_id=_RunIdThatRaises())  # type: ignore[arg-type]  # the bad id under test
    text(tracker, "kept")
    tracker.flush_blocking(timeout=JOIN)
    assert [e["data"]["text"] for e in events_in(tmp_destination)] == ["kept"]
    assert tracker.statistics().dropped == 1

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]

    wait_until(lambda: bool(said()), "the drop warning")  # process mode: the shipper's next round
    assert said() == ["asynctrack dropped 1 event(s) (1 in all): 1 whose capture raised"]


def test_the_drop_warning_counts_each_reason_since_it_last_spoke(caplog: pytest.LogCaptureFixture) -> None:
    """The queue and the reporter of both engines: the count bound, then records put after
    close; the warning gives each reason its own count (at most one warning per 10 s)."""
    caplog.set_level(logging.WARNING, logger="asynctrack")
    queue: BoundedQueue[Control] = BoundedQueue(max_events=1, wake=lambda: None)
    reporter = Reporter()
    for i in range(3):
        queue.put(("text", i, 0.0, None, None, None, b"", None))  # 0 fits, 1 and 2 do not
    queue.close()
    queue.put(("text", 3, 0.0, None, None, None, b"", None))
    reporter.drops(queue.dropped, queue.dropped_by)
    assert [r.getMessage() for r in caplog.records] == [
        "asynctrack dropped 3 event(s) (3 in all): 2 over max_queue_events=1 (the buffer was full), "
        "1 recorded after the tracker closed"
    ]
    reporter.drops(queue.dropped, queue.dropped_by)  # nothing new: nothing said
    assert len(caplog.records) == 1


#: Small bounds, so that a held worker fills them in either mode: the count bound in the
#: application's buffer, the byte bound in what the worker process holds or is shipped.
SMALL = {"max_queue_events": 2, "max_batch_bytes": 2048, "max_queue_bytes": 2048}


def test_a_held_worker_makes_the_drop_policy_drop_and_count(
    worker_mode: str,
    make_tracker: Callable[..., AsyncTracker],
    worker_gate: WorkerGate,
    tmp_destination: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every event is written or counted as dropped, never both, never neither; what is
    written keeps its order; the drops are logged."""
    caplog.set_level(logging.WARNING, logger="asynctrack")
    tracker = make_tracker(config=TrackerConfig(**SMALL, redact=worker_gate))
    offered = [f"e{i}" for i in range(500)]
    text(tracker, offered[0])
    assert worker_gate.wait_entered(JOIN)
    for value in offered[1:]:
        text(tracker, value)
    worker_gate.release()
    tracker.flush_blocking(timeout=JOIN)

    written = [e["data"]["text"] for e in events_in(tmp_destination)]
    stats = tracker.statistics()
    assert stats.dropped > 0
    assert (stats.written, stats.recorded + stats.dropped) == (len(written), len(offered))
    assert written == [value for value in offered if value in set(written)]  # in order
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("dropped" in message for message in warnings), warnings


def test_block_mode_waits_block_timeout_then_drops(
    worker_mode: str,
    make_tracker: Callable[..., AsyncTracker],
    worker_gate: WorkerGate,
    tmp_destination: Path,
) -> None:
    """With the worker held, a callback that finds no room waits ``block_timeout``, then
    its event is dropped; every other event is written, in order."""
    tracker = make_tracker(
        config=TrackerConfig(**SMALL, when_full="block", block_timeout=0.3, redact=worker_gate)
    )
    text(tracker, "held")
    assert worker_gate.wait_entered(JOIN)
    recorded, waited = ["held"], 0.0
    for i in range(200):  # in process mode the worker is shipped ~2 KiB first, then the buffer fills
        began = time.monotonic()
        text(tracker, f"q{i}")
        waited = time.monotonic() - began
        if waited >= 0.29:
            break
        recorded.append(f"q{i}")
    assert 0.29 <= waited < 0.3 + 10  # one callback waited block_timeout (bounded), then dropped
    assert tracker.statistics().dropped == 1
    worker_gate.release()
    tracker.flush_blocking(timeout=JOIN)
    assert [e["data"]["text"] for e in events_in(tmp_destination)] == recorded


def test_block_mode_accepts_the_event_once_the_worker_makes_room(
    worker_mode: str,
    make_tracker: Callable[..., AsyncTracker],
    worker_gate: WorkerGate,
    tmp_destination: Path,
) -> None:
    """A producer that outruns a held worker waits for room instead of dropping: once the
    buffer is full it cannot finish until the worker is let go, and then nothing is lost."""
    tracker = make_tracker(
        config=TrackerConfig(**SMALL, when_full="block", block_timeout=JOIN, redact=worker_gate)
    )
    text(tracker, "held")
    assert worker_gate.wait_entered(JOIN)
    values = [f"p{i}" for i in range(200)]
    producer = start_thread(threading.Thread(target=lambda: [text(tracker, v) for v in values]))
    wait_until(lambda: tracker.statistics().queue_depth >= SMALL["max_queue_events"], "a full buffer")
    assert producer.is_alive()  # 200 events cannot fit: it waits for room
    worker_gate.release()
    join_threads(producer)
    tracker.flush_blocking(timeout=JOIN)
    assert [e["data"]["text"] for e in events_in(tmp_destination)] == ["held", *values]
    assert tracker.statistics().dropped == 0


def test_block_mode_refuses_an_infinite_timeout_at_construction() -> None:
    """``block_timeout=math.inf`` would make a callback wait for ever on a full buffer (and
    ``Condition.wait(inf)`` raises ``OverflowError``): refused with a clear ``ValueError``
    where the configuration is made. Waiting long for room is shown above with a 30 s
    timeout."""
    for bad in (math.inf, float("nan"), 0, -1.0):
        with pytest.raises(ValueError, match=r"block_timeout must be a positive number of seconds"):
            TrackerConfig(max_queue_events=1, when_full="block", block_timeout=bad)


def test_the_thread_engine_holds_max_queue_bytes_and_closes_by_its_deadline(
    make_tracker: Callable[..., AsyncTracker], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Thread mode (a ``Sink`` object) on a destination that takes nothing: the worker
    stops taking at ``max_queue_bytes`` and the application's queue holds at most
    ``max_queue_bytes`` of captured bytes too, dropping (and counting) the rest; the close
    ends by its deadline, spools every recorded event, counts none twice and holds
    nothing after. (The queue had no byte bound: it held its 100,000 events, 200 MB of
    2 KB prompts, and the close spent seconds past its grace encoding them.)"""
    caplog.set_level(logging.WARNING, logger="asynctrack")
    bound = 64 * 1024
    sink = GatedSink(tmp_path / "dest")  # never lets a write through
    tracker = make_tracker(
        sink, config=TrackerConfig(max_queue_bytes=bound, max_batch_bytes=16 * 1024, max_batch_events=8)
    )
    try:
        offered = 400  # ~800 KB of bodies: six times both bounds together
        for i in range(offered):
            text(tracker, f"e{i}" + "x" * 2000)
        stats = tracker.statistics()
        assert stats.worker_mode == "thread"
        assert stats.dropped > 0
        assert stats.queue_depth * 2000 <= bound + 2100, stats
        began = time.monotonic()
        with pytest.raises(FlushError):
            tracker.close(timeout=0.5)
        assert time.monotonic() - began < 0.5 + 2.0  # the grace (5 s) is for a stuck worker
    finally:
        sink.gate.set()
    stats = tracker.statistics()
    assert stats.recorded + stats.dropped == offered
    assert (stats.spooled, stats.lost, stats.written) == (stats.recorded, 0, 0), stats
    assert stats.pending_bytes == 0
    said = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert any(f"over max_queue_bytes={bound} (the buffer was full)" in m for m in said), said
