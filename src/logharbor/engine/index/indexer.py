"""The indexer: follows the shard logs of indexed logstores into their index stores.

One thread visits every indexed logstore; for each shard it reads the log groups
after the shard's progress (at most ``batch_bytes`` at a time), decodes them into
an Arrow table and appends it with the new progress in one transaction.  When a
pass finds nothing to do it sleeps ``idle_interval`` seconds, so a write becomes
searchable within about that long plus the time to index it.  Decoding runs in the
worker processes, and building a batch's token filters (``IndexStore.prepare``) in
a second thread, both while the previous batch is appended.

Retention: when a shard's oldest kept position moves past rows in the index,
those rows are deleted, so the index never holds logs the shard log dropped.

Sealing: when idle, the indexer hands each compacted segment's log groups over
to the shard log (``IndexStore.seal``): their rows leave table ``logs`` and
queries read them from the compacted records (``sealed.py``); once most of the
index's file is free space, it is rewritten (``IndexStore.rewrite_if_sparse``).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, overload

import pyarrow as pa

from ..._native import speedups
from ...protocol.codec import iter_frames
from ...protocol.schema import LogGroup
from ..shardlog import ShardLog
from ..types import DECODED_LOG_COST, NANOS_PER_SECOND, Position, ShardId
from .store import BASE_SCHEMA, FIELD_PREFIX, IndexStore, PreparedRows

log = logging.getLogger(__name__)


def decode_frames(frames: bytes, shard: ShardId) -> pa.Table:
    """Decode stored frames into index rows: the base columns, then one ``c:<field>``
    column per field name seen (NULL where a log lacks the field)."""
    positions: list[int] = []
    indexes: list[int] = []
    topics: list[str] = []
    sources: list[str] = []
    tag_offsets = [0]
    tag_keys: list[str] = []
    tag_values: list[str] = []
    times: list[int] = []
    fields: dict[str, list[str | None]] = {}
    row = 0
    for frame in iter_frames(frames, verify=False):
        group_times, topic, source, tags = decode_group(frame.raw(), fields, row)
        count = len(group_times)
        group_tags = _unique(tags)
        keys = [k for k, _ in group_tags]
        values = [v for _, v in group_tags]
        for _ in range(count):
            tag_keys.extend(keys)
            tag_values.extend(values)
            tag_offsets.append(len(tag_keys))
        times.extend(group_times)
        indexes.extend(range(count))
        positions.extend([frame.position] * count)
        topics.extend([topic] * count)
        sources.extend([source] * count)
        row += count
    arrays = [
        pa.array(times, pa.int64()),
        pa.array([shard] * row, pa.int32()),
        pa.array(positions, pa.int64()),
        pa.array(indexes, pa.int32()),
        pa.array(topics, pa.string()),
        pa.array(sources, pa.string()),
        _map(tag_offsets, tag_keys, tag_values),
    ]
    names = list(BASE_SCHEMA.names)
    for key, column in fields.items():
        column.extend([None] * (row - len(column)))
        arrays.append(_strings(column))
        names.append(FIELD_PREFIX + key)
    return pa.table(arrays, names=names)


GroupRows = tuple[list[int], str, str, list[tuple[str, str]]]


def decode_group_python(raw: bytes, fields: dict[str, list[str | None]], row: int) -> GroupRows:
    """Decode one serialized LogGroup whose logs become rows ``row, row + 1, ...``:
    append each log's field values to ``fields`` (a column per field name, padded
    with None; a repeated field name in one log keeps its first value) and return
    the logs' times in ns, the topic, the source and the tags.  Text that is not
    UTF-8 is decoded with replacement characters."""
    group = LogGroup.FromString(raw)
    times: list[int] = []
    for entry in group.Logs:
        for content in entry.Contents:
            key = _text(content.Key)
            column = fields.get(key)
            if column is None:
                column = fields[key] = [None] * row
            elif len(column) > row:
                continue  # a repeated field name: the first value stays
            elif len(column) < row:
                column.extend([None] * (row - len(column)))
            column.append(_text(content.Value))
        times.append(entry.Time * NANOS_PER_SECOND + entry.Time_ns)
        row += 1
    tags = [(_text(tag.Key), _text(tag.Value)) for tag in group.LogTags]
    return times, _text(group.Topic), _text(group.Source), tags


def _decode_group_c(raw: bytes, fields: dict[str, list[str | None]], row: int) -> GroupRows:
    result: GroupRows = speedups.decode_log_group(raw, fields, row)
    return result


decode_group: Callable[[bytes, dict[str, list[str | None]], int], GroupRows] = (
    decode_group_python if speedups is None else _decode_group_c
)


def _strings(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a value that is not UTF-8 came as bytes
        return pa.array([_text(v) for v in values], pa.string())


@overload
def _text(value: str | bytes) -> str: ...
@overload
def _text(value: None) -> None: ...
def _text(value: str | bytes | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.decode("utf-8", "replace")


def _unique(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A map keeps the first value of a repeated key."""
    if len({k for k, _ in pairs}) == len(pairs):
        return pairs
    first: dict[str, str] = {}
    for key, value in pairs:
        first.setdefault(key, value)
    return list(first.items())


def _map(offsets: list[int], keys: list[str], values: list[str]) -> pa.MapArray:
    return pa.MapArray.from_arrays(
        pa.array(offsets, pa.int32()), pa.array(keys, pa.string()), pa.array(values, pa.string())
    )


def decode_frames_ipc(frames: bytes, shard: ShardId) -> bytes:
    """``decode_frames`` for a worker process: the table as Arrow IPC stream bytes."""
    table = decode_frames(frames, shard)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def read_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


Decode = Callable[[bytes, ShardId], "Future[bytes]"]


@dataclass(frozen=True, slots=True)
class _Pending:
    start: Position
    upto: Position
    prepared: Future[PreparedRows]


def _prepare(store: IndexStore, decoded: Future[bytes]) -> PreparedRows:
    return store.prepare(read_ipc(decoded.result()))


@dataclass(eq=False)
class IndexedLogstore:
    """An index store and the shard logs it follows."""

    store: IndexStore
    shards: Callable[[], dict[ShardId, ShardLog]]


class Indexer:
    def __init__(
        self,
        targets: Callable[[], Iterator[IndexedLogstore]],
        decode: Decode,
        *,
        batch_bytes: int = 8 << 20,
        decode_budget: int = 32 << 20,
        idle_interval: float = 0.1,
        depth: int = 2,
    ) -> None:
        self._targets = targets
        self._decode = decode
        self.depth = depth
        self._inflight: dict[tuple[int, ShardId], deque[_Pending]] = {}
        self.batch_bytes = batch_bytes  # stored bytes read at a time
        self.decode_budget = decode_budget  # decoded bytes, plus DECODED_LOG_COST a log
        self.idle_interval = idle_interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._preparing = ThreadPoolExecutor(1, thread_name_prefix="logharbor-index-prepare")
        self._thread = threading.Thread(target=self._run, name="logharbor-indexer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self._preparing.shutdown(cancel_futures=True)

    def nudge(self) -> None:
        """Start a pass now (new data, a new index)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception:
                log.exception("indexing pass failed")
                busy = False
            if not busy:
                self._wake.wait(self.idle_interval)
                self._wake.clear()

    def run_once(self) -> bool:
        """One pass over every indexed logstore; True if anything was indexed."""
        busy = False
        seen: set[int] = set()
        for target in self._targets():
            if self._stop.is_set():
                break
            seen.add(id(target.store))
            try:
                busy |= self._index(target)
            except Exception:
                if target.store.closed:
                    continue  # dropped meanwhile
                raise
        for key in [k for k in self._inflight if k[0] not in seen]:
            del self._inflight[key]  # batches of indexes dropped meanwhile
        if not busy:  # idle: seal compacted segments, give old blocks the token filter
            for target in self._targets():
                if self._stop.is_set():
                    break
                store = target.store
                try:
                    busy |= self._seal(target) or store.refilter_step() or store.rewrite_if_sparse()
                except Exception:
                    if not store.closed:  # (else dropped meanwhile) the others go on
                        log.exception("idle work on an index failed: %s", store.path)
        return busy

    @staticmethod
    def _seal(target: IndexedLogstore) -> bool:
        """Seal the first compacted segment whose rows the index still keeps
        (``IndexStore.seal``); True if there was one."""
        store = target.store
        for shard_id, shard in target.shards().items():
            for base, count in shard.compacted():
                if (shard_id, base) in store.seal_checked:
                    continue
                sealed = store.seal(shard_id, base, count)
                if sealed is None:
                    break  # not indexed yet; nor are the later ones
                store.seal_checked.add((shard_id, base))
                if sealed:
                    return True
        return False

    def _index(self, target: IndexedLogstore) -> bool:
        """Keep up to ``depth`` batches per shard decoding in the worker processes,
        and append the oldest decoded batch of each shard: decoding the next batches
        overlaps with appending this one."""
        progress = target.store.progress()
        ready: list[tuple[ShardId, _Pending]] = []
        for shard_id, shard in target.shards().items():
            done = progress.get(shard_id, 0)
            begin = shard.begin
            if begin > done:  # retention dropped data: drop its rows and skip ahead
                target.store.drop_before(shard_id, begin)
                target.store.append(BASE_SCHEMA.empty_table(), shard_id, begin)
                done = begin
            queue = self._inflight.setdefault((id(target.store), shard_id), deque())
            if queue and queue[0].start != done:
                queue.clear()  # stale: retention moved the shard, or another store
            start = queue[-1].upto if queue else done
            while len(queue) < self.depth and start < shard.end:
                result = shard.read(start, count=1000, max_bytes=self.batch_bytes)
                # a batch is cut by what it decodes to, not by what it takes on disk:
                # three log groups of 1.3 KB stored (40 MiB of one repeated letter
                # each) took the server from 430 MB to 1.7 GB, and again after every
                # restart, as progress only moves once a batch is in
                result = result.within(self.decode_budget, DECODED_LOG_COST)
                if not result.group_count:
                    break
                decoded = self._decode(result.frames, shard_id)
                prepared = self._preparing.submit(_prepare, target.store, decoded)
                queue.append(_Pending(start, result.next_position, prepared))
                start = result.next_position
            if queue:
                ready.append((shard_id, queue.popleft()))
        for shard_id, pending in ready:
            target.store.append(pending.prepared.result(), shard_id, pending.upto)
        return bool(ready)

    @staticmethod
    def lag(target: IndexedLogstore) -> dict[ShardId, Position]:
        """Log groups not yet indexed, per shard."""
        progress = target.store.progress()
        return {
            shard_id: max(0, shard.end - max(progress.get(shard_id, 0), shard.begin))
            for shard_id, shard in target.shards().items()
        }
