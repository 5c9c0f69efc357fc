"""Consumer group throughput and latency: one ConsumerGroupWorker, a no-op processor.

1. Throughput: loads ~--megabytes of raw access logs (512 KiB lz4 log groups),
   then one worker consumes them all from the beginning; prints MB/s of raw logs.
2. Latency: a worker starting at the end, caught up and long polling, processes
   small log groups that a writer puts at up to --rate per second (one at a time);
   prints put -> process latency percentiles (server receive time to processor call).

Usage:

    python bench/consume.py [--megabytes 1000] [--shards 4] [--seconds 10] [--rate 200]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Sequence

import lz4.block

from _common import (
    access_log_group,
    create_logstore,
    median,
    percentile,
    put_groups,
    start_server,
)
from logharbor import (
    Checkpointer,
    ConsumerGroupWorker,
    ConsumerProcessor,
    ConsumerSettings,
    LogClient,
    LogItem,
    PulledLogGroup,
    ShardState,
)
from logharbor.client import CursorStart


class Counting(ConsumerProcessor):
    """Does nothing with the logs; counts them and notes their latency."""

    def __init__(self, totals: Totals) -> None:
        self.totals = totals

    def process(self, log_groups: Sequence[PulledLogGroup], checkpointer: Checkpointer) -> None:
        now = time.time_ns()
        self.totals.add(log_groups, now)


class Totals:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.groups = self.raw = 0
        self.latencies: list[float] = []

    def add(self, log_groups: Sequence[PulledLogGroup], now_ns: int) -> None:
        with self.lock:
            self.groups += len(log_groups)
            self.raw += sum(g.raw_size for g in log_groups)
            self.latencies.extend((now_ns - g.receive_time_ns) / 1e6 for g in log_groups)


def worker(endpoint: str, group: str, totals: Totals, start: CursorStart) -> ConsumerGroupWorker:
    settings = ConsumerSettings(
        heartbeat_interval=1.0, fetch_count=100, prefetch=4, wait_ms=1000, start=start
    )
    return ConsumerGroupWorker(
        lambda: Counting(totals),
        endpoint=endpoint,
        project="bench",
        logstore="ls",
        group=group,
        consumer="bench-worker",
        settings=settings,
    )


def throughput(endpoint: str, groups: int) -> float:
    totals = Totals()
    started = time.perf_counter()
    with worker(endpoint, f"throughput-{time.monotonic_ns()}", totals, "begin"):
        while totals.groups < groups:
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
    print(
        f"consumed {totals.groups} log groups, {totals.raw / 1e6:.0f} MB raw in {elapsed:.2f} s: "
        f"{totals.raw / elapsed / 1e6:.0f} MB/s raw (heartbeat, group setup and start included)"
    )
    return totals.raw / elapsed / 1e6


def latency(endpoint: str, seconds: float, rate: float) -> list[float]:
    totals = Totals()
    with worker(endpoint, "latency", totals, "end") as consumer, LogClient(endpoint) as client:
        shards = len(client.list_shards("bench", "ls"))

        def consuming() -> bool:
            held = consumer.statistics().shards.values()
            return len(held) == shards and all(s.state is ShardState.CONSUMING for s in held)

        while not consuming():
            time.sleep(0.05)
        time.sleep(0.5)  # every shard's fetcher is waiting at the end
        skip = totals.groups
        deadline = time.monotonic() + seconds
        sent = 0
        while time.monotonic() < deadline:
            client.put_logs("bench", "ls", [LogItem({"n": str(sent)})])
            sent += 1
            time.sleep(1 / rate)
        target = skip + sent
        wait_until = time.monotonic() + 10
        while totals.groups < target and time.monotonic() < wait_until:
            time.sleep(0.01)
    print(f"latency run: {sent} puts at ~{rate:.0f}/s, {totals.groups - skip} processed")
    return totals.latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=200)
    args = parser.parse_args()
    raws = [access_log_group(512 << 10, seed) for seed in range(8)]
    bodies = [(lz4.block.compress(raw, store_size=False), len(raw)) for raw in raws]
    groups = args.megabytes * 1_000_000 // len(raws[0])
    server = start_server()
    try:
        path = create_logstore(server, args.shards)
        asyncio.run(put_groups(server.endpoint, path, bodies, groups))
        loaded = (groups // 8 + 1) * 8
        rates = [throughput(server.endpoint, loaded) for _ in range(args.runs)]
        print(f"median: one worker consumed {median(rates):.0f} MB/s of raw log data")
        latencies = latency(server.endpoint, args.seconds, args.rate)
        print(
            f"put -> process latency: p50 {percentile(latencies, 0.5):.1f} ms, "
            f"p99 {percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms "
            f"({len(latencies)} log groups)"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
