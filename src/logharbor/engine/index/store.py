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

The database refuses external access (files, network, extensions), so that SQL
queries can only ever read the logs.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ..types import Position, ShardId

_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    t BIGINT NOT NULL,
    shard INTEGER NOT NULL,
    pos BIGINT NOT NULL,
    idx INTEGER NOT NULL,
    topic VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    tags MAP(VARCHAR, VARCHAR),
    extra MAP(VARCHAR, VARCHAR)
);
CREATE TABLE IF NOT EXISTS fields (name VARCHAR PRIMARY KEY, col VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS progress (shard INTEGER PRIMARY KEY, pos BIGINT NOT NULL);
"""
MAX_COLUMNS = 256
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


class IndexStore:
    def __init__(self, path: Path, *, memory_limit: str = "1GB", threads: int = 2) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = duckdb.connect(
            str(path),
            config={
                "memory_limit": memory_limit,
                "threads": threads,
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
            },
        )
        self._db.execute(_SCHEMA)
        self._db.execute(_MACROS)
        self._db.execute("SET TimeZone = 'UTC'")
        self._db.execute("SET enable_external_access = false")
        self._db.execute("SET lock_configuration = true")
        self._write_lock = threading.Lock()
        self.closed = False
        rows = self._db.execute("SELECT name, col FROM fields").fetchall()
        self._columns: dict[str, str] = {str(name): str(col) for name, col in rows}

    def columns(self) -> dict[str, str]:
        """Field name → column, in the order the fields were first seen."""
        return dict(sorted(self._columns.items(), key=lambda item: int(item[1][1:])))

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A connection for one query (queries run concurrently with indexing)."""
        return self._db.cursor()

    def progress(self) -> dict[ShardId, Position]:
        with self._write_lock:
            rows = self._db.execute("SELECT shard, pos FROM progress").fetchall()
        return {int(s): int(p) for s, p in rows}

    def append(self, table: pa.Table, shard: ShardId, upto: Position) -> None:
        """Add decoded rows (base columns plus ``c:<field>`` columns) and move the
        shard's progress to ``upto``, in one transaction."""
        with self._write_lock:
            db = self._db
            db.execute("BEGIN TRANSACTION")
            try:
                if table.num_rows:
                    db.register("incoming", self._to_layout(table))
                    db.execute("INSERT INTO logs BY NAME SELECT * FROM incoming")
                    db.unregister("incoming")
                db.execute("INSERT OR REPLACE INTO progress VALUES (?, ?)", [int(shard), int(upto)])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

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

    def drop_before(self, shard: ShardId, position: Position) -> None:
        """Forget the rows of log groups that retention removed from the shard."""
        with self._write_lock:
            self._db.execute("DELETE FROM logs WHERE shard = ? AND pos < ?", [shard, position])

    def row_count(self) -> int:
        result: Any = self._db.cursor().execute("SELECT count(*) FROM logs").fetchone()
        return int(result[0])

    def close(self) -> None:
        with self._write_lock:
            if not self.closed:
                self.closed = True
                self._db.close()


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
