"""The SDK's models: logs and log groups, cursors, resources and pull results."""

from __future__ import annotations

import time

import httpx
import pytest

from logharbor import (
    Cursor,
    DecodingError,
    InvalidCursorError,
    LogGroup,
    LogItem,
    Logstore,
    Project,
    PullLogsResult,
    Shard,
)
from logharbor.client._requests import pull_logs
from logharbor.protocol import schema
from logharbor.protocol.codec import Compression, compress, encode_frame

NS = 1_000_000_000


# ------------------------------------------------------------------ LogItem


def test_a_log_item_keeps_contents_as_ordered_pairs_whether_given_a_dict_or_pairs() -> None:
    from_dict = LogItem({"b": "2", "a": "1"}, time_ns=5)
    from_pairs = LogItem([("b", "2"), ("a", "1")], time_ns=5)

    assert from_dict.contents == (("b", "2"), ("a", "1"))
    assert from_dict == from_pairs


def test_a_log_item_may_repeat_a_key_and_get_returns_the_first() -> None:
    item = LogItem([("k", "first"), ("k", "second")], time_ns=0)

    assert item.get("k") == "first"
    assert item.get("missing") is None
    assert item.get("missing", "default") == "default"


def test_a_log_item_splits_its_nanosecond_time_into_seconds_and_the_rest() -> None:
    item = LogItem({}, time_ns=1_700_000_000_123_456_789)

    assert item.time == 1_700_000_000
    assert item.time_ns_part == 123_456_789


def test_a_log_item_without_a_time_is_stamped_now() -> None:
    before = time.time_ns()
    item = LogItem({"k": "v"})
    after = time.time_ns()

    assert before <= item.time_ns <= after


@pytest.mark.parametrize("contents", [{"k": 1}, [("k", None)], {3: "v"}])
def test_a_log_item_refuses_contents_that_are_not_strings(contents: object) -> None:
    with pytest.raises(TypeError):
        LogItem(contents, time_ns=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("time_ns", [-1, (1 << 32) * NS])
def test_a_log_item_refuses_a_time_the_wire_format_cannot_hold(time_ns: int) -> None:
    with pytest.raises(ValueError):
        LogItem({}, time_ns=time_ns)


def test_a_log_item_refuses_a_time_that_is_not_an_int_of_nanoseconds() -> None:
    with pytest.raises(TypeError):
        LogItem({}, time_ns=1.5)  # type: ignore[arg-type]


# ----------------------------------------------------------------- LogGroup


def _sample_group() -> LogGroup:
    return LogGroup(
        [
            LogItem(
                [("msg", "héllo 世界 🚀"), ("z", ""), ("a", "x")], time_ns=1_700_000_000_000_000_001
            ),
            LogItem({"level": "warn"}, time_ns=1_700_000_001_999_999_999),
        ],
        topic="web",
        source="10.0.0.1",
        tags=[("host", "h1"), ("env", "prod")],
    )


def test_a_log_group_round_trips_through_protobuf_exactly() -> None:
    group = _sample_group()

    assert LogGroup.from_protobuf(group.to_protobuf()) == group


def test_a_log_group_uses_the_sls_wire_layout_of_seconds_plus_nanosecond_part() -> None:
    wire = schema.LogGroup.FromString(_sample_group().to_protobuf())

    assert wire.Topic == "web" and wire.Source == "10.0.0.1"
    assert [(t.Key, t.Value) for t in wire.LogTags] == [("host", "h1"), ("env", "prod")]
    assert (wire.Logs[1].Time, wire.Logs[1].Time_ns) == (1_700_000_001, 999_999_999)
    assert [(c.Key, c.Value) for c in wire.Logs[0].Contents] == [
        ("msg", "héllo 世界 🚀"),
        ("z", ""),
        ("a", "x"),
    ]


def test_a_log_group_takes_tags_as_a_dict_too() -> None:
    assert LogGroup([], tags={"a": "1"}).tags == (("a", "1"),)


def test_a_log_group_holds_only_log_items() -> None:
    with pytest.raises(TypeError, match="LogItems, not dict"):
        LogGroup([{"k": "v"}])  # type: ignore[list-item]


def test_values_that_are_not_utf8_decode_to_replacement_characters_instead_of_failing() -> None:
    raw = schema.RawLogGroup()
    log = raw.Logs.add(Time=1)
    log.Contents.add(Key="bin", Value=b"ok\xff\xfe")

    group = LogGroup.from_protobuf(raw.SerializeToString())

    assert group.logs[0].contents == (("bin", "ok\ufffd\ufffd"),)


def test_a_log_group_without_a_nanosecond_part_has_whole_seconds() -> None:
    raw = schema.LogGroup()
    raw.Logs.add(Time=42)

    assert LogGroup.from_protobuf(raw.SerializeToString()).logs[0].time_ns == 42 * NS


def test_bytes_that_are_no_log_group_raise_decoding_error() -> None:
    with pytest.raises(DecodingError):
        LogGroup.from_protobuf(b"\xff\xff\xff\xff")


# ------------------------------------------------------------------- Cursor


def test_a_cursor_is_a_string_with_the_position_inside() -> None:
    cursor = Cursor.from_position(1234)

    assert isinstance(cursor, str)
    assert cursor == "MTIzNA=="
    assert cursor.position == 1234
    assert Cursor("MA==").position == 0
    assert repr(cursor) == "Cursor('MTIzNA==')"


@pytest.mark.parametrize("text", ["not a cursor", "", "YWJj"])  # "YWJj" is base64 of "abc"
def test_a_string_that_is_no_cursor_has_no_position(text: str) -> None:
    with pytest.raises(InvalidCursorError):
        _ = Cursor(text).position


# ---------------------------------------------------------------- resources


def test_resources_parse_from_the_apis_camel_case_json() -> None:
    project = Project.from_json(
        {"name": "web", "description": "d", "createTime": 1, "updateTime": 2}
    )
    logstore = Logstore.from_json(
        {
            "project": "web",
            "name": "access",
            "ttl": 7,
            "shardCount": 4,
            "autoSplit": True,
            "maxSplitShard": 8,
            "createTime": 1,
            "updateTime": 2,
        }
    )
    shard = Shard.from_json(
        {
            "shardId": 3,
            "status": "readonly",
            "beginKey": "0" * 32,
            "endKey": "8" + "0" * 31,
            "createTime": 1,
            "parents": [0],
            "children": [4, 5],
        }
    )

    assert project == Project("web", "d", 1, 2)
    assert logstore == Logstore("web", "access", 7, 4, True, 8, 1, 2)
    assert shard == Shard(3, "readonly", "0" * 32, "8" + "0" * 31, 1, (0,), (4, 5))
    assert not shard.writable


def test_a_shard_holds_keys_from_its_begin_up_to_but_excluding_its_end() -> None:
    first = Shard(0, "readwrite", "0" * 32, "8" + "0" * 31, 0)

    assert first.contains("0" * 32)
    assert first.contains("7" + "F" * 31)  # case does not matter
    assert not first.contains("8" + "0" * 31)


def test_the_last_shard_also_holds_the_largest_key() -> None:
    last = Shard(1, "readwrite", "8" + "0" * 31, "f" * 32, 0)

    assert last.contains("f" * 32)


# ---------------------------------------------------------------- pulling


def _frame(position: int, group: LogGroup, compression: Compression = Compression.LZ4) -> bytes:
    raw = group.to_protobuf()
    payload = compress(raw, compression)
    return encode_frame(position, 1_000 + position, len(raw), len(group.logs), compression, payload)


def _pull_response(body: bytes, *, next_position: int, status: str = "readwrite") -> httpx.Response:
    headers = {
        "x-lh-next-cursor": Cursor.from_position(next_position),
        "x-lh-end-cursor": Cursor.from_position(2),
        "x-lh-count": "2",
        "x-lh-log-count": "3",
        "x-lh-raw-size": "100",
        "x-lh-shard-status": status,
    }
    return httpx.Response(200, headers=headers, content=body)


def _read_pull(response: httpx.Response) -> PullLogsResult:
    call = pull_logs("p", "l", 0, "MA==", count=10, max_bytes=None, end_cursor=None, wait_ms=0)
    return call.answer(response)


def test_a_pull_answer_yields_each_stored_log_group_with_its_cursor_and_receive_time() -> None:
    first = LogGroup([LogItem({"n": "1"}, time_ns=1), LogItem({"n": "2"}, time_ns=2)], topic="a")
    second = LogGroup([LogItem({"n": "3"}, time_ns=3)], topic="b")
    body = _frame(0, first) + _frame(1, second, Compression.ZSTD)

    result = _read_pull(_pull_response(body, next_position=2))

    assert [g.cursor for g in result.log_groups] == ["MA==", "MQ=="]
    assert [g.receive_time_ns for g in result.log_groups] == [1_000, 1_001]
    assert [g.log_group for g in result.log_groups] == [first, second]
    assert [log.get("n") for log in result.logs] == ["1", "2", "3"]
    assert result.log_groups[0].next_cursor == result.log_groups[1].cursor
    assert (result.count, result.log_count, result.raw_size) == (2, 3, 100)
    assert result.caught_up and not result.shard_finished


def test_a_readonly_shard_read_to_its_end_is_finished() -> None:
    result = _read_pull(_pull_response(b"", next_position=2, status="readonly"))

    assert result.log_groups == ()
    assert result.shard_finished


def test_a_frame_with_a_bad_checksum_fails_the_pull() -> None:
    body = bytearray(_frame(0, _sample_group()))
    body[-1] ^= 0xFF

    with pytest.raises(DecodingError):
        _read_pull(_pull_response(bytes(body), next_position=1))


def test_log_groups_are_decoded_only_when_read() -> None:
    corrupt = encode_frame(0, 0, 50, 1, Compression.LZ4, b"\xff not lz4 at all")

    result = _read_pull(_pull_response(corrupt, next_position=1))

    assert result.log_groups[0].log_count == 1  # frame headers are read eagerly
    with pytest.raises(DecodingError):
        _ = result.log_groups[0].log_group


def test_a_pull_answer_missing_its_headers_raises_decoding_error() -> None:
    with pytest.raises(DecodingError):
        _read_pull(httpx.Response(200, content=b""))
