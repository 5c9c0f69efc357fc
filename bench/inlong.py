"""InLong DataProxy ingest: concurrent TCP connections send batches to the listener.

Each connection pipelines batches (up to ``--window`` unacknowledged) and counts a
batch once its acknowledgement arrived, i.e. once it is durable.  Two shapes:

- ``go``: type 5 text frames as the Go SDK sends them by default (50 messages,
  snappy above 256 bytes, a fresh ``sid`` each, so de-duplication is exercised
  but never hits);
- ``cpp``: type 7 binary packs of about 400 KiB as the C++ SDK fills them
  (snappy), one request in flight per connection as that SDK does.

Prints logs/s and MB/s of raw message bytes acknowledged.  Usage:

    python bench/inlong.py [--seconds 10] [--connections 8] [--shape go|cpp|both]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import struct
import tempfile
import time
import uuid
from pathlib import Path

import cramjam

from _common import PATHS, cpu_seconds
from harness import ServerProcess
from inlong_frames import binary_frame, items_body, text_frame

GROUP, STREAM = "bench_group", "access"


def access_lines(count: int, seed: int) -> list[bytes]:
    """Access-log-like delimited lines of ~300 bytes."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        fields = [
            f"2026-11-22T02:36:{rng.randrange(60):02d}.{rng.randrange(1000):03d}Z",
            rng.choice(["GET", "POST", "PUT"]),
            rng.choice(PATHS),
            rng.choice(["200"] * 20 + ["404", "500"]),
            str(rng.randrange(1, 900)),
            str(rng.randrange(100, 90000)),
            f"192.168.{rng.randrange(256)}.{rng.randrange(256)}",
            rng.choice(["Mozilla/5.0 (X11; Linux x86_64)", "curl/8.4.0", "python-httpx/0.28"]),
            f"{rng.getrandbits(64):016x}",
            f"handled request in worker {rng.randrange(16)} trace {rng.getrandbits(40):x} "
            + "x" * rng.randrange(60, 140),
        ]
        lines.append("|".join(fields).encode())
    return lines


async def run_go(port: int, connections: int, seconds: float, window: int) -> tuple[int, int]:
    """Type 5 batches of 50; returns (logs, raw bytes) acknowledged."""
    bodies = []
    for seed in range(16):
        lines = access_lines(50, seed)
        bodies.append((bytes(cramjam.snappy.compress_raw(items_body(lines))), sum(map(len, lines))))
    logs = raw = 0
    deadline = time.perf_counter() + seconds

    async def connection(index: int) -> None:
        nonlocal logs, raw
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        in_flight: asyncio.Queue[int] = asyncio.Queue(window)

        async def read_acks() -> None:
            nonlocal logs, raw
            while True:
                size = await in_flight.get()
                if size < 0:
                    return
                head = await reader.readexactly(4)
                frame = await reader.readexactly(struct.unpack(">I", head)[0])
                if b"errCode=" in frame:
                    raise RuntimeError(f"refused: {frame!r}")
                logs += 50
                raw += size

        acks = asyncio.create_task(read_acks())
        n = index
        while time.perf_counter() < deadline:
            body, size = bodies[n % len(bodies)]
            n += connections
            mid = uuid.uuid4().hex
            attr = (
                f"groupId={GROUP}&streamId={STREAM}&dt={time.time_ns() // 1_000_000}"
                f"&mid={mid}&sid={mid}&wid={index}&cnt=50&cp=snappy"
            )
            await in_flight.put(size)
            writer.write(text_frame(body, attr))
            await writer.drain()
        await in_flight.put(-1)
        await acks
        writer.close()

    await asyncio.gather(*(connection(i) for i in range(connections)))
    return logs, raw


async def run_cpp(port: int, connections: int, seconds: float) -> tuple[int, int]:
    """Type 7 packs of ~400 KiB raw, one in flight per connection."""
    packs = []
    for seed in range(4):
        lines = access_lines(1300, 100 + seed)
        packs.append((binary_frame(GROUP, STREAM, lines), len(lines), sum(map(len, lines))))
    assert all(len(frame) < 512 << 10 for frame, _, _ in packs)
    logs = raw = 0
    deadline = time.perf_counter() + seconds

    async def connection(index: int) -> None:
        nonlocal logs, raw
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = index
        while time.perf_counter() < deadline:
            frame, count, size = packs[n % len(packs)]
            n += 1
            writer.write(frame)
            head = await reader.readexactly(4)
            await reader.readexactly(struct.unpack(">I", head)[0])
            logs += count
            raw += size
        writer.close()

    await asyncio.gather(*(connection(i) for i in range(connections)))
    return logs, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--window", type=int, default=32, help="go: unacked batches per connection")
    parser.add_argument("--shape", choices=["go", "cpp", "both"], default="both")
    args = parser.parse_args()
    server = ServerProcess(
        Path(tempfile.mkdtemp(prefix="logharbor-bench-")),
        auth=False,
        env={"LOGHARBOR_INLONG_PORT": "0", "LOGHARBOR_INLONG_AUTO_CREATE": "1"},
    ).start()
    try:
        port = int(re.search(r"tcp://\S+:(\d+)", "".join(server.banner)).group(1))  # type: ignore[union-attr]
        server.request("POST", "/api/v1/projects", content=b'{"name": "bench-group"}')
        server.request(
            "POST",
            "/api/v1/projects/bench-group/logstores",
            content=json.dumps({"name": STREAM, "shardCount": 4, "ttl": 1}).encode(),
        )
        assert server.process is not None
        shapes = ["go", "cpp"] if args.shape == "both" else [args.shape]
        for shape in shapes:
            cpu_before = cpu_seconds(server.process.pid)
            started = time.perf_counter()
            if shape == "go":
                logs, raw = asyncio.run(run_go(port, args.connections, args.seconds, args.window))
            else:
                logs, raw = asyncio.run(run_cpp(port, args.connections, args.seconds))
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(server.process.pid) - cpu_before
            print(
                f"inlong {shape:3s} {args.connections} connections: "
                f"{logs / elapsed:,.0f} logs/s, {raw / elapsed / 1e6:.1f} MB/s raw "
                f"({logs:,} logs acknowledged durably in {elapsed:.1f} s; "
                f"server CPU {cpu / elapsed:.2f} cores)"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
