"""``AsyncLogClient``: the native API over ``httpx.AsyncClient``.

Every method is the coroutine twin of the ``LogClient`` method of the same name;
see there for what each does.
"""

from __future__ import annotations

import types
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from . import _requests as api
from ._client import DEFAULT_RETRY, DEFAULT_TIMEOUT, USER_AGENT, BaseClient
from ._config import RetryPolicy, Timeout
from ._exceptions import LogHarborError, to_error
from ._models import (
    Checkpoint,
    ConsumerGroup,
    Cursor,
    GroupStatus,
    Histogram,
    ListResult,
    LogGroup,
    LogItem,
    Logstore,
    Project,
    ProjectGroupStatus,
    PulledLogGroup,
    PullLogsResult,
    PutLogsResult,
    QueriedLog,
    QueryResult,
    Shard,
    ShardRef,
)
from ._requests import TimeBound
from ._types import CompressionInput, CursorStart, PairsInput

T = TypeVar("T")


class AsyncLogClient(BaseClient):
    """A client of a LogHarbor server's native API, for asyncio.

    ::

        async with AsyncLogClient("http://127.0.0.1:5080") as c:
            await c.put_logs("web", "access", [LogItem({"path": "/", "status": "200"})])
    """

    def __init__(
        self,
        endpoint: str,
        *,
        access_key_id: str | None = None,
        access_key_secret: str | None = None,
        timeout: Timeout | float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            endpoint,
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            timeout=timeout,
            retry=retry,
        )
        self._http = httpx.AsyncClient(
            base_url=self.endpoint,
            timeout=self.timeout.to_httpx(),
            headers={"user-agent": USER_AGENT},
            transport=transport,
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncLogClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        await self.close()

    async def _send(self, call: api.Call[T]) -> T:
        retries = 0
        while True:
            try:
                return await self._exchange(call)
            except LogHarborError as error:
                delay = self.retry.delay_before_retry(error, retries)
                if delay is None:
                    raise
            await self.retry.async_sleep(delay)
            retries += 1

    async def _exchange(self, call: api.Call[T]) -> T:
        request = self._request(self._http, call)
        try:
            response = await self._http.send(request)
        except httpx.HTTPError as exc:
            raise to_error(exc) from exc
        return call.answer(response)

    # ------------------------------------------------------------ projects

    async def create_project(self, name: str, description: str = "") -> Project:
        return await self._send(api.create_project(name, description))

    async def get_project(self, name: str) -> Project:
        return await self._send(api.get_project(name))

    async def list_projects(self, *, offset: int = 0, size: int = 100) -> ListResult[Project]:
        return await self._send(api.list_projects(offset, size))

    async def update_project(self, name: str, description: str) -> Project:
        return await self._send(api.update_project(name, description))

    async def delete_project(self, name: str) -> None:
        return await self._send(api.delete_project(name))

    # ----------------------------------------------------------- logstores

    async def create_logstore(
        self,
        project: str,
        name: str,
        *,
        ttl: int = 30,
        shard_count: int = 2,
        auto_split: bool = False,
        max_split_shard: int = 64,
    ) -> Logstore:
        return await self._send(
            api.create_logstore(
                project,
                name,
                ttl=ttl,
                shard_count=shard_count,
                auto_split=auto_split,
                max_split_shard=max_split_shard,
            )
        )

    async def get_logstore(self, project: str, name: str) -> Logstore:
        return await self._send(api.get_logstore(project, name))

    async def list_logstores(
        self, project: str, *, offset: int = 0, size: int = 100
    ) -> ListResult[Logstore]:
        return await self._send(api.list_logstores(project, offset, size))

    async def update_logstore(
        self,
        project: str,
        name: str,
        *,
        ttl: int | None = None,
        auto_split: bool | None = None,
        max_split_shard: int | None = None,
    ) -> Logstore:
        return await self._send(
            api.update_logstore(
                project, name, ttl=ttl, auto_split=auto_split, max_split_shard=max_split_shard
            )
        )

    async def delete_logstore(self, project: str, name: str) -> None:
        return await self._send(api.delete_logstore(project, name))

    # -------------------------------------------------------------- shards

    async def list_shards(self, project: str, logstore: str) -> list[Shard]:
        return await self._send(api.list_shards(project, logstore))

    async def split_shard(
        self, project: str, logstore: str, shard_id: int, split_key: str
    ) -> list[Shard]:
        return await self._send(api.split_shard(project, logstore, shard_id, split_key))

    async def merge_shard(self, project: str, logstore: str, shard_id: int) -> list[Shard]:
        return await self._send(api.merge_shard(project, logstore, shard_id))

    # ----------------------------------------------------------- writing

    async def put_logs(
        self,
        project: str,
        logstore: str,
        logs: LogGroup | Sequence[LogItem],
        *,
        topic: str = "",
        source: str = "",
        tags: PairsInput | None = None,
        hash_key: str | bytes | None = None,
        compression: CompressionInput = "lz4",
    ) -> PutLogsResult:
        return await self._send(
            api.put_logs(
                project,
                logstore,
                logs,
                topic=topic,
                source=source,
                tags=tags,
                hash_key=hash_key,
                compression=compression,
            )
        )

    async def put_log_group_raw(
        self,
        project: str,
        logstore: str,
        raw_protobuf: bytes,
        *,
        hash_key: str | bytes | None = None,
        compression: CompressionInput = "lz4",
    ) -> PutLogsResult:
        return await self._send(
            api.put_log_group_raw(
                project, logstore, raw_protobuf, hash_key=hash_key, compression=compression
            )
        )

    # ------------------------------------------------------------ search

    async def create_index(
        self, project: str, logstore: str, config: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._send(api.create_index(project, logstore, config))

    async def update_index(
        self, project: str, logstore: str, config: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._send(api.update_index(project, logstore, config))

    async def get_index(self, project: str, logstore: str) -> dict[str, Any]:
        return await self._send(api.get_index(project, logstore))

    async def delete_index(self, project: str, logstore: str) -> None:
        await self._send(api.delete_index(project, logstore))

    async def query(
        self,
        project: str,
        logstore: str,
        query: str = "*",
        *,
        start: TimeBound,
        end: TimeBound,
        line: int = 100,
        offset: int = 0,
        reverse: bool = False,
        topic: str | None = None,
    ) -> QueryResult:
        return await self._send(
            api.query(
                project,
                logstore,
                query,
                start=start,
                end=end,
                line=line,
                offset=offset,
                reverse=reverse,
                topic=topic,
            )
        )

    async def histogram(
        self,
        project: str,
        logstore: str,
        query: str = "*",
        *,
        start: TimeBound,
        end: TimeBound,
        interval: int | None = None,
        topic: str | None = None,
    ) -> Histogram:
        return await self._send(
            api.histogram(
                project, logstore, query, start=start, end=end, interval=interval, topic=topic
            )
        )

    async def context(
        self, project: str, logstore: str, log: QueriedLog, *, back: int = 10, forward: int = 10
    ) -> tuple[list[QueriedLog], list[QueriedLog]]:
        return await self._send(api.context(project, logstore, log, back=back, forward=forward))

    # ----------------------------------------------------------- reading

    async def get_cursor(
        self, project: str, logstore: str, shard_id: int, start: CursorStart
    ) -> Cursor:
        return await self._send(api.get_cursor(project, logstore, shard_id, start))

    async def get_cursor_time(self, project: str, logstore: str, shard_id: int, cursor: str) -> int:
        return await self._send(api.get_cursor_time(project, logstore, shard_id, cursor))

    async def pull_logs(
        self,
        project: str,
        logstore: str,
        shard_id: int,
        cursor: str,
        *,
        count: int = 100,
        max_bytes: int | None = None,
        end_cursor: str | None = None,
        wait_ms: int = 0,
        consumer_group: str | None = None,
        consumer: str | None = None,
    ) -> PullLogsResult:
        return await self._send(
            api.pull_logs(
                project,
                logstore,
                shard_id,
                cursor,
                count=count,
                max_bytes=max_bytes,
                end_cursor=end_cursor,
                wait_ms=wait_ms,
                consumer_group=consumer_group,
                consumer=consumer,
            )
        )

    async def tail(
        self,
        project: str,
        logstore: str,
        shard_id: int,
        *,
        start: CursorStart | Cursor = "end",
        count: int = 100,
        wait_ms: int = 10_000,
    ) -> AsyncGenerator[PulledLogGroup, None]:
        cursor = (
            start
            if isinstance(start, Cursor)
            else await self.get_cursor(project, logstore, shard_id, start)
        )
        while True:
            result = await self.pull_logs(
                project, logstore, shard_id, cursor, count=count, wait_ms=wait_ms
            )
            for group in result.log_groups:
                yield group
            if result.shard_finished:
                return
            cursor = result.next_cursor

    # ----------------------------------------------------- consumer groups

    async def create_consumer_group(
        self, project: str, logstore: str, name: str, *, timeout: int = 60, in_order: bool = False
    ) -> ConsumerGroup:
        return await self._send(
            api.create_consumer_group(project, logstore, name, timeout=timeout, in_order=in_order)
        )

    async def get_consumer_group(self, project: str, logstore: str, name: str) -> ConsumerGroup:
        return await self._send(api.get_consumer_group(project, logstore, name))

    async def list_consumer_groups(self, project: str, logstore: str) -> list[ConsumerGroup]:
        return await self._send(api.list_consumer_groups(project, logstore))

    async def update_consumer_group(
        self,
        project: str,
        logstore: str,
        name: str,
        *,
        timeout: int | None = None,
        in_order: bool | None = None,
    ) -> ConsumerGroup:
        return await self._send(
            api.update_consumer_group(project, logstore, name, timeout=timeout, in_order=in_order)
        )

    async def delete_consumer_group(self, project: str, logstore: str, name: str) -> None:
        return await self._send(api.delete_consumer_group(project, logstore, name))

    async def heartbeat(
        self, project: str, logstore: str, group: str, consumer: str, held: Sequence[int] | None
    ) -> list[int]:
        return await self._send(api.heartbeat(project, logstore, group, consumer, held))

    async def leave_consumer_group(
        self, project: str, logstore: str, group: str, consumer: str
    ) -> None:
        await self._send(api.leave_consumer_group(project, logstore, group, consumer))

    async def get_checkpoints(self, project: str, logstore: str, group: str) -> list[Checkpoint]:
        return await self._send(api.get_checkpoints(project, logstore, group))

    async def update_checkpoint(
        self,
        project: str,
        logstore: str,
        group: str,
        shard_id: int,
        cursor: str,
        *,
        consumer: str,
        force: bool = False,
    ) -> None:
        return await self._send(
            api.update_checkpoint(
                project, logstore, group, shard_id, cursor, consumer=consumer, force=force
            )
        )

    async def get_consumer_group_status(
        self, project: str, logstore: str, group: str
    ) -> GroupStatus:
        return await self._send(api.get_consumer_group_status(project, logstore, group))

    # ------------------------------------------- a project's consumer groups

    async def create_project_consumer_group(
        self,
        project: str,
        name: str,
        logstores: Sequence[str],
        *,
        timeout: int = 60,
        in_order: bool = False,
    ) -> ConsumerGroup:
        return await self._send(
            api.create_project_consumer_group(
                project, name, logstores, timeout=timeout, in_order=in_order
            )
        )

    async def get_project_consumer_group(self, project: str, name: str) -> ConsumerGroup:
        return await self._send(api.get_project_consumer_group(project, name))

    async def list_project_consumer_groups(self, project: str) -> list[ConsumerGroup]:
        return await self._send(api.list_project_consumer_groups(project))

    async def update_project_consumer_group(
        self, project: str, name: str, *, timeout: int | None = None, in_order: bool | None = None
    ) -> ConsumerGroup:
        return await self._send(
            api.update_project_consumer_group(project, name, timeout=timeout, in_order=in_order)
        )

    async def delete_project_consumer_group(self, project: str, name: str) -> None:
        return await self._send(api.delete_project_consumer_group(project, name))

    async def project_heartbeat(
        self, project: str, group: str, consumer: str, held: Sequence[ShardRef] | None
    ) -> list[ShardRef]:
        return await self._send(api.project_heartbeat(project, group, consumer, held))

    async def leave_project_consumer_group(self, project: str, group: str, consumer: str) -> None:
        await self._send(api.leave_project_consumer_group(project, group, consumer))

    async def get_project_checkpoints(self, project: str, group: str) -> list[Checkpoint]:
        return await self._send(api.get_project_checkpoints(project, group))

    async def update_project_checkpoint(
        self,
        project: str,
        group: str,
        shard: ShardRef,
        cursor: str,
        *,
        consumer: str,
        force: bool = False,
    ) -> None:
        return await self._send(
            api.update_project_checkpoint(
                project, group, shard, cursor, consumer=consumer, force=force
            )
        )

    async def get_project_consumer_group_status(
        self, project: str, group: str
    ) -> ProjectGroupStatus:
        return await self._send(api.get_project_consumer_group_status(project, group))
