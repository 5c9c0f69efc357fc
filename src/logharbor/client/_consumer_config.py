"""Settings of consumer group workers: ``ConsumerSettings`` and ``ProcessorRetry``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ._types import CursorStart

MAX_FETCH_COUNT = 1000
MAX_WAIT_MS = 30_000


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessorRetry:
    """What to do when ``process`` raises: call it again with the same batch.

    Retry ``n`` (from 0) waits ``min(backoff_max, backoff_base * 2**n)`` seconds.
    ``max_retries=None`` retries for as long as the worker holds the shard; with a
    number, the batch is skipped after that many retries (counted in the statistics
    as ``skipped_batches``: its logs are not processed).
    """

    backoff_base: float = 0.1
    backoff_max: float = 5.0
    max_retries: int | None = None

    def __post_init__(self) -> None:
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise ValueError("backoff_base and backoff_max must be 0 or more")
        if self.max_retries is not None and self.max_retries < 0:
            raise ValueError("max_retries must be None or 0 or more")

    def backoff(self, retry: int) -> float:
        return min(self.backoff_max, self.backoff_base * 2.0 ** min(retry, 64))

    def gives_up(self, retries_done: int) -> bool:
        return self.max_retries is not None and retries_done >= self.max_retries


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerSettings:
    """How a ``ConsumerGroupWorker`` or an ``AsyncConsumerWorker`` takes part in its group.

    - ``heartbeat_interval``: seconds between heartbeats.
    - ``group_timeout``: seconds without a heartbeat after which the server gives a
      member's shards to others; the worker creates the group with it, or updates
      the group to it, when it starts (``update_group``). ``None``: three heartbeat
      intervals, rounded up to whole seconds.
    - ``fetch_count``, ``fetch_max_bytes``: the limits of one pull.
    - ``prefetch``: pulled batches a shard may hold before they are processed (the
      fetcher waits beyond it). A shard holds at most ``prefetch`` + 2 batches of at
      most ``fetch_count`` log groups (and ``fetch_max_bytes``): the queued ones, the
      one being processed, and the one the fetcher waits to queue.
    - ``wait_ms``: how long a pull may wait on the server for new data (long polling).
    - ``auto_checkpoint_interval``: seconds between automatic checkpoints of the
      processed position; ``None`` saves only when the processor asks and when a
      shard is released.
    - ``start``: where to begin a shard the group has no checkpoint for: ``"begin"``,
      ``"end"``, or a time (Unix seconds or a datetime).
    - ``in_order``: the group hands out the children of a split or merge only once
      their parents are read to the end.
    - ``retry``: what to do when the processor raises.
    - ``clock``: monotonic seconds, for checkpoint intervals and liveness (tests may
      replace it).
    """

    heartbeat_interval: float = 5.0
    group_timeout: int | None = None
    fetch_count: int = 100
    fetch_max_bytes: int | None = None
    prefetch: int = 2
    wait_ms: int = 1000
    auto_checkpoint_interval: float | None = 5.0
    start: CursorStart = "begin"
    in_order: bool = False
    update_group: bool = True
    retry: ProcessorRetry = field(default_factory=ProcessorRetry)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.heartbeat_interval > 0:
            raise ValueError("heartbeat_interval must be positive")
        if self.group_timeout is not None and self.group_timeout < 1:
            raise ValueError("group_timeout must be at least 1 second")
        if not 1 <= self.fetch_count <= MAX_FETCH_COUNT:
            raise ValueError(f"fetch_count must be from 1 to {MAX_FETCH_COUNT}")
        if self.prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        if not 0 <= self.wait_ms <= MAX_WAIT_MS:
            raise ValueError(f"wait_ms must be from 0 to {MAX_WAIT_MS}")
        if self.auto_checkpoint_interval is not None and self.auto_checkpoint_interval < 0:
            raise ValueError("auto_checkpoint_interval must be None or 0 or more")

    @property
    def timeout(self) -> int:
        """The group timeout in whole seconds."""
        if self.group_timeout is not None:
            return self.group_timeout
        return max(1, math.ceil(3 * self.heartbeat_interval))
