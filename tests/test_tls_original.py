"""``consume_logs`` with ``ConsumeLogsRequest(original=True)`` (``/ConsumeOriginalLogs``)
with the real Volcengine TLS SDK against a real server: every log group comes back
in a ``RawLogGroupList`` of its own, as ConsumeLogs would return it, with its
arrival time and the cursor after it."""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from harness import ServerProcess
from logharbor.protocol.tls_schema import TlsRawLogGroupListList

pytest.importorskip("volcengine.tls.TLSService")
pytest.importorskip("lz4")

import lz4.block
from volcengine.tls.log_pb2 import LogGroupList
from volcengine.tls.tls_exception import TLSException
from volcengine.tls.tls_requests import (
    ConsumeLogsRequest,
    ConsumerHeartbeatRequest,
    CreateConsumerGroupRequest,
    CreateProjectRequest,
    CreateTopicRequest,
    DescribeCursorRequest,
    PutLogsRequest,
    PutLogsV2Logs,
    PutLogsV2Request,
)
from volcengine.tls.TLSService import TLSService

REGION = "cn-beijing"

pytestmark = pytest.mark.timeout(120)


@dataclass
class Topic:
    svc: Any
    pid: str
    tid: str
    put: list[LogGroupList]  # what was put, one log group each, in order
    put_between: tuple[int, int]  # milliseconds

    def cursor(self, where: str, shard: int = 0) -> str:
        request = DescribeCursorRequest(self.tid, shard, where)
        return str(self.svc.describe_cursor(request).get_cursor())

    def consume(self, cursor: str, *, original: bool = True, **options: Any) -> Any:
        request = ConsumeLogsRequest(self.tid, 0, cursor, original=original, **options)
        return self.svc.consume_logs(request)


def _lossless_group() -> LogGroupList:
    lgl = LogGroupList()
    group = lgl.log_groups.add()
    group.source, group.filename, group.context_flow = "1.2.3.4", "x.log", "flow-7"
    for key, value in (("env", "dev"), ("zone", "a")):
        tag = group.log_tags.add()
        tag.key, tag.value = key, value
    for when, message in ((1700000000123, "héllo"), (1700000001, "seconds")):
        log = group.logs.add()
        log.time = when
        content = log.contents.add()
        content.key, content.value = "msg", message
    return lgl


@pytest.fixture(scope="module")
def topic(server: ServerProcess) -> Iterator[Topic]:
    """One shard: a hand-built log group, then three put_logs_v2 groups (lz4, zlib, none)."""
    saved = {k: os.environ.pop(k) for k in ("VOLC_ACCESSKEY", "VOLC_SECRETKEY") if k in os.environ}
    svc = TLSService(server.endpoint, server.access_key_id, server.access_key_secret, REGION)
    pid = svc.create_project(CreateProjectRequest(f"raw-{time.time_ns()}", REGION)).get_project_id()
    tid = svc.create_topic(CreateTopicRequest("raw", pid, ttl=1, shard_count=2)).get_topic_id()
    before = time.time_ns() // 1_000_000
    put = [_lossless_group()]
    svc.put_logs(PutLogsRequest(tid, put[0], hash_key="0" * 32))
    for i, compression in enumerate(("lz4", "zlib", None)):
        logs = PutLogsV2Logs(source="10.0.0.1", filename="app.log")
        logs.add_log(contents={"m": f"v2-{i}", "k": "v"}, log_time=1700000002000 + i)
        svc.put_logs_v2(PutLogsV2Request(tid, logs, hash_key="0" * 32, compression=compression))
        lgl = LogGroupList()
        group = lgl.log_groups.add()
        group.source, group.filename = "10.0.0.1", "app.log"
        log = group.logs.add()
        log.time = 1700000002000 + i
        for key, value in (("m", f"v2-{i}"), ("k", "v")):
            content = log.contents.add()
            content.key, content.value = key, value
        put.append(lgl)
    after = time.time_ns() // 1_000_000 + 1
    yield Topic(svc, pid, tid, put, (before, after))
    os.environ.update(saved)


def _raw_lists(response: Any) -> list[Any]:
    assert response.get_headers()["X-Tls-Original"] == "true"
    assert "json" not in response.get_headers()["Content-Type"]
    return list(TlsRawLogGroupListList.FromString(response.response["Data"]).RawLogGroupLists)


def _decoded(raw: Any) -> LogGroupList:
    """A RawLogGroupList's Data, decompressed the way the Go and Python SDKs do."""
    if raw.CompressType == "lz4":
        data = lz4.block.decompress(raw.Data, uncompressed_size=raw.OriginLen)
    elif raw.CompressType == "zlib":
        data = zlib.decompress(raw.Data)
    else:
        assert raw.CompressType == ""
        data = raw.Data
    assert len(data) == raw.OriginLen
    return LogGroupList.FromString(data)


def test_consume_original_from_begin_gives_back_what_was_put(topic: Topic) -> None:
    response = topic.consume(topic.cursor("begin"), log_group_count=100, compression="lz4")
    raws = _raw_lists(response)
    assert response.get_x_tls_count() == len(raws) == 4
    assert [_decoded(raw) for raw in raws] == topic.put  # byte for byte, ms times included
    assert {raw.CompressType for raw in raws} == {"lz4"}
    low, high = topic.put_between
    assert all(low <= raw.LogArriveTime <= high for raw in raws)
    # the SDK parses the same answer into one LogGroupList
    groups = response.get_pb_message().log_groups
    assert [g.logs[0].contents[0].value for g in groups] == ["héllo", "v2-0", "v2-1", "v2-2"]
    first = groups[0]
    assert (first.source, first.filename, first.context_flow) == ("1.2.3.4", "x.log", "flow-7")
    assert [(t.key, t.value) for t in first.log_tags] == [("env", "dev"), ("zone", "a")]
    assert first.logs[1].time == 1700000001
    # the same log groups, in the same shape, as ConsumeLogs answers them
    plain = topic.consume(topic.cursor("begin"), original=False, log_group_count=100)
    assert list(plain.get_pb_message().log_groups) == [g.log_groups[0] for g in topic.put]
    assert plain.get_x_tls_cursor() == response.get_x_tls_cursor() == raws[-1].Cursor


def test_compression_as_requested_or_as_stored(topic: Topic) -> None:
    begin = topic.cursor("begin")
    for compression, expected in (("zlib", "zlib"), ("lz4", "lz4"), (None, "lz4")):
        response = topic.consume(begin, log_group_count=100, compression=compression)
        raws = _raw_lists(response)
        assert {raw.CompressType for raw in raws} == {expected}
        assert [_decoded(raw) for raw in raws] == topic.put
        assert len(response.get_pb_message().log_groups) == 4


def test_cursors_advance_one_log_group_at_a_time(topic: Topic) -> None:
    begin, end = topic.cursor("begin"), topic.cursor("end")
    everything = _raw_lists(topic.consume(begin, log_group_count=100))
    cursor, seen = begin, []
    while True:
        response = topic.consume(cursor, log_group_count=2, compression="zlib")
        raws = _raw_lists(response)
        if not raws:
            break
        assert len(raws) <= 2
        assert response.get_x_tls_cursor() == raws[-1].Cursor
        seen.extend(raws)
        cursor = response.get_x_tls_cursor()
    assert cursor == end
    assert [raw.Cursor for raw in seen] == [raw.Cursor for raw in everything]
    assert [_decoded(raw) for raw in seen] == topic.put
    # each item's cursor is where the next log group starts
    for index, raw in enumerate(everything[:-1]):
        following = _raw_lists(topic.consume(raw.Cursor, log_group_count=1))
        assert [_decoded(r) for r in following] == [topic.put[index + 1]]
    # EndCursor stops early, as for ConsumeLogs
    stopped = topic.consume(begin, log_group_count=100, end_cursor=everything[1].Cursor)
    assert [_decoded(r) for r in _raw_lists(stopped)] == topic.put[:2]


def test_the_end_cursor_returns_nothing(topic: Topic) -> None:
    end = topic.cursor("end")
    for compression in ("lz4", "zlib", None):
        response = topic.consume(end, compression=compression)
        assert _raw_lists(response) == []
        assert response.get_x_tls_count() == 0
        assert response.get_x_tls_cursor() == end
        assert len(response.get_pb_message().log_groups) == 0
    empty_shard = topic.cursor("begin", shard=1)
    request = ConsumeLogsRequest(topic.tid, 1, empty_shard, original=True, compression="lz4")
    response = topic.svc.consume_logs(request)
    assert response.get_x_tls_count() == 0 and response.get_x_tls_cursor() == empty_shard


def _failure(call: Any) -> tuple[str, int]:
    started = time.monotonic()
    with pytest.raises(TLSException) as caught:
        call()
    assert time.monotonic() - started < 1.0  # answered at once, not retried
    return caught.value.error_code, caught.value.http_code


def test_bad_requests_fail_as_for_consume_logs(topic: Topic) -> None:
    begin = topic.cursor("begin")
    unknown_topic = "00000000-0000-0000-0000-000000000000"
    cases = {
        ("InvalidCursor", 400): (topic.tid, 0, "!!!", {}),
        ("InvalidArgument", 400): (topic.tid, 0, begin, {"compression": "snappy"}),
        ("TopicNotExist", 404): (unknown_topic, 0, begin, {}),
        ("ShardNotExist", 404): (topic.tid, 9, begin, {}),
    }
    for expected, (tid, shard, cursor, options) in cases.items():
        for original in (False, True):
            request = ConsumeLogsRequest(tid, shard, cursor, original=original, **options)
            assert _failure(lambda r=request: topic.svc.consume_logs(r)) == expected


def test_consumer_group_ownership_as_for_consume_logs(topic: Topic) -> None:
    group = f"raw-g-{time.time_ns()}"
    topic.svc.create_consumer_group(
        CreateConsumerGroupRequest(
            topic.pid, group, [topic.tid], heartbeat_ttl=30, ordered_consume=False
        )
    )
    topic.svc.consumer_heartbeat(ConsumerHeartbeatRequest(topic.pid, group, "owner"))
    begin = topic.cursor("begin")

    def consume(consumer: str, original: bool) -> Any:
        request = ConsumeLogsRequest(
            topic.tid,
            0,
            begin,
            log_group_count=1,
            consumer_group_name=group,
            consumer_name=consumer,
            original=original,
        )
        return topic.svc.consume_logs(request)

    assert [_decoded(r) for r in _raw_lists(consume("owner", True))] == topic.put[:1]
    for original in (False, True):
        code, status = _failure(lambda o=original: consume("stranger", o))
        assert (code, status) == ("ConsumerHeartbeatExpired", 400)
