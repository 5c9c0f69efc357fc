# ruff: noqa: F811  (pytest fixtures imported from sls_support)
"""The SDK's ConsumerWorker against LogHarbor (spec §10, a16-a18): one worker,
two workers with a graceful stop, and a SIGKILLed worker in a child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aliyun.log")

from aliyun.log import LogItem, PutLogsRequest
from aliyun.log.consumer import (
    ConsumerProcessorBase,
    ConsumerWorker,
    CursorPosition,
    LogHubConfig,
)

from sls_support import (  # noqa: F401
    AK,
    HASH4,
    SK,
    endpoint_of,
    fresh_project,
    proxy_env,
    sls_client,
    sls_server,
    wait_for,
)

pytestmark = pytest.mark.slow

_lock = threading.Lock()
_seen: dict[str, list[tuple[str, int]]] = defaultdict(list)


class Recorder(ConsumerProcessorBase):  # type: ignore[misc]
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def process(self, log_groups: Any, tracker: Any) -> None:
        with _lock:
            for group in log_groups.LogGroups:
                for log in group.Logs:
                    for content in log.Contents:
                        if content.Key == "id":
                            _seen[content.Value].append((self.name, self.shard_id))
        self.save_checkpoint(tracker, force=True)


def _put_ids(client: Any, project: str, first: int, last: int) -> None:
    for i in range(first, last + 1):
        item = LogItem(contents=[("id", str(i))])
        client.put_logs(PutLogsRequest(project, "ls", "", "", [item], hashKey=HASH4[i % 4]))


def _worker(server: Any, project: str, name: str) -> Any:
    config = LogHubConfig(
        endpoint_of(server),
        AK,
        SK,
        project,
        "ls",
        "grp",
        name,
        cursor_position=CursorPosition.BEGIN_CURSOR,
        heartbeat_interval=1,
        data_fetch_interval=0.2,
    )
    worker = ConsumerWorker(Recorder, config, args=(name,))
    worker.start()
    return worker


def _stop(worker: Any) -> None:
    worker.shutdown()
    worker.join(timeout=30)


def _held(worker: Any) -> list[int]:
    return sorted(worker.heart_beat.get_held_shards())


def _recorded(ids: range) -> bool:
    with _lock:
        return all(str(i) in _seen for i in ids)


@pytest.fixture(autouse=True)
def _clear() -> None:
    with _lock:
        _seen.clear()


def test_a16_single_worker_resumes_from_checkpoint(sls_client: Any, sls_server: Any) -> None:
    p = fresh_project(sls_client, 4)
    _put_ids(sls_client, p, 0, 39)
    worker = _worker(sls_server, p, "solo")
    try:
        wait_for(lambda: _recorded(range(40)))
    finally:
        _stop(worker)
    _put_ids(sls_client, p, 40, 59)
    worker = _worker(sls_server, p, "solo")
    try:
        wait_for(lambda: _recorded(range(60)))
    finally:
        _stop(worker)
    with _lock:
        assert {i: len(v) for i, v in _seen.items()} == {str(i): 1 for i in range(60)}


def test_a17_two_workers_split_then_one_takes_over(sls_client: Any, sls_server: Any) -> None:
    p = fresh_project(sls_client, 4)
    _put_ids(sls_client, p, 0, 39)
    a = _worker(sls_server, p, "A")
    b = None
    try:
        wait_for(lambda: _held(a) == [0, 1, 2, 3])
        b = _worker(sls_server, p, "B")
        wait_for(lambda: len(_held(a)) == 2 and len(_held(b)) == 2)  # type: ignore[arg-type]
        assert not set(_held(a)) & set(_held(b))
        _put_ids(sls_client, p, 40, 79)
        _stop(a)
        wait_for(lambda: _held(b) == [0, 1, 2, 3], timeout=15)  # type: ignore[arg-type]
        _put_ids(sls_client, p, 80, 119)
        wait_for(lambda: _recorded(range(120)))
    finally:
        _stop(a)
        if b is not None:
            _stop(b)
    with _lock:
        assert {i: len(v) for i, v in _seen.items()} == {str(i): 1 for i in range(120)}


_CHILD = textwrap.dedent(
    """
    import sys, time
    from aliyun.log.consumer import (
        ConsumerProcessorBase, ConsumerWorker, CursorPosition, LogHubConfig)

    endpoint, project, out = sys.argv[1:4]

    class Appender(ConsumerProcessorBase):
        def process(self, log_groups, tracker):
            with open(out, "a") as f:
                for group in log_groups.LogGroups:
                    for log in group.Logs:
                        for c in log.Contents:
                            if c.Key == "id":
                                f.write(f"{self.shard_id} {c.Value}\\n")
                f.flush()
            self.save_checkpoint(tracker, force=True)

    config = LogHubConfig(endpoint, "testAKID", "testSecret", project, "ls", "grp", "A",
                          cursor_position=CursorPosition.BEGIN_CURSOR,
                          heartbeat_interval=1, data_fetch_interval=0.2)
    ConsumerWorker(Appender, config).start()
    while True:
        time.sleep(1)
    """
)


def test_a18_sigkill_failover(sls_client: Any, sls_server: Any, tmp_path: Path) -> None:
    p = fresh_project(sls_client, 4)
    _put_ids(sls_client, p, 0, 39)
    out = tmp_path / "child.txt"
    env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
    env.update(proxy_env(sls_server))
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, endpoint_of(sls_server), p, str(out)], env=env
    )
    b = None
    try:
        time.sleep(4)
        b = _worker(sls_server, p, "B")
        wait_for(lambda: len(_held(b)) == 2)  # type: ignore[arg-type]
        # checkpoints A committed for the shards it will lose (read before the kill)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        wait_for(lambda: _held(b) == [0, 1, 2, 3], timeout=15)  # type: ignore[arg-type]
        _put_ids(sls_client, p, 40, 79)
        points = sls_client.get_check_point(p, "ls", "grp").get_consumer_group_check_points()
        wait_for(lambda: _recorded(range(40, 80)))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if b is not None:
            _stop(b)
    assert len(points) == 4
    assert all(c["checkpoint"] for c in points), points
    # nothing A processed is lost; every id 0..39 was processed by A or B
    by_child = {line.split()[1] for line in out.read_text().split("\n") if line.strip()}
    with _lock:
        assert set(map(str, range(40))) <= by_child | set(_seen)
        assert all(len(v) == 1 for v in _seen.values())
