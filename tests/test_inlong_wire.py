"""InLong wire format and mapping, without a server: the captured frames of the spec
(§12) decode, every message type (1-8) decodes as §3 lays it out, the server's
replies read back as each SDK reads them, numeric ids map to names, and a batch
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
    attr_batch_frame,
    attr_items_body,
    binary_frame,
    cpp_item_attr,
    decode_binary_reply,
    decode_text_reply,
    go_batch,
    items_body,
    record_frame,
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
from logharbor.server.compat.inlong.ids import NumericIds
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
    assert wire.items(go).messages == payloads
    cpp = decode(binary_frame("grp", "st", payloads))
    assert isinstance(cpp, wire.DataRequest) and cpp.snappy and cpp.type_byte == 0x27
    assert wire.items(cpp).messages == payloads


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
        b"\x02\x00\x00\x00\x05ab\x00\x00\x00\x00",  # type 2, body length beyond the frame
        b"\x03\x00\x00\x00\x01a\x00\x00\x00\x00zz",  # type 3, bytes after the attributes
        b"\x04\x00\x00\x00",  # type 4, shorter than its fixed fields
        b"\x06\x00\x00\x00\x02ab\x00\x00\x00\x09a=b",  # type 6, attr length beyond
    ],
)
def test_garbage_is_a_frame_error(frame: bytes) -> None:
    with pytest.raises(wire.FrameError):
        wire.decode_frame(frame)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\x09" + b"\x00" * 8, "unknown_type"),
        (b"\x00\x01protobuf", "unknown_type"),
        (b"\x06\x00\x00\x00\x05ab", "malformed"),
        (binary_frame("grp", "st", [b"x"], magic=0xEE02)[4:], "bad_magic"),
    ],
)
def test_frame_errors_name_their_reason(frame: bytes, reason: str) -> None:
    with pytest.raises(wire.FrameError) as caught:
        wire.decode_frame(frame)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (text_frame(b"\x00\x00\x00\x09abc", "groupId=g&streamId=s"), 123),
        (text_frame(b"", "groupId=g&streamId=s"), 105),
        (text_frame(b"not snappy at all", "groupId=g&streamId=s&cp=snappy"), 96),
        (binary_frame("grp", "st", [b"x"], ext_field=0), 100),  # groupIdNum 0
        (binary_frame("grp", "st", [b"x"], ext_field=0, group_num=3, stream_num=1), 121),
        (binary_frame("grp", "st", [b"x"], ext_field=0x4 | 0x8), 112),
        (text_frame(items_body([b"x"]), "streamId=s"), 100),
        (text_frame(items_body([b"x"]), "groupId=g"), 101),
        (text_frame(items_body([b"x"]), "groupId=g&streamId=s&dt=soon"), 102),
        (text_frame(items_body([b"x"]), "groupId=g&streamId=s&dt=\u00b2"), 102),
        (text_frame(items_body([b"x"]), "groupId=g&streamId=s&dt=" + "9" * 5000), 102),
        (text_frame(b"", "groupId=g&streamId=s", 3), 105),
        (text_frame(b"x" * (17 << 10), "groupId=g&streamId=s", 4), 104),  # too big to echo
        (text_frame(b"not snappy", "groupId=g&streamId=s&cp=snappy", 2), 96),
        (text_frame(attr_items_body([(b"x", "a=1")])[:-2], "groupId=g&streamId=s", 6), 123),
        (text_frame(b"\x00\x00\x00\x01x\x00\x00", "groupId=g&streamId=s", 6), 123),
        (text_frame(b"\x00\x00\x00\x01x\x00\x00\x00\x09ab", "groupId=g&streamId=s", 6), 123),
    ],
)
def test_rejections_carry_inlong_codes(frame: bytes, code: int) -> None:
    request = decode(frame)
    assert isinstance(request, wire.DataRequest)
    with pytest.raises(Rejected) as caught:
        batch_of(request, "")
    assert caught.value.code == code


# ------------------------------------------------------- types 2, 3, 4 and 6


@pytest.mark.parametrize(
    ("msg_type", "records", "stored"),
    [
        (2, [b"one record"], [b"one record"]),
        (3, [b"a|1", b"b|2", b"c|3"], [b"a|1", b"b|2", b"c|3"]),  # cnt records, one per line
        (4, [b"ab", b"cd"], [b"abcd"]),  # type 4 packs records with nothing between them
        (3, [b"x" * 300, b"y" * 300], [b"x" * 300, b"y" * 300]),  # snappy
    ],
)
def test_single_record_types(msg_type: int, records: list[bytes], stored: list[bytes]) -> None:
    request = decode(record_frame("grp", "st", records, msg_type=msg_type, mid=7))
    assert isinstance(request, wire.DataRequest) and request.msg_type == msg_type
    batch, sid = batch_of(request, "192.0.2.2")
    assert list(batch.messages) == stored and sid and sid.startswith("0x")
    assert (batch.group_id, batch.stream_id, batch.time_ms) == ("grp", "st", 1795315307347)


@pytest.mark.parametrize(
    ("body", "attr", "stored"),
    [
        (b"line\n", "", [b"line"]),  # one trailing newline is not data
        (b"line\r\n", "", [b"line"]),
        (b"line\n\n", "", [b"line\n"]),  # only one
        (b"\n", "", [b""]),
        (b"\x08\x01\n", "&mt=pb", [b"\x08\x01\n"]),  # protobuf: kept as is
        (b"a\nb\nc", "&cnt=2", [b"a\nb\nc"]),  # not cnt lines: one record, uncut
        (b"a\nb", "&cnt=\u00b2", [b"a\nb"]),
        (b"a\nb", "&cnt=2&mt=pb", [b"a\nb"]),
    ],
)
def test_single_record_edges(body: bytes, attr: str, stored: list[bytes]) -> None:
    request = decode(text_frame(body, "groupId=g&streamId=st" + attr, 2))
    assert isinstance(request, wire.DataRequest)
    assert list(batch_of(request, "")[0].messages) == stored


def test_original_return_echoes_the_body_as_sent() -> None:
    frame = record_frame("grp", "st", [b"z" * 600], msg_type=4, extra="&wid=2")
    request = decode(frame)
    assert isinstance(request, wire.DataRequest) and "cp=snappy" in request.attr
    assert batch_of(request, "")[0].messages == [b"z" * 600]
    body = wire.reply_body(request)
    assert body == request.body  # compressed, as sent
    attr = wire.reply_attributes("127.0.0.1", request.attr, room=wire.reply_room(False, len(body)))
    reply = decode_text_reply(wire.text_reply(request.type_byte, attr, body))
    assert (reply.msg_type, reply.body, reply.attrs["mid"]) == (4, body, "1")
    for msg_type in (2, 3, 6):
        other = decode(text_frame(b"x", "groupId=g&streamId=s", msg_type))
        assert isinstance(other, wire.DataRequest) and wire.reply_body(other) == b"2"


def test_original_return_too_large_to_echo() -> None:
    request = decode(text_frame(b"x" * (20 << 10), "groupId=g&streamId=s&wid=0&mid=1", 4))
    assert isinstance(request, wire.DataRequest)
    assert wire.reply_body(request) == b""
    error = Rejected(DataProxyErrCode.BODY_EXCEED_MAX_LEN, "too large")
    attr = wire.reply_attributes("127.0.0.1", request.attr, error, room=wire.reply_room(False, 0))
    reply = decode_text_reply(wire.text_reply(4, attr, b""))
    assert reply.attrs["errCode"] == "104" and reply.body == b""


def test_multi_body_attr_items_keep_their_attributes() -> None:
    frame = attr_batch_frame(
        "grp", "st", [(b"first", cpp_item_attr()), (b"second", "k=v&__addcol3__zone=eu"), (b"", "")]
    )
    request = decode(frame)
    assert isinstance(request, wire.DataRequest) and request.msg_type == 6
    batch, _ = batch_of(request, "192.0.2.9")
    assert list(batch.messages) == [b"first", b"second", b""]
    assert [list(item) for item in batch.item_attributes] == [
        [("__addcol1__reptime", "202611220236"), ("__addcol2__ip", "192.0.2.2")],
        [("k", "v"), ("__addcol3__zone", "eu")],
        [],
    ]
    group: object = stored(batch)
    contents = [
        [(c.Key, c.Value) for c in log.Contents]
        for log in group.Logs  # type: ignore[attr-defined]
    ]
    assert contents == [
        [("reptime", b"202611220236"), ("ip", b"192.0.2.2"), (CONTENT_KEY, b"first")],
        [("zone", b"eu"), ("k", b"v"), (CONTENT_KEY, b"second")],
        [(CONTENT_KEY, b"")],
    ]


def test_binary_items_with_attributes() -> None:
    payloads = [f"item {i} ".encode() * 30 for i in range(20)]
    attrs = [cpp_item_attr(ip=f"10.0.0.{i}") for i in range(20)]
    request = decode(binary_frame("grp", "st", payloads, ext_field=0x5, item_attrs=attrs))
    assert isinstance(request, wire.DataRequest) and request.snappy
    batch, _ = batch_of(request, "")
    assert list(batch.messages) == payloads
    assert [dict(item)["__addcol2__ip"] for item in batch.item_attributes] == [
        f"10.0.0.{i}" for i in range(20)
    ]


def test_every_type_is_answered_in_its_own_layout() -> None:
    for msg_type in (2, 3, 4, 5, 6):
        request = decode(text_frame(items_body([b"x"]), "groupId=g&streamId=s&mid=9", msg_type))
        assert isinstance(request, wire.DataRequest) and not request.binary
        body = wire.reply_body(request)
        attr = wire.reply_attributes("127.0.0.1", request.attr, room=wire.reply_room(False))
        reply = decode_text_reply(wire.text_reply(request.type_byte, attr, body))
        assert (reply.msg_type, reply.attrs["mid"]) == (msg_type, "9")


# ---------------------------------------------------------------- numeric ids

IDS = "1=shop_web, 1.1=access, 1.2=errors, 7=b.group.01, 7.65535=stream-1"


def test_numeric_ids_map_to_the_same_batch_as_names() -> None:
    ids = NumericIds.parse(IDS)
    named = decode(binary_frame("shop_web", "errors", [b"x", b"y"], uniq=4, data_time=100))
    numbered = decode(
        binary_frame(
            "", "", [b"x", b"y"], uniq=4, data_time=100, ext_field=0, attr="", group_num=1,
            stream_num=2,
        )
    )  # fmt: skip
    assert isinstance(named, wire.DataRequest) and isinstance(numbered, wire.DataRequest)
    assert batch_of(numbered, "h", ids) == batch_of(named, "h", ids)
    attr_too = decode(
        binary_frame(
            "shop_web", "errors", [b"x"], ext_field=0, attr="streamId=errors&k=v", group_num=1,
            stream_num=2,
        )
    )  # fmt: skip
    assert isinstance(attr_too, wire.DataRequest)
    batch, _ = batch_of(attr_too, "h", ids)
    assert list(batch.attributes) == [("groupId", "shop_web"), ("streamId", "errors"), ("k", "v")]
    with_strings = decode(binary_frame("g2", "s2", [b"x"], group_num=1, stream_num=1))
    assert isinstance(with_strings, wire.DataRequest)  # extField 0x4: the numbers are ignored
    assert batch_of(with_strings, "h", ids)[0].group_id == "g2"


@pytest.mark.parametrize(
    ("group_num", "stream_num", "attr", "code"),
    [
        (0, 1, "", 100),
        (2, 1, "", 121),
        (1, 3, "", 121),
        (1, 0, "", 101),
        (1, 1, "groupId=other", 122),
        (1, 1, "streamId=errors", 122),
    ],
)
def test_numeric_id_refusals(group_num: int, stream_num: int, attr: str, code: int) -> None:
    frame = binary_frame(
        "", "", [b"x"], ext_field=0, attr=attr, group_num=group_num, stream_num=stream_num
    )
    request = decode(frame)
    assert isinstance(request, wire.DataRequest)
    with pytest.raises(Rejected) as caught:
        batch_of(request, "", NumericIds.parse(IDS))
    assert caught.value.code == code


@pytest.mark.parametrize(
    "text",
    [
        "1",
        "1=",
        "x=grp",
        "0=grp",
        "65536=grp",
        "1.2.3=st",
        "1=grp,1=other",
        "1.1=st",  # no group 1
        "1=grp,1.1=a b",  # not a logstore name
        "1=Upper_Case",
    ],
)
def test_bad_numeric_id_settings(text: str) -> None:
    with pytest.raises(ValueError):
        NumericIds.parse(text)


def test_empty_numeric_id_setting() -> None:
    ids = NumericIds.parse(" , ")
    assert ids.groups == {} and ids.streams == {}


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


def test_odd_addcol_keys_are_plain_tags() -> None:
    odd = [("__addcol" + "9" * 5000 + "__x", "1"), ("__addcol\u0663__y", "2")]
    group: object = stored(InLongBatch("grp", "st", [b"m"], odd, item_attributes=[odd]))
    log = group.Logs[0]  # type: ignore[attr-defined]
    assert [c.Key for c in log.Contents] == [key for key, _ in odd] + [CONTENT_KEY]
    assert [t.Key for t in group.LogTags] == [key for key, _ in odd]  # type: ignore[attr-defined]


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
