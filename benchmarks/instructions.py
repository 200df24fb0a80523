"""I. Instructions per event of the capture alone, over the no-op floor (callgrind).

    python -m benchmarks.instructions [--workloads sync,agent,tokens] [--calls N]

Wall-clock µs swing by ±15 between runs on a shared 2-core machine; instruction counts
do not. Each measurement runs ``valgrind --tool=callgrind`` on a child process that
drives a workload through a handler ``calls`` times after a warm-up, with
instrumentation switched on (``callgrind_control -i on``) only around those calls: the
count is theirs, without the start-up and imports. Handlers: the no-op inline floor and
asynctrack's capture alone (the tracker is closed first, so no shipper or worker thread
runs, and its records go to a bounded deque, as in ``benchmarks.overhead``'s
capture-only variant). ``PYTHONHASHSEED=0`` keeps the counts reproducible run to run.
``tokens``: the streamed tokens of a real ``ChatOpenAI`` call (langchain-openai against
the loopback stub, ``tests/_infra/openai_stub.py``), recorded before the count starts and
replayed straight into the handler's ``on_llm_new_token`` (the floor: the no-op
handler's), one call being the answer's tokens.
Run it from the old tree too (``PYTHONPATH``) for a before/after pair.

``--child VARIANT WORKLOAD CALLS`` runs one driver directly (no valgrind).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ._common import ROOT

WARMUP = 50  # calls before the measured ones: caches filled, first-call paths taken
_CONTROL = "ASYNCTRACK_CALLGRIND"  # set in the child run under valgrind


def _instrument(on: bool) -> None:
    if os.environ.get(_CONTROL):
        command = ["callgrind_control", "-i", "on" if on else "off", str(os.getpid())]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def _measured(chain: Any, handler: Any, calls: int) -> None:
    from ._workloads import run_sync

    run_sync(chain, [handler], WARMUP)
    _instrument(True)
    run_sync(chain, [handler], calls)
    _instrument(False)


def _token_calls() -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """The ``on_llm_new_token`` callbacks of one streamed ``ChatOpenAI`` answer."""
    tests_dir = str(ROOT / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    from _infra.openai_stub import record_calls

    calls = record_calls(1, vary=True)
    return [call for call in calls if call[0] == "on_llm_new_token"]


class _Replay:
    """A "chain" whose ``invoke`` replays recorded callbacks into the handler given."""

    def __init__(self) -> None:
        self.calls = _token_calls()

    def invoke(self, _input: Any, config: dict[str, Any] | None = None) -> None:
        handlers = (config or {}).get("callbacks") or ()
        for handler in handlers:
            for method, args, kwargs in self.calls:
                getattr(handler, method)(*args, **kwargs)


def child(variant: str, workload: str, calls: int) -> None:
    from ._workloads import INPUT, WORKLOADS, NoOpHandler

    chain: Any = _Replay() if workload == "tokens" else WORKLOADS[workload].build()
    handler: Any
    if variant == "floor":
        handler = NoOpHandler()
        _measured(chain, handler, calls)
        return
    from asynctrack import AsyncTracker

    from ._variants import capture_only

    with tempfile.TemporaryDirectory(prefix="asynctrack-instr-") as tmp:
        handler = AsyncTracker(tmp, experiment_name="instr", run_name=workload)
        handler.close()  # no thread may wake while the calls run: only the capture counts
        kept = capture_only(handler)
        _measured(chain, handler, calls)
        assert kept, "nothing captured"
        chain.invoke(INPUT)


def _instructions(variant: str, workload: str, calls: int, out_dir: Path) -> int:
    out = out_dir / f"callgrind.{variant}.{workload}.{calls}"
    env = dict(os.environ, PYTHONHASHSEED="0", ASYNCTRACK_WORKER="thread", **{_CONTROL: "1"})
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "benchmarks.instructions",
            "--child",
            variant,
            workload,
            str(calls),
        ],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    match = re.search(rb"^totals: (\d+)", out.read_bytes(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no summary in {out}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="sync,agent,tokens")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--keep", help="keep the callgrind files in this directory")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "WORKLOAD", "CALLS"))
    args = parser.parse_args()
    if args.child:
        variant, workload, calls = args.child
        child(variant, workload, int(calls))
        return
    from ._workloads import WORKLOADS, count_events

    with tempfile.TemporaryDirectory(prefix="asynctrack-callgrind-") as tmp:
        out_dir = Path(args.keep or tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        print("| workload | events per call | floor | capture alone | over the floor |")
        print("|---|---|---|---|---|")
        for workload in args.workloads.split(","):
            events = len(_token_calls()) if workload == "tokens" else count_events(WORKLOADS[workload])[0]
            per_event = {}
            for variant in ("floor", "capture"):
                count = _instructions(variant, workload, args.calls, out_dir)
                per_event[variant] = count / (args.calls * events)
            over = per_event["capture"] - per_event["floor"]
            print(
                f"| {workload} | {events} | {per_event['floor']:,.0f} | "
                f"{per_event['capture']:,.0f} | {over:,.0f} |"
            )


if __name__ == "__main__":
    main()
