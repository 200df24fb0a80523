"""The out-of-process worker (``asynctrack._remote._client`` / ``_host``), in process mode.

Every test here asks for ``worker="process"`` itself, so the file means the same when the
suite runs with ``ASYNCTRACK_WORKER=thread``. Waits are bounded; the only fixed pause is
the SIGKILL test's 0.1 s, which is the guarantee under test (events recorded at least
50 ms before the kill are written), not a wait for the worker.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import marshal
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_process import Child, children, events_of, start  # noqa: F401 - `children` is a fixture

from asynctrack import AsyncTracker, FlushError, FlushTimeoutError, TrackerConfig
from asynctrack._channel import (
    HEADER,
    FrameReader,
    Kind,
    encode_frame,
    read_records,
    records_count,
    records_frame,
    write_all,
)
from asynctrack._events._schema import WIDTH
from asynctrack._langchain import _handler
from asynctrack._pipeline._durable import ENV_PREFIXES, apply_environ
from asynctrack._pipeline._queue import BoundedQueue
from asynctrack._remote import _client, _shipper, _spawn
from asynctrack.testing import InMemorySink

PROCESS = TrackerConfig(worker="process", batch_interval=3600.0)
WAIT = 60.0


def _wait_until(condition: Callable[[], bool], timeout: float = WAIT, what: str = "") -> None:
    """Poll ``condition`` (a state of another process) until true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def _host_children() -> list[int]:
    """Worker processes (started from ``_worker/_boot.py``) whose parent is this process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"_worker/_boot.py" in cmdline and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _events(destination: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(destination.rglob("*.jsonl")):
        out.extend(orjson.loads(line) for line in path.read_bytes().splitlines())
    return out


@pytest.fixture
def tracker(tmp_destination: Path) -> Iterator[AsyncTracker]:
    t = AsyncTracker(tmp_destination, experiment_name="e", run_name="r", config=PROCESS)
    yield t
    t.close(timeout=WAIT)


def _text(tracker: AsyncTracker, start: int, count: int) -> None:
    run_id = uuid.uuid4()
    for i in range(start, start + count):
        tracker.on_text(f"t-{i}", run_id=run_id)


def test_events_are_written_by_the_worker_process(tracker: AsyncTracker, tmp_destination: Path) -> None:
    _text(tracker, 0, 1000)  # recorded while the worker process may still be starting
    tracker.flush_blocking(timeout=WAIT)
    stats = tracker.statistics()
    assert stats.worker_mode == "process"
    assert (stats.recorded, stats.written, stats.dropped, stats.lost) == (1000, 1000, 0, 0)
    assert stats.retained_bytes == 0  # acknowledged once durable
    events = _events(tmp_destination)
    assert sorted(e["seq"] for e in events) == list(range(1000))
    assert {e["data"]["text"] for e in events} == {f"t-{i}" for i in range(1000)}


def test_one_worker_process_serves_two_hundred_trackers(tmp_destination: Path) -> None:
    trackers = [
        AsyncTracker(tmp_destination, experiment_name="many", run_name=f"r{i}", config=PROCESS)
        for i in range(200)
    ]
    try:
        for i, t in enumerate(trackers):
            _text(t, i, 1)
        for t in trackers:
            t.flush_blocking(timeout=WAIT)
        assert len(_host_children()) == 1
        assert _spawn.worker_process().pid in _host_children()
    finally:
        for t in trackers:
            t.close(timeout=WAIT)
    events = _events(tmp_destination)
    assert sorted(e["data"]["text"] for e in events) == sorted(f"t-{i}" for i in range(200))
    assert all(e["run"] == f"r{e['data']['text'][2:]}" for e in events)


def test_a_killed_worker_is_restarted_and_gets_what_it_had_not_written(
    tracker: AsyncTracker, tmp_destination: Path
) -> None:
    _text(tracker, 0, 100)
    tracker.flush_blocking(timeout=WAIT)  # durable and acknowledged: never re-sent
    _text(tracker, 100, 50)  # shipped, sitting in the worker's open batch (1 h interval)
    _wait_until(lambda: tracker.statistics().queue_depth == 0, what="the shipper")
    assert tracker.statistics().retained_bytes > 0
    old = _spawn.worker_process().pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    tracker.flush_blocking(timeout=WAIT)  # the new worker gets the 50 again, then the flush
    stats = tracker.statistics()
    assert stats.worker_restarts >= 1
    assert _spawn.worker_process().pid != old
    seqs = collections.Counter(e["seq"] for e in _events(tmp_destination))
    assert seqs == collections.Counter(range(150))  # each exactly once
    # The dead worker's count stays counted: 100 by it, 50 by the new one; nothing lost.
    assert (stats.recorded, stats.written, stats.lost) == (150, 150, 0)


def test_a_stopped_worker_keeps_the_callers_flush_and_close_timeouts(tmp_destination: Path) -> None:
    """The worker process is stopped (SIGSTOP: a hung worker) with 10 events shipped.
    ``flush_blocking(timeout=1)`` raises ``FlushTimeoutError`` once its timeout is up, and
    ``close(timeout=1)`` within the 5 s a close waits past its deadline in either mode (for
    the spooling after it, or a blocked worker), not later (they took 3 s and 13 s: 2 s
    and 12 s were added to the caller's timeout). Once the worker goes on (SIGCONT), every
    event is accounted for: written or counted, none discarded."""
    tracker = AsyncTracker(tmp_destination, experiment_name="e", run_name="r", config=PROCESS)
    _text(tracker, 0, 10)
    tracker.flush_blocking(timeout=WAIT)
    pid = _spawn.worker_process().pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        _text(tracker, 10, 10)
        for call, bound in ((tracker.flush_blocking, 1.0), (tracker.close, 1.0 + 5.0)):
            started = time.monotonic()
            with pytest.raises(FlushTimeoutError) as raised:
                call(timeout=1.0)
            took = time.monotonic() - started
            assert bound <= took < bound + 1.0, (call, took)
            assert raised.value.pending == 10
    finally:
        os.kill(pid, signal.SIGCONT)

    def settled() -> bool:
        stats = tracker.statistics()
        return stats.written + stats.lost + stats.spooled == 20

    _wait_until(settled, what="the worker's answer to the close")
    stats = tracker.statistics()
    assert (stats.recorded, stats.dropped) == (20, 0)
    assert len(_events(tmp_destination)) == stats.written


_KILL_FIVE_TIMES = """
import json, os, signal, sys, time, uuid
from asynctrack import AsyncTracker, TrackerConfig
from asynctrack._remote import _spawn

tracker = AsyncTracker(sys.argv[1], experiment_name="e", run_name="r",
                       config=TrackerConfig(worker="process", batch_interval=3600.0))
count = 0
def text(n):
    global count
    run_id = uuid.uuid4()
    for _ in range(n):
        tracker.on_text(f"t-{count}", run_id=run_id)
        count += 1
def wait(condition):
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)
for _ in range(5):
    text(50)
    tracker.flush_blocking(timeout=60)  # written by this worker and acknowledged
    text(50)  # shipped, in its open batch: re-sent to the next one
    wait(lambda: tracker.statistics().queue_depth == 0)
    pid = _spawn.worker_process().pid
    os.kill(pid, signal.SIGKILL)
    wait(lambda: tracker.statistics().worker_mode == "thread"
         or _spawn.worker_process().pid not in (None, pid))
"""
_KILLED_FIVE_TIMES = (
    _KILL_FIVE_TIMES
    + """
text(20)
tracker.close(timeout=60)
s = tracker.statistics()
print(json.dumps({"count": count, "mode": s.worker_mode, "recorded": s.recorded, "written": s.written,
                  "dropped": s.dropped, "lost": s.lost, "restarts": s.worker_restarts}))
"""
)


def test_statistics_count_what_every_killed_worker_wrote_and_the_thread_after_them(
    tmp_destination: Path,
) -> None:
    """Five deaths in a row: the tracker falls back to a thread engine, which writes under
    a writer id of its own. Its statistics still count every event the dead workers wrote
    (a child process: the fall back is for the whole process)."""
    stats = orjson.loads(_clean_run(_KILLED_FIVE_TIMES, tmp_destination)[-1])
    # Each engine writes under a writer id of its own, the thread engine too: a batch key
    # is <HHMMSS>-<writer>-<batch>, and the thread engine's first batch written in the
    # first worker's second overwrote it.
    keys = [path.name.split("-", 1)[1] for path in tmp_destination.rglob("*.jsonl")]
    assert len(keys) == len(set(keys)) == 6, keys
    lines = [e["seq"] for e in _events(tmp_destination)]
    assert sorted(set(lines)) == list(range(stats["count"])) == list(range(520))
    assert (stats["mode"], stats["recorded"], stats["dropped"], stats["lost"]) == ("thread", 520, 0, 0)
    assert stats["written"] == len(lines)  # no event was written twice here


def test_a_frame_written_in_part_by_a_killed_worker_is_counted_once(tmp_destination: Path) -> None:
    """A frame the worker wrote in part, reported (STATS) and did not acknowledge is
    re-sent: its events written twice are counted once, by the worker that writes them next."""
    config = dataclasses.replace(PROCESS, max_batch_events=10)
    tracker = AsyncTracker(tmp_destination, experiment_name="e", run_name="r", config=config)
    worker = _spawn.worker_process()
    restarts = worker.restarts  # of this test process's worker, so far

    def kill_when_written(lines: int, reported: int) -> None:
        _wait_until(lambda: len(_events(tmp_destination)) == lines, what=f"{lines} lines")
        _wait_until(lambda: tracker.statistics().written >= reported, what="the worker's report")
        assert tracker.statistics().retained_bytes > 0  # the frame is not acknowledged
        pid = worker.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        _wait_until(lambda: worker.pid not in (None, pid), what="a new worker")

    try:
        with worker._lock:  # the shipper waits: the records go in one frame
            _text(tracker, 0, 25)
        kill_when_written(20, 20)  # 2 batches of 10; 5 in the open batch
        with worker._lock:
            _text(tracker, 25, 20)
        # The next worker: the 25 again (10, 10, 5 open), then 5 + 5, 10, 5 open.
        kill_when_written(20 + 40, 40)
    finally:
        tracker.close(timeout=WAIT)
    stats = tracker.statistics()
    seqs = [e["seq"] for e in _events(tmp_destination)]
    assert sorted(set(seqs)) == list(range(45))
    assert len(seqs) == 45 + 20 + 15  # the dead workers' parts of the frames re-sent
    assert (stats.recorded, stats.written, stats.lost, stats.worker_restarts - restarts) == (45, 45, 0, 2)


def test_written_batches_and_bytes_never_go_down_when_the_worker_is_killed(tmp_destination: Path) -> None:
    """The worker wrote and reported 20 events of a frame it had not acknowledged, then
    died: statistics() kept only its acknowledged counts, and `written` fell from 20 to 0
    until the next worker wrote the frame again. Now what was reported is the floor."""
    config = dataclasses.replace(PROCESS, max_batch_events=10)
    tracker = AsyncTracker(tmp_destination, experiment_name="e", run_name="r", config=config)
    worker = _spawn.worker_process()
    try:
        with worker._lock:  # the shipper waits: the records go in one frame
            _text(tracker, 0, 25)
        _wait_until(lambda: len(_events(tmp_destination)) == 20, what="20 lines")
        _wait_until(lambda: tracker.statistics().written >= 20, what="the worker's report")
        before = tracker.statistics()
        assert before.retained_bytes > 0  # the frame is not acknowledged
        pid = worker.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        seen = []
        # Until a new worker runs, then 1 s: it writes the 20 again (5 stay in its open batch).
        deadline = end = time.monotonic() + WAIT
        while time.monotonic() < end:
            if worker.pid in (None, pid):
                assert time.monotonic() < deadline, "no new worker"
                end = time.monotonic() + 1.0
            seen.append(tracker.statistics())
            time.sleep(0.001)
        tracker.flush_blocking(timeout=WAIT)
        seen.append(tracker.statistics())
    finally:
        tracker.close(timeout=WAIT)
    assert min(s.written for s in seen) == before.written == 20
    for key in ("batches", "bytes"):
        values = [getattr(s, key) for s in [before, *seen, tracker.statistics()]]
        assert values == sorted(values), key
    assert tracker.statistics().written == 25  # exact again once the successor passes it


_KILLED_WHILE_RECORDING = """
import json, os, signal, sys, threading, time, uuid
from pathlib import Path
from asynctrack import AsyncTracker, TrackerConfig
from asynctrack._remote import _spawn

destination, kills = Path(sys.argv[1]), int(sys.argv[2])
tracker = AsyncTracker(destination, experiment_name="e", run_name="r",
                       config=TrackerConfig(worker="process", batch_interval=0.05, max_batch_events=50))
stop = threading.Event()
count = 0
def record():
    global count
    run_id = uuid.uuid4()
    while not stop.is_set():
        tracker.on_text(f"t-{count}", run_id=run_id)
        count += 1
        if count % 10 == 0:
            time.sleep(0.002)  # a flow, not a flood: a few thousand events a second
recorder = threading.Thread(target=record)
recorder.start()
worker = _spawn.worker_process()
def process():
    return tracker.statistics().worker_mode == "process"
for generation in range(kills):
    # Kill a worker that is writing: once a batch of its own is in the files.
    mine = f"-r{generation}-" if generation else "-"
    deadline = time.monotonic() + 60
    while process() and not any(mine in path.name for path in destination.rglob("*.jsonl")):
        assert time.monotonic() < deadline
        time.sleep(0.005)
    if not process():
        break  # five deaths in 10 s: a thread engine took over
    time.sleep(0.05 * (generation % 4))
    pid = worker.pid
    os.kill(pid, signal.SIGKILL)
    while process() and worker.pid in (None, pid):
        assert time.monotonic() < deadline
        time.sleep(0.005)
time.sleep(0.2)
stop.set()
recorder.join()
tracker.close(timeout=60)
s = tracker.statistics()
print(json.dumps({"count": count, "mode": s.worker_mode, "recorded": s.recorded, "written": s.written,
                  "dropped": s.dropped, "lost": s.lost, "restarts": s.worker_restarts,
                  "batches": s.batches, "bytes": s.bytes}))
"""


@pytest.mark.parametrize(("kills", "mode"), [(3, "process"), (6, "thread")])
def test_statistics_count_each_written_event_once_however_often_the_worker_is_killed(
    tmp_destination: Path, kills: int, mode: str
) -> None:
    """Workers killed while events flow, then (six kills) the fall back to a thread. A
    dead worker's counts are those of its last acknowledgement: what it acknowledged is
    counted, what it wrote of frames it had not acknowledged is written again and
    counted once, by the next engine (a child process: the fall back is process-wide)."""
    import json
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", _KILLED_WHILE_RECORDING, str(tmp_destination), str(kills)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    stats = json.loads(done.stdout.splitlines()[-1])
    paths = list(tmp_destination.rglob("*.jsonl"))
    seqs = [e["seq"] for e in _events(tmp_destination)]
    duplicates = len(seqs) - len(set(seqs))
    assert sorted(set(seqs)) == list(range(stats["count"]))
    assert (stats["mode"], stats["recorded"], stats["dropped"], stats["lost"]) == (mode, stats["count"], 0, 0)
    assert stats["written"] + duplicates == len(seqs)
    # A batch a killed worker wrote in the instant before its acknowledgement is in the
    # files, not in the counts: never more counted than written.
    assert stats["batches"] <= len(paths)
    assert stats["bytes"] <= sum(path.stat().st_size for path in paths)


def _clean_run(script: str, destination: Path) -> list[str]:
    """Run ``script`` in a fresh interpreter (it writes to ``destination``); its stdout
    lines. It must exit 0 with no traceback on stderr, its children's included."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", script, str(destination)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    return done.stdout.splitlines()


_FORK_AFTER_THE_FALL_BACK = (
    _KILL_FIVE_TIMES
    + """
assert tracker.statistics().worker_mode == "thread"
for k in range(8):
    pid = os.fork()
    if pid == 0:
        try:
            run_id = uuid.uuid4()
            for i in range(50):
                tracker.on_text(f"c{k}-{i}", run_id=run_id)
            tracker.close(timeout=20)
            s = tracker.statistics()
            print(json.dumps({"child": k, "mode": s.worker_mode, "recorded": s.recorded,
                              "written": s.written, "dropped": s.dropped, "lost": s.lost}), flush=True)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    text(20)  # the parent goes on recording, between its children
tracker.close(timeout=60)
s = tracker.statistics()
print(json.dumps({"count": count, "mode": s.worker_mode, "recorded": s.recorded, "written": s.written,
                  "dropped": s.dropped, "lost": s.lost}))
"""
)


def test_children_forked_after_the_fall_back_write_every_event_and_the_parent_too(
    tmp_destination: Path,
) -> None:
    """After five deaths the parent writes from a thread; eight children forked one after
    the other each record 50 events and close. A dead worker's pipe descriptors are closed
    once: a child's fork hook used to close their numbers again, which by then were other
    descriptors (the thread engine's event loop, the new worker's pipes), and children
    failed with ``Bad file descriptor``, at times losing their events (every one of 4 runs
    of this test failed before the fix)."""
    *forked, parent = [orjson.loads(line) for line in _clean_run(_FORK_AFTER_THE_FALL_BACK, tmp_destination)]
    assert [c["child"] for c in forked] == list(range(8)), forked
    for child in forked:
        assert (child["recorded"], child["written"], child["dropped"], child["lost"]) == (50, 50, 0, 0), child
    assert (parent["recorded"], parent["dropped"], parent["lost"]) == (parent["count"], 0, 0) == (660, 0, 0)
    texts = collections.Counter(e["data"]["text"] for e in _events(tmp_destination))
    children_texts = {f"c{k}-{i}" for k in range(8) for i in range(50)}
    assert set(texts) == children_texts | {f"t-{i}" for i in range(parent["count"])}
    assert all(texts[text] == 1 for text in children_texts)


#: A worker-process tracker on sys.argv[1] (its batches sealed by flushes and the close
#: alone), and text(prefix, n): n text events "<prefix>-<i>" of one run.
_TRACKER_AND_TEXT = """
import json, os, sys, uuid
from asynctrack import AsyncTracker, TrackerConfig

tracker = AsyncTracker(sys.argv[1], experiment_name="e", run_name="r",
                       config=TrackerConfig(worker="process", batch_interval=3600.0))
def text(prefix, n):
    run_id = uuid.uuid4()
    for i in range(n):
        tracker.on_text(f"{prefix}-{i}", run_id=run_id)
"""

_FORK_WHERE_NO_WORKER_CAN_START = (
    _TRACKER_AND_TEXT
    + """
text("p", 30)
tracker.flush_blocking(timeout=60)
executable, sys.executable = sys.executable, ""  # the child cannot start a worker process
pid = os.fork()
if pid == 0:
    text("c", 50)
    tracker.flush_blocking(timeout=10)
    s = tracker.statistics()
    print(json.dumps({"mode": s.worker_mode, "recorded": s.recorded, "written": s.written}), flush=True)
    text("x", 25)  # written by the exit hooks
    sys.exit(0)
sys.executable = executable
os.waitpid(pid, 0)
text("q", 20)
tracker.close(timeout=60)
"""
)


def test_a_child_that_cannot_start_a_worker_process_writes_from_a_thread(tmp_destination: Path) -> None:
    """The fork hook could not start the child's worker process (here: no Python to start
    it with): a thread engine takes the child's tracker, as at construction. Every event of
    both processes is written, the child's last ones by the exit hooks."""
    (line,) = _clean_run(_FORK_WHERE_NO_WORKER_CAN_START, tmp_destination)
    assert orjson.loads(line) == {"mode": "thread", "recorded": 50, "written": 50}
    texts = collections.Counter(e["data"]["text"] for e in _events(tmp_destination))
    expected = [f"{p}-{i}" for p, n in (("p", 30), ("c", 50), ("x", 25), ("q", 20)) for i in range(n)]
    assert texts == collections.Counter(expected)


_GRANDCHILDREN_OF_A_CHILD_WITHOUT_A_WORKER = (
    _TRACKER_AND_TEXT
    + """
from asynctrack._remote import _spawn
def report(who):
    s = tracker.statistics()
    print(json.dumps({"who": who, "mode": s.worker_mode, "recorded": s.recorded, "written": s.written,
                      "dropped": s.dropped, "lost": s.lost}), flush=True)
if BEFORE == "deaths":  # five deaths: the parent falls back to a thread first
    import signal, time
    for _ in range(5):
        text("p", 10)
        tracker.flush_blocking(timeout=60)
        pid = _spawn.worker_process().pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while tracker.statistics().worker_mode == "process" and _spawn.worker_process().pid in (None, pid):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert tracker.statistics().worker_mode == "thread"
executable, sys.executable = sys.executable, ""  # the child cannot start a worker process
pid = os.fork()
if pid == 0:
    try:
        text("c", 40)
        for g, python in enumerate(("", executable)):  # the second may start one again
            sys.executable = python
            grandchild = os.fork()
            if grandchild == 0:
                try:
                    text(f"g{g}", 30)
                    tracker.close(timeout=30)
                    report(f"g{g}")
                finally:
                    os._exit(0)
            os.waitpid(grandchild, 0)
        sys.executable = ""
        text("d", 10)
        tracker.close(timeout=30)
        report("c")
    finally:
        os._exit(0)
sys.executable = executable
os.waitpid(pid, 0)
text("q", 20)
tracker.close(timeout=60)
"""
)


@pytest.mark.parametrize("before", ["", "deaths"])
def test_grandchildren_of_a_child_without_a_worker_process_write_every_event(
    tmp_destination: Path, before: str
) -> None:
    """A child that could not start a worker process writes from a thread; its children
    try again (here one cannot either and writes from a thread of its own, one can and
    writes from a worker process). Also after the parent fell back (five deaths). Each
    grandchild's events used to be lost silently: its tracker, in no worker's list, was
    never renewed, and its records went to the buffer its parent's thread engine had."""
    lines = _clean_run(f"BEFORE = {before!r}" + _GRANDCHILDREN_OF_A_CHILD_WITHOUT_A_WORKER, tmp_destination)
    reports = {r.pop("who"): r for r in map(orjson.loads, lines)}
    assert reports == {
        "g0": {"mode": "thread", "recorded": 30, "written": 30, "dropped": 0, "lost": 0},
        "g1": {"mode": "process", "recorded": 30, "written": 30, "dropped": 0, "lost": 0},
        "c": {"mode": "thread", "recorded": 50, "written": 50, "dropped": 0, "lost": 0},
    }
    texts = collections.Counter(e["data"]["text"] for e in _events(tmp_destination))
    made = (("c", 40), ("g0", 30), ("g1", 30), ("d", 10), ("q", 20))
    expected = [f"{prefix}-{i}" for prefix, n in made for i in range(n)]
    if before:  # five times p-0 .. p-9
        expected += [f"p-{i}" for i in range(10)] * 5
    assert texts == collections.Counter(expected)


def test_an_application_killed_by_sigkill_loses_nothing_recorded_before(
    tmp_path: Path,
    children: list[Child],  # noqa: F811 - the fixture imported from test_process
) -> None:
    destination = tmp_path / "logs"
    n = 5000
    child = start(
        children,
        tmp_path,
        "sigkill-app",
        str(destination),
        str(n),
        env={"ASYNCTRACK_EXIT_TIMEOUT": "10", "ASYNCTRACK_WORKER": "process"},
    )
    info = child.read_line()
    assert info["mode"] == "process", info
    worker = int(info["worker"])
    time.sleep(0.1)  # the guarantee under test: recorded >= 50 ms before the kill
    child.process.send_signal(signal.SIGKILL)
    child.finish()
    _wait_until(lambda: not _alive(worker), timeout=10 + 5, what="the worker to drain and exit")
    events = events_of(destination, "sigkill-app")
    assert collections.Counter(e["seq"] for e in events) == collections.Counter(range(n))
    assert all(e["data"]["text"] == f"parent-{e['seq']}" for e in events)


def test_the_channel_is_private(tracker: AsyncTracker) -> None:
    """Pipes, no listening socket, no port: nothing but the application can talk to it."""
    _text(tracker, 0, 10)
    tracker.flush_blocking(timeout=WAIT)
    pid = _spawn.worker_process().pid
    links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    assert any(link.startswith("pipe:") for link in links)
    inodes = {link[8:-1] for link in links if link.startswith("socket:[")}
    listening = []
    # A socket the worker itself connected (a sink's or an exporter's HTTP connection, kept
    # alive by its client library) is not a way in: TCP sockets in LISTEN (0A), and UDP
    # sockets with no peer, are.
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] not in inodes:
                continue
            unconnected = set(fields[2]) <= {"0", ":"}  # the remote address and port all zeros
            if (table.startswith("tcp") and fields[3] == "0A") or (table.startswith("udp") and unconnected):
                listening.append((table, line))
    for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        # Flags 00010000 is __SO_ACCEPTCON: a listening unix socket; a path is an address.
        if fields[6] in inodes and (fields[3] == "00010000" or len(fields) > 7):
            listening.append(("unix", line))
    assert not listening, listening  # asyncio's own wake-up socketpair is neither


def test_the_redact_hook_runs_in_the_worker_process_and_its_logs_reach_ours(
    tmp_destination: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from _infra.hooks import stamp_worker_pid

    caplog.set_level(logging.INFO, logger="asynctrack")
    config = TrackerConfig(worker="process", redact=stamp_worker_pid)
    with AsyncTracker(tmp_destination, experiment_name="e", run_name="hook", config=config) as t:
        t.on_text("hello", run_id=uuid.uuid4(), metadata={})
        t.flush_blocking(timeout=WAIT)
        assert t.statistics().worker_mode == "process"
    (event,) = _events(tmp_destination)
    assert event["metadata"]["hook_pid"] == _spawn.worker_process().pid != os.getpid()
    assert f"hook ran in process {event['metadata']['hook_pid']}" in caplog.text


@pytest.mark.parametrize(
    ("what", "make"),
    [
        ("lambda", lambda d: AsyncTracker(d, config=TrackerConfig(worker="process", redact=lambda e: e))),
        ("sink", lambda d: AsyncTracker(InMemorySink(), config=TrackerConfig(worker="process"))),
    ],
)
def test_what_cannot_cross_uses_a_thread_and_says_why(
    what: str,
    make: Callable[[Path], AsyncTracker],
    tmp_destination: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger="asynctrack")
    monkeypatch.setattr(_handler, "_said_thread", set())  # each reason is said once per process
    tracker = make(tmp_destination)
    try:
        _text(tracker, 0, 3)
        tracker.flush_blocking(timeout=WAIT)
        stats = tracker.statistics()
        assert (stats.worker_mode, stats.written) == ("thread", 3)
    finally:
        tracker.close(timeout=WAIT)
    expected = {"lambda": "cannot cross to the worker process", "sink": "is a Sink object"}[what]
    assert "using a worker thread in this process" in caplog.text
    assert expected in caplog.text


def test_no_python_to_start_a_worker_with_means_a_thread(
    tmp_destination: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="asynctrack")
    monkeypatch.setattr(_spawn._Shared, "worker", None)
    monkeypatch.setattr(sys, "executable", "")
    with AsyncTracker(tmp_destination, run_name="frozen", config=PROCESS) as t:
        _text(t, 0, 2)
        t.flush_blocking(timeout=WAIT)
        assert (t.statistics().worker_mode, t.statistics().written) == ("thread", 2)
    assert "no Python executable" in caplog.text


def test_statistics_never_count_more_than_was_recorded(tracker: AsyncTracker) -> None:
    for i in range(20):
        _text(tracker, i * 100, 100)
        stats = tracker.statistics()
        assert stats.recorded == (i + 1) * 100
    tracker.flush_blocking(timeout=WAIT)
    assert tracker.statistics().recorded == 2000


def test_a_tracker_the_worker_cannot_build_falls_back_to_a_thread_without_loss(
    tmp_path: Path, tmp_destination: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook pickles here but its module is not on the running worker's path: the worker
    says so, and a thread engine takes over with what was already shipped."""
    caplog.set_level(logging.INFO, logger="asynctrack")
    with AsyncTracker(tmp_path / "warm", config=PROCESS) as warm:
        warm.flush_blocking(timeout=WAIT)  # the worker runs, with the path of this moment
    late = tmp_path / "late"
    late.mkdir()
    (late / "late_hook_module.py").write_text("def hook(event):\n    return event\n")
    monkeypatch.syspath_prepend(str(late))
    import late_hook_module

    config = TrackerConfig(worker="process", batch_interval=3600.0, redact=late_hook_module.hook)
    with AsyncTracker(tmp_destination, experiment_name="e", run_name="late", config=config) as tracker:
        _text(tracker, 0, 5)
        tracker.flush_blocking(timeout=WAIT)
        _text(tracker, 5, 5)
        tracker.flush_blocking(timeout=WAIT)
        stats = tracker.statistics()
    assert (stats.worker_mode, stats.written, stats.recorded) == ("thread", 10, 10)
    assert "cannot host this tracker" in caplog.text
    assert sorted(e["seq"] for e in _events(tmp_destination)) == list(range(10))


def test_a_tracker_handed_to_a_thread_between_two_slices_is_not_shipped_any_more(
    tmp_destination: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart that gave up (``fall_back``, under the channel lock) may land between two
    slices of a backlog while the application goes on recording: what is queued after it
    belongs to the thread engine, and the shipper must not send it to the worker."""
    slice_ = _shipper.SLICE  # the backlog's unit
    with AsyncTracker(tmp_destination, experiment_name="e", run_name="r", config=PROCESS) as tracker:
        tracker.flush_blocking(timeout=WAIT)
        client = tracker._engine
        assert isinstance(client, _client.ProcessEngine)
        shipped_after: list[int] = []
        shipper = client._worker._shipper
        real_ship, real_send = client.lane.ship, shipper._send

        def send(parts: list[bytes]) -> None:
            real_send(parts)
            if client.fallback is None:
                client.fall_back("the test's restart gave up")  # as _restart does it
                _text(tracker, 10 * slice_, 10)  # the application goes on recording

        def ship(limit: int) -> Any:
            out = real_ship(limit)
            if client.fallback is not None:
                shipped_after.append(out[1])
            return out

        monkeypatch.setattr(shipper, "_send", send)
        monkeypatch.setattr(client.lane, "ship", ship)
        with client._worker._lock:  # the shipper waits: a backlog builds up
            _text(tracker, 0, 3 * slice_)
        _wait_until(lambda: client.fallback is not None, what="the first slice")
        tracker.flush_blocking(timeout=WAIT)
        stats = tracker.statistics()
    assert shipped_after == []
    # The thread engine took the first slice back (sent, not acknowledged), the rest
    # and what came after.
    assert (stats.worker_mode, stats.written) == ("thread", 3 * slice_ + 10)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_the_worker_holds_at_most_max_queue_bytes_while_the_destination_hangs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """300 prompts of 200 KB against an S3 endpoint that never answers, with a 1 MiB bound:
    the worker drops (and counts) what would not fit instead of holding 60 MB, and its
    drop warning names that bound."""
    from test_soak import BlackHole

    caplog.set_level(logging.WARNING, logger="asynctrack")

    mib = 1024 * 1024
    config = TrackerConfig(
        worker="process",
        max_batch_bytes=mib,
        max_queue_bytes=mib,
        spool_dir=str(tmp_path / "spool"),
        spool_max_bytes=64 * mib,
    )
    with BlackHole() as hole:
        tracker = AsyncTracker(
            "s3://hangs/p",
            experiment_name="e",
            run_name="bytes",
            config=config,
            endpoint_url=hole.endpoint_url,
            read_timeout=1.0,
            connect_timeout=1.0,
            write_deadline=2.0,
        )
        try:
            tracker.on_text("warm-up", run_id=uuid.uuid4())
            pid = _spawn.worker_process().pid
            assert pid is not None
            # The baseline once the worker has built this tracker's engine (the S3
            # client's imports, ~20 MiB, are not what is measured): its first
            # statistics have come.
            _wait_until(lambda: bool(tracker._engine._worker_stats), what="the worker's statistics")
            baseline = _rss(pid)
            run_id = uuid.uuid4()
            for i in range(300):
                tracker.on_text(f"{i}:" + "x" * 200_000, run_id=run_id)
            _wait_until(
                lambda: (
                    tracker.statistics().recorded + tracker.statistics().dropped == 301
                    and tracker.statistics().queue_depth == 0
                    and tracker.statistics().dropped > 0
                ),
                what="the worker to take or drop every event",
            )
            growth = _rss(pid) - baseline
            stats = tracker.statistics()
            reason = f"over max_queue_bytes={mib} held by the worker process: the destination is slow or down"
            _wait_until(
                lambda: any(r.getMessage().endswith(reason) for r in caplog.records), what="the drop warning"
            )
        finally:
            with contextlib.suppress(FlushError):
                tracker.close(timeout=1.0)
    assert growth < 24 * mib, f"the worker grew by {growth / mib:.1f} MiB"
    assert stats.dropped > 200  # at most a few 200 KB prompts fit in 1 MiB


def test_names_with_lone_surrogates_cross_to_the_worker(tmp_destination: Path) -> None:
    """Names from os.fsdecode of non-UTF-8 file names: U+FFFD in what is written, no error."""
    with AsyncTracker(
        tmp_destination, experiment_name="exp-\udcff", run_name="run-\udcfe", config=PROCESS
    ) as t:
        _text(t, 0, 3)
        t.flush_blocking(timeout=WAIT)
        assert t.statistics().worker_mode == "process"
    events = _events(tmp_destination)
    assert len(events) == 3
    assert {(e["experiment"], e["run"]) for e in events} == {("exp-\ufffd", "run-\ufffd")}


def test_records_cross_with_their_fields_as_they_are() -> None:
    # One marshal payload: bodies as bytes, run ids' 128-bit ints, lone surrogates, and
    # objects met twice (the interned kind, a shared body: written once, then referred to).
    records = [
        ("text", 1, 1.5, (1 << 128) - 1, None, "n\u00e9", b'{"data":{"text":"a\\nb \\"q\\""}}', None),
        ("text", 2, 1.5, 2, 1, "\udcff", b"", "tok\nen\ud800"),
        ("text", 3, 1.5, "x", None, None, b'{"data":{}}\n\n', {"$error": True, "args": [1, "a"]}),
    ]
    body = b'{"data":{"shared":true}}'
    records += [
        ("llm_new_token", 4, 2.5, 7, None, "n", body, "t"),
        ("llm_new_token", 5, 2.5, 7, None, "n", body, "t"),
    ]
    frame = records_frame(3, 9, records)
    payload = frame[HEADER.size :]
    assert frame == encode_frame(Kind.RECORDS, 3, 9, payload)
    assert read_records(payload) == records
    for some in (records, records[:1], records * 100, []):
        assert records_count(records_frame(3, 9, some)[HEADER.size :]) == len(some)
    assert records_count(marshal.dumps([None] * 2 * WIDTH, 4)) == 2  # a list held by no one: no FLAG_REF
    for not_a_list in (marshal.dumps({}, 2), marshal.dumps((1,), 2), b"", b"["):
        with pytest.raises(ValueError):
            records_count(not_a_list)
    for odd in (object(), ValueError("x")):
        with pytest.raises(ValueError):
            records_frame(3, 9, [("text", 1, 1.5, 1, None, None, b"", odd)])
    wrong_body = marshal.dumps([("text", 1, 0.0, "x", None, None, "s", None)], 2)
    short = marshal.dumps([("text",)], 2)
    for broken in (payload[:-1], marshal.dumps({}, 2), wrong_body, short, b"", b"[1]"):
        with pytest.raises(ValueError):
            read_records(broken)


def test_frames_are_cut_the_same_however_the_reads_split_them() -> None:
    frames = [
        (
            Kind.RECORDS,
            3,
            9,
            records_frame(3, 9, [("text", 1, 1.5, 2, None, None, b"{}", None)])[HEADER.size :],
        ),
        (Kind.FLUSH, 3, 1, b""),
        (Kind.OPEN, 4, 0, b"x" * 300),
    ]
    stream = b"".join(encode_frame(*frame) for frame in frames)
    for size in (1, 2, 7, HEADER.size, 100, len(stream)):
        reader = FrameReader()
        cut = [f for i in range(0, len(stream), size) for f in reader.feed(stream[i : i + size])]
        assert cut == frames, size
        assert reader.feed(b"") == []
    torn = FrameReader()
    assert torn.feed(stream[:-1]) == frames[:2]
    with pytest.raises(ValueError, match="inside a frame"):
        torn.feed(b"")
    with pytest.raises(ValueError, match="unknown kind"):
        FrameReader().feed(HEADER.pack(7, 0, 0, 0))


def test_write_all_writes_every_part_in_order_when_the_pipe_takes_only_some() -> None:
    """A frame goes out as its header and payload with one ``writev``; when the pipe is
    full, the rest follows, in order, whether it was given as parts or as bytes."""
    parts = [bytes([i]) * size for i, size in enumerate((17, 70_000, 3, 150_000))]
    for data in (parts, b"".join(parts)):
        read_fd, write_fd = os.pipe()
        received = bytearray()

        def drain(fd: int = read_fd, into: bytearray = received) -> None:
            while chunk := os.read(fd, 65536):
                into.extend(chunk)

        reader = threading.Thread(target=drain)
        reader.start()
        try:
            write_all(write_fd, data)  # a pipe holds 64 KiB: several writes
        finally:
            os.close(write_fd)
            reader.join(WAIT)
            os.close(read_fd)
        assert bytes(received) == b"".join(parts)


def test_a_lane_frames_a_take_whole_unless_its_bodies_pass_the_frame_bound() -> None:
    """Records whose bodies fit in one frame go in one frame; a take of larger ones is
    cut so that each frame stays within the bound (or holds one record), whether the
    take emptied the queue or left records behind."""
    bound = _shipper._MAX_FRAME_BYTES
    queue: BoundedQueue[_shipper.Request] = BoundedQueue(
        max_events=10_000, max_bytes=64 * bound, wake=lambda: None
    )
    lane = _shipper.Lane(queue, max_retained=64 * bound, hold_back=False)
    lane.tracker_id = 1

    def put(count: int, size: int) -> list[tuple[Any, ...]]:
        records = [("text", i, 0.0, None, None, None, b"x" * size, None) for i in range(count)]
        for record in records:
            queue.put(record)
        return records

    def framed(limit: int) -> list[list[tuple[Any, ...]]]:
        parts, _ = lane.ship(limit)
        return [read_records(payload) for payload in parts[1::2]]

    small = put(300, 200)
    assert framed(1000) == [small]
    large = put(10, bound // 4 + 1)  # four of them pass the bound
    assert framed(1000) == [large[0:3], large[3:6], large[6:9], large[9:10]]
    large = put(10, bound // 4 + 1)
    assert framed(7) == [large[0:3], large[3:6], large[6:7]]  # three left queued
    assert framed(7) == [large[7:10]]
    huge = put(2, 2 * bound)
    assert framed(10) == [huge[0:1], huge[1:2]]  # a record alone may pass the bound


def test_an_acknowledgement_forgets_the_frames_up_to_its_number_and_keeps_the_rest() -> None:
    """``ACK n`` forgets every RECORDS frame numbered up to ``n`` and no other: not a later
    frame, not a request framed between them (answered apart); the retained bytes follow."""
    queue: BoundedQueue[_shipper.Request] = BoundedQueue(max_events=100, max_bytes=1 << 20, wake=lambda: None)
    lane = _shipper.Lane(queue, max_retained=1 << 20, hold_back=False)
    lane.tracker_id = 1
    for i in range(6):
        queue.put(("text", i, 0.0, None, None, None, b"x" * 10, None))
        if i == 2:
            queue.put_control(_shipper.Request(Kind.FLUSH, 7))
        lane.ship(1)
    assert [key for key in lane.unacked] == [
        (Kind.RECORDS, 1),
        (Kind.RECORDS, 2),
        (Kind.RECORDS, 3),
        (Kind.FLUSH, 7),
        (Kind.RECORDS, 4),
        (Kind.RECORDS, 5),
        (Kind.RECORDS, 6),
    ]
    one = lane.retained_bytes // 6
    lane.acknowledged(4)
    assert list(lane.unacked) == [(Kind.FLUSH, 7), (Kind.RECORDS, 5), (Kind.RECORDS, 6)]
    assert lane.retained_bytes == 2 * one
    lane.acknowledged(6)
    assert list(lane.unacked) == [(Kind.FLUSH, 7)]
    assert lane.retained_bytes == 0


def _shipper_rounds(tracker: AsyncTracker, count: int, spacing: float) -> int:
    """The shipper's rounds while ``count`` records come ``spacing`` seconds apart, once the
    worker has started; all of them written (one more: the warm-up's)."""
    _text(tracker, 0, 1)
    tracker.flush_blocking(timeout=WAIT)  # the worker has started and reads
    shipper = _spawn.worker_process()._shipper
    run_id = uuid.uuid4()
    before = shipper.rounds
    for i in range(count):
        tracker.on_text(f"record-{i}", run_id=run_id)
        time.sleep(spacing)  # the input's spacing, not a wait for a result
    rounds = shipper.rounds - before
    tracker.flush_blocking(timeout=WAIT)
    assert tracker.statistics().written == count + 1
    return rounds


def test_a_trickle_of_records_wakes_the_shipper_once_per_record(
    tracker: AsyncTracker, tmp_destination: Path
) -> None:
    """Records that come one at a time (a model answering, 20 ms apart) are shipped as
    they come: the shipper wakes once per record, not a second time for a gathering
    round with nothing to gather."""
    count = 40
    rounds = _shipper_rounds(tracker, count, spacing=0.02)
    # Two per record before (the record, then a tick); a few to spare for a loaded machine
    # (a record shipped late, then the next one early: a gathering spell of one tick).
    assert rounds <= count + count // 8, rounds


def test_records_that_keep_coming_are_gathered_into_a_round_every_few_milliseconds(
    tracker: AsyncTracker, tmp_destination: Path
) -> None:
    """Records a fraction of a millisecond apart (streamed tokens): after the first two,
    the shipper ships a round every 5 ms instead of waking for each record."""
    count = 200
    rounds = _shipper_rounds(tracker, count, spacing=0.0005)
    assert rounds <= count // 2, rounds


def test_records_that_come_within_a_tick_of_the_first_are_shipped_in_one_round(
    tracker: AsyncTracker, tmp_destination: Path
) -> None:
    """The first record after the shipper slept wakes it, and it gathers for ``_TICK``
    before it ships: records a few milliseconds apart (a model's start, its end, the
    next call) share one round, whose fixed cost they share."""
    _text(tracker, 0, 1)
    tracker.flush_blocking(timeout=WAIT)  # the worker has started and reads
    lane = tracker._engine.lane  # type: ignore[attr-defined]
    shipper = _spawn.worker_process()._shipper
    _wait_until(lambda: not len(lane.queue), what="the warm-up shipped")
    shipped, rounds = lane.shipped, shipper.rounds
    run_id = uuid.uuid4()
    for i in range(4):
        tracker.on_text(f"record-{i}", run_id=run_id)
        time.sleep(0.002)  # the input's spacing, not a wait for a result
    _wait_until(lambda: lane.shipped == shipped + 4, what="the four records shipped")
    # One round (measured); two if the machine delayed the last record past the tick.
    # Shipping each record as it came took three or four.
    assert shipper.rounds - rounds <= 2, shipper.rounds - rounds


def test_a_flush_does_not_wait_for_the_shippers_gathering(
    tmp_destination: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush or a close wakes a gathering shipper at once, and one that comes to an
    idle shipper is shipped without a gathering first: with a tick of an hour, both
    still return at once."""
    monkeypatch.setattr(_shipper, "_TICK", 3600.0)
    with AsyncTracker(tmp_destination, experiment_name="e", run_name="r", config=PROCESS) as tracker:
        tracker.flush_blocking(timeout=WAIT)  # idle: only the request
        _text(tracker, 0, 3)
        tracker.flush_blocking(timeout=WAIT)  # records gathering, then the request
        assert tracker.statistics().written == 3
        _text(tracker, 3, 2)
    assert tracker.statistics().written == 5  # the close, behind two records


def _worker_sleeps(pid: int) -> int:
    """How many times the worker process's threads have gone to sleep (voluntary context
    switches), the ones still alive."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


def test_a_trickle_of_records_wakes_one_thread_of_the_worker_per_frame(
    tracker: AsyncTracker, tmp_destination: Path
) -> None:
    """Records that come one at a time reach the worker one frame each: the thread that
    reads the frame hands its records to the engine itself (no second thread woken to
    take them), and the engine's thread, with a batch open, sleeps on."""
    _text(tracker, 0, 1)
    tracker.flush_blocking(timeout=WAIT)  # the worker has started, its engine has a batch open
    pid = _spawn.worker_process().pid
    assert pid is not None
    count = 40
    run_id = uuid.uuid4()
    before = _worker_sleeps(pid)
    for i in range(count):
        tracker.on_text(f"record-{i}", run_id=run_id)
        time.sleep(0.02)  # the input's spacing, not a wait for a result
    sleeps = _worker_sleeps(pid) - before
    tracker.flush_blocking(timeout=WAIT)
    assert tracker.statistics().written == count + 1
    # One per frame (measured: 44 for 40, the statistics ticking too), some to spare for
    # a loaded machine; two per frame (86) when a second thread took the reader's bytes.
    assert sleeps <= count + count // 2, sleeps


def test_the_worker_writes_only_the_environment_a_tracker_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker process applies each new tracker's environment while earlier trackers'
    # threads run, and C code there may read the environment without the GIL: a setenv
    # can move the array under it. The same environment again writes nothing.
    monkeypatch.setenv("ASYNCTRACK_PROBE", "1")
    monkeypatch.setenv("AWS_PROBE_GONE", "x")
    environ = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES) and k != "AWS_PROBE_GONE"}
    apply_environ({**environ, "AWS_PROBE_GONE": "x"})
    writes: list[tuple[str, str]] = []
    monkeypatch.setattr(os, "putenv", lambda key, value: writes.append(("set", os.fsdecode(key))))
    monkeypatch.setattr(os, "unsetenv", lambda key: writes.append(("unset", os.fsdecode(key))))
    apply_environ({**environ, "AWS_PROBE_GONE": "x"})
    assert writes == []
    apply_environ({**environ, "ASYNCTRACK_PROBE": "2"})
    assert writes == [("unset", "AWS_PROBE_GONE"), ("set", "ASYNCTRACK_PROBE")]
    assert os.environ["ASYNCTRACK_PROBE"] == "2" and "AWS_PROBE_GONE" not in os.environ
