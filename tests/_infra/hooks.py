"""``redact`` hooks for tests: module-level, so they can cross to the worker process."""

from __future__ import annotations

import logging
import os
import time
from typing import Any


def stamp_worker_pid(event: dict[str, Any]) -> dict[str, Any]:
    """Record which process ran the hook, and say so on the ``asynctrack`` logger."""
    event["metadata"]["hook_pid"] = os.getpid()
    logging.getLogger("asynctrack").warning("hook ran in process %d", os.getpid())
    return event


#: The environment variable naming the gate file of ``wait_for_gate`` (``ASYNCTRACK_``
#: variables cross to the worker process with the tracker).
GATE_VARIABLE = "ASYNCTRACK_TEST_GATE"


def wait_for_gate(event: dict[str, Any]) -> dict[str, Any]:
    """Hold the engine's worker thread until the file named by ``GATE_VARIABLE`` exists
    (a gate that works across processes; bounded: 60 s)."""
    gate = os.environ.get(GATE_VARIABLE, "")
    deadline = time.monotonic() + 60.0
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.005)
    return event
