"""The TLS facade on the wire: the V4 signature (the spec's test vector, tampering,
clock skew), the headers every answer carries, and bad input answered with clear
TLS errors (never a 5xx, never a hang)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import lz4.block
import pytest

from harness import ServerProcess
from logharbor.engine.ingest import Limits
from logharbor.engine.tls_mapping import frames_to_tls_list, tls_to_prepared
from logharbor.protocol.codec import encode_frame
from logharbor.protocol.tls_schema import TlsLogGroupList, TlsRawLogGroupListList
from logharbor.server.compat.tls.signing import signature

REGION = "cn-beijing"


def test_signature_matches_the_spec_test_vector() -> None:
    body = b'{"From": "begin"}'
    headers = {
        "content-type": "application/json",
        "host": "127.0.0.1:18080",
        "x-content-sha256": hashlib.sha256(body).hexdigest(),
        "x-date": "20240101T000000Z",
    }
    got = signature(
        secret="SKTEST",
        method="POST",
        path="/DescribeCursor",
        params=[("TopicId", "topic-1"), ("ShardId", "0")],
        headers=headers,
        signed=["content-type", "host", "x-content-sha256", "x-date"],
        body_sha256=headers["x-content-sha256"],
        x_date="20240101T000000Z",
        region=REGION,
        service="TLS",
    )
    assert got == "ac5ef073526da66799b01571a0e7ef11f6108caa70a9bcb7a7371fc5c710ba7f"


class Raw:
    """Signed raw requests, for what the SDK would never send."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.host = server.endpoint.removeprefix("http://")
        self.http = httpx.Client(base_url=server.endpoint, timeout=10)

    def send(
        self,
        method: str,
        api: str,
        *,
        query: dict[str, str] | None = None,
        body: bytes = b"{}",
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
        secret: str | None = None,
        x_date: str | None = None,
        tamper: bytes | None = None,
    ) -> httpx.Response:
        x_date = x_date or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        digest = hashlib.sha256(body).hexdigest()
        signed = {
            "content-type": content_type,
            "host": self.host,
            "x-content-sha256": digest,
            "x-date": x_date,
        }
        sig = signature(
            secret=secret or self.server.access_key_secret,
            method=method,
            path="/" + api,
            params=sorted((query or {}).items()),
            headers=signed,
            signed=sorted(signed),
            body_sha256=digest,
            x_date=x_date,
            region=REGION,
            service="TLS",
        )
        auth = (
            f"HMAC-SHA256 Credential={self.server.access_key_id}/{x_date[:8]}/{REGION}"
            "/TLS/request, "
            f"SignedHeaders={';'.join(sorted(signed))}, Signature={sig}"
        )
        all_headers = {
            "Content-Type": content_type,
            "X-Date": x_date,
            "X-Content-Sha256": digest,
            "Authorization": auth,
            **(headers or {}),
        }
        return self.http.request(
            method, "/" + api, params=query, content=tamper or body, headers=all_headers
        )

    def json(self, method: str, api: str, document: dict[str, Any], **kw: Any) -> httpx.Response:
        return self.send(method, api, body=json.dumps(document).encode(), **kw)


@pytest.fixture(scope="module")
def raw(server: ServerProcess) -> Iterator[Raw]:
    client = Raw(server)
    yield client
    client.http.close()


@pytest.fixture(scope="module")
def topic(raw: Raw) -> tuple[str, str]:
    r = raw.json(
        "POST", "CreateProject", {"ProjectName": f"wire-{time.time_ns()}", "Region": REGION}
    )
    assert r.status_code == 200, r.text
    pid = r.json()["ProjectId"]
    r = raw.json(
        "POST", "CreateTopic", {"TopicName": "ww", "ProjectId": pid, "Ttl": 1, "ShardCount": 2}
    )
    assert r.status_code == 200, r.text
    return pid, r.json()["TopicId"]


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["x-tls-requestid"]
    assert "json" in response.headers["content-type"]
    assert response.json()["ErrorCode"] == code
    assert response.json()["ErrorMessage"]


def _log_group_list(*messages: str) -> bytes:
    lgl = TlsLogGroupList()
    group = lgl.LogGroups.add(Source="s")
    for message in messages:
        log = group.Logs.add(Time=int(time.time() * 1000))
        log.Contents.add(Key="m", Value=message.encode())
    data: bytes = lgl.SerializeToString()
    return data


def test_auth_failures(raw: Raw, topic: tuple[str, str]) -> None:
    _error(raw.send("GET", "DescribeProjects", secret="wrong"), 401, "SignatureDoesNotMatch")
    _error(raw.send("POST", "DescribeProjects", tamper=b'{"x": 1}'), 401, "SignatureDoesNotMatch")
    old = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y%m%dT%H%M%SZ")
    _error(raw.send("GET", "DescribeProjects", x_date=old), 403, "RequestTimeTooSkewed")
    # the SDK signs once and retries for up to 90 s: an X-Date two minutes old still works
    recent = (datetime.now(UTC) - timedelta(seconds=120)).strftime("%Y%m%dT%H%M%SZ")
    assert raw.send("GET", "DescribeProjects", x_date=recent).status_code == 200
    plain = raw.http.request("GET", "/DescribeProjects", content=b"{}")
    _error(plain, 401, "AuthFailed")
    bad = raw.http.get("/DescribeProjects", headers={"Authorization": "HMAC-SHA256 nonsense"})
    _error(bad, 401, "AuthFailed")


def test_routes_are_case_insensitive_and_accept_get_or_post(
    raw: Raw, topic: tuple[str, str]
) -> None:
    _, tid = topic
    query = {"TopicId": tid, "ShardId": "0"}
    for method, api in (("POST", "DescribeCursor"), ("GET", "describecursor")):
        r = raw.json(method, api, {"From": "begin"}, query=query)
        assert r.status_code == 200, r.text
        assert r.headers["x-tls-requestid"] and "json" in r.headers["content-type"]
    r = raw.json("POST", "DescribeCursor", {"From": 0}, query=query)  # a number works too
    assert r.status_code == 200, r.text


def test_unknown_resources(raw: Raw, topic: tuple[str, str]) -> None:
    pid, tid = topic
    _error(raw.send("GET", "DescribeTopic", query={"TopicId": "nope"}), 404, "TopicNotExist")
    missing = "00000000-0000-4000-8000-000000000000"
    _error(raw.send("GET", "DescribeTopic", query={"TopicId": missing}), 404, "TopicNotExist")
    _error(
        raw.send("GET", "DescribeProject", query={"ProjectId": missing}), 404, "ProjectNotExists"
    )
    query = {"TopicId": tid, "ShardId": "9"}
    _error(raw.json("POST", "DescribeCursor", {"From": "begin"}, query=query), 404, "ShardNotExist")
    body = {"ProjectID": pid, "ConsumerGroupName": "nobody", "ConsumerName": "c"}
    _error(raw.json("POST", "ConsumerHeartbeat", body), 404, "ConsumerGroupNotExist")


def test_malformed_input(raw: Raw, topic: tuple[str, str]) -> None:
    _, tid = topic
    _error(raw.send("POST", "CreateProject", body=b"{not json"), 400, "InvalidArgument")
    deep = b"[" * 100_000 + b"]" * 100_000  # too deep for the parser: bad input, not a 500
    _error(raw.send("POST", "CreateProject", body=deep), 400, "InvalidArgument")
    _error(raw.send("POST", "CreateProject", body=b"[1]"), 400, "InvalidArgument")
    _error(
        raw.json("POST", "CreateTopic", {"TopicName": "x", "ProjectId": 5}), 400, "InvalidArgument"
    )
    query = {"TopicId": tid, "ShardId": "0"}
    _error(
        raw.json("POST", "DescribeCursor", {"From": "yesterday"}, query=query),
        400,
        "InvalidArgument",
    )
    consume = {"Cursor": "!!!", "LogGroupCount": 10, "Compression": "lz4"}
    _error(raw.json("GET", "ConsumeLogs", consume, query=query), 400, "InvalidCursor")
    consume = {"Cursor": "MA==", "LogGroupCount": 10, "Compression": "snappy"}
    _error(raw.json("GET", "ConsumeLogs", consume, query=query), 400, "InvalidArgument")
    consume = {"Cursor": "MA==", "LogGroupCount": 0}
    _error(raw.json("GET", "ConsumeLogs", consume, query=query), 400, "InvalidArgument")


def test_put_logs_bad_bodies(raw: Raw, topic: tuple[str, str]) -> None:
    _, tid = topic
    pb = _log_group_list("a", "b")
    block = lz4.block.compress(pb, store_size=False)

    def put(body: bytes, headers: dict[str, str]) -> httpx.Response:
        return raw.send(
            "POST",
            "PutLogs",
            query={"TopicId": tid},
            body=body,
            headers=headers,
            content_type="application/x-protobuf",
        )

    lz4_headers = {"x-tls-compresstype": "lz4", "x-tls-bodyrawsize": str(len(pb))}
    assert put(block, lz4_headers).status_code == 200
    wrong_size = {**lz4_headers, "x-tls-bodyrawsize": str(len(pb) + 5)}  # negative check (b)
    _error(put(block, wrong_size), 400, "InvalidArgument")
    _error(put(block, {"x-tls-compresstype": "lz4"}), 400, "InvalidArgument")
    _error(put(b"\xff" * 40, lz4_headers), 400, "InvalidArgument")
    _error(put(b"\x0a\x05abc", {}), 400, "InvalidArgument")  # truncated protobuf
    _error(put(b"", {}), 400, "InvalidArgument")  # no log groups
    _error(put(b"x\x9c garbage", {"x-tls-compresstype": "zlib"}), 400, "InvalidArgument")
    _error(put(pb, {"x-tls-compresstype": "brotli"}), 400, "InvalidArgument")
    big = {"x-tls-compresstype": "lz4", "x-tls-bodyrawsize": str(1 << 40)}
    _error(put(block, big), 413, "LogSizeTooLarge")
    # found by fuzzing (both were 500s): a raw size of "²" (str.isdigit() takes it,
    # int() does not), and a key that is not UTF-8 in the second of two log groups
    superscript = {"x-tls-compresstype": "lz4", "x-tls-bodyrawsize": b"\xb2"}
    _error(put(block, superscript), 400, "InvalidArgument")  # type: ignore[arg-type]
    not_utf8 = (
        b"\n\x0c\n\n\x08\x01\x12\x06\n\x01k\x12\x01v\n\x0c\n\n\x08\x01\x12\x06\n\x01\xff\x12\x01v"
    )
    end = raw.json("POST", "DescribeCursor", {"TopicId": tid, "ShardId": 0, "From": "end"})
    _error(put(not_utf8, {}), 400, "InvalidArgument")
    again = raw.json("POST", "DescribeCursor", {"TopicId": tid, "ShardId": 0, "From": "end"})
    assert again.json()["Cursor"] == end.json()["Cursor"]  # nothing of it was stored
    huge = raw.send(
        "POST",
        "DescribeCursor",
        body=b'{"TopicId": "%s", "ShardId": 0, "From": 1e400}' % tid.encode(),
    )
    _error(huge, 400, "InvalidArgument")


def test_consume_logs_headers_and_ownership(raw: Raw, topic: tuple[str, str]) -> None:
    pid, tid = topic
    query = {"TopicId": tid, "ShardId": "1"}
    cursor = raw.json("POST", "DescribeCursor", {"From": "end"}, query=query).json()["Cursor"]
    r = raw.json("GET", "ConsumeLogs", {"Cursor": cursor, "LogGroupCount": 5}, query=query)
    assert r.status_code == 200
    assert r.headers["x-tls-count"] == "0" and r.headers["x-tls-cursor"] == cursor
    assert r.headers["x-tls-bodyrawsize"] == "0" and "json" not in r.headers["content-type"]
    body = {"Cursor": cursor, "LogGroupCount": 5, "Compression": "lz4"}
    assert raw.json("GET", "ConsumeLogs", body, query=query).content == b"\x00"
    group = {
        "ProjectID": pid,
        "ConsumerGroupName": "wire-g",
        "TopicIDList": [tid],
        "HeartbeatTTL": 30,
        "OrderedConsume": False,
    }
    assert raw.json("POST", "CreateConsumerGroup", group).status_code == 200
    checkpoint = raw.json(
        "POST",
        "DescribeCheckPoint",
        {"ConsumerGroupName": "wire-g"},
        query={"ProjectId": pid, "TopicId": tid, "ShardId": "1"},
    )
    assert checkpoint.status_code == 200 and checkpoint.json()["Checkpoint"] == ""
    beat = {"ProjectID": pid, "ConsumerGroupName": "wire-g", "ConsumerName": "owner"}
    shards = raw.json("POST", "ConsumerHeartbeat", beat).json()["Shards"]
    assert sorted(s["ShardID"] for s in shards) == [0, 1]
    assert {s["TopicID"] for s in shards} == {tid}
    member = {"ConsumerGroupName": "wire-g", "ConsumerName": "owner"}
    assert raw.json("GET", "ConsumeLogs", body, query=query, headers=member).status_code == 200
    stranger = {"ConsumerGroupName": "wire-g", "ConsumerName": "stranger"}  # check (a)
    r = raw.json("GET", "ConsumeLogs", body, query=query, headers=stranger)
    _error(r, 400, "ConsumerHeartbeatExpired")
    # ModifyCheckPoint names no consumer: accepted from anyone, last write wins
    modify = {
        "ProjectID": pid,
        "TopicID": tid,
        "ShardID": 1,
        "ConsumerGroupName": "wire-g",
        "Checkpoint": cursor,
    }
    assert raw.json("PUT", "ModifyCheckPoint", modify).status_code == 200
    got = raw.json(
        "POST",
        "DescribeCheckPoint",
        {"ConsumerGroupName": "wire-g"},
        query={"ProjectId": pid, "TopicId": tid, "ShardId": "1"},
    ).json()
    assert got["Checkpoint"] == cursor and got["ShardID"] == 1


def test_time_units_round_trip_unchanged() -> None:
    lgl = TlsLogGroupList()
    group = lgl.LogGroups.add(Source="s", FileName="f.log", ContextFlow="cf")
    group.LogTags.add(Key="k", Value="v")
    times = [1_700_000_000, 1_700_000_000_123, 1_700_000_000_123_456, 1_700_000_000_123_456_789]
    for t in times:
        group.Logs.add(Time=t).Contents.add(Key="m", Value=b"\xff\xfe not utf-8")
    group.Logs.add(Time=1_700_000_000, TimeNs=42)
    prepared = tls_to_prepared(group, Limits(), now=0)
    frames = encode_frame(
        0, 0, prepared.raw_size, prepared.log_count, prepared.compression, prepared.payload
    )
    out, count = frames_to_tls_list(frames)
    assert count == 1
    back = TlsLogGroupList.FromString(out).LogGroups[0]
    assert [log.Time for log in back.Logs] == [*times, 1_700_000_000]
    assert back.Logs[4].HasField("TimeNs") and back.Logs[4].TimeNs == 42
    assert back.Logs[0].Contents[0].Value == b"\xff\xfe not utf-8"
    assert (back.Source, back.FileName, back.ContextFlow) == ("s", "f.log", "cf")
    assert [(t.Key, t.Value) for t in back.LogTags] == [("k", "v")]


def test_consume_original_logs_headers(raw: Raw, topic: tuple[str, str]) -> None:
    _, tid = topic
    query = {"TopicId": tid, "ShardId": "0"}
    pb = _log_group_list("first", "second")
    put = raw.send(
        "POST",
        "PutLogs",
        query={"TopicId": tid},
        body=pb,
        headers={"x-tls-hashkey": "0" * 32},  # shard 0
        content_type="application/x-protobuf",
    )
    assert put.status_code == 200, put.text
    cursor = raw.json("POST", "DescribeCursor", {"From": "begin"}, query=query).json()["Cursor"]
    body = {"Cursor": cursor, "LogGroupCount": 1000, "Compression": "lz4"}
    r = raw.json("GET", "ConsumeOriginalLogs", body, query=query)
    assert r.status_code == 200, r.text
    assert r.headers["x-tls-original"] == "true" and "json" not in r.headers["content-type"]
    # the body is not compressed; the Go SDK still parses X-Tls-Bodyrawsize
    assert r.headers["x-tls-bodyrawsize"] == str(len(r.content))
    items = TlsRawLogGroupListList.FromString(r.content).RawLogGroupLists
    assert r.headers["x-tls-count"] == str(len(items)) and items
    assert r.headers["x-tls-cursor"] == items[-1].Cursor
    data = lz4.block.decompress(items[-1].Data, uncompressed_size=items[-1].OriginLen)
    assert data == pb  # a LogGroupList holding the log group exactly as it was put
    end = {"Cursor": items[-1].Cursor, "Compression": "lz4"}
    r = raw.json("GET", "ConsumeOriginalLogs", end, query=query)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["x-tls-count"] == "0" and r.headers["x-tls-cursor"] == items[-1].Cursor
