"""The seam between the engine and destinations: plain data in, ``async`` calls out."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Protocol, runtime_checkable

__all__ = ["Batch", "ParameterValue", "ParametersSink", "RunInfo", "RunSummary", "RunSummarySink", "Sink"]

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
        seqs: the sequence numbers of its events, in line order, when the batch was
            made in this process (``None`` for one read back from a spool).
    """

    key: str
    data: bytes
    events: int
    first_seq: int
    last_seq: int
    gzip: bool = False
    spool_path: str | None = None
    seqs: list[int] | None = dataclasses.field(default=None, repr=False, compare=False)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunInfo:
    """The run a tracker records: names and where its events are."""

    experiment: str
    run: str
    events_uri: str


# eq=False: compare as a mapping (Mapping.__eq__), equal to the same flat dict.
@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class RunSummary(Mapping[str, ParameterValue]):
    """A run's parameters and metrics, as one flush sees them.

    As a mapping it is the flat dictionary every ``ParametersSink`` has always
    received (hyperparameters, ``events_<kind>``, ``tokens_<kind>``), so code that
    takes a ``Mapping`` keeps working; ``hyperparameters`` and ``metrics`` are the
    two halves a sink with separate notions (MLflow) wants.

    Attributes:
        hyperparameters: the model settings the run used (``model_name``,
            ``temperature``, ...): fixed for a run, strings or numbers.
        metrics: numbers that grow or change as the run goes on: events per kind,
            LLM calls, errors, tokens in and out, latency percentiles in seconds.
        flat: the flat dictionary the mapping reads.
    """

    hyperparameters: Mapping[str, ParameterValue]
    metrics: Mapping[str, float]
    flat: Mapping[str, ParameterValue]

    def __getitem__(self, key: str) -> ParameterValue:
        return self.flat[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.flat)

    def __len__(self) -> int:
        return len(self.flat)


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


@runtime_checkable
class RunSummarySink(Protocol):
    """A parameter sink that keeps parameters and metrics apart (MLflow).

    The engine calls ``write_summary`` instead of ``write_parameters`` on a sink
    that has it; a ``ParametersSink`` without it keeps receiving the flat mapping.
    """

    async def write_summary(self, run: RunInfo, summary: RunSummary) -> None:
        """Record ``summary`` for ``run`` (parameters once, metrics as a new step), or raise."""
        ...

    async def aclose(self) -> None:
        """Release resources. Called once, at the end."""
        ...
