"""Search, SQL, histograms and context over HTTP, and the query guards."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from harness import ServerProcess

API = "/api/v1"


def call(
    server: ServerProcess,
    method: str,
    path: str,
    body: object = None,
    params: tuple[tuple[str, str], ...] = (),
) -> httpx.Response:
    content = b"" if body is None else json.dumps(body).encode()
    return server.request(method, path, content=content, params=params)


def ok(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["errorCode"] == code
    return str(response.json()["errorMessage"])


def seed(server: ServerProcess, project: str, count: int = 30) -> tuple[str, int]:
    """The SLS acceptance seed data: 30 logs, a third with status 500."""
    ok(call(server, "POST", f"{API}/projects", {"name": project}))
    ok(call(server, "POST", f"{API}/projects/{project}/logstores", {"name": "ls", "shardCount": 2}))
    path = f"{API}/projects/{project}/logstores/ls"
    ok(
        call(
            server,
            "POST",
            path + "/index",
            {
                "line": {"token": [" "]},
                "keys": {
                    "status": {"type": "text", "token": [" "], "doc_value": True},
                    "uri": {"type": "text", "token": [" ", "/"], "doc_value": True},
                },
            },
        )
    )
    now = int(time.time())
    logs = [
        {
            "time": now - 10 + (i % 10),
            "contents": {
                "status": "500" if i % 3 == 0 else "200",
                "uri": f"/api/v{i % 2}",
                "msg": f"req {i} done",
            },
        }
        for i in range(count)
    ]
    response = server.request(
        "POST",
        path + "/logs",
        content=json.dumps({"topic": "web", "source": "h1", "logs": logs}).encode(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    return path, now


def test_search_sql_histogram_and_context(
    server: ServerProcess, unique_name: Callable[[str], str]
) -> None:
    path, now = seed(server, unique_name("search"))
    window = {"from": now - 60, "to": now + 60}
    # searchable at once: a query waits for the index to take in acknowledged writes
    found = ok(call(server, "POST", path + "/query", {**window, "query": "status: 500"}))
    assert found["meta"]["complete"] is True  # type: ignore[index]
    assert found["meta"]["matched"] == 10  # type: ignore[index]
    assert all(dict(log["contents"])["status"] == "500" for log in found["logs"])  # type: ignore[union-attr]
    assert (
        ok(call(server, "POST", path + "/query", {**window, "query": '"req 7 done"'}))["meta"][
            "matched"
        ]
        == 1
    )  # type: ignore[index]
    page = ok(call(server, "POST", path + "/query", {**window, "line": 5, "reverse": True}))
    times = [log["timeNs"] for log in page["logs"]]  # type: ignore[union-attr]
    assert len(times) == 5 and times == sorted(times, reverse=True)

    sql = ok(
        call(
            server,
            "POST",
            path + "/query",
            {
                **window,
                "query": "status: 200 | select uri, count(*) as n group by uri order by uri",
            },
        )
    )
    assert sql["meta"]["keys"] == ["uri", "n"]  # type: ignore[index]
    assert sql["rows"] == [["/api/v0", 10], ["/api/v1", 10]]

    histogram = ok(call(server, "POST", path + "/histogram", {**window, "query": "status: 500"}))
    assert histogram["total"] == 10 and histogram["complete"] is True

    hit = found["logs"][0]  # type: ignore[index]
    context = ok(
        server.request(
            "GET",
            path + "/context",
            params=[
                ("shard", str(hit["shardId"])),
                ("cursor", hit["cursor"]),
                ("index", str(hit["index"])),
                ("back", "3"),
                ("forward", "3"),
            ],
        )
    )
    assert len(context["before"]) + len(context["after"]) >= 3  # type: ignore[arg-type]

    config = ok(call(server, "GET", path + "/index"))
    assert set(config["config"]["keys"]) == {"status", "uri"}  # type: ignore[index]
    assert all(s["behindLogGroups"] == 0 for s in config["lag"])  # type: ignore[union-attr]


def test_query_errors(server: ServerProcess, unique_name: Callable[[str], str]) -> None:
    path, now = seed(server, unique_name("qerr"))
    window = {"from": now - 60, "to": now + 60}
    message = error(
        call(server, "POST", path + "/query", {**window, "query": "status: (500"}),
        400,
        "InvalidQuery",
    )
    assert "position" in message
    assert "nope" in error(
        call(server, "POST", path + "/query", {**window, "query": "* | select nope(uri)"}),
        400,
        "InvalidQuery",
    )
    error(call(server, "POST", path + "/query", {"query": "*"}), 400, "ParameterInvalid")
    # found by fuzzing (each was a 500): SQL that does not even tokenize, times out of
    # range or not numbers at all, NaN in a body
    for sql in ("* | select '", '* | select "', "* | select /*"):
        error(call(server, "POST", path + "/query", {**window, "query": sql}), 400, "InvalidQuery")
    for body in (
        b'{"query": "*", "from": 0, "to": 1e400}',
        b'{"query": "*", "from": 0, "to": NaN}',
        b'{"query": "*", "from": 1e308, "to": 100}',
        b'{"query": "*", "fromNs": 0, "toNs": 100000000000000000000}',
    ):
        for route in ("/query", "/histogram"):
            answer = server.request("POST", path + route, content=body)
            assert answer.status_code == 400, (route, body, answer.text)
    # null means "not given": the default page
    nulls = {**window, "query": "*", "line": None, "offset": None}
    assert ok(call(server, "POST", path + "/query", nulls))["meta"]["matched"] == 30  # type: ignore[index]
    error(call(server, "POST", path + "/query", {"from": now, "to": now}), 400, "ParameterInvalid")
    error(
        call(server, "POST", path + "/index", {"line": {"token": [" "]}}), 400, "IndexAlreadyExist"
    )
    ok(call(server, "DELETE", path + "/index"))
    error(call(server, "GET", path + "/index"), 404, "IndexConfigNotExist")
    error(call(server, "POST", path + "/query", window), 404, "IndexConfigNotExist")


def test_guards(server_factory: Callable[..., ServerProcess]) -> None:
    guarded = server_factory(
        env={
            "LOGHARBOR_QUERY_TIMEOUT": "0.5",
            "LOGHARBOR_QUERY_MAX_RANGE_DAYS": "1",
            "LOGHARBOR_QUERY_MAX_CONCURRENCY": "1",
        }
    )
    path, now = seed(guarded, "guards", count=400)
    window = {"from": now - 60, "to": now + 60}
    error(
        call(guarded, "POST", path + "/query", {"from": now - 3 * 86400, "to": now}),
        400,
        "QueryExceedLimit",
    )
    slow = {**window, "query": "* | select count(*) from log a, log b, log c, log d"}
    results: list[httpx.Response] = []
    first = threading.Thread(
        target=lambda: results.append(call(guarded, "POST", path + "/query", slow))
    )
    first.start()
    time.sleep(0.1)
    second = call(guarded, "POST", path + "/query", window)
    first.join()
    error(results[0], 408, "QueryTimeout")
    # the second query waited for the slot (or got it after the first was stopped)
    assert second.status_code in (200, 429), second.text
    assert ok(call(guarded, "POST", path + "/query", window))["meta"]["matched"] == 400  # type: ignore[index]
    assert httpx.get(guarded.endpoint + "/healthz").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b'{"line": {"token": 5}}',
        b'{"line": {"token": [" "]}, "extra": NaN}',  # was stored, then every GET was a 500
        b'{"line": {"token": [" "]}, "extra": Infinity}',
    ],
)
def test_bad_index_bodies(
    server: ServerProcess, unique_name: Callable[[str], str], body: bytes
) -> None:
    project = unique_name("idx")
    ok(call(server, "POST", f"{API}/projects", {"name": project}))
    ok(call(server, "POST", f"{API}/projects/{project}/logstores", {"name": "ls"}))
    response = server.request("POST", f"{API}/projects/{project}/logstores/ls/index", content=body)
    assert response.status_code == 400, response.text
    error(
        call(server, "GET", f"{API}/projects/{project}/logstores/ls/index"),
        404,
        "IndexConfigNotExist",
    )


def test_index_tokens_are_escapes_or_themselves(
    server: ServerProcess, unique_name: Callable[[str], str]
) -> None:
    project = unique_name("tok")
    ok(call(server, "POST", f"{API}/projects", {"name": project}))
    ok(call(server, "POST", f"{API}/projects/{project}/logstores", {"name": "ls"}))
    path = f"{API}/projects/{project}/logstores/ls/index"
    # a lone backslash used to be a 500; "，" used to turn into mojibake
    ok(call(server, "POST", path, {"line": {"token": ["\\", "\\u3001", "，", " "]}}))
    now = int(time.time())
    logs = {"logs": [{"time": now, "contents": {"m": "alpha，beta\\gamma、delta"}}]}
    written = server.request(
        "POST",
        f"{API}/projects/{project}/logstores/ls/logs",
        content=json.dumps(logs).encode(),
        headers={"content-type": "application/json"},
    )
    assert written.status_code == 200, written.text
    window = {"from": now - 60, "to": now + 60}
    for word in ("alpha", "beta", "gamma", "delta"):
        found = ok(
            call(server, "POST", path.removesuffix("/index") + "/query", {**window, "query": word})
        )
        assert found["meta"]["matched"] == 1, word  # type: ignore[index]


def test_index_lag_is_a_metric(server: ServerProcess, unique_name: Callable[[str], str]) -> None:
    project = unique_name("lag")
    path, now = seed(server, project)
    ok(call(server, "POST", path + "/query", {"from": now - 60, "to": now + 60, "query": "*"}))
    # the query waited for the index: nothing is behind any more
    sample = f'logharbor_index_lag_log_groups{{logstore="ls",project="{project}"}} 0.0'
    assert sample in httpx.get(server.endpoint + "/metrics").text.splitlines()
    ok(call(server, "DELETE", path + "/index"))
    lags = [
        line
        for line in httpx.get(server.endpoint + "/metrics").text.splitlines()
        if line.startswith("logharbor_index_lag_log_groups{")
    ]
    assert not any(f'project="{project}"' in line for line in lags)


def test_sql_cannot_build_huge_values(
    server: ServerProcess, unique_name: Callable[[str], str]
) -> None:
    """A list of a billion numbers or a string repeated a billion times is built
    outside DuckDB's memory limit and past the timeout (one such call took 14 GB):
    such calls are refused per row before they run; small ones work."""
    path, now = seed(server, unique_name("huge"))
    window = {"from": now - 60, "to": now + 60}
    for sql in (
        "* | select sequence(1, 1000000000) limit 1",
        "* | select generate_series(1, 1000000000) limit 1",
        "* | select range(1000000000) limit 1",
        "* | select repeat('x', 1000000000) limit 1",
        "* | select lpad('x', 1000000000, 'y') limit 1",
        "* | select list_resize([1], 1000000000) limit 1",
        "* | select cardinality(sequence(1, sequence(1, 3)[3] * 100000000)) limit 1",
        "* | select sequence(timestamp '2000-01-01', timestamp '2024-01-01', interval 1 minute)",
        "* | select cardinality(sequence(1, sequence(1, 3)[3] * 100000000)) limit 1",
    ):
        message = error(
            call(server, "POST", path + "/query", {**window, "query": sql}), 400, "InvalidQuery"
        )
        assert "would build more than" in message, sql
    # a random size could pass the check with one value and build with another
    for random_size in (
        "* | select sequence(1, cast(random() * 1e9 as bigint)) limit 1",
        "* | select sequence(1, case when hash(uuidv4()) % 2 = 0 then 1 else 1e9 end) limit 1",
        "* | select repeat('x', cast(nextval('s') as bigint)) limit 1",
    ):
        message = error(
            call(server, "POST", path + "/query", {**window, "query": random_size}),
            400,
            "InvalidQuery",
        )
        assert "may not be random" in message, random_size
    # each guard repeats its argument: nesting is bounded (9 levels was a 500)
    nested = "repeat(" * 9 + "'x', 1" + "), 1" * 8 + ")"
    message = error(
        call(server, "POST", path + "/query", {**window, "query": f"* | select {nested}"}),
        400,
        "InvalidQuery",
    )
    assert "nest" in message
    # the size counts both ends: sequence(1, 20000) has 20,000 values and is the most
    edge = "* | select cardinality(sequence(1, 20000)) as n limit 1"
    assert ok(call(server, "POST", path + "/query", {**window, "query": edge}))["rows"] == [[20000]]
    over = "* | select cardinality(sequence(0, 20000)) as n limit 1"
    error(call(server, "POST", path + "/query", {**window, "query": over}), 400, "InvalidQuery")
    week = (
        "* | select cardinality(sequence(timestamp '2024-01-01', timestamp '2024-01-08', "
        "interval 1 minute)) as n limit 1"
    )
    assert ok(call(server, "POST", path + "/query", {**window, "query": week}))["rows"] == [[10081]]
    small = ok(
        call(
            server,
            "POST",
            path + "/query",
            {
                **window,
                "query": "* | select cardinality(sequence(1, 10)) as n, repeat('ab', 3) as r, "
                "cardinality(sequence(date '2024-01-01', date '2024-01-31', interval 1 day)) "
                "as days limit 1",
            },
        )
    )
    assert small["rows"] == [[10, "ababab", 31]], small
    # a guarded call keeps its column name
    named = ok(
        call(
            server,
            "POST",
            path + "/query",
            {**window, "query": "* | select repeat('a', 2) limit 1"},
        )
    )
    assert named["meta"]["keys"] == ["repeat('a', 2)"], named  # type: ignore[index]


def test_format_widths_cannot_build_huge_strings(
    server: ServerProcess, unique_name: Callable[[str], str]
) -> None:
    """A width in a printf or format string builds a string that long: widths must be
    constants within the string guard; small ones and literal digits work."""
    path, now = seed(server, unique_name("fmt"))
    window = {"from": now - 60, "to": now + 60}

    def query(sql: str) -> httpx.Response:
        return call(server, "POST", path + "/query", {**window, "query": f"* | {sql} limit 1"})

    for sql in (
        "select printf('%0200000d', 1)",
        "select printf('%.200000f', 1.5)",
        "select printf('%*d', 1000000000, 1)",
        "select printf('%1$200000d', 5)",  # an argument's position before the width
        "select printf('%*2$d', 1, 1000000000)",
        "select sprintf('%s and %1000000s', 'a', 'b')",
        "select format('{:>200000}', 'x')",
        "select format('{:>{}}', 'x', 1000000000)",
        "select printf(status, 1)",  # a format from the logs: its widths are unknown
    ):
        message = error(query(sql), 400, "InvalidQuery")
        assert "format" in message, sql
    fine = ok(
        query(
            "select printf('order 1234567: %05d|%%|%-4s|', 42, 'ab') as p, "
            "format('{:0>6} {{}} {}', 7, 'x') as f"
        )
    )
    assert fine["rows"] == [["order 1234567: 00042|%|ab  |", "000007 {} x"]], fine


def test_sql_results_may_hold_nan_and_infinities(
    server: ServerProcess, unique_name: Callable[[str], str]
) -> None:
    """JSON has no NaN or infinity: they come as strings (they were 500s)."""
    path, now = seed(server, unique_name("nan"))
    sql = "* | select cast('nan' as double), power(10, 400), -power(10, 400), 1.5 limit 1"
    rows = ok(
        call(server, "POST", path + "/query", {"from": now - 60, "to": now + 60, "query": sql})
    )
    assert rows["rows"] == [["NaN", "Infinity", "-Infinity", 1.5]]


def test_a_query_whose_client_went_away_gives_back_its_slot(
    server_factory: Callable[..., ServerProcess], unique_name: Callable[[str], str]
) -> None:
    """With one query slot, a query whose client gave up (a timeout, a closed tab)
    used to hold the slot until the query timeout: the next query waited its 5 s
    and got 429. The server now sees the client leave and stops the query."""
    server = server_factory(env={"LOGHARBOR_QUERY_MAX_CONCURRENCY": "1"})
    path, now = seed(server, unique_name("gone"), count=200)
    window = {"from": now - 60, "to": now + 60}
    slow = "* | select count(*) from log a, log b, log c, log d, log e"  # 200^5 rows

    def give_up_on(query: str, after: float) -> None:
        with pytest.raises(httpx.ReadTimeout):
            server.request(
                "POST",
                path + "/query",
                content=json.dumps({**window, "query": query}).encode(),
                timeout=after,
            )

    # a slow query, and one queued behind it for the slot: both abandoned, the second
    # while it still waited (a cancel then has no statement to stop yet)
    first = threading.Thread(target=give_up_on, args=(slow, 1.5))
    first.start()
    time.sleep(0.5)
    give_up_on(slow, 0.5)
    first.join()
    started = time.monotonic()
    fast = ok(call(server, "POST", path + "/query", {**window, "query": "* | select count(*)"}))
    assert fast["rows"] == [[200]]
    assert time.monotonic() - started < 4  # the slot was free well before max_wait (5 s)
