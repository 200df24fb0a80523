"""Run every benchmark, each in its own process, then collect the goals.

    python -m benchmarks [--smoke] [--repeats N] [--out DIR] [--no-s3] [--no-peers] [--only a,b]

A full run (not ``--smoke``) also writes every table into ``benchmarks/RESULTS.md``, below its
``LATEST`` marker; the history of measurements above the marker is kept as it is.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from . import _common as c

#: Everything below this line of RESULTS.md is the latest full run, written by ``main``.
LATEST = "<!-- latest full run: `python -m benchmarks` replaces everything below this line -->"

ORDER = [
    "overhead",
    "throughput",
    "flush_latency",
    "loop_lag",
    "memory",
    "worker_process",
    "hostile",
    "real_provider",
    "export",
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run all asynctrack benchmarks")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--repeats", type=int, default=None, help="override every benchmark's default")
    p.add_argument("--out", type=Path, default=c.RESULTS)
    p.add_argument("--no-s3", action="store_true")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument(
        "--only", default=",".join(ORDER), help="comma-separated subset, in this order: " + ",".join(ORDER)
    )
    p.add_argument("--results-md", type=Path, default=None, help="where to write RESULTS.md (full runs)")
    args = p.parse_args(argv)
    names = [n for n in ORDER if n in args.only.split(",")]
    common = ["--out", str(args.out)]
    if args.smoke:
        common.append("--smoke")
    if args.repeats is not None:
        common += ["--repeats", str(args.repeats)]
    if args.no_s3:
        common.append("--no-s3")
    if args.no_peers:
        common.append("--no-peers")
    failed = []
    started = time.perf_counter()
    for name in names:
        print(f"\n===== benchmarks.{name} =====", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *common], cwd=str(c.ROOT))
        print(f"===== benchmarks.{name}: exit {code}, {time.perf_counter() - t0:.0f} s =====", flush=True)
        if code != 0:
            failed.append(name)
    total = time.perf_counter() - started
    goals = []
    sections = []
    for name in names:
        path = args.out / f"{name}.json"
        md = args.out / f"{name}.md"
        if name in failed or not path.exists():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        goals += [(name, g) for g in data["goals"]]
        sections.append(md.read_text(encoding="utf-8"))
    print("\n## All goals\n")
    for name, g in goals:
        print(
            f"- **{g['result']}** [{name}] {g['goal']}: {c.fmt(g['measured'], 2)}{g['unit']}{c.spread_text(g)}"
        )
    print(f"\nall benchmarks: {total:.0f} s" + (f"; FAILED: {failed}" if failed else ""))
    if not args.smoke and not failed:
        target = args.results_md or (c.HERE / "RESULTS.md")
        target.write_text(_history(target) + _results_md(sections, goals, total, args), encoding="utf-8")
        print(f"wrote {target}")
    return 1 if failed else 0


def _history(target: Path) -> str:
    """What ``target`` holds above the ``LATEST`` marker (the history), and the marker."""
    text = target.read_text(encoding="utf-8") if target.exists() else "# asynctrack benchmark results\n\n"
    head, marker, _ = text.partition(LATEST)
    if not marker:  # no marker yet: everything there is history
        head = text.rstrip("\n") + "\n\n"
    return head + LATEST + "\n\n"


def _results_md(
    sections: list[str], goals: list[tuple[str, dict]], total: float, args: argparse.Namespace
) -> str:
    m = c.machine()
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    head = [
        "## The latest full run",
        "",
        f"- date: {m['date']}",
        f"- machine: {m['nproc']} cores (nproc), {m['platform']}",
        f"- Python {m['python']} ({m['implementation']}); asynctrack tree {m['git']}",
        f"- packages (main venv): {versions}",
        f"- command: `.venv/bin/python -m benchmarks{' --repeats ' + str(args.repeats) if args.repeats else ''}`"
        f" ({total / 60:.1f} min)",
        "- numbers are medians over interleaved repeats on a noisy 2-core VM: read ratios, not absolute times.",
        "",
        "## Goals",
        "",
    ]
    head += [
        f"- **{g['result']}** [{name}] {g['goal']}: {c.fmt(g['measured'], 2)}{g['unit']}{c.spread_text(g)}"
        for name, g in goals
    ]
    head.append("")
    return "\n".join(head) + "\n" + "\n".join(sections)


if __name__ == "__main__":
    sys.exit(main())
