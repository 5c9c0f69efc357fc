"""What every facade needs from HTTP: bounded body reading, request ids, error
rendering and an endpoint wrapper that never lets an exception become anything
but a well-formed error answer."""

from __future__ import annotations

import json
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ..protocol.codec import parse_decimal
from ..protocol.errors import ErrorCode, ServiceError

log = logging.getLogger("logharbor.server")

REQUEST_ID_HEADER = "x-lh-request-id"


def new_request_id() -> str:
    return secrets.token_hex(12).upper()


def error_response(error: ServiceError, request_id: str) -> JSONResponse:
    headers = {REQUEST_ID_HEADER: request_id}
    if error.code.retryable:
        headers["retry-after"] = "1"
    return JSONResponse(
        {"errorCode": error.code.value, "errorMessage": error.message, "requestId": request_id},
        status_code=error.http_status,
        headers=headers,
    )


class ByteBudget:
    """Bounds the bytes of request bodies held in memory at once.

    A request whose body would take the total over the limit is refused with 503
    ``ServerBusy`` (and ``Retry-After``), which clients retry; nothing waits.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> None:
        if self.used + size > self.limit:
            raise ServiceError(
                ErrorCode.SERVER_BUSY,
                "too many request bytes in flight; retry shortly",
            )
        self.used += size

    def give_back(self, size: int) -> None:
        self.used -= size


async def read_body(request: Request, limit: int, budget: ByteBudget) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit``.

    The bytes are taken from ``budget``; the caller gives ``len(body)`` back when
    done with the request (on failure here, they are given back already).
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        length = parse_decimal(declared)
        if length is None:
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "invalid Content-Length header")
        if length > limit:
            raise _too_large(length, limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            if size + len(chunk) > limit:
                raise _too_large(size + len(chunk), limit)
            budget.take(len(chunk))
            size += len(chunk)
            chunks.append(chunk)
    except ClientDisconnect:
        budget.give_back(size)
        raise ServiceError(ErrorCode.INVALID_BODY, "the client disconnected mid-body") from None
    except BaseException:
        budget.give_back(size)
        raise
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> ServiceError:
    return ServiceError(
        ErrorCode.BODY_TOO_LARGE, f"request body of {size}+ bytes exceeds the limit of {limit}"
    )


@dataclass(slots=True)
class Call:
    """One request as a handler sees it: parsed, read and authenticated."""

    request: Request
    body: bytes
    request_id: str

    @property
    def query(self) -> QueryParams:
        return self.request.query_params

    def path(self, name: str) -> str:
        return str(self.request.path_params[name])

    def json(self) -> dict[str, Any]:
        if not self.body:
            return {}
        document = load_json(self.body)
        if not isinstance(document, dict):
            raise ServiceError(ErrorCode.INVALID_BODY, "body must be a JSON object")
        return document

    def int_param(self, name: str, default: int, low: int, high: int) -> int:
        return int_param(self.query.get(name), name, default, low, high)

    def shard_id(self) -> int:
        return shard_id(self.path("shard"))


def invalid_parameter(message: str) -> ServiceError:
    """A 400 for a parameter the call cannot take."""
    return ServiceError(ErrorCode.INVALID_PARAMETER, message)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")  # Python's json reads NaN, Infinity


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def load_json(body: bytes) -> Any:
    """A request body as JSON, or INVALID_BODY (nesting too deep for the parser
    included: that is bad input, not a server error)."""
    try:
        return json.loads(body, parse_constant=_not_json, parse_float=_finite)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ServiceError(ErrorCode.INVALID_BODY, f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ServiceError(ErrorCode.INVALID_BODY, "body is not valid JSON: too deep") from None


def int_param(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    """A query parameter as an integer from ``low`` to ``high`` (``default`` if absent)."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER, f"{name} must be an integer from {low} to {high}"
        )
    return value


def shard_id(raw: str) -> int:
    """A shard id from a path; anything else is a shard that does not exist."""
    value = parse_decimal(raw, 9)
    if value is None:
        raise ServiceError(ErrorCode.SHARD_NOT_EXIST, f"shard {raw!r} does not exist")
    return value


Handler = Callable[[Call], Awaitable[Response]]
Prepare = Callable[[Request, str], Awaitable[bytes]]
Finish = Callable[[bytes], None]


def json_field(document: Mapping[str, Any], name: str, kind: type, default: Any = None) -> Any:
    value = document.get(name)
    if value is None:  # absent or null
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ServiceError(ErrorCode.INVALID_PARAMETER, f"{name} must be of type {kind.__name__}")
    return value


def endpoint(
    prepare: Prepare,
    finish: Finish,
    methods: Mapping[str, Handler],
    observe: Callable[[Request, int], None],
) -> Callable[[Request], Awaitable[Response]]:
    """An ASGI endpoint dispatching by method; errors become JSON error answers.

    ``prepare`` reads (and authenticates) the body; ``finish`` is called with it
    once the handler is done, whatever happened."""

    async def serve(request: Request) -> Response:
        request_id = new_request_id()
        handler = methods.get(request.method)
        body = b""
        try:
            if handler is None:
                raise ServiceError(
                    ErrorCode.METHOD_NOT_ALLOWED,
                    f"{request.method} is not allowed here; use {', '.join(sorted(methods))}",
                )
            body = await prepare(request, request_id)
            response = await handler(Call(request, body, request_id))
        except ServiceError as error:
            response = error_response(error, request_id)
        except Exception:
            log.exception("request %s %s failed", request.method, request.url.path)
            response = error_response(
                ServiceError(ErrorCode.INTERNAL, "internal error; see the server log"),
                request_id,
            )
        finally:
            finish(body)
        response.headers[REQUEST_ID_HEADER] = request_id
        observe(request, response.status_code)
        return response

    return serve
