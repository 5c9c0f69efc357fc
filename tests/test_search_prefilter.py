"""The token prefilter: a rare word reads only the blocks that may hold it, and finds
exactly what a full scan finds.

The data: 20,000 filler logs (twenty blocks of 1,024 rows) with a few rare
logs planted among them, so that a rare word's blocks are a small share of all
blocks and the prefilter is used.  Every test compares with what the search must
find; were the prefilter to drop a block holding a match, the count would be short.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from groups import prepared
from harness import ServerProcess
from logharbor.engine import Engine, EngineConfig
from logharbor.engine.index import search, tokens
from logharbor.engine.index.query import _where
from logharbor.engine.index.sealed import Source
from logharbor.engine.index.search import parse_search, required_tokens
from logharbor.engine.index.store import IndexStore
from logharbor.engine.types import NANOS_PER_DAY, NANOS_PER_SECOND

T0 = 1_800_000_000
WIDE = ((T0 - 3600) * NANOS_PER_SECOND, (T0 + 7200) * NANOS_PER_SECOND)
GROUPS = 20
PER_GROUP = 1000
INDEX = {
    "line": {"token": list(" ,;=()[]{}?@&<>/:\n\t\r\"'-.")},
    "keys": {
        "level": {"type": "text", "caseSensitive": True},
        "path": {"type": "text", "token": ["/"]},
        "code": {"type": "text", "token": ["x"]},  # a letter separates: no prefilter
        "latency": {"type": "long"},
    },
}
# (group it is written in, contents, group topic, group tag host)
RARE = [
    (1, {"msg": "Payment FAILED for order Zebra42", "level": "ERROR"}, "shop", "web-1"),
    (3, {"msg": "connection reset by peer", "user": "quokka-7"}, "shop", "web-1"),
    (5, {"msg": "Ünïcode ÄRGER im Lager", "level": "Kraken"}, "shop", "web-1"),
    (7, {"msg": "export took 987654 ms", "code": "AxB"}, "billing", "narwhal-3"),
    (9, {"msg": "zebra42 seen again", "path": "/api/v9/okapi"}, "shop", "web-1"),
]


def filler(group: int, n: int) -> dict[str, str]:
    return {
        "msg": f"request served in {n % 900} ms by worker {n % 7}",
        "level": "INFO",
        "path": f"/api/v1/items/{n % 50}",
        "user": f"user-{n % 40}",
        "latency": str(n % 900),
        "code": "A0",
    }


def write(engine: Engine, group: int, extra: list[dict[str, str]] | None = None) -> None:
    rare = [r for r in RARE if r[0] == group]
    logs = [filler(group, group * PER_GROUP + n) for n in range(PER_GROUP)]
    for _, contents, _, _ in rare:
        logs.insert(PER_GROUP // 2, contents)
    logs.extend(extra or [])
    topic, host = (rare[0][2], rare[0][3]) if rare else ("shop", "web-1")
    engine.put(
        "shop",
        "access",
        prepared(*logs, time=T0 + group, topic=topic, source="10.0.0.1", tags={"host": host}),
    ).result()


def make_engine(data_dir: Path, **options: object) -> Engine:
    config = EngineConfig(ingest_workers=0, data_dir=data_dir, retention_interval=3600)
    return Engine(dataclasses.replace(config, **options))  # type: ignore[arg-type]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """The logs are written before the index exists: indexing them is the backfill."""
    eng = make_engine(tmp_path / "e")
    eng.create_project("shop")
    eng.create_logstore("shop", "access", shard_count=1)
    for group in range(GROUPS):
        write(eng, group)
    eng.create_index("shop", "access", INDEX)
    yield eng
    eng.close()


def found(engine: Engine, query: str) -> list[str]:
    """The msg of every log the query matches, in time order."""
    result = engine.query("shop", "access", query, *WIDE, line=1000)
    assert result.complete and result.matched == len(result.logs)
    return [dict(log.contents).get("msg", "") for log in result.logs]


def count(engine: Engine, query: str) -> int | None:
    return engine.query("shop", "access", query, *WIDE, line=0).matched


def store_of(engine: Engine) -> IndexStore:
    store, _config, _ = engine._indexed("shop", "access")
    return store


def candidates(engine: Engine, query: str) -> set[int] | None:
    """The blocks the prefilter lets a query read (None: it reads them all)."""
    store, config, _ = engine._indexed("shop", "access")
    need = required_tokens(parse_search(query), config, store.columns())
    if need is None:
        return None
    with store.reading() as db:
        return tokens.candidate_blocks(db, need).blocks


def where_of(engine: Engine, query: str) -> str:
    """The SQL condition a query runs with."""
    store, config, _ = engine._indexed("shop", "access")
    with store.reading() as db:
        logs = Source(store, db)
        return logs.statement(_where(logs, query, config, store.columns(), *WIDE, None))


TOTAL = GROUPS * PER_GROUP + len(RARE)


class TestRareWordsAreFoundExactly:
    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("zebra42", ["Payment FAILED for order Zebra42", "zebra42 seen again"]),
            ("ZEBRA42", ["Payment FAILED for order Zebra42", "zebra42 seen again"]),
            ("failed and zebra42", ["Payment FAILED for order Zebra42"]),
            ('"for order zebra42"', ["Payment FAILED for order Zebra42"]),
            ('"order for zebra42"', []),  # a phrase keeps its order
            ("zebra4", []),  # whole tokens only
            ("zebra*", ["Payment FAILED for order Zebra42", "zebra42 seen again"]),
            ('"reset by peer"', ["connection reset by peer"]),
            ("user: quokka-7", ["connection reset by peer"]),  # field-scoped
            ("quokka", ["connection reset by peer"]),  # any field
            ("msg: quokka", []),  # not in that field
            ("ärger", ["Ünïcode ÄRGER im Lager"]),
            ("987654", ["export took 987654 ms"]),
            ("path: okapi", ["zebra42 seen again"]),
            ("__topic__: billing and took", ["export took 987654 ms"]),
            ("__tag__:host: narwhal-3 and took", ["export took 987654 ms"]),
            ("quokka or okapi", ["connection reset by peer", "zebra42 seen again"]),
            ("(quokka or 987654) and peer", ["connection reset by peer"]),
            ("zebra42 and not failed", ["zebra42 seen again"]),
        ],
    )
    def test_search(self, engine: Engine, query: str, expected: list[str]) -> None:
        assert found(engine, query) == expected

    def test_the_prefilter_reads_only_the_rare_words_blocks(self, engine: Engine) -> None:
        blocks = candidates(engine, "zebra42")
        assert blocks is not None and 2 <= len(blocks) <= 3  # two blocks, a false positive at most
        assert candidates(engine, "quokka or okapi") == (
            candidates(engine, "quokka") | candidates(engine, "okapi")  # type: ignore[operator]
        )
        assert candidates(engine, "served") is None  # in every block: not worth it
        assert candidates(engine, "not zebra42") is None  # NOT demands nothing
        assert candidates(engine, "latency > 5") is None

    def test_a_word_is_looked_for_only_in_the_fields_whose_lane_holds_it(
        self, engine: Engine
    ) -> None:
        # "quokka" is only ever in user (lane 1): the word is looked up ahead of the
        # query, in the user column of the blocks whose lane 1 holds it, and the
        # query keeps the one row it is in
        assert tokens.lane("user") not in {tokens.lane(f) for f in ("msg", "level", "code")}
        assert where_of(engine, "quokka").count("rowid IN (SELECT unnest([") == 1
        assert found(engine, "quokka") == ["connection reset by peer"]
        # a word in every block is not looked up: the query tests every value
        columns = store_of(engine).columns()
        assert f'"{columns["msg"]}"' in where_of(engine, "served")
        # a field search of a field that never holds the word is FALSE outright
        assert "FALSE" in where_of(engine, "level: quokka")
        assert found(engine, "level: quokka") == []
        # and NOT of a skipped field still keeps every other log
        assert count(engine, "not msg: quokka") == TOTAL
        assert count(engine, "not quokka") == TOTAL - 1

    def test_words_with_too_many_rows_to_look_up_are_tested_in_the_query(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        queries = ["zebra42", "quokka or okapi", '"reset by peer"', "msg: zebra42"]
        looked_up = [found(engine, q) for q in queries] + [count(engine, "not zebra42")]
        monkeypatch.setattr(search, "_MAX_HITS", 0)
        assert "rowid IN" not in where_of(engine, "zebra42")
        tested = [found(engine, q) for q in queries] + [count(engine, "not zebra42")]
        assert tested == looked_up

    def test_lanes_of_topic_source_and_tags(self, engine: Engine) -> None:
        assert count(engine, "__topic__: billing") == PER_GROUP + 1
        assert count(engine, "__source__: 10.0.0.1") == TOTAL
        assert count(engine, "__tag__:host: narwhal-3 and export") == 1
        assert count(engine, "billing") == 0  # full text covers the fields only

    def test_words_the_prefilter_cannot_vouch_for_scan_everything(self, engine: Engine) -> None:
        assert candidates(engine, "code: B") is None  # "x" separates, inside a filter token
        assert found(engine, "code: B") == ["export took 987654 ms"]
        assert count(engine, "not zebra42") == TOTAL - 2
        assert count(engine, "__tag__:host: narwhal-3") == PER_GROUP + 1  # its whole group

    def test_pages_of_a_rare_word(self, engine: Engine) -> None:
        def page(**options: object) -> list[str]:
            result = engine.query("shop", "access", "zebra42", *WIDE, **options)  # type: ignore[arg-type]
            assert result.matched == 2
            return [dict(log.contents)["msg"] for log in result.logs]

        assert page(line=1) == ["Payment FAILED for order Zebra42"]
        assert page(line=1, offset=1) == ["zebra42 seen again"]
        assert page(reverse=True) == ["zebra42 seen again", "Payment FAILED for order Zebra42"]
        assert page(offset=5) == []

    def test_sql_and_histograms_over_a_rare_word(self, engine: Engine) -> None:
        result = engine.query("shop", "access", "zebra42 | select count(*) as n", *WIDE)
        assert result.rows == [(2,)]
        buckets, _ = engine.histogram("shop", "access", "zebra42", *WIDE, interval=3600)
        assert sum(b.count for b in buckets) == 2

    def test_case_sensitive_keys(self, engine: Engine) -> None:
        assert found(engine, "level: Kraken") == ["Ünïcode ÄRGER im Lager"]
        assert found(engine, "level: kraken") == []
        assert found(engine, "level: ERROR") == ["Payment FAILED for order Zebra42"]

    def test_a_changed_configuration_applies_to_old_blocks(self, engine: Engine) -> None:
        engine.update_index(
            "shop",
            "access",
            {"line": {"token": [" "], "caseSensitive": True}, "keys": {}},
        )
        assert found(engine, "Zebra42") == ["Payment FAILED for order Zebra42"]
        assert found(engine, "zebra42") == ["zebra42 seen again"]
        assert found(engine, "user: quokka-7") == ["connection reset by peer"]
        engine.update_index("shop", "access", {"line": {"token": ["-", "e"]}, "keys": {}})
        # "e" separates "conn" from "ction reset..." inside the filter's token "connection"
        assert found(engine, "conn") == ["connection reset by peer"]


class TestLifecycle:
    def test_new_writes_get_new_blocks(self, engine: Engine) -> None:
        write(engine, GROUPS, [{"msg": "late capybara"}])
        assert found(engine, "capybara") == ["late capybara"]
        assert found(engine, "zebra42") == [
            "Payment FAILED for order Zebra42",
            "zebra42 seen again",
        ]

    def test_restart_keeps_the_filter_and_continues_it(self, tmp_path: Path) -> None:
        eng = make_engine(tmp_path / "e")
        eng.create_project("shop")
        eng.create_logstore("shop", "access", shard_count=1)
        eng.create_index("shop", "access", INDEX)
        for group in range(GROUPS // 2):
            write(eng, group)
        assert found(eng, "quokka") == ["connection reset by peer"]
        eng.close()
        eng = make_engine(tmp_path / "e")
        try:
            for group in range(GROUPS // 2, GROUPS):
                write(eng, group)
            assert found(eng, "quokka") == ["connection reset by peer"]
            assert found(eng, "okapi") == ["zebra42 seen again"]
            assert len(candidates(eng, "okapi") or ()) == 1
        finally:
            eng.close()

    def test_deleting_the_index_deletes_the_filter(self, engine: Engine, tmp_path: Path) -> None:
        engine.delete_index("shop", "access")
        assert list((tmp_path / "e" / "index").iterdir()) == []
        engine.create_index("shop", "access", INDEX)
        assert found(engine, "quokka") == ["connection reset by peer"]

    def test_blooms_of_another_duckdb_hash_are_not_trusted(self, tmp_path: Path) -> None:
        eng = make_engine(tmp_path / "e")
        eng.create_project("shop")
        eng.create_logstore("shop", "access", shard_count=1)
        eng.create_index("shop", "access", INDEX)
        for group in range(GROUPS):
            write(eng, group)
        assert count(eng, "*") == TOTAL
        db = store_of(eng)._db
        db.execute("UPDATE token_meta SET value = 'another hash' WHERE name = 'hash_probe'")
        # as if written by a DuckDB whose hash differs: the blooms would miss every word
        for table in tokens.BLOOM_TABLES:
            db.execute(f"UPDATE {table} SET w0 = 0, w1 = 0, w2 = 0, w3 = 0")
        eng.close()
        eng = make_engine(tmp_path / "e")
        try:
            # the old blocks are read in full until the indexer, when idle, has
            # built their filters again (newest first); the answers never change
            assert found(eng, "quokka") == ["connection reset by peer"]
            write(eng, GROUPS, [{"msg": "late capybara"}])
            assert found(eng, "capybara") == ["late capybara"]
            store = store_of(eng)
            deadline = time.monotonic() + 30
            while store.unfiltered_below > 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert store.unfiltered_below == 0 and not store.has_unfiltered_rows
            assert found(eng, "quokka") == ["connection reset by peer"]
            assert found(eng, "zebra42") == [
                "Payment FAILED for order Zebra42",
                "zebra42 seen again",
            ]
            assert len(candidates(eng, "quokka") or range(99)) <= 2  # filtered again
        finally:
            eng.close()


def test_retention_drops_rows_and_their_blocks(tmp_path: Path) -> None:
    now = [T0 * NANOS_PER_SECOND]
    eng = make_engine(tmp_path / "e", clock=lambda: now[0], segment_bytes=1)
    try:
        eng.create_project("shop")
        eng.create_logstore("shop", "access", shard_count=1, ttl=1)
        eng.create_index("shop", "access", INDEX)
        for group in range(5):  # zebra42 and quokka
            write(eng, group)
        assert found(eng, "zebra42") == ["Payment FAILED for order Zebra42"]
        old_blocks = blocks_of(eng)
        now[0] += 2 * NANOS_PER_DAY
        for group in range(5, 10):  # zebra42 again
            write(eng, group)
        eng.run_retention()
        assert found(eng, "zebra42") == ["zebra42 seen again"]
        assert found(eng, "quokka") == []
        assert blocks_of(eng).isdisjoint(old_blocks)
    finally:
        eng.close()


def blocks_of(engine: Engine) -> set[int]:
    """The blocks that have blooms."""
    with store_of(engine).reading() as db:
        return {int(b) for (b,) in db.execute("SELECT DISTINCT blk FROM blooms").fetchall()}


def test_server_restart_keeps_rare_words_searchable(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(tmp_path / "data", auth=False)
    path = "/api/v1/projects/shop/logstores/access"
    post(server, "/api/v1/projects", {"name": "shop"})
    post(server, "/api/v1/projects/shop/logstores", {"name": "access", "shardCount": 2})
    post(server, path + "/index", INDEX)
    now = int(time.time())
    for group in range(8):
        logs = [filler(group, group * PER_GROUP + n) for n in range(PER_GROUP)]
        logs[group * 97] = {"msg": f"rare wombat{group}"}
        post(server, path + "/logs", {"logs": [{"time": now, "contents": c} for c in logs]})

    def search(query: str) -> list[str]:
        body = {"query": query, "from": now - 60, "to": now + 60}
        result = post(server, path + "/query", body)
        return [dict(log["contents"])["msg"] for log in result["logs"]]

    assert search("wombat3") == ["rare wombat3"]
    server.stop()
    server = server_factory(tmp_path / "data", auth=False)
    assert sorted(search("wombat3 or wombat6")) == ["rare wombat3", "rare wombat6"]
    assert search("msg: wombat5") == ["rare wombat5"]


def post(server: ServerProcess, path: str, body: object) -> dict[str, object]:
    response = server.request(
        "POST",
        path,
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_an_index_written_before_the_filter_is_read_in_full(tmp_path: Path) -> None:
    """A DuckDB index from before the token filter (no ``blk`` column): its rows are
    always read, and what is appended after the upgrade is filtered."""
    import duckdb

    from logharbor.engine.index.config import parse_index_config
    from logharbor.engine.index.indexer import decode_frames
    from logharbor.engine.index.query import QueryLimits, QueryRunner
    from logharbor.protocol.codec import encode_frame

    path = tmp_path / "old.duckdb"
    old = duckdb.connect(str(path))
    old.execute(
        "CREATE TABLE logs (t BIGINT NOT NULL, shard INTEGER NOT NULL, pos BIGINT NOT NULL,"
        " idx INTEGER NOT NULL, topic VARCHAR NOT NULL, source VARCHAR NOT NULL,"
        " tags MAP(VARCHAR, VARCHAR), extra MAP(VARCHAR, VARCHAR), f0 VARCHAR);"
        "CREATE TABLE fields (name VARCHAR PRIMARY KEY, col VARCHAR NOT NULL);"
        "CREATE TABLE progress (shard INTEGER PRIMARY KEY, pos BIGINT NOT NULL);"
        "INSERT INTO fields VALUES ('msg', 'f0');"
        f"INSERT INTO logs VALUES ({T0 * NANOS_PER_SECOND}, 0, 0, 0, '', '', MAP {{}}, NULL,"
        " 'written before the filter by a tapir');"
        "INSERT INTO progress VALUES (0, 1);"
    )
    old.close()

    def frames(position: int, msgs: list[str]) -> bytes:
        group = prepared(*({"msg": m} for m in msgs), time=T0)
        return encode_frame(
            position, 0, group.raw_size, group.log_count, group.compression, group.payload
        )

    store = IndexStore(path)
    runner = QueryRunner(QueryLimits())
    config = parse_index_config({"line": {}})
    try:
        for position in range(1, 11):
            msgs = [f"filler {n}" for n in range(1100)]
            if position == 5:
                msgs[7] = "written after the upgrade by a tapir"
            store.append(decode_frames(frames(position, msgs), 0), 0, position + 1)
        result = runner.run(store, config, "tapir", *WIDE)
        assert sorted(dict(log.contents)["msg"] for log in result.logs) == [
            "written after the upgrade by a tapir",
            "written before the filter by a tapir",
        ]
    finally:
        store.close()


def test_refiltering_keeps_every_answer(tmp_path: Path) -> None:
    """Blocks without a filter (stale blooms) get it back a step at a time, newest
    first; after every step every search answers as before."""
    from logharbor.engine.index.config import parse_index_config
    from logharbor.engine.index.indexer import decode_frames
    from logharbor.engine.index.query import QueryLimits, QueryRunner
    from logharbor.protocol.codec import encode_frame

    store = IndexStore(tmp_path / "index.duckdb")
    runner = QueryRunner(QueryLimits())
    config = parse_index_config(INDEX)
    try:
        for group in range(GROUPS):
            rare = [contents for g, contents, _, _ in RARE if g == group]
            logs = [filler(group, group * PER_GROUP + n) for n in range(PER_GROUP)] + rare
            prepared_group = prepared(*logs, time=T0 + group, tags={"host": f"web-{group}"})
            frame = encode_frame(
                group,
                0,
                prepared_group.raw_size,
                prepared_group.log_count,
                prepared_group.compression,
                prepared_group.payload,
            )
            store.append(decode_frames(frame, 0), 0, group + 1)
        queries = ["zebra42", "quokka or okapi", "user: quokka-7", "__tag__:host: web-7"]

        def answers() -> list[int | None]:
            return [runner.run(store, config, q, *WIDE, line=0).matched for q in queries]

        expected = answers()
        assert expected == [2, 2, 1, PER_GROUP + 1]
        with store._write_lock:  # what opening under another DuckDB hash does
            for table in tokens.BLOOM_TABLES:
                store._db.execute(f"DELETE FROM {table}")
            store._save_meta({"unfiltered_below": str(store._next_block)})
            store.unfiltered_below, store.has_unfiltered_rows = store._next_block, True
        assert answers() == expected
        steps = 0
        while store.refilter_step(max_blocks=3):
            steps += 1
            assert store.unfiltered_below > 0 and answers() == expected
        assert steps >= 5 and store.unfiltered_below == 0 and not store.has_unfiltered_rows
        assert answers() == expected
        with store.reading() as db:
            need = required_tokens(parse_search("zebra42"), config, store.columns())
            assert need is not None
            assert tokens.candidate_blocks(db, need).blocks  # the filter answers again
    finally:
        store.close()
