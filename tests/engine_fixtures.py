"""Fixtures of the tests/test_engine*.py modules (``pytest_plugins = ("engine_fixtures",)``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asynctrack import AsyncTracker, FlushError


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def make_tracker(tmp_destination: Path) -> Iterator[Callable[..., AsyncTracker]]:
    """Trackers on ``tmp_destination`` (or the destination given), closed at the end.

    Fake sinks are "remote" destinations: what they leave at close is spooled, into the
    test's own spool directory (``ASYNCTRACK_SPOOL_DIR``, set by ``conftest.py``).
    """
    made: list[AsyncTracker] = []

    def make(destination: Any = None, **kwargs: Any) -> AsyncTracker:
        tracker = AsyncTracker(
            tmp_destination if destination is None else destination,
            experiment_name="eng",
            run_name="r",
            **kwargs,
        )
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        try:
            tracker.close(timeout=5)
        except FlushError:
            pass
