"""A process that records events and then ends in one of several ways (tests/test_process.py).

Usage::

    python track_process.py MODE DESTINATION N [M] [ENDPOINT_URL]

MODE says how the process ends:

* ``exit``: record N events, never close the tracker, return from main (normal exit).
* ``sigterm``: record N, print the ready line, wait for SIGTERM (60 s at most).
* ``sigint``: like ``sigterm``, but for SIGINT (Ctrl-C, a ``KeyboardInterrupt``).
* ``s3down``: DESTINATION is ``s3://bucket/prefix``, ENDPOINT_URL a port where nothing
  listens; record N, exit normally without closing.
* ``fork``: record N in the parent, fork; the child records M, flushes, closes, and leaves
  through ``os._exit``; the parent waits for it, then flushes and closes.
* ``sigkill``: record N, flush, record M more (no flush), print the ready line, wait to be
  killed (60 s at most).
* ``sigkill-app``: record N (no flush, no close), print the ready line with the worker
  process's pid, wait to be killed (the worker process must then write all N).
* ``closeterm`` / ``closeint``: record N, then ``close()``. The destination (a local
  directory behind a ``HeldSink``) says ``{"closing": true}`` when the close's write
  begins, and holds it until a line arrives on stdin: the parent sends SIGTERM (SIGINT)
  while the close is running, then releases the write.
* ``forks3``: DESTINATION is ``s3://bucket/prefix``, ENDPOINT_URL a moto server. Record N,
  flush (the S3 client now exists, bound to the parent's worker loop), fork; the child
  records M, flushes and closes; then the parent does the same.
* ``s3silent``: DESTINATION is ``s3://bucket/prefix``, ENDPOINT_URL a port that accepts
  connections and never answers (every S3 timeout 600 s); record N, exit without closing.
* ``silentclose``: like ``s3silent``, with a second tracker (run ``silentclose-open``)
  that records N too and stays open; then ``close()`` the first. A thread says
  ``{"closing": true, "worker": <the worker process's pid>}`` once that close has begun
  and nothing waits to be shipped; the parent then sends a signal.

Every ready line says where the tracker's worker runs (``mode``: ``process`` or ``thread``).

Events are ``on_text`` events whose text is ``<who>-<i>`` (``who`` is ``parent`` or
``child``). The tracker writes nothing by itself before the process ends (one batch holds
up to 10 000 events and ``batch_interval`` is an hour), so whatever is on disk afterwards
was written by a flush, a close, or the exit hooks. Stdout carries JSON lines only.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
import uuid
from typing import Any

from asynctrack import AsyncTracker, Batch, LocalSink, TrackerConfig

WAIT = 60.0  # seconds a process waits for the signal its parent promised


def say(**info: Any) -> None:
    print(json.dumps(info), flush=True)


def record(tracker: AsyncTracker, who: str, count: int, start: int = 0) -> None:
    run_id = uuid.uuid4()
    for i in range(start, start + count):
        tracker.on_text(f"{who}-{i}", run_id=run_id)


class HeldSink:
    """A local directory whose first batch write says so, then waits for a line on stdin."""

    def __init__(self, root: str) -> None:
        self.local = LocalSink(root)
        self.held = False

    @property
    def destination(self) -> str:
        return self.local.destination

    async def start(self) -> None:
        await self.local.start()

    async def write_batch(self, batch: Batch) -> None:
        if not self.held:
            self.held = True
            say(closing=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await self.local.write_batch(batch)

    async def write_document(self, key: str, data: bytes) -> None:
        await self.local.write_document(key, data)

    async def aclose(self) -> None:
        await self.local.aclose()


def wait_for_signal() -> None:
    """Sleep until a signal ends the process; exit 3 if none comes in time."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        time.sleep(deadline - time.monotonic())
    say(error="no signal came")
    sys.exit(3)


def main() -> None:
    mode, destination, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    m = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    options: dict[str, Any] = {}
    if mode == "s3down":
        options = {"endpoint_url": sys.argv[5], "connect_timeout": 0.5}
    if mode == "forks3":
        options = {"endpoint_url": sys.argv[5]}
    if mode in ("s3silent", "silentclose"):
        options = {
            "endpoint_url": sys.argv[5],
            "connect_timeout": 600.0,
            "read_timeout": 600.0,
            "write_deadline": 600.0,
        }
    if mode in ("sigint", "closeint", "silentclose"):
        # A parent that ignores SIGINT (CI, nohup) would make us inherit that; Ctrl-C
        # must raise KeyboardInterrupt here, as in an interactive run.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    tracker = AsyncTracker(
        HeldSink(destination) if mode in ("closeterm", "closeint") else destination,
        experiment_name="exp-process",
        run_name=mode,
        config=TrackerConfig(batch_interval=3600.0),
        **options,
    )
    worker = tracker.statistics().worker_mode  # said on the ready line: the test checks it
    record(tracker, "parent", n)

    if mode == "silentclose":
        other = AsyncTracker(
            destination,
            experiment_name="exp-process",
            run_name=f"{mode}-open",
            config=TrackerConfig(batch_interval=3600.0),
            **options,
        )
        record(other, "parent", n)

        def say_closing() -> None:
            # Once the close has begun and every event has left this process (a SIGKILL
            # may then come: what the shipper had not taken yet would be lost with it).
            while not tracker.closed or tracker.statistics().queue_depth or other.statistics().queue_depth:
                time.sleep(0.01)
            from asynctrack._remote._spawn import worker_process

            say(closing=True, worker=worker_process().pid, mode=worker)

        threading.Thread(target=say_closing, daemon=True).start()
    if mode in ("closeterm", "closeint", "silentclose"):
        tracker.close(timeout=WAIT)
        say(error="the signal did not end the process")
        sys.exit(3)
    if mode == "forks3":
        tracker.flush_blocking(timeout=WAIT)
        record(tracker, "parent", n, start=n)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                record(tracker, "child", m)
                tracker.flush_blocking(timeout=20.0)
                tracker.close(timeout=20.0)
                code = 0
            except BaseException as exc:
                say(child_error=repr(exc))
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        tracker.flush_blocking(timeout=WAIT)
        tracker.close(timeout=WAIT)
        say(ready=True, child_exit=os.waitstatus_to_exitcode(status), mode=worker)
        return
    if mode in ("exit", "s3down", "s3silent"):
        say(ready=True, pid=os.getpid(), mode=worker)
        return  # no close(): the exit hook must flush (or spool)
    if mode in ("sigterm", "sigint"):
        say(ready=True, pid=os.getpid(), mode=worker)
        wait_for_signal()
    if mode == "sigkill-app":
        from asynctrack._remote._spawn import worker_process

        say(ready=True, pid=os.getpid(), worker=worker_process().pid, mode=worker)
        wait_for_signal()
    if mode == "sigkill":
        tracker.flush_blocking(timeout=WAIT)
        record(tracker, "parent", m, start=n)
        say(ready=True, pid=os.getpid(), mode=worker)
        wait_for_signal()
    if mode == "fork":
        # Let the worker take every record first: the parent's events then sit encoded
        # in its open batch, unwritten, when the process forks (the case that matters).
        deadline = time.monotonic() + WAIT
        while tracker.statistics().queue_depth and time.monotonic() < deadline:
            time.sleep(0.01)
        assert tracker.statistics().written == 0
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                record(tracker, "child", m)
                tracker.flush_blocking(timeout=WAIT)
                tracker.close(timeout=WAIT)
                code = 0
            except BaseException as exc:
                say(child_error=repr(exc))
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        tracker.flush_blocking(timeout=WAIT)
        tracker.close(timeout=WAIT)
        say(ready=True, child_exit=os.waitstatus_to_exitcode(status), mode=worker)
        return
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
