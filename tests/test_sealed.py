"""Compacted log groups are stored once: the index hands their rows over.

Once a sealed segment is compacted (each key's values a section of their own,
``engine/columnar.py``), the indexer *seals* it: the segment's rows leave the
index's table and queries read the fields they need straight from the compacted
records (``engine/index/sealed.py``).  Every query must answer exactly as it did
before: pages in every order, counts, SQL, histograms, context, rare words.
"""

from __future__ import annotations

import random
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import zstandard

from groups import log_group_bytes, prepared
from logharbor._native import speedups
from logharbor.engine import Engine, EngineConfig, columnar
from logharbor.engine.index import sealed, tokens
from logharbor.engine.index import store as store_module
from logharbor.engine.index.indexer import decode_frames
from logharbor.engine.index.store import BASE_SCHEMA
from logharbor.engine.types import NANOS_PER_SECOND
from logharbor.protocol.codec import Compression, encode_frame, encode_varint, length_delimited
from logharbor.protocol.errors import ErrorCode, ServiceError
from test_columnar import frames_of, payload_of
from test_search import ACCESS_INDEX

ZSTD = zstandard.ZstdCompressor(level=3)
T0 = 1_800_000_000
WIDE = ((T0 - 3600) * NANOS_PER_SECOND, (T0 + 7200) * NANOS_PER_SECOND)


# ------------------------------------------------- one group, field by field


def reference(raw: bytes, logs: int) -> Any:
    return decode_frames(encode_frame(9, 0, len(raw), logs, Compression.NONE, raw), 2)


GROUPS = {
    "access-logs": log_group_bytes(
        *(
            {
                "status": str(200 + i % 3 * 100),
                "id": f"{i * 7919:08x}",
                "ip": f"10.0.{i % 7}.{i % 250}",
                "msg": f"served in {i}ms",
            }
            for i in range(3000)
        ),
        topic="nginx",
        source="10.0.0.1",
        tags={"host": "web-1", "zone": "a"},
        time_ns=5,
    ),
    "missing-and-repeated-keys": length_delimited(
        0x0A, b"\x08\x01" + length_delimited(0x12, b"\x0a\x01k\x12\x011") * 2
    )
    + length_delimited(0x0A, b"\x08\x02" + length_delimited(0x12, b"\x0a\x01j\x12\x012"))
    + length_delimited(0x1A, b"topic"),
    "not-utf8-values": b"".join(
        length_delimited(0x0A, b"\x08\x01" + length_delimited(0x12, b"\x0a\x01a\x12\x02" + v))
        for v in (b"\xff\xfe", b"ok")
    ),
    "not-utf8-key": length_delimited(
        0x0A, b"\x08\x01" + length_delimited(0x12, b"\x0a\x01\xff\x12\x011")
    ),
    "repeated-tags": log_group_bytes({"a": "1"}, tags={"h": "x"})
    + length_delimited(0x32, length_delimited(0x0A, b"h") + length_delimited(0x12, b"y")),
    "unicode": log_group_bytes({"é": "ünïcode ✓", "": "empty key"}, {"é": "x"}),
}


@pytest.mark.parametrize("raw", GROUPS.values(), ids=GROUPS.keys())
def test_a_compacted_group_gives_the_rows_the_indexer_gives(raw: bytes) -> None:
    payload = columnar.pack(raw, ZSTD)
    assert payload is not None
    logs = reference(raw, 0).num_rows
    expected = reference(raw, logs)
    assert sealed.group_rows(payload, len(raw), logs, 2, 9).equals(expected)
    fields = [n[2:] for n in expected.column_names if n.startswith("c:")]
    for field in fields:  # one field at a time
        only = sealed.group_rows(payload, len(raw), logs, 2, 9, {field})
        assert only.column_names == [*expected.column_names[:7], "c:" + field]
        assert only.equals(expected.select(only.column_names))


def test_version_1_payloads_give_the_same_rows() -> None:
    raw = GROUPS["access-logs"]
    payload = ZSTD.compress(columnar.pack_body(raw) or b"")
    expected = reference(raw, 3000)
    assert sealed.group_rows(payload, len(raw), 3000, 2, 9).equals(expected)


@pytest.mark.skipif(speedups is None, reason="the C speedups are not built")
def test_random_groups_give_the_rows_the_indexer_gives() -> None:
    rng = random.Random(3)
    keys = ["a", "b", "c", "status", "é"]
    for case in range(300):
        logs = [
            {
                k: rng.choice(["1", "22", "x y", "", "10.0.0.1", "ff00", "ünï"])
                for k in keys
                if rng.random() < 0.7
            }
            for _ in range(rng.choice((1, 5, 40, 400)))
        ]
        raw = log_group_bytes(*logs, time_ns=rng.choice((0, 7)), tags={"t": str(case)})
        payload = columnar.pack(raw, ZSTD)
        assert payload is not None
        expected = reference(raw, len(logs))
        assert sealed.group_rows(payload, len(raw), len(logs), 2, 9).equals(expected), case
        # as queries read them: each field a dictionary of its values
        encoded = sealed.group_rows(payload, len(raw), len(logs), 2, 9, dictionaries=True)
        assert encoded.column_names == expected.column_names
        for name, column in zip(encoded.column_names, encoded.columns, strict=True):
            if name.startswith("c:"):
                assert pa.types.is_dictionary(column.type)
                column = column.cast(pa.string())
            assert column.equals(expected[name]), (case, name)


# ------------------------------------------------ queries before and after


RARE = "quokka"
PATHS = ["/api/v1/orders", "/api/v1/users", "/health", "/api/v2/search"]


def open_engine(path: Path) -> Engine:
    return Engine(
        EngineConfig(
            ingest_workers=0,
            data_dir=path,
            retention_interval=3600,  # maintenance runs when the test asks
            segment_bytes=40_000,  # a few log groups per segment
            segment_seconds=0,  # every segment is sealed at the next pass
            seal_min_group_logs=100,  # (these log groups hold 150 logs)
        )
    )


def make_engine(path: Path) -> Engine:
    eng = open_engine(path)
    eng.create_project("shop")
    eng.create_logstore("shop", "access", shard_count=2)
    keys = {**ACCESS_INDEX["keys"], "doc": {"type": "json"}}
    eng.create_index("shop", "access", {**ACCESS_INDEX, "keys": keys})
    return eng


def fill(eng: Engine, groups: range) -> None:
    """Log groups of 150 access logs, a minute apart, over both shards."""
    for group in groups:
        rng = random.Random(group)
        logs = []
        for n in range(150):
            entry = {
                "status": rng.choice(["200", "200", "404", "500"]),
                "latency": str(rng.randrange(1000)),
                "path": rng.choice(PATHS),
                "msg": f"served {group}-{n} in {rng.randrange(90)}ms",
                "id": f"{rng.getrandbits(64):016x}",
            }
            if n % 7 == 0:
                entry["doc"] = f'{{"user": "u{n % 5}", "n": {n}}}'
            if n % 11 == 0:
                del entry["latency"]  # logs without a field
            if group in (17, 43) and n == 33:
                entry["msg"] = f"a {RARE} was seen"
            logs.append(entry)
        eng.put(
            "shop",
            "access",
            prepared(
                *logs,
                time=T0 + group * 60,
                time_ns=group,
                topic=["web", "api"][group % 2],
                source=f"10.0.0.{group % 3}",
                tags={"host": f"web-{group % 4}"},
            ),
            hash_key=None if group % 5 else "0" * 32,
        ).result()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(tmp_path / "e")
    fill(eng, range(40))
    yield eng
    eng.close()


def answers(engine: Engine) -> dict[str, Any]:
    """What a user sees: pages, counts, SQL, histograms and context."""
    found: dict[str, Any] = {}
    searches = [
        "*",
        "status: 500",
        RARE,
        f"msg: {RARE}",
        '"served 3"',
        "path: /api/v1/orders and not status: 200",
        "latency > 900",
        "latency in [100 200)",
        "status: 404 or status: 500",
        "__tag__:host: web-1",
        "__topic__: api and __source__: 10.0.0.2",
        "doc.user: u3",
        "id: 0*",
        "nosuchword",
    ]
    for query in searches:
        for reverse in (False, True):
            for line, offset in ((100, 0), (7, 30), (1000, 0)):
                result = engine.query(
                    "shop", "access", query, *WIDE, line=line, offset=offset, reverse=reverse
                )
                found[f"{query} {reverse} {line} {offset}"] = (result.logs, result.matched)
        found[f"{query} topic"] = engine.query("shop", "access", query, *WIDE, topic="web").logs
        found[f"{query} histogram"] = engine.histogram("shop", "access", query, *WIDE)[0]
    for sql in [
        "* | select count(*) as c",
        "* | select path, count(*) as c group by path order by c desc, path",
        "status: 500 | select avg(latency) as a, max(latency) as m, count(latency) as n",
        '* | select __topic__, __source__, "__tag__:host", count(*) as c '
        "group by 1, 2, 3 order by 1, 2, 3",
        "* | select * order by __time_ns__, id limit 20",
        f"* | select msg, __time__ from log where msg like '%{RARE}%' order by __time__",
        "* | select date_trunc('minute', from_unixtime(__time__)) as m, count(*) as c "
        "group by m order by m",
        "* | select json_extract_scalar(doc, '$.user') as u, count(*) as c "
        "where doc is not null group by u order by u",
        "* | select a.path, count(*) as c from log a join log b on a.id = b.id "
        "group by a.path order by a.path",
    ]:
        result = engine.query("shop", "access", sql, *WIDE)
        found[sql] = (result.keys, result.rows)
    page = engine.query("shop", "access", "*", *WIDE, line=1000).logs
    for row in page[::97] + page[-3:]:
        for back, forward in ((10, 10), (300, 0), (0, 300), (1000, 1000)):
            found[f"context {row.shard} {row.position} {row.index} {back} {forward}"] = (
                engine.context(
                    "shop",
                    "access",
                    row.shard,
                    row.position,
                    row.index,
                    back=back,
                    forward=forward,
                )
            )
    return found


def seal_everything(engine: Engine) -> None:
    """Compact every full segment and wait until the indexer has sealed them."""
    assert engine.run_compaction() > 0
    store = engine._indexes[engine._runtime("shop", "access").info.uid]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        engine.indexer.nudge()
        pending = [
            (shard_id, base)
            for shard_id, shard in engine._runtime("shop", "access").shards.items()
            for base, _ in shard.compacted()
            if (shard_id, base) not in store.seal_checked
        ]
        if not pending:
            break
        time.sleep(0.05)
    assert store.has_sealed


def rows_kept_by_the_index(engine: Engine) -> int:
    store, _, caught_up = engine._indexed("shop", "access")  # once it has every write
    assert caught_up
    with store.reading() as db:
        row: Any = db.execute("SELECT count(*) FROM logs").fetchone()
        return int(row[0])


def test_every_query_answers_the_same_once_compacted_groups_are_sealed(engine: Engine) -> None:
    before = answers(engine)
    assert rows_kept_by_the_index(engine) == 40 * 150
    assert before[f"{RARE} False 100 0"][1] == 1
    seal_everything(engine)
    assert rows_kept_by_the_index(engine) == 0  # every log is read from the shard logs
    after = answers(engine)
    assert after.keys() == before.keys()
    for key in before:
        assert after[key] == before[key], key


def test_sealed_and_kept_rows_are_queried_together(engine: Engine, tmp_path: Path) -> None:
    reference = make_engine(tmp_path / "reference")  # the same logs, never sealed
    try:
        fill(reference, range(40))
        seal_everything(engine)
        fill(engine, range(40, 50))  # newer logs, still kept by the index
        fill(reference, range(40, 50))
        assert 0 < rows_kept_by_the_index(engine) < rows_kept_by_the_index(reference)
        expected = answers(reference)
        found = answers(engine)
        assert expected[f"{RARE} False 100 0"][1] == 2
        for key in expected:
            assert found[key] == expected[key], key
    finally:
        reference.close()


def test_sealed_groups_survive_a_restart_and_retention_drops_them(
    engine: Engine, tmp_path: Path
) -> None:
    seal_everything(engine)
    before = answers(engine)
    engine.close()
    reopened = open_engine(tmp_path / "e")
    try:
        assert answers(reopened) == before
        reopened.update_logstore("shop", "access", ttl=1)
        reopened.clock = lambda: (T0 + 3 * 86_400) * NANOS_PER_SECOND  # type: ignore[method-assign]
        assert reopened.run_retention() > 0
        result = reopened.query("shop", "access", "* | select count(*) as c", *WIDE)
        store = reopened._indexes[reopened._runtime("shop", "access").info.uid]
        with store.reading() as db:
            groups: Any = db.execute("SELECT count(*) FROM sealed").fetchone()
        kept = sum(
            shard.end - shard.begin for shard in reopened._runtime("shop", "access").shards.values()
        )
        assert groups[0] <= kept
        assert result.rows[0][0] == rows_in_shards(reopened)
    finally:
        reopened.close()


def rows_in_shards(engine: Engine) -> int:
    total = 0
    for shard_id in engine._runtime("shop", "access").shards:
        result = engine.pull("shop", "access", shard_id, 0, count=1000, max_bytes=1 << 26)
        total += result.log_count
    return total


def blocks_of(store: Any) -> tuple[int, int]:
    """(used, free) blocks of the index's file, once checkpointed."""
    with store._write_lock:
        store._db.execute("CHECKPOINT")
        row = store._db.execute(
            "SELECT used_blocks, free_blocks FROM pragma_database_size() "
            "WHERE database_name = 'logindex'"
        ).fetchone()
    return int(row[0]), int(row[1])


def test_the_index_file_is_rewritten_once_mostly_free(engine: Engine) -> None:
    store, _, _ = engine._indexed("shop", "access")
    blocks_of(store)  # the rows on disk
    seal_everything(engine)
    engine.indexer.close()  # its idle passes look at the file too
    before = answers(engine)
    used, free = blocks_of(store)
    assert free > 0  # the rows that were sealed left their blocks free
    store.emptied = True
    assert not store.rewrite_if_sparse()  # a few MB free: not worth it
    store.emptied = True
    assert store.rewrite_if_sparse(min_free=0, share=0.0)
    used_after, free_after = blocks_of(store)
    assert free_after == 0 and used_after <= used + 2  # (a copy may lay tables out anew)
    assert answers(engine) == before
    progress = store.progress()
    store.append(BASE_SCHEMA.empty_table(), 0, progress[0] + 1)  # it still takes writes
    assert store.progress() == {**progress, 0: progress[0] + 1}


def test_queries_wait_for_a_rewrite_and_a_rewrite_for_queries(engine: Engine) -> None:
    store, _, _ = engine._indexed("shop", "access")
    seal_everything(engine)
    engine.indexer.close()  # its idle passes look at the file too
    results: list[Any] = []
    with store.reading() as db:  # a query in the middle of its work
        rewriter = threading.Thread(
            target=lambda: results.append(store.rewrite_if_sparse(min_free=0, share=0.0))
        )
        store.emptied = True
        rewriter.start()
        time.sleep(0.3)
        assert not results  # the rewrite waits for the query ...
        db.execute("SELECT count(*) FROM sealed").fetchall()
    rewriter.join(10)
    assert results == [True]
    assert engine.query("shop", "access", "* | select count(*)", *WIDE).rows == [(40 * 150,)]


def test_token_filters_of_sealed_groups_are_rebuilt_from_the_shard_logs(engine: Engine) -> None:
    """Opened under another DuckDB hash, the token filter is rebuilt by the idle
    indexer from the logs: for sealed groups, from their compacted records."""
    store, _, _ = engine._indexed("shop", "access")
    seal_everything(engine)
    engine.indexer.close()  # the test takes the indexer's steps itself
    before = answers(engine)
    with store._write_lock:  # what opening under another DuckDB hash does
        for table in tokens.BLOOM_TABLES:
            store._db.execute(f"DELETE FROM {table}")
        store._save_meta({"unfiltered_below": str(store._next_block)})
        store.unfiltered_below, store.has_unfiltered_rows = store._next_block, True
    assert store.has_unfiltered_rows
    steps = 0
    while store.refilter_step(max_blocks=2):
        steps += 1
    assert steps >= 3 and not store.has_unfiltered_rows
    with store.reading() as db:
        count: Any = db.execute("SELECT count(DISTINCT blk) FROM blooms").fetchone()
    assert count[0] > 0
    assert answers(engine) == before


def test_a_query_over_too_many_sealed_groups_is_refused(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    seal_everything(engine)
    monkeypatch.setattr(sealed, "MAX_GROUPS", 10)  # the log groups of these 40 are sealed
    with pytest.raises(ServiceError) as caught:
        engine.query("shop", "access", "* | select count(*)", *WIDE)
    assert caught.value.code is ErrorCode.QUERY_TOO_LARGE
    assert "narrow the time range" in caught.value.message
    narrow = (T0 * NANOS_PER_SECOND, (T0 + 5 * 60) * NANOS_PER_SECOND)  # five groups
    assert engine.query("shop", "access", "* | select count(*)", *narrow).rows == [(5 * 150,)]
    # what counts is what the query reads: the token filter leaves a rare word's groups
    assert engine.query("shop", "access", RARE, *WIDE).matched == 1


def test_small_log_groups_stay_in_the_index(tmp_path: Path) -> None:
    """Queries read sealed logs a log group at a time: groups of a few logs would
    make them slow, so a segment of such groups keeps its rows in the index."""
    eng = make_engine(tmp_path / "small")
    try:
        store, _, _ = eng._indexed("shop", "access")
        store.seal_min_logs = 256  # these groups hold 150 logs
        fill(eng, range(10))
        assert rows_kept_by_the_index(eng) == 10 * 150
        assert eng.run_compaction() > 0
        for shard_id, shard in eng._runtime("shop", "access").shards.items():
            for base, count in shard.compacted():
                assert store.seal(shard_id, base, count) == 0
        assert rows_kept_by_the_index(eng) == 10 * 150 and not store.has_sealed
    finally:
        eng.close()


def test_the_word_rid_in_sql_beside_a_rare_word(engine: Engine, tmp_path: Path) -> None:
    # (the row ids of a rare word's rows travel as a column of that name)
    query = f"msg: {RARE} | select msg, count(*) as rid group by msg"
    before = engine.query("shop", "access", query, *WIDE).rows
    seal_everything(engine)
    assert (
        engine.query("shop", "access", query, *WIDE).rows == before == [(f"a {RARE} was seen", 1)]
    )


def test_shard_logs_are_found_without_the_engines_lock(engine: Engine) -> None:
    """Deleting an index holds the engine's lock while it closes the store, which
    waits for running queries: a query must not need that lock to read sealed logs
    (it waited 10 s, then the deletion failed halfway)."""
    store, _, _ = engine._indexed("shop", "access")
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with engine._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(5)
        assert store.shard_logs is not None and set(store.shard_logs()) == {0, 1}
    finally:
        release.set()
        holder.join()


def test_a_failed_rewrite_leaves_the_index_working(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _, _ = engine._indexed("shop", "access")
    seal_everything(engine)
    engine.indexer.close()  # its idle passes look at the file too
    before = answers(engine)

    def fail(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store_module, "_copy_database", fail)
    store.emptied = True
    with pytest.raises(OSError):
        store.rewrite_if_sparse(min_free=0, share=0.0)
    assert answers(engine) == before  # queries are not held back, the old file serves


def test_a_corrupt_sealed_record_is_an_error_of_the_server_not_of_the_query(
    engine: Engine, tmp_path: Path
) -> None:
    seal_everything(engine)
    engine.close()
    (segment, *_) = sorted((tmp_path / "e" / "shards").rglob("*-z.log"))
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a record: its checksum no longer matches
    segment.write_bytes(bytes(data))
    reopened = open_engine(tmp_path / "e")
    try:
        with pytest.raises(ServiceError) as caught:
            reopened.query("shop", "access", "* | select count(*), max(msg)", *WIDE)
        assert caught.value.code is ErrorCode.INTERNAL
        assert "corrupt record" in caught.value.message
    finally:
        reopened.close()


def test_the_cache_counts_what_its_entries_cost_beyond_their_buffers() -> None:
    cache = sealed.ColumnCache(1 << 20)
    for n in range(10_000):  # tiny columns: a log group of one log each
        cache.put((0, 0, n, "t"), pa.array([n], pa.int64()))
    assert cache.size <= 1 << 20
    assert cache.get((0, 0, 9_999, "t")) is not None and cache.get((0, 0, 0, "t")) is None
    assert len(cache._entries) <= (1 << 20) // 2048


def test_one_cache_serves_every_index_of_the_server(engine: Engine, tmp_path: Path) -> None:
    """``query_cache_bytes`` bounds the server's memory, however many logstores are
    indexed: their stores share one cache, each with keys of its own."""
    seal_everything(engine)
    engine.create_logstore("shop", "other", shard_count=2)
    keys = {**ACCESS_INDEX["keys"], "doc": {"type": "json"}}
    engine.create_index("shop", "other", {**ACCESS_INDEX, "keys": keys})
    mine = engine._indexes[engine._runtime("shop", "access").info.uid].sealed_cache
    other = engine._indexes[engine._runtime("shop", "other").info.uid].sealed_cache
    assert mine.cache is other.cache is engine.query_cache and mine.token != other.token
    engine.query("shop", "access", "* | select count(*)", *WIDE)
    assert engine.query_cache.size > 0
    group = sealed.SealedGroup(0, 0, 0, 0, 0, 1, 0, 0)
    mine.put(group, "t", pa.array([1], pa.int64()))
    assert other.get(group, "t") is None and mine.get(group, "t") is not None


def test_the_query_cache_is_a_metric(engine: Engine) -> None:
    from logharbor.server.metrics import _EngineCollector as EngineCollector

    seal_everything(engine)
    for _ in range(2):  # the second query finds what the first decoded
        engine.query("shop", "access", "* | select count(*)", *WIDE)
    found = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in EngineCollector(engine).collect()
        for sample in family.samples
    }
    assert 0 < found[("logharbor_query_cache_bytes", ())] <= 256 << 20
    hits = found[("logharbor_query_cache_reads_total", (("result", "hit"),))]
    misses = found[("logharbor_query_cache_reads_total", (("result", "miss"),))]
    assert hits >= misses > 0


def test_a_damaged_log_count_is_refused_before_anything_is_allocated() -> None:
    """(found by an ASan fuzz helper: a head claiming 10**8 logs took 7 s and 780 MB)"""
    raw = GROUPS["access-logs"]
    payload = columnar.pack(raw, ZSTD)
    assert payload is not None
    frames = frames_of(payload)
    head = zstandard.ZstdDecompressor().decompress(frames[0])
    _, pos = columnar._get64(head, 1)  # the version, then the log count
    for count in (10**8, 2**64 - 1):
        damaged_head = head[:1] + encode_varint(count) + head[pos:]
        damaged = payload_of([ZSTD.compress(damaged_head), *frames[1:]])
        tracemalloc.start()
        try:
            with pytest.raises(ValueError):
                sealed.group_rows(damaged, len(raw), 3000, 2, 9)
            with pytest.raises(ValueError):
                columnar.TypedGroup(damaged, len(raw)).times()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 16 * len(raw)
