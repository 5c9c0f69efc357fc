"""``AsyncLogClient`` against a real LogHarbor server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from harness import ServerProcess
from logharbor import (
    AlreadyExistsError,
    AsyncLogClient,
    LogGroup,
    LogItem,
    NotFoundError,
    ShardNotHeldError,
    ShardRef,
)


@pytest.fixture
async def aclient(server: ServerProcess) -> AsyncIterator[AsyncLogClient]:
    async with AsyncLogClient(
        server.endpoint,
        access_key_id=server.access_key_id,
        access_key_secret=server.access_key_secret,
    ) as client:
        yield client


async def test_a_round_trip_through_the_async_client(
    aclient: AsyncLogClient, unique_name: Callable[[str], str]
) -> None:
    project = unique_name("p")
    sent = LogGroup(
        [LogItem([("msg", "async ✓"), ("n", "1")], time_ns=1_700_000_000_000_000_042)],
        topic="t",
        tags={"via": "asyncio"},
    )

    await aclient.create_project(project, "async")
    try:
        await aclient.create_logstore(project, "store", shard_count=1)
        with pytest.raises(AlreadyExistsError):
            await aclient.create_logstore(project, "store")
        written = await aclient.put_logs(project, "store", sent, compression="zstd")
        begin = await aclient.get_cursor(project, "store", 0, "begin")
        pulled = await aclient.pull_logs(project, "store", 0, begin)

        assert [group.log_group for group in pulled.log_groups] == [sent]
        assert pulled.next_cursor == pulled.end_cursor
        assert await aclient.get_cursor_time(project, "store", 0, written.cursor) == (
            pulled.log_groups[0].receive_time_ns
        )
    finally:
        await aclient.delete_project(project)
    with pytest.raises(NotFoundError):
        await aclient.get_project(project)


async def test_concurrent_writes_share_one_async_client(
    aclient: AsyncLogClient, unique_name: Callable[[str], str]
) -> None:
    project = unique_name("p")
    await aclient.create_project(project)
    try:
        await aclient.create_logstore(project, "store", shard_count=1)

        results = await asyncio.gather(
            *(aclient.put_logs(project, "store", [LogItem({"i": str(i)})]) for i in range(20))
        )

        assert sorted(r.cursor.position for r in results) == list(range(20))
    finally:
        await aclient.delete_project(project)


async def test_async_tail_yields_log_groups_as_they_arrive(
    aclient: AsyncLogClient, unique_name: Callable[[str], str]
) -> None:
    project = unique_name("p")
    await aclient.create_project(project)
    try:
        await aclient.create_logstore(project, "store", shard_count=1)
        end = await aclient.get_cursor(project, "store", 0, "end")
        tail = aclient.tail(project, "store", 0, start=end, wait_ms=5_000)
        first = asyncio.ensure_future(anext(tail))
        await asyncio.sleep(0.2)  # let the tail start long polling

        await aclient.put_logs(project, "store", [LogItem({"late": "yes"})])

        group = await asyncio.wait_for(first, timeout=10)
        assert group.logs[0].get("late") == "yes"
        await tail.aclose()
    finally:
        await aclient.delete_project(project)


async def test_the_consumer_group_calls_of_a_project_and_of_a_logstore(
    aclient: AsyncLogClient, unique_name: Callable[[str], str]
) -> None:
    project = unique_name("p")
    await aclient.create_project(project)
    try:
        for logstore in ("aa", "bb"):
            await aclient.create_logstore(project, logstore, shard_count=1)
        group = await aclient.create_project_consumer_group(project, "both", ["aa", "bb"])
        assert (group.logstores, group.timeout) == (("aa", "bb"), 60)
        await aclient.create_consumer_group(project, "aa", "of-aa", timeout=5)
        updated = await aclient.update_project_consumer_group(project, "both", timeout=7)
        assert updated.timeout == 7
        assert (await aclient.get_project_consumer_group(project, "both")).in_order is False
        assert [g.name for g in await aclient.list_project_consumer_groups(project)] == ["both"]

        both = [ShardRef("aa", 0), ShardRef("bb", 0)]
        assert await aclient.project_heartbeat(project, "both", "c1", []) == both
        assert await aclient.heartbeat(project, "aa", "of-aa", "c1", []) == [0]
        written = await aclient.put_logs(project, "bb", [LogItem({"n": "1"})])
        end = await aclient.get_cursor(project, "bb", 0, "end")
        await aclient.update_project_checkpoint(
            project, "both", ShardRef("bb", 0), end, consumer="c1"
        )
        with pytest.raises(ShardNotHeldError):
            await aclient.update_project_checkpoint(
                project, "both", ShardRef("bb", 0), written.cursor, consumer="c2"
            )
        await aclient.update_project_checkpoint(
            project, "both", ShardRef("bb", 0), written.cursor, consumer="c2", force=True
        )
        saved = await aclient.get_project_checkpoints(project, "both")
        assert [(c.shard, c.cursor, c.consumer) for c in saved] == [
            (ShardRef("aa", 0), None, ""),
            (ShardRef("bb", 0), written.cursor, "c2"),
        ]
        (of_aa,) = await aclient.get_checkpoints(project, "aa", "of-aa")
        assert (of_aa.shard, of_aa.cursor) == (ShardRef("aa", 0), None)

        status = await aclient.get_project_consumer_group_status(project, "both")
        assert status.consumers == {"c1": tuple(both)}
        assert [(lag.shard, lag.behind_log_groups) for lag in status.shards] == [
            (ShardRef("aa", 0), 0),
            (ShardRef("bb", 0), 1),
        ]
        lags = (await aclient.get_consumer_group_status(project, "aa", "of-aa")).shards
        assert [lag.shard for lag in lags] == [ShardRef("aa", 0)]

        await aclient.leave_project_consumer_group(project, "both", "c1")
        assert await aclient.project_heartbeat(project, "both", "c2", None) == both
        await aclient.delete_project_consumer_group(project, "both")
        with pytest.raises(NotFoundError):
            await aclient.get_project_consumer_group(project, "both")
        assert [g.name for g in await aclient.list_consumer_groups(project, "aa")] == ["of-aa"]
    finally:
        await aclient.delete_project(project)
