"""Search through the SDK and the command line, against a real server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from harness import ServerProcess
from logharbor import AsyncLogClient, ClientError, LogClient, LogItem
from logharbor.cli import app


@pytest.fixture
def shop(client: LogClient, unique_name: Callable[[str], str]) -> tuple[str, int]:
    project = unique_name("sdk")
    client.create_project(project)
    client.create_logstore(project, "access", shard_count=2)
    client.create_index(
        project,
        "access",
        {"line": {"token": [" "]}, "keys": {"latency": {"type": "long", "doc_value": True}}},
    )
    now = int(time.time())
    client.put_logs(
        project,
        "access",
        [
            LogItem(
                {
                    "path": f"/p{i % 3}",
                    "status": "500" if i % 4 == 0 else "200",
                    "latency": str(i * 10),
                    "msg": f"request {i} served",
                },
                time_ns=(now - 30 + i) * 1_000_000_000,
            )
            for i in range(20)
        ],
        topic="web",
    )
    return project, now


def test_query_histogram_context(client: LogClient, shop: tuple[str, int]) -> None:
    project, now = shop
    found = client.query(project, "access", "status: 500", start=now - 60, end=now + 60)
    assert found.complete and found.matched == 5
    assert {log.get("status") for log in found.logs} == {"500"}
    table = client.query(
        project,
        "access",
        "* | select path, max(latency) as top group by path order by path",
        start=datetime.fromtimestamp(now - 60, UTC),
        end=now + 60,
    )
    assert table.records() == [
        {"path": "/p0", "top": 180},
        {"path": "/p1", "top": 190},
        {"path": "/p2", "top": 170},
    ]
    histogram = client.histogram(project, "access", "*", start=now - 60, end=now + 60, interval=10)
    assert histogram.total == 20 and len(histogram.buckets) >= 12
    before, after = client.context(project, "access", found.logs[0], back=2, forward=2)
    assert len(before) + len(after) >= 2
    assert client.get_index(project, "access")["config"]["line"]["token"] == [" "]
    with pytest.raises(ClientError) as exc:
        client.query(project, "access", "status: (", start=now - 60, end=now + 60)
    assert exc.value.code == "InvalidQuery"


async def test_async_query(server: ServerProcess, shop: tuple[str, int]) -> None:
    project, now = shop
    async with AsyncLogClient(
        server.endpoint,
        access_key_id=server.access_key_id,
        access_key_secret=server.access_key_secret,
    ) as client:
        result = await client.query(
            project, "access", '"request 7 served"', start=now - 60, end=now + 60
        )
    assert [log.get("msg") for log in result.logs] == ["request 7 served"]


def test_cli_query(server: ServerProcess, shop: tuple[str, int]) -> None:
    project, _now = shop
    common = ["--endpoint", server.endpoint, "--data-dir", str(server.data_dir), "--from", "5m"]
    runner = CliRunner()
    table = runner.invoke(
        app,
        [
            "query",
            project,
            "access",
            "* | select status, count(*) as n group by status",
            *common,
            "--json",
        ],
    )
    assert table.exit_code == 0, table.output
    rows = sorted(
        (json.loads(line)["status"], json.loads(line)["n"])
        for line in table.output.splitlines()
        if line.startswith("{")
    )
    assert rows == [("200", 15), ("500", 5)]
    bars = runner.invoke(app, ["query", project, "access", "status: 500", *common, "--histogram"])
    assert bars.exit_code == 0 and "total 5" in bars.output
    logs = runner.invoke(app, ["query", project, "access", "status: 500", *common])
    assert logs.exit_code == 0 and "5 of 5 matching logs" in logs.output
