"""Runs langchain-community's ``SageMakerCallbackHandler`` in the legacy venv (SageMaker SDK v2).

Started by ``_variants.SageMakerLegacy`` as ``<legacy venv>/bin/python -m
benchmarks._legacy_worker``; it speaks one JSON object per line on stdin/stdout:

- ``{"op": "setup", "endpoint_url": URL}``: create a bucket, a SageMaker ``Session``
  and one ``Run`` against moto (the SDK allows one run context per process);
- ``{"op": "measure", "variant": "none" | "sagemaker", "workload": W, "calls": N}``:
  run the workload once; reply with ``setup_s``, ``calls_s``, ``final_s``;
- ``{"op": "quit"}``.

Two benchmark-only changes to the legacy handler's environment, both so that the
figure is the *steady-state* cost a user pays per event rather than an error path:

- the SDK's 30-artifacts-per-run limit (``MAX_RUN_TC_ARTIFACTS_LEN``) is lifted and
  the run's artifact maps are emptied before each measurement: otherwise every event
  after the 30th raises ``ValueError`` before uploading (LangChain logs it), and the
  "cost" would drop to that of a logged exception;
- LangChain's per-event warnings (3 of the 6 events of ``prompt | llm`` raise
  ``AttributeError`` in this handler) go to a ``NullHandler``: they are still
  created and dispatched (that cost is counted), just not printed.

Telemetry is opted out in ``sagemaker_config``; the loopback guard refuses any
non-loopback host anyway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
import warnings
from typing import Any

from ._common import aws_test_env, install_loopback_guard, quiet_peer_env
from ._workloads import WORKLOADS, run_async, run_stream, run_sync

BUCKET = "asynctrack-bench-legacy"


class Worker:
    def __init__(self) -> None:
        self.run: Any = None
        self.handler_cls: Any = None
        self.chains: dict[str, Any] = {}

    def setup(self, endpoint_url: str) -> dict[str, Any]:
        aws_test_env(endpoint_url)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import boto3
            import sagemaker
            import sagemaker.experiments.run as run_module
            from langchain_community.callbacks.sagemaker_callback import SageMakerCallbackHandler
            from sagemaker.experiments.run import Run
            from sagemaker.session import Session
        root = logging.getLogger()
        root.handlers[:] = [logging.NullHandler()]
        root.setLevel(logging.WARNING)  # the SDK sets the root logger to INFO on import
        run_module.MAX_RUN_TC_ARTIFACTS_LEN = 10**9
        boto_session = boto3.session.Session(region_name="us-east-1")
        s3 = boto_session.client("s3", endpoint_url=endpoint_url)
        s3.create_bucket(Bucket=BUCKET)
        session = Session(
            boto_session=boto_session,
            sagemaker_client=boto_session.client("sagemaker", endpoint_url=endpoint_url),
            default_bucket=BUCKET,
            sagemaker_config={
                "SchemaVersion": "1.0",
                "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
            },
        )
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.run = Run(
                experiment_name="asynctrack-bench", run_name="legacy-handler", sagemaker_session=session
            )
            self.run.__enter__()
        run_s = time.perf_counter() - t0
        self.handler_cls = SageMakerCallbackHandler
        import langchain_community
        import langchain_core

        return {
            "run_setup_s": run_s,
            "versions": {
                "sagemaker": sagemaker.__version__,
                "langchain-community": langchain_community.__version__,
                "langchain-core": langchain_core.__version__,
                "boto3": boto3.__version__,
            },
        }

    def measure(self, variant: str, workload_name: str, calls: int) -> dict[str, Any]:
        workload = WORKLOADS[workload_name]
        chain = self.chains.get(workload_name)
        if chain is None:
            chain = self.chains[workload_name] = workload.build()
        t0 = time.perf_counter()
        handler = None
        if variant == "sagemaker":
            tc = self.run._trial_component
            tc.output_artifacts.clear()
            tc.input_artifacts.clear()
            handler = self.handler_cls(self.run)
        callbacks = [handler] if handler is not None else []
        setup_s = time.perf_counter() - t0
        if workload.kind == "async":
            calls_s = asyncio.run(run_async(chain, callbacks, calls, workload.concurrency))
        elif workload.kind == "stream":
            calls_s = run_stream(chain, callbacks, calls)
        else:
            calls_s = run_sync(chain, callbacks, calls)
        t1 = time.perf_counter()
        if handler is not None:
            handler.flush_tracker()
        final_s = time.perf_counter() - t1
        return {"setup_s": setup_s, "calls_s": calls_s, "final_s": final_s}

    def quit(self) -> None:
        if self.run is not None:
            tc = self.run._trial_component
            tc.output_artifacts.clear()
            tc.input_artifacts.clear()
            try:
                self.run.__exit__(None, None, None)
            except Exception as exc:
                print(f"legacy worker: closing the run failed: {exc!r}", file=sys.stderr)


def main() -> None:
    install_loopback_guard()
    quiet_peer_env()
    # The protocol owns the real stdout; anything a library prints goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr
    worker = Worker()
    for line in sys.stdin:
        request = json.loads(line)
        op = request.get("op")
        try:
            if op == "setup":
                reply = worker.setup(request["endpoint_url"])
            elif op == "measure":
                reply = worker.measure(request["variant"], request["workload"], int(request["calls"]))
            elif op == "quit":
                break
            else:
                reply = {"error": f"unknown op {op!r}"}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
    worker.quit()
    out.close()


if __name__ == "__main__":
    main()
