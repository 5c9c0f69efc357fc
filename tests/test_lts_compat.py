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

import pytest

from harness import ServerProcess
from logharbor import LogClient, PayloadTooLargeError, ServerError, ThrottledError
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
