"""``asynctrack export``: send recorded runs to an OTLP receiver, with the live export's ids.

The files of each writer (one tracker) are read in batch order and fed to one
``SpanAssembler``, exactly as its worker fed the live exporter: same lines, same
order, so the same trace and span ids. Runs that never ended are sent at the end,
marked ``asynctrack.unfinished``, as a tracker's close sends them.

The model calls of every writer go into one set of GenAI client metrics, sent once
after the spans: one cumulative point per metric and attribute set, from the earliest
start to the latest end of the calls it counts (the runs' own times, not the time of
the backfill). A receiver that takes no metrics (404, 405, 415, 501) is said once; the
spans are not affected.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from ._common import error, warnings_on_stderr

if TYPE_CHECKING:
    from .._export._metrics import Metrics
    from .._export._sender import Sender

__all__ = ["export", "parse_headers"]

_BATCH_FILE: Final = re.compile(r"^\d{6}-(?P<writer>.+)-(?P<batch>\d{8})\.jsonl(?:\.gz)?$")
_PROGRESS_EVERY: Final = 0.2  # seconds between progress lines on a terminal
_CHUNK: Final = 1024  # lines assembled at a time


def parse_headers(items: Sequence[str]) -> dict[str, str]:
    """``K=V`` items as headers.

    Raises:
        ValueError: an item has no ``=`` or an empty key, or a header HTTP cannot carry
            (``check_headers``: the value is not shown).
    """
    from .._export._exporter import check_headers

    headers: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            # Not shown: 'Authorization: Bearer ...' (a ':' for the '=') is a credential.
            raise ValueError("--header takes KEY=VALUE: an item has no '=' or no KEY (not shown)")
        headers[key.strip()] = value.strip()
    check_headers(headers, "--header")
    return headers


def _writers(files: Iterable[tuple[str, bytes]]) -> dict[str, list[tuple[int, str, bytes]]]:
    """Batch files grouped by writer, each writer's in batch order."""
    writers: dict[str, list[tuple[int, str, bytes]]] = {}
    for name, data in files:
        match = _BATCH_FILE.match(name)
        writer, batch = (match["writer"], int(match["batch"])) if match else (name, 0)
        writers.setdefault(writer, []).append((batch, name, data))
    for batches in writers.values():
        batches.sort(key=lambda item: (item[0], item[1]))
    return writers


def export(
    destination: str,
    *,
    endpoint: str | None,
    experiment: str | None,
    run: str | None,
    headers: dict[str, str],
    capture_content: bool,
    s3_options: dict[str, Any],
    metrics: bool = True,
    timeout: float = 30.0,
) -> int:
    """Send the selected runs (and their metrics); 0 when every span and the metrics were
    accepted (or the receiver takes no metrics), 1 otherwise.

    Each request ends within ``timeout`` seconds (as ``OTLPExporter``'s); once every span
    was tried, what is still unsent (retries, and the metrics request, sent meanwhile)
    gets ``2 * timeout`` more, one deadline for both, then is aborted and counted as failed.
    """

    from .._export._exporter import TIMEOUT_MAX, OTLPExporter, resource
    from .._read._load import _files, _pattern, event_lines, names_asked
    from .._read._scan import find_event_files

    try:
        if not 0 < timeout <= TIMEOUT_MAX:  # NaN fails both
            raise ValueError(
                f"--timeout takes a positive number of seconds, at most {TIMEOUT_MAX:g}, got {timeout!r}"
            )
        config = OTLPExporter(
            endpoint, headers=headers, capture_content=capture_content, timeout=timeout, metrics=metrics
        )
        find_event_files(destination, experiment, run, **s3_options)
        files = _files(destination, _pattern(experiment, run), s3_options)
        writers = _writers(files)
    except (ValueError, FileNotFoundError, OSError, ImportError) as exc:
        return error("export", exc)
    # A writer of its own (service.instance.id): the live exporter's metric streams stay its.
    fields = resource()
    recorder = config.metrics_recorder(fields, backfill=True)
    sender = config.sender(fields)
    metrics_sender = None
    progress = _Progress(sum(len(batches) for batches in writers.values()))
    spans_sent = 0
    deadline = 0.0  # set once every span was tried: the end of what is unsent, spans and metrics
    # read_events' rules: the events whose own fields are the names asked (names that
    # differ only in case share a directory on some file systems); an unreadable line
    # skipped, its file named once with the count (warnings_on_stderr).
    names = names_asked(experiment, run)
    try:
        for batches in writers.values():
            assembler = config.assembler(recorder)
            for _batch, name, data in batches:
                with warnings_on_stderr("export"):
                    lines = list(event_lines(name, data, names, destination))
                for start in range(0, len(lines), _CHUNK):
                    spans = assembler.add(lines[start : start + _CHUNK])
                    sender.put(spans, block=True)
                    spans_sent += len(spans)
                progress.file_done(spans_sent, sender.exported)
            spans = assembler.close()
            sender.put(spans, block=True)
            spans_sent += len(spans)
        sender.flush(None)
        deadline = time.monotonic() + 2 * timeout
        if recorder is not None and recorder.points:
            metrics_sender = config.sender(fields, "metrics")
            metrics_sender.put([recorder.request()], block=True)
    finally:
        deadline = deadline or time.monotonic() + 2 * timeout
        sender.close(max(deadline - time.monotonic(), 0.0))
        if metrics_sender is not None:
            metrics_sender.close(max(deadline - time.monotonic(), 0.0))
        progress.end()
    return _outcome(sender, metrics_sender, recorder)


def _outcome(sender: Sender, metrics_sender: Sender | None, recorder: Metrics | None) -> int:
    """What was exported, printed; 0 if every span (and the metrics) was accepted, else 1."""
    print(
        f"exported {sender.exported} span(s) to {sender.url}"
        + (f", {sender.failed} failed" if sender.failed else "")
    )
    if metrics_sender is not None and recorder is not None:
        if metrics_sender.declined is not None:
            print(f"no metrics: {metrics_sender.url} answered {metrics_sender.declined} (it takes none)")
        elif metrics_sender.exported:
            print(f"exported {recorder.points} metric point(s) to {metrics_sender.url}")
    if sender.failed:
        return error("export", sender.last_error or f"{sender.failed} span(s) were not accepted")
    if metrics_sender is not None and metrics_sender.failed:
        return error("export", metrics_sender.last_error or "the metrics were not accepted")
    return 0


class _Progress:
    """``files 3/10, spans 1200 (1100 sent)`` on stderr, rewritten in place; only on a terminal."""

    def __init__(self, files: int) -> None:
        self._enabled = sys.stderr.isatty()
        self._files = files
        self._done = 0
        self._shown = 0.0

    def file_done(self, spans: int, sent: int) -> None:
        self._done += 1
        now = time.monotonic()
        if self._enabled and (now - self._shown >= _PROGRESS_EVERY or self._done == self._files):
            self._shown = now
            sys.stderr.write(f"\rfiles {self._done}/{self._files}, spans {spans} ({sent} sent)")
            sys.stderr.flush()

    def end(self) -> None:
        if self._enabled and self._shown:
            sys.stderr.write("\n")
