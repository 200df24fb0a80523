"""F. The worker process: how soon it serves, and what a SIGKILL of the application loses.

- Start: a fresh Python process creates its first tracker, records one event and calls
  ``flush()``; the time from the constructor to the returned flush (the worker process's
  start-up included) and the constructor alone. Goal: the flush returns within 1 s.
- SIGKILL: an application records events at a steady rate (one ``on_text`` every
  ``1/rate`` s, each carrying its own ``time.time()``) and is killed with SIGKILL; the worker
  process must then write every event it had. Measured: the loss window (kill time minus
  the ``ts`` of the newest event written; events after it were not written), events lost
  that were recorded at least 50 ms before the kill (goal: 0), and duplicates (goal: 0).
- Idle: an open tracker that recorded one event and flushed, then waits; the CPU per second
  of the application's threads and of the worker process's, from their schedstat, over
  ``IDLE_S`` (after 1.5 s to settle), with only files, and with an ``OTLPExporter`` to a
  loopback receiver in a process of its own (its work is not counted). Goal (issue 19):
  ≤ 2 ms of CPU per second, both processes together: nothing wakes on a timer.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson

from . import _common as c

_START = textwrap.dedent(
    """
    import json, sys, time, uuid
    t0 = time.perf_counter()
    from asynctrack import AsyncTracker, TrackerConfig
    t1 = time.perf_counter()
    tracker = AsyncTracker(sys.argv[1], experiment_name="bench", run_name="start",
                           config=TrackerConfig(worker="process"))
    t2 = time.perf_counter()
    tracker.on_text("first", run_id=uuid.uuid4())
    tracker.flush_blocking(timeout=60)
    t3 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "construct_s": t2 - t1, "first_flush_s": t3 - t2,
                      "mode": tracker.statistics().worker_mode}), flush=True)
    tracker.close()
    """
)

_PRODUCER = textwrap.dedent(
    """
    import json, os, sys, time, uuid
    from asynctrack import AsyncTracker, TrackerConfig
    from asynctrack._remote._spawn import worker_process
    rate = float(sys.argv[2])
    tracker = AsyncTracker(sys.argv[1], experiment_name="bench", run_name="sigkill",
                           config=TrackerConfig(worker="process", batch_interval=3600.0))
    tracker.on_text("warm-up", run_id=uuid.uuid4())
    tracker.flush_blocking(timeout=60)  # the worker is up: measure steady state, not start-up
    print(json.dumps({"worker": worker_process().pid}), flush=True)
    run_id = uuid.uuid4()
    period = 1.0 / rate
    nxt = time.perf_counter()
    while True:
        tracker.on_text(repr(time.time()), run_id=run_id)
        nxt += period
        delay = nxt - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    """
)


IDLE_S = 4.0  # seconds counted
_IDLE = textwrap.dedent(
    """
    import json, os, sys, time, uuid
    from asynctrack import AsyncTracker, OTLPExporter, TrackerConfig
    from asynctrack._remote._spawn import worker_process

    def cpu_ns(pid):
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except OSError:  # a thread that ended meanwhile
                pass
        return total

    endpoint, seconds = sys.argv[2], float(sys.argv[3])
    exporters = [OTLPExporter(endpoint)] if endpoint else []
    tracker = AsyncTracker(sys.argv[1], experiment_name="bench", run_name="idle",
                           config=TrackerConfig(worker="process"), exporters=exporters)
    run_id = uuid.uuid4()
    tracker.on_chain_start({"name": "c"}, {"q": 1}, run_id=run_id)
    tracker.on_chain_end({"out": 1}, run_id=run_id)
    tracker.flush_blocking(timeout=60)
    time.sleep(1.5)  # what the flush set going (a round, an export) settles
    worker = worker_process().pid
    app0, worker0 = cpu_ns(os.getpid()), cpu_ns(worker)
    time.sleep(seconds)
    app, worker_cpu = cpu_ns(os.getpid()) - app0, cpu_ns(worker) - worker0
    print(json.dumps({"app_ms_per_s": app / 1e6 / seconds, "worker_ms_per_s": worker_cpu / 1e6 / seconds}),
          flush=True)
    tracker.close()
    """
)


def idle_once(tmp: str, endpoint: str, seconds: float) -> dict[str, Any]:
    """An idle open tracker's CPU per second, application and worker process (``_IDLE``)."""
    out = subprocess.run(
        [sys.executable, "-c", _IDLE, f"{tmp}/idle-{time.monotonic_ns()}", endpoint, str(seconds)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120 + seconds,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _events(root: Path) -> list[dict[str, Any]]:
    out = []
    for path in root.rglob("*.jsonl"):
        out.extend(orjson.loads(line) for line in path.read_bytes().splitlines())
    return out


def start_once(tmp: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _START, f"{tmp}/start-{time.monotonic_ns()}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def sigkill_once(tmp: str, rate: float, run_for: float) -> dict[str, Any]:
    root = Path(tmp) / f"kill-{time.monotonic_ns()}"
    env = dict(os.environ, ASYNCTRACK_EXIT_TIMEOUT="10")
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", _PRODUCER, str(root), str(rate)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    assert proc.stdout is not None
    worker = int(json.loads(proc.stdout.readline())["worker"])
    time.sleep(run_for)  # the application runs; then it is killed
    killed_at = time.time()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.01)
    drained_s = time.time() - killed_at
    events = [e for e in _events(root) if e["data"]["text"] != "warm-up"]
    stamps = sorted(float(e["data"]["text"]) for e in events)
    seqs = collections.Counter(e["seq"] for e in events)
    duplicates = sum(n - 1 for n in seqs.values())
    top = max(seqs) if seqs else 0
    missing = [s for s in range(1, top + 1) if s not in seqs]  # seq 0 is the warm-up
    newest = stamps[-1] if stamps else float("nan")
    return {
        "written": len(events),
        "loss_window_ms": (killed_at - newest) * 1e3,
        "gaps": len(missing),
        "duplicates": duplicates,
        "worker_exit_s": drained_s,
        "worker_exited": not _alive(worker),
    }


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__.splitlines()[0], default_repeats=5)
    args = p.parse_args(argv)
    repeats = c.repeats(args)
    report = c.Report("worker_process", "F. Worker process: start and SIGKILL", args)
    rate = 2000.0 if args.smoke else 20_000.0
    run_for = 0.3 if args.smoke else 1.0
    starts, kills = [], []
    with tempfile.TemporaryDirectory(prefix="asynctrack-worker-") as tmp:
        for r in range(repeats):
            report.progress(f"repeat {r + 1}/{repeats}")
            starts.append(start_once(tmp))
            kills.append(sigkill_once(tmp, rate, run_for))
    report.table(
        f"Start of the first tracker in a fresh process (median of {repeats})",
        ["import asynctrack s", "AsyncTracker(...) s", "first record → flush() returned s", "mode"],
        [
            [
                c.median([s["import_s"] for s in starts]),
                c.median([s["construct_s"] for s in starts]),
                c.median([s["first_flush_s"] for s in starts]),
                starts[0]["mode"],
            ]
        ],
    )
    report.table(
        f"SIGKILL of an application recording {rate:,.0f} events/s, killed after {run_for:g} s (each run)",
        ["run", "events written", "loss window ms", "gaps", "duplicates", "worker exited after s"],
        [
            [i + 1, k["written"], k["loss_window_ms"], k["gaps"], k["duplicates"], k["worker_exit_s"]]
            for i, k in enumerate(kills)
        ],
    )
    idle_s = 0.5 if args.smoke else IDLE_S
    receiver, endpoint = c.otlp_receiver_process()
    variants = (("files", ""), ("files + OTLP export", endpoint))
    try:
        with tempfile.TemporaryDirectory(prefix="asynctrack-idle-") as tmp:
            idle = {name: idle_once(tmp, url, idle_s) for name, url in variants}
    finally:
        receiver.communicate("", timeout=30)
    report.table(
        f"An idle open tracker (one event, a flush, 1.5 s, then {idle_s:g} s counted): CPU ms per second",
        ["tracker", "application", "worker process", "together"],
        [
            [k, v["app_ms_per_s"], v["worker_ms_per_s"], v["app_ms_per_s"] + v["worker_ms_per_s"]]
            for k, v in idle.items()
        ],
    )
    for name, v in idle.items():
        report.goal(
            f"idle tracker ({name}): CPU per second, both processes",
            v["app_ms_per_s"] + v["worker_ms_per_s"],
            2.0,
            unit=" ms",
        )
    report.goal(
        "first flush() after the first tracker is created",
        max(s["first_flush_s"] for s in starts),
        1.0,
        unit=" s",
    )
    report.goal("SIGKILL: loss window (worst run)", max(k["loss_window_ms"] for k in kills), 50.0, unit=" ms")
    report.goal("SIGKILL: gaps and duplicates (all runs)", sum(k["gaps"] + k["duplicates"] for k in kills), 0)
    report.data["starts"] = starts
    report.data["kills"] = kills
    report.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
