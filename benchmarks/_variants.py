"""Handler variants of the overhead benchmark (main venv).

A variant opens a fresh handler per measurement and closes it at the end, so
every measurement pays its own final flush/close (``close`` returns how long).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import HERE, ROOT
from ._workloads import NoOpHandler


class Variant:
    name = ""
    label = ""
    group = "main"  # "legacy": measured by the legacy-venv worker against its own baseline

    def problem(self) -> str | None:
        """Why this variant cannot run here (it is then skipped with a note)."""
        return None

    def open(self, tag: str) -> Any:
        return None

    def callbacks(self, state: Any) -> list[Any]:
        return []

    def close(self, state: Any) -> dict[str, Any]:
        return {}

    async def aclose(self, state: Any) -> dict[str, Any]:
        return self.close(state)

    def shutdown(self) -> None:
        """Release what the variant shares across measurements."""


class NoHandler(Variant):
    name = "none"
    label = "no handler"


class Floor(Variant):
    name = "floor"
    label = "no-op inline handler (floor)"

    def open(self, tag: str) -> Any:
        return NoOpHandler()

    def callbacks(self, state: Any) -> list[Any]:
        return [state]


class AsyncTrackLocal(Variant):
    name = "asynctrack-local"
    label = "asynctrack → local dir"

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="asynctrack-bench-")
        self.totals = {"recorded": 0, "written": 0, "dropped": 0}

    def destination(self) -> str:
        return self._tmp.name

    def kwargs(self) -> dict[str, Any]:
        return {}

    def open(self, tag: str) -> Any:
        from asynctrack import AsyncTracker

        return AsyncTracker(self.destination(), experiment_name="bench", run_name=tag, **self.kwargs())

    def callbacks(self, state: Any) -> list[Any]:
        return [state]

    def _stats(self, tracker: Any) -> dict[str, Any]:
        s = tracker.statistics()
        for key in self.totals:
            self.totals[key] += getattr(s, key)
        return {"recorded": s.recorded, "written": s.written, "dropped": s.dropped, "batches": s.batches}

    def close(self, state: Any) -> dict[str, Any]:
        state.close()
        return self._stats(state)

    async def aclose(self, state: Any) -> dict[str, Any]:
        await state.aclose()
        return self._stats(state)

    def shutdown(self) -> None:
        self._tmp.cleanup()


class AsyncTrackThread(AsyncTrackLocal):
    name = "asynctrack-thread"
    label = "asynctrack → local dir (thread)"

    def kwargs(self) -> dict[str, Any]:
        from asynctrack import TrackerConfig

        return {"config": TrackerConfig(worker="thread")}


#: Records the capture-only variants keep: the last ones only, as the shipper would take
#: them away (keeping every record would burden the garbage collector, which shipping
#: does not).
CAPTURE_KEEP = 4096


def capture_only(tracker: Any, keep: int = CAPTURE_KEEP) -> collections.deque[Any]:
    """Make ``tracker`` capture only: its records go to a bounded deque of ``keep`` that
    nothing ships (returned)."""
    kept: collections.deque[Any] = collections.deque(maxlen=keep)
    tracker._put = kept.append
    return kept


class AsyncTrackCaptureOnly(AsyncTrackLocal):
    """The hot path alone: each callback captures its arguments and appends the record
    to a bounded deque that nothing ships (no shipper, no worker, no GIL shared with either).
    What any placement of the worker still costs the application: the lower bound of
    the other asynctrack variants."""

    name = "asynctrack-capture"
    label = "asynctrack, capture only (never shipped)"

    def open(self, tag: str) -> Any:
        tracker = super().open(tag)
        tracker._kept = capture_only(tracker)
        return tracker

    def _stats(self, tracker: Any) -> dict[str, Any]:
        return {"recorded": len(tracker._kept), "written": 0, "dropped": 0, "batches": 0}


class AsyncTrackS3(AsyncTrackLocal):
    name = "asynctrack-s3"
    label = "asynctrack → S3 (moto)"

    def __init__(
        self, endpoint_url: str | None, problem: str | None, bucket: str = "asynctrack-bench"
    ) -> None:
        super().__init__()
        self._endpoint = endpoint_url
        self._problem = problem
        self._bucket = bucket

    def problem(self) -> str | None:
        if self._problem:
            return self._problem
        if self._endpoint is None:
            return "moto is not running"
        return None

    def destination(self) -> str:
        return f"s3://{self._bucket}/overhead"

    def kwargs(self) -> dict[str, Any]:
        return {"endpoint_url": self._endpoint, "region_name": "us-east-1"}


class LangSmith(Variant):
    name = "langsmith"
    label = "LangSmith LangChainTracer (stub)"

    def __init__(self, stub_url: str) -> None:
        self._url = stub_url

    def problem(self) -> str | None:
        try:
            import langsmith  # noqa: F401
            from langchain_core.tracers.langchain import LangChainTracer  # noqa: F401
        except ImportError as exc:
            return f"langsmith not installed ({exc})"
        return None

    def open(self, tag: str) -> Any:
        import langsmith
        from langchain_core.tracers.langchain import LangChainTracer

        client = langsmith.Client(api_url=self._url, api_key="bench-not-a-key", auto_batch_tracing=True)
        return LangChainTracer(client=client, project_name="bench")

    def callbacks(self, state: Any) -> list[Any]:
        return [state]

    def close(self, state: Any) -> dict[str, Any]:
        state.client.flush()
        state.client.close()
        return {}


class Langfuse(Variant):
    name = "langfuse"
    label = "Langfuse CallbackHandler (stub)"

    def __init__(self, stub_url: str) -> None:
        self._url = stub_url
        self._client: Any = None

    def problem(self) -> str | None:
        try:
            import langfuse  # noqa: F401
            from langfuse.langchain import CallbackHandler  # noqa: F401
        except ImportError as exc:
            return f"langfuse not installed ({exc})"
        return None

    def _get_client(self) -> Any:
        if self._client is None:
            import logging

            from langfuse import Langfuse as Client

            # "could not parse the LLM model" per fake-LLM call: noise, not a failure.
            logging.getLogger("langfuse").setLevel(logging.ERROR)

            self._client = Client(
                public_key="pk-lf-bench",
                secret_key="sk-lf-bench",
                base_url=self._url,
                tracing_enabled=True,
            )
        return self._client

    def open(self, tag: str) -> Any:
        from langfuse.langchain import CallbackHandler

        self._get_client()
        return CallbackHandler(public_key="pk-lf-bench")

    def callbacks(self, state: Any) -> list[Any]:
        return [state]

    def close(self, state: Any) -> dict[str, Any]:
        self._get_client().flush()
        return {}

    def shutdown(self) -> None:
        if self._client is not None:
            self._client.shutdown()


# -- the old SageMaker handler, in its own venv ---------------------------------------------

LEGACY_VENV = Path(os.environ.get("ASYNCTRACK_BENCH_LEGACY_VENV", HERE / ".venv-legacy"))


class SageMakerLegacy(Variant):
    """langchain-community's SageMakerCallbackHandler, run by ``_legacy_worker`` in the legacy venv.

    The worker measures its own ``none`` baseline in the same round (same call
    counts), so the deltas of this variant are against that baseline.
    """

    name = "sagemaker-legacy"
    label = "SageMakerCallbackHandler + Run (moto, legacy venv)"
    group = "legacy"

    def __init__(self, endpoint_url: str | None) -> None:
        self._endpoint = endpoint_url
        self._proc: subprocess.Popen[str] | None = None
        self._problem: str | None = None
        self.info: dict[str, Any] = {}

    def problem(self) -> str | None:
        if self._problem is not None:
            return self._problem
        python = LEGACY_VENV / "bin" / "python"
        if not python.exists():
            self._problem = (
                f"legacy venv not found at {LEGACY_VENV} (build it with `bash benchmarks/setup_legacy_venv.sh`; "
                "sagemaker<3 cannot share the main venv: it downgrades sagemaker-core 2.27 → 1.0.x)"
            )
        elif self._endpoint is None:
            self._problem = "moto is not running"
        else:
            try:
                self.info = self._start(python)
            except Exception as exc:
                self.stop()
                self._problem = f"legacy worker failed to start: {exc}"
        return self._problem

    def _start(self, python: Path) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env["PYTHONPATH"] = str(ROOT)
        self._proc = subprocess.Popen(
            [str(python), "-m", "benchmarks._legacy_worker"],
            cwd=str(ROOT),
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            text=True,
            bufsize=1,
        )
        return self.call({"op": "setup", "endpoint_url": self._endpoint}, timeout=120)

    def call(self, request: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise RuntimeError("legacy worker not running")
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        deadline = time.monotonic() + timeout
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"legacy worker exited (code {proc.poll()})")
        if time.monotonic() > deadline:
            raise TimeoutError("legacy worker too slow")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                try:
                    proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                    proc.stdin.close()
                except OSError:
                    pass
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        finally:
            if proc.stdout is not None:
                proc.stdout.close()

    def shutdown(self) -> None:
        self.stop()
