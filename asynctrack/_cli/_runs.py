"""``asynctrack runs``: one row per run, newest first."""

from __future__ import annotations

import importlib.util
import json
import time
from typing import Any

from .._read._tree import RunOverview, scan_run_summaries, summarize_runs
from ._common import EXPECTED_ERRORS, error, read_checked, visible, warnings_on_stderr

__all__ = ["format_duration", "format_time", "runs"]

_HEADERS = (
    "EXPERIMENT",
    "RUN",
    "EVENTS",
    "ERRORS",
    "LLM CALLS",
    "TOKENS IN",
    "TOKENS OUT",
    "FIRST EVENT (UTC)",
    "LAST EVENT (UTC)",
    "DURATION",
    "SESSIONS",
    "USERS",
)


def format_time(ts: float) -> str:
    """Epoch seconds as ``YYYY-MM-DD HH:MM:SS`` UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def format_duration(seconds: float | None) -> str:
    """``850 ms``, ``12.3 s``, ``4 min 05 s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def _cells(row: RunOverview) -> tuple[str, ...]:
    return (
        visible(row.experiment),
        visible(row.run),
        str(row.events),
        str(row.errors),
        str(row.llm_calls),
        str(row.tokens_in),
        str(row.tokens_out),
        format_time(row.first_event),
        format_time(row.last_event),
        format_duration(row.duration),
        _few(row.sessions),
        _few(row.users),
    )


def _few(values: tuple[str, ...]) -> str:
    """``a``, ``a, b``, ``a, b (+3)``; ``-`` for none."""
    if not values:
        return "-"
    shown = visible(", ".join(values[:2]))
    return shown if len(values) <= 2 else f"{shown} (+{len(values) - 2})"


def table(rows: list[RunOverview]) -> str:
    """The rows as an aligned text table (numbers right-aligned), the recorded names with their
    control characters escaped (``visible``)."""
    cells = [_HEADERS, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_HEADERS))]
    numeric = {2, 3, 4, 5, 6}
    return "\n".join(
        "  ".join(
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(line)
        ).rstrip()
        for line in cells
    )


def polars_installed() -> bool:
    """Whether the ``polars`` extra is there (then ``runs`` aggregates through ``scan()``)."""
    return importlib.util.find_spec("polars") is not None


def runs(
    destination: str,
    *,
    experiment: str | None,
    as_json: bool,
    s3_options: dict[str, Any],
    session: str | None = None,
    user: str | None = None,
) -> int:
    """Print one row per run under ``destination`` (one experiment's if given), newest first.

    With ``session`` (``user``), a row counts only the events of the LangChain runs of
    that session (user), and runs with none are left out.
    """
    expected: tuple[type[BaseException], ...] = EXPECTED_ERRORS
    try:
        with warnings_on_stderr("runs"):
            if polars_installed():
                import polars as pl

                expected = (*EXPECTED_ERRORS, pl.exceptions.PolarsError)  # a file Polars cannot read
                rows = scan_run_summaries(destination, experiment, session=session, user=user, **s3_options)
            else:  # the core install: every event as a dict, in memory
                events = read_checked(destination, experiment, None, s3_options)
                rows = summarize_runs(events, session=session, user=user)
    except expected as exc:
        return error("runs", exc)
    if as_json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
    else:
        print(table(rows))
    return 0
