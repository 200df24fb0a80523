"""The seam between the engine and an exporter: what the worker calls, and when.

An ``Exporter`` is configuration (picklable: it crosses to the worker process inside the
tracker's spec); its ``start()`` makes the ``LineExporter`` that runs beside the engine.
The engine hands it every line it adds to the open batch (the same redacted bytes as
the files), asks it to flush at every flush, and closes it at close.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .._sinks._base import RunInfo

__all__ = ["Exporter", "ExportingSink", "LineExporter", "RecordExporter"]


@runtime_checkable
class LineExporter(Protocol):
    """A running exporter, called by the engine's worker thread."""

    def lines(self, lines: Sequence[bytes]) -> None:
        """Take recorded lines, in the order they are written. Never blocks, never raises."""

    def flush(self, timeout: float | None) -> str | None:
        """Wait (at most ``timeout`` seconds; ``None``: the exporter's own bound) until what
        was taken is sent; the error text if something failed, else ``None``."""

    def close(self, timeout: float | None) -> None:
        """Send what is left within ``timeout`` seconds, then stop; nothing is left running."""

    def statistics(self) -> Mapping[str, int]:
        """Counters, named as the ``Statistics`` fields they add to (``spans_exported``,
        ``mlflow_traces_logged``, ...)."""


@runtime_checkable
class RecordExporter(LineExporter, Protocol):
    """A ``LineExporter`` that the engine may also tell each line's kind and run id, as
    it wrote them (it knows both): then the exporter need not read them from the line."""

    def records(self, lines: Sequence[bytes], kinds: Sequence[str], runs: Sequence[object]) -> None:
        """``lines(lines)`` of lines the engine wrote (its encoder's output: UTF-8), where
        ``lines[i]``'s ``kind`` is ``kinds[i]`` and its ``run_id`` is ``runs[i]`` (the text
        written, or a value that is not text: then not known). Never blocks, never raises."""


@runtime_checkable
class Exporter(Protocol):
    """An exporter's configuration: picklable, and started where the engine runs."""

    def start(self) -> LineExporter:
        """Start the exporter (its thread, its connection) in this process."""


@runtime_checkable
class ExportingSink(Protocol):
    """A parameter sink that also takes the recorded lines (``MLflowParameters``: traces).

    The engine asks it where the engine is built; what it returns runs beside the other
    exporters and sends through the sink's own connection.
    """

    def line_exporter(self, run: RunInfo) -> LineExporter | None:
        """The running exporter for ``run``'s lines, or ``None`` (turned off)."""
