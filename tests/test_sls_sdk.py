# ruff: noqa: F811  (pytest fixtures imported from sls_support)
"""The real aliyun-log-python-sdk against LogHarbor in HTTP_PROXY mode: acceptance
scenarios a01-a15 of ../shared/specs/sls.md §10."""

from __future__ import annotations

import time
from typing import Any

import pytest

pytest.importorskip("aliyun.log")
pytest.importorskip("zstd")

from aliyun.log import (
    GetHistogramsRequest,
    GetLogsRequest,
    IndexConfig,
    IndexKeyConfig,
    IndexLineConfig,
    ListLogstoresRequest,
    ListTopicsRequest,
    LogClient,
    LogItem,
    PutLogsRequest,
)
from aliyun.log.auth import AUTH_VERSION_4
from aliyun.log.proto import LogGroupRaw

from sls_support import (  # noqa: F401
    AK,
    HASH4,
    SK,
    endpoint_of,
    fails,
    fresh_project,
    new_name,
    seed_query_data,
    sls_client,
    sls_server,
)

Z32 = "0" * 32


def test_a01_list_projects(sls_client: Any) -> None:
    res = sls_client.list_project()
    assert isinstance(res.get_projects(), list)
    assert res.get_total() >= res.get_count()


def test_a02_project_crud(sls_client: Any) -> None:
    p = new_name()
    sls_client.create_project(p, "d1")
    got = sls_client.get_project(p)
    assert (got.get_projectname(), got.get_description(), got.get_status()) == (p, "d1", "Normal")
    sls_client.update_project(p, "d2")
    assert sls_client.get_project(p).get_description() == "d2"
    names = [x["projectName"] for x in sls_client.list_project(size=-1).get_projects()]
    assert p in names
    fails("ProjectAlreadyExist", 400, lambda: sls_client.create_project(p, "dup"))
    sls_client.delete_project(p)
    fails("ProjectNotExist", 404, lambda: sls_client.get_project(p))


def test_a03_logstore_crud(sls_client: Any) -> None:
    p = fresh_project(sls_client)
    got = sls_client.get_logstore(p, "ls")
    assert (got.get_ttl(), got.get_shard_count()) == (7, 2)
    sls_client.update_logstore(p, "ls", ttl=14)
    assert sls_client.get_logstore(p, "ls").get_ttl() == 14
    listed = sls_client.list_logstore(p).get_logstores()
    assert listed == ["ls"] == sls_client.list_logstores(ListLogstoresRequest(p)).get_logstores()
    fails("LogStoreAlreadyExist", 400, lambda: sls_client.create_logstore(p, "ls"))
    sls_client.delete_logstore(p, "ls")
    fails("LogStoreNotExist", 404, lambda: sls_client.get_logstore(p, "ls"))


def test_a04_shard_ranges(sls_client: Any) -> None:
    p = fresh_project(sls_client)
    shards = [
        (s["shardID"], s["status"], s["inclusiveBeginKey"], s["exclusiveEndKey"])
        for s in sls_client.list_shards(p, "ls").get_shards_info()
    ]
    assert shards == [
        (0, "readwrite", Z32, "8" + "0" * 31),
        (1, "readwrite", "8" + "0" * 31, "f" * 32),
    ]


def test_a05_put_lz4_and_pull(sls_client: Any) -> None:
    p = fresh_project(sls_client, 1)
    now = int(time.time())
    items = [
        LogItem(timestamp=now, time_nano_part=123, contents=[("k", f"v{i}"), ("msg", f"héllo {i}")])
        for i in range(10)
    ]
    sls_client.put_logs(PutLogsRequest(p, "ls", "topicA", "src-1", items, logtags=[("tk", "tv")]))
    begin = sls_client.get_begin_cursor(p, "ls", 0).get_cursor()
    end = sls_client.get_end_cursor(p, "ls", 0).get_cursor()
    res = sls_client.pull_logs(p, "ls", 0, begin, count=100)
    assert (res.get_loggroup_count(), res.get_log_count()) == (1, 10)
    assert res.get_next_cursor() == end
    group = res.get_loggroup_list().LogGroups[0]
    assert (group.Topic, group.Source) == ("topicA", "src-1")
    assert (group.LogTags[0].Key, group.LogTags[0].Value) == ("tk", "tv")
    log = group.Logs[3]
    assert (log.Time, log.Time_ns) == (now, 123)
    assert {c.Key: c.Value for c in log.Contents} == {"k": "v3", "msg": "héllo 3"}
    empty = sls_client.pull_logs(p, "ls", 0, end)
    assert empty.get_loggroup_count() == 0
    assert empty.get_next_cursor() == end


def test_a05b_pull_is_bounded_by_decoded_bytes(sls_client: Any) -> None:
    """PullLogs decompresses what it answers: it stops before the log group that
    would pass 16 MiB decoded (12 log groups of 205 KB stored, 50 MiB each once
    decompressed, took the server 1.2 GB); count is a maximum, the cursor goes on."""
    p = fresh_project(sls_client, 1)
    now = int(time.time())
    for n in range(4):
        blob = [LogItem(timestamp=now, contents=[("blob", str(n) * (6 << 20))])]  # 6 MiB
        sls_client.put_logs(PutLogsRequest(p, "ls", "", "", blob))
    cursor = sls_client.get_begin_cursor(p, "ls", 0).get_cursor()
    counts = []
    while True:
        res = sls_client.pull_logs(p, "ls", 0, cursor, count=1000)
        if not res.get_loggroup_count():
            break
        counts.append(res.get_loggroup_count())
        cursor = res.get_next_cursor()
    assert counts == [2, 2]


def test_a06_compressions_and_binary(sls_client: Any) -> None:
    p = fresh_project(sls_client, 1)
    items = [LogItem(contents=[("n", str(i))]) for i in range(5)]
    sls_client.put_logs(PutLogsRequest(p, "ls", "", "s", items, compress_type="zstd"))
    sls_client.put_logs(PutLogsRequest(p, "ls", "", "s", items, compress=False))
    group = LogGroupRaw()
    log = group.Logs.add()
    log.Time = int(time.time())
    content = log.Contents.add()
    content.Key, content.Value = "bin", b"\xff\x00\xfe"
    sls_client.put_log_raw(p, "ls", group)
    begin = sls_client.get_begin_cursor(p, "ls", 0).get_cursor()
    for options in ({"accept_compress_type": "zstd"}, {"compress": False}, {}):
        res = sls_client.pull_logs(p, "ls", 0, begin, **options)
        assert (res.get_loggroup_count(), res.get_log_count()) == (3, 11), options


def test_a07_hash_routing(sls_client: Any) -> None:
    p = fresh_project(sls_client, 4)
    for i in range(4):
        items = [LogItem(contents=[("shard", str(i))]) for _ in range(i + 1)]
        sls_client.put_logs(PutLogsRequest(p, "ls", "", "", items, hashKey=HASH4[i]))
    for i in range(4):
        begin = sls_client.get_begin_cursor(p, "ls", i).get_cursor()
        logs = sls_client.pull_logs(p, "ls", i, begin).get_flatten_logs_json()
        assert [log["shard"] for log in logs] == [str(i)] * (i + 1)


def test_a08_cursors(sls_client: Any) -> None:
    p = fresh_project(sls_client, 1)
    t1 = int(time.time())
    sls_client.put_logs(PutLogsRequest(p, "ls", "", "", [LogItem(contents=[("a", "1")])]))
    time.sleep(1.1)
    t2 = int(time.time())
    sls_client.put_logs(PutLogsRequest(p, "ls", "", "", [LogItem(contents=[("a", "2")])]))
    begin = sls_client.get_begin_cursor(p, "ls", 0).get_cursor()
    end = sls_client.get_end_cursor(p, "ls", 0).get_cursor()
    assert sls_client.get_cursor(p, "ls", 0, t1 - 100).get_cursor() == begin
    mid = sls_client.get_cursor(p, "ls", 0, t2).get_cursor()
    assert sls_client.pull_logs(p, "ls", 0, mid).get_flatten_logs_json()[0]["a"] == "2"
    assert sls_client.get_cursor(p, "ls", 0, t2 + 3600).get_cursor() == end
    assert abs(sls_client.get_cursor_time(p, "ls", 0, begin).get_cursor_time() - t1) <= 1
    assert sls_client.get_previous_cursor_time(p, "ls", 0, end).get_cursor_time() >= t1
    pulled = sls_client.pull_log(p, "ls", 0, "begin", "end", batch_size=1)
    assert sum(res.get_log_count() for res in pulled) == 2
    assert sls_client.pull_logs(p, "ls", 0, begin, end_cursor=mid).get_log_count() == 1
    fails("InvalidCursor", 400, lambda: sls_client.pull_logs(p, "ls", 0, "bm90LWEtY3Vyc29y"))


def test_a09_index_crud(sls_client: Any) -> None:
    p = fresh_project(sls_client, 1)
    fails("IndexConfigNotExist", 404, lambda: sls_client.get_index_config(p, "ls"))
    config = IndexConfig(
        line_config=IndexLineConfig([" ", ","]),
        key_config_list={"k": IndexKeyConfig([" "], doc_value=True)},
    )
    sls_client.create_index(p, "ls", config)
    got = sls_client.get_index_config(p, "ls").get_index_config()
    assert list(got.key_config_list) == ["k"]
    assert got.line_config.token_list == [" ", ","]
    fails("IndexAlreadyExist", 400, lambda: sls_client.create_index(p, "ls", config))
    config.key_config_list["n"] = IndexKeyConfig(index_type="long", doc_value=True)
    sls_client.update_index(p, "ls", config)
    got = sls_client.get_index_config(p, "ls").get_index_config()
    assert set(got.key_config_list) == {"k", "n"}
    sls_client.delete_index(p, "ls")
    fails("IndexConfigNotExist", 404, lambda: sls_client.get_index_config(p, "ls"))


@pytest.fixture(scope="module")
def query_project(sls_server: Any) -> tuple[str, int]:
    import os

    saved = {k: os.environ.get(k) for k in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")}
    try:
        for name in ("NO_PROXY", "no_proxy"):
            os.environ.pop(name, None)
        os.environ["HTTP_PROXY"] = os.environ["http_proxy"] = sls_server.endpoint
        client = LogClient(endpoint_of(sls_server), AK, SK)
        project, now = fresh_project(client), int(time.time())
        seed_query_data(client, project, now)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return project, now


def test_a10_search(sls_client: Any, query_project: tuple[str, int]) -> None:
    p, now = query_project
    res = sls_client.get_logs(GetLogsRequest(p, "ls", now - 60, now + 60, query="status: 500"))
    assert res.is_completed() and res.get_count() == 10
    assert all(log.get_contents()["status"] == "500" for log in res.get_logs())
    assert sls_client.get_log(p, "ls", now - 60, now + 60, query='"req 7 done"').get_count() == 1
    five = sls_client.get_log(p, "ls", now - 60, now + 60, query="*", size=5, offset=0)
    assert five.get_count() == 5
    times = [log.get_time() for log in sls_client.get_log(p, "ls", now - 60, now + 60).get_logs()]
    assert times == sorted(times)
    backwards = sls_client.get_log(p, "ls", now - 60, now + 60, query="*", reverse=True)
    times = [log.get_time() for log in backwards.get_logs()]
    assert times == sorted(times, reverse=True)
    assert sls_client.get_log(p, "ls", now - 60, now - 10, query="*").get_count() == 0
    assert sls_client.get_log(p, "ls", now - 60, now + 60, size=250).get_count() == 30


def test_a11_sql(sls_client: Any, query_project: tuple[str, int]) -> None:
    p, now = query_project
    res = sls_client.get_log(p, "ls", now - 60, now + 60, query="* | select count(*) as c")
    assert res.get_has_sql()
    assert [log.get_contents()["c"] for log in res.get_logs()] == ["30"]
    res = sls_client.get_log(
        p,
        "ls",
        now - 60,
        now + 60,
        query="status: 200 | select uri, count(*) as n group by uri order by uri",
    )
    rows = [(log.get_contents()["uri"], log.get_contents()["n"]) for log in res.get_logs()]
    assert rows == [("/api/v0", "10"), ("/api/v1", "10")]


def test_a12_histograms_and_topics(sls_client: Any, query_project: tuple[str, int]) -> None:
    p, now = query_project
    res = sls_client.get_histograms(
        GetHistogramsRequest(p, "ls", now - 60, now + 60, query="status: 500")
    )
    assert res.is_completed() and res.get_total_count() == 10
    assert sls_client.list_topics(ListTopicsRequest(p, "ls")).get_topics() == ["web"]


def test_a13_split_and_merge(sls_client: Any) -> None:
    p = fresh_project(sls_client, 1)
    split = sls_client.split_shard(p, "ls", 0, "8" + "0" * 31).get_shards_info()
    assert {(s["shardID"], s["status"]) for s in split} == {
        (0, "readonly"),
        (1, "readwrite"),
        (2, "readwrite"),
    }
    item = LogItem(contents=[("x", "1")])
    sls_client.put_logs(PutLogsRequest(p, "ls", "", "", [item], hashKey="9" + "0" * 31))
    begin = sls_client.get_begin_cursor(p, "ls", 2).get_cursor()
    assert sls_client.pull_logs(p, "ls", 2, begin).get_log_count() == 1
    merged = sls_client.merge_shard(p, "ls", 1).get_shards_info()
    assert {(s["shardID"], s["status"]) for s in merged} == {
        (1, "readonly"),
        (2, "readonly"),
        (3, "readwrite"),
    }


def test_a14_consumer_group_api(sls_client: Any) -> None:
    p = fresh_project(sls_client)
    sls_client.create_consumer_group(p, "ls", "cg", 10)
    fails(
        "ConsumerGroupAlreadyExist",
        400,
        lambda: sls_client.create_consumer_group(p, "ls", "cg", 10),
    )
    groups = sls_client.list_consumer_group(p, "ls").get_consumer_groups()
    assert [(g.get_consumer_group_name(), g.get_timeout(), g.is_in_order()) for g in groups] == [
        ("cg", 10, False)
    ]
    sls_client.update_consumer_group(p, "ls", "cg", timeout=20)
    assert sls_client.list_consumer_group(p, "ls").get_consumer_groups()[0].get_timeout() == 20
    assert sorted(sls_client.heart_beat(p, "ls", "cg", "c1", []).get_shards()) == [0, 1]
    points = sls_client.get_check_point(p, "ls", "cg").get_consumer_group_check_points()
    assert sorted(c["shard"] for c in points) == [0, 1]
    assert all(c["checkpoint"] == "" for c in points)
    cur = sls_client.get_end_cursor(p, "ls", 1).get_cursor()
    sls_client.update_check_point(p, "ls", "cg", 1, cur, "c1")
    points = sls_client.get_check_point(p, "ls", "cg", 1).get_consumer_group_check_points()
    assert [(c["shard"], c["checkpoint"], c["consumer"]) for c in points] == [(1, cur, "c1")]
    sls_client.delete_consumer_group(p, "ls", "cg")
    assert sls_client.list_consumer_group(p, "ls").get_count() == 0


def test_a15_authentication(sls_client: Any, sls_server: Any) -> None:
    p = fresh_project(sls_client, 1)
    endpoint = endpoint_of(sls_server)
    fails("SignatureNotMatch", 401, lambda: LogClient(endpoint, AK, SK + "x").get_project(p))
    fails("Unauthorized", 401, lambda: LogClient(endpoint, "no-such-ak", SK).get_project(p))
    sts = LogClient(endpoint, AK, SK, securityToken="sts-token")
    assert sts.get_project(p).get_projectname() == p
    v4 = LogClient(endpoint, AK, SK, auth_version=AUTH_VERSION_4, region="cn-hangzhou")
    v4.put_logs(PutLogsRequest(p, "ls", "", "", [LogItem(contents=[("v", "4")])]))
    begin = v4.get_begin_cursor(p, "ls", 0).get_cursor()
    assert v4.pull_logs(p, "ls", 0, begin).get_log_count() == 1
    bad = LogClient(endpoint, AK, "bad", auth_version=AUTH_VERSION_4, region="cn-hangzhou")
    fails("SignatureNotMatch", 401, lambda: bad.list_shards(p, "ls"))
