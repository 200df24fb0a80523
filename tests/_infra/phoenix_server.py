"""A real Arize Phoenix server for the tests: ``phoenix serve`` in a child process on ``127.0.0.1``.

Like :mod:`_infra.mlflow_server`, it imports nothing from ``asynctrack``. The server
(``arize-phoenix``, in the ``test-phoenix`` extra only: it cannot share an environment
with the ``mlflow`` server of the ``test`` extra, whose ``graphene`` needs ``graphql-core``
below 3.3 where Phoenix needs 3.3) keeps its SQLite store in a temporary working
directory, sends no telemetry and fetches nothing from the internet
(``PHOENIX_TELEMETRY_ENABLED=false``, ``PHOENIX_ALLOW_EXTERNAL_RESOURCES=false``).
Starting takes 13-14 s of CPU (imports, then its schema migrations), 35-80 s of wall
time on a busy 2-core machine: start one per test module.

Phoenix always opens its OTLP/gRPC receiver too, on every interface (``[::]``) whatever
``PHOENIX_HOST`` says; the launcher binds it to 127.0.0.1 instead, so that nothing
the tests start listens beyond the loopback.

Spans are read back through Phoenix's REST API (``GET /v1/projects/{project}/spans``),
which shows them as Phoenix stores them: its OpenInference attributes
(``llm.model_name``, ``llm.token_count.prompt``, ``openinference.span.kind``...) made
from the ``gen_ai.*`` ones on ingestion, beside those sent.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Self

from _infra.child_server import ChildServer, tethered
from _infra.mlflow_server import free_port

__all__ = ["PhoenixServer"]

_LOOPBACK = "127.0.0.1"

# ``phoenix serve``, with its gRPC receiver bound to the loopback (grpc.aio's server
# has no other seam for the address Phoenix hard-codes).
_LAUNCH = """
import sys
import grpc.aio._server as grpc_server
from phoenix.server.main import main

_add = grpc_server.Server.add_insecure_port
grpc_server.Server.add_insecure_port = lambda self, address: _add(
    self, address.replace("[::]", "127.0.0.1", 1)
)
sys.argv = ["phoenix", "serve"]
main()
"""


class PhoenixServer(ChildServer):
    """``phoenix serve`` with a SQLite store in a temporary directory.

    Args:
        start_timeout: seconds to wait for ``/readyz`` to answer.
    """

    def __init__(self, *, start_timeout: float = 180.0) -> None:
        super().__init__(start_timeout=start_timeout)
        self.started_in = 0.0  # seconds from launch to ready

    def start(self) -> Self:
        """Start the server and return once ``/readyz`` answers.

        Raises:
            RuntimeError: the server exited or did not answer in time (with its log).
        """
        self._dir = tempfile.TemporaryDirectory(prefix="asynctrack-phoenix-")
        root = Path(self._dir.name)
        self._log = root / "server.log"
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "OTEL_", "AWS_"))}
        env.update(
            PHOENIX_HOST=_LOOPBACK,
            PHOENIX_PORT=str(self.port),
            PHOENIX_GRPC_PORT=str(free_port()),
            PHOENIX_WORKING_DIR=str(root),
            PHOENIX_TELEMETRY_ENABLED="false",
            PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
            PHOENIX_LOG_MIGRATIONS="false",
        )
        began = time.monotonic()
        with self._log.open("wb") as log:
            self._process = tethered(
                [sys.executable, "-c", _LAUNCH],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=root,
                grace=self.stop_grace,
            )
        deadline = began + self._start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = self._tail()
                self.stop()
                raise RuntimeError(f"phoenix serve exited at start:\n{tail}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as answer,
            ):
                if answer.status == 200:
                    self.started_in = time.monotonic() - began
                    return self
            time.sleep(0.25)  # polling a child process's readiness: no event to wait on
        tail = self._tail()
        self.stop()
        raise RuntimeError(f"phoenix serve not ready after {self._start_timeout:g} s:\n{tail}")

    def spans(self, project: str) -> list[dict[str, Any]]:
        """Every span of ``project`` as Phoenix's REST API gives it (``[]`` if no such project)."""
        return self._pages(project, "spans")

    def sessions(self, project: str) -> list[dict[str, Any]]:
        """The sessions of ``project`` (``session_id``, ``traces``, token counts)."""
        return self._pages(project, "sessions")

    def _pages(self, project: str, what: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
            address = f"{self.url}/v1/projects/{urllib.parse.quote(project)}/{what}?"
            try:
                with urllib.request.urlopen(address + urllib.parse.urlencode(query), timeout=10) as answer:
                    page = json.load(answer)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:  # the project is made by its first span
                    return []
                raise
            items.extend(page["data"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    def wait_for_spans(self, project: str, n: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        """The spans of ``project`` once at least ``n`` are stored (Phoenix inserts them in
        the background, after it answered the export); ``TimeoutError`` at ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans(project)
            if len(spans) >= n:
                return spans
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(spans)} span(s) in Phoenix project {project!r}, waited for {n}")
            time.sleep(0.2)  # Phoenix's inserts have no notification to wait on
