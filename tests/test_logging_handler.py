"""The logging integrations against a real server: the stdlib handler (dictConfig,
re-configuration, flush, a full buffer), and the loguru and structlog adapters."""

from __future__ import annotations

import logging
import logging.config
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from harness import ServerProcess
from logharbor import (
    BatchPolicy,
    LogClient,
    LogHarborHandler,
    LoguruSink,
    Producer,
    ProducerConfig,
    StructlogProcessor,
)
from test_producer import stored_logs

FAST = ProducerConfig(batch=BatchPolicy(linger=0.05), workers=1, name="logging-test")


@pytest.fixture
def logstore(client: LogClient, unique_name: Callable[[str], str]) -> Iterator[tuple[str, str]]:
    project = unique_name("logs")
    client.create_project(project)
    client.create_logstore(project, "app", shard_count=1)
    yield project, "app"
    client.delete_project(project)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    logging.config.dictConfig(
        {"version": 1, "incremental": False, "disable_existing_loggers": False}
    )
    root.handlers[:] = handlers
    root.setLevel(level)


def dict_config(server: ServerProcess, project: str, logger: str) -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "harbor": {
                "()": LogHarborHandler,
                "project": project,
                "logstore": "app",
                "endpoint": server.endpoint,
                "access_key_id": server.access_key_id,
                "access_key_secret": server.access_key_secret,
                "config": FAST,
            }
        },
        "loggers": {logger: {"handlers": ["harbor"], "level": "INFO", "propagate": False}},
    }


def test_the_handler_under_dict_config_ships_records_and_survives_reconfiguration(
    server: ServerProcess,
    client: LogClient,
    logstore: tuple[str, str],
    restore_logging: None,
) -> None:
    project, name = logstore
    logging.config.dictConfig(dict_config(server, project, "shop"))
    log = logging.getLogger("shop")
    first = log.handlers[0]
    assert isinstance(first, LogHarborHandler)

    log.info("order %s placed", 42, extra={"order_id": 42, "user": "ann"})
    try:
        raise ValueError("no stock")
    except ValueError:
        log.exception("order failed")
    log.warning("where am I", stack_info=True)
    log.debug("not shipped: below INFO")

    logging.config.dictConfig(dict_config(server, project, "shop"))  # re-configure
    second = log.handlers[0]
    assert second is not first and first.producer.state.value != "open"
    log.info("after reconfiguration")
    started = time.monotonic()
    second.flush()
    assert time.monotonic() - started < 5
    first.producer.close(timeout=5)  # the re-configuration closes it in the background

    logs = {log.get("message"): log for log, _ in stored_logs(client, project, name)}
    assert set(logs) == {
        "order 42 placed",
        "order failed",
        "where am I",
        "after reconfiguration",
    }
    placed = logs["order 42 placed"]
    assert placed.get("level") == "INFO" and placed.get("logger") == "shop"
    assert placed.get("order_id") == "42" and placed.get("user") == "ann"
    assert "ValueError: no stock" in str(logs["order failed"].get("exception"))
    assert "test_logging_handler.py" in str(logs["where am I"].get("stack"))
    assert logs["where am I"].get("level") == "WARNING"


class Gate:
    def __init__(self) -> None:
        self.opened = threading.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.opened.wait(10)
        return httpx.Response(200, json={"shardId": 0, "cursor": "MA==", "logCount": 1})


def stuck_producer(gate: Gate) -> Producer:
    config = ProducerConfig(batch=BatchPolicy(linger=0), workers=1, max_buffer_bytes=4000)
    return Producer(
        "http://logharbor.test",
        config=config,
        transport=httpx.MockTransport(gate),
        registry=CollectorRegistry(),
    )


def test_a_full_buffer_drops_and_counts_without_blocking_the_application() -> None:
    gate = Gate()
    producer = stuck_producer(gate)
    handler = LogHarborHandler("p", "l", producer=producer, overflow="drop")
    log = logging.getLogger("full-drop")
    log.addHandler(handler)
    log.propagate = False
    try:
        slowest = 0.0
        for i in range(300):
            started = time.monotonic()
            log.error("message %d %s", i, "x" * 50)
            slowest = max(slowest, time.monotonic() - started)
        assert handler.dropped > 250
        assert slowest < 0.05
    finally:
        log.removeHandler(handler)
        gate.opened.set()
        handler.close()
        producer.close()
    assert producer.statistics().delivered_logs == 300 - handler.dropped


def test_overflow_block_waits_only_the_block_timeout() -> None:
    gate = Gate()
    producer = stuck_producer(gate)
    handler = LogHarborHandler("p", "l", producer=producer, overflow="block", block_timeout=0.1)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "y" * 500, None, None)
    try:
        for _ in range(20):
            handler.handle(record)
        started = time.monotonic()
        handler.handle(record)
        assert 0.08 <= time.monotonic() - started < 1
        assert handler.dropped >= 2
    finally:
        gate.opened.set()
        handler.close()
        producer.close()


def test_the_loguru_sink_ships_level_message_and_bound_fields(
    server: ServerProcess, client: LogClient, logstore: tuple[str, str]
) -> None:
    from loguru import logger

    project, name = logstore
    producer = Producer(
        server.endpoint,
        access_key_id=server.access_key_id,
        access_key_secret=server.access_key_secret,
        config=FAST,
        registry=CollectorRegistry(),
    )
    sink_id = logger.add(LoguruSink(producer, project, name), level="INFO")
    try:
        logger.bind(request_id="r-1").warning("disk {pct}% full", pct=91)
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            logger.exception("boom")
    finally:
        logger.remove(sink_id)
    producer.close()

    logs = {log.get("message"): log for log, _ in stored_logs(client, project, name)}
    assert logs["disk 91% full"].get("level") == "WARNING"
    assert logs["disk 91% full"].get("request_id") == "r-1"
    assert "ZeroDivisionError" in str(logs["boom"].get("exception"))


def test_the_structlog_processor_ships_events_and_passes_them_on(
    server: ServerProcess, client: LogClient, logstore: tuple[str, str]
) -> None:
    import structlog

    project, name = logstore
    producer = Producer(
        server.endpoint,
        access_key_id=server.access_key_id,
        access_key_secret=server.access_key_secret,
        config=FAST,
        registry=CollectorRegistry(),
    )
    rendered: list[str] = []

    def capture(logger: object, method: str, event: dict[str, Any]) -> str:
        rendered.append(event["event"])
        return str(event)

    log = structlog.wrap_logger(
        structlog.PrintLogger(file=open("/dev/null", "w")),  # noqa: SIM115
        processors=[StructlogProcessor(producer, project, name), capture],
    )
    log.info("user login", user="ann", attempt=2)
    producer.close()

    assert rendered == ["user login"]
    ((stored, _),) = stored_logs(client, project, name)
    assert stored.get("message") == "user login" and stored.get("level") == "INFO"
    assert stored.get("user") == "ann" and stored.get("attempt") == "2"


def shipping_to(server: ServerProcess, project: str, name: str) -> LogHarborHandler:
    """A handler with its own producer, signed with the server's root key."""
    return LogHarborHandler(
        project,
        name,
        endpoint=server.endpoint,
        access_key_id=server.access_key_id,
        access_key_secret=server.access_key_secret,
        config=FAST,
    )


def test_a_forked_worker_ships_its_own_records(
    server: ServerProcess, client: LogClient, logstore: tuple[str, str]
) -> None:
    project, name = logstore
    handler = shipping_to(server, project, name)
    log = logging.getLogger("prefork")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("master")
        pid = os.fork()
        if pid == 0:  # a pre-fork worker
            code = 1
            try:
                log.warning("worker")
                handler.flush()
                code = 0 if handler.producer.statistics().delivered_logs == 1 else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        log.removeHandler(handler)
        handler.close()
    messages = sorted(str(log.get("message")) for log, _ in stored_logs(client, project, name))
    assert messages == ["master", "worker"]


def test_the_producers_own_http_logs_are_not_shipped_back(
    server: ServerProcess,
    client: LogClient,
    logstore: tuple[str, str],
    restore_logging: None,
) -> None:
    # httpx logs each request at INFO on the sender thread that makes it: shipped,
    # every batch would bring more records, forever.
    project, name = logstore
    handler = shipping_to(server, project, name)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        logging.getLogger("feedback").info("the only record")
        time.sleep(10 * FAST.batch.linger)  # a feedback loop would have sent more by now
        assert handler.producer.statistics().delivered_batches == 1
    finally:
        root.removeHandler(handler)
        handler.close()

    messages = [log.get("message") for log, _ in stored_logs(client, project, name)]
    assert messages == ["the only record"]
    assert handler.suppressed >= 1  # at least httpx's record of that one request
