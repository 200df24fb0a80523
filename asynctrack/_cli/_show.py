"""``asynctrack show``: one run as a tree in the terminal."""

from __future__ import annotations

import sys
from typing import Any

from .._read._tree import Note, Span, build_tree, note_summary, preview, summarize_runs
from ._common import EXPECTED_ERRORS, Colour, error, read_checked, visible, warnings_on_stderr
from ._runs import format_duration, format_time

__all__ = ["cut", "render", "show"]

#: Characters of an input, output or note shown before the cut marker.
DEFAULT_WIDTH = 100


def cut(text: str, width: int) -> str:
    """``text`` on one line, its control characters escaped (``visible``), cut to ``width``
    characters with a marker saying how much is left."""
    flat = visible(" ".join(text.split()))
    if len(flat) <= width:
        return flat
    return f"{flat[:width]}…[+{len(flat) - width} chars]"


def _error_text(value: Any) -> str:
    if isinstance(value, dict):
        return f"{value.get('type')}: {value.get('message')}"
    return preview(value)


def _head(span: Span, colour: Colour) -> str:
    parts = [colour.bold(visible(f"{span.kind} {span.name}")), format_duration(span.duration)]
    if span.model:
        parts.append(colour.cyan(visible(span.model)))
    if span.tokens_in or span.tokens_out:
        parts.append(f"{span.tokens_in}→{span.tokens_out} tokens")
    if span.streamed_tokens:
        parts.append(f"{span.streamed_tokens} streamed")
    if span.status == "error":
        parts.append(colour.red("ERROR"))
    elif span.status == "interrupted":
        parts.append(colour.cyan("INTERRUPTED"))
    elif span.status == "running":
        parts.append(colour.dim("(no end recorded)"))
    if span.placed_by_time:
        parts.append(colour.dim("(placed by time)"))
    return "  ".join(parts)


def render(events: list[dict[str, Any]], *, width: int = DEFAULT_WIDTH, colour: Colour) -> list[str]:
    """The lines of ``show`` for one run's events; recorded text has its control characters
    escaped (``visible``)."""
    (summary,) = summarize_runs(events)
    lines = [
        colour.bold(visible(summary.run))
        + f"  experiment {visible(summary.experiment)}, {format_time(summary.first_event)} UTC, "
        + f"{format_duration(summary.duration)}",
        f"{summary.events} events, {summary.llm_calls} LLM calls, "
        f"tokens {summary.tokens_in} in / {summary.tokens_out} out, "
        + (colour.red(f"{summary.errors} errors") if summary.errors else "0 errors"),
    ]

    def visit(span: Span, prefix: str, last: bool) -> None:
        lines.append(f"{prefix}{'└─ ' if last else '├─ '}{_head(span, colour)}")
        inner = prefix + ("   " if last else "│  ")
        # Notes (agent actions, text) sit between the child spans, in time order.
        items: list[tuple[float, Span | Note]] = [(child.start, child) for child in span.children]
        items += [(note.ts, note) for note in span.notes]
        items.sort(key=lambda item: item[0])
        detail = inner + ("│  " if items else "   ")
        if span.inputs is not None:
            lines.append(detail + colour.dim("in:  ") + cut(preview(span.inputs), width))
        if span.outputs is not None:
            lines.append(detail + colour.dim("out: ") + cut(preview(span.outputs), width))
        if span.error is not None:
            lines.append(detail + colour.red("error: " + cut(_error_text(span.error), width)))
        for index, (_, item) in enumerate(items):
            if isinstance(item, Span):
                visit(item, inner, index == len(items) - 1)
            else:
                branch = "└─ " if index == len(items) - 1 else "├─ "
                lines.append(inner + branch + colour.dim("· ") + cut(note_summary(item), width))

    roots = build_tree(events)
    for index, root in enumerate(roots):
        visit(root, "", index == len(roots) - 1)
    return lines


def show(
    destination: str, run: str, *, experiment: str | None, width: int, s3_options: dict[str, Any]
) -> int:
    """Print the run ``run`` as a tree: durations, models, tokens, errors in red."""
    try:
        with warnings_on_stderr("show"):
            events = read_checked(destination, experiment, run, s3_options)
    except EXPECTED_ERRORS as exc:
        return error("show", exc)
    experiments = sorted({str(event.get("experiment")) for event in events})
    if len(experiments) > 1:
        return error(
            "show", f"run {run!r} is in several experiments ({', '.join(experiments)}): pass --experiment"
        )
    print("\n".join(render(events, width=width, colour=Colour(sys.stdout))))
    return 0
