"""The worker process of an application process: spawn, shipper, reader, restart, exit.

One ``WorkerProcess`` per application process (a forked child makes its own) serves
every tracker of that process through their ``ProcessEngine``s (``_client``):

- the shipper thread wakes every ``_TICK`` (5 ms; ``_IDLE_TICK``, 25 ms, once nothing
  was shipped for 0.1 s; at once for a flush or close), takes what every tracker queued
  and writes each tracker's frames to the worker's stdin (``os.write`` releases the GIL);
- the reader thread reads the worker's answers on its stdout and hands them to the
  trackers, re-emits the worker's log records, and, at end of file while we are not
  stopping, starts a new worker and re-sends every unacknowledged frame, in order;
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
from typing import TYPE_CHECKING, Final

from .._channel import FrameReader, Kind, encode_frame, write_all
from .._exit import exit_hooks

if TYPE_CHECKING:
    from ._client import ProcessEngine

__all__ = ["WorkerProcess", "WorkerUnavailable", "close_all", "live", "worker_process"]

logger = logging.getLogger("asynctrack")

_TICK: Final = 0.005  # seconds between shipments: "a few times per 10 ms"
#: ... once nothing was shipped for _IDLE_AFTER seconds (an idle application's shipper
#: woke 200 times a second: ~1.8% of a core on a 2-core VM; now ~0.5%).
_IDLE_TICK: Final = 0.025
_IDLE_AFTER: Final = 0.1
#: A real sleep between two slices of a backlog: a thread waiting for the GIL takes it.
_HAND_OVER: Final = 0.00005
_SLICE: Final = 1024  # records taken and shipped at once (one frame, ~0.3 ms of GIL)
_RESTART_WINDOW: Final = 10.0  # seconds; more than _MAX_RESTARTS deaths in it: give up
_MAX_RESTARTS: Final = 5
_STOP_GRACE: Final = 5.0  # seconds the worker gets to exit after the channel closes
_BOOT: Final = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_worker", "_boot.py"
)


class WorkerUnavailable(RuntimeError):
    """The worker process could not be started here (a thread worker is used instead)."""


class WorkerProcess:
    """The worker process of this application process, its shipper and its reader."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # the channel: process, pipes, registrations
        self._clients: dict[int, ProcessEngine] = {}
        self._ids = itertools.count(1)
        self._process: subprocess.Popen[bytes] | None = None
        self._out_fd = -1  # we write: the worker's stdin
        self._in_fd = -1  # we read: the worker's stdout
        self._wake = threading.Event()
        self._stopping = False
        self._shipper: threading.Thread | None = None
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

    def register(self, client: ProcessEngine) -> None:
        with self._lock:
            if self.failed is not None:
                raise WorkerUnavailable(self.failed)
            if self._process is None:
                self._spawn()
            client.tracker_id = next(self._ids)
            self._clients[client.tracker_id] = client
            self._send_locked(encode_frame(Kind.OPEN, client.tracker_id, 0, pickle.dumps(client.spec)))
            live.add(client)
            if self._shipper is None:
                self._start_threads()

    def unregister(self, client: ProcessEngine) -> None:
        # No channel lock: the reader calls this, and must never wait for the shipper
        # (which may be blocked writing to a worker that waits for the reader).
        self._clients.pop(client.tracker_id, None)

    def wake(self) -> None:
        self._wake.set()

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
        self._shipper = threading.Thread(target=self._ship_loop, name="asynctrack-shipper", daemon=True)
        self._reader = threading.Thread(
            target=self._read_loop, args=(self._in_fd,), name="asynctrack-reader", daemon=True
        )
        self._shipper.start()
        self._reader.start()

    def _send_locked(self, data: bytes) -> None:
        try:
            write_all(self._out_fd, data)
        except OSError:
            # The worker is gone; the reader sees its end of file and restarts it,
            # re-sending every unacknowledged frame (this one included).
            pass

    # -- shipper ---------------------------------------------------------------------

    def _ship_loop(self) -> None:
        busy = time.monotonic()  # when something was last shipped
        while True:
            self._wake.wait(_TICK if time.monotonic() - busy < _IDLE_AFTER else _IDLE_TICK)
            self._wake.clear()
            idle = self._ship_once()
            if not idle:
                busy = time.monotonic()
            elif self._stopping:
                return

    def _ship_once(self) -> bool:
        """Ship what every tracker queued. True when nothing was left to ship."""
        idle = True
        for client in list(self._clients.values()):
            client.report_drops()
            if not client._queue and client.fall_back_reason is None:  # noqa: SLF001 - the consumer
                continue
            idle = False
            if client.fallback is not None:  # a thread engine took over this tracker
                client.forward()
                continue
            if client.fall_back_reason is not None:
                with self._lock:
                    client.fall_back(client.fall_back_reason)
                client.forward()
                continue
            if client.held_back() and not self._stopping:
                continue
            # A slice at a time, and a real sleep between two: the write alone does not
            # give the GIL away (it takes it back before a waiting thread has woken up),
            # so a backlog shipped slice after slice kept the application's event loop
            # waiting 3-5 ms at a time (traced). The sleep lets the application run
            # until it next hands the GIL over.
            while client._queue and not (client.held_back() and not self._stopping):  # noqa: SLF001
                with self._lock:
                    # A restart that gave up may have handed the tracker to a thread
                    # engine between two slices: its records are forwarded, not sent.
                    if client.tracker_id not in self._clients or client.fallback is not None:
                        break
                    frames = client.frames(client.take(_SLICE))
                    for key, frame, events in frames:
                        client.retain(key, frame, events)
                    self._send_locked(frames[0][1] if len(frames) == 1 else b"".join(f for _, f, _ in frames))
                if client._queue:  # noqa: SLF001
                    time.sleep(_HAND_OVER)
        return idle

    # -- reader ----------------------------------------------------------------------

    def _read_loop(self, fd: int) -> None:
        try:
            for kind, tracker, number, payload in FrameReader(fd).frames():
                self._answer(kind, tracker, number, payload)
        except (OSError, ValueError):
            pass
        finally:
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
                client.acknowledged(number)
            elif kind in (Kind.FLUSHED, Kind.CLOSED):
                client.answered(kind, number, payload)
            elif kind == Kind.STATS:
                client.statistics_from_worker(payload)
            elif kind == Kind.OPENED:
                reason = pickle.loads(payload)
                if reason is not None:
                    # The shipper switches it over at its next tick, between two shipments.
                    client.fall_back_reason = str(reason)
                    self.wake()
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
            self._process = None
            for client in self._clients.values():
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
                if client.fallback is not None:
                    continue  # a thread engine serves it now
                client.renew_writer(self.restarts)
                self._send_locked(encode_frame(Kind.OPEN, client.tracker_id, 0, pickle.dumps(client.spec)))
                for frame, _ in list(client.unacked.values()):
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
            self._ship_once()
            self._stopping = True
            process = self._process
            with contextlib.suppress(OSError):
                os.close(self._out_fd)
        self._wake.set()
        if process is not None:
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                logger.error("asynctrack: the worker process did not exit within %g s", grace)


class _Shared:
    """This process's worker process (one per process; a forked child makes its own)."""

    worker: WorkerProcess | None = None
    lock = threading.Lock()


#: Trackers not yet closed (closed at exit).
live: weakref.WeakSet[ProcessEngine] = weakref.WeakSet()


def worker_process() -> WorkerProcess:
    """This process's worker (created, not yet started, on first use)."""
    with _Shared.lock:
        worker = _Shared.worker
        if worker is None or worker._pid != os.getpid():  # noqa: SLF001 - same module
            worker = _Shared.worker = WorkerProcess()
        return worker


def close_all(deadline: float) -> None:
    """Close every open process-mode tracker by ``deadline``, then the worker process."""
    for client in list(live):
        remaining = max(deadline - time.monotonic(), 0.1)
        try:
            client.close(timeout=remaining)
        except Exception as exc:
            logger.error("asynctrack: at exit, %s", exc)
    worker = _Shared.worker
    if worker is not None and worker._pid == os.getpid():  # noqa: SLF001 - same module
        worker.shutdown(max(deadline - time.monotonic(), 0.0) + 1.0)


def _after_fork_in_child() -> None:
    worker = _Shared.worker
    if worker is None:
        return
    _Shared.lock = threading.Lock()
    new = _Shared.worker = WorkerProcess()
    old_clients = list(worker._clients.values())  # noqa: SLF001 - same module
    for fd in (worker._out_fd, worker._in_fd):  # noqa: SLF001 - same module
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
    for client in old_clients:
        client._worker = new  # noqa: SLF001 - same module
        client.after_fork_in_child()


exit_hooks.append(close_all)  # at exit and on SIGTERM, after the thread engines
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
