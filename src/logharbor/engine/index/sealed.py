"""Index rows read straight from compacted log groups, a few fields at a time.

A compacted log group (``engine/columnar.py``, version 2) keeps each key's values
in a section of its own, so the rows the indexer would make of the group can be
rebuilt for just the fields a query reads: each log's time, its shard, position
and index, the group's topic, source and tags, and the first value of each
wanted field in each log (as the indexer keeps it, NULL where a log lacks the
field), without rebuilding the group's protobuf or touching the other keys.

``group_rows`` answers exactly what ``indexer.decode_frames`` answers for the
group (tests compare them), the wanted fields only.  Groups it cannot read that
way (version-1 payloads, keys that are not UTF-8, no C speedups) are rebuilt and
decoded as the indexer decodes them.
"""

from __future__ import annotations

import itertools
import re
import threading
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ..._native import speedups
from ...protocol.codec import FRAME_HEADER, FRAME_HEADER_SIZE, Compression, encode_frame
from ...protocol.errors import ErrorCode, ServiceError
from .. import columnar
from ..shardlog import COLUMNAR, ShardLog
from ..types import Position, ShardId
from . import tokens
from .indexer import _text, _unique, decode_frames, decode_group
from .store import BASE_SCHEMA, FIELD_PREFIX, MAP_TYPE

if TYPE_CHECKING:
    from .store import IndexStore


def group_rows(
    payload: bytes,
    raw_size: int,
    log_count: int,
    shard: ShardId,
    position: Position,
    wanted: Collection[str] | None = None,
    base: Collection[str] | None = None,
    *,
    dictionaries: bool = False,
) -> pa.Table:
    """The index rows of one stored columnar log group: the base columns (those in
    ``base``; None: all), then a ``c:<field>`` column per wanted field the group
    has (``wanted`` None: every field); the fields dictionary-encoded if
    ``dictionaries`` (what queries read: the values of most fields repeat)."""
    if speedups is not None and columnar.is_typed(payload):
        group = columnar.TypedGroup(payload, raw_size)
        if group.logs != log_count:  # (the record's header is checksummed, the body not)
            raise columnar.ColumnarError("the columnar body's log count is not the record's")
        table = _typed_rows(group, shard, position, wanted, base, dictionaries)
        if table is not None:
            return table
    raw = columnar.unpack(payload, raw_size)
    frame = encode_frame(position, 0, raw_size, log_count, Compression.NONE, raw)
    table = _select(decode_frames(frame, shard), wanted, base)
    return _dictionary_fields(table) if dictionaries else table


def _dictionary_fields(table: pa.Table) -> pa.Table:
    for number, name in enumerate(table.column_names):
        if name.startswith(FIELD_PREFIX):
            table = table.set_column(number, name, pc.dictionary_encode(table[name]))
    return table


def _select(
    table: pa.Table, wanted: Collection[str] | None, base: Collection[str] | None
) -> pa.Table:
    """``table``'s base columns in ``base`` and fields in ``wanted`` (None: all)."""
    if wanted is None and base is None:
        return table
    keep = [
        name
        for name in table.column_names
        if (
            (wanted is None or name[len(FIELD_PREFIX) :] in wanted)
            if name.startswith(FIELD_PREFIX)
            else (base is None or name in base)
        )
    ]
    return table.select(keep)


def _typed_rows(
    group: columnar.TypedGroup,
    shard: ShardId,
    position: Position,
    wanted: Collection[str] | None,
    base: Collection[str] | None,
    dictionaries: bool,
) -> pa.Table | None:
    try:
        names = [name.decode() for name in group.names]
    except UnicodeDecodeError:
        return None  # keys the indexer would decode with replacements (and may merge)
    if len(set(names)) != len(names):
        return None
    count = group.logs
    index = _index(count)
    arrays: list[pa.Array] = []
    columns = []
    needs_group = base is None or bool({"topic", "source", "tags"} & set(base))
    topic = source = ""
    tags: list[tuple[str, str]] = []
    if needs_group:
        _, topic, source, tags = decode_group(group.prefix + group.suffix, {}, 0)
        tags = _unique(tags)
    for name in BASE_SCHEMA.names:
        if base is not None and name not in base:
            continue
        columns.append(name)
        if name == "t":
            times = pa.py_buffer(group.times())
            arrays.append(pa.Array.from_buffers(pa.int64(), count, [None, times]))
        elif name == "shard":
            arrays.append(_repeat(pa.array([shard], pa.int32()), count))
        elif name == "pos":
            arrays.append(_repeat(pa.array([position], pa.int64()), count))
        elif name == "idx":
            arrays.append(index.cast(pa.int32()))
        elif name in ("topic", "source"):
            arrays.append(_repeat(pa.array([topic if name == "topic" else source]), count))
        else:  # tags: the group's, in every log
            arrays.append(_repeat(pa.array([tags], MAP_TYPE), count))
    for name_id, name in enumerate(names):
        if wanted is not None and name not in wanted:
            continue
        found = group.dictionary(name_id) if dictionaries else None
        if found is not None:
            indices, offsets, data, validity, utf8 = found
            values = _strings(len(offsets) // 4 - 1, offsets, data, None, utf8)
            mask = None if validity is None else pa.py_buffer(validity)
            keys = pa.Array.from_buffers(pa.int32(), count, [mask, pa.py_buffer(indices)])
            arrays.append(pa.DictionaryArray.from_arrays(keys, values))
        else:
            offsets, data, validity, utf8 = group.column(name_id)
            array = _strings(count, offsets, data, validity, utf8)
            arrays.append(pc.dictionary_encode(array) if dictionaries else array)
        columns.append(FIELD_PREFIX + name)
    return pa.table(arrays, names=columns)


def _strings(
    count: int, offsets: bytes, data: bytes, validity: bytes | None, utf8: bool
) -> pa.Array:
    """An Arrow string array of these buffers; text that is not UTF-8 decoded as
    the indexer decodes it (with replacement characters)."""
    buffers = [
        None if validity is None else pa.py_buffer(validity),
        pa.py_buffer(offsets),
        pa.py_buffer(data),
    ]
    if utf8:
        return pa.Array.from_buffers(pa.string(), count, buffers)
    raw = pa.Array.from_buffers(pa.binary(), count, buffers)
    return pa.array([None if v is None else _text(v) for v in raw.to_pylist()], pa.string())


def _repeat(value: pa.Array, count: int) -> pa.Array:
    """The one value of ``value``, ``count`` times."""
    return pc.take(value, _zeros(count, pa.int64()))


# ------------------------------------------------------------ query sources

# what query code writes for the table of all logs and for a row's id
LOGS = "__logharbor_logs__"
ROWID = "__logharbor_rowid__"
_FIELD_COLUMN = re.compile(r'"(f\d+)"')
_IDX_BITS = 20  # a log's index in its group is below 2**20 (Limits.max_group_logs)
_IDX_MASK = (1 << _IDX_BITS) - 1
# sealed log groups one query may read (2 billion logs in groups of 4,096)
MAX_GROUPS = 500_000
_READ_BYTES = 16 << 20  # stored bytes read from a shard log at a time
_BATCH_ROWS = 16_384  # rows handed to DuckDB at a time (small groups are joined)
_AHEAD = 8  # groups decoding at a time, per stream
# decodes sealed groups for every query (their C parts run without the GIL)
_DECODERS = ThreadPoolExecutor(2, thread_name_prefix="logharbor-sealed")
_FIELD = pa.dictionary(pa.int32(), pa.string())  # a field's values in a stream
_TYPES = {
    "t": pa.int64(),
    "shard": pa.int32(),
    "pos": pa.int64(),
    "idx": pa.int32(),
    "blk": pa.int32(),
    "topic": _FIELD,
    "source": _FIELD,
    "tags": MAP_TYPE,
    "extra": MAP_TYPE,
    "rid": pa.int64(),
}


class ColumnCache:
    """The columns of sealed groups queries read lately, as queries read them (a
    field's values, the times, topic, source, tags), least recently used first
    out: at most ``max_bytes`` of Arrow buffers, for every index store of the
    server together.  Keys are (the store's ``cache_token``, shard, position,
    column).  A sealed group never changes, so nothing is ever stale; a group
    retention dropped, or of a deleted index (tokens are never reused), is no
    longer asked for and leaves in its turn."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, int, int, str], pa.Array] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0  # columns found (the metrics export these)
        self.misses = 0
        self._tokens = itertools.count()

    def get(self, key: tuple[int, int, int, str]) -> pa.Array | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
            else:
                self.misses += 1
            return found

    def put(self, key: tuple[int, int, int, str], array: pa.Array) -> None:
        size = _cost(array)
        if size > self.max_bytes // 8:
            return  # one group's column must not push out everything else
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= _cost(old)
            self._entries[key] = array
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= _cost(evicted)

    @property
    def size(self) -> int:
        return self._bytes

    def view(self) -> StoreCache:
        """The part of the cache of one index store (a token never used before)."""
        return StoreCache(self, next(self._tokens))


@dataclass(frozen=True, slots=True)
class StoreCache:
    """One index store's entries of a ``ColumnCache``."""

    cache: ColumnCache
    token: int

    def get(self, group: SealedGroup, name: str) -> pa.Array | None:
        return self.cache.get((self.token, group.shard, group.pos, name))

    def put(self, group: SealedGroup, name: str, array: pa.Array) -> None:
        self.cache.put((self.token, group.shard, group.pos, name), array)


# what an entry costs beyond its buffers: the key, the dictionary's node, the
# array's objects, the buffers' padding (measured: 1.4 kB with groups of one log)
_ENTRY_COST = 2048


def _cost(array: pa.Array) -> int:
    return int(array.nbytes) + _ENTRY_COST


@dataclass(frozen=True, slots=True)
class SealedGroup:
    """A row of table ``sealed`` (see ``store``), with its row id there (``key``)."""

    key: int
    shard: int
    pos: int
    t_min: int
    t_max: int
    rows: int
    blk: int
    blk_row: int

    @property
    def last_block(self) -> int:
        return self.block_of(self.rows - 1)

    def block_of(self, index: int) -> int:
        """The token-filter block of log ``index`` (blocks are ``BLOCK_ROWS``
        consecutive rows; -1: before the filter existed)."""
        if self.blk < 0:
            return self.blk
        return self.blk + (self.blk_row + index) // tokens.BLOCK_ROWS

    def row_id(self, index: int) -> int:
        """The ``rid`` of log ``index``: negative, unlike the index table's rowids
        (``Source.keep_rows`` reads it back)."""
        return -1 - ((self.key << _IDX_BITS) | index)

    def holds_any(self, blocks: Collection[int]) -> bool:
        """Whether any of the group's rows is in one of ``blocks``."""
        if len(blocks) > self.last_block - self.blk + 1:
            return any(b in blocks for b in range(self.blk, self.last_block + 1))
        return any(self.blk <= b <= self.last_block for b in blocks)


class Source:
    """The table of all logs for the statements of one query session: the rows of
    ``logs`` and those of the sealed groups in the session's scope, read from
    their compacted records.  Query code writes ``LOGS`` and ``ROWID``;
    ``statement`` turns them into ``logs`` and ``rowid`` when no sealed group is
    in scope, else into a union of ``logs`` with an Arrow stream of the sealed
    rows (the fields the statement names only) and its ``rid``: ``rowid`` for
    the rows of ``logs``, a negative number for sealed rows, the same in every
    statement of the session."""

    def __init__(self, store: IndexStore, db: duckdb.DuckDBPyConnection) -> None:
        self.store = store
        self.db = db
        self.groups: list[SealedGroup] = []
        # the logs in scope of each group in scope, if not all (``keep_rows``)
        self.picks: dict[tuple[int, int], list[int]] | None = None
        self.shard_logs: Mapping[ShardId, ShardLog] | None = None  # (``narrow``)
        # what failed while DuckDB read a stream (it reports it as its own error)
        self.failure: ServiceError | None = None
        self._streams = itertools.count()

    def narrow(
        self,
        *,
        from_ns: int | None = None,
        to_ns: int | None = None,
        shard: int | None = None,
        positions: tuple[int, int] | None = None,
        blocks: Collection[int] | None = None,
        unfiltered: bool = True,
        limit_rows: tuple[int, bool] | None = None,
    ) -> None:
        """Keep in scope the sealed groups (of this session's snapshot) that may
        hold rows with times in ``[from_ns, to_ns)``, of ``shard`` at positions
        ``[low, high)``, in ``blocks`` (or in none of the token filter's, unless
        not ``unfiltered``); with ``limit_rows`` (rows, backwards), only
        as many groups nearest to ``positions``' end (backwards) or start as hold
        that many rows."""
        if not self.store.has_sealed:
            return
        where = ["TRUE"]
        if from_ns is not None:
            where.append(f"t_max >= {int(from_ns)}")
        if to_ns is not None:
            where.append(f"t_min < {int(to_ns)}")
        if shard is not None:
            where.append(f"shard = {int(shard)}")
        if positions is not None:
            where.append(f"pos >= {int(positions[0])} AND pos < {int(positions[1])}")
        order = "shard, pos"
        limit = ""
        if limit_rows is not None:
            order = "shard, pos DESC" if limit_rows[1] else order
            # enough groups to hold the rows: the cumulative count reaches them
            limit = f"QUALIFY sum(rows) OVER (ORDER BY {order}) - rows < {int(limit_rows[0])}"
        if blocks is not None and not unfiltered and len(blocks):  # a range of blocks
            low, high = min(blocks), max(blocks)
            last = f"blk + (blk_row + rows - 1) // {tokens.BLOCK_ROWS}"
            where.append(f"blk <= {int(high)} AND {last} >= {int(low)}")
        result = self.db.execute(
            f"SELECT rowid, shard, pos, t_min, t_max, rows, blk, blk_row FROM sealed "
            f"WHERE {' AND '.join(where)} {limit} ORDER BY shard, pos"
        )
        groups: list[SealedGroup] = []
        while chunk := result.fetchmany(65_536):  # only the groups kept are held
            found = [SealedGroup(*(int(v) for v in row)) for row in chunk]
            if blocks is not None:
                found = self._in_blocks(found, blocks, unfiltered=unfiltered)
            groups += found
            if len(groups) > MAX_GROUPS:  # each takes memory here, and time to read
                raise ServiceError(
                    ErrorCode.QUERY_TOO_LARGE,
                    f"the query would read more than {MAX_GROUPS:,} sealed log groups; "
                    "narrow the time range",
                )
        self.groups = groups
        self.picks = None
        if self.shard_logs is None and self.store.shard_logs is not None:
            # looked up here, never while DuckDB reads a stream (``Engine`` locks)
            self.shard_logs = self.store.shard_logs()

    def keep_rows(self, rids: list[int]) -> None:
        """Keep in scope only the sealed logs among the row ids ``rids`` (those of
        kept rows are not in scope anyway): the statements read just those logs."""
        wanted: dict[int, list[int]] = {}
        for rid in rids:
            if rid < 0:
                number = -1 - rid
                wanted.setdefault(number >> _IDX_BITS, []).append(number & _IDX_MASK)
        self.groups = [g for g in self.groups if g.key in wanted]
        self.picks = {(g.shard, g.pos): wanted[g.key] for g in self.groups}

    def around(self, shard: int, position: int, back: int, forward: int) -> None:
        """Keep in scope the sealed groups that may hold the ``back`` logs before
        and the ``forward`` logs after a log of group ``position`` of ``shard``:
        its group, and the nearest groups on each side up to that many rows."""
        if not self.store.has_sealed:
            return
        found: list[SealedGroup] = []
        for positions, rows in (
            ((0, position), (back, True)),
            ((position, position + 1), None),
            ((position + 1, 1 << 62), (forward, False)),
        ):
            if rows is None or rows[0] > 0:
                self.narrow(shard=shard, positions=positions, limit_rows=rows)
                found += self.groups
        self.groups = sorted(found, key=lambda g: g.pos)

    def _in_blocks(
        self, groups: list[SealedGroup], blocks: Collection[int], *, unfiltered: bool = True
    ) -> list[SealedGroup]:
        """The groups with rows in ``blocks`` or (``unfiltered``) in no block of
        the token filter."""
        wanted = set(blocks)
        below = self.store.unfiltered_below if unfiltered else -(1 << 62)
        return [g for g in groups if g.blk < below or g.holds_any(wanted)]

    def statement(
        self,
        sql: str,
        *,
        blocks: Collection[int] | None = None,
        only: dict[tuple[int, int], list[int]] | None = None,
    ) -> str:
        """``sql`` ready to run: the groups in scope (those holding rows in
        ``blocks``; with ``only``, the logs it lists, by ``(shard, position)`` and
        index in the group) as part of ``LOGS``."""
        groups = self.groups
        if blocks is not None:
            groups = self._in_blocks(groups, blocks)
        if only is None:
            only = self.picks
        if only is not None:
            groups = [g for g in groups if (g.shard, g.pos) in only]
        if not groups:
            return sql.replace(LOGS, "logs").replace(ROWID, "rowid")
        known = set(self.store.columns().values())
        fields = sorted(set(_FIELD_COLUMN.findall(sql)) & known, key=lambda c: int(c[1:]))
        # the columns the statement may name (a word of the SQL), the time at least
        names = [n for n in _TYPES if n == "t" or (n != "rid" and re.search(rf"\b{n}\b", sql))]
        if ROWID in sql:
            names.append("rid")
        # a page's few logs go as plain strings; whole groups as dictionaries
        text = pa.string() if only is not None else _FIELD
        schema = pa.schema(
            [(n, text if n in ("topic", "source") else _TYPES[n]) for n in names]
            + [(c, text) for c in fields]
        )
        listed = ", ".join(f'"{n}"' for n in names + fields if n != "rid")
        rid = ", rowid AS rid" if ROWID in sql else ""

        def union(_: re.Match[str]) -> str:
            # each mention its own stream: a stream can be read only once
            stream = f"sealed_{next(self._streams)}"
            batches = self._batches(groups, schema, only)
            reader = pa.RecordBatchReader.from_batches(schema, batches)
            self.db.register(stream, reader)
            sealed = f"{listed}, rid" if rid else listed
            return (
                f"(SELECT {listed}{rid} FROM logs UNION ALL SELECT {sealed} FROM {stream}) AS logs"
            )

        return re.sub(LOGS, union, sql).replace(ROWID, "rid")

    def _batches(
        self,
        groups: list[SealedGroup],
        schema: pa.Schema,
        only: dict[tuple[int, int], list[int]] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """The rows of ``groups`` (those ``only`` lists, if given) with the columns
        of ``schema``: from the column cache, or read and decoded ``_AHEAD`` groups
        at a time by the decoding threads (the C parts let go of the GIL)."""
        by_column = {col: field for field, col in self.store.columns().items()}
        fields = {n: by_column[n] for n in schema.names if n in by_column}  # column: field
        kept = _kept(schema, fields)
        cache = self.store.sealed_cache
        jobs: deque[Future[pa.Table]] = deque()
        pending: list[pa.Table] = []
        rows = 0
        try:
            for group, stored in self._stored(groups, lambda g: _cached(cache, g, kept)):
                picks = None if only is None else sorted(set(only[(group.shard, group.pos)]))
                if isinstance(stored, dict):  # cached: nothing to wait for
                    done: Future[pa.Table] = Future()
                    done.set_result(_group_table(group, stored, schema, fields, cache, picks))
                    jobs.append(done)
                else:
                    jobs.append(
                        _DECODERS.submit(_group_table, group, stored, schema, fields, cache, picks)
                    )
                while len(jobs) > _AHEAD or (jobs and jobs[0].done()):
                    table = jobs.popleft().result()
                    pending.append(table)
                    rows += table.num_rows
                    if rows >= _BATCH_ROWS:
                        yield from _joined(pending, schema)
                        pending, rows = [], 0
            while jobs:
                pending.append(jobs.popleft().result())
            if pending:
                yield from _joined(pending, schema)
        except ServiceError as exc:  # the query answers with it, not as an SQL error
            self.failure = exc
            raise
        except Exception as exc:
            self.failure = ServiceError(ErrorCode.INTERNAL, f"cannot read sealed logs: {exc}")
            raise
        finally:
            for job in jobs:  # abandoned (the query was stopped): drop what is queued
                job.cancel()

    def _stored(
        self, groups: list[SealedGroup], cached: Callable[[SealedGroup], Columns | None]
    ) -> Iterator[tuple[SealedGroup, Stored | Columns]]:
        """Each group with its ``cached`` columns, or else its stored record
        (compression, raw size, log count, payload), read run by run of
        consecutive positions."""
        shard_logs = self.shard_logs or {}
        found = [cached(g) for g in groups]
        for (shard, _, read), run_items in itertools.groupby(
            enumerate(groups),
            key=lambda item: (item[1].shard, item[1].pos - item[0], found[item[0]] is None),
        ):
            items = list(run_items)
            run = [g for _, g in items]
            if not read:
                yield from ((g, found[i] or {}) for i, g in items)
                continue
            log = shard_logs.get(shard)
            if log is None:
                continue  # the logstore is being deleted
            position, end = run[0].pos, run[-1].pos + 1
            while position < end:
                result = log.read(
                    position, count=end - position, max_bytes=_READ_BYTES, stored=True
                )
                if not result.group_count:
                    break  # retention dropped them: so will the index
                for frame_position, comp, raw_size, logs, payload in _stored_frames(result.frames):
                    index = frame_position - run[0].pos
                    if 0 <= index < len(run):
                        yield run[index], (comp, raw_size, logs, payload)
                position = max(result.next_position, position + 1)


_GROUP = ("topic", "source", "tags")  # the same in every log of a group: kept once
Stored = tuple[int, int, int, bytes]  # a record: compression, raw size, log count, payload
Columns = dict[str, pa.Array]


def _cached(cache: StoreCache, group: SealedGroup, names: list[str]) -> Columns | None:
    """The group's columns ``names`` from the cache, or None if any is not there."""
    found = {}
    for name in names:
        array = cache.get(group, name)
        if array is None:
            return None
        found[name] = array
    return found


def _kept(schema: pa.Schema, fields: dict[str, str]) -> list[str]:
    """What the cache holds of a group for ``schema``: times, fields, and the
    group's topic, source and tags (as one entry, ``group``)."""
    kept = [n for n in schema.names if n == "t" or n in fields]
    if any(n in _GROUP for n in schema.names):
        kept.append("group")
    return kept


def _group_table(
    group: SealedGroup,
    source: Stored | Columns,
    schema: pa.Schema,
    fields: dict[str, str],
    cache: StoreCache,
    picks: list[int] | None = None,
) -> pa.Table:
    """One sealed group's rows (those at ``picks``, if given) as the stream's
    columns (in a decoding thread): the cached columns, or decoded from the stored
    record (and then cached: a page of logs read once is often read again)."""
    kept = _kept(schema, fields)
    if isinstance(source, dict):
        columns = source
    else:
        comp, raw_size, logs, payload = source
        wanted = {fields[n] for n in kept if n in fields}
        base = {"t", *_GROUP} if "group" in kept else {"t"}
        table = _rows(payload, comp, raw_size, logs, group.shard, group.pos, wanted, base)
        if table.num_rows != group.rows:
            raise ServiceError(
                ErrorCode.INTERNAL,
                f"log group {group.pos} of shard {group.shard} does not match its index entry",
            )
        columns = {}
        for name in kept:
            if name == "group":  # one row: the group's topic, source and tags
                first = table.slice(0, 1)
                columns[name] = pa.StructArray.from_arrays(
                    [first[n].combine_chunks() for n in _GROUP], names=list(_GROUP)
                )
            elif name == "t":
                columns[name] = table["t"].combine_chunks()
            elif FIELD_PREFIX + fields[name] in table.column_names:
                columns[name] = table[FIELD_PREFIX + fields[name]].combine_chunks()
            else:  # a field the group does not have
                columns[name] = pa.nulls(table.num_rows, _FIELD)
            cache.put(group, name, columns[name])
    return _conform(columns, group, schema, picks)


def _stored_frames(data: bytes) -> Iterator[tuple[int, int, int, int, bytes]]:
    """(position, compression, raw size, log count, payload) of stored frames,
    their checksums verified."""
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        crc, length, position, _, raw_size, logs, comp = FRAME_HEADER.unpack_from(view, offset)
        end = offset + FRAME_HEADER_SIZE + length
        if zlib.crc32(view[offset + 4 : end]) != crc:
            raise ServiceError(ErrorCode.INTERNAL, f"corrupt record {position} in a shard log")
        yield position, comp, raw_size, logs, bytes(view[offset + FRAME_HEADER_SIZE : end])
        offset = end


def _rows(
    payload: bytes,
    comp: int,
    raw_size: int,
    logs: int,
    shard: ShardId,
    position: Position,
    wanted: Collection[str],
    base: Collection[str],
) -> pa.Table:
    """A group's rows for a stream (to be cached): every log's, fields as
    dictionaries."""
    try:
        if comp == COLUMNAR:
            return group_rows(
                payload, raw_size, logs, shard, position, wanted, base, dictionaries=True
            )
        frame = encode_frame(position, 0, raw_size, logs, Compression(comp), payload)
        return _dictionary_fields(_select(decode_frames(frame, shard), wanted, base))
    except (columnar.ColumnarError, ValueError) as exc:
        raise ServiceError(
            ErrorCode.INTERNAL, f"corrupt record {position} of shard {shard}: {exc}"
        ) from None


def _conform(
    columns: dict[str, pa.Array],
    group: SealedGroup,
    schema: pa.Schema,
    picks: list[int] | None = None,
) -> pa.Table:
    """A group's rows (those at ``picks``, if given) with exactly the stream's
    columns: those given, and the ones that follow from the group (shard,
    position, index, block, row id)."""
    if picks is None:
        count = group.rows
        index = _index(count)
    else:
        count = len(picks)
        index = pa.array(picks, pa.int64())
    arrays: list[pa.Array] = []
    for name in schema.names:
        if name in columns:
            column = columns[name]
            if picks is not None:
                column = column.take(index)
            arrays.append(column)  # (a dictionary where the stream has text: ``_joined``)
        elif picks is not None and name in _FOLLOWS:  # a few logs: plain Python is quicker
            values = [_follows(name, group, i) for i in picks]
            arrays.append(pa.array(values, schema.field(name).type))
        elif name in ("topic", "source"):
            values = columns["group"].field(name)
            if schema.field(name).type == _FIELD:
                arrays.append(pa.DictionaryArray.from_arrays(_zeros(count, pa.int32()), values))
            else:
                arrays.append(_repeat(values, count))
        elif name == "tags":
            arrays.append(_repeat(columns["group"].field(name), count))
        elif name == "shard":
            arrays.append(_repeat(pa.array([group.shard], pa.int32()), count))
        elif name == "pos":
            arrays.append(_repeat(pa.array([group.pos], pa.int64()), count))
        elif name == "idx":
            arrays.append(index.cast(pa.int32()))
        elif name == "blk":
            if group.blk < 0:  # (before the token filter existed)
                blocks = _repeat(pa.array([group.blk], pa.int32()), count)
            else:
                first = pc.add(index, group.blk_row)
                blocks = pc.add(pc.divide(first, tokens.BLOCK_ROWS), group.blk).cast(pa.int32())
            arrays.append(blocks)
        elif name == "rid":
            arrays.append(pc.subtract(group.row_id(0), index))
        else:  # extra: sealed groups have no overflow fields (``IndexStore.seal``)
            arrays.append(pa.nulls(count, MAP_TYPE))
    return pa.table(arrays, names=schema.names)


def _joined(tables: list[pa.Table], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Groups' rows as the stream's batches: cached dictionaries become text
    where the stream has text (a page's few logs), all groups at once."""
    table = pa.concat_tables(tables, promote_options="permissive")
    for number, field in enumerate(schema):
        if table.schema.field(number).type != field.type:
            table = table.set_column(number, field.name, table.column(number).cast(field.type))
    return iter(table.to_batches())


_FOLLOWS = ("shard", "pos", "idx", "blk", "rid")  # what follows from a group and index


def _follows(name: str, group: SealedGroup, index: int) -> int:
    """Column ``name`` of log ``index`` of ``group`` (see ``_conform``)."""
    if name == "shard":
        return group.shard
    if name == "pos":
        return group.pos
    if name == "idx":
        return index
    if name == "blk":
        return group.block_of(index)
    return group.row_id(index)


_INDEXES = pa.array(range(1 << 16), pa.int64())
_ZEROS = pa.array([0] * (1 << 16), pa.int64())
_ZEROS32 = _ZEROS.cast(pa.int32())


def _zeros(count: int, kind: pa.DataType) -> pa.Array:
    """``count`` zeros of ``kind`` (int32 or int64)."""
    zeros = _ZEROS32 if kind == pa.int32() else _ZEROS
    if count <= len(zeros):
        return zeros.slice(0, count)
    return pa.array([0] * count, kind)


def _index(count: int) -> pa.Array:
    """0, 1, ..., count - 1."""
    if count <= len(_INDEXES):
        return _INDEXES.slice(0, count)
    return pa.array(range(count), pa.int64())
