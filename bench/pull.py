"""Pull by cursor: readers follow every shard from the beginning over loopback.

Loads ~--megabytes of raw access logs (512 KiB lz4 log groups) through the API,
then pulls everything back (count=100 per request) with one reader per shard and
prints MB/s of raw log data delivered.  Usage:

    python bench/pull.py [--megabytes 1000] [--shards 4] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import lz4.block

from _common import (
    RawHttpConnection,
    access_log_group,
    create_logstore,
    median,
    put_groups,
    start_server,
)
from logharbor.protocol.codec import encode_cursor


async def pull_all(endpoint: str, path: str, shards: int) -> tuple[int, int, float]:
    host, port = endpoint.removeprefix("http://").rsplit(":", 1)
    raw_total = wire_total = 0

    async def reader(shard: int) -> None:
        nonlocal raw_total, wire_total
        connection = RawHttpConnection(host, int(port))
        await connection.connect()
        cursor = encode_cursor(0)
        while True:
            status, headers, content = await connection.request(
                "GET", f"{path}/shards/{shard}/logs?cursor={cursor}&count=100"
            )
            assert status == 200, content
            raw_total += int(headers["x-lh-raw-size"])
            wire_total += len(content)
            if headers["x-lh-next-cursor"] == cursor:
                break
            cursor = headers["x-lh-next-cursor"]
        connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(reader(s) for s in range(shards)))
    return raw_total, wire_total, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    raws = [access_log_group(512 << 10, seed) for seed in range(8)]
    bodies = [(lz4.block.compress(raw, store_size=False), len(raw)) for raw in raws]
    groups = args.megabytes * 1_000_000 // len(raws[0])
    server = start_server()
    try:
        path = create_logstore(server, args.shards)
        asyncio.run(put_groups(server.endpoint, path, bodies, groups))
        rates = []
        for run_index in range(args.runs):
            raw, wire, elapsed = asyncio.run(pull_all(server.endpoint, path, args.shards))
            rates.append(raw / elapsed / 1e6)
            print(
                f"run {run_index + 1}: pulled {raw / 1e6:.0f} MB raw ({wire / 1e6:.0f} MB on "
                f"the wire) in {elapsed:.2f} s: {rates[-1]:.0f} MB/s raw"
            )
        print(f"median: pull {median(rates):.0f} MB/s of raw log data")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
