"""A bounded memory of recent write ids, to store a retried write only once.

Some senders resend the very same batch when an acknowledgement is late (the
InLong Go SDK resends identical bytes, same ``sid``, up to 3 times).  A facade
records each id with whatever stands for the first attempt (typically the
future of its durable write); a retry finds it and waits for that instead of
writing again.

Memory is bounded twice: at most ``max_entries`` ids (the least recently
recorded go first) and each for at most ``ttl`` seconds.  An id forgotten
early only costs a duplicate, never a loss.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .types import NANOS_PER_SECOND, Clock, wall_clock

V = TypeVar("V")

DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_TTL_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class RecentIdsStatistics:
    entries: int
    hits: int
    evicted: int


class RecentIds(Generic[V]):
    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        ttl: float = DEFAULT_TTL_SECONDS,
        clock: Clock = wall_clock,
    ) -> None:
        self.max_entries = max_entries
        self.ttl_ns = int(ttl * NANOS_PER_SECOND)
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[int, V]] = OrderedDict()
        self._hits = 0
        self._evicted = 0

    def get(self, key: Hashable) -> V | None:
        """The value recorded for ``key`` within the TTL, or None."""
        self._expire()
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._hits += 1
        return entry[1]

    def put(self, key: Hashable, value: V) -> None:
        self._expire()
        self._entries.pop(key, None)
        self._entries[key] = (self._clock(), value)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self._evicted += 1

    def discard(self, key: Hashable, value: V) -> None:
        """Forget ``key`` if it still holds ``value`` (a failed first attempt)."""
        entry = self._entries.get(key)
        if entry is not None and entry[1] is value:
            del self._entries[key]

    def _expire(self) -> None:
        cutoff = self._clock() - self.ttl_ns
        while self._entries:
            recorded, _ = next(iter(self._entries.values()))
            if recorded > cutoff:
                break
            self._entries.popitem(last=False)
            self._evicted += 1

    def __len__(self) -> int:
        return len(self._entries)

    def statistics(self) -> RecentIdsStatistics:
        return RecentIdsStatistics(len(self._entries), self._hits, self._evicted)
