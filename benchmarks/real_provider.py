"""Real provider events: the CPU asynctrack spends per callback of real ``ChatOpenAI`` calls (issue 9).

    python -m benchmarks.real_provider [--smoke] [--repeats N] [--out DIR]
    python -m benchmarks.real_provider --instructions [--passes N] [--records FILE]

``langchain-openai``'s ``ChatOpenAI`` runs against a loopback OpenAI-compatible
stub that this benchmark starts on 127.0.0.1 (``tests/_infra/openai_stub.py``): a
tool call round trip (messages, tool calls, token usage) and a streamed answer
with usage. Every callback LangChain makes is recorded with its arguments, then
replayed straight into the tracker, so that only asynctrack's work is timed:

- application side: the ``on_*`` method, i.e. capturing the arguments to bytes and
  appending the record (what stays in the application's process once the worker
  runs in its own process);
- worker side: translate + redact + encode of the same records, in chunks of 64
  as the engine hands them over (``EventTranslator.prepare`` then ``many``).

The calls are recorded once, ``ROUNDS`` rounds of them, each round asking about
another city and answered with other words (``run_calls(vary=True)``): the worker
keeps a cache of pieces of bodies it found clean (``Redactor.prepare``), and
replaying one round over and over would measure a cache that hits on everything.
Each worker-side pass starts with a new translator and an empty cache and goes
once through every round's records.

CPU time (``time.process_time``), medians of ``--repeats`` runs, per event kind and
for the natural mix. Goals (issue 9): ≤ 5 µs per event in the application's
process, ≤ 15 µs per event in all.

``--instructions``: the worker process's path for the same records, counted by
callgrind (deterministic where CPU µs are noise on a shared machine): each
``RECORDS`` payload of ``--chunk`` records (64 by default; the shipper's frames hold
up to 256, as many as a burst fills, and the engine translates a frame at a time), read
(``read_records``), translated, redacted and encoded (``prepare`` then ``many``) and
added to the open batch, which is sealed at the end (``Batcher``): instructions per
event, per kind and for the mix, each pass with a new translator and empty caches as
above (``cold``), and again with the caches kept from a first pass (``warm``: every
piece of these rounds known, as in a long run that repeats them, as ``benchmarks.export``
replays its rounds). The records are captured in this process (or read from
``--records``, a marshal file of them, for the same records in two trees) and handed to
a child run under
``valgrind --tool=callgrind`` (``PYTHONHASHSEED=0``), instrumented only around the
passes. Run it from the old tree too (``PYTHONPATH``) for a before/after pair: the
counts depend on the checkout's path length.
"""

from __future__ import annotations

import argparse
import collections
import gc
import marshal
import operator
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from asynctrack import AsyncTracker, TrackerConfig
from asynctrack._channel import HEADER, read_records, records_frame
from asynctrack._events import _schema
from asynctrack._events._translate import EventTranslator
from asynctrack._layout import Layout
from asynctrack._pipeline._batcher import Batcher
from asynctrack._pipeline._statistics import Counters
from asynctrack._redact import _redactor

from . import _common as c
from ._reference import reference_us

APP_GOAL_US = 5.0
TOTAL_GOAL_US = 15.0
_CHUNK = 64
_SEQ = operator.itemgetter(0)  # of a (seq, line)
_LINE = operator.itemgetter(1)
ROUNDS = 40  # distinct rounds recorded (a tool call round trip and a streamed answer each)


def _record_calls(rounds: int, vary: bool = True) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    tests_dir = str(c.ROOT / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    from _infra.openai_stub import record_calls

    return record_calls(rounds, vary)


def _app_side(
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]], times: int
) -> tuple[float, list[Any]]:
    """CPU µs per event of the ``on_*`` methods; and the records they produced (one pass)."""
    with tempfile.TemporaryDirectory() as tmp:
        tracker = AsyncTracker(tmp, config=TrackerConfig(handle_sigterm=False))
        records: list[Any] = []
        try:
            # Capture only: the records are taken away as the engine's worker would.
            tracker._put = records.append  # type: ignore[method-assign]
            bound = [(getattr(tracker, m), a, k) for m, a, k in calls]
            for method, args, kwargs in bound:  # warm-up, and the records for the worker side
                method(*args, **kwargs)
            kept = list(records)
            gc.collect()
            started = time.process_time()
            for _ in range(times):
                records.clear()
                for method, args, kwargs in bound:
                    method(*args, **kwargs)
            elapsed = time.process_time() - started
        finally:
            tracker.close(timeout=10)
    return elapsed / (times * len(calls)) * 1e6, kept


def _worker_side(records: list[Any], times: int) -> float:
    """CPU µs per record of translate + redact + encode, in engine-sized chunks; each
    of the ``times`` passes with a new translator (its caches cold)."""
    chunks = [records[i : i + _CHUNK] for i in range(0, len(records), _CHUNK)]
    elapsed = 0.0
    for _ in range(max(1, times)):
        _redactor._SHARED.clear()  # the clean pieces are shared by the redactors of a process
        translator = EventTranslator(experiment="bench", run="r", writer="w", config=TrackerConfig())
        gc.collect()
        started = time.process_time()
        for chunk in chunks:
            translator.prepare(chunk)
            translator.many(chunk)
        elapsed += time.process_time() - started
    return elapsed / (len(records) * max(1, times)) * 1e6


def _worker_path(payloads: list[bytes], warm: bool = False) -> int:
    """One pass of the worker process's path over ``payloads`` (``RECORDS`` payloads):
    read, translate, redact, encode, batch, seal; with a new translator and, unless
    ``warm``, empty caches. Returns the bytes of the batch."""
    if not warm:
        _redactor._SHARED.clear()
        _schema.uuid_text.cache_clear()
    config = TrackerConfig()
    translator = EventTranslator(experiment="bench", run="r", writer="w", config=config)
    batcher = Batcher(config, Layout(experiment="bench", run="r", writer="w"), Counters())
    for payload in payloads:
        chunk = read_records(payload)
        translator.prepare(chunk)
        results = translator.many(chunk)
        # As the engine's Worker._encode hands the lines over (C loops).
        batcher.add_many(list(map(_SEQ, results)), list(map(_LINE, results)))  # type: ignore[arg-type]
    return sum(len(batch.data) for _, batch in batcher.seal())


def _worker_child(path: str, passes: int, warm: bool, chunk: int = _CHUNK) -> None:
    """Under callgrind: one pass to warm up (imports, compiled patterns), then ``passes``
    counted."""
    records = marshal.loads(Path(path).read_bytes())
    payloads = [
        records_frame(0, 0, records[i : i + chunk])[HEADER.size :] for i in range(0, len(records), chunk)
    ]
    _worker_path(payloads)
    gc.collect()
    c.callgrind_instrument(True)
    for _ in range(passes):
        _worker_path(payloads, warm)
    c.callgrind_instrument(False)


def _count(records: list[Any], passes: int, warm: bool, tmp: Path, chunk: int = _CHUNK) -> int:
    """Instructions of ``passes`` passes of the worker path over ``records`` (callgrind)."""
    source = tmp / "records.marshal"
    source.write_bytes(marshal.dumps(records, 4))
    command = [sys.executable, "-m", "benchmarks.real_provider", "--worker-child", str(source), str(passes)]
    options = [*(["--warm"] if warm else []), "--chunk", str(chunk)]
    return c.callgrind_total([*command, *options], tmp / "callgrind.out")


def instructions(passes: int, records_file: str | None, chunk: int = _CHUNK) -> None:
    """Print the worker path's instructions per event, per kind and for the mix: each
    pass with empty caches (``cold``), and each pass after a first (``warm``: the caches
    hold every piece of these rounds, as in a long run that repeats them)."""
    if records_file:  # the same records for two trees (a before/after pair)
        records = marshal.loads(Path(records_file).read_bytes())
    else:
        _, records = _app_side(_record_calls(rounds=ROUNDS), 1)
    kinds = collections.Counter(record[_schema.KIND] for record in records)
    print(f"{len(records)} records: {dict(kinds)}; {passes} passes; chunks of {chunk}; {Path.cwd()}")
    print("| records | events | cold: instructions per event | warm |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="asynctrack-worker-cg-") as tmp:
        for kind in [*sorted(kinds), "all"]:
            chosen = records if kind == "all" else [r for r in records if r[_schema.KIND] == kind]
            cold, warm = (
                _count(chosen, passes, w, Path(tmp), chunk) / (passes * len(chosen)) for w in (False, True)
            )
            print(f"| {kind} | {len(chosen)} | {cold:,.0f} | {warm:,.0f} |")


def main(argv: list[str] | None = None) -> int:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--instructions", action="store_true")
    extra.add_argument("--passes", type=int, default=2)
    extra.add_argument("--records", help="with --instructions: a marshal file of records to count")
    extra.add_argument("--worker-child", nargs=2, metavar=("RECORDS", "PASSES"))
    extra.add_argument("--warm", action="store_true")
    extra.add_argument(
        "--chunk",
        type=int,
        default=_CHUNK,
        help="with --instructions: records per payload (the shipper's frames hold up to 256)",
    )
    known, rest = extra.parse_known_args(argv)
    if known.worker_child:
        _worker_child(known.worker_child[0], int(known.worker_child[1]), known.warm, known.chunk)
        return 0
    if known.instructions:
        instructions(known.passes, known.records, known.chunk)
        return 0
    p = c.parser(__doc__ or "", default_repeats=5)
    args = p.parse_args(rest)
    c.install_loopback_guard()
    n = c.repeats(args)
    rounds = 2 if args.smoke else ROUNDS
    times = 2 if args.smoke else 8
    report = c.Report("real_provider", "R. Real ChatOpenAI events: CPU per event", args)
    try:
        calls = _record_calls(rounds=rounds)
    except ImportError as exc:
        report.note(f"langchain-openai is not installed ({exc}): pip install 'asynctrack[bench]'")
        report.table("skipped", ["reason"], [["langchain-openai not installed"]])
        report.metric("skipped", 1.0)
        report.finish()
        return 0
    kinds = collections.Counter(method.removeprefix("on_") for method, _, _ in calls)
    report.progress(f"{len(calls)} callbacks in {rounds} rounds: {dict(kinds)}")
    reference = [reference_us()]
    app: dict[str, list[float]] = collections.defaultdict(list)
    worker: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(n):
        us, records = _app_side(calls, times)
        app["all"].append(us)
        worker["all"].append(_worker_side(records, times))
        for kind in kinds:
            own = [call for call in calls if call[0] == f"on_{kind}"]
            us_kind, records_kind = _app_side(own, times)
            app[kind].append(us_kind)
            worker[kind].append(_worker_side(records_kind, times))
    reference.append(reference_us())
    rows = []
    for kind in [*sorted(kinds), "all"]:
        a, w = c.median(app[kind]), c.median(worker[kind])
        share = (
            f"{kinds[kind] / rounds:g} of {len(calls) / rounds:g}"
            if kind != "all"
            else f"{len(calls) / rounds:g}"
        )
        rows.append([kind, share, a, w, a + w])
    report.table(
        f"CPU µs per event (median of {n}; one round = a tool call round trip and a streamed answer)",
        ["event", "events per round", "application side", "worker side", "in all"],
        rows,
    )
    app_all, worker_all = c.median(app["all"]), c.median(worker["all"])
    report.metric("app_us_per_event", app_all)
    report.metric("worker_us_per_event", worker_all)
    report.metric("total_us_per_event", app_all + worker_all)
    report.goal("application process CPU per real ChatOpenAI event", app_all, APP_GOAL_US, unit=" µs")
    report.goal("CPU per real ChatOpenAI event in all", app_all + worker_all, TOTAL_GOAL_US, unit=" µs")
    # The goals were set on a quiet machine: the same figures divided by the slowdown that
    # this run's own reference measured, a second reading, never instead.
    slowdown = report.machine_speed(reference)
    report.goal_at_quiet_speed("application process CPU", app_all, APP_GOAL_US, slowdown, unit=" µs")
    report.goal_at_quiet_speed("CPU in all", app_all + worker_all, TOTAL_GOAL_US, slowdown, unit=" µs")
    report.note(
        "Replayed callback arguments of real langchain-openai calls (loopback stub); CPU time of "
        "asynctrack's own work only. Read against the machine's load: 2 cores shared."
    )
    report.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
