"""The web console: static files under ``/console/`` (``logharbor/console/``).

The console is a page of plain JavaScript modules with no build step; it signs
its requests to the native API itself (``console/api.js``).  Its files are served
with headers that keep the page to this origin: scripts, styles and requests
only from here, no framing, no referrer.
"""

from __future__ import annotations

import os
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

PATH = "/console"
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",  # revalidate (ETag): a new version shows at once
}


class _ConsoleFiles(StaticFiles):
    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(SECURITY_HEADERS)
        return response


def routes() -> list[BaseRoute]:
    async def to_console(request: Request) -> Response:
        return RedirectResponse(PATH + "/", status_code=308)

    files: Any = _ConsoleFiles(packages=[("logharbor", "console")], html=True)
    return [Route(PATH, to_console, methods=["GET", "HEAD"]), Mount(PATH, app=files)]
