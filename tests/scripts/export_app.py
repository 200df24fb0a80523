"""An application that records runs with an OTLPExporter, then waits to be killed (tests/test_export.py).

Usage::

    python export_app.py DESTINATION ENDPOINT N

Runs N chains that end, starts one more that never ends, prints ``ready`` and sleeps
(60 s at most). Nothing is flushed or closed: whatever reaches the receiver after the
SIGKILL was sent by the worker process.
"""

from __future__ import annotations

import sys
import time
import uuid

from langchain_core.runnables import RunnableLambda

from asynctrack import AsyncTracker, OTLPExporter


def main() -> None:
    destination, endpoint, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tracker = AsyncTracker(destination, experiment_name="killed", exporters=[OTLPExporter(endpoint)])
    chain = RunnableLambda(lambda x: x, name="step")
    for i in range(n):
        chain.invoke(i, config={"callbacks": [tracker]})
    tracker.on_chain_start({}, {"question": "never answered"}, run_id=uuid.uuid4(), name="hangs")
    print("ready", flush=True)
    time.sleep(60)


if __name__ == "__main__":
    main()
