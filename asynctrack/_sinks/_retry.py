"""One retry loop for every remote call of the sinks: exponential backoff, full jitter, one deadline.

Used by the S3 sink, the SageMaker parameter sink (botocore's own retries are off in
both: one loop, ours, every attempt counted) and the MLflow sink. Each attempt is bounded by
what is left of the deadline too, so a peer that accepts a connection and never
answers cannot hold a write past it (aiohttp's wait for "100 Continue" is not
covered by ``read_timeout``). The sleep before attempt *n* is uniform in
``[0, min(max_delay, first_delay * 2**n)]`` ("full jitter", AWS architecture
blog): many writers throttled on one prefix do not retry in step.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

__all__ = ["JITTER", "RetryExhausted", "retry"]

#: The retry jitter's own generator: the library never draws from (and so never shifts)
#: the application's ``random`` sequence, which a seeded program relies on.
JITTER: Final = random.Random()

T = TypeVar("T")


class RetryExhausted(Exception):
    """Every attempt within the deadline failed with a retryable error.

    Attributes:
        attempts: how many attempts were made.
        deadline: the deadline in seconds.
        last: the last attempt's error (also ``__cause__``).
    """

    def __init__(self, attempts: int, deadline: float, last: BaseException) -> None:
        self.attempts = attempts
        self.deadline = deadline
        self.last = last
        super().__init__(f"gave up after {attempts} attempt(s) in {deadline:g} s: {last}")


async def retry(
    attempt: Callable[[], Awaitable[T]],
    *,
    deadline: float,
    retryable: Callable[[Exception], bool],
    first_delay: float = 0.1,
    max_delay: float = 5.0,
    on_attempt: Callable[[int], None] | None = None,
) -> T:
    """Call ``attempt()`` until it returns, fails for good, or ``deadline`` seconds pass.

    Args:
        attempt: one try; a new awaitable per call.
        deadline: seconds for all attempts and sleeps together.
        retryable: whether an error may go away if tried again.
        first_delay: the upper bound of the first sleep; doubled per attempt.
        max_delay: the most any upper bound grows to.
        on_attempt: called with the attempt's number (1, 2, ...) before each try.

    Returns:
        What the successful attempt returned.

    Raises:
        RetryExhausted: the deadline came first (from the last error).
        Exception: the first error ``retryable`` refused, unchanged.
    """
    end = time.monotonic() + deadline
    bound = first_delay
    attempts = 0
    while True:
        attempts += 1
        if on_attempt is not None:
            on_attempt(attempts)
        try:
            async with asyncio.timeout(max(end - time.monotonic(), 0.001)):
                return await attempt()
        except Exception as exc:
            if not isinstance(exc, TimeoutError) and not retryable(exc):
                raise
            sleep = JITTER.uniform(0, bound)
            if time.monotonic() + sleep >= end:
                raise RetryExhausted(attempts, deadline, exc) from exc
            await asyncio.sleep(sleep)
            bound = min(bound * 2, max_delay)
