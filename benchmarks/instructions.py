"""I. Instructions per event over the no-op floor (callgrind): capture, tracker, exporter, rate 0.

    python -m benchmarks.instructions [--workloads sync,agent,tokens,trickle]
        [--variants capture,tracker,exporter,rate0] [--calls N] [--no-correct] [--recorded FILE]

Wall-clock µs swing by ±15 between runs on a shared 2-core machine; instruction counts
do not. Each measurement runs ``valgrind --tool=callgrind`` on a child process that
drives a workload through a handler ``calls`` times after a warm-up, with
instrumentation switched on (``callgrind_control -i on``) only around those calls: the
count is theirs, without the start-up and imports. ``PYTHONHASHSEED=0`` keeps the counts
reproducible run to run. Run it from the old tree too (``PYTHONPATH``) for a
before/after pair, with ``--recorded`` the other run's recording (``--keep``): the
trickle's gaps are recorded from a live stub, and vary with the machine's load.

Variants (``VARIANTS``: one entry each; the floor is always measured):

- ``floor``: the no-op inline handler.
- ``capture``: asynctrack's capture alone: the tracker is closed first, so no shipper or
  worker thread runs, and its records go to a bounded deque, as in
  ``benchmarks.overhead``'s capture-only variant (of ``CAPTURE_KEEP`` records, so that
  freeing them counts here as it does for the tracker's).
- ``tracker``: an ``AsyncTracker`` in its default mode (worker process, local files in a
  temporary directory). The count covers every thread of the application process (the
  caller, the shipper, the reader), around the calls and the final ``flush()``; not the
  worker process (valgrind does not follow children: ``--trace-children=no``).
  "beyond capture" is what the application pays for shipping: issue 19's goal is ≤ 1 µs
  per event.
- ``exporter``: the same tracker with an ``OTLPExporter`` to a loopback receiver in a
  process of its own (``tests/_infra/otlp_receiver.py``, which decodes every request):
  the export runs in the worker process, so the count is what the exporter costs the
  application. Issue 20's goal: +0.5 µs per event at most over ``tracker``.
- ``rate0``: the same tracker with ``sample_rate=0.0, sample_keep_errors=False``: every
  trace is decided out at its root. Issue 20's goal: within 0.5 µs per event of the
  floor. Not run on ``tokens`` (tokens of a run whose start is not replayed are
  recorded at any rate).

Workloads: ``sync`` and ``agent`` as in ``benchmarks.overhead``; ``tokens``: the streamed
tokens of a real ``ChatOpenAI`` answer (langchain-openai against the loopback stub,
``tests/_infra/openai_stub.py``), recorded before the counts start and replayed straight
into the handler's ``on_llm_new_token``, one call being the answer's tokens; ``trickle``:
every callback of one real ``ChatOpenAI`` round (a tool-call round trip and a streamed
answer, ~36 events), replayed with the time gaps they were recorded with (a sleep to
each callback's recorded offset from the round's start), as they trickle in
``benchmarks.overhead``'s ``openai`` workload.

Microseconds: instructions are turned into µs at the floor's rate, timed outside
valgrind in the same run (the ``sync`` floor's CPU per event, ``time.process_time``,
median of ``RATE_REPEATS``): instructions per µs = floor instructions / floor µs. The
rate is printed with the load average it was timed at.

Valgrind runs the application ~50x slower, but the shipper's gathering (``_TICK``, 20 ms)
and the trickle's gaps are wall time: under valgrind a round gathers fewer records, and
its fixed cost is shared by fewer events than at full speed, so the tracker's count
is an upper bound of its real per-event cost. The correction (unless ``--no-correct``):
the tracker runs twice more under valgrind, with a tick of ``SHORT_TICK`` (many rounds)
and of ``LONG_TICK`` (rounds from the backlog bound and the flush only), and once
without valgrind (the rounds it takes at full speed, at this machine's load). The two
counts give the instructions of one round (their difference over the difference in
rounds: a round's fixed cost in every thread, the wake-up, the frame, the write, the
acknowledgement); the corrected figure is the long tick's count with the full-speed
run's rounds instead of its own (uncorrected when the two runs differ by fewer than
``MIN_ROUNDS`` rounds: replayed tokens leave the shipper few). Instructions do not show
what a round costs beyond them: the kernel's part (futex wake-ups, the pipe write,
context switches) and cold caches. And they overweigh large copies: callgrind counts a
``rep movsb`` copy (glibc's ``memcpy`` of a few KiB and more) about one instruction per
byte, where the CPU moves tens of bytes a cycle.

The capture alone is also timed outside valgrind (with ``capture`` among the variants, for
the ``sync`` and ``agent`` workloads): runs of the floor and of the capture alternate
(``CAPTURE_PAIRS`` pairs, ``--rate-calls`` worth of events each), and the median of the
pairs' differences is printed against issue 19's goal (≤ 3 µs). Its instructions run at a
lower rate than the floor's (allocation, the orjson walk, cold caches between LangChain's
frames), so the count alone reads low: both are shown.

``--child VARIANT WORKLOAD CALLS`` runs one driver directly (no valgrind).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._common import ROOT, callgrind_instrument, callgrind_total, otlp_receiver_process

WARMUP = 50  # calls before the measured ones: caches filled, first-call paths taken
RATE_REPEATS = 5  # timed runs of the floor, outside valgrind, for the instructions per µs
CAPTURE_PAIRS = 7  # timed floor/capture pairs, outside valgrind, for the capture's µs
CAPTURE_GOAL_US = 3.0  # issue 19: the capture alone over the floor, sync and agent
#: Records the capture keeps: a few, so that each is freed within the count, as a shipped
#: one is (a deque of 4096, as in ``benchmarks.overhead``, would free none in a short count).
CAPTURE_KEEP = 64
SHORT_TICK = 0.001  # the shipper's tick in the correction's run with many rounds
LONG_TICK = 3600.0  # ... and in its run with the fewest (no timed rounds)
MIN_ROUNDS = 20  # rounds between the two for a fit (else the count is left uncorrected)

Call = tuple[str, tuple[Any, ...], dict[str, Any]]


# -- workloads ----------------------------------------------------------------------------

REPLAYED = ("tokens", "trickle")  # workloads of recorded ChatOpenAI callbacks


def _record(path: Path) -> None:
    """Record one warm round of real ``ChatOpenAI`` callbacks, with their offsets in
    seconds from the round's first callback, to ``path`` (read by every child)."""
    tests_dir = str(ROOT / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    from _infra.openai_stub import record_calls

    stamps: list[float] = []
    calls = record_calls(2, vary=True, stamps=stamps)
    # The second round (warm): its first model start. Each round makes the same model
    # calls; their tokens differ in number (other words).
    starts = [i for i, call in enumerate(calls) if call[0] == "on_chat_model_start"]
    first = starts[len(starts) // 2]
    offsets = [stamp - stamps[first] for stamp in stamps[first:]]
    path.write_bytes(pickle.dumps((calls[first:], offsets)))


class _Replay:
    """A "chain" whose ``invoke`` replays recorded callbacks into the handlers given,
    each at its recorded offset from the call's start if ``offsets`` is given."""

    def __init__(self, calls: list[Call], offsets: list[float] | None) -> None:
        self.calls = calls
        self.offsets = offsets

    def invoke(self, _input: Any, config: dict[str, Any] | None = None) -> None:
        handlers = (config or {}).get("callbacks") or ()
        start = time.perf_counter()
        for index, (method, args, kwargs) in enumerate(self.calls):
            if self.offsets is not None:
                delay = start + self.offsets[index] - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            for handler in handlers:
                getattr(handler, method)(*args, **kwargs)


def _chain(workload: str, recorded: Path | None) -> Any:
    from ._workloads import WORKLOADS

    if workload not in REPLAYED:
        return WORKLOADS[workload].build()
    assert recorded is not None, "replayed workloads need --recorded"
    calls, offsets = pickle.loads(recorded.read_bytes())
    # Keyword names interned, as in LangChain's calls (names in code are): unpickled
    # ones are new strings, and CPython matches a keyword that is not the parameter's
    # own string object by comparing it with every parameter name (~3k instructions an
    # event more for a token's five keywords).
    calls = [(method, args, {sys.intern(k): v for k, v in kwargs.items()}) for method, args, kwargs in calls]
    if workload == "tokens":
        return _Replay([call for call in calls if call[0] == "on_llm_new_token"], None)
    return _Replay(calls, offsets)


def _events_per_call(workload: str, recorded: Path) -> int:
    from ._workloads import WORKLOADS, count_events

    if workload in REPLAYED:
        return len(_chain(workload, recorded).calls)
    return count_events(WORKLOADS[workload])[0]


# -- variants -----------------------------------------------------------------------------


@dataclasses.dataclass
class Setup:
    """A variant's handler in one child.

    Attributes:
        handler: what the calls get as their one callback handler.
        finish: run inside the count after the calls (the tracker's final flush).
        counters: cumulative counters read before and after the count (their
            differences are reported; ``rounds``: the shipper's rounds).
        close: run after the count.
    """

    handler: Any
    finish: Callable[[], None] = lambda: None
    counters: Callable[[], dict[str, int]] = dict
    close: Callable[[], None] = lambda: None


def _floor(tmp: str, workload: str) -> Setup:
    from ._workloads import NoOpHandler

    return Setup(NoOpHandler())


def _capture(tmp: str, workload: str) -> Setup:
    from asynctrack import AsyncTracker

    from ._variants import capture_only

    tracker = AsyncTracker(tmp, experiment_name="instr", run_name=workload)
    tracker.close()  # no thread may wake while the calls run: only the capture counts
    kept = capture_only(tracker, keep=CAPTURE_KEEP)

    def check() -> None:
        assert kept, "nothing captured"

    return Setup(tracker, close=check)


def _tracker(tmp: str, workload: str, **options: Any) -> Setup:
    from asynctrack import AsyncTracker, TrackerConfig

    # worker="process" is the default; said here because the children run with
    # ASYNCTRACK_WORKER=thread (the capture's tracker must start no process).
    options.setdefault("config", TrackerConfig(worker="process"))
    tracker = AsyncTracker(tmp, experiment_name="instr", run_name=workload, **options)
    engine: Any = tracker._engine
    shipper = engine._worker._shipper
    assert engine.lane.tracker_id > 0, "the tracker must ship to a worker process"

    def counters() -> dict[str, int]:
        return {"rounds": shipper.rounds, "recorded": tracker.statistics().recorded}

    def close() -> None:
        stats = tracker.statistics()
        tracker.close()
        assert stats.dropped == 0 and stats.written == stats.recorded, stats

    return Setup(tracker, finish=tracker.flush_blocking, counters=counters, close=close)


def _exporter(tmp: str, workload: str) -> Setup:
    from asynctrack import OTLPExporter

    receiver, endpoint = otlp_receiver_process()
    setup = _tracker(tmp, workload, exporters=[OTLPExporter(endpoint)])
    tracker, close = setup.handler, setup.close

    def stop() -> None:
        try:
            close()  # flushes the export: every span is at the receiver, or failed
        finally:
            receiver.communicate("")
        stats = tracker.statistics()
        assert stats.spans_exported > 0 and stats.spans_failed == 0, stats

    return dataclasses.replace(setup, close=stop)


def _rate0(tmp: str, workload: str) -> Setup:
    from asynctrack import TrackerConfig

    config = TrackerConfig(worker="process", sample_rate=0.0, sample_keep_errors=False)
    setup = _tracker(tmp, workload, config=config)
    tracker, close = setup.handler, setup.close

    def check() -> None:
        close()
        stats = tracker.statistics()
        assert stats.recorded == 0 and stats.sampled_out > 0, stats

    return dataclasses.replace(setup, close=check)


#: Each variant's set-up, by name. A variant that reports ``rounds`` is corrected for
#: valgrind's slow-down (module docstring).
VARIANTS: dict[str, Callable[[str, str], Setup]] = {
    "floor": _floor,
    "capture": _capture,
    "tracker": _tracker,
    "exporter": _exporter,
    "rate0": _rate0,
}
#: Workloads a variant does not run on (module docstring).
SKIPPED = {("rate0", "tokens")}


def child(variant: str, workload: str, calls: int, recorded: Path | None, info: Path | None) -> None:
    from ._workloads import run_sync

    chain = _chain(workload, recorded)
    with tempfile.TemporaryDirectory(prefix="asynctrack-instr-") as tmp:
        setup = VARIANTS[variant](tmp, workload)
        run_sync(chain, [setup.handler], min(WARMUP, calls))
        setup.finish()
        before = setup.counters()
        callgrind_instrument(True)
        run_sync(chain, [setup.handler], calls)
        setup.finish()
        callgrind_instrument(False)
        after = setup.counters()
        setup.close()
    if info is not None:
        info.write_text(json.dumps({key: after[key] - before[key] for key in after}))


# -- the parent ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
    instructions: int | None  # None: run without valgrind
    counters: dict[str, int]


def _run(
    variant: str,
    workload: str,
    calls: int,
    out_dir: Path,
    *,
    valgrind: bool = True,
    tick: float | None = None,
) -> Run:
    name = f"{variant}.{workload}.{calls}" + (f".tick{tick:g}" if tick is not None else "")
    info = out_dir / f"info.{name}.json"
    out = out_dir / f"callgrind.{name}"
    command = [sys.executable, "-m", "benchmarks.instructions", "--child", variant, workload, str(calls)]
    command += ["--recorded", str(out_dir / "recorded.pickle"), "--info", str(info)]
    if tick is not None:
        command += ["--tick", str(tick)]
    env = dict(os.environ, ASYNCTRACK_WORKER="thread")
    instructions = None
    if valgrind:
        instructions = callgrind_total(command, out, env=env, cwd=ROOT)
    else:
        env["PYTHONHASHSEED"] = "0"  # as callgrind_total's
        subprocess.run(
            command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    return Run(instructions, json.loads(info.read_text()))


def _floor_us(workload: str, calls: int) -> float:
    """The floor's CPU µs per event of ``workload``, outside valgrind (median)."""
    from ._workloads import WORKLOADS, NoOpHandler, count_events, run_sync

    chain = WORKLOADS[workload].build()
    handler = NoOpHandler()
    run_sync(chain, [handler], WARMUP)
    timed = []
    for _ in range(RATE_REPEATS):
        started = time.process_time()
        run_sync(chain, [handler], calls)
        timed.append(time.process_time() - started)
    return statistics.median(timed) * 1e6 / (calls * count_events(WORKLOADS[workload])[0])


def _capture_timed_us(workload: str, events: int) -> tuple[float, list[float]]:
    """The capture alone's CPU µs per event over the floor, outside valgrind: the median
    of ``CAPTURE_PAIRS`` differences of alternating runs of ``events`` events (and them)."""
    from asynctrack import AsyncTracker

    from ._variants import capture_only
    from ._workloads import WORKLOADS, NoOpHandler, count_events, run_sync

    chain = WORKLOADS[workload].build()
    per_call = count_events(WORKLOADS[workload])[0]
    calls = max(1, events // per_call)
    with tempfile.TemporaryDirectory(prefix="asynctrack-capture-") as tmp:
        tracker = AsyncTracker(tmp, experiment_name="instr", run_name=workload)
        tracker.close()  # no thread may wake while the calls run: only the capture counts
        capture_only(tracker, keep=CAPTURE_KEEP)
        handlers = (NoOpHandler(), tracker)
        for handler in handlers:
            run_sync(chain, [handler], WARMUP)
        differences = []
        for _ in range(CAPTURE_PAIRS):
            timed = []
            for handler in handlers:
                started = time.process_time()
                run_sync(chain, [handler], calls)
                timed.append((time.process_time() - started) * 1e6 / (calls * per_call))
            differences.append(timed[1] - timed[0])
    return statistics.median(differences), differences


def _print_capture_timed(workloads: list[str], events: int) -> None:
    rows = [(w, *_capture_timed_us(w, events)) for w in ("sync", "agent") if w in workloads]
    if not rows:
        return
    load = Path("/proc/loadavg").read_text().split()[0]
    print(
        f"\nThe capture alone, timed outside valgrind ({CAPTURE_PAIRS} floor/capture pairs alternating, "
        f"{events:,} events a run, load average {load}): CPU µs per event over the floor\n"
    )
    print("| workload | median | pairs | goal |\n|---|---|---|---|")
    for workload, median, differences in rows:
        verdict = "met" if median <= CAPTURE_GOAL_US else "not met"
        pairs = ", ".join(f"{d:.2f}" for d in differences)
        print(f"| {workload} | {median:.2f} | {pairs} | ≤ {CAPTURE_GOAL_US:g}: {verdict} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="sync,agent,tokens,trickle")
    parser.add_argument(
        "--variants", default="capture,tracker,exporter,rate0", help=f"of {', '.join(VARIANTS)}"
    )
    parser.add_argument("--calls", type=int, default=200, help="calls counted (trickle: a quarter)")
    parser.add_argument("--rate-calls", type=int, default=2000, help="sync floor calls per timed run")
    parser.add_argument("--no-correct", action="store_true", help="no correction for valgrind's slow-down")
    parser.add_argument("--keep", help="keep the callgrind files in this directory")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "WORKLOAD", "CALLS"))
    parser.add_argument(
        "--recorded",
        type=Path,
        help="replay this recording (recorded.pickle of another run's --keep): paired runs",
    )
    parser.add_argument("--info", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tick", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.tick is not None:
            from asynctrack._remote import _shipper

            _shipper._TICK = args.tick  # type: ignore[misc]  # the correction's run
        variant, workload, calls = args.child
        child(variant, workload, int(calls), args.recorded, args.info)
        return

    workloads = args.workloads.split(",")
    variants = [v for v in args.variants.split(",") if v != "floor"]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants: {', '.join(unknown)}")
    with tempfile.TemporaryDirectory(prefix="asynctrack-callgrind-") as tmp:
        out_dir = Path(args.keep or tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        if args.recorded is not None:  # the same callbacks and gaps as another run
            shutil.copyfile(args.recorded, out_dir / "recorded.pickle")
        else:
            _record(out_dir / "recorded.pickle")
        floor_us = _floor_us("sync", args.rate_calls)
        load = Path("/proc/loadavg").read_text().split()[0]
        floor_sync = _run("floor", "sync", args.calls, out_dir).instructions
        assert floor_sync is not None
        events_sync = _events_per_call("sync", out_dir / "recorded.pickle")
        rate = floor_sync / (args.calls * events_sync) / floor_us
        print(
            f"rate: {rate:,.0f} instructions per µs (the sync floor: {floor_us:.2f} µs of CPU per "
            f"event outside valgrind, load average {load})\n"
        )
        print(
            "| workload | events per call | variant | floor | over the floor | beyond capture "
            "| µs | rounds per 100 events: valgrind / full speed | per round | corrected beyond capture | µs |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        goals: dict[tuple[str, str], float] = {}  # (workload, variant): over the floor
        for workload in workloads:
            events = _events_per_call(workload, out_dir / "recorded.pickle")
            calls = max(args.calls // 4, 10) if workload == "trickle" else args.calls
            n = calls * events

            def per_event(run: Run, n: int = n) -> float:
                assert run.instructions is not None
                return run.instructions / n

            floor = per_event(_run("floor", workload, calls, out_dir))
            capture = None
            for variant in variants:
                if (variant, workload) in SKIPPED:
                    continue
                run = _run(variant, workload, calls, out_dir)
                over = per_event(run) - floor
                goals[workload, variant] = over
                if variant == "capture":
                    capture = over
                beyond = "" if capture is None or variant == "capture" else over - capture
                row = [workload, str(events), variant, f"{floor:,.0f}", f"{over:,.0f}"]
                if isinstance(beyond, float):
                    row += [f"{beyond:,.0f}", f"{beyond / rate:.2f}"]
                else:
                    row += ["", ""]
                rounds = run.counters.get("rounds")
                if rounds is None or args.no_correct or not isinstance(beyond, float):
                    row += ["", "", "", ""]
                else:
                    short = _run(variant, workload, calls, out_dir, tick=SHORT_TICK)
                    long = _run(variant, workload, calls, out_dir, tick=LONG_TICK)
                    plain = _run(variant, workload, calls, out_dir, valgrind=False)
                    assert short.instructions is not None and long.instructions is not None
                    fewest, most = long.counters["rounds"], short.counters["rounds"]
                    full_speed = plain.counters["rounds"]
                    cells = [f"{100 * rounds / n:.1f} / {100 * full_speed / n:.1f}"]
                    if most - fewest < MIN_ROUNDS:  # no fit: too few rounds either way
                        row += [*cells, "", f"{beyond:,.0f}", f"{beyond / rate:.2f}"]
                    else:
                        per_round = (short.instructions - long.instructions) / (most - fewest)
                        extra = per_round * (full_speed - fewest) / n
                        corrected = per_event(long) - floor - (capture or 0.0) + extra
                        goals[workload, variant] = corrected + (capture or 0.0)
                        row += [*cells, f"{per_round:,.0f}", f"{corrected:,.0f}", f"{corrected / rate:.2f}"]
                print("| " + " | ".join(row) + " |", flush=True)
        _print_goals(goals, workloads, rate)
        if "capture" in variants:
            _print_capture_timed(workloads, args.rate_calls * 6)


def _print_goals(goals: dict[tuple[str, str], float], workloads: list[str], rate: float) -> None:
    """Issue 20's goals, from the instructions over the floor (corrected where a variant
    ships): the exporter's cost over the same tracker, and rate 0's over the floor."""
    rows = []
    for workload in workloads:
        exporter, tracker, rate0 = (goals.get((workload, v)) for v in ("exporter", "tracker", "rate0"))
        cells = [workload, "", "", ""]
        if exporter is not None and tracker is not None:
            cells[1:3] = [f"{exporter - tracker:,.0f}", f"{(exporter - tracker) / rate:+.2f}"]
        if rate0 is not None:
            cells[3] = f"{rate0:,.0f} ({rate0 / rate:.2f} µs)"
        if cells[1:] != ["", "", ""]:
            rows.append(cells)
    if rows:
        print(
            "\nIssue 20's goals (instructions per event, corrected where the variant ships; µs at the rate):\n"
        )
        print(
            "| workload | exporter over tracker | µs (goal ≤ +0.5) | rate0 over the floor (goal ≤ 0.5 µs) |"
        )
        print("|---|---|---|---|")
        for cells in rows:
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
