"""The command line against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness import ServerProcess
from logharbor.cli import app

runner = CliRunner()


def cli(server: ServerProcess, *args: str, stdin: str | None = None) -> str:
    result = runner.invoke(
        app,
        [*args, "--endpoint", server.endpoint, "--data-dir", str(server.data_dir)],
        input=stdin,
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_manage_write_and_read(server: ServerProcess, unique_name: Callable[[str], str]) -> None:
    project = unique_name("cli")
    cli(server, "project", "create", project, "--description", "from the cli")
    assert project in cli(server, "project", "list")
    cli(server, "logstore", "create", project, "app", "--shards", "2", "--ttl", "3")
    assert "app" in cli(server, "logstore", "list", project)
    assert "readwrite" in cli(server, "shards", project, "app")

    cli(server, "put", project, "app", "level=INFO", "msg=hello world")
    stdin = 'plain text line\n{"level": "ERROR", "code": 500}\n\n'
    cli(server, "put", project, "app", "--topic", "batch", stdin=stdin)
    printed = cli(server, "pull", project, "app", "--json")
    logs = [json.loads(line) for line in printed.splitlines() if line.startswith("{")]
    contents = sorted(json.dumps(log["contents"], sort_keys=True) for log in logs)
    assert contents == sorted(
        [
            json.dumps({"level": "INFO", "msg": "hello world"}, sort_keys=True),
            json.dumps({"message": "plain text line"}, sort_keys=True),
            json.dumps({"level": "ERROR", "code": "500"}, sort_keys=True),
        ]
    )
    cli(server, "logstore", "delete", project, "app")
    cli(server, "project", "delete", project)


def test_index_set_show_query_and_delete(
    server: ServerProcess, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    project = unique_name("cli")
    cli(server, "project", "create", project)
    cli(server, "logstore", "create", project, "web", "--shards", "1")
    cli(server, "put", project, "web", "path=/pay", "status=500", "latency=250")
    cli(server, "put", project, "web", "path=/cart", "status=200", "latency=12")
    assert "created" in cli(
        server, "index", "set", project, "web", "--key", "status:text", "--key", "latency:long"
    )
    shown = cli(server, "index", "show", project, "web")
    assert '"latency"' in shown and '"long"' in shown
    assert "/pay" in cli(server, "query", project, "web", "latency > 100", "--from", "1h")
    # a configuration from a file replaces it: now latency is text, so no comparison
    config = tmp_path / "index.json"
    config.write_text(json.dumps({"line": {"token": [" "]}, "keys": {"status": {}}}))
    assert "updated" in cli(server, "index", "set", project, "web", f"@{config}")
    assert '"latency"' not in cli(server, "index", "show", project, "web")
    cli(server, "index", "delete", project, "web")
    gone = runner.invoke(
        app,
        ["index", "show", project, "web", "--endpoint", server.endpoint],
        env={
            "LOGHARBOR_ACCESS_KEY_ID": server.access_key_id,
            "LOGHARBOR_ACCESS_KEY_SECRET": server.access_key_secret,
        },
    )
    assert gone.exit_code == 1 and "IndexConfigNotExist" in gone.output
    bad = runner.invoke(app, ["index", "set", project, "web", "--key", "status:number"])
    assert bad.exit_code == 2 and "NAME:TYPE" in bad.output


def test_errors_are_reported_not_raised(server: ServerProcess) -> None:
    result = runner.invoke(
        app,
        [
            "project",
            "delete",
            "no-such-project",
            "--endpoint",
            server.endpoint,
            "--data-dir",
            str(server.data_dir),
        ],
    )
    assert result.exit_code == 1
    assert "ProjectNotExist" in result.output


@pytest.mark.timeout(60)
def test_tail_follows_new_logs(server: ServerProcess, unique_name: Callable[[str], str]) -> None:
    project = unique_name("tail")
    cli(server, "project", "create", project)
    cli(server, "logstore", "create", project, "live", "--shards", "2")
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "logharbor",
            "tail",
            project,
            "live",
            "--json",
            "--endpoint",
            server.endpoint,
            "--data-dir",
            str(server.data_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)  # let it take the end cursors
        for i in range(4):
            cli(server, "put", project, "live", f"n={i}")
        assert follower.stdout is not None
        seen = sorted(json.loads(follower.stdout.readline())["contents"]["n"] for _ in range(4))
        assert seen == ["0", "1", "2", "3"]
    finally:
        follower.kill()
        follower.wait()
