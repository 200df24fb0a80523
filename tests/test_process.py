"""How a process ends, and what is on disk afterwards (issue: events lost at exit).

Each test runs ``tests/scripts/track_process.py`` with this interpreter in a child process
(its docstring lists the modes), talks to it over stdout (a JSON "ready" line), sends it a
signal where the scenario needs one, and then reads what it wrote. The script's tracker
writes nothing by itself before the end (batches of 10 000 events, an hour's
``batch_interval``), so what is found was written by a flush, a close or the exit hooks.
Every wait is bounded; a child still running when a test ends is killed.
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from _infra.aws import FaultProxy, MotoServer
from _infra.aws_fixtures import batch_events, list_keys
from botocore.client import BaseClient
from support import silent_endpoint

from asynctrack._cli import main as cli_main

pytest_plugins = ("_infra.aws_fixtures",)

SCRIPT = Path(__file__).resolve().parent / "scripts" / "track_process.py"
WAIT = 60.0  # seconds any child may take to get ready or to end


class Child:
    """The script running in a child process, with bounded reads of its stdout."""

    def __init__(
        self, tmp_path: Path, *args: str, env: dict[str, str] | None = None, stdin: bool = False
    ) -> None:
        child_env = dict(os.environ)
        child_env.pop("PYTHONWARNINGS", None)
        child_env["ASYNCTRACK_SPOOL_DIR"] = str(tmp_path / "spool")
        child_env.update(env or {})
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT), *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env,
            start_new_session=True,  # a Ctrl-C in the terminal is not also sent to the child
        )
        self._buffer = b""
        self.lines: list[dict[str, Any]] = []
        self.stderr = ""
        self.worker_mode = child_env.get("ASYNCTRACK_WORKER")  # set by the worker_mode fixture

    def _line(self, line: bytes) -> dict[str, Any]:
        info: dict[str, Any] = json.loads(line)
        if self.worker_mode is not None and "mode" in info:
            assert info["mode"] == self.worker_mode, f"asked for a {self.worker_mode} worker: {info}"
        self.lines.append(info)
        return info

    def read_line(self, timeout: float = WAIT) -> dict[str, Any]:
        """The child's next JSON line on stdout, waiting ``timeout`` seconds at most."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no line from the child within {timeout} s"
                if selector.select(remaining):
                    chunk = os.read(fd, 65536)
                    assert chunk, f"the child ended without a line; stderr:\n{self.finish()}"
                    self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return self._line(line)

    def send_line(self) -> None:
        """One line on the child's stdin (``stdin=True``)."""
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()

    def finish(self, timeout: float = WAIT) -> str:
        """Wait for the child to end; its stderr. Lines left on stdout go to ``lines``."""
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
            pytest.fail(f"the child did not end within {timeout} s; stderr:\n{err.decode()}")
        for line in (self._buffer + out).splitlines():
            if line.strip():
                self._line(line)
        self._buffer = b""
        self.stderr = err.decode("utf-8", "replace")
        return self.stderr

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.communicate(timeout=WAIT)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Children started by a test; killed at its end if still running."""
    started: list[Child] = []
    yield started
    for child in started:
        child.kill()


def start(
    children: list[Child],
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    stdin: bool = False,
) -> Child:
    child = Child(tmp_path, *args, env=env, stdin=stdin)
    children.append(child)
    return child


def files_of(destination: Path, mode: str) -> list[Path]:
    run = destination / "experiment=exp-process" / f"run={mode}"
    return sorted(path for path in run.glob("date=*/*.jsonl*") if not path.name.startswith("."))


def events_of(destination: Path, mode: str) -> list[dict[str, Any]]:
    """Every event of the run; every file must parse whole."""
    events = []
    for path in files_of(destination, mode):
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        assert data.endswith(b"\n"), f"{path} is not whole"
        events.extend(orjson.loads(line) for line in data.splitlines())
    return events


def assert_parent_events(events: list[dict[str, Any]], count: int) -> None:
    """Exactly ``parent-0 .. parent-<count-1>``, each once, with seq 0 .. count-1."""
    assert collections.Counter(e["seq"] for e in events) == collections.Counter(range(count))
    assert collections.Counter(e["data"]["text"] for e in events) == collections.Counter(
        f"parent-{i}" for i in range(count)
    )


def assert_clean(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "ResourceWarning" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr


# --------------------------------------------------------------------------------------
# Normal exit, SIGTERM, Ctrl-C
# --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("worker_mode")
def test_normal_exit_without_close_writes_every_event(tmp_path: Path, children: list[Child]) -> None:
    destination = tmp_path / "logs"
    child = start(children, tmp_path, "exit", str(destination), "5000")
    assert_clean(child.finish())
    assert child.process.returncode == 0
    assert child.lines[0]["ready"] is True
    assert_parent_events(events_of(destination, "exit"), 5000)


@pytest.mark.usefixtures("worker_mode")
def test_sigterm_flushes_within_the_exit_timeout_and_dies_of_sigterm(
    tmp_path: Path, children: list[Child]
) -> None:
    destination = tmp_path / "logs"
    exit_timeout = 5.0
    child = start(
        children,
        tmp_path,
        "sigterm",
        str(destination),
        "5000",
        env={"ASYNCTRACK_EXIT_TIMEOUT": str(exit_timeout)},
    )
    assert child.read_line()["ready"] is True
    assert files_of(destination, "sigterm") == []  # nothing written before the signal
    child.process.send_signal(signal.SIGTERM)
    stderr = child.finish()
    assert child.process.returncode == -signal.SIGTERM, stderr
    assert_clean(stderr)
    # How long it took is not asserted (it is this machine's speed); that the exit timeout
    # bounds the close is shown by test_exit_against_a_silent_s3_endpoint_keeps_its_deadline.
    assert_parent_events(events_of(destination, "sigterm"), 5000)


@pytest.mark.usefixtures("worker_mode")
def test_ctrl_c_flushes_every_event(tmp_path: Path, children: list[Child]) -> None:
    destination = tmp_path / "logs"
    child = start(children, tmp_path, "sigint", str(destination), "5000")
    assert child.read_line()["ready"] is True
    child.process.send_signal(signal.SIGINT)
    stderr = child.finish()
    # An uncaught KeyboardInterrupt ends Python by SIGINT (since 3.8), after the exit hooks.
    assert child.process.returncode == -signal.SIGINT, stderr
    assert "KeyboardInterrupt" in stderr
    assert_parent_events(events_of(destination, "sigint"), 5000)


# --------------------------------------------------------------------------------------
# S3 down at exit: the batches wait in the spool, and are delivered once later
# --------------------------------------------------------------------------------------


@pytest.mark.aws
@pytest.mark.usefixtures("aws_env")
@pytest.mark.usefixtures("worker_mode")
def test_s3_down_at_exit_leaves_the_batches_in_the_spool(
    moto: MotoServer,
    s3: BaseClient,
    bucket: str,
    tmp_path: Path,
    children: list[Child],
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    exit_timeout = 2.0
    child = start(
        children,
        tmp_path,
        "s3down",
        f"s3://{bucket}/exit",
        "3000",
        "0",
        f"http://127.0.0.1:{closed_port}",
        env={"ASYNCTRACK_EXIT_TIMEOUT": str(exit_timeout)},
    )
    stderr = child.finish()
    assert child.process.returncode == 0, stderr
    assert "spool" in stderr  # the exit hook says where the events are
    spooled = sorted((tmp_path / "spool").rglob("*.batch"))
    assert spooled, stderr
    assert sum(int(path.name.split(".", 1)[0]) for path in spooled) == 3000
    assert list_keys(s3, bucket) == []

    assert cli_main(["replay", str(tmp_path / "spool"), "--endpoint-url", moto.endpoint_url]) == 0
    assert "3000 event(s); 0 still spooled" in capsys.readouterr().out
    events = [
        e for key in list_keys(s3, bucket) if "/params/" not in key for e in batch_events(s3, bucket, key)
    ]
    assert_parent_events(events, 3000)
    assert list((tmp_path / "spool").rglob("*.batch")) == []


# --------------------------------------------------------------------------------------
# fork() and SIGKILL
# --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("worker_mode")
def test_forked_child_writes_only_its_own_events_under_its_own_writer(
    tmp_path: Path, children: list[Child]
) -> None:
    """The parent records 1000 events (taken by its worker, unwritten), forks; the child
    records 300, flushes and closes; then the parent flushes. Each process's events are on
    disk once, under its own writer id: in the file names, in each event's ``tracker``
    field and in its parameters document."""
    parent_n, child_m = 1000, 300
    destination = tmp_path / "logs"
    child = start(children, tmp_path, "fork", str(destination), str(parent_n), str(child_m))
    stderr = child.finish()
    assert child.process.returncode == 0, stderr
    assert_clean(stderr)
    assert (child.lines[-1]["ready"], child.lines[-1]["child_exit"]) == (True, 0), child.lines

    by_file_writer: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for path in files_of(destination, "fork"):
        writer = path.name.split("-", 1)[1].rsplit("-", 1)[0]  # <HHMMSS>-<writer>-<batch>.jsonl
        data = path.read_bytes()
        by_file_writer[writer].extend(orjson.loads(line) for line in data.splitlines())
    assert len(by_file_writer) == 2, sorted(by_file_writer)
    texts = {w: {e["data"]["text"] for e in events} for w, events in by_file_writer.items()}
    (parent,) = [w for w, t in texts.items() if any(x.startswith("parent-") for x in t)]
    (forked,) = [w for w in by_file_writer if w != parent]
    parent_events, child_events = by_file_writer[parent], by_file_writer[forked]

    # Exactly once each: the child never re-sent the parent's buffered events.
    assert_parent_events(parent_events, parent_n)
    assert collections.Counter(e["data"]["text"] for e in child_events) == collections.Counter(
        f"child-{i}" for i in range(child_m)
    )
    # Each event names the writer whose file it is in.
    assert {e["tracker"] for e in parent_events} == {parent}
    assert {e["tracker"] for e in child_events} == {forked}
    # The child's sequence numbers are its own: consecutive, no gap within its events.
    child_seqs = sorted(e["seq"] for e in child_events)
    assert child_seqs == list(range(child_seqs[0], child_seqs[0] + child_m))

    params = destination / "experiment=exp-process" / "run=fork" / "params"
    documents = {path.stem: orjson.loads(path.read_bytes()) for path in params.glob("*.json")}
    assert sorted(documents) == sorted([parent, forked])
    assert documents[parent]["parameters"]["events_total"] == parent_n
    assert documents[forked]["parameters"]["events_total"] == child_m


@pytest.mark.usefixtures("worker_mode")
def test_sigkill_loses_at_most_the_events_after_the_last_flush(tmp_path: Path, children: list[Child]) -> None:
    """1000 events, flush, 15 000 more without a flush (one 10 000-event batch may be sealed
    and be written, or be in flight), SIGKILL: the flushed 1000 are there, at most all
    16 000, none twice, and every file on disk is whole."""
    flushed, unflushed = 1000, 15_000
    destination = tmp_path / "logs"
    child = start(children, tmp_path, "sigkill", str(destination), str(flushed), str(unflushed))
    assert child.read_line()["ready"] is True
    child.process.send_signal(signal.SIGKILL)
    child.finish()
    assert child.process.returncode == -signal.SIGKILL

    events = events_of(destination, "sigkill")  # every file parses whole
    seqs = collections.Counter(e["seq"] for e in events)
    assert all(n == 1 for n in seqs.values()), "an event was written twice"
    assert set(range(flushed)) <= set(seqs) <= set(range(flushed + unflushed))
    assert flushed <= len(events) <= flushed + unflushed
    assert all(e["data"]["text"] == f"parent-{e['seq']}" for e in events)


# --------------------------------------------------------------------------------------
# Lifecycle holes: a signal during close(), fork with S3, an S3 endpoint that never answers
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_close_waits_for_that_close(
    tmp_path: Path, children: list[Child], signum: signal.Signals
) -> None:
    """The signal arrives while ``close()`` is writing (the destination holds the write until
    the test releases it, after the signal). The exit waits for that close: every event is
    on disk, and the process still dies of its signal. (The closing engine had left the set
    the signal handler and the exit hook close: the backlog was lost.)"""
    mode = "closeterm" if signum == signal.SIGTERM else "closeint"
    destination = tmp_path / "logs"
    child = start(children, tmp_path, mode, str(destination), "3000", stdin=True)
    assert child.read_line()["closing"] is True
    child.process.send_signal(signum)
    child.send_line()  # release the write, after the signal
    stderr = child.finish()
    assert child.process.returncode == -signum, stderr
    assert "signal did not end" not in json.dumps(child.lines)
    assert_parent_events(events_of(destination, mode), 3000)


@pytest.mark.aws
@pytest.mark.usefixtures("aws_env")
@pytest.mark.usefixtures("worker_mode")
def test_a_forked_child_writes_to_s3_on_its_own_loop(
    proxy: FaultProxy, s3: BaseClient, bucket: str, tmp_path: Path, children: list[Child]
) -> None:
    """The parent's S3 client exists (bound to its worker's loop, with a kept-alive
    connection in its pool: the proxy speaks HTTP/1.1 as S3 does, where moto alone closes
    each connection) when it forks. The child records, flushes and closes, within 20 s, and
    its events reach S3; so do the parent's. (The child reused the parent's client and its
    connection: its flushes timed out, none of its events reached S3.)"""
    n, m = 200, 300
    child = start(children, tmp_path, "forks3", f"s3://{bucket}/fork", str(n), str(m), proxy.endpoint_url)
    stderr = child.finish()
    assert child.process.returncode == 0, stderr
    assert (child.lines[-1]["ready"], child.lines[-1]["child_exit"]) == (True, 0), (child.lines, stderr)
    events = [
        e for key in list_keys(s3, bucket) if "/params/" not in key for e in batch_events(s3, bucket, key)
    ]
    texts = collections.Counter(e["data"]["text"] for e in events)
    assert texts == collections.Counter(
        [*(f"parent-{i}" for i in range(2 * n)), *(f"child-{i}" for i in range(m))]
    )
    writers = {e["tracker"] for e in events if e["data"]["text"].startswith("child-")}
    assert len(writers) == 1
    assert writers.isdisjoint(e["tracker"] for e in events if e["data"]["text"].startswith("parent-"))


@pytest.mark.usefixtures("worker_mode")
def test_exit_against_a_silent_s3_endpoint_keeps_its_deadline_and_spools(
    tmp_path: Path, children: list[Child]
) -> None:
    """S3 accepts connections and never answers, from the start, with 600 s timeouts; the
    process exits without closing under ``ASYNCTRACK_EXIT_TIMEOUT=3``. Its exit ends by the
    deadline (the bound below is generous: a close that ignored it would take 600 s), every
    event is in the spool, and the message says so truthfully. (Exit took 20+ s, spooled
    nothing and said "0 lost".)"""
    exit_timeout, n = 3.0, 2000
    with silent_endpoint() as endpoint:
        child = start(
            children,
            tmp_path,
            "s3silent",
            "s3://silent-bucket/exit",
            str(n),
            "0",
            endpoint,
            env={"ASYNCTRACK_EXIT_TIMEOUT": str(exit_timeout)},
        )
        assert child.read_line()["ready"] is True
        stderr = child.finish(timeout=exit_timeout + 60.0)
    assert child.process.returncode == 0, stderr
    assert_clean(stderr)
    assert f"at close {n} event(s) were kept in the spool" in stderr, stderr
    assert "for the next tracker or 'asynctrack replay', 0 lost" in stderr, stderr
    spooled = sorted((tmp_path / "spool").rglob("*.batch"))
    assert sum(int(path.name.split(".", 1)[0]) for path in spooled) == n


def _running(pid: int) -> bool:
    """Whether process ``pid`` (no child of ours) runs: its /proc entry is there and not
    a zombie (state Z, after the command name in parentheses)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _spooled_events(spool: Path) -> int:
    return sum(int(path.name.split(".", 1)[0]) for path in spool.rglob("*.batch"))


def _close_against_a_silent_endpoint(
    tmp_path: Path, children: list[Child], endpoint: str, n: int, exit_timeout: float
) -> tuple[Child, dict[str, Any]]:
    """The ``silentclose`` child, once its first tracker's close(timeout=60) has begun."""
    child = start(
        children,
        tmp_path,
        "silentclose",
        "s3://silent-bucket/close",
        str(n),
        "0",
        endpoint,
        env={"ASYNCTRACK_EXIT_TIMEOUT": str(exit_timeout)},
    )
    line = child.read_line()
    assert line["closing"] is True
    return child, line


@pytest.mark.usefixtures("worker_mode")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_a_close_brings_that_close_to_the_exit_deadline_and_spools_it(
    tmp_path: Path, children: list[Child], signum: signal.Signals
) -> None:
    """Two trackers on an S3 endpoint that never answers; the signal comes while the first
    one's ``close(timeout=60)`` runs, under ``ASYNCTRACK_EXIT_TIMEOUT=3``. The exit closes
    both by its deadline: every event of both is in the spool, and the process ends within
    the exit timeout and the worker process's second to exit (the bound below allows 2 s
    of this machine's load on top). (In process mode the closing tracker's events were
    neither spooled nor counted: the exit neither waited for that close nor gave it its
    deadline, and the worker process was ended with the close's 60 s still running.)"""
    exit_timeout, n = 3.0, 600
    with silent_endpoint() as endpoint:
        child, _ = _close_against_a_silent_endpoint(tmp_path, children, endpoint, n, exit_timeout)
        started = time.monotonic()
        child.process.send_signal(signum)
        stderr = child.finish(timeout=exit_timeout + 60.0)
        took = time.monotonic() - started
    assert child.process.returncode == -signum, stderr
    assert _spooled_events(tmp_path / "spool") == 2 * n, stderr
    assert stderr.count(f"at close {n} event(s) were kept in the spool") == 2, stderr
    assert "not exit within" not in stderr, stderr
    assert took < exit_timeout + 1.0 + 2.0, (took, stderr)


@pytest.mark.usefixtures("worker_mode")
def test_a_sigkill_during_a_close_leaves_the_worker_process_to_spool_it_by_the_exit_deadline(
    tmp_path: Path, children: list[Child], worker_mode: str
) -> None:
    """The application is killed while a ``close(timeout=60)`` runs against an S3 endpoint
    that never answers. The worker process closes both trackers by its exit deadline
    (``ASYNCTRACK_EXIT_TIMEOUT``, from the end of its input): every event is spooled, and
    it exits before its watchdog. (That close kept its 60 s deadline: the worker gave up
    on it and exited, its events neither spooled nor counted.)"""
    if worker_mode == "thread":
        pytest.skip("a SIGKILL takes a thread worker with it")
    exit_timeout, n = 3.0, 600
    with silent_endpoint() as endpoint:
        child, line = _close_against_a_silent_endpoint(tmp_path, children, endpoint, n, exit_timeout)
        child.process.kill()
        child.finish()
        deadline = time.monotonic() + exit_timeout + 60.0
        while _running(line["worker"]):
            assert time.monotonic() < deadline, "the worker process did not end"
            time.sleep(0.05)
    assert _spooled_events(tmp_path / "spool") == 2 * n
