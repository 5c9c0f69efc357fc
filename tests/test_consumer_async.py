"""``AsyncConsumerWorker`` in this process's event loop against a real server over
loopback: the shards split, per-shard order, checkpoints (automatic and manual)
across a graceful restart, cancellation, a stuck processor, bounded prefetch, and
a project's group over several logstores.

Timings: heartbeat 0.3 s, group timeout 2 s; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field

import httpx
import pytest

from harness import ServerProcess
from logharbor import ConsumerSettings, LogClient, LogItem, ProcessorRetry, PulledLogGroup
from logharbor.client import (
    AsyncCheckpointer,
    AsyncConsumerProcessor,
    AsyncConsumerWorker,
    AsyncLogClient,
    ShardRef,
    ShardState,
    WorkerState,
)

GROUP = "async"
FAST = ConsumerSettings(
    heartbeat_interval=0.3, group_timeout=2, wait_ms=200, auto_checkpoint_interval=0.2
)
HASH2 = ["0" * 32, "8" + "0" * 31]  # one key per shard of a two-shard logstore


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` until it holds; the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@dataclass(frozen=True)
class Seen:
    id: int
    shard: ShardRef
    position: int
    consumer: str


@dataclass
class Journal:
    """Every log any processor of a test processed, in processing order."""

    entries: list[Seen] = field(default_factory=list)

    def ids(self) -> Counter[int]:
        return Counter(entry.id for entry in self.entries)

    def has(self, total: int) -> bool:
        return set(self.ids()) >= set(range(total))

    def assert_exactly_once(self, total: int) -> None:
        counts = self.ids()
        assert set(counts) == set(range(total)), "lost ids"
        assert [i for i, n in counts.items() if n > 1] == [], "repeated ids"

    def assert_ordered_per_shard(self) -> None:
        last: dict[tuple[str, ShardRef], int] = {}
        for entry in self.entries:
            key = (entry.consumer, entry.shard)
            assert entry.position >= last.get(key, 0), entry
            last[key] = entry.position


class Recorder(AsyncConsumerProcessor):
    def __init__(self, journal: Journal, consumer: str, *, save_every: int = 0) -> None:
        self.journal, self.consumer, self.save_every = journal, consumer, save_every
        self.batches = 0
        self.shutdowns = 0

    async def process(
        self, log_groups: Sequence[PulledLogGroup], checkpointer: AsyncCheckpointer
    ) -> None:
        for group in log_groups:
            for log in group.logs:
                assert log.get("logstore") == checkpointer.logstore
                seen = Seen(
                    int(str(log.get("id"))),
                    checkpointer.shard,
                    group.cursor.position,
                    self.consumer,
                )
                self.journal.entries.append(seen)
        self.batches += 1
        if self.save_every and self.batches % self.save_every == 0:
            await checkpointer.save()
        await asyncio.sleep(0)  # a real processor awaits something

    async def shutdown(self, checkpointer: AsyncCheckpointer) -> None:
        self.shutdowns += 1


class Feeder:
    """Writes logs with ids 0, 1, 2... a few per log group, over the keys and the
    logstores by turns; each log names its logstore."""

    def __init__(self, client: LogClient, project: str, logstores: Sequence[str]) -> None:
        self.client, self.project, self.logstores = client, project, logstores
        self.next_id = 0

    def put(self, count: int, per_group: int = 5) -> None:
        for _ in range(0, count, per_group):
            first, self.next_id = self.next_id, self.next_id + per_group
            turn = first // per_group
            key = HASH2[turn % len(HASH2)]
            logstore = self.logstores[(turn // len(HASH2)) % len(self.logstores)]
            logs = [
                LogItem({"id": str(i), "logstore": logstore})
                for i in range(first, first + per_group)
            ]
            self.client.put_logs(self.project, logstore, logs, hash_key=key)

    async def run(self, stop: asyncio.Event, per_second: float = 200) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self.put, 5)
            await asyncio.sleep(5 / per_second)


@pytest.fixture
def project(client: LogClient, unique_name: Callable[[str], str]) -> Iterator[tuple[str, Feeder]]:
    """A project with two logstores of two shards each, and a feeder of logstore ls."""
    name = unique_name("ca")
    client.create_project(name)
    for logstore in ("ls", "ls2"):
        client.create_logstore(name, logstore, shard_count=2)
    yield name, Feeder(client, name, ["ls"])
    client.delete_project(name)


@pytest.fixture
async def aclient(server: ServerProcess) -> AsyncIterator[AsyncLogClient]:
    async with AsyncLogClient(
        server.endpoint,
        access_key_id=server.access_key_id,
        access_key_secret=server.access_key_secret,
    ) as c:
        yield c


def worker_of(
    aclient: AsyncLogClient,
    project: str,
    consumer: str,
    make: Callable[[], AsyncConsumerProcessor],
    settings: ConsumerSettings = FAST,
    **where: object,
) -> AsyncConsumerWorker:
    if not where:
        where = {"logstore": "ls"}
    return AsyncConsumerWorker(
        make,
        client=aclient,
        project=project,
        group=GROUP,
        consumer=consumer,
        settings=settings,
        **where,  # type: ignore[arg-type]
    )


def split(workers: Sequence[AsyncConsumerWorker], shards: int) -> bool:
    held = [worker.held_shards() for worker in workers]
    every = [ref for refs in held for ref in refs]
    return len(every) == len(set(every)) == shards and all(
        len(refs) == shards // len(workers) for refs in held
    )


# ------------------------------------------------------------------- scenarios


async def test_two_workers_split_the_shards_and_process_each_shard_in_order(
    aclient: AsyncLogClient, project: tuple[str, Feeder]
) -> None:
    name, feeder = project
    journal = Journal()
    processors: list[Recorder] = []

    def make(consumer: str) -> Callable[[], Recorder]:
        def factory() -> Recorder:
            processors.append(Recorder(journal, consumer))
            return processors[-1]

        return factory

    feeder.put(200)
    a = worker_of(aclient, name, "a", make("a"))
    b = worker_of(aclient, name, "b", make("b"))
    async with a, b:
        await eventually(lambda: split([a, b], 2), 15, "one shard each")
        feeder.put(200)
        await eventually(lambda: journal.has(400), 15, "every log")
        stats = a.statistics()
        assert stats.state is WorkerState.RUNNING
        assert stats.heartbeats > 0
        (shard,) = stats.shards.values()
        assert shard.state is ShardState.CONSUMING
        assert shard.logstore == "ls"
        assert a.statistics().processed_logs + b.statistics().processed_logs == 400
    assert a.state is b.state is WorkerState.STOPPED
    journal.assert_exactly_once(400)
    journal.assert_ordered_per_shard()
    assert {entry.consumer for entry in journal.entries} == {"a", "b"}
    assert all(p.shutdowns == 1 for p in processors)


@pytest.mark.parametrize("checkpoints", ["automatic", "manual"])
async def test_a_graceful_restart_neither_loses_nor_repeats(
    aclient: AsyncLogClient, project: tuple[str, Feeder], checkpoints: str
) -> None:
    name, feeder = project
    journal = Journal()
    if checkpoints == "manual":
        settings = ConsumerSettings(
            heartbeat_interval=0.3, group_timeout=2, wait_ms=200, auto_checkpoint_interval=None
        )
        save_every = 3
    else:
        settings, save_every = FAST, 0
    stop = asyncio.Event()
    feeding = asyncio.create_task(feeder.run(stop))
    try:
        for run in ("first", "second"):

            def factory(run: str = run) -> Recorder:
                return Recorder(journal, run, save_every=save_every)

            enough = len(journal.entries) + 100
            async with worker_of(aclient, name, run, factory, settings) as worker:
                await eventually(lambda: len(worker.held_shards()) == 2, 15, "both shards")
                await eventually(lambda n=enough: len(journal.entries) > n, 15, "more logs")
        stop.set()
        await feeding
        async with worker_of(aclient, name, "last", lambda: Recorder(journal, "last"), settings):
            await eventually(lambda: journal.has(feeder.next_id), 15, "every log")
    finally:
        stop.set()
        await feeding
    journal.assert_exactly_once(feeder.next_id)
    journal.assert_ordered_per_shard()
    assert {entry.consumer for entry in journal.entries} >= {"first", "second"}


async def test_cancelling_the_task_that_runs_a_worker_hands_its_shards_over_at_once(
    aclient: AsyncLogClient, project: tuple[str, Feeder]
) -> None:
    name, feeder = project
    journal = Journal()
    a = worker_of(aclient, name, "a", lambda: Recorder(journal, "a"))
    b = worker_of(aclient, name, "b", lambda: Recorder(journal, "b"))

    async def run_a() -> None:
        async with a:
            await a.join()

    running = asyncio.create_task(run_a())
    stop = asyncio.Event()
    feeding = asyncio.create_task(feeder.run(stop))
    async with b:
        await eventually(lambda: split([a, b], 2), 15, "one shard each")
        await asyncio.sleep(0.5)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert a.state is WorkerState.STOPPED
        took = await eventually(lambda: len(b.held_shards()) == 2, 10, "b holds both shards")
        assert took < FAST.timeout, "a left the group: no need to wait for its timeout"
        stop.set()
        await feeding
        await eventually(lambda: journal.has(feeder.next_id), 15, "every log")
    journal.assert_exactly_once(feeder.next_id)
    journal.assert_ordered_per_shard()


class Stuck(AsyncConsumerProcessor):
    cancelled = 0

    async def process(
        self, log_groups: Sequence[PulledLogGroup], checkpointer: AsyncCheckpointer
    ) -> None:
        try:
            await asyncio.Event().wait()  # never set
        except asyncio.CancelledError:
            Stuck.cancelled += 1
            raise


async def test_a_stuck_processor_is_cancelled_and_its_shard_moves_after_the_timeout(
    aclient: AsyncLogClient, project: tuple[str, Feeder]
) -> None:
    name, feeder = project
    journal = Journal()
    stuck = worker_of(aclient, name, "stuck", Stuck)
    await stuck.start()
    await eventually(lambda: len(stuck.held_shards()) == 2, 15, "stuck holds both shards")
    feeder.put(20)
    await eventually(
        lambda: any(s.cursor is not None for s in stuck.statistics().shards.values()),
        15,
        "a shard consuming",
    )
    await asyncio.sleep(0.5)
    started = time.monotonic()
    assert await stuck.shutdown(timeout=0.5) is False
    assert time.monotonic() - started < 2.5
    assert Stuck.cancelled == 2  # one per shard
    assert stuck.state is WorkerState.STOPPED

    # no leave and no checkpoint: the group moves the shards once stuck timed out
    async with worker_of(aclient, name, "next", lambda: Recorder(journal, "next")) as later:
        took = await eventually(lambda: len(later.held_shards()) == 2, 10, "the shards moved")
        assert took > FAST.timeout - 1
        await eventually(lambda: journal.has(20), 10, "every log")
    journal.assert_exactly_once(20)


class CountingTransport(httpx.AsyncHTTPTransport):
    """Counts the pulls that brought log groups, per shard path."""

    def __init__(self) -> None:
        super().__init__()
        self.pulls: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if request.url.path.endswith("/logs") and response.headers.get("x-lh-count", "0") != "0":
            self.pulls[request.url.path] += 1
        return response


async def test_a_shard_holds_a_bounded_number_of_batches_while_its_processor_is_busy(
    server: ServerProcess, project: tuple[str, Feeder]
) -> None:
    name, feeder = project
    release = asyncio.Event()
    processed: list[tuple[int, int]] = []

    class Slow(AsyncConsumerProcessor):
        async def process(
            self, log_groups: Sequence[PulledLogGroup], checkpointer: AsyncCheckpointer
        ) -> None:
            await release.wait()
            processed.extend((checkpointer.shard_id, g.cursor.position) for g in log_groups)

    for _ in range(20):
        feeder.put(5)  # ten log groups per shard
    settings = ConsumerSettings(
        heartbeat_interval=0.3, group_timeout=2, wait_ms=200, fetch_count=1, prefetch=2
    )
    transport = CountingTransport()
    async with (
        AsyncLogClient(
            server.endpoint,
            access_key_id=server.access_key_id,
            access_key_secret=server.access_key_secret,
            transport=transport,
        ) as counted,
        worker_of(counted, name, "slow", Slow, settings) as worker,
    ):
        await eventually(
            lambda: (
                all(s.prefetched_batches == 2 for s in worker.statistics().shards.values())
                and len(worker.held_shards()) == 2
            ),
            15,
            "full queues",
        )
        await asyncio.sleep(0.5)  # time to pull more, were the fetchers not waiting
        for shard in worker.statistics().shards.values():
            assert (shard.prefetched_batches, shard.processed_log_groups) == (2, 0)
        # per shard: the batch being processed, the queued ones, the one waiting to queue
        assert sorted(transport.pulls.values()) == [4, 4], transport.pulls
        release.set()
        await eventually(lambda: len(processed) == 20, 15, "every log group")
    for shard_id in (0, 1):
        positions = [position for shard, position in processed if shard == shard_id]
        assert positions == list(range(10))


async def test_failing_batches_are_retried_and_manual_forced_saves_reach_the_server(
    aclient: AsyncLogClient, project: tuple[str, Feeder], client: LogClient
) -> None:
    name, feeder = project
    journal = Journal()
    saved: list[bool] = []

    class Flaky(Recorder):
        failures = 2

        async def process(
            self, log_groups: Sequence[PulledLogGroup], checkpointer: AsyncCheckpointer
        ) -> None:
            if Flaky.failures:
                Flaky.failures -= 1
                raise RuntimeError("flaky")
            await super().process(log_groups, checkpointer)
            saved.append(await checkpointer.save(force=True))

    settings = ConsumerSettings(
        heartbeat_interval=0.3,
        group_timeout=2,
        wait_ms=200,
        auto_checkpoint_interval=None,
        retry=ProcessorRetry(backoff_base=0.01, backoff_max=0.05),
    )
    feeder.put(5)
    async with worker_of(aclient, name, "w", lambda: Flaky(journal, "w"), settings) as worker:

        def recorded() -> bool:  # the journal fills before the batch counts as processed
            shard = worker.statistics().shards.get(ShardRef("ls", 0))
            return shard is not None and shard.processed_logs == 5

        await eventually(recorded, 15, "every log")
        stats = worker.statistics().shards[ShardRef("ls", 0)]
        assert (stats.retries, stats.processed_logs, stats.checkpoint) == (2, 5, stats.cursor)
        samples = worker.registry.get_sample_value(
            "logharbor_consumer_process_retries_total",
            {"group": GROUP, "consumer": "w", "logstore": "ls", "shard": "0"},
        )
        assert samples == 2
    assert saved == [True]
    (first, _) = client.get_checkpoints(name, "ls", GROUP)
    assert first.cursor is not None and first.cursor.position == 1
    journal.assert_exactly_once(5)


async def test_a_project_group_spreads_the_shards_of_all_its_logstores(
    aclient: AsyncLogClient,
    project: tuple[str, Feeder],
    client: LogClient,
    server: ServerProcess,
) -> None:
    name, _ = project
    feeder = Feeder(client, name, ["ls", "ls2"])
    feeder.put(200)
    journal = Journal()
    both = {"logstores": ["ls", "ls2"]}
    a = worker_of(aclient, name, "a", lambda: Recorder(journal, "a"), **both)
    b = worker_of(aclient, name, "b", lambda: Recorder(journal, "b"), **both)
    async with a, b:
        await eventually(lambda: split([a, b], 4), 15, "two shards each")
        feeder.put(200)
        await eventually(lambda: journal.has(400), 15, "every log")
        held = set(a.held_shards()) | set(b.held_shards())
        assert held == {ShardRef(ls, s) for ls in ("ls", "ls2") for s in (0, 1)}
    journal.assert_exactly_once(400)
    journal.assert_ordered_per_shard()  # the processor also checked each log's logstore

    response = server.request("GET", f"/api/v1/projects/{name}/consumergroups/{GROUP}/checkpoints")
    checkpoints = {
        ShardRef(c["logstore"], c["shardId"]): c["cursor"] for c in response.json()["checkpoints"]
    }
    assert len(checkpoints) == 4 and all(checkpoints.values()), checkpoints

    # a later member resumes every (logstore, shard) at its checkpoint
    feeder.put(40)
    async with worker_of(aclient, name, "c", lambda: Recorder(journal, "c"), **both):
        await eventually(lambda: journal.has(440), 15, "the new logs")
    journal.assert_exactly_once(440)


async def test_a_project_group_of_other_logstores_is_refused(
    aclient: AsyncLogClient, project: tuple[str, Feeder]
) -> None:
    name, _ = project
    first = worker_of(aclient, name, "a", lambda: Recorder(Journal(), "a"), logstores=["ls"])
    await first.start()
    await first.shutdown()
    other = worker_of(aclient, name, "b", lambda: Recorder(Journal(), "b"), logstores=["ls", "ls2"])
    with pytest.raises(ValueError, match="reads ls, not ls, ls2"):
        await other.start()
    assert other.state is WorkerState.STOPPED
    with pytest.raises(ValueError, match="either logstore"):
        worker_of(aclient, name, "c", Stuck, logstore="ls", logstores=["ls"])
