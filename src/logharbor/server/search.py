"""Index configuration, search, SQL analysis, histograms and context in the native API
(docs/search.md)."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import json
import math
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..engine import Engine
from ..engine.index.query import Cancellation, LogRow
from ..engine.types import NANOS_PER_SECOND
from ..protocol.codec import decode_cursor, encode_cursor
from ..protocol.errors import ErrorCode, ServiceError
from .http import Call, json_field

T = TypeVar("T")
_DISCONNECT_POLL = 0.1  # seconds between looks at whether a query's client is still there


async def until_disconnected(request: Request, work: Callable[[Cancellation], T]) -> T:
    """Run a query in a thread, and cancel it if its client goes away meanwhile (a
    closed browser tab, a client's timeout): it then frees its slot at once, not at
    the query timeout."""
    cancel = Cancellation()
    task = asyncio.ensure_future(run_in_threadpool(work, cancel))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=_DISCONNECT_POLL)
            if done:
                return task.result()
            if await request.is_disconnected():
                cancel.cancel()
                return await task
    except BaseException:  # the handler itself cancelled (a shutdown): the query too
        cancel.cancel()
        raise


def log_json(row: LogRow) -> dict[str, Any]:
    return {
        "timeNs": row.time_ns,
        "shardId": row.shard,
        "cursor": encode_cursor(row.position),
        "index": row.index,
        "topic": row.topic,
        "source": row.source,
        "tags": dict(row.tags),
        "contents": [list(pair) for pair in row.contents],
    }


def json_value(value: Any) -> Any:
    """SQL values as JSON: numbers and strings as they are (NaN and infinities, which
    JSON lacks, as the strings "NaN", "Infinity", "-Infinity"), times as ISO 8601."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return str(value)


_MAX_SECONDS = 9_000_000_000  # nanoseconds must fit a signed 64-bit integer


def time_range(body: dict[str, Any]) -> tuple[int, int]:
    """``from``/``to`` in seconds (numbers), or ``fromNs``/``toNs``; ``to`` is exclusive."""
    bounds = []
    for name in ("from", "to"):
        ns = json_field(body, f"{name}Ns", int)
        if ns is None:
            seconds = body.get(name)
            if not isinstance(seconds, int | float) or isinstance(seconds, bool):
                raise ServiceError(
                    ErrorCode.INVALID_PARAMETER, f"{name} (Unix seconds) or {name}Ns is required"
                )
            if not 0 <= seconds < _MAX_SECONDS:
                raise ServiceError(
                    ErrorCode.INVALID_PARAMETER,
                    f"{name} must be a Unix time from 0 to {_MAX_SECONDS}",
                )
            ns = int(seconds * NANOS_PER_SECOND)
        if not 0 <= ns < _MAX_SECONDS * NANOS_PER_SECOND:
            raise ServiceError(ErrorCode.INVALID_PARAMETER, f"{name}Ns is out of range")
        bounds.append(ns)
    return bounds[0], bounds[1]


class SearchAPI:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def get_index(self, call: Call) -> Response:
        config = self.engine.get_index(call.path("project"), call.path("logstore"))
        lag = self.engine.index_lag(call.path("project"), call.path("logstore"))
        return JSONResponse(
            {
                "config": config.document,
                "lag": [{"shardId": s, "behindLogGroups": n} for s, n in sorted(lag.items())],
            }
        )

    async def create_index(self, call: Call) -> Response:
        config = await run_in_threadpool(
            self.engine.create_index, call.path("project"), call.path("logstore"), call.json()
        )
        return JSONResponse({"config": config.document})

    async def update_index(self, call: Call) -> Response:
        config = self.engine.update_index(call.path("project"), call.path("logstore"), call.json())
        return JSONResponse({"config": config.document})

    async def delete_index(self, call: Call) -> Response:
        await run_in_threadpool(
            self.engine.delete_index, call.path("project"), call.path("logstore")
        )
        return JSONResponse({})

    async def query(self, call: Call) -> Response:
        body = call.json()
        from_ns, to_ns = time_range(body)
        result = await until_disconnected(
            call.request,
            lambda cancel: self.engine.query(
                call.path("project"),
                call.path("logstore"),
                json_field(body, "query", str, "") or "",
                from_ns,
                to_ns,
                line=json_field(body, "line", int, 100),
                offset=json_field(body, "offset", int, 0),
                reverse=bool(json_field(body, "reverse", bool, False)),
                topic=json_field(body, "topic", str),
                cancel=cancel,
            ),
        )
        meta: dict[str, Any] = {
            "complete": result.complete,
            "hasSql": result.has_sql,
            "elapsedMs": result.elapsed_ms,
            "whereQuery": result.where_query,
            "aggQuery": result.agg_query,
        }
        content: dict[str, Any] = {"meta": meta}
        if result.has_sql:
            meta["count"] = len(result.rows)
            meta["keys"] = result.keys
            content["rows"] = [[json_value(v) for v in row] for row in result.rows]
        else:
            meta["count"] = len(result.logs)
            meta["matched"] = result.matched
            content["logs"] = [log_json(r) for r in result.logs]
        return Response(
            json.dumps(content, ensure_ascii=False, allow_nan=False, default=str),
            media_type="application/json",
        )

    async def histogram(self, call: Call) -> Response:
        body = call.json()
        from_ns, to_ns = time_range(body)
        buckets, complete = await until_disconnected(
            call.request,
            lambda cancel: self.engine.histogram(
                call.path("project"),
                call.path("logstore"),
                json_field(body, "query", str, "") or "",
                from_ns,
                to_ns,
                interval=json_field(body, "interval", int),
                topic=json_field(body, "topic", str),
                cancel=cancel,
            ),
        )
        return JSONResponse(
            {
                "complete": complete,
                "total": sum(b.count for b in buckets),
                "buckets": [{"from": b.start, "to": b.end, "count": b.count} for b in buckets],
            }
        )

    async def context(self, call: Call) -> Response:
        cursor = call.query.get("cursor")
        if not cursor:
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "cursor is required")
        before, after = await run_in_threadpool(
            lambda: self.engine.context(
                call.path("project"),
                call.path("logstore"),
                call.int_param("shard", -1, 0, 1 << 30),
                decode_cursor(cursor),
                call.int_param("index", 0, 0, 1 << 30),
                back=call.int_param("back", 10, 0, 1000),
                forward=call.int_param("forward", 10, 0, 1000),
            )
        )
        return JSONResponse(
            {"before": [log_json(r) for r in before], "after": [log_json(r) for r in after]}
        )
