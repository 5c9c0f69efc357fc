"""Run a server: bind the socket, print where it listens and how to authenticate,
serve until interrupted."""

from __future__ import annotations

import logging
import socket
import sys
from typing import TextIO

import uvicorn

from .._version import __version__
from .app import Server, build_server
from .auth import KEYS_FILE
from .config import ServerConfig


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def banner(server: Server, sock: socket.socket, out: TextIO) -> None:
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    data_dir = server.config.data_dir.resolve()
    lines = [
        f"LogHarbor {__version__} listening on http://{shown_host}:{port}",
        f"  data directory: {data_dir}",
    ]
    if server.config.console:
        lines.append(f"  web console: http://{shown_host}:{port}/console/")
    if not server.config.auth:
        lines.append(
            "  authentication: OFF (--no-auth); anyone who can reach this port can read and write"
        )
    else:
        root = server.keys.root()
        lines.append(
            f"  authentication: LH1-HMAC-SHA256 signatures, access key id {root.access_key_id}"
        )
        if server.keys.created_root is not None:
            lines.append(f"  access key secret: {root.access_key_secret}")
            lines.append(f"  (created now; stored in {data_dir / KEYS_FILE}, mode 0600)")
        else:
            lines.append(f"  access key secret: in {data_dir / KEYS_FILE}")
    if server.inlong is not None:
        lines.append(
            f"  InLong DataProxy listening on tcp://{shown_host}:{server.inlong.port}"
            f" (discovery: http://{shown_host}:{port}/inlong/manager/openapi/dataproxy/getIpList)"
        )
    print("\n".join(lines), file=out, flush=True)


def serve(config: ServerConfig, *, out: TextIO = sys.stdout) -> None:
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sock = bind(config.host, config.port)
    server = build_server(config)
    uv = uvicorn.Server(
        uvicorn.Config(
            server.app,
            log_level=config.log_level,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
            server_header=False,
        )
    )
    if server.inlong is not None:
        server.inlong.bind()
    banner(server, sock, out)
    uv.run(sockets=[sock])
