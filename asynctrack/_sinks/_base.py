"""The seam between the engine and destinations: plain data in, ``async`` calls out."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

__all__ = ["Batch", "ParameterValue", "ParametersSink", "RunInfo", "Sink"]

ParameterValue = str | int | float


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    """One file's worth of encoded events.

    Attributes:
        key: where it goes, relative to the destination (see ``_layout``).
        data: the file's bytes (JSON Lines, gzipped when ``gzip``).
        events: how many events (lines) it holds.
        first_seq: the lowest sequence number in it.
        last_seq: the highest sequence number in it.
        gzip: whether ``data`` is gzip-compressed.
        spool_path: where the batch waits in the spool, if it does; ``data`` may
            then be empty until it is loaded for a write.
    """

    key: str
    data: bytes
    events: int
    first_seq: int
    last_seq: int
    gzip: bool = False
    spool_path: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunInfo:
    """The run a tracker records: names and where its events are."""

    experiment: str
    run: str
    events_uri: str


@runtime_checkable
class Sink(Protocol):
    """A destination for batches. Every method runs on the worker's event loop.

    ``write_batch`` must be idempotent per key: the engine retries a failed batch
    under the same key, so a retry can never duplicate events.
    """

    @property
    def destination(self) -> str:
        """Where the files go, for messages and ``RunInfo`` (``/dir`` or ``s3://b/p``)."""
        ...

    async def start(self) -> None:
        """Check the destination can be written (raise ``PermanentSinkError`` if not)."""
        ...

    async def write_batch(self, batch: Batch) -> None:
        """Store ``batch`` durably under ``batch.key``, or raise."""
        ...

    async def write_document(self, key: str, data: bytes) -> None:
        """Store a small document (run parameters) under ``key``, replacing it."""
        ...

    async def aclose(self) -> None:
        """Release connections. Called once, after the last write."""
        ...


@runtime_checkable
class ParametersSink(Protocol):
    """Receives a run's parameters whenever the tracker flushes."""

    async def write_parameters(self, run: RunInfo, parameters: Mapping[str, ParameterValue]) -> None:
        """Record ``parameters`` for ``run`` (replacing earlier values), or raise."""
        ...

    async def aclose(self) -> None:
        """Release resources. Called once, at the end."""
        ...
