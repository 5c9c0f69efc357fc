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
import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ..._native import speedups
from ...protocol.codec import FRAME_HEADER, FRAME_HEADER_SIZE, Compression, encode_frame
from ...protocol.errors import ErrorCode, ServiceError
from .. import columnar
from ..shardlog import COLUMNAR
from ..types import Position, ShardId
from . import tokens
from .indexer import _map, _text, _unique, decode_frames, decode_group
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
) -> pa.Table:
    """The index rows of one stored columnar log group: the base columns, then a
    ``c:<field>`` column per wanted field the group has (every field: None)."""
    if speedups is not None and columnar.is_typed(payload):
        table = _typed_rows(columnar.TypedGroup(payload, raw_size), shard, position, wanted)
        if table is not None:
            return table
    raw = columnar.unpack(payload, raw_size)
    frame = encode_frame(position, 0, raw_size, log_count, Compression.NONE, raw)
    table = decode_frames(frame, shard)
    if wanted is None:
        return table
    keep = [
        name
        for name in table.column_names
        if not name.startswith(FIELD_PREFIX) or name[len(FIELD_PREFIX) :] in wanted
    ]
    return table.select(keep)


def _typed_rows(
    group: columnar.TypedGroup,
    shard: ShardId,
    position: Position,
    wanted: Collection[str] | None,
) -> pa.Table | None:
    try:
        names = [name.decode() for name in group.names]
    except UnicodeDecodeError:
        return None  # keys the indexer would decode with replacements (and may merge)
    if len(set(names)) != len(names):
        return None
    count = group.logs
    _, topic, source, tags = decode_group(group.prefix + group.suffix, {}, 0)
    tags = _unique(tags)
    arrays: list[pa.Array] = [
        pa.Array.from_buffers(pa.int64(), count, [None, pa.py_buffer(group.times())]),
        pa.array([shard] * count, pa.int32()),
        pa.array([position] * count, pa.int64()),
        pa.array(range(count), pa.int32()),
        pa.array([topic] * count, pa.string()),
        pa.array([source] * count, pa.string()),
        _map(
            [len(tags) * n for n in range(count + 1)],
            [k for k, _ in tags] * count,
            [v for _, v in tags] * count,
        ),
    ]
    columns = list(BASE_SCHEMA.names)
    for name_id, name in enumerate(names):
        if wanted is not None and name not in wanted:
            continue
        offsets, data, validity, utf8 = group.column(name_id)
        buffers = [
            None if validity is None else pa.py_buffer(validity),
            pa.py_buffer(offsets),
            pa.py_buffer(data),
        ]
        array = pa.Array.from_buffers(pa.string(), count, buffers)
        if not utf8:  # as the indexer decodes them: with replacement characters
            array = pa.array(
                [None if v is None else _text(v) for v in array.cast(pa.binary()).to_pylist()],
                pa.string(),
            )
        arrays.append(array)
        columns.append(FIELD_PREFIX + name)
    return pa.table(arrays, names=columns)


# ------------------------------------------------------------ query sources

# what query code writes for the table of all logs and for a row's id
LOGS = "__logharbor_logs__"
ROWID = "__logharbor_rowid__"
_FIELD_COLUMN = re.compile(r'"(f\d+)"')
_OPTIONAL = ("topic", "source", "tags", "extra")
_IDX_BITS = 20  # a log's index in its group is below 2**20 (Limits.max_group_logs)
_READ_BYTES = 16 << 20  # stored bytes read from a shard log at a time
_BATCH_ROWS = 16_384  # rows handed to DuckDB at a time (small groups are joined)
_TYPES = {
    "t": pa.int64(),
    "shard": pa.int32(),
    "pos": pa.int64(),
    "idx": pa.int32(),
    "blk": pa.int32(),
    "topic": pa.string(),
    "source": pa.string(),
    "tags": MAP_TYPE,
    "extra": MAP_TYPE,
    "rid": pa.int64(),
}


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
        if self.blk < 0:
            return self.blk
        return self.blk + (self.blk_row + self.rows - 1) // tokens.BLOCK_ROWS

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
        rows = self.db.execute(
            f"SELECT rowid, shard, pos, t_min, t_max, rows, blk, blk_row FROM sealed "
            f"WHERE {' AND '.join(where)} {limit} ORDER BY shard, pos"
        ).fetchall()
        groups = [SealedGroup(*(int(v) for v in row)) for row in rows]
        if blocks is not None:
            groups = self._in_blocks(groups, blocks, unfiltered=unfiltered)
        self.groups = groups

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
        only: Collection[tuple[int, int]] | None = None,
    ) -> str:
        """``sql`` ready to run: the groups in scope (those holding rows in
        ``blocks``, those at ``(shard, position)`` in ``only``) as part of ``LOGS``."""
        groups = self.groups
        if blocks is not None:
            groups = self._in_blocks(groups, blocks)
        if only is not None:
            keep = set(only)
            groups = [g for g in groups if (g.shard, g.pos) in keep]
        if not groups:
            return sql.replace(LOGS, "logs").replace(ROWID, "rowid")
        known = set(self.store.columns().values())
        fields = sorted(set(_FIELD_COLUMN.findall(sql)) & known, key=lambda c: int(c[1:]))
        names = ["t", "shard", "pos", "idx", "blk"]
        names += [n for n in _OPTIONAL if re.search(rf"\b{n}\b", sql)]
        schema = pa.schema(
            [(n, _TYPES[n]) for n in names]
            + [(c, pa.string()) for c in fields]
            + [("rid", pa.int64())]
        )
        listed = ", ".join(f'"{n}"' for n in names + fields)

        def union(_: re.Match[str]) -> str:
            # each mention its own stream: a stream can be read only once
            stream = f"sealed_{next(self._streams)}"
            reader = pa.RecordBatchReader.from_batches(schema, self._batches(groups, schema))
            self.db.register(stream, reader)
            return (
                f"(SELECT {listed}, rowid AS rid FROM logs "
                f"UNION ALL SELECT {listed}, rid FROM {stream}) AS logs"
            )

        return re.sub(LOGS, union, sql).replace(ROWID, "rid")

    def _batches(self, groups: list[SealedGroup], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        by_column = {col: field for field, col in self.store.columns().items()}
        fields = {n: by_column[n] for n in schema.names if n in by_column}  # column: field
        pending: list[pa.Table] = []
        rows = 0
        for group, table in self._tables(groups, set(fields.values())):
            pending.append(_conform(table, group, schema, fields))
            rows += table.num_rows
            if rows >= _BATCH_ROWS:
                yield from pa.concat_tables(pending).to_batches()
                pending, rows = [], 0
        if pending:
            yield from pa.concat_tables(pending).to_batches()

    def _tables(
        self, groups: list[SealedGroup], wanted: set[str]
    ) -> Iterator[tuple[SealedGroup, pa.Table]]:
        """Each group's rows (its wanted fields), read run by run of positions."""
        shard_logs = self.store.shard_logs() if self.store.shard_logs is not None else {}
        for (shard, _), run_groups in itertools.groupby(
            enumerate(groups), key=lambda item: (item[1].shard, item[1].pos - item[0])
        ):
            run = [g for _, g in run_groups]
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
                    if not 0 <= index < len(run):
                        continue
                    group = run[index]
                    table = _rows(payload, comp, raw_size, logs, shard, frame_position, wanted)
                    if table.num_rows != group.rows:
                        raise ServiceError(
                            ErrorCode.INTERNAL,
                            f"log group {frame_position} of shard {shard} does not match "
                            "its index entry",
                        )
                    yield group, table
                position = max(result.next_position, position + 1)


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
) -> pa.Table:
    try:
        if comp == COLUMNAR:
            return group_rows(payload, raw_size, logs, shard, position, wanted)
        frame = encode_frame(position, 0, raw_size, logs, Compression(comp), payload)
        table = decode_frames(frame, shard)
    except (columnar.ColumnarError, ValueError) as exc:
        raise ServiceError(
            ErrorCode.INTERNAL, f"corrupt record {position} of shard {shard}: {exc}"
        ) from None
    keep = [n for n in table.column_names if not n.startswith(FIELD_PREFIX) or n[2:] in wanted]
    return table.select(keep)


def _conform(
    table: pa.Table, group: SealedGroup, schema: pa.Schema, fields: dict[str, str]
) -> pa.Table:
    """A group's rows with exactly the stream's columns: fields by their column
    names (NULL where the group lacks one), the block and the row id of each."""
    count = table.num_rows
    index = _index(count)
    arrays: list[pa.Array | pa.ChunkedArray] = []
    for name in schema.names:
        if name == "blk":
            if group.blk < 0:
                blocks = pa.array([group.blk] * count, pa.int32())
            else:
                first = pc.add(index, group.blk_row)
                blocks = pc.add(pc.divide(first, tokens.BLOCK_ROWS), group.blk).cast(pa.int32())
            arrays.append(blocks)
        elif name == "rid":
            arrays.append(pc.subtract(-1 - (group.key << _IDX_BITS), index))
        elif name == "extra":
            arrays.append(pa.nulls(count, MAP_TYPE))
        elif name in fields:
            column = FIELD_PREFIX + fields[name]
            if column in table.column_names:
                arrays.append(table[column])
            else:
                arrays.append(pa.nulls(count, pa.string()))
        else:
            arrays.append(table[name])
    return pa.table(arrays, schema=schema)


_INDEXES = pa.array(range(1 << 16), pa.int64())


def _index(count: int) -> pa.Array:
    """0, 1, ..., count - 1."""
    if count <= len(_INDEXES):
        return _INDEXES.slice(0, count)
    return pa.array(range(count), pa.int64())
