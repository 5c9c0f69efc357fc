"""Producer throughput: one Python process sends ~300-byte logs with 9 fields.

Prints logs/s and MB/s of raw (encoded protobuf) log data delivered through a
``Producer`` (one ``send`` per log, and ``send`` of 100 logs per call), the CPU time
of this process per log (its threads share the GIL, so this is what limits it), the
peak RSS of this process, and the same logs through a plain ``LogClient.put_logs``
loop (4096 logs per call), as a ratio.  Usage:

    python bench/producer.py [--logs 300000] [--runs 3]
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import statistics
import time

from _common import PATHS, start_server
from logharbor import BatchPolicy, LogClient, LogItem, Producer, ProducerConfig


def make_logs(count: int, seed: int = 7) -> list[dict[str, str]]:
    rng = random.Random(seed)
    agents = ["Mozilla/5.0 (X11; Linux x86_64)", "curl/8.4.0", "python-httpx/0.28"]
    return [
        {
            "method": rng.choice(["GET", "POST", "PUT"]),
            "path": rng.choice(PATHS),
            "status": rng.choice(["200"] * 20 + ["404", "500"]),
            "latency_ms": str(rng.randrange(1, 900)),
            "bytes": str(rng.randrange(100, 90000)),
            "client_ip": f"192.168.{rng.randrange(256)}.{rng.randrange(256)}",
            "user_agent": rng.choice(agents),
            "request_id": f"{rng.getrandbits(64):016x}",
            "message": f"handled request in worker {rng.randrange(16)} trace "
            f"{rng.getrandbits(40):x} for tenant {rng.randrange(1000)} in region eu-west-1",
        }
        for _ in range(count)
    ]


def run_producer(
    endpoint: str, logs: list[dict[str, str]], per_call: int
) -> tuple[float, int, float]:
    """Seconds taken, raw bytes delivered, CPU seconds of this process (all threads)."""
    config = ProducerConfig(batch=BatchPolicy(linger=0.2), workers=4)
    producer = Producer(endpoint, config=config)
    cpu = time.process_time()
    started = time.perf_counter()
    if per_call == 1:
        send = producer.send
        for log in logs:
            send("bench", "ls", log)
    else:
        for i in range(0, len(logs), per_call):
            producer.send("bench", "ls", logs[i : i + per_call])
    producer.close()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    stats = producer.statistics()
    assert stats.delivered_logs == len(logs), stats
    return elapsed, stats.delivered_bytes, cpu


def run_client(endpoint: str, logs: list[dict[str, str]]) -> float:
    started = time.perf_counter()
    with LogClient(endpoint) as client:
        for i in range(0, len(logs), 4096):
            client.put_logs("bench", "ls", [LogItem(log) for log in logs[i : i + 4096]])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logs", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logs = make_logs(args.logs)
    # The test data (hundreds of thousands of dicts) is kept out of the garbage
    # collector's sight, as an application's long-lived data would be after a while.
    gc.freeze()
    data_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    server = start_server()
    try:
        with LogClient(server.endpoint) as client:
            client.create_project("bench")
            client.create_logstore("bench", "ls", shard_count=4, ttl=1)
        run_producer(server.endpoint, logs[:20_000], 1)  # warm up
        figures = {}
        for per_call in (1, 100):
            times = []
            for _ in range(args.runs):
                elapsed, raw, cpu = run_producer(server.endpoint, logs, per_call)
                times.append(elapsed)
                print(
                    f"producer, {per_call:>3} log(s) per send: {len(logs) / elapsed:,.0f} logs/s, "
                    f"{raw / elapsed / 1e6:.1f} MB/s raw ({raw / len(logs):.0f} B/log), "
                    f"{cpu / len(logs) * 1e6:.1f} µs of CPU per log in this process"
                )
            figures[per_call] = statistics.median(times)
            print(
                f"  median of {args.runs}: {len(logs) / figures[per_call]:,.0f} logs/s, "
                f"{raw / figures[per_call] / 1e6:.1f} MB/s raw"
            )
        plain = run_client(server.endpoint, logs)
        print(
            f"LogClient.put_logs loop (4096 LogItems per call): {len(logs) / plain:,.0f} logs/s; "
            f"producer (median) / put_logs ratio: {plain / figures[1]:.2f} (1 per send), "
            f"{plain / figures[100]:.2f} (100 per send)"
        )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"peak RSS of the sending process: {peak:.0f} MiB "
            f"({data_rss:.0f} MiB of it before sending: interpreter and test data)"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
