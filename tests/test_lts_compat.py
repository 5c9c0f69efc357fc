"""The CTyun LTS surface (``logharbor.compat.lts``): the LTS document's two example
programs run against a real server, and failures carry the LTS error codes.

The programs in ``lts_examples/`` are the document's, changed only in their imports
and in reading the endpoint and keys from the environment (and with the web page's
non-breaking spaces turned into spaces). They sleep 5 s between sends; the runner
shortens ``time.sleep`` so that the test takes seconds. The document's producer
example defines ``main()`` without calling it; the runner calls it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from harness import ServerProcess
from logharbor import (
    LogClient,
    LogGroup,
    PayloadTooLargeError,
    SendResult,
    ServerError,
    ThrottledError,
)
from logharbor.client._exceptions import to_error
from logharbor.compat.lts import (
    ClientConfig,
    LogException,
    LogItem,
    Producer,
    ProducerConfig,
    get_current_timestamp,
    lts_error,
)
from logharbor.compat.lts import (
    LogClient as LtsClient,
)
from test_producer import stored_logs

EXAMPLES = Path(__file__).parent / "lts_examples"
RUNNER = (
    "import runpy, sys, time\n"
    "real_sleep = time.sleep\n"
    "time.sleep = lambda seconds: real_sleep(min(seconds, 0.005))\n"
    "program = runpy.run_path(sys.argv[1], run_name='__main__')\n"
    "if sys.argv[2] == 'call-main':\n"
    "    program['main']()\n"
)


@pytest.fixture
def unit(client: LogClient, unique_name: Callable[[str], str]) -> Iterator[tuple[str, str]]:
    project = unique_name("lts")
    client.create_project(project)
    client.create_logstore(project, "unit", shard_count=2)
    yield project, "unit"
    client.delete_project(project)


def run_example(
    name: str, server: ServerProcess, project: str, unit: str, *, call_main: bool = False
) -> list[str]:
    env = {
        **os.environ,
        "LTS_ENDPOINT": server.endpoint,
        "LTS_ACCESS_KEY": server.access_key_id,
        "LTS_SECRET_KEY": server.access_key_secret,
        "LTS_PROJECT": project,
        "LTS_UNIT": unit,
    }
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(EXAMPLES / name), "call-main" if call_main else ""],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_synchronous_example_program_writes_its_logs(
    server: ServerProcess, client: LogClient, unit: tuple[str, str]
) -> None:
    project, name = unit
    lines = run_example("sample_putlogs.py.txt", server, project, name)

    assert lines == ['{"statusCode":0,"message":"SUCCESS","error":""}'] * 100
    stored = stored_logs(client, project, name)
    assert len(stored) == 1000
    log, group = stored[0]
    assert log.contents == (
        ("__origin_msg__", "Python sdk test oriMessage"),
        ("level", "info"),
        ("area", "3.1415926"),
    )
    assert group.tags == (("user_tag", "string"),)
    assert log.time_ns % 1_000_000 == 0  # get_current_timestamp(3): millisecond precision


def test_the_producer_example_program_delivers_everything(
    server: ServerProcess, client: LogClient, unit: tuple[str, str]
) -> None:
    project, name = unit
    lines = run_example("sample_producer.py.txt", server, project, name, call_main=True)

    assert len(lines) == 200
    assert all(
        line == 'response: {"statusCode": 0, "message": "SUCCESS", "error": ""}, send count : 10'
        for line in lines
    )
    assert len(stored_logs(client, project, name)) == 2000


def lts_client(server: ServerProcess, project: str) -> LtsClient:
    return LtsClient(
        ClientConfig(server.endpoint, server.access_key_id, server.access_key_secret, project)
    )


def item(**contents: object) -> LogItem:
    log = LogItem()
    log.set_log_timestamp(get_current_timestamp())
    log.set_origin_msg("m")
    log.set_contents(contents)
    return log


@pytest.mark.parametrize(
    ("where", "items", "code"),
    [
        ("no-such-project", [item(a=1)], "LTS_8010"),
        ("no-such-unit", [item(a=1)], "LTS_8011"),
        ("unit", [item(**{"1bad": "x"})], "LTS_8001"),
        ("unit", [item(a="")], "LTS_8001"),
        ("unit", [item(a=1)] * 40961, "LTS_8004"),
    ],
)
def test_failures_carry_the_lts_error_codes(
    server: ServerProcess, unit: tuple[str, str], where: str, items: list[LogItem], code: str
) -> None:
    project, name = unit
    target_project = "missing-project" if where == "no-such-project" else project
    target_unit = "missing-unit" if where == "no-such-unit" else name
    with pytest.raises(LogException) as caught:
        lts_client(server, project).put_logs(target_project, target_unit, items)
    assert caught.value.get_error_code() == code


def test_a_too_large_body_and_throttling_map_to_their_codes() -> None:
    assert lts_error(PayloadTooLargeError("big", code="PostBodyTooLarge")).error_code == "LTS_8004"
    assert lts_error(ThrottledError("slow down", code="WriteQuotaExceed")).error_code == "LTS_8016"
    assert lts_error(ServerError("oops", code="InternalServerError")).error_code == "LTS_8000"


def test_close_with_a_timeout_raises_when_logs_were_left(unit: tuple[str, str]) -> None:
    producer = Producer(ProducerConfig(linger_ms=10))
    producer.build_clients(ClientConfig("http://127.0.0.1:9", "ak", "sk", "lts-down"))
    producer.start()
    seen = []
    producer.send_logs_callback("lts-down", "unit", [item(a=1)] * 3, callback=seen.append)
    with pytest.raises(LogException) as caught:
        producer.close(200)
    assert caught.value.get_error_code() == "LTS_8000" and "3 logs" in str(caught.value)
    assert len(seen) == 1 and not seen[0].success


def test_a_call_over_5_mib_fails_with_lts_8004_and_stores_nothing(
    server: ServerProcess, client: LogClient, unit: tuple[str, str]
) -> None:
    project, name = unit
    big = []
    for zone in ("a", "b"):  # two label sets: two log groups, each alone under 5 MiB
        for _ in range(7):
            log = item(pad="x" * 500_000)
            log.labels_push_back("zone", zone)
            big.append(log)

    with pytest.raises(LogException) as caught:
        lts_client(server, project).put_logs(project, name, big)

    assert caught.value.get_error_code() == "LTS_8004" and "5 MiB" in str(caught.value)
    assert stored_logs(client, project, name) == []
    lts_client(server, project).put_logs(project, name, big[:5])  # 2.5 MB is fine
    assert len(stored_logs(client, project, name)) == 5


def test_a_wrong_secret_key_fails_with_lts_8007(
    server: ServerProcess, unit: tuple[str, str]
) -> None:
    project, name = unit
    config = ClientConfig(server.endpoint, server.access_key_id, "not-the-secret", project)
    with pytest.raises(LogException) as caught:
        LtsClient(config).put_logs(project, name, [item(a=1)])
    assert caught.value.get_error_code() == "LTS_8007"


@pytest.mark.parametrize(
    ("compress_type", "body"),
    [
        ("lz4", b"not an lz4 block"),  # PostBodyInvalid: corrupt lz4 block
        ("zstd", b"not a zstd frame"),
        ("snappy9", b"any"),  # InvalidCompressType
    ],
)
def test_a_body_the_server_cannot_decompress_maps_to_lts_8006(
    server: ServerProcess, unit: tuple[str, str], compress_type: str, body: bytes
) -> None:
    # The SDK only sends what it compressed itself: the broken body goes in raw, and
    # the server's real answer goes through the SDK's error translation.
    project, name = unit
    raw = LogGroup([item(a=1).to_log_item()]).to_protobuf()
    answer = server.request(
        "POST",
        f"/api/v1/projects/{project}/logstores/{name}/logs",
        content=body,
        headers={
            "content-type": "application/x-protobuf",
            "x-lh-compress-type": compress_type,
            "x-lh-raw-size": str(len(raw)),
        },
    )
    assert answer.status_code == 400

    assert lts_error(to_error(answer)).error_code == "LTS_8006"


class Recording(httpx.BaseTransport):
    """The real network, remembering the headers of every request."""

    def __init__(self) -> None:
        self.network = httpx.HTTPTransport()
        self.headers: list[httpx.Headers] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers)
        return self.network.handle_request(request)

    def close(self) -> None:
        self.network.close()


@pytest.mark.parametrize("user_agent", [None, "billing-service/2.1"])
def test_requests_carry_the_configured_user_agent(
    server: ServerProcess, unit: tuple[str, str], user_agent: str | None
) -> None:
    project, name = unit
    config = ClientConfig(server.endpoint, server.access_key_id, server.access_key_secret, project)
    if user_agent is not None:
        config.user_agent = user_agent
    recording = Recording()

    LtsClient(config, transport=recording).put_logs(project, name, [item(a=1)])

    expected = user_agent or "lts-sdk-python/logharbor"
    assert [headers["user-agent"] for headers in recording.headers] == [expected]
    assert ProducerConfig().to_config(config).user_agent == expected  # the producer's too


def busy_answers(server: ServerProcess) -> float:
    """How many writes the server refused with 503, from its own metrics."""
    text = httpx.get(server.endpoint + "/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("logharbor_http_requests_total") and 'status="503"' in line
    )


@pytest.mark.parametrize(("no_retry", "requests"), [((), 3), ((503,), 1)])
def test_statuses_in_no_retry_status_code_are_not_retried(
    server_factory: Callable[..., ServerProcess], no_retry: tuple[int, ...], requests: int
) -> None:
    # A server that holds at most 1 KiB of request bodies at once answers a larger
    # write with 503 ServerBusy, which is retried unless no_retry_status_code says not.
    busy = server_factory(env={"LOGHARBOR_MAX_INFLIGHT_BYTES": "1024"})
    config = ClientConfig(
        busy.endpoint,
        busy.access_key_id,
        busy.access_key_secret,
        "busy",
        compress_type="none",
        retries=2,
        no_retry_status_code=no_retry,
    )
    large = [item(pad="x" * 4000)]

    with pytest.raises(LogException) as caught:
        LtsClient(config).put_logs("busy", "unit", large)
    assert caught.value.get_error_code() == "LTS_8000" and "ServerBusy" in str(caught.value)
    assert busy_answers(busy) == requests

    producer = Producer(ProducerConfig(linger_ms=0))
    producer.build_clients(config)
    producer.start()
    seen: list[SendResult] = []
    producer.send_logs_callback("busy", "unit", large, callback=seen.append)
    producer.safe_close()
    (result,) = seen
    assert [attempt.status for attempt in result.attempts] == [503] * requests
