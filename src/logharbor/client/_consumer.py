"""Consumer groups: ``ConsumerGroupWorker`` runs a ``ConsumerProcessor`` per held shard.

Threads of a worker (all daemons; none outlives ``shutdown(timeout)`` for long):

- the heartbeat thread reports every shard the worker still holds (including ones
  it is giving up but has not finished with) and starts or stops shard consumers
  to match the answer;
- per held shard, a fetcher pulls as a group member (the server refuses a member's
  pull of a shard it does not hold) with long polling, into a queue of at most
  ``prefetch`` batches; and a runner calls the processor, batch after batch, in
  order, and saves checkpoints.

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

import enum
import logging
import queue
import threading
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CollectorRegistry

from ._client import LogClient
from ._config import RetryPolicy, Timeout
from ._consumer_config import ConsumerSettings
from ._consumer_metrics import ConsumerMetrics, consumer_metrics
from ._exceptions import AlreadyExistsError, LogHarborError, ShardNotHeldError
from ._models import Cursor, PulledLogGroup, PullLogsResult

logger = logging.getLogger("logharbor.consumer")

_POLL = 0.05  # seconds: how often idle loops look at their stop flags
_T = TypeVar("_T")


class ConsumerProcessor:
    """Override ``process`` (and, if needed, ``initialize`` and ``shutdown``).

    A worker makes one processor per shard it holds, and calls it from one thread:
    ``initialize(shard_id)`` once, ``process`` for each batch in order, and
    ``shutdown`` once when it gives the shard up.
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


ProcessorFactory = Callable[[], ConsumerProcessor]


class Checkpointer:
    """A shard's checkpoint, as its processor sees it.

    ``cursor`` is where the shard resumes once the batch being processed is done
    (outside ``process``: the first log group not yet processed); ``saved`` is the
    checkpoint the server holds, as far as this worker knows.
    """

    def __init__(self, shard: _ShardConsumer) -> None:
        self._shard = shard

    @property
    def shard_id(self) -> int:
        return self._shard.shard_id

    @property
    def cursor(self) -> Cursor:
        return self._shard.checkpoint_candidate()

    @property
    def saved(self) -> Cursor | None:
        return self._shard.saved

    def save(self, force: bool = False) -> bool:
        """Save ``cursor`` as the checkpoint: with ``force`` now (``True`` once the
        server has it), otherwise once the batch being processed is done."""
        return self._shard.request_save(force)


class ShardState(enum.Enum):
    STARTING = "starting"  # initializing the processor, finding the start cursor
    CONSUMING = "consuming"
    RELEASING = "releasing"  # shutting the processor down and saving the checkpoint
    RELEASED = "released"


@dataclass(frozen=True, slots=True)
class ShardStatistics:
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
    shards: Mapping[int, ShardStatistics]  # the shards held now
    processed_log_groups: int  # since the worker started, all shards
    processed_logs: int
    heartbeats: int
    heartbeat_failures: int
    released_shards: int


@dataclass(frozen=True, slots=True)
class _Batch:
    log_groups: tuple[PulledLogGroup, ...]
    next_cursor: Cursor
    end_cursor: Cursor
    finished: bool  # the shard is readonly and this batch reaches its end


class _Stopped(Exception):
    """The shard is being given up."""


class _ShardConsumer:
    """Fetcher and runner of one held shard."""

    def __init__(self, worker: ConsumerGroupWorker, shard_id: int) -> None:
        self.worker = worker
        self.shard_id = shard_id
        self.state = ShardState.STARTING
        self.stop = threading.Event()
        self.done = threading.Event()
        self.saved: Cursor | None = None
        self._settings = worker.settings
        self._queue: queue.Queue[_Batch] = queue.Queue(maxsize=self._settings.prefetch)
        self._progress = threading.Condition()
        self._processed: Cursor | None = None  # first log group not yet processed
        self._in_progress: _Batch | None = None
        self._save_requested = False
        self._last_save = self._settings.clock()
        self._end_position: int | None = None
        self._log_groups = self._logs = self._raw_bytes = 0
        self._retries = self._skipped = 0
        labels = (worker.group, worker.consumer, str(shard_id))
        metrics = worker.metrics
        self._m_groups = metrics.log_groups.labels(*labels)
        self._m_logs = metrics.logs.labels(*labels)
        self._m_bytes = metrics.raw_bytes.labels(*labels)
        self._m_retries = metrics.retries.labels(*labels)
        self._m_checkpoints = metrics.checkpoints.labels(*labels)
        self._m_lag = metrics.lag.labels(*labels)
        self._thread = threading.Thread(
            target=self._run, name=f"logharbor-consumer-{worker.consumer}-{shard_id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    # ------------------------------------------------------------ checkpointer

    def checkpoint_candidate(self) -> Cursor:
        batch = self._in_progress
        if batch is not None:
            return batch.next_cursor
        assert self._processed is not None
        return self._processed

    def request_save(self, force: bool) -> bool:
        if not force:
            self._save_requested = True
            return False
        return self._persist(self.checkpoint_candidate())

    def _persist(self, cursor: Cursor) -> bool:
        """Save ``cursor`` as the checkpoint; ``False`` if the server did not take it."""
        if cursor == self.saved:
            return True
        worker = self.worker
        save = worker.client.update_checkpoint
        args = (worker.project, worker.logstore, worker.group, self.shard_id, cursor)
        try:
            try:
                save(*args, consumer=worker.consumer)
            except ShardNotHeldError:
                # The group is taking the shard back, and refuses unforced saves while we
                # release it; as long as we are live and report it, nobody else holds it.
                if not worker.is_live():
                    raise
                save(*args, consumer=worker.consumer, force=True)
        except LogHarborError as error:
            logger.warning("shard %d: checkpoint %s not saved: %s", self.shard_id, cursor, error)
            return False
        self.saved = cursor
        self._last_save = self._settings.clock()
        self._m_checkpoints.inc()
        return True

    # ------------------------------------------------------------------ runner

    def _run(self) -> None:
        processor: ConsumerProcessor | None = None
        checkpointer = Checkpointer(self)
        try:
            processor = self._retrying("create a processor for", self.worker.processor_factory)
            initialize = processor.initialize
            self._retrying("initialize", lambda: initialize(self.shard_id))
            start = self._retrying("find the start of", self._start_cursor)
            with self._progress:
                self._processed = start
            self.state = ShardState.CONSUMING
            fetcher = threading.Thread(
                target=self._fetch_loop,
                args=(start,),
                name=f"logharbor-fetcher-{self.worker.consumer}-{self.shard_id}",
                daemon=True,
            )
            fetcher.start()
            self._consume(processor, checkpointer)
        except _Stopped:
            pass
        except Exception:  # a bug of ours: give the shard up rather than die silently
            logger.exception("shard %d: consumer failed", self.shard_id)
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
                logger.warning("shard %d: cannot %s the shard: %s", self.shard_id, what, error)
            if self.stop.wait(self._settings.retry.backoff(retries)):
                raise _Stopped
            retries += 1

    def _start_cursor(self) -> Cursor:
        worker = self.worker
        for checkpoint in worker.client.get_checkpoints(
            worker.project, worker.logstore, worker.group
        ):
            if checkpoint.shard_id == self.shard_id and checkpoint.cursor is not None:
                self.saved = checkpoint.cursor
                return checkpoint.cursor
        return worker.client.get_cursor(
            worker.project, worker.logstore, self.shard_id, self._settings.start
        )

    def _consume(self, processor: ConsumerProcessor, checkpointer: Checkpointer) -> None:
        interval = self._settings.auto_checkpoint_interval
        while not self.stop.is_set():
            try:
                batch = self._queue.get(timeout=_POLL)
            except queue.Empty:
                due = interval is not None and self._settings.clock() - self._last_save >= interval
                if due or self._save_requested:
                    self._save_requested = not self._persist(self.checkpoint_candidate())
                continue
            if batch.log_groups:
                self._process(processor, checkpointer, batch)
            self._advance(batch)
            due = interval is not None and self._settings.clock() - self._last_save >= interval
            if self._save_requested or due or batch.finished:
                # a save that failed is tried again while idle
                self._save_requested = not self._persist(self.checkpoint_candidate())

    def _process(
        self, processor: ConsumerProcessor, checkpointer: Checkpointer, batch: _Batch
    ) -> None:
        policy = self._settings.retry
        retries = 0
        self._in_progress = batch
        try:
            while True:
                try:
                    processor.process(batch.log_groups, checkpointer)
                    return
                except Exception:
                    logger.exception("shard %d: process failed (retry %d)", self.shard_id, retries)
                    self._save_requested = False
                if policy.gives_up(retries):
                    self._skipped += 1
                    return
                if self.stop.wait(policy.backoff(retries)):
                    raise _Stopped
                retries += 1
                self._retries += 1
                self._m_retries.inc()
        finally:
            self._in_progress = None

    def _advance(self, batch: _Batch) -> None:
        logs = sum(group.log_count for group in batch.log_groups)
        raw = sum(group.raw_size for group in batch.log_groups)
        self._log_groups += len(batch.log_groups)
        self._logs += logs
        self._raw_bytes += raw
        self.worker.count_processed(len(batch.log_groups), logs)
        self._m_groups.inc(len(batch.log_groups))
        self._m_logs.inc(logs)
        self._m_bytes.inc(raw)
        with self._progress:
            self._processed = batch.next_cursor
            self._end_position = batch.end_cursor.position
            self._progress.notify_all()
        self._m_lag.set(self._lag())

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
        if processor is not None and self._processed is not None:
            try:
                processor.shutdown(checkpointer)
            except Exception:
                logger.exception("shard %d: processor shutdown failed", self.shard_id)
        if self._processed is not None:
            self._persist(self._processed)
        self.state = ShardState.RELEASED
        self.done.set()
        self.worker.shard_released(self)

    # ----------------------------------------------------------------- fetcher

    def _fetch_loop(self, cursor: Cursor) -> None:
        worker, settings = self.worker, self._settings
        known_end: int | None = None
        failures = 0
        while not self.stop.is_set():
            caught_up = known_end is not None and cursor.position >= known_end
            # caught up: pull at the end only once everything before it is processed
            if caught_up and not self._wait_processed(cursor):
                return
            try:
                result = worker.client.pull_logs(
                    worker.project,
                    worker.logstore,
                    self.shard_id,
                    cursor,
                    count=settings.fetch_count,
                    max_bytes=settings.fetch_max_bytes,
                    wait_ms=settings.wait_ms,
                    consumer_group=worker.group,
                    consumer=worker.consumer,
                )
            except Exception as error:  # keep trying until told to stop
                if self.stop.is_set():
                    return
                if isinstance(error, ShardNotHeldError):
                    worker.wake_heartbeat()  # the group may be moving the shard: ask now
                else:
                    logger.warning("shard %d: pull failed: %s", self.shard_id, error)
                self.stop.wait(min(settings.heartbeat_interval, 0.1 * 2 ** min(failures, 4)))
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
                    self._end_position = known_end
            if batch.finished:
                return  # a readonly shard read to its end holds nothing more
            cursor = result.next_cursor

    def _wait_processed(self, cursor: Cursor) -> bool:
        with self._progress:
            while not self.stop.is_set():
                if self._processed is not None and self._processed.position >= cursor.position:
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

    # -------------------------------------------------------------- statistics

    def _lag(self) -> int:
        if self._end_position is None or self._processed is None:
            return 0
        return max(0, self._end_position - self._processed.position)

    def statistics(self) -> ShardStatistics:
        return ShardStatistics(
            shard_id=self.shard_id,
            state=self.state,
            processed_log_groups=self._log_groups,
            processed_logs=self._logs,
            processed_raw_bytes=self._raw_bytes,
            prefetched_batches=self._queue.qsize(),
            lag_log_groups=self._lag(),
            cursor=self._processed,
            checkpoint=self.saved,
            retries=self._retries,
            skipped_batches=self._skipped,
        )


def _batch_of(result: PullLogsResult) -> _Batch:
    return _Batch(result.log_groups, result.next_cursor, result.end_cursor, result.shard_finished)


class ConsumerGroupWorker:
    """A member of a consumer group: consumes the shards the group gives it.

    ::

        class Printer(ConsumerProcessor):
            def process(self, log_groups, checkpointer):
                for group in log_groups:
                    for log in group.logs:
                        print(log.contents)

        with ConsumerGroupWorker(
            Printer, endpoint="http://127.0.0.1:8480", access_key_id=..., access_key_secret=...,
            project="web", logstore="access", group="printers", consumer="host-1",
        ) as worker:
            worker.join()

    ``processor`` makes one ``ConsumerProcessor`` per shard (a subclass, or any
    factory). Pass a ``client`` to share one, or ``endpoint`` and keys to let the
    worker make (and close) its own. ``start()`` creates the group, or updates it
    to the settings' timeout and ``in_order``, then starts the threads. Delivery is
    at-least-once: after a crash, the logs after the last checkpoint come again.

    Metrics go to ``registry``, or to a registry of the worker's own
    (``worker.registry``).
    """

    def __init__(
        self,
        processor: ProcessorFactory,
        *,
        project: str,
        logstore: str,
        group: str,
        consumer: str,
        client: LogClient | None = None,
        endpoint: str | None = None,
        access_key_id: str | None = None,
        access_key_secret: str | None = None,
        settings: ConsumerSettings | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if (client is None) == (endpoint is None):
            raise ValueError("give either client or endpoint")
        self.settings = settings or ConsumerSettings()
        if client is None:
            assert endpoint is not None
            # heartbeats must not outlast the group timeout by retrying for long
            client = LogClient(
                endpoint,
                access_key_id=access_key_id,
                access_key_secret=access_key_secret,
                timeout=Timeout(connect=2.0, read=10.0, write=10.0, pool=5.0),
                retry=RetryPolicy(max_retries=2, backoff_base=0.05, backoff_max=0.5),
            )
            self._owns_client = True
        else:
            self._owns_client = False
        self.client = client
        self.processor_factory = processor
        self.project, self.logstore, self.group, self.consumer = project, logstore, group, consumer
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics: ConsumerMetrics = consumer_metrics(self.registry)
        self._held_gauge = self.metrics.held.labels(group, consumer)
        self._heartbeat_failures = self.metrics.heartbeat_failures.labels(group, consumer)
        self._lock = threading.Lock()
        self._shards: dict[int, _ShardConsumer] = {}
        self._state = WorkerState.CREATED
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._last_heartbeat: float | None = None  # when the last successful one was sent
        self._heartbeats = self._heartbeat_failure_count = self._released = 0
        self._log_groups = self._logs = 0
        self._thread = threading.Thread(
            target=self._heartbeat_loop, name=f"logharbor-heartbeat-{consumer}", daemon=True
        )

    # --------------------------------------------------------------- lifecycle

    @property
    def state(self) -> WorkerState:
        return self._state

    def start(self) -> ConsumerGroupWorker:
        """Create or update the group, then start heartbeating and consuming."""
        with self._lock:
            if self._state is not WorkerState.CREATED:
                raise RuntimeError(f"the worker is {self._state.value}; it starts only once")
            self._state = WorkerState.RUNNING
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
        args = (self.project, self.logstore, self.group)
        try:
            self.client.create_consumer_group(*args, timeout=timeout, in_order=in_order)
        except AlreadyExistsError:
            self.client.update_consumer_group(*args, timeout=timeout, in_order=in_order)

    def shutdown(self, timeout: float | None = 30.0) -> bool:
        """Give every shard up (processor shutdown, checkpoint saved), then stop.

        Waits at most ``timeout`` seconds (``None``: until done); returns whether
        the worker stopped cleanly within it. A processor stuck in ``process`` keeps
        its shard's checkpoint where it was; the threads left are daemons.
        """
        with self._lock:
            if self._state is WorkerState.CREATED:
                self._state = WorkerState.STOPPED
                self._stopped.set()
                return True
            if self._state is WorkerState.RUNNING:
                self._state = WorkerState.STOPPING
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
        with self._lock:
            self._state = WorkerState.STOPPED
        self._held_gauge.set(0)
        if self._owns_client:
            self.client.close()
        self._stopped.set()

    # ---------------------------------------------------------------- heartbeat

    def is_live(self) -> bool:
        """Whether the group surely still counts this worker as a member."""
        last = self._last_heartbeat
        return last is not None and self.settings.clock() - last < self.settings.timeout

    def wake_heartbeat(self) -> None:
        self._wake.set()

    def _heartbeat_loop(self) -> None:
        try:
            while not self._closing.is_set():
                assigned = self._heartbeat()
                if assigned is not None and not self._closing.is_set():
                    self._reconcile(assigned)
                self._wake.wait(self.settings.heartbeat_interval)
                self._wake.clear()
            self._drain()
        except Exception:
            logger.exception("consumer %s: heartbeat thread failed", self.consumer)
            for shard in self._held():
                shard.stop.set()
        finally:
            self._finish()

    def _held(self) -> list[_ShardConsumer]:
        with self._lock:
            return list(self._shards.values())

    def _heartbeat(self) -> set[int] | None:
        """Report the shards held; the shards to hold, or None when unknown."""
        held = [shard.shard_id for shard in self._held()]
        sent = self.settings.clock()
        try:
            answer = self.client.heartbeat(
                self.project, self.logstore, self.group, self.consumer, held
            )
        except LogHarborError as error:
            self._heartbeat_failure_count += 1
            self._heartbeat_failures.inc()
            logger.warning("consumer %s: heartbeat failed: %s", self.consumer, error)
            if not self.is_live():
                return set()  # the group has surely given our shards to others
            return None
        self._heartbeats += 1
        self._last_heartbeat = sent
        return set(answer)

    def _reconcile(self, assigned: set[int]) -> None:
        with self._lock:
            for shard_id, shard in self._shards.items():
                if shard_id not in assigned:
                    shard.stop.set()
            for shard_id in sorted(assigned - self._shards.keys()):
                shard = _ShardConsumer(self, shard_id)
                self._shards[shard_id] = shard
                shard.start()
            self._held_gauge.set(len(self._shards))

    def shard_released(self, shard: _ShardConsumer) -> None:
        with self._lock:
            if self._shards.get(shard.shard_id) is shard:
                del self._shards[shard.shard_id]
            self._released += 1
            self._held_gauge.set(len(self._shards))
        self._wake.set()  # tell the group at once, so the next holder can start

    def _drain(self) -> None:
        """Stopping: give every shard up, heartbeating meanwhile so that the group
        does not move a shard before its checkpoint is saved."""
        for shard in self._held():
            shard.stop.set()
        while self._held():
            self._heartbeat()
            self._wake.wait(min(self.settings.heartbeat_interval, 0.5))
            self._wake.clear()
        try:  # every checkpoint is saved: the other members may take over at once
            self.client.leave_consumer_group(self.project, self.logstore, self.group, self.consumer)
        except LogHarborError as error:
            logger.warning("consumer %s: could not leave the group: %s", self.consumer, error)

    def count_processed(self, log_groups: int, logs: int) -> None:
        with self._lock:
            self._log_groups += log_groups
            self._logs += logs

    # --------------------------------------------------------------- statistics

    def held_shards(self) -> list[int]:
        """The shards this worker holds now (including ones it is giving up)."""
        return sorted(shard.shard_id for shard in self._held())

    def statistics(self) -> WorkerStatistics:
        return WorkerStatistics(
            state=self._state,
            shards={shard.shard_id: shard.statistics() for shard in self._held()},
            processed_log_groups=self._log_groups,
            processed_logs=self._logs,
            heartbeats=self._heartbeats,
            heartbeat_failures=self._heartbeat_failure_count,
            released_shards=self._released,
        )

    def __repr__(self) -> str:
        return (
            f"ConsumerGroupWorker({self.project}/{self.logstore}, group={self.group!r}, "
            f"consumer={self.consumer!r}, {self._state.value})"
        )
