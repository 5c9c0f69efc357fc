"""``describe_log_context`` with the real Volcengine TLS SDK: SearchLogs hands out
each log's ``__context_flow__``, ``__package_offset__`` and ``__source__``, and
DescribeLogContext answers exactly the logs stored around it in its shard."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest

from harness import ServerProcess

pytest.importorskip("volcengine.tls.TLSService")
pytest.importorskip("lz4")

from volcengine.tls.tls_exception import TLSException
from volcengine.tls.tls_requests import (
    CreateIndexRequest,
    CreateProjectRequest,
    CreateTopicRequest,
    DescribeLogContextRequest,
    FullTextInfo,
    PutLogsV2Logs,
    PutLogsV2Request,
    SearchLogsRequest,
)
from volcengine.tls.TLSService import TLSService

REGION = "cn-beijing"
SHARD_0, SHARD_1 = "00" * 16, "80" + "0" * 30
GROUPS, PER_GROUP = 3, 4  # line-00 … line-11 in three log groups of shard 0

pytestmark = pytest.mark.timeout(120)


@dataclass
class Topic:
    svc: Any
    tid: str

    def hit(self, message: str) -> dict[str, Any]:
        end = int(time.time() * 1000) + 60_000
        request = SearchLogsRequest(self.tid, message, 0, end, limit=10)
        logs = self.svc.search_logs_v2(request).get_search_result().get_logs()
        assert [log["m"] for log in logs] == [message]
        hit: dict[str, Any] = logs[0]
        return hit

    def context(self, hit: dict[str, Any], prev: int, following: int) -> Any:
        request = DescribeLogContextRequest(
            self.tid,
            hit["__context_flow__"],
            hit["__package_offset__"],
            hit["__source__"],
            prev_logs=prev,
            next_logs=following,
        )
        return self.svc.describe_log_context(request)


@pytest.fixture(scope="module")
def topic(server: ServerProcess) -> Iterator[Topic]:
    """A two-shard topic: line-NN in shard 0, other-N in shard 1, interleaved."""
    saved = {k: os.environ.pop(k) for k in ("VOLC_ACCESSKEY", "VOLC_SECRETKEY") if k in os.environ}
    svc = TLSService(server.endpoint, server.access_key_id, server.access_key_secret, REGION)
    pid = svc.create_project(CreateProjectRequest(f"ctx-{time.time_ns()}", REGION)).get_project_id()
    created = svc.create_topic(CreateTopicRequest("ctx", pid, ttl=1, shard_count=2))
    tid = created.get_topic_id()
    svc.create_index(
        CreateIndexRequest(tid, full_text=FullTextInfo(case_sensitive=False, delimiter=", "))
    )
    for group in range(GROUPS):
        lines = PutLogsV2Logs(source="10.0.0.1", filename="app.log")
        for i in range(PER_GROUP):
            lines.add_log(contents={"m": f"line-{group * PER_GROUP + i:02d}"})
        svc.put_logs_v2(PutLogsV2Request(tid, lines, hash_key=SHARD_0))
        other = PutLogsV2Logs(source="10.0.0.2")
        other.add_log(contents={"m": f"other-{group}"})
        svc.put_logs_v2(PutLogsV2Request(tid, other, hash_key=SHARD_1))
    yield Topic(svc, tid)
    os.environ.update(saved)


def _messages(response: Any) -> list[str]:
    return [log["m"] for log in response.get_log_context_infos()]


def _lines(first: int, last: int) -> list[str]:
    return [f"line-{i:02d}" for i in range(first, last + 1)]


def _over(response: Any) -> tuple[bool, bool]:
    return response.get_prev_over(), response.get_next_over()


def test_search_hits_say_where_they_are(topic: Topic) -> None:
    hit = topic.hit("line-05")
    assert hit["__context_flow__"] == "0000000000000000-1"  # shard 0, second log group
    assert hit["__package_offset__"] == 1
    assert hit["__source__"] == "10.0.0.1" and hit["__path__"] == "app.log"


def test_context_around_a_hit(topic: Topic) -> None:
    response = topic.context(topic.hit("line-05"), 3, 4)
    assert _messages(response) == _lines(2, 9)  # across three log groups, shard 1 left out
    assert _over(response) == (True, True)  # line-00, line-01 and line-10, line-11 remain
    logs = response.get_log_context_infos()
    assert [log["__package_offset__"] for log in logs] == [2, 3, 0, 1, 2, 3, 0, 1]
    assert {log["__source__"] for log in logs} == {"10.0.0.1"}
    assert {log["__path__"] for log in logs} == {"app.log"}
    # paging on from the ends of an answer
    earlier = topic.context(logs[0], 10, 0)
    assert _messages(earlier) == _lines(0, 2) and _over(earlier) == (False, True)
    later = topic.context(logs[-1], 0, 10)
    assert _messages(later) == _lines(9, 11) and _over(later) == (True, False)


def test_first_and_last_log_of_a_shard(topic: Topic) -> None:
    first = topic.context(topic.hit("line-00"), 5, 2)
    assert _messages(first) == _lines(0, 2) and _over(first) == (False, True)
    last = topic.context(topic.hit("line-11"), 2, 5)
    assert _messages(last) == _lines(9, 11) and _over(last) == (True, False)
    exact = topic.context(topic.hit("line-02"), 2, 9)  # exactly what there is
    assert _messages(exact) == _lines(0, 11) and _over(exact) == (False, False)
    alone = topic.context(topic.hit("other-1"), 1000, 1000)
    assert _messages(alone) == ["other-0", "other-1", "other-2"]
    only = topic.context(topic.hit("line-07"), 0, 0)
    assert _messages(only) == ["line-07"] and _over(only) == (True, True)


def _fails(code: str, status: int, call: Any) -> TLSException:
    started = time.monotonic()
    with pytest.raises(TLSException) as caught:
        call()
    assert (caught.value.error_code, caught.value.http_code) == (code, status), caught.value
    assert time.monotonic() - started < 1.0  # answered at once, not retried
    return caught.value


def test_bad_context_requests_are_4xx(topic: Topic) -> None:
    hit = topic.hit("line-05")

    def context(**changes: Any) -> Any:
        return topic.context({**hit, **changes}, 1, 1)

    for flow in ("", "xyz", "0-", "0000000000000000-1-2", "1" * 17 + "-1"):
        _fails("InvalidArgument", 400, partial(context, __context_flow__=flow))
    for offset in (-1, "x"):
        _fails("InvalidArgument", 400, partial(context, __package_offset__=offset))
    for prev, following in ((1001, 1), (1, 1001), (-1, 1)):
        _fails("InvalidArgument", 400, partial(topic.context, hit, prev, following))
    # well formed, but no log is there
    for flow, offset in (("0-63", 0), ("0-1", 4), ("0-" + "F" * 16, 0)):
        error = _fails(
            "InvalidArgument",
            400,
            partial(context, __context_flow__=flow, __package_offset__=offset),
        )
        assert "no log" in error.error_message
    _fails("ShardNotExist", 404, lambda: context(__context_flow__="7-0"))
    elsewhere = DescribeLogContextRequest(
        "00000000-0000-0000-0000-000000000000", hit["__context_flow__"], 1, "10.0.0.1"
    )
    _fails("TopicNotExist", 404, lambda: topic.svc.describe_log_context(elsewhere))
