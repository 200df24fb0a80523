"""``asynctrack demo``: the seed notebook's three scenarios, offline, and what was logged."""

from __future__ import annotations

import asyncio
import collections
import functools
import secrets
import shlex
import sys
import time
from collections.abc import Callable
from typing import Any

from .._config import TrackerConfig
from .._errors import FlushError
from .._langchain._handler import AsyncTracker
from .._read._load import read_events, read_parameters
from .._sinks._base import ParametersSink
from .._sinks._registry import make_sink
from ._common import EXPECTED_ERRORS, error

__all__ = ["DEFAULT_MLFLOW_URI", "demo", "read_back_hint"]

#: ``asynctrack demo --mlflow`` without a URI. Not ``./mlruns``: MLflow 3.x refuses
#: the file store unless ``MLFLOW_ALLOW_FILE_STORE=true``; SQLite is its default now.
DEFAULT_MLFLOW_URI = "sqlite:///mlflow.db"


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


def _mlflow_sink(mlflow_uri: str | None) -> Callable[[], ParametersSink] | None:
    """A maker of one MLflow sink per tracker, or ``None``.

    Raises:
        ImportError: the mlflow extra is not installed (said before any scenario runs).
    """
    if mlflow_uri is None:
        return None
    from .._sinks._mlflow import MLflowParameters

    return functools.partial(MLflowParameters, mlflow_uri)


def _mlflow_summary(mlflow_uri: str, trackers: list[AsyncTracker]) -> None:
    logged = sum(1 for t in trackers if not t.statistics().parameter_errors)
    traces = sum(t.statistics().mlflow_traces_logged for t in trackers)
    failed = sum(t.statistics().mlflow_traces_failed for t in trackers)
    print(f"MLflow ({mlflow_uri}): {logged} of {len(trackers)} run(s) logged")
    note = f", {failed} not logged" if failed else ""
    print(f"   traces: {traces} logged{note}, one per root run (a run's Traces tab)")
    if mlflow_uri.startswith(("http://", "https://")):
        print(f"   open {mlflow_uri} in a browser")
    elif mlflow_uri.startswith("arn:"):
        print("   open the tracking server from SageMaker Studio (MLflow)")
    else:
        print(f"   see them with: mlflow ui --backend-store-uri {mlflow_uri}  (pip install mlflow)")


def _mlflow_cause(exc: FlushError, mlflow_uri: str) -> str:
    """What the MLflow sink said in ``exc``: the flush's error when the close's followed it."""
    first = exc.__context__ if isinstance(exc.__context__, FlushError) else exc
    head = f"MLflow ({mlflow_uri}): "
    return first.reason.split(head, 1)[1] if head in first.reason else first.reason


def demo(destination: str, *, s3_options: dict[str, Any], mlflow_uri: str | None = None) -> int:
    """Run the seed notebook's three scenarios offline and print what was logged.

    Each invocation writes new runs (``run-scenario-N-<UTC time>-<random>``). With
    ``mlflow_uri``, each run's parameters and metrics also go to MLflow there, and
    each root run as an MLflow trace linked to its run; a run not logged there makes
    the exit status 1, said in one line on stderr.
    """
    try:
        from .._demo._scenarios import EXPERIMENT_NAME, SCENARIOS
    except ImportError as exc:
        print(
            f"the demo needs the 'demo' extra (langchain-classic): pip install 'asynctrack[demo]' ({exc})",
            file=sys.stderr,
        )
        return 2
    try:
        mlflow_sink = _mlflow_sink(mlflow_uri)
    except ImportError as exc:
        print(f"--mlflow needs the 'mlflow' extra: pip install 'asynctrack[mlflow]' ({exc})", file=sys.stderr)
        return 2
    started = time.monotonic()
    suffix = invocation_suffix()
    trackers: list[AsyncTracker] = []
    mlflow_cause = ""  # the last MLflow failure
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
                parameter_sinks=[mlflow_sink()] if mlflow_sink else [],
                **s3_options,
            )
            try:
                with tracker:
                    answer = scenario([tracker])
                    tracker.flush_blocking(timeout=60)
            except FlushError as exc:
                if mlflow_sink is None or tracker.statistics().parameter_errors == 0:
                    raise
                _progress(f"[{number}/{len(SCENARIOS)}] {run_name}: events written, MLflow failed: {exc}")
                mlflow_cause = _mlflow_cause(exc, str(mlflow_uri))
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
    if mlflow_uri is not None:
        _mlflow_summary(mlflow_uri, trackers)
    _progress(f"done in {time.monotonic() - started:.1f} s")
    logged = sum(1 for t in trackers if not t.statistics().parameter_errors)
    if mlflow_uri is not None and logged < len(trackers):
        return error(
            "demo", f"MLflow ({mlflow_uri}): {logged} of {len(trackers)} run(s) logged: {mlflow_cause}"
        )
    return 0
