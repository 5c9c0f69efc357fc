# ruff: noqa: F811  (pytest fixtures imported from sls_support)
"""SLS facade beyond §10: the seed document's examples (logtail configs, machine
groups, shippers that deliver), signature worked examples (spec §3), Host
routing, and bad input answered fast with SLS error codes, never 5xx."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("aliyun.log")

from aliyun.log import (
    GetLogsRequest,
    IndexConfig,
    IndexLineConfig,
    ListTopicsRequest,
    LogClient,
    LogItem,
    LogtailConfigGenerator,
    MachineGroupDetail,
    PutLogsRequest,
)

from logharbor.protocol.errors import ServiceError
from logharbor.server.compat.sls.signature import (
    v1_signature,
    v1_string_to_sign,
    v4_canonical_request,
    v4_signature,
)
from logharbor.server.compat.sls.wire import project_of
from sls_support import (  # noqa: F401
    AK,
    SK,
    endpoint_of,
    fails,
    fresh_project,
    sls_client,
    sls_server,
    wait_for,
)

# ------------------------------------------------------------- unit: spec §3


def test_v1_worked_examples() -> None:
    base = {"x-log-apiversion": "0.6.0", "x-log-bodyrawsize": "0"}
    base["x-log-signaturemethod"] = "hmac-sha1"
    cursor = v1_string_to_sign(
        "GET",
        "/logstores/ls/shards/0",
        [("type", "cursor"), ("from", "begin")],
        {
            **base,
            "content-type": "application/json",
            "date": "Sun, 22 Nov 2026 02:36:13 GMT",
            "x-log-date": "ignored",
        },
    )
    assert v1_signature(SK, cursor) == "oKzHEjj/qzYhOlWN2bqQqDOr8BA="
    listing = v1_string_to_sign(
        "GET",
        "/",
        [("offset", "0"), ("size", "100"), ("resourceGroupId", "")],
        {**base, "date": "Sun, 22 Nov 2026 02:31:48 GMT"},
    )
    assert v1_signature(SK, listing) == "RhuMt1Dkf4KLYz1WctYulrMclCg="
    checkpoint = v1_string_to_sign(
        "POST",
        "/logstores/ls/consumergroups/cg",
        [("type", "checkpoint"), ("consumer", "consumer-1"), ("forceSuccess", "True")],
        {
            "x-log-apiversion": "0.6.0",
            "x-log-signaturemethod": "hmac-sha1",
            "content-md5": "478BD2C67D7C8B5FDC06F2F763447FAA",
            "content-type": "application/json",
            "date": "Sun, 22 Nov 2026 02:36:13 GMT",
        },
    )
    assert v1_signature(SK, checkpoint) == "L9FlLrE1961houN62vQAxAFRYfY="


def test_v4_worked_example() -> None:
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    canonical = v4_canonical_request(
        "GET",
        "/logstores/ls/shards/1",
        [("type", "log"), ("cursor", "MA=="), ("count", "10")],
        {
            "host": "cap.127.0.0.1",
            "x-log-apiversion": "0.6.0",
            "x-log-bodyrawsize": "0",
            "x-log-content-sha256": empty,
            "x-log-date": "20261122T023613Z",
            "authorization": "not signed",
            "user-agent": "not signed",
        },
    )
    assert canonical.split("\n")[2] == "count=10&cursor=MA%3D%3D&type=log"
    signature = v4_signature(SK, "20261122", "cn-hangzhou", "20261122T023613Z", canonical)
    assert signature == "44b5fbf3ce79a87b4ed0a89d6293e27bc6d58fde7af4a5b10b59c33b2e64c9a1"


def test_project_from_host() -> None:
    bases = ("127.0.0.1", "logs.example.com")
    assert project_of("myproj.127.0.0.1", bases) == "myproj"
    assert project_of("myproj.127.0.0.1:8480", bases) == "myproj"
    assert project_of("127.0.0.1:8480", bases) is None
    assert project_of("p1.logs.example.com", bases) == "p1"
    with pytest.raises(ServiceError):
        project_of("a.b.127.0.0.1", bases)
    with pytest.raises(ServiceError):
        project_of("elsewhere.org", bases)


# ----------------------------------------------------- the seed's examples


def test_seed_logtail_configs_and_machine_groups(sls_client: Any) -> None:
    p = fresh_project(sls_client, 1)
    # the seed's flat dict is the 0.6 helper's input; 0.9.52 takes the API shape
    config = LogtailConfigGenerator.generate_full_regex_config(
        {
            "configName": "config_name1",
            "inputType": "file",
            "inputDetail": {
                "logType": "common_reg_log",
                "logPath": "/log_path",
                "filePattern": "file_pattern",
                "timeFormat": "time_format",
                "regex": "xxx ([\\w\\-]+\\s[\\d\\:]+)\\s+(.*)",
                "logBeginRegex": "xxx.*",
                "key": ["time", "value"],
                "topicFormat": "none",
                "filterKey": ["time", "value"],
                "filterRegex": ["time", "value"],
            },
            "outputType": "LogService",
            "outputDetail": {"logstoreName": "ls"},
            "logSample": "xxx 2017-11-11 11:11:11 hello alicloud.",
        }
    )
    sls_client.create_logtail_config(p, config)
    assert sls_client.list_logtail_config(p).get_configs() == ["config_name1"]
    got = sls_client.get_logtail_config(p, "config_name1")
    assert got.logtail_config.logstore_name == "ls"
    fails("ConfigAlreadyExist", 400, lambda: sls_client.create_logtail_config(p, config))

    group = MachineGroupDetail()
    group.from_json(
        {
            "group_name": "group_name1",
            "machine_list": ["machine1", "machine2"],
            "machine_type": "userdefined",
            "group_type": "Armory",
            "group_attribute": {"externalName": "ex name", "groupTopic": "topic x"},
        }
    )
    sls_client.create_machine_group(p, group)
    assert sls_client.list_machine_group(p).get_machine_group() == ["group_name1"]
    detail = sls_client.get_machine_group(p, "group_name1").get_machine_group()
    assert detail.machine_list == ["machine1", "machine2"]
    fails("MachineGroupAlreadyExist", 400, lambda: sls_client.create_machine_group(p, group))
    sls_client.apply_config_to_machine_group(p, "config_name1", "group_name1")
    applied = sls_client.get_machine_group_applied_configs(p, "group_name1")
    assert applied.get_configs() == ["config_name1"]
    groups = sls_client.get_config_applied_machine_groups(p, "config_name1")
    assert groups.get_machine_groups() == ["group_name1"]
    sls_client.remove_config_to_machine_group(p, "config_name1", "group_name1")
    assert sls_client.get_machine_group_applied_configs(p, "group_name1").get_configs() == []
    sls_client.delete_logtail_config(p, "config_name1")
    fails("ConfigNotExist", 404, lambda: sls_client.get_logtail_config(p, "config_name1"))
    sls_client.delete_machine_group(p, "group_name1")


def test_seed_project_logstore_topics_and_pull(sls_client: Any) -> None:
    p = fresh_project(sls_client, 3)
    sls_client.list_project().log_print()
    sls_client.get_project(p).log_print()
    sls_client.get_logstore(p, "ls").log_print()
    now = int(time.time())
    sls_client.put_logs(PutLogsRequest(p, "ls", "t", "", [LogItem(contents=[("a", "b")])]))
    res = sls_client.get_cursor(p, "ls", shard_id=0, start_time=now - 3600)
    sls_client.pull_logs(p, "ls", shard_id=0, cursor=res.get_cursor()).log_print()
    # no index: topics are empty and a query is refused, quickly and with a 4xx
    assert sls_client.list_topics(ListTopicsRequest(p, "ls")).get_topics() == []
    request = GetLogsRequest(p, "ls", now - 3600, now + 60, topic="", query="*", line=1000)
    fails("IndexConfigNotExist", 404, lambda: sls_client.get_logs(request))


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_shipper_delivers_to_directory(sls_client: Any, sls_server: Any, fmt: str) -> None:
    p = fresh_project(sls_client, 2)
    shipper = {
        "shipperName": "to-disk",
        "targetType": "oss",
        "targetConfiguration": {
            "ossBucket": "b",
            "bufferInterval": 1,
            "storage": {"format": fmt},
        },
    }
    sls_client.create_shipper(p, "ls", shipper)
    assert sls_client.list_shipper(p, "ls").get_entities() == ["to-disk"]
    assert sls_client.get_shipper(p, "ls", "to-disk").get_entity()["targetType"] == "oss"
    items = [LogItem(contents=[("n", str(i))]) for i in range(7)]
    sls_client.put_logs(PutLogsRequest(p, "ls", "top", "src", items))
    folder = Path(sls_server.data_dir) / "shipping" / p / "ls" / "to-disk"
    suffix = ".jsonl" if fmt == "json" else ".parquet"

    def delivered() -> list[dict[str, str]]:
        rows: list[dict[str, str]] = []
        for path in sorted(folder.rglob("*" + suffix)):
            if fmt == "json":
                rows += [json.loads(line) for line in path.read_text().splitlines()]
            else:
                import pyarrow.parquet as pq

                rows += pq.read_table(path).to_pylist()
        return rows

    wait_for(lambda: len(delivered()) == 7, timeout=15)
    assert sorted(r["n"] for r in delivered()) == [str(i) for i in range(7)]
    assert {r["__topic__"] for r in delivered()} == {"top"}
    tasks = sls_client.get_shipper_tasks(p, "ls", "to-disk", 0, int(time.time()) + 60)
    assert tasks.get_count() >= 1
    shipper["targetConfiguration"]["bufferInterval"] = 600  # type: ignore[index]
    sls_client.update_shipper(p, "ls", shipper)
    sls_client.delete_shipper(p, "ls", "to-disk")
    assert sls_client.list_shipper(p, "ls").get_entities() == []


# ----------------------------------------------------------------- bad input


def _raw(server: Any, method: str, path: str, host: str, **options: Any) -> httpx.Response:
    headers = {"Host": host, "x-log-apiversion": "0.6.0", **options.pop("headers", {})}
    return httpx.request(method, server.endpoint + path, headers=headers, timeout=5, **options)


def test_bad_requests_get_sls_errors(sls_client: Any, sls_server: Any) -> None:
    p = fresh_project(sls_client, 1)
    endpoint = endpoint_of(sls_server)
    fails("ProjectNotExist", 404, lambda: sls_client.get_logstore("acc-nope000000", "ls"))
    fails("LogStoreNotExist", 404, lambda: sls_client.list_shards(p, "nope"))
    fails("ShardNotExist", 404, lambda: sls_client.get_begin_cursor(p, "ls", 9))
    fails("ConsumerGroupNotExist", 404, lambda: sls_client.get_check_point(p, "ls", "nope"))
    sls_client.create_index(p, "ls", IndexConfig(line_config=IndexLineConfig([" "])))
    fails("ParameterInvalid", 400, lambda: sls_client.get_log(p, "ls", 0, 10, query="a: ("))
    fails(
        "InvalidShardCheckPoint",
        400,
        lambda: (
            sls_client.create_consumer_group(p, "ls", "g", 10),
            sls_client.update_check_point(p, "ls", "g", 0, "%%%"),
        ),
    )
    fails(
        "InvalidHashKey",
        400,
        lambda: sls_client.put_logs(
            PutLogsRequest(p, "ls", "", "", [LogItem(contents=[("a", "b")])], hashKey="xyz")
        ),
    )
    fails("Unauthorized", 401, lambda: LogClient(endpoint, "", "").list_project())
    host = f"{p}.127.0.0.1"
    signed_headers = {"Authorization": "LOG testAKID:bad", "Date": "x"}
    answers = [
        _raw(sls_server, "GET", "/nowhere", host),  # unsigned
        _raw(sls_server, "GET", "/logstores", host, headers=signed_headers),
        _raw(sls_server, "GET", "/logstores", host, headers={"Authorization": "LOG nocolon"}),
        _raw(sls_server, "GET", "/logstores", "a.b.c.example.org"),
    ]
    for answer in answers:
        assert 400 <= answer.status_code < 500, answer.text
        assert {"errorCode", "errorMessage"} <= set(answer.json())
        assert "content-encoding" not in answer.headers


def test_malformed_bodies_without_auth(server_factory: Any, tmp_path: Path) -> None:
    server = server_factory(auth=False)
    host = "mbp.127.0.0.1"
    assert _raw(server, "POST", "/", host, content=b'{"description": ""}').status_code == 200
    created = _raw(
        server,
        "POST",
        "/logstores",
        host,
        content=b'{"logstoreName": "ls", "ttl": 1, "shardCount": 1}',
    )
    assert created.status_code == 200 and created.headers["content-length"] == "0"
    cases = [
        ("POST", "/logstores", b"{not json", {}, "PostBodyInvalid"),
        ("POST", "/logstores", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, {}, "PostBodyInvalid"),
        (
            "POST",
            "/logstores/ls/shards/lb",
            b"\x00garbage",
            {"x-log-compresstype": "lz4", "x-log-bodyrawsize": "100"},
            "PostBodyInvalid",
        ),
        (
            "POST",
            "/logstores/ls/shards/lb",
            b"abc",
            {"x-log-compresstype": "snappy", "x-log-bodyrawsize": "3"},
            "InvalidCompressType",
        ),
        ("POST", "/logstores/ls/shards/lb", b"\xff\xff\xff", {}, "InvalidLogGroup"),
        ("GET", "/logstores/ls/shards/0?type=log&cursor=%%", b"", {}, "InvalidCursor"),
        ("POST", "/logstores/ls/consumergroups", b"[1]", {}, "PostBodyInvalid"),
        ("GET", "/logstores/ls/nothing", b"", {}, "NotFound"),
        # found by fuzzing: "²" passes str.isdigit() but not int() (they were 500s)
        (
            "POST",
            "/logstores/ls/shards/lb",
            b"x\x9c\xe3\xe2b\xe0\x00\x00\x00\x1e\x00\x0f",
            {"x-log-compresstype": "deflate", "x-log-bodyrawsize": b"\xb2"},
            "ParameterInvalid",
        ),
        ("GET", "/logstores/ls/shards/%C2%B2?type=cursor&from=begin", b"", {}, "ShardNotExist"),
        ("GET", "/logstores/ls?type=log&from=%C2%B2&to=100&query=*", b"", {}, "ParameterInvalid"),
        ("POST", "/logstores/ls/logs", b'{"from": "\\u00b2", "to": 100}', {}, "ParameterInvalid"),
        (
            "POST",
            "/logstores/ls/index",
            b'{"line": {"token": [" "]}, "x": NaN}',
            {},
            "PostBodyInvalid",
        ),
    ]
    for method, path, body, headers, code in cases:
        started = time.monotonic()
        answer = _raw(server, method, path, host, content=body, headers=headers)
        assert time.monotonic() - started < 1
        assert 400 <= answer.status_code < 500, (path, answer.text)
        assert answer.json()["errorCode"] == code, (path, answer.text)


def test_native_deletes_also_forget_sls_documents(sls_client: Any, sls_server: Any) -> None:
    """Machine groups belong to their project whichever API deletes it: recreating a
    project of the same name starts empty."""
    p = fresh_project(sls_client, 1)
    group = MachineGroupDetail()
    group.from_json(
        {
            "group_name": "web-hosts",
            "machine_list": ["m1"],
            "machine_type": "userdefined",
            "group_type": "",
            "group_attribute": {},
        }
    )
    sls_client.create_machine_group(p, group)
    assert sls_client.list_machine_group(p).get_machine_group() == ["web-hosts"]
    deleted = sls_server.request("DELETE", f"/api/v1/projects/{p}")  # the native API
    assert deleted.status_code == 200, deleted.text
    sls_client.create_project(p, "again")
    assert sls_client.list_machine_group(p).get_machine_group() == []
