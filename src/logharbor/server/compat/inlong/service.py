"""What the InLong TCP and HTTP sources share: from a batch to a durable write.

The mapping itself (names, log group) is the engine's (``engine/mapping.py``);
this adds the event-loop side: creating streams off the loop, waiting for room
in the write queue, and storing a retried batch (same ``sid``) only once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable

from ....engine import Engine, PutResult
from ....engine.dedupe import RecentIds
from ....engine.mapping import InLongBatch, inlong_log_group, inlong_project, open_inlong_stream
from ....protocol.errors import ErrorCode, ServiceError
from .codes import DataProxyErrCode, Rejected

log = logging.getLogger("logharbor.inlong")


_INLINE_BYTES = 64 << 10  # batches built on the event loop; larger ones in a thread


class InLongService:
    """Writes InLong batches into the engine.

    ``submit`` returns once the batch is queued for writing (it waits only when
    the write queue is full, which is the senders' backpressure) and gives an
    awaitable that completes once the batch is durable, or raises the
    ``ServiceError`` that refused it.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        auto_create: bool = False,
        recent: RecentIds[asyncio.Future[None]] | None = None,
    ) -> None:
        self.engine = engine
        self.auto_create = auto_create
        self.recent: RecentIds[asyncio.Future[None]] = recent or RecentIds(clock=engine.clock)
        self.closing = False
        self.batches = 0
        self.logs = 0
        self.duplicates = 0
        self._names = functools.lru_cache(maxsize=4096)(self._open_existing)

    def _open_existing(self, group_id: str, stream_id: str) -> tuple[str, str]:
        return open_inlong_stream(self.engine, group_id, stream_id, auto_create=False)

    async def stream(self, group_id: str, stream_id: str) -> tuple[str, str]:
        """The project and logstore of a group and stream, created if allowed."""
        try:
            project, logstore = self._names(group_id, stream_id)
            self.engine.require_logstore(project, logstore)  # deleted since it was cached?
            return project, logstore
        except ServiceError as exc:
            if not self.auto_create or exc.code not in (
                ErrorCode.PROJECT_NOT_EXIST,
                ErrorCode.LOGSTORE_NOT_EXIST,
            ):
                raise
        self._names.cache_clear()
        return await asyncio.to_thread(
            open_inlong_stream, self.engine, group_id, stream_id, auto_create=True
        )

    def knows_group(self, group_id: str) -> bool:
        """Whether discovery should answer for this group: its project exists, or
        may be created on first write."""
        try:
            project = inlong_project(group_id)
            if not self.auto_create:
                self.engine.get_project(project)
        except ServiceError:
            return False
        return True

    async def submit(self, batch: InLongBatch, sid: str | None = None) -> Awaitable[None]:
        if self.closing:
            raise Rejected(DataProxyErrCode.SERVICE_CLOSED, "the server is shutting down")
        project, logstore = await self.stream(batch.group_id, batch.stream_id)
        key = (project, logstore, sid)
        if sid:
            earlier = self.recent.get(key)
            if earlier is not None:
                self.duplicates += 1
                return asyncio.shield(earlier)
        loop = asyncio.get_running_loop()
        durable: asyncio.Future[None] = loop.create_future()
        durable.add_done_callback(_retrieve)
        if sid:
            self.recent.put(key, durable)  # before any await: a retry finds it
        try:
            limits, now = self.engine.limits, self.engine.clock()
            if sum(map(len, batch.messages)) + len(batch.messages) * 64 <= _INLINE_BYTES:
                group = inlong_log_group(batch, limits, now=now)
            else:  # a large batch is built off the event loop
                group = await asyncio.to_thread(inlong_log_group, batch, limits, now=now)
            written = await self.engine.put_from_loop(project, logstore, group)
        except BaseException as exc:
            self.recent.discard(key, durable)
            if isinstance(exc, Exception):
                durable.set_exception(exc)
            else:
                durable.cancel()
            raise

        def settle(result: asyncio.Future[PutResult]) -> None:
            if durable.done():
                return
            error = result.exception() if not result.cancelled() else asyncio.CancelledError()
            if error is None:
                self.batches += 1
                self.logs += len(batch.messages)
                durable.set_result(None)
            else:
                self.recent.discard(key, durable)
                durable.set_exception(error)

        asyncio.wrap_future(written, loop=loop).add_done_callback(settle)
        return asyncio.shield(durable)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # a failure is reported to the sender, not to the loop's log
