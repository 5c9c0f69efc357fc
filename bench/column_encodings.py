"""What typed column encodings would save in compacted log groups (a measurement
for the single-copy storage design, BENCHMARKS.md "Session 5"; nothing here is
used by the server yet).

Takes --logs logs of bench/search.py's access-log corpus (log groups of 4096) and
compares, per log: the columnar form compaction stores today (engine/columnar.py:
every value as a length-prefixed string, the whole group one zstd frame) with the
same streams encoded by what each column holds, within a log group:

- ``int``: every value a canonical decimal integer (``0``, ``-12``, no leading
  zeros, at most 18 digits): zigzag varints;
- ``hex``: every value lowercase hex of one even length: the bytes it spells;
- ``ip``: every value a canonical dotted IPv4 address: four bytes;
- ``dict``: at most 256 distinct values, each used 8 times on average: the values
  once, then one byte per log;
- ``str``: otherwise, as today.

Each is exactly reversible (a value that would not come back byte for byte keeps
the group's column as ``str``). Printed: B/log with the whole group as one zstd
frame, and with a frame per column (what queries reading one column need), and
each column's share.

    python bench/column_encodings.py [--logs 163840] [--level 3]
"""

from __future__ import annotations

import argparse
import re
import struct
from collections import Counter

import lz4.block
import zstandard

from logharbor.engine import columnar
from logharbor.protocol.codec import encode_varint
from logharbor.protocol.schema import LogGroup
from search import generate

_DECIMAL = re.compile(rb"0|-?[1-9][0-9]{0,17}")
_HEX = re.compile(rb"(?:[0-9a-f]{2})+")
_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(_OCTET + rb"(?:\." + _OCTET + rb"){3}")


def _zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def _strings(values: list[bytes]) -> bytes:
    return b"".join(encode_varint(len(v)) for v in values) + b"".join(values)


def encode(values: list[bytes]) -> tuple[str, bytes]:
    """(encoding, stream) of one column of one log group."""
    if all(_DECIMAL.fullmatch(v) for v in values):
        return "int", b"".join(encode_varint(_zigzag(int(v))) for v in values)
    width = len(values[0])
    if all(len(v) == width and _HEX.fullmatch(v) for v in values):
        return "hex", b"".join(bytes.fromhex(v.decode()) for v in values)
    if all(_IPV4.fullmatch(v) for v in values):
        return "ip", b"".join(bytes(int(p) for p in v.split(b".")) for v in values)
    distinct = list(dict.fromkeys(values))
    if len(distinct) <= 256 and len(distinct) * 8 <= len(values):
        ids = {v: i for i, v in enumerate(distinct)}
        return "dict", _strings(distinct) + bytes(ids[v] for v in values)
    return "str", _strings(values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logs", type=int, default=163_840)
    parser.add_argument("--level", type=int, default=3)
    args = parser.parse_args()
    raws = [lz4.block.decompress(b, uncompressed_size=r) for b, r in generate(args.logs)]
    n = args.logs
    compressor = zstandard.ZstdCompressor(level=args.level)
    today = one_frame = frames = 0
    column_bytes: Counter[str] = Counter()
    encodings: dict[str, Counter[str]] = {}
    for raw in raws:
        packed = columnar.pack(raw, compressor)
        assert packed is not None
        today += len(packed)
        group = LogGroup.FromString(raw)
        columns: dict[str, list[bytes]] = {}
        for log in group.Logs:
            for content in log.Contents:
                columns.setdefault(content.Key, []).append(content.Value.encode())
        previous = 0
        deltas = []
        for log in group.Logs:
            deltas.append(encode_varint(_zigzag(log.Time - previous)))
            previous = log.Time
        streams = {
            "(times)": b"".join(deltas),
            "(nanoseconds)": b"".join(struct.pack("<I", log.Time_ns) for log in group.Logs),
        }
        for key, values in columns.items():
            kind, stream = encode(values)
            encodings.setdefault(key, Counter())[kind] += 1
            streams[key] = stream
        one_frame += len(compressor.compress(b"".join(streams.values())))
        for key, stream in streams.items():
            size = len(compressor.compress(stream))
            frames += size
            column_bytes[key] += size
    print(f"{n:,} logs, zstd level {args.level}")
    print(f"today (columnar, strings, one frame): {today / n:.1f} B/log")
    print(f"typed, one frame per log group:       {one_frame / n:.1f} B/log")
    print(f"typed, one frame per column:          {frames / n:.1f} B/log")
    for key, size in column_bytes.most_common():
        kinds = ", ".join(f"{k} {c}" for k, c in encodings.get(key, Counter()).items())
        print(f"  {key:14} {size / n:5.2f} B/log  {kinds}")


if __name__ == "__main__":
    main()
