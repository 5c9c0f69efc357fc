"""SLS operations (spec §7): each handler parses, calls the engine (or the
document store) and renders the SLS shape."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ....engine import Engine
from ....engine.documents import DocumentKind, DocumentStore
from ....engine.index.query import Cancellation, LogRow, QueryResult
from ....engine.types import NANOS_PER_SECOND, ShardStatus
from ....protocol.codec import CodecError, decode_cursor, encode_cursor, parse_decimal
from ....protocol.errors import ErrorCode, ServiceError
from ...http import int_param, load_json, shard_id
from ...search import until_disconnected
from ..context import surroundings
from .packs import MAX_CONTEXT_LINES, pack_fields, parse_pack, split_with_pack_meta
from .wire import (
    PROTOBUF_MEDIA_TYPE,
    empty_response,
    json_response,
    log_group_list,
    logstore_json,
    project_json,
    request_compression,
    response_compression,
    shard_json,
    sls_response,
    sls_value,
)

MAX_PAGE = 500
TRUE = ("true", "1", "yes")


PULL_DECODED_BYTES = 16 << 20  # decompressed log groups in one PullLogs answer, at most


@dataclass(slots=True)
class SlsCall:
    """One parsed, authenticated request."""

    request: Request
    project: str | None
    path: dict[str, str]
    params: dict[str, str]
    body: bytes

    @property
    def header(self) -> Any:
        return self.request.headers

    def need_project(self) -> str:
        if self.project is None:
            raise ServiceError(
                ErrorCode.PROJECT_NOT_EXIST, "this call needs a project in the Host header"
            )
        return self.project

    def json(self) -> Any:
        if not self.body:
            raise ServiceError(ErrorCode.INVALID_BODY, "the request needs a JSON body")
        return load_json(self.body)

    def object(self) -> dict[str, Any]:
        document = self.json()
        if not isinstance(document, dict):
            raise ServiceError(ErrorCode.INVALID_BODY, "the body must be a JSON object")
        return document

    def int_param(self, name: str, default: int, low: int, high: int) -> int:
        return int_param(self.params.get(name), name, default, low, high)

    def shard(self) -> int:
        return shard_id(self.path["shard"])

    def cursor(self, name: str) -> int:
        value = self.params.get(name, "")
        if not value:
            raise ServiceError(ErrorCode.INVALID_CURSOR, f"{name} is required")
        return decode_cursor(value)


Handler = Callable[[SlsCall], Awaitable[Response]]


def _field(document: dict[str, Any], name: str, kind: type, default: Any = None) -> Any:
    value = document.get(name, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ServiceError(ErrorCode.INVALID_PARAMETER, f"{name} must be of type {kind.__name__}")
    return value


def _page(call: SlsCall) -> tuple[int, int]:
    return call.int_param("offset", 0, 0, 1 << 31), call.int_param("size", 100, 0, MAX_PAGE)


def _string_rows(result: QueryResult, *, with_packs: bool) -> list[dict[str, str]]:
    if result.has_sql:
        return [
            {key: sls_value(value) for key, value in zip(result.keys, row, strict=False)}
            for row in result.rows
        ]
    if with_packs:
        return [_log_row(log) | pack_fields(log) for log in result.logs]
    return [_log_row(log) for log in result.logs]


def _log_row(log: LogRow) -> dict[str, str]:
    row = {
        "__time__": str(log.time_ns // NANOS_PER_SECOND),
        "__topic__": log.topic,
        "__source__": log.source,
    }
    row.update({f"__tag__:{k}": v for k, v in log.tags})
    row.update(dict(log.contents))
    return row


def _context_row(log: LogRow, number: int) -> dict[str, str]:
    return _log_row(log) | pack_fields(log) | {"__index_number__": str(number)}


def _seconds(value: Any, name: str) -> int:
    if isinstance(value, str):
        magnitude = parse_decimal(value.removeprefix("-"))
        if magnitude is not None:
            value = -magnitude if value.startswith("-") else magnitude
    if not isinstance(value, int) or isinstance(value, bool):
        raise ServiceError(ErrorCode.INVALID_PARAMETER, f"{name} must be a Unix time in seconds")
    return value


def _time_range(from_s: Any, to_s: Any, from_ns: Any = 0, to_ns: Any = 0) -> tuple[int, int]:
    """[from, to) in nanoseconds; ``fromNs``/``toNs`` are the sub-second parts."""
    bounds = []
    for seconds, part, name in ((from_s, from_ns, "from"), (to_s, to_ns, "to")):
        extra = _seconds(part or 0, name + "Ns")
        bounds.append(
            _seconds(seconds, name) * NANOS_PER_SECOND
            + (extra if 0 <= extra < NANOS_PER_SECOND else 0)
        )
    return bounds[0], bounds[1]


class SlsRoutes:
    def __init__(self, engine: Engine, documents: DocumentStore) -> None:
        self.engine = engine
        self.documents = documents

    def table(self) -> list[tuple[str, dict[str, Handler]]]:
        ls = "/logstores/{logstore}"
        cg = ls + "/consumergroups/{group}"
        return [
            (
                "/",
                {
                    "GET": self.get_root,
                    "POST": self.create_project,
                    "PUT": self.update_project,
                    "DELETE": self.delete_project,
                },
            ),
            ("/logstores", {"GET": self.list_logstores, "POST": self.create_logstore}),
            (
                ls,
                {
                    "GET": self.get_logstore_resource,
                    "PUT": self.update_logstore,
                    "DELETE": self.delete_logstore,
                },
            ),
            (ls + "/logs", {"POST": self.get_logs_v2}),
            (ls + "/shards", {"GET": self.list_shards}),
            (ls + "/shards/lb", {"POST": self.put_logs}),
            (ls + "/shards/route", {"POST": self.put_logs}),
            (
                ls + "/shards/{shard}",
                {
                    "GET": self.get_shard_resource,
                    "POST": self.shard_action,
                    "DELETE": self.delete_shard,
                },
            ),
            (
                ls + "/index",
                {
                    "GET": self.get_index,
                    "POST": self.create_index,
                    "PUT": self.update_index,
                    "DELETE": self.delete_index,
                },
            ),
            (ls + "/consumergroups", {"GET": self.list_groups, "POST": self.create_group}),
            (
                cg,
                {
                    "GET": self.get_checkpoints,
                    "POST": self.group_action,
                    "PUT": self.update_group,
                    "DELETE": self.delete_group,
                },
            ),
            *self._documents("/machinegroups", DocumentKind.MACHINE_GROUP),
            ("/machinegroups/{name}/machines", {"GET": self.list_machines}),
            ("/machinegroups/{name}/configs", {"GET": self.configs_of_group}),
            (
                "/machinegroups/{name}/configs/{config}",
                {"PUT": self.apply_config, "DELETE": self.remove_config},
            ),
            *self._documents("/configs", DocumentKind.LOGTAIL_CONFIG),
            ("/configs/{name}/machinegroups", {"GET": self.groups_of_config}),
            *self._documents("/pipelineconfigs", DocumentKind.PIPELINE_CONFIG),
            *self._documents(ls + "/shipper", DocumentKind.SHIPPER),
            (ls + "/shipper/{name}/tasks", {"GET": self.shipper_tasks, "PUT": self.retry_tasks}),
        ]

    # ------------------------------------------------------------ projects

    async def get_root(self, call: SlsCall) -> Response:
        if call.project is not None:
            return json_response(project_json(self.engine.get_project(call.project)))
        offset, size = _page(call)
        name, description = call.params.get("projectName", ""), call.params.get("description", "")
        if not name and not description:
            projects, total = self.engine.list_projects(offset, size)
        else:
            everything, start = [], 0
            while True:
                page, total = self.engine.list_projects(start, MAX_PAGE)
                everything += [p for p in page if name in p.name and description in p.description]
                start += len(page)
                if not page or start >= total:
                    break
            projects, total = everything[offset : offset + size], len(everything)
        return json_response(
            {
                "count": len(projects),
                "total": total,
                "projects": [project_json(p) for p in projects],
            }
        )

    async def create_project(self, call: SlsCall) -> Response:
        body = call.object()
        self.engine.create_project(call.need_project(), _field(body, "description", str, ""))
        return empty_response()

    async def update_project(self, call: SlsCall) -> Response:
        body = call.object()
        self.engine.update_project(call.need_project(), _field(body, "description", str, ""))
        return empty_response()

    async def delete_project(self, call: SlsCall) -> Response:
        project = call.need_project()
        await run_in_threadpool(self.engine.delete_project, project)  # drops its documents
        return empty_response()

    # ----------------------------------------------------------- logstores

    async def list_logstores(self, call: SlsCall) -> Response:
        project = call.need_project()
        offset, size = _page(call)
        pattern = call.params.get("logstoreName", "")
        if not pattern:
            stores, total = self.engine.list_logstores(project, offset, size)
            names = [s.name for s in stores]
        else:
            everything, start = [], 0
            while True:
                page, total = self.engine.list_logstores(project, start, MAX_PAGE)
                everything += [s.name for s in page if pattern in s.name]
                start += len(page)
                if not page or start >= total:
                    break
            names, total = everything[offset : offset + size], len(everything)
        return json_response({"count": len(names), "total": total, "logstores": names})

    async def create_logstore(self, call: SlsCall) -> Response:
        project, body = call.need_project(), call.object()
        options = {
            "ttl": _field(body, "ttl", int),
            "shard_count": _field(body, "shardCount", int),
            "auto_split": _field(body, "autoSplit", bool),
            "max_split_shard": _field(body, "maxSplitShard", int),
        }
        name = _field(body, "logstoreName", str, "")
        await run_in_threadpool(
            lambda: self.engine.create_logstore(
                project, name, **{k: v for k, v in options.items() if v is not None}
            )
        )
        return empty_response()

    async def update_logstore(self, call: SlsCall) -> Response:
        project, body = call.need_project(), call.object()
        self.engine.update_logstore(
            project,
            call.path["logstore"],
            ttl=_field(body, "ttl", int),
            auto_split=_field(body, "autoSplit", bool),
            max_split_shard=_field(body, "maxSplitShard", int),
        )
        return empty_response()

    async def delete_logstore(self, call: SlsCall) -> Response:
        project, logstore = call.need_project(), call.path["logstore"]
        await run_in_threadpool(self.engine.delete_logstore, project, logstore)
        return empty_response()

    async def get_logstore_resource(self, call: SlsCall) -> Response:
        kind = call.params.get("type", "")
        if kind == "":
            info = self.engine.get_logstore(call.need_project(), call.path["logstore"])
            return json_response(logstore_json(info))
        handler = {
            "log": self.get_logs_v1,
            "histogram": self.get_histograms,
            "topic": self.list_topics,
            "context_log": self.get_context_logs,
        }.get(kind)
        if handler is None:
            raise ServiceError(ErrorCode.INVALID_PARAMETER, f"unsupported type {kind!r}")
        return await handler(call)

    # -------------------------------------------------------------- shards

    async def list_shards(self, call: SlsCall) -> Response:
        shards = self.engine.list_shards(call.need_project(), call.path["logstore"])
        return json_response([shard_json(s) for s in shards])

    async def shard_action(self, call: SlsCall) -> Response:
        project, logstore, shard = call.need_project(), call.path["logstore"], call.shard()
        action = call.params.get("action", "")
        if action == "split":
            key = call.params.get("key", "")
            shards = await run_in_threadpool(self.engine.split_shard, project, logstore, shard, key)
        elif action == "merge":
            shards = await run_in_threadpool(self.engine.merge_shard, project, logstore, shard)
        else:
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "action must be split or merge")
        return json_response([shard_json(s) for s in shards])

    async def delete_shard(self, call: SlsCall) -> Response:
        """Readonly shards keep their data until the TTL drops it; deleting one is a no-op."""
        project, logstore, shard = call.need_project(), call.path["logstore"], call.shard()
        if self.engine.shard_status(project, logstore, shard) is not ShardStatus.READONLY:
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "only readonly shards can be deleted")
        return empty_response()

    async def get_shard_resource(self, call: SlsCall) -> Response:
        kind = call.params.get("type", "")
        if kind == "cursor":
            return await self.get_cursor(call)
        if kind == "cursor_time":
            return await self.get_cursor_time(call)
        if kind == "log":
            return await self.pull_logs(call)
        raise ServiceError(ErrorCode.INVALID_PARAMETER, f"unsupported type {kind!r}")

    # ---------------------------------------------------------------- data

    async def put_logs(self, call: SlsCall) -> Response:
        project, logstore = call.need_project(), call.path["logstore"]
        self.engine.require_logstore(project, logstore)
        compress_type = call.header.get("x-log-compresstype")
        compression = request_compression(compress_type)
        raw_size = None
        if compress_type:  # the SDK sends a bogus x-log-bodyrawsize on other calls
            raw_size = parse_decimal(call.header.get("x-log-bodyrawsize", ""))
            if raw_size is None:
                raise ServiceError(
                    ErrorCode.INVALID_PARAMETER, "x-log-bodyrawsize must be a number of bytes"
                )
        group = await self.engine.ingest.prepare(
            call.body, compression, raw_size, self.engine.limits
        )
        hash_key = call.params.get("key") if call.request.url.path.endswith("/route") else None
        if call.request.url.path.endswith("/route") and not hash_key:
            raise ServiceError(ErrorCode.INVALID_HASH_KEY, "key (the hash key) is required")
        future = await self.engine.put_from_loop(project, logstore, group, hash_key)
        await asyncio.wrap_future(future)
        return empty_response()

    async def get_cursor(self, call: SlsCall) -> Response:
        start = call.params.get("from", "")
        at: Any = start
        if start not in ("begin", "end"):
            try:
                seconds = int(start)
            except ValueError:
                raise ServiceError(
                    ErrorCode.INVALID_PARAMETER, "from must be begin, end or a Unix time"
                ) from None
            at = max(0, seconds) * NANOS_PER_SECOND
        position = self.engine.cursor(call.need_project(), call.path["logstore"], call.shard(), at)
        return json_response({"cursor": encode_cursor(position)})

    async def get_cursor_time(self, call: SlsCall) -> Response:
        received = self.engine.cursor_time(
            call.need_project(), call.path["logstore"], call.shard(), call.cursor("cursor")
        )
        return json_response({"cursor_time": received // NANOS_PER_SECOND})

    async def pull_logs(self, call: SlsCall) -> Response:
        project, logstore, shard = call.need_project(), call.path["logstore"], call.shard()
        if call.params.get("query") or call.params.get("processor"):
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER, "SPL filters (query, processor) are not supported"
            )
        position = call.cursor("cursor")
        stop = call.cursor("end_cursor") if call.params.get("end_cursor") else None
        count = call.int_param("count", 1000, 1, 1000)
        result = await run_in_threadpool(
            lambda: self.engine.pull(project, logstore, shard, position, count=count, stop=stop)
        )
        # the answer is decompressed here: bounded by what it decodes to, not by what
        # it takes on disk (12 log groups of 205 KB stored took 1.2 GB); the client
        # asks again from the cursor, as SLS's count is "up to"
        result = result.within(PULL_DECODED_BYTES)
        body = await run_in_threadpool(log_group_list, result.frames) if result.frames else b""
        headers = {
            "x-log-cursor": encode_cursor(result.next_position),
            "x-log-count": str(result.group_count),
            "x-log-end-of-cursor": "1" if result.next_position >= result.end_position else "0",
        }
        return sls_response(
            body,
            media_type=PROTOBUF_MEDIA_TYPE,
            headers=headers,
            compression=response_compression(call.header.get("accept-encoding")),
        )

    # --------------------------------------------------------------- query

    async def _query(
        self, call: SlsCall, query: str, bounds: tuple[int, int], **options: Any
    ) -> tuple[QueryResult, list[dict[str, str]]]:
        """The result and its rows in the SLS shape (``| with_pack_meta`` honoured)."""
        project, logstore = call.need_project(), call.path["logstore"]
        search, with_packs = split_with_pack_meta(query)

        def run(cancel: Cancellation) -> tuple[QueryResult, list[dict[str, str]]]:
            # rows rendered off the event loop: an answer may hold a million of them
            result = self.engine.query(
                project, logstore, search, bounds[0], bounds[1], cancel=cancel, **options
            )
            return result, _string_rows(result, with_packs=with_packs)

        return await until_disconnected(call.request, run)

    async def get_logs_v2(self, call: SlsCall) -> Response:
        body = call.object()
        bounds = _time_range(body.get("from"), body.get("to"), body.get("fromNs"), body.get("toNs"))
        result, data = await self._query(
            call,
            _field(body, "query", str, ""),
            bounds,
            line=_field(body, "line", int, 100),
            offset=_field(body, "offset", int, 0),
            reverse=bool(_field(body, "reverse", bool, False)),
            topic=_field(body, "topic", str) or None,
        )
        meta = {
            "progress": "Complete" if result.complete else "Incomplete",
            "count": len(data),
            "processedRows": result.matched if result.matched is not None else len(data),
            "elapsedMillisecond": result.elapsed_ms,
            "hasSQL": result.has_sql,
            "whereQuery": result.where_query,
            "aggQuery": result.agg_query,
            "keys": result.keys,
            "terms": [],
            "isAccurate": True,
            "cpuSec": 0.0,
            "cpuCores": 0,
            "mode": 0,
        }
        compression = response_compression(call.header.get("accept-encoding"))
        return await run_in_threadpool(
            lambda: json_response({"meta": meta, "data": data}, compression=compression)
        )

    async def get_logs_v1(self, call: SlsCall) -> Response:
        p = call.params
        bounds = _time_range(p.get("from"), p.get("to"), p.get("fromNs"), p.get("toNs"))
        result, data = await self._query(
            call,
            p.get("query", ""),
            bounds,
            line=call.int_param("line", 100, 0, 1 << 20),
            offset=call.int_param("offset", 0, 0, 1 << 31),
            reverse=p.get("reverse", "").lower() in TRUE,
            topic=p.get("topic") or None,
        )
        headers = {
            "x-log-progress": "Complete" if result.complete else "Incomplete",
            "x-log-count": str(len(data)),
            "x-log-processed-rows": str(
                result.matched if result.matched is not None else len(data)
            ),
            "x-log-elapsed-millisecond": str(result.elapsed_ms),
            "x-log-has-sql": "true" if result.has_sql else "false",
            "x-log-where-query": result.where_query,
            "x-log-agg-query": result.agg_query,
        }
        ascii_headers = {k: _ascii(v) for k, v in headers.items()}
        return await run_in_threadpool(lambda: json_response(data, headers=ascii_headers))

    async def get_context_logs(self, call: SlsCall) -> Response:
        project, logstore = call.need_project(), call.path["logstore"]
        place = parse_pack(call.params.get("pack_id", ""), call.params.get("pack_meta", ""))
        back = call.int_param("back_lines", 0, 0, MAX_CONTEXT_LINES)
        forward = call.int_param("forward_lines", 0, 0, MAX_CONTEXT_LINES)
        around = await run_in_threadpool(
            lambda: surroundings(self.engine, project, logstore, place, back=back, forward=forward)
        )
        logs = [*around.before, around.log, *around.after]
        first = -len(around.before)
        return json_response(
            {
                "progress": "Complete",
                "total_lines": len(logs),
                "back_lines": len(around.before),
                "forward_lines": len(around.after),
                "logs": [_context_row(log, first + i) for i, log in enumerate(logs)],
            }
        )

    async def get_histograms(self, call: SlsCall) -> Response:
        project, logstore, p = call.need_project(), call.path["logstore"], call.params
        from_ns, to_ns = _time_range(p.get("from"), p.get("to"), p.get("fromNs"), p.get("toNs"))
        buckets, complete = await until_disconnected(
            call.request,
            lambda cancel: self.engine.histogram(
                project,
                logstore,
                p.get("query", ""),
                from_ns,
                to_ns,
                topic=p.get("topic") or None,
                cancel=cancel,
            ),
        )
        progress = "Complete" if complete else "Incomplete"
        return json_response(
            [
                {"from": b.start, "to": b.end, "count": b.count, "progress": progress}
                for b in buckets
            ],
            headers={"x-log-progress": progress, "x-log-count": str(sum(b.count for b in buckets))},
        )

    async def list_topics(self, call: SlsCall) -> Response:
        """Topics of the indexed logs in the longest query range (none without an index)."""
        project, logstore = call.need_project(), call.path["logstore"]
        offset = call.int_param("token", 0, 0, 1 << 31)
        line = call.int_param("line", 100, 1, 10_000)
        now = self.engine.clock()
        days = max(1, self.engine.config.query_limits.max_range_days)
        bounds = (now - (days - 1) * 86_400 * NANOS_PER_SECOND, now + 86_400 * NANOS_PER_SECOND)
        try:
            result = await run_in_threadpool(
                lambda: self.engine.query(
                    project,
                    logstore,
                    "* | select distinct __topic__ as t order by t limit 100000",
                    *bounds,
                )
            )
            topics = [str(row[0]) for row in result.rows if row[0] is not None]
        except ServiceError as error:
            if error.code is not ErrorCode.INDEX_CONFIG_NOT_EXIST:
                raise
            topics = []
        page = topics[offset : offset + line]
        more = offset + line < len(topics)
        return json_response(
            page,
            headers={
                "x-log-count": str(len(page)),
                "x-log-nexttoken": str(offset + line) if more else "",
            },
        )

    # --------------------------------------------------------------- index

    async def get_index(self, call: SlsCall) -> Response:
        project, logstore = call.need_project(), call.path["logstore"]
        config = self.engine.get_index(project, logstore)
        ttl = self.engine.get_logstore(project, logstore).ttl
        return json_response({**config.document, "ttl": ttl})

    async def create_index(self, call: SlsCall) -> Response:
        project, logstore, body = call.need_project(), call.path["logstore"], call.object()
        await run_in_threadpool(self.engine.create_index, project, logstore, body)
        return empty_response()

    async def update_index(self, call: SlsCall) -> Response:
        project, logstore, body = call.need_project(), call.path["logstore"], call.object()
        self.engine.update_index(project, logstore, body)
        return empty_response()

    async def delete_index(self, call: SlsCall) -> Response:
        project, logstore = call.need_project(), call.path["logstore"]
        await run_in_threadpool(self.engine.delete_index, project, logstore)
        return empty_response()

    # ----------------------------------------------------- consumer groups

    async def list_groups(self, call: SlsCall) -> Response:
        logstore = call.path["logstore"]
        groups = self.engine.list_consumer_groups(call.need_project(), logstore=logstore)
        return json_response(
            [{"name": g.name, "timeout": g.timeout, "order": g.in_order} for g in groups]
        )

    async def create_group(self, call: SlsCall) -> Response:
        body = call.object()
        options = {"timeout": _field(body, "timeout", int), "in_order": _field(body, "order", bool)}
        self.engine.create_consumer_group(
            call.need_project(),
            _field(body, "consumerGroup", str, ""),
            logstore=call.path["logstore"],
            **{k: v for k, v in options.items() if v is not None},
        )
        return empty_response()

    async def update_group(self, call: SlsCall) -> Response:
        body = call.object()
        self.engine.update_consumer_group(
            call.need_project(),
            call.path["group"],
            logstore=call.path["logstore"],
            timeout=_field(body, "timeout", int),
            in_order=_field(body, "order", bool),
        )
        return empty_response()

    async def delete_group(self, call: SlsCall) -> Response:
        self.engine.delete_consumer_group(
            call.need_project(), call.path["group"], logstore=call.path["logstore"]
        )
        return empty_response()

    async def group_action(self, call: SlsCall) -> Response:
        kind = call.params.get("type", "")
        if kind == "heartbeat":
            return await self.heartbeat(call)
        if kind == "checkpoint":
            return await self.update_checkpoint(call)
        raise ServiceError(ErrorCode.INVALID_PARAMETER, "type must be heartbeat or checkpoint")

    async def heartbeat(self, call: SlsCall) -> Response:
        project, logstore, group = call.need_project(), call.path["logstore"], call.path["group"]
        held = call.json() if call.body else []
        if not isinstance(held, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in held
        ):
            raise ServiceError(ErrorCode.INVALID_BODY, "the body must be a JSON array of shard ids")
        refs = [(logstore, shard) for shard in held]
        owned = await run_in_threadpool(
            lambda: self.engine.heartbeat(
                project, group, call.params.get("consumer", ""), refs, logstore=logstore
            )
        )
        return json_response(sorted(ref[1] for ref in owned))

    async def update_checkpoint(self, call: SlsCall) -> Response:
        project, logstore, group = call.need_project(), call.path["logstore"], call.path["group"]
        body = call.object()
        shard = _field(body, "shard", int)
        if shard is None:
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "shard is required")
        try:
            position = decode_cursor(_field(body, "checkpoint", str, ""))
        except CodecError:
            raise ServiceError(
                ErrorCode.INVALID_CHECKPOINT, "checkpoint is not a valid cursor"
            ) from None
        force = call.params.get("forceSuccess", "true").lower() in TRUE
        await run_in_threadpool(
            lambda: self.engine.update_checkpoint(
                project,
                group,
                (logstore, shard),
                position,
                call.params.get("consumer", ""),
                force=force,
                logstore=logstore,
            )
        )
        return empty_response()

    async def get_checkpoints(self, call: SlsCall) -> Response:
        project, logstore, group = call.need_project(), call.path["logstore"], call.path["group"]
        wanted = call.int_param("shard", -1, -1, 1 << 30)
        checkpoints = self.engine.get_checkpoints(project, group, logstore=logstore)
        return json_response(
            [
                {
                    "shard": c.shard_id,
                    "checkpoint": "" if c.position is None else encode_cursor(c.position),
                    "updateTime": c.update_time * 1_000_000,
                    "consumer": c.consumer,
                }
                for c in checkpoints
                if wanted in (-1, c.shard_id)
            ]
        )

    # ----------------------------------- machine groups, configs, shippers

    def _documents(self, base: str, kind: DocumentKind) -> list[tuple[str, dict[str, Handler]]]:
        key = {
            DocumentKind.MACHINE_GROUP: "groupName",
            DocumentKind.LOGTAIL_CONFIG: "configName",
            DocumentKind.PIPELINE_CONFIG: "configName",
            DocumentKind.SHIPPER: "shipperName",
        }[kind]
        listing = {DocumentKind.SHIPPER: "shipper", DocumentKind.MACHINE_GROUP: "machinegroups"}
        list_key = listing.get(kind, "configs")

        def scope(call: SlsCall) -> str:
            if kind is not DocumentKind.SHIPPER:
                self.engine.get_project(call.need_project())
                return ""
            self.engine.require_logstore(call.need_project(), call.path["logstore"])
            return call.path["logstore"]

        async def create(call: SlsCall) -> Response:
            where, body = scope(call), call.object()
            if kind is DocumentKind.LOGTAIL_CONFIG:
                target = body.get("outputDetail")
                store = target.get("logstoreName") if isinstance(target, dict) else None
                if isinstance(store, str) and store:
                    self.engine.require_logstore(call.need_project(), store)
            self.documents.create(
                call.need_project(), kind, where, _field(body, key, str, ""), body
            )
            return empty_response()

        async def get(call: SlsCall) -> Response:
            doc = self.documents.get(call.need_project(), kind, scope(call), call.path["name"])
            return json_response(
                {
                    **doc.document,
                    key: doc.name,
                    "createTime": doc.create_time,
                    "crateTime": doc.create_time,  # sic: the SDK reads this spelling
                    "lastModifyTime": doc.update_time,
                }
            )

        async def replace(call: SlsCall) -> Response:
            where, body = scope(call), call.object()
            body[key] = call.path["name"]
            self.documents.replace(call.need_project(), kind, where, call.path["name"], body)
            return empty_response()

        async def delete(call: SlsCall) -> Response:
            self.documents.delete(call.need_project(), kind, scope(call), call.path["name"])
            return empty_response()

        async def list_names(call: SlsCall) -> Response:
            where = scope(call)
            offset, size = _page(call)
            contains = call.params.get(key, "") or call.params.get("configName", "")
            names, total = self.documents.names(
                call.need_project(), kind, where, offset=0, size=1 << 30, contains=contains
            )
            store = call.params.get("logstoreName", "")
            if store and kind is DocumentKind.LOGTAIL_CONFIG:
                names = [n for n in names if self._config_logstore(call, n) == store]
                total = len(names)
            page = names[offset : offset + size]
            return json_response({"count": len(page), "total": total, list_key: page})

        return [
            (base, {"GET": list_names, "POST": create}),
            (base + "/{name}", {"GET": get, "PUT": replace, "DELETE": delete}),
        ]

    def _config_logstore(self, call: SlsCall, name: str) -> str:
        doc = self.documents.get(call.need_project(), DocumentKind.LOGTAIL_CONFIG, "", name)
        target = doc.document.get("outputDetail")
        return str(target.get("logstoreName", "")) if isinstance(target, dict) else ""

    async def list_machines(self, call: SlsCall) -> Response:
        """No agents report to LogHarbor: a machine group has no live machines."""
        self.documents.get(call.need_project(), DocumentKind.MACHINE_GROUP, "", call.path["name"])
        return json_response({"count": 0, "total": 0, "machines": []})

    async def configs_of_group(self, call: SlsCall) -> Response:
        configs = self.documents.configs_of(call.need_project(), call.path["name"])
        return json_response({"count": len(configs), "configs": configs})

    async def groups_of_config(self, call: SlsCall) -> Response:
        groups = self.documents.machine_groups_of(call.need_project(), call.path["name"])
        return json_response({"count": len(groups), "machinegroups": groups})

    async def apply_config(self, call: SlsCall) -> Response:
        project = call.need_project()
        self.documents.link(project, call.path["name"], call.path["config"], linked=True)
        return empty_response()

    async def remove_config(self, call: SlsCall) -> Response:
        project = call.need_project()
        self.documents.link(project, call.path["name"], call.path["config"], linked=False)
        return empty_response()

    async def shipper_tasks(self, call: SlsCall) -> Response:
        project, logstore = call.need_project(), call.path["logstore"]
        doc = self.documents.get(project, DocumentKind.SHIPPER, logstore, call.path["name"])
        start = call.int_param("from", 0, 0, 1 << 40)
        end = call.int_param("to", 1 << 40, 0, 1 << 40)
        status = call.params.get("status", "")
        tasks = [
            t
            for t in doc.state.get("tasks", [])
            if start <= t.get("taskCreateTime", 0) < end and status in ("", t.get("taskStatus"))
        ]
        offset, size = _page(call)
        page = tasks[offset : offset + size]
        statistics = {"running": 0, "success": 0, "fail": 0}
        for task in tasks:
            state = str(task.get("taskStatus", "fail"))
            statistics[state] = statistics.get(state, 0) + 1
        return json_response(
            {"count": len(page), "total": len(tasks), "statistics": statistics, "tasks": page}
        )

    async def retry_tasks(self, call: SlsCall) -> Response:
        """Failed runs are retried by the next run anyway (positions only move on success)."""
        project, logstore = call.need_project(), call.path["logstore"]
        self.documents.get(project, DocumentKind.SHIPPER, logstore, call.path["name"])
        return empty_response()


def _ascii(value: str) -> str:
    return value.encode("ascii", "backslashreplace").decode("ascii").replace("\n", " ")


def compile_table(
    table: list[tuple[str, dict[str, Handler]]],
) -> list[tuple[str, re.Pattern[str], dict[str, Handler]]]:
    """Route patterns (``{name}`` = one path segment) as regular expressions."""
    compiled = []
    for pattern, methods in table:
        regex = re.sub(
            r"\{(\w+)\}",
            r"(?P<\1>[^/]+)",
            re.escape(pattern).replace(r"\{", "{").replace(r"\}", "}"),
        )
        compiled.append((pattern, re.compile(f"^{regex}$"), methods))
    return compiled
