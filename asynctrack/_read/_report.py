"""The HTML report: one self-contained file with the runs, their trees and timelines.

Everything is inline (CSS, JavaScript, data): the file opens without a network
and references nothing outside itself. The data travels as JSON inside a
``<script type="application/json">`` element, escaped so that no event text can
end that element or open another: ``<``, ``>`` and ``&`` become ``\\u003c``,
``\\u003e`` and ``\\u0026`` (so neither ``</script>`` nor ``<!--`` can appear),
and U+2028/U+2029 are escaped too. The page's script puts every value on the
page with ``textContent``, never as markup.
"""

from __future__ import annotations

import importlib.resources
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from .._capture import valid_text
from ._tree import Note, Span, build_tree, note_summary, summarize_runs

__all__ = ["embed_json", "render_report", "report_data"]

_PLACEHOLDER: Final = "/*ASYNCTRACK_DATA*/null"
_ESCAPES: Final = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def embed_json(value: Any) -> str:
    """``value`` as JSON that is safe inside a ``<script>`` element, whatever its strings hold."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode().translate(_ESCAPES)


def _spans(roots: list[Span]) -> list[dict[str, Any]]:
    """The tree's rows, depth first: spans, and their notes (agent actions, text)
    between their children in time order. Each row has its parent's index (-1 for
    a root) and depth."""
    out: list[dict[str, Any]] = []

    def row(parent: int, depth: int, **fields: Any) -> int:
        out.append({"parent": parent, "depth": depth, "children": 0, **fields})
        if parent >= 0:
            out[parent]["children"] += 1
        return len(out) - 1

    def add(span: Span, parent: int, depth: int) -> None:
        index = row(
            parent,
            depth,
            run_id=span.run_id,
            kind=span.kind,
            name=span.name,
            start=span.start,
            end=span.end,
            status=span.status,
            model=span.model,
            tokens_in=span.tokens_in,
            tokens_out=span.tokens_out,
            streamed_tokens=span.streamed_tokens,
            placed_by_time=span.placed_by_time,
            tags=span.tags,
            inputs=span.inputs,
            outputs=span.outputs,
            error=span.error,
        )
        items: list[tuple[float, Span | Note]] = [(child.start, child) for child in span.children]
        items += [(note.ts, note) for note in span.notes]
        for _, item in sorted(items, key=lambda pair: pair[0]):
            if isinstance(item, Span):
                add(item, index, depth + 1)
            else:
                row(
                    index,
                    depth + 1,
                    run_id=span.run_id,
                    kind=item.kind,
                    # The badge says the kind; the name is the rest of the summary.
                    name=note_summary(item).split(" ", 1)[-1],
                    start=item.ts,
                    end=item.ts,
                    status="note",
                    model=None,
                    tokens_in=0,
                    tokens_out=0,
                    streamed_tokens=0,
                    placed_by_time=False,
                    tags=[],
                    inputs=item.data,
                    outputs=None,
                    error=None,
                )

    for root in roots:
        add(root, -1, 0)
    return out


def report_data(events: Iterable[Mapping[str, Any]], *, title: str) -> dict[str, Any]:
    """What the page shows: one entry per run (summary and spans), newest first."""
    by_run: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for event in events:
        by_run.setdefault((str(event.get("experiment")), str(event.get("run"))), []).append(event)
    runs = []
    for (experiment, run), run_events in by_run.items():
        (summary,) = summarize_runs(run_events)
        spans = _spans(build_tree(run_events))
        models: dict[str, dict[str, int]] = {}
        for span in spans:
            if span["kind"] in ("llm", "chat_model"):
                row = models.setdefault(
                    span["model"] or span["name"], {"calls": 0, "tokens_in": 0, "tokens_out": 0}
                )
                row["calls"] += 1
                row["tokens_in"] += span["tokens_in"]
                row["tokens_out"] += span["tokens_out"]
        runs.append(
            {
                "experiment": experiment,
                "run": run,
                **summary.as_dict(),
                "models": [{"model": name, **row} for name, row in sorted(models.items())],
                "spans": spans,
            }
        )
    runs.sort(key=lambda row: (row["last_event"], row["experiment"], row["run"]), reverse=True)
    # The title holds the experiment's name as given (maybe with a lone surrogate): as written.
    return {"title": valid_text(title), "generated": time.time(), "runs": runs}


def render_report(data: Mapping[str, Any]) -> str:
    """The report page for ``report_data()``'s result: one HTML document, self-contained."""
    template = importlib.resources.files(__package__).joinpath("report.html").read_text(encoding="utf-8")
    if template.count(_PLACEHOLDER) != 1:  # pragma: no cover - the template ships with the package
        raise RuntimeError("the report template has lost its data placeholder")
    return template.replace(_PLACEHOLDER, embed_json(data))
