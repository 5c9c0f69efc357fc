"""The logging handler under real pre-fork servers: gunicorn's sync workers (with and
without ``--preload``) and uvicorn's worker class, ``uvicorn --workers 2`` and a
celery prefork worker serve the apps of tests/prefork_apps, which log through a
``LogHarborHandler`` on the root logger, set up as docs/producer.md says for each
server. After a graceful stop (SIGTERM) the server must hold exactly one record per
request or task, from the process that served it.

The handler's linger outlasts the test, so each record arrives only because its
process delivered what it held on the way out.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from harness import ServerProcess
from logharbor import LogClient, LogItem
from prefork_apps.harbor_logging import APP_LOGGER, LOGSTORE
from test_producer import stored_logs

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="pre-fork servers need fork"),
    pytest.mark.timeout(120),
]

TESTS = Path(__file__).parent
REQUESTS = 20
CONCURRENCY = 4
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
_URL = re.compile(r"http://127\.0\.0\.1:(\d+)")


class Served:
    """A server program in a subprocess (and its own process group), its output
    collected line by line."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str]) -> None:
        self.process = subprocess.Popen(
            args,
            cwd=TESTS,
            env={**os.environ, **env, "PYTHONPATH": str(TESTS)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.output: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = START_TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.output):
                if match := pattern.search(line):
                    return match
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern.pattern!r} in the output:\n{self.transcript}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (a graceful stop, for all three programs) and the exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit in {timeout} s:\n{self.transcript}") from None

    def kill(self) -> None:
        """Whatever is left of the process group: the master and its workers."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    @property
    def transcript(self) -> str:
        return "".join(self.output)


@contextlib.contextmanager
def served(args: Sequence[str], env: Mapping[str, str]) -> Iterator[Served]:
    program = Served(args, env)
    try:
        yield program
    finally:
        program.kill()


@pytest.fixture
def project(client: LogClient, unique_name: Callable[[str], str]) -> Iterator[str]:
    name = unique_name("prefork")
    client.create_project(name)
    client.create_logstore(name, LOGSTORE, shard_count=2)
    yield name
    client.delete_project(name)


@pytest.fixture
def app_env(server: ServerProcess, project: str) -> dict[str, str]:
    """What tests/prefork_apps/harbor_logging.py reads."""
    return {
        "LOGHARBOR_TEST_ENDPOINT": server.endpoint,
        "LOGHARBOR_TEST_PROJECT": project,
        "LOGHARBOR_TEST_ACCESS_KEY_ID": server.access_key_id,
        "LOGHARBOR_TEST_ACCESS_KEY_SECRET": server.access_key_secret,
    }


def app_records(client: LogClient, project: str, event: str) -> list[LogItem]:
    return [
        log
        for log, _ in stored_logs(client, project, LOGSTORE)
        if log.get("logger") == APP_LOGGER and log.get("event") == event
    ]


def worker_pid(base: str, path: str) -> int:
    # a new connection each time, so that any worker may take it
    response = httpx.get(base + path, headers={"Connection": "close"}, timeout=10)
    response.raise_for_status()
    return int(response.text)


def wait_for_workers(base: str, count: int, timeout: float = START_TIMEOUT) -> set[int]:
    """The pids of ``count`` workers, once each has answered a ping."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        while len(seen) < count and time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                seen.update(pool.map(lambda _: worker_pid(base, "/ping"), range(CONCURRENCY)))
    assert len(seen) == count, f"only workers {seen} answered"
    return seen


def send_requests(base: str) -> dict[str, int]:
    """Each request's index and the pid of the worker that served it."""
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        pids = pool.map(lambda i: worker_pid(base, f"/log/{i}"), range(REQUESTS))
        return {str(i): pid for i, pid in enumerate(pids)}


def assert_one_record_each(records: list[LogItem], key: str, served_by: Mapping[str, int]) -> None:
    """Exactly one record per request (or task), with the pid that served it."""
    assert len(records) == len(served_by)
    assert {str(log.get(key)): int(str(log.get("process"))) for log in records} == served_by


@pytest.mark.parametrize(
    ("worker_class", "app", "preload"),
    [
        ("sync", "prefork_apps.wsgi_app:app", False),
        ("sync", "prefork_apps.wsgi_app:app", True),
        ("uvicorn.workers.UvicornWorker", "prefork_apps.asgi_app:app", True),
    ],
    ids=["sync", "sync-preload", "uvicorn-worker-preload"],
)
def test_gunicorn_workers_deliver_every_record_on_a_graceful_stop(
    client: LogClient,
    project: str,
    app_env: dict[str, str],
    worker_class: str,
    app: str,
    preload: bool,
) -> None:
    args = [
        *(sys.executable, "-m", "gunicorn", app, "--worker-class", worker_class),
        *("--workers", "2", "--bind", "127.0.0.1:0", "--graceful-timeout", "20"),
        *(["--preload"] if preload else []),
    ]
    with served(args, app_env) as gunicorn:
        base = gunicorn.wait_for(re.compile(r"Listening at: (http://127\.0\.0\.1:\d+)")).group(1)
        workers = wait_for_workers(base, 2)
        served_by = send_requests(base)
        assert gunicorn.stop() == 0, gunicorn.transcript

    assert set(served_by.values()) <= workers
    assert_one_record_each(app_records(client, project, "request"), "request", served_by)
    # the app is imported once in the master under --preload, else in each worker
    imported_in = sorted(
        int(str(log.get("process"))) for log in app_records(client, project, "import")
    )
    assert imported_in == ([gunicorn.process.pid] if preload else sorted(workers))


def test_uvicorn_spawned_workers_deliver_every_record_on_a_graceful_stop(
    client: LogClient, project: str, app_env: dict[str, str]
) -> None:
    args = [
        *(sys.executable, "-m", "uvicorn", "prefork_apps.asgi_app:app"),
        *("--workers", "2", "--host", "127.0.0.1", "--port", "0"),
        *("--timeout-graceful-shutdown", "20", "--log-level", "info"),
    ]
    with served(args, app_env) as uvicorn:
        port = uvicorn.wait_for(re.compile(r"Uvicorn running on " + _URL.pattern)).group(1)
        base = f"http://127.0.0.1:{port}"
        workers = wait_for_workers(base, 2)
        served_by = send_requests(base)
        assert uvicorn.stop() == 0, uvicorn.transcript

    assert set(served_by.values()) <= workers
    assert_one_record_each(app_records(client, project, "request"), "request", served_by)
    imported_in = sorted(
        int(str(log.get("process"))) for log in app_records(client, project, "import")
    )
    assert imported_in == sorted(workers)


def test_celery_prefork_pool_processes_deliver_every_record_on_a_warm_shutdown(
    client: LogClient, project: str, app_env: dict[str, str], tmp_path: Path
) -> None:
    from celery import Celery

    from prefork_apps.celery_files import settings

    args = [
        *(sys.executable, "-m", "celery", "-A", "prefork_apps.celery_app", "worker"),
        *("-P", "prefork", "-c", "2", "--loglevel", "INFO", "-n", f"{project}@%h"),
        *("--without-gossip", "--without-mingle", "--without-heartbeat"),
    ]
    sender = Celery("prefork-test-client", set_as_current=False)
    sender.conf.update(settings(tmp_path))
    try:
        with served(args, {**app_env, "LOGHARBOR_TEST_CELERY_DIR": str(tmp_path)}) as worker:
            results = [sender.send_task("log_one", args=(i,)) for i in range(REQUESTS)]
            deadline = time.monotonic() + START_TIMEOUT
            pids = [
                r.get(timeout=max(0.1, deadline - time.monotonic()), interval=0.05) for r in results
            ]
            assert worker.stop() == 0, worker.transcript
    finally:
        sender.close()

    served_by = {str(i): pid for i, pid in enumerate(pids)}
    assert_one_record_each(app_records(client, project, "task"), "task", served_by)
