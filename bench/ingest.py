"""Raw ingest: concurrent clients put 512 KiB (raw) lz4 log groups over loopback.

Prints MB/s of raw log data acknowledged durably (fsync'd), and the put latency
percentiles at full speed and at half of that rate.  Usage:

    python bench/ingest.py [--seconds 10] [--clients 8] [--shards 4] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import lz4.block

from _common import (
    RawHttpConnection,
    access_log_group,
    cpu_seconds,
    create_logstore,
    median,
    percentile,
    process_tree_cpu,
    start_server,
)

GROUP_RAW = 512 << 10


async def run(
    endpoint: str,
    path: str,
    bodies: list[tuple[bytes, int]],
    clients: int,
    seconds: float,
    rate: float | None,
) -> tuple[float, list[float]]:
    """Put for ``seconds``; with ``rate`` (MB/s), pace the puts.  Returns MB/s and latencies."""
    latencies: list[float] = []
    raw_bytes = 0
    deadline = time.perf_counter() + seconds
    interval = (GROUP_RAW / 1e6) / rate * clients if rate else 0.0
    host, port = endpoint.removeprefix("http://").rsplit(":", 1)

    async def client(index: int) -> None:
        nonlocal raw_bytes
        connection = RawHttpConnection(host, int(port))
        await connection.connect()
        n = index
        next_at = time.perf_counter() + interval * index / clients
        while time.perf_counter() < deadline:
            if interval:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                next_at += interval
            body, raw = bodies[n % len(bodies)]
            n += clients
            started = time.perf_counter()
            status, _headers, answer = await connection.request(
                "POST",
                path + "/logs",
                body,
                {
                    "content-type": "application/x-protobuf",
                    "x-lh-compress-type": "lz4",
                    "x-lh-raw-size": str(raw),
                },
            )
            if status != 200:
                raise RuntimeError(f"put failed: {status} {answer!r}")
            latencies.append(time.perf_counter() - started)
            raw_bytes += raw
        connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    return raw_bytes / elapsed / 1e6, latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    raws = [access_log_group(GROUP_RAW, seed) for seed in range(16)]
    bodies = [(lz4.block.compress(raw, store_size=False), len(raw)) for raw in raws]
    ratio = sum(r for _, r in bodies) / sum(len(b) for b, _ in bodies)
    print(
        f"log group: {len(raws[0])} B raw, lz4 ratio {ratio:.1f}, "
        f"{len(access_log_group(GROUP_RAW, 0)) // 300} logs of ~300 B"
    )
    server = start_server()
    try:
        path = create_logstore(server, args.shards)
        full_rates, full_p99, half_p99 = [], [], []
        assert server.process is not None
        for run_index in range(args.runs):
            server_cpu, client_cpu = process_tree_cpu(server.process.pid), cpu_seconds(os.getpid())
            started = time.perf_counter()
            rate, latencies = asyncio.run(
                run(server.endpoint, path, bodies, args.clients, args.seconds, None)
            )
            wall = time.perf_counter() - started
            after = process_tree_cpu(server.process.pid)
            usage = {pid: (after[pid] - server_cpu.get(pid, 0.0)) / wall for pid in after}
            print(
                f"  cores used at full speed: server {usage.pop(server.process.pid):.2f}, "
                f"validation workers {sum(usage.values()):.2f}, load generator "
                f"{(cpu_seconds(os.getpid()) - client_cpu) / wall:.2f}"
            )
            half_rate, half_lat = asyncio.run(
                run(server.endpoint, path, bodies, args.clients, args.seconds, rate / 2)
            )
            full_rates.append(rate)
            full_p99.append(percentile(latencies, 0.99))
            half_p99.append(percentile(half_lat, 0.99))
            print(
                f"run {run_index + 1}: full speed {rate:.0f} MB/s raw "
                f"(p50 {percentile(latencies, 0.5) * 1e3:.1f} ms, "
                f"p99 {full_p99[-1] * 1e3:.1f} ms); at {half_rate:.0f} MB/s: "
                f"p50 {percentile(half_lat, 0.5) * 1e3:.1f} ms, p99 {half_p99[-1] * 1e3:.1f} ms"
            )
        print(
            f"median: ingest {median(full_rates):.0f} MB/s raw durable; "
            f"p99 put latency at half rate {median(half_p99) * 1e3:.1f} ms"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
