"""TLS consumer groups over the engine's project-level groups: a TLS group reads a
list of topics of one project, its members heartbeat without reporting what they
hold (the engine fences a member that lost a shard on its next ConsumeLogs), and
checkpoints are accepted from anyone (ModifyCheckPoint names no consumer)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from ....engine import Engine
from ....engine.consumer import ConsumerGroupInfo
from ....engine.resource_ids import logstore_id, project_id
from ....engine.types import NANOS_PER_SECOND, ProjectInfo
from ....protocol.codec import decode_cursor, encode_cursor, parse_decimal
from ....protocol.errors import ErrorCode, ServiceError
from .call import TlsCall
from .resources import _paged, ok

MAX_HEARTBEAT_TTL = 300


class GroupAPI:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _topic_ids(self, project: str, names: tuple[str, ...]) -> dict[str, str]:
        ids = {}
        for name in names:
            try:
                ids[name] = logstore_id(self.engine.get_logstore(project, name))
            except ServiceError:
                continue  # deleted since
        return ids

    def _topics(self, call: TlsCall, project: ProjectInfo) -> list[str]:
        ids = call.strings("TopicIDList")
        if not ids:
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "TopicIDList is required")
        names = []
        for tid in ids:
            info = call.ids.logstore(tid)
            if info.project != project.name:
                raise ServiceError(
                    ErrorCode.INVALID_PARAMETER,
                    f"topic {tid} does not belong to project {project_id(project)}",
                )
            names.append(info.name)
        return names

    def group_json(self, project: ProjectInfo, group: ConsumerGroupInfo) -> dict[str, Any]:
        topics = list(self._topic_ids(project.name, group.logstores).values())
        return {
            "ProjectID": project_id(project),
            "ProjectName": project.name,
            "ConsumerGroupName": group.name,
            "HeartbeatTTL": group.timeout,
            "OrderedConsume": group.in_order,
            "TopicIDList": topics,
            "topic_id": topics,
        }

    async def create_group(self, call: TlsCall) -> Response:
        project = call.project("ProjectID")
        self.engine.create_consumer_group(
            project.name,
            call.text("ConsumerGroupName"),
            logstores=self._topics(call, project),
            timeout=call.integer("HeartbeatTTL", 60, low=1, high=MAX_HEARTBEAT_TTL),
            in_order=bool(call.flag("OrderedConsume")),
        )
        return ok()

    async def describe_groups(self, call: TlsCall) -> Response:
        project = call.project("ProjectID")
        name = call.text("ConsumerGroupName", required=False)
        topic = call.text("TopicId", required=False)
        groups = [
            g
            for g in self.engine.list_consumer_groups(project.name)
            if not g.scope and (not name or g.name == name)
        ]
        rendered = [self.group_json(project, g) for g in groups]
        if topic:
            rendered = [g for g in rendered if topic in g["TopicIDList"]]
        return ok({"ConsumerGroups": _paged(call, rendered), "Total": len(rendered)})

    async def modify_group(self, call: TlsCall) -> Response:
        project = call.project("ProjectID")
        name = call.text("ConsumerGroupName")
        if call.strings("TopicIDList") is not None:
            group = self.engine.get_consumer_group(project.name, name)
            if sorted(self._topics(call, project)) != sorted(group.logstores):
                raise ServiceError(
                    ErrorCode.INVALID_PARAMETER, "the topics of a consumer group cannot change"
                )
        ttl = call.raw("HeartbeatTTL")
        self.engine.update_consumer_group(
            project.name,
            name,
            timeout=None
            if ttl is None
            else call.integer("HeartbeatTTL", low=1, high=MAX_HEARTBEAT_TTL),
            in_order=call.flag("OrderedConsume"),
        )
        return ok()

    async def delete_group(self, call: TlsCall) -> Response:
        project = call.project("ProjectID")
        self.engine.delete_consumer_group(project.name, call.text("ConsumerGroupName"))
        return ok()

    async def heartbeat(self, call: TlsCall) -> Response:
        project = call.project("ProjectID")
        name = call.text("ConsumerGroupName")
        refs = self.engine.heartbeat(project.name, name, call.text("ConsumerName"), None)
        ids = self._topic_ids(project.name, tuple({store for store, _ in refs}))
        shards = [{"TopicID": ids[s], "ShardID": shard} for s, shard in refs if s in ids]
        return ok({"Shards": shards})

    async def describe_checkpoint(self, call: TlsCall) -> Response:
        project = call.project("ProjectID")
        topic = call.topic()
        shard = call.integer("ShardId")
        name = call.text("ConsumerGroupName")
        for checkpoint in self.engine.get_checkpoints(project.name, name):
            if (checkpoint.logstore, checkpoint.shard_id) == (topic.name, shard):
                position = checkpoint.position
                return ok(
                    {
                        "ShardID": shard,
                        "Checkpoint": "" if position is None else encode_cursor(position),
                        "UpdateTime": checkpoint.update_time,
                        "Consumer": checkpoint.consumer,
                    }
                )
        if topic.name not in self.engine.get_consumer_group(project.name, name).logstores:
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER, f"consumer group {name!r} does not read this topic"
            )
        raise ServiceError(ErrorCode.SHARD_NOT_EXIST, f"shard {shard} does not exist")

    async def modify_checkpoint(self, call: TlsCall) -> Response:
        project = call.project("ProjectID")
        topic = call.topic("TopicID")
        self.engine.update_checkpoint(
            project.name,
            call.text("ConsumerGroupName"),
            (topic.name, call.integer("ShardID")),
            decode_cursor(call.text("Checkpoint")),
            "",
            force=True,  # no consumer identity in the request: last write wins
        )
        return ok()

    async def reset_checkpoint(self, call: TlsCall) -> Response:
        """Every checkpoint of the group to ``Position``: begin, end or Unix seconds."""
        project = call.project("ProjectID")
        name = call.text("ConsumerGroupName")
        position = call.text("Position").strip().lower()
        seconds = parse_decimal(position, 12)
        if position not in ("begin", "end") and seconds is None:
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER, "Position must be begin, end or a Unix time"
            )
        for checkpoint in self.engine.get_checkpoints(project.name, name):
            at: Any = position if seconds is None else seconds * NANOS_PER_SECOND
            cursor = self.engine.cursor(project.name, checkpoint.logstore, checkpoint.shard_id, at)
            self.engine.update_checkpoint(
                project.name,
                name,
                (checkpoint.logstore, checkpoint.shard_id),
                cursor,
                "",
                force=True,
            )
        return ok()
