"""asynctrack: record every LangChain callback event, batch it to disk or S3, off the hot path."""

from __future__ import annotations

from ._config import TrackerConfig
from ._engine import Statistics
from ._errors import (
    AsyncTrackError,
    DeadlockError,
    FlushError,
    FlushTimeoutError,
    PermanentSinkError,
    SinkError,
    TrackerClosedError,
)
from ._load import load, read_events, read_parameters
from ._local import LocalSink
from ._sink import Batch, ParametersSink, RunInfo, Sink
from ._tracker import AsyncTracker

__version__ = "0.1.0"

__all__ = [
    "AsyncTrackError",
    "AsyncTracker",
    "Batch",
    "DeadlockError",
    "FlushError",
    "FlushTimeoutError",
    "LocalSink",
    "ParametersSink",
    "PermanentSinkError",
    "RunInfo",
    "Sink",
    "SinkError",
    "Statistics",
    "TrackerClosedError",
    "TrackerConfig",
    "load",
    "read_events",
    "read_parameters",
]
