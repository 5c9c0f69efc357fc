"""The index in other forms: bytes per log and query times (a measurement for the
single-copy storage design, BENCHMARKS.md "Session 5"; nothing here is used by the
server yet).

Takes an index file of a LogHarbor data directory (``<data>/index/<id>.duckdb``;
bench/search.py builds a 10M-log one) and prints its table ``logs``:

- as the server keeps it (appended batch by batch), and copied afresh into a new
  DuckDB file (same 16,384-row groups);
- as Parquet with zstd, at 16,384 and at 122,880 rows per row group;

then four query shapes of bench/search.py run on the table and on the Parquet file
(16,384-row groups, DuckDB's Parquet metadata cache on): a count of one status, a
1-minute histogram, the top 10 of a column, and a read of the rows of 50 blocks
(what a rare word's lookup reads). Medians of --runs; DuckDB with 2 threads.

    python bench/index_forms.py --index DATA/index/ID.duckdb [--runs 7] [--work /tmp/forms]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import duckdb


def timed(db: duckdb.DuckDBPyConnection, sql: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        db.execute(sql).fetchall()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--work", type=Path, default=Path("/tmp/logharbor-index-forms"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    db = duckdb.connect(config={"threads": 2})
    db.execute(f"ATTACH '{args.index}' AS live (READ_ONLY)")
    rows = db.execute("SELECT count(*) FROM live.logs").fetchall()[0][0]
    fields = dict(db.execute("SELECT name, col FROM live.fields").fetchall())
    status, path = fields["status"], fields["path"]
    print(f"{rows:,} logs; the index file: {args.index.stat().st_size / rows:.1f} B/log in all")

    fresh = args.work / "fresh.duckdb"
    fresh.unlink(missing_ok=True)
    db.execute(f"ATTACH '{fresh}' AS fresh (ROW_GROUP_SIZE 16384)")
    db.execute("CREATE TABLE fresh.logs AS SELECT * FROM live.logs")
    db.execute("DETACH fresh")
    fresh_size = fresh.stat().st_size / rows
    print(f"table logs copied afresh into a new DuckDB file: {fresh_size:.1f} B/log")
    for group_rows in (16_384, 122_880):
        target = args.work / f"logs-{group_rows}.parquet"
        db.execute(
            f"COPY (SELECT * FROM live.logs) TO '{target}' "
            f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {group_rows})"
        )
        size = target.stat().st_size / rows
        print(f"as Parquet, zstd, {group_rows:,}-row groups: {size:.1f} B/log")

    parquet = args.work / "logs-16384.parquet"
    db.execute("SET parquet_metadata_cache = true")
    sample = "SELECT DISTINCT blk FROM live.logs USING SAMPLE 50 ROWS"
    blocks = [b for (b,) in db.execute(sample).fetchall()]
    listed = ", ".join(map(str, sorted(blocks)))
    shapes = {
        "status count": f"SELECT count(*) FROM {{}} WHERE \"{status}\" = '500'",
        "1-minute histogram": "SELECT t // 60000000000 AS m, count(*) FROM {} GROUP BY m",
        "top 10 paths": (
            f'SELECT "{path}", count(*) c FROM {{}} GROUP BY 1 ORDER BY c DESC LIMIT 10'
        ),
        "rows of 50 blocks": f"SELECT * FROM {{}} WHERE blk IN ({listed})",
    }
    print(f"query (median of {args.runs})   table   Parquet")
    for name, shape in shapes.items():
        table = timed(db, shape.format("live.logs"), args.runs)
        files = timed(db, shape.format(f"read_parquet('{parquet}')"), args.runs)
        print(f"  {name:20} {table:7.1f} ms {files:7.1f} ms")


if __name__ == "__main__":
    main()
