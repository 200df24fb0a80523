"""The spool (``_pipeline/_spool.py``): long names, and trackers that share one spool.

A ``MemorySink`` with ``failing`` set stands for a remote destination that is down:
what it refused is spooled at close; the next tracker on the same destination and
spool directory delivers it.
"""

from __future__ import annotations

import collections
import os
import subprocess
from pathlib import Path

import pytest
from engine_fakes import JOIN, MemorySink, text

from asynctrack import AsyncTracker, FlushError, TrackerConfig
from asynctrack._pipeline._spool import Spool
from asynctrack._sinks._base import Batch

DESTINATION = "memory://spool-test"


def _spool_down(spool_dir: Path, experiment: str, run: str, batches: int, per_batch: int) -> None:
    """A tracker whose destination is down records ``batches * per_batch`` events, then closes:
    every batch goes to the spool."""
    sink = MemorySink(DESTINATION)
    sink.failing = True
    tracker = AsyncTracker(
        sink,
        experiment_name=experiment,
        run_name=run,
        config=TrackerConfig(spool_dir=str(spool_dir), max_batch_events=per_batch),
    )
    for i in range(batches * per_batch):
        text(tracker, f"e{i}")
    with pytest.raises(FlushError) as raised:
        tracker.close(timeout=JOIN)
    assert f"at close {batches * per_batch} event(s) were kept" in str(raised.value)
    stats = tracker.statistics()
    assert (stats.spooled, stats.lost, stats.written) == (batches * per_batch, 0, 0)


def test_long_experiment_and_run_names_are_spooled_not_lost(tmp_path: Path) -> None:
    """Names of 100 characters each (a key of ~300 bytes; as base64 in a file name, over the
    255-byte limit): the batches are spooled under short names and delivered later under
    their original keys. (They used to be lost: "File name too long".)"""
    spool_dir = tmp_path / "spool"
    experiment, run = "e" * 100, "r" * 100
    _spool_down(spool_dir, experiment, run, batches=2, per_batch=5)
    files = sorted(spool_dir.rglob("*.batch"))
    assert len(files) == 2
    assert all(len(f.name.encode()) <= 64 for f in files), [f.name for f in files]

    sink = MemorySink(DESTINATION)
    tracker = AsyncTracker(
        sink, experiment_name=experiment, run_name=run, config=TrackerConfig(spool_dir=str(spool_dir))
    )
    try:
        tracker.flush_blocking(timeout=JOIN)
    finally:
        tracker.close(timeout=JOIN)
    assert sorted(b.events for b in sink.batches) == [5, 5]
    assert all(b.key.startswith(f"experiment={experiment}/run={run}/date=") for b in sink.batches)
    assert list(spool_dir.rglob("*.batch")) == []


def test_two_trackers_recovering_one_spool_take_each_batch_once(tmp_path: Path) -> None:
    """Tracker A starts on a spool of three batches while its destination is still down;
    tracker B starts on the same spool with the destination up; then A's destination comes
    back. Each batch is delivered once, by one of them, and both flushes succeed. (Both used
    to take every batch; B delivered and deleted them, and A's flush then failed for ever:
    "No such file or directory".)"""
    spool_dir = tmp_path / "spool"
    _spool_down(spool_dir, "exp", "run", batches=3, per_batch=4)
    config = TrackerConfig(spool_dir=str(spool_dir))

    sink_a = MemorySink(DESTINATION)
    sink_a.failing = True
    tracker_a = AsyncTracker(sink_a, experiment_name="exp", run_name="a", config=config)
    sink_b = MemorySink(DESTINATION)
    tracker_b = AsyncTracker(sink_b, experiment_name="exp", run_name="b", config=config)
    try:
        with pytest.raises(FlushError):
            tracker_a.flush_blocking(timeout=JOIN)
        tracker_b.flush_blocking(timeout=JOIN)
        sink_a.failing = False
        tracker_a.flush_blocking(timeout=JOIN)
        tracker_a.flush_blocking(timeout=JOIN)  # and stays healthy
    finally:
        tracker_a.close(timeout=JOIN)
        tracker_b.close(timeout=JOIN)

    delivered = collections.Counter(b.key for b in [*sink_a.batches, *sink_b.batches])
    assert len(delivered) == 3
    assert set(delivered.values()) == {1}
    assert sum(b.events for b in [*sink_a.batches, *sink_b.batches]) == 12
    assert list(spool_dir.rglob("*.batch")) == []


def test_a_claim_left_by_a_dead_process_is_given_back(tmp_path: Path) -> None:
    """A tracker killed while it held claimed batches leaves them in its claim directory;
    the next claim on the same host gives them back to the spool."""
    spool = Spool(tmp_path / "spool", DESTINATION, max_bytes=1 << 20)
    batch = Batch(
        key="experiment=e/run=r/date=2026-01-01/000000-w-00000000.jsonl",
        data=b"{}\n",
        events=1,
        first_seq=0,
        last_seq=0,
    )
    spool.save(batch)
    dead = spool.directory / f".claim-{spool.claim_directory.name.split('-', 2)[1]}-{_dead_pid()}-0000"
    dead.mkdir()
    (path,) = spool.directory.glob("*.batch")
    os.rename(path, dead / path.name)
    assert spool.pending() == []

    claimed = spool.claim()
    assert [b.key for b in claimed] == [batch.key]
    assert Spool.load(claimed[0]).data == b"{}\n"
    assert not dead.exists()


def _dead_pid() -> int:
    """A pid no process has: a child's, once it has been reaped."""
    child = subprocess.Popen(["true"])
    child.wait(JOIN)
    return child.pid
