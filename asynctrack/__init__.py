"""asynctrack: record every LangChain callback event, batch it to disk or S3, off the hot path.

``S3Sink``, ``SageMakerParameters`` and ``SageMakerCallbackHandler`` need the ``s3``
or ``sagemaker`` extra (aiobotocore), ``MLflowParameters`` the ``mlflow`` extra; they
are imported on first use, so that ``import asynctrack`` stays light on the core
install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._config import TrackerConfig
from ._errors import (
    AsyncTrackError,
    DeadlockError,
    FlushError,
    FlushTimeoutError,
    PermanentSinkError,
    SinkError,
    TrackerClosedError,
)
from ._pipeline._engine import Statistics
from ._sinks._base import Batch, ParametersSink, RunInfo, RunSummary, RunSummarySink, Sink
from ._sinks._local import LocalSink

if TYPE_CHECKING:
    from ._langchain._handler import AsyncTracker
    from ._langchain._sagemaker_handler import SageMakerCallbackHandler
    from ._read._load import load, read_events, read_parameters
    from ._read._scan import scan
    from ._sinks._mlflow import MLflowParameters
    from ._sinks._s3 import S3Sink
    from ._sinks._sagemaker import SageMakerParameters

__version__ = "0.1.0"

# Imported on first use: the worker process imports this package too, and must start
# fast (LangChain's import alone takes ~0.3 s); extras' names need their extra.
_LAZY = {
    "AsyncTracker": "._langchain._handler",
    "load": "._read._load",
    "read_events": "._read._load",
    "read_parameters": "._read._load",
    "scan": "._read._scan",
    "MLflowParameters": "._sinks._mlflow",
    "S3Sink": "._sinks._s3",
    "SageMakerCallbackHandler": "._langchain._sagemaker_handler",
    "SageMakerParameters": "._sinks._sagemaker",
}


# The extra each optional name needs; the others are the core install's.
_EXTRA = {
    "load": "pandas",
    "scan": "polars",
    "MLflowParameters": "mlflow",
    "S3Sink": "s3",
    "SageMakerCallbackHandler": "sagemaker",
    "SageMakerParameters": "sagemaker",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'asynctrack' has no attribute {name!r}")
    import importlib

    try:
        value = getattr(importlib.import_module(module, __name__), name)
    except ImportError as exc:
        extra = _EXTRA.get(name)
        if extra is None:  # a core name that does not import: a broken install, said as it is
            raise
        raise ImportError(
            f"asynctrack.{name} needs the {extra} extra: pip install 'asynctrack[{extra}]' ({exc})"
        ) from exc
    globals()[name] = value
    return value


__all__ = [
    "AsyncTrackError",
    "AsyncTracker",
    "Batch",
    "DeadlockError",
    "FlushError",
    "FlushTimeoutError",
    "LocalSink",
    "MLflowParameters",
    "ParametersSink",
    "PermanentSinkError",
    "RunInfo",
    "RunSummary",
    "RunSummarySink",
    "S3Sink",
    "SageMakerCallbackHandler",
    "SageMakerParameters",
    "Sink",
    "SinkError",
    "Statistics",
    "TrackerClosedError",
    "TrackerConfig",
    "load",
    "read_events",
    "read_parameters",
    "scan",
]
