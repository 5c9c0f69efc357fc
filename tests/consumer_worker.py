"""A consumer group worker in its own process, for tests/test_consumer_worker.py.

Every processed log is appended to ``--out`` as ``id,shard,position,consumer,time_ns``
(``position`` is its log group's; the file is flushed after each batch). SIGTERM
stops the worker gracefully; the script prints ``stopped`` once it has.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import TextIO

from logharbor import (
    Checkpointer,
    ConsumerGroupWorker,
    ConsumerProcessor,
    ConsumerSettings,
    PulledLogGroup,
)


class Recorder(ConsumerProcessor):
    def __init__(self, out: TextIO, consumer: str, lock: threading.Lock) -> None:
        self.out, self.consumer, self.lock = out, consumer, lock
        self.shard = -1

    def initialize(self, shard_id: int) -> None:
        self.shard = shard_id

    def process(self, log_groups: Sequence[PulledLogGroup], checkpointer: Checkpointer) -> None:
        lines = []
        for group in log_groups:
            position = group.cursor.position
            for log in group.logs:
                lines.append(
                    f"{log.get('id')},{self.shard},{position},{self.consumer},{time.time_ns()}\n"
                )
        with self.lock:
            self.out.write("".join(lines))
            self.out.flush()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    for name in ("endpoint", "key-id", "key-secret", "project", "logstore", "group", "consumer"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--heartbeat", type=float, default=0.5)
    parser.add_argument("--timeout", type=int, default=2)
    parser.add_argument("--checkpoint-interval", type=float, default=0.5)
    parser.add_argument("--in-order", action="store_true")
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    lock = threading.Lock()
    settings = ConsumerSettings(
        heartbeat_interval=args.heartbeat,
        group_timeout=args.timeout,
        wait_ms=300,
        auto_checkpoint_interval=args.checkpoint_interval,
        in_order=args.in_order,
    )
    with open(args.out, "a", encoding="utf-8") as out:
        worker = ConsumerGroupWorker(
            lambda: Recorder(out, args.consumer, lock),
            endpoint=args.endpoint,
            access_key_id=args.key_id,
            access_key_secret=args.key_secret,
            project=args.project,
            logstore=args.logstore,
            group=args.group,
            consumer=args.consumer,
            settings=settings,
        )
        worker.start()
        print("started", flush=True)
        stop.wait()
        clean = worker.shutdown(timeout=10)
    print("stopped" if clean else "stopped uncleanly", flush=True)
    sys.exit(0 if clean else 1)


if __name__ == "__main__":
    main()
