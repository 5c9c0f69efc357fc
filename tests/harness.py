"""A real LogHarbor server in a subprocess on a free loopback port, and a raw
signed-HTTP helper for tests that must send what no SDK would."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from logharbor.protocol.signing import sign_headers

_LISTENING = re.compile(r"listening on (http://\S+)")


@dataclass
class ServerProcess:
    data_dir: Path
    auth: bool = True
    extra_args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    endpoint: str = ""
    process: subprocess.Popen[str] | None = None
    banner: list[str] = field(default_factory=list)

    def start(self, timeout: float = 30.0) -> ServerProcess:
        args = [
            sys.executable,
            "-m",
            "logharbor",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--log-level",
            "warning",
            *self.extra_args,
        ]
        if not self.auth:
            args.append("--no-auth")
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **self.env},
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        self.banner = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("server exited during start:\n" + "".join(self.banner))
            self.banner.append(line)
            match = _LISTENING.search(line)
            if match:
                self.endpoint = match.group(1)
                break
        else:
            raise RuntimeError("server did not start in time")
        # keep draining output so the server never blocks on a full pipe
        import threading

        threading.Thread(target=self._drain, daemon=True).start()
        self._wait_healthy(deadline)
        return self

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.banner.append(line)

    def _wait_healthy(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.endpoint + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("server did not become healthy")

    @property
    def keys(self) -> dict[str, str]:
        document = json.loads((self.data_dir / "access-keys.json").read_text())
        return next(k for k in document["keys"] if k.get("root"))

    @property
    def access_key_id(self) -> str:
        return self.keys["accessKeyId"]

    @property
    def access_key_secret(self) -> str:
        return self.keys["accessKeySecret"]

    def stop(self, timeout: float = 15.0) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """kill -9: no chance to flush anything."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        content: bytes = b"",
        headers: Mapping[str, str] | None = None,
        sign: bool = True,
        timeout: float = 30.0,
    ) -> httpx.Response:
        """Send exactly this request, signed with the root key unless ``sign`` is False."""
        all_headers = dict(headers or {})
        if sign and self.auth:
            all_headers.update(
                sign_headers(
                    access_key_id=self.access_key_id,
                    secret=self.access_key_secret,
                    method=method,
                    path=path,
                    params=params,
                    body=content,
                )
            )
        return httpx.request(
            method,
            self.endpoint + path,
            params=list(params),
            content=content,
            headers=all_headers,
            timeout=timeout,
        )
