"""The bounded buffer (``_pipeline/_queue.py``): drop and block policies, counts."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from engine_fakes import (
    JOIN,
    BlockingHook,
    events_in,
    join_threads,
    start_thread,
    text,
)

from asynctrack import (
    AsyncTracker,
    TrackerConfig,
)

pytest_plugins = ("engine_fixtures",)


# -- a full buffer ---------------------------------------------------------------------------


def test_full_buffer_drops_exactly_the_overflow_and_warns(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asynctrack")
    hook = BlockingHook()
    tracker = make_tracker(config=TrackerConfig(max_queue_events=10, redact=hook))
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
        text(tracker, "held")
        assert hook.entered.wait(JOIN)
        text(tracker, "q1")
        text(tracker, "q2")
        began = time.monotonic()
        text(tracker, "no room")  # waits block_timeout for room, then drops
        waited = time.monotonic() - began
        assert waited >= 0.29
        assert waited < 0.3 + 10  # bounded: the wait ends
        assert tracker.statistics().dropped == 1
    finally:
        hook.release.set()
    tracker.flush_blocking(timeout=JOIN)
    assert [e["data"]["text"] for e in events_in(tmp_destination)] == ["held", "q1", "q2"]


def test_block_mode_accepts_the_event_once_the_worker_makes_room(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path
) -> None:
    hook = BlockingHook()
    tracker = make_tracker(
        config=TrackerConfig(max_queue_events=1, when_full="block", block_timeout=JOIN, redact=hook)
    )
    try:
        text(tracker, "held")
        assert hook.entered.wait(JOIN)
        text(tracker, "queued")
        producer = start_thread(threading.Thread(target=text, args=(tracker, "waited")))
    finally:
        hook.release.set()
    join_threads(producer)
    tracker.flush_blocking(timeout=JOIN)
    assert [e["data"]["text"] for e in events_in(tmp_destination)] == ["held", "queued", "waited"]
    assert tracker.statistics().dropped == 0


def test_block_mode_refuses_an_infinite_timeout_at_construction() -> None:
    """``block_timeout=math.inf`` would make a callback wait for ever on a full buffer (and
    ``Condition.wait(inf)`` raises ``OverflowError``): refused with a clear ``ValueError``
    where the configuration is made. Waiting long for room is shown above with a 30 s
    timeout."""
    for bad in (math.inf, float("nan"), 0, -1.0):
        with pytest.raises(ValueError, match=r"block_timeout must be a positive number of seconds"):
            TrackerConfig(max_queue_events=1, when_full="block", block_timeout=bad)
