"""The worker process of an application process: start, reader, restart, fall back, exit.

One ``WorkerProcess`` per application process (a forked child makes its own) serves
every tracker of that process through their clients (``_client.ProcessEngine``):

- its ``Shipper`` (``_shipper``) takes what every tracker queued and writes each
  tracker's frames to the worker's stdin;
- the reader thread reads the worker's answers on its stdout and hands them to the
  trackers, re-emits the worker's log records, and, at end of file while we are not
  stopping, starts a new worker and re-sends every unacknowledged frame, in order;
  after ``_MAX_RESTARTS`` deaths within ``_RESTART_WINDOW`` seconds the trackers fall
  back to thread engines in this process;
- at exit (and on SIGTERM) ``close_all`` closes the trackers, then the channel: the
  worker drains and exits.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import itertools
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
import weakref
from typing import Final, Protocol, Self

from .._channel import FrameReader, Kind, encode_frame, write_all
from .._exit import exit_hooks, side_by_side
from ._shipper import Lane, Shipper

__all__ = [
    "Client",
    "EngineSpec",
    "WorkerProcess",
    "WorkerUnavailable",
    "close_all",
    "live",
    "worker_process",
]

logger = logging.getLogger("asynctrack")

_RESTART_WINDOW: Final = 10.0  # seconds; more than _MAX_RESTARTS deaths in it: give up
_MAX_RESTARTS: Final = 5
_STOP_GRACE: Final = 5.0  # seconds the worker gets to exit after the channel closes
#: Seconds past the exit deadline the application waits for the worker process: for its
#: answers (it closes by the deadline, but may answer late: still starting on a loaded
#: machine), then for it to exit. The exit ends by then; the worker goes on alone.
_EXIT_GRACE: Final = 1.0
_BOOT: Final = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_worker", "_boot.py"
)


class WorkerUnavailable(RuntimeError):
    """The worker process could not be started here (a thread worker is used instead)."""


class EngineSpec(Protocol):
    """A tracker's worker side as picklable data (``_langchain._spec.TrackerSpec``)."""

    @property
    def writer(self) -> str:
        """The writer id in the tracker's batch keys."""
        ...

    def with_writer(self, writer: str) -> Self:
        """The same spec under another writer id."""
        ...


class Client(Protocol):
    """What the worker process needs of a tracker's client (``_client.ProcessEngine``)."""

    lane: Lane
    spec: EngineSpec

    def answered(self, kind: Kind, number: int, payload: bytes) -> None: ...

    def statistics_from_worker(self, payload: bytes) -> None: ...

    def acknowledged(self, payload: bytes) -> None: ...

    def worker_died(self) -> None: ...

    def renew_writer(self, generation: int) -> None: ...

    def fall_back(self, reason: str) -> None: ...

    def start_close(self, timeout: float | None) -> None: ...

    def close(self, timeout: float | None = 30.0) -> None: ...

    def wait_closed(self, timeout: float) -> None: ...

    def after_fork_in_child(self) -> None: ...


class WorkerProcess:
    """The worker process of this application process, its shipper and its reader."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # the channel: process, pipes, registrations
        self._clients: dict[int, Client] = {}
        #: Clients that could not register here and fell back to a thread engine: a
        #: forked child renews them too (a fresh try at a worker process of its own).
        self.fallen: weakref.WeakSet[Client] = weakref.WeakSet()
        self._ids = itertools.count(1)
        self._process: subprocess.Popen[bytes] | None = None
        self._out_fd = -1  # we write: the worker's stdin
        self._in_fd = -1  # we read: the worker's stdout
        self._stopping = False
        self._shipper = Shipper(self._send_locked, self._lock)
        #: Ask the shipper to ship now (thread-safe; each tracker's queue calls it).
        self.wake = self._shipper.wake
        self._reader: threading.Thread | None = None
        self._deaths: collections.deque[float] = collections.deque(maxlen=_MAX_RESTARTS)
        self.restarts = 0
        self.failed: str | None = None
        self._pid = os.getpid()

    @property
    def pid(self) -> int | None:
        """The worker process's pid (``None`` before it is started)."""
        process = self._process
        return process.pid if process is not None else None

    def register(self, client: Client) -> None:
        """Serve ``client``: open its engine in the worker (started on first use).

        Raises:
            WorkerUnavailable: the worker process cannot be started here.
        """
        with self._lock:
            if self.failed is not None:
                raise WorkerUnavailable(self.failed)
            if self._process is None:
                self._spawn()
            lane = client.lane
            lane.tracker_id = next(self._ids)
            self._clients[lane.tracker_id] = client
            self._shipper.lanes[lane.tracker_id] = lane
            self._send_locked(encode_frame(Kind.OPEN, lane.tracker_id, 0, pickle.dumps(client.spec)))
            live.add(client)
            if self._reader is None:
                self._start_threads()

    def unregister(self, client: Client) -> None:
        # No channel lock: the reader calls this, and must never wait for the shipper
        # (which may be blocked writing to a worker that waits for the reader).
        self._clients.pop(client.lane.tracker_id, None)
        self._shipper.lanes.pop(client.lane.tracker_id, None)

    # -- process -------------------------------------------------------------------

    def _spawn(self) -> None:
        """Start the worker process (fork + exec: a few ms; its imports run in the child)."""
        executable = sys.executable
        if not executable or getattr(sys, "frozen", False):
            raise WorkerUnavailable("no Python executable to start a worker process with")
        env = dict(os.environ)
        # The worker must import what we import (this package, hooks, parameter sinks):
        # it puts our sys.path first (``_boot.py``).
        env["ASYNCTRACK_PATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        env.pop("PYTHONWARNINGS", None)  # the application's -W error is not the worker's
        try:
            process = subprocess.Popen(
                [executable, _BOOT],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                close_fds=True,
                # Its own session: a Ctrl-C or a SIGTERM to the application's process
                # group must not cut the worker's drain short; it ends when we do.
                start_new_session=True,
            )
        except OSError as exc:
            raise WorkerUnavailable(f"cannot start a worker process: {exc}") from exc
        assert process.stdin is not None and process.stdout is not None
        self._process = process
        # Our ends as bare descriptors (non-inheritable: os.pipe's default), no buffering.
        self._out_fd = os.dup(process.stdin.fileno())
        self._in_fd = os.dup(process.stdout.fileno())
        process.stdin.close()
        process.stdout.close()
        # A larger pipe holds what we ship while the worker starts: bytes in the pipe
        # survive our death (Linux; best effort, 1 MiB is the default cap).
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(self._out_fd, fcntl.F_SETPIPE_SZ, 1 << 20)

    def _start_threads(self) -> None:
        self._reader = threading.Thread(
            target=self._read_loop, args=(self._in_fd,), name="asynctrack-reader", daemon=True
        )
        self._shipper.start()
        self._reader.start()

    def _send_locked(self, data: bytes | list[bytes]) -> None:
        try:
            write_all(self._out_fd, data)
        except OSError:
            # The worker is gone; the reader sees its end of file and restarts it,
            # re-sending every unacknowledged frame (this one included).
            pass

    # -- reader ----------------------------------------------------------------------

    def _read_loop(self, fd: int) -> None:
        try:
            for kind, tracker, number, payload in FrameReader(fd).frames():
                self._answer(kind, tracker, number, payload)
        except (OSError, ValueError):
            pass
        finally:
            # The number is free once closed, and the next pipe or socket may get it: no
            # one (a restart, the shutdown, a forked child's hook) may close it again.
            if self._in_fd == fd:
                self._in_fd = -1
            with contextlib.suppress(OSError):
                os.close(fd)
        if not self._stopping and os.getpid() == self._pid:
            self._restart()

    def _answer(self, kind: Kind, tracker: int, number: int, payload: bytes) -> None:
        if kind == Kind.LOG:
            level, message = pickle.loads(payload)
            logger.log(level, "%s", message)
            return
        client = self._clients.get(tracker)
        if client is None:
            return
        try:
            if kind == Kind.ACK:
                client.lane.acknowledged(number)
                if payload:
                    client.acknowledged(payload)
                if len(client.lane.queue):
                    self._shipper.wake()  # a lane held back under when_full="block" may go on
            elif kind in (Kind.FLUSHED, Kind.CLOSED):
                client.answered(kind, number, payload)
            elif kind == Kind.STATS:
                client.statistics_from_worker(payload)
            elif kind == Kind.OPENED:
                reason = pickle.loads(payload)
                if reason is not None:
                    # The shipper switches it over between two shipments.
                    client.lane.fall_back_reason = str(reason)
                    self._shipper.wake()
        except Exception:  # pragma: no cover - a bug here must not stop the reader
            logger.exception("asynctrack: bad answer from the worker process")

    def _restart(self) -> None:
        """The worker died: start a new one and re-send what was not acknowledged."""
        now = time.monotonic()
        self._deaths.append(now)
        old = self._process
        if old is not None:
            with contextlib.suppress(Exception):
                old.wait(1.0)
        with self._lock:
            with contextlib.suppress(OSError):
                os.close(self._out_fd)
            self._out_fd = -1
            self._process = None
            for client in self._clients.values():
                client.lane.worker_died()
                client.worker_died()
            if len(self._deaths) == _MAX_RESTARTS and now - self._deaths[0] < _RESTART_WINDOW:
                self.failed = f"the worker process died {_MAX_RESTARTS} times in {_RESTART_WINDOW:g} s"
                logger.error("asynctrack: %s; falling back to worker threads", self.failed)
                for client in list(self._clients.values()):
                    client.fall_back(self.failed)
                return
            code = old.returncode if old is not None else None
            logger.warning("asynctrack: the worker process ended (exit status %s); starting a new one", code)
            try:
                self._spawn()
            except WorkerUnavailable as exc:
                self.failed = str(exc)
                for client in list(self._clients.values()):
                    client.fall_back(self.failed)
                return
            self.restarts += 1
            for client in list(self._clients.values()):
                lane = client.lane
                if lane.forward is not None:
                    continue  # a thread engine serves it now
                client.renew_writer(self.restarts)
                self._send_locked(encode_frame(Kind.OPEN, lane.tracker_id, 0, pickle.dumps(client.spec)))
                for frame in lane.resend():
                    self._send_locked(frame)
            self._reader = threading.Thread(
                target=self._read_loop, args=(self._in_fd,), name="asynctrack-reader", daemon=True
            )
            self._reader.start()

    # -- shutdown --------------------------------------------------------------------

    def shutdown(self, grace: float = _STOP_GRACE) -> None:
        """Close the channel (the worker drains and exits) and wait for it, bounded."""
        with self._lock:
            if self._stopping:
                return
            self._shipper.stop()
            self._stopping = True
            process = self._process
            with contextlib.suppress(OSError):
                os.close(self._out_fd)
            self._out_fd = -1
        if process is not None:
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                logger.error("asynctrack: the worker process did not exit within %g s", grace)


class _Shared:
    """This process's worker process (one per process; a forked child makes its own)."""

    worker: WorkerProcess | None = None
    lock = threading.Lock()


#: Trackers whose close the worker has not answered yet, a close under way included
#: (closed at exit, or brought to its deadline and waited for).
live: weakref.WeakSet[Client] = weakref.WeakSet()


def worker_process() -> WorkerProcess:
    """This process's worker (created, not yet started, on first use)."""
    with _Shared.lock:
        worker = _Shared.worker
        if worker is None or worker._pid != os.getpid():  # noqa: SLF001 - same module
            worker = _Shared.worker = WorkerProcess()
        return worker


def close_all(deadline: float) -> None:
    """Close every process-mode tracker by ``deadline`` (a close under way too: by
    ``deadline`` if that is nearer), then the worker process.

    Every close is started first, then each is waited for: they run side by side. The
    answers and the worker's exit are waited for until ``_EXIT_GRACE`` past ``deadline``.
    """
    end = deadline + _EXIT_GRACE
    side_by_side([(client.start_close, client.wait_closed) for client in list(live)], deadline, end)
    worker = _Shared.worker
    if worker is not None and worker._pid == os.getpid():  # noqa: SLF001 - same module
        worker.shutdown(max(end - time.monotonic(), 0.1))


def _after_fork_in_child() -> None:
    worker = _Shared.worker
    if worker is None:
        return
    _Shared.lock = threading.Lock()
    _Shared.worker = WorkerProcess()
    old_clients = list(worker._clients.values())  # noqa: SLF001 - same module
    old_clients += [client for client in list(worker.fallen) if client not in old_clients]
    for fd in (worker._out_fd, worker._in_fd):  # noqa: SLF001 - same module
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
    for client in old_clients:
        client.after_fork_in_child()  # it registers with the new worker


exit_hooks.append(close_all)  # at exit and on SIGTERM, after the thread engines
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
