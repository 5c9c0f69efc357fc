"""Columnar storage of sealed log groups: the same bytes, a third smaller on disk.

A log group as clients send it is row-oriented: every log repeats its keys, and
a request id sits between a status code and a user agent, so zstd finds few
long matches.  Compaction (``ShardLog.compact``) transposes each log group of a
sealed segment into columns (one stream of values per key, the times as
deltas, the nanoseconds, a schema id per log naming the log's key sequence)
and compresses that with zstd.  On an access-log corpus this stores 28 B/log
where zstd over the protobuf stores 48 (BENCHMARKS.md).

The transposition is exact or not done: ``pack`` returns None for a log group
it cannot rebuild byte for byte (fields out of the usual order, non-minimal
varints, unknown fields inside a Log, ...), and every packed group is unpacked
and compared with the original before it is kept, so a pull of compacted data
returns exactly the bytes that were acknowledged.

Body layout (all integers are unsigned varints; the body is then one zstd frame)::

    version (1), log count
    prefix length, prefix   LogGroup fields before the logs (e.g. Topic)
    suffix length, suffix   LogGroup fields after the logs (Source, LogTags, ...)
    name count, then each key name as length, bytes
    schema count, then each schema as flags (1: has Time_ns), key count, name ids
    lengths of the schema, time and nanosecond streams
    per name: lengths of its value-length stream and of its value stream
    schema stream           a schema id per log
    time stream             per log, Time minus the previous log's Time, zigzag
    nanosecond stream       4 bytes (little-endian) per log whose schema has them
    per name: value lengths, then the values, in log order

Stored, each key's values are typed (``typed_parts``, version 2): the streams
of a key become one section holding them as integers, hex bytes, IPv4
addresses, a small dictionary or strings, whichever fits every value of the
group exactly (``_type_column_python``), and each section is its own zstd frame
once the group is large enough to be worth it, so that a query can read one
key without the others.  On the access-log corpus this stores about 23 B/log
where version 1 stored 30 (bench/column_encodings.py).  Version-1 payloads (one
zstd frame of the body above) are still read.

A Log is rebuilt as ``0x0A len { 0x08 Time, (0x12 len {0x0A key, 0x12 value})*,
[0x25 Time_ns] }``, the canonical encoding protobuf writers produce.

The optional C speedups (``logharbor._speedups``) implement ``pack`` and
``unpack`` without the GIL; the Python code here is the reference, used when
they are not built (tests compare the two).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import zstandard

from .._native import speedups
from ..protocol.codec import encode_varint

T = TypeVar("T")
VERSION = 1  # the body as ``pack_body`` writes it
TYPED_VERSION = 2  # the body as stored: each key's values typed (``typed_parts``)
# From this raw size up each key's section is its own zstd frame (what a query
# reading a few columns needs, and smaller); below it one frame holds them all.
SPLIT_FRAMES_FROM = 32 << 10
_MAX_NAMES = 256  # more distinct keys or key sequences than this: not worth it
_MAX_SCHEMAS = 1024
_TIME_LIMIT = 1 << 32  # Log.Time is a uint32


class ColumnarError(ValueError):
    """A columnar body is corrupt (a damaged file, never client input)."""


# ------------------------------------------------------------------ varints


def _get(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of the varint at ``pos`` (at most 10 bytes, as
    protobuf reads them); IndexError past the end."""
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ColumnarError("varint too long")


def _get64(data: bytes, pos: int) -> tuple[int, int]:
    """As ``_get``, for a value that must fit 64 bits (the body's own varints)."""
    value, end = _get(data, pos)
    if value >> 64:
        raise ColumnarError("varint too long")
    return value, end


def _get_minimal(data: bytes, pos: int) -> tuple[int, int]:
    """As ``_get``, for a varint in its shortest form only (the one rebuilt)."""
    value, end = _get(data, pos)
    if end - pos != max(1, (value.bit_length() + 6) // 7):
        raise _NotCanonical
    return value, end


# --------------------------------------------------------------------- pack


def _pack_python(raw: bytes) -> bytes | None:
    """The uncompressed columnar body of a LogGroup, or None (see the module doc)."""
    try:
        return _Packer(raw).body()
    except (IndexError, _NotCanonical, ColumnarError):
        return None


class _NotCanonical(Exception):
    pass


class _Packer:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.names: dict[bytes, int] = {}
        self.schemas: dict[tuple[int, ...], int] = {}  # (has_ns, *name ids)
        self.lengths: list[bytearray] = []
        self.values: list[bytearray] = []
        self.schema_stream = bytearray()
        self.time_stream = bytearray()
        self.ns_stream = bytearray()
        self.logs = 0

    def body(self) -> bytes | None:
        raw = self.raw
        pos = 0
        run_start = run_end = -1
        previous_time = 0
        while pos < len(raw):
            field_start = pos
            if raw[pos] == 0x0A:  # Logs, with the one-byte tag and length a rebuild writes
                if run_start >= 0 and run_end != field_start:
                    return None  # logs in two runs: keep it as it is
                length, pos = _get_minimal(raw, pos + 1)
                end = pos + length
                if end > len(raw):
                    return None
                previous_time = self._log(pos, end, previous_time)
                if run_start < 0:
                    run_start = field_start
                run_end = pos = end
                continue
            tag, pos = _get(raw, pos)
            wire = tag & 7
            if tag >> 3 == 0 or tag >> 32:
                return None  # not protobuf
            if wire == 0:
                _, pos = _get(raw, pos)
            elif wire == 2:
                length, pos = _get(raw, pos)
                pos += length
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            else:
                return None
            if pos > len(raw):
                return None
        if self.logs == 0:
            return None
        return self._assemble(raw[:run_start], raw[run_end:])

    def _log(self, pos: int, end: int, previous_time: int) -> int:
        raw = self.raw
        if pos >= end or raw[pos] != 0x08:
            raise _NotCanonical
        time, pos = _get_minimal(raw, pos + 1)
        if time >= _TIME_LIMIT:
            raise _NotCanonical
        key: list[int] = []
        while pos < end and raw[pos] == 0x12:
            content_len, pos = _get_minimal(raw, pos + 1)
            content_end = pos + content_len
            if pos >= content_end or raw[pos] != 0x0A:
                raise _NotCanonical
            name_len, pos = _get_minimal(raw, pos + 1)
            if pos + name_len >= content_end:
                raise _NotCanonical
            name = raw[pos : pos + name_len]
            pos += name_len
            if raw[pos] != 0x12:
                raise _NotCanonical
            value_len, pos = _get_minimal(raw, pos + 1)
            if pos + value_len != content_end:
                raise _NotCanonical
            name_id = self.names.get(name)
            if name_id is None:
                if len(self.names) >= _MAX_NAMES:
                    raise _NotCanonical
                name_id = self.names[name] = len(self.names)
                self.lengths.append(bytearray())
                self.values.append(bytearray())
            key.append(name_id)
            self.lengths[name_id] += encode_varint(value_len)
            self.values[name_id] += raw[pos:content_end]
            pos = content_end
        has_ns = pos < end and raw[pos] == 0x25
        if has_ns:
            self.ns_stream += raw[pos + 1 : pos + 5]
            pos += 5
        if pos != end:
            raise _NotCanonical
        schema = (int(has_ns), *key)
        schema_id = self.schemas.get(schema)
        if schema_id is None:
            if len(self.schemas) >= _MAX_SCHEMAS:
                raise _NotCanonical
            schema_id = self.schemas[schema] = len(self.schemas)
        self.schema_stream += encode_varint(schema_id)
        delta = time - previous_time
        self.time_stream += encode_varint((delta << 1) ^ (delta >> 63))
        self.logs += 1
        return time

    def _assemble(self, prefix: bytes, suffix: bytes) -> bytes:
        out = bytearray()
        for value in (VERSION, self.logs, len(prefix)):
            out += encode_varint(value)
        out += prefix
        out += encode_varint(len(suffix))
        out += suffix
        out += encode_varint(len(self.names))
        for name in self.names:
            out += encode_varint(len(name))
            out += name
        out += encode_varint(len(self.schemas))
        for schema in self.schemas:
            out += encode_varint(schema[0])
            out += encode_varint(len(schema) - 1)
            for name_id in schema[1:]:
                out += encode_varint(name_id)
        for stream in (self.schema_stream, self.time_stream, self.ns_stream):
            out += encode_varint(len(stream))
        for lengths, values in zip(self.lengths, self.values, strict=True):
            out += encode_varint(len(lengths))
            out += encode_varint(len(values))
        out += self.schema_stream
        out += self.time_stream
        out += self.ns_stream
        for lengths, values in zip(self.lengths, self.values, strict=True):
            out += lengths
            out += values
        return bytes(out)


# ------------------------------------------------------------------- unpack


def _unpack_python(body: bytes, raw_size: int) -> bytes:
    try:
        return _unpack_checked(body, raw_size)
    except IndexError:
        raise ColumnarError("truncated columnar body") from None


def _unpack_checked(body: bytes, raw_size: int) -> bytes:
    version, pos = _get64(body, 0)
    if version != VERSION:
        raise ColumnarError(f"unknown columnar version {version}")
    logs, pos = _get64(body, pos)
    length, pos = _get64(body, pos)
    prefix = body[pos : pos + length]
    pos += length
    length, pos = _get64(body, pos)
    suffix = body[pos : pos + length]
    pos += length
    count, pos = _get64(body, pos)
    if count > _MAX_NAMES:
        raise ColumnarError("too many columnar keys")
    names: list[bytes] = []
    for _ in range(count):
        length, pos = _get64(body, pos)
        names.append(body[pos : pos + length])
        pos += length
    count, pos = _get64(body, pos)
    if count > _MAX_SCHEMAS:
        raise ColumnarError("too many columnar schemas")
    schemas: list[tuple[bool, list[int]]] = []
    for _ in range(count):
        flags, pos = _get64(body, pos)
        keys, pos = _get64(body, pos)
        ids = []
        for _ in range(min(keys, len(body))):
            name_id, pos = _get64(body, pos)
            if name_id >= len(names):
                raise ColumnarError("schema names an unknown key")
            ids.append(name_id)
        schemas.append((bool(flags & 1), ids))
    sizes = []
    for _ in range(3 + 2 * len(names)):
        size, pos = _get64(body, pos)
        sizes.append(size)
    if pos + sum(sizes) != len(body):
        raise ColumnarError("columnar streams do not fill the body")
    starts = []
    for size in sizes:
        starts.append(pos)
        pos += size
    schema_pos, time_pos, ns_pos = starts[:3]
    length_pos = starts[3::2]
    value_pos = starts[4::2]
    keys_encoded = [b"\x0a" + encode_varint(len(name)) + name + b"\x12" for name in names]
    out = bytearray(prefix)
    time = 0
    for _ in range(logs):
        schema_id, schema_pos = _get64(body, schema_pos)
        if schema_id >= len(schemas):
            raise ColumnarError("log names an unknown schema")
        has_ns, ids = schemas[schema_id]
        zigzag, time_pos = _get64(body, time_pos)
        time += (zigzag >> 1) ^ -(zigzag & 1)
        if not 0 <= time < _TIME_LIMIT:
            raise ColumnarError("log time out of range")
        log = bytearray(b"\x08")
        log += encode_varint(time)
        for name_id in ids:
            length, length_pos[name_id] = _get64(body, length_pos[name_id])
            start = value_pos[name_id]
            value_pos[name_id] = start + length
            content = keys_encoded[name_id] + encode_varint(length) + body[start : start + length]
            log.append(0x12)
            log += encode_varint(len(content))
            log += content
            if len(out) + len(log) > raw_size:  # a repeated long key cannot blow up memory
                raise ColumnarError("columnar body does not rebuild the declared log group")
        if has_ns:
            log.append(0x25)
            log += body[ns_pos : ns_pos + 4]
            ns_pos += 4
        out.append(0x0A)
        out += encode_varint(len(log))
        out += log
        if len(out) > raw_size:
            break
    out += suffix
    ends = [starts[0] + sizes[0], starts[1] + sizes[1], starts[2] + sizes[2]]
    ends += [starts[3 + i] + sizes[3 + i] for i in range(2 * len(names))]
    positions = [schema_pos, time_pos, ns_pos]
    for i in range(len(names)):
        positions += [length_pos[i], value_pos[i]]
    if len(out) != raw_size or positions != ends:
        raise ColumnarError("columnar body does not rebuild the declared log group")
    return bytes(out)


# ------------------------------------------------------------ typed columns

# A key's values within one log group, stored by what they all hold (the first
# kind that fits every value, in this order).  Each is exactly reversible.
STR, INT, HEX, IPV4, DICT = range(5)
_DECIMAL = re.compile(rb"0|-?[1-9][0-9]{0,17}")  # int64 without question
_HEX = re.compile(rb"(?:[0-9a-f]{2})+")
_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(_OCTET + rb"(?:\." + _OCTET + rb"){3}")
_DICT_SIZE = 256  # at most this many distinct values ...
_DICT_USES = 8  # ... each used this many times on average


def _values(lengths: bytes, values: bytes) -> list[bytes]:
    """A column's values from its length and value streams."""
    out = []
    pos = at = 0
    while pos < len(lengths):
        length, pos = _get64(lengths, pos)
        if length > len(values) - at:
            raise ColumnarError("column values overrun")
        out.append(values[at : at + length])
        at += length
    if at != len(values):
        raise ColumnarError("column values left over")
    return out


def _zigzag(value: int) -> int:
    return ((value << 1) ^ (value >> 63)) & ((1 << 64) - 1)


def _type_column_python(lengths: bytes, values: bytes) -> bytes:
    """A column's section: its kind, then the values in that kind's form::

    STR   size of the length stream, the length stream, the values
    INT   a zigzag varint per value
    HEX   the width in bytes (at least 1), then each value's bytes
    IPV4  four bytes per value
    DICT  the distinct values (count, then each as length, bytes), then a
          byte per value: its number among them, in order of first use
    """
    try:
        items = _values(lengths, values)
    except IndexError:
        raise ColumnarError("truncated column lengths") from None
    if items and all(_DECIMAL.fullmatch(v) for v in items):
        return bytes([INT]) + b"".join(encode_varint(_zigzag(int(v))) for v in items)
    width = len(items[0]) if items else 0
    if width and all(len(v) == width and _HEX.fullmatch(v) for v in items):
        return bytes([HEX]) + encode_varint(width // 2) + bytes.fromhex(b"".join(items).decode())
    if items and all(_IPV4.fullmatch(v) for v in items):
        return bytes([IPV4]) + b"".join(bytes(int(p) for p in v.split(b".")) for v in items)
    distinct = list(dict.fromkeys(items))
    if items and len(distinct) <= _DICT_SIZE and len(distinct) * _DICT_USES <= len(items):
        number = {v: i for i, v in enumerate(distinct)}
        return (
            bytes([DICT])
            + encode_varint(len(distinct))
            + b"".join(encode_varint(len(v)) + v for v in distinct)
            + bytes(number[v] for v in items)
        )
    return bytes([STR]) + encode_varint(len(lengths)) + lengths + values


def _untype_column_python(section: bytes, limit: int) -> tuple[bytes, bytes]:
    """The length and value streams a column's section stands for, refused if
    together longer than ``limit`` bytes (a damaged dictionary could ask for the
    square of its size)."""
    try:
        items = _section_values(section, limit)
        if section[0] == STR:  # as they are (checked above)
            size, pos = _get64(section, 1)
            return section[pos : pos + size], section[pos + size :]
    except IndexError:
        raise ColumnarError("truncated column") from None
    return b"".join(encode_varint(len(v)) for v in items), b"".join(items)


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


class _Budget:
    """What untyping a section may produce: ``limit`` bytes of streams."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self, length: int, uses: int = 1) -> None:
        """``uses`` values of ``length`` bytes (and their lengths)."""
        self.spend((_varint_size(length) + length) * uses)

    def spend(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise ColumnarError("column larger than its log group")


def _section_values(section: bytes, limit: int) -> list[bytes]:
    budget = _Budget(limit)
    kind = section[0]
    if kind == STR:
        size, pos = _get64(section, 1)
        if size > len(section) - pos:
            raise ColumnarError("truncated column")
        items = _values(section[pos : pos + size], section[pos + size :])
        budget.spend(len(section) - pos)
        return items
    if kind == INT:
        items = []
        pos = 1
        while pos < len(section):
            zigzag, pos = _get64(section, pos)
            items.append(b"%d" % ((zigzag >> 1) ^ -(zigzag & 1)))
            budget.take(len(items[-1]))
        return items
    if kind == HEX:
        width, pos = _get64(section, 1)
        data = section[pos:]
        if width == 0 or len(data) % width:
            raise ColumnarError("hex column of a broken width")
        budget.take(2 * width, len(data) // width)
        text = data.hex().encode()
        return [text[i : i + 2 * width] for i in range(0, len(text), 2 * width)]
    if kind == IPV4:
        data = section[1:]
        if len(data) % 4:
            raise ColumnarError("address column of a broken width")
        items = [b"%d.%d.%d.%d" % tuple(data[i : i + 4]) for i in range(0, len(data), 4)]
        budget.spend(sum(1 + len(v) for v in items))
        return items
    if kind == DICT:
        count, pos = _get64(section, 1)
        if count > _DICT_SIZE:
            raise ColumnarError("dictionary too large")
        distinct = []
        for _ in range(count):
            length, pos = _get64(section, pos)
            if length > len(section) - pos:
                raise ColumnarError("truncated column")
            distinct.append(section[pos : pos + length])
            pos += length
        numbers = section[pos:]
        if any(i >= count for i in numbers):
            raise ColumnarError("dictionary number out of range")
        for i, value in enumerate(distinct):
            budget.take(len(value), numbers.count(i))
        return [distinct[i] for i in numbers]
    raise ColumnarError(f"unknown column kind {kind}")


def _c(name: str, *args: object) -> Any:
    """The C speedups' function ``name`` on ``args``; its ValueError (corrupt
    data) as a ``ColumnarError``."""
    try:
        return getattr(speedups, name)(*args)
    except ValueError as exc:
        raise ColumnarError(str(exc)) from None


def _native(name: str, python: Callable[..., T], *args: object) -> T:
    """``_c(name, *args)``, or the Python reference when the speedups are not built."""
    if speedups is None:
        return python(*args)
    result: T = _c(name, *args)
    return result


def type_column(lengths: bytes, values: bytes) -> bytes:
    return _native("columnar_type", _type_column_python, lengths, values)


def untype_column(section: bytes, limit: int) -> tuple[bytes, bytes]:
    return _native("columnar_untype", _untype_column_python, section, limit)


# ------------------------------------------------- the typed body (version 2)


def _layout(body: bytes, version: int) -> tuple[int, int, int, list[int]]:
    """Where a body's parts are: (end of the key sequences, end of the stream
    sizes, end of the schema, time and nanosecond streams, each key's part sizes:
    two per key in version 1 (lengths, values), one in version 2 (its section))."""
    try:
        found, pos = _get64(body, 0)
        if found != version:
            raise ColumnarError(f"unknown columnar version {found}")
        _logs, pos = _get64(body, pos)
        for _ in range(2):  # prefix, suffix
            length, pos = _get64(body, pos)
            pos += length
        count, pos = _get64(body, pos)
        if count > _MAX_NAMES:
            raise ColumnarError("too many columnar keys")
        names = count
        for _ in range(count):
            length, pos = _get64(body, pos)
            pos += length
        count, pos = _get64(body, pos)
        if count > _MAX_SCHEMAS:
            raise ColumnarError("too many columnar schemas")
        for _ in range(count):
            _flags, pos = _get64(body, pos)
            keys, pos = _get64(body, pos)
            for _ in range(min(keys, len(body))):
                _name, pos = _get64(body, pos)
        schemas_end = pos
        streams = 0
        for _ in range(3):
            size, pos = _get64(body, pos)
            streams += size
        sizes = []
        for _ in range(names * (2 if version == VERSION else 1)):
            size, pos = _get64(body, pos)
            sizes.append(size)
    except IndexError:
        raise ColumnarError("truncated columnar body") from None
    sizes_end = pos
    if pos + streams + sum(sizes) != len(body):
        raise ColumnarError("columnar streams do not fill the body")
    return schemas_end, sizes_end, sizes_end + streams, sizes


def typed_parts(body: bytes) -> list[bytes]:
    """A version-1 body as version 2: a head (the body up to its key streams,
    with a section size per key) and each key's section (``type_column``)."""
    schemas_end, sizes_end, streams_end, sizes = _layout(body, VERSION)
    sections = []
    pos = streams_end
    for lengths_size, values_size in zip(sizes[::2], sizes[1::2], strict=True):
        lengths = body[pos : pos + lengths_size]
        pos += lengths_size
        sections.append(type_column(lengths, body[pos : pos + values_size]))
        pos += values_size
    _, start = _get64(body, 0)
    sizes_start = _stream_sizes_end(body, schemas_end)
    head = (
        encode_varint(TYPED_VERSION)
        + body[start:sizes_start]
        + b"".join(encode_varint(len(s)) for s in sections)
        + body[sizes_end:streams_end]
    )
    return [head, *sections]


def _stream_sizes_end(body: bytes, pos: int) -> int:
    for _ in range(3):
        _, pos = _get64(body, pos)
    return pos


def untyped_body(typed: bytes, limit: int) -> bytes:
    """The version-1 body of a version-2 one (head and sections, back to back);
    ``ColumnarError`` if its key streams would take more than ``limit`` bytes."""
    schemas_end, sizes_end, streams_end, sizes = _layout(typed, TYPED_VERSION)
    _, start = _get64(typed, 0)
    sizes_start = _stream_sizes_end(typed, schemas_end)
    parts = [encode_varint(VERSION), typed[start:sizes_start]]
    columns: list[bytes] = []
    pos = streams_end
    for size in sizes:
        if size == 0:
            raise ColumnarError("empty column section")
        lengths, values = untype_column(typed[pos : pos + size], limit)
        limit -= len(lengths) + len(values)
        pos += size
        parts.append(encode_varint(len(lengths)) + encode_varint(len(values)))
        columns += (lengths, values)
    parts.append(typed[sizes_end:streams_end])
    return b"".join(parts + columns)


# ----------------------------------------------------------------- public


def pack_body(raw: bytes) -> bytes | None:
    """The columnar body of a serialized LogGroup (uncompressed), or None."""
    if speedups is not None:
        result: bytes | None = speedups.columnar_pack(raw)
        return result
    return _pack_python(raw)


def unpack_body(body: bytes, raw_size: int) -> bytes:
    """The LogGroup bytes a columnar body rebuilds; ``ColumnarError`` if it is
    corrupt or does not rebuild exactly ``raw_size`` bytes."""
    return _native("columnar_unpack", _unpack_python, body, raw_size)


def pack(raw: bytes, compressor: zstandard.ZstdCompressor) -> bytes | None:
    """``raw`` stored column by column, each key's values typed, zstd-compressed,
    or None when it cannot be rebuilt exactly (checked by rebuilding it here).

    The stored payload: the version (2), the number of zstd frames, each frame's
    size, the frames.  Decompressed and put back to back, the frames are the
    typed body: its head, then the sections (``typed_parts``)."""
    body = pack_body(raw)
    if body is None:
        return None
    try:
        parts = typed_parts(body)
    except ColumnarError:  # a group the packer misread: keep it as it is
        return None
    if len(raw) < SPLIT_FRAMES_FROM:
        parts = [b"".join(parts)]
    frames = [compressor.compress(part) for part in parts]
    payload = b"".join(
        [encode_varint(TYPED_VERSION), encode_varint(len(frames))]
        + [encode_varint(len(f)) for f in frames]
        + frames
    )
    try:
        if unpack(payload, len(raw)) != raw:
            return None
    except ColumnarError:
        return None
    return payload


def unpack(payload: bytes, raw_size: int) -> bytes:
    """The LogGroup bytes of a stored columnar payload (either version)."""
    limit = 2 * raw_size + 65536  # a body is never much larger than its log group
    if not is_typed(payload):  # version 1: one zstd frame
        return unpack_body(_decompress([payload], limit), raw_size)
    return unpack_body(untyped_body(_decompress(_frames(payload), limit), limit), raw_size)


_LOCAL = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    """This thread's decompressor (making one costs more than a small frame's
    decompression; one may not be shared between threads)."""
    found: zstandard.ZstdDecompressor | None = getattr(_LOCAL, "decompressor", None)
    if found is None:
        found = _LOCAL.decompressor = zstandard.ZstdDecompressor()
    return found


def _decompress(frames: list[bytes], limit: int) -> bytes:
    """Zstd frames decompressed back to back, refused past ``limit`` bytes."""
    try:
        sizes = [zstandard.get_frame_parameters(f).content_size for f in frames]
        if min(sizes, default=0) < 0:
            raise ColumnarError("a columnar frame does not declare its size")
        declared = sum(sizes)
        if declared > limit:  # without a declared size, decompress() refuses it
            raise ColumnarError(f"columnar payload declares {declared} bytes")
        decompressor = _decompressor()
        if len(frames) == 1:
            result: bytes = decompressor.decompress(frames[0])
            return result
        return b"".join(decompressor.decompress(f) for f in frames)
    except zstandard.ZstdError as exc:
        raise ColumnarError(f"corrupt columnar payload: {exc}") from None


# ------------------------------------------------------------ reading keys


class TypedGroup:
    """A stored version-2 payload opened to read a few keys without rebuilding
    the log group: its head is decompressed now, a key's section when asked for
    (a frame of its own in a large group).  Needs the C speedups
    (``times``, ``column``); ``ColumnarError`` when the payload is corrupt."""

    def __init__(self, payload: bytes, raw_size: int) -> None:
        frames = _frames(payload)
        limit = 2 * raw_size + 65536
        self._frames = frames
        self._limit = limit
        first = _decompress(frames[:1], limit)
        logs, prefix, suffix, names, streams_end, sizes = _c("columnar_head", first)
        self.logs: int = logs
        self.prefix: bytes = prefix
        self.suffix: bytes = suffix
        self.names: list[bytes] = names
        self.head = first[:streams_end]
        self._sizes: list[int] = sizes
        self._sections: list[bytes] | None = None
        if len(frames) == 1:  # small group: the sections follow the head
            if streams_end + sum(sizes) != len(first):
                raise ColumnarError("columnar sections do not fill the body")
            self._sections = _split(first[streams_end:], sizes)
        elif len(frames) != 1 + len(sizes) or streams_end != len(first):
            raise ColumnarError("columnar frames do not match the keys")

    def times(self) -> bytes:
        """Each log's time in nanoseconds, as native int64s."""
        result: bytes = _c("columnar_times", self.head)
        return result

    def column(self, name_id: int) -> tuple[bytes, bytes, bytes | None, bool]:
        """The first value of key ``name_id`` in each log, as the buffers of an
        Arrow string array: (int32 offsets, data, validity bitmap or None when
        every log has the key, whether every value is UTF-8)."""
        result: tuple[bytes, bytes, bytes | None, bool] = _c(
            "columnar_column", self.head, self._section(name_id), name_id, self._limit
        )
        return result

    def dictionary(self, name_id: int) -> tuple[bytes, bytes, bytes, bytes | None, bool] | None:
        """Key ``name_id``'s first value in each log as the buffers of an Arrow
        dictionary array (int32 indices; the distinct values' int32 offsets and
        data; validity bitmap or None; whether every value is UTF-8), when its
        values are a dictionary or integers of at most 256 distinct values;
        else None (``column``)."""
        result: tuple[bytes, bytes, bytes, bytes | None, bool] | None = _c(
            "columnar_dictionary", self.head, self._section(name_id), name_id
        )
        return result

    def _section(self, name_id: int) -> bytes:
        if self._sections is not None:
            return self._sections[name_id]
        section = _decompress([self._frames[1 + name_id]], self._limit)
        if len(section) != self._sizes[name_id]:
            raise ColumnarError("column section of the wrong size")
        return section


def is_typed(payload: bytes) -> bool:
    """Whether a stored columnar payload is version 2 (``TypedGroup`` reads it)."""
    return payload[:1] == encode_varint(TYPED_VERSION)


def _frames(payload: bytes) -> list[bytes]:
    try:
        count, pos = _get64(payload, 1)
        sizes = []
        for _ in range(min(count, len(payload))):
            size, pos = _get64(payload, pos)
            sizes.append(size)
    except IndexError:
        raise ColumnarError("truncated columnar payload") from None
    if count != len(sizes) or not sizes or pos + sum(sizes) != len(payload):
        raise ColumnarError("columnar frames do not fill the payload")
    frames = []
    for size in sizes:
        frames.append(payload[pos : pos + size])
        pos += size
    return frames


def _split(data: bytes, sizes: list[int]) -> list[bytes]:
    out = []
    pos = 0
    for size in sizes:
        out.append(data[pos : pos + size])
        pos += size
    return out
