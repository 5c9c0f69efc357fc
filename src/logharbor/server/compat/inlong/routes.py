"""The InLong HTTP side: Manager discovery (``getIpList``) and the DataProxy HTTP
source (``/dataproxy/message``), as Starlette routes of the main app.

Neither checks LogHarbor signatures: InLong SDKs cannot sign.  Discovery accepts
any query, body and auth header (Basic, or the Go SDK's custom ``key: token``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ....engine.mapping import InLongBatch
from ....protocol.codec import parse_decimal
from ....protocol.errors import ServiceError
from ...http import ByteBudget, read_body
from .codes import DataProxyErrCode, Rejected, rejection
from .service import InLongService

log = logging.getLogger("logharbor.inlong")

MANAGER_PREFIX = "/inlong/manager/openapi/dataproxy"
CLUSTER_ID = 1
DEFAULT_LOAD = 20
_JSON = "application/json;charset=utf-8"
_CALLBACK = re.compile(r"[A-Za-z_$][\w$.]{0,63}")


class InLongRoutes:
    def __init__(
        self,
        service: InLongService,
        *,
        tcp_port: Callable[[], int],
        advertise_host: str = "",
        max_body_bytes: int,
        budget: ByteBudget,
    ) -> None:
        self.service = service
        self.tcp_port = tcp_port
        self.advertise_host = advertise_host
        self.max_body_bytes = max_body_bytes
        self.budget = budget

    def routes(self) -> list[Route]:
        any_method = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
        return [
            Route(MANAGER_PREFIX + "/getIpList/{group}", self.get_ip_list, methods=["GET", "POST"]),
            Route(
                MANAGER_PREFIX + "/getIpListByClusterName/{cluster}",
                self.get_ip_list_by_cluster,
                methods=["GET", "POST"],
            ),
            Route("/dataproxy/message", self.message, methods=any_method),
            Route("/dataproxy/heartbeat", self.heartbeat, methods=any_method),
        ]

    # ----------------------------------------------------------- discovery

    def _nodes(self, request: Request) -> dict[str, object]:
        host = self.advertise_host
        if not host:  # the address this client reached us on
            server = request.scope.get("server")
            host = str(server[0]) if server else "127.0.0.1"
        return {
            "clusterId": CLUSTER_ID,
            "reportSourceType": None,
            "isIntranet": 1,
            "isSwitch": 0,
            "load": DEFAULT_LOAD,
            "maxPacketLength": None,
            "nodeList": [
                {
                    "id": 1,
                    "ip": host,
                    "port": self.tcp_port(),
                    "protocolType": "TCP",
                    "nodeLoad": 0,
                }
            ],
        }

    async def get_ip_list(self, request: Request) -> Response:
        group = str(request.path_params["group"])
        if not self.service.knows_group(group):
            return JSONResponse(
                {
                    "success": False,
                    "errMsg": f"inlong group {group!r} does not exist in LogHarbor (no project "
                    "of that name, and inlong_auto_create is off)",
                    "data": None,
                }
            )
        return JSONResponse({"success": True, "errMsg": None, "data": self._nodes(request)})

    async def get_ip_list_by_cluster(self, request: Request) -> Response:
        return JSONResponse({"success": True, "errMsg": None, "data": self._nodes(request)})

    # --------------------------------------------------------- HTTP source

    async def heartbeat(self, request: Request) -> Response:
        return self._answer(request, DataProxyErrCode.OK, "Ok")

    async def message(self, request: Request) -> Response:
        try:
            if request.method not in ("GET", "POST"):
                raise Rejected(
                    DataProxyErrCode.HTTP_UNSUPPORTED_METHOD, f"{request.method} not supported"
                )
            params = dict(request.query_params.items())
            params.update(await self._form(request))
            await self._write(params, request)
        except Rejected as exc:
            return self._answer(request, exc.code, exc.message)
        except ServiceError as exc:
            refused = rejection(exc)
            return self._answer(request, refused.code, refused.message)
        return self._answer(request, DataProxyErrCode.OK, "Ok")

    async def _form(self, request: Request) -> dict[str, str]:
        if request.method != "POST":
            return {}
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/x-www-form-urlencoded":
            if request.headers.get("content-length", "0") == "0":
                return {}
            raise Rejected(
                DataProxyErrCode.HTTP_UNSUPPORTED_CONTENT_TYPE,
                f"unsupported content type {media!r}; use application/x-www-form-urlencoded",
            )
        body = await read_body(request, self.max_body_bytes, self.budget)
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            raise Rejected(
                DataProxyErrCode.HTTP_DECODE_REQ_FAILURE, "the form is not UTF-8"
            ) from None
        finally:
            self.budget.give_back(len(body))

    async def _write(self, params: dict[str, str], request: Request) -> None:
        group_id, stream_id = params.get("groupId", ""), params.get("streamId", "")
        if not group_id:
            raise Rejected(DataProxyErrCode.MISS_REQUIRED_GROUPID_ARGUMENT, "groupId is missing")
        if not stream_id:
            raise Rejected(DataProxyErrCode.MISS_REQUIRED_STREAMID_ARGUMENT, "streamId is missing")
        if "body" not in params:
            raise Rejected(DataProxyErrCode.MISS_REQUIRED_BODY_ARGUMENT, "body is missing")
        body = params["body"]
        if not body.strip():
            raise Rejected(DataProxyErrCode.EMPTY_MSG, "body is blank")
        dt = params.get("dt", "")
        time_ms = parse_decimal(dt)
        if dt and time_ms is None:
            raise Rejected(DataProxyErrCode.MISS_REQUIRED_DT_ARGUMENT, "dt is not a number")
        count = parse_decimal(params.get("cnt", ""), max_digits=9) or 1
        # The Java SDK joins a batch's events with '\n' (or rcdDlmtr) and says how
        # many in cnt; a single event may hold newlines of its own.
        delimiter = params.get("rcdDlmtr") or "\n"
        limit = self.service.engine.limits.max_group_logs
        if count > 1 and body.count(delimiter) >= limit:  # counted before anything is built
            raise Rejected(
                DataProxyErrCode.BODY_EXCEED_MAX_LEN, f"more than {limit} records in one request"
            )
        records = body.split(delimiter) if count > 1 else [body]
        attributes = [
            (key, value) for key, value in params.items() if key not in ("body", "callback")
        ]
        client = request.client
        batch = InLongBatch(
            group_id,
            stream_id,
            [record.encode() for record in records],
            attributes,
            time_ms,
            client.host if client else "",
        )
        await (await self.service.submit(batch))

    def _answer(self, request: Request, code: DataProxyErrCode, message: str) -> Response:
        document = json.dumps({"code": str(int(code)), "msg": message}, ensure_ascii=False)
        callback = request.query_params.get("callback")
        if callback and _CALLBACK.fullmatch(callback):
            document = f"{callback}({document})"
        return Response(document, media_type=_JSON)
