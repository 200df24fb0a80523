"""Fakes at the engine's seams, shared by the tests/test_engine*.py modules.

Sinks that hold, refuse or remember batches, a ``redact`` hook that holds the worker,
and helpers; each wait is bounded by ``JOIN``. The fixtures (``make_tracker``,
``worker_mode``, ``worker_gate``) are in ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asynctrack
from asynctrack import AsyncTracker, Batch, LocalSink

__all__ = [
    "JOIN",
    "BlockingHook",
    "FlakySink",
    "GatedSink",
    "MemorySink",
    "batch_files",
    "events_in",
    "join_threads",
    "start_thread",
    "text",
    "visible_batches",
    "wait_until",
]

JOIN = 30.0  # seconds any helper thread or wait may take, at most


def text(tracker: AsyncTracker, value: str) -> None:
    """Record one ``on_text`` event."""
    tracker.on_text(value, run_id=uuid.uuid4())


class GatedSink:
    """A local directory whose batch writes wait until ``gate`` is set.

    A remote destination as far as the tracker knows (not a ``LocalSink``), so what
    it has not taken at close is spooled.
    """

    def __init__(self, root: Path) -> None:
        self.local = LocalSink(root)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.keys: list[str] = []

    @property
    def destination(self) -> str:
        return self.local.destination

    async def start(self) -> None:
        await self.local.start()

    async def write_batch(self, batch: Batch) -> None:
        self.entered.set()
        await asyncio.to_thread(self.gate.wait, JOIN)
        await self.local.write_batch(batch)
        self.keys.append(batch.key)

    async def write_document(self, key: str, data: bytes) -> None:
        await self.local.write_document(key, data)

    async def aclose(self) -> None:
        await self.local.aclose()


class FlakySink(GatedSink):
    """A local directory that refuses batches while ``failing`` is true."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate.set()
        self.failing = True
        self.attempts = 0

    async def write_batch(self, batch: Batch) -> None:
        self.attempts += 1
        if self.failing:
            raise OSError("disk on fire")
        await super().write_batch(batch)


class MemorySink:
    """Keeps every batch in memory; ``failing`` makes writes raise."""

    def __init__(self, destination: str = "memory://test") -> None:
        self._destination = destination
        self.batches: list[Batch] = []
        self.documents: dict[str, bytes] = {}
        self.failing = False

    @property
    def destination(self) -> str:
        return self._destination

    async def start(self) -> None:
        return None

    async def write_batch(self, batch: Batch) -> None:
        if self.failing:
            raise OSError("destination down")
        self.batches.append(batch)

    async def write_document(self, key: str, data: bytes) -> None:
        self.documents[key] = data

    async def aclose(self) -> None:
        return None


class BlockingHook:
    """A ``redact`` hook that holds the worker on the first event until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(JOIN)
        return event


# -- helpers ------------------------------------------------------------------------------------


def events_in(destination: Path) -> list[dict[str, Any]]:
    return asynctrack.read_events(destination)


def batch_files(destination: Path) -> list[Path]:
    return sorted(p for p in destination.rglob("*") if p.is_file() and "/params/" not in str(p))


def visible_batches(destination: Path) -> list[Path]:
    """Batch files a reader sees (renamed into place; temporary files start with '.')."""
    return [p for p in destination.rglob("*.jsonl*") if not p.name.startswith(".")]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = JOIN) -> None:
    """Wait (bounded) for ``condition``, which another thread or process makes true."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.002)


def start_thread(thread: threading.Thread) -> threading.Thread:
    thread.start()
    return thread


def join_threads(*threads: threading.Thread) -> None:
    for thread in threads:
        thread.join(JOIN)
        assert not thread.is_alive(), f"{thread.name} did not finish within {JOIN} s"
