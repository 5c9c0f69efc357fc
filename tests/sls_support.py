"""Running the real aliyun-log-python-sdk against a LogHarbor server (spec §10.1):
AK ``testAKID``/``testSecret``, endpoint ``127.0.0.1:PORT`` with
``HTTP_PROXY=http://127.0.0.1:PORT`` (set only inside the tests that need it)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import ServerProcess

AK, SK = "testAKID", "testSecret"
HASH4 = ["00" * 16, "40" + "0" * 30, "80" + "0" * 30, "c0" + "0" * 30]


def write_keys(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    keys = {"keys": [{"accessKeyId": AK, "accessKeySecret": SK, "createTime": 0, "root": True}]}
    (data_dir / "access-keys.json").write_text(json.dumps(keys))


def start_sls_server(data_dir: Path, extra_args: tuple[str, ...] = ()) -> ServerProcess:
    write_keys(data_dir)
    return ServerProcess(data_dir, extra_args=extra_args).start()


def endpoint_of(server: ServerProcess) -> str:
    return server.endpoint.removeprefix("http://")


def proxy_env(server: ServerProcess) -> dict[str, str]:
    return {"HTTP_PROXY": server.endpoint, "http_proxy": server.endpoint}


def use_proxy(monkeypatch: pytest.MonkeyPatch, server: ServerProcess) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in proxy_env(server).items():
        monkeypatch.setenv(name, value)


def new_name() -> str:
    return "acc-" + secrets.token_hex(5)


def fresh_project(client: Any, shards: int = 2) -> str:
    project = new_name()
    client.create_project(project, "acceptance")
    client.create_logstore(project, "ls", ttl=7, shard_count=shards)
    return project


def fails(code: str, status: int, call: Callable[[], object]) -> Any:
    """The call raises LogException(code, status) within 1 s (no 5xx retry loop)."""
    from aliyun.log import LogException

    started = time.monotonic()
    with pytest.raises(LogException) as caught:
        call()
    elapsed = time.monotonic() - started
    assert caught.value.get_error_code() == code, caught.value
    assert caught.value.resp_status == status, caught.value
    assert elapsed < 1.0, f"{code} took {elapsed:.2f} s"
    return caught.value


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def seed_query_data(client: Any, project: str, now: int) -> None:
    """Spec §10.2 query seed data: an index and 30 logs of topic 'web'."""
    from aliyun.log import IndexConfig, IndexKeyConfig, IndexLineConfig, LogItem, PutLogsRequest

    client.create_index(
        project,
        "ls",
        IndexConfig(
            line_config=IndexLineConfig([" "]),
            key_config_list={
                "status": IndexKeyConfig([" "], doc_value=True),
                "uri": IndexKeyConfig([" ", "/"], doc_value=True),
            },
        ),
    )
    items = [
        LogItem(
            timestamp=now - 10 + (i % 10),
            contents=[
                ("status", "500" if i % 3 == 0 else "200"),
                ("uri", f"/api/v{i % 2}"),
                ("msg", f"req {i} done"),
            ],
        )
        for i in range(30)
    ]
    client.put_logs(PutLogsRequest(project, "ls", "web", "h1", items))


@pytest.fixture(scope="module")
def sls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_sls_server(tmp_path_factory.mktemp("sls"))
    yield proc
    proc.stop()


@pytest.fixture
def sls_client(sls_server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> Any:
    from aliyun.log import LogClient

    use_proxy(monkeypatch, sls_server)
    return LogClient(endpoint_of(sls_server), AK, SK)
