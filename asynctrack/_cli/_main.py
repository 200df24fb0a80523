"""The ``asynctrack`` command: run the demo, replay a spool, and look at what was logged."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .._langchain._handler import DEFAULT_DESTINATION
from ._common import add_s3_options, s3_options
from ._demo import DEFAULT_MLFLOW_URI

__all__ = ["main"]

_DESCRIPTION = """\
Record LangChain callback events to JSON Lines (local or S3) and look at them.

A DESTINATION is a directory or s3://bucket/prefix (default: %(default)s).
Examples:
  asynctrack demo --destination s3://my-bucket/traces --endpoint-url http://127.0.0.1:5000
  asynctrack runs s3://my-bucket/traces --endpoint-url http://127.0.0.1:5000
  asynctrack show ./asynctrack-logs run-scenario-3-20261128-094512-1a2b
"""


def _version() -> str:
    from .. import __version__

    return __version__


def _holds_runs(path: str) -> bool:
    """Whether ``path`` is a directory holding recorded files (an ``experiment=`` folder)."""
    try:
        with os.scandir(path) as entries:
            return any(entry.name.startswith("experiment=") for entry in entries)
    except OSError:  # not a directory, or not readable
        return False


class _RunName(argparse.Action):
    """``show``'s RUN: a lone positional that names a destination (an ``s3://`` URI, a
    directory holding recorded files: an ``experiment=`` folder) is a forgotten RUN, not a
    run of that name in the default destination; any other directory (an ``agent/`` source
    folder beside a run named ``agent``) is a RUN."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        run = str(values)
        if namespace.destination is None and (run.startswith("s3://") or _holds_runs(run)):
            parser.error(
                f"the following arguments are required: run ({run!r} is the destination; "
                "name the run after it: asynctrack show DESTINATION RUN; 'asynctrack runs "
                "DESTINATION' lists them)"
            )
        setattr(namespace, self.dest, run)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asynctrack",
        description=_DESCRIPTION.replace("%(default)s", DEFAULT_DESTINATION),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"asynctrack {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run_demo = commands.add_parser("demo", help="run the SageMaker-tracking notebook's scenarios offline")
    run_demo.add_argument(
        "--destination",
        default=DEFAULT_DESTINATION,
        help=f"a directory or s3://bucket/prefix (default: {DEFAULT_DESTINATION})",
    )
    run_demo.add_argument(
        "--mlflow",
        nargs="?",
        const=DEFAULT_MLFLOW_URI,
        metavar="URI",
        help=f"also log the runs to MLflow at URI (default: {DEFAULT_MLFLOW_URI}; needs the mlflow extra)",
    )
    add_s3_options(run_demo)

    destination_help = f"a directory or s3://bucket/prefix (default: {DEFAULT_DESTINATION})"
    list_runs = commands.add_parser("runs", help="one row per run, newest first")
    list_runs.add_argument("destination", nargs="?", default=DEFAULT_DESTINATION, help=destination_help)
    list_runs.add_argument("--experiment", help="only this experiment")
    list_runs.add_argument("--json", action="store_true", help="print the rows as JSON")
    list_runs.add_argument(
        "--session", help="only the runs of this session (metadata session_id, or LangGraph's thread_id)"
    )
    list_runs.add_argument("--user", help="only the runs of this user (metadata user_id)")
    add_s3_options(list_runs)

    show_run = commands.add_parser("show", help="one run as a tree in the terminal")
    show_run.add_argument("destination", nargs="?", default=None, help=destination_help)
    show_run.add_argument("run", action=_RunName, help="the run name (as given to the tracker)")
    show_run.add_argument("--experiment", help="the run's experiment (needed if two have a run of that name)")
    show_run.add_argument(
        "--width",
        type=int,
        default=100,
        help="characters of each value shown before it is cut (default: 100)",
    )
    add_s3_options(show_run)

    make_report = commands.add_parser("report", help="write one self-contained HTML report")
    make_report.add_argument("destination", nargs="?", default=DEFAULT_DESTINATION, help=destination_help)
    make_report.add_argument("--experiment", help="only this experiment")
    make_report.add_argument(
        "--run", action="append", dest="runs", metavar="RUN", help="only this run (repeat for more)"
    )
    make_report.add_argument("-o", "--output", required=True, help="the HTML file to write")
    add_s3_options(make_report)

    ddl = commands.add_parser(
        "athena-ddl", help="print the Athena CREATE EXTERNAL TABLE (partition projection)"
    )
    ddl.add_argument("destination", help="s3://bucket/prefix")
    ddl.add_argument("--table", required=True, help="the table name, optionally database.table")

    send = commands.add_parser(
        "export", help="send recorded runs to an OpenTelemetry (OTLP/HTTP) receiver, with the live ids"
    )
    send.add_argument("destination", nargs="?", default=DEFAULT_DESTINATION, help=destination_help)
    send.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="the receiver's base URL (/v1/traces is appended); default: the OTEL_EXPORTER_OTLP_* variables",
    )
    send.add_argument("--experiment", help="only this experiment")
    send.add_argument("--run", help="only this run")
    send.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a request header (repeat for more)",
    )
    send.add_argument(
        "--capture-content", action="store_true", help="also send message content (redacted, as recorded)"
    )
    send.add_argument(
        "--no-metrics",
        dest="metrics",
        action="store_false",
        help="send the spans only, not the GenAI client metrics of the model calls (/v1/metrics)",
    )
    send.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="the longest one request may take, answer included (a failed one is retried up to 5 "
        "times); once every span was tried, what is unsent (the metrics included) gets 2 x SECONDS "
        "more, then fails "
        "(default: 30, at most 1e6)",
    )
    add_s3_options(send)

    run_replay = commands.add_parser("replay", help="deliver the batches kept in a spool directory")
    run_replay.add_argument(
        "spool",
        nargs="?",
        default=None,
        help="the spool directory (default: $ASYNCTRACK_SPOOL_DIR, else ~/.cache/asynctrack/spool, "
        "as the tracker's)",
    )
    add_s3_options(run_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``asynctrack`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:
        # The reader went away (`asynctrack show ... | head`): not an error. Point
        # stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(args: argparse.Namespace) -> int:
    options = s3_options(args)
    if args.command == "demo":
        from ._demo import demo

        return demo(args.destination, s3_options=options, mlflow_uri=args.mlflow)
    if args.command == "replay":
        from ._replay import default_spool_dir, replay

        return replay(args.spool or default_spool_dir(), s3_options=options)
    if args.command == "runs":
        from ._runs import runs

        return runs(
            args.destination,
            experiment=args.experiment,
            as_json=args.json,
            s3_options=options,
            session=args.session,
            user=args.user,
        )
    if args.command == "show":
        from ._show import show

        return show(
            args.destination or DEFAULT_DESTINATION,
            args.run,
            experiment=args.experiment,
            width=args.width,
            s3_options=options,
        )
    if args.command == "report":
        from ._report import report

        return report(
            args.destination, args.output, experiment=args.experiment, runs=args.runs, s3_options=options
        )
    if args.command == "export":
        from ._common import error
        from ._export import export, parse_headers

        try:
            headers = parse_headers(args.header)
        except ValueError as exc:
            return error("export", exc)
        return export(
            args.destination,
            endpoint=args.otlp_endpoint,
            experiment=args.experiment,
            run=args.run,
            headers=headers,
            capture_content=args.capture_content,
            s3_options=options,
            metrics=args.metrics,
            timeout=args.timeout,
        )
    if args.command == "athena-ddl":
        from ._athena import athena_ddl

        return athena_ddl(args.destination, args.table)
    raise AssertionError(f"unhandled command {args.command!r}")  # pragma: no cover - argparse exits first


if __name__ == "__main__":
    raise SystemExit(main())
