"""TLS projects, topics, shards, indexes and SearchLogs over the engine."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from ....engine import Engine
from ....engine.index.query import LogRow, QueryResult
from ....engine.resource_ids import logstore_id, project_id
from ....engine.tls_mapping import CONTEXT_FLOW_TAG, PATH_TAG, TIME_UNIT_TAG
from ....engine.types import NANOS_PER_SECOND, LogstoreInfo, ProjectInfo, ShardInfo
from ....protocol.codec import MAX_HASH_KEY, format_hash_key, parse_decimal, parse_hash_key
from ....protocol.errors import ErrorCode, ServiceError
from ...search import json_value as sql_value
from ...search import until_disconnected
from ..context import LogPlace, Surroundings, group_id, has_more, parse_group_id, surroundings
from .call import TlsCall

MAX_SEARCH_LIMIT = 1000
MAX_CONTEXT_LOGS = 1000
_NANOS_PER_MS = 1_000_000


def ok(document: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse(document or {})


def tls_time(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _paged(call: TlsCall, items: list[Any]) -> list[Any]:
    number = call.integer("PageNumber", 1, low=1)
    size = call.integer("PageSize", 20, low=1, high=500)
    return items[(number - 1) * size : number * size]


class ResourceAPI:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ------------------------------------------------------------ projects

    def _all_projects(self) -> list[ProjectInfo]:
        projects: list[ProjectInfo] = []
        while True:
            page, total = self.engine.list_projects(len(projects), 500)
            projects.extend(page)
            if not page or len(projects) >= total:
                return projects

    def project_json(self, info: ProjectInfo) -> dict[str, Any]:
        _, topics = self.engine.list_logstores(info.name, 0, 0)
        return {
            "ProjectName": info.name,
            "ProjectId": project_id(info),
            "Description": info.description,
            "CreateTime": tls_time(info.create_time),
            "InnerNetDomain": "",
            "TopicCount": topics,
            "IamProjectName": "default",
            "Tags": [],
        }

    async def create_project(self, call: TlsCall) -> Response:
        info = self.engine.create_project(
            call.text("ProjectName"), call.text("Description", required=False)
        )
        return ok({"ProjectId": project_id(info)})

    async def delete_project(self, call: TlsCall) -> Response:
        await run_in_threadpool(self.engine.delete_project, call.project().name)
        return ok()

    async def describe_project(self, call: TlsCall) -> Response:
        return ok(self.project_json(call.project()))

    async def describe_projects(self, call: TlsCall) -> Response:
        name = call.text("ProjectName", required=False)
        pid = call.text("ProjectId", required=False)
        full = call.flag("IsFullName") or False
        projects = [
            p
            for p in self._all_projects()
            if (not name or (p.name == name if full else name in p.name))
            and (not pid or project_id(p) == pid)
        ]
        page = _paged(call, projects)
        return ok({"Total": len(projects), "Projects": [self.project_json(p) for p in page]})

    async def modify_project(self, call: TlsCall) -> Response:
        info = call.project()
        name = call.text("ProjectName", required=False)
        if name and name != info.name:
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "projects cannot be renamed")
        description = call.raw("Description")
        if description is not None:
            self.engine.update_project(info.name, description)
        return ok()

    # -------------------------------------------------------------- topics

    def topic_json(self, info: LogstoreInfo) -> dict[str, Any]:
        project = self.engine.get_project(info.project)
        return {
            "TopicName": info.name,
            "TopicId": logstore_id(info),
            "ProjectId": project_id(project),
            "Ttl": info.ttl,
            "CreateTime": tls_time(info.create_time),
            "ModifyTime": tls_time(info.update_time),
            "ShardCount": info.shard_count,
            "Description": "",
            "AutoSplit": info.auto_split,
            "MaxSplitShard": info.max_split_shard,
            "EnableTracking": False,
            "TimeKey": "",
            "TimeFormat": "",
            "Tags": [],
            "LogPublicIP": True,
            "EnableHotTtl": False,
        }

    async def create_topic(self, call: TlsCall) -> Response:
        project = call.project()
        name = call.text("TopicName")
        ttl = call.integer("Ttl", 30, low=1, high=3650)
        shard_count = call.integer("ShardCount", 1, low=1, high=256)
        auto_split = bool(call.flag("AutoSplit"))
        max_split = call.integer("MaxSplitShard", 50, low=1, high=256)
        info = await run_in_threadpool(
            lambda: self.engine.create_logstore(
                project.name,
                name,
                ttl=ttl,
                shard_count=shard_count,
                auto_split=auto_split,
                max_split_shard=max_split,
            )
        )
        return ok({"TopicId": logstore_id(info)})

    async def delete_topic(self, call: TlsCall) -> Response:
        info = call.topic()
        await run_in_threadpool(self.engine.delete_logstore, info.project, info.name)
        return ok()

    async def describe_topic(self, call: TlsCall) -> Response:
        return ok(self.topic_json(call.topic()))

    async def describe_topics(self, call: TlsCall) -> Response:
        project = call.project()
        name = call.text("TopicName", required=False)
        tid = call.text("TopicId", required=False)
        full = call.flag("IsFullName") or False
        stores: list[LogstoreInfo] = []
        while True:
            page, total = self.engine.list_logstores(project.name, len(stores), 500)
            stores.extend(page)
            if not page or len(stores) >= total:
                break
        stores = [
            s
            for s in stores
            if (not name or (s.name == name if full else name in s.name))
            and (not tid or logstore_id(s) == tid)
        ]
        page = _paged(call, stores)
        return ok({"Total": len(stores), "Topics": [self.topic_json(s) for s in page]})

    async def modify_topic(self, call: TlsCall) -> Response:
        info = call.topic()
        name = call.text("TopicName", required=False)
        if name and name != info.name:
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "topics cannot be renamed")
        self.engine.update_logstore(
            info.project,
            info.name,
            ttl=call.integer("Ttl", info.ttl, low=1, high=3650),
            auto_split=call.flag("AutoSplit"),
            max_split_shard=call.integer("MaxSplitShard", info.max_split_shard, low=1, high=256),
        )
        return ok()

    # -------------------------------------------------------------- shards

    @staticmethod
    def shard_json(topic: LogstoreInfo, shard: ShardInfo) -> dict[str, Any]:
        readonly = shard.status.value == "readonly"
        return {
            "TopicId": logstore_id(topic),
            "ShardId": shard.shard_id,
            "InclusiveBeginKey": shard.begin_key,
            "ExclusiveEndKey": shard.end_key,
            "Status": shard.status.value,
            "ModifyTime": tls_time(shard.create_time),
            "StopWriteTime": tls_time(shard.create_time) if readonly else "",
        }

    async def describe_shards(self, call: TlsCall) -> Response:
        topic = call.topic()
        shards = self.engine.list_shards(topic.project, topic.name)
        page = _paged(call, shards)
        return ok({"Total": len(shards), "Shards": [self.shard_json(topic, s) for s in page]})

    async def manual_shard_split(self, call: TlsCall) -> Response:
        """Split a shard into ``Number`` (a power of two) shards of equal ranges."""
        topic = call.topic()
        shard_id = call.integer("ShardId")
        number = call.integer("Number", 2, low=2, high=64)
        if number & (number - 1):
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "Number must be a power of two")

        def split() -> list[ShardInfo]:
            level = [shard_id]
            while 2 * len(level) <= number:
                shards = {s.shard_id: s for s in self.engine.list_shards(topic.project, topic.name)}
                children: list[int] = []
                for parent_id in level:
                    if parent_id not in shards:
                        raise ServiceError(
                            ErrorCode.SHARD_NOT_EXIST, f"shard {parent_id} does not exist"
                        )
                    parent = shards[parent_id]
                    begin, end = parse_hash_key(parent.begin_key), parse_hash_key(parent.end_key)
                    if end == MAX_HASH_KEY:  # the last shard's end stands for 2**128
                        end += 1
                    created = self.engine.split_shard(
                        topic.project, topic.name, parent_id, format_hash_key((begin + end) // 2)
                    )
                    children.extend(s.shard_id for s in created[1:])
                level = children
            shards = {s.shard_id: s for s in self.engine.list_shards(topic.project, topic.name)}
            return [shards[i] for i in level]

        leaves = await run_in_threadpool(split)
        return ok({"Shards": [self.shard_json(topic, s) for s in leaves]})

    # --------------------------------------------------------------- index

    async def create_index(self, call: TlsCall) -> Response:
        topic = call.topic()
        document = index_document(call.json(), create_time=int(time.time()))
        await run_in_threadpool(self.engine.create_index, topic.project, topic.name, document)
        return ok({"TopicId": logstore_id(topic)})

    async def modify_index(self, call: TlsCall) -> Response:
        topic = call.topic()
        current = self.engine.get_index(topic.project, topic.name).document
        created = current.get("tls", {}).get("CreateTime", int(time.time()))
        document = index_document(call.json(), create_time=created)
        self.engine.update_index(topic.project, topic.name, document)
        return ok()

    async def delete_index(self, call: TlsCall) -> Response:
        topic = call.topic()
        await run_in_threadpool(self.engine.delete_index, topic.project, topic.name)
        return ok()

    async def describe_index(self, call: TlsCall) -> Response:
        topic = call.topic()
        tls = dict(self.engine.get_index(topic.project, topic.name).document.get("tls", {}))
        tls.setdefault("KeyValue", [])
        tls.setdefault("UserInnerKeyValue", [])
        tls["CreateTime"] = tls_time(int(tls.get("CreateTime", 0)))
        tls["ModifyTime"] = tls_time(int(tls.get("ModifyTime", 0)))
        tls["TopicId"] = logstore_id(topic)
        return ok(tls)

    # -------------------------------------------------------------- search

    async def search_logs(self, call: TlsCall) -> Response:
        topic = call.topic()
        start = _search_time(call.integer("StartTime", 0, low=0, high=1 << 62))
        end = _search_time(call.integer("EndTime", low=0, high=1 << 62))
        max_days = self.engine.config.query_limits.max_range_days
        start = max(start, end - max_days * 86_400 * NANOS_PER_SECOND + 1)
        limit = call.integer("Limit", 100, low=0, high=MAX_SEARCH_LIMIT)
        context = call.text("Context", required=False)
        offset = call.integer("Offset", 0)
        if context:
            parsed = parse_decimal(context)
            if parsed is None:
                raise ServiceError(ErrorCode.INVALID_PARAMETER, "Context is not valid")
            offset = parsed
        sort = call.text("Sort", required=False, default="desc").lower()
        if sort not in ("asc", "desc"):
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "Sort must be asc or desc")
        query = call.text("Query", required=False, default="")
        result: QueryResult = await until_disconnected(
            call.request,
            lambda cancel: self.engine.query(
                topic.project,
                topic.name,
                query,
                start,
                end,
                line=max(limit, 1),
                offset=offset,
                reverse=sort == "desc",
                cancel=cancel,
            ),
        )
        document: dict[str, Any] = {
            "ResultStatus": "complete" if result.complete else "incomplete",
            "Analysis": result.has_sql,
            "Limit": limit,
            "HighLight": [],
            "ElapsedMillisecond": result.elapsed_ms,
        }
        if result.has_sql:
            rows = [
                dict(zip(result.keys, map(sql_value, row), strict=False)) for row in result.rows
            ]
            document.update(
                HitCount=len(rows),
                Count=len(rows),
                ListOver=True,
                Context="",
                Logs=[],
                AnalysisResult={
                    "Schema": result.keys,
                    "Type": {k: "varchar" for k in result.keys},
                    "Data": rows,
                },
            )
        else:
            logs = result.logs[:limit] if limit else []
            matched = result.matched if result.matched is not None else len(logs)
            over = offset + len(logs) >= matched
            document.update(
                HitCount=matched,
                Count=len(logs),
                ListOver=over,
                Context="" if over else str(offset + len(logs)),
                Logs=[search_log(row) for row in logs],
            )
        return Response(
            json.dumps(document, ensure_ascii=False, default=str),
            media_type="application/json; charset=utf-8",
        )

    async def describe_log_context(self, call: TlsCall) -> Response:
        """The logs around a SearchLogs hit; ``Source`` is required by the SDK but not
        needed to find the log, so it is not checked."""
        topic = call.topic()
        shard, position = parse_group_id(call.text("ContextFlow"), "ContextFlow")
        place = LogPlace(shard, position, call.integer("PackageOffset"))
        prev = call.integer("PrevLogs", 10, high=MAX_CONTEXT_LOGS)
        following = call.integer("NextLogs", 10, high=MAX_CONTEXT_LOGS)

        def look() -> tuple[Surroundings, bool, bool]:
            found = surroundings(
                self.engine, topic.project, topic.name, place, back=prev, forward=following
            )
            earliest = found.before[0] if found.before else found.log
            latest = found.after[-1] if found.after else found.log
            more_before = len(found.before) == prev and has_more(
                self.engine, topic.project, topic.name, earliest, earlier=True
            )
            more_after = len(found.after) == following and has_more(
                self.engine, topic.project, topic.name, latest, earlier=False
            )
            return found, more_before, more_after

        found, more_before, more_after = await run_in_threadpool(look)
        logs = [*found.before, found.log, *found.after]
        return ok(
            {
                "LogContextInfos": [search_log(row) for row in logs],
                "PrevOver": more_before,
                "NextOver": more_after,
            }
        )


def _search_time(value: int) -> int:
    """Milliseconds (as TLS sends them; seconds are taken for seconds) → nanoseconds."""
    if value < 10**11:
        return value * NANOS_PER_SECOND
    return value * _NANOS_PER_MS


def search_log(row: LogRow) -> dict[str, Any]:
    """A log as SearchLogs and DescribeLogContext answer it; ``__context_flow__`` and
    ``__package_offset__`` are where DescribeLogContext finds it (compat/context.py),
    which is why a ``ContextFlow`` written by the client is not shown."""
    log: dict[str, Any] = dict(row.contents)
    log["__time__"] = row.time_ns // _NANOS_PER_MS
    log["__source__"] = row.source
    log["__context_flow__"] = group_id(row)
    log["__package_offset__"] = row.index
    for key, value in row.tags:
        if key == PATH_TAG:
            log.setdefault("__path__", value)
        elif key not in (TIME_UNIT_TAG, CONTEXT_FLOW_TAG):
            log[f"__tag__{key}__"] = value
    return log


def _tokens(delimiter: object) -> list[str] | None:
    if not delimiter:
        return None
    if not isinstance(delimiter, str):
        raise ServiceError(ErrorCode.INVALID_PARAMETER, "Delimiter must be a string")
    return [c for c in dict.fromkeys(delimiter)]


def index_document(body: dict[str, Any], *, create_time: int) -> dict[str, Any]:
    """A TLS index configuration as a LogHarbor one; the TLS form is kept under
    ``tls`` (DescribeIndex answers it)."""
    document: dict[str, Any] = {}
    original = {k: v for k, v in body.items() if k.lower() != "topicid"}
    fields = {k.lower(): v for k, v in original.items()}
    full_text = fields.get("fulltext")
    if full_text is not None:
        if not isinstance(full_text, dict):
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "FullText must be an object")
        line: dict[str, Any] = {"caseSensitive": bool(full_text.get("CaseSensitive", False))}
        tokens = _tokens(full_text.get("Delimiter"))
        if tokens:
            line["token"] = tokens
        document["line"] = line
    keys: dict[str, Any] = {}
    for group in ("keyvalue", "userinnerkeyvalue"):
        items = fields.get(group) or []
        if not isinstance(items, list):
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "KeyValue must be a list")
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("Key"), str):
                raise ServiceError(ErrorCode.INVALID_PARAMETER, "KeyValue items need a Key")
            value = item.get("Value") or {}
            if not isinstance(value, dict):
                raise ServiceError(ErrorCode.INVALID_PARAMETER, "KeyValue Value must be an object")
            spec: dict[str, Any] = {
                "type": str(value.get("ValueType", "text")).lower(),
                "caseSensitive": bool(value.get("CaseSensitive", False)),
                "doc_value": bool(value.get("SqlFlag", False)),
            }
            tokens = _tokens(value.get("Delimiter"))
            if tokens:
                spec["token"] = tokens
            keys[item["Key"]] = spec
    if keys:
        document["keys"] = keys
    original["CreateTime"] = create_time
    original["ModifyTime"] = int(time.time())
    document["tls"] = original
    return document
