"""The SDK against a real LogHarbor server on loopback (the ``server`` fixture signs
requests with its root key; ``client`` is a ``LogClient`` for it)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime

import pytest

from harness import ServerProcess
from logharbor import (
    AlreadyExistsError,
    AuthenticationError,
    ClientError,
    Compression,
    Cursor,
    InvalidCursorError,
    LogClient,
    LogGroup,
    LogItem,
    NotFoundError,
    PayloadTooLargeError,
    RetryPolicy,
    TransportError,
    hash_key_of,
)
from logharbor.protocol import schema

NS = 1_000_000_000
MIDDLE_KEY = "8" + "0" * 31  # where a two-shard logstore's shards meet


@pytest.fixture
def project(client: LogClient, unique_name: Callable[[str], str]) -> Iterator[str]:
    name = unique_name("p")
    client.create_project(name, "integration tests")
    yield name
    client.delete_project(name)


@pytest.fixture
def logstore(client: LogClient, project: str) -> str:
    client.create_logstore(project, "store", shard_count=2)
    return "store"


def put_one(client: LogClient, project: str, logstore: str, n: int, key: str = "0" * 32) -> Cursor:
    return client.put_logs(project, logstore, [LogItem({"n": str(n)})], hash_key=key).cursor


def put_to(client: LogClient, project: str, logstore: str, key: str) -> int:
    """Write one log routed by ``key``; the shard it went to."""
    return client.put_logs(project, logstore, [LogItem({"k": key})], hash_key=key).shard_id


def numbers(logs: Iterable[LogItem]) -> list[str | None]:
    return [log.get("n") for log in logs]


# -------------------------------------------------------------- resources


def test_project_lifecycle(client: LogClient, unique_name: Callable[[str], str]) -> None:
    name = unique_name("p")

    created = client.create_project(name, "first")
    assert (created.name, created.description) == (name, "first")
    assert client.get_project(name) == created
    assert name in [p.name for p in client.list_projects(size=500)]

    updated = client.update_project(name, "second")
    assert updated.description == "second"
    assert updated.create_time == created.create_time

    client.delete_project(name)
    with pytest.raises(NotFoundError) as missing:
        client.get_project(name)
    assert missing.value.code == "ProjectNotExist"
    assert missing.value.request_id


def test_listing_projects_pages_and_counts_them_all(
    client: LogClient, unique_name: Callable[[str], str]
) -> None:
    names = [unique_name("page") for _ in range(3)]
    for name in names:
        client.create_project(name)
    try:
        everything = client.list_projects(size=500)
        page = client.list_projects(offset=1, size=2)

        assert len(page) == 2
        assert page.total == everything.total >= 3
        assert list(page) == list(everything.items[1:3])
    finally:
        for name in names:
            client.delete_project(name)


def test_creating_a_project_twice_is_an_already_exists_error(
    client: LogClient, project: str
) -> None:
    with pytest.raises(AlreadyExistsError) as raised:
        client.create_project(project)

    assert raised.value.code == "ProjectAlreadyExist"
    assert raised.value.status == 400
    assert not raised.value.retryable


def test_an_invalid_name_is_a_client_error(client: LogClient) -> None:
    with pytest.raises(ClientError) as raised:
        client.create_project("Not_Valid")

    assert raised.value.code == "InvalidName"


def test_logstore_lifecycle(client: LogClient, project: str) -> None:
    created = client.create_logstore(
        project, "events", ttl=7, shard_count=3, auto_split=True, max_split_shard=8
    )
    assert (created.project, created.name, created.ttl, created.shard_count) == (
        project,
        "events",
        7,
        3,
    )
    assert (created.auto_split, created.max_split_shard) == (True, 8)
    assert client.get_logstore(project, "events") == created
    assert [s.name for s in client.list_logstores(project)] == ["events"]

    updated = client.update_logstore(project, "events", ttl=90)
    assert (updated.ttl, updated.auto_split, updated.max_split_shard) == (90, True, 8)

    client.delete_logstore(project, "events")
    with pytest.raises(NotFoundError) as missing:
        client.get_logstore(project, "events")
    assert missing.value.code == "LogStoreNotExist"


def test_logstore_errors_name_what_is_missing_or_taken(
    client: LogClient, logstore: str, project: str
) -> None:
    with pytest.raises(AlreadyExistsError) as taken:
        client.create_logstore(project, logstore)
    with pytest.raises(NotFoundError) as no_project:
        client.list_logstores("no-such-project-here")
    with pytest.raises(NotFoundError) as no_shard:
        client.pull_logs(project, logstore, 99, Cursor.from_position(0))

    assert taken.value.code == "LogStoreAlreadyExist"
    assert no_project.value.code == "ProjectNotExist"
    assert no_shard.value.code == "ShardNotExist"


def test_a_new_logstores_shards_divide_the_hash_space_evenly(
    client: LogClient, project: str, logstore: str
) -> None:
    shards = client.list_shards(project, logstore)

    assert [(s.shard_id, s.begin_key, s.end_key) for s in shards] == [
        (0, "0" * 32, MIDDLE_KEY),
        (1, MIDDLE_KEY, "f" * 32),
    ]
    assert all(s.writable for s in shards)


# ------------------------------------------------------------ write, read


@pytest.mark.parametrize("compression", list(Compression), ids=lambda c: c.wire_name)
def test_logs_come_back_exactly_as_written(
    client: LogClient, project: str, logstore: str, compression: Compression
) -> None:
    sent = LogGroup(
        [
            LogItem(
                [("msg", "héllo, 世界 🚀"), ("dup", "1"), ("dup", "2"), ("empty", "")],
                time_ns=1_700_000_000_123_456_789,
            ),
            LogItem({"z": "last", "a": "first"}, time_ns=1_700_000_001_000_000_001),
        ],
        topic="checkout",
        source="10.1.2.3",
        tags=[("zone", "eu-1"), ("app", "shop"), ("ünï", "cödé")],
    )

    written = client.put_logs(project, logstore, sent, compression=compression)
    pulled = client.pull_logs(project, logstore, written.shard_id, written.cursor, count=1)

    assert written.log_count == 2
    assert [group.log_group for group in pulled.log_groups] == [sent]
    assert pulled.log_groups[0].cursor == written.cursor
    assert (pulled.count, pulled.log_count) == (1, 2)


def test_items_with_topic_source_and_tags_make_one_log_group(
    client: LogClient, project: str, logstore: str
) -> None:
    items = [LogItem({"n": "1"}, time_ns=NS), LogItem({"n": "2"}, time_ns=2 * NS)]

    written = client.put_logs(project, logstore, items, topic="t", source="s", tags={"k": "v"})
    group = client.pull_logs(project, logstore, written.shard_id, written.cursor).log_groups[0]

    assert group.log_group == LogGroup(items, topic="t", source="s", tags={"k": "v"})


def test_a_pre_serialized_log_group_is_stored_as_sent_even_with_binary_values(
    client: LogClient, project: str, logstore: str
) -> None:
    raw = schema.RawLogGroup()
    raw.Topic = "raw"
    raw.Logs.add(Time=1_700_000_000, Time_ns=5).Contents.add(Key="blob", Value=b"\x00\xffok")
    serialized = raw.SerializeToString()

    written = client.put_log_group_raw(project, logstore, serialized, compression="zstd")
    pulled = client.pull_logs(project, logstore, written.shard_id, written.cursor).log_groups[0]

    assert pulled.to_protobuf() == serialized
    assert pulled.log_group.topic == "raw"
    assert pulled.logs[0].contents == (("blob", "\x00\ufffdok"),)
    assert pulled.logs[0].time_ns == 1_700_000_000 * NS + 5


def test_an_empty_log_group_is_refused_and_not_retried(
    client: LogClient, project: str, logstore: str
) -> None:
    with pytest.raises(ClientError) as raised:
        client.put_logs(project, logstore, [])

    assert raised.value.code == "InvalidLogGroup"


def test_a_hash_key_routes_to_the_shard_owning_it(
    client: LogClient, project: str, logstore: str
) -> None:
    shards = client.list_shards(project, logstore)
    for value in ["user-1", "user-2", "user-3", "user-4", "order-77", "0" * 32, "f" * 32]:
        key = value if len(value) == 32 else hash_key_of(value)
        (owner,) = [s.shard_id for s in shards if s.contains(key)]

        written = client.put_logs(project, logstore, [LogItem({"v": value})], hash_key=value)

        assert written.shard_id == owner, value


def test_the_same_routing_value_always_lands_on_the_same_shard(
    client: LogClient, project: str, logstore: str
) -> None:
    shard_ids = {
        client.put_logs(project, logstore, [LogItem({"i": str(i)})], hash_key="tenant-9").shard_id
        for i in range(5)
    }

    assert len(shard_ids) == 1


def test_pulls_stop_at_the_count_at_max_bytes_and_before_the_end_cursor(
    client: LogClient, project: str, logstore: str
) -> None:
    cursors = [put_one(client, project, logstore, n) for n in range(5)]
    begin = client.get_cursor(project, logstore, 0, "begin")

    two = client.pull_logs(project, logstore, 0, begin, count=2)
    assert numbers(two.logs) == ["0", "1"]
    assert two.next_cursor == cursors[2]
    assert not two.caught_up

    bounded = client.pull_logs(project, logstore, 0, begin, end_cursor=cursors[3])
    assert numbers(bounded.logs) == ["0", "1", "2"]
    assert bounded.next_cursor == cursors[3]

    one = client.pull_logs(project, logstore, 0, cursors[1], max_bytes=1)
    assert numbers(one.logs) == ["1"]

    rest = client.pull_logs(project, logstore, 0, two.next_cursor)
    assert numbers(rest.logs) == ["2", "3", "4"]
    assert rest.caught_up and rest.next_cursor == rest.end_cursor


def test_pulling_at_the_end_returns_nothing_and_the_same_cursor(
    client: LogClient, project: str, logstore: str
) -> None:
    end = client.get_cursor(project, logstore, 0, "end")

    result = client.pull_logs(project, logstore, 0, end)

    assert result.log_groups == ()
    assert result.next_cursor == end


def test_a_cursor_past_the_end_or_not_a_cursor_is_invalid(
    client: LogClient, project: str, logstore: str
) -> None:
    with pytest.raises(InvalidCursorError):
        client.pull_logs(project, logstore, 0, Cursor.from_position(1000))
    with pytest.raises(InvalidCursorError) as raised:
        client.get_cursor_time(project, logstore, 0, "not+a/cursor= ü")

    # the odd characters were signed as sent: the server checked the cursor, not the signature
    assert raised.value.code == "InvalidCursor"


def test_cursors_by_time_find_the_first_log_group_received_at_or_after_it(
    client: LogClient, project: str, logstore: str
) -> None:
    first = put_one(client, project, logstore, 1)
    time.sleep(0.05)
    second = put_one(client, project, logstore, 2)
    first_ns = client.get_cursor_time(project, logstore, 0, first)
    second_ns = client.get_cursor_time(project, logstore, 0, second)
    between = (first_ns + second_ns) // 2 / NS

    assert client.get_cursor(project, logstore, 0, 0) == client.get_cursor(
        project, logstore, 0, "begin"
    )
    assert client.get_cursor(project, logstore, 0, between) == second
    assert client.get_cursor(project, logstore, 0, datetime.fromtimestamp(between, UTC)) == second
    # a float of seconds holds today's times to about 240 ns: the receive time itself
    # may round to just after it (that failed about one run in ten); a microsecond
    # before it finds the same log group, the first of the shard
    assert client.get_cursor(project, logstore, 0, (first_ns // 1000 - 1) / 1e6) == first
    assert client.get_cursor(project, logstore, 0, time.time() + 3600) == client.get_cursor(
        project, logstore, 0, "end"
    )


def test_the_cursor_time_is_when_the_server_received_the_log_group(
    client: LogClient, project: str, logstore: str
) -> None:
    before = time.time_ns()
    cursor = put_one(client, project, logstore, 1)
    after = time.time_ns()

    received = client.get_cursor_time(project, logstore, 0, cursor)
    pulled = client.pull_logs(project, logstore, 0, cursor).log_groups[0]

    assert before <= received <= after
    assert pulled.receive_time_ns == received


def test_a_long_poll_returns_as_soon_as_data_arrives(
    client: LogClient, project: str, logstore: str
) -> None:
    end = client.get_cursor(project, logstore, 0, "end")
    writer = threading.Timer(0.3, put_one, (client, project, logstore, 7))
    writer.start()
    started = time.monotonic()

    result = client.pull_logs(project, logstore, 0, end, wait_ms=10_000)

    writer.join()
    assert numbers(result.logs) == ["7"]
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------- shards


def test_after_a_split_writes_go_to_the_children(
    client: LogClient, project: str, logstore: str
) -> None:
    put_one(client, project, logstore, 1, key="1" + "0" * 31)
    split_key = "4" + "0" * 31

    parent, left, right = client.split_shard(project, logstore, 0, split_key)

    assert (parent.shard_id, parent.status, parent.children) == (0, "readonly", (2, 3))
    assert (left.begin_key, left.end_key, left.parents) == ("0" * 32, split_key, (0,))
    assert (right.begin_key, right.end_key) == (split_key, MIDDLE_KEY)
    assert put_to(client, project, logstore, "1" + "0" * 31) == left.shard_id
    assert put_to(client, project, logstore, "5" + "0" * 31) == right.shard_id
    assert client.pull_logs(project, logstore, 0, "MA==").shard_status == "readonly"
    with pytest.raises(ClientError) as readonly:
        client.split_shard(project, logstore, 0, "2" + "0" * 31)
    assert readonly.value.code == "ShardReadOnly"


def test_a_merge_joins_a_shard_with_the_one_after_it(
    client: LogClient, project: str, logstore: str
) -> None:
    first, second, merged = client.merge_shard(project, logstore, 0)

    assert (first.status, second.status) == ("readonly", "readonly")
    assert (merged.begin_key, merged.end_key, merged.parents) == ("0" * 32, "f" * 32, (0, 1))
    assert client.put_logs(project, logstore, [LogItem({"n": "1"})]).shard_id == merged.shard_id


def test_tail_follows_a_shard_until_it_is_readonly_and_read_to_the_end(
    client: LogClient, project: str, logstore: str
) -> None:
    for n in range(3):
        put_one(client, project, logstore, n)
    client.split_shard(project, logstore, 0, "4" + "0" * 31)

    groups = list(client.tail(project, logstore, 0, start="begin", count=2, wait_ms=100))

    assert [numbers(g.logs) for g in groups] == [["0"], ["1"], ["2"]]


def test_tail_resumes_from_a_cursor(client: LogClient, project: str, logstore: str) -> None:
    cursors = [put_one(client, project, logstore, n) for n in range(3)]
    client.split_shard(project, logstore, 0, "4" + "0" * 31)

    groups = list(client.tail(project, logstore, 0, start=cursors[1], wait_ms=100))

    assert [g.cursor for g in groups] == cursors[1:]


# ------------------------------------------------------- auth, transport


def test_an_unsigned_request_to_a_server_with_auth_is_refused(server: ServerProcess) -> None:
    with LogClient(server.endpoint) as anonymous, pytest.raises(AuthenticationError) as raised:
        anonymous.list_projects()

    assert raised.value.code == "Unauthorized"
    assert raised.value.status == 401


def test_a_wrong_secret_does_not_match_the_signature(server: ServerProcess) -> None:
    with (
        LogClient(
            server.endpoint, access_key_id=server.access_key_id, access_key_secret="wrong"
        ) as impostor,
        pytest.raises(AuthenticationError) as raised,
    ):
        impostor.list_projects()

    assert raised.value.code == "SignatureNotMatch"


def test_a_client_without_credentials_works_with_a_server_without_auth(
    server_factory: Callable[..., ServerProcess], unique_name: Callable[[str], str]
) -> None:
    open_server = server_factory(auth=False, extra_args=["--max-raw-bytes", "4096"])
    name = unique_name("p")

    with LogClient(open_server.endpoint) as client:
        client.create_project(name)
        client.create_logstore(name, "store", shard_count=1)
        written = client.put_logs(name, "store", [LogItem({"k": "v"}, time_ns=NS)])
        pulled = client.pull_logs(name, "store", 0, written.cursor)
        with pytest.raises(PayloadTooLargeError) as too_large:
            client.put_logs(name, "store", [LogItem({"k": "x" * 10_000})])

    assert [log.contents for log in pulled.logs] == [(("k", "v"),)]
    assert too_large.value.code == "PostBodyUncompressedTooLarge"
    assert too_large.value.status == 413


def test_a_server_that_is_not_there_is_a_transport_error_after_retries() -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    waits: list[float] = []
    retry = RetryPolicy(max_retries=2, sleep=waits.append)

    with (
        LogClient(f"http://127.0.0.1:{port}", retry=retry) as client,
        pytest.raises(TransportError) as raised,
    ):
        client.list_projects()

    assert raised.value.code == "ConnectError"
    assert len(waits) == 2
