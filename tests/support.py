"""Helpers shared by the fault, security and soak tests, and the worker-mode check."""

from __future__ import annotations

import contextlib
import gc
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from asynctrack import AsyncTracker

__all__ = [
    "ROOT",
    "closing",
    "collect_garbage",
    "fail_on_finalizer_complaints",
    "finalizer_complaints",
    "run_script",
    "silent_endpoint",
]

#: The repository's root.
ROOT = Path(__file__).resolve().parent.parent


def run_script(script: Path, text: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Write ``text`` to ``script`` and run it with this interpreter from the repository's
    root, with ``env`` as its whole environment (nothing of the test's leaks in), within
    100 s. A crash (a segfault) fails the test that reads the result, not pytest."""
    script.write_text(text, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
        env=dict(env),
    )


def collect_garbage() -> None:
    """Run the collector until it finds nothing more (at most 10 rounds).

    One round is not enough for a tracker that left tasks on its dead event loop:
    closing their coroutines runs ``finally`` blocks that reach the engine again and
    keep it alive until a later round, which would otherwise happen in a later test.
    """
    for _ in range(10):
        if not gc.collect():
            return


@contextlib.contextmanager
def finalizer_complaints() -> Iterator[list[str]]:
    """Collect the garbage made in the block; the list gets what its finalizers reported.

    Unraisable exceptions ("Exception ignored in ...") and warnings ("coroutine ... was
    never awaited") are kept as text only. Left to pytest, they would be turned into
    errors that keep references to the coroutines, which are then finalized (and
    reported) during some later test instead of this one.
    """
    found: list[str] = []
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        found.append(
            f"{unraisable.err_msg or 'Exception ignored in'}: {unraisable.object!r}: "
            f"{getattr(unraisable.exc_type, '__name__', '?')}: {unraisable.exc_value}"
        )

    sys.unraisablehook = hook
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield found
            collect_garbage()
            found.extend(f"{w.category.__name__}: {w.message}" for w in caught)
            caught.clear()
    finally:
        sys.unraisablehook = previous


def fail_on_finalizer_complaints() -> None:
    """Collect garbage now and fail the running test if finalizers complained.

    Called from each test's teardown: a tracker that left work behind on its dead
    event loop (never-awaited coroutines) is then reported against the test that
    made it, not against whichever later test the garbage collector runs in.
    """
    with finalizer_complaints() as complaints:
        pass
    if complaints:
        pytest.fail(f"garbage this test left behind complained when collected: {complaints[:5]}")


@contextlib.contextmanager
def closing(tracker: AsyncTracker) -> Iterator[AsyncTracker]:
    """Close the tracker at the end even if the test fails (close is idempotent).

    If the body failed, an error from close is not allowed to hide the body's failure
    (close errors are raised ``from None``, which would suppress it in the report).
    """
    try:
        yield tracker
    except BaseException:
        with contextlib.suppress(Exception):
            tracker.close(timeout=30)
        raise
    tracker.close(timeout=30)


def assert_worker_mode(tracker: AsyncTracker, mode: str) -> None:
    """The tracker runs its worker where the test said it would (``worker_mode``): one whose
    hook or destination cannot cross to a worker process silently uses a thread."""
    actual = tracker.statistics().worker_mode
    assert actual == mode, f"the test asked for a {mode} worker; the tracker uses a {actual} one"


@contextlib.contextmanager
def silent_endpoint() -> Iterator[str]:
    """The URL of an endpoint on 127.0.0.1 that accepts connections and never answers (the
    kernel completes the handshakes; nobody ever reads): a hung load balancer."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        yield f"http://127.0.0.1:{silent.getsockname()[1]}"
