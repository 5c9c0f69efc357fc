"""An ASGI app for ``uvicorn --workers 2`` and gunicorn's ``UvicornWorker``:
``GET /log/<i>`` logs one record, ``GET /ping`` none; both answer with the worker's
pid. Logging is configured on import (in each spawned uvicorn worker; in gunicorn's
master under ``--preload``).

A uvicorn server stopped by SIGTERM re-raises it once it has shut down, with the
handler it found (the default one, in both servers), so the worker dies of the
signal without running ``atexit``: it delivers what it holds at lifespan shutdown,
as docs/producer.md says."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prefork_apps.harbor_logging import APP_LOGGER, configure

Message = MutableMapping[str, Any]

handler = configure()
log = logging.getLogger(APP_LOGGER)
log.info("imported", extra={"event": "import"})

SERVICE_TIME = 0.05


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    path = str(scope["path"])
    await asyncio.sleep(SERVICE_TIME)
    if path.startswith("/log/"):
        log.info("request", extra={"event": "request", "request": path.removeprefix("/log/")})
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def lifespan(
    receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await asyncio.to_thread(handler.flush)
            await send({"type": "lifespan.shutdown.complete"})
            return
