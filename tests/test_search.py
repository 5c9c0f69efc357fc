"""Search and SQL analysis in the engine: the language, the index, retention."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from groups import prepared
from logharbor.engine import Engine, EngineConfig
from logharbor.engine.index.query import Cancellation, QueryLimits
from logharbor.engine.index.search import SearchSyntaxError, parse_search
from logharbor.engine.types import NANOS_PER_DAY, NANOS_PER_SECOND
from logharbor.protocol.errors import ErrorCode, ServiceError

T0 = 1_800_000_000
WIDE = ((T0 - 3600) * NANOS_PER_SECOND, (T0 + 3600) * NANOS_PER_SECOND)

ACCESS_LOGS = [
    {
        "method": "GET",
        "path": "/api/v1/orders",
        "status": "200",
        "latency": "12",
        "msg": "order listed for alice",
    },
    {
        "method": "POST",
        "path": "/api/v1/orders",
        "status": "500",
        "latency": "250",
        "msg": "Database Error: connection refused",
    },
    {"method": "GET", "path": "/health", "status": "200", "latency": "1", "msg": "ok"},
    {
        "method": "GET",
        "path": "/api/v2/search",
        "status": "404",
        "latency": "95",
        "msg": "no results for errors page",
    },
    {
        "method": "DELETE",
        "path": "/api/v1/orders/7",
        "status": "500",
        "latency": "300",
        "msg": "error deleting order",
    },
]


ACCESS_INDEX = {
    "line": {"token": list(" ,;=()[]{}?@&<>/:\n\t\r\"'"), "caseSensitive": False},
    "keys": {
        "status": {"type": "text"},
        "latency": {"type": "long"},
        "path": {"type": "text", "token": ["/"]},
    },
}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = Engine(EngineConfig(ingest_workers=0, data_dir=tmp_path / "e", retention_interval=3600))
    eng.create_project("shop")
    eng.create_logstore("shop", "access", shard_count=2)
    eng.create_index("shop", "access", ACCESS_INDEX)
    for i, contents in enumerate(ACCESS_LOGS):
        eng.put(
            "shop",
            "access",
            prepared(
                contents,
                time=T0 + i,
                topic="web",
                source=f"10.0.0.{i % 2}",
                tags={"zone": f"z{i % 2}"},
            ),
        ).result()
    yield eng
    eng.close()


def _wait_searchable(engine: Engine, logs: int) -> None:
    deadline = time.monotonic() + 30
    while engine.query("shop", "access", "*", *WIDE, line=0).matched != logs:
        assert time.monotonic() < deadline, "the logs did not become searchable"
        time.sleep(0.05)


def matched(engine: Engine, query: str) -> list[str]:
    """The msg of every log the query matches, in time order."""
    result = engine.query("shop", "access", query, *WIDE)
    assert result.complete
    return [dict(log.contents)["msg"] for log in result.logs]


class TestSearchLanguage:
    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("*", 5),
            ("", 5),
            ("error", 2),  # whole tokens, any case: "Error" and "error", not "errors"
            ("error*", 3),  # a prefix also matches "errors"
            ('"connection refused"', 1),  # a phrase
            ('"refused connection"', 0),  # in order
            ("status: 500", 2),
            ("status:500", 2),
            ("status: 500 and path: /api*", 2),
            ("status: 500 or status: 404", 3),
            ("not status: 200", 3),
            ("error and not status: 404", 2),
            ("(status: 404 or status: 500) and latency > 100", 2),
            ("latency >= 250", 2),
            ("latency < 12", 1),
            ("latency in [12 250)", 2),
            ("latency in (12 250]", 2),
            ("path: orders", 3),  # the path key splits at "/" only
            ("__topic__: web", 5),
            ("__source__: 10.0.0.1", 2),
            ("__tag__:zone: z1", 2),
            ("msg: *", 5),
            ("nosuchfield: *", 0),
            ("alice order", 1),  # words side by side: AND
            ("GET and latency > 50", 1),
        ],
    )
    def test_queries(self, engine: Engine, query: str, expected: int) -> None:
        assert len(matched(engine, query)) == expected

    @pytest.mark.parametrize(
        ("text", "position"),
        [
            ("(status: 500", 12),
            ("status: 500 and", 15),
            ("status:", 7),
            ("latency in [1 2", 15),
            ('"open phrase', 0),
            ("latency > abc", 10),
            ("or", 0),
        ],
    )
    def test_syntax_errors_say_where(self, text: str, position: int) -> None:
        with pytest.raises(SearchSyntaxError) as exc:
            parse_search(text)
        assert exc.value.position == position
        assert exc.value.code is ErrorCode.INVALID_QUERY
        assert f"position {position}" in exc.value.message

    def test_case_sensitive_key(self, engine: Engine) -> None:
        engine.update_index(
            "shop",
            "access",
            {"line": {"token": [" "]}, "keys": {"method": {"type": "text", "caseSensitive": True}}},
        )
        assert len(matched(engine, "method: GET")) == 3
        assert matched(engine, "method: get") == []

    def test_full_text_needs_a_line_index(self, engine: Engine) -> None:
        engine.update_index("shop", "access", {"keys": {"status": {"type": "text"}}})
        assert len(matched(engine, "status: 500")) == 2
        with pytest.raises(ServiceError) as exc:
            matched(engine, "error")
        assert exc.value.code is ErrorCode.INVALID_QUERY


class TestFieldsAndWords:
    """Json sub-keys, double fields, letters outside ASCII, and input that must fail
    cleanly rather than crash."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Engine]:
        eng = Engine(
            EngineConfig(ingest_workers=0, data_dir=tmp_path / "e", retention_interval=3600)
        )
        eng.create_project("shop")
        eng.create_logstore("shop", "access", shard_count=1)
        eng.create_index(
            "shop",
            "access",
            {
                "line": {"token": list(" ,;=()[]{}?@&<>/:\n\t\r\"'")},
                "keys": {
                    "request": {"type": "json", "json_keys": {"size.kb": {"type": "double"}}},
                    "ratio": {"type": "double"},
                },
            },
        )
        logs = [
            {
                "msg": "İstanbul office",
                "request": '{"user": "alice", "size": {"kb": 7.5}}',
                "ratio": "0.25",
            },
            {"msg": "ΟΔΟΣ closed", "request": '{"user": "bob", "size": {"kb": 3}}', "ratio": "2"},
            {"msg": "plain", "request": "not json", "ratio": "x"},
        ]
        for i, contents in enumerate(logs):
            eng.put("shop", "access", prepared(contents, time=T0 + i)).result()
        yield eng
        eng.close()

    @staticmethod
    def msgs(engine: Engine, query: str) -> list[str]:
        return [
            dict(log.contents)["msg"] for log in engine.query("shop", "access", query, *WIDE).logs
        ]

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("request.user: alice", ["İstanbul office"]),
            ("request.user: ALICE", ["İstanbul office"]),  # the parent's case rule
            ("request.size.kb > 5", ["İstanbul office"]),  # a typed sub-key
            ("request.size.kb in [1 5]", ["ΟΔΟΣ closed"]),
            ("request.user: *", ["İstanbul office", "ΟΔΟΣ closed"]),  # not in "not json"
            ("request.nosuch: alice", []),
            ("ratio > 1.5", ["ΟΔΟΣ closed"]),
            ("ratio <= 0.25", ["İstanbul office"]),  # "x" is no number: never matches
            ("istanbul", ["İstanbul office"]),
            ("İSTANBUL", ["İstanbul office"]),  # lowercased as DuckDB does (not "i̇stanbul")
            ("οδοσ", ["ΟΔΟΣ closed"]),  # DuckDB lowercases Σ to σ, never to final ς
            ("ΟΔΟΣ", ["ΟΔΟΣ closed"]),
        ],
    )
    def test_search(self, store: Engine, query: str, expected: list[str]) -> None:
        assert self.msgs(store, query) == expected

    def test_json_sub_keys_in_sql(self, store: Engine) -> None:
        result = store.query(
            "shop",
            "access",
            'request.user: * | select "request.user" as who, sum("request.size.kb") as kb '
            "group by who order by who",
            *WIDE,
        )
        assert result.rows == [("alice", 7.5), ("bob", 3.0)]

    def test_select_star_returns_every_field(self, store: Engine) -> None:
        result = store.query("shop", "access", "ratio > 1 | select * from log", *WIDE)
        assert {"msg", "request", "ratio", "__time__"} <= set(result.keys)
        row = dict(zip(result.keys, result.rows[0], strict=True))
        assert row["msg"] == "ΟΔΟΣ closed" and row["ratio"] == 2.0  # typed as double

    @pytest.mark.parametrize(
        "query",
        [
            "ratio > inf",
            "ratio > nan",
            "ratio in [1 1e999]",
            "(" * 3000 + "a" + ")" * 3000,
            "not " * 3000 + "a",
            "* | select " + "(" * 3000 + "1" + ")" * 3000,
        ],
    )
    def test_bad_queries_are_clear_errors(self, store: Engine, query: str) -> None:
        with pytest.raises(ServiceError) as exc:
            store.query("shop", "access", query, *WIDE)
        assert exc.value.code is ErrorCode.INVALID_QUERY

    def test_many_words_skip_the_token_filter_but_still_match(self, store: Engine) -> None:
        words = " or ".join(f"w{n}" for n in range(500))
        assert self.msgs(store, f"{words} or plain") == ["plain"]


class TestResults:
    def test_paging_order_and_time_range(self, engine: Engine) -> None:
        page = engine.query("shop", "access", "*", *WIDE, line=2, offset=1)
        assert [log.time_ns // NANOS_PER_SECOND for log in page.logs] == [T0 + 1, T0 + 2]
        assert page.matched == 5
        newest = engine.query("shop", "access", "*", *WIDE, line=1, reverse=True)
        assert newest.logs[0].time_ns // NANOS_PER_SECOND == T0 + 4
        window = engine.query(
            "shop", "access", "*", T0 * NANOS_PER_SECOND, (T0 + 2) * NANOS_PER_SECOND
        )  # to is exclusive
        assert window.matched == 2
        assert engine.query("shop", "access", "*", *WIDE, topic="other").matched == 0

    def test_sql_over_the_search(self, engine: Engine) -> None:
        result = engine.query(
            "shop",
            "access",
            "path: /api* | select status, count(*) as c, avg(latency) as l "
            "group by status order by c desc, status",
            *WIDE,
        )
        assert result.has_sql and result.keys == ["status", "c", "l"]
        assert result.rows == [("500", 2, 275.0), ("200", 1, 12.0), ("404", 1, 95.0)]

    def test_sql_functions(self, engine: Engine) -> None:
        result = engine.query(
            "shop",
            "access",
            "* | select count_if(status = '500') as errors, approx_distinct(method) as methods,"
            " max(split_part(path, '/', 3)) as version,"
            " max(regexp_extract(msg, 'for (\\w+)', 1)) as who,"
            " min(date_format(from_unixtime(__time__), '%Y-%m-%d %H:%i')) as first,"
            " max(url_extract_host('https://shop.example:8443' || path)) as host from log",
            *WIDE,
        )
        assert result.rows == [(2, 3, "v2", "errors", "2027-01-15 08:00", "shop.example")]

    def test_unsupported_function_is_named(self, engine: Engine) -> None:
        with pytest.raises(ServiceError) as exc:
            engine.query("shop", "access", "* | select no_such_fn(path)", *WIDE)
        assert exc.value.code is ErrorCode.INVALID_QUERY
        assert "no_such_fn" in exc.value.message

    @pytest.mark.parametrize(
        "sql",
        [
            "delete from log",
            "select * from read_csv('/etc/passwd')",
            "select read_text('/etc/passwd')",
            "attach '/tmp/x.db'",
            "select * from log where status = ?",
        ],
    )
    def test_sql_can_only_read_logs(self, engine: Engine, sql: str) -> None:
        with pytest.raises(ServiceError) as exc:
            engine.query("shop", "access", f"* | {sql}", *WIDE)
        assert exc.value.code is ErrorCode.INVALID_QUERY

    def test_sql_names_a_field_by_its_alias(self, engine: Engine) -> None:
        """As in SLS, an alias in the index configuration is another name for the
        field in SQL, with the field's type."""
        engine.update_index(
            "shop",
            "access",
            {
                "line": {},
                "keys": {
                    "latency": {"type": "long", "alias": "ms"},
                    "status": {"alias": "status"},  # its own name: allowed, changes nothing
                    "request": {"type": "json", "json_keys": {"user": {"alias": "who"}}},
                },
            },
        )
        result = engine.query(
            "shop",
            "access",
            "* | select max(ms) as top, max(latency) as same, count(who) as n",
            *WIDE,
        )
        assert result.rows == [(300, 300, 0)]  # typed: 300 > 95 as numbers, not as text

    @pytest.mark.parametrize(
        "keys",
        [
            {"a": {"alias": "b"}, "b": {}},  # an alias that is another key's name
            {"a": {"alias": "x"}, "b": {"alias": "x"}},  # one alias for two fields
            {"j": {"type": "json", "json_keys": {"u": {"alias": "a"}}}, "a": {}},
        ],
    )
    def test_an_ambiguous_alias_is_refused(self, engine: Engine, keys: dict[str, object]) -> None:
        with pytest.raises(ServiceError) as exc:
            engine.update_index("shop", "access", {"line": {}, "keys": keys})
        assert exc.value.code is ErrorCode.INVALID_PARAMETER
        assert "names two fields" in exc.value.message

    def test_an_analysis_without_limit_answers_100_rows_as_sls(self, tmp_path: Path) -> None:
        eng = Engine(EngineConfig(ingest_workers=0, data_dir=tmp_path / "e"))
        try:
            eng.create_project("shop")
            eng.create_logstore("shop", "access", shard_count=1)
            eng.create_index("shop", "access", {"line": {}})
            many = [{"n": str(i)} for i in range(150)]
            eng.put("shop", "access", prepared(*many, time=T0)).result()
            _wait_searchable(eng, 150)
            every = "* | select n from log order by cast(n as int)"
            assert len(eng.query("shop", "access", every, *WIDE).rows) == 100
            assert len(eng.query("shop", "access", every + " limit 120", *WIDE).rows) == 120
            grouped = "* | select n, count(*) from log group by n union all select 'x', 1"
            assert len(eng.query("shop", "access", grouped, *WIDE).rows) == 100
        finally:
            eng.close()

    def test_an_answer_too_large_is_refused_not_held(self, tmp_path: Path) -> None:
        """``select * from log`` over millions of logs once took the server's memory
        with it; now the answer is read in chunks and refused past its bounds."""
        limits = QueryLimits(max_rows=50, max_answer_bytes=1 << 20)
        eng = Engine(EngineConfig(ingest_workers=0, data_dir=tmp_path / "e", query_limits=limits))
        try:
            eng.create_project("shop")
            eng.create_logstore("shop", "access", shard_count=1)
            eng.create_index("shop", "access", {"line": {}})
            eng.put("shop", "access", prepared(*({"n": str(i)} for i in range(80)), time=T0))
            _wait_searchable(eng, 80)
            assert len(eng.query("shop", "access", "* | select n limit 50", *WIDE).rows) == 50
            for sql in ("select n limit 51", "select repeat(n, 40000) limit 20"):
                with pytest.raises(ServiceError) as exc:
                    eng.query("shop", "access", f"* | {sql}", *WIDE)
                assert exc.value.code is ErrorCode.QUERY_TOO_LARGE
                assert "aggregate further or lower the LIMIT" in exc.value.message
        finally:
            eng.close()

    def test_a_page_of_huge_logs_is_refused_not_held(self, tmp_path: Path) -> None:
        limits = QueryLimits(max_answer_bytes=1 << 20)
        eng = Engine(EngineConfig(ingest_workers=0, data_dir=tmp_path / "e", query_limits=limits))
        try:
            eng.create_project("shop")
            eng.create_logstore("shop", "access", shard_count=1)
            eng.create_index("shop", "access", {"line": {}})
            huge = [{"n": str(i), "body": "x" * 400_000} for i in range(5)]
            eng.put("shop", "access", prepared(*huge, time=T0)).result()
            _wait_searchable(eng, 5)
            assert len(eng.query("shop", "access", "*", *WIDE, line=2).logs) == 2
            with pytest.raises(ServiceError) as exc:
                eng.query("shop", "access", "*", *WIDE, line=5)
            assert exc.value.code is ErrorCode.QUERY_TOO_LARGE
            assert "ask for fewer logs" in exc.value.message
            first = eng.query("shop", "access", "*", *WIDE, line=1).logs[0]
            with pytest.raises(ServiceError):
                eng.context("shop", "access", 0, first.position, 0, back=0, forward=4)
            _, after = eng.context("shop", "access", 0, first.position, 0, back=0, forward=1)
            assert len(after) == 1
        finally:
            eng.close()

    def test_a_cancelled_query_stops_though_no_statement_ran_when_it_was_cancelled(
        self, engine: Engine
    ) -> None:
        """DuckDB's interrupt does nothing between statements: a cancel that comes
        before the query starts (its client left while it waited) must still stop it."""
        cancel = Cancellation()
        cancel.cancel()
        slow = "* | select count(*) from " + ", ".join(f"log t{i}" for i in range(14))
        started = time.monotonic()
        with pytest.raises(ServiceError) as exc:
            engine.query("shop", "access", slow, *WIDE, cancel=cancel)
        assert "cancelled" in exc.value.message
        assert time.monotonic() - started < 5  # 5^14 rows, cross-joined: not run to the end

    def test_histogram(self, engine: Engine) -> None:
        buckets, complete = engine.histogram(
            "shop",
            "access",
            "status: 500",
            T0 * NANOS_PER_SECOND,
            (T0 + 10) * NANOS_PER_SECOND,
            interval=2,
        )
        assert complete
        assert [(b.start - T0, b.end - T0, b.count) for b in buckets] == [
            (0, 2, 1),
            (2, 4, 0),
            (4, 6, 1),
            (6, 8, 0),
            (8, 10, 0),
        ]

    def test_context(self, engine: Engine) -> None:
        hit = engine.query("shop", "access", '"connection refused"', *WIDE).logs[0]
        before, after = engine.context(
            "shop", "access", hit.shard, hit.position, hit.index, back=5, forward=5
        )
        shard_logs = [
            log for log in engine.query("shop", "access", "*", *WIDE).logs if log.shard == hit.shard
        ]
        order = [(log.position, log.index) for log in shard_logs]
        at = order.index((hit.position, hit.index))
        assert [(r.position, r.index) for r in before] == order[:at]
        assert [(r.position, r.index) for r in after] == order[at + 1 :]


class TestIndexLifecycle:
    def test_config_errors(self, engine: Engine) -> None:
        with pytest.raises(ServiceError) as exc:
            engine.create_index("shop", "access", {"line": {"token": [" "]}})
        assert exc.value.code is ErrorCode.INDEX_ALREADY_EXIST
        for bad in ({"keys": {"n": {"type": "decimal"}}}, {"line": {"token": "x"}}, [1]):
            with pytest.raises(ServiceError) as exc:
                engine.update_index("shop", "access", bad)
            assert exc.value.code is ErrorCode.INVALID_PARAMETER
        engine.delete_index("shop", "access")
        with pytest.raises(ServiceError) as exc:
            engine.query("shop", "access", "*", *WIDE)
        assert exc.value.code is ErrorCode.INDEX_CONFIG_NOT_EXIST

    def test_index_created_later_takes_in_existing_data(self, engine: Engine) -> None:
        engine.delete_index("shop", "access")
        engine.put("shop", "access", prepared({"msg": "late"}, time=T0 + 9)).result()
        engine.create_index("shop", "access", {"line": {"token": [" "]}})
        assert len(matched(engine, "*")) == 6

    def test_new_shards_after_a_split_are_indexed(self, engine: Engine) -> None:
        engine.split_shard("shop", "access", 0, "4" + "0" * 31)
        engine.put(
            "shop", "access", prepared({"msg": "child"}, time=T0 + 9), hash_key="1" * 32
        ).result()
        assert matched(engine, "child") == ["child"]

    def test_binary_values_are_indexed_not_fatal(self, engine: Engine) -> None:
        from logharbor.engine.ingest import Limits, prepare_protobuf
        from logharbor.protocol.codec import Compression
        from logharbor.protocol.schema import RawLogGroup

        group = RawLogGroup()
        log = group.Logs.add(Time=T0 + 9)
        log.Contents.add(Key="bin", Value=b"\xff\x00\xfe")
        log.Contents.add(Key="msg", Value=b"after binary")
        raw = group.SerializeToString()
        engine.put(
            "shop", "access", prepare_protobuf(raw, Compression.NONE, None, Limits())
        ).result()
        assert matched(engine, '"after binary"') == ["after binary"]


def test_deleting_an_index_while_it_is_queried(engine: Engine, tmp_path: Path) -> None:
    # queries racing a delete either answer or say the index is gone; the delete
    # itself always succeeds and removes the files
    outcomes: list[str] = []
    stop = threading.Event()

    def query() -> None:
        while not stop.is_set():
            try:
                engine.query("shop", "access", "error or status: 500 | select count(*)", *WIDE)
                outcomes.append("answered")
            except ServiceError as exc:
                outcomes.append(exc.code.value)

    threads = [threading.Thread(target=query) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        while outcomes.count("answered") < 10:
            time.sleep(0.01)
        engine.delete_index("shop", "access")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert set(outcomes) <= {"answered", ErrorCode.INDEX_CONFIG_NOT_EXIST.value}
    assert not list((tmp_path / "e").rglob("*.duckdb*"))
    engine.create_index("shop", "access", {"line": {"token": [" "]}})  # and it comes back
    assert engine.query("shop", "access", "*", *WIDE).matched == len(ACCESS_LOGS)


def test_retention_drops_index_rows(tmp_path: Path) -> None:
    now = [T0 * NANOS_PER_SECOND]
    engine = Engine(
        EngineConfig(
            ingest_workers=0,
            data_dir=tmp_path / "e",
            clock=lambda: now[0],
            segment_bytes=1,
            retention_interval=3600,
        )
    )
    try:
        engine.create_project("shop")
        engine.create_logstore("shop", "access", shard_count=1, ttl=1)
        engine.create_index("shop", "access", {"line": {"token": [" "]}})
        engine.put("shop", "access", prepared({"msg": "old"}, time=T0)).result()
        assert engine.query("shop", "access", "*", *WIDE).matched == 1
        now[0] += 2 * NANOS_PER_DAY
        engine.put("shop", "access", prepared({"msg": "new"}, time=T0 + 1)).result()
        engine.run_retention()
        result = engine.query("shop", "access", "*", *WIDE)
        assert [dict(log.contents)["msg"] for log in result.logs] == ["new"]
    finally:
        engine.close()
