"""Routing and plumbing of the TLS facade: the API name is the URL path
(``/PutLogs``; matched case-insensitively, any method), every answer carries
``X-Tls-Requestid`` and ``Content-Type``, and nothing but a TLS-shaped error
ever comes out of a failure."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ....engine import Engine
from ....engine.resource_ids import ResourceIds
from ....protocol.errors import ErrorCode, ServiceError
from ...http import ByteBudget, new_request_id, read_body
from .call import TlsCall
from .errors import REQUEST_ID_HEADER, tls_error_response
from .groups import GroupAPI
from .resources import ResourceAPI
from .signing import V4Verifier
from .stream import StreamAPI

log = logging.getLogger("logharbor.tls")

TlsHandler = Callable[[TlsCall], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class _MetricsLabel:
    path: str = "/{TlsApi}"


class TLSDispatch:
    """Middleware: requests whose path is a TLS API name (``/PutLogs``, matched
    case-insensitively) go to the facade; everything else passes through, so the
    facade shares the path space with the other APIs without catching their paths."""

    def __init__(self, app: ASGIApp, *, tls: TLSFacade) -> None:
        self.app = app
        self.tls = tls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = None
        if scope["type"] == "http":
            handler = self.tls.handler(str(scope["path"]))
        if handler is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = _MetricsLabel()
        response = await self.tls.serve(Request(scope, receive), handler)
        await response(scope, receive, send)


class TLSFacade:
    def __init__(
        self,
        engine: Engine,
        *,
        verifier: V4Verifier | None,
        observe: Callable[[Request, int], None],
        budget: ByteBudget,
    ) -> None:
        self.engine = engine
        self.ids = ResourceIds(engine)
        self.verifier = verifier
        self.observe = observe
        self.budget = budget
        resources, stream, groups = ResourceAPI(engine), StreamAPI(engine), GroupAPI(engine)
        self.apis: dict[str, TlsHandler] = {
            "CreateProject": resources.create_project,
            "DeleteProject": resources.delete_project,
            "DescribeProject": resources.describe_project,
            "DescribeProjects": resources.describe_projects,
            "ModifyProject": resources.modify_project,
            "CreateTopic": resources.create_topic,
            "DeleteTopic": resources.delete_topic,
            "DescribeTopic": resources.describe_topic,
            "DescribeTopics": resources.describe_topics,
            "ModifyTopic": resources.modify_topic,
            "DescribeShards": resources.describe_shards,
            "ManualShardSplit": resources.manual_shard_split,
            "CreateIndex": resources.create_index,
            "ModifyIndex": resources.modify_index,
            "DeleteIndex": resources.delete_index,
            "DescribeIndex": resources.describe_index,
            "SearchLogs": resources.search_logs,
            "DescribeLogContext": resources.describe_log_context,
            "PutLogs": stream.put_logs,
            "PutLogsV2": stream.put_logs,
            "DescribeCursor": stream.describe_cursor,
            "DescribeCursorTime": stream.describe_cursor_time,
            "ConsumeLogs": stream.consume_logs,
            "ConsumeOriginalLogs": stream.consume_original_logs,
            "CreateConsumerGroup": groups.create_group,
            "DescribeConsumerGroups": groups.describe_groups,
            "ModifyConsumerGroup": groups.modify_group,
            "DeleteConsumerGroup": groups.delete_group,
            "ConsumerHeartbeat": groups.heartbeat,
            "DescribeCheckPoint": groups.describe_checkpoint,
            "ModifyCheckPoint": groups.modify_checkpoint,
            "ResetCheckPoint": groups.reset_checkpoint,
        }
        self._by_name = {name.lower(): handler for name, handler in self.apis.items()}

    def handler(self, path: str) -> TlsHandler | None:
        """The handler of a TLS API path, or None when the path is not one."""
        return self._by_name.get(path.strip("/").lower())

    async def serve(self, request: Request, handler: TlsHandler) -> Response:
        request_id = new_request_id()
        body = b""
        try:
            body = await read_body(request, self.engine.limits.max_body_bytes, self.budget)
            if self.verifier is not None:
                self.verifier.verify(
                    method=request.method,
                    path=request.url.path,
                    params=request.query_params.multi_items(),
                    headers={k.lower(): v for k, v in request.headers.items()},
                    body=body,
                )
            response = await handler(TlsCall(request, body, request_id, self.ids))
        except ServiceError as error:
            response = tls_error_response(error, request_id)
        except Exception:
            log.exception("TLS request %s %s failed", request.method, request.url.path)
            internal = ServiceError(ErrorCode.INTERNAL, "internal error; see the server log")
            response = tls_error_response(internal, request_id)
        finally:
            self.budget.give_back(len(body))
        response.headers[REQUEST_ID_HEADER] = request_id
        self.observe(request, response.status_code)
        return response
