"""Search and analysis benchmark over a reproducible access-log corpus.

The corpus: --logs access logs (~300 B each, 9 fields) spread over one day, from a
seeded generator; the token ``zebra42`` appears in 0.001% of them.  It is written
through the API as lz4 log groups of 4096 logs by 4 connections, then:

- ingest until searchable: logs/s from the first write until the index has every log;
- queries (medians of --runs): the rare token, ``status: 500`` counted, a 1-minute
  histogram of the day, and an SQL top-10 of paths over all logs;
- disk: shard logs plus index, against the raw size, right after ingest and again
  once the server's maintenance pass has compacted every segment (column by column,
  engine/columnar.py) and the indexer has sealed them (their rows leave the index,
  queries read them from the shard logs: engine/index/sealed.py), with the pull rate
  of the whole corpus before and after compaction (compacted log groups are rebuilt
  on the way out);
- the queries again, once sealed;
- the same queries directly in DuckDB over a flat table of the same data (one typed
  column per field, built here from the corpus), and our times as ratios to that.

    python bench/search.py [--logs 10000000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import time
from pathlib import Path

import duckdb
import httpx
import lz4.block

from _common import create_logstore, put_groups, start_server
from harness import ServerProcess
from logharbor.protocol.schema import LogGroup
from pull import pull_all

DAY = 86_400
START = 1_800_000_000 - 1_800_000_000 % DAY
RARE = "zebra42"
GROUP = 4096
PATHS = [
    f"/api/v{v}/{r}"
    for v in (1, 2)
    for r in (
        "orders",
        "users",
        "cart",
        "search",
        "items",
        "login",
        "logout",
        "payments",
        "reviews",
        "shipping",
    )
] + ["/health", "/metrics", "/static/app.js", "/static/app.css", "/favicon.ico"]
AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0",
    "curl/8.4.0",
    "python-httpx/0.28.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Safari/604.1",
    "Go-http/1.1",
]


def generate(total: int, seed: int = 7) -> list[tuple[bytes, int]]:
    """Log groups as (lz4 body, raw size), in time order over one day."""
    rng = random.Random(seed)
    rare_every = 100_000
    groups = []
    for first in range(0, total, GROUP):
        group = LogGroup(Topic="nginx", Source=f"10.0.0.{first // GROUP % 8}")
        group.LogTags.add(Key="host", Value=f"web-{first // GROUP % 8}")
        for n in range(first, min(first + GROUP, total)):
            t = START + n * DAY // total
            log = group.Logs.add(Time=t, Time_ns=rng.randrange(10**9))
            status = rng.choices(("200", "201", "304", "404", "500"), (80, 5, 8, 5, 2))[0]
            message = f"{rng.choice(('served', 'cached', 'proxied'))} in {rng.randrange(900)}ms"
            if n % rare_every == rare_every // 2:
                message += f" {RARE}"
            for key, value in (
                ("method", rng.choices(("GET", "POST", "PUT", "DELETE"), (70, 20, 7, 3))[0]),
                ("path", rng.choice(PATHS)),
                ("status", status),
                ("latency", str(int(rng.expovariate(1 / 80)))),
                ("bytes", str(rng.randrange(200, 60000))),
                (
                    "client",
                    f"172.{rng.randrange(16, 32)}.{rng.randrange(256)}.{rng.randrange(256)}",
                ),
                ("agent", rng.choice(AGENTS)),
                ("request_id", f"{rng.getrandbits(64):016x}"),
                ("message", message),
            ):
                log.Contents.add(Key=key, Value=value)
        raw = group.SerializeToString()
        groups.append((lz4.block.compress(raw, store_size=False), len(raw)))
    return groups


def lag(server: object, path: str) -> int:
    response = server.request("GET", path + "/index")  # type: ignore[attr-defined]
    return sum(s["behindLogGroups"] for s in response.json()["lag"])


def timed(runs: int, fn: object) -> tuple[float, object]:
    median, _, result = timed_runs(runs, fn)
    return median, result


def timed_runs(runs: int, fn: object) -> tuple[float, float, object]:
    """(median, first run, result) of ``runs`` calls."""
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times), times[0], result


def token_filter(db: duckdb.DuckDBPyConnection) -> str:
    """The token filter's share of the index file."""
    query = "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE 'blooms_%'"
    tables = [t for (t,) in db.execute(query).fetchall()]
    if not tables:
        return "no token filter"
    blocks = sum(
        db.execute(
            f"SELECT count(DISTINCT block_id) FROM pragma_storage_info('ours.{table}') "
            "WHERE block_id >= 0"
        ).fetchone()[0]  # type: ignore[index]
        for table in tables
    )
    return f"token filter {blocks * 256 / 1024:.0f} MB"


def disk_usage(data_dir: Path) -> tuple[int, int]:
    """Bytes of shard logs and of index files."""
    sizes = {"shards": 0, "index": 0}
    for p in data_dir.rglob("*"):
        for part in sizes:
            if p.is_file() and part in p.parts:
                sizes[part] += p.stat().st_size
    return sizes["shards"], sizes["index"]


def report_disk(when: str, data_dir: Path, raw_total: int) -> None:
    shards, index = disk_usage(data_dir)
    disk = shards + index
    print(
        f"disk {when}: {disk / 1e6:.0f} MB for {raw_total / 1e6:.0f} MB raw = "
        f"1/{raw_total / disk:.1f} (shard logs {shards / 1e6:.0f} MB, index {index / 1e6:.0f} MB)"
    )


def report_pull(when: str, endpoint: str, path: str) -> None:
    raw, _wire, elapsed = asyncio.run(pull_all(endpoint, path, 2))
    print(
        f"pull {when}: {raw / 1e6:.0f} MB raw in {elapsed:.1f} s = {raw / elapsed / 1e6:.0f} MB/s"
    )


def wait_for_compaction(data_dir: Path, limit: float = 600) -> float:
    """Seconds until every segment is compacted (the server's maintenance pass
    seals and compacts them)."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        pending = 0
        for shard in (data_dir / "shards").glob("*/*"):
            pending += sum(
                not p.name.endswith("-z.log") and p.stat().st_size > 0 for p in shard.glob("*.log")
            )
        if not pending:
            return time.perf_counter() - started
        time.sleep(1)
    raise SystemExit(f"sealed segments still not compacted after {limit:.0f} s")


def wait_until_settled(data_dir: Path, limit: float = 600, quiet: float = 15) -> float:
    """Seconds until the disk used stops changing for ``quiet`` seconds (the
    indexer seals compacted segments and rewrites its file when idle)."""
    started = time.perf_counter()
    last, since = disk_usage(data_dir), time.perf_counter()
    while time.perf_counter() - started < limit:
        time.sleep(1)
        now = disk_usage(data_dir)
        if now != last:
            last, since = now, time.perf_counter()
        elif time.perf_counter() - since >= quiet:
            return time.perf_counter() - started
    raise SystemExit(f"disk use still changing after {limit:.0f} s")


def flat_table(groups: list[tuple[bytes, int]]) -> duckdb.DuckDBPyConnection:
    """The corpus as one flat table in DuckDB (one typed column per field, and the
    whole line for full text), decoded here from the log groups sent."""
    from logharbor.engine.index.indexer import decode_frames
    from logharbor.protocol.codec import Compression, encode_frame

    flat = duckdb.connect()
    flat.execute("SET threads = 2")
    first = True
    for body, raw in groups:
        table = decode_frames(encode_frame(0, 0, raw, 0, Compression.LZ4, body), 0)
        names = {n[2:]: n for n in table.column_names if n.startswith("c:")}
        columns = ", ".join(
            f'TRY_CAST("{c}" AS BIGINT) AS "{n}"' if n == "latency" else f'"{c}" AS "{n}"'
            for n, c in names.items()
        )
        everything = " || chr(10) || ".join(f"coalesce(\"{c}\", '')" for c in names.values())
        select = f"SELECT t, {columns}, {everything} AS line FROM decoded"
        flat.register("decoded", table)
        if first:
            flat.execute(f"CREATE TABLE flat AS {select}")
            first = False
        else:
            flat.execute(f"INSERT INTO flat {select}")
    return flat


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logs", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    started = time.perf_counter()
    groups = generate(args.logs)
    raw_total = sum(raw for _, raw in groups)
    print(
        f"corpus: {args.logs:,} logs, {raw_total / 1e6:.0f} MB raw "
        f"({raw_total / args.logs:.0f} B/log), generated in {time.perf_counter() - started:.0f} s"
    )
    # first with maintenance off: every log as written, every row in the index
    server = start_server(env={"LOGHARBOR_RETENTION_INTERVAL": "3600"})
    try:
        path = create_logstore(server, 2)
        server.request(
            "POST",
            path + "/index",
            content=json.dumps(
                {
                    "line": {"token": list(" ,;=()[]{}?@&<>/:\t\r\n\"'")},
                    "keys": {
                        "status": {"type": "text", "doc_value": True},
                        "path": {"type": "text", "doc_value": True},
                        "latency": {"type": "long", "doc_value": True},
                    },
                }
            ).encode(),
        )
        started = time.perf_counter()
        asyncio.run(put_groups(server.endpoint, path, groups, len(groups), connections=4))
        written = time.perf_counter() - started
        while lag(server, path):
            time.sleep(0.05)
        searchable = time.perf_counter() - started
        print(
            f"ingest: written in {written:.1f} s ({args.logs / written:,.0f} logs/s); "
            f"searchable after {searchable:.1f} s: {args.logs / searchable:,.0f} logs/s"
        )

        window = {"from": START, "to": START + DAY}

        # one client for every query, as an application keeps one (a new connection
        # per query would add ~18 ms of client setup to each figure)
        client = httpx.Client(base_url=server.endpoint, timeout=60)

        def query(body: dict[str, object], route: str = "/query") -> dict[str, object]:
            response = client.post(path + route, content=json.dumps({**window, **body}).encode())
            assert response.status_code == 200, response.text
            return response.json()  # type: ignore[no-any-return]

        ours = {
            "rare token": lambda: query({"query": RARE})["meta"]["matched"],  # type: ignore[index]
            "status: 500 count": lambda: query({"query": "status: 500 | select count(*) as c"})[
                "rows"
            ][0][0],  # type: ignore[index]
            "1-minute histogram of the day": lambda: query(
                {"query": "*", "interval": 60}, "/histogram"
            )["total"],
            "SQL top-10 paths": lambda: query(
                {"query": "* | select path, count(*) as c group by path order by c desc limit 10"}
            )["rows"][0],  # type: ignore[index]
        }

        def run_queries(when: str) -> dict[str, float]:
            print(f"queries {when}:")
            times = {}
            for name, fn in ours.items():
                times[name], first, result = timed_runs(args.runs, fn)
                print(
                    f"  {name}: {times[name] * 1e3:.0f} ms (median of {args.runs}; "
                    f"first {first * 1e3:.0f} ms) -> {result}"
                )
            return times

        kept_times = run_queries("with every row in the index")
        data_dir = server.data_dir
        report_disk("right after ingest", data_dir, raw_total)
        report_pull("before compaction", server.endpoint, path)
        # then again, with segments sealed (and so compacted) once 20 s old rather
        # than an hour, and maintenance every 5 s: every log reaches the form it
        # keeps for good (with the defaults, each shard's last hour stays as written)
        client.close()
        server.stop()
        server = ServerProcess(
            data_dir,
            auth=False,
            env={"LOGHARBOR_SEGMENT_SECONDS": "20", "LOGHARBOR_RETENTION_INTERVAL": "5"},
        ).start()
        client = httpx.Client(base_url=server.endpoint, timeout=60)
        waited = wait_for_compaction(data_dir)
        waited += wait_until_settled(data_dir)
        report_disk(f"after compaction and sealing (waited {waited:.0f} s)", data_dir, raw_total)
        sealed_times = run_queries("once compacted groups are sealed (read from the shard logs)")
        report_pull("after compaction", server.endpoint, path)
        client.close()
    finally:
        server.stop()

    (index_file,) = (data_dir / "index").glob("*.duckdb")
    check = duckdb.connect()
    check.execute(f"ATTACH '{index_file}' AS ours (READ_ONLY)")
    print(f"  index {index_file.stat().st_size / 1e6:.0f} MB, of which {token_filter(check)}")
    check.close()
    shutil.rmtree(data_dir, ignore_errors=True)
    started = time.perf_counter()
    flat = flat_table(groups)
    print(f"flat table built in {time.perf_counter() - started:.0f} s")
    day_ns = (START * 10**9, (START + DAY) * 10**9)
    direct = {
        "rare token": f"SELECT count(*) FROM flat WHERE contains(line, '{RARE}')",
        "status: 500 count": "SELECT count(*) FROM flat WHERE status = '500'",
        "1-minute histogram of the day": (
            f"SELECT (t - {day_ns[0]}) // 60000000000 AS b, count(*) FROM flat "
            f"WHERE t >= {day_ns[0]} AND t < {day_ns[1]} GROUP BY b"
        ),
        "SQL top-10 paths": (
            "SELECT path, count(*) c FROM flat GROUP BY path ORDER BY c DESC LIMIT 10"
        ),
    }
    print("the same queries directly in DuckDB (flat typed table, in memory):")
    for name, sql in direct.items():
        seconds, _ = timed(args.runs, lambda sql=sql: flat.execute(sql).fetchall())
        print(
            f"  {name}: {seconds * 1e3:.0f} ms; ours/direct = "
            f"{kept_times[name] / seconds:.1f}x with every row in the index, "
            f"{sealed_times[name] / seconds:.1f}x sealed"
        )
    flat.close()


if __name__ == "__main__":
    main()
