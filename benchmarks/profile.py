"""Profile asynctrack's hot spots with py-spy (``pip install py-spy``), both threads.

    python -m benchmarks.profile [--scenario sync|stream|throughput|large] [--seconds S]

Runs one scenario in a child process under ``py-spy record --format raw --gil``
(samples only the thread holding the GIL: on 2 cores that is what the caller's
latency pays for), then prints, per thread (caller vs ``asynctrack-worker``), the
share of GIL-holding samples spent in each asynctrack function, self and total.
``--no-gil`` samples every thread whether or not it holds the GIL.

Scenarios (``--child`` runs one directly, without py-spy):

- ``sync``: ``prompt | llm`` ``invoke`` with the tracker (6 events per call);
- ``stream``: the 256-token streaming workload (``on_llm_new_token`` with chunks);
- ``throughput``: 10^6 ``on_text`` events of ~300 B then ``flush()``;
- ``large``: 10^5 ``on_text`` events of ~10 KB then ``flush()``.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from . import _common as c

SCENARIOS = ("sync", "stream", "throughput", "large")


def scenario(name: str, seconds: float) -> None:
    from asynctrack import AsyncTracker, TrackerConfig

    from ._workloads import INPUT, WORKLOADS

    with tempfile.TemporaryDirectory(prefix="asynctrack-prof-") as tmp:
        tracker = AsyncTracker(
            tmp,
            experiment_name="prof",
            run_name=name,
            config=TrackerConfig(when_full="block", block_timeout=60),
        )
        try:
            deadline = time.perf_counter() + seconds
            if name in ("sync", "stream"):
                chain = WORKLOADS[name].build()
                config = {"callbacks": [tracker]}
                while time.perf_counter() < deadline:
                    for _ in range(20):
                        if name == "sync":
                            chain.invoke(INPUT, config)
                        else:
                            for _chunk in chain.stream(INPUT, config):
                                pass
            else:
                text = "x" * (17 if name == "throughput" else 10_000)
                n = 1_000_000 if name == "throughput" else 100_000
                run_id = uuid.uuid4()
                for _ in range(n):
                    tracker.on_text(text, run_id=run_id)
            tracker.flush_blocking(timeout=600)
        finally:
            tracker.close()


def summarise(raw: Path, top: int = 25) -> str:
    """Per thread: self and total share of samples for asynctrack frames (and the top others)."""
    per_thread: dict[str, int] = collections.Counter()
    self_counts: dict[tuple[str, str], int] = collections.Counter()
    total_counts: dict[tuple[str, str], int] = collections.Counter()
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        try:
            count = int(count_s)
        except ValueError:
            continue
        frames = stack.split(";")
        thread = "worker" if "asynctrack-worker" in frames[0] or "_thread_main" in stack else "caller"
        per_thread[thread] += count
        leaf = _short(frames[-1])
        self_counts[(thread, leaf)] += count
        for f in {_short(f) for f in frames[1:] if "asynctrack" in f}:
            total_counts[(thread, f)] += count
    grand = sum(per_thread.values()) or 1
    out = [f"samples: {grand} ({', '.join(f'{t} {n / grand:.0%}' for t, n in per_thread.items())})", ""]
    for thread, n in per_thread.items():
        out.append(f"### {thread} thread: {n / grand:.0%} of samples")
        out.append("")
        out.append("| self % of thread | function (leaf) |")
        out.append("|---|---|")
        leaves = sorted(((k, f) for (t, f), k in self_counts.items() if t == thread), reverse=True)[:top]
        out += [f"| {k / n:.1%} | {f} |" for k, f in leaves]
        out.append("")
        out.append("| total % of thread | asynctrack function (inclusive) |")
        out.append("|---|---|")
        rows = sorted(((k, f) for (t, f), k in total_counts.items() if t == thread), reverse=True)[:top]
        out += [f"| {k / n:.1%} | {f} |" for k, f in rows]
        out.append("")
    return "\n".join(out)


def _short(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _lineno = where.rpartition(":")
    base = "/".join(Path(path).parts[-2:]) if path else where
    return f"{name} ({base})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", choices=SCENARIOS, default="sync")
    p.add_argument("--seconds", type=float, default=8.0, help="how long sync/stream run")
    p.add_argument("--child", action="store_true", help="run the scenario here, unprofiled")
    p.add_argument("--no-gil", action="store_true", help="sample all threads, not only the GIL holder")
    p.add_argument("--out", type=Path, default=c.RESULTS)
    args = p.parse_args(argv)
    c.install_loopback_guard()
    if args.child:
        scenario(args.scenario, args.seconds)
        return 0
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(py_spy):
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / f"profile-{args.scenario}.txt"
    cmd = [py_spy, "record", "--format", "raw", "--rate", "250", "--threads", "-o", str(raw)]
    if not args.no_gil:
        cmd.append("--gil")
    cmd += [
        "--",
        sys.executable,
        "-m",
        "benchmarks.profile",
        "--child",
        "--scenario",
        args.scenario,
        "--seconds",
        str(args.seconds),
    ]
    subprocess.run(cmd, cwd=str(c.ROOT), check=True)
    text = summarise(raw)
    (args.out / f"profile-{args.scenario}.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
