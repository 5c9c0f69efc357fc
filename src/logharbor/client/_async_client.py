"""``AsyncLogClient``: the native API over ``httpx.AsyncClient``.

Every method is the coroutine twin of the ``LogClient`` method of the same name;
see there for what each does.
"""

from __future__ import annotations

import types
from collections.abc import AsyncGenerator, Sequence
from typing import TypeVar

import httpx

from . import _requests as api
from ._client import DEFAULT_RETRY, DEFAULT_TIMEOUT, USER_AGENT, BaseClient
from ._config import RetryPolicy, Timeout
from ._exceptions import LogHarborError, to_error
from ._models import (
    Cursor,
    ListResult,
    LogGroup,
    LogItem,
    Logstore,
    Project,
    PulledLogGroup,
    PullLogsResult,
    PutLogsResult,
    Shard,
)
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
