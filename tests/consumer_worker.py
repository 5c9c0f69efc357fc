"""A consumer group worker in its own process, for tests/test_consumer_worker.py.

Every processed log is appended to ``--out`` as
``id,logstore,shard,position,consumer,time_ns`` (``position`` is its log group's; the
file is flushed after each batch). SIGTERM stops the worker gracefully; the script
prints ``stopped`` once it has.

``--logstore ls`` joins that logstore's group, ``--logstores a,b`` a project's group
over both; ``--asyncio`` runs an ``AsyncConsumerWorker`` instead of a
``ConsumerGroupWorker``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

from logharbor import (
    Checkpointer,
    ConsumerGroupWorker,
    ConsumerProcessor,
    ConsumerSettings,
    PulledLogGroup,
)
from logharbor.client import AsyncCheckpointer, AsyncConsumerProcessor, AsyncConsumerWorker


class Output:
    def __init__(self, out: TextIO, consumer: str) -> None:
        self.out, self.consumer = out, consumer
        self.lock = threading.Lock()

    def write(self, logstore: str, shard: int, log_groups: Sequence[PulledLogGroup]) -> None:
        lines = []
        for group in log_groups:
            position = group.cursor.position
            for log in group.logs:
                lines.append(
                    f"{log.get('id')},{logstore},{shard},{position},{self.consumer},"
                    f"{time.time_ns()}\n"
                )
        with self.lock:
            self.out.write("".join(lines))
            self.out.flush()


class Recorder(ConsumerProcessor):
    def __init__(self, output: Output) -> None:
        self.output = output

    def process(self, log_groups: Sequence[PulledLogGroup], checkpointer: Checkpointer) -> None:
        self.output.write(checkpointer.logstore, checkpointer.shard_id, log_groups)


class AsyncRecorder(AsyncConsumerProcessor):
    def __init__(self, output: Output) -> None:
        self.output = output

    async def process(
        self, log_groups: Sequence[PulledLogGroup], checkpointer: AsyncCheckpointer
    ) -> None:
        self.output.write(checkpointer.logstore, checkpointer.shard_id, log_groups)


def run_threads(options: dict[str, Any], output: Output) -> bool:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker = ConsumerGroupWorker(lambda: Recorder(output), **options)
    worker.start()
    print("started", flush=True)
    stop.wait()
    return worker.shutdown(timeout=10)


async def run_asyncio(options: dict[str, Any], output: Output) -> bool:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    worker = AsyncConsumerWorker(lambda: AsyncRecorder(output), **options)
    await worker.start()
    print("started", flush=True)
    await stop.wait()
    return await worker.shutdown(timeout=10)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    for name in ("endpoint", "key-id", "key-secret", "project", "group", "consumer", "out"):
        parser.add_argument(f"--{name}", required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--logstore")
    where.add_argument("--logstores", type=lambda names: names.split(","))
    parser.add_argument("--heartbeat", type=float, default=0.5)
    parser.add_argument("--timeout", type=int, default=2)
    parser.add_argument("--checkpoint-interval", type=float, default=0.5)
    parser.add_argument("--in-order", action="store_true")
    parser.add_argument("--asyncio", action="store_true")
    args = parser.parse_args(argv)

    settings = ConsumerSettings(
        heartbeat_interval=args.heartbeat,
        group_timeout=args.timeout,
        wait_ms=300,
        auto_checkpoint_interval=args.checkpoint_interval,
        in_order=args.in_order,
    )
    options: dict[str, Any] = {
        "endpoint": args.endpoint,
        "access_key_id": args.key_id,
        "access_key_secret": args.key_secret,
        "project": args.project,
        "logstore": args.logstore,
        "logstores": args.logstores,
        "group": args.group,
        "consumer": args.consumer,
        "settings": settings,
    }
    with open(args.out, "a", encoding="utf-8") as out:
        output = Output(out, args.consumer)
        if args.asyncio:
            clean = asyncio.run(run_asyncio(options, output))
        else:
            clean = run_threads(options, output)
    print("stopped" if clean else "stopped uncleanly", flush=True)
    sys.exit(0 if clean else 1)


if __name__ == "__main__":
    main()
