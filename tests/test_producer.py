"""The Producer against a real server: delivery, batching, retries, backpressure,
lifecycle, fork and metrics.

Only the transport is replaced, and only where a real server cannot be made to
answer 429/500 on demand or to hang (``httpx.MockTransport``).
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from harness import ServerProcess
from logharbor import (
    BatchPolicy,
    BufferFullError,
    ClientError,
    LogClient,
    LogGroup,
    LogHarborHandler,
    LogItem,
    ManualClock,
    NotFoundError,
    Producer,
    ProducerClosedError,
    ProducerConfig,
    ProducerState,
    RetryPolicy,
    SendFuture,
    SendResult,
    Timeout,
)
from logharbor.client._encoding import encode_item, group_suffix
from logharbor.client._producer import _SenderPool

FAST_RETRY = RetryPolicy(max_retries=200, backoff_base=0.01, backoff_max=0.1)
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def config(**options: object) -> ProducerConfig:
    batch = options.pop("batch", BatchPolicy(linger=0.05))
    return ProducerConfig(batch=batch, workers=2, name="test", **options)  # type: ignore[arg-type]


def producer_for(server: ServerProcess, **options: object) -> Producer:
    registry = options.pop("registry", CollectorRegistry())
    return Producer(
        server.endpoint,
        access_key_id=server.access_key_id,
        access_key_secret=server.access_key_secret,
        config=config(**options),
        registry=registry,  # type: ignore[arg-type]
    )


def stored_logs(client: LogClient, project: str, logstore: str) -> list[tuple[LogItem, LogGroup]]:
    found = []
    for shard in client.list_shards(project, logstore):
        cursor = client.get_cursor(project, logstore, shard.shard_id, "begin")
        while True:
            result = client.pull_logs(project, logstore, shard.shard_id, cursor, count=1000)
            for pulled in result.log_groups:
                found += [(log, pulled.log_group) for log in pulled.logs]
            if result.caught_up:
                break
            cursor = result.next_cursor
    return found


@pytest.fixture
def logstore(client: LogClient, unique_name: Callable[[str], str]) -> Iterator[tuple[str, str]]:
    project = unique_name("prod")
    client.create_project(project)
    client.create_logstore(project, "app", shard_count=2)
    yield project, "app"
    client.delete_project(project)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A loopback address that takes connections and never answers (a hung server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)  # the kernel completes connections; nothing reads them
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


class Recording(httpx.BaseTransport):
    """The real network, remembering every request sent through it."""

    def __init__(self) -> None:
        self.network = httpx.HTTPTransport()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.network.handle_request(request)

    def close(self) -> None:
        self.network.close()


# ------------------------------------------------------------------ encoding


@pytest.mark.parametrize(
    "contents",
    [
        {"a": "b"},
        {},
        {"msg": "é" * 300, "k" * 200: ""},
        {"unicode": "日志 ✓", "long": "x" * 20000, "n": "1"},
    ],
)
def test_the_fast_encoding_is_byte_identical_to_the_protobuf_model(
    contents: dict[str, str],
) -> None:
    item = LogItem(contents, 1_700_000_000_123_456_789)
    tags = (("host", "web-1"), ("zone", "eu"))
    expected = LogGroup([item, item], topic="t", source="s", tags=tags).to_protobuf()

    entry = encode_item(item, 0)

    assert entry + entry + group_suffix("t", "s", tags) == expected


@pytest.mark.parametrize("value_length", [0, 1, 127, 128, 255, 256, 16_200, 16_400])
@pytest.mark.parametrize("nanos", [0, 1, 999_999_999])
def test_a_dict_encodes_like_the_protobuf_model_on_first_and_later_sends(
    value_length: int, nanos: int
) -> None:
    # The first encoding of a key fills the header cache, later ones use it; lengths
    # around 128 and 16384 change the size of varints.
    contents = {"k": "v" * value_length, "ключ": "é", "last": ""}
    time_ns = 1_700_000_000 * 1_000_000_000 + nanos
    expected = LogGroup([LogItem(contents, time_ns)]).to_protobuf()

    assert encode_item(contents, time_ns) == expected
    assert encode_item(contents, time_ns) == expected
    assert encode_item(LogItem(contents, time_ns), 0) == expected


def test_contents_that_are_not_strings_are_refused_at_send_time(server: ServerProcess) -> None:
    with producer_for(server) as producer, pytest.raises(TypeError):
        producer.send("p", "l", {"n": 1})  # type: ignore[dict-item]


# ----------------------------------------------------------------- delivery


def test_send_returns_a_future_and_calls_back_with_the_result(
    server: ServerProcess, client: LogClient, logstore: tuple[str, str]
) -> None:
    project, name = logstore
    seen: list[SendResult] = []
    with producer_for(server) as producer:
        future = producer.send(
            project, name, {"path": "/", "status": "200"}, topic="web", tags={"zone": "eu"}
        )
        many = producer.send(
            project, name, [{"i": str(i)} for i in range(10)], callback=seen.append
        )
        result = future.result(timeout=10)
        assert many.result(timeout=10).log_count == 10

    assert result.success and result.error is None and result.log_count == 1
    assert [a.code for a in result.attempts] == ["OK"]
    assert seen == [many.result()]
    stored = stored_logs(client, project, name)
    assert len(stored) == 11
    web = [group for log, group in stored if log.get("path") == "/"]
    assert web[0].topic == "web" and web[0].tags == (("zone", "eu"),)


def test_safe_close_delivers_every_log_sent_from_many_threads(
    server: ServerProcess, client: LogClient, logstore: tuple[str, str]
) -> None:
    project, name = logstore
    producer = producer_for(server, batch=BatchPolicy(max_count=500, linger=0.2))

    def write(thread: int) -> None:
        for i in range(2000):
            producer.send(project, name, {"t": str(thread), "i": str(i)}, hash_key=str(i % 7))

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    producer.safe_close()

    assert producer.state is ProducerState.CLOSED
    stats = producer.statistics()
    assert stats.delivered_logs == 8000 and stats.pending_logs == 0 and stats.failed_logs == 0
    stored = {(log.get("t"), log.get("i")) for log, _ in stored_logs(client, project, name)}
    assert stored == {(str(t), str(i)) for t in range(4) for i in range(2000)}


def test_a_closed_producer_refuses_logs(server: ServerProcess) -> None:
    producer = producer_for(server)
    assert producer.state is ProducerState.OPEN
    assert producer.close() == []
    assert producer.state is ProducerState.CLOSED
    with pytest.raises(ProducerClosedError):
        producer.send("p", "l", {"a": "b"})
    assert producer.close() == []  # twice is fine


def test_batches_are_cut_by_count_and_kept_apart_by_topic(
    server: ServerProcess, client: LogClient, logstore: tuple[str, str]
) -> None:
    project, name = logstore
    with producer_for(server, batch=BatchPolicy(max_count=10, linger=0.05)) as producer:
        producer.send(project, name, [{"i": str(i)} for i in range(25)])
        producer.send(project, name, {"other": "topic"}, topic="b")

    groups = {id(group): group for _, group in stored_logs(client, project, name)}
    sizes = sorted((len(group.logs), group.topic) for group in groups.values())
    assert sizes == [(1, "b"), (5, ""), (10, ""), (10, "")]


def groups_by_shard(client: LogClient, project: str, logstore: str) -> dict[int, list[LogGroup]]:
    """The log groups stored in each shard that holds any."""
    found: dict[int, list[LogGroup]] = {}
    for shard in client.list_shards(project, logstore):
        cursor = client.get_cursor(project, logstore, shard.shard_id, "begin")
        pulled = client.pull_logs(project, logstore, shard.shard_id, cursor, count=1000)
        if pulled.log_groups:
            found[shard.shard_id] = [group.log_group for group in pulled.log_groups]
    return found


def test_logs_with_one_hash_key_land_in_one_shard(
    server: ServerProcess, client: LogClient, logstore: tuple[str, str]
) -> None:
    project, name = logstore
    # One log per batch: 20 log groups, which the server would spread over both
    # shards if they did not carry the hash key.
    batch = BatchPolicy(max_count=1, hash_key_buckets=4, linger=0.01)
    with producer_for(server, batch=batch) as producer:
        for i in range(20):
            producer.send(project, name, {"i": str(i)}, hash_key="user-42")

    (groups,) = groups_by_shard(client, project, name).values()
    assert len(groups) == 20


def test_batches_are_kept_apart_per_hash_key_bucket(
    server: ServerProcess, client: LogClient, logstore: tuple[str, str]
) -> None:
    project, name = logstore
    shards = client.list_shards(project, name)
    assert [s.begin_key[0] for s in shards] == ["0", "8"]  # two shards: two halves
    low, also_low, high = "0" * 31 + "1", "7" + "f" * 31, "8" + "0" * 31
    batch = BatchPolicy(hash_key_buckets=2, linger=0.2)  # buckets 0000… and 8000…
    with producer_for(server, batch=batch) as producer:
        for i in range(6):
            for key in (low, also_low, high):
                producer.send(project, name, {"key": key, "i": str(i)}, hash_key=key)
        producer.flush()
        stats = producer.statistics()

    assert stats.delivered_batches == 2  # one per bucket, though three hash keys
    by_shard = groups_by_shard(client, project, name)
    keys = {
        shard: [sorted({str(log.get("key")) for log in group.logs}) for group in groups]
        for shard, groups in by_shard.items()
    }
    assert keys == {shards[0].shard_id: [[low, also_low]], shards[1].shard_id: [[high]]}


def test_linger_runs_on_the_injected_clock(
    server: ServerProcess, logstore: tuple[str, str]
) -> None:
    project, name = logstore
    clock = ManualClock()
    producer = Producer(
        server.endpoint,
        access_key_id=server.access_key_id,
        access_key_secret=server.access_key_secret,
        config=ProducerConfig(batch=BatchPolicy(linger=30.0), workers=1),
        clock=clock,
        registry=CollectorRegistry(),
    )
    future = producer.send(project, name, {"a": "b"})
    time.sleep(0.2)
    assert not future.done() and producer.statistics().open_batches == 1

    clock.advance(30.0)

    assert future.result(timeout=10).success
    producer.close()


async def test_send_async_awaits_the_result(
    server: ServerProcess, logstore: tuple[str, str]
) -> None:
    project, name = logstore
    producer = producer_for(server)
    result = await producer.send_async(project, name, [{"a": "1"}, {"a": "2"}])
    assert result.success and result.log_count == 2
    awaited = await producer.send(project, name, {"a": "3"})  # a SendFuture is awaitable
    assert awaited.success and awaited.log_count == 1
    assert await producer.aclose() == []


def test_zstd_batches_arrive_compressed_with_zstd(
    server: ServerProcess, client: LogClient, logstore: tuple[str, str]
) -> None:
    project, name = logstore
    recording = Recording()
    producer = Producer(
        server.endpoint,
        access_key_id=server.access_key_id,
        access_key_secret=server.access_key_secret,
        config=ProducerConfig(
            batch=BatchPolicy(linger=0.05), workers=1, compression="zstd", user_agent="zstd-test/1"
        ),
        transport=recording,
        registry=CollectorRegistry(),
    )
    producer.send(project, name, [{"i": str(i), "pad": "abc" * 100} for i in range(200)])
    producer.close()

    assert recording.requests, "nothing was sent"
    for request in recording.requests:
        assert request.headers["x-lh-compress-type"] == "zstd"
        assert request.content.startswith(ZSTD_MAGIC)
        assert len(request.content) < int(request.headers["x-lh-raw-size"]) // 10
        assert request.headers["user-agent"] == "zstd-test/1"
    stored = sorted(int(str(log.get("i"))) for log, _ in stored_logs(client, project, name))
    assert stored == list(range(200))


EXIT_SCRIPT = """
import sys
from logharbor import BatchPolicy, Producer, ProducerConfig

endpoint, key_id, secret, project, logstore = sys.argv[1:]
producer = Producer(
    endpoint, access_key_id=key_id, access_key_secret=secret,
    config=ProducerConfig(batch=BatchPolicy(linger=30.0)),
)
for i in range(50):
    producer.send(project, logstore, {"i": str(i)})
print(producer.statistics().pending_logs)
# no close(): the interpreter's exit delivers the 50 logs
"""


def test_interpreter_exit_delivers_what_a_producer_holds(
    server: ServerProcess, client: LogClient, logstore: tuple[str, str]
) -> None:
    project, name = logstore
    started = time.monotonic()
    arguments = [server.endpoint, server.access_key_id, server.access_key_secret, project, name]
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, *arguments],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["50"]  # all held at exit: the linger is 30 s
    assert time.monotonic() - started < 25
    stored = sorted(int(str(log.get("i"))) for log, _ in stored_logs(client, project, name))
    assert stored == list(range(50))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: BatchPolicy(max_bytes=5 * 1024 * 1024 + 1), "max_bytes must be between 1 and"),
        (lambda: BatchPolicy(max_bytes=0), "max_bytes must be between 1 and"),
        (lambda: BatchPolicy(max_count=40961), "max_count must be between 1 and 40960"),
        (lambda: BatchPolicy(max_count=0), "max_count must be between 1 and 40960"),
        (lambda: BatchPolicy(linger=-0.001), "linger must be 0 or more"),
        (lambda: BatchPolicy(hash_key_buckets=3), "hash_key_buckets must be a power of two"),
        (lambda: ProducerConfig(workers=0), "workers must be 1 or more"),
        (lambda: ProducerConfig(max_buffer_bytes=0), "max_buffer_bytes must be 1 or more"),
        (lambda: ProducerConfig(buffer_full_timeout=-1), "buffer_full_timeout must be 0 or"),
    ],
)
def test_settings_out_of_their_limits_are_refused(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_settings_at_their_limits_are_accepted() -> None:
    batch = BatchPolicy(max_bytes=5 * 1024 * 1024, max_count=40960, linger=0, hash_key_buckets=1)
    assert ProducerConfig(batch=batch, workers=1).batch.max_count == 40960


def test_a_close_waiting_on_a_hung_server_is_closing_until_it_gives_up(
    silent_endpoint: str,
) -> None:
    producer = Producer(
        silent_endpoint,
        config=config(timeout=Timeout(connect=5, read=30, write=5, pool=5)),
        registry=CollectorRegistry(),
    )
    future = producer.send("p", "l", {"a": "b"})
    closing = threading.Thread(target=producer.close, args=(1.0,))
    closing.start()
    deadline = time.monotonic() + 5
    while producer.state is ProducerState.OPEN and time.monotonic() < deadline:
        time.sleep(0.01)

    assert producer.state is ProducerState.CLOSING
    assert producer.statistics().state is ProducerState.CLOSING
    with pytest.raises(ProducerClosedError, match="closing"):
        producer.send("p", "l", {"a": "late"})
    assert not future.done()

    closing.join(10)
    assert producer.state is ProducerState.CLOSED
    assert isinstance(future.result(0).error, ProducerClosedError)


# ------------------------------------------------------------------- failures


class Script:
    """Answers each request with the next status; 200 answers are real successes."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            return httpx.Response(200, json={"shardId": 0, "cursor": "MA==", "logCount": 1})
        codes = {429: "WriteQuotaExceed", 500: "InternalServerError", 400: "InvalidLogGroup"}
        body = {"errorCode": codes[status], "errorMessage": "scripted", "requestId": "R1"}
        return httpx.Response(status, json=body)


def scripted_producer(
    script: Script | Callable[[httpx.Request], httpx.Response], **options: object
) -> Producer:
    return Producer(
        "http://logharbor.test",
        config=config(**{"retry": FAST_RETRY, **options}),
        transport=httpx.MockTransport(script),
        registry=CollectorRegistry(),
    )


def test_429_and_500_answers_are_retried_until_delivered() -> None:
    script = Script(429, 500, 429)
    with scripted_producer(script) as producer:
        result = producer.send("p", "l", {"a": "b"}).result(timeout=10)
        stats = producer.statistics()

    assert result.success
    codes = [a.code for a in result.attempts]
    assert codes == ["WriteQuotaExceed", "InternalServerError", "WriteQuotaExceed", "OK"]
    assert [a.request_id for a in result.attempts[:3]] == ["R1"] * 3
    assert stats.retries == 3 and stats.delivered_logs == 1
    assert stats.errors_by_code == {"WriteQuotaExceed": 2, "InternalServerError": 1}


def test_a_400_answer_is_not_retried() -> None:
    script = Script(400)
    with scripted_producer(script) as producer:
        result = producer.send("p", "l", {"a": "b"}).result(timeout=10)

    assert not result.success and script.requests == 1
    assert isinstance(result.error, ClientError) and result.error.code == "InvalidLogGroup"
    assert [log.contents for log in result.undelivered] == [(("a", "b"),)]


def test_the_retry_budget_ends_with_the_last_error() -> None:
    script = Script(*[500] * 10)
    retry = RetryPolicy(max_retries=2, backoff_base=0.001, backoff_max=0.001)
    producer = scripted_producer(script, retry=retry)
    result = producer.send("p", "l", {"a": "b"}).result(timeout=10)
    producer.close()
    assert not result.success and len(result.attempts) == 3 and script.requests == 3
    assert result.error is not None and result.error.code == "InternalServerError"


def test_an_unknown_logstore_fails_at_once_on_a_real_server(
    server: ServerProcess, logstore: tuple[str, str]
) -> None:
    project, _ = logstore
    with producer_for(server, retry=FAST_RETRY) as producer:
        result = producer.send(project, "missing", {"a": "b"}).result(timeout=10)
    assert isinstance(result.error, NotFoundError) and len(result.attempts) == 1


def test_close_with_a_timeout_reports_and_returns_every_undelivered_log() -> None:
    port = free_port()  # nothing listens there: every attempt is refused, and retried
    seen: list[SendResult] = []
    producer = Producer(
        f"http://127.0.0.1:{port}",
        config=config(retry=FAST_RETRY, batch=BatchPolicy(max_count=7, linger=0.01)),
        registry=CollectorRegistry(),
    )
    futures = [producer.send("p", "l", {"i": str(i)}, callback=seen.append) for i in range(50)]
    time.sleep(0.1)

    started = time.monotonic()
    undelivered = producer.close(timeout=0.3)

    assert time.monotonic() - started < 3
    assert sorted(int(str(log.get("i"))) for log in undelivered) == list(range(50))
    assert len(seen) == 50 and not any(result.success for result in seen)
    assert all(isinstance(f.result(0).error, ProducerClosedError) for f in futures)
    assert all(f.result(0).attempts[0].code == "ConnectError" for f in futures)
    assert producer.statistics().pending_logs == 0


def test_logs_sent_while_the_server_is_down_arrive_once_it_is_back(
    server_factory: Callable[..., ServerProcess],
) -> None:
    port = free_port()
    proc = server_factory(extra_args=["--port", str(port)])
    with LogClient(
        proc.endpoint, access_key_id=proc.access_key_id, access_key_secret=proc.access_key_secret
    ) as admin:
        admin.create_project("down-up")
        admin.create_logstore("down-up", "app", shard_count=2)
    proc.stop()

    producer = producer_for(proc, retry=FAST_RETRY)
    for i in range(300):
        producer.send("down-up", "app", {"i": str(i)})
    time.sleep(0.3)
    assert producer.statistics().retries > 0 and producer.statistics().delivered_logs == 0

    proc.start()
    assert proc.endpoint == f"http://127.0.0.1:{port}"
    producer.safe_close()

    with LogClient(
        proc.endpoint, access_key_id=proc.access_key_id, access_key_secret=proc.access_key_secret
    ) as admin:
        found = sorted(int(str(log.get("i"))) for log, _ in stored_logs(admin, "down-up", "app"))
    assert found == list(range(300))


# -------------------------------------------------------------------- futures


class Gate:
    """A transport that holds every request until opened."""

    def __init__(self) -> None:
        self.opened = threading.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.opened.wait(10)
        return httpx.Response(200, json={"shardId": 0, "cursor": "MA==", "logCount": 1})


AnyFuture = SendFuture | concurrent.futures.Future[object]


def pending_concurrent_future() -> tuple[concurrent.futures.Future[object], Callable[[], object]]:
    future: concurrent.futures.Future[object] = concurrent.futures.Future()
    return future, lambda: future.set_result("done")


def pending_send_future() -> tuple[SendFuture, Callable[[], object]]:
    gate = Gate()
    producer = scripted_producer(gate, batch=BatchPolicy(linger=0))
    future = producer.send("p", "l", {"a": "b"})

    def complete() -> None:
        gate.opened.set()
        producer.close()

    return future, complete


@pytest.mark.parametrize("pending", [pending_concurrent_future, pending_send_future])
def test_a_send_future_behaves_like_a_concurrent_future(
    pending: Callable[[], tuple[AnyFuture, Callable[[], object]]],
) -> None:
    future, complete = pending()
    called: list[tuple[object, str]] = []
    first_call = threading.Event()

    def record(done: object) -> None:
        called.append((done, threading.current_thread().name))
        first_call.set()

    def fail(done: object) -> None:
        raise RuntimeError("a failing callback does not stop the others")

    assert not future.done()
    with pytest.raises(TimeoutError):
        future.result(timeout=0.05)
    with pytest.raises(TimeoutError):
        future.exception(timeout=0)
    future.add_done_callback(fail)
    future.add_done_callback(record)
    assert called == []

    complete()

    assert future.result(timeout=10) is future.result()  # the same result every time
    assert future.done() and future.exception() is None
    assert first_call.wait(10)  # the callback added before completion ran (once)
    future.add_done_callback(record)  # once done, a callback runs at once, in this thread
    assert [done for done, _ in called] == [future, future]
    assert called[1][1] == threading.current_thread().name


def test_the_callback_of_a_send_has_run_once_its_future_is_done() -> None:
    gate = Gate()
    seen: list[SendResult] = []
    producer = scripted_producer(gate, batch=BatchPolicy(linger=0))
    futures = [producer.send("p", "l", {"i": str(i)}, callback=seen.append) for i in range(3)]
    gate.opened.set()

    results = [future.result(timeout=10) for future in futures]

    assert all(future.done() for future in futures)
    assert len(seen) == 3 and {id(r) for r in seen} == {id(r) for r in results}
    producer.close()


def test_the_exception_of_a_failed_send_is_its_final_error() -> None:
    with scripted_producer(Script(400)) as producer:
        future = producer.send("p", "l", {"a": "b"})
        error = future.exception(timeout=10)

    assert isinstance(error, ClientError) and error is future.result().error


def refusing(marker: str) -> Callable[[httpx.Request], httpx.Response]:
    """A transport (for ``compression="none"``) that refuses the batches holding a log
    whose ``i`` is ``marker``, and stores the others."""

    def answer(request: httpx.Request) -> httpx.Response:
        group = LogGroup.from_protobuf(request.content)
        if any(log.get("i") == marker for log in group.logs):
            body = {"errorCode": "InvalidLogGroup", "errorMessage": "no", "requestId": "R2"}
            return httpx.Response(400, json=body)
        return httpx.Response(200, json={"shardId": 0, "cursor": "MA==", "logCount": 1})

    return answer


def test_a_send_spread_over_several_batches_has_one_outcome() -> None:
    seen: list[SendResult] = []
    batch = BatchPolicy(max_count=10, linger=0.01)
    with scripted_producer(refusing("12"), batch=batch, compression="none") as producer:
        first = producer.send("p", "l", {"i": "first"})
        spread = producer.send("p", "l", [{"i": str(i)} for i in range(25)], callback=seen.append)
        result = spread.result(timeout=10)  # batches [first, 0..8], [9..18], [19..24]

    assert first.result().success
    assert not result.success and result.log_count == 25 and seen == [result]
    assert isinstance(result.error, ClientError) and result.error.request_id == "R2"
    assert sorted(a.code for a in result.attempts) == ["InvalidLogGroup", "OK", "OK"]
    assert [log.get("i") for log in result.undelivered] == [str(i) for i in range(9, 19)]
    assert isinstance(spread.exception(), ClientError)


def test_a_log_that_does_not_fit_the_open_batch_goes_alone_into_the_next() -> None:
    batch = BatchPolicy(max_bytes=100, linger=0.01)  # room for one of these logs
    with scripted_producer(refusing("a"), batch=batch, compression="none") as producer:
        a = producer.send("p", "l", {"i": "a", "pad": "x" * 40})
        b = producer.send("p", "l", {"i": "b", "pad": "x" * 40})
        c = producer.send("p", "l", [{"i": "c", "pad": "x" * 40}])

    assert not a.result().success
    for future in (b, c):
        assert future.result().success and [x.code for x in future.result().attempts] == ["OK"]


def test_senders_sharing_a_connection_pool_keep_it_until_the_last_one_stops(
    server: ServerProcess,
) -> None:
    pool = _SenderPool(2)
    first, second = (
        LogClient(
            server.endpoint,
            access_key_id=server.access_key_id,
            access_key_secret=server.access_key_secret,
            transport=pool,
        )
        for _ in range(2)
    )
    first.list_projects()
    second.list_projects()
    first.close()

    second.list_projects()  # the first sender stopping does not close the pool
    second.close()


# ---------------------------------------------------------------- backpressure


def test_a_full_buffer_blocks_for_the_set_time_then_raises() -> None:
    gate = Gate()
    options = {"max_buffer_bytes": 2000, "buffer_full_timeout": 0.3}
    producer = scripted_producer(gate, batch=BatchPolicy(linger=0), **options)
    sent = 0
    with pytest.raises(BufferFullError):
        while True:
            producer.send(
                "p",
                "l",
                {"message": "x" * 90},
            )
            sent += 1
            if sent > 100:
                break
    full_at = sent
    stats = producer.statistics()
    assert 10 <= full_at <= 25 and stats.pending_bytes <= 2000

    started = time.monotonic()
    with pytest.raises(BufferFullError):
        producer.send("p", "l", {"message": "x" * 90})
    assert 0.25 <= time.monotonic() - started < 2

    threading.Timer(0.1, gate.opened.set).start()
    assert producer.send("p", "l", {"message": "room again"}).result(timeout=5).success
    producer.close()
    assert producer.statistics().delivered_logs == full_at + 1


def test_raise_at_once_when_the_buffer_is_full() -> None:
    gate = Gate()
    producer = scripted_producer(gate, max_buffer_bytes=500, buffer_full_timeout=0)
    with pytest.raises(BufferFullError):
        for _ in range(100):
            started = time.monotonic()
            producer.send("p", "l", {"message": "x" * 90})
    assert time.monotonic() - started < 0.1
    gate.opened.set()
    producer.close()


# ------------------------------------------------------------------------ fork


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_empty_producer(
    server: ServerProcess, client: LogClient, logstore: tuple[str, str]
) -> None:
    project, name = logstore
    producer = producer_for(server, batch=BatchPolicy(linger=0.5))
    producer.send(project, name, {"who": "parent", "i": "0"}).result(timeout=10)
    producer.send(project, name, {"who": "parent", "i": "1"})  # held in the parent's batch

    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            fresh = producer.statistics().pending_logs == 0
            result = producer.send(project, name, {"who": "child"}).result(timeout=10)
            producer.close(timeout=10)
            code = 0 if fresh and result.success else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert producer.send(project, name, {"who": "parent", "i": "2"}).result(timeout=10).success
    producer.close()
    who = sorted(
        str(log.get("who")) + str(log.get("i", "")) for log, _ in stored_logs(client, project, name)
    )
    assert who == ["child", "parent0", "parent1", "parent2"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_children_that_exit_through_multiprocessing_deliver_what_they_held(
    server: ServerProcess, client: LogClient, logstore: tuple[str, str]
) -> None:
    # A multiprocessing child ends with os._exit, which skips atexit; the linger is
    # longer than the test, so only closing at the child's exit delivers its logs.
    project, name = logstore
    slow = ProducerConfig(batch=BatchPolicy(linger=30.0), workers=1, name="mp-test")
    producer = producer_for(server, batch=slow.batch)
    handler = LogHarborHandler(
        project,
        name,
        endpoint=server.endpoint,
        access_key_id=server.access_key_id,
        access_key_secret=server.access_key_secret,
        config=slow,
    )
    log = logging.getLogger("mp-worker")
    log.addHandler(handler)
    log.propagate = False

    def work(child: int) -> None:
        log.warning("record of child %d", child)
        producer.send(project, name, {"message": f"send of child {child}"})

    context = multiprocessing.get_context("fork")
    try:
        children = [context.Process(target=work, args=(i,)) for i in range(3)]
        for child in children:
            child.start()
        for child in children:
            child.join(30)
    finally:
        log.removeHandler(handler)
        handler.close()
        producer.close()

    assert [child.exitcode for child in children] == [0, 0, 0]
    messages = sorted(str(log.get("message")) for log, _ in stored_logs(client, project, name))
    assert messages == sorted(
        [f"record of child {i}" for i in range(3)] + [f"send of child {i}" for i in range(3)]
    )


# --------------------------------------------------------------------- metrics


def test_statistics_and_prometheus_metrics_agree() -> None:
    registry = CollectorRegistry()
    script = Script(500)
    producer = Producer(
        "http://logharbor.test",
        config=config(retry=FAST_RETRY),
        transport=httpx.MockTransport(script),
        registry=registry,
    )
    producer.send("p", "l", [{"a": "b"}] * 3).result(timeout=10)
    producer.close()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"producer": "test", **labels})

    stats = producer.statistics()
    assert value("logharbor_producer_messages_total", code="OK") == stats.delivered_logs == 3
    assert value("logharbor_producer_batches_total", code="OK") == stats.delivered_batches == 1
    assert value("logharbor_producer_errors_total", code="InternalServerError") == 1
    assert value("logharbor_producer_retries_total") == stats.retries == 1
    assert value("logharbor_producer_pending_logs") == 0
    assert value("logharbor_producer_batch_latency_seconds_count", code="OK") == 1
    assert value("logharbor_producer_batch_size_bytes_sum", code="OK") == stats.delivered_bytes


def test_delivered_bytes_are_the_encoded_logs_in_statistics_and_metrics(
    server: ServerProcess, logstore: tuple[str, str]
) -> None:
    project, name = logstore
    registry = CollectorRegistry()
    logs = [LogItem({"i": str(i), "pad": "x" * i}, 1_700_000_000_000_000_000) for i in range(30)]
    producer = producer_for(server, registry=registry, batch=BatchPolicy(max_count=7))
    producer.send(project, name, logs)
    producer.close()

    encoded = sum(len(encode_item(log, 0)) for log in logs)
    stats = producer.statistics()
    assert stats.delivered_bytes == encoded and stats.delivered_batches == 5
    labels = {"producer": "test", "code": "OK"}
    assert registry.get_sample_value("logharbor_producer_bytes_total", labels) == encoded


def test_pending_bytes_and_timeouts_in_statistics_and_metrics(silent_endpoint: str) -> None:
    registry = CollectorRegistry()
    retry = RetryPolicy(max_retries=1, backoff_base=0.01, backoff_max=0.01)
    producer = Producer(
        silent_endpoint,
        config=config(retry=retry, timeout=Timeout(connect=5, read=0.3, write=5, pool=5)),
        registry=registry,
    )

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"producer": "test", **labels})

    logs = [LogItem({"i": str(i)}, 1_700_000_000_000_000_000) for i in range(3)]
    future = producer.send("p", "l", logs)
    held = producer.statistics()
    encoded = sum(len(encode_item(log, 0)) for log in logs)
    assert held.pending_logs == 3 and held.pending_bytes == encoded
    assert value("logharbor_producer_pending_logs") == 3
    assert value("logharbor_producer_pending_bytes") == encoded

    result = future.result(timeout=10)  # two attempts (one retry), both timed out

    assert [attempt.code for attempt in result.attempts] == ["ReadTimeout", "ReadTimeout"]
    stats = producer.statistics()
    assert stats.timeouts == 2 and stats.errors_by_code == {"ReadTimeout": 2}
    assert value("logharbor_producer_timeouts_total") == 2
    assert value("logharbor_producer_errors_total", code="ReadTimeout") == 2
    assert value("logharbor_producer_bytes_total", code="ReadTimeout") == encoded
    assert stats.pending_bytes == 0 and value("logharbor_producer_pending_bytes") == 0
    producer.close()
