"""Grouped client settings: ``Timeout`` and ``RetryPolicy``."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from ._exceptions import LogHarborError

# 2**64 times any sensible base is far past any sensible cap; the bound only keeps
# the float arithmetic finite for absurd retry counts.
_MAX_DOUBLINGS = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeout:
    """Seconds to wait in each phase of a request; ``None`` waits forever.

    ``LogClient(timeout=10)`` sets all four to 10 seconds. A long-polling pull
    (``wait_ms``) gets its wait added to ``read``.
    """

    connect: float | None = 5.0
    read: float | None = 30.0
    write: float | None = 30.0
    pool: float | None = 5.0

    @classmethod
    def of(cls, value: Timeout | float | None) -> Timeout:
        """A ``Timeout`` as given, or one number (or ``None``) for every phase."""
        if isinstance(value, Timeout):
            return value
        return cls(connect=value, read=value, write=value, pool=value)

    def to_httpx(self, *, extra_read: float = 0.0) -> httpx.Timeout:
        read = None if self.read is None else self.read + extra_read
        return httpx.Timeout(connect=self.connect, read=read, write=self.write, pool=self.pool)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """When to send a failed request again, and how long to wait first.

    Only errors that are ``retryable`` are retried: 429, 5xx, and connections that
    failed, broke or timed out; never other 4xx. Retry ``n`` (from 0) waits
    ``min(backoff_max, backoff_base * 2**n)`` seconds, shortened by a random part of
    up to ``jitter`` of it so that clients that failed together do not retry together.

    A write that timed out may have been stored; retrying it can store it twice
    (at-least-once). ``RetryPolicy(max_retries=0)`` never retries.

    ``sleep``, ``async_sleep`` and ``random`` are injectable so that tests need not wait.
    """

    max_retries: int = 3
    backoff_base: float = 0.1
    backoff_max: float = 5.0
    jitter: float = 0.5
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    async_sleep: Callable[[float], Awaitable[None]] = field(
        default=asyncio.sleep, repr=False, compare=False
    )
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise ValueError("backoff_base and backoff_max must be 0 or more")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (counting from 0)."""
        delay = min(self.backoff_max, self.backoff_base * 2.0 ** min(retry, _MAX_DOUBLINGS))
        return delay * (1.0 - self.jitter * self.random())

    def delay_before_retry(self, error: LogHarborError, retries_done: int) -> float | None:
        """Seconds to wait before sending again after ``error``, or ``None`` to give up."""
        if not error.retryable or retries_done >= self.max_retries:
            return None
        return self.backoff(retries_done)
