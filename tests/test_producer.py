"""The Producer against a real server: delivery, batching, retries, backpressure,
lifecycle, fork and metrics.

Only the transport is replaced, and only where a real server cannot be made to
answer 429/500 on demand or to hang (``httpx.MockTransport``).
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
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
)
from logharbor.client._encoding import encode_item, group_suffix
from logharbor.client._producer import _SenderPool

FAST_RETRY = RetryPolicy(max_retries=200, backoff_base=0.01, backoff_max=0.1)


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


def test_logs_with_one_hash_key_land_in_one_shard(
    server: ServerProcess, client: LogClient, logstore: tuple[str, str]
) -> None:
    project, name = logstore
    with producer_for(server, batch=BatchPolicy(hash_key_buckets=4, linger=0.01)) as producer:
        for i in range(20):
            producer.send(project, name, {"i": str(i)}, hash_key="user-42")
    shards = set()
    for shard in client.list_shards(project, name):
        cursor = client.get_cursor(project, name, shard.shard_id, "begin")
        if client.pull_logs(project, name, shard.shard_id, cursor).log_count:
            shards.add(shard.shard_id)
    assert len(shards) == 1


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
