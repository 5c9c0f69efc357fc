"""Visibility: how soon another client can pull a log group after it is put.

A writer puts a small log group every 10 ms (stamped with its send time); a
reader long-polls the shard from its end cursor.  Prints the put-to-pulled
latency percentiles.  Usage:

    python bench/visibility.py [--count 1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from _common import RawHttpConnection, create_logstore, median, percentile, start_server
from logharbor.protocol.codec import iter_frames
from logharbor.protocol.schema import LogGroup


def stamped_group(index: int) -> bytes:
    group = LogGroup()
    log = group.Logs.add(Time=int(time.time()))
    log.Contents.add(Key="i", Value=str(index))
    log.Contents.add(Key="sent", Value=repr(time.perf_counter()))
    return bytes(group.SerializeToString())


async def measure(endpoint: str, path: str, count: int) -> list[float]:
    host, port = endpoint.removeprefix("http://").rsplit(":", 1)
    writer, reader = RawHttpConnection(host, int(port)), RawHttpConnection(host, int(port))
    await writer.connect()
    await reader.connect()
    _, _, content = await reader.request("GET", f"{path}/shards/0/cursor?from=end")
    cursor = json.loads(content)["cursor"]
    delays: list[float] = []

    async def write() -> None:
        for i in range(count):
            status, _, answer = await writer.request(
                "POST", path + "/logs", stamped_group(i), {"content-type": "application/x-protobuf"}
            )
            assert status == 200, answer
            await asyncio.sleep(0.01)

    async def read() -> None:
        nonlocal cursor
        while len(delays) < count:
            status, headers, content = await reader.request(
                "GET", f"{path}/shards/0/logs?cursor={cursor}&wait=5000"
            )
            received = time.perf_counter()
            assert status == 200, content
            for frame in iter_frames(content):
                for log in LogGroup.FromString(frame.raw()).Logs:
                    sent = float(next(c.Value for c in log.Contents if c.Key == "sent"))
                    delays.append(received - sent)
            cursor = headers["x-lh-next-cursor"]

    await asyncio.gather(write(), read())
    writer.close()
    reader.close()
    return delays


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    server = start_server()
    try:
        path = create_logstore(server, 1)
        p99s = []
        for run_index in range(args.runs):
            delays = asyncio.run(measure(server.endpoint, path, args.count))
            p99s.append(percentile(delays, 0.99))
            print(
                f"run {run_index + 1}: put-to-pulled p50 {percentile(delays, 0.5) * 1e3:.1f} ms,"
                f" p99 {p99s[-1] * 1e3:.1f} ms, max {max(delays) * 1e3:.1f} ms"
            )
        print(f"median p99 visibility: {median(p99s) * 1e3:.1f} ms")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
