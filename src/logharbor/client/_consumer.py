"""Consumer groups: a worker runs one processor per shard its group gives it.

``ConsumerGroupWorker`` (threads, ``ConsumerProcessor``) and ``AsyncConsumerWorker``
(asyncio tasks, ``AsyncConsumerProcessor``) behave alike. A worker is a member of a
logstore's group (``logstore=``) or of a project's group over several logstores
(``logstores=``); either way a shard is a ``ShardRef``: its logstore and its id.

Per worker, a heartbeat loop reports every shard the worker still holds (including
ones it is giving up but has not finished with) and starts or stops shard consumers
to match the answer.

Per held shard, a fetcher pulls with long polling into a queue of at most
``prefetch`` batches, and a runner calls the processor, batch after batch, in order,
and saves checkpoints. The fetcher pulls as a member: the server refuses a
member's pull of a shard it does not hold (in a logstore's group, or in a project's
group that reads the logstore).

A checkpoint is always the cursor to resume from: the first log group not yet
processed. Giving up a shard (the group moved it, or the worker stops) goes:
stop fetching, drop the batches not yet processed, ``processor.shutdown``, save the
checkpoint, and only then stop reporting the shard, so that its next holder starts
exactly where this one stopped.

A fetch at the end of a readonly shard tells an ``in_order`` group that the shard
is finished, and hands its children out; so a fetcher pulls at the end it last saw
only once every log group before it was processed.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import enum
import functools
import logging
import queue
import threading
import types
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

from prometheus_client import CollectorRegistry

from . import _requests as api
from ._async_client import AsyncLogClient
from ._client import LogClient
from ._config import RetryPolicy, Timeout
from ._consumer_config import ConsumerSettings
from ._consumer_metrics import ConsumerMetrics, consumer_metrics
from ._exceptions import AlreadyExistsError, LogHarborError, ShardNotHeldError
from ._models import ConsumerGroup, Cursor, PulledLogGroup, PullLogsResult
from ._types import CursorStart

logger = logging.getLogger("logharbor.consumer")

_POLL = 0.05  # seconds: how often idle loops look at their stop flags
_ABORT_GRACE = 1.0  # seconds an async worker waits for its cancelled tasks to end
# a worker's own client: heartbeats must not outlast the group timeout by retrying for long
_OWN_TIMEOUT = Timeout(connect=2.0, read=10.0, write=10.0, pool=5.0)
_OWN_RETRY = RetryPolicy(max_retries=2, backoff_base=0.05, backoff_max=0.5)
_T = TypeVar("_T")


class ShardRef(NamedTuple):
    """A shard a group reads: its logstore and its id."""

    logstore: str
    shard_id: int

    def __str__(self) -> str:
        return f"{self.logstore}/{self.shard_id}"


# ------------------------------------------------------------------ processors


class ConsumerProcessor:
    """Override ``process`` (and, if needed, ``initialize`` and ``shutdown``).

    A worker makes one processor per shard it holds, and calls it from one thread:
    ``initialize(shard_id)`` once, ``process`` for each batch in order, and
    ``shutdown`` once when it gives the shard up. ``checkpointer.logstore`` names
    the shard's logstore (a project's group reads several).
    """

    def initialize(self, shard_id: int) -> None:
        """Called before the first batch of ``shard_id``."""

    def process(self, log_groups: Sequence[PulledLogGroup], checkpointer: Checkpointer) -> None:
        """Handle a batch. Raising makes the worker call again with the same batch
        (see ``ProcessorRetry``). ``checkpointer.save()`` marks this batch processed
        and saves the checkpoint once ``process`` returns; ``save(force=True)`` saves
        it at once."""
        raise NotImplementedError

    def shutdown(self, checkpointer: Checkpointer) -> None:
        """Called when the shard is given up, before its checkpoint is saved: flush
        what the processor buffers here."""


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


ProcessorFactory = Callable[[], ConsumerProcessor]
AsyncProcessorFactory = Callable[[], AsyncConsumerProcessor]


class _CheckpointView:
    """What a processor sees of its shard's checkpoint.

    ``cursor`` is where the shard resumes once the batch being processed is done
    (outside ``process``: the first log group not yet processed); ``saved`` is the
    checkpoint the server holds, as far as this worker knows.
    """

    def __init__(self, shard: _ShardProgress) -> None:
        self._progress = shard

    @property
    def shard(self) -> ShardRef:
        return self._progress.ref

    @property
    def logstore(self) -> str:
        return self._progress.ref.logstore

    @property
    def shard_id(self) -> int:
        return self._progress.ref.shard_id

    @property
    def cursor(self) -> Cursor:
        return self._progress.checkpoint_candidate()

    @property
    def saved(self) -> Cursor | None:
        return self._progress.saved


class Checkpointer(_CheckpointView):
    """A shard's checkpoint, as a ``ConsumerProcessor`` sees it."""

    def __init__(self, shard: _ShardConsumer) -> None:
        super().__init__(shard)
        self._shard = shard

    def save(self, force: bool = False) -> bool:
        """Save ``cursor`` as the checkpoint: with ``force`` now (``True`` once the
        server has it), otherwise once the batch being processed is done."""
        if not force:
            self._shard.save_requested = True
            return False
        return self._shard.persist(self.cursor)


class AsyncCheckpointer(_CheckpointView):
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


# ------------------------------------------------------------------ statistics


class ShardState(enum.Enum):
    STARTING = "starting"  # initializing the processor, finding the start cursor
    CONSUMING = "consuming"
    RELEASING = "releasing"  # shutting the processor down and saving the checkpoint
    RELEASED = "released"


@dataclass(frozen=True, slots=True)
class ShardStatistics:
    logstore: str
    shard_id: int
    state: ShardState
    processed_log_groups: int
    processed_logs: int
    processed_raw_bytes: int
    prefetched_batches: int
    lag_log_groups: int  # log groups between the processed position and the shard's end
    cursor: Cursor | None  # the first log group not yet processed
    checkpoint: Cursor | None  # the last checkpoint saved
    retries: int  # calls of ``process`` that were a retry
    skipped_batches: int  # batches given up after ``max_retries``


class WorkerState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class WorkerStatistics:
    state: WorkerState
    shards: Mapping[ShardRef, ShardStatistics]  # the shards held now
    processed_log_groups: int  # since the worker started, all shards
    processed_logs: int
    heartbeats: int
    heartbeat_failures: int
    released_shards: int


# ----------------------------------------------------------------- group calls


class _GroupCalls:
    """The native API's calls for one group: a logstore's (shards written as ids) or
    a project's over several logstores (shards written as ``{"logstore", "shardId"}``).

    ``LogClient`` has methods for a logstore's groups only; these calls serve both
    kinds alike, and are sent with the client's ``_send`` (its retries, signing and
    transport).
    """

    def __init__(
        self,
        project: str,
        name: str,
        *,
        logstore: str | None,
        logstores: Sequence[str] | None,
    ) -> None:
        if logstore is not None and logstores is None:
            self.logstores: tuple[str, ...] = (logstore,)
        elif logstore is None and logstores and not isinstance(logstores, str):
            self.logstores = tuple(dict.fromkeys(logstores))
        else:
            raise ValueError(
                "give either logstore (its group) or logstores (a list: a project's group)"
            )
        self.project, self.name, self.scope = project, name, logstore

    def _path(self, *rest: str) -> str:
        where = ("logstores", self.scope) if self.scope is not None else ()
        return "/".join([api.PREFIX, "projects", self.project, *where, "consumergroups", *rest])

    def _shard_json(self, ref: ShardRef) -> Any:
        if self.scope is not None:
            return ref.shard_id
        return {"logstore": ref.logstore, "shardId": ref.shard_id}

    def _ref(self, value: Any) -> ShardRef:
        if self.scope is not None:
            return ShardRef(self.scope, int(value))
        return ShardRef(str(value["logstore"]), int(value["shardId"]))

    def create(self, *, timeout: int, in_order: bool) -> api.Call[ConsumerGroup]:
        document: dict[str, Any] = {"name": self.name, "timeout": timeout, "inOrder": in_order}
        if self.scope is None:
            document["logstores"] = list(self.logstores)
        return api._json_call("POST", self._path(), api._reader(ConsumerGroup.from_json), document)

    def update(self, *, timeout: int, in_order: bool) -> api.Call[ConsumerGroup]:
        document = {"timeout": timeout, "inOrder": in_order}
        read = api._reader(ConsumerGroup.from_json)
        return api._json_call("PATCH", self._path(self.name), read, document)

    def check(self, group: ConsumerGroup) -> None:
        """Refuse to consume a group that reads other logstores than asked for."""
        if set(group.logstores) != set(self.logstores):
            raise ValueError(
                f"consumer group {self.name!r} reads {', '.join(group.logstores)}, "
                f"not {', '.join(self.logstores)}"
            )

    def heartbeat(self, consumer: str, held: Iterable[ShardRef]) -> api.Call[list[ShardRef]]:
        shards = [self._shard_json(ref) for ref in sorted(held)]
        read = api._reader(lambda data: [self._ref(item) for item in data["shards"]])
        path = self._path(self.name, "heartbeat")
        return api._json_call("POST", path, read, {"consumer": consumer, "shards": shards})

    def leave(self, consumer: str) -> api.Call[None]:
        document = {"consumer": consumer, "leave": True}
        return api._json_call("POST", self._path(self.name, "heartbeat"), api._nothing, document)

    def checkpoints(self) -> api.Call[dict[ShardRef, Cursor]]:
        """The checkpoints saved (shards without one are left out)."""

        def read(data: dict[str, Any]) -> dict[ShardRef, Cursor]:
            return {
                ShardRef(str(item.get("logstore", self.scope)), int(item["shardId"])): Cursor(
                    item["cursor"]
                )
                for item in data["checkpoints"]
                if item["cursor"]
            }

        return api.Call("GET", self._path(self.name, "checkpoints"), api._reader(read))

    def save_checkpoint(
        self, ref: ShardRef, cursor: Cursor, consumer: str, *, force: bool = False
    ) -> api.Call[None]:
        document: dict[str, Any] = {
            "shardId": ref.shard_id,
            "cursor": cursor,
            "consumer": consumer,
            "force": force,
        }
        if self.scope is None:
            document["logstore"] = ref.logstore
        path = self._path(self.name, "checkpoints")
        return api._json_call("POST", path, api._nothing, document)

    def cursor(self, ref: ShardRef, start: CursorStart) -> api.Call[Cursor]:
        return api.get_cursor(self.project, ref.logstore, ref.shard_id, start)

    def pull(
        self, ref: ShardRef, cursor: Cursor, settings: ConsumerSettings, consumer: str
    ) -> api.Call[PullLogsResult]:
        return api.pull_logs(
            self.project,
            ref.logstore,
            ref.shard_id,
            cursor,
            count=settings.fetch_count,
            max_bytes=settings.fetch_max_bytes,
            end_cursor=None,
            wait_ms=settings.wait_ms,
            consumer_group=self.name,
            consumer=consumer,
        )


# -------------------------------------------------------------- shard progress


@dataclass(frozen=True, slots=True)
class _Batch:
    log_groups: tuple[PulledLogGroup, ...]
    next_cursor: Cursor
    end_cursor: Cursor
    finished: bool  # the shard is readonly and this batch reaches its end


def _batch_of(result: PullLogsResult) -> _Batch:
    return _Batch(result.log_groups, result.next_cursor, result.end_cursor, result.shard_finished)


def _caught_up(cursor: Cursor, known_end: int | None) -> bool:
    return known_end is not None and cursor.position >= known_end


class _Stopped(Exception):
    """The shard is being given up."""


class _ShardProgress(abc.ABC):
    """What a shard consumer, threaded or async, knows of its shard: the processed
    position, the checkpoint, counters and metrics."""

    def __init__(self, member: _Member[Any], ref: ShardRef) -> None:
        self.member = member
        self.ref = ref
        self.settings = member.settings
        self.state = ShardState.STARTING
        self.saved: Cursor | None = None
        self.processed: Cursor | None = None  # first log group not yet processed
        self.in_progress: _Batch | None = None
        self.save_requested = False
        self._last_save = self.settings.clock()
        self._end_position: int | None = None
        self._log_groups = self._logs = self._raw_bytes = 0
        self.retries = self.skipped = 0
        labels = (member.group, member.consumer, ref.logstore, str(ref.shard_id))
        metrics = member.metrics
        self._m_groups = metrics.log_groups.labels(*labels)
        self._m_logs = metrics.logs.labels(*labels)
        self._m_bytes = metrics.raw_bytes.labels(*labels)
        self._m_retries = metrics.retries.labels(*labels)
        self._m_checkpoints = metrics.checkpoints.labels(*labels)
        self._m_lag = metrics.lag.labels(*labels)

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def request_stop(self) -> None: ...

    @abc.abstractmethod
    def prefetched(self) -> int: ...

    def checkpoint_candidate(self) -> Cursor:
        batch = self.in_progress
        if batch is not None:
            return batch.next_cursor
        assert self.processed is not None
        return self.processed

    def checkpoint_due(self) -> bool:
        interval = self.settings.auto_checkpoint_interval
        return self.save_requested or (
            interval is not None and self.settings.clock() - self._last_save >= interval
        )

    def refusal_forced(self) -> bool:
        """A save was refused (``ShardNotHeldError``): whether to force it. The group
        refuses unforced saves while it takes a shard back; as long as we are live
        and report the shard, nobody else holds it."""
        return self.member.is_live()

    def save_failed(self, cursor: Cursor, error: LogHarborError) -> None:
        logger.warning("shard %s: checkpoint %s not saved: %s", self.ref, cursor, error)

    def record_save(self, cursor: Cursor) -> None:
        self.saved = cursor
        self._last_save = self.settings.clock()
        self._m_checkpoints.inc()

    def record_retry(self) -> None:
        self.retries += 1
        self._m_retries.inc()

    def record_batch(self, batch: _Batch) -> None:
        """The batch is processed (the caller holds the progress lock)."""
        logs = sum(group.log_count for group in batch.log_groups)
        raw = sum(group.raw_size for group in batch.log_groups)
        self._log_groups += len(batch.log_groups)
        self._logs += logs
        self._raw_bytes += raw
        self.member.count_processed(len(batch.log_groups), logs)
        self._m_groups.inc(len(batch.log_groups))
        self._m_logs.inc(logs)
        self._m_bytes.inc(raw)
        self.processed = batch.next_cursor
        self._end_position = batch.end_cursor.position
        self._m_lag.set(self._lag())

    def record_end(self, end: Cursor) -> None:
        self._end_position = end.position

    def pull_failed(self, error: Exception, failures: int) -> float:
        """Note a failed pull; the seconds to wait before the next."""
        if isinstance(error, ShardNotHeldError):
            self.member.wake_heartbeat()  # the group may be moving the shard: ask now
        else:
            logger.warning("shard %s: pull failed: %s", self.ref, error)
        return min(self.settings.heartbeat_interval, 0.1 * 2.0 ** min(failures, 4))

    def processed_to(self, cursor: Cursor) -> bool:
        return self.processed is not None and self.processed.position >= cursor.position

    def _lag(self) -> int:
        if self._end_position is None or self.processed is None:
            return 0
        return max(0, self._end_position - self.processed.position)

    def statistics(self) -> ShardStatistics:
        return ShardStatistics(
            logstore=self.ref.logstore,
            shard_id=self.ref.shard_id,
            state=self.state,
            processed_log_groups=self._log_groups,
            processed_logs=self._logs,
            processed_raw_bytes=self._raw_bytes,
            prefetched_batches=self.prefetched(),
            lag_log_groups=self._lag(),
            cursor=self.processed,
            checkpoint=self.saved,
            retries=self.retries,
            skipped_batches=self.skipped,
        )


# ------------------------------------------------------------- threaded shards


class _ShardConsumer(_ShardProgress):
    """Fetcher and runner threads of one held shard."""

    def __init__(self, worker: ConsumerGroupWorker, ref: ShardRef) -> None:
        super().__init__(worker, ref)
        self.worker = worker
        self.stop = threading.Event()
        self._queue: queue.Queue[_Batch] = queue.Queue(maxsize=self.settings.prefetch)
        self._progress = threading.Condition()
        self._thread = threading.Thread(
            target=self._run, name=f"logharbor-consumer-{worker.consumer}-{ref}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self.stop.set()

    def prefetched(self) -> int:
        return self._queue.qsize()

    def persist(self, cursor: Cursor) -> bool:
        """Save ``cursor`` as the checkpoint; ``False`` if the server did not take it."""
        if cursor == self.saved:
            return True
        worker, calls = self.worker, self.worker.calls
        try:
            try:
                worker.send(calls.save_checkpoint(self.ref, cursor, worker.consumer))
            except ShardNotHeldError:
                if not self.refusal_forced():
                    raise
                worker.send(calls.save_checkpoint(self.ref, cursor, worker.consumer, force=True))
        except LogHarborError as error:
            self.save_failed(cursor, error)
            return False
        self.record_save(cursor)
        return True

    # ------------------------------------------------------------------ runner

    def _run(self) -> None:
        processor: ConsumerProcessor | None = None
        checkpointer = Checkpointer(self)
        try:
            processor = self._retrying("create a processor for", self.worker.processor_factory)
            initialize = processor.initialize
            self._retrying("initialize", lambda: initialize(self.ref.shard_id))
            start = self._retrying("find the start of", self._start_cursor)
            with self._progress:
                self.processed = start
            self.state = ShardState.CONSUMING
            fetcher = threading.Thread(
                target=self._fetch_loop,
                args=(start,),
                name=f"logharbor-fetcher-{self.worker.consumer}-{self.ref}",
                daemon=True,
            )
            fetcher.start()
            self._consume(processor, checkpointer)
        except _Stopped:
            pass
        except Exception:  # a bug of ours: give the shard up rather than die silently
            logger.exception("shard %s: consumer failed", self.ref)
        finally:
            self._release(processor, checkpointer)

    def _retrying(self, what: str, action: Callable[[], _T]) -> _T:
        retries = 0
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                return action()
            except Exception as error:  # the processor's or the server's
                logger.warning("shard %s: cannot %s the shard: %s", self.ref, what, error)
            if self.stop.wait(self.settings.retry.backoff(retries)):
                raise _Stopped
            retries += 1

    def _start_cursor(self) -> Cursor:
        worker = self.worker
        self.saved = worker.send(worker.calls.checkpoints()).get(self.ref)
        if self.saved is not None:
            return self.saved
        return worker.send(worker.calls.cursor(self.ref, self.settings.start))

    def _consume(self, processor: ConsumerProcessor, checkpointer: Checkpointer) -> None:
        while not self.stop.is_set():
            try:
                batch = self._queue.get(timeout=_POLL)
            except queue.Empty:
                if self.checkpoint_due():  # a save that failed is tried again while idle
                    self.save_requested = not self.persist(self.checkpoint_candidate())
                continue
            if batch.log_groups:
                self._process(processor, checkpointer, batch)
            with self._progress:
                self.record_batch(batch)
                self._progress.notify_all()
            if self.checkpoint_due() or batch.finished:
                self.save_requested = not self.persist(self.checkpoint_candidate())

    def _process(
        self, processor: ConsumerProcessor, checkpointer: Checkpointer, batch: _Batch
    ) -> None:
        policy = self.settings.retry
        retries = 0
        self.in_progress = batch
        try:
            while True:
                try:
                    processor.process(batch.log_groups, checkpointer)
                    return
                except Exception:
                    logger.exception("shard %s: process failed (retry %d)", self.ref, retries)
                    self.save_requested = False
                if policy.gives_up(retries):
                    self.skipped += 1
                    return
                if self.stop.wait(policy.backoff(retries)):
                    raise _Stopped
                retries += 1
                self.record_retry()
        finally:
            self.in_progress = None

    def _release(self, processor: ConsumerProcessor | None, checkpointer: Checkpointer) -> None:
        self.state = ShardState.RELEASING
        self.stop.set()
        with self._progress:
            self._progress.notify_all()
        while True:  # batches not processed are dropped: the checkpoint stays before them
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if processor is not None and self.processed is not None:
            try:
                processor.shutdown(checkpointer)
            except Exception:
                logger.exception("shard %s: processor shutdown failed", self.ref)
        if self.processed is not None:
            self.persist(self.processed)
        self.state = ShardState.RELEASED
        self.worker.shard_released(self)

    # ----------------------------------------------------------------- fetcher

    def _fetch_loop(self, cursor: Cursor) -> None:
        worker, settings = self.worker, self.settings
        known_end: int | None = None
        failures = 0
        while not self.stop.is_set():
            # caught up: pull at the end only once everything before it is processed
            if _caught_up(cursor, known_end) and not self._wait_processed(cursor):
                return
            try:
                result = worker.send(worker.calls.pull(self.ref, cursor, settings, worker.consumer))
            except Exception as error:  # keep trying until told to stop
                if self.stop.is_set():
                    return
                self.stop.wait(self.pull_failed(error, failures))
                failures += 1
                continue
            failures = 0
            known_end = result.end_cursor.position
            batch = _batch_of(result)
            if batch.log_groups or batch.finished:
                if not self._enqueue(batch):
                    return
            else:
                with self._progress:
                    self.record_end(result.end_cursor)
            if batch.finished:
                return  # a readonly shard read to its end holds nothing more
            cursor = result.next_cursor

    def _wait_processed(self, cursor: Cursor) -> bool:
        with self._progress:
            while not self.stop.is_set():
                if self.processed_to(cursor):
                    return True
                self._progress.wait(_POLL)
        return False

    def _enqueue(self, batch: _Batch) -> bool:
        while not self.stop.is_set():
            try:
                self._queue.put(batch, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False


# ---------------------------------------------------------------- async shards


class _AsyncShardConsumer(_ShardProgress):
    """Fetcher and runner tasks of one held shard."""

    def __init__(self, worker: AsyncConsumerWorker, ref: ShardRef) -> None:
        super().__init__(worker, ref)
        self.worker = worker
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._fetcher: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[_Batch] = asyncio.Queue(maxsize=self.settings.prefetch)
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
        worker, calls = self.worker, self.worker.calls
        try:
            try:
                await worker.send(calls.save_checkpoint(self.ref, cursor, worker.consumer))
            except ShardNotHeldError:
                if not self.refusal_forced():
                    raise
                forced = calls.save_checkpoint(self.ref, cursor, worker.consumer, force=True)
                await worker.send(forced)
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
            except _Stopped:
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
                raise _Stopped
            try:
                return await action()
            except Exception as error:  # the processor's or the server's
                logger.warning("shard %s: cannot %s the shard: %s", self.ref, what, error)
            if await self._stopped_within(self.settings.retry.backoff(retries)):
                raise _Stopped
            retries += 1

    async def _start_cursor(self) -> Cursor:
        worker = self.worker
        self.saved = (await worker.send(worker.calls.checkpoints())).get(self.ref)
        if self.saved is not None:
            return self.saved
        return await worker.send(worker.calls.cursor(self.ref, self.settings.start))

    async def _next_batch(self) -> _Batch | None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_POLL):
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
        self, processor: AsyncConsumerProcessor, checkpointer: AsyncCheckpointer, batch: _Batch
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
                    raise _Stopped
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
        worker, settings = self.worker, self.settings
        known_end: int | None = None
        failures = 0
        while True:
            if _caught_up(cursor, known_end):
                async with self._progress:
                    await self._progress.wait_for(functools.partial(self.processed_to, cursor))
            try:
                call = worker.calls.pull(self.ref, cursor, settings, worker.consumer)
                result = await worker.send(call)
            except Exception as error:  # keep trying until cancelled
                await asyncio.sleep(self.pull_failed(error, failures))
                failures += 1
                continue
            failures = 0
            known_end = result.end_cursor.position
            batch = _batch_of(result)
            if batch.log_groups or batch.finished:
                await self._queue.put(batch)  # waits while ``prefetch`` batches are queued
            else:
                self.record_end(result.end_cursor)
            if batch.finished:
                return
            cursor = result.next_cursor


# --------------------------------------------------------------------- workers

_S = TypeVar("_S", bound=_ShardProgress)


class _Member(abc.ABC, Generic[_S]):
    """What both workers share: the group and its calls, settings, metrics,
    liveness, the shards held, and statistics."""

    def __init__(
        self,
        *,
        project: str,
        logstore: str | None,
        logstores: Sequence[str] | None,
        group: str,
        consumer: str,
        settings: ConsumerSettings | None,
        registry: CollectorRegistry | None,
    ) -> None:
        self.calls = _GroupCalls(project, group, logstore=logstore, logstores=logstores)
        self.settings = settings or ConsumerSettings()
        self.project, self.group, self.consumer = project, group, consumer
        self.logstores = self.calls.logstores
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics: ConsumerMetrics = consumer_metrics(self.registry)
        self._held_gauge = self.metrics.held.labels(group, consumer)
        self._heartbeat_failures = self.metrics.heartbeat_failures.labels(group, consumer)
        self._lock = threading.Lock()
        self._shards: dict[ShardRef, _S] = {}
        self._state = WorkerState.CREATED
        self._last_heartbeat: float | None = None  # when the last successful one was sent
        self._heartbeats = self._heartbeat_failure_count = self._released = 0
        self._log_groups = self._logs = 0

    @abc.abstractmethod
    def _new_shard(self, ref: ShardRef) -> _S: ...

    @abc.abstractmethod
    def wake_heartbeat(self) -> None: ...

    @property
    def state(self) -> WorkerState:
        return self._state

    def _begin(self) -> None:
        with self._lock:
            if self._state is not WorkerState.CREATED:
                raise RuntimeError(f"the worker is {self._state.value}; it starts only once")
            self._state = WorkerState.RUNNING

    def _begin_stopping(self) -> bool:
        """Mark the worker stopping; ``False`` if it never started (it is stopped now)."""
        with self._lock:
            if self._state is WorkerState.CREATED:
                self._state = WorkerState.STOPPED
                return False
            if self._state is WorkerState.RUNNING:
                self._state = WorkerState.STOPPING
            return True

    def _mark_stopped(self) -> None:
        with self._lock:
            self._state = WorkerState.STOPPED
        self._held_gauge.set(0)

    # ---------------------------------------------------------------- heartbeat

    def is_live(self) -> bool:
        """Whether the group surely still counts this worker as a member."""
        last = self._last_heartbeat
        return last is not None and self.settings.clock() - last < self.settings.timeout

    def _heartbeat_failed(self, error: LogHarborError) -> set[ShardRef] | None:
        """The shards to hold after a failed heartbeat, or None when unknown."""
        self._heartbeat_failure_count += 1
        self._heartbeat_failures.inc()
        logger.warning("consumer %s: heartbeat failed: %s", self.consumer, error)
        if not self.is_live():
            return set()  # the group has surely given our shards to others
        return None

    def _heartbeat_answered(self, sent: float, answer: list[ShardRef]) -> set[ShardRef]:
        self._heartbeats += 1
        self._last_heartbeat = sent
        return set(answer)

    def _held(self) -> list[_S]:
        with self._lock:
            return list(self._shards.values())

    def _reconcile(self, assigned: set[ShardRef]) -> None:
        with self._lock:
            for ref, shard in self._shards.items():
                if ref not in assigned:
                    shard.request_stop()
            for ref in sorted(assigned - self._shards.keys()):
                shard = self._new_shard(ref)
                self._shards[ref] = shard
                shard.start()
            self._held_gauge.set(len(self._shards))

    def shard_released(self, shard: _S) -> None:
        with self._lock:
            if self._shards.get(shard.ref) is shard:
                del self._shards[shard.ref]
            self._released += 1
            self._held_gauge.set(len(self._shards))
        self.wake_heartbeat()  # tell the group at once, so the next holder can start

    def _left_failed(self, error: LogHarborError) -> None:
        logger.warning("consumer %s: could not leave the group: %s", self.consumer, error)

    def count_processed(self, log_groups: int, logs: int) -> None:
        with self._lock:
            self._log_groups += log_groups
            self._logs += logs

    # --------------------------------------------------------------- statistics

    def held_shards(self) -> list[ShardRef]:
        """The shards this worker holds now (including ones it is giving up)."""
        return sorted(shard.ref for shard in self._held())

    def statistics(self) -> WorkerStatistics:
        return WorkerStatistics(
            state=self._state,
            shards={shard.ref: shard.statistics() for shard in self._held()},
            processed_log_groups=self._log_groups,
            processed_logs=self._logs,
            heartbeats=self._heartbeats,
            heartbeat_failures=self._heartbeat_failure_count,
            released_shards=self._released,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.project}/{','.join(self.logstores)}, "
            f"group={self.group!r}, consumer={self.consumer!r}, {self._state.value})"
        )


class ConsumerGroupWorker(_Member[_ShardConsumer]):
    """A member of a consumer group: consumes the shards the group gives it.

    ::

        class Printer(ConsumerProcessor):
            def process(self, log_groups, checkpointer):
                for group in log_groups:
                    for log in group.logs:
                        print(checkpointer.logstore, log.contents)

        with ConsumerGroupWorker(
            Printer, endpoint="http://127.0.0.1:8480", access_key_id=..., access_key_secret=...,
            project="web", logstore="access", group="printers", consumer="host-1",
        ) as worker:
            worker.join()

    ``logstore`` makes the worker a member of that logstore's group; ``logstores``
    (a list) of a project's group reading all of them. ``processor`` makes one
    ``ConsumerProcessor`` per shard (a subclass, or any factory). Pass a ``client``
    to share one, or ``endpoint`` and keys to let the worker make (and close) its
    own. ``start()`` creates the group, or updates it to the settings' timeout and
    ``in_order``, then starts the threads. Delivery is at-least-once: after a crash,
    the logs after the last checkpoint come again.

    Metrics go to ``registry``, or to a registry of the worker's own
    (``worker.registry``).
    """

    def __init__(
        self,
        processor: ProcessorFactory,
        *,
        project: str,
        logstore: str | None = None,
        logstores: Sequence[str] | None = None,
        group: str,
        consumer: str,
        client: LogClient | None = None,
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
        self.client = client or LogClient(
            str(endpoint),
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            timeout=_OWN_TIMEOUT,
            retry=_OWN_RETRY,
        )
        self.processor_factory = processor
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._heartbeat_loop, name=f"logharbor-heartbeat-{consumer}", daemon=True
        )

    def send(self, call: api.Call[_T]) -> _T:
        return self.client._send(call)

    def _new_shard(self, ref: ShardRef) -> _ShardConsumer:
        return _ShardConsumer(self, ref)

    # --------------------------------------------------------------- lifecycle

    def start(self) -> ConsumerGroupWorker:
        """Create or update the group, then start heartbeating and consuming."""
        self._begin()
        try:
            if self.settings.update_group:
                self._ensure_group()
        except BaseException:
            self._finish()
            raise
        self._thread.start()
        return self

    def _ensure_group(self) -> None:
        timeout, in_order = self.settings.timeout, self.settings.in_order
        try:
            group = self.send(self.calls.create(timeout=timeout, in_order=in_order))
        except AlreadyExistsError:
            group = self.send(self.calls.update(timeout=timeout, in_order=in_order))
        self.calls.check(group)

    def shutdown(self, timeout: float | None = 30.0) -> bool:
        """Give every shard up (processor shutdown, checkpoint saved), then stop.

        Waits at most ``timeout`` seconds (``None``: until done); returns whether
        the worker stopped cleanly within it. A processor stuck in ``process`` keeps
        its shard's checkpoint where it was; the threads left are daemons.
        """
        if not self._begin_stopping():
            self._stopped.set()
            return True
        self._closing.set()
        self._wake.set()
        return self.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the worker has stopped (after ``shutdown``); whether it has."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> ConsumerGroupWorker:
        if self._state is WorkerState.CREATED:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        self.shutdown()

    def _finish(self) -> None:
        self._mark_stopped()
        if self._owns_client:
            self.client.close()
        self._stopped.set()

    # ---------------------------------------------------------------- heartbeat

    def wake_heartbeat(self) -> None:
        self._wake.set()

    def _nap(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _heartbeat_loop(self) -> None:
        try:
            while not self._closing.is_set():
                assigned = self._heartbeat()
                if assigned is not None and not self._closing.is_set():
                    self._reconcile(assigned)
                self._nap(self.settings.heartbeat_interval)
            self._drain()
        except Exception:
            logger.exception("consumer %s: heartbeat thread failed", self.consumer)
            for shard in self._held():
                shard.request_stop()
        finally:
            self._finish()

    def _heartbeat(self) -> set[ShardRef] | None:
        """Report the shards held; the shards to hold, or None when unknown."""
        held = self.held_shards()
        sent = self.settings.clock()
        try:
            answer = self.send(self.calls.heartbeat(self.consumer, held))
        except LogHarborError as error:
            return self._heartbeat_failed(error)
        return self._heartbeat_answered(sent, answer)

    def _drain(self) -> None:
        """Stopping: give every shard up, heartbeating meanwhile so that the group
        does not move a shard before its checkpoint is saved."""
        for shard in self._held():
            shard.request_stop()
        while self._held():
            self._heartbeat()
            self._nap(min(self.settings.heartbeat_interval, 0.5))
        try:  # every checkpoint is saved: the other members may take over at once
            self.send(self.calls.leave(self.consumer))
        except LogHarborError as error:
            self._left_failed(error)


class AsyncConsumerWorker(_Member[_AsyncShardConsumer]):
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
            timeout=_OWN_TIMEOUT,
            retry=_OWN_RETRY,
        )
        self.processor_factory = processor
        self._closing = False
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def send(self, call: api.Call[_T]) -> _T:
        return await self.client._send(call)

    def _new_shard(self, ref: ShardRef) -> _AsyncShardConsumer:
        return _AsyncShardConsumer(self, ref)

    # --------------------------------------------------------------- lifecycle

    async def start(self) -> AsyncConsumerWorker:
        """Create or update the group, then start heartbeating and consuming."""
        self._begin()
        try:
            if self.settings.update_group:
                await self._ensure_group()
        except BaseException:
            await self._finish()
            raise
        name = f"logharbor-heartbeat-{self.consumer}"
        self._task = asyncio.get_running_loop().create_task(self._heartbeat_loop(), name=name)
        return self

    async def _ensure_group(self) -> None:
        timeout, in_order = self.settings.timeout, self.settings.in_order
        try:
            group = await self.send(self.calls.create(timeout=timeout, in_order=in_order))
        except AlreadyExistsError:
            group = await self.send(self.calls.update(timeout=timeout, in_order=in_order))
        self.calls.check(group)

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
            answer = await self.send(self.calls.heartbeat(self.consumer, held))
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
            await self.send(self.calls.leave(self.consumer))
        except LogHarborError as error:
            self._left_failed(error)
