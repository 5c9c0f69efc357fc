"""Consumer groups in the native API (docs/api.md, "Consumer groups").

The same handlers serve groups of one logstore
(``/projects/{p}/logstores/{ls}/consumergroups/...``, shards as ids) and groups of
a project over several logstores (``/projects/{p}/consumergroups/...``, shards as
``{"logstore", "shardId"}``).
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from ..engine import Engine
from ..engine.consumer import Checkpoint, ConsumerGroupInfo, ShardRef
from ..protocol.codec import decode_cursor, encode_cursor
from ..protocol.errors import ErrorCode, ServiceError
from .http import Call, json_field


def group_json(group: ConsumerGroupInfo) -> dict[str, Any]:
    return {
        "name": group.name,
        "project": group.project,
        "logstores": list(group.logstores),
        "timeout": group.timeout,
        "inOrder": group.in_order,
        "createTime": group.create_time,
        "updateTime": group.update_time,
    }


class GroupsAPI:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @staticmethod
    def _scope(call: Call) -> str | None:
        return call.request.path_params.get("logstore")

    def _ref_json(self, call: Call, ref: ShardRef) -> Any:
        if self._scope(call) is not None:
            return ref[1]
        return {"logstore": ref[0], "shardId": ref[1]}

    def _ref(self, call: Call, value: Any) -> ShardRef:
        scope = self._scope(call)
        if scope is not None:
            if isinstance(value, int) and not isinstance(value, bool):
                return (scope, value)
        elif isinstance(value, dict):
            store, shard = value.get("logstore"), value.get("shardId")
            if isinstance(store, str) and isinstance(shard, int) and not isinstance(shard, bool):
                return (store, shard)
        expected = "shard ids" if scope is not None else '{"logstore", "shardId"} objects'
        raise ServiceError(ErrorCode.INVALID_PARAMETER, f"shards must be {expected}")

    async def list_groups(self, call: Call) -> Response:
        groups = self.engine.list_consumer_groups(call.path("project"), logstore=self._scope(call))
        return JSONResponse({"consumerGroups": [group_json(g) for g in groups]})

    async def create_group(self, call: Call) -> Response:
        body = call.json()
        logstores = json_field(body, "logstores", list)
        if logstores is not None and not all(isinstance(s, str) for s in logstores):
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "logstores must be names")
        options: dict[str, Any] = {
            "timeout": json_field(body, "timeout", int),
            "in_order": json_field(body, "inOrder", bool),
        }
        group = self.engine.create_consumer_group(
            call.path("project"),
            json_field(body, "name", str, ""),
            logstore=self._scope(call),
            logstores=logstores,
            **{k: v for k, v in options.items() if v is not None},
        )
        return JSONResponse(group_json(group))

    async def get_group(self, call: Call) -> Response:
        group = self.engine.get_consumer_group(
            call.path("project"), call.path("group"), logstore=self._scope(call)
        )
        return JSONResponse(group_json(group))

    async def update_group(self, call: Call) -> Response:
        body = call.json()
        group = self.engine.update_consumer_group(
            call.path("project"),
            call.path("group"),
            logstore=self._scope(call),
            timeout=json_field(body, "timeout", int),
            in_order=json_field(body, "inOrder", bool),
        )
        return JSONResponse(group_json(group))

    async def delete_group(self, call: Call) -> Response:
        self.engine.delete_consumer_group(
            call.path("project"), call.path("group"), logstore=self._scope(call)
        )
        return JSONResponse({})

    async def heartbeat(self, call: Call) -> Response:
        body = call.json()
        consumer = json_field(body, "consumer", str, "")
        if json_field(body, "leave", bool, False):
            self.engine.leave_group(
                call.path("project"), call.path("group"), consumer, logstore=self._scope(call)
            )
            return JSONResponse({"shards": []})
        held = json_field(body, "shards", list)
        refs = None if held is None else [self._ref(call, s) for s in held]
        shards = await run_in_threadpool(
            self.engine.heartbeat,
            call.path("project"),
            call.path("group"),
            consumer,
            refs,
            logstore=self._scope(call),
        )
        return JSONResponse({"shards": [self._ref_json(call, ref) for ref in shards]})

    def _checkpoint_json(self, call: Call, checkpoint: Checkpoint) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "shardId": checkpoint.shard_id,
            "cursor": "" if checkpoint.position is None else encode_cursor(checkpoint.position),
            "consumer": checkpoint.consumer,
            "updateTime": checkpoint.update_time,
        }
        if self._scope(call) is None:
            entry["logstore"] = checkpoint.logstore
        return entry

    async def get_checkpoints(self, call: Call) -> Response:
        checkpoints = self.engine.get_checkpoints(
            call.path("project"), call.path("group"), logstore=self._scope(call)
        )
        return JSONResponse({"checkpoints": [self._checkpoint_json(call, c) for c in checkpoints]})

    async def update_checkpoint(self, call: Call) -> Response:
        body = call.json()
        scope = self._scope(call)
        shard = json_field(body, "shardId", int)
        if shard is None:
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "shardId is required")
        store = scope if scope is not None else json_field(body, "logstore", str, "")
        cursor = json_field(body, "cursor", str, "")
        if not cursor:
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "cursor is required")
        await run_in_threadpool(
            lambda: self.engine.update_checkpoint(
                call.path("project"),
                call.path("group"),
                (store, shard),
                decode_cursor(cursor),
                json_field(body, "consumer", str, ""),
                force=bool(json_field(body, "force", bool, False)),
                logstore=scope,
            )
        )
        return JSONResponse({})

    async def status(self, call: Call) -> Response:
        members, lags = self.engine.consumer_group_status(
            call.path("project"), call.path("group"), logstore=self._scope(call)
        )
        return JSONResponse(
            {
                "consumers": [
                    {"name": name, "shards": [self._ref_json(call, r) for r in refs]}
                    for name, refs in members.items()
                ],
                "shards": [
                    {
                        "shard": self._ref_json(call, lag.ref),
                        "behindLogGroups": lag.behind_groups,
                        "behindSeconds": round(lag.behind_seconds, 3),
                    }
                    for lag in lags
                ],
            }
        )
