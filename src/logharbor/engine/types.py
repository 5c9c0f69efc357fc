"""The engine's shared vocabulary, named once."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from ..protocol.codec import frame_headers

ShardId = int
Position = int  # index of a log group within its shard; a cursor encodes it
Nanos = int  # nanoseconds since the epoch
Clock = Callable[[], Nanos]

NANOS_PER_SECOND = 1_000_000_000
NANOS_PER_DAY = 86_400 * NANOS_PER_SECOND
# what a decoded log costs beyond its raw size, at the least (its row, its objects):
# the budget of whoever decodes pulls in bulk (PullResult.within)
DECODED_LOG_COST = 64


def wall_clock() -> Nanos:
    return time.time_ns()


class ShardStatus(StrEnum):
    READWRITE = "readwrite"
    READONLY = "readonly"


@dataclass(frozen=True, slots=True)
class ProjectInfo:
    name: str
    description: str
    create_time: int  # seconds
    update_time: int


@dataclass(frozen=True, slots=True)
class LogstoreInfo:
    project: str
    name: str
    ttl: int  # days
    shard_count: int  # readwrite shards
    auto_split: bool
    max_split_shard: int
    create_time: int
    update_time: int
    uid: str = field(repr=False, default="")


@dataclass(frozen=True, slots=True)
class ShardInfo:
    shard_id: ShardId
    status: ShardStatus
    begin_key: str  # inclusive, 32 hex digits
    end_key: str  # exclusive, 32 hex digits
    create_time: int
    parents: tuple[ShardId, ...] = ()
    children: tuple[ShardId, ...] = ()


@dataclass(frozen=True, slots=True)
class PutResult:
    shard_id: ShardId
    position: Position


@dataclass(frozen=True, slots=True)
class PullResult:
    """Stored frames (see ``logharbor.protocol.codec``) and where to go next."""

    frames: bytes
    group_count: int
    log_count: int
    raw_size: int
    next_position: Position
    end_position: Position  # the shard's end when the pull was served

    def within(self, max_cost: int, log_cost: int = 0, raw_factor: int = 1) -> PullResult:
        """The first log groups of this pull whose decoded cost stays within
        ``max_cost`` (at least one), the cost of a log group being ``raw_factor``
        times its decompressed size plus ``log_cost`` per log.  A pull is bounded by
        stored bytes, and logs that compress well decode to hundreds of times as
        much: whoever decodes a pull (the indexer, the SLS and TLS pulls, JSON
        pulls) takes this first."""
        cost = groups = logs = raw = 0
        for start, position, raw_size, count in frame_headers(self.frames):
            frame_cost = raw_factor * raw_size + log_cost * count
            if groups and cost + frame_cost > max_cost:
                frames = self.frames[:start]
                return PullResult(frames, groups, logs, raw, position, self.end_position)
            cost += frame_cost
            groups, logs, raw = groups + 1, logs + count, raw + raw_size
        return self
