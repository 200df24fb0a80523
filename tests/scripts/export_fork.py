"""A tracker in thread mode with an OTLPExporter that forks (tests/test_export.py).

Usage::

    python export_fork.py DESTINATION ENDPOINT

The parent runs one chain named ``parent-before``, forks; the child runs three chains
named ``child`` and closes its tracker; then the parent runs ``parent-after`` and closes.
Prints the child's exit status.
"""

from __future__ import annotations

import os
import sys

from langchain_core.runnables import RunnableLambda

from asynctrack import AsyncTracker, OTLPExporter, TrackerConfig


def main() -> None:
    destination, endpoint = sys.argv[1], sys.argv[2]
    tracker = AsyncTracker(
        destination,
        experiment_name="fork",
        config=TrackerConfig(worker="thread"),
        exporters=[OTLPExporter(endpoint)],
    )
    config = {"callbacks": [tracker]}
    RunnableLambda(lambda x: x, name="parent-before").invoke(0, config=config)
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            for i in range(3):
                RunnableLambda(lambda x: x, name="child").invoke(i, config=config)
            tracker.close(timeout=20)
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    RunnableLambda(lambda x: x, name="parent-after").invoke(0, config=config)
    tracker.close(timeout=20)
    print(os.waitstatus_to_exitcode(status), flush=True)


if __name__ == "__main__":
    main()
