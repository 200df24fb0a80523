"""A test server run as a child process: its own process group, its files in a temporary
directory, its log read back when it fails to start. Imports nothing from ``asynctrack``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

_LOOPBACK = "127.0.0.1"


class ChildServer:
    """What ``MLflowServer`` and ``PhoenixServer`` share: ``stop()``, the log's tail and the
    context manager. A subclass starts ``_process`` (in a new session) in ``start()``."""

    #: Seconds between SIGTERM and SIGKILL of the server's process group.
    stop_grace = 10.0

    def __init__(self, *, start_timeout: float) -> None:
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._log: Path | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The server's base URL, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{_LOOPBACK}:{self.port}"

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server's process group and remove its files. Idempotent."""
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def _tail(self, limit: int = 4000) -> str:
        if self._log is None or not self._log.exists():
            return ""
        return self._log.read_bytes()[-limit:].decode("utf-8", "replace")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
