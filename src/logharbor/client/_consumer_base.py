"""Consumer groups: a worker runs one processor per shard its group gives it.

``ConsumerGroupWorker`` (threads, ``ConsumerProcessor``; ``_consumer_threaded``) and
``AsyncConsumerWorker`` (asyncio tasks, ``AsyncConsumerProcessor``;
``_consumer_async``) behave alike; this module holds what they share. A worker is
a member of a logstore's group (``logstore=``) or of a project's group over several
logstores (``logstores=``); either way a shard is a ``ShardRef``: its logstore and
its id.

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
import enum
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry

from ._config import RetryPolicy, Timeout
from ._consumer_config import ConsumerSettings
from ._consumer_metrics import ConsumerMetrics, consumer_metrics
from ._exceptions import LogHarborError, ShardNotHeldError
from ._models import Checkpoint, ConsumerGroup, Cursor, PulledLogGroup, PullLogsResult, ShardRef

logger = logging.getLogger("logharbor.consumer")

POLL = 0.05  # seconds: how often idle loops look at their stop flags
# a worker's own client: heartbeats must not outlast the group timeout by retrying for long
OWN_TIMEOUT = Timeout(connect=2.0, read=10.0, write=10.0, pool=5.0)
OWN_RETRY = RetryPolicy(max_retries=2, backoff_base=0.05, backoff_max=0.5)


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


# ----------------------------------------------------------------------- group


class GroupScope:
    """The group a worker is a member of: a logstore's (``logstore``) or a project's
    over several logstores (``logstores``, a list; ``logstore`` is then ``None``).

    Each worker reaches it through the client's methods for that kind of group
    (``create_consumer_group`` or ``create_project_consumer_group``, and so on).
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
        self.project, self.name, self.logstore = project, name, logstore

    def check(self, group: ConsumerGroup) -> None:
        """Refuse to consume a group that reads other logstores than asked for."""
        if set(group.logstores) != set(self.logstores):
            raise ValueError(
                f"consumer group {self.name!r} reads {', '.join(group.logstores)}, "
                f"not {', '.join(self.logstores)}"
            )


def saved_cursors(checkpoints: Iterable[Checkpoint]) -> dict[ShardRef, Cursor]:
    """The checkpoints saved (shards without one are left out)."""
    return {c.shard: c.cursor for c in checkpoints if c.cursor is not None}


# -------------------------------------------------------------- shard progress


@dataclass(frozen=True, slots=True)
class Batch:
    log_groups: tuple[PulledLogGroup, ...]
    next_cursor: Cursor
    end_cursor: Cursor
    finished: bool  # the shard is readonly and this batch reaches its end


def batch_of(result: PullLogsResult) -> Batch:
    return Batch(result.log_groups, result.next_cursor, result.end_cursor, result.shard_finished)


def caught_up(cursor: Cursor, known_end: int | None) -> bool:
    return known_end is not None and cursor.position >= known_end


class Stopped(Exception):
    """The shard is being given up."""


class ShardProgress(abc.ABC):
    """What a shard consumer, threaded or async, knows of its shard: the processed
    position, the checkpoint, counters and metrics."""

    def __init__(self, member: Member[Any], ref: ShardRef) -> None:
        self.member = member
        self.ref = ref
        self.settings = member.settings
        self.state = ShardState.STARTING
        self.saved: Cursor | None = None
        self.processed: Cursor | None = None  # first log group not yet processed
        self.in_progress: Batch | None = None
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

    def record_batch(self, batch: Batch) -> None:
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


class CheckpointView:
    """What a processor sees of its shard's checkpoint.

    ``cursor`` is where the shard resumes once the batch being processed is done
    (outside ``process``: the first log group not yet processed); ``saved`` is the
    checkpoint the server holds, as far as this worker knows.
    """

    def __init__(self, shard: ShardProgress) -> None:
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


# --------------------------------------------------------------------- workers

_S = TypeVar("_S", bound=ShardProgress)


class Member(abc.ABC, Generic[_S]):
    """What both workers share: the group, settings, metrics,
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
        self.scope = GroupScope(project, group, logstore=logstore, logstores=logstores)
        self.settings = settings or ConsumerSettings()
        self.project, self.group, self.consumer = project, group, consumer
        self.logstores = self.scope.logstores
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
