"""What the worker process needs to acknowledge: durable events, and the tracker's environment.

The worker process acknowledges a shipped frame once each of its events is durable;
these hooks are how an engine tells it. Nothing here knows LangChain: the adapter's
``TrackerSpec`` wires them into the engine it builds.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from .._sinks._base import Batch

__all__ = ["ENV_PREFIXES", "DurableHooks", "Packed", "apply_environ", "batch_seqs", "durable_seqs"]

#: Environment variables a tracker's worker side reads (credentials, endpoints, sinks).
ENV_PREFIXES: Final = ("AWS_", "MLFLOW_", "SAGEMAKER_", "ASYNCTRACK_", "OTEL_")

# Every line the translator writes starts with the envelope's first key.
_SEQ: Final = re.compile(rb'^\{"seq":(\d+)', re.MULTILINE)


def batch_seqs(batch: Batch) -> list[int]:
    """The sequence numbers of the events in ``batch``: kept by the batcher, or read back."""
    return batch.seqs if batch.seqs is not None else durable_seqs(batch.data, batch.gzip)


def durable_seqs(data: bytes, gzipped: bool) -> list[int]:
    """The sequence numbers of the events in a batch's bytes (a C regex scan)."""
    if gzipped:
        import gzip

        data = gzip.decompress(data)
    return [int(m) for m in _SEQ.findall(data)]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DurableHooks:
    """Told what became durable, so the worker process can acknowledge it.

    Attributes:
        batch: called with a batch once it is written or spooled (its ``seqs``, or
            failing that its bytes, say which events it holds: see ``batch_seqs``).
        filtered: called with the sequence number of an event the ``redact`` hook dropped.
        spooled: if given, called instead of ``batch`` with a batch saved to the spool.
    """

    batch: Callable[[Batch], None]
    filtered: Callable[[int], None]
    spooled: Callable[[Batch], None] | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Packed:
    """The engine's queue holds packed items (the worker process's frames of records):
    each is unpacked on the engine's thread, right before its records are translated,
    not on the thread that queued it.

    Attributes:
        records_in: how many records an item holds (read without unpacking it).
        unpack: the records of a chunk of items, in order (engine worker thread).
    """

    records_in: Callable[[Any], int]
    unpack: Callable[[Sequence[Any]], list[Any]]


def apply_environ(environ: Mapping[str, str]) -> None:
    """Make this process's ``ENV_PREFIXES`` variables those of ``environ`` (set, or unset).

    Only what differs is written: the worker process applies each new tracker's
    environment while earlier trackers' threads run, and C code on those threads may read
    the environment without the GIL (``getaddrinfo``, ``tzset``); glibc's ``setenv`` can
    move the array they read. Trackers of one application share one environment, so
    after the first nothing is written.
    """
    current = os.environ
    for key in [k for k in current if k.startswith(ENV_PREFIXES) and k not in environ]:
        del current[key]
    for key, value in environ.items():
        if current.get(key) != value:
            current[key] = value
