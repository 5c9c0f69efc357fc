"""Shared pieces of the benchmarks: a server subprocess and realistic log groups."""

from __future__ import annotations

import contextlib
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import ServerProcess
from logharbor.protocol.schema import LogGroup

PATHS = ["/api/v1/orders", "/api/v1/users/42", "/static/app.js", "/health", "/api/v2/search"]


def access_log_group(target_raw_bytes: int, seed: int) -> bytes:
    """A log group of access-log-like entries (~300 B each) of about the given raw size."""
    rng = random.Random(seed)
    group = LogGroup(Topic="access", Source="10.0.0.1")
    group.LogTags.add(Key="host", Value="web-1")
    t = 1_800_000_000
    while group.ByteSize() < target_raw_bytes:
        log = group.Logs.add(Time=t + rng.randrange(60), Time_ns=rng.randrange(10**9))
        for key, value in (
            ("method", rng.choice(["GET", "POST", "PUT"])),
            ("path", rng.choice(PATHS)),
            ("status", rng.choice(["200"] * 20 + ["404", "500"])),
            ("latency_ms", str(rng.randrange(1, 900))),
            ("bytes", str(rng.randrange(100, 90000))),
            ("client_ip", f"192.168.{rng.randrange(256)}.{rng.randrange(256)}"),
            (
                "user_agent",
                rng.choice(["Mozilla/5.0 (X11; Linux x86_64)", "curl/8.4.0", "python-httpx/0.28"]),
            ),
            ("request_id", f"{rng.getrandbits(64):016x}"),
            (
                "message",
                f"handled request in worker {rng.randrange(16)} trace {rng.getrandbits(40):x}",
            ),
        ):
            log.Contents.add(Key=key, Value=value)
    return bytes(group.SerializeToString())


def start_server(
    extra: list[str] | None = None, env: dict[str, str] | None = None
) -> ServerProcess:
    data_dir = Path(tempfile.mkdtemp(prefix="logharbor-bench-"))
    return ServerProcess(data_dir, auth=False, extra_args=extra or [], env=env or {}).start()


def create_logstore(server: ServerProcess, shards: int) -> str:
    server.request("POST", "/api/v1/projects", content=b'{"name": "bench"}')
    server.request(
        "POST",
        "/api/v1/projects/bench/logstores",
        content=json.dumps({"name": "ls", "shardCount": shards, "ttl": 1}).encode(),
    )
    return "/api/v1/projects/bench/logstores/ls"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process (from /proc)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of a process and its direct children, by pid."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    result = {pid: cpu_seconds(pid)}
    for child in children:
        with contextlib.suppress(FileNotFoundError):
            result[int(child)] = cpu_seconds(int(child))
    return result


class RawHttpConnection:
    """A minimal keep-alive HTTP/1.1 client for load generation: it costs far less
    CPU than a full client, which matters when it shares 2 cores with the server."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: object = None
        self.writer: object = None

    async def connect(self) -> None:
        import asyncio

        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        import asyncio

        assert isinstance(self.writer, asyncio.StreamWriter)
        assert isinstance(self.reader, asyncio.StreamReader)
        lines = [
            f"{method} {path} HTTP/1.1",
            f"host: {self.host}:{self.port}",
            f"content-length: {len(body)}",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        response_headers = {}
        for line in header_lines:
            if ":" in line:
                key, value = line.split(":", 1)
                response_headers[key.strip().lower()] = value.strip()
        content = await self.reader.readexactly(int(response_headers.get("content-length", 0)))
        return int(status_line.split()[1]), response_headers, content

    def close(self) -> None:
        import asyncio

        if isinstance(self.writer, asyncio.StreamWriter):
            self.writer.close()


async def put_groups(
    endpoint: str, path: str, bodies: list[tuple[bytes, int]], count: int, connections: int = 8
) -> None:
    """Put ``count`` lz4 log groups (cycling through ``bodies``: (body, raw size)) over
    ``connections`` keep-alive connections; each of the first ``len(bodies)`` goes once."""
    import asyncio

    host, port = endpoint.removeprefix("http://").rsplit(":", 1)

    async def writer(index: int) -> None:
        connection = RawHttpConnection(host, int(port))
        await connection.connect()
        for n in range(index, count, connections):
            body, raw = bodies[n % len(bodies)]
            status, _, answer = await connection.request(
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
        connection.close()

    await asyncio.gather(*(writer(i) for i in range(connections)))
