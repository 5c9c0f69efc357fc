"""``AsyncConsumerWorker``: a consumer group member on asyncio tasks, the twin of
``ConsumerGroupWorker`` (``_consumer_threaded``; see ``_consumer_base`` for how a
worker works)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import types
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from prometheus_client import CollectorRegistry

from ._async_client import AsyncLogClient
from ._consumer_base import (
    OWN_RETRY,
    OWN_TIMEOUT,
    POLL,
    Batch,
    CheckpointView,
    GroupScope,
    Member,
    ShardProgress,
    ShardState,
    Stopped,
    WorkerState,
    batch_of,
    caught_up,
    logger,
    saved_cursors,
)
from ._consumer_config import ConsumerSettings
from ._exceptions import AlreadyExistsError, LogHarborError, ShardNotHeldError
from ._models import Cursor, PulledLogGroup, PullLogsResult, ShardRef
from ._types import CursorStart

_ABORT_GRACE = 1.0  # seconds a worker waits for its cancelled tasks to end
_T = TypeVar("_T")


# ------------------------------------------------------------------ processors


class AsyncConsumerProcessor:
    """The ``ConsumerProcessor`` of an ``AsyncConsumerWorker``: its methods are
    coroutines, run on the worker's event loop (hand blocking work to a thread)."""

    async def initialize(self, shard_id: int) -> None:
        """Called before the first batch of ``shard_id``."""

    async def process(
        self, log_groups: Sequence[PulledLogGroup], checkpointer: AsyncCheckpointer
    ) -> None:
        """Handle a batch; as ``ConsumerProcessor.process``, with ``await
        checkpointer.save(force=True)`` to save at once."""
        raise NotImplementedError

    async def shutdown(self, checkpointer: AsyncCheckpointer) -> None:
        """Called when the shard is given up, before its checkpoint is saved."""


AsyncProcessorFactory = Callable[[], AsyncConsumerProcessor]


class AsyncCheckpointer(CheckpointView):
    """A shard's checkpoint, as an ``AsyncConsumerProcessor`` sees it."""

    def __init__(self, shard: _AsyncShardConsumer) -> None:
        super().__init__(shard)
        self._shard = shard

    async def save(self, force: bool = False) -> bool:
        """As ``Checkpointer.save``."""
        if not force:
            self._shard.save_requested = True
            return False
        return await self._shard.persist(self.cursor)


# ----------------------------------------------------------------- group calls


class _AsyncGroupCalls:
    """The ``_GroupCalls`` of an ``AsyncConsumerWorker``, through ``AsyncLogClient``."""

    def __init__(
        self, client: AsyncLogClient, scope: GroupScope, consumer: str, settings: ConsumerSettings
    ) -> None:
        self.client, self.scope, self.consumer, self.settings = client, scope, consumer, settings

    async def ensure_group(self) -> None:
        """Create the group, or update it to the settings' timeout and ``in_order``."""
        client, scope, logstore = self.client, self.scope, self.scope.logstore
        timeout, in_order = self.settings.timeout, self.settings.in_order
        try:
            if logstore is None:
                group = await client.create_project_consumer_group(
                    scope.project, scope.name, scope.logstores, timeout=timeout, in_order=in_order
                )
            else:
                group = await client.create_consumer_group(
                    scope.project, logstore, scope.name, timeout=timeout, in_order=in_order
                )
        except AlreadyExistsError:
            if logstore is None:
                group = await client.update_project_consumer_group(
                    scope.project, scope.name, timeout=timeout, in_order=in_order
                )
            else:
                group = await client.update_consumer_group(
                    scope.project, logstore, scope.name, timeout=timeout, in_order=in_order
                )
        scope.check(group)

    async def heartbeat(self, held: Sequence[ShardRef]) -> list[ShardRef]:
        scope, logstore, client = self.scope, self.scope.logstore, self.client
        if logstore is None:
            return await client.project_heartbeat(scope.project, scope.name, self.consumer, held)
        ids = [ref.shard_id for ref in held]
        answer = await client.heartbeat(scope.project, logstore, scope.name, self.consumer, ids)
        return [ShardRef(logstore, shard_id) for shard_id in answer]

    async def leave(self) -> None:
        scope, logstore, client = self.scope, self.scope.logstore, self.client
        if logstore is None:
            await client.leave_project_consumer_group(scope.project, scope.name, self.consumer)
        else:
            await client.leave_consumer_group(scope.project, logstore, scope.name, self.consumer)

    async def checkpoints(self) -> dict[ShardRef, Cursor]:
        scope, logstore, client = self.scope, self.scope.logstore, self.client
        if logstore is None:
            return saved_cursors(await client.get_project_checkpoints(scope.project, scope.name))
        return saved_cursors(await client.get_checkpoints(scope.project, logstore, scope.name))

    async def save_checkpoint(self, ref: ShardRef, cursor: Cursor, *, force: bool = False) -> None:
        scope, logstore, consumer = self.scope, self.scope.logstore, self.consumer
        if logstore is None:
            await self.client.update_project_checkpoint(
                scope.project, scope.name, ref, cursor, consumer=consumer, force=force
            )
        else:
            await self.client.update_checkpoint(
                scope.project,
                logstore,
                scope.name,
                ref.shard_id,
                cursor,
                consumer=consumer,
                force=force,
            )

    async def cursor(self, ref: ShardRef, start: CursorStart) -> Cursor:
        return await self.client.get_cursor(self.scope.project, ref.logstore, ref.shard_id, start)

    async def pull(self, ref: ShardRef, cursor: Cursor) -> PullLogsResult:
        """A member's pull: refused (``ShardNotHeldError``) unless it holds the shard."""
        settings = self.settings
        return await self.client.pull_logs(
            self.scope.project,
            ref.logstore,
            ref.shard_id,
            cursor,
            count=settings.fetch_count,
            max_bytes=settings.fetch_max_bytes,
            wait_ms=settings.wait_ms,
            consumer_group=self.scope.name,
            consumer=self.consumer,
        )


# ------------------------------------------------------------- shard consumers


class _AsyncShardConsumer(ShardProgress):
    """Fetcher and runner tasks of one held shard."""

    def __init__(self, worker: AsyncConsumerWorker, ref: ShardRef) -> None:
        super().__init__(worker, ref)
        self.worker = worker
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._fetcher: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=self.settings.prefetch)
        self._progress = asyncio.Condition()

    def start(self) -> None:
        name = f"logharbor-consumer-{self.worker.consumer}-{self.ref}"
        self.task = asyncio.get_running_loop().create_task(self._run(), name=name)

    def request_stop(self) -> None:
        self.stop.set()

    def prefetched(self) -> int:
        return self._queue.qsize()

    async def persist(self, cursor: Cursor) -> bool:
        """Save ``cursor`` as the checkpoint; ``False`` if the server did not take it."""
        if cursor == self.saved:
            return True
        calls = self.worker.calls
        try:
            try:
                await calls.save_checkpoint(self.ref, cursor)
            except ShardNotHeldError:
                if not self.refusal_forced():
                    raise
                await calls.save_checkpoint(self.ref, cursor, force=True)
        except LogHarborError as error:
            self.save_failed(cursor, error)
            return False
        self.record_save(cursor)
        return True

    async def _stopped_within(self, seconds: float) -> bool:
        """Wait up to ``seconds``; whether the shard is being given up."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stop.wait()
        return self.stop.is_set()

    # ------------------------------------------------------------------ runner

    async def _run(self) -> None:
        processor: AsyncConsumerProcessor | None = None
        checkpointer = AsyncCheckpointer(self)
        try:
            try:
                processor = await self._retrying("create a processor for", self._new_processor)
                initialize = processor.initialize
                await self._retrying("initialize", lambda: initialize(self.ref.shard_id))
                start = await self._retrying("find the start of", self._start_cursor)
                self.processed = start
                self.state = ShardState.CONSUMING
                name = f"logharbor-fetcher-{self.worker.consumer}-{self.ref}"
                self._fetcher = asyncio.create_task(self._fetch_loop(start), name=name)
                await self._consume(processor, checkpointer)
            except Stopped:
                pass
            except Exception:  # a bug of ours: give the shard up rather than die silently
                logger.exception("shard %s: consumer failed", self.ref)
            await self._release(processor, checkpointer)
        finally:  # also when cancelled (the worker aborts): no more I/O then
            await self._stop_fetching()
            self.state = ShardState.RELEASED
            self.worker.shard_released(self)

    async def _new_processor(self) -> AsyncConsumerProcessor:
        return self.worker.processor_factory()

    async def _retrying(self, what: str, action: Callable[[], Awaitable[_T]]) -> _T:
        retries = 0
        while True:
            if self.stop.is_set():
                raise Stopped
            try:
                return await action()
            except Exception as error:  # the processor's or the server's
                logger.warning("shard %s: cannot %s the shard: %s", self.ref, what, error)
            if await self._stopped_within(self.settings.retry.backoff(retries)):
                raise Stopped
            retries += 1

    async def _start_cursor(self) -> Cursor:
        calls = self.worker.calls
        self.saved = (await calls.checkpoints()).get(self.ref)
        if self.saved is not None:
            return self.saved
        return await calls.cursor(self.ref, self.settings.start)

    async def _next_batch(self) -> Batch | None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(POLL):
                return await self._queue.get()
        return None

    async def _consume(
        self, processor: AsyncConsumerProcessor, checkpointer: AsyncCheckpointer
    ) -> None:
        while not self.stop.is_set():
            batch = await self._next_batch()
            if batch is None:
                if self.checkpoint_due():  # a save that failed is tried again while idle
                    self.save_requested = not await self.persist(self.checkpoint_candidate())
                continue
            if batch.log_groups:
                await self._process(processor, checkpointer, batch)
            async with self._progress:
                self.record_batch(batch)
                self._progress.notify_all()
            if self.checkpoint_due() or batch.finished:
                self.save_requested = not await self.persist(self.checkpoint_candidate())

    async def _process(
        self, processor: AsyncConsumerProcessor, checkpointer: AsyncCheckpointer, batch: Batch
    ) -> None:
        policy = self.settings.retry
        retries = 0
        self.in_progress = batch
        try:
            while True:
                try:
                    await processor.process(batch.log_groups, checkpointer)
                    return
                except Exception:
                    logger.exception("shard %s: process failed (retry %d)", self.ref, retries)
                    self.save_requested = False
                if policy.gives_up(retries):
                    self.skipped += 1
                    return
                if await self._stopped_within(policy.backoff(retries)):
                    raise Stopped
                retries += 1
                self.record_retry()
        finally:
            self.in_progress = None

    async def _stop_fetching(self) -> None:
        self.stop.set()
        if self._fetcher is not None:
            self._fetcher.cancel()
            await asyncio.wait({self._fetcher})

    async def _release(
        self, processor: AsyncConsumerProcessor | None, checkpointer: AsyncCheckpointer
    ) -> None:
        self.state = ShardState.RELEASING
        await self._stop_fetching()
        while not self._queue.empty():  # batches not processed are dropped
            self._queue.get_nowait()
        if processor is not None and self.processed is not None:
            try:
                await processor.shutdown(checkpointer)
            except Exception:
                logger.exception("shard %s: processor shutdown failed", self.ref)
        if self.processed is not None:
            await self.persist(self.processed)

    # ----------------------------------------------------------------- fetcher

    async def _fetch_loop(self, cursor: Cursor) -> None:
        """Runs until the shard is read to its end, or the runner cancels it."""
        calls = self.worker.calls
        known_end: int | None = None
        failures = 0
        while True:
            if caught_up(cursor, known_end):
                async with self._progress:
                    await self._progress.wait_for(functools.partial(self.processed_to, cursor))
            try:
                result = await calls.pull(self.ref, cursor)
            except Exception as error:  # keep trying until cancelled
                await asyncio.sleep(self.pull_failed(error, failures))
                failures += 1
                continue
            failures = 0
            known_end = result.end_cursor.position
            batch = batch_of(result)
            if batch.log_groups or batch.finished:
                await self._queue.put(batch)  # waits while ``prefetch`` batches are queued
            else:
                self.record_end(result.end_cursor)
            if batch.finished:
                return
            cursor = result.next_cursor


class AsyncConsumerWorker(Member[_AsyncShardConsumer]):
    """The asyncio twin of ``ConsumerGroupWorker``: tasks instead of threads, an
    ``AsyncLogClient``, and an ``AsyncConsumerProcessor`` per shard.

    ::

        class Printer(AsyncConsumerProcessor):
            async def process(self, log_groups, checkpointer):
                for group in log_groups:
                    for log in group.logs:
                        print(checkpointer.logstore, log.contents)

        async with AsyncConsumerWorker(
            Printer, endpoint="http://127.0.0.1:8480", project="web", logstore="access",
            group="printers", consumer="host-1",
        ) as worker:
            await worker.join()

    Same settings, checkpoints and statistics as the threaded worker; a shard holds
    at most ``settings.prefetch`` + 2 pulled batches (see ``ConsumerSettings``).
    ``shutdown`` gives every shard up gracefully; if that takes longer than its
    timeout, or the task awaiting it is cancelled, the worker cancels its tasks
    (processors stuck in ``process`` included) and leaves the shards' checkpoints
    where they were saved last: the group moves them once the worker's heartbeats
    have timed out.
    """

    def __init__(
        self,
        processor: AsyncProcessorFactory,
        *,
        project: str,
        logstore: str | None = None,
        logstores: Sequence[str] | None = None,
        group: str,
        consumer: str,
        client: AsyncLogClient | None = None,
        endpoint: str | None = None,
        access_key_id: str | None = None,
        access_key_secret: str | None = None,
        settings: ConsumerSettings | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__(
            project=project,
            logstore=logstore,
            logstores=logstores,
            group=group,
            consumer=consumer,
            settings=settings,
            registry=registry,
        )
        if (client is None) == (endpoint is None):
            raise ValueError("give either client or endpoint")
        self._owns_client = client is None
        self.client = client or AsyncLogClient(
            str(endpoint),
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            timeout=OWN_TIMEOUT,
            retry=OWN_RETRY,
        )
        self.calls = _AsyncGroupCalls(self.client, self.scope, consumer, self.settings)
        self.processor_factory = processor
        self._closing = False
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _new_shard(self, ref: ShardRef) -> _AsyncShardConsumer:
        return _AsyncShardConsumer(self, ref)

    # --------------------------------------------------------------- lifecycle

    async def start(self) -> AsyncConsumerWorker:
        """Create or update the group, then start heartbeating and consuming."""
        self._begin()
        try:
            if self.settings.update_group:
                await self.calls.ensure_group()
        except BaseException:
            await self._finish()
            raise
        name = f"logharbor-heartbeat-{self.consumer}"
        self._task = asyncio.get_running_loop().create_task(self._heartbeat_loop(), name=name)
        return self

    async def shutdown(self, timeout: float | None = 30.0) -> bool:
        """Give every shard up (processor shutdown, checkpoint saved), then stop.

        Waits at most ``timeout`` seconds (``None``: until done) and returns whether
        the worker stopped cleanly within it; if not, its tasks are cancelled (see
        the class).
        """
        if not self._begin_stopping():
            self._stopped.set()
            return True
        self._closing = True
        self._wake.set()
        try:
            if await self.join(timeout):
                return True
        except asyncio.CancelledError:
            await self._abort()
            raise
        await self._abort()
        return False

    async def join(self, timeout: float | None = None) -> bool:
        """Wait until the worker has stopped (after ``shutdown``); whether it has."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._stopped.wait()
        return self._stopped.is_set()

    async def _abort(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()  # its cleanup cancels the shards' tasks
            await asyncio.wait({self._task}, timeout=2 * _ABORT_GRACE)

    async def __aenter__(self) -> AsyncConsumerWorker:
        if self._state is WorkerState.CREATED:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        await self.shutdown()

    async def _finish(self) -> None:
        tasks = {shard.task for shard in self._held() if shard.task is not None}
        for task in tasks:  # left only when the heartbeat loop failed or was cancelled
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_ABORT_GRACE)
        self._mark_stopped()
        if self._owns_client:
            await self.client.close()
        self._stopped.set()

    # ---------------------------------------------------------------- heartbeat

    def wake_heartbeat(self) -> None:
        self._wake.set()

    async def _nap(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        self._wake.clear()

    async def _heartbeat_loop(self) -> None:
        try:
            while not self._closing:
                assigned = await self._heartbeat()
                if assigned is not None and not self._closing:
                    self._reconcile(assigned)
                await self._nap(self.settings.heartbeat_interval)
            await self._drain()
        except Exception:
            logger.exception("consumer %s: heartbeat task failed", self.consumer)
        finally:
            await self._finish()

    async def _heartbeat(self) -> set[ShardRef] | None:
        """Report the shards held; the shards to hold, or None when unknown."""
        held = self.held_shards()
        sent = self.settings.clock()
        try:
            answer = await self.calls.heartbeat(held)
        except LogHarborError as error:
            return self._heartbeat_failed(error)
        return self._heartbeat_answered(sent, answer)

    async def _drain(self) -> None:
        """Stopping: give every shard up, heartbeating meanwhile so that the group
        does not move a shard before its checkpoint is saved."""
        for shard in self._held():
            shard.request_stop()
        while self._held():
            await self._heartbeat()
            await self._nap(min(self.settings.heartbeat_interval, 0.5))
        try:  # every checkpoint is saved: the other members may take over at once
            await self.calls.leave()
        except LogHarborError as error:
            self._left_failed(error)
