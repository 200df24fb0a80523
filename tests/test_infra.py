"""The test servers' tether (``_infra.child_server``): a test process that dies, even by
SIGKILL, leaves no server behind; a server that fails at start is seen as exited."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from _infra.child_server import tethered, untether

TESTS = Path(__file__).resolve().parent

# A server that ignores SIGTERM (the worst case: only the SIGKILL after the grace ends it)
# and prints its pid.
SERVER = (
    "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print(os.getpid(), flush=True); time.sleep(600)"
)
# A test process: starts the server under the tether, prints the server's pid, waits.
HOLDER = f"""
import subprocess, sys, time
from _infra.child_server import tethered
server = tethered([sys.executable, "-c", {SERVER!r}], grace=1.0, stdout=subprocess.PIPE)
print(server.stdout.readline().decode().strip(), flush=True)
time.sleep(600)
"""


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)  # polling another process's end: no event to wait on
    return False


def test_a_test_process_killed_by_sigkill_leaves_no_server_behind() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
    ) as holder:
        try:
            assert holder.stdout is not None
            server = int(holder.stdout.readline())
            os.kill(server, 0)  # it runs
        finally:
            holder.kill()
    assert _gone(server, within=15), f"server {server} outlived its test process"


def test_untether_stops_a_server_that_ignores_sigterm() -> None:
    process = tethered([sys.executable, "-c", SERVER], grace=0.5, stdout=subprocess.PIPE)
    assert process.stdout is not None
    with process.stdout:
        server = int(process.stdout.readline())
    untether(process, timeout=5)
    assert process.returncode is not None
    assert _gone(server, within=15)


def test_a_server_that_exits_at_start_ends_its_tether_with_its_status() -> None:
    process = tethered([sys.executable, "-c", "raise SystemExit(3)"], grace=0.5)
    assert process.wait(timeout=30) == 3
    untether(process, timeout=5)  # idempotent on an ended tether
    killed = tethered([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"], grace=0.5)
    assert killed.wait(timeout=30) == 128 + signal.SIGKILL
    untether(killed, timeout=5)


def test_the_openai_stub_process_serves_real_calls_from_another_process() -> None:
    """``OpenAIStubProcess`` answers real ChatOpenAI calls as the in-process stub does, on
    127.0.0.1, with no thread of this process serving them, and its process ends with it."""
    import threading

    from _infra.openai_stub import OpenAIStubProcess, chat_model

    with OpenAIStubProcess() as stub:
        assert stub.url.startswith("http://127.0.0.1:")
        process = stub._process
        answer = chat_model(stub.url).invoke("echo: served elsewhere")
        assert answer.content == "served elsewhere"
        assert not [t for t in threading.enumerate() if t.name == "openai-stub"]
    assert process is not None and process.returncode is not None
