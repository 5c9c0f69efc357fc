"""The index store of one logstore: a DuckDB database of decoded logs.

Table ``logs``: one row per log with its time (ns), where it lives (shard, log group
position, index within the group), topic, source, tags (a map), and one column per
field: the first 256 field names a logstore sees get a column each (``f0``, ``f1``,
…, named in table ``fields``), and any further ones go to the map ``extra``.
Columns compress well (most fields repeat) and queries read only the columns they
need.  A log that repeats a field name keeps its first value.

Table ``progress``: per shard, the position up to which log groups are indexed.  It
is updated in the same transaction as the rows, so indexing is exactly-once across
crashes.

Column ``blk`` and tables ``blooms_*``, ``blocks``, ``token_meta``: the token
prefilter, written in the same transaction (see ``tokens``).

Table ``sealed``: the log groups whose rows are no longer in ``logs`` but read
from their compacted records in the shard log (``sealed.py``), one row each: its
shard and position, the range of its logs' times, its row count, and where its
rows sit in the token filter's blocks (the block of its first log, and that log's
row in the block; a block is ``tokens.BLOCK_ROWS`` consecutive rows).  Once a
segment is compacted, its logs are stored once, in the shard log, rather than
twice (``seal``); queries read ``logs`` and the sealed groups together.

Row groups are 16,384 rows rather than DuckDB's 122,880: reading the few blocks a
rare token lives in then decodes far less of each string column it touches.

The database refuses external access (files, network, extensions), so that SQL
queries can only ever read the logs.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ...protocol.errors import ErrorCode, ServiceError
from ..shardlog import ShardLog, fsync_path
from ..types import Position, ShardId
from . import tokens

if TYPE_CHECKING:
    from .sealed import ColumnCache

_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    t BIGINT NOT NULL,
    shard INTEGER NOT NULL,
    pos BIGINT NOT NULL,
    idx INTEGER NOT NULL,
    topic VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    tags MAP(VARCHAR, VARCHAR),
    extra MAP(VARCHAR, VARCHAR),
    blk INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS fields (name VARCHAR PRIMARY KEY, col VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS progress (shard INTEGER PRIMARY KEY, pos BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS sealed (
    shard INTEGER NOT NULL,
    pos BIGINT NOT NULL,
    t_min BIGINT NOT NULL,
    t_max BIGINT NOT NULL,
    rows INTEGER NOT NULL,
    blk INTEGER NOT NULL,
    blk_row INTEGER NOT NULL
);
"""
MAX_COLUMNS = 256
# a sealed log group holds at most this many logs (a sealed row's id keeps its
# index in 20 bits)
_MAX_SEALED_GROUP_LOGS = 1 << 20
_CLOSE_PATIENCE = 10.0  # seconds to wait for interrupted calls when closing
_REWRITE_PATIENCE = 5.0  # seconds a file rewrite waits for running queries to end
ROW_GROUP_ROWS = 16_384
_DATABASE = "logindex"
FIELD_PREFIX = "c:"  # decoded tables name a field's column "c:<field name>"

_SCHEME = "[A-Za-z][A-Za-z0-9+.-]*://"
_AUTHORITY = f"^{_SCHEME}(?:[^@/]*@)?"
# Presto's url_extract_* functions, which DuckDB lacks
_MACROS = "\n".join(
    [
        "CREATE OR REPLACE MACRO url_extract_protocol(u) AS "
        "regexp_extract(u, '^([A-Za-z][A-Za-z0-9+.-]*)://', 1);",
        f"CREATE OR REPLACE MACRO url_extract_host(u) AS "
        f"regexp_extract(u, '{_AUTHORITY}([^:/?#]*)', 1);",
        f"CREATE OR REPLACE MACRO url_extract_port(u) AS TRY_CAST(NULLIF("
        f"regexp_extract(u, '{_AUTHORITY}[^:/?#]*:([0-9]+)', 1), '') AS BIGINT);",
        f"CREATE OR REPLACE MACRO url_extract_path(u) AS "
        f"regexp_extract(u, '^(?:{_SCHEME}[^/?#]*)?([^?#]*)', 1);",
        "CREATE OR REPLACE MACRO url_extract_query(u) AS regexp_extract(u, '\\?([^#]*)', 1);",
        "CREATE OR REPLACE MACRO url_extract_fragment(u) AS regexp_extract(u, '#(.*)$', 1);",
        "CREATE OR REPLACE MACRO url_extract_parameter(u, name) AS "
        "url_decode(regexp_extract(u, '[?&]' || name || '=([^&#]*)', 1));",
    ]
)

MAP_TYPE = pa.map_(pa.string(), pa.string())
BASE_SCHEMA = pa.schema(
    [
        ("t", pa.int64()),
        ("shard", pa.int32()),
        ("pos", pa.int64()),
        ("idx", pa.int32()),
        ("topic", pa.string()),
        ("source", pa.string()),
        ("tags", MAP_TYPE),
    ]
)


@dataclass(frozen=True, slots=True)
class PreparedRows:
    """Decoded rows with their blocks (numbered from 0) and those blocks' blooms,
    ready to append (see ``IndexStore.prepare``)."""

    table: pa.Table
    blocks: pa.Array
    blooms: pa.Table
    block_count: int


class IndexStore:
    def __init__(
        self,
        path: Path,
        *,
        memory_limit: str = "1GB",
        threads: int = 2,
        sealed_cache: ColumnCache | None = None,
        seal_min_logs: int = 256,
    ) -> None:
        from .sealed import ColumnCache  # (sealed imports this module)

        self.path = path
        # a segment is sealed only if its log groups hold this many logs on average:
        # queries read sealed logs a group at a time, and small ones would slow them
        self.seal_min_logs = seal_min_logs
        # the columns of sealed groups that queries read lately (``sealed.py``), in
        # the server's cache if given (else one of 256 MB of its own)
        self.sealed_cache = (sealed_cache or ColumnCache(256 << 20)).view()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._settings: dict[str, str | int | float | list[str]] = {
            "memory_limit": memory_limit,
            "threads": threads,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            # lets a semi-join on candidate blocks filter inside the table scan
            "dynamic_or_filter_threshold": 1 << 20,
        }
        for stale in (_rewrite_path(path), _wal_path(_rewrite_path(path))):
            stale.unlink(missing_ok=True)  # a rewrite cut short by a crash
        self._write_lock = threading.Lock()
        # guards the readers' count, and holds new readers back while the file is
        # rewritten (``rewrite_if_sparse``)
        self._state = threading.Condition()
        self._active = 0
        self._rewriting = False
        self._readers: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()
        self._connect()
        self.closed = False
        rows = self._db.execute("SELECT name, col FROM fields").fetchall()
        self._columns: dict[str, str] = {str(name): str(col) for name, col in rows}
        self._next_block, self.unfiltered_below = self._open_token_filter()
        self.has_unfiltered_rows = self._count_unfiltered() > 0
        row: Any = self._db.execute("SELECT count(*) FROM sealed").fetchone()
        self.has_sealed = int(row[0]) > 0
        self.seal_checked: set[tuple[ShardId, Position]] = set()  # segments done with
        self.emptied = True  # rows were deleted since the file's free space was looked at
        # the shard logs the sealed groups are read from (set by the engine)
        self.shard_logs: Callable[[], Mapping[ShardId, ShardLog]] | None = None

    def _connect(self) -> None:
        self._db = duckdb.connect(":memory:", config=dict(self._settings))
        quoted = str(self.path).replace("'", "''")
        self._db.execute(f"ATTACH '{quoted}' AS {_DATABASE} (ROW_GROUP_SIZE {ROW_GROUP_ROWS})")
        self._db.execute(f"USE {_DATABASE}")
        self._db.execute(_SCHEMA)
        self._db.execute(tokens.SCHEMA)
        self._db.execute(_MACROS)
        self._db.execute("SET TimeZone = 'UTC'")
        self._db.execute("SET enable_external_access = false")
        self._db.execute("SET lock_configuration = true")
        # DuckDB refuses cursor() on a connection busy in another thread, so other
        # threads' connections come from this idle one
        self._cursors = self._db.cursor()

    def columns(self) -> dict[str, str]:
        """Field name → column, in the order the fields were first seen."""
        return dict(sorted(self._columns.items(), key=lambda item: int(item[1][1:])))

    def _open_token_filter(self) -> tuple[int, int]:
        """The next block id, and the block id below which rows are not in the
        token filter (written before it existed, or under another DuckDB ``hash``)."""
        db = self._db
        meta = dict(db.execute("SELECT name, value FROM token_meta").fetchall())
        probe = tokens.hash_probe(db)
        if not meta:  # a new store, or one written before the token filter
            has_blk = db.execute(
                "SELECT count(*) FROM duckdb_columns() "
                f"WHERE database_name = '{_DATABASE}' AND table_name = 'logs' "
                "AND column_name = 'blk'"
            ).fetchall()[0][0]
            if not has_blk:
                db.execute("ALTER TABLE logs ADD COLUMN blk INTEGER DEFAULT -1")
            meta = {"next_block": "0", "unfiltered_below": "0", "hash_probe": probe}
            self._save_meta(meta)
        elif meta["hash_probe"] != probe:  # stale blooms: scan the old blocks
            db.execute("BEGIN TRANSACTION")
            for table in tokens.BLOOM_TABLES:
                db.execute(f"DELETE FROM {table}")
            meta = {**meta, "unfiltered_below": meta["next_block"], "hash_probe": probe}
            self._save_meta(meta)
            db.execute("COMMIT")
        return int(meta["next_block"]), int(meta["unfiltered_below"])

    def _count_unfiltered(self) -> int:
        """Rows the token filter knows nothing of (they are always scanned)."""
        query = (
            "SELECT (SELECT count(*) FROM logs WHERE blk < $1)"
            " + (SELECT count(*) FROM sealed WHERE blk < $1)"
        )
        row: Any = self._db.execute(query, [self.unfiltered_below]).fetchone()
        return int(row[0])

    def _save_meta(self, meta: dict[str, str]) -> None:
        for name, value in meta.items():
            self._db.execute("INSERT OR REPLACE INTO token_meta VALUES (?, ?)", [name, value])

    @contextlib.contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one query (queries run concurrently with indexing),
        closed at the end."""
        with self._state:
            while self._rewriting and not self.closed:
                self._state.wait()
            if self.closed:
                raise index_deleted()
            cursor = self._cursors.cursor()
            self._readers.add(cursor)
            self._active += 1
        try:
            try:
                cursor.execute(f"USE {_DATABASE}")
            except duckdb.Error:
                if self.closed:  # closed (and this cursor interrupted) meanwhile
                    raise index_deleted() from None
                raise
            yield cursor
        finally:
            with contextlib.suppress(duckdb.Error):  # closed with a deleted index
                cursor.close()
            with self._state:
                self._active -= 1
                self._state.notify_all()

    def rewrite_if_sparse(self, *, min_free: int = 64 << 20, share: float = 0.5) -> bool:
        """Copy the database into a new file when at least ``min_free`` bytes and
        ``share`` of its file are free blocks (DuckDB reuses them but never gives
        them back: sealing or retention can empty most of a file); True if it
        was rewritten; looked at only after rows were deleted (``emptied``).
        Queries wait meanwhile (new ones from the start, running ones are waited
        for, 5 s at most, else it is left for another time; writes are not held up
        while it waits).  A crash at any point leaves the old file or the new one
        whole."""
        with self._write_lock:
            if self.closed or not self.emptied:
                return False
            self.emptied = False
            row: Any = self._db.execute(
                "SELECT free_blocks, total_blocks, block_size FROM pragma_database_size() "
                f"WHERE database_name = '{_DATABASE}'"
            ).fetchone()
            free, total, block = (int(v) for v in row)
            if free * block < min_free or free < total * share:
                return False
        with self._state:  # new readers wait from here; the running ones end first
            self._rewriting = True
            deadline = time.monotonic() + _REWRITE_PATIENCE
            while self._active and time.monotonic() < deadline:
                self._state.wait(0.05)
            drained = not self._active
        try:
            if not drained:
                self.emptied = True  # busy: another time
                return False
            with self._write_lock:
                if self.closed:
                    return False
                self._db.execute("CHECKPOINT")
                try:
                    self._cursors.close()
                    self._db.close()
                    _copy_database(self.path, _rewrite_path(self.path), self._settings)
                    os.replace(_rewrite_path(self.path), self.path)
                    fsync_path(self.path.parent)
                finally:
                    with contextlib.suppress(duckdb.Error):  # if it was not yet
                        self._db.close()
                    self._connect()  # the new file, or the old one if the copy failed
            return True
        finally:
            with self._state:
                self._rewriting = False
                self._state.notify_all()

    def progress(self) -> dict[ShardId, Position]:
        with self._write_lock:
            if self.closed:  # the index was deleted: nothing is indexed
                return {}
            rows = self._db.execute("SELECT shard, pos FROM progress").fetchall()
        return {int(s): int(p) for s, p in rows}

    def prepare(self, table: pa.Table) -> PreparedRows:
        """The work of an append that needs no lock: cutting the rows into blocks
        and building the blocks' token filters.  Safe to run in another thread."""
        rows = table.num_rows
        blocks = tokens.block_numbers(rows)
        if not rows:
            return PreparedRows(table, blocks, pa.table({}), 0)
        with self.reading() as db:
            blooms = tokens.bloom_rows(db, table, blocks)
        count = (rows + tokens.BLOCK_ROWS - 1) // tokens.BLOCK_ROWS
        return PreparedRows(table, blocks, blooms, count)

    def append(self, rows: pa.Table | PreparedRows, shard: ShardId, upto: Position) -> None:
        """Add decoded rows (base columns plus ``c:<field>`` columns) and their
        blocks' token filters, and move the shard's progress to ``upto``, in one
        transaction."""
        batch = rows if isinstance(rows, PreparedRows) else self.prepare(rows)
        with self._write_lock:
            db = self._db
            first = self._next_block
            db.execute("BEGIN TRANSACTION")
            try:
                if batch.table.num_rows:
                    self._insert(batch, shard, upto, first)
                db.execute("INSERT OR REPLACE INTO progress VALUES (?, ?)", [int(shard), int(upto)])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                self._next_block = first
                raise

    def _insert(self, batch: PreparedRows, shard: ShardId, upto: Position, first: int) -> None:
        """Within the caller's transaction: the rows, numbered from block ``first``,
        their blooms and blocks."""
        db = self._db
        layout = self._to_layout(batch.table).append_column("blk", pc.add(batch.blocks, first))
        db.register("incoming", layout)
        db.execute("INSERT INTO logs BY NAME SELECT * FROM incoming")
        db.unregister("incoming")
        self._insert_blooms(batch.blooms, first)
        last = first + batch.block_count
        db.execute(
            "INSERT INTO blocks SELECT range, ?, ? FROM range(?, ?)",
            [int(shard), int(upto) - 1, first, last],
        )
        self._save_meta({"next_block": str(last)})
        self._next_block = last

    def _insert_blooms(self, blooms: pa.Table, first: int) -> None:
        """Within the caller's transaction: bloom rows, their blocks counted from
        ``first``, each into the table of its stripe."""
        db = self._db
        db.register("incoming_blooms", blooms)
        for number, table in enumerate(tokens.BLOOM_TABLES):
            db.execute(
                f"INSERT INTO {table} BY NAME SELECT * REPLACE (blk + {int(first)} AS blk) "
                f"FROM incoming_blooms WHERE stripe % {tokens.PARTITIONS} = {number}"
            )
        db.unregister("incoming_blooms")

    def _to_layout(self, table: pa.Table) -> pa.Table:
        """Name field columns by their table columns, adding columns for new fields
        (inside the caller's transaction) and folding overflow fields into ``extra``."""
        columns: list[pa.Array] = []
        names: list[str] = []
        overflow: list[tuple[str, pa.ChunkedArray]] = []
        for name, column in zip(table.column_names, table.columns, strict=True):
            if not name.startswith(FIELD_PREFIX):
                names.append(name)
                columns.append(column)
                continue
            field = name[len(FIELD_PREFIX) :]
            col = self._columns.get(field)
            if col is None and len(self._columns) < MAX_COLUMNS:
                col = f"f{len(self._columns)}"
                self._db.execute(f'ALTER TABLE logs ADD COLUMN "{col}" VARCHAR')
                self._db.execute("INSERT INTO fields VALUES (?, ?)", [field, col])
                self._columns[field] = col
            if col is None:
                overflow.append((field, column))
            else:
                names.append(col)
                columns.append(column)
        if overflow:
            names.append("extra")
            columns.append(_overflow_map(overflow, table.num_rows))
        return pa.table(columns, names=names)

    def refilter_step(self, max_blocks: int = 64) -> bool:
        """Build the token filter of the newest blocks that have none (written under
        another DuckDB ``hash`` or an older filter format), ``max_blocks`` at most;
        True while more remain.  The filter is computed outside the write lock and
        stored in one transaction with the lower watermark, so a query sees each
        block either filtered or read in full.  Rows from before the filter existed
        (``blk = -1``) and stores with overflow fields stay unfiltered."""
        high = self.unfiltered_below
        if high <= 0 or self.closed:
            return False
        low = max(0, high - max_blocks)
        columns = self.columns()
        names = ["blk", "topic", "source", "tags", "extra", *(f'"{c}"' for c in columns.values())]
        with self.reading() as db:
            from .sealed import LOGS, Source  # (sealed imports this module)

            logs = Source(self, db)
            logs.narrow(blocks=range(low, high), unfiltered=False)
            rows = db.sql(
                logs.statement(
                    f"SELECT {', '.join(names)} FROM {LOGS} WHERE blk >= {low} AND blk < {high}"
                )
            ).to_arrow_table()
            if rows is None:
                return False
            if rows.num_rows and rows["extra"].null_count < rows.num_rows:
                return False  # overflow fields are not in the table's columns
            decoded = pa.table(
                [rows["topic"], rows["source"], rows["tags"], *rows.columns[5:]],
                names=["topic", "source", "tags", *(FIELD_PREFIX + name for name in columns)],
            )
            blooms = tokens.bloom_rows(db, decoded, rows["blk"].combine_chunks())
        with self._write_lock:
            if self.closed or self.unfiltered_below != high:
                return False
            self._db.execute("BEGIN TRANSACTION")
            try:
                self._insert_blooms(blooms, 0)
                self._save_meta({"unfiltered_below": str(low)})
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self.unfiltered_below = low
            self.has_unfiltered_rows = self._count_unfiltered() > 0
        return low > 0

    def seal(self, shard: ShardId, base: Position, count: int) -> int | None:
        """Stop keeping the rows of log groups ``[base, base + count)`` of a shard,
        whose records are compacted (``sealed.py`` reads them there), and note
        each group in ``sealed``; returns the groups sealed, or None while the
        range is not wholly indexed.  Nothing is sealed if the range holds rows
        whose fields overflow into ``extra``, or a group's rows do not look as the
        indexer writes them."""
        end = int(base) + int(count)
        with self._write_lock:
            if self.closed:
                return 0
            db = self._db
            row: Any = db.execute("SELECT pos FROM progress WHERE shard = ?", [shard]).fetchone()
            if row is None or int(row[0]) < end:
                return None
            in_range = f"shard = {int(shard)} AND pos >= {int(base)} AND pos < {end}"
            groups = db.execute(
                f"""
                SELECT pos, min(t), max(t), count(*), min(idx), max(idx), min(blk), max(blk),
                       count(*) FILTER (WHERE blk = first_blk), count(extra)
                FROM (SELECT *, min(blk) OVER (PARTITION BY pos) AS first_blk
                      FROM logs WHERE {in_range})
                GROUP BY pos ORDER BY pos
                """
            ).fetchall()
            rows = []
            if not groups or sum(g[3] for g in groups) < self.seal_min_logs * len(groups):
                return 0  # small log groups: read one by one, they would slow queries
            for pos, t_min, t_max, n, low, high, blk, last, in_first, extra in groups:
                if extra or low != 0 or high != n - 1 or n > _MAX_SEALED_GROUP_LOGS:
                    return 0
                spans = last > blk
                blk_row = tokens.BLOCK_ROWS - in_first if spans else 0
                if blk < 0 and spans:
                    return 0
                if blk >= 0 and last != blk + (blk_row + n - 1) // tokens.BLOCK_ROWS:
                    return 0
                rows.append((int(shard), pos, t_min, t_max, n, blk, blk_row))
            # before the commit: a query whose snapshot has the seal must look
            self.has_sealed = self.has_sealed or bool(rows)
            db.execute("BEGIN TRANSACTION")
            try:
                if rows:
                    db.executemany("INSERT INTO sealed VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                db.execute(f"DELETE FROM logs WHERE {in_range}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self.emptied = True
        return len(rows)

    def drop_before(self, shard: ShardId, position: Position) -> None:
        """Forget the rows of log groups that retention removed from the shard, and
        the token filters of the blocks that held only such rows."""
        with self._write_lock:
            db = self._db
            db.execute("BEGIN TRANSACTION")
            try:
                db.execute("DELETE FROM logs WHERE shard = ? AND pos < ?", [shard, position])
                db.execute("DELETE FROM sealed WHERE shard = ? AND pos < ?", [shard, position])
                gone = "SELECT blk FROM blocks WHERE shard = ? AND last_pos < ?"
                for table in tokens.BLOOM_TABLES:
                    db.execute(f"DELETE FROM {table} WHERE blk IN ({gone})", [shard, position])
                db.execute("DELETE FROM blocks WHERE shard = ? AND last_pos < ?", [shard, position])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self.emptied = True
            if self.has_unfiltered_rows:
                self.has_unfiltered_rows = self._count_unfiltered() > 0

    def row_count(self) -> int:
        """Rows kept in table ``logs`` (not those of sealed groups)."""
        with self.reading() as db:
            result: Any = db.execute("SELECT count(*) FROM logs").fetchone()
            return int(result[0])

    def close(self) -> None:
        """Close the database; queries still running on it end with an error.

        DuckDB refuses to close a connection whose cursors are in the middle of a
        call (it closes the idle ones): interrupt the running ones, and try again
        until they let go."""
        with self._write_lock:
            if self.closed:
                return
            self.closed = True
            deadline = time.monotonic() + _CLOSE_PATIENCE
            while True:
                for reader in list(self._readers):
                    with contextlib.suppress(duckdb.Error):
                        reader.interrupt()
                try:
                    with self._state:
                        self._cursors.close()
                        self._state.notify_all()  # readers held back by a rewrite
                    break
                except duckdb.ResourceInUseException:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.01)
            self._db.close()


def _rewrite_path(path: Path) -> Path:
    return path.with_name(path.name + ".rewrite")


def _wal_path(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _copy_database(
    source: Path, target: Path, settings: dict[str, str | int | float | list[str]]
) -> None:
    """A copy of the DuckDB database ``source`` in the new file ``target``,
    checkpointed and closed."""
    target.unlink(missing_ok=True)
    _wal_path(target).unlink(missing_ok=True)
    db = duckdb.connect(":memory:", config=dict(settings))
    try:
        for path, name, options in (
            (source, "old", "READ_ONLY"),
            (target, "new", f"ROW_GROUP_SIZE {ROW_GROUP_ROWS}"),
        ):
            quoted = str(path).replace("'", "''")
            db.execute(f"ATTACH '{quoted}' AS {name} ({options})")
        db.execute("COPY FROM DATABASE old TO new")
        db.execute("DETACH new")
    finally:
        db.close()
    fsync_path(target)


def index_deleted() -> ServiceError:
    """The answer to a call that finds its index deleted (meanwhile)."""
    return ServiceError(ErrorCode.INDEX_CONFIG_NOT_EXIST, "the index was just deleted")


def _overflow_map(fields: list[tuple[str, pa.ChunkedArray]], rows: int) -> pa.Array:
    values = [field[1].to_pylist() for field in fields]
    entries = [
        [
            (name, column[row])
            for (name, _), column in zip(fields, values, strict=True)
            if column[row] is not None
        ]
        for row in range(rows)
    ]
    return pa.array(entries, MAP_TYPE)
