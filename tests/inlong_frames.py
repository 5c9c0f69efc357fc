"""A test-side InLong DataProxy client: encodes frames as the Go SDK (type 5) and the
C++ SDK / Python binding (type 7, or 2, 3, 4 and 6 with their ``msg_type`` setting)
do, and decodes replies the way each of them reads them (../shared/specs/inlong.md
§3-§5).  Written from the spec, independently of the server's code, so that the two
check each other."""

from __future__ import annotations

import socket
import struct
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import cramjam

GO_HEARTBEAT = bytes.fromhex("000000090100000000" + "00000000")
HEARTBEAT_ACK = bytes.fromhex("0000000101")

# §12, captured from the real SDKs
GOLDEN_GO_FRAME = bytes.fromhex(
    "000000bc050000000a0000000673796e632d31000000a967726f757049643d746573745f67726f7570"
    "2673747265616d49643d735f73796e632664743d31373935333135333037333437266d69643d36366464"
    "666530322d336334642d343631322d393633352d343730393662613736356361267369643d36366464"
    "666530322d336334642d343631322d393633352d343730393662613736356361267769643d3026636e"
    "743d31265f5f616464636f6c315f5f69703d3139322e302e322e32"
)
GOLDEN_GO_REPLY = bytes.fromhex(
    "000000e6050000000132000000dc647049703d3132372e302e302e312672743d313739353331353330"
    "373334372672746d733d313739353331353330373334372667726f757049643d746573745f67726f75"
    "702673747265616d49643d735f73796e632664743d31373935333135333037333437266d69643d3636"
    "6464666530322d336334642d343631322d393633352d343730393662613736356361267369643d3636"
    "6464666530322d336334642d343631322d393633352d343730393662613736356361267769643d3026"
    "636e743d31265f5f616464636f6c315f5f69703d3139322e302e322e32"
)
GOLDEN_CPP_FRAME = bytes.fromhex(
    "00000043070000000000046b025671000200000001000000140000000568656c6c6f00000007776f72"
    "6c647c32001667726f757049643d67312673747265616d49643d7331ee01"
)
GOLDEN_CPP_REPLY = bytes.fromhex(
    "0000002e07000000010025647049703d3132372e302e302e312667726f757049643d67312673747265"
    "616d49643d7331ee01"
)
GOLDEN_CPP_HEARTBEAT = bytes.fromhex("0000000e086b02567301000000000000ee01")
GOLDEN_CPP_HEARTBEAT_REPLY = bytes.fromhex("00000010086b0256730100000002001e0000ee01")


def items_body(payloads: Iterable[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in payloads)


def text_frame(body: bytes, attr: str, msg_type: int = 5) -> bytes:
    encoded = attr.encode()
    total = 1 + 4 + len(body) + 4 + len(encoded)
    return (
        struct.pack(">IBI", total, msg_type, len(body))
        + body
        + struct.pack(">I", len(encoded))
        + encoded
    )


@dataclass
class GoBatch:
    frame: bytes
    mid: str
    wid: int
    payloads: list[bytes]  # as stored: one trailing newline stripped
    dt: int


def go_batch(
    group: str,
    stream: str,
    payloads: Sequence[bytes],
    *,
    wid: int = 0,
    mid: str | None = None,
    dt: int | None = None,
    add_columns: Mapping[str, str] | None = None,
    extra: str = "",
) -> GoBatch:
    """A batch as ``batchReq.encode`` writes it: newline stripping, snappy above 256
    bytes, attributes in the SDK's order, then the AddColumns."""
    stripped = [p[:-1] if p.endswith(b"\n") else p for p in payloads]
    body = items_body(stripped)
    mid = mid or str(uuid.uuid4())
    dt = dt if dt is not None else time.time_ns() // 1_000_000
    attr = (
        f"groupId={group}&streamId={stream}&dt={dt}&mid={mid}&sid={mid}&wid={wid}"
        f"&cnt={len(payloads)}"
    )
    if len(body) > 256:
        body = bytes(cramjam.snappy.compress_raw(body))
        attr += "&cp=snappy"
    for key, value in (add_columns or {}).items():
        attr += f"&{key}={value}"
    attr += extra
    return GoBatch(text_frame(body, attr), mid, wid, stripped, dt)


def cpp_text_attr(group: str, stream: str, count: int, *, mid: int, dt: int, snappy: bool) -> str:
    """The attributes of the C++ SDK's text layouts (``msg_type`` 2 to 6)."""
    attr = f"groupId={group}&streamId={stream}&dt={dt}&mid={mid}"
    if snappy:
        attr += "&cp=snappy"
    return attr + f"&cnt={count}&sid=0x{uuid.uuid4().hex}"


def record_frame(
    group: str,
    stream: str,
    records: Sequence[bytes],
    *,
    msg_type: int = 3,
    mid: int = 1,
    dt: int = 1795315307347,
    extra: str = "",
) -> bytes:
    """Types 2, 3 and 4 as the C++ SDK packs them: the records joined by ``\\n``
    (type 4: by nothing), snappy above 512 bytes."""
    body = (b"" if msg_type == 4 else b"\n").join(records)
    snappy = len(body) > 512
    if snappy:
        body = bytes(cramjam.snappy.compress_raw(body))
    attr = cpp_text_attr(group, stream, len(records), mid=mid, dt=dt, snappy=snappy) + extra
    return text_frame(body, attr, msg_type)


def cpp_item_attr(ip: str = "192.0.2.2", reptime: str = "202611220236") -> str:
    """The attributes the C++ SDK gives each item of type 6 (and extField 0x1)."""
    return f"__addcol1__reptime={reptime}&__addcol2__ip={ip}"


def attr_items_body(items: Iterable[tuple[bytes, str]]) -> bytes:
    """``uint32 len | item | uint32 attrLen | attr`` repeated (type 6, extField 0x1)."""
    return b"".join(
        struct.pack(">I", len(data)) + data + struct.pack(">I", len(attr.encode())) + attr.encode()
        for data, attr in items
    )


def attr_batch_frame(
    group: str,
    stream: str,
    items: Sequence[tuple[bytes, str]],
    *,
    mid: int = 1,
    dt: int = 1795315307347,
    extra: str = "",
) -> bytes:
    """Type 6 as the C++ SDK packs it: items with their own attributes, snappy
    above 512 bytes."""
    body = attr_items_body(items)
    snappy = len(body) > 512
    if snappy:
        body = bytes(cramjam.snappy.compress_raw(body))
    attr = cpp_text_attr(group, stream, len(items), mid=mid, dt=dt, snappy=snappy) + extra
    return text_frame(body, attr, 6)


def binary_frame(
    group: str,
    stream: str,
    payloads: Sequence[bytes],
    *,
    uniq: int = 1,
    data_time: int | None = None,
    snappy: bool | None = None,
    ext_field: int = 0x4,
    attr: str | None = None,
    magic: int = 0xEE01,
    group_num: int = 0,
    stream_num: int = 0,
    item_attrs: Sequence[str] | None = None,
) -> bytes:
    """A pack as the C++ SDK writes it (``msg_type`` 7); snappy above 512 bytes.
    ``item_attrs`` gives each payload its attributes (pass ``ext_field`` 0x1 too)."""
    if item_attrs is None:
        body = items_body(payloads)
    else:
        body = attr_items_body(zip(payloads, item_attrs, strict=True))
    if snappy is None:
        snappy = len(body) > 512
    msg_type = 7
    if snappy:
        body = bytes(cramjam.snappy.compress_raw(body))
        msg_type |= 0x20
    encoded = (attr if attr is not None else f"groupId={group}&streamId={stream}").encode()
    data_time = data_time if data_time is not None else int(time.time())
    total = 25 + len(body) + len(encoded)
    return (
        struct.pack(
            ">IBHHHIHII", total, msg_type, group_num, stream_num, ext_field, data_time,
            len(payloads), uniq, len(body),
        )
        + body
        + struct.pack(">H", len(encoded))
        + encoded
        + struct.pack(">H", magic)
    )  # fmt: skip


def binary_heartbeat(data_time: int | None = None) -> bytes:
    data_time = data_time if data_time is not None else int(time.time())
    return struct.pack(">IBIBIHH", 14, 8, data_time, 1, 0, 0, 0xEE01)


def parse_attr(attr: str) -> dict[str, str]:
    """As the Go SDK reads reply attributes: pairs with more than one '=' are ignored."""
    result = {}
    for pair in attr.split("&"):
        parts = pair.split("=")
        if len(parts) == 2:
            result[parts[0]] = parts[1]
    return result


@dataclass
class Reply:
    msg_type: int
    attrs: dict[str, str]
    uniq: int = 0  # binary replies
    body: bytes = b""
    raw: bytes = b""


def decode_text_reply(frame: bytes) -> Reply:
    """Go's ``batchRsp.decode``: ignores the type byte, text layout."""
    (body_len,) = struct.unpack_from(">I", frame, 5)
    body = frame[9 : 9 + body_len]
    (attr_len,) = struct.unpack_from(">I", frame, 9 + body_len)
    attr = frame[13 + body_len : 13 + body_len + attr_len].decode()
    assert 13 + body_len + attr_len == len(frame)
    return Reply(frame[4], parse_attr(attr), body=body, raw=frame)


def decode_binary_reply(frame: bytes) -> Reply:
    total, msg_type, uniq, attr_len = struct.unpack_from(">IBIH", frame)
    assert total == len(frame) - 4 == 9 + attr_len
    assert frame[-2:] == b"\xee\x01"
    return Reply(msg_type, parse_attr(frame[11 : 11 + attr_len].decode()), uniq=uniq, raw=frame)


class DataProxyConnection:
    """A blocking TCP connection to the listener, with a deadline on every read."""

    def __init__(self, host: str, port: int, timeout: float = 20.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_exactly(self, size: int) -> bytes:
        chunks = b""
        while len(chunks) < size:
            chunk = self.sock.recv(size - len(chunks))
            if not chunk:
                raise ConnectionError(f"closed after {len(chunks)} of {size} bytes")
            chunks += chunk
        return chunks

    def read_frame(self, max_len: int = 64 << 10) -> bytes:
        head = self.read_exactly(4)
        (length,) = struct.unpack(">I", head)
        assert length <= max_len, f"reply of {length} bytes is over the client's limit"
        return head + self.read_exactly(length)

    def read_go_reply(self) -> Reply:
        """As the Go client: skip heartbeat acks, then one text-layout frame."""
        while True:
            frame = self.read_frame(64 << 10)
            if frame == HEARTBEAT_ACK:
                continue
            return decode_text_reply(frame)

    def read_cpp_reply(self) -> Reply:
        """As the C++ client: one frame of at most 32 KiB."""
        return decode_binary_reply(self.read_frame(32 << 10))

    def closed_by_peer(self) -> bool:
        """True once the server closed the connection (EOF or reset) within the timeout."""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> DataProxyConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
