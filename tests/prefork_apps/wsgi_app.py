"""A WSGI app for gunicorn: ``GET /log/<i>`` logs one record, ``GET /ping`` none;
both answer with the worker's pid. Logging is configured on import, so in the
master under ``--preload`` (before the fork) and in each worker without it."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable

from prefork_apps.harbor_logging import APP_LOGGER, configure

configure()
log = logging.getLogger(APP_LOGGER)
# Starts the producer's threads before gunicorn forks, when preloaded.
log.info("imported", extra={"event": "import"})

# Long enough that concurrent requests spread over both sync workers.
SERVICE_TIME = 0.05


def app(
    environ: dict[str, object], start_response: Callable[[str, list[tuple[str, str]]], object]
) -> Iterable[bytes]:
    path = str(environ["PATH_INFO"])
    time.sleep(SERVICE_TIME)
    if path.startswith("/log/"):
        log.info("request", extra={"event": "request", "request": path.removeprefix("/log/")})
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
