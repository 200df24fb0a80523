"""B. Throughput: events per second from the first record until ``flush()`` returns (durable).

Events are recorded by calling the handler's ``on_text`` directly (one thread, as
fast as it goes: the callback path + LangChain-free), with ``when_full="block"`` so
the producer is held back instead of dropping when the worker falls behind: the
figure is then the sustained rate the worker reaches, on 2 cores shared by the
producer and the worker (and moto, for S3). Local files are fsync'd; S3 objects are
acknowledged by moto in a child process.

``asynctrack-local`` and ``-s3`` use the default worker process; ``asynctrack-local-thread``
keeps the worker in this interpreter (``worker="thread"``).

Also ``engine-local``: the ``Engine`` fed pre-built event dicts (no LangChain adapter,
identity translate) into a local directory. A dict is encoded by the careful encoder, a
Python walk of every key and value (~25 µs an event here), which the handler's records
(captured as JSON bytes in the callback) never take: the row is that path's cost, not the
engine's share of ``asynctrack-local``.

Sizes: 10^5 and 10^6 events of ~300 B; ~10 KB events are capped at 10^5 locally
(1 GB) and 2·10^4 to S3 (200 MB): 10^6 × 10 KB = 10 GB is too much for this machine.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from typing import Any

from . import _common as c
from ._reference import reference_us

BASE_LINE = 283  # bytes of an ``on_text`` event line with a 1-character text, long seq/ts (measured)
ENGINE_BASE_LINE = 102  # same for the bare dict records of ``engine-local``
SMALL, LARGE = 300, 10 * 1024

# (variant, events, target line bytes); full and smoke.
FULL = [
    ("asynctrack-local", 100_000, SMALL),
    ("asynctrack-local", 1_000_000, SMALL),
    ("asynctrack-local", 100_000, LARGE),
    ("asynctrack-local-thread", 1_000_000, SMALL),
    ("engine-local", 1_000_000, SMALL),
    ("asynctrack-s3", 100_000, SMALL),
    ("asynctrack-s3", 1_000_000, SMALL),
    ("asynctrack-s3", 20_000, LARGE),
]
SMOKE = [
    ("asynctrack-local", 2_000, SMALL),
    ("asynctrack-local-thread", 2_000, SMALL),
    ("asynctrack-local", 200, LARGE),
    ("engine-local", 2_000, SMALL),
    ("asynctrack-s3", 2_000, SMALL),
]

RUN_IDS = [uuid.uuid4() for _ in range(1024)]
_WORDS = [
    "the",
    "agent",
    "called",
    "a",
    "tool",
    "and",
    "the",
    "chain",
    "returned",
    "an",
    "answer",
    "about",
    "weather",
    "prices",
    "and",
    "maps",
]


def payload(size: int) -> str:
    """Text of ``size`` characters: words and spaces, like LLM output.

    (One 10 KB run of letters, such as base64, makes the redaction pre-check hit and
    every value pattern run: about 2× slower to encode; not what most events hold.)
    """
    import random

    rnd = random.Random(size)
    out: list[str] = []
    total = 0
    while total < size:
        w = rnd.choice(_WORDS)
        out.append(w)
        total += len(w) + 1
    return " ".join(out)[:size]


def _config(worker: str | None = None) -> Any:
    from asynctrack import TrackerConfig

    return TrackerConfig(when_full="block", block_timeout=120.0, worker=worker)  # type: ignore[arg-type]


def run_handler(
    destination: str, n: int, size: int, tag: str, worker: str | None = None, **s3: Any
) -> dict[str, Any]:
    from asynctrack import AsyncTracker

    text = payload(max(size - BASE_LINE, 1))
    tracker = AsyncTracker(destination, experiment_name="bench", run_name=tag, config=_config(worker), **s3)
    try:
        on_text = tracker.on_text
        ids = RUN_IDS
        m = len(ids)
        c.settle()
        t0 = time.perf_counter()
        for i in range(n):
            on_text(text, run_id=ids[i % m])
        t1 = time.perf_counter()
        tracker.flush_blocking(timeout=900)
        t2 = time.perf_counter()
        stats = tracker.statistics()
    finally:
        tracker.close()
    return _result(n, t0, t1, t2, stats)


def run_engine(directory: str, n: int, size: int, tag: str) -> dict[str, Any]:
    from asynctrack._layout import Layout, new_writer_id
    from asynctrack._pipeline._engine import Engine
    from asynctrack._sinks._local import LocalSink

    text = payload(max(size - ENGINE_BASE_LINE, 1))
    engine = Engine(
        sink=LocalSink(directory),
        layout=Layout(experiment="bench", run=tag, writer=new_writer_id()),
        translate=_identity,
        config=_config(),
    )
    try:
        put = engine.put
        run_id = str(RUN_IDS[0])
        c.settle()
        t0 = time.perf_counter()
        for i in range(n):
            put({"seq": i, "ts": 0.0, "kind": "text", "run_id": run_id, "data": {"text": text}})
        t1 = time.perf_counter()
        engine.flush_blocking(timeout=900)
        t2 = time.perf_counter()
        stats = engine.statistics()
    finally:
        engine.close()
    return _result(n, t0, t1, t2, stats)


def _identity(record: Any) -> Any:
    return record


def _result(n: int, t0: float, t1: float, t2: float, stats: Any) -> dict[str, Any]:
    return {
        "events": n,
        "record_s": t1 - t0,
        "flush_s": t2 - t1,
        "total_s": t2 - t0,
        "written": stats.written,
        "dropped": stats.dropped,
        "batches": stats.batches,
        "bytes": stats.bytes,
    }


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__.splitlines()[0], default_repeats=3)
    args = p.parse_args(argv)
    c.install_loopback_guard()
    repeats = c.repeats(args)
    report = c.Report("throughput", "B. Throughput to durable storage", args)
    reference = [reference_us()]
    cases = SMOKE if args.smoke else FULL
    report.note(
        "10^6 × 10 KB (10 GB) is not run: ~10 KB events are capped at 10^5 locally and 2·10^4 to S3 "
        "(2-core machine; moto keeps objects in memory)"
    )
    s3_problem = "--no-s3" if args.no_s3 else c.s3_sink_problem()
    results: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="asynctrack-tput-") as tmp, _moto(report, s3_problem) as moto_url:
        if s3_problem or moto_url is None:
            if s3_problem:
                report.note(f"S3 variants skipped: {s3_problem}")
            cases = [case for case in cases if case[0] != "asynctrack-s3"]
        for r in range(repeats):
            for k, (variant, n, size) in enumerate(cases):
                tag = f"{variant}-{n}-{size}-{r}-{k}"
                report.progress(f"repeat {r + 1}/{repeats}: {variant} {n:,} × {size} B")
                if variant == "asynctrack-local":
                    res = run_handler(f"{tmp}/h", n, size, tag)
                elif variant == "asynctrack-local-thread":
                    res = run_handler(f"{tmp}/h", n, size, tag, worker="thread")
                elif variant == "engine-local":
                    res = run_engine(f"{tmp}/e", n, size, tag)
                else:
                    res = run_handler(
                        "s3://asynctrack-bench/throughput",
                        n,
                        size,
                        tag,
                        endpoint_url=moto_url,
                        region_name="us-east-1",
                    )
                results.setdefault((variant, n, size), []).append(res)
                if res["written"] != n or res["dropped"]:
                    report.note(f"{tag}: written {res['written']:,} of {n:,}, dropped {res['dropped']:,}")
    rows = []
    summary = []
    for (variant, n, size), runs in results.items():
        eps = c.median([x["events"] / x["total_s"] for x in runs])
        mbps = c.median([x["bytes"] / x["total_s"] / 1e6 for x in runs])
        row = {
            "variant": variant,
            "events": n,
            "target_bytes": size,
            "bytes_per_event": c.median([x["bytes"] / max(x["written"], 1) for x in runs]),
            "events_per_s": eps,
            "mb_per_s": mbps,
            "record_s": c.median([x["record_s"] for x in runs]),
            "flush_s": c.median([x["flush_s"] for x in runs]),
            "total_s": c.median([x["total_s"] for x in runs]),
            "batches": int(c.median([x["batches"] for x in runs])),
            "written_all": all(x["written"] == n and x["dropped"] == 0 for x in runs),
        }
        summary.append(row)
        rows.append(
            [
                variant,
                n,
                row["bytes_per_event"],
                eps,
                mbps,
                row["batches"],
                row["record_s"],
                row["flush_s"],
                row["total_s"],
                row["written_all"],
            ]
        )
        report.metric(f"{variant}.{n}.{size}.events_per_s", eps)
        report.metric(f"{variant}.{n}.{size}.mb_per_s", mbps)
    report.table(
        f"events/s from first record until flush() returns; median of {repeats}; when_full='block', defaults otherwise",
        [
            "variant",
            "events",
            "B/event",
            "events/s",
            "MB/s",
            "batches",
            "record phase s",
            "flush s",
            "total s",
            "all written, 0 dropped",
        ],
        rows,
    )
    reference.append(reference_us())
    # The processes involved are CPU-bound (loopback, moto in memory; the local disk's
    # fsyncs aside): the rate scales with the machine's speed, read again at a quiet one's.
    slowdown = report.machine_speed(reference)
    goals = {"asynctrack-local": ("local", 200_000), "asynctrack-s3": ("S3 (moto)", 50_000)}
    for row in summary:
        if row["target_bytes"] != SMALL or row["variant"] not in goals:
            continue
        where, target = goals[row["variant"]]
        text = f"{where}, {row['events']:,} × ~300 B: ≥ {target // 1000}k events/s"
        report.goal(text, row["events_per_s"], target, lower_is_better=False, unit=" ev/s")
        report.goal_at_quiet_speed(text, row["events_per_s"], target, slowdown, rate=True, unit=" ev/s")
    report.data["summary"] = summary
    report.data["raw"] = {f"{k[0]}|{k[1]}|{k[2]}": v for k, v in results.items()}
    report.finish(chart=lambda plt: _chart(plt, summary))
    return 0


_moto = c.OptionalMoto


def _chart(plt: Any, summary: list[dict[str, Any]]) -> None:
    _fig, ax = plt.subplots(figsize=(10, 4.5))
    labels = [f"{r['variant']}\n{r['events']:,}×{r['target_bytes']}B" for r in summary]
    ax.bar(range(len(summary)), [r["events_per_s"] for r in summary], color="tab:blue")
    ax.set_xticks(range(len(summary)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("events/s (record → durable)")
    ax.axhline(200_000, color="green", linestyle=":", linewidth=1, label="goal local 200k/s")
    ax.axhline(50_000, color="orange", linestyle=":", linewidth=1, label="goal S3 50k/s")
    ax.set_title("B. Throughput")
    ax.legend(fontsize=8)


if __name__ == "__main__":
    sys.exit(main())
