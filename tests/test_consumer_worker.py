"""ConsumerGroupWorker acceptance: real worker processes (tests/consumer_worker.py)
against a real server. Each worker appends every log it processed to its own file,
so the tests can tell lost logs from repeated ones.

Timings: heartbeat 0.5 s, group timeout 2 s.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import ServerProcess
from logharbor import LogClient, LogItem, NotFoundError, RetryPolicy

HERE = Path(__file__).resolve().parent
GROUP = "workers"
TIMEOUT = 2  # the group timeout, seconds
HASH4 = ["0" * 32, "4" + "0" * 31, "8" + "0" * 31, "c" + "0" * 31]


def eventually(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` until it holds; the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)
    return time.monotonic() - started


@dataclass(frozen=True)
class Record:
    id: int
    shard: int
    position: int
    consumer: str
    time_ns: int


class Worker:
    """A worker process; ``kill`` is kill -9, ``stop`` a graceful SIGTERM."""

    def __init__(
        self,
        server: ServerProcess,
        project: str,
        name: str,
        out_dir: Path,
        *,
        in_order: bool = False,
    ) -> None:
        self.name = name
        self.out = out_dir / f"{name}.csv"
        self.out.touch()
        args = [
            sys.executable,
            str(HERE / "consumer_worker.py"),
            f"--endpoint={server.endpoint}",
            f"--key-id={server.access_key_id}",
            f"--key-secret={server.access_key_secret}",
            f"--project={project}",
            "--logstore=ls",
            f"--group={GROUP}",
            f"--consumer={name}",
            f"--timeout={TIMEOUT}",
            f"--out={self.out}",
        ]
        if in_order:
            args.append("--in-order")
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)

    def records(self) -> list[Record]:
        lines = self.out.read_text(encoding="utf-8").splitlines()
        records = []
        for line in lines:
            fields = line.split(",")
            if len(fields) == 5:  # a killed worker may leave half a line
                records.append(
                    Record(
                        int(fields[0]), int(fields[1]), int(fields[2]), fields[3], int(fields[4])
                    )
                )
        return records

    def stop(self, timeout: float = 20) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout) == 0, f"{self.name} did not stop cleanly"

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


class Feeder:
    """Writes logs with ids 0, 1, 2... (``id`` content), a few per log group, routed
    by turns over ``keys``; in the background with ``start``, or ``put(n)`` at once."""

    def __init__(self, client: LogClient, project: str, keys: list[str]) -> None:
        self.client, self.project, self.keys = client, project, keys
        self.next_id = 0
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def put(self, count: int, per_group: int = 5) -> None:
        for _ in range(0, count, per_group):
            with self.lock:
                first, self.next_id = self.next_id, self.next_id + per_group
                key = self.keys[(first // per_group) % len(self.keys)]
            logs = [LogItem({"id": str(i)}) for i in range(first, first + per_group)]
            self.client.put_logs(self.project, "ls", logs, hash_key=key)

    def start(self, per_second: float = 200) -> Feeder:
        def run() -> None:
            while not self.stop_event.is_set():
                self.put(5)
                self.stop_event.wait(5 / per_second)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return self

    def finish(self) -> int:
        """Stop writing; how many ids were written."""
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(30)
        return self.next_id


@pytest.fixture
def writer_client(server: ServerProcess) -> Iterator[LogClient]:
    with LogClient(
        server.endpoint,
        access_key_id=server.access_key_id,
        access_key_secret=server.access_key_secret,
        retry=RetryPolicy(max_retries=20, backoff_base=0.1, backoff_max=1.0),
    ) as c:
        yield c


class Scene:
    """A fresh project with logstore ``ls``, the workers started on it, and checks."""

    def __init__(self, server: ServerProcess, client: LogClient, project: str, tmp: Path) -> None:
        self.server, self.client, self.project, self.tmp = server, client, project, tmp
        self.workers: dict[str, Worker] = {}

    def start(self, name: str, *, in_order: bool = False) -> Worker:
        worker = Worker(self.server, self.project, name, self.tmp, in_order=in_order)
        self.workers[name] = worker
        return worker

    def assignment(self) -> dict[str, tuple[int, ...]]:
        try:
            status = self.client.get_consumer_group_status(self.project, "ls", GROUP)
        except NotFoundError:  # the workers create the group as they start
            return {}
        return dict(status.consumers)

    def records(self) -> list[Record]:
        return [r for w in self.workers.values() for r in w.records()]

    def counts(self) -> Counter[int]:
        return Counter(r.id for r in self.records())

    def wait_consumed(self, total: int, timeout: float = 30) -> None:
        eventually(lambda: set(self.counts()) >= set(range(total)), timeout, f"{total} ids")

    def close(self) -> None:
        for worker in self.workers.values():
            if worker.process.poll() is None:
                worker.kill()


@pytest.fixture
def scene(
    server: ServerProcess,
    writer_client: LogClient,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> Iterator[Callable[[int], Scene]]:
    made: list[Scene] = []

    def make(shards: int) -> Scene:
        project = unique_name("cw")
        writer_client.create_project(project)
        writer_client.create_logstore(project, "ls", shard_count=shards)
        made.append(Scene(server, writer_client, project, tmp_path))
        return made[-1]

    yield make
    for each in made:
        each.close()
        with contextlib.suppress(Exception):
            writer_client.delete_project(each.project)


def fair(assignment: dict[str, tuple[int, ...]], members: int, shards: int) -> bool:
    counts = [len(held) for held in assignment.values()]
    every = sorted(s for held in assignment.values() for s in held)
    return (
        len(assignment) == members
        and every == list(range(shards))
        and max(counts) - min(counts) <= 1
    )


# ------------------------------------------------------------------ scenarios


@pytest.mark.parametrize(("workers", "shards"), [(2, 4), (3, 8)])
def test_workers_split_the_shards_fairly_and_consume_everything_once(
    scene: Callable[[int], Scene], writer_client: LogClient, workers: int, shards: int
) -> None:
    s = scene(shards)
    keys = [f"{(i * 256 // shards):02x}" + "0" * 30 for i in range(shards)]
    feeder = Feeder(writer_client, s.project, keys)
    feeder.put(200)
    for n in range(workers):
        s.start(f"w{n}")
    eventually(lambda: fair(s.assignment(), workers, shards), 20, "a fair split")
    feeder.put(200)
    s.wait_consumed(400)
    for worker in s.workers.values():
        worker.stop()
    counts = s.counts()
    assert set(counts) == set(range(400))
    assert max(counts.values()) == 1, "repeated ids"
    by_worker = {w.name: {r.shard for r in w.records()} for w in s.workers.values()}
    assert all(by_worker.values()), by_worker


def positions(client: LogClient, project: str) -> dict[int, int]:
    """The group's checkpoints, as positions (0 where there is none)."""
    return {
        c.shard_id: 0 if c.cursor is None else c.cursor.position
        for c in client.get_checkpoints(project, "ls", GROUP)
    }


def assert_repeats_after(records: list[Record], checkpoints: dict[int, int]) -> int:
    """Every log processed more than once sits at or after its shard's checkpoint;
    how many repeats there were."""
    seen: set[int] = set()
    repeats = 0
    for record in sorted(records, key=lambda r: r.time_ns):
        if record.id in seen:
            repeats += 1
            assert record.position >= checkpoints[record.shard], record
        seen.add(record.id)
    return repeats


@pytest.mark.slow
def test_a_killed_worker_s_shards_move_in_time_and_only_logs_after_its_checkpoints_repeat(
    scene: Callable[[int], Scene], writer_client: LogClient
) -> None:
    s = scene(4)
    feeder = Feeder(writer_client, s.project, HASH4).start()
    a = s.start("a")
    eventually(lambda: fair(s.assignment(), 1, 4), 20, "a holds every shard")
    s.start("b")
    eventually(lambda: fair(s.assignment(), 2, 4), 20, "a fair split")
    time.sleep(1.5)
    a_shards = s.assignment()["a"]
    a.kill()
    checkpoints = positions(writer_client, s.project)  # a can save no more
    took = eventually(
        lambda: s.assignment().get("b") == (0, 1, 2, 3), 2 * TIMEOUT + 5, "b holds every shard"
    )
    assert took <= 2 * TIMEOUT + 1, took
    time.sleep(1)
    total = feeder.finish()
    s.wait_consumed(total)
    s.workers["b"].stop()

    records = s.records()
    assert set(r.id for r in records) == set(range(total)), "lost ids"
    for record in s.workers["b"].records():
        if record.shard in a_shards:  # b resumed a's shards at a's checkpoints
            assert record.position >= checkpoints[record.shard], record
    assert_repeats_after(records, checkpoints)


@pytest.mark.slow
def test_a_stopped_worker_hands_its_shards_over_with_nothing_lost_or_repeated(
    scene: Callable[[int], Scene], writer_client: LogClient
) -> None:
    s = scene(4)
    feeder = Feeder(writer_client, s.project, HASH4).start()
    a, b = s.start("a"), s.start("b")
    eventually(lambda: fair(s.assignment(), 2, 4), 20, "a fair split")
    time.sleep(1.5)
    a.stop()
    took = eventually(
        lambda: s.assignment().get("b") == (0, 1, 2, 3), 2 * TIMEOUT + 5, "b holds every shard"
    )
    assert took <= 2 * TIMEOUT + 1, took
    time.sleep(1)
    total = feeder.finish()
    s.wait_consumed(total)
    b.stop()
    counts = s.counts()
    assert set(counts) == set(range(total)), "lost ids"
    assert [i for i, n in counts.items() if n > 1] == [], "repeated ids"


@pytest.mark.slow
def test_a_worker_joining_mid_stream_takes_its_share_without_loss(
    scene: Callable[[int], Scene], writer_client: LogClient
) -> None:
    s = scene(4)
    feeder = Feeder(writer_client, s.project, HASH4).start()
    a = s.start("a")
    eventually(lambda: fair(s.assignment(), 1, 4), 20, "a holds every shard")
    time.sleep(1)
    b = s.start("b")
    eventually(lambda: fair(s.assignment(), 2, 4), 20, "a fair split")
    time.sleep(1)
    total = feeder.finish()
    s.wait_consumed(total)
    a.stop()
    b.stop()
    counts = s.counts()
    assert set(counts) == set(range(total)), "lost ids"
    assert [i for i, n in counts.items() if n > 1] == [], "repeated ids"
    assert {r.consumer for r in s.records() if r.id >= total - 50} == {"a", "b"}


@pytest.mark.slow
def test_in_order_children_of_a_split_and_a_merge_come_after_their_parents(
    scene: Callable[[int], Scene], writer_client: LogClient
) -> None:
    s = scene(2)  # shard 0 takes keys 00.. to 80.., shard 1 the rest
    feeder = Feeder(writer_client, s.project, ["0" * 32, "4" + "0" * 31, "c" + "0" * 31])
    feeder.put(300)
    feeder.start()
    s.start("a", in_order=True)
    s.start("b", in_order=True)
    eventually(lambda: fair(s.assignment(), 2, 2), 20, "a fair split")
    time.sleep(0.5)
    _, left, right = writer_client.split_shard(s.project, "ls", 0, "4" + "0" * 31)
    time.sleep(2)
    _, _, merged = writer_client.merge_shard(s.project, "ls", left.shard_id)
    time.sleep(2)
    total = feeder.finish()
    s.wait_consumed(total)
    for worker in s.workers.values():
        worker.stop()

    records = s.records()
    assert set(r.id for r in records) == set(range(total)), "lost ids"
    by_shard: dict[int, list[int]] = {}
    for record in records:
        by_shard.setdefault(record.shard, []).append(record.time_ns)
    children = by_shard[left.shard_id] + by_shard[right.shard_id]
    assert max(by_shard[0]) < min(children), "a split's child came before its parent's end"
    assert max(children) < min(by_shard[merged.shard_id]), "a merge came before its parents"


@pytest.mark.slow
def test_workers_recover_from_a_server_restart_without_loss(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = server_factory(extra_args=["--port", str(port)])
    retry = RetryPolicy(max_retries=40, backoff_base=0.1, backoff_max=0.5)
    with LogClient(
        server.endpoint,
        access_key_id=server.access_key_id,
        access_key_secret=server.access_key_secret,
        retry=retry,
    ) as client:
        client.create_project("restart")
        client.create_logstore("restart", "ls", shard_count=4)
        s = Scene(server, client, "restart", tmp_path)
        try:
            feeder = Feeder(client, "restart", HASH4).start()
            s.start("a")
            s.start("b")
            eventually(lambda: fair(s.assignment(), 2, 4), 20, "a fair split")
            time.sleep(1.5)
            checkpoints = positions(client, "restart")
            server.stop()
            time.sleep(0.5)
            server.start()
            assert server.endpoint.endswith(f":{port}")
            time.sleep(2)
            total = feeder.finish()
            s.wait_consumed(total)
            for worker in s.workers.values():
                worker.stop()
            records = s.records()
            assert set(r.id for r in records) == set(range(total)), "lost ids"
            assert_repeats_after(records, checkpoints)
        finally:
            s.close()
