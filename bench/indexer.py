"""Indexing throughput of the engine alone (no HTTP): how fast an index takes in data
that is already stored, with the indexer's pipeline depth 1 (decode, then append) and
2 (decode the next batches while appending), alternating.

    python bench/indexer.py [--logs 300000] [--runs 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from logharbor.engine import Engine, EngineConfig
from logharbor.engine.ingest import Limits, PreparedGroup, prepare_protobuf
from logharbor.protocol.codec import Compression
from search import generate


def run(depth: int, groups: list[PreparedGroup], logs: int) -> float:
    engine = Engine(EngineConfig(data_dir=Path(tempfile.mkdtemp()), ingest_workers=2))
    engine.indexer.depth = depth
    try:
        time.sleep(3)  # let the worker processes start
        engine.create_project("bench")
        engine.create_logstore("bench", "ls", shard_count=2)
        for group in groups:
            engine.put("bench", "ls", group).result()
        started = time.perf_counter()
        engine.create_index("bench", "ls", {"line": {"token": [" "]}})
        while sum(engine.index_lag("bench", "ls").values()):
            time.sleep(0.02)
        return logs / (time.perf_counter() - started)
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logs", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    groups = [
        prepare_protobuf(body, Compression.LZ4, raw, Limits()) for body, raw in generate(args.logs)
    ]
    rates: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.runs):
        for depth in (1, 2):
            rates[depth].append(run(depth, groups, args.logs))
            print(f"depth {depth}: {rates[depth][-1]:,.0f} logs/s", flush=True)
    for depth, values in rates.items():
        print(f"median at depth {depth}: {statistics.median(values):,.0f} logs/s")


if __name__ == "__main__":
    main()
