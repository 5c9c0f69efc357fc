"""The native API facade (docs/api.md): parse, call the engine, render."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..engine import Engine, PreparedGroup, prepare_json
from ..engine.types import (
    NANOS_PER_SECOND,
    LogstoreInfo,
    ProjectInfo,
    PullResult,
    ShardInfo,
    ShardStatus,
)
from ..protocol.codec import Compression, decode_cursor, encode_cursor, iter_frames, parse_decimal
from ..protocol.errors import ErrorCode, ServiceError
from ..protocol.schema import RawLogGroup
from ..protocol.signing import EMPTY_SHA256
from .auth import Authenticator
from .groups import GroupsAPI
from .http import ByteBudget, Call, Handler, endpoint, json_field, read_body
from .search import SearchAPI

PREFIX = "/api/v1"
FRAMES_MEDIA_TYPE = "application/x-logharbor-frames"
MAX_WAIT_MS = 30_000
_INLINE_PREPARE_BYTES = 64 << 10


def project_json(p: ProjectInfo) -> dict[str, Any]:
    return {
        "name": p.name,
        "description": p.description,
        "createTime": p.create_time,
        "updateTime": p.update_time,
    }


def logstore_json(ls: LogstoreInfo) -> dict[str, Any]:
    return {
        "project": ls.project,
        "name": ls.name,
        "ttl": ls.ttl,
        "shardCount": ls.shard_count,
        "autoSplit": ls.auto_split,
        "maxSplitShard": ls.max_split_shard,
        "createTime": ls.create_time,
        "updateTime": ls.update_time,
    }


def shard_json(s: ShardInfo) -> dict[str, Any]:
    return {
        "shardId": s.shard_id,
        "status": s.status.value,
        "beginKey": s.begin_key,
        "endKey": s.end_key,
        "createTime": s.create_time,
        "parents": list(s.parents),
        "children": list(s.children),
    }


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "backslashreplace")


# A JSON pull's cost: about the memory its objects take, 24 times the decompressed
# bytes (a log of 4.6 million empty contents, 31 MiB, took 750 MB) plus 300 bytes a log
JSON_RAW_FACTOR = 24
JSON_LOG_COST = 300
JSON_PULL_COST = 64 << 20  # what one format=json pull decodes at most (about 2.6 MiB raw)
JSON_GROUP_COST = 256 << 20  # a log group that alone costs more comes without its logs


def pull_json(result: PullResult) -> dict[str, Any]:
    """A pull as JSON: its log groups decoded, as many as cost ``JSON_PULL_COST``
    (at least one).  ``maxBytes`` counts stored bytes, and logs that compress well
    would otherwise decode to hundreds of times that (20 log groups of 3.3 MB stored
    made 839 MB of JSON and took 2.4 GB).  A log group that alone would cost more
    than ``JSON_GROUP_COST`` comes without its logs, marked ``"tooLarge": true``
    (read it with ``format=frames``), so that a reader still moves past it."""
    result = result.within(JSON_PULL_COST, JSON_LOG_COST, raw_factor=JSON_RAW_FACTOR)
    groups: list[dict[str, Any]] = []
    for frame in iter_frames(result.frames, verify=False):
        if JSON_RAW_FACTOR * frame.raw_size + JSON_LOG_COST * frame.log_count > JSON_GROUP_COST:
            groups.append(
                {
                    "cursor": encode_cursor(frame.position),
                    "receiveTimeNs": frame.received_ns,
                    "tooLarge": True,
                    "logCount": frame.log_count,
                    "rawSize": frame.raw_size,
                    "logs": [],
                }
            )
            continue
        group = RawLogGroup.FromString(frame.raw())
        groups.append(
            {
                "cursor": encode_cursor(frame.position),
                "receiveTimeNs": frame.received_ns,
                "topic": _text(group.Topic),
                "source": _text(group.Source),
                "tags": {_text(tag.Key): _text(tag.Value) for tag in group.LogTags},
                "logs": [
                    {
                        "timeNs": log.Time * NANOS_PER_SECOND + log.Time_ns,
                        "contents": [[_text(c.Key), _text(c.Value)] for c in log.Contents],
                    }
                    for log in group.Logs
                ],
            }
        )
    return {
        "nextCursor": encode_cursor(result.next_position),
        "endCursor": encode_cursor(result.end_position),
        "count": result.group_count,
        "logCount": result.log_count,
        "rawSize": result.raw_size,
        "logGroups": groups,
    }


class NativeAPI:
    def __init__(
        self,
        engine: Engine,
        authenticator: Authenticator | None,
        observe: Callable[[Request, int], None],
        budget: ByteBudget,
    ) -> None:
        self.engine = engine
        self.budget = budget
        self._json_decoding = asyncio.Semaphore(2)  # large JSON bodies decoded at once
        self.groups = GroupsAPI(engine)
        self.search = SearchAPI(engine)
        self.authenticator = authenticator
        self.observe = observe

    # ------------------------------------------------------------ plumbing

    def _finish(self, body: bytes) -> None:
        self.budget.give_back(len(body))

    async def _prepare(self, request: Request, request_id: str) -> bytes:
        body = await read_body(request, self.engine.limits.max_body_bytes, self.budget)
        if self.authenticator is not None:
            digest = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
            try:
                self.authenticator.verify(
                    method=request.method,
                    path=request.url.path,
                    params=request.query_params.multi_items(),
                    headers={k.lower(): v for k, v in request.headers.items()},
                    body_sha256=digest,
                )
            except ServiceError:
                self.budget.give_back(len(body))
                raise
        return body

    def _route(self, path: str, **methods: Handler) -> Route:
        return Route(
            PREFIX + path,
            endpoint(self._prepare, self._finish, methods, self.observe),
            methods=list(methods),
        )

    def routes(self) -> list[Route]:
        ls = "/projects/{project}/logstores/{logstore}"
        shard = ls + "/shards/{shard}"
        search = self.search
        return [
            self._route("/projects", GET=self.list_projects, POST=self.create_project),
            self._route(
                "/projects/{project}",
                GET=self.get_project,
                PATCH=self.update_project,
                DELETE=self.delete_project,
            ),
            self._route(
                "/projects/{project}/logstores",
                GET=self.list_logstores,
                POST=self.create_logstore,
            ),
            self._route(
                ls,
                GET=self.get_logstore,
                PATCH=self.update_logstore,
                DELETE=self.delete_logstore,
            ),
            self._route(ls + "/logs", POST=self.put_logs),
            self._route(ls + "/shards", GET=self.list_shards),
            self._route(shard + "/split", POST=self.split_shard),
            self._route(shard + "/merge", POST=self.merge_shard),
            self._route(shard + "/cursor", GET=self.get_cursor),
            self._route(shard + "/cursor-time", GET=self.get_cursor_time),
            self._route(shard + "/logs", GET=self.pull_logs),
            self._route(
                ls + "/index",
                GET=search.get_index,
                POST=search.create_index,
                PUT=search.update_index,
                DELETE=search.delete_index,
            ),
            self._route(ls + "/query", POST=search.query),
            self._route(ls + "/histogram", POST=search.histogram),
            self._route(ls + "/context", GET=search.context),
            *self._group_routes("/projects/{project}/consumergroups"),
            *self._group_routes(ls + "/consumergroups"),
        ]

    def _group_routes(self, base: str) -> list[Route]:
        groups = self.groups
        one = base + "/{group}"
        return [
            self._route(base, GET=groups.list_groups, POST=groups.create_group),
            self._route(
                one, GET=groups.get_group, PATCH=groups.update_group, DELETE=groups.delete_group
            ),
            self._route(one + "/heartbeat", POST=groups.heartbeat),
            self._route(
                one + "/checkpoints", GET=groups.get_checkpoints, POST=groups.update_checkpoint
            ),
            self._route(one + "/status", GET=groups.status),
        ]

    # ------------------------------------------------------------ projects

    async def list_projects(self, call: Call) -> Response:
        projects, total = self.engine.list_projects(
            call.int_param("offset", 0, 0, 1 << 31), call.int_param("size", 100, 0, 500)
        )
        return JSONResponse(
            {
                "projects": [project_json(p) for p in projects],
                "count": len(projects),
                "total": total,
            }
        )

    async def create_project(self, call: Call) -> Response:
        body = call.json()
        info = self.engine.create_project(
            json_field(body, "name", str, ""), json_field(body, "description", str, "") or ""
        )
        return JSONResponse(project_json(info))

    async def get_project(self, call: Call) -> Response:
        return JSONResponse(project_json(self.engine.get_project(call.path("project"))))

    async def update_project(self, call: Call) -> Response:
        body = call.json()
        description = json_field(body, "description", str)
        if description is None:
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "description is required")
        return JSONResponse(
            project_json(self.engine.update_project(call.path("project"), description))
        )

    async def delete_project(self, call: Call) -> Response:
        await run_in_threadpool(self.engine.delete_project, call.path("project"))
        return JSONResponse({})

    # ----------------------------------------------------------- logstores

    async def list_logstores(self, call: Call) -> Response:
        stores, total = self.engine.list_logstores(
            call.path("project"),
            call.int_param("offset", 0, 0, 1 << 31),
            call.int_param("size", 100, 0, 500),
        )
        return JSONResponse(
            {
                "logstores": [logstore_json(s) for s in stores],
                "count": len(stores),
                "total": total,
            }
        )

    async def create_logstore(self, call: Call) -> Response:
        body = call.json()
        options = {
            "ttl": json_field(body, "ttl", int),
            "shard_count": json_field(body, "shardCount", int),
            "auto_split": json_field(body, "autoSplit", bool),
            "max_split_shard": json_field(body, "maxSplitShard", int),
        }
        info = await run_in_threadpool(
            lambda: self.engine.create_logstore(
                call.path("project"),
                json_field(body, "name", str, ""),
                **{k: v for k, v in options.items() if v is not None},
            )
        )
        return JSONResponse(logstore_json(info))

    async def get_logstore(self, call: Call) -> Response:
        info = self.engine.get_logstore(call.path("project"), call.path("logstore"))
        return JSONResponse(logstore_json(info))

    async def update_logstore(self, call: Call) -> Response:
        body = call.json()
        info = self.engine.update_logstore(
            call.path("project"),
            call.path("logstore"),
            ttl=json_field(body, "ttl", int),
            auto_split=json_field(body, "autoSplit", bool),
            max_split_shard=json_field(body, "maxSplitShard", int),
        )
        return JSONResponse(logstore_json(info))

    async def delete_logstore(self, call: Call) -> Response:
        await run_in_threadpool(
            self.engine.delete_logstore, call.path("project"), call.path("logstore")
        )
        return JSONResponse({})

    # -------------------------------------------------------------- shards

    async def list_shards(self, call: Call) -> Response:
        shards = self.engine.list_shards(call.path("project"), call.path("logstore"))
        return JSONResponse({"shards": [shard_json(s) for s in shards]})

    async def split_shard(self, call: Call) -> Response:
        key = json_field(call.json(), "splitKey", str)
        if not key:
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "splitKey is required")
        shards = await run_in_threadpool(
            self.engine.split_shard,
            call.path("project"),
            call.path("logstore"),
            call.shard_id(),
            key,
        )
        return JSONResponse({"shards": [shard_json(s) for s in shards]})

    async def merge_shard(self, call: Call) -> Response:
        shards = await run_in_threadpool(
            self.engine.merge_shard,
            call.path("project"),
            call.path("logstore"),
            call.shard_id(),
        )
        return JSONResponse({"shards": [shard_json(s) for s in shards]})

    # ---------------------------------------------------------------- data

    async def _prepared(self, call: Call) -> PreparedGroup:
        media = call.request.headers.get("content-type", "").split(";")[0].strip().lower()
        limits = self.engine.limits
        if media == "application/json":
            # a JSON body becomes Python objects before anything can be checked, up to
            # 50 times its size (10 MiB of "{}," took 510 MB): large ones are decoded
            # two at a time
            if len(call.body) <= _INLINE_PREPARE_BYTES:
                return prepare_json(call.json(), limits)
            async with self._json_decoding:
                return await run_in_threadpool(lambda: prepare_json(call.json(), limits))
        if media not in ("application/x-protobuf", "application/octet-stream", ""):
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER,
                f"unsupported Content-Type {media!r}; use application/x-protobuf or "
                "application/json",
            )
        compression = Compression.from_wire(call.request.headers.get("x-lh-compress-type"))
        raw_size_header = call.request.headers.get("x-lh-raw-size")
        raw_size = None
        if raw_size_header:
            raw_size = parse_decimal(raw_size_header)
            if raw_size is None:
                raise ServiceError(ErrorCode.INVALID_PARAMETER, "x-lh-raw-size must be a number")
        return await self.engine.ingest.prepare(call.body, compression, raw_size, limits)

    async def put_logs(self, call: Call) -> Response:
        project, logstore = call.path("project"), call.path("logstore")
        hash_key = call.query.get("hashKey") or None
        self.engine.require_logstore(project, logstore)
        group = await self._prepared(call)
        future = await self.engine.put_from_loop(project, logstore, group, hash_key)
        result = await asyncio.wrap_future(future)
        return JSONResponse(
            {
                "shardId": result.shard_id,
                "cursor": encode_cursor(result.position),
                "logCount": group.log_count,
            }
        )

    def _cursor(self, call: Call, name: str, *, required: bool) -> int | None:
        value = call.query.get(name)
        if not value:
            if required:
                raise ServiceError(ErrorCode.INVALID_PARAMETER, f"{name} is required")
            return None
        return decode_cursor(value)

    async def get_cursor(self, call: Call) -> Response:
        start = call.query.get("from", "")
        at: Any
        if start in ("begin", "end"):
            at = start
        else:
            try:
                seconds = float(start)
            except ValueError:
                raise ServiceError(
                    ErrorCode.INVALID_PARAMETER,
                    "from must be begin, end or a Unix time in seconds",
                ) from None
            if not 0 <= seconds < 1 << 32:
                raise ServiceError(ErrorCode.INVALID_PARAMETER, "from is out of range")
            at = int(seconds * NANOS_PER_SECOND)
        position = self.engine.cursor(
            call.path("project"), call.path("logstore"), call.shard_id(), at
        )
        return JSONResponse({"cursor": encode_cursor(position)})

    async def get_cursor_time(self, call: Call) -> Response:
        position = self._cursor(call, "cursor", required=True)
        assert position is not None
        received = self.engine.cursor_time(
            call.path("project"), call.path("logstore"), call.shard_id(), position
        )
        return JSONResponse({"time": received // NANOS_PER_SECOND, "timeNs": received})

    async def pull_logs(self, call: Call) -> Response:
        project, logstore, shard = call.path("project"), call.path("logstore"), call.shard_id()
        position = self._cursor(call, "cursor", required=True)
        assert position is not None
        stop = self._cursor(call, "endCursor", required=False)
        count = call.int_param("count", 100, 1, 1000)
        max_bytes = call.int_param("maxBytes", 16 << 20, 1, 64 << 20)
        wait_ms = call.int_param("wait", 0, 0, MAX_WAIT_MS)
        output = call.query.get("format", "frames")
        if output not in ("frames", "json"):
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "format must be frames or json")
        group = call.query.get("consumerGroup")
        if group:  # a member's fetch: refused unless it holds the shard
            self.engine.group_fetch(
                project,
                group,
                call.query.get("consumer", ""),
                (logstore, shard),
                position,
                logstore=logstore,
            )

        def pull() -> PullResult:
            return self.engine.pull(
                project, logstore, shard, position, count=count, max_bytes=max_bytes, stop=stop
            )

        result = await run_in_threadpool(pull)
        finished = self.engine.shard_status(project, logstore, shard) is ShardStatus.READONLY
        if (
            result.group_count == 0
            and wait_ms
            and not finished  # a readonly shard read to its end gets nothing more
            and (stop is None or result.next_position < stop)
        ):
            await self._wait_for_data(project, logstore, shard, result.next_position, wait_ms)
            result = await run_in_threadpool(pull)
        status = self.engine.shard_status(project, logstore, shard)
        headers = {
            "x-lh-next-cursor": encode_cursor(result.next_position),
            "x-lh-end-cursor": encode_cursor(result.end_position),
            "x-lh-count": str(result.group_count),
            "x-lh-log-count": str(result.log_count),
            "x-lh-raw-size": str(result.raw_size),
            "x-lh-shard-status": status.value,
        }
        if output == "json":
            async with self._json_decoding:  # two at a time, as JSON writes
                content = await run_in_threadpool(pull_json, result)
            headers["x-lh-next-cursor"] = content["nextCursor"]
            headers["x-lh-count"] = str(content["count"])
            headers["x-lh-log-count"] = str(content["logCount"])
            headers["x-lh-raw-size"] = str(content.pop("rawSize"))
            return JSONResponse(content, headers=headers)
        return Response(result.frames, media_type=FRAMES_MEDIA_TYPE, headers=headers)

    async def _wait_for_data(
        self, project: str, logstore: str, shard: int, position: int, wait_ms: int
    ) -> None:
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(arrived.set)

        cancel = self.engine.add_waiter(project, logstore, shard, position, wake)
        if cancel is None:
            return
        try:
            await asyncio.wait_for(arrived.wait(), wait_ms / 1000)
        except TimeoutError:
            pass
        finally:
            cancel()
