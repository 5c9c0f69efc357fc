"""SLS SDK ingest vs LogHarbor's own clients, in one run against one server.

Sends the same ~300-byte, 9-field logs (``bench/producer.py``'s data) through:

- the official ``aliyun-log-python-sdk`` ``put_logs`` loop (lz4, 4096 logs per call),
  in HTTP_PROXY mode (endpoint ``127.0.0.1:PORT``, docs/sls.md);
- LogHarbor's ``Producer`` (one ``send`` per log);
- LogHarbor's ``LogClient.put_logs`` loop (4096 logs per call);
- ``aliyun-log-producer`` (PyPI, the Rust-backed SLS producer; one ``send`` per log),
  also in HTTP_PROXY mode.  Its URL parser refuses ``<project>.127.0.0.1``, so it is
  given the endpoint ``http://localhost:PORT`` (``localhost`` is an SLS base host).

Usage:

    python bench/sls.py [--logs 100000] [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

from _common import start_server
from logharbor import LogClient
from producer import make_logs, run_client, run_producer


def run_sls_sdk(endpoint: str, logs: list[dict[str, str]]) -> float:
    from aliyun.log import LogClient as SlsClient
    from aliyun.log import LogItem as SlsItem
    from aliyun.log import PutLogsRequest

    client: Any = SlsClient(endpoint.removeprefix("http://"), "bench", "unused")
    started = time.perf_counter()
    for i in range(0, len(logs), 4096):
        items = [SlsItem(contents=list(log.items())) for log in logs[i : i + 4096]]
        client.put_logs(PutLogsRequest("bench", "ls", "", "", items))
    return time.perf_counter() - started


def run_sls_producer(endpoint: str, logs: list[dict[str, str]]) -> float:
    import aliyun_log_producer as alp

    port = endpoint.rsplit(":", 1)[1]
    config = alp.ProducerConfig(
        endpoint=f"http://localhost:{port}", access_key_id="unused", access_key_secret="unused"
    )
    failures: list[object] = []
    started = time.perf_counter()
    with alp.Producer(config) as producer:
        writer = producer.writer("bench", "ls")
        for log in logs:
            while True:  # its buffer refuses instead of blocking: wait for room
                try:
                    writer.send(log, on_delivery=lambda error: error and failures.append(error))
                    break
                except alp.EnqueueFullError:
                    time.sleep(0.001)
        producer.flush()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"aliyun-log-producer failed: {failures[:3]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    logs = make_logs(args.logs)
    server = start_server()  # signatures off: the SDK signs, the server does not check
    os.environ.pop("NO_PROXY", None)
    os.environ.pop("no_proxy", None)
    os.environ["HTTP_PROXY"] = os.environ["http_proxy"] = server.endpoint
    try:
        with LogClient(server.endpoint) as client:
            client.create_project("bench")
            client.create_logstore("bench", "ls", shard_count=4, ttl=1)
        run_sls_sdk(server.endpoint, logs[:8192])  # warm up
        results: dict[str, list[float]] = {
            "sdk": [],
            "producer": [],
            "client": [],
            "sls-producer": [],
        }
        for _ in range(args.runs):
            results["sdk"].append(run_sls_sdk(server.endpoint, logs))
            results["producer"].append(run_producer(server.endpoint, logs, 1)[0])
            results["client"].append(run_client(server.endpoint, logs))
            results["sls-producer"].append(run_sls_producer(server.endpoint, logs))
        names = {
            "sdk": "aliyun-log-python-sdk put_logs loop (4096 logs/call, lz4)",
            "producer": "logharbor Producer (1 log per send)",
            "client": "logharbor LogClient.put_logs loop (4096 logs/call)",
            "sls-producer": "aliyun-log-producer (1 log per send)",
        }
        sdk = statistics.median(results["sdk"])
        for key, label in names.items():
            median = statistics.median(results[key])
            runs = ", ".join(f"{len(logs) / t:,.0f}" for t in results[key])
            print(
                f"{label}: median {len(logs) / median:,.0f} logs/s "
                f"(runs: {runs}); {sdk / median:.2f}x the SLS SDK loop"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
