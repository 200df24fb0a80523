"""Shared fixtures: AWS isolation (autouse) and a fresh local destination."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolate_aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's AWS settings; boto finds dummy credentials."""
    for name in list(os.environ):
        if name.upper().startswith("AWS_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    yield


@pytest.fixture(autouse=True)
def _isolate_spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test spools into its own directory, never ~/.cache (where one test's
    leftovers would be delivered by the next test's tracker)."""
    monkeypatch.setenv("ASYNCTRACK_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("ASYNCTRACK_EXIT_TIMEOUT", "5")


@pytest.fixture
def tmp_destination(tmp_path: Path) -> Path:
    """A directory (not yet created) for a tracker to write into."""
    return tmp_path / "asynctrack-logs"
