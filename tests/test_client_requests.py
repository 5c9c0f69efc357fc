"""Request building, signing and error mapping, without any I/O.

The operations in ``logharbor.client._requests`` describe each request as a
``Call``; ``build_request`` turns one into the ``httpx.Request`` the clients send.
"""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from google.protobuf.message import DecodeError

from logharbor import (
    AlreadyExistsError,
    AuthenticationError,
    ClientError,
    DecodingError,
    InvalidCursorError,
    LogGroup,
    LogHarborError,
    LogItem,
    NotFoundError,
    PayloadTooLargeError,
    PutLogsResult,
    ServerError,
    ShardLag,
    ShardNotHeldError,
    ShardRef,
    ThrottledError,
    Timeout,
    TransportError,
    hash_key_of,
)
from logharbor.client import _requests as api
from logharbor.client._exceptions import to_error
from logharbor.protocol.codec import CodecError, Compression, decompress
from logharbor.protocol.errors import ErrorCode
from logharbor.protocol.signing import parse_authorization, signature, string_to_sign

ENDPOINT = "http://127.0.0.1:5080"
CREDENTIALS = api.Credentials("AKID", "s3cr3t")
TIMEOUT = Timeout(connect=1, read=2, write=3, pool=4)
LOGS = [LogItem({"k": "v"}, time_ns=1_700_000_000_000_000_000)]


def build(call: api.Call[Any], credentials: api.Credentials | None = None) -> httpx.Request:
    with httpx.Client(base_url=ENDPOINT) as http:
        return api.build_request(http, call, credentials=credentials, timeout=TIMEOUT)


def put(
    *,
    topic: str = "",
    tags: dict[str, str] | None = None,
    hash_key: str | bytes | None = None,
    compression: Any = "lz4",
) -> api.Call[PutLogsResult]:
    return api.put_logs(
        "web",
        "access",
        LOGS,
        topic=topic,
        source="",
        tags=tags,
        hash_key=hash_key,
        compression=compression,
    )


# ---------------------------------------------------------------- shapes


def test_resource_calls_send_camel_case_json_to_the_documented_paths() -> None:
    request = build(
        api.create_logstore(
            "web", "access", ttl=7, shard_count=4, auto_split=True, max_split_shard=16
        )
    )

    assert (request.method, request.url.path) == ("POST", "/api/v1/projects/web/logstores")
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "name": "access",
        "ttl": 7,
        "shardCount": 4,
        "autoSplit": True,
        "maxSplitShard": 16,
    }


def test_updating_a_logstore_sends_only_the_settings_given() -> None:
    request = build(
        api.update_logstore("web", "access", ttl=None, auto_split=False, max_split_shard=None)
    )

    assert request.method == "PATCH"
    assert json.loads(request.content) == {"autoSplit": False}


def test_listing_pages_with_offset_and_size() -> None:
    request = build(api.list_projects(20, 10))

    assert request.url.path == "/api/v1/projects"
    assert request.url.params.multi_items() == [("offset", "20"), ("size", "10")]


@pytest.mark.parametrize("compression", list(Compression))
def test_logs_are_sent_as_a_compressed_protobuf_log_group(compression: Compression) -> None:
    request = build(put(compression=compression, topic="t", tags={"a": "b"}))
    raw_size = int(request.headers["x-lh-raw-size"])

    raw = decompress(request.content, compression, raw_size=raw_size, max_raw_size=1 << 20)

    assert request.url.path == "/api/v1/projects/web/logstores/access/logs"
    assert request.headers["content-type"] == "application/x-protobuf"
    assert request.headers["x-lh-compress-type"] == compression.wire_name
    assert LogGroup.from_protobuf(raw) == LogGroup(LOGS, topic="t", tags={"a": "b"})


def test_compression_is_lz4_by_default_and_may_be_named() -> None:
    assert build(put()).headers["x-lh-compress-type"] == "lz4"
    assert build(put(compression="zstd")).headers["x-lh-compress-type"] == "zstd"
    with pytest.raises(ValueError, match="unsupported compression"):
        build(put(compression="brotli"))


def test_a_log_group_carries_its_own_topic_source_and_tags() -> None:
    group = LogGroup(LOGS, topic="t")

    with pytest.raises(ValueError, match="in the LogGroup"):
        api.log_group_of(group, topic="other", source="", tags=None)
    assert api.log_group_of(group, topic="", source="", tags=None) is group


def test_a_32_hex_digit_hash_key_routes_as_it_is_and_anything_else_is_hashed() -> None:
    key = "0123456789ABCDEF0123456789abcdef"

    assert build(put(hash_key=key)).url.params["hashKey"] == key.lower()
    assert build(put(hash_key="user-42")).url.params["hashKey"] == hash_key_of("user-42")
    assert build(put(hash_key=b"\x00\x01")).url.params["hashKey"] == hash_key_of(b"\x00\x01")
    assert "hashKey" not in build(put()).url.params


def test_a_pull_asks_for_frames_and_sends_only_the_limits_given() -> None:
    plain = build(
        api.pull_logs(
            "web", "access", 3, "MA==", count=10, max_bytes=None, end_cursor=None, wait_ms=0
        )
    )
    limited = build(
        api.pull_logs(
            "web", "access", 3, "MA==", count=10, max_bytes=4096, end_cursor="NQ==", wait_ms=2500
        )
    )

    assert plain.url.path == "/api/v1/projects/web/logstores/access/shards/3/logs"
    assert plain.url.params.multi_items() == [
        ("cursor", "MA=="),
        ("count", "10"),
        ("format", "frames"),
    ]
    assert dict(limited.url.params) == {
        "cursor": "MA==",
        "count": "10",
        "format": "frames",
        "maxBytes": "4096",
        "endCursor": "NQ==",
        "wait": "2500",
    }


def test_a_long_poll_waits_longer_for_its_answer() -> None:
    call = api.pull_logs(
        "w", "a", 0, "MA==", count=1, max_bytes=None, end_cursor=None, wait_ms=2500
    )

    assert build(call).extensions["timeout"] == {
        "connect": 1,
        "read": 4.5,
        "write": 3,
        "pool": 4,
    }


def test_one_number_sets_every_timeout_phase_and_none_waits_forever() -> None:
    assert Timeout.of(10) == Timeout(connect=10, read=10, write=10, pool=10)
    assert Timeout.of(None) == Timeout(connect=None, read=None, write=None, pool=None)
    assert Timeout.of(TIMEOUT) is TIMEOUT


@pytest.mark.parametrize(
    ("start", "sent"),
    [
        ("begin", "begin"),
        ("end", "end"),
        (1_700_000_000, "1700000000"),
        (1_700_000_000.5, "1700000000.500000"),
        (datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "1704164645.000006"),
        (datetime(2024, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1))), "1704164645"),
    ],
)
def test_a_cursor_by_time_is_asked_for_in_unix_seconds(start: object, sent: str) -> None:
    assert api.cursor_from(start) == sent  # type: ignore[arg-type]


def test_a_naive_datetime_is_local_time() -> None:
    local = datetime(2024, 1, 2, 3, 4, 5)

    assert api.cursor_from(local) == str(int(local.timestamp()))


def test_fractional_seconds_round_down_so_nothing_at_that_moment_is_skipped() -> None:
    assert api.cursor_from(10.0000019) == "10.000001"


@pytest.mark.parametrize(
    ("start", "error"),
    [
        ("now", ValueError),
        (-1, ValueError),
        (True, TypeError),
        (datetime(1960, 1, 1, tzinfo=UTC), ValueError),
    ],
)
def test_a_cursor_start_must_be_begin_end_or_a_time_since_1970(
    start: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        api.cursor_from(start)  # type: ignore[arg-type]


# --------------------------------------------------------------- signing


def verify_like_a_server(request: httpx.Request, secret: str) -> bool:
    """Check the signature from what arrives: the decoded path and query parameters."""
    credential = parse_authorization(request.headers["authorization"])
    assert credential is not None
    text = string_to_sign(
        request.method,
        request.url.path,
        request.url.params.multi_items(),
        request.headers["x-lh-content-sha256"],
        request.headers["x-lh-date"],
    )
    return credential == ("AKID", signature(secret, text))


def test_a_request_is_signed_over_its_decoded_path_query_and_body() -> None:
    request = build(put(hash_key="user-1"), CREDENTIALS)

    assert verify_like_a_server(request, "s3cr3t")
    assert not verify_like_a_server(request, "another secret")


def test_query_values_that_need_escaping_are_signed_as_sent() -> None:
    request = build(api.get_cursor_time("web", "access", 0, "a+b/c= d&é"), CREDENTIALS)

    assert request.url.params["cursor"] == "a+b/c= d&é"
    assert verify_like_a_server(request, "s3cr3t")


def test_without_credentials_requests_go_unsigned() -> None:
    request = build(api.list_projects(0, 100))

    assert "authorization" not in request.headers
    assert "x-lh-date" not in request.headers


@pytest.mark.parametrize(("key_id", "secret"), [("AKID", None), (None, "s"), ("", "s")])
def test_credentials_come_in_pairs(key_id: str | None, secret: str | None) -> None:
    with pytest.raises(ValueError, match="both"):
        api.Credentials.from_options(key_id, secret)


def test_the_secret_never_shows_in_a_repr() -> None:
    assert "s3cr3t" not in repr(CREDENTIALS)


# --------------------------------------------------------- error mapping


def error_response(status: int, code: str, request_id: str = "RID") -> httpx.Response:
    body = {"errorCode": code, "errorMessage": f"{code} happened", "requestId": request_id}
    return httpx.Response(status, json=body)


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, "ParameterInvalid", ClientError),
        (400, "ProjectAlreadyExist", AlreadyExistsError),
        (400, "LogStoreAlreadyExist", AlreadyExistsError),
        (400, "InvalidCursor", InvalidCursorError),
        (401, "Unauthorized", AuthenticationError),
        (401, "SignatureNotMatch", AuthenticationError),
        (403, "RequestTimeExpired", AuthenticationError),
        (404, "ProjectNotExist", NotFoundError),
        (404, "LogStoreNotExist", NotFoundError),
        (404, "ShardNotExist", NotFoundError),
        (409, "ShardWriteQuotaExceed", ClientError),
        (413, "PostBodyTooLarge", PayloadTooLargeError),
        (413, "PostBodyUncompressedTooLarge", PayloadTooLargeError),
        (429, "WriteQuotaExceed", ThrottledError),
        (500, "InternalServerError", ServerError),
        (503, "ServerBusy", ServerError),
    ],
)
def test_each_error_answer_maps_to_its_most_specific_error(
    status: int, code: str, kind: type[LogHarborError]
) -> None:
    error = to_error(error_response(status, code))

    assert type(error) is kind
    assert (error.code, error.message, error.status, error.request_id) == (
        code,
        f"{code} happened",
        status,
        "RID",
    )
    assert error.retryable == (status == 429 or status >= 500)


def test_every_documented_error_code_maps_to_an_error_of_its_status_class() -> None:
    for code in ErrorCode:
        error = to_error(error_response(code.http_status, code.value))
        expected: type[LogHarborError] = ClientError
        if code.http_status == 429:
            expected = ThrottledError
        elif code.http_status >= 500:
            expected = ServerError
        assert isinstance(error, expected), code
        assert error.retryable == code.retryable, code


def test_an_error_answer_that_is_not_json_still_maps_by_status() -> None:
    response = httpx.Response(
        502,
        headers={"x-lh-request-id": "FROM-HEADER"},
        text="<html><body>\n  <h1>502 Bad Gateway</h1>\n</body></html>",
    )

    error = to_error(response)

    assert isinstance(error, ServerError) and error.retryable
    assert error.code == "BadGateway"
    assert error.message == "<html><body> <h1>502 Bad Gateway</h1> </body></html>"
    assert error.request_id == "FROM-HEADER"


def test_an_empty_error_answer_is_named_after_its_status() -> None:
    error = to_error(httpx.Response(404))

    assert isinstance(error, NotFoundError)
    assert (error.code, error.message) == ("NotFound", "Not Found")


@pytest.mark.parametrize(
    ("exception", "retryable"),
    [
        (httpx.ConnectError("refused"), True),
        (httpx.ConnectTimeout("slow"), True),
        (httpx.ReadTimeout("slow"), True),
        (httpx.RemoteProtocolError("server hung up"), True),
        (httpx.UnsupportedProtocol("ftp://"), False),
    ],
)
def test_transport_failures_become_transport_errors(
    exception: httpx.HTTPError, retryable: bool
) -> None:
    error = to_error(exception)

    assert isinstance(error, TransportError)
    assert error.code == type(exception).__name__
    assert (error.status, error.request_id) == (None, None)
    assert error.retryable is retryable


def test_undecodable_answers_become_decoding_errors() -> None:
    for failure in [DecodeError("bad protobuf"), KeyError("shardId"), ValueError("bad JSON")]:
        error = to_error(failure)
        assert isinstance(error, DecodingError) and not error.retryable
        assert error.code == "InvalidResponse"


def test_a_local_cursor_error_is_an_invalid_cursor_error() -> None:
    error = to_error(CodecError(ErrorCode.INVALID_CURSOR, "cursor 'x' is not valid"))

    assert isinstance(error, InvalidCursorError)
    assert error.status is None


def test_an_error_reads_well_and_survives_pickling() -> None:
    error = to_error(error_response(404, "ProjectNotExist", "ABC123"))

    assert str(error) == (
        "ProjectNotExist: ProjectNotExist happened (status 404, request id ABC123)"
    )
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is NotFoundError
    assert (copy.code, copy.status, copy.request_id) == ("ProjectNotExist", 404, "ABC123")


# -------------------------------------------------------- consumer groups


def test_consumer_group_calls_go_to_the_logstore_s_groups() -> None:
    base = "/api/v1/projects/web/logstores/access/consumergroups"
    created = build(api.create_consumer_group("web", "access", "cg", timeout=6, in_order=True))
    assert (created.method, created.url.path) == ("POST", base)
    assert json.loads(created.content) == {"name": "cg", "timeout": 6, "inOrder": True}
    updated = build(api.update_consumer_group("web", "access", "cg", timeout=None, in_order=False))
    assert (updated.method, updated.url.path) == ("PATCH", base + "/cg")
    assert json.loads(updated.content) == {"inOrder": False}
    assert build(api.delete_consumer_group("web", "access", "cg")).method == "DELETE"
    status = build(api.get_consumer_group_status("web", "access", "cg"))
    assert (status.method, status.url.path) == ("GET", base + "/cg/status")


def test_a_heartbeat_reports_the_held_shards_or_nothing() -> None:
    beat = build(api.heartbeat("web", "access", "cg", "c1", [3, 1]))
    assert beat.url.path.endswith("/consumergroups/cg/heartbeat")
    assert json.loads(beat.content) == {"consumer": "c1", "shards": [1, 3]}
    silent = build(api.heartbeat("web", "access", "cg", "c1", None))
    assert json.loads(silent.content) == {"consumer": "c1"}
    answer = httpx.Response(200, json={"shards": [0, 2]})
    assert api.heartbeat("web", "access", "cg", "c1", []).answer(answer) == [0, 2]


def test_a_checkpoint_is_saved_unforced_unless_asked_and_read_back_as_cursors() -> None:
    saved = build(
        api.update_checkpoint("web", "access", "cg", 1, "MQ==", consumer="c1", force=False)
    )
    assert saved.url.path.endswith("/consumergroups/cg/checkpoints")
    assert json.loads(saved.content) == {
        "shardId": 1,
        "cursor": "MQ==",
        "consumer": "c1",
        "force": False,
    }
    answer = httpx.Response(
        200,
        json={
            "checkpoints": [
                {"shardId": 0, "cursor": "", "consumer": "", "updateTime": 0},
                {"shardId": 1, "cursor": "MQ==", "consumer": "c1", "updateTime": 5},
            ]
        },
    )
    none, one = api.get_checkpoints("web", "access", "cg").answer(answer)
    assert (none.cursor, one.cursor, one.cursor.position if one.cursor else None) == (
        None,
        "MQ==",
        1,
    )


def test_a_logstore_s_group_answers_name_the_logstore_of_each_shard() -> None:
    checkpoints = httpx.Response(
        200, json={"checkpoints": [{"shardId": 1, "cursor": "", "consumer": "", "updateTime": 0}]}
    )
    (checkpoint,) = api.get_checkpoints("web", "access", "cg").answer(checkpoints)
    assert checkpoint.shard == ShardRef("access", 1)
    status = httpx.Response(
        200,
        json={
            "consumers": [{"name": "c1", "shards": [1]}],
            "shards": [{"shard": 1, "behindLogGroups": 2, "behindSeconds": 0.5}],
        },
    )
    answer = api.get_consumer_group_status("web", "access", "cg").answer(status)
    assert answer.consumers == {"c1": (1,)}
    assert answer.shards == (ShardLag(1, 2, 0.5, "access"),)


def test_a_project_s_group_calls_go_to_the_project_s_groups() -> None:
    base = "/api/v1/projects/web/consumergroups"
    created = build(
        api.create_project_consumer_group("web", "cg", ["a", "b"], timeout=6, in_order=False)
    )
    assert (created.method, created.url.path) == ("POST", base)
    assert json.loads(created.content) == {
        "name": "cg",
        "logstores": ["a", "b"],
        "timeout": 6,
        "inOrder": False,
    }
    with pytest.raises(TypeError, match="list"):
        api.create_project_consumer_group("web", "cg", "ab", timeout=6, in_order=False)
    updated = build(api.update_project_consumer_group("web", "cg", timeout=9, in_order=None))
    assert (updated.method, updated.url.path, updated.content) == (
        "PATCH",
        base + "/cg",
        b'{"timeout":9}',
    )
    assert build(api.list_project_consumer_groups("web")).url.path == base
    assert build(api.get_project_consumer_group("web", "cg")).url.path == base + "/cg"
    assert build(api.delete_project_consumer_group("web", "cg")).method == "DELETE"
    left = build(api.leave_project_consumer_group("web", "cg", "c1"))
    assert (left.url.path, json.loads(left.content)) == (
        base + "/cg/heartbeat",
        {"consumer": "c1", "leave": True},
    )


def test_a_project_s_group_writes_shards_with_their_logstore() -> None:
    held = [ShardRef("b", 0), ShardRef("a", 1)]
    beat = build(api.project_heartbeat("web", "cg", "c1", held))
    assert beat.url.path == "/api/v1/projects/web/consumergroups/cg/heartbeat"
    assert json.loads(beat.content) == {
        "consumer": "c1",
        "shards": [{"logstore": "a", "shardId": 1}, {"logstore": "b", "shardId": 0}],
    }
    assert json.loads(build(api.project_heartbeat("web", "cg", "c1", None)).content) == {
        "consumer": "c1"
    }
    answer = httpx.Response(200, json={"shards": [{"logstore": "a", "shardId": 1}]})
    assert api.project_heartbeat("web", "cg", "c1", []).answer(answer) == [ShardRef("a", 1)]

    saved = build(
        api.update_project_checkpoint(
            "web", "cg", ShardRef("b", 2), "MQ==", consumer="c1", force=True
        )
    )
    assert saved.url.path == "/api/v1/projects/web/consumergroups/cg/checkpoints"
    assert json.loads(saved.content) == {
        "logstore": "b",
        "shardId": 2,
        "cursor": "MQ==",
        "consumer": "c1",
        "force": True,
    }
    checkpoints = httpx.Response(
        200,
        json={
            "checkpoints": [
                {"logstore": "b", "shardId": 2, "cursor": "MQ==", "consumer": "c1", "updateTime": 5}
            ]
        },
    )
    (checkpoint,) = api.get_project_checkpoints("web", "cg").answer(checkpoints)
    assert (checkpoint.shard, checkpoint.cursor, checkpoint.update_time) == (
        ShardRef("b", 2),
        "MQ==",
        5,
    )
    status = httpx.Response(
        200,
        json={
            "consumers": [{"name": "c1", "shards": [{"logstore": "b", "shardId": 2}]}],
            "shards": [
                {
                    "shard": {"logstore": "b", "shardId": 2},
                    "behindLogGroups": 0,
                    "behindSeconds": 0.0,
                }
            ],
        },
    )
    answer_status = api.get_project_consumer_group_status("web", "cg").answer(status)
    assert answer_status.consumers == {"c1": (ShardRef("b", 2),)}
    assert [lag.shard for lag in answer_status.shards] == [ShardRef("b", 2)]


def test_a_member_s_pull_names_its_group_and_itself() -> None:
    call = api.pull_logs(
        "web",
        "access",
        0,
        "MA==",
        count=10,
        max_bytes=None,
        end_cursor=None,
        wait_ms=0,
        consumer_group="cg",
        consumer="c1",
    )
    assert ("consumerGroup", "cg") in call.params and ("consumer", "c1") in call.params
    with pytest.raises(ValueError, match="together"):
        api.pull_logs(
            "web",
            "access",
            0,
            "MA==",
            count=10,
            max_bytes=None,
            end_cursor=None,
            wait_ms=0,
            consumer_group="cg",
        )


def test_consumer_group_errors_map_to_their_errors() -> None:
    exists = to_error(error_response(400, "ConsumerGroupAlreadyExist"))
    assert isinstance(exists, AlreadyExistsError)
    assert isinstance(to_error(error_response(409, "ConsumerNotMatch")), ShardNotHeldError)
    assert isinstance(to_error(error_response(404, "ConsumerGroupNotExist")), NotFoundError)
