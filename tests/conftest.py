from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import ServerProcess
from logharbor.engine import Engine, EngineConfig


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server (signatures on) shared by the tests of a session."""
    proc = ServerProcess(tmp_path_factory.mktemp("server")).start()
    yield proc
    proc.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start dedicated servers (for restarts, kill -9, special settings)."""
    started: list[ServerProcess] = []
    counter = itertools.count()

    def start(data_dir: Path | None = None, **options: object) -> ServerProcess:
        proc = ServerProcess(data_dir or tmp_path / f"data{next(counter)}", **options)  # type: ignore[arg-type]
        started.append(proc.start())
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[object]:
    from logharbor import LogClient

    with LogClient(
        server.endpoint,
        access_key_id=server.access_key_id,
        access_key_secret=server.access_key_secret,
    ) as c:
        yield c


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = Engine(
        EngineConfig(ingest_workers=0, data_dir=tmp_path / "engine", retention_interval=3600)
    )
    yield eng
    eng.close()
