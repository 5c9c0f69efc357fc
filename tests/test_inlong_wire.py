"""InLong wire format and mapping, without a server: the captured frames of the spec
(§12) decode, the server's replies read back as each SDK reads them, and a batch
becomes the log group docs/inlong.md describes."""

from __future__ import annotations

import struct

import cramjam
import lz4.block
import pytest

from inlong_frames import (
    GO_HEARTBEAT,
    GOLDEN_CPP_FRAME,
    GOLDEN_CPP_HEARTBEAT,
    GOLDEN_CPP_HEARTBEAT_REPLY,
    GOLDEN_CPP_REPLY,
    GOLDEN_GO_FRAME,
    GOLDEN_GO_REPLY,
    binary_frame,
    decode_binary_reply,
    decode_text_reply,
    go_batch,
    items_body,
    text_frame,
)
from logharbor.engine import Limits
from logharbor.engine.dedupe import RecentIds
from logharbor.engine.mapping import (
    CONTENT_KEY,
    InLongBatch,
    inlong_log_group,
    inlong_names,
)
from logharbor.protocol.errors import ErrorCode, ServiceError
from logharbor.protocol.schema import RawLogGroup
from logharbor.server.compat.inlong import wire
from logharbor.server.compat.inlong.codes import DataProxyErrCode, Rejected
from logharbor.server.compat.inlong.listener import batch_of, reads_error_code

GO_MID = "66ddfe02-3c4d-4612-9635-47096ba765ca"


def decode(frame: bytes) -> wire.Frame:
    (length,) = struct.unpack_from(">I", frame)
    assert length == len(frame) - 4
    return wire.decode_frame(frame[4:])


def test_test_encoder_reproduces_the_captured_frames() -> None:
    go = go_batch(
        "test_group",
        "s_sync",
        [b"sync-1\n"],
        mid=GO_MID,
        dt=1795315307347,
        add_columns={"__addcol1__ip": "192.0.2.2"},
    )
    assert go.frame == GOLDEN_GO_FRAME
    cpp = binary_frame("g1", "s1", [b"hello", b"world|2"], uniq=1, data_time=0x6B025671)
    assert cpp == GOLDEN_CPP_FRAME


def test_golden_go_frame() -> None:
    request = decode(GOLDEN_GO_FRAME)
    assert isinstance(request, wire.DataRequest) and not request.binary
    batch, sid = batch_of(request, "192.0.2.2")
    assert (batch.group_id, batch.stream_id, sid) == ("test_group", "s_sync", GO_MID)
    assert list(batch.messages) == [b"sync-1"]
    assert batch.time_ms == 1795315307347
    assert reads_error_code(request)


def test_golden_cpp_frame_and_reply() -> None:
    request = decode(GOLDEN_CPP_FRAME)
    assert isinstance(request, wire.DataRequest) and request.binary
    batch, sid = batch_of(request, "192.0.2.2")
    assert (batch.group_id, batch.stream_id, sid) == ("g1", "s1", None)
    assert list(batch.messages) == [b"hello", b"world|2"]
    assert batch.time_ms == 0x6B025671 * 1000
    assert not reads_error_code(request)
    attr = wire.reply_attributes("127.0.0.1", request.attr, room=wire.reply_room(True))
    reply = wire.binary_reply(request.uniq, attr)
    assert reply == GOLDEN_CPP_REPLY
    assert decode_binary_reply(reply).uniq == 1


def test_go_reply_echoes_mid_and_wid() -> None:
    request = decode(GOLDEN_GO_FRAME)
    assert isinstance(request, wire.DataRequest)
    attr = wire.reply_attributes("127.0.0.1", request.attr, room=wire.reply_room(False))
    ours = decode_text_reply(wire.text_reply(request.type_byte, attr))
    captured = decode_text_reply(GOLDEN_GO_REPLY)
    assert ours.body == captured.body == b"2"
    assert ours.msg_type == captured.msg_type == 5
    for key in ("groupId", "streamId", "mid", "wid", "dt", "sid"):
        assert ours.attrs[key] == captured.attrs[key]
    assert "errCode" not in ours.attrs


def test_error_reply_is_readable_by_go() -> None:
    request = decode(go_batch("grp", "st", [b"x"], wid=3).frame)
    assert isinstance(request, wire.DataRequest)
    error = Rejected(DataProxyErrCode.TOPIC_IS_BLANK, "no logstore a=b&c")
    attr = wire.reply_attributes("10.0.0.1", request.attr, error, room=wire.reply_room(False))
    reply = decode_text_reply(wire.text_reply(5, attr))
    assert reply.attrs["errCode"] == "113"
    assert reply.attrs["wid"] == "3"
    assert "=" not in reply.attrs["errMsg"] and "&" not in reply.attrs["errMsg"]


def test_reply_stays_under_the_cpp_limit_with_huge_attributes() -> None:
    request = decode(go_batch("grp", "st", [b"x"], extra="&pad=" + "y" * 60_000).frame)
    assert isinstance(request, wire.DataRequest)
    attr = wire.reply_attributes("127.0.0.1", request.attr, room=wire.reply_room(False))
    reply = wire.text_reply(5, attr)
    assert len(reply) < 32 << 10
    decoded = decode_text_reply(reply)
    assert decoded.attrs["mid"] and decoded.attrs["wid"] == "0"


def test_heartbeats() -> None:
    assert isinstance(decode(GO_HEARTBEAT), wire.Heartbeat)
    heartbeat = decode(GOLDEN_CPP_HEARTBEAT)
    assert isinstance(heartbeat, wire.BinaryHeartbeat)
    assert wire.binary_heartbeat_reply(heartbeat.data_time, 30) == GOLDEN_CPP_HEARTBEAT_REPLY


def test_snappy_batches() -> None:
    payloads = [f"line {i} ".encode() * 20 for i in range(50)]
    go = decode(go_batch("grp", "st", payloads).frame)
    assert isinstance(go, wire.DataRequest) and go.snappy
    assert wire.messages(go) == payloads
    cpp = decode(binary_frame("grp", "st", payloads))
    assert isinstance(cpp, wire.DataRequest) and cpp.snappy and cpp.type_byte == 0x27
    assert wire.messages(cpp) == payloads


@pytest.mark.parametrize(
    "frame",
    [
        b"\x09" + b"\x00" * 8,  # unknown type
        b"\x05\x00\x00\x00\x10abc\x00\x00\x00\x00",  # body length beyond the frame
        b"\x05\x00\x00\x00\x01a\x00\x00\x00\x05ab",  # attr length beyond the frame
        binary_frame("grp", "st", [b"x"], magic=0xEE02)[4:],
        binary_frame("grp", "st", [b"x"])[4:-3],  # truncated
        b"GET / HTTP/1.1\r\n",
        b"\x00\x01protobuf",
    ],
)
def test_garbage_is_a_frame_error(frame: bytes) -> None:
    with pytest.raises(wire.FrameError):
        wire.decode_frame(frame)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (text_frame(b"\x00\x00\x00\x09abc", "groupId=g&streamId=s"), 123),
        (text_frame(b"", "groupId=g&streamId=s"), 105),
        (text_frame(b"not snappy at all", "groupId=g&streamId=s&cp=snappy"), 96),
        (binary_frame("grp", "st", [b"x"], ext_field=0), 121),
        (binary_frame("grp", "st", [b"x"], ext_field=0x4 | 0x8), 112),
        (text_frame(items_body([b"x"]), "streamId=s"), 100),
        (text_frame(items_body([b"x"]), "groupId=g"), 101),
        (text_frame(items_body([b"x"]), "groupId=g&streamId=s&dt=soon"), 102),
    ],
)
def test_rejections_carry_inlong_codes(frame: bytes, code: int) -> None:
    request = decode(frame)
    assert isinstance(request, wire.DataRequest)
    with pytest.raises(Rejected) as caught:
        batch_of(request, "")
    assert caught.value.code == code


def test_snappy_bomb_is_refused_before_inflating() -> None:
    bomb = bytes(cramjam.snappy.compress_raw(b"\x00" * (9 << 20)))
    with pytest.raises(Rejected) as caught:
        wire.snappy_decode(bomb)
    assert caught.value.code == DataProxyErrCode.BODY_EXCEED_MAX_LEN


# ------------------------------------------------------------------- mapping


def stored(batch: InLongBatch, now: int = 1_700_000_000_123_456_789) -> object:
    group = inlong_log_group(batch, Limits(), now=now)
    raw = lz4.block.decompress(group.payload, uncompressed_size=group.raw_size)
    parsed = RawLogGroup.FromString(raw)
    assert parsed.IsInitialized()
    assert group.log_count == len(parsed.Logs)
    return parsed


def test_batch_becomes_one_log_group() -> None:
    batch = InLongBatch(
        "test_group",
        "s_sync",
        [b"a|b|c", b"\xff\xfe not utf-8", b""],
        [
            ("groupId", "test_group"),
            ("streamId", "s_sync"),
            ("dt", "1795315307347"),
            ("mid", "m1"),
            ("sid", "m1"),
            ("wid", "0"),
            ("cnt", "3"),
            ("cp", "snappy"),
            ("__addcol2__zone", "eu"),
            ("__addcol1__ip", "192.0.2.2"),
            ("__addcol3_", "x"),
        ],
        1795315307347,
        "192.0.2.9",
    )
    group: object = stored(batch)
    logs = group.Logs  # type: ignore[attr-defined]
    assert [log.Contents[-1].Value for log in logs] == [b"a|b|c", b"\xff\xfe not utf-8", b""]
    for log in logs:
        assert log.Time == 1795315307 and log.Time_ns == 347_000_000
        assert [(c.Key, c.Value) for c in log.Contents[:-1]] == [
            ("ip", b"192.0.2.2"),
            ("zone", b"eu"),
            ("__addcol3__", b"x"),
        ]
        assert log.Contents[-1].Key == CONTENT_KEY
    assert group.Source == "192.0.2.9"  # type: ignore[attr-defined]
    tags = [(t.Key, t.Value) for t in group.LogTags]  # type: ignore[attr-defined]
    assert tags == [
        ("groupId", "test_group"),
        ("streamId", "s_sync"),
        ("dt", "1795315307347"),
        ("sid", "m1"),
    ]


def test_batch_without_dt_gets_the_receive_time() -> None:
    group: object = stored(InLongBatch("grp", "st", [b"x"]), now=1_700_000_000_123_456_789)
    log = group.Logs[0]  # type: ignore[attr-defined]
    assert (log.Time, log.Time_ns) == (1_700_000_000, 123_456_789)


def test_oversized_batch_is_refused() -> None:
    batch = InLongBatch("grp", "st", [b"x" * 2000])
    with pytest.raises(ServiceError) as caught:
        inlong_log_group(batch, Limits(max_raw_bytes=1000), now=0)
    assert caught.value.code is ErrorCode.RAW_SIZE_TOO_LARGE


def test_names() -> None:
    assert inlong_names("test_group", "s_sync") == ("test-group", "s_sync")
    assert inlong_names("b.group.01", "stream-1") == ("b-group-01", "stream-1")
    for group, stream in (("g1", "st"), ("Upper_Case", "st"), ("grp", "x"), ("grp", "a b")):
        with pytest.raises(ServiceError) as caught:
            inlong_names(group, stream)
        assert caught.value.code is ErrorCode.INVALID_NAME


def test_recent_ids_are_bounded_by_count_and_age() -> None:
    now = [0]
    recent: RecentIds[str] = RecentIds(max_entries=3, ttl=10, clock=lambda: now[0])
    for key in "abcd":
        recent.put(key, key.upper())
    assert recent.get("a") is None and recent.get("d") == "D" and len(recent) == 3
    now[0] = 11 * 10**9
    assert recent.get("d") is None and len(recent) == 0
    recent.put("e", "E")
    recent.discard("e", "other")
    assert recent.get("e") == "E"
    recent.discard("e", "E")
    assert recent.get("e") is None
