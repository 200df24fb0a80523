"""``asynctrack`` command line: ``demo`` (the seed notebook, offline), ``replay`` (the spool)."""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .._config import TrackerConfig
from .._engine._spool import Spool, spooled_destinations
from .._errors import FlushError
from .._langchain._handler import DEFAULT_DESTINATION, AsyncTracker
from .._read._load import read_events, read_parameters
from .._sinks._base import ParametersSink
from .._sinks._registry import make_sink

__all__ = ["main"]


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


#: ``asynctrack demo --mlflow`` without a URI. Not ``./mlruns``: MLflow 3.x refuses
#: the file store unless ``MLFLOW_ALLOW_FILE_STORE=true``; SQLite is its default now.
DEFAULT_MLFLOW_URI = "sqlite:///mlflow.db"


def demo(destination: str, *, s3_options: dict[str, Any], mlflow_uri: str | None = None) -> int:
    """Run the seed notebook's three scenarios offline and print what was logged.

    With ``mlflow_uri``, each run's parameters and metrics also go to MLflow there.
    """
    try:
        from .._demo._scenarios import EXPERIMENT_NAME, SCENARIOS
    except ImportError as exc:
        print(
            f"the demo needs the 'demo' extra (langchain-classic): pip install 'asynctrack[demo]' ({exc})",
            file=sys.stderr,
        )
        return 2
    mlflow_sink: Callable[[], ParametersSink] | None = None  # one sink per tracker
    if mlflow_uri is not None:
        try:
            from .._sinks._mlflow import MLflowParameters

            mlflow_sink = functools.partial(MLflowParameters, mlflow_uri)
            mlflow_sink()  # fails here, before the scenarios run, without MLflow
        except ImportError as exc:
            print(
                f"--mlflow needs the 'mlflow' extra: pip install 'asynctrack[mlflow]' ({exc})",
                file=sys.stderr,
            )
            return 2
    started = time.monotonic()
    trackers: list[AsyncTracker] = []
    for number, (run_name, scenario) in enumerate(SCENARIOS.items(), start=1):
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
        trackers.append(tracker)
        _progress(f"[{number}/{len(SCENARIOS)}] {run_name}: done, answer: {answer.strip()[:100]!r}")

    print(f"\nExperiment {EXPERIMENT_NAME!r}, written to {trackers[0].destination}\n")
    for tracker in trackers:
        events = read_events(destination, EXPERIMENT_NAME, tracker.run_name, **s3_options)
        kinds = collections.Counter(str(e["kind"]) for e in events)
        stats = tracker.statistics()
        print(
            f"== {tracker.run_name}: {len(events)} events ({stats.written} written, {stats.dropped} dropped)"
        )
        print("   events by kind: " + ", ".join(f"{k}={n}" for k, n in sorted(kinds.items())))
        params = read_parameters(destination, EXPERIMENT_NAME, tracker.run_name, **s3_options)
        print("   parameters:     " + ", ".join(f"{k}={v!r}" for k, v in params.items()))
        print(f"   files:          {tracker.events_uri}")
    print(f"\nRead them back with: asynctrack.load({destination!r}, experiment_name={EXPERIMENT_NAME!r})")
    if mlflow_uri is not None:
        logged = sum(1 for t in trackers if not t.statistics().parameter_errors)
        print(f"MLflow ({mlflow_uri}): {logged} of {len(trackers)} run(s) logged")
        if mlflow_uri.startswith(("http://", "https://")):
            print(f"   open {mlflow_uri} in a browser")
        elif mlflow_uri.startswith("arn:"):
            print("   open the tracking server from SageMaker Studio (MLflow)")
        else:
            print(f"   see them with: mlflow ui --backend-store-uri {mlflow_uri}  (pip install mlflow)")
    _progress(f"done in {time.monotonic() - started:.1f} s")
    return 0


def replay(spool_dir: str, *, s3_options: dict[str, Any]) -> int:
    """Deliver every spooled batch to its destination; delete each once delivered."""
    destinations = spooled_destinations(spool_dir)
    if not destinations:
        print(f"nothing spooled in {spool_dir}")
        return 0

    async def deliver(destination: str, options: dict[str, str]) -> tuple[int, int, int]:
        spool = Spool(spool_dir, destination, max_bytes=0)
        # The spooling tracker's encryption and bucket-owner settings, unless overridden.
        sink = make_sink(destination, **{**options, **s3_options})
        sent = events = failed = 0
        try:
            await sink.start()
            for batch in spool.pending():
                try:
                    await sink.write_batch(Spool.load(batch))
                except Exception as exc:
                    failed += 1
                    print(f"  {batch.key}: not delivered: {exc}", file=sys.stderr)
                    continue
                Spool.remove(batch)
                sent += 1
                events += batch.events
        finally:
            await sink.aclose()
        return sent, events, failed

    status = 0
    for destination, options in destinations:
        try:
            sent, events, failed = asyncio.run(deliver(destination, options))
        except Exception as exc:
            print(f"{destination}: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"{destination}: delivered {sent} batch(es), {events} event(s); {failed} still spooled")
        status = status or (1 if failed else 0)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``asynctrack`` command."""
    parser = argparse.ArgumentParser(prog="asynctrack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser("demo", help="run the SageMaker-tracking notebook's scenarios offline")
    run_demo.add_argument(
        "--destination",
        default=DEFAULT_DESTINATION,
        help=f"a directory or s3://bucket/prefix (default: {DEFAULT_DESTINATION})",
    )
    run_demo.add_argument("--endpoint-url", help="S3 endpoint (default: the AWS configuration)")
    run_demo.add_argument(
        "--mlflow",
        nargs="?",
        const=DEFAULT_MLFLOW_URI,
        metavar="URI",
        help=f"also log the runs to MLflow at URI (default: {DEFAULT_MLFLOW_URI}; needs the mlflow extra)",
    )
    run_replay = commands.add_parser("replay", help="deliver the batches kept in a spool directory")
    run_replay.add_argument("spool", help="the spool directory (TrackerConfig.spool_dir)")
    run_replay.add_argument("--endpoint-url", help="S3 endpoint (default: the AWS configuration)")
    args = parser.parse_args(argv)
    if args.command == "replay":
        s3_options = {"endpoint_url": args.endpoint_url} if args.endpoint_url else {}
        return replay(args.spool, s3_options=s3_options)
    if args.command == "demo":
        s3_options = {"endpoint_url": args.endpoint_url} if args.endpoint_url else {}
        return demo(args.destination, s3_options=s3_options, mlflow_uri=args.mlflow)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse exits first
    return 2  # pragma: no cover


if __name__ == "__main__":
    raise SystemExit(main())
