"""A test server run as a child process: its own process group, its files in a temporary
directory, its log read back when it fails to start. Imports nothing from ``asynctrack``.

The server runs under a tether (:func:`tethered`): a small parent in the server's process
group that reads a pipe from the test process and, at its end of file, stops the group. The
pipe ends when the test process stops the server or dies, SIGKILL included, so a killed
pytest leaves no ``mlflow server`` (~300 MB) behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

_LOOPBACK = "127.0.0.1"

# The tether: starts argv as its child, blocks reading stdin, and at its end of file (the
# test process closed the pipe or died) sends SIGTERM to its process group (itself excepted),
# then SIGKILL to what is left after the grace. A server that exits by itself (a failed
# start) ends the tether with its status, as if the tether were the server.
_TETHER = """
import os, signal, subprocess, sys, threading
grace = float(sys.argv[1])
child = subprocess.Popen(sys.argv[2:])
stopping = threading.Event()
def watch():
    status = child.wait()
    if not stopping.is_set():
        os._exit(status if status >= 0 else 128 - status)
threading.Thread(target=watch, daemon=True).start()
signal.signal(signal.SIGTERM, signal.SIG_IGN)
while os.read(0, 65536):
    pass
stopping.set()
if child.poll() is None:
    os.killpg(0, signal.SIGTERM)
    try:
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
signal.signal(signal.SIGTERM, signal.SIG_DFL)
os.killpg(0, signal.SIGKILL)
"""


def tethered(argv: list[str], *, grace: float, **options: Any) -> subprocess.Popen[bytes]:
    """``argv`` started in a new session under the tether; ``stdin`` is the tether's pipe.
    Close it (:func:`untether`) to stop the server, its group killed ``grace`` seconds after
    SIGTERM; if this process dies, the pipe ends too."""
    return subprocess.Popen(
        [sys.executable, "-c", _TETHER, str(grace), *argv],
        stdin=subprocess.PIPE,
        start_new_session=True,
        **options,
    )


def untether(process: subprocess.Popen[bytes], *, timeout: float) -> None:
    """Stop a child that exits at the end of its stdin (a :func:`tethered` server, the moto
    server): end the pipe, wait ``timeout`` seconds, then kill its process group. Reaped."""
    stdin: IO[bytes] | None = process.stdin
    if stdin is not None:
        with contextlib.suppress(OSError):
            stdin.close()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


class ChildServer:
    """What ``MLflowServer`` and ``PhoenixServer`` share: ``stop()``, the log's tail and the
    context manager. A subclass starts ``_process`` with :func:`tethered` in ``start()``."""

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
            untether(process, timeout=self.stop_grace + 5)
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
