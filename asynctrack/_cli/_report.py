"""``asynctrack report``: the runs of an experiment as one self-contained HTML file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .._read._report import render_report, report_data
from ._common import EXPECTED_ERRORS, error, read_checked, visible, warnings_on_stderr

__all__ = ["report"]


def report(
    destination: str,
    output: str,
    *,
    experiment: str | None,
    runs: list[str] | None,
    s3_options: dict[str, Any],
) -> int:
    """Write the report of ``destination`` (one experiment's, some runs' if given) to ``output``."""
    try:
        with warnings_on_stderr("report"):
            if runs:
                events = [
                    event for run in runs for event in read_checked(destination, experiment, run, s3_options)
                ]
            else:
                events = read_checked(destination, experiment, None, s3_options)
        title = f"asynctrack · {experiment}" if experiment else f"asynctrack · {destination}"
        html = render_report(report_data(events, title=title))
        Path(output).write_text(html, encoding="utf-8")
    except EXPECTED_ERRORS as exc:
        return error("report", exc)
    runs_seen = len({(event.get("experiment"), event.get("run")) for event in events})
    print(
        f"wrote {visible(output)}: {runs_seen} run(s), {len(events)} events, {len(html) / 1024:.0f} KiB",
        file=sys.stderr,
    )
    return 0
