"""X. OTLP export (issue 20): worker CPU per span, live spans/s, backfill spans/s.

    python -m benchmarks.export [--smoke] [--repeats N] [--out DIR]

1. Encoding, in this process: real redacted lines (``ChatOpenAI`` on the loopback stub:
   a tool call round trip and a streamed answer per round, replicated with fresh run ids
   to 10,000 spans) and chain lines (a start and an end per span) are assembled into
   spans, wrapped into requests of 512 spans and gzipped: CPU µs per span. (The
   assembler writes a span's head and its last join itself, so the ``opentelemetry-proto``
   message classes can no longer be swapped in for a comparison; the last one, on
   2026-12-07: 35.6 µs a ChatOpenAI span hand-written, 78.7 with the classes.)
2. Live, in the worker process: an application records chain runs (start and end,
   small payloads) into a tracker with and without ``OTLPExporter`` to a loopback HTTP
   receiver (in a process of its own: not the application's CPU), alternating: application CPU per event (``time.process_time``), worker
   process CPU per exported span (``/proc/<pid>/stat``, exporter on minus off), and
   spans per second from the first event to ``close()`` returning (every span sent).
3. Live, real payloads: the callbacks of the same ``ChatOpenAI`` calls, recorded once
   with their arguments and replayed into a tracker in the worker process (fresh run ids
   per copy), exporter on and off, alternating: application CPU per event, worker CPU
   per exported span (and thread by thread: the engine thread, which assembles the spans,
   and the others), spans per second from the first event to ``close()`` returning.
   The figures users see, with metrics on (the exporter's default).
4. Backfill: ``asynctrack export`` of the live chain run's files to the same receiver.

``--instructions [--lines FILE]``: instead of the above, the assembly's instructions per
span, counted by callgrind (``PYTHONHASHSEED=0``: deterministic at one path): 3,000 real
ChatOpenAI spans (20 rounds copied with fresh run ids) and 3,000 chain runs, each
variant in a child under valgrind: a warm-up on 2,000 lines (a separate assembler), then
instrumentation on around a new assembler's ``add()`` of every line and ``close()``, the
trace requests of 512 spans and their gzip (level 1, as the exporter sends them), and the
metrics request at the end (as the exporter's close sends it). ``--lines`` reads (or, missing,
writes) the lines, so that two trees count the same ones: a before/after pair.

Medians of ``--repeats`` interleaved runs. Goals (issue 20): application CPU +0.5 µs per
event at most; worker CPU ≤ 20 µs per span; live and backfill ≥ 20,000 spans/s.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import pickle
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from asynctrack import AsyncTracker, OTLPExporter, TrackerConfig
from asynctrack._export import _protobuf as pb
from asynctrack._export import _semconv
from asynctrack._export._sender import gzip_body
from asynctrack._export._spans import SpanAssembler

from . import _common as c
from ._reference import reference_us
from .overhead import _worker_threads

APP_GOAL_US = 0.5
WORKER_GOAL_US = 20.0
RATE_GOAL = 20_000.0
BATCH = 512
_TICKS = os.sysconf("SC_CLK_TCK")


# -- lines ---------------------------------------------------------------------------------------


def _tests_on_path() -> None:
    tests_dir = str(c.ROOT / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)


def _read_lines(destination: Path) -> list[bytes]:
    _tests_on_path()
    from export_workloads import recorded_lines

    return recorded_lines(destination)


def _chat_lines(rounds: int, spans: int) -> list[bytes]:
    """Real ChatOpenAI lines (3 runs a round), copied with fresh run ids up to ``spans`` spans."""
    _tests_on_path()
    from _infra.openai_stub import OpenAIStub, run_calls

    with tempfile.TemporaryDirectory() as tmp, OpenAIStub() as stub:
        tracker = AsyncTracker(tmp, config=TrackerConfig(worker="thread", handle_sigterm=False))
        run_calls(stub.url, [tracker], rounds, vary=True)
        tracker.close()
        template = _read_lines(Path(tmp))
    ids = sorted({orjson.loads(line)["run_id"].encode() for line in template})
    joined = b"\n".join(template)
    out: list[bytes] = []
    while len(out) // max(len(template), 1) * len(ids) < spans:
        data = joined
        for old in ids:
            data = data.replace(old, str(uuid.uuid4()).encode())
        out.extend(data.split(b"\n"))
    return out


def _chain_lines(spans: int) -> list[bytes]:
    """Chain runs (a start and an end each, small inputs and outputs) as a tracker writes them."""
    with tempfile.TemporaryDirectory() as tmp:
        tracker = AsyncTracker(tmp, config=TrackerConfig(worker="thread", handle_sigterm=False))
        for i in range(spans):
            run_id = uuid.uuid4()
            tracker.on_chain_start({}, {"x": i}, run_id=run_id, name="step", tags=["seq:step:1"])
            tracker.on_chain_end({"y": i}, run_id=run_id)
        tracker.close()
        return _read_lines(Path(tmp))


# -- the two encoders ------------------------------------------------------------------------------


def _hand_written(spans: list[bytes]) -> bytes:
    return pb.request([pb.attribute("service.name", "bench")], "asynctrack", "0", spans, _semconv.SCHEMA_URL)


def _encode_us(lines: list[bytes], request: Callable[[list[Any]], bytes]) -> tuple[float, int, int]:
    """CPU µs per span to assemble, wrap and gzip ``lines``; spans; compressed bytes."""
    gc.collect()
    started = time.process_time()
    assembler = SpanAssembler()
    spans = assembler.add(lines) + assembler.close()
    size = 0
    for start in range(0, len(spans), BATCH):
        size += len(gzip_body(request(spans[start : start + BATCH])))
    elapsed = time.process_time() - started
    return elapsed / len(spans) * 1e6, len(spans), size


# -- live ----------------------------------------------------------------------------------------------


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


Calls = list[tuple[str, tuple[Any, ...], dict[str, Any]]]


def _chain_runs(spans: int) -> Callable[[AsyncTracker], int]:
    """Records ``spans`` chain runs (start and end, small payloads); returns the events."""
    inputs = {"question": "what is the weather in Paris?"}
    outputs = {"answer": "mild, 18 degrees"}

    def drive(tracker: AsyncTracker) -> int:
        for _ in range(spans):
            run_id = uuid.uuid4()
            tracker.on_chain_start({}, inputs, run_id=run_id, name="step")
            tracker.on_chain_end(outputs, run_id=run_id)
        return 2 * spans

    return drive


def _record_chat_calls(rounds: int) -> Calls:
    _tests_on_path()
    from _infra.openai_stub import record_calls

    return record_calls(rounds, vary=True)


def _copies(calls: Calls, copies: int) -> list[Calls]:
    """``copies`` copies of ``calls``, each with run ids of its own (made before timing)."""
    out = []
    for _ in range(copies):
        ids: dict[Any, uuid.UUID] = {}
        copy = []
        for method, args, recorded in calls:
            kwargs = dict(recorded)
            for key in ("run_id", "parent_run_id"):
                if kwargs.get(key) is not None:
                    kwargs[key] = ids.setdefault(kwargs[key], uuid.uuid4())
            copy.append((method, args, kwargs))
        out.append(copy)
    return out


def _chat_runs(copies: list[Calls]) -> Callable[[AsyncTracker], int]:
    """Replays the recorded ChatOpenAI callbacks into the tracker; returns the events."""

    def drive(tracker: AsyncTracker) -> int:
        events = 0
        for calls in copies:
            for method, args, kwargs in calls:
                getattr(tracker, method)(*args, **kwargs)
            events += len(calls)
        return events

    return drive


def _live_once(tmp: str, endpoint: str | None, drive: Callable[[AsyncTracker], int]) -> dict[str, Any]:
    from asynctrack._remote._spawn import worker_process

    exporters = [OTLPExporter(endpoint)] if endpoint else []
    destination = Path(tmp) / ("on" if endpoint else "off") / uuid.uuid4().hex
    tracker = AsyncTracker(
        destination,
        experiment_name="bench",
        # Held back, not dropped, when the replay (as fast as it goes) outruns the worker:
        # every span exported, whatever --spans (with "drop", more than ~6,000 overflowed).
        config=TrackerConfig(worker="process", handle_sigterm=False, when_full="block", block_timeout=60.0),
        exporters=exporters,
    )
    tracker.flush_blocking(timeout=60)  # the worker is up: steady state, not start-up
    worker = worker_process().pid
    gc.collect()
    worker_cpu = _cpu_of(worker)
    threads = _worker_threads()
    wall = time.perf_counter()
    cpu = time.process_time()
    events = drive(tracker)
    app_cpu = time.process_time() - cpu
    # Thread by thread while the tracker's threads still run (its engine thread and the
    # exporter's senders end at close): the busiest is the tracker's engine thread.
    tracker.flush_blocking(timeout=120)
    after = _worker_threads()
    ran = sorted((ns - threads.get(task, 0) for task, ns in after.items()), reverse=True)
    tracker.close(timeout=120)
    wall = time.perf_counter() - wall
    stats = tracker.statistics()
    return {
        "app_us_per_event": app_cpu / events * 1e6,
        "worker_s": _cpu_of(worker) - worker_cpu,
        "engine_s": ran[0] / 1e9 if ran else float("nan"),
        "other_threads_s": sum(ran[1:]) / 1e9,
        "wall_s": wall,
        "spans_exported": stats.spans_exported,
        "spans_failed": stats.spans_failed,
        "written": stats.written,
        "destination": destination,
    }


def _live(
    receiver_url: str,
    tmp: str,
    drive: Callable[[AsyncTracker], int],
    spans: int,
    repeats: int,
    report: c.Report,
) -> dict[str, list[dict[str, Any]]]:
    """``repeats`` interleaved runs of ``drive`` with the exporter off and on."""
    live: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for r in range(repeats):
        report.progress(f"live repeat {r + 1}/{repeats} ({spans:,} spans)")
        for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
            live[mode].append(_live_once(tmp, receiver_url if mode == "on" else None, drive))
        run = live["on"][-1]
        assert run["spans_exported"] == spans, run
    return live


LIVE_HEADERS = [
    "exporter",
    "app CPU µs/event",
    "worker CPU s",
    "of which the engine thread, s",
    "other threads, s",
    "spans/s, first event to close()",
    "spans exported",
]


def _live_rows(live: dict[str, list[dict[str, Any]]], spans: int) -> tuple[list[list[Any]], dict[str, float]]:
    """The table rows of a live pair, and its figures: app µs/event on minus off, worker
    µs/span on minus off, spans/s with the exporter on."""
    rows = []
    for mode in ("off", "on"):
        runs = live[mode]
        rows.append(
            [
                mode,
                c.median([x["app_us_per_event"] for x in runs]),
                c.median([x["worker_s"] for x in runs]),
                c.median([x["engine_s"] for x in runs]),
                c.median([x["other_threads_s"] for x in runs]),
                c.median([spans / x["wall_s"] for x in runs]),
                runs[-1]["spans_exported"],
            ]
        )
    figures = {
        "app_us": rows[1][1] - rows[0][1],
        "worker_us": (rows[1][2] - rows[0][2]) / spans * 1e6,
        "engine_us": (rows[1][3] - rows[0][3]) / spans * 1e6,
        "other_threads_us": (rows[1][4] - rows[0][4]) / spans * 1e6,
        "rate": rows[1][5],
    }
    return rows, figures


def _backfill_once(destination: Path, endpoint: str) -> tuple[float, int]:
    from asynctrack._cli import main as cli

    started = time.perf_counter()
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        status = cli(["export", str(destination), "--otlp-endpoint", endpoint])
    return time.perf_counter() - started, status


# -- instructions (callgrind) ----------------------------------------------------------------------

#: Variants of ``--instructions``: workload, content captured, metrics kept, handed over
#: as the engine does (frames of ``FRAME`` lines, with their kinds and run ids where the
#: assembler takes them: ``add_records``) rather than all lines in one ``add()``.
COUNTED: dict[str, tuple[str, bool, bool, bool]] = {
    "ChatOpenAI, metrics kept (the exporter's default)": ("chat", False, True, False),
    "ChatOpenAI, metrics not kept": ("chat", False, False, False),
    "ChatOpenAI, content captured, metrics kept": ("chat", True, True, False),
    "chain runs": ("chain", False, True, False),
    "ChatOpenAI, metrics kept, as the engine hands them (frames of 256)": ("chat", False, True, True),
}
_WARMUP_LINES = 2000
FRAME = 256  # records a frame of the worker process's channel holds in a burst


def _assemble(lines: list[bytes], capture: bool, metrics: bool, described: list[Any] | None = None) -> int:
    """Assemble ``lines`` into spans, requests of ``BATCH`` and their gzip; the spans.
    ``described``: each line's kind and run id: the lines go in frames, as the engine hands
    them (with these, if the assembler takes them)."""
    from asynctrack._export._metrics import Metrics

    kept = (
        Metrics([pb.attribute("service.name", "bench")], pb.scope("asynctrack", "0"), "") if metrics else None
    )
    assembler = SpanAssembler(capture_content=capture, metrics=kept)
    if described is None:
        spans = assembler.add(lines)
    else:
        records = getattr(assembler, "add_records", None)  # an older tree: lines alone
        kinds, runs = described
        spans = []
        for at in range(0, len(lines), FRAME):
            frame = lines[at : at + FRAME]
            spans += (
                assembler.add(frame)
                if records is None
                else records(frame, kinds[at : at + len(frame)], runs[at : at + len(frame)])
            )
    spans += assembler.close()
    for start in range(0, len(spans), BATCH):
        gzip_body(_hand_written(spans[start : start + BATCH]))
    if kept is not None:
        gzip_body(kept.request())  # as the exporter's close sends them
    return len(spans)


def _count_child(variant: str, lines_file: Path, info: Path) -> None:
    workload, capture, metrics, framed = COUNTED[variant]
    chat, chain = pickle.loads(lines_file.read_bytes())
    lines = chat if workload == "chat" else chain
    described = None
    if framed:
        # As the engine gives them: a kind is one of a few strings, a run's id one object.
        events = list(map(orjson.loads, lines))
        ids: dict[str, str] = {}
        described = [
            [sys.intern(e["kind"]) for e in events],
            [ids.setdefault(e["run_id"], e["run_id"]) for e in events],
        ]
        del events
    _assemble(lines[:_WARMUP_LINES], capture, metrics, described)
    gc.collect()
    c.callgrind_instrument(True)
    spans = _assemble(lines, capture, metrics, described)
    c.callgrind_instrument(False)
    info.write_text(str(spans))


def _instructions(lines_file: Path | None) -> int:
    """Print the instructions per span of each variant (``--instructions``)."""
    with tempfile.TemporaryDirectory(prefix="asynctrack-export-callgrind-") as tmp:
        if lines_file is None:
            lines_file = Path(tmp) / "lines.pickle"
        if not lines_file.exists():
            lines_file.write_bytes(pickle.dumps((_chat_lines(20, 3000), _chain_lines(3000))))
        print(f"load average {Path('/proc/loadavg').read_text().split()[0]}, lines from {lines_file}")
        print("| lines | instructions per span |\n|---|---|")
        for number, variant in enumerate(COUNTED):
            out, info = Path(tmp) / f"callgrind.{number}", Path(tmp) / f"spans.{number}"
            command = [
                sys.executable,
                "-m",
                "benchmarks.export",
                "--count-child",
                variant,
                str(lines_file),
                str(info),
            ]
            total = c.callgrind_total(command, out)
            print(f"| {variant} | {total / int(info.read_text()):,.0f} |", flush=True)
    return 0


def _chat_only(args: argparse.Namespace) -> int:
    """Part 3 alone (``--chat-only``): a before/after pair of the live worker CPU per span."""
    c.install_loopback_guard()
    repeats = c.repeats(args)
    report = c.Report("export_chat", "X. OTLP export, live ChatOpenAI runs: worker CPU per span", args)
    chat_calls = _record_chat_calls(4 if args.smoke else 20)
    per_copy = len({kwargs["run_id"] for _, _, kwargs in chat_calls})
    copies = _copies(chat_calls, max(1, (300 if args.smoke else args.spans) // per_copy))
    spans = per_copy * len(copies)
    load = Path("/proc/loadavg").read_text().split()[0]
    with tempfile.TemporaryDirectory(prefix="asynctrack-export-") as tmp, c.StubHTTPProcess() as receiver:
        live = _live(receiver.url, tmp, _chat_runs(copies), spans, repeats, report)
    rows, figures = _live_rows(live, spans)
    report.table(
        f"Live, worker process, {spans:,} ChatOpenAI runs, median of {repeats} interleaved "
        f"(load average {load} at the start)",
        LIVE_HEADERS,
        rows,
    )
    report.goal(
        "worker CPU per exported span, on minus off", figures["worker_us"], WORKER_GOAL_US, unit=" µs"
    )
    report.note(
        f"Worker CPU per exported span, on minus off, thread by thread (at a flush before the "
        f"close): the tracker's engine thread (the assembly) {figures['engine_us']:.1f} µs, the "
        f"other threads (the exporter's senders, the reader) {figures['other_threads_us']:.1f} µs."
    )
    pairs = [
        (on["worker_s"] - off["worker_s"]) / spans * 1e6
        for off, on in zip(live["off"], live["on"], strict=True)
    ]
    report.note(
        "Worker CPU per exported span, on minus off, repeat by repeat (the spread): "
        + ", ".join(f"{us:.1f}" for us in pairs)
        + " µs."
    )
    report.metric("chat_worker_us_per_span", max(figures["worker_us"], 1e-9))
    report.finish()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__.splitlines()[0], default_repeats=3)
    p.add_argument(
        "--instructions", action="store_true", help="the assembly's instructions per span (callgrind)"
    )
    p.add_argument(
        "--lines", type=Path, help="--instructions: the lines to count (read, or written if missing)"
    )
    p.add_argument("--count-child", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--chat-only", action="store_true", help="only part 3 (live, real ChatOpenAI callbacks)")
    p.add_argument("--spans", type=int, default=6000, help="--chat-only: ChatOpenAI spans per run")
    args = p.parse_args(argv)
    if args.count_child:
        variant, lines_file, info = args.count_child
        _count_child(variant, Path(lines_file), Path(info))
        return 0
    if args.instructions:
        return _instructions(args.lines)
    if args.chat_only:
        return _chat_only(args)
    c.install_loopback_guard()
    repeats = c.repeats(args)
    n_spans = 500 if args.smoke else 10_000
    live_spans = 1000 if args.smoke else 20_000
    report = c.Report("export", "X. OTLP export: worker CPU per span, live and backfill spans/s", args)

    reference = [reference_us()]
    report.progress("recording ChatOpenAI rounds on the loopback stub")
    workloads = {
        "ChatOpenAI (tool round trip, streamed answer)": _chat_lines(4 if args.smoke else 20, n_spans)
    }
    workloads["chain runs (start, end)"] = _chain_lines(n_spans)
    encoders: dict[str, Callable[[list[Any]], Any]] = {"hand-written": _hand_written}
    rows = []
    worst_worker_us = 0.0
    for name, lines in workloads.items():
        results: dict[str, list[float]] = {}
        for _ in range(repeats):
            for encoder, request in encoders.items():
                results.setdefault(encoder, []).append(_encode_us(lines, request)[0])
        _, spans, size = _encode_us(lines, _hand_written)
        hand = c.median(results["hand-written"])
        worst_worker_us = max(worst_worker_us, hand)
        rows.append([name, spans, len(lines) / spans, hand, size / spans])
    report.table(
        f"Worker CPU per span: assemble, encode, gzip (median of {repeats})",
        [
            "lines",
            "spans",
            "lines per span",
            "hand-written µs/span",
            "gzip bytes/span",
        ],
        rows,
    )

    chat_calls = _record_chat_calls(4 if args.smoke else 20)
    chat_spans_per_copy = len({kwargs["run_id"] for _, _, kwargs in chat_calls})
    chat_copies = _copies(chat_calls, max(1, (300 if args.smoke else 6000) // chat_spans_per_copy))
    chat_spans = chat_spans_per_copy * len(chat_copies)
    backfills: list[float] = []
    with tempfile.TemporaryDirectory(prefix="asynctrack-export-") as tmp, c.StubHTTPProcess() as receiver:
        live = _live(receiver.url, tmp, _chain_runs(live_spans), live_spans, repeats, report)
        for run in live["on"]:
            seconds, status = _backfill_once(run["destination"], receiver.url)
            assert status == 0
            backfills.append(live_spans / seconds)
        reference.append(reference_us())
        chat = _live(receiver.url, tmp, _chat_runs(chat_copies), chat_spans, repeats, report)
        reference.append(reference_us())
    rows, chain_figures = _live_rows(live, live_spans)
    chat_rows, chat_figures = _live_rows(chat, chat_spans)
    backfill = c.median(backfills)
    headers = LIVE_HEADERS
    report.table(
        f"Live, worker process, {live_spans:,} chain runs (2 events each), median of {repeats} interleaved",
        headers,
        rows,
    )
    report.table(
        f"Live, worker process, {chat_spans:,} ChatOpenAI runs (callbacks of real calls replayed, "
        f"{sum(map(len, chat_copies)) / chat_spans:.1f} events each), median of {repeats} interleaved",
        headers,
        chat_rows,
    )
    report.table("Backfill (asynctrack export of the live chain runs' files)", ["spans/s"], [[backfill]])
    worker_us = max(chain_figures["worker_us"], chat_figures["worker_us"])
    rate_on = min(chain_figures["rate"], chat_figures["rate"])
    for name, figures in (("chain runs", chain_figures), ("ChatOpenAI runs", chat_figures)):
        report.goal(
            f"application CPU per event, exporter on minus off ({name})",
            figures["app_us"],
            APP_GOAL_US,
            unit=" µs",
        )
        report.goal(
            f"worker CPU per exported span, worker process, on minus off ({name})",
            figures["worker_us"],
            WORKER_GOAL_US,
            unit=" µs",
        )
        report.goal(
            f"live export, spans/s, first event to close() ({name})",
            figures["rate"],
            RATE_GOAL,
            lower_is_better=False,
        )
    report.goal(
        "worker CPU per span, assembly and encoding alone (worst workload)",
        worst_worker_us,
        WORKER_GOAL_US,
        unit=" µs",
    )
    report.goal("backfill from local files, spans/s", backfill, RATE_GOAL, lower_is_better=False)
    slowdown = report.machine_speed(reference)
    report.goal_at_quiet_speed(
        "worker CPU per exported span (worker process, on minus off, worst workload)",
        worker_us,
        WORKER_GOAL_US,
        slowdown,
        unit=" µs",
    )
    report.goal_at_quiet_speed(
        "worker CPU per span, assembly and encoding alone (worst workload)",
        worst_worker_us,
        WORKER_GOAL_US,
        slowdown,
        unit=" µs",
    )
    report.goal_at_quiet_speed(
        "live export, spans/s (worst workload)", rate_on, RATE_GOAL, slowdown, rate=True
    )
    report.goal_at_quiet_speed("backfill from local files, spans/s", backfill, RATE_GOAL, slowdown, rate=True)
    report.note(
        "The wall-clock rates count every process on the machine: the live rate includes the application "
        "recording the events, the worker writing the files, and the loopback receiver reading the requests (in a process of its "
        "own, so that its CPU is not counted as the application's)."
    )
    report.metric("worker_us_per_span", max(chain_figures["worker_us"], 1e-9))
    report.metric("live_spans_per_s", chain_figures["rate"])
    report.metric("chat_worker_us_per_span", max(chat_figures["worker_us"], 1e-9))
    report.metric("chat_live_spans_per_s", chat_figures["rate"])
    report.metric("backfill_spans_per_s", backfill)
    report.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
