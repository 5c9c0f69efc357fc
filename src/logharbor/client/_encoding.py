"""Fast protobuf encoding of logs for the producer, without per-log protobuf objects.

The producer encodes each log the moment it is sent, straight into the bytes of a
``LogGroup.Logs`` entry (field 1): its exact size counts against the batch and buffer
limits, and the caller's objects are not kept alive. A batch is then the join of its
entries plus the group's topic, source and tags. The bytes are identical to what
``LogGroup.to_protobuf`` produces (``tests/test_producer.py`` checks it).

Wire shapes (proto2, see ``protocol/schema.py``)::

    LogGroup.Logs      0x0a len Log
    Log.Time           0x08 varint seconds
    Log.Contents       0x12 len (0x0a len key  0x12 len value)
    Log.Time_ns        0x25 fixed32 nanoseconds
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection, Iterable, Mapping

from .._native import speedups
from ..protocol import schema
from ..protocol.codec import encode_varint
from ._models import NANOS_PER_SECOND, LogItem

_NANOS_FIELD = struct.Struct("<BI")  # the Time_ns tag, then the fixed32
_SMALL = 1 << 14
_SHORT_VALUE = 256  # value lengths with a precomputed field header
_MAX_CACHED_KEYS = 4096


_VARINTS = [encode_varint(n) for n in range(_SMALL)]


def _varint(value: int) -> bytes:
    return _VARINTS[value] if value < _SMALL else encode_varint(value)


def _key_prefix(key: str) -> bytes:
    data = key.encode("utf-8")
    return b"\x0a" + _varint(len(data)) + data + b"\x12"


def _field_header(prefix: bytes, value_length: int) -> bytes:
    length = _varint(value_length)
    return b"\x12" + _varint(len(prefix) + len(length) + value_length) + prefix + length


# For each key seen: the bytes in front of a value of each short length.
_HEADERS: dict[str, list[bytes]] = {}


def _headers_of(key: str) -> list[bytes] | None:
    headers = _HEADERS.get(key)
    if headers is None and len(_HEADERS) < _MAX_CACHED_KEYS:
        prefix = _key_prefix(key)
        headers = _HEADERS[key] = [_field_header(prefix, n) for n in range(_SHORT_VALUE)]
    return headers


_last_second: tuple[int, bytes] = (0, b"\x08\x00")


def _time_field(seconds: int) -> bytes:
    global _last_second
    last = _last_second
    if last[0] == seconds:
        return last[1]
    field = b"\x08" + encode_varint(seconds)
    _last_second = (seconds, field)
    return field


def encode_log_python(contents: Collection[tuple[str, str]], time_ns: int) -> bytes:
    """One log as a ``LogGroup.Logs`` entry (tag and length included).

    The reference encoder; ``encode_log`` is the C speedups' where they are built
    (byte-identical, about four times faster; ``tests/test_speedups.py``).

    The fast path handles keys seen before with values under 256 bytes; anything
    else (a new key, a long value, a value that is not a string) goes the slow way,
    which checks types and fills the cache.
    """
    seconds, nanos = divmod(time_ns, NANOS_PER_SECOND)
    parts = [_time_field(seconds)]
    append = parts.append  # two appends per field beat one extend of a new tuple
    headers = _HEADERS
    try:
        for key, value in contents:
            data = value.encode()
            append(headers[key][len(data)])
            append(data)
    except (KeyError, IndexError, AttributeError, TypeError):
        parts = [parts[0], *_encode_fields(contents)]
    parts.append(_NANOS_FIELD.pack(0x25, nanos))
    body = b"".join(parts)
    size = len(body)
    return b"\x0a" + (_VARINTS[size] if size < _SMALL else encode_varint(size)) + body


def _encode_fields(contents: Iterable[tuple[str, str]]) -> list[bytes]:
    parts = []
    for key, value in contents:
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"log contents must be strings, got {key!r}: {value!r}")
        data = value.encode()
        headers = _headers_of(key)
        if headers is not None and len(data) < _SHORT_VALUE:
            parts.append(headers[len(data)])
        else:
            parts.append(_field_header(_key_prefix(key), len(data)))
        parts.append(data)
    return parts


def _encode_dict_python(contents: dict[str, str], time_ns: int) -> bytes:
    return encode_log_python(contents.items(), time_ns)


# The C encoder takes a dict itself (no items view) or a collection of pairs.
encode_log: Callable[[Collection[tuple[str, str]], int], bytes] = (
    encode_log_python if speedups is None else speedups.encode_log
)
encode_dict: Callable[[dict[str, str], int], bytes] = (
    _encode_dict_python if speedups is None else speedups.encode_log
)


def encode_item(log: LogItem | Mapping[str, str], time_ns: int) -> bytes:
    """``log`` encoded; a mapping is one log's contents, stamped with ``time_ns``."""
    if type(log) is dict:  # the common case first: an isinstance check of an ABC costs
        return encode_dict(log, time_ns)
    if isinstance(log, LogItem):
        return encode_log(log.contents, log.time_ns)
    if isinstance(log, Mapping):
        return encode_log(log.items(), time_ns)
    raise TypeError(f"a log is a LogItem or a mapping of strings, not {type(log).__name__}")


def _string_field(number: int, value: str) -> bytes:
    data = value.encode("utf-8")
    return bytes([number << 3 | 2]) + _varint(len(data)) + data


def group_suffix(topic: str, source: str, tags: tuple[tuple[str, str], ...]) -> bytes:
    """The ``LogGroup`` fields after its logs: topic, source and tags."""
    parts = []
    if topic:
        parts.append(_string_field(3, topic))
    if source:
        parts.append(_string_field(4, source))
    for key, value in tags:
        tag = _string_field(1, key) + _string_field(2, value)
        parts.append(b"\x32" + _varint(len(tag)) + tag)
    return b"".join(parts)


def decode_logs(entries: Iterable[bytes]) -> list[LogItem]:
    """The ``LogItem``s back from encoded entries (for reporting undelivered logs)."""
    group = schema.LogGroup.FromString(b"".join(entries))
    return [
        LogItem(
            tuple((c.Key, c.Value) for c in log.Contents),
            log.Time * NANOS_PER_SECOND + log.Time_ns,
        )
        for log in group.Logs
    ]
