"""The native HTTP API of a real server process on loopback, spoken to byte by byte."""

from __future__ import annotations

import json
import stat
import threading
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import lz4.block
import pytest
import zstandard

from groups import log_group_bytes
from harness import ServerProcess
from logharbor.protocol.codec import decode_cursor, encode_cursor, encode_varint, iter_frames
from logharbor.protocol.schema import LogGroup
from logharbor.protocol.signing import sign_headers
from logharbor.server.config import ConfigError, load_config

API = "/api/v1"
ALL_SHARDS_KEY = "0" * 32


def ok(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["errorCode"] == code
    assert body["errorMessage"]
    assert body["requestId"] == response.headers["x-lh-request-id"]
    return str(body["errorMessage"])


@pytest.fixture
def logstore(server: ServerProcess, unique_name: Callable[[str], str]) -> str:
    """A fresh project with a one-shard logstore; returns the logstore's path."""
    project = unique_name("api")
    ok(server.request("POST", f"{API}/projects", content=json.dumps({"name": project}).encode()))
    body = json.dumps({"name": "access", "shardCount": 1}).encode()
    ok(server.request("POST", f"{API}/projects/{project}/logstores", content=body))
    return f"{API}/projects/{project}/logstores/access"


def put(
    server: ServerProcess,
    path: str,
    body: bytes,
    *,
    compress: str | None = None,
    raw_size: int | None = None,
    content_type: str = "application/x-protobuf",
    params: tuple[tuple[str, str], ...] = (),
    sign: bool = True,
) -> httpx.Response:
    headers = {"content-type": content_type}
    if compress:
        headers["x-lh-compress-type"] = compress
    if raw_size is not None:
        headers["x-lh-raw-size"] = str(raw_size)
    return server.request(
        "POST", path + "/logs", content=body, headers=headers, params=params, sign=sign
    )


def put_lz4(server: ServerProcess, path: str, raw: bytes) -> httpx.Response:
    """Write a serialized log group as SLS clients send it: a raw lz4 block."""
    body = lz4.block.compress(raw, store_size=False)
    return put(server, path, body, compress="lz4", raw_size=len(raw))


def end_position(server: ServerProcess, path: str, shard: int = 0) -> int:
    body = ok(server.request("GET", f"{path}/shards/{shard}/cursor", params=[("from", "end")]))
    return decode_cursor(str(body["cursor"]))


def pull(server: ServerProcess, path: str, cursor: str, **params: str) -> httpx.Response:
    return server.request(
        "GET", f"{path}/shards/0/logs", params=[("cursor", cursor), *params.items()]
    )


class TestResources:
    def test_project_lifecycle(
        self, server: ServerProcess, unique_name: Callable[[str], str]
    ) -> None:
        name = unique_name("proj")
        created = ok(
            server.request(
                "POST",
                f"{API}/projects",
                content=json.dumps({"name": name, "description": "d1"}).encode(),
            )
        )
        assert created["name"] == name and created["description"] == "d1"
        assert_error(
            server.request("POST", f"{API}/projects", content=json.dumps({"name": name}).encode()),
            400,
            "ProjectAlreadyExist",
        )
        ok(
            server.request(
                "PATCH",
                f"{API}/projects/{name}",
                content=json.dumps({"description": "d2"}).encode(),
            )
        )
        assert ok(server.request("GET", f"{API}/projects/{name}"))["description"] == "d2"
        listed = ok(server.request("GET", f"{API}/projects", params=[("size", "500")]))
        assert name in [p["name"] for p in listed["projects"]]  # type: ignore[union-attr]
        ok(server.request("DELETE", f"{API}/projects/{name}"))
        assert_error(server.request("GET", f"{API}/projects/{name}"), 404, "ProjectNotExist")

    def test_bad_names_are_refused(self, server: ServerProcess) -> None:
        for name in ["UPPER", "a", "x" * 64, "bad name", "-x-"]:
            response = server.request(
                "POST", f"{API}/projects", content=json.dumps({"name": name}).encode()
            )
            assert_error(response, 400, "InvalidName")

    def test_logstore_lifecycle_and_shards(self, server: ServerProcess, logstore: str) -> None:
        project_path = logstore.rsplit("/logstores/", 1)[0]
        info = ok(server.request("GET", logstore))
        assert (info["ttl"], info["shardCount"], info["autoSplit"]) == (30, 1, False)
        assert (
            ok(server.request("PATCH", logstore, content=json.dumps({"ttl": 7}).encode()))["ttl"]
            == 7
        )
        assert_error(
            server.request("PATCH", logstore, content=b'{"ttl": 0}'), 400, "ParameterInvalid"
        )
        assert_error(
            server.request(
                "POST", project_path + "/logstores", content=json.dumps({"name": "access"}).encode()
            ),
            400,
            "LogStoreAlreadyExist",
        )
        split = ok(
            server.request(
                "POST",
                f"{logstore}/shards/0/split",
                content=json.dumps({"splitKey": "8" + "0" * 31}).encode(),
            )
        )
        assert [(s["shardId"], s["status"]) for s in split["shards"]] == [  # type: ignore[union-attr]
            (0, "readonly"),
            (1, "readwrite"),
            (2, "readwrite"),
        ]
        merged = ok(server.request("POST", f"{logstore}/shards/1/merge"))
        assert merged["shards"][-1]["parents"] == [1, 2]  # type: ignore[index]
        shards = ok(server.request("GET", f"{logstore}/shards"))["shards"]
        assert [s["status"] for s in shards] == ["readonly"] * 3 + ["readwrite"]  # type: ignore[union-attr]
        ok(server.request("DELETE", logstore))
        assert_error(server.request("GET", logstore), 404, "LogStoreNotExist")


class TestWriteAndPull:
    @pytest.mark.parametrize("compression", ["lz4", "zstd", "deflate", "none", None])
    def test_every_compression_round_trips(
        self, server: ServerProcess, logstore: str, compression: str | None
    ) -> None:
        raw = log_group_bytes(
            {"msg": "héllo", "k": "v"},
            {"msg": "two"},
            topic="t",
            source="s",
            time=1_800_000_000,
            time_ns=123_456_789,
            tags={"host": "h1"},
        )
        body = {
            "lz4": lambda: lz4.block.compress(raw, store_size=False),
            "zstd": lambda: zstandard.ZstdCompressor().compress(raw),
            "deflate": lambda: zlib.compress(raw),
        }.get(compression or "none", lambda: raw)()
        answer = ok(put(server, logstore, body, compress=compression, raw_size=len(raw)))
        assert answer["logCount"] == 2 and answer["shardId"] == 0
        response = pull(server, logstore, str(answer["cursor"]))
        assert response.headers["content-type"] == "application/x-logharbor-frames"
        assert response.headers["x-lh-count"] == "1"
        assert response.headers["x-lh-log-count"] == "2"
        assert response.headers["x-lh-raw-size"] == str(len(raw))
        (frame,) = iter_frames(response.content)
        assert frame.raw() == raw  # exactly the log group that was sent
        next_cursor = response.headers["x-lh-next-cursor"]
        assert decode_cursor(next_cursor) == decode_cursor(str(answer["cursor"])) + 1

    @pytest.mark.parametrize("compression", ["lz4", "deflate", "none"])
    def test_large_groups_validated_in_worker_processes(
        self, server: ServerProcess, logstore: str, compression: str
    ) -> None:
        raw = log_group_bytes(*({"i": str(i), "pad": "p" * 200} for i in range(2000)))
        assert len(raw) > 256 << 10  # large enough to go to the validation pool
        body = {
            "lz4": lambda: lz4.block.compress(raw, store_size=False),
            "deflate": lambda: zlib.compress(raw),
        }.get(compression, lambda: raw)()
        answer = ok(put(server, logstore, body, compress=compression, raw_size=len(raw)))
        assert answer["logCount"] == 2000
        (frame,) = iter_frames(pull(server, logstore, str(answer["cursor"])).content)
        assert frame.raw() == raw
        garbage = raw[:100_000] + b"\xff" * 100_000
        assert_error(put(server, logstore, garbage), 400, "InvalidLogGroup")
        assert_error(
            put(
                server,
                logstore,
                lz4.block.compress(garbage, store_size=False),
                compress="lz4",
                raw_size=len(garbage) + 7,  # declared wrong
            ),
            400,
            "PostBodyInvalid",
        )

    def test_json_write_and_json_pull(self, server: ServerProcess, logstore: str) -> None:
        document = {
            "topic": "web",
            "source": "10.0.0.1",
            "tags": {"env": "prod"},
            "logs": [
                {"time_ns": 1_800_000_000_123_456_789, "contents": {"level": "INFO", "n": 5}},
                {"time": 1_800_000_001, "contents": [["k", "1"], ["k", "2"]]},
            ],
        }
        answer = ok(
            put(server, logstore, json.dumps(document).encode(), content_type="application/json")
        )
        body = ok(pull(server, logstore, str(answer["cursor"]), format="json"))
        (group,) = body["logGroups"]  # type: ignore[misc]
        assert (group["topic"], group["source"], group["tags"]) == (
            "web",
            "10.0.0.1",
            {"env": "prod"},
        )
        assert group["logs"] == [
            {"timeNs": 1_800_000_000_123_456_789, "contents": [["level", "INFO"], ["n", "5"]]},
            {"timeNs": 1_800_000_001_000_000_000, "contents": [["k", "1"], ["k", "2"]]},
        ]

    def test_a_json_pull_is_bounded_by_what_it_decodes_to(
        self, server: ServerProcess, logstore: str
    ) -> None:
        """maxBytes counts stored bytes: logs that compress well decoded to a thousand
        times as much JSON (839 MB for 3.3 MB stored). A JSON pull stops before the log
        group that would pass its budget once decoded (about 2.6 MiB decompressed), and
        the next cursor resumes there."""
        raw = log_group_bytes(*({"k": "a" * (1 << 20)} for _ in range(5)))  # 5 MiB each
        cursors = [ok(put_lz4(server, logstore, raw))["cursor"] for _ in range(3)]
        cursor, seen = str(cursors[0]), []
        for _ in range(3):
            answer = pull(server, logstore, cursor, format="json", count="100")
            content = ok(answer)
            groups = content["logGroups"]
            assert len(groups) == 1 and answer.headers["x-lh-count"] == "1"  # type: ignore[arg-type]
            assert answer.headers["x-lh-raw-size"] == str(len(raw))
            seen += [g["cursor"] for g in groups]  # type: ignore[attr-defined]
            cursor = str(content["nextCursor"])
            assert answer.headers["x-lh-next-cursor"] == cursor
        assert seen == cursors
        assert cursor == content["endCursor"]
        # frames are not decoded on the server: they come as the budget allows
        frames = pull(server, logstore, str(cursors[0]), count="100")
        assert frames.headers["x-lh-count"] == "3"

    def test_a_log_group_too_large_for_json_comes_without_its_logs(
        self, server: ServerProcess, logstore: str
    ) -> None:
        """A log group that alone would decode to too much JSON comes marked, without
        its logs, and the cursor moves past it: a reader never stalls on it."""
        many = log_group_bytes({"blob": "b" * (12 << 20)})  # 12 MiB: about 300 MB as JSON
        ok(put_lz4(server, logstore, many))
        ok(put(server, logstore, log_group_bytes({"n": "after"})))
        first = ok(pull(server, logstore, "MA==", format="json"))
        (group,) = first["logGroups"]  # type: ignore[misc]
        assert group["tooLarge"] is True and group["logs"] == []
        assert (group["logCount"], group["rawSize"]) == (1, len(many))
        second = ok(pull(server, logstore, str(first["nextCursor"]), format="json"))
        (after,) = second["logGroups"]  # type: ignore[misc]
        assert after["logs"][0]["contents"] == [["n", "after"]]
        (frame, _) = iter_frames(pull(server, logstore, "MA==").content)  # frames: all of it
        assert frame.raw() == many

    def test_a_json_pull_shows_bytes_that_are_not_utf8_escaped(
        self, server: ServerProcess, logstore: str
    ) -> None:
        """Writes keep any bytes; a key of b"\\xff" made every JSON pull of it a 500."""
        log = b"\x08" + encode_varint(1_800_000_000) + b"\x12\x07\x0a\x01\xff\x12\x02v\xfe"
        ok(put(server, logstore, b"\x0a" + encode_varint(len(log)) + log))
        (group,) = ok(pull(server, logstore, "MA==", format="json"))["logGroups"]  # type: ignore[misc]
        assert group["logs"][0]["contents"] == [["\\xff", "v\\xfe"]]

    def test_cursor_by_time_and_cursor_time(self, server: ServerProcess, logstore: str) -> None:
        before = time.time()
        raw = log_group_bytes({"n": "1"})
        ok(put(server, logstore, raw))
        at = ok(
            server.request("GET", f"{logstore}/shards/0/cursor", params=[("from", str(before - 1))])
        )["cursor"]
        assert decode_cursor(str(at)) == 0
        after = ok(
            server.request(
                "GET", f"{logstore}/shards/0/cursor", params=[("from", str(time.time() + 60))]
            )
        )["cursor"]
        assert decode_cursor(str(after)) == 1  # no log group yet: the end
        when = ok(
            server.request("GET", f"{logstore}/shards/0/cursor-time", params=[("cursor", str(at))])
        )
        assert abs(int(when["timeNs"]) / 1e9 - before) < 5  # type: ignore[call-overload]

    def test_pull_with_end_cursor_and_count(self, server: ServerProcess, logstore: str) -> None:
        for i in range(5):
            ok(put(server, logstore, log_group_bytes({"n": str(i)})))
        response = pull(server, logstore, encode_cursor(1), endCursor=encode_cursor(3))
        assert response.headers["x-lh-count"] == "2"
        assert response.headers["x-lh-next-cursor"] == encode_cursor(3)
        assert pull(server, logstore, encode_cursor(0), count="4").headers["x-lh-count"] == "4"
        empty = pull(server, logstore, encode_cursor(5))
        assert (empty.content, empty.headers["x-lh-next-cursor"]) == (b"", encode_cursor(5))

    def test_long_poll_returns_when_data_arrives(
        self, server: ServerProcess, logstore: str
    ) -> None:
        timer = threading.Timer(0.3, lambda: put(server, logstore, log_group_bytes({"n": "1"})))
        timer.start()
        started = time.monotonic()
        response = pull(server, logstore, encode_cursor(0), wait="10000")
        elapsed = time.monotonic() - started
        timer.join()
        assert response.headers["x-lh-count"] == "1"
        assert elapsed < 5  # woken by the write, not by the 10 s timeout

    def test_hash_key_routing(self, server: ServerProcess, logstore: str) -> None:
        ok(
            server.request(
                "POST",
                f"{logstore}/shards/0/split",
                content=json.dumps({"splitKey": "8" + "0" * 31}).encode(),
            )
        )
        answer = ok(
            put(
                server, logstore, log_group_bytes({"n": "1"}), params=(("hashKey", "9" + "0" * 31),)
            )
        )
        assert answer["shardId"] == 2
        assert_error(
            put(server, logstore, log_group_bytes({"n": "1"}), params=(("hashKey", "not-hex"),)),
            400,
            "InvalidHashKey",
        )


class TestBadInput:
    """Every refusal is a clear 4xx, and nothing at all is stored."""

    def test_malformed_bodies_store_nothing(self, server: ServerProcess, logstore: str) -> None:
        raw = log_group_bytes({"n": "1"})
        cases = [
            (put(server, logstore, b"\xff\xff\xff\xff garbage"), 400, "InvalidLogGroup"),
            (put(server, logstore, b"\x0a\x05\x08"), 400, "InvalidLogGroup"),  # truncated
            (
                put(server, logstore, LogGroup(Topic="t").SerializeToString()),
                400,
                "InvalidLogGroup",
            ),  # no logs
            (put(server, logstore, b"\x0a\x02\x12\x00"), 400, "InvalidLogGroup"),  # no Time
            (
                put(server, logstore, b"\x00garbage", compress="lz4", raw_size=100),
                400,
                "PostBodyInvalid",
            ),
            (put(server, logstore, raw, compress="lz4"), 400, "ParameterInvalid"),  # no size
            (put(server, logstore, b"garbage!", compress="zstd"), 400, "PostBodyInvalid"),
            (put(server, logstore, b"garbage!", compress="deflate"), 400, "PostBodyInvalid"),
            (
                put(server, logstore, zlib.compress(raw)[:-3], compress="deflate"),
                400,
                "PostBodyInvalid",
            ),
            (
                put(
                    server, logstore, zlib.compress(raw), compress="deflate", raw_size=len(raw) + 1
                ),
                400,
                "PostBodyInvalid",
            ),
            (put(server, logstore, raw, compress="brotli"), 400, "InvalidCompressType"),
            (
                put(server, logstore, b"{not json", content_type="application/json"),
                400,
                "PostBodyInvalid",
            ),
            (
                put(server, logstore, b'{"logs": []}', content_type="application/json"),
                400,
                "PostBodyInvalid",
            ),
            (put(server, logstore, raw, content_type="text/plain"), 400, "ParameterInvalid"),
        ]
        for huge in (b"1e308", b"-1e308", b"1e300"):  # finite, but no nanoseconds (500s once)
            body = b'{"logs": [{"contents": {"a": "1"}}, {"time": %s}]}' % huge
            cases.append(
                (
                    put(server, logstore, body, content_type="application/json"),
                    400,
                    "PostBodyInvalid",
                )
            )
        for response, status, code in cases:
            assert_error(response, status, code)
        assert end_position(server, logstore) == 0

    def test_decompression_bombs(self, server_factory: Callable[..., ServerProcess]) -> None:
        small = server_factory(auth=False, extra_args=["--max-raw-bytes", "100000"])
        small.request("POST", f"{API}/projects", content=b'{"name": "bombs"}')
        small.request(
            "POST", f"{API}/projects/bombs/logstores", content=b'{"name": "ls", "shardCount": 1}'
        )
        path = f"{API}/projects/bombs/logstores/ls"
        zeros = b"\x00" * 1_000_000
        cases = [
            put(
                small,
                path,
                lz4.block.compress(zeros, store_size=False),
                compress="lz4",
                raw_size=len(zeros),
            ),  # declared size above the limit
            put(small, path, zstandard.ZstdCompressor().compress(zeros), compress="zstd"),
            put(
                small,
                path,
                zstandard.ZstdCompressor(write_content_size=False).compress(zeros),
                compress="zstd",
            ),  # actual size above the limit, nothing declared
            put(small, path, zlib.compress(zeros, 9), compress="deflate"),
            put(small, path, zlib.compress(zeros, 9), compress="deflate", raw_size=50),
        ]
        for response in cases:
            assert_error(response, 413, "PostBodyUncompressedTooLarge")
        assert end_position(small, path) == 0

    def test_oversized_body(self, server_factory: Callable[..., ServerProcess]) -> None:
        small = server_factory(auth=False, extra_args=["--max-body-bytes", "1000"])
        small.request("POST", f"{API}/projects", content=b'{"name": "big"}')
        small.request(
            "POST", f"{API}/projects/big/logstores", content=b'{"name": "ls", "shardCount": 1}'
        )
        path = f"{API}/projects/big/logstores/ls"
        assert_error(put(small, path, log_group_bytes({"n": "x" * 5000})), 413, "PostBodyTooLarge")

        def chunked() -> object:  # no Content-Length: the limit applies while streaming
            yield b"x" * 800
            yield b"x" * 800

        response = httpx.post(
            small.endpoint + path + "/logs",
            content=chunked(),  # type: ignore[arg-type]
            headers={"content-type": "application/x-protobuf"},
        )
        assert_error(response, 413, "PostBodyTooLarge")
        assert end_position(small, path) == 0

    def test_bytes_in_flight_are_bounded(
        self, server_factory: Callable[..., ServerProcess]
    ) -> None:
        busy = server_factory(env={"LOGHARBOR_MAX_INFLIGHT_BYTES": "3000"})
        busy.request("POST", f"{API}/projects", content=b'{"name": "busy"}')
        busy.request(
            "POST", f"{API}/projects/busy/logstores", content=b'{"name": "ls", "shardCount": 1}'
        )
        path = f"{API}/projects/busy/logstores/ls"
        big = log_group_bytes({"n": "x" * 4000})
        response = put(busy, path, big)
        assert_error(response, 503, "ServerBusy")
        assert response.headers["retry-after"] == "1"
        small = log_group_bytes({"n": "x" * 1000})
        for _ in range(5):  # refused requests give their bytes back
            assert_error(put(busy, path, small, sign=False), 401, "Unauthorized")
        for _ in range(5):
            ok(put(busy, path, small))

    def test_unknown_resources(self, server: ServerProcess, logstore: str) -> None:
        project_path = logstore.rsplit("/logstores/", 1)[0]
        raw = log_group_bytes({"n": "1"})
        assert_error(
            put(server, f"{API}/projects/no-such-project/logstores/x", raw), 404, "ProjectNotExist"
        )
        assert_error(
            put(server, f"{project_path}/logstores/no-such-store", raw), 404, "LogStoreNotExist"
        )
        assert_error(
            server.request(
                "GET", f"{logstore}/shards/9/logs", params=[("cursor", encode_cursor(0))]
            ),
            404,
            "ShardNotExist",
        )
        assert_error(
            server.request("GET", f"{logstore}/shards/abc/cursor", params=[("from", "begin")]),
            404,
            "ShardNotExist",
        )
        assert_error(server.request("GET", f"{API}/nothing-here"), 404, "NotFound")
        assert_error(server.request("PUT", f"{API}/projects"), 405, "MethodNotAllowed")
        too_long = server.request(
            "GET", f"{logstore}/shards/{'1' * 12}/cursor", params=[("from", "begin")]
        )
        assert_error(too_long, 404, "ShardNotExist")

    def test_numbers_must_be_ascii_digits(
        self, server_factory: Callable[..., ServerProcess]
    ) -> None:
        server = server_factory(auth=False)
        ok(server.request("POST", f"{API}/projects", content=b'{"name": "odd"}', sign=False))
        path = f"{API}/projects/odd/logstores"
        ok(server.request("POST", path, content=b'{"name": "ls"}', sign=False))
        body = zlib.compress(log_group_bytes({"n": "1"}))
        for size in (b"\xb2", b"9" * 5000):  # superscript two; more digits than int() takes
            answer = httpx.post(
                server.endpoint + path + "/ls/logs",
                content=body,
                headers={
                    "content-type": "application/x-protobuf",
                    "x-lh-compress-type": "deflate",
                    "x-lh-raw-size": size,  # type: ignore[dict-item]
                },
            )
            assert_error(answer, 400, "ParameterInvalid")
        shard = httpx.get(server.endpoint + path + "/ls/shards/%C2%B2/cursor?from=begin")
        assert_error(shard, 404, "ShardNotExist")

    def test_bad_parameters(self, server: ServerProcess, logstore: str) -> None:
        cases = [
            (pull(server, logstore, "bm90LWEtY3Vyc29y"), "InvalidCursor"),  # base64 of text
            (pull(server, logstore, "%%%"), "InvalidCursor"),
            (pull(server, logstore, encode_cursor(99)), "InvalidCursor"),  # past the end
            (pull(server, logstore, encode_cursor(0), count="0"), "ParameterInvalid"),
            (pull(server, logstore, encode_cursor(0), count="x"), "ParameterInvalid"),
            (pull(server, logstore, encode_cursor(0), format="xml"), "ParameterInvalid"),
            (
                server.request("GET", f"{logstore}/shards/0/cursor", params=[("from", "soon")]),
                "ParameterInvalid",
            ),
            (
                server.request("POST", f"{logstore}/shards/0/split", content=b"[]"),
                "PostBodyInvalid",
            ),
            (
                server.request("POST", f"{logstore}/shards/0/split", content=b'{"splitKey": "00"}'),
                "InvalidHashKey",
            ),
        ]
        # JSON nested deeper than the parser goes is bad input on every JSON call
        deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
        as_json = {"content-type": "application/json"}
        for path in (
            f"{logstore}/logs",
            f"{logstore}/index",
            f"{logstore}/query",
            f"{logstore}/consumergroups",
            f"{logstore}/shards/0/split",
            f"{API}/projects",
        ):
            answer = server.request("POST", path, content=deep, headers=as_json)
            cases.append((answer, "PostBodyInvalid"))
        for response, code in cases:
            assert_error(response, 400, code)


class TestAuthentication:
    def test_unsigned_and_wrongly_signed_requests(self, server: ServerProcess) -> None:
        path = f"{API}/projects"
        assert_error(server.request("GET", path, sign=False), 401, "Unauthorized")

        def signed(**overrides: object) -> dict[str, str]:
            options: dict[str, object] = {
                "access_key_id": server.access_key_id,
                "secret": server.access_key_secret,
                "method": "GET",
                "path": path,
                "params": [],
                "body": b"",
            }
            options.update(overrides)
            return sign_headers(**options)  # type: ignore[arg-type]

        def send(headers: dict[str, str], content: bytes = b"") -> httpx.Response:
            return httpx.request("GET", server.endpoint + path, headers=headers, content=content)

        assert send(signed()).status_code == 200
        assert_error(send(signed(secret="wrong")), 401, "SignatureNotMatch")
        assert_error(send(signed(access_key_id="LHNOSUCHKEY")), 401, "Unauthorized")
        assert_error(send(signed(path="/api/v1/other")), 401, "SignatureNotMatch")
        assert_error(send(signed(), content=b"tampered"), 401, "SignatureNotMatch")
        old = datetime.now(UTC) - timedelta(hours=1)
        assert_error(send(signed(now=old)), 403, "RequestTimeExpired")
        assert_error(send({"authorization": "Bearer x"}), 401, "Unauthorized")

    def test_health_needs_no_signature(self, server: ServerProcess) -> None:
        assert httpx.get(server.endpoint + "/healthz").json() == {"status": "ok"}
        metrics = httpx.get(server.endpoint + "/metrics").text
        assert "logharbor_http_requests_total" in metrics

    def test_root_key_is_private_and_printed(self, server: ServerProcess) -> None:
        keys_file = server.data_dir / "access-keys.json"
        assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
        banner = "".join(server.banner)
        assert server.access_key_id in banner and server.access_key_secret in banner

    def test_no_auth_mode(self, server_factory: Callable[..., ServerProcess]) -> None:
        open_server = server_factory(auth=False)
        assert "authentication: OFF" in "".join(open_server.banner)
        assert httpx.get(open_server.endpoint + f"{API}/projects").status_code == 200


def test_openapi_documents_every_route(server: ServerProcess) -> None:
    from logharbor.server import ServerConfig, create_app

    document = ok(server.request("GET", f"{API}/openapi.json"))
    assert document["openapi"] == "3.1.0"
    paths = document["paths"]
    app = create_app(ServerConfig(data_dir=server.data_dir.parent / "openapi-check"))
    # the web console is a page, not part of the API
    routes = [r for r in app.routes if not r.path.startswith("/console")]  # type: ignore[attr-defined]
    for route in routes:
        path = route.path
        assert path in paths, f"{path} is not documented"
        documented = {m.upper() for m in paths[path]}  # type: ignore[index]
        served = set(route.methods) - {"HEAD"}
        assert served == documented, path
    assert set(paths) == {r.path for r in routes}  # type: ignore[attr-defined]


def test_a_log_group_has_at_most_max_group_logs_logs(
    server_factory: Callable[..., ServerProcess], unique_name: Callable[[str], str]
) -> None:
    """Whoever decodes a log group pays for each of its logs (the indexer, pulls that
    decode): 50 MiB of empty logs would be 13 million. A log group has at most
    max_group_logs logs (a million by default), in every format."""
    server = server_factory(env={"LOGHARBOR_MAX_GROUP_LOGS": "1000"})
    project = unique_name("few")
    ok(server.request("POST", f"{API}/projects", content=json.dumps({"name": project}).encode()))
    body = json.dumps({"name": "access", "shardCount": 1}).encode()
    ok(server.request("POST", f"{API}/projects/{project}/logstores", content=body))
    path = f"{API}/projects/{project}/logstores/access"
    within = log_group_bytes(*({"n": "1"} for _ in range(1000)))
    ok(put(server, path, within))
    over = log_group_bytes(*({"n": "1"} for _ in range(1001)))
    message = assert_error(put(server, path, over), 413, "PostBodyTooLarge")
    assert "1001 logs exceeds the limit of 1000" in message
    document = {"logs": [{"contents": {"n": "1"}}] * 1001}
    response = put(server, path, json.dumps(document).encode(), content_type="application/json")
    assert_error(response, 413, "PostBodyTooLarge")
    assert end_position(server, path) == 1  # nothing of the refused ones is stored


class TestConfiguration:
    def test_precedence_file_then_env_then_command_line(self, tmp_path: Path) -> None:
        config_file = tmp_path / "logharbor.toml"
        config_file.write_text('[server]\nport = 1111\nhost = "127.0.0.2"\ndata_dir = "/f"\n')
        env = {"LOGHARBOR_PORT": "2222", "LOGHARBOR_NO_AUTH": "true"}
        config = load_config(config_file=config_file, env=env, overrides={"data_dir": "/cli"})
        assert (config.host, config.port, config.auth, str(config.data_dir)) == (
            "127.0.0.2",
            2222,
            False,
            "/cli",
        )

    def test_bad_settings_are_named(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="port"):
            load_config(env={"LOGHARBOR_PORT": "eighty"})
        config_file = tmp_path / "bad.toml"
        config_file.write_text("colour = 'blue'\n")
        with pytest.raises(ConfigError, match="colour"):
            load_config(config_file=config_file, env={})

    def test_server_from_config_file(
        self, server_factory: Callable[..., ServerProcess], tmp_path: Path
    ) -> None:
        config_file = tmp_path / "server.toml"
        config_file.write_text("[server]\nauth = false\nmax_body_bytes = 2000\n")
        proc = server_factory(extra_args=["--config", str(config_file)])
        assert "authentication: OFF" in "".join(proc.banner)

    def test_server_from_environment(self, server_factory: Callable[..., ServerProcess]) -> None:
        proc = server_factory(env={"LOGHARBOR_NO_AUTH": "1"})
        assert "authentication: OFF" in "".join(proc.banner)
