"""The engine: every rule of LogHarbor, with no HTTP in it.

Facades (the native API, and later the SLS, TLS and InLong ones) parse their
protocol, authenticate, call the engine and render what it returns or the
``ServiceError`` it raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..protocol.codec import MAX_HASH_KEY, format_hash_key, parse_hash_key
from ..protocol.errors import ErrorCode, ServiceError
from .catalog import Catalog
from .commit import CommitLog, CommitStatistics, QueueFull
from .consumer import (
    Checkpoint,
    ConsumerGroupInfo,
    Coordinator,
    ShardRef,
    ShardView,
    check_timeout,
    shard_views,
)
from .index.config import IndexConfig, parse_index_config
from .index.indexer import IndexedLogstore, Indexer, decode_frames_ipc
from .index.query import Bucket, Cancellation, LogRow, QueryLimits, QueryResult, QueryRunner
from .index.sealed import ColumnCache
from .index.store import IndexStore, index_deleted
from .ingest import IngestPool, Limits, PreparedGroup
from .names import check_description, check_name
from .runtime import LogstoreRuntime
from .shardlog import CompactionStatistics, Segment, ShardLog
from .types import (
    NANOS_PER_DAY,
    NANOS_PER_SECOND,
    Clock,
    LogstoreInfo,
    Nanos,
    Position,
    ProjectInfo,
    PullResult,
    PutResult,
    ShardId,
    ShardInfo,
    ShardStatus,
    wall_clock,
)

log = logging.getLogger(__name__)

MAX_SHARDS = 256
MAX_TTL_DAYS = 3650
MAX_PULL_COUNT = 1000
DEFAULT_PULL_BYTES = 16 << 20
MAX_PULL_BYTES = 64 << 20
MAX_PAGE = 500

CursorFrom = Literal["begin", "end"] | Nanos


@dataclass(frozen=True, slots=True)
class EngineConfig:
    data_dir: Path
    limits: Limits = field(default_factory=Limits)
    segment_bytes: int = 128 << 20
    # a segment is also sealed once its oldest record is this old (at the next
    # maintenance pass), so quiet shards get compacted and expire on time
    segment_seconds: float = 3600.0
    max_pending_bytes: int = 256 << 20
    submit_timeout: float = 10.0
    retention_interval: float = 60.0  # seconds between maintenance passes
    # zstd level for re-compressing sealed segments (lz4 from the clients takes
    # about 1.4x the space); 0 keeps segments as written
    compact_level: int = 3
    durable: bool = True  # fsync before acknowledging; only tests of other parts turn it off
    ingest_workers: int = field(default_factory=lambda: os.cpu_count() or 2)
    # A shard of an auto-split logstore that takes more raw bytes per second than
    # this (averaged between maintenance passes) is split at its midpoint.
    auto_split_bytes_per_second: int = 5 << 20
    query_limits: QueryLimits = field(default_factory=QueryLimits)
    query_memory_limit: str = "1GB"  # per logstore index
    query_cache_bytes: int = 256 << 20  # columns of sealed log groups kept for queries
    # a compacted segment's rows leave the index if its log groups average this many logs
    seal_min_group_logs: int = 256
    index_wait: float = 1.0  # seconds a query waits for the index to take in recent writes
    clock: Clock = wall_clock


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER, f"{name} must be an integer from {low} to {high}"
        )
    return value


class Engine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.clock = config.clock
        self.limits = config.limits
        self.ingest = IngestPool(config.ingest_workers)
        self.ingest.warm()
        self.consumers = Coordinator(self.clock)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self._shards_dir = config.data_dir / "shards"
        self._shards_dir.mkdir(exist_ok=True)
        self.catalog = Catalog(config.data_dir / "catalog.db")
        self._lock = threading.RLock()  # serialises resource changes
        self._stores: dict[tuple[str, str], LogstoreRuntime] = {}
        self._indexes: dict[str, IndexStore] = {}
        self._deletion_listeners: list[Callable[[str, str | None], None]] = []
        self.compaction = CompactionStatistics()  # updated by the maintenance thread
        # the columns of sealed log groups that queries read lately, of every index
        self.query_cache = ColumnCache(config.query_cache_bytes)
        self._load()
        for uid in self.catalog.index_configs():
            self._open_index(uid)
        self.queries = QueryRunner(config.query_limits)
        self.indexer = Indexer(
            self._index_targets,
            lambda frames, shard: self.ingest.submit(decode_frames_ipc, frames, shard),
        )
        self.commit = CommitLog(
            clock=self.clock,
            max_pending_bytes=config.max_pending_bytes,
            submit_timeout=config.submit_timeout,
        )
        self._last_split_check = self.clock()
        self._split_seen: dict[int, int] = {}
        self._stopping = threading.Event()
        self._retention = threading.Thread(
            target=self._retention_loop, name="logharbor-retention", daemon=True
        )
        self._retention.start()

    def _load(self) -> None:
        kept = set()
        for info in self.catalog.all_logstores():
            self._stores[(info.project, info.name)] = self._open_runtime(info)
            kept.add(info.uid)
        for leftover in self._shards_dir.iterdir():  # a delete interrupted by a crash
            if leftover.name not in kept:
                shutil.rmtree(leftover, ignore_errors=True)

    def _open_runtime(self, info: LogstoreInfo) -> LogstoreRuntime:
        return LogstoreRuntime.open(
            info,
            self.catalog.shards(info.uid),
            self._shards_dir / info.uid,
            segment_bytes=self.config.segment_bytes,
            durable=self.config.durable,
        )

    def close(self) -> None:
        self._stopping.set()
        self._retention.join()
        self.indexer.close()
        self.commit.close()
        for store in self._indexes.values():
            store.close()
        with self._lock:
            for runtime in self._stores.values():
                runtime.close()
            self._stores.clear()
        self.catalog.close()
        self.ingest.close()

    def _now_seconds(self) -> int:
        return self.clock() // NANOS_PER_SECOND

    # ------------------------------------------------------------ projects

    def create_project(self, name: str, description: str = "") -> ProjectInfo:
        now = self._now_seconds()
        info = ProjectInfo(check_name("project", name), check_description(description), now, now)
        self.catalog.insert_project(info)
        return info

    def get_project(self, name: str) -> ProjectInfo:
        return self.catalog.project(name)

    def list_projects(self, offset: int = 0, size: int = 100) -> tuple[list[ProjectInfo], int]:
        return self.catalog.projects(
            _check_int("offset", offset, 0, 1 << 31), _check_int("size", size, 0, MAX_PAGE)
        )

    def update_project(self, name: str, description: str) -> ProjectInfo:
        self.catalog.update_project(name, check_description(description), self._now_seconds())
        return self.catalog.project(name)

    def on_delete(self, listener: Callable[[str, str | None], None]) -> None:
        """Call ``listener(project, logstore)`` after a logstore is deleted, and
        ``listener(project, None)`` after a project is, whichever facade deleted it
        (for state kept outside the engine, such as SLS machine groups)."""
        self._deletion_listeners.append(listener)

    def _deleted(self, project: str, logstore: str | None) -> None:
        for listener in self._deletion_listeners:
            try:
                listener(project, logstore)
            except Exception:
                log.exception("a deletion listener failed for %s/%s", project, logstore)

    def delete_project(self, name: str) -> None:
        with self._lock:
            self.catalog.delete_project(name)
            for key in [k for k in self._stores if k[0] == name]:
                self._drop_runtime(self._stores.pop(key))
        self._deleted(name, None)

    # ----------------------------------------------------------- logstores

    def create_logstore(
        self,
        project: str,
        name: str,
        *,
        ttl: int = 30,
        shard_count: int = 2,
        auto_split: bool = False,
        max_split_shard: int = 64,
    ) -> LogstoreInfo:
        check_name("logstore", name)
        _check_int("ttl", ttl, 1, MAX_TTL_DAYS)
        _check_int("shard_count", shard_count, 1, MAX_SHARDS)
        _check_int("max_split_shard", max_split_shard, 1, MAX_SHARDS)
        if not isinstance(auto_split, bool):
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "auto_split must be a boolean")
        now = self._now_seconds()
        info = LogstoreInfo(
            project=project,
            name=name,
            ttl=ttl,
            shard_count=shard_count,
            auto_split=auto_split,
            max_split_shard=max_split_shard,
            create_time=now,
            update_time=now,
            uid=uuid.uuid4().hex,
        )
        span = MAX_HASH_KEY + 1
        shards = [
            ShardInfo(
                shard_id=i,
                status=ShardStatus.READWRITE,
                begin_key=format_hash_key(i * span // shard_count),
                end_key=format_hash_key((i + 1) * span // shard_count),
                create_time=now,
            )
            for i in range(shard_count)
        ]
        with self._lock:
            self.catalog.project(project)
            self.catalog.insert_logstore(info, shards)
            self._stores[(project, name)] = self._open_runtime(info)
        return info

    def get_logstore(self, project: str, name: str) -> LogstoreInfo:
        return self.catalog.logstore(project, name)

    def list_logstores(
        self, project: str, offset: int = 0, size: int = 100
    ) -> tuple[list[LogstoreInfo], int]:
        return self.catalog.logstores(
            project,
            _check_int("offset", offset, 0, 1 << 31),
            _check_int("size", size, 0, MAX_PAGE),
        )

    def update_logstore(
        self,
        project: str,
        name: str,
        *,
        ttl: int | None = None,
        auto_split: bool | None = None,
        max_split_shard: int | None = None,
    ) -> LogstoreInfo:
        with self._lock:
            info = self.catalog.logstore(project, name)
            if ttl is not None:
                _check_int("ttl", ttl, 1, MAX_TTL_DAYS)
            if max_split_shard is not None:
                _check_int("max_split_shard", max_split_shard, 1, MAX_SHARDS)
            if auto_split is not None and not isinstance(auto_split, bool):
                raise ServiceError(ErrorCode.INVALID_PARAMETER, "auto_split must be a boolean")
            updated = LogstoreInfo(
                project=project,
                name=name,
                ttl=info.ttl if ttl is None else ttl,
                shard_count=info.shard_count,
                auto_split=info.auto_split if auto_split is None else auto_split,
                max_split_shard=info.max_split_shard
                if max_split_shard is None
                else max_split_shard,
                create_time=info.create_time,
                update_time=self._now_seconds(),
                uid=info.uid,
            )
            self.catalog.update_logstore(updated)
            self._stores[(project, name)].info = updated
            return updated

    def delete_logstore(self, project: str, name: str) -> None:
        with self._lock:
            info = self.catalog.logstore(project, name)
            self.catalog.delete_logstore(info.uid)
            self._drop_runtime(self._stores.pop((project, name)))
        self._deleted(project, name)

    def _drop_runtime(self, runtime: LogstoreRuntime) -> None:
        self.commit.run(runtime.close)
        self._drop_index(runtime.info.uid)
        shutil.rmtree(runtime.directory, ignore_errors=True)

    def _runtime(self, project: str, logstore: str) -> LogstoreRuntime:
        runtime = self._stores.get((project, logstore))
        if runtime is None:
            self.catalog.logstore(project, logstore)  # raises the precise not-found error
            raise ServiceError(ErrorCode.LOGSTORE_NOT_EXIST, f"logstore {logstore!r} not found")
        return runtime

    # -------------------------------------------------------------- shards

    def list_shards(self, project: str, logstore: str) -> list[ShardInfo]:
        return self.catalog.shards(self._runtime(project, logstore).info.uid)

    def _shard_info(self, uid: str, shard_id: ShardId) -> ShardInfo:
        for shard in self.catalog.shards(uid):
            if shard.shard_id == shard_id:
                return shard
        raise ServiceError(ErrorCode.SHARD_NOT_EXIST, f"shard {shard_id} does not exist")

    def split_shard(
        self, project: str, logstore: str, shard_id: ShardId, split_key: str
    ) -> list[ShardInfo]:
        """Split a readwrite shard at ``split_key``: it becomes readonly and two new
        readwrite shards take ``[begin, split_key)`` and ``[split_key, end)``."""
        with self._lock:
            runtime = self._runtime(project, logstore)
            parent = self._writable_shard(runtime, shard_id)
            key = parse_hash_key(split_key)
            if not parse_hash_key(parent.begin_key) < key < parse_hash_key(parent.end_key):
                raise ServiceError(
                    ErrorCode.INVALID_PARAMETER,
                    f"split key {split_key} is not inside shard {shard_id}'s range "
                    f"[{parent.begin_key}, {parent.end_key})",
                )
            left, right = self._new_ids(runtime, retiring=1, creating=2)
            now = self._now_seconds()
            children = [
                ShardInfo(
                    left,
                    ShardStatus.READWRITE,
                    parent.begin_key,
                    format_hash_key(key),
                    now,
                    parents=(shard_id,),
                ),
                ShardInfo(
                    right,
                    ShardStatus.READWRITE,
                    format_hash_key(key),
                    parent.end_key,
                    now,
                    parents=(shard_id,),
                ),
            ]
            retired = [_retire(parent, (left, right))]
            return self._replace_shards(runtime, retired, children)

    def merge_shard(self, project: str, logstore: str, shard_id: ShardId) -> list[ShardInfo]:
        """Merge a readwrite shard with the readwrite shard that follows it in hash order."""
        with self._lock:
            runtime = self._runtime(project, logstore)
            first = self._writable_shard(runtime, shard_id)
            following = [
                s
                for s in self.catalog.shards(runtime.info.uid)
                if s.status is ShardStatus.READWRITE and s.begin_key == first.end_key
            ]
            if not following:
                raise ServiceError(
                    ErrorCode.INVALID_PARAMETER,
                    f"shard {shard_id} has no adjacent readwrite shard after it to merge with",
                )
            second = following[0]
            (merged_id,) = self._new_ids(runtime, retiring=2, creating=1)
            merged = ShardInfo(
                merged_id,
                ShardStatus.READWRITE,
                first.begin_key,
                second.end_key,
                self._now_seconds(),
                parents=(first.shard_id, second.shard_id),
            )
            retired = [_retire(first, (merged_id,)), _retire(second, (merged_id,))]
            return self._replace_shards(runtime, retired, [merged])

    def _writable_shard(self, runtime: LogstoreRuntime, shard_id: ShardId) -> ShardInfo:
        shard = self._shard_info(runtime.info.uid, shard_id)
        if shard.status is not ShardStatus.READWRITE:
            raise ServiceError(ErrorCode.SHARD_READ_ONLY, f"shard {shard_id} is readonly")
        return shard

    def _new_ids(self, runtime: LogstoreRuntime, *, retiring: int, creating: int) -> list[ShardId]:
        shards = self.catalog.shards(runtime.info.uid)
        writable = sum(1 for s in shards if s.status is ShardStatus.READWRITE)
        if writable - retiring + creating > MAX_SHARDS:
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER,
                f"a logstore may have at most {MAX_SHARDS} readwrite shards",
            )
        top = max(s.shard_id for s in shards)
        return [top + 1 + i for i in range(creating)]

    def _replace_shards(
        self, runtime: LogstoreRuntime, retired: list[ShardInfo], created: list[ShardInfo]
    ) -> list[ShardInfo]:
        for shard in created:
            runtime.add_shard(
                shard, segment_bytes=self.config.segment_bytes, durable=self.config.durable
            )
        self.catalog.replace_shards(runtime.info.uid, retired, created)
        shards = self.catalog.shards(runtime.info.uid)

        def apply() -> None:  # on the commit thread: the next append sees the new routes
            for shard in retired:
                runtime.shards[shard.shard_id].set_readonly()
            runtime.set_routes(shards)

        self.commit.run(apply)
        runtime.info = self.catalog.logstore(runtime.info.project, runtime.info.name)
        return retired + created

    # ---------------------------------------------------------------- data

    def put(
        self,
        project: str,
        logstore: str,
        group: PreparedGroup,
        hash_key: str | None = None,
        *,
        block: bool = True,
    ) -> Future[PutResult]:
        """Queue a validated log group; the future resolves once it is durable.

        When the write queue is full, wait for room up to the submit timeout
        (``block``), or raise ``QueueFull`` at once (for callers on an event loop).
        """
        key = parse_hash_key(hash_key) if hash_key else None
        return self.commit.append(self._runtime(project, logstore), group, key, block=block)

    async def put_from_loop(
        self, project: str, logstore: str, group: PreparedGroup, hash_key: str | None = None
    ) -> Future[PutResult]:
        """``put`` for callers on an event loop: queues at once when the write queue
        has room, else waits for room in a thread, never blocking the loop."""
        try:
            return self.put(project, logstore, group, hash_key, block=False)
        except QueueFull:
            return await asyncio.to_thread(self.put, project, logstore, group, hash_key)

    def require_logstore(self, project: str, logstore: str) -> None:
        """Raise the precise not-found error unless the logstore exists."""
        self._runtime(project, logstore)

    def shard_status(self, project: str, logstore: str, shard_id: ShardId) -> ShardStatus:
        shard = self._runtime(project, logstore).shard(shard_id)
        return ShardStatus.READONLY if shard.readonly else ShardStatus.READWRITE

    def cursor(self, project: str, logstore: str, shard_id: ShardId, at: CursorFrom) -> Position:
        """The position at ``begin``, at ``end``, or of the first log group received
        at or after the time ``at`` (nanoseconds)."""
        shard = self._runtime(project, logstore).shard(shard_id)
        if at == "begin":
            return shard.begin
        if at == "end":
            return shard.end
        if not isinstance(at, int) or isinstance(at, bool):
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "from must be begin, end or a time")
        return shard.position_at(at)

    def pull(
        self,
        project: str,
        logstore: str,
        shard_id: ShardId,
        position: Position,
        *,
        count: int = 100,
        max_bytes: int = DEFAULT_PULL_BYTES,
        stop: Position | None = None,
    ) -> PullResult:
        _check_int("count", count, 1, MAX_PULL_COUNT)
        _check_int("max_bytes", max_bytes, 1, MAX_PULL_BYTES)
        shard = self._runtime(project, logstore).shard(shard_id)
        if stop is not None:
            shard.clamp(stop)
        return shard.read(position, count=count, max_bytes=max_bytes, stop=stop)

    def cursor_time(
        self, project: str, logstore: str, shard_id: ShardId, position: Position
    ) -> Nanos:
        """The receive time of the log group at ``position`` (for the end cursor, of the
        last log group; for an empty shard, now)."""
        shard = self._runtime(project, logstore).shard(shard_id)
        shard.clamp(position)
        received = shard.received_at(position)
        return self.clock() if received is None else received

    def add_waiter(
        self,
        project: str,
        logstore: str,
        shard_id: ShardId,
        position: Position,
        wake: Callable[[], None],
    ) -> Callable[[], None] | None:
        """Call ``wake`` (from the commit thread; keep it cheap) once data past
        ``position`` is visible.  Returns a function that cancels the wait, or None
        when data is already there and ``wake`` will not be called."""
        shard = self._runtime(project, logstore).shard(shard_id)
        if not shard.add_waiter(position, wake):
            return None
        return lambda: shard.remove_waiter(wake)

    # ------------------------------------------------------ index and query

    def _index_path(self, uid: str) -> Path:
        return self.config.data_dir / "index" / f"{uid}.duckdb"

    def _open_index(self, uid: str) -> IndexStore:
        store = IndexStore(
            self._index_path(uid),
            memory_limit=self.config.query_memory_limit,
            sealed_cache=self.query_cache,
            seal_min_logs=self.config.seal_min_group_logs,
        )
        runtime = next((r for r in self._stores.values() if r.info.uid == uid), None)
        if runtime is not None:
            # without the engine's lock: a deletion holds it while it closes the
            # store, which waits for the queries reading the shard logs
            store.shard_logs = _shards_of(runtime)
        self._indexes[uid] = store
        return store

    def _drop_index(self, uid: str) -> None:
        store = self._indexes.pop(uid, None)
        if store is not None:
            store.close()
        for path in self._index_path(uid).parent.glob(f"{uid}.duckdb*"):
            path.unlink(missing_ok=True)

    def _indexed_stores(self) -> list[tuple[IndexStore, LogstoreRuntime]]:
        """Every live logstore that has an index, with its index store."""
        with self._lock:
            return [
                (self._indexes[r.info.uid], r)
                for r in self._stores.values()
                if r.info.uid in self._indexes and not r.deleted
            ]

    def _index_targets(self) -> Iterator[IndexedLogstore]:
        for store, runtime in self._indexed_stores():
            yield IndexedLogstore(store, _shards_of(runtime))

    def create_index(self, project: str, logstore: str, document: object) -> IndexConfig:
        """Index a logstore (from its oldest kept data on) with this configuration."""
        config = parse_index_config(document)
        with self._lock:
            runtime = self._runtime(project, logstore)
            self.catalog.save_index_config(
                runtime.info.uid, config.text, self._now_seconds(), create=True
            )
            self._open_index(runtime.info.uid)
        self.indexer.nudge()
        return config

    def get_index(self, project: str, logstore: str) -> IndexConfig:
        document = self.catalog.index_config(self._runtime(project, logstore).info.uid)
        if document is None:
            raise ServiceError(
                ErrorCode.INDEX_CONFIG_NOT_EXIST, f"logstore {logstore!r} has no index"
            )
        return parse_index_config(json.loads(document))

    def update_index(self, project: str, logstore: str, document: object) -> IndexConfig:
        """Replace the configuration; it applies to every query from now on, over all
        indexed data (nothing is re-indexed: the index keeps raw values)."""
        config = parse_index_config(document)
        with self._lock:
            self.get_index(project, logstore)
            uid = self._runtime(project, logstore).info.uid
            self.catalog.save_index_config(uid, config.text, self._now_seconds(), create=False)
        return config

    def delete_index(self, project: str, logstore: str) -> None:
        """Stop indexing the logstore and delete its index data."""
        with self._lock:
            uid = self._runtime(project, logstore).info.uid
            if not self.catalog.delete_index_config(uid):
                raise ServiceError(
                    ErrorCode.INDEX_CONFIG_NOT_EXIST, f"logstore {logstore!r} has no index"
                )
            self._drop_index(uid)

    def _indexed(self, project: str, logstore: str) -> tuple[IndexStore, IndexConfig, bool]:
        """The store and configuration, after waiting (briefly) for the index to take
        in every write acknowledged before this call; False if it could not."""
        config = self.get_index(project, logstore)
        runtime = self._runtime(project, logstore)
        store = self._indexes.get(runtime.info.uid)
        if store is None:
            raise index_deleted()
        ends = {shard_id: log.end for shard_id, log in runtime.shards.items()}
        deadline = time.monotonic() + self.config.index_wait
        self.indexer.nudge()
        while True:
            progress = store.progress()
            if all(
                max(progress.get(s, 0), runtime.shards[s].begin) >= end for s, end in ends.items()
            ):
                return store, config, True
            if time.monotonic() >= deadline:
                return store, config, False
            time.sleep(0.01)

    def query(
        self,
        project: str,
        logstore: str,
        query: str,
        from_ns: int,
        to_ns: int,
        *,
        line: int = 100,
        offset: int = 0,
        reverse: bool = False,
        topic: str | None = None,
        cancel: Cancellation | None = None,
    ) -> QueryResult:
        """Search (and analyse with SQL after ``|``) the logs with times in
        ``[from_ns, to_ns)``.  See ``logharbor.engine.index.query``."""
        store, config, caught_up = self._indexed(project, logstore)
        result = self.queries.run(
            store,
            config,
            query,
            from_ns,
            to_ns,
            line=line,
            offset=offset,
            reverse=reverse,
            topic=topic,
            cancel=cancel,
        )
        result.complete = caught_up
        return result

    def histogram(
        self,
        project: str,
        logstore: str,
        query: str,
        from_ns: int,
        to_ns: int,
        *,
        interval: int | None = None,
        topic: str | None = None,
        cancel: Cancellation | None = None,
    ) -> tuple[list[Bucket], bool]:
        store, config, caught_up = self._indexed(project, logstore)
        buckets = self.queries.histogram(
            store, config, query, from_ns, to_ns, interval=interval, topic=topic, cancel=cancel
        )
        return buckets, caught_up

    def context(
        self,
        project: str,
        logstore: str,
        shard_id: ShardId,
        position: Position,
        index: int,
        *,
        back: int = 10,
        forward: int = 10,
    ) -> tuple[list[LogRow], list[LogRow]]:
        """The logs just before and after a log (shard, log group position, index in
        the group), in the order they are stored in the shard."""
        store, _config, _ = self._indexed(project, logstore)
        self._runtime(project, logstore).shard(shard_id)
        return self.queries.context(store, shard_id, position, index, back, forward)

    def index_lag(self, project: str, logstore: str) -> dict[ShardId, Position]:
        """Log groups written but not yet searchable, per shard."""
        runtime = self._runtime(project, logstore)
        store = self._indexes.get(runtime.info.uid)
        if store is None:
            raise ServiceError(
                ErrorCode.INDEX_CONFIG_NOT_EXIST, f"logstore {logstore!r} has no index"
            )
        return Indexer.lag(IndexedLogstore(store, _shards_of(runtime)))

    def storage(self) -> list[tuple[str, str, int, int]]:
        """(project, logstore, bytes of shard logs, bytes of index) of every logstore."""
        with self._lock:
            stores = list(self._stores.values())
            indexes = dict(self._indexes)
        found = []
        for runtime in stores:
            shards = sum(shard.stored_bytes for shard in list(runtime.shards.values()))
            index = indexes.get(runtime.info.uid)
            index_bytes = 0
            if index is not None:
                with contextlib.suppress(OSError):  # deleted meanwhile
                    index_bytes = index.path.stat().st_size
            found.append((runtime.info.project, runtime.info.name, shards, index_bytes))
        return found

    def index_lags(self) -> list[tuple[str, str, int]]:
        """(project, logstore, log groups written but not yet searchable) of every
        indexed logstore."""
        lags = []
        for store, runtime in self._indexed_stores():
            behind = Indexer.lag(IndexedLogstore(store, _shards_of(runtime)))
            lags.append((runtime.info.project, runtime.info.name, sum(behind.values())))
        return lags

    # ----------------------------------------------------- consumer groups
    #
    # A group is per logstore (``logstore`` given; SLS style) or per project over
    # a list of logstores (``logstore=None``; TLS style).  See consumer.py.

    def create_consumer_group(
        self,
        project: str,
        name: str,
        *,
        logstore: str | None = None,
        logstores: Sequence[str] | None = None,
        timeout: int = 60,
        in_order: bool = False,
    ) -> ConsumerGroupInfo:
        check_name("consumer group", name)
        check_timeout(timeout)
        if not isinstance(in_order, bool):
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "in_order must be a boolean")
        if logstore is not None:
            members: tuple[str, ...] = (logstore,)
        else:
            members = tuple(dict.fromkeys(logstores or ()))
            if not members:
                raise ServiceError(
                    ErrorCode.INVALID_PARAMETER, "a project-level group needs logstores"
                )
        for store in members:
            self._runtime(project, store)
        now = self._now_seconds()
        info = ConsumerGroupInfo(
            project, logstore or "", name, members, timeout, in_order, now, now
        )
        self.catalog.insert_group(info)
        return info

    def get_consumer_group(
        self, project: str, name: str, *, logstore: str | None = None
    ) -> ConsumerGroupInfo:
        if logstore is not None:
            self._runtime(project, logstore)
        else:
            self.catalog.project(project)
        return self.catalog.group(project, logstore or "", name)

    def list_consumer_groups(
        self, project: str, *, logstore: str | None = None
    ) -> list[ConsumerGroupInfo]:
        if logstore is not None:
            self._runtime(project, logstore)
        else:
            self.catalog.project(project)
        return self.catalog.groups(project, logstore or "")

    def update_consumer_group(
        self,
        project: str,
        name: str,
        *,
        logstore: str | None = None,
        timeout: int | None = None,
        in_order: bool | None = None,
    ) -> ConsumerGroupInfo:
        group = self.get_consumer_group(project, name, logstore=logstore)
        if timeout is not None:
            check_timeout(timeout)
        if in_order is not None and not isinstance(in_order, bool):
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "in_order must be a boolean")
        updated = ConsumerGroupInfo(
            group.project,
            group.scope,
            group.name,
            group.logstores,
            group.timeout if timeout is None else timeout,
            group.in_order if in_order is None else in_order,
            group.create_time,
            self._now_seconds(),
        )
        self.catalog.update_group(updated)
        return updated

    def delete_consumer_group(
        self, project: str, name: str, *, logstore: str | None = None
    ) -> None:
        group = self.get_consumer_group(project, name, logstore=logstore)
        self.catalog.delete_group(group.project, group.scope, group.name)
        self.consumers.forget((group.project, group.scope, group.name))

    def _group_shards(self, group: ConsumerGroupInfo) -> list[ShardView]:
        views: list[ShardView] = []
        for store in group.logstores:
            runtime = self._stores.get((group.project, store))
            if runtime is None:
                continue  # deleted since: its shards are simply gone
            logs = dict(runtime.shards)

            def bounds(shard_id: ShardId, logs: dict[ShardId, ShardLog] = logs) -> tuple[int, int]:
                return logs[shard_id].begin, logs[shard_id].end

            views.extend(shard_views(store, self.catalog.shards(runtime.info.uid), bounds))
        return views

    def heartbeat(
        self,
        project: str,
        name: str,
        consumer: str,
        held: Sequence[ShardRef] | None,
        *,
        logstore: str | None = None,
    ) -> list[ShardRef]:
        """Record that ``consumer`` is alive and holds ``held`` (None: it does not
        say); answer the shards it should hold."""
        if not isinstance(consumer, str) or not 1 <= len(consumer) <= 128:
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "consumer must be 1-128 characters")
        group = self.get_consumer_group(project, name, logstore=logstore)
        checkpoints = {
            ref: cp.position
            for ref, cp in self.catalog.checkpoints(group).items()
            if cp.position is not None
        }
        return self.consumers.heartbeat(
            group, consumer, held, self._group_shards(group), checkpoints
        )

    def leave_group(
        self, project: str, name: str, consumer: str, *, logstore: str | None = None
    ) -> None:
        """``consumer`` stops, having saved its checkpoints: its shards move at once."""
        group = self.get_consumer_group(project, name, logstore=logstore)
        self.consumers.leave(group, consumer)

    def _group_shard(self, group: ConsumerGroupInfo, ref: ShardRef) -> ShardView:
        if ref[0] not in group.logstores:
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER,
                f"logstore {ref[0]!r} is not read by consumer group {group.name!r}",
            )
        for view in self._group_shards(group):
            if view.ref == ref:
                return view
        raise ServiceError(ErrorCode.SHARD_NOT_EXIST, f"shard {ref[1]} does not exist")

    def get_checkpoints(
        self, project: str, name: str, *, logstore: str | None = None
    ) -> list[Checkpoint]:
        """One entry per shard the group reads; ``position`` None where there is none."""
        group = self.get_consumer_group(project, name, logstore=logstore)
        saved = self.catalog.checkpoints(group)
        return [
            saved.get(view.ref) or Checkpoint(view.ref[0], view.ref[1], None, "", 0)
            for view in self._group_shards(group)
        ]

    def update_checkpoint(
        self,
        project: str,
        name: str,
        ref: ShardRef,
        position: Position,
        consumer: str,
        *,
        force: bool = False,
        logstore: str | None = None,
    ) -> None:
        """Save where ``consumer`` should resume a shard.  Refused (ConsumerNotMatch)
        from a member that does not own the shard, unless ``force``."""
        group = self.get_consumer_group(project, name, logstore=logstore)
        view = self._group_shard(group, ref)
        if position > view.end:
            raise ServiceError(
                ErrorCode.INVALID_CURSOR, f"checkpoint {position} is past the shard's end"
            )
        if not force and not self.consumers.owns(group, consumer, ref):
            raise ServiceError(
                ErrorCode.CONSUMER_NOT_MATCH,
                f"consumer {consumer!r} does not hold shard {ref[1]}; use force to override",
            )
        self.catalog.save_checkpoint(group, ref[0], ref[1], position, consumer, self._now_seconds())

    def group_fetch(
        self,
        project: str,
        name: str,
        consumer: str,
        ref: ShardRef,
        position: Position,
        *,
        logstore: str | None = None,
    ) -> None:
        """A member is about to fetch ``ref`` at ``position``: refuse it
        (ConsumerNotMatch) unless it holds the shard, and note fetches at a readonly
        shard's end (that finishes the shard for ordered consumption).  With
        ``logstore`` given, a project-level group of that name that reads the logstore
        counts too: a member pulls by logstore whichever kind of group it is in."""
        try:
            group = self.get_consumer_group(project, name, logstore=logstore)
        except ServiceError as exc:
            if logstore is None or exc.code is not ErrorCode.CONSUMER_GROUP_NOT_EXIST:
                raise
            group = self.get_consumer_group(project, name)
            if logstore not in group.logstores:
                raise
        if not self.consumers.owns(group, consumer, ref):
            raise ServiceError(
                ErrorCode.CONSUMER_NOT_MATCH,
                f"consumer {consumer!r} does not hold shard {ref[1]} of group {name!r}",
            )
        self.consumers.record_fetch(group, consumer, self._group_shard(group, ref), position)

    def consumer_group_status(
        self, project: str, name: str, *, logstore: str | None = None
    ) -> tuple[dict[str, list[ShardRef]], list[ShardLag]]:
        """Live members with their shards, and every shard's lag."""
        group = self.get_consumer_group(project, name, logstore=logstore)
        saved = self.catalog.checkpoints(group)
        lags = []
        now = self.clock()
        for view in self._group_shards(group):
            checkpoint = saved.get(view.ref)
            saved_at = checkpoint.position if checkpoint is not None else None
            start = view.begin if saved_at is None else max(view.begin, saved_at)
            behind = max(0, view.end - start)
            seconds = 0.0
            if behind:
                received = (
                    self._stores[(project, view.ref[0])].shard(view.ref[1]).received_at(start)
                )
                seconds = max(0.0, (now - (received or now)) / NANOS_PER_SECOND)
            lags.append(ShardLag(view.ref, behind, seconds))
        return self.consumers.members(group), lags

    # ----------------------------------------------------------- retention

    def run_retention(self) -> int:
        """Drop data older than each logstore's TTL; returns the log groups dropped."""
        now = self.clock()
        with self._lock:
            stores = list(self._stores.values())

        def detach() -> list[tuple[ShardLog, list[Segment]]]:
            detached = []
            for runtime in stores:
                if runtime.deleted:
                    continue
                cutoff = now - runtime.info.ttl * NANOS_PER_DAY
                for shard in runtime.shards.values():
                    expired = shard.detach_expired(cutoff)
                    if expired:
                        detached.append((shard, expired))
            return detached

        # the commit thread only unlinks the segments from memory; deleting files
        # and syncing directories happens here, while writes go on
        detached: list[tuple[ShardLog, list[Segment]]] = self.commit.run(detach)
        dropped = 0
        for shard, segments in detached:
            shard.discard(segments)
            dropped += sum(s.count for s in segments)
        if dropped:
            log.info("retention dropped %d log groups", dropped)
            for runtime in stores:  # the index forgets what the shard logs dropped
                index = self._indexes.get(runtime.info.uid)
                if index is not None and not runtime.deleted:
                    for shard_id, shard in list(runtime.shards.items()):
                        index.drop_before(shard_id, shard.begin)
        return dropped

    def run_compaction(self) -> int:
        """Seal segments older than ``segment_seconds``, then compact the sealed ones
        (column by column, or zstd); returns how many were compacted.

        Each copy is written and synced in this (maintenance) thread; sealing and the
        swap run on the commit thread, in order with writes and retention.
        """
        with self._lock:
            stores = list(self._stores.values())
        cutoff = self.clock() - int(self.config.segment_seconds * NANOS_PER_SECOND)

        def seal_old() -> None:
            for runtime in stores:
                if not runtime.deleted:
                    for shard in list(runtime.shards.values()):
                        try:
                            shard.seal_if_older(cutoff)
                        except OSError:  # e.g. a full disk: the others still get sealed
                            log.exception("cannot seal a segment of %s", shard.directory)

        self.commit.run(seal_old)
        if self.config.compact_level <= 0:
            return 0
        done = 0
        for runtime in stores:
            for shard in list(runtime.shards.values()):
                for segment in shard.compactable():
                    if runtime.deleted or self._stopping.is_set():
                        return done
                    statistics = CompactionStatistics()
                    try:
                        replacement = shard.compact(
                            segment, level=self.config.compact_level, statistics=statistics
                        )
                    except FileNotFoundError:  # the logstore was deleted meanwhile
                        continue
                    except Exception:  # one damaged segment must not stop the others
                        log.exception("cannot compact %s; it stays as it is", segment.path)
                        segment.skip_compaction = True
                        continue
                    if replacement is None:
                        continue

                    def swap(
                        s: ShardLog = shard, old: Segment = segment, new: Segment = replacement
                    ) -> bool:
                        return s.swap_compacted(old, new)

                    if self.commit.run(swap):  # not if retention dropped it meanwhile
                        done += 1
                        self.compaction.add(statistics)
        if done:
            log.info("compacted %d sealed segments", done)
        return done

    def run_auto_split(self) -> list[tuple[str, str, ShardId]]:
        """Split the hot shards of auto-split logstores; returns what was split.

        A readwrite shard whose write rate since the previous pass exceeds
        ``auto_split_bytes_per_second`` is split at the middle of its hash range,
        while the logstore has fewer readwrite shards than its ``max_split_shard``.
        """
        now = self.clock()
        elapsed = (now - self._last_split_check) / NANOS_PER_SECOND
        self._last_split_check = now
        with self._lock:
            stores = list(self._stores.values())
        hot: list[tuple[LogstoreRuntime, ShardId]] = []
        for runtime in stores:
            for shard_id, shard in runtime.shards.items():
                written = shard.raw_bytes_written - self._split_seen.get(id(shard), 0)
                self._split_seen[id(shard)] = shard.raw_bytes_written
                rate = written / elapsed if elapsed > 0 else 0.0
                if (
                    runtime.info.auto_split
                    and not shard.readonly
                    and (rate > self.config.auto_split_bytes_per_second)
                ):
                    hot.append((runtime, shard_id))
        done = []
        for runtime, shard_id in hot:
            info = runtime.info
            if runtime.deleted or info.shard_count >= info.max_split_shard:
                continue
            current = self._shard_info(info.uid, shard_id)
            begin, end = parse_hash_key(current.begin_key), parse_hash_key(current.end_key)
            if end == MAX_HASH_KEY:  # the last shard's end stands for 2**128
                end += 1
            if end - begin < 2:
                continue
            try:
                self.split_shard(
                    info.project, info.name, shard_id, format_hash_key((begin + end) // 2)
                )
            except ServiceError as exc:  # deleted or changed meanwhile
                log.info("auto-split of shard %s skipped: %s", shard_id, exc.message)
                continue
            log.info("auto-split shard %d of %s/%s", shard_id, info.project, info.name)
            done.append((info.project, info.name, shard_id))
        return done

    def _retention_loop(self) -> None:
        while not self._stopping.wait(self.config.retention_interval):
            for task in (self.run_retention, self.run_auto_split, self.run_compaction):
                try:
                    task()
                except Exception:
                    log.exception("maintenance pass %s failed", task.__name__)

    def statistics(self) -> CommitStatistics:
        return self.commit.statistics()


def _shards_of(runtime: LogstoreRuntime) -> Callable[[], dict[ShardId, ShardLog]]:
    """The logstore's shard logs; none once it is deleted."""
    return lambda: {} if runtime.deleted else dict(runtime.shards)


@dataclass(frozen=True, slots=True)
class ShardLag:
    ref: ShardRef
    behind_groups: int  # log groups after the checkpoint (from the oldest kept, if none)
    behind_seconds: float  # age of the oldest unconsumed log group; 0 when caught up


def _retire(shard: ShardInfo, children: tuple[ShardId, ...]) -> ShardInfo:
    return ShardInfo(
        shard.shard_id,
        ShardStatus.READONLY,
        shard.begin_key,
        shard.end_key,
        shard.create_time,
        parents=shard.parents,
        children=children,
    )
