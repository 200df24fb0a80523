"""Process events: normal exit (atexit), SIGTERM, SIGINT, and fork.

Every engine not yet CLOSED is in ``_live``, including one whose close is under
way: a signal or the exit arriving in the middle of a ``close()`` then waits for
that close to finish (within ``ASYNCTRACK_EXIT_TIMEOUT``) instead of losing its
backlog. SIGINT needs no handler of its own: Python turns it into a
``KeyboardInterrupt``, and the exit hook closes (or finishes closing) every engine.
On SIGTERM, the handler closes them all, then lets the process die of SIGTERM as
it would have. In a forked child each engine starts over with an empty buffer and
its own worker; the parent's buffered events stay the parent's to write.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = [
    "close_all",
    "exit_hooks",
    "exit_timeout",
    "forget",
    "install_sigterm_handler",
    "register",
    "side_by_side",
]

logger = logging.getLogger("asynctrack")


class _Closable(Protocol):
    def start_close(self, timeout: float | None) -> None: ...

    def close(self, timeout: float | None = ...) -> None: ...

    def after_fork_in_child(self) -> None: ...


# Strong references: an engine whose tracker was dropped unclosed is still closed
# (and its events written) at exit. It leaves the set once its worker has stopped.
_live: dict[int, _Closable] = {}
_lock = threading.Lock()
#: Called after the engines, with the same deadline: the worker process's trackers and
#: channel (``_client``), which keep their own registry.
exit_hooks: list[Callable[[float], None]] = []


def register(engine: _Closable) -> None:
    with _lock:
        _live[id(engine)] = engine


def forget(engine: _Closable) -> None:
    with _lock:
        _live.pop(id(engine), None)


def exit_timeout() -> float:
    """``ASYNCTRACK_EXIT_TIMEOUT`` in seconds (10 if unset or not a number)."""
    try:
        return float(os.environ.get("ASYNCTRACK_EXIT_TIMEOUT", "10"))
    except ValueError:
        return 10.0


def close_all() -> None:
    """Close every engine (or finish closing it) within ``ASYNCTRACK_EXIT_TIMEOUT`` in all.

    Every close is started first, then each is waited for: the engines close side by
    side, each with the whole time, rather than one after the other.
    """
    deadline = time.monotonic() + exit_timeout()
    with _lock:
        engines = list(_live.values())
    side_by_side([(engine.start_close, engine.close) for engine in engines], deadline, deadline)
    for hook in list(exit_hooks):
        try:
            hook(deadline)
        except Exception as exc:  # pragma: no cover - each hook logs its own errors
            logger.error("asynctrack: at exit, %s", exc)


def side_by_side(
    closes: list[tuple[Callable[[float], Any], Callable[[float], Any]]], deadline: float, end: float
) -> None:
    """Start every close (``(start, wait)`` pairs, each given the seconds left) by
    ``deadline``, then wait for each until ``end`` (``time.monotonic()``); what raises
    is logged, never raised: the others still close."""
    for start, _ in closes:
        try:
            start(max(deadline - time.monotonic(), 0.1))
        except Exception as exc:
            logger.error("asynctrack: at exit, %s", exc)
    for _, wait in closes:
        try:
            wait(max(end - time.monotonic(), 0.1))
        except Exception as exc:
            logger.error("asynctrack: at exit, %s", exc)


def _on_sigterm(signum: int, frame: Any) -> None:
    """Close every tracker (flush, spool), then die of SIGTERM as we would have."""
    close_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def install_sigterm_handler() -> None:
    """Install ``_on_sigterm`` if this is the main thread and no handler is set."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not supported here (an embedded interpreter)
        pass


def _after_fork_in_child() -> None:
    global _lock  # noqa: PLW0603 - a lock held by a parent thread at fork() is never released here
    _lock = threading.Lock()
    for engine in list(_live.values()):
        engine.after_fork_in_child()


atexit.register(close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
