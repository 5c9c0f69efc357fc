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

A Log is rebuilt as ``0x0A len { 0x08 Time, (0x12 len {0x0A key, 0x12 value})*,
[0x25 Time_ns] }``, the canonical encoding protobuf writers produce.

The optional C speedups (``logharbor._speedups``) implement ``pack`` and
``unpack`` without the GIL; the Python code here is the reference, used when
they are not built (tests compare the two).
"""

from __future__ import annotations

import zstandard

from .._native import speedups
from ..protocol.codec import encode_varint

VERSION = 1
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
    if speedups is not None:
        try:
            result: bytes = speedups.columnar_unpack(body, raw_size)
        except ValueError as exc:
            raise ColumnarError(str(exc)) from None
        return result
    return _unpack_python(body, raw_size)


def pack(raw: bytes, compressor: zstandard.ZstdCompressor) -> bytes | None:
    """``raw`` stored column by column and zstd-compressed, or None when it cannot
    be rebuilt exactly (checked by rebuilding it here)."""
    body = pack_body(raw)
    if body is None:
        return None
    try:
        if unpack_body(body, len(raw)) != raw:
            return None
    except ColumnarError:  # a group the packer misread: keep it as it is
        return None
    return bytes(compressor.compress(body))


def unpack(payload: bytes, raw_size: int) -> bytes:
    """The LogGroup bytes of a stored columnar payload."""
    limit = 2 * raw_size + 65536  # a body is never much larger than its log group
    try:
        declared = zstandard.get_frame_parameters(payload).content_size
        if declared > limit:  # without a declared size, decompress() refuses it
            raise ColumnarError(f"columnar payload declares {declared} bytes")
        body = zstandard.ZstdDecompressor().decompress(payload)
    except zstandard.ZstdError as exc:
        raise ColumnarError(f"corrupt columnar payload: {exc}") from None
    return unpack_body(body, raw_size)
