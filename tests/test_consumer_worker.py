"""Consumer group worker acceptance: real worker processes (tests/consumer_worker.py,
threaded ``ConsumerGroupWorker`` or ``AsyncConsumerWorker``) against a real server.
Each worker appends every log it processed to its own file, so the tests can tell
lost logs from repeated ones. Groups are a logstore's (``ls``) or, in the
project-level scenarios, a project's over logstores ``ls`` and ``ls2``.

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import ServerProcess
from logharbor import LogClient, LogItem, NotFoundError, RetryPolicy
from logharbor.client import Cursor, ShardRef

HERE = Path(__file__).resolve().parent
GROUP = "workers"
TIMEOUT = 2  # the group timeout, seconds
HASH4 = ["0" * 32, "4" + "0" * 31, "8" + "0" * 31, "c" + "0" * 31]
MODES = ["threads", "asyncio"]


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
    logstore: str
    shard_id: int
    position: int
    consumer: str
    time_ns: int

    @property
    def shard(self) -> ShardRef:
        return ShardRef(self.logstore, self.shard_id)


class Worker:
    """A worker process; ``kill`` is kill -9, ``stop`` a graceful SIGTERM."""

    def __init__(
        self,
        server: ServerProcess,
        project: str,
        name: str,
        out_dir: Path,
        *,
        logstores: tuple[str, ...] | None = None,
        mode: str = "threads",
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
            f"--logstores={','.join(logstores)}" if logstores else "--logstore=ls",
            f"--group={GROUP}",
            f"--consumer={name}",
            f"--timeout={TIMEOUT}",
            f"--out={self.out}",
        ]
        if in_order:
            args.append("--in-order")
        if mode == "asyncio":
            args.append("--asyncio")
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)

    def records(self) -> list[Record]:
        lines = self.out.read_text(encoding="utf-8").splitlines()
        records = []
        for line in lines:
            fields = line.split(",")
            if len(fields) == 6:  # a killed worker may leave half a line
                id_, logstore, shard, position, consumer, time_ns = fields
                records.append(
                    Record(int(id_), logstore, int(shard), int(position), consumer, int(time_ns))
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
    by turns over ``keys`` and ``logstores``; in the background with ``start``, or
    ``put(n)`` at once."""

    def __init__(
        self, client: LogClient, project: str, keys: list[str], logstores: Sequence[str] = ("ls",)
    ) -> None:
        self.client, self.project, self.keys, self.logstores = client, project, keys, logstores
        self.next_id = 0
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def put(self, count: int, per_group: int = 5) -> None:
        for _ in range(0, count, per_group):
            with self.lock:
                first, self.next_id = self.next_id, self.next_id + per_group
                turn = first // per_group
                key = self.keys[turn % len(self.keys)]
                logstore = self.logstores[(turn // len(self.keys)) % len(self.logstores)]
            logs = [LogItem({"id": str(i)}) for i in range(first, first + per_group)]
            self.client.put_logs(self.project, logstore, logs, hash_key=key)

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
    """A fresh project with logstore ``ls`` (and ``ls2`` for a project's group), the
    workers started on it, and checks."""

    def __init__(
        self,
        server: ServerProcess,
        client: LogClient,
        project: str,
        tmp: Path,
        logstores: tuple[str, ...] | None = None,
    ) -> None:
        self.server, self.client, self.project, self.tmp = server, client, project, tmp
        self.logstores = logstores  # None: the group of logstore ls
        self.workers: dict[str, Worker] = {}

    def start(self, name: str, *, mode: str = "threads", in_order: bool = False) -> Worker:
        worker = Worker(
            self.server,
            self.project,
            name,
            self.tmp,
            logstores=self.logstores,
            mode=mode,
            in_order=in_order,
        )
        self.workers[name] = worker
        return worker

    def _project_group(self, what: str) -> dict[str, Any] | None:
        """A project group's ``status`` or ``checkpoints`` (LogClient has no call for them)."""
        path = f"/api/v1/projects/{self.project}/consumergroups/{GROUP}/{what}"
        response = self.server.request("GET", path)
        if response.status_code == 404:  # the workers create the group as they start
            return None
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    def assignment(self) -> dict[str, tuple[ShardRef, ...]]:
        if self.logstores is not None:
            status = self._project_group("status") or {"consumers": []}
            return {
                member["name"]: tuple(ref_of(shard) for shard in member["shards"])
                for member in status["consumers"]
            }
        try:
            status = self.client.get_consumer_group_status(self.project, "ls", GROUP)
        except NotFoundError:
            return {}
        return {
            name: tuple(ShardRef("ls", s) for s in shards)
            for name, shards in status.consumers.items()
        }

    def positions(self) -> dict[ShardRef, int]:
        """The group's checkpoints, as positions (0 where there is none)."""
        if self.logstores is not None:
            document = self._project_group("checkpoints")
            assert document is not None
            return {ref_of(c): decode_position(c["cursor"]) for c in document["checkpoints"]}
        return {
            ShardRef("ls", c.shard_id): 0 if c.cursor is None else c.cursor.position
            for c in self.client.get_checkpoints(self.project, "ls", GROUP)
        }

    def all_shards(self) -> tuple[ShardRef, ...]:
        return tuple(
            ShardRef(logstore, shard.shard_id)
            for logstore in self.logstores or ("ls",)
            for shard in self.client.list_shards(self.project, logstore)
            if shard.status == "readwrite"
        )

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
) -> Iterator[Callable[..., Scene]]:
    made: list[Scene] = []

    def make(shards: int, logstores: tuple[str, ...] | None = None) -> Scene:
        project = unique_name("cw")
        writer_client.create_project(project)
        for logstore in logstores or ("ls",):
            writer_client.create_logstore(project, logstore, shard_count=shards)
        made.append(Scene(server, writer_client, project, tmp_path, logstores))
        return made[-1]

    yield make
    for each in made:
        each.close()
        with contextlib.suppress(Exception):
            writer_client.delete_project(each.project)


def fair(assignment: dict[str, tuple[ShardRef, ...]], members: int, shards: int) -> bool:
    counts = [len(held) for held in assignment.values()]
    every = [s for held in assignment.values() for s in held]
    return (
        len(assignment) == members
        and len(every) == len(set(every)) == shards
        and max(counts) - min(counts) <= 1
    )


def decode_position(cursor: str) -> int:
    return 0 if not cursor else Cursor(cursor).position


def ref_of(shard: dict[str, Any]) -> ShardRef:
    """A shard as a project's group writes it."""
    return ShardRef(shard["logstore"], shard["shardId"])


def assert_ordered_per_shard(worker: Worker) -> None:
    """The worker processed each shard's log groups in the shard's order."""
    last: dict[ShardRef, int] = {}
    for record in worker.records():  # in the order the worker wrote them
        assert record.position >= last.get(record.shard, 0), record
        last[record.shard] = record.position


def assert_repeats_after(records: list[Record], checkpoints: dict[ShardRef, int]) -> int:
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


# kinds of scene: a logstore's group with threaded or asyncio workers, or a project's
# group over two logstores of two shards each, worker "a" asyncio and the others threaded
KINDS = ["threads", "asyncio", "project"]


def kind_of_scene(scene: Callable[..., Scene], kind: str) -> Scene:
    return scene(2, ("ls", "ls2")) if kind == "project" else scene(4)


def mode_of(kind: str, name: str) -> str:
    if kind == "project":
        return "asyncio" if name == "a" else "threads"
    return kind


def feeder_of(s: Scene, client: LogClient) -> Feeder:
    return Feeder(client, s.project, HASH4, s.logstores or ("ls",))


# ------------------------------------------------------------------ scenarios


@pytest.mark.parametrize(
    ("workers", "shards", "mode"), [(2, 4, "threads"), (3, 8, "threads"), (2, 4, "asyncio")]
)
def test_workers_split_the_shards_fairly_and_consume_everything_once(
    scene: Callable[..., Scene], writer_client: LogClient, workers: int, shards: int, mode: str
) -> None:
    s = scene(shards)
    keys = [f"{(i * 256 // shards):02x}" + "0" * 30 for i in range(shards)]
    feeder = Feeder(writer_client, s.project, keys)
    feeder.put(200)
    for n in range(workers):
        s.start(f"w{n}", mode=mode)
    eventually(lambda: fair(s.assignment(), workers, shards), 20, "a fair split")
    feeder.put(200)
    s.wait_consumed(400)
    for worker in s.workers.values():
        worker.stop()
        assert_ordered_per_shard(worker)
    counts = s.counts()
    assert set(counts) == set(range(400))
    assert max(counts.values()) == 1, "repeated ids"
    by_worker = {w.name: {r.shard for r in w.records()} for w in s.workers.values()}
    assert all(by_worker.values()), by_worker


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_killed_worker_s_shards_move_in_time_and_only_logs_after_its_checkpoints_repeat(
    scene: Callable[..., Scene], writer_client: LogClient, kind: str
) -> None:
    s = kind_of_scene(scene, kind)
    feeder = feeder_of(s, writer_client).start()
    a = s.start("a", mode=mode_of(kind, "a"))
    eventually(lambda: fair(s.assignment(), 1, 4), 20, "a holds every shard")
    s.start("b", mode=mode_of(kind, "b"))
    eventually(lambda: fair(s.assignment(), 2, 4), 20, "a fair split")
    time.sleep(1.5)
    a_shards = s.assignment()["a"]
    a.kill()
    checkpoints = s.positions()  # a can save no more
    every = set(s.all_shards())
    took = eventually(
        lambda: set(s.assignment().get("b", ())) == every, 2 * TIMEOUT + 5, "b holds every shard"
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
    for worker in s.workers.values():
        assert_ordered_per_shard(worker)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_stopped_worker_hands_its_shards_over_with_nothing_lost_or_repeated(
    scene: Callable[..., Scene], writer_client: LogClient, kind: str
) -> None:
    s = kind_of_scene(scene, kind)
    feeder = feeder_of(s, writer_client).start()
    a, b = s.start("a", mode=mode_of(kind, "a")), s.start("b", mode=mode_of(kind, "b"))
    eventually(lambda: fair(s.assignment(), 2, 4), 20, "a fair split")
    time.sleep(1.5)
    a.stop()
    every = set(s.all_shards())
    took = eventually(
        lambda: set(s.assignment().get("b", ())) == every, 2 * TIMEOUT + 5, "b holds every shard"
    )
    assert took <= 2 * TIMEOUT + 1, took
    time.sleep(1)
    total = feeder.finish()
    s.wait_consumed(total)
    b.stop()
    counts = s.counts()
    assert set(counts) == set(range(total)), "lost ids"
    assert [i for i, n in counts.items() if n > 1] == [], "repeated ids"
    for worker in s.workers.values():
        assert_ordered_per_shard(worker)
    if kind == "project":  # every log came with the logstore it was written to
        assert {r.logstore for r in s.records()} == {"ls", "ls2"}
        assert all(p > 0 for p in s.positions().values()), "a checkpoint per logstore and shard"


@pytest.mark.slow
def test_a_worker_joining_mid_stream_takes_its_share_without_loss(
    scene: Callable[..., Scene], writer_client: LogClient
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
    scene: Callable[..., Scene], writer_client: LogClient
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
        by_shard.setdefault(record.shard_id, []).append(record.time_ns)
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
            checkpoints = s.positions()
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
