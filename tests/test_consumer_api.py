"""Consumer groups through the native HTTP API of a real server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest

from groups import log_group_bytes
from harness import ServerProcess
from logharbor.protocol.codec import encode_cursor

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


@pytest.fixture
def logstore(server: ServerProcess, unique_name: Callable[[str], str]) -> str:
    project = unique_name("cg")
    ok(call(server, "POST", f"{API}/projects", {"name": project}))
    ok(call(server, "POST", f"{API}/projects/{project}/logstores", {"name": "ls", "shardCount": 2}))
    return f"{API}/projects/{project}/logstores/ls"


def test_group_lifecycle_heartbeat_and_checkpoints(server: ServerProcess, logstore: str) -> None:
    groups = logstore + "/consumergroups"
    created = ok(call(server, "POST", groups, {"name": "cg", "timeout": 10}))
    assert (created["timeout"], created["inOrder"], created["logstores"]) == (10, False, ["ls"])
    duplicate = call(server, "POST", groups, {"name": "cg", "timeout": 10})
    assert (duplicate.status_code, duplicate.json()["errorCode"]) == (
        400,
        "ConsumerGroupAlreadyExist",
    )
    assert ok(call(server, "PATCH", groups + "/cg", {"timeout": 20}))["timeout"] == 20
    assert [g["name"] for g in ok(call(server, "GET", groups))["consumerGroups"]] == ["cg"]  # type: ignore[union-attr]

    assert ok(call(server, "POST", groups + "/cg/heartbeat", {"consumer": "c1", "shards": []}))[
        "shards"
    ] == [0, 1]
    checkpoints = ok(call(server, "GET", groups + "/cg/checkpoints"))["checkpoints"]
    assert [(c["shardId"], c["cursor"]) for c in checkpoints] == [(0, ""), (1, "")]  # type: ignore[union-attr]

    server.request(
        "POST",
        logstore + "/logs",
        content=log_group_bytes({"n": "1"}),
        headers={"content-type": "application/x-protobuf"},
        params=[("hashKey", "f" * 32)],
    )
    ok(
        call(
            server,
            "POST",
            groups + "/cg/checkpoints",
            {"shardId": 1, "cursor": encode_cursor(1), "consumer": "c1"},
        )
    )
    refused = call(
        server,
        "POST",
        groups + "/cg/checkpoints",
        {"shardId": 1, "cursor": encode_cursor(0), "consumer": "other"},
    )
    assert (refused.status_code, refused.json()["errorCode"]) == (409, "ConsumerNotMatch")
    ok(
        call(
            server,
            "POST",
            groups + "/cg/checkpoints",
            {"shardId": 1, "cursor": encode_cursor(0), "consumer": "other", "force": True},
        )
    )
    status = ok(call(server, "GET", groups + "/cg/status"))
    assert status["consumers"] == [{"name": "c1", "shards": [0, 1]}]
    assert [s["behindLogGroups"] for s in status["shards"]] == [0, 1]  # type: ignore[union-attr]

    ok(call(server, "DELETE", groups + "/cg"))
    gone = call(server, "GET", groups + "/cg")
    assert (gone.status_code, gone.json()["errorCode"]) == (404, "ConsumerGroupNotExist")


def test_pulls_as_a_member_are_fenced(server: ServerProcess, logstore: str) -> None:
    groups = logstore + "/consumergroups"
    ok(call(server, "POST", groups, {"name": "cg", "timeout": 10}))
    ok(call(server, "POST", groups + "/cg/heartbeat", {"consumer": "a", "shards": []}))

    def pull(consumer: str) -> httpx.Response:
        return server.request(
            "GET",
            logstore + "/shards/0/logs",
            params=[("cursor", encode_cursor(0)), ("consumerGroup", "cg"), ("consumer", consumer)],
        )

    assert pull("a").status_code == 200
    fenced = pull("b")
    assert (fenced.status_code, fenced.json()["errorCode"]) == (409, "ConsumerNotMatch")


def test_project_level_group(server: ServerProcess, logstore: str) -> None:
    project_path = logstore.rsplit("/logstores/", 1)[0]
    ok(call(server, "POST", project_path + "/logstores", {"name": "second", "shardCount": 1}))
    groups = project_path + "/consumergroups"
    ok(call(server, "POST", groups, {"name": "all", "timeout": 10, "logstores": ["ls", "second"]}))
    answer = ok(call(server, "POST", groups + "/all/heartbeat", {"consumer": "c", "shards": []}))
    assert answer["shards"] == [
        {"logstore": "ls", "shardId": 0},
        {"logstore": "ls", "shardId": 1},
        {"logstore": "second", "shardId": 0},
    ]
    bad = call(server, "POST", groups + "/all/heartbeat", {"consumer": "c", "shards": [0]})
    assert (bad.status_code, bad.json()["errorCode"]) == (400, "ParameterInvalid")

    # its members pull by logstore, fenced like a logstore group's members
    def pull(logstore_name: str, consumer: str) -> httpx.Response:
        return server.request(
            "GET",
            f"{project_path}/logstores/{logstore_name}/shards/0/logs",
            params=[("cursor", encode_cursor(0)), ("consumerGroup", "all"), ("consumer", consumer)],
        )

    assert pull("second", "c").status_code == 200
    fenced = pull("second", "intruder")
    assert (fenced.status_code, fenced.json()["errorCode"]) == (409, "ConsumerNotMatch")
    ok(call(server, "POST", project_path + "/logstores", {"name": "third", "shardCount": 1}))
    unread = pull("third", "c")  # a logstore the group does not read
    assert (unread.status_code, unread.json()["errorCode"]) == (404, "ConsumerGroupNotExist")


def test_leave_and_readonly_long_poll(server: ServerProcess, logstore: str) -> None:
    groups = logstore + "/consumergroups"
    ok(call(server, "POST", groups, {"name": "cg", "timeout": 60}))
    ok(call(server, "POST", groups + "/cg/heartbeat", {"consumer": "a", "shards": []}))
    assert (
        ok(call(server, "POST", groups + "/cg/heartbeat", {"consumer": "a", "leave": True}))[
            "shards"
        ]
        == []
    )
    assert ok(call(server, "POST", groups + "/cg/heartbeat", {"consumer": "b", "shards": []}))[
        "shards"
    ] == [0, 1]
    ok(call(server, "POST", logstore + "/shards/0/split", {"splitKey": "4" + "0" * 31}))
    started = time.monotonic()
    response = server.request(
        "GET", logstore + "/shards/0/logs", params=[("cursor", encode_cursor(0)), ("wait", "10000")]
    )
    assert response.status_code == 200 and response.headers["x-lh-shard-status"] == "readonly"
    assert time.monotonic() - started < 5  # nothing can arrive: no need to wait
