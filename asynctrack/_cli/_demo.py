"""``asynctrack demo``: the seed notebook's three scenarios, offline, and what was logged."""

from __future__ import annotations

import asyncio
import collections
import secrets
import shlex
import sys
import time
from typing import Any

from .._config import TrackerConfig
from .._langchain._handler import AsyncTracker
from .._read._load import read_events, read_parameters
from .._sinks._registry import make_sink
from ._common import EXPECTED_ERRORS, error

__all__ = ["demo", "read_back_hint"]


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def invocation_suffix() -> str:
    """A suffix that makes this invocation's run names new: UTC time and 16 random bits.

    Re-running the demo then writes new runs instead of adding to the last ones
    (whose counts would mix with this run's).
    """
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def read_back_hint(destination: str, experiment: str, run: str, s3_options: dict[str, Any]) -> str:
    """The lines that read this destination back, with the S3 options it needs."""
    options = "".join(f", {key}={value!r}" for key, value in s3_options.items())
    flags = "".join(
        f" --{flag} {shlex.quote(str(s3_options[key]))}"
        for key, flag in (("endpoint_url", "endpoint-url"), ("region_name", "region"), ("profile", "profile"))
        if key in s3_options
    )
    where = shlex.quote(destination)
    return (
        f"Read them back with: asynctrack.load({destination!r}, experiment_name={experiment!r}{options})\n"
        f"Look at them with:   asynctrack runs {where}{flags}\n"
        f"                     asynctrack show {where} {shlex.quote(run)}{flags}\n"
        f"                     asynctrack report {where} --experiment {shlex.quote(experiment)}{flags}"
        " -o report.html"
    )


def check_destination(destination: str, s3_options: dict[str, Any]) -> None:
    """Start the destination's sink once (S3: HeadBucket) so a wrong bucket, endpoint
    or directory stops the demo before any scenario runs, with the sink's own message.

    Raises:
        SinkError: the destination cannot be written.
    """

    async def start() -> None:
        sink = make_sink(destination, **s3_options)
        try:
            await sink.start()
        finally:
            await sink.aclose()

    asyncio.run(start())


def demo(destination: str, *, s3_options: dict[str, Any]) -> int:
    """Run the seed notebook's three scenarios offline and print what was logged.

    Each invocation writes new runs (``run-scenario-N-<UTC time>-<random>``).
    """
    try:
        from .._demo._scenarios import EXPERIMENT_NAME, SCENARIOS
    except ImportError as exc:
        print(
            f"the demo needs the 'demo' extra (langchain-classic): pip install 'asynctrack[demo]' ({exc})",
            file=sys.stderr,
        )
        return 2
    started = time.monotonic()
    suffix = invocation_suffix()
    trackers: list[AsyncTracker] = []
    try:
        check_destination(destination, s3_options)
        for number, (scenario_name, scenario) in enumerate(SCENARIOS.items(), start=1):
            run_name = f"{scenario_name}-{suffix}"
            _progress(f"[{number}/{len(SCENARIOS)}] {run_name}: running ...")
            tracker = AsyncTracker(
                destination,
                experiment_name=EXPERIMENT_NAME,
                run_name=run_name,
                config=TrackerConfig(),
                **s3_options,
            )
            with tracker:
                answer = scenario([tracker])
                tracker.flush_blocking(timeout=60)
            trackers.append(tracker)
            _progress(f"[{number}/{len(SCENARIOS)}] {run_name}: done, answer: {answer.strip()[:100]!r}")

        print(f"\nExperiment {EXPERIMENT_NAME!r}, written to {trackers[0].destination}\n")
        for tracker in trackers:
            events = read_events(destination, EXPERIMENT_NAME, tracker.run_name, **s3_options)
            kinds = collections.Counter(str(e["kind"]) for e in events)
            stats = tracker.statistics()
            counts = f"{stats.written} written, {stats.dropped} dropped"
            print(f"== {tracker.run_name}: {len(events)} events ({counts})")
            print("   events by kind: " + ", ".join(f"{k}={n}" for k, n in sorted(kinds.items())))
            params = read_parameters(destination, EXPERIMENT_NAME, tracker.run_name, **s3_options)
            print("   parameters:     " + ", ".join(f"{k}={v!r}" for k, v in params.items()))
            print(f"   files:          {tracker.events_uri}")
    except EXPECTED_ERRORS as exc:
        # A wrong bucket, endpoint or directory: one line, not a traceback.
        return error("demo", exc)
    print("\n" + read_back_hint(destination, EXPERIMENT_NAME, trackers[-1].run_name, s3_options))
    _progress(f"done in {time.monotonic() - started:.1f} s")
    return 0
