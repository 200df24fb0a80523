"""``redact`` hooks for tests: module-level, so they can cross to the worker process."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from typing import IO, Any


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


def slow_hook(event: dict[str, Any]) -> dict[str, Any]:
    """A worker slower than its producers: ~10 µs of work per event."""
    sum(range(200))
    return event


class WorkerGate:
    """A ``redact`` hook that holds the worker, thread or process, while the test holds the gate.

    Picklable (a module-level class holding two paths), so it crosses to the worker process
    as it is. The gate is an ``fcntl`` lock on a file, which conflicts between any two open
    files, in one process or two: the test takes it exclusively (``hold``); the hook, on the
    worker, marks that it has entered and waits for a shared lock, which it gets once the
    test lets go (``release``). Every event after that passes at once.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.lock_path = os.path.join(directory, "gate.lock")
        self.entered_path = os.path.join(directory, "gate.entered")
        self._held: IO[bytes] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"lock_path": self.lock_path, "entered_path": self.entered_path, "_held": None}

    def hold(self) -> WorkerGate:
        self._held = open(self.lock_path, "wb")  # noqa: SIM115 - released by release()
        fcntl.flock(self._held, fcntl.LOCK_EX)
        return self

    def release(self) -> None:
        if self._held is not None:
            fcntl.flock(self._held, fcntl.LOCK_UN)
            self._held.close()
            self._held = None

    def wait_entered(self, timeout: float) -> bool:
        """Whether the worker reached the gate within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.entered_path):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        if not os.path.exists(self.entered_path):
            open(self.entered_path, "wb").close()
            with open(self.lock_path, "rb") as lock:
                fcntl.flock(lock, fcntl.LOCK_SH)  # waits while the test holds the gate
        return event
