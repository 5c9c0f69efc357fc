"""The InLong DataProxy v0 TCP wire format (../shared/specs/inlong.md §3-§5): pure
functions from frame bytes to requests and from answers to reply bytes.

Every frame is ``uint32 length | payload``, big-endian.  Two errors are told apart:

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

from .codes import DataProxyErrCode, Rejected

MAX_FRAME_BYTES = 512 << 10  # as the shipped dataproxy.conf (max-msg-length)
MAX_BODY_BYTES = 8 << 20  # a body once snappy-decoded
MAX_REPLY_BYTES = 32 << 10  # the C++ SDK reads at most 32 KiB (Go: 64 KiB)
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

EXT_ITEM_ATTRIBUTES = 0x1
EXT_TRACE = 0x2
EXT_IDS_AS_STRINGS = 0x4
EXT_UNSUPPORTED = 0x8 | 0x10  # index and file-check messages


class MsgType(IntEnum):
    HEARTBEAT = 1
    MULTI_BODY = 5
    BINARY = 7
    BINARY_HEARTBEAT = 8


class FrameError(Exception):
    """Not an InLong frame: close the connection, store nothing."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Type 1 (Go): answered with ``HEARTBEAT_REPLY``."""


@dataclass(frozen=True, slots=True)
class BinaryHeartbeat:
    """Type 8 (C++): answered with a load."""

    data_time: int


@dataclass(frozen=True, slots=True)
class DataRequest:
    """A batch of messages (type 5 text layout or type 7 binary layout)."""

    type_byte: int  # as sent; replies reuse it (type 5) or send 7
    binary: bool
    body: bytes  # ``uint32 len | item`` repeated, possibly snappy-compressed
    attr: str  # the request's attributes as sent
    uniq: int = 0  # binary: echoed in the reply
    ext_field: int = 0
    data_time: int = 0  # binary: seconds
    snappy: bool = False

    @property
    def attributes(self) -> list[tuple[str, str]]:
        return parse_attributes(self.attr)


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
        raise FrameError("empty frame")
    kind = frame[0] & 0x1F
    if kind in (MsgType.HEARTBEAT, MsgType.MULTI_BODY):
        body, attr = _text_layout(frame)
        if kind == MsgType.HEARTBEAT:
            return Heartbeat()
        attr_text = _text(attr)
        snappy = any(k == "cp" and v == "snappy" for k, v in parse_attributes(attr_text))
        return DataRequest(frame[0], False, body, attr_text, snappy=snappy)
    if kind == MsgType.BINARY:
        return _binary(frame)
    if kind == MsgType.BINARY_HEARTBEAT:
        return _binary_heartbeat(frame)
    raise FrameError(f"unsupported message type {frame[0]:#04x}")


def _text_layout(frame: bytes) -> tuple[bytes, bytes]:
    # type | uint32 bodyLen | body | uint32 attrLen | attr
    if len(frame) < 9:
        raise FrameError("text frame shorter than its fixed fields")
    _, body_len = _TEXT_HEAD.unpack_from(frame)
    attr_at = 5 + body_len
    if attr_at + 4 > len(frame):
        raise FrameError("text frame body length exceeds the frame")
    (attr_len,) = struct.unpack_from(">I", frame, attr_at)
    if attr_at + 4 + attr_len != len(frame):
        raise FrameError("text frame lengths do not add up to the frame length")
    return frame[5:attr_at], frame[attr_at + 4 :]


def _binary(frame: bytes) -> DataRequest:
    # see _BINARY_HEAD, then body | uint16 attrLen | attr | uint16 magic
    if len(frame) < _BINARY_HEAD.size + 4:
        raise FrameError("binary frame shorter than its fixed fields")
    type_byte, _, _, ext, data_time, _, uniq, body_len = _BINARY_HEAD.unpack_from(frame)
    attr_at = _BINARY_HEAD.size + body_len
    if attr_at + 4 > len(frame):
        raise FrameError("binary frame body length exceeds the frame")
    (attr_len,) = struct.unpack_from(">H", frame, attr_at)
    if attr_at + 2 + attr_len + 2 != len(frame):
        raise FrameError("binary frame lengths do not add up to the frame length")
    if struct.unpack_from(">H", frame, len(frame) - 2)[0] != BINARY_MAGIC:
        raise FrameError("binary frame without the 0xEE01 magic")
    return DataRequest(
        type_byte,
        True,
        frame[_BINARY_HEAD.size : attr_at],
        _text(frame[attr_at + 2 : attr_at + 2 + attr_len]),
        uniq=uniq,
        ext_field=ext,
        data_time=data_time,
        snappy=bool(type_byte & SNAPPY_FLAG),
    )


def _binary_heartbeat(frame: bytes) -> BinaryHeartbeat:
    # type | uint32 dataTime | uint8 bodyVer | uint32 bodyLen | body | uint16 attrLen | attr
    # | uint16 magic
    if len(frame) < _BINARY_HEARTBEAT_HEAD.size + 4:
        raise FrameError("binary heartbeat shorter than its fixed fields")
    _, data_time, _, body_len = _BINARY_HEARTBEAT_HEAD.unpack_from(frame)
    attr_at = _BINARY_HEARTBEAT_HEAD.size + body_len
    if attr_at + 4 > len(frame):
        raise FrameError("binary heartbeat body length exceeds the frame")
    (attr_len,) = struct.unpack_from(">H", frame, attr_at)
    if attr_at + 2 + attr_len + 2 != len(frame):
        raise FrameError("binary heartbeat lengths do not add up to the frame length")
    if struct.unpack_from(">H", frame, len(frame) - 2)[0] != BINARY_MAGIC:
        raise FrameError("binary heartbeat without the 0xEE01 magic")
    return BinaryHeartbeat(data_time)


# ---------------------------------------------------------------- request bodies


def messages(request: DataRequest) -> list[bytes]:
    """The items of a batch body, decompressed; ``Rejected`` when they are invalid."""
    if request.binary:
        if request.ext_field & EXT_UNSUPPORTED:
            raise Rejected(
                DataProxyErrCode.UNSUPPORTED_EXTEND_FIELD_VALUE,
                f"extField {request.ext_field:#x}: index and file-check messages are not supported",
            )
        if request.ext_field & EXT_ITEM_ATTRIBUTES:
            raise Rejected(
                DataProxyErrCode.UNSUPPORTED_EXTEND_FIELD_VALUE,
                "extField 0x1 (per-item attributes) is not supported",
            )
        if not request.ext_field & EXT_IDS_AS_STRINGS:
            raise Rejected(
                DataProxyErrCode.GROUPID_OR_STREAMID_NOT_CONFIGURE,
                "numeric groupIdNum/streamIdNum are not configured; send the ids as "
                "attributes (extField 0x4)",
            )
    body = request.body
    if not body:
        raise Rejected(DataProxyErrCode.BODY_LENGTH_ZERO, "the body is empty")
    if request.snappy:
        body = snappy_decode(body)
    items = []
    at = 0
    while at < len(body):
        if at + 4 > len(body):
            raise Rejected(DataProxyErrCode.BODY_ITEMS_INVALID, "truncated item length")
        (size,) = struct.unpack_from(">I", body, at)
        at += 4
        if at + size > len(body):
            raise Rejected(DataProxyErrCode.BODY_ITEMS_INVALID, "item length exceeds the body")
        items.append(body[at : at + size])
        at += size
    if not items:
        raise Rejected(DataProxyErrCode.BODY_ITEMS_INVALID, "the body holds no item")
    return items


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


def text_reply(type_byte: int, attr: str) -> bytes:
    """Type 5 answer (``buildTxtMsgRspPackage``): body ``"2"``, then the attributes."""
    encoded = attr.encode()
    body = b"2"
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
        struct.pack(">IBIH", 9 + len(encoded), MsgType.BINARY, uniq, len(encoded))
        + encoded
        + struct.pack(">H", BINARY_MAGIC)
    )


def binary_heartbeat_reply(data_time: int, load: int) -> bytes:
    """Type 8 answer: body version 1, a 2-byte load, no attributes."""
    return struct.pack(
        ">IBIBIhHH", 16, MsgType.BINARY_HEARTBEAT, data_time, 1, 2, load, 0, BINARY_MAGIC
    )


def reply_room(binary: bool) -> int:
    fixed = 4 + 9 if binary else 4 + 1 + 4 + 1 + 4
    return MAX_REPLY_BYTES - 1 - fixed
