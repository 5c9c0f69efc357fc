"""The command line against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

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
