"""``redact`` hooks for tests: module-level, so they can cross to the worker process."""

from __future__ import annotations

import logging
import os
from typing import Any


def stamp_worker_pid(event: dict[str, Any]) -> dict[str, Any]:
    """Record which process ran the hook, and say so on the ``asynctrack`` logger."""
    event["metadata"]["hook_pid"] = os.getpid()
    logging.getLogger("asynctrack").warning("hook ran in process %d", os.getpid())
    return event
