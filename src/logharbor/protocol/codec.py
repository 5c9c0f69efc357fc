"""Codecs shared by the server and the SDK: compression, cursors, hash keys, frames.

Decompression never trusts the sender: every routine takes the largest raw size
it may produce and refuses before allocating more (a declared size above the
limit, a zstd frame header announcing more, or a stream that keeps inflating).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

import lz4.block
import zstandard

from .errors import ErrorCode, ServiceError

HASH_KEY_BITS = 128
MAX_HASH_KEY = (1 << HASH_KEY_BITS) - 1


class CodecError(ServiceError):
    """Input that cannot be decoded; carries the error code to answer with."""


class Compression(IntEnum):
    """How a log group's bytes are compressed, on the wire and on disk."""

    NONE = 0
    LZ4 = 1  # raw LZ4 block, no frame and no size prefix (as SLS and TLS send it)
    ZSTD = 2  # standard zstd frame
    DEFLATE = 3  # zlib stream

    @property
    def wire_name(self) -> str:
        return self.name.lower()

    @classmethod
    def from_wire(cls, name: str | None) -> Compression:
        """Parse the ``x-lh-compress-type`` header (absent or empty means none)."""
        value = (name or "none").strip().lower()
        aliases = {"": "none", "identity": "none", "zlib": "deflate"}
        value = aliases.get(value, value)
        for member in cls:
            if member.wire_name == value:
                return member
        raise CodecError(
            ErrorCode.INVALID_COMPRESS_TYPE,
            f"unsupported compression {name!r}; use one of none, lz4, zstd, deflate",
        )


_ZSTD_COMPRESSOR_LEVEL = 1


def compress(data: bytes, compression: Compression) -> bytes:
    if compression is Compression.NONE:
        return data
    if compression is Compression.LZ4:
        return bytes(lz4.block.compress(data, store_size=False))
    if compression is Compression.ZSTD:
        return bytes(zstandard.ZstdCompressor(level=_ZSTD_COMPRESSOR_LEVEL).compress(data))
    return zlib.compress(data, 1)


def decompress(
    data: bytes, compression: Compression, *, raw_size: int | None, max_raw_size: int
) -> bytes:
    """Decompress ``data``, refusing bombs and corrupt input with a ``CodecError``.

    ``raw_size`` is the size the sender declared; it is required for lz4 (a raw
    block does not record its size) and checked against the result otherwise.
    """
    if raw_size is not None:
        if raw_size < 0:
            raise CodecError(ErrorCode.INVALID_PARAMETER, "declared raw size is negative")
        if raw_size > max_raw_size:
            raise CodecError(
                ErrorCode.RAW_SIZE_TOO_LARGE,
                f"declared raw size {raw_size} exceeds the limit of {max_raw_size} bytes",
            )
    if compression is Compression.NONE:
        out = data
        if len(out) > max_raw_size:
            raise _too_large(max_raw_size)
    elif compression is Compression.LZ4:
        out = _lz4(data, raw_size)
    elif compression is Compression.ZSTD:
        out = _zstd(data, max_raw_size)
    else:
        out = _deflate(data, max_raw_size)
    if raw_size is not None and len(out) != raw_size:
        raise CodecError(
            ErrorCode.INVALID_BODY,
            f"body decompresses to {len(out)} bytes but {raw_size} were declared",
        )
    return out


def _too_large(limit: int) -> CodecError:
    return CodecError(ErrorCode.RAW_SIZE_TOO_LARGE, f"body decompresses to more than {limit} bytes")


def _lz4(data: bytes, raw_size: int | None) -> bytes:
    if raw_size is None:
        raise CodecError(
            ErrorCode.INVALID_PARAMETER, "lz4 bodies need their raw size (x-lh-raw-size header)"
        )
    if raw_size == 0:
        if data not in (b"", b"\x00"):
            raise CodecError(ErrorCode.INVALID_BODY, "corrupt lz4 block")
        return b""
    try:
        return bytes(lz4.block.decompress(data, uncompressed_size=raw_size))
    except lz4.block.LZ4BlockError as exc:
        raise CodecError(ErrorCode.INVALID_BODY, f"corrupt lz4 block: {exc}") from None


def _zstd(data: bytes, max_raw_size: int) -> bytes:
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError:
        raise CodecError(ErrorCode.INVALID_BODY, "corrupt zstd frame header") from None
    if declared > max_raw_size:
        raise _too_large(max_raw_size)
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    try:
        out = reader.read(max_raw_size + 1)
    except zstandard.ZstdError as exc:
        raise CodecError(ErrorCode.INVALID_BODY, f"corrupt zstd data: {exc}") from None
    if len(out) > max_raw_size:
        raise _too_large(max_raw_size)
    return bytes(out)


def _deflate(data: bytes, max_raw_size: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, max_raw_size + 1)
    except zlib.error as exc:
        raise CodecError(ErrorCode.INVALID_BODY, f"corrupt deflate data: {exc}") from None
    if len(out) > max_raw_size or inflater.unconsumed_tail:
        raise _too_large(max_raw_size)
    if not inflater.eof or inflater.unused_data:
        raise CodecError(ErrorCode.INVALID_BODY, "truncated or trailing deflate data")
    return out


# ------------------------------------------------------------- protobuf wire


def encode_varint(value: int) -> bytes:
    """A non-negative integer as a protobuf varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(tag: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field: its tag byte (field number < 16), the
    payload's length as a varint, the payload.  A ``LogGroupList`` is such fields
    (tag ``0x0A``) around serialized log groups."""
    return bytes((tag,)) + encode_varint(len(payload)) + payload


def parse_decimal(text: str, max_digits: int = 18) -> int | None:
    """A non-negative decimal of 1 to ``max_digits`` ASCII digits, or None
    (``str.isdigit`` also takes ``²`` and other digits that ``int`` refuses)."""
    if not 0 < len(text) <= max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)


# ---------------------------------------------------------------- cursors


def encode_cursor(position: int) -> str:
    """A cursor is base64 of the decimal position (SLS SDKs do arithmetic on it)."""
    return base64.b64encode(str(position).encode("ascii")).decode("ascii")


def decode_cursor(cursor: str) -> int:
    text = "".join(cursor.split())
    try:
        decoded = base64.b64decode(text, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise CodecError(ErrorCode.INVALID_CURSOR, f"cursor {cursor!r} is not valid") from None
    position = parse_decimal(decoded, 19)
    if position is None:
        raise CodecError(ErrorCode.INVALID_CURSOR, f"cursor {cursor!r} is not valid")
    return position


# --------------------------------------------------------------- hash keys


def parse_hash_key(key: str) -> int:
    """Parse a 32-hex-digit MD5 hash key into an integer position."""
    text = key.strip().lower()
    if len(text) != 32:
        raise CodecError(ErrorCode.INVALID_HASH_KEY, f"hash key {key!r} must be 32 hex digits")
    try:
        return int(text, 16)
    except ValueError:
        raise CodecError(
            ErrorCode.INVALID_HASH_KEY, f"hash key {key!r} must be 32 hex digits"
        ) from None


def format_hash_key(position: int) -> str:
    return f"{min(position, MAX_HASH_KEY):032x}"


def hash_key_of(value: str | bytes) -> str:
    """The hash key of an arbitrary routing value: the MD5 of its bytes, in hex."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


# ------------------------------------------------------------------ frames
#
# Pulled log groups travel exactly as they are stored: a sequence of frames,
# each a fixed header followed by the (compressed) log group bytes.
#
#   u32 crc32     of everything after this field, header and payload
#   u32 length    of the payload
#   u64 position  of the log group in its shard (the cursor's number)
#   u64 received  server receive time, nanoseconds since the epoch
#   u32 raw_size  size of the payload once decompressed
#   u32 logs      number of logs in the group
#   u8  compression
#   payload

FRAME_HEADER = struct.Struct("<IIQQIIB")
FRAME_HEADER_SIZE = FRAME_HEADER.size


@dataclass(frozen=True, slots=True)
class Frame:
    position: int
    received_ns: int
    raw_size: int
    log_count: int
    compression: Compression
    payload: bytes

    def raw(self, max_raw_size: int = 1 << 31) -> bytes:
        """The log group's serialized protobuf bytes."""
        return decompress(
            self.payload, self.compression, raw_size=self.raw_size, max_raw_size=max_raw_size
        )


def encode_frame(
    position: int,
    received_ns: int,
    raw_size: int,
    log_count: int,
    compression: int,  # a Compression, or a storage-only code (engine/shardlog.py)
    payload: bytes,
) -> bytes:
    header_tail = FRAME_HEADER.pack(
        0, len(payload), position, received_ns, raw_size, log_count, int(compression)
    )[4:]
    crc = zlib.crc32(payload, zlib.crc32(header_tail))
    return struct.pack("<I", crc) + header_tail + payload


def frame_headers(data: bytes | memoryview) -> Iterator[tuple[int, int, int, int]]:
    """``(start, position, raw size, log count)`` of each frame of stored (trusted)
    frames, read from the headers alone: where a frame starts, and what it holds."""
    offset = 0
    while offset < len(data):
        _, length, position, _, raw_size, logs, _ = FRAME_HEADER.unpack_from(data, offset)
        yield offset, position, raw_size, logs
        offset += FRAME_HEADER_SIZE + length


def iter_frames(data: bytes | memoryview, *, verify: bool = True) -> Iterator[Frame]:
    """Parse a sequence of frames; raise ``CodecError`` on a torn or corrupt one."""
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        if len(view) - offset < FRAME_HEADER_SIZE:
            raise CodecError(ErrorCode.INVALID_BODY, "truncated frame header")
        crc, length, position, received, raw_size, logs, comp = FRAME_HEADER.unpack_from(
            view, offset
        )
        end = offset + FRAME_HEADER_SIZE + length
        if end > len(view):
            raise CodecError(ErrorCode.INVALID_BODY, "truncated frame payload")
        if verify and zlib.crc32(view[offset + 4 : end]) != crc:
            raise CodecError(ErrorCode.INVALID_BODY, f"checksum mismatch in frame {position}")
        try:
            compression = Compression(comp)
        except ValueError:
            raise CodecError(ErrorCode.INVALID_BODY, f"unknown compression {comp}") from None
        yield Frame(
            position,
            received,
            raw_size,
            logs,
            compression,
            bytes(view[offset + FRAME_HEADER_SIZE : end]),
        )
        offset = end
