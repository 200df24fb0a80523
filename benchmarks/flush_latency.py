"""C. Flush latency: how long ``flush()`` takes with 10^3 .. 10^6 events pending.

Events (~300 B, ``on_text``) are recorded as fast as one thread can, with
``batch_interval`` = 1 h so that nothing is written for age, then ``flush()`` is
timed. Two configurations:

- ``all pending``: one open batch (``max_batch_events`` and ``max_batch_bytes``
  above N), so nothing can reach storage before the flush: the flush seals and
  writes everything (worst case);
- ``default batches``: default size limits (10 000 events / 8 MiB), so full batches
  are already being written while recording; the flush waits for the rest.

The table also shows how many events were still pending (recorded − written) and
waiting unencoded in the buffer when ``flush()`` was called.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from typing import Any

from . import _common as c

SIZES_FULL = [1_000, 10_000, 100_000, 1_000_000]
SIZES_SMOKE = [100, 1_000]
TEXT = "x" * 17  # ~300 B lines
GiB = 1 << 30


def _config(n: int, mode: str) -> Any:
    from asynctrack import TrackerConfig

    common = {"batch_interval": 3600.0, "max_queue_events": max(2 * n, 100_000), "max_queue_bytes": 2 * GiB}
    if mode == "all pending":
        return TrackerConfig(max_batch_events=2 * n + 10, max_batch_bytes=2 * GiB, **common)
    return TrackerConfig(**common)


def measure(destination: str, n: int, mode: str, tag: str, **s3: Any) -> dict[str, Any]:
    from asynctrack import AsyncTracker

    tracker = AsyncTracker(destination, experiment_name="bench", run_name=tag, config=_config(n, mode), **s3)
    try:
        on_text = tracker.on_text
        run_id = uuid.uuid4()
        c.settle()
        t0 = time.perf_counter()
        for _ in range(n):
            on_text(TEXT, run_id=run_id)
        t1 = time.perf_counter()
        before = tracker.statistics()
        t2 = time.perf_counter()
        tracker.flush_blocking(timeout=900)
        t3 = time.perf_counter()
        after = tracker.statistics()
    finally:
        tracker.close()
    return {
        "events": n,
        "record_s": t1 - t0,
        "flush_s": t3 - t2,
        "pending_at_flush": before.recorded - before.written,
        "queued_at_flush": before.queue_depth,
        "written": after.written,
        "dropped": after.dropped,
        "batches": after.batches,
    }


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__.splitlines()[0], default_repeats=3)
    args = p.parse_args(argv)
    c.install_loopback_guard()
    repeats = c.repeats(args)
    report = c.Report("flush_latency", "C. Flush latency with N pending events", args)
    sizes = SIZES_SMOKE if args.smoke else SIZES_FULL
    s3_problem = "--no-s3" if args.no_s3 else c.s3_sink_problem()
    if s3_problem:
        report.note(f"S3 variants skipped: {s3_problem}")
    results: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="asynctrack-flush-") as tmp,
        _moto(report, s3_problem) as moto_url,
    ):
        targets = [("local", tmp, {})]
        if moto_url:
            targets.append(
                ("s3", "s3://asynctrack-bench/flush", {"endpoint_url": moto_url, "region_name": "us-east-1"})
            )
        for r in range(repeats):
            for n in sizes:
                for mode in ("all pending", "default batches"):
                    for where, dest, kw in targets:
                        tag = f"{where}-{n}-{mode.replace(' ', '-')}-{r}"
                        report.progress(f"repeat {r + 1}/{repeats}: {where} {mode} {n:,}")
                        res = measure(dest, n, mode, tag, **kw)
                        results.setdefault((where, mode, n), []).append(res)
                        if res["written"] != n or res["dropped"]:
                            report.note(
                                f"{tag}: written {res['written']:,} of {n:,}, dropped {res['dropped']:,}"
                            )
    rows, summary = [], []
    for (where, mode, n), runs in sorted(results.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        row = {
            "destination": where,
            "mode": mode,
            "events": n,
            "flush_s": c.median([x["flush_s"] for x in runs]),
            "record_s": c.median([x["record_s"] for x in runs]),
            "pending_at_flush": int(c.median([x["pending_at_flush"] for x in runs])),
            "queued_at_flush": int(c.median([x["queued_at_flush"] for x in runs])),
            "batches": int(c.median([x["batches"] for x in runs])),
        }
        row["flush_us_per_pending_event"] = row["flush_s"] / max(row["pending_at_flush"], 1) * 1e6
        summary.append(row)
        rows.append(
            [
                where,
                mode,
                n,
                row["pending_at_flush"],
                row["queued_at_flush"],
                row["record_s"] * 1e3,
                row["flush_s"] * 1e3,
                row["flush_us_per_pending_event"],
                row["batches"],
            ]
        )
        report.metric(f"{where}.{mode}.{n}.flush_ms", row["flush_s"] * 1e3)
    report.table(
        f"flush() latency; median of {repeats}; batch_interval = 1 h",
        [
            "destination",
            "batching",
            "events recorded",
            "pending at flush()",
            "unencoded at flush()",
            "record ms",
            "flush ms",
            "µs per pending event",
            "batches",
        ],
        rows,
    )
    if any(row["pending_at_flush"] > row["events"] for row in summary):
        report.note(
            "'pending at flush()' above the events recorded: statistics() reads its counters without locks, "
            "and recorded = taken + queued can count a record the worker takes at that instant twice"
        )
    goal_n = 100_000 if not args.smoke else max(sizes)
    for row in summary:
        if row["destination"] == "local" and row["events"] == goal_n:
            report.goal(
                f"local, {row['mode']}: flush of {goal_n:,} pending ≤ 1 s", row["flush_s"], 1.0, unit=" s"
            )
    report.data["summary"] = summary
    report.data["raw"] = {f"{k[0]}|{k[1]}|{k[2]}": v for k, v in results.items()}
    report.finish(chart=lambda plt: _chart(plt, summary))
    return 0


_moto = c.OptionalMoto


def _chart(plt: Any, summary: list[dict[str, Any]]) -> None:
    _fig, ax = plt.subplots(figsize=(8, 4.5))
    series: dict[str, list[tuple[int, float]]] = {}
    for row in summary:
        series.setdefault(f"{row['destination']}, {row['mode']}", []).append((row["events"], row["flush_s"]))
    for label, pts in series.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("events recorded before flush()")
    ax.set_ylabel("flush() seconds")
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_title("C. Flush latency")
    ax.legend(fontsize=8)


if __name__ == "__main__":
    sys.exit(main())
