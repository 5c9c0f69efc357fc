"""The Aliyun SLS facade (docs/sls.md, ../shared/specs/sls.md): the official
``aliyun-log-python-sdk`` works against LogHarbor with only the endpoint and
the keys changed.

SLS requests carry the project in ``Host`` (``<project>.<base host>``) and use
paths such as ``/logstores/...`` with no prefix, so :class:`SlsDispatch` picks
them out before the native routes by their ``x-log-apiversion`` header or their
SLS ``Authorization``; absolute-form request lines (an SDK using LogHarbor as
its HTTP proxy) are served the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ....engine import Engine
from ....engine.documents import DocumentStore
from ....protocol.errors import ErrorCode, ServiceError
from ...http import ByteBudget, new_request_id, read_body
from .routes import Handler, SlsCall, SlsRoutes, compile_table
from .signature import V1_PREFIX, V4_ALGORITHM, SignatureVerifier
from .wire import REQUEST_ID_HEADER, error_response, project_of

__all__ = ["SignatureVerifier", "SlsDispatch", "SlsFacade", "is_sls_request"]

log = logging.getLogger("logharbor.server.sls")


@dataclass(frozen=True, slots=True)
class _RouteName:
    """What the metrics read from ``scope["route"]``."""

    path: str


def is_sls_request(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"x-log-apiversion":
            return True
        if name == b"authorization" and (
            value.startswith(V1_PREFIX.encode()) or value.startswith(V4_ALGORITHM.encode())
        ):
            return True
    return False


class SlsFacade:
    """An ASGI app serving SLS requests."""

    def __init__(
        self,
        engine: Engine,
        documents: DocumentStore,
        *,
        verifier: SignatureVerifier | None,
        base_hosts: Sequence[str],
        budget: ByteBudget,
        observe: Callable[[Request, int], None],
    ) -> None:
        self.engine = engine
        self.documents = documents
        self.verifier = verifier
        self.base_hosts = tuple(h.strip().lower() for h in base_hosts if h.strip())
        self.budget = budget
        self.observe = observe
        self.routes = compile_table(SlsRoutes(engine, documents).table())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if not path.startswith("/"):  # absolute-form target left unparsed by the server
            parts = urlsplit(path)
            scope = {**scope, "path": parts.path or "/"}
            if parts.query and not scope.get("query_string"):
                scope["query_string"] = parts.query.encode()
        request = Request(scope, receive)
        request_id = new_request_id()
        response = await self._serve(request, request_id)
        response.headers[REQUEST_ID_HEADER] = request_id
        self.observe(request, response.status_code)
        await response(scope, receive, send)

    async def _serve(self, request: Request, request_id: str) -> Response:
        body = b""
        try:
            handler, pattern, path_params = self._match(request)
            request.scope["route"] = _RouteName("/sls" + pattern)
            body = await read_body(request, self.engine.limits.max_body_bytes, self.budget)
            params = parse_qsl(
                request.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
            )
            headers = {k.lower(): v for k, v in request.headers.items()}
            if self.verifier is not None:
                self.verifier.verify(request.method, request.url.path, params, headers, body)
            project = project_of(headers.get("host", ""), self.base_hosts)
            call = SlsCall(request, project, path_params, dict(params), body)
            return await handler(call)
        except ServiceError as error:
            return error_response(error, request_id)
        except Exception:
            log.exception("SLS request %s %s failed", request.method, request.url.path)
            internal = ServiceError(ErrorCode.INTERNAL, "internal error; see the server log")
            return error_response(internal, request_id)
        finally:
            self.budget.give_back(len(body))

    def _match(self, request: Request) -> tuple[Handler, str, dict[str, str]]:
        path = request.url.path
        for pattern, regex, methods in self.routes:
            match = regex.match(path)
            if match is None:
                continue
            handler = methods.get(request.method)
            if handler is None:
                raise ServiceError(
                    ErrorCode.METHOD_NOT_ALLOWED, f"{request.method} is not allowed on {path}"
                )
            return handler, pattern, match.groupdict()
        raise ServiceError(ErrorCode.NOT_FOUND, f"no SLS resource {path}")


class SlsDispatch:
    """Middleware: SLS requests go to the facade, everything else passes through."""

    def __init__(self, app: ASGIApp, *, sls: SlsFacade) -> None:
        self.app = app
        self.sls = sls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_sls_request(scope):
            await self.sls(scope, receive, send)
        else:
            await self.app(scope, receive, send)
