"""The InLong DataProxy v0 TCP wire format (../shared/specs/inlong.md §3-§5): pure
functions from frame bytes to requests and from answers to reply bytes.

Every frame is ``uint32 length | payload``, big-endian; the payload starts with
the message type (``MsgType``, in its low 5 bits):

- 1 heartbeat and 8 binary heartbeat: answered at once, nothing stored;
- 2 common, 3 ack service and 4 original return: the text layout holding one
  record (2 and 3: or ``cnt`` records joined by ``\\n``); the answer to 4
  echoes the body as sent;
- 5 multi-body and 6 multi-body with attributes: the text layout, the body
  made of ``uint32 len | item`` (6: each followed by ``uint32 attrLen | attr``);
- 7 binary multi-body: the binary layout, items as 5 (as 6 with extField 0x1).

Two errors are told apart:

- ``FrameError``: the bytes are not an InLong frame (unknown type, lengths that
  do not add up, a bad magic).  The connection is closed and nothing is stored.
- ``Rejected``: a well-formed frame whose content is refused (missing group,
  corrupt snappy, no items...).  It gets an InLong error code.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

import cramjam

from ....protocol.codec import parse_decimal
from .codes import DataProxyErrCode, Rejected

MAX_FRAME_BYTES = 512 << 10  # as the shipped dataproxy.conf (max-msg-length)
MAX_BODY_BYTES = 8 << 20  # a body once snappy-decoded
MAX_REPLY_BYTES = 32 << 10  # the C++ SDK reads at most 32 KiB (Go: 64 KiB)
# A type 4 answer carries the body back; beyond this it would not leave room for
# the attributes within MAX_REPLY_BYTES, so such a request is refused instead.
MAX_ECHO_BYTES = MAX_REPLY_BYTES // 2
BINARY_MAGIC = 0xEE01
SNAPPY_FLAG = 0x20
HEARTBEAT_REPLY = b"\x00\x00\x00\x01\x01"
NO_LOAD = 0xFFFF

# Kept in a reply whose full attributes would make it too large.
_ESSENTIAL_ATTRIBUTES = ("groupId", "streamId", "dt", "mid", "sid", "wid", "cnt")
_TEXT_HEAD = struct.Struct(">BI")  # type, bodyLen
_BINARY_HEAD = struct.Struct(">BHHHIHII")  # type, groupIdNum, streamIdNum, extField,
# dataTime, cnt, uniq, bodyLen
_BINARY_HEARTBEAT_HEAD = struct.Struct(">BIBI")  # type, dataTime, bodyVer, bodyLen
_ITEM_LENGTH = struct.Struct(">I")

EXT_ITEM_ATTRIBUTES = 0x1
EXT_TRACE = 0x2
EXT_IDS_AS_STRINGS = 0x4
EXT_UNSUPPORTED = 0x8 | 0x10  # index and file-check messages


class MsgType(IntEnum):
    """InLong's ``MsgType`` (``type & 0x1F``); ``label`` names it in metrics."""

    HEARTBEAT = 1
    COMMON_SERVICE = 2
    ACK_SERVICE = 3
    ORIGINAL_RETURN = 4
    MULTI_BODY = 5
    MULTI_BODY_ATTR = 6
    BIN_MULTI_BODY = 7
    BIN_HEARTBEAT = 8

    @property
    def label(self) -> str:
        return self.name.lower()


SINGLE_RECORD_TYPES = frozenset(
    {MsgType.COMMON_SERVICE, MsgType.ACK_SERVICE, MsgType.ORIGINAL_RETURN}
)
TEXT_DATA_TYPES = SINGLE_RECORD_TYPES | {MsgType.MULTI_BODY, MsgType.MULTI_BODY_ATTR}


class FrameError(Exception):
    """Not an InLong frame: close the connection, store nothing.

    ``reason`` says which way, for the metrics: ``frame_length`` (length prefix
    0 or over the cap), ``unknown_type``, ``malformed`` (fields that do not add
    up to the frame), ``bad_magic``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Type 1 (Go): answered with ``HEARTBEAT_REPLY``."""


@dataclass(frozen=True, slots=True)
class BinaryHeartbeat:
    """Type 8 (C++): answered with a load."""

    data_time: int


@dataclass(frozen=True, slots=True)
class DataRequest:
    """Data to store: a text-layout frame (types 2-6) or a binary one (type 7)."""

    type_byte: int  # as sent; text replies reuse it, binary ones send 7
    binary: bool
    body: bytes  # as sent, possibly snappy-compressed
    attr: str  # the request's attributes as sent
    uniq: int = 0  # binary: echoed in the reply
    ext_field: int = 0
    data_time: int = 0  # binary: seconds
    snappy: bool = False
    group_num: int = 0  # binary: groupIdNum / streamIdNum
    stream_num: int = 0

    @property
    def msg_type(self) -> MsgType:
        return MsgType(self.type_byte & 0x1F)

    @property
    def attributes(self) -> list[tuple[str, str]]:
        return parse_attributes(self.attr)

    @property
    def numeric_ids(self) -> bool:
        """Whether the group and stream are given by number (binary, no extField 0x4)."""
        return self.binary and not self.ext_field & EXT_IDS_AS_STRINGS

    @property
    def item_attributes(self) -> bool:
        """Whether every item is followed by its own attributes (type 6, extField 0x1)."""
        if self.binary:
            return bool(self.ext_field & EXT_ITEM_ATTRIBUTES)
        return self.msg_type == MsgType.MULTI_BODY_ATTR


Frame = Heartbeat | BinaryHeartbeat | DataRequest


def parse_attributes(attr: str) -> list[tuple[str, str]]:
    """``k=v&k=v`` pairs in order; a pair without ``=`` has an empty value."""
    pairs = []
    for part in attr.split("&"):
        if part:
            key, _, value = part.partition("=")
            pairs.append((key, value))
    return pairs


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def decode_frame(frame: bytes) -> Frame:
    """The request in one frame (the bytes after the length prefix)."""
    if not frame:
        raise FrameError("malformed", "empty frame")
    try:
        kind = MsgType(frame[0] & 0x1F)
    except ValueError:
        raise FrameError("unknown_type", f"unsupported message type {frame[0]:#04x}") from None
    if kind == MsgType.BIN_MULTI_BODY:
        return _binary(frame)
    if kind == MsgType.BIN_HEARTBEAT:
        return _binary_heartbeat(frame)
    body, attr = _text_layout(frame)
    if kind == MsgType.HEARTBEAT:
        return Heartbeat()
    attr_text = _text(attr)
    snappy = any(k == "cp" and v == "snappy" for k, v in parse_attributes(attr_text))
    return DataRequest(frame[0], False, body, attr_text, snappy=snappy)


def _text_layout(frame: bytes) -> tuple[bytes, bytes]:
    # type | uint32 bodyLen | body | uint32 attrLen | attr
    if len(frame) < 9:
        raise FrameError("malformed", "text frame shorter than its fixed fields")
    _, body_len = _TEXT_HEAD.unpack_from(frame)
    attr_at = 5 + body_len
    if attr_at + 4 > len(frame):
        raise FrameError("malformed", "text frame body length exceeds the frame")
    (attr_len,) = struct.unpack_from(">I", frame, attr_at)
    if attr_at + 4 + attr_len != len(frame):
        raise FrameError("malformed", "text frame lengths do not add up to the frame length")
    return frame[5:attr_at], frame[attr_at + 4 :]


def _binary(frame: bytes) -> DataRequest:
    # see _BINARY_HEAD, then body | uint16 attrLen | attr | uint16 magic
    if len(frame) < _BINARY_HEAD.size + 4:
        raise FrameError("malformed", "binary frame shorter than its fixed fields")
    type_byte, group_num, stream_num, ext, data_time, _, uniq, body_len = _BINARY_HEAD.unpack_from(
        frame
    )
    attr_at = _BINARY_HEAD.size + body_len
    if attr_at + 4 > len(frame):
        raise FrameError("malformed", "binary frame body length exceeds the frame")
    (attr_len,) = struct.unpack_from(">H", frame, attr_at)
    if attr_at + 2 + attr_len + 2 != len(frame):
        raise FrameError("malformed", "binary frame lengths do not add up to the frame length")
    if struct.unpack_from(">H", frame, len(frame) - 2)[0] != BINARY_MAGIC:
        raise FrameError("bad_magic", "binary frame without the 0xEE01 magic")
    return DataRequest(
        type_byte,
        True,
        frame[_BINARY_HEAD.size : attr_at],
        _text(frame[attr_at + 2 : attr_at + 2 + attr_len]),
        uniq=uniq,
        ext_field=ext,
        data_time=data_time,
        snappy=bool(type_byte & SNAPPY_FLAG),
        group_num=group_num,
        stream_num=stream_num,
    )


def _binary_heartbeat(frame: bytes) -> BinaryHeartbeat:
    # type | uint32 dataTime | uint8 bodyVer | uint32 bodyLen | body | uint16 attrLen | attr
    # | uint16 magic
    if len(frame) < _BINARY_HEARTBEAT_HEAD.size + 4:
        raise FrameError("malformed", "binary heartbeat shorter than its fixed fields")
    _, data_time, _, body_len = _BINARY_HEARTBEAT_HEAD.unpack_from(frame)
    attr_at = _BINARY_HEARTBEAT_HEAD.size + body_len
    if attr_at + 4 > len(frame):
        raise FrameError("malformed", "binary heartbeat body length exceeds the frame")
    (attr_len,) = struct.unpack_from(">H", frame, attr_at)
    if attr_at + 2 + attr_len + 2 != len(frame):
        raise FrameError("malformed", "binary heartbeat lengths do not add up to the frame length")
    if struct.unpack_from(">H", frame, len(frame) - 2)[0] != BINARY_MAGIC:
        raise FrameError("bad_magic", "binary heartbeat without the 0xEE01 magic")
    return BinaryHeartbeat(data_time)


# ---------------------------------------------------------------- request bodies


@dataclass(frozen=True, slots=True)
class Items:
    """The records of a data request, and each one's own attributes when the
    layout carries them (type 6, binary extField 0x1)."""

    messages: list[bytes]
    attributes: list[list[tuple[str, str]]] | None = None


def items(request: DataRequest) -> Items:
    """The records of a request body, decompressed; ``Rejected`` when they are invalid."""
    if request.binary and request.ext_field & EXT_UNSUPPORTED:
        raise Rejected(
            DataProxyErrCode.UNSUPPORTED_EXTEND_FIELD_VALUE,
            f"extField {request.ext_field:#x}: index and file-check messages are not supported",
        )
    body = request.body
    if not body:
        raise Rejected(DataProxyErrCode.BODY_LENGTH_ZERO, "the body is empty")
    kind = request.msg_type
    if kind == MsgType.ORIGINAL_RETURN and len(body) > MAX_ECHO_BYTES:
        raise Rejected(
            DataProxyErrCode.BODY_EXCEED_MAX_LEN,
            f"a type 4 body is echoed in the answer: {len(body)} bytes exceed the limit of "
            f"{MAX_ECHO_BYTES}",
        )
    if request.snappy:
        body = snappy_decode(body)
    if kind in SINGLE_RECORD_TYPES:
        return Items(single_records(body, kind, dict(request.attributes)))
    if not request.item_attributes:
        return Items([message for message, _ in _length_prefixed(body, with_attributes=False)])
    pairs = _length_prefixed(body, with_attributes=True)
    return Items(
        [message for message, _ in pairs], [parse_attributes(_text(attr)) for _, attr in pairs]
    )


def single_records(body: bytes, kind: MsgType, attributes: dict[str, str]) -> list[bytes]:
    """The records of a type 2, 3 or 4 body.

    One trailing ``\\n`` or ``\\r\\n`` is not data (InLong strips it) unless the
    body is protobuf (``mt=pb``).  The SDKs put ``cnt`` > 1 records in types 2
    and 3 joined by ``\\n`` (type 4: with no separator at all), so the body is
    split only when it holds exactly ``cnt`` lines: a record with newlines of its
    own stays whole rather than cut at the wrong place.
    """
    if attributes.get("mt") == "pb":
        return [body]
    if body.endswith(b"\n"):
        body = body[:-2] if body.endswith(b"\r\n") else body[:-1]
    count = parse_decimal(attributes.get("cnt", ""), max_digits=6) or 1
    if count > 1 and kind != MsgType.ORIGINAL_RETURN:
        lines = body.split(b"\n")
        if len(lines) == count:
            return lines
    return [body]


def _length_prefixed(body: bytes, *, with_attributes: bool) -> list[tuple[bytes, bytes]]:
    """``uint32 len | item`` repeated, each item followed by ``uint32 len | attr``
    when ``with_attributes``; (item, attr) pairs, attr empty without them."""
    pairs = []
    at = 0
    while at < len(body):
        message, at = _length_prefixed_field(body, at, "item")
        attr = b""
        if with_attributes:
            attr, at = _length_prefixed_field(body, at, "item attribute")
        pairs.append((message, attr))
    if not pairs:
        raise Rejected(DataProxyErrCode.BODY_ITEMS_INVALID, "the body holds no item")
    return pairs


def _length_prefixed_field(body: bytes, at: int, what: str) -> tuple[bytes, int]:
    if at + 4 > len(body):
        raise Rejected(DataProxyErrCode.BODY_ITEMS_INVALID, f"truncated {what} length")
    (size,) = _ITEM_LENGTH.unpack_from(body, at)
    at += 4
    if at + size > len(body):
        raise Rejected(DataProxyErrCode.BODY_ITEMS_INVALID, f"{what} length exceeds the body")
    return body[at : at + size], at + size


def snappy_decode(data: bytes, limit: int = MAX_BODY_BYTES) -> bytes:
    """A snappy block (not the framed format), refused before inflating past ``limit``."""
    try:
        size = cramjam.snappy.decompress_raw_len(data)
        if size > limit:
            raise Rejected(
                DataProxyErrCode.BODY_EXCEED_MAX_LEN,
                f"snappy body of {size} bytes exceeds the limit of {limit}",
            )
        return bytes(cramjam.snappy.decompress_raw(data))
    except cramjam.DecompressionError as exc:
        raise Rejected(
            DataProxyErrCode.UNCOMPRESS_DATA_ERROR, f"corrupt snappy body: {exc}"
        ) from None


# ----------------------------------------------------------------------- replies


def reply_attributes(
    local_ip: str, request_attr: str, error: Rejected | None = None, *, room: int
) -> str:
    """``dpIp=..[&errCode=..&errMsg=..]&<request attributes>``, within ``room`` bytes.

    Echoing the request's attributes is what brings ``mid`` and ``wid`` back
    to the Go SDK.  When they do not fit, only the ones it reads are kept.
    """
    head = f"dpIp={local_ip}"
    if error is not None:
        # The Go SDK splits on '&' and '='; keep both out of the message.
        message = error.message.replace("&", " ").replace("=", ":")[:200]
        head += f"&errCode={int(error.code)}&errMsg={message}"
    attr = f"{head}&{request_attr}" if request_attr else head
    if len(attr.encode()) <= room:
        return attr
    kept = [f"{k}={v}" for k, v in parse_attributes(request_attr) if k in _ESSENTIAL_ATTRIBUTES]
    return "&".join([head, *kept])[:room]


def reply_body(request: DataRequest) -> bytes:
    """The body of a text answer: ``"2"``, or for type 4 the request's body as
    sent (empty when it was too large to echo, and so refused)."""
    if request.msg_type != MsgType.ORIGINAL_RETURN:
        return b"2"
    return request.body if len(request.body) <= MAX_ECHO_BYTES else b""


def text_reply(type_byte: int, attr: str, body: bytes = b"2") -> bytes:
    """Text-layout answer (``buildTxtMsgRspPackage``): the body, then the attributes."""
    encoded = attr.encode()
    total = 1 + 4 + len(body) + 4 + len(encoded)
    return (
        struct.pack(">IBI", total, type_byte, len(body))
        + body
        + struct.pack(">I", len(encoded))
        + encoded
    )


def binary_reply(uniq: int, attr: str) -> bytes:
    """Type 7 answer (``buildBinMsgRspPackage``): the request's ``uniq`` and attributes."""
    encoded = attr.encode()
    return (
        struct.pack(">IBIH", 9 + len(encoded), MsgType.BIN_MULTI_BODY, uniq, len(encoded))
        + encoded
        + struct.pack(">H", BINARY_MAGIC)
    )


def binary_heartbeat_reply(data_time: int, load: int) -> bytes:
    """Type 8 answer: body version 1, a 2-byte load, no attributes."""
    return struct.pack(
        ">IBIBIhHH", 16, MsgType.BIN_HEARTBEAT, data_time, 1, 2, load, 0, BINARY_MAGIC
    )


def reply_room(binary: bool, body_bytes: int = 1) -> int:
    """Bytes left for the attributes of an answer within ``MAX_REPLY_BYTES``."""
    fixed = 4 + 9 if binary else 4 + 1 + 4 + body_bytes + 4
    return MAX_REPLY_BYTES - 1 - fixed
