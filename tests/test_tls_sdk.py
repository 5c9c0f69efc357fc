"""The real Volcengine TLS SDK (``volcengine`` on PyPI) against a real LogHarbor
server: every acceptance scenario of ../shared/specs/tls.md §6 (S01-S15, plus the
suggested negative checks) and the seed document's consumer-group example."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from harness import ServerProcess

pytest.importorskip("volcengine.tls.TLSService")
pytest.importorskip("lz4")

from volcengine.tls.consumer.consumer import LogProcessor, TLSConsumer
from volcengine.tls.consumer.consumer_model import ConsumerConfig
from volcengine.tls.log_pb2 import LogGroupList
from volcengine.tls.producer.producer import TLSProducer
from volcengine.tls.producer.producer_model import CallBack, ProducerConfig
from volcengine.tls.tls_exception import TLSException
from volcengine.tls.tls_requests import (
    ConsumeLogsRequest,
    CreateConsumerGroupRequest,
    CreateIndexRequest,
    CreateProjectRequest,
    CreateTopicRequest,
    DescribeCheckpointRequest,
    DescribeConsumerGroupsRequest,
    DescribeCursorRequest,
    DescribeProjectsRequest,
    DescribeShardsRequest,
    FullTextInfo,
    ManualShardSplitRequest,
    PutLogsRequest,
    PutLogsV2Logs,
    PutLogsV2Request,
    SearchLogsRequest,
)
from volcengine.tls.TLSService import TLSService

REGION = "cn-beijing"
LOW = "00000000000000000000000000000001"
HIGH = "f0000000000000000000000000000000"

pytestmark = pytest.mark.timeout(120)


@dataclass
class Tls:
    endpoint: str
    ak: str
    sk: str
    svc: Any
    pid: str
    consumers: list[Any] = field(default_factory=list)

    def topic(self, shards: int) -> str:
        name = f"t{time.time_ns()}"
        request = CreateTopicRequest(name, self.pid, ttl=1, shard_count=shards)
        return str(self.svc.create_topic(request).get_topic_id())

    def put(self, tid: str, tag: str, n: int, hash_key: str | None = None) -> None:
        for i in range(n):
            logs = PutLogsV2Logs(source="10.0.0.1", filename="a.log")
            logs.add_log(contents={"m": f"{tag}-{i}"})
            self.svc.put_logs_v2(PutLogsV2Request(tid, logs, hash_key=hash_key))

    def consumer(self, group: str, name: str, tid: str, records: Records, **extra: Any) -> Any:
        config = ConsumerConfig(
            project_id=self.pid,
            consumer_group_name=group,
            consumer_name=name,
            topic_id_list=[tid],
            heartbeat_interval_in_second=1,
            flush_checkpoint_interval_in_second=1,
            data_fetch_interval_in_millisecond=50,
            **extra,
        )
        consumer = TLSConsumer(config, self.svc, Recorder(name, records))
        consumer.start()
        self.consumers.append(consumer)
        return consumer


@dataclass
class Record:
    at: float
    consumer: str
    shard: int
    message: str


class Records:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[Record] = []

    def add(self, record: Record) -> None:
        with self.lock:
            self.items.append(record)

    def snapshot(self) -> list[Record]:
        with self.lock:
            return list(self.items)

    def messages(self, prefix: str = "") -> list[str]:
        return [r.message for r in self.snapshot() if r.message.startswith(prefix)]

    def wait(self, count: int, prefix: str = "", timeout: float = 20.0) -> list[Record]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.messages(prefix)) >= count:
                break
            time.sleep(0.2)
        found = [r for r in self.snapshot() if r.message.startswith(prefix)]
        assert len(found) >= count, f"only {len(found)} of {count} {prefix!r} records"
        return found


class Recorder(LogProcessor):  # type: ignore[misc]
    def __init__(self, name: str, records: Records) -> None:
        self.name = name
        self.records = records

    def process(self, topic_id: str, shard_id: int, log_group_list: Any) -> None:
        for group in log_group_list.log_groups:
            for log in group.logs:
                self.records.add(
                    Record(time.monotonic(), self.name, shard_id, log.contents[0].value)
                )


@pytest.fixture(scope="module")
def tls(server: ServerProcess) -> Iterator[Tls]:
    saved = {k: os.environ.pop(k) for k in ("VOLC_ACCESSKEY", "VOLC_SECRETKEY") if k in os.environ}
    assert not os.path.exists(os.path.expanduser("~/.volc/credentials"))
    assert not os.path.exists(os.path.expanduser("~/.volc/config"))
    ak, sk = server.access_key_id, server.access_key_secret
    svc = TLSService(server.endpoint, ak, sk, REGION)
    pid = svc.create_project(CreateProjectRequest(f"acc-{time.time_ns()}", REGION)).get_project_id()
    context = Tls(server.endpoint, ak, sk, svc, pid)
    yield context
    for consumer in context.consumers:
        consumer.stop()
    os.environ.update(saved)


def _stop(*consumers: Any) -> None:
    for consumer in consumers:
        consumer.stop()


def test_s01_signature_is_verified(tls: Tls) -> None:
    wrong = TLSService(tls.endpoint, tls.ak, tls.sk + "x", REGION)
    with pytest.raises(TLSException) as caught:
        wrong.describe_projects(DescribeProjectsRequest())
    assert caught.value.http_code in (401, 403)
    assert caught.value.error_code
    unknown = TLSService(tls.endpoint, "AKUNKNOWN", tls.sk, REGION)
    with pytest.raises(TLSException) as caught:
        unknown.describe_projects(DescribeProjectsRequest())
    assert caught.value.http_code == 401
    assert caught.value.error_code == "InvalidAccessKeyId"


def test_s02_topic_and_shard_layout(tls: Tls) -> None:
    tid = tls.topic(2)
    shards = tls.svc.describe_shards(DescribeShardsRequest(tid)).get_shards()
    assert [s.shard_id for s in shards] == [0, 1]
    assert {s.status for s in shards} == {"readwrite"}
    assert shards[0].inclusive_begin_key == "0" * 32
    assert shards[0].exclusive_end_key == shards[1].inclusive_begin_key


def test_s03_raw_put_logs_round_trip_is_lossless(tls: Tls) -> None:
    tid = tls.topic(1)
    lgl = LogGroupList()
    group = lgl.log_groups.add()
    group.source, group.filename = "1.2.3.4", "x.log"
    tag = group.log_tags.add()
    tag.key, tag.value = "env", "dev"
    log = group.logs.add()
    log.time = 1700000000123
    content = log.contents.add()
    content.key, content.value = "msg", "héllo"
    tls.svc.put_logs(PutLogsRequest(tid, lgl))
    cursor = tls.svc.describe_cursor(DescribeCursorRequest(tid, 0, "begin")).get_cursor()
    r = tls.svc.consume_logs(
        ConsumeLogsRequest(tid, 0, cursor, log_group_count=10, compression="lz4")
    )
    assert r.get_x_tls_count() == 1
    got = r.get_pb_message().log_groups[0]
    assert (got.source, got.filename, got.log_tags[0].key) == ("1.2.3.4", "x.log", "env")
    assert got.logs[0].time == 1700000000123
    assert got.logs[0].contents[0].value == "héllo"
    end = tls.svc.describe_cursor(DescribeCursorRequest(tid, 0, "end")).get_cursor()
    assert r.get_x_tls_cursor() == end


def test_s04_compressions_both_ways_and_empty_read(tls: Tls) -> None:
    tid = tls.topic(1)
    for compression in ("lz4", "zlib", None):
        logs = PutLogsV2Logs(source="s")
        logs.add_log(contents={"m": str(compression)})
        tls.svc.put_logs_v2(PutLogsV2Request(tid, logs, compression=compression))
    begin = tls.svc.describe_cursor(DescribeCursorRequest(tid, 0, "begin")).get_cursor()
    for compression in ("lz4", "zlib", None):
        request = ConsumeLogsRequest(tid, 0, begin, log_group_count=2, compression=compression)
        r = tls.svc.consume_logs(request)
        assert r.get_x_tls_count() == 2
        assert len(r.get_pb_message().log_groups) == 2
    request = ConsumeLogsRequest(tid, 0, begin, log_group_count=100, compression="lz4")
    end = tls.svc.consume_logs(request).get_x_tls_cursor()
    r = tls.svc.consume_logs(ConsumeLogsRequest(tid, 0, end, compression="lz4"))
    assert r.get_x_tls_count() == 0
    assert r.get_x_tls_cursor() == end


def _consume_all(tls: Tls, tid: str, shard: int) -> list[str]:
    cursor = tls.svc.describe_cursor(DescribeCursorRequest(tid, shard, "begin")).get_cursor()
    r = tls.svc.consume_logs(ConsumeLogsRequest(tid, shard, cursor, log_group_count=100))
    return [log.contents[0].value for g in r.get_pb_message().log_groups for log in g.logs]


def test_s05_hash_key_routing(tls: Tls) -> None:
    tid = tls.topic(2)
    tls.put(tid, "lo", 3, LOW)
    tls.put(tid, "hi", 3, HIGH)
    assert _consume_all(tls, tid, 0) == ["lo-0", "lo-1", "lo-2"]
    assert _consume_all(tls, tid, 1) == ["hi-0", "hi-1", "hi-2"]


def test_s06_consumer_round_trip_and_checkpoints(tls: Tls) -> None:
    tid = tls.topic(2)
    tls.put(tid, "a", 10, LOW)
    tls.put(tid, "b", 10, HIGH)
    records = Records()
    consumer = tls.consumer("g06", "c1", tid, records)
    records.wait(20)
    _stop(consumer)
    expected = sorted([f"a-{i}" for i in range(10)] + [f"b-{i}" for i in range(10)])
    assert sorted(records.messages()) == expected
    for shard in (0, 1):
        request = DescribeCheckpointRequest(tls.pid, tid, shard, "g06")
        assert tls.svc.describe_checkpoint(request).checkpoint


def test_s07_restart_resumes_from_checkpoint(tls: Tls) -> None:
    tid = tls.topic(1)
    tls.put(tid, "a", 10)
    first = Records()
    consumer = tls.consumer("g07", "c1", tid, first)
    first.wait(10)
    _stop(consumer)
    tls.put(tid, "b", 5)
    second = Records()
    consumer = tls.consumer("g07", "c1", tid, second)
    second.wait(5)
    time.sleep(1)
    _stop(consumer)
    assert sorted(second.messages()) == [f"b-{i}" for i in range(5)]


def test_s08_consume_from_end(tls: Tls) -> None:
    tid = tls.topic(1)
    tls.put(tid, "old", 5)
    records = Records()
    consumer = tls.consumer("g08", "c1", tid, records, consume_from="end")
    time.sleep(3)
    tls.put(tid, "new", 5)
    records.wait(5)
    _stop(consumer)
    assert sorted(records.messages()) == [f"new-{i}" for i in range(5)]


def test_s09_group_lifecycle(tls: Tls) -> None:
    tid = tls.topic(1)
    request = CreateConsumerGroupRequest(
        tls.pid, "g09", [tid], heartbeat_ttl=3, ordered_consume=False
    )
    tls.svc.create_consumer_group(request)
    with pytest.raises(TLSException) as caught:
        tls.svc.create_consumer_group(request)
    assert "ConsumerGroupAlreadyExists" in caught.value.error_code
    assert caught.value.http_code < 500 and caught.value.http_code != 429
    described = tls.svc.describe_consumer_groups(
        DescribeConsumerGroupsRequest(tls.pid, consumer_group_name="g09")
    ).consumer_groups
    assert [g.consumer_group_name for g in described] == ["g09"]
    assert described[0].topic_id_list == [tid]
    tls.put(tid, "a", 3)
    records = Records()
    consumer = tls.consumer("g09", "c1", tid, records)
    records.wait(3)
    _stop(consumer)


def test_s10_two_consumers_split_four_shards(tls: Tls) -> None:
    tid = tls.topic(4)
    records = Records()
    c1 = tls.consumer("g10", "c1", tid, records)
    time.sleep(2)
    c2 = tls.consumer("g10", "c2", tid, records)
    time.sleep(4)
    tls.put(tid, "x", 40)
    found = records.wait(40, "x")
    _stop(c1, c2)
    owners: dict[int, set[str]] = {}
    for record in found:
        owners.setdefault(record.shard, set()).add(record.consumer)
    assert all(len(o) == 1 for o in owners.values()), owners
    per_consumer: dict[str, set[int]] = {}
    for shard, (name,) in owners.items():
        per_consumer.setdefault(name, set()).add(shard)
    assert sorted(len(s) for s in per_consumer.values()) == [2, 2], per_consumer
    assert sorted(records.messages("x")) == sorted(f"x-{i}" for i in range(40))


def test_s11_failover_after_heartbeat_ttl(tls: Tls) -> None:
    tid = tls.topic(4)
    records = Records()
    c1 = tls.consumer("g11", "c1", tid, records)
    c2 = tls.consumer("g11", "c2", tid, records)
    time.sleep(4)
    c1.stop()
    time.sleep(5)
    tls.put(tid, "y", 40)
    found = records.wait(40, "y")
    _stop(c2)
    assert {r.consumer for r in found} == {"c2"}
    assert sorted(records.messages("y")) == sorted(f"y-{i}" for i in range(40))


def _split(tls: Tls, tid: str) -> None:
    tls.svc.manual_shard_split(ManualShardSplitRequest(tid, 0, 2))
    shards = tls.svc.describe_shards(DescribeShardsRequest(tid)).get_shards()
    assert {s.shard_id: s.status for s in shards} == {
        0: "readonly",
        1: "readwrite",
        2: "readwrite",
    }


def test_s12_ordered_consumption_across_a_split(tls: Tls) -> None:
    tid = tls.topic(1)
    tls.put(tid, "parent", 30)
    _split(tls, tid)
    tls.put(tid, "left", 10, LOW)
    tls.put(tid, "right", 10, HIGH)
    records = Records()
    consumer = tls.consumer("g12", "c1", tid, records, ordered_consume=True)
    found = records.wait(50, timeout=30)
    _stop(consumer)
    parents = [r.at for r in found if r.message.startswith("parent")]
    others = [r.at for r in found if not r.message.startswith("parent")]
    assert len(parents) >= 30 and max(parents) < min(others)
    assert {r.shard for r in found if r.message.startswith("left")} == {1}
    assert {r.shard for r in found if r.message.startswith("right")} == {2}
    assert sorted(set(records.messages())) == sorted(
        [f"parent-{i}" for i in range(30)]
        + [f"left-{i}" for i in range(10)]
        + [f"right-{i}" for i in range(10)]
    )


def test_s13_unordered_split_loses_nothing(tls: Tls) -> None:
    tid = tls.topic(1)
    tls.put(tid, "p", 30)
    tls.svc.manual_shard_split(ManualShardSplitRequest(tid, 0, 2))
    tls.put(tid, "q", 20)
    records = Records()
    consumer = tls.consumer("g13", "c1", tid, records, ordered_consume=False)
    records.wait(50, timeout=30)
    _stop(consumer)
    expected = sorted([f"p-{i}" for i in range(30)] + [f"q-{i}" for i in range(20)])
    assert sorted(records.messages()) == expected


def test_s13_ordered_from_end_reaches_the_children(tls: Tls) -> None:
    """§4.3 condition 2 and negative check (d): no deadlock at a parent's end."""
    tid = tls.topic(1)
    tls.put(tid, "p", 5)
    _split(tls, tid)
    records = Records()
    consumer = tls.consumer("g13e", "c1", tid, records, ordered_consume=True, consume_from="end")
    time.sleep(3)
    tls.put(tid, "q", 10)
    records.wait(10, "q", timeout=30)
    _stop(consumer)
    assert not records.messages("p")


def test_s14_async_producer(tls: Tls) -> None:
    tid = tls.topic(1)
    results: list[bool] = []
    done = threading.Event()

    class Callback(CallBack):  # type: ignore[misc]
        def on_complete(self, result: Any) -> None:
            results.append(bool(result.success))
            if len(results) >= 10:
                done.set()

    config = ProducerConfig(tls.endpoint, REGION, tls.ak, tls.sk)
    config.linger_ms = 200
    producer = TLSProducer(config)
    producer.start()
    from volcengine.tls.tls_requests import PutLogsV2LogContent

    for i in range(10):
        content = PutLogsV2LogContent(time=int(time.time() * 1000), log_dict={"m": f"p-{i}"})
        producer.send_log_v2(None, tid, "1.1.1.1", "f.log", content, Callback())
    producer.close()
    assert done.wait(20)
    assert results == [True] * 10
    assert sorted(_consume_all(tls, tid, 0)) == sorted(f"p-{i}" for i in range(10))


def test_s15_index_and_search(tls: Tls) -> None:
    tid = tls.topic(1)
    full_text = FullTextInfo(case_sensitive=False, delimiter=", ")
    tls.svc.create_index(CreateIndexRequest(tid, full_text=full_text))
    tls.put(tid, "needle", 2)
    tls.put(tid, "hay", 3)
    request = SearchLogsRequest(tid, "needle-1", 0, int(time.time() * 1000) + 60000, limit=10)
    result = tls.svc.search_logs_v2(request).get_search_result()
    assert result.get_hit_count() >= 1
    assert any(log.get("m") == "needle-1" for log in result.get_logs())


def test_seed_example(tls: Tls, capsys: pytest.CaptureFixture[str]) -> None:
    """The seed document's example, with its endpoint, keys, ids and defaults."""

    class MyLogProcessor(LogProcessor):  # type: ignore[misc]
        def process(self, topic_id: str, shard_id: int, log_group_list: Any) -> None:
            print(topic_id + " --- " + str(shard_id))
            count = 0
            for log_group in log_group_list.log_groups:
                for log in log_group.logs:
                    count += 1
                    print(f"*** Count = {count} ***")
                    for content in log.contents:
                        print(f"{content.key}: {content.value}")
                    print()

    tid = tls.topic(2)
    tls.put(tid, "seed", 4)
    tls_service = TLSService(tls.endpoint, tls.ak, tls.sk, REGION)
    consumer_config = ConsumerConfig(
        project_id=tls.pid,
        consumer_group_name="python-consumer-group",
        consumer_name="python-consumer",
        topic_id_list=[tid],
    )
    tls_consumer = TLSConsumer(consumer_config, tls_service, MyLogProcessor())
    tls_consumer.start()
    deadline = time.monotonic() + 20
    seen = ""
    while time.monotonic() < deadline:
        seen += capsys.readouterr().out
        if seen.count("m: seed-") >= 4:
            break
        time.sleep(0.2)
    tls_consumer.stop()
    assert sorted(line for line in seen.splitlines() if line.startswith("m: ")) == [
        f"m: seed-{i}" for i in range(4)
    ]


def test_s20_consume_logs_is_bounded_by_decoded_bytes(tls: Tls) -> None:
    """ConsumeLogs decodes what it answers: it stops before the log group that would
    pass TLS's 5 MiB (12 log groups of 205 KB stored, 50 MiB each once decompressed,
    took the server 1.2 GB); LogGroupCount is a maximum, and the cursor goes on."""
    tid = tls.topic(1)
    for n in range(4):
        lgl = LogGroupList()
        log = lgl.log_groups.add().logs.add()
        log.time = 1700000000000 + n
        content = log.contents.add()
        content.key, content.value = "blob", str(n) * (2 << 20)  # 2 MiB, compresses well
        tls.svc.put_logs(PutLogsRequest(tid, lgl))
    cursor = tls.svc.describe_cursor(DescribeCursorRequest(tid, 0, "begin")).get_cursor()
    counts = []
    while True:
        r = tls.svc.consume_logs(ConsumeLogsRequest(tid, 0, cursor, log_group_count=100))
        if not r.get_x_tls_count():
            break
        counts.append(r.get_x_tls_count())
        cursor = r.get_x_tls_cursor()
    assert counts == [2, 2]  # 4 MiB a call: a third group would pass 5 MiB


def test_s21_a_log_group_list_over_5_mib_is_refused(tls: Tls) -> None:
    tid = tls.topic(1)
    lgl = LogGroupList()
    log = lgl.log_groups.add().logs.add()
    log.time = 1700000000000
    content = log.contents.add()
    content.key, content.value = "blob", "x" * (6 << 20)
    with pytest.raises(TLSException) as exc:
        tls.svc.put_logs(PutLogsRequest(tid, lgl))
    assert exc.value.http_code == 413
