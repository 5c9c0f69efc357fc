"""Compaction: bytes per log and speed of the stored forms of sealed log groups.

Takes --logs logs of bench/search.py's access-log corpus (log groups of 4096) and
stores each log group as compaction would, at several zstd levels: column by column
(engine/columnar.py, what compaction stores) and zstd over the protobuf (what it
stored before).  Prints B/log, the ratio to the raw size, and MB/s of raw data per
core (columnar includes the check that rebuilds every group).  Also the rebuild
rate, which is what a pull of compacted data pays.

    python bench/compaction.py [--logs 163840] [--levels 1,3,6,9]
"""

from __future__ import annotations

import argparse
import time

import lz4.block
import zstandard

from logharbor.engine import columnar
from search import generate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logs", type=int, default=163_840)
    parser.add_argument("--levels", default="1,3,6,9")
    args = parser.parse_args()
    raws = [lz4.block.decompress(b, uncompressed_size=r) for b, r in generate(args.logs)]
    raw_bytes = sum(map(len, raws))
    lz4_bytes = sum(len(lz4.block.compress(r, store_size=False)) for r in raws)
    n = args.logs
    print(f"{n:,} logs, raw {raw_bytes / n:.1f} B/log, lz4 {lz4_bytes / n:.1f} B/log")
    for level in map(int, args.levels.split(",")):
        compressor = zstandard.ZstdCompressor(level=level)
        started = time.perf_counter()
        packed = [columnar.pack(r, compressor) for r in raws]
        columnar_seconds = time.perf_counter() - started
        started = time.perf_counter()
        row = sum(len(compressor.compress(r)) for r in raws)
        row_seconds = time.perf_counter() - started
        size = sum(len(p) for p in packed if p is not None)
        print(
            f"level {level}: columnar {size / args.logs:.1f} B/log (1/{raw_bytes / size:.2f}, "
            f"{raw_bytes / columnar_seconds / 1e6:.0f} MB/s); zstd over the protobuf "
            f"{row / args.logs:.1f} B/log (1/{raw_bytes / row:.2f}, "
            f"{raw_bytes / row_seconds / 1e6:.0f} MB/s)"
        )
    started = time.perf_counter()
    for stored, raw in zip(packed, raws, strict=True):
        assert stored is not None and columnar.unpack(stored, len(raw)) == raw
    print(
        f"rebuild: {raw_bytes / (time.perf_counter() - started) / 1e6:.0f} MB/s of raw log groups"
    )


if __name__ == "__main__":
    main()
