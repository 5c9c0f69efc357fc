"""Consumer groups through the SDK against a real server: the client's calls (for a
logstore's groups and a project's), and a ``ConsumerGroupWorker`` run in this process
(retries, checkpoints, start positions, bounded shutdown, statistics and metrics, a
project's group)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest
from prometheus_client import CollectorRegistry

from logharbor import (
    AlreadyExistsError,
    Checkpointer,
    ConsumerGroupWorker,
    ConsumerProcessor,
    ConsumerSettings,
    Cursor,
    LogClient,
    LogItem,
    NotFoundError,
    ProcessorRetry,
    PulledLogGroup,
    ShardNotHeldError,
    ShardState,
    WorkerState,
)
from logharbor.client import ShardRef

FAST = ConsumerSettings(
    heartbeat_interval=0.3, group_timeout=2, wait_ms=200, auto_checkpoint_interval=0.2
)


@pytest.fixture
def project(client: LogClient, unique_name: Callable[[str], str]) -> Iterator[str]:
    name = unique_name("cg")
    client.create_project(name)
    client.create_logstore(name, "ls", shard_count=2)
    yield name
    client.delete_project(name)


def put(client: LogClient, project: str, ids: range, shard_key: str = "0" * 32) -> None:
    client.put_logs(project, "ls", [LogItem({"id": str(i)}) for i in ids], hash_key=shard_key)


def eventually(check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def checkpoint_of(client: LogClient, project: str, group: str, shard: int) -> int | None:
    for checkpoint in client.get_checkpoints(project, "ls", group):
        if checkpoint.shard_id == shard:
            return None if checkpoint.cursor is None else checkpoint.cursor.position
    raise AssertionError(f"no shard {shard}")


# ------------------------------------------------------------------- client


def test_group_lifecycle_heartbeats_checkpoints_and_fencing(
    client: LogClient, project: str
) -> None:
    created = client.create_consumer_group(project, "ls", "cg", timeout=10)
    assert (created.name, created.logstores, created.timeout, created.in_order) == (
        "cg",
        ("ls",),
        10,
        False,
    )
    with pytest.raises(AlreadyExistsError):
        client.create_consumer_group(project, "ls", "cg")
    assert client.update_consumer_group(project, "ls", "cg", in_order=True).in_order
    assert [g.name for g in client.list_consumer_groups(project, "ls")] == ["cg"]
    assert client.get_consumer_group(project, "ls", "cg").timeout == 10

    assert client.heartbeat(project, "ls", "cg", "c1", []) == [0, 1]
    put(client, project, range(3))
    cursor = client.get_cursor(project, "ls", 0, "end")
    client.update_checkpoint(project, "ls", "cg", 0, cursor, consumer="c1")
    with pytest.raises(ShardNotHeldError):
        client.update_checkpoint(project, "ls", "cg", 0, cursor, consumer="c2")
    with pytest.raises(ShardNotHeldError):
        client.pull_logs(project, "ls", 0, cursor, consumer_group="cg", consumer="c2")
    member_pull = client.pull_logs(project, "ls", 0, "MA==", consumer_group="cg", consumer="c1")
    assert member_pull.count == 1

    (first, second) = client.get_checkpoints(project, "ls", "cg")
    assert (first.cursor, first.consumer, second.cursor) == (cursor, "c1", None)
    status = client.get_consumer_group_status(project, "ls", "cg")
    assert status.consumers == {"c1": (0, 1)}
    assert [(lag.shard_id, lag.behind_log_groups) for lag in status.shards] == [(0, 0), (1, 0)]
    client.delete_consumer_group(project, "ls", "cg")
    assert client.list_consumer_groups(project, "ls") == []


def test_project_group_lifecycle_heartbeats_checkpoints_and_fencing(
    client: LogClient, project: str
) -> None:
    client.create_logstore(project, "ls2", shard_count=1)
    client.create_consumer_group(project, "ls", "of-ls")  # a logstore's: listed apart
    created = client.create_project_consumer_group(project, "all", ["ls", "ls2"], timeout=10)
    assert (created.name, created.logstores, created.timeout, created.in_order) == (
        "all",
        ("ls", "ls2"),
        10,
        False,
    )
    with pytest.raises(AlreadyExistsError):
        client.create_project_consumer_group(project, "all", ["ls"])
    assert client.update_project_consumer_group(project, "all", in_order=True).in_order
    assert client.get_project_consumer_group(project, "all").timeout == 10
    assert [g.name for g in client.list_project_consumer_groups(project)] == ["all"]
    assert [g.name for g in client.list_consumer_groups(project, "ls")] == ["of-ls"]
    with pytest.raises(NotFoundError):
        client.get_consumer_group(project, "ls", "all")

    every = [ShardRef("ls", 0), ShardRef("ls", 1), ShardRef("ls2", 0)]
    assert client.project_heartbeat(project, "all", "c1", []) == every
    assert client.project_heartbeat(project, "all", "c2", None) == []  # c1 holds them all
    client.put_logs(project, "ls2", [LogItem({"id": "0"})])
    cursor = client.get_cursor(project, "ls2", 0, "end")
    client.update_project_checkpoint(project, "all", ShardRef("ls2", 0), cursor, consumer="c1")
    with pytest.raises(ShardNotHeldError):
        client.update_project_checkpoint(project, "all", ShardRef("ls2", 0), cursor, consumer="c2")
    with pytest.raises(ShardNotHeldError):
        client.pull_logs(project, "ls2", 0, "MA==", consumer_group="all", consumer="c2")
    member_pull = client.pull_logs(project, "ls2", 0, "MA==", consumer_group="all", consumer="c1")
    assert member_pull.count == 1

    checkpoints = client.get_project_checkpoints(project, "all")
    assert [(c.shard, c.cursor, c.consumer) for c in checkpoints] == [
        (ShardRef("ls", 0), None, ""),
        (ShardRef("ls", 1), None, ""),
        (ShardRef("ls2", 0), cursor, "c1"),
    ]
    status = client.get_project_consumer_group_status(project, "all")
    assert status.consumers == {"c1": tuple(every), "c2": ()}
    assert [(lag.shard, lag.behind_log_groups) for lag in status.shards] == [
        (ref, 0) for ref in every
    ]

    client.leave_project_consumer_group(project, "all", "c1")
    assert client.project_heartbeat(project, "all", "c2", []) == every  # at once
    client.delete_project_consumer_group(project, "all")
    assert client.list_project_consumer_groups(project) == []
    with pytest.raises(NotFoundError):
        client.get_project_consumer_group(project, "all")


# ------------------------------------------------------------------- worker


class Recorder(ConsumerProcessor):
    def __init__(self, seen: list[tuple[int, str]], *, failures: int = 0) -> None:
        self.seen, self.failures = seen, failures
        self.shard = -1
        self.shutdowns = 0

    def initialize(self, shard_id: int) -> None:
        self.shard = shard_id

    def process(self, log_groups: Sequence[PulledLogGroup], checkpointer: Checkpointer) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("flaky")
        self.seen.extend((self.shard, str(log.get("id"))) for g in log_groups for log in g.logs)

    def shutdown(self, checkpointer: Checkpointer) -> None:
        self.shutdowns += 1


def make_worker(
    client: LogClient,
    project: str,
    factory: Callable[[], ConsumerProcessor],
    settings: ConsumerSettings = FAST,
    **options: object,
) -> ConsumerGroupWorker:
    return ConsumerGroupWorker(
        factory,
        client=client,
        project=project,
        logstore="ls",
        group=str(options.pop("group", "cg")),
        consumer=str(options.pop("consumer", "solo")),
        settings=settings,
        **options,  # type: ignore[arg-type]
    )


def test_a_failing_batch_is_retried_and_checkpoints_follow_processing(
    client: LogClient, project: str
) -> None:
    put(client, project, range(5))
    seen: list[tuple[int, str]] = []
    processors: list[Recorder] = []

    def factory() -> Recorder:
        processors.append(Recorder(seen, failures=2))
        return processors[-1]

    settings = ConsumerSettings(
        heartbeat_interval=0.3,
        group_timeout=2,
        wait_ms=200,
        retry=ProcessorRetry(backoff_base=0.01, backoff_max=0.05),
    )
    with make_worker(client, project, factory, settings) as worker:
        eventually(lambda: len(seen) == 5)
        stats = worker.statistics()
        assert stats.state is WorkerState.RUNNING
        shard = stats.shards[ShardRef("ls", 0)]
        assert (shard.logstore, shard.shard_id) == ("ls", 0)
        assert shard.retries == 2
        assert shard.processed_logs == 5
        assert shard.cursor is not None and shard.cursor.position == 1
        assert shard.lag_log_groups == 0
    assert worker.state is WorkerState.STOPPED
    assert seen == [(0, str(i)) for i in range(5)]
    assert all(p.shutdowns == 1 for p in processors)
    assert checkpoint_of(client, project, "cg", 0) == 1  # saved on shutdown
    assert client.get_consumer_group(project, "ls", "cg").timeout == 2


def test_a_restarted_worker_resumes_at_the_checkpoint_and_end_skips_old_data(
    client: LogClient, project: str
) -> None:
    put(client, project, range(3))
    seen: list[tuple[int, str]] = []
    with make_worker(client, project, lambda: Recorder(seen)):
        eventually(lambda: len(seen) == 3)
    put(client, project, range(3, 6))
    with make_worker(client, project, lambda: Recorder(seen)):
        eventually(lambda: len(seen) == 6)
    assert [i for _, i in seen] == [str(i) for i in range(6)]

    later: list[tuple[int, str]] = []
    at_end = ConsumerSettings(heartbeat_interval=0.3, group_timeout=2, wait_ms=200, start="end")
    with make_worker(client, project, lambda: Recorder(later), at_end, group="late") as worker:
        eventually(
            lambda: (
                all(s.state is ShardState.CONSUMING for s in worker.statistics().shards.values())
                and len(worker.held_shards()) == 2
            )
        )
        put(client, project, range(6, 7))
        eventually(lambda: len(later) == 1)
    assert later == [(0, "6")]


def test_manual_saves_without_automatic_checkpoints(client: LogClient, project: str) -> None:
    put(client, project, range(2))
    saves: list[int | None] = []

    class Saver(ConsumerProcessor):
        def process(self, log_groups: Sequence[PulledLogGroup], checkpointer: Checkpointer) -> None:
            assert checkpointer.save(force=True)
            saves.append(checkpoint_of(client, project, "cg", checkpointer.shard_id))

    manual = ConsumerSettings(
        heartbeat_interval=0.3, group_timeout=2, wait_ms=200, auto_checkpoint_interval=None
    )
    with make_worker(client, project, Saver, manual):
        eventually(lambda: len(saves) == 1)
    assert saves == [1]  # saved during process: the batch counts as processed


def test_shutdown_is_bounded_even_with_a_stuck_processor(client: LogClient, project: str) -> None:
    put(client, project, range(1))
    release = threading.Event()
    entered = threading.Event()

    class Stuck(ConsumerProcessor):
        def process(self, log_groups: Sequence[PulledLogGroup], checkpointer: Checkpointer) -> None:
            entered.set()
            release.wait(30)

    worker = make_worker(client, project, Stuck).start()
    try:
        assert entered.wait(15)
        started = time.monotonic()
        assert worker.shutdown(timeout=1.0) is False
        assert time.monotonic() - started < 2.0
    finally:
        release.set()
    assert worker.join(10)
    assert checkpoint_of(client, project, "cg", 0) == 1  # the batch finished after all


def test_workers_share_a_metrics_registry(client: LogClient, project: str) -> None:
    registry = CollectorRegistry()
    put(client, project, range(4), shard_key="0" * 32)
    put(client, project, range(4, 6), shard_key="f" * 32)
    seen: list[tuple[int, str]] = []
    first = make_worker(client, project, lambda: Recorder(seen), registry=registry)
    second = make_worker(
        client, project, lambda: Recorder(seen), registry=registry, consumer="other"
    )
    with first, second:
        eventually(lambda: len(seen) == 6)
    total = sum(
        registry.get_sample_value(
            "logharbor_consumer_logs_total",
            {"group": "cg", "consumer": c, "logstore": "ls", "shard": s},
        )
        or 0
        for c in ("solo", "other")
        for s in ("0", "1")
    )
    assert total == 6
    assert first.statistics().processed_logs + second.statistics().processed_logs == 6


def test_a_worker_of_a_project_group_reads_every_logstore(client: LogClient, project: str) -> None:
    client.create_logstore(project, "ls2", shard_count=1)
    put(client, project, range(3))
    client.put_logs(project, "ls2", [LogItem({"id": str(i)}) for i in range(3, 5)])
    seen: list[tuple[str, str]] = []

    class Tagger(ConsumerProcessor):
        def process(self, log_groups: Sequence[PulledLogGroup], checkpointer: Checkpointer) -> None:
            logs = [log for group in log_groups for log in group.logs]
            seen.extend((checkpointer.logstore, str(log.get("id"))) for log in logs)

    def member(consumer: str, logstores: list[str]) -> ConsumerGroupWorker:
        return ConsumerGroupWorker(
            Tagger,
            client=client,
            project=project,
            logstores=logstores,
            group="all",
            consumer=consumer,
            settings=FAST,
        )

    with member("solo", ["ls", "ls2"]) as worker:
        eventually(lambda: len(seen) == 5)
        assert worker.held_shards() == [ShardRef("ls", 0), ShardRef("ls", 1), ShardRef("ls2", 0)]
    assert sorted(seen) == [("ls", "0"), ("ls", "1"), ("ls", "2"), ("ls2", "3"), ("ls2", "4")]
    saved = {c.shard: c.cursor for c in client.get_project_checkpoints(project, "all")}
    assert [saved[ShardRef("ls", 0)], saved[ShardRef("ls2", 0)]] == [Cursor.from_position(1)] * 2
    assert client.get_project_consumer_group(project, "all").timeout == FAST.timeout

    with pytest.raises(ValueError, match="reads ls, ls2, not ls"):
        member("other", ["ls"]).start()
