"""Nothing acknowledged is lost: kill -9 a real server under concurrent writes, restart
it, and find every acknowledged log group intact."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import lz4.block
import pytest

from groups import log_group_bytes
from harness import ServerProcess
from logharbor.protocol.codec import encode_cursor, iter_frames
from logharbor.protocol.schema import LogGroup

PATH = "/api/v1/projects/crash/logstores/ls"
WRITERS = 6
ROUNDS = 3


def write_until_refused(
    server: ServerProcess, writer: int, acked: set[str], stop: threading.Event
) -> None:
    padding = "x" * 2000
    with httpx.Client(base_url=server.endpoint, timeout=10) as http:
        sequence = 0
        while not stop.is_set():
            ident = f"{server.endpoint}-{writer}-{sequence}"
            raw = log_group_bytes(*({"id": ident, "i": str(i), "pad": padding} for i in range(8)))
            try:
                response = http.post(
                    PATH + "/logs",
                    content=lz4.block.compress(raw, store_size=False),
                    headers={
                        "content-type": "application/x-protobuf",
                        "x-lh-compress-type": "lz4",
                        "x-lh-raw-size": str(len(raw)),
                    },
                )
            except httpx.TransportError:
                return  # the server is gone
            if response.status_code != 200:
                return
            acked.add(ident)
            sequence += 1


def stored_ids(server: ServerProcess) -> list[str]:
    ids: list[str] = []
    shards = server.request("GET", PATH + "/shards").json()["shards"]
    for shard in shards:
        cursor = encode_cursor(0)
        while True:
            response = server.request(
                "GET",
                f"{PATH}/shards/{shard['shardId']}/logs",
                params=[("cursor", cursor), ("count", "1000")],
            )
            assert response.status_code == 200, response.text
            for frame in iter_frames(response.content):  # verifies every checksum
                group = LogGroup.FromString(frame.raw())
                assert len(group.Logs) == 8  # never a partial log group
                ids.append(group.Logs[0].Contents[0].Value)
            if response.headers["x-lh-next-cursor"] == cursor:
                break
            cursor = response.headers["x-lh-next-cursor"]
    return ids


@pytest.mark.slow
def test_acknowledged_writes_survive_kill_9(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    data_dir = tmp_path / "crash-data"
    rng = random.Random(20261122)
    acked: set[str] = set()
    server = server_factory(data_dir, auth=False)
    server.request("POST", "/api/v1/projects", content=b'{"name": "crash"}')
    server.request(
        "POST",
        "/api/v1/projects/crash/logstores",
        content=json.dumps({"name": "ls", "shardCount": 3}).encode(),
    )
    for _round in range(ROUNDS):
        stop = threading.Event()
        writers = [
            threading.Thread(target=write_until_refused, args=(server, w, acked, stop))
            for w in range(WRITERS)
        ]
        for thread in writers:
            thread.start()
        before = len(acked)
        deadline = time.monotonic() + 30
        time.sleep(rng.uniform(0.3, 1.2))  # a random moment, but after some real writing
        while len(acked) - before < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill()
        stop.set()
        for thread in writers:
            thread.join(30)
        server = server_factory(data_dir, auth=False)
        ids = stored_ids(server)
        missing = acked - set(ids)
        assert not missing, f"{len(missing)} acknowledged groups lost: {sorted(missing)[:3]}"
        assert len(ids) == len(set(ids)), "a log group was stored twice"
    assert len(acked) >= 50 * ROUNDS  # the test really wrote under load


def _children(pid: int) -> set[int]:
    """The processes ``pid`` started (from /proc, Linux)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(child) for child in text)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_killed_server_leaves_no_worker_processes(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    # the ingest/index worker processes exit by themselves once their server is
    # gone, even after a kill -9 (they used to wait for ever, 2 per killed server)
    server = server_factory(tmp_path / "data", auth=False)
    assert server.process is not None
    deadline = time.monotonic() + 30
    workers: set[int] = set()
    while time.monotonic() < deadline:
        workers = {p for p in _children(server.process.pid) if _alive(p)}
        if len(workers) >= 2:  # the resource tracker and at least one worker
            break
        time.sleep(0.1)
    assert workers
    server.kill()
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)]
