"""The bounded queue (``_pipeline/_queue.py``) alone, the engine protocol both engines
implement, and the block policy in process mode (a worker process that is slow for real)."""

from __future__ import annotations

import gc
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _infra.hooks import GATE_VARIABLE, wait_for_gate
from engine_fakes import JOIN, events_in, join_threads, start_thread
from hypothesis import given, settings
from hypothesis import strategies as st

from asynctrack import AsyncTracker, TrackerConfig
from asynctrack._events._schema import BODY, WIDTH
from asynctrack._pipeline._engine import Engine
from asynctrack._pipeline._protocol import TrackerEngine
from asynctrack._pipeline._queue import WAKE_AT, BoundedQueue, Control
from asynctrack._remote._client import ProcessEngine


class _Flag(Control):
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _record(seq: int, size: int = 10) -> tuple[Any, ...]:
    return ("text", seq, 0.0, None, None, None, b"x" * size, None)


def _queue(**kwargs: Any) -> tuple[BoundedQueue[_Flag], list[int]]:
    wakes: list[int] = []
    options: dict[str, Any] = {"max_events": 1000, "wake": lambda: wakes.append(1)}
    options.update(kwargs)
    return BoundedQueue(**options), wakes


# -- the queue alone ---------------------------------------------------------------------------

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 40)),
        st.tuples(st.just("control"), st.integers(0, 0)),
        st.tuples(st.just("take"), st.integers(1, 8)),
    ),
    max_size=80,
)


def _model_take(model: list[Any], limit: int, size: Callable[[list[Any]], int]) -> tuple[list[Any], Any]:
    """What ``take(limit)`` must return from a queue holding ``model`` (popped from it):
    items while ``size`` of those taken is under ``limit``, up to the first control."""
    taken: list[Any] = []
    while model and size(taken) < limit:
        item = model.pop(0)
        if isinstance(item, Control):
            return taken, item
        taken.append(item)
    return taken, None


@settings(max_examples=150, deadline=None)
@given(ops=_OPS, max_events=st.integers(1, 12), max_bytes=st.one_of(st.none(), st.integers(20, 200)))
def test_the_queue_keeps_order_bounds_and_counts_under_any_sequence(
    ops: list[tuple[str, int]], max_events: int, max_bytes: int | None
) -> None:
    """Whatever the producers and the consumer do: records and controls come out in the
    order they went in, a chunk stops at the first control, the bounds hold (a control
    ignores them), every refused record is counted, and ``counts()`` and the bytes
    queued and taken are exact (one thread)."""
    queue, _ = _queue(max_events=max_events, max_bytes=max_bytes)
    model: list[Any] = []  # what should be queued, in order
    out: list[Any] = []
    accepted = dropped = taken = seq = 0
    for op, n in ops:
        if op == "put":
            record = _record(seq, n)
            seq += 1
            records = [x for x in model if not isinstance(x, Control)]
            full = len(model) >= max_events or (
                max_bytes is not None and sum(len(r[6]) for r in records) > max_bytes
            )
            queue.put(record)
            if full:
                dropped += 1
            else:
                accepted += 1
                model.append(record)
        elif op == "control":
            flag = _Flag(f"f{seq}")
            seq += 1
            queue.put_control(flag)
            model.append(flag)
        else:
            chunk, control = queue.take(n)
            expected, expected_control = _model_take(model, n, len)
            assert chunk == expected
            assert control is expected_control
            if max_bytes is not None:  # what the shipper cuts its frames by
                assert queue.taken_bytes == sum(len(r[6]) for r in chunk)
            taken += len(chunk)
            out.extend(chunk)
        queued = sum(1 for x in model if not isinstance(x, Control))
        assert queue.counts() == (taken, queued)
        assert queue.dropped == dropped
        assert len(queue) == len(model)
        if max_bytes is not None:
            assert queue.bytes == sum(len(r[6]) for r in model if not isinstance(r, Control))
        for flag in model:
            if isinstance(flag, _Flag):
                assert queue.queued_before(flag) == sum(
                    1 for x in model[: model.index(flag)] if not isinstance(x, Control)
                )
    assert [r[1] for r in out] == sorted(r[1] for r in out)


@pytest.mark.parametrize("limit", [1, 64, 65, 300])
def test_a_take_of_few_or_many_records_returns_them_in_order_up_to_its_limit(limit: int) -> None:
    """A take of a few records ahead of the rest (their slots set aside) and of many
    (what stays moved down): both return the oldest records, in order, up to the limit,
    and count them and their bytes."""
    queue, _ = _queue(max_events=1000, max_bytes=1 << 20)
    queued = limit + 5
    records = [_record(seq, seq % 7) for seq in range(queued)]
    for record in records:
        queue.put(record)
    chunk, control = queue.take(limit)
    assert (chunk, control) == (records[:limit], None)
    assert queue.taken_bytes == sum(len(r[6]) for r in chunk)
    chunk, _ = queue.take(queued)
    assert chunk == records[limit:]
    assert queue.counts() == (queued, 0)
    assert queue.bytes == 0


@pytest.mark.parametrize("max_bytes", [None, 1 << 20])
def test_a_backlog_is_taken_in_slices_without_moving_it_and_drained_in_order(max_bytes: int | None) -> None:
    """The queue holds records flat (their fields, no tuple). Slices taken from the front
    of a long backlog leave the rest where it is, the taken slots held only while fewer
    than what stays (the list is never twice the queue); ``put_many``, a control, a
    ``drain()`` after partial takes and the counts keep their order and meaning."""
    queue, _ = _queue(max_events=10_000, max_bytes=max_bytes)
    records = [_record(seq, seq % 5) for seq in range(1000)]
    queue.put_many(records[:500])
    for record in records[500:]:
        queue.put(record)
    flag = _Flag("flush")
    queue.put_control(flag)
    assert len(queue) == 1001 and queue.counts() == (0, 1000)
    assert not any(type(slot) is tuple for slot in queue.items)
    taken: list[Any] = []
    for _ in range(5):
        chunk, control = queue.take(64)
        assert control is None
        taken += chunk
        assert 0 < len(queue.items) < 2 * len(queue) * WIDTH
    assert taken == records[:320]
    assert queue.queued_before(flag) == 680 and queue.controls() == [flag]
    assert queue.drain() == [*records[320:], flag]
    assert queue.counts() == (1000, 0) and len(queue) == 0 and not queue.length()
    queue.put(records[0])
    assert queue.take(5) == ([records[0]], None)


_PACKED_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 9)),
        st.tuples(st.just("control"), st.integers(0, 0)),
        st.tuples(st.just("take"), st.integers(1, 12)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops=_PACKED_OPS, max_events=st.integers(1, 30))
def test_packed_items_are_counted_bounded_and_taken_by_their_records(
    ops: list[tuple[str, int]], max_events: int
) -> None:
    """Items that stand for several records each (the worker process's frames): the
    counts, the count bound, the drops and take()'s limit are in records; an item is
    never split; controls keep their place."""
    queue, _ = _queue(max_events=max_events, records_in=lambda item: item[1])
    model: list[Any] = []
    taken = dropped = 0

    def records(items: list[Any]) -> int:
        return sum(x[1] for x in items if not isinstance(x, Control))

    for number, (op, n) in enumerate(ops):
        if op == "put":
            item = (f"frame-{number}", n)
            queue.put(item)
            if records(model) + sum(isinstance(x, Control) for x in model) + n > max_events:
                dropped += n
            else:
                model.append(item)
        elif op == "control":
            flag = _Flag(f"f{number}")
            queue.put_control(flag)
            model.append(flag)
        else:
            chunk, control = queue.take(n)
            assert (chunk, control) == _model_take(model, n, records)
            taken += records(chunk)
        assert queue.counts() == (taken, records(model))
        assert queue.dropped == dropped
        for flag in model:
            if isinstance(flag, _Flag):
                assert queue.queued_before(flag) == records(model[: model.index(flag)])
    assert queue.drain() == model
    assert queue.counts() == (taken + records(model), 0)


def test_a_backlog_of_packed_records_wakes_a_busy_consumer() -> None:
    queue, wakes = _queue(max_events=10_000, records_in=lambda item: item[1])
    queue.put(("frame", 1))
    queue.take(10)
    queue.busy()
    queue.put(("frame", WAKE_AT - 2))
    assert wakes == [1]  # a first wake: a new queue's consumer may be asleep
    queue.put(("frame", 2))
    assert wakes == [1, 1]  # WAKE_AT records wait, in two items


def test_an_idle_consumer_is_woken_by_the_first_record_and_a_busy_one_by_a_backlog() -> None:
    queue, wakes = _queue(max_events=10_000)
    queue.put(_record(0))
    assert wakes == [1]  # a new queue: its consumer may be asleep
    queue.take(10)
    queue.busy()
    for i in range(WAKE_AT - 1):
        queue.put(_record(i))
    assert wakes == [1]  # busy: records gather for the next round
    queue.put(_record(WAKE_AT))
    assert wakes == [1, 1]  # a backlog wakes it early
    for i in range(100):
        queue.put(_record(i))
    assert wakes == [1, 1]  # once woken, no more wakes until it takes
    queue.take(100_000)
    assert queue.sleeping()  # nothing queued: it may sleep
    queue.put(_record(1))
    assert wakes == [1, 1, 1]
    assert not queue.sleeping()  # a record is queued: it must not sleep


def test_a_control_wakes_the_consumer_and_ignores_the_bounds() -> None:
    queue, wakes = _queue(max_events=1, max_bytes=10)
    queue.put(_record(0, 50))
    queue.put(_record(1))
    assert queue.dropped == 1
    flag = _Flag("flush")
    queue.put_control(flag)
    assert len(queue) == 2 and wakes[-1] == 1
    assert queue.queued_before(flag) == 1
    assert queue.take(10) == ([_record(0, 50)], flag)
    assert queue.queued_before(flag) is None


def test_close_wakes_a_blocked_producer_and_refuses_later_records() -> None:
    queue, _ = _queue(max_events=1, when_full="block", block_timeout=JOIN)
    queue.put(_record(0))
    entered = threading.Event()

    def produce() -> None:
        entered.set()
        queue.put(_record(1))

    producer = start_thread(threading.Thread(target=produce))
    assert entered.wait(JOIN)
    began = time.monotonic()
    while not queue._blocked:  # the producer waits for room
        assert time.monotonic() - began < JOIN
        time.sleep(0.001)
    assert queue.close()
    join_threads(producer)
    assert time.monotonic() - began < JOIN / 2
    assert queue.dropped == 1
    queue.put(_record(2))
    assert (queue.dropped, queue.counts()) == (2, (0, 1))
    assert not queue.close()


def test_block_waits_for_room_the_consumer_makes() -> None:
    queue, _ = _queue(max_events=1, when_full="block", block_timeout=JOIN)
    queue.put(_record(0))
    producer = start_thread(threading.Thread(target=queue.put, args=(_record(1),)))
    began = time.monotonic()
    while not queue._blocked:
        assert time.monotonic() - began < JOIN
        time.sleep(0.001)
    assert queue.take(1)[0] == [_record(0)]
    join_threads(producer)
    assert queue.take(1)[0] == [_record(1)]
    assert queue.dropped == 0


# -- the engine protocol --------------------------------------------------------------------------


def _use(engine: TrackerEngine) -> int:
    """Typed against the protocol only (mypy checks the handler's own use of it)."""
    engine.put(_record(0))
    engine.flush_blocking(timeout=JOIN)
    return engine.statistics().recorded


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_both_engines_implement_the_engine_protocol(tmp_destination: Path, mode: str) -> None:
    with AsyncTracker(tmp_destination, config=TrackerConfig(worker=mode)) as tracker:
        engine = tracker._engine
        assert isinstance(engine, ProcessEngine if mode == "process" else Engine)
        assert tracker.statistics().worker_mode == mode
        for name in ("put", "count_dropped", "flush", "flush_blocking", "aclose", "close", "statistics"):
            assert callable(getattr(engine, name))
        assert not engine.closed and engine.last_parameters == {} and engine.run_info.events_uri
        assert _use(engine) == 1
    assert engine.closed


# -- the block policy in process mode -------------------------------------------------------------


@pytest.fixture
def gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A file whose existence lets the worker process's ``wait_for_gate`` hook go on."""
    path = tmp_path / "gate"
    monkeypatch.setenv(GATE_VARIABLE, str(path))
    yield path
    path.touch()  # never leave a worker held


def _blocking_tracker(make_tracker: Callable[..., AsyncTracker], block_timeout: float) -> AsyncTracker:
    """A process-mode tracker whose worker holds every event until the gate opens, and
    whose application side holds little: 4 KiB unacknowledged, 2 events queued."""
    config = TrackerConfig(
        worker="process",
        when_full="block",
        block_timeout=block_timeout,
        max_queue_events=2,
        max_batch_bytes=4096,
        max_queue_bytes=4096,
        batch_interval=0.05,  # written, hence acknowledged, soon after the gate opens
        redact=wait_for_gate,
    )
    tracker = make_tracker(config=config)
    assert tracker.statistics().worker_mode == "process"
    return tracker


def _big(tracker: AsyncTracker, name: str) -> None:
    tracker.on_text(name + ":" + "x" * 3000, run_id=uuid.uuid4())


def _fill(tracker: AsyncTracker) -> None:
    """Two events shipped and held by the worker (over 4 KiB: the lane holds back), two
    more queued here (the queue is full)."""
    _big(tracker, "held")
    _big(tracker, "q1")
    began = time.monotonic()
    while tracker.statistics().retained_bytes < 4096:
        assert time.monotonic() - began < JOIN, tracker.statistics()
        time.sleep(0.005)
    _big(tracker, "q2")
    _big(tracker, "q3")
    assert tracker.statistics().queue_depth == 2


def _names(destination: Path) -> list[str]:
    return [e["data"]["text"].split(":")[0] for e in events_in(destination)]


def test_block_mode_in_process_mode_waits_block_timeout_then_drops(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path, gate: Path
) -> None:
    tracker = _blocking_tracker(make_tracker, block_timeout=0.3)
    _fill(tracker)
    began = time.monotonic()
    _big(tracker, "no room")  # waits block_timeout for room, then drops
    waited = time.monotonic() - began
    assert 0.29 <= waited < 0.3 + 10
    stats = tracker.statistics()
    assert (stats.worker_mode, stats.dropped, stats.recorded) == ("process", 1, 4)
    gate.touch()
    tracker.flush_blocking(timeout=JOIN)
    assert _names(tmp_destination) == ["held", "q1", "q2", "q3"]
    assert tracker.statistics().written == 4


def test_block_mode_in_process_mode_accepts_the_event_once_the_worker_acknowledges(
    make_tracker: Callable[..., AsyncTracker], tmp_destination: Path, gate: Path
) -> None:
    tracker = _blocking_tracker(make_tracker, block_timeout=JOIN)
    _fill(tracker)
    producer = start_thread(threading.Thread(target=_big, args=(tracker, "waited")))
    engine = tracker._engine
    assert isinstance(engine, ProcessEngine)
    began = time.monotonic()
    while not engine._queue._blocked:  # the producer waits for room
        assert time.monotonic() - began < JOIN
        time.sleep(0.001)
    gate.touch()  # the worker writes, acknowledges; the lane ships; the queue has room
    join_threads(producer)
    tracker.flush_blocking(timeout=JOIN)
    assert _names(tmp_destination) == ["held", "q1", "q2", "q3", "waited"]
    stats = tracker.statistics()
    assert (stats.worker_mode, stats.dropped, stats.written) == ("process", 0, 5)


# -- the handler's own put (AsyncTracker._record appends in its frame) ------------------------------


@pytest.mark.parametrize(("size", "kept"), [(10, 3), (1000, 2)])  # the count bound / the byte bound
def test_the_handler_appends_under_the_queues_bounds_and_counts_what_it_drops(
    tmp_destination: Path, size: int, kept: int
) -> None:
    """Process mode (the thread engine's queue has no byte bound: its put is called)."""
    config = TrackerConfig(
        worker="process", max_queue_events=3, max_queue_bytes=1500, max_batch_bytes=1024, handle_sigterm=False
    )
    with AsyncTracker(tmp_destination, config=config) as tracker:
        queue = tracker._queue
        # The queue's put runs in the handler's frame (not a call of it).
        assert tracker._put is None and tracker._engine.put == queue.put
        engine = tracker._engine
        assert isinstance(engine, ProcessEngine)
        with engine._worker._lock:  # the shipper takes nothing meanwhile
            for n in range(5):
                tracker.on_text(f"{n}:" + "x" * size, run_id=uuid.uuid4())
            assert len(queue) == kept and queue.dropped == 5 - kept
            assert queue.bytes == sum(len(body) for body in queue.items[queue._at + BODY :: WIDTH])
        tracker.flush_blocking(timeout=JOIN)
        assert (tracker.statistics().dropped, tracker.statistics().written) == (5 - kept, kept)
    assert [e["data"]["text"].split(":")[0] for e in events_in(tmp_destination)] == [
        str(n) for n in range(kept)
    ]


# -- what waiting records cost the collector ---------------------------------------------------


def _record_like(objects: list[Any]) -> int:
    """Record tuples among ``objects`` (what a queue of tuples held)."""
    return sum(1 for o in objects if type(o) is tuple and len(o) == WIDTH and type(o[BODY]) is bytes)


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_records_waiting_for_the_consumer_are_nothing_the_collector_walks(
    tmp_destination: Path, mode: str
) -> None:
    """A burst recorded while the consumer takes nothing (held here): what the queue holds
    is untracked by the cyclic collector, the burst leaves generation 0's count where it
    was (a collection's walk grows with it), and no collection meets a waiting record;
    then every event is written, in order."""
    n = 3000
    run_ids = [uuid.uuid4() for _ in range(16)]
    serialized = {"name": "step", "id": ["bench", "Step"]}
    met: list[int] = []  # record tuples in generation 0 at each of its collections

    def collector(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and info["generation"] == 0:
            met.append(_record_like(gc.get_objects(0)))

    def burst(first: int) -> None:
        for i in range(first, first + n):
            run_id = run_ids[i % len(run_ids)]
            if i & 1:
                tracker.on_chain_end({"output": "done", "step": i}, run_id=run_id)
            else:
                tracker.on_chain_start(serialized, {"topic": "bench", "step": i}, run_id=run_id, tags=["t"])

    config = TrackerConfig(worker=mode, handle_sigterm=False)
    with AsyncTracker(tmp_destination, config=config) as tracker:
        engine = tracker._engine
        if isinstance(engine, ProcessEngine):
            queue, held = engine._queue, engine._worker._lock  # the shipper takes nothing meanwhile
        else:
            assert isinstance(engine, Engine)
            queue, held = engine._buffer, engine._buffer._take_lock  # its worker cannot take
        gc.collect()
        with held:
            gc.disable()  # no collection untracks what the queue holds meanwhile
            try:
                count = gc.get_count()[0]
                burst(0)
                grown = gc.get_count()[0] - count
                tracked = sum(map(gc.is_tracked, queue.items))
            finally:
                gc.enable()
            assert len(queue) == n
            assert tracked == 0  # a queue of tuples: n
            assert grown < n // 10, grown  # a queue of tuples: n or more
            gc.callbacks.append(collector)
            try:
                burst(n)
            finally:
                gc.callbacks.remove(collector)
            assert max(met, default=0) < 50, met  # a queue of tuples: ~700 at each
        tracker.flush_blocking(timeout=JOIN)
    assert [e["seq"] for e in events_in(tmp_destination)] == list(range(2 * n))
