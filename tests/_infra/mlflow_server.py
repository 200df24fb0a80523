"""A real ``mlflow server`` for the tests: a child process on ``127.0.0.1``.

Like :mod:`_infra.aws`, it imports nothing from ``asynctrack``. The server (the full
``mlflow`` package, in the ``test`` extra only) stores runs in a SQLite file of its
own and starts in its own process group, so that :meth:`MLflowServer.stop` ends
uvicorn and MLflow's job runner with it. Starting takes 5-30 s on a busy machine:
start one per test module.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from _infra.child_server import ChildServer, tethered

__all__ = ["MLflowServer", "free_port", "migrated_store"]

_LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    ``mlflow server`` cannot report the port it bound to, so it is given one; the
    small race (another process taking the port meanwhile) fails the start loudly.
    """
    with socket.socket() as probe:
        probe.bind((_LOOPBACK, 0))
        return int(probe.getsockname()[1])


def migrated_store(path: Path) -> Path:
    """An empty MLflow SQLite store at ``path``, its tables made: copy it for each test.

    A new store runs MLflow's schema migrations when first opened, 3-10 s on this
    machine; a copy of a migrated one opens in ~0.1 s.
    """
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


class MLflowServer(ChildServer):
    """``mlflow server`` with a SQLite store in a temporary directory.

    Args:
        start_timeout: seconds to wait for ``/health`` to answer.
        store: a migrated store (``migrated_store``) to start from, copied; else a new one.
    """

    #: uvicorn waits for open keep-alive connections (up to ~15 s): a test server with a
    #: throwaway store need not, so it is killed soon after.
    stop_grace = 3.0

    def __init__(self, *, start_timeout: float = 90.0, store: Path | None = None) -> None:
        super().__init__(start_timeout=start_timeout)
        self._store = store

    def start(self) -> Self:
        """Start the server and return once ``/health`` answers ``OK``.

        Raises:
            RuntimeError: the server exited or did not answer in time (with its log).
        """
        self._dir = tempfile.TemporaryDirectory(prefix="asynctrack-mlflow-")
        root = Path(self._dir.name)
        self._log = root / "server.log"
        if self._store is not None:
            shutil.copyfile(self._store, root / "mlflow.db")
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
        # The server's job runner starts several huey consumer processes, each importing MLflow
        # (~300 MB and seconds of CPU each); nothing these tests call needs a job.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        with self._log.open("wb") as log:
            self._process = tethered(
                [
                    sys.executable,
                    "-m",
                    "mlflow",
                    "server",
                    "--backend-store-uri",
                    f"sqlite:///{root / 'mlflow.db'}",
                    "--default-artifact-root",
                    str(root / "artifacts"),
                    "--host",
                    _LOOPBACK,
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=root,
                grace=self.stop_grace,
            )
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self.stop()
                raise RuntimeError(f"mlflow server exited at start:\n{self._tail()}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer,
            ):
                if answer.status == 200:
                    return self
            time.sleep(0.25)  # polling a child process's readiness: no event to wait on
        tail = self._tail()
        self.stop()
        raise RuntimeError(f"mlflow server not ready after {self._start_timeout:g} s:\n{tail}")
