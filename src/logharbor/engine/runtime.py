"""The live state of one logstore: its open shard logs and its write routing."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from ..protocol.codec import MAX_HASH_KEY, parse_hash_key
from ..protocol.errors import ErrorCode, ServiceError
from .shardlog import ShardLog
from .types import LogstoreInfo, ShardId, ShardInfo, ShardStatus


@dataclass(frozen=True, slots=True)
class _Route:
    begin: int
    end: int  # exclusive, except that the last shard also takes MAX_HASH_KEY
    shard_id: ShardId
    log: ShardLog


@dataclass(eq=False)
class LogstoreRuntime:
    info: LogstoreInfo
    directory: Path
    shards: dict[ShardId, ShardLog] = field(default_factory=dict)
    deleted: bool = False
    _routes: list[_Route] = field(default_factory=list)
    _spread: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    def open(
        cls,
        info: LogstoreInfo,
        shard_infos: list[ShardInfo],
        directory: Path,
        *,
        segment_bytes: int,
        durable: bool,
    ) -> LogstoreRuntime:
        runtime = cls(info, directory)
        for shard in shard_infos:
            runtime.add_shard(shard, segment_bytes=segment_bytes, durable=durable)
        runtime.set_routes(shard_infos)
        return runtime

    def add_shard(self, shard: ShardInfo, *, segment_bytes: int, durable: bool) -> ShardLog:
        log = ShardLog(
            self.directory / str(shard.shard_id),
            segment_bytes=segment_bytes,
            durable=durable,
            readonly=shard.status is ShardStatus.READONLY,
        )
        self.shards[shard.shard_id] = log
        return log

    def shard(self, shard_id: ShardId) -> ShardLog:
        try:
            return self.shards[shard_id]
        except KeyError:
            raise ServiceError(
                ErrorCode.SHARD_NOT_EXIST,
                f"shard {shard_id} does not exist in logstore {self.info.name!r}",
            ) from None

    # Routing is used and changed only on the commit thread.

    def set_routes(self, shard_infos: list[ShardInfo]) -> None:
        routes = [
            _Route(
                parse_hash_key(s.begin_key),
                parse_hash_key(s.end_key),
                s.shard_id,
                self.shards[s.shard_id],
            )
            for s in shard_infos
            if s.status is ShardStatus.READWRITE
        ]
        self._routes = sorted(routes, key=lambda r: r.begin)

    def route(self, hash_key: int | None) -> tuple[ShardId, ShardLog]:
        if self.deleted:
            raise ServiceError(
                ErrorCode.LOGSTORE_NOT_EXIST, f"logstore {self.info.name!r} was deleted"
            )
        if not self._routes:
            raise ServiceError(ErrorCode.NO_WRITABLE_SHARD, "the logstore has no writable shard")
        if hash_key is None:
            route = self._routes[next(self._spread) % len(self._routes)]
            return route.shard_id, route.log
        for route in self._routes:
            if route.begin <= hash_key < route.end or (
                hash_key == MAX_HASH_KEY and route.end == MAX_HASH_KEY
            ):
                return route.shard_id, route.log
        raise ServiceError(ErrorCode.INVALID_HASH_KEY, "no writable shard owns this hash key")

    def close(self) -> None:
        self.deleted = True
        for log in self.shards.values():
            log.close()
