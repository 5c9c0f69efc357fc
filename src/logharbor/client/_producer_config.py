"""The producer's settings (``BatchPolicy``, ``ProducerConfig``) and its clock.

Defaults follow the SLS producers: batches of 512 KiB or 4096 logs or 2 s of
lingering, 8 sender workers, lz4, retries with exponential backoff from 100 ms to
50 s, and 100 MiB of buffered logs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from ._config import RetryPolicy, Timeout
from ._types import CompressionInput

KIB = 1 << 10
MIB = 1 << 20
MAX_BATCH_BYTES = 5 * MIB
MAX_BATCH_COUNT = 40960


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchPolicy:
    """When a batch (one log group) goes out: at ``max_bytes`` of encoded logs, at
    ``max_count`` logs, or ``linger`` seconds after its first log, whichever is first.

    Logs are batched per (project, logstore, topic, source, tags, hash-key bucket).
    With ``hash_key_buckets`` (a power of two) hash keys are rounded down to the start
    of one of that many equal ranges, so logs with nearby keys share batches; without
    it each distinct hash key has its own batches.
    """

    max_bytes: int = 512 * KIB
    max_count: int = 4096
    linger: float = 2.0
    hash_key_buckets: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.max_bytes <= MAX_BATCH_BYTES:
            raise ValueError(f"max_bytes must be between 1 and {MAX_BATCH_BYTES}")
        if not 1 <= self.max_count <= MAX_BATCH_COUNT:
            raise ValueError(f"max_count must be between 1 and {MAX_BATCH_COUNT}")
        if self.linger < 0:
            raise ValueError("linger must be 0 or more seconds")
        buckets = self.hash_key_buckets
        if buckets is not None and (buckets < 1 or buckets & (buckets - 1)):
            raise ValueError("hash_key_buckets must be a power of two")


def _producer_retry() -> RetryPolicy:
    return RetryPolicy(max_retries=10, backoff_base=0.1, backoff_max=50.0, jitter=0.5)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProducerConfig:
    """How a ``Producer`` batches, sends, retries and buffers.

    - ``workers``: sender threads, each with its own HTTP connection.
    - ``compression``: ``"lz4"`` (default), ``"zstd"``, ``"deflate"`` or ``"none"``.
    - ``retry``: the retry budget of each batch (``max_retries``) and the backoff
      between attempts; only ``retryable`` errors (429, 5xx, connection failures) are
      retried, never a 4xx. Its ``sleep`` is not used: waits run on the producer's clock.
    - ``max_buffer_bytes``: encoded logs held (open, queued, in flight or awaiting a
      retry). A ``send`` that does not fit waits up to ``buffer_full_timeout`` seconds
      for room, then raises ``BufferFullError``; ``0`` raises at once.
    - ``exit_timeout``: how long the interpreter's exit waits to deliver what is left.
    - ``name``: the ``producer`` label of the Prometheus metrics.
    - ``user_agent``: the ``User-Agent`` of the producer's requests (default: the SDK's).
    """

    batch: BatchPolicy = field(default_factory=BatchPolicy)
    workers: int = 8
    compression: CompressionInput = "lz4"
    retry: RetryPolicy = field(default_factory=_producer_retry)
    timeout: Timeout = field(default_factory=Timeout)
    max_buffer_bytes: int = 100 * MIB
    buffer_full_timeout: float = 60.0
    exit_timeout: float | None = 10.0
    name: str = "default"
    user_agent: str | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be 1 or more")
        if self.max_buffer_bytes < 1:
            raise ValueError("max_buffer_bytes must be 1 or more")
        if self.buffer_full_timeout < 0:
            raise ValueError("buffer_full_timeout must be 0 or more seconds")


class Clock(Protocol):
    """The producer's time: lingers and retry backoffs are measured on it."""

    def now(self) -> float:
        """Seconds, on a clock that never goes back."""
        ...

    def wait(self, condition: threading.Condition, seconds: float | None) -> None:
        """Wait on ``condition`` (held) until notified or ``seconds`` of this clock passed."""
        ...


class MonotonicClock:
    """Real time: ``time.monotonic``."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, condition: threading.Condition, seconds: float | None) -> None:
        condition.wait(seconds)


class ManualClock:
    """A clock that moves only when told (``advance``), for tests.

    ``wait`` returns after at most ``poll`` seconds of real time, so that a producer
    waiting on this clock notices an ``advance`` quickly.
    """

    def __init__(self, start: float = 0.0, *, poll: float = 0.005) -> None:
        self._now = start
        self._poll = poll
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def wait(self, condition: threading.Condition, seconds: float | None) -> None:
        condition.wait(self._poll if seconds is None else min(seconds, self._poll))
