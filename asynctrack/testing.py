"""Test helpers for code that uses asynctrack, and for asynctrack itself.

- ``InMemorySink``: a destination that keeps batches in memory (and can be made
  to fail), for tests that want to look at what a tracker wrote.
- ``FakeOpenAI`` / ``FakeChatOpenAI``: offline stand-ins with OpenAI's
  hyperparameters, token usage and streaming (the seed notebook's LLM); they report
  provider ``openai`` (``ls_provider``, and so ``gen_ai.provider.name`` in an export).
"""

from __future__ import annotations

import gzip
from typing import Any

import orjson

from ._demo._fakes import FakeChatOpenAI, FakeOpenAI
from ._sinks._base import Batch

__all__ = ["FakeChatOpenAI", "FakeOpenAI", "InMemorySink"]


class InMemorySink:
    """Keeps every batch and document written to it; ``fail_next`` makes writes fail.

    Attributes:
        batches: the batches written, in order of completion.
        documents: the documents (run parameters) by key, latest value.
        fail_next: how many upcoming writes raise ``OSError`` (then it counts down).
    """

    def __init__(self, destination: str = "memory://") -> None:
        self._destination = destination
        self.batches: list[Batch] = []
        self.documents: dict[str, bytes] = {}
        self.fail_next = 0
        self.closed = False

    @property
    def destination(self) -> str:
        return self._destination

    async def start(self) -> None:
        return None

    async def write_batch(self, batch: Batch) -> None:
        self._maybe_fail()
        self.batches.append(batch)

    async def write_document(self, key: str, data: bytes) -> None:
        self._maybe_fail()
        self.documents[key] = data

    async def aclose(self) -> None:
        self.closed = True

    def events(self) -> list[dict[str, Any]]:
        """Every event written so far, decoded, in sequence order."""
        out: list[dict[str, Any]] = []
        for batch in self.batches:
            data = gzip.decompress(batch.data) if batch.gzip else batch.data
            out.extend(orjson.loads(line) for line in data.splitlines() if line)
        return sorted(out, key=lambda event: int(event.get("seq", -1)))

    def _maybe_fail(self) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise OSError("InMemorySink: injected failure")
