"""How fast the machine runs right now, to read CPU figures taken on a shared machine.

Several engineers share this project's 2 cores: the same code can take 4x longer
from one minute to the next. Benchmarks that report CPU per event also report
``reference_us()``, taken during the run, against ``QUIET_US``.
"""

from __future__ import annotations

import json
import timeit

_EVENT = {
    "seq": 1,
    "ts": 1700000000.123,
    "kind": "llm_new_token",
    "experiment": "default",
    "run": "run-20261128-101010-abcdef",
    "tracker": "host-123-abcd",
    "run_id": "01a22190-6420-7671-8545-a1806f1eb2b9",
    "parent_run_id": None,
    "name": "ChatOpenAI",
    "data": {"token": " hello", "chunk": None},
    "tags": [],
    "metadata": {},
}

#: ``reference_us()`` on a quiet 2-core project machine (Python 3.11.7; stdlib ``json.dumps``
#: of a 300-byte event took 2.8 µs there, measured 2026-11-24).
QUIET_US = 2.8


def reference_us() -> float:
    """µs of stdlib ``json.dumps`` of a 314-byte event now (best of 5 x 5000)."""
    return min(timeit.repeat(lambda: json.dumps(_EVENT), number=5000, repeat=5)) / 5000 * 1e6
