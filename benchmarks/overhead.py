"""A. Callback overhead: what a handler adds to each LangChain call, vs no handler and the floor.

Variants (each a fresh handler per measurement, closed at its end):

- ``none``: no callbacks; ``floor``: a no-op inline ``BaseCallbackHandler`` (every
  ``on_*`` is ``pass``): what LangChain itself costs once any handler is attached;
- ``asynctrack-local`` / ``asynctrack-s3`` (moto in a child process);
- ``asynctrack-capture``: the hot path alone (records appended to a deque nothing
  ships): the lower bound of any placement of the worker;
- ``langsmith`` (``LangChainTracer`` + ``langsmith.Client``) and ``langfuse``
  (``CallbackHandler``), both against a loopback stub HTTP server;
- ``sagemaker-legacy``: langchain-community's ``SageMakerCallbackHandler`` with a
  SageMaker v2 ``Run`` against moto, in the legacy venv (``_legacy_worker``), with
  its own ``none`` baseline measured in the same round.

Variants run round-robin (the order rotates every repeat) inside each workload, and
each figure is the median over repeats of the per-repeat values (deltas are paired
per repeat). "Total" is handler construction + the calls + the final flush/close.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from . import _common as c
from ._workloads import OPENAI_STUB, WORKLOADS, Workload, count_events, run_async, run_stream, run_sync

# Calls per measurement: full, smoke. async workloads run in rounds of their concurrency.
CALLS = {
    "sync": (400, 5),
    "async64": (256, 64),
    "async1024": (1024, 0),  # 0: skipped in smoke mode (1024 calls per variant is not "a few seconds")
    "stream": (40, 2),
    "agent": (100, 3),
    "openai": (40, 2),
}
# The legacy SageMaker handler uploads one S3 object per event (~15 ms each on moto):
# far fewer calls, against its own baseline with the same counts. None: not run.
LEGACY_CALLS: dict[str, tuple[int | None, int | None]] = {
    "sync": (30, 2),
    "async64": (64, None),
    "async1024": (None, None),
    "stream": (1, None),
    "agent": (5, None),
    "openai": (None, None),
}

LOCAL = "asynctrack-local"
CAPTURE = "asynctrack-capture"
#: Issue 19's goals, µs per event: the application's CPU beyond the capture alone's (every
#: workload), the capture's over the floor (in ``CAPTURE_GOAL_WORKLOADS``), and the worker
#: process's CPU with events trickling (``openai``).
BEYOND_CAPTURE_GOAL_US = 1.0
CAPTURE_GOAL_US = 3.0
CAPTURE_GOAL_WORKLOADS = ("sync", "agent")
WORKER_GOAL_US = 20.0


def _worker_threads() -> dict[int, int]:
    """Nanoseconds each live thread of this process's asynctrack worker process has run
    (``/proc/<pid>/task/*/schedstat``), or nothing without one.

    Not ``/proc/<pid>/stat``: it counts in 10 ms ticks, 6.6 µs per event over the
    ``openai`` workload's 1,520 events, more than the differences to measure.
    """
    try:
        from asynctrack._remote._spawn import worker_process

        pid = worker_process().pid
    except ImportError:
        return {}
    if pid is None:
        return {}
    ran = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                ran[int(task)] = int(stat.read().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended meanwhile
    return ran


def _worker_cpu(before: dict[int, int]) -> float:
    """CPU seconds the worker process's threads ran since ``before`` (``_worker_threads()``).

    A thread that ended meanwhile is left out: the worker's flush and close threads, which
    mostly wait.
    """
    after = _worker_threads()
    return sum(ran - before.get(task, 0) for task, ran in after.items()) / 1e9


def _own_threads() -> dict[int, int]:
    """Nanoseconds each live asynctrack thread of this process has run (the shipper and
    the reader; in thread mode the engine's worker), ``/proc/self/task/*/schedstat``."""
    ran = {}
    for thread in threading.enumerate():
        if not thread.name.startswith("asynctrack") or thread.native_id is None:
            continue
        try:
            with open(f"/proc/self/task/{thread.native_id}/schedstat") as stat:
                ran[thread.native_id] = int(stat.read().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended meanwhile
    return ran


def _shipper_rounds() -> int:
    """Rounds the worker process's shipper thread has run (0 without one)."""
    try:
        from asynctrack._remote._spawn import worker_process

        return worker_process()._shipper.rounds
    except (ImportError, AttributeError):
        return 0


def _window() -> tuple[dict[int, int], int]:
    return _own_threads(), _shipper_rounds()


def _window_end(start: tuple[dict[int, int], int]) -> dict[str, Any]:
    """What the application's own asynctrack threads ran since ``start`` (``_window()``):
    their CPU seconds (threads that ended meanwhile left out) and the shipper's rounds."""
    threads, rounds = start
    after = _own_threads()
    own = sum(ran - threads.get(task, 0) for task, ran in after.items()) / 1e9
    return {"own_threads_cpu_s": own, "shipper_rounds": _shipper_rounds() - rounds}


def _measure(variant: Any, workload: Workload, chain: Any, calls: int, tag: str) -> dict[str, Any]:
    """One measurement: wall time of setup, calls and final flush/close, and the CPU the
    calls and the close took in this process and in the worker process (if any)."""
    c.settle()
    if workload.kind == "async":

        async def go() -> dict[str, Any]:
            t0 = time.perf_counter()
            state = variant.open(tag)
            callbacks = variant.callbacks(state)
            t1 = time.perf_counter()
            wcpu0 = _worker_threads()  # read outside the window of this process's CPU
            own0 = _window()
            cpu0 = time.process_time()
            calls_s = await run_async(chain, callbacks, calls, workload.concurrency)
            t2 = time.perf_counter()
            extra = await variant.aclose(state)
            t3 = time.perf_counter()
            cpu = {
                "app_cpu_s": time.process_time() - cpu0,
                **_window_end(own0),
                "worker_cpu_s": _worker_cpu(wcpu0),
            }
            return {"setup_s": t1 - t0, "calls_s": calls_s, "final_s": t3 - t2, **cpu, **extra}

        return asyncio.run(go())
    t0 = time.perf_counter()
    state = variant.open(tag)
    callbacks = variant.callbacks(state)
    t1 = time.perf_counter()
    wcpu0 = _worker_threads()  # read outside the window of this process's CPU
    own0 = _window()
    cpu0 = time.process_time()
    runner = run_stream if workload.kind == "stream" else run_sync
    calls_s = runner(chain, callbacks, calls)
    t2 = time.perf_counter()
    extra = variant.close(state)
    t3 = time.perf_counter()
    cpu = {"app_cpu_s": time.process_time() - cpu0, **_window_end(own0), "worker_cpu_s": _worker_cpu(wcpu0)}
    return {"setup_s": t1 - t0, "calls_s": calls_s, "final_s": t3 - t2, **cpu, **extra}


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset")
    args = p.parse_args(argv)
    c.install_loopback_guard()
    c.quiet_peer_env()
    repeats = c.repeats(args)
    report = c.Report("overhead", "A. Callback overhead per LangChain call", args)
    idx = 1 if args.smoke else 0
    workloads = [WORKLOADS[w] for w in args.workloads.split(",") if w]
    skipped_wl = [w.name for w in workloads if CALLS[w.name][idx] == 0]
    if skipped_wl:
        report.note(f"smoke mode: workloads {skipped_wl} skipped")
    workloads = [w for w in workloads if CALLS[w.name][idx] > 0]

    from ._variants import (
        AsyncTrackCaptureOnly,
        AsyncTrackLocal,
        AsyncTrackS3,
        AsyncTrackThread,
        Floor,
        Langfuse,
        LangSmith,
        NoHandler,
        SageMakerLegacy,
    )

    openai_stub = contextlib.ExitStack()
    if any(w.name == "openai" for w in workloads):
        problem = _openai_problem()
        if problem:
            report.note(f"workload `openai` skipped: {problem}")
            workloads = [w for w in workloads if w.name != "openai"]
        else:
            from _infra.openai_stub import OpenAIStubProcess

            # In a process of its own: its serving is not this process's (the application's) CPU.
            OPENAI_STUB["url"] = openai_stub.enter_context(OpenAIStubProcess()).url
    stub = c.StubHTTPProcess()
    with openai_stub, stub, _maybe_moto(report, args) as moto_url:
        import os

        for name in ("LANGSMITH_ENDPOINT", "LANGCHAIN_ENDPOINT", "LANGFUSE_HOST", "LANGFUSE_BASE_URL"):
            os.environ[name] = stub.url
        s3_problem = "--no-s3" if args.no_s3 else c.s3_sink_problem()
        candidates: list[Any] = [
            NoHandler(),
            Floor(),
            AsyncTrackLocal(),
            AsyncTrackCaptureOnly(),
            AsyncTrackThread(),
            AsyncTrackS3(moto_url, s3_problem),
        ]
        if args.no_peers:
            report.note("--no-peers: LangSmith, Langfuse and SageMaker variants skipped")
        else:
            candidates += [LangSmith(stub.url), Langfuse(stub.url), SageMakerLegacy(moto_url)]
        variants = []
        for v in candidates:
            problem = v.problem()
            if problem:
                report.note(f"variant `{v.name}` skipped: {problem}")
            else:
                variants.append(v)
        legacy = next((v for v in variants if v.group == "legacy"), None)
        if legacy is not None:
            report.data["legacy"] = legacy.info
            report.note(
                "sagemaker-legacy runs in benchmarks/.venv-legacy "
                f"({', '.join(f'{k} {v}' for k, v in legacy.info.get('versions', {}).items())}); "
                f"its Run() setup took {legacy.info.get('run_setup_s', 0) * 1e3:.0f} ms (not in the totals). "
                "Its 30-artifact limit is lifted and artifact maps emptied per measurement, so the figures "
                "are the steady-state upload per event, not the ValueError path (see _legacy_worker.py)."
            )
        try:
            results = _run(report, args, repeats, workloads, variants, idx)
        finally:
            for v in variants:
                try:
                    v.shutdown()
                except Exception as exc:
                    report.note(f"shutting down {v.name} failed: {exc!r}")
        local = next((v for v in variants if v.name == LOCAL), None)
        if local is not None:
            report.data["asynctrack_local_totals"] = local.totals
            t = local.totals
            report.note(
                f"asynctrack-local across all measurements: recorded {t['recorded']:,}, "
                f"written {t['written']:,}, dropped {t['dropped']:,}"
            )
    report.data["stub_http"] = stub.stats()
    _tables(report, results, workloads, variants, repeats)
    report.finish(chart=lambda plt: _chart(plt, report))
    return 0


def _openai_problem() -> str | None:
    """Why the real-provider workload cannot run here, or ``None`` (its stub is importable)."""
    try:
        import langchain_openai  # noqa: F401
    except ImportError as exc:
        return f"langchain-openai not installed ({exc}); pip install -e '.[bench]'"
    tests_dir = str(c.ROOT / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    return None


class _maybe_moto:
    def __init__(self, report: c.Report, args: Any) -> None:
        self._cm: Any = None
        self.report, self.args = report, args

    def __enter__(self) -> str | None:
        if self.args.no_s3 and self.args.no_peers:
            return None
        self._cm = c.moto_s3(self.report)
        return self._cm.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self._cm is not None:
            self._cm.__exit__(*exc)


def _run(
    report: c.Report, args: Any, repeats: int, workloads: list[Workload], variants: list[Any], idx: int
) -> dict[str, Any]:
    results: dict[str, Any] = {"events": {}, "calls": {}, "legacy_calls": {}, "runs": defaultdict(list)}
    for w in workloads:
        events, kinds = count_events(w)
        results["events"][w.name] = events
        results["calls"][w.name] = CALLS[w.name][idx]
        results["legacy_calls"][w.name] = LEGACY_CALLS[w.name][idx]
        report.progress(f"{w.name}: {events} events per call {kinds}")
    chains = {w.name: w.build() for w in workloads}

    def one(v: Any, w: Workload, r: int, calls: int) -> None:
        if v.group == "legacy":
            lcalls = results["legacy_calls"][w.name]
            if not lcalls:
                return
            pair = ["none", "sagemaker"] if r % 2 == 0 else ["sagemaker", "none"]
            for which in pair:
                reply = v.call({"op": "measure", "variant": which, "workload": w.name, "calls": lcalls})
                key = v.name if which == "sagemaker" else "none-legacy"
                results["runs"][(w.name, key)].append(reply)
            return
        results["runs"][(w.name, v.name)].append(_measure(v, w, chains[w.name], calls, f"{w.name}-{r}"))

    # Warm-up: every variant once per workload (imports, caches, first connections); not recorded.
    for w in workloads:
        warm = min(results["calls"][w.name], w.concurrency if w.kind == "async" else 2)
        for v in variants:
            if v.group == "legacy":
                continue
            _measure(v, w, chains[w.name], warm, f"warmup-{w.name}")
    # What the run holds from here on (imports, chains, the peers' clients: 160k+ objects)
    # is left out of the collector's full collections, which otherwise walk all of it
    # (70-80 ms each) in whichever measurement triggers one: the handlers' own objects
    # are still collected.
    gc.collect()
    gc.freeze()
    for r in range(repeats):
        t0 = time.perf_counter()
        for w in workloads:
            k = r % len(variants)
            for v in variants[k:] + variants[:k]:
                one(v, w, r, results["calls"][w.name])
        report.progress(f"repeat {r + 1}/{repeats} done in {time.perf_counter() - t0:.1f} s")
    return results


def _tables(
    report: c.Report, results: dict[str, Any], workloads: list[Workload], variants: list[Any], repeats: int
) -> None:
    runs = results["runs"]
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for w in workloads:
        events = results["events"][w.name]
        names = []
        for v in variants:
            if v.group == "legacy":
                if results["legacy_calls"][w.name]:
                    names += ["none-legacy", v.name]
            else:
                names.append(v.name)
        label = {v.name: v.label for v in variants} | {"none-legacy": "no handler (legacy venv baseline)"}

        def per_call(name: str, w: Workload = w) -> list[float]:
            calls = results["legacy_calls" if name in ("none-legacy", "sagemaker-legacy") else "calls"][
                w.name
            ]
            return [run["calls_s"] / calls * 1e6 for run in runs[(w.name, name)]]

        def total(name: str, w: Workload = w) -> list[float]:
            return [(run["setup_s"] + run["calls_s"] + run["final_s"]) * 1e3 for run in runs[(w.name, name)]]

        def cpu_per_event(name: str, key: str, w: Workload = w) -> list[float]:
            calls = results["calls"][w.name] * results["events"][w.name]
            return [run.get(key, 0.0) / calls * 1e6 for run in runs[(w.name, name)]]

        rows = []
        summary[w.name] = {}
        floor_pc = per_call("floor")
        floor_cpu = cpu_per_event("floor", "app_cpu_s")
        for name in names:
            legacy = name in ("none-legacy", "sagemaker-legacy")
            base = "none-legacy" if legacy else "none"
            pc, base_pc = per_call(name), per_call(base)
            tot, base_tot = total(name), total(base)
            n = min(len(pc), len(base_pc), len(floor_pc))
            over_none = [(pc[i] - base_pc[i]) / events for i in range(n)]
            over_floor = [(pc[i] - floor_pc[i]) / events for i in range(n)]
            x_floor = [pc[i] / floor_pc[i] for i in range(n)]
            x_none = [pc[i] / base_pc[i] for i in range(n)]
            x_total = [tot[i] / base_tot[i] for i in range(n)]
            final_ms = [run["final_s"] * 1e3 for run in runs[(w.name, name)]]
            app_cpu = cpu_per_event(name, "app_cpu_s") if not legacy else [float("nan")]
            app_over = [app_cpu[i] - floor_cpu[i] for i in range(min(len(app_cpu), len(floor_cpu)))]
            worker_cpu = cpu_per_event(name, "worker_cpu_s") if not legacy else [float("nan")]
            own_cpu = cpu_per_event(name, "own_threads_cpu_s") if not legacy else [float("nan")]
            rounds = [
                run.get("shipper_rounds", 0) / (results["calls"][w.name] * events) * 1e3
                for run in runs[(w.name, name)]
            ] or [float("nan")]
            s = {
                "per_call_us": c.median(pc),
                "per_event_over_none_us": c.median(over_none),
                "per_event_over_floor_us": c.median(over_floor),
                "x_floor": c.median(x_floor),
                "x_none": c.median(x_none),
                "total_ms": c.median(tot),
                "total_x_none": c.median(x_total),
                "final_ms": c.median(final_ms),
                "app_cpu_over_floor_us": c.median(app_over) if app_over else float("nan"),
                "worker_cpu_us": c.median(worker_cpu),
                "own_threads_cpu_us": c.median(own_cpu),
                "shipper_rounds_per_1000": c.median(rounds),
            }
            summary[w.name][name] = s
            rows.append(
                [
                    label[name],
                    s["per_call_us"],
                    s["per_event_over_none_us"],
                    s["per_event_over_floor_us"],
                    s["x_floor"],
                    s["x_none"],
                    s["total_ms"],
                    s["total_x_none"],
                    s["final_ms"],
                    s["app_cpu_over_floor_us"],
                    s["own_threads_cpu_us"],
                    s["shipper_rounds_per_1000"],
                    s["worker_cpu_us"],
                ]
            )
            report.metric(f"{w.name}.{name}.per_call_us", s["per_call_us"])
            report.metric(f"{w.name}.{name}.total_ms", s["total_ms"])
        calls = results["calls"][w.name]
        lc = results["legacy_calls"][w.name]
        report.table(
            f"{w.name}: {w.description}; {events} events/call; {calls} calls per measurement"
            + (f" ({lc} for the legacy handler)" if lc and any(v.group == "legacy" for v in variants) else "")
            + f"; median of {repeats}",
            [
                "handler",
                "µs/call",
                "µs/event over none",
                "µs/event over floor",
                "× floor",
                "× none",
                "total ms (setup+calls+flush/close)",
                "total × none",
                "final flush/close ms",
                "app CPU µs/event over floor",
                "of it in asynctrack's threads µs/event",
                "shipper rounds per 1,000 events",
                "worker process CPU µs/event",
            ],
            rows,
        )
        _issue19_goals(report, w.name, cpu_per_event, floor_cpu, set(summary[w.name]))
        if LOCAL in summary[w.name]:
            s = summary[w.name][LOCAL]
            report.goal(
                f"{w.name}: asynctrack callback path within 2 µs/event of the floor",
                s["per_event_over_floor_us"],
                2.0,
                unit=" µs",
            )
            report.goal(
                f"{w.name}: asynctrack (local) total wall time incl. final close ≤ 1.15× no handler",
                s["total_x_none"],
                1.15,
                unit="×",
            )
    report.note(
        "µs per event is wall time of the calling thread. `asynctrack → local dir` and `→ S3` use the "
        "default worker process; `(thread)` keeps the worker in this interpreter, where it competes with a "
        "CPU-bound caller for the GIL. App CPU is this process's CPU (time.process_time: the caller, the "
        "shipper/reader threads, or the worker thread) per event over the floor's; of it, the part asynctrack's "
        "own threads of the application ran (the shipper and the reader, or the thread engine's worker, "
        "/proc/self/task/*/schedstat; a thread that ended in the window is left out), and the worker "
        "process's shipper's rounds (each a wake-up of its thread; per 1,000 events); worker process CPU is "
        "the time the worker process's threads ran (/proc/<pid>/task/*/schedstat) per event, measured over "
        "the calls and the close. The stub servers (OpenAI for the `openai` workload, "
        "LangSmith's and Langfuse's endpoint) and moto run in processes of their own, so their serving is "
        "not counted as the application's CPU. Issue 19's goals are judged on the median "
        "of per-repeat figures, printed with their spread over the repeats (a goal is resolved when the "
        "interquartile range lies on one side of its target)"
    )
    report.data["summary"] = summary
    report.data["events_per_call"] = results["events"]
    report.data["raw"] = {f"{k[0]}|{k[1]}": v for k, v in runs.items()}


def _issue19_goals(
    report: c.Report,
    workload: str,
    cpu_per_event: Callable[[str, str], list[float]],
    floor_cpu: list[float],
    names: set[str],
) -> None:
    """Issue 19's goals for one workload, each judged on the median over repeats of a
    per-repeat figure (the variants of a repeat ran next to each other), with the spread."""
    if CAPTURE not in names:
        return

    def judge(text: str, repeats: list[float], target: float) -> None:
        report.goal(f"{workload}: {text}", c.median(repeats), target, unit=" µs", repeats=repeats)

    capture = cpu_per_event(CAPTURE, "app_cpu_s")
    if LOCAL in names:
        local = cpu_per_event(LOCAL, "app_cpu_s")
        # Repeat by repeat, (local - floor) - (capture - floor): the two variants' difference
        # within the same repeat, so that a repeat slower as a whole does not count.
        judge(
            "app CPU per event over the floor, asynctrack (local) ≤ capture only + 1 µs "
            "(median of the per-repeat differences, local minus capture)",
            [cpu - alone for cpu, alone in zip(local, capture, strict=False)],
            BEYOND_CAPTURE_GOAL_US,
        )
    if workload in CAPTURE_GOAL_WORKLOADS:
        over = [cpu - floor for cpu, floor in zip(capture, floor_cpu, strict=False)]
        judge("app CPU per event over the floor, capture only", over, CAPTURE_GOAL_US)
    if workload == "openai" and LOCAL in names:
        judge(
            "worker process CPU per event, asynctrack (local)",
            cpu_per_event(LOCAL, "worker_cpu_s"),
            WORKER_GOAL_US,
        )


def _chart(plt: Any, report: c.Report) -> None:
    summary = report.data.get("summary", {})
    workloads = list(summary)
    names: list[str] = []
    for w in workloads:
        for n in summary[w]:
            if n not in names and n not in ("none", "none-legacy"):
                names.append(n)
    _fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / max(len(names), 1)
    for i, n in enumerate(names):
        ys = [max(summary[w].get(n, {}).get("per_event_over_none_us", float("nan")), 0.01) for w in workloads]
        ax.bar([x + i * width for x in range(len(workloads))], ys, width, label=n)
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(workloads))])
    ax.set_xticklabels(workloads)
    ax.set_yscale("log")
    ax.set_ylabel("µs per event over no handler (log)")
    ax.set_title("A. Callback overhead per event")
    ax.axhline(2.0, color="grey", linestyle=":", linewidth=1)
    ax.legend(fontsize=8)


if __name__ == "__main__":
    sys.exit(main())
