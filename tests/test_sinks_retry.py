"""The retry helper shared by S3 and SageMaker (``_sinks/_retry.py``).

Attempts are plain coroutines that fail on cue; no clock is asserted on except the
deadline itself, which is the helper's contract (a hung attempt is cut off by it).
"""

from __future__ import annotations

import asyncio
import random

import anyio
import pytest

from asynctrack._sinks._retry import RetryExhausted, retry


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Flaky:
    """Fails with ``error`` the first ``failures`` times, then returns ``"done"``."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


@pytest.mark.anyio
async def test_transient_errors_are_retried_until_success() -> None:
    attempt = Flaky(3, OSError("reset"))
    numbers: list[int] = []
    with anyio.fail_after(30):
        result = await retry(
            attempt, deadline=30.0, retryable=lambda e: True, first_delay=0.001, on_attempt=numbers.append
        )
    assert result == "done"
    assert attempt.calls == 4
    assert numbers == [1, 2, 3, 4]


@pytest.mark.anyio
async def test_a_permanent_error_is_raised_at_once_unchanged() -> None:
    error = PermissionError("access denied")
    attempt = Flaky(10, error)
    with pytest.raises(PermissionError) as raised:
        await retry(attempt, deadline=30.0, retryable=lambda e: not isinstance(e, PermissionError))
    assert raised.value is error
    assert attempt.calls == 1


@pytest.mark.anyio
async def test_the_deadline_ends_the_retries_with_the_last_error() -> None:
    attempt = Flaky(10**9, OSError("still down"))
    with anyio.fail_after(30), pytest.raises(RetryExhausted) as raised:
        await retry(attempt, deadline=0.2, retryable=lambda e: True, first_delay=0.01, max_delay=0.02)
    exhausted = raised.value
    assert exhausted.attempts == attempt.calls >= 2
    assert isinstance(exhausted.last, OSError)
    assert exhausted.__cause__ is exhausted.last
    assert "gave up after" in str(exhausted)


@pytest.mark.anyio
async def test_an_attempt_that_never_answers_is_cut_off_by_the_deadline() -> None:
    """A peer that accepts and never answers: the attempt awaits for ever. The deadline
    bounds it (and the error says it timed out), instead of the caller waiting for ever."""
    never = asyncio.Event()
    calls = 0

    async def hangs() -> None:
        nonlocal calls
        calls += 1
        await never.wait()

    with anyio.fail_after(30), pytest.raises(RetryExhausted) as raised:
        await retry(hangs, deadline=0.2, retryable=lambda e: False)
    assert isinstance(raised.value.last, TimeoutError)
    assert calls == 1


@pytest.mark.anyio
async def test_the_jitter_never_draws_from_the_applications_random_sequence() -> None:
    """A seeded program's ``random`` sequence must not shift because a sink retried."""
    random.seed(1234)
    before = random.getstate()
    with anyio.fail_after(30):
        await retry(Flaky(3, OSError("reset")), deadline=30.0, retryable=lambda e: True, first_delay=0.001)
    assert random.getstate() == before
