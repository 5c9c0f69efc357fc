"""Group commit: one thread writes every append and makes it durable in batches.

Callers ``submit`` appends and control operations and get a
``concurrent.futures.Future``.  The commit thread takes everything queued,
applies it in order (routing each append to a writable shard at that moment,
so a split takes effect for the very next append), syncs each touched shard
log once, publishes the new data to readers and only then resolves the
futures.  Many concurrent writers thus share one fsync.

Backpressure: the queue holds at most ``max_pending_bytes`` of payload.  A
submit that would exceed it waits up to ``submit_timeout`` seconds for room,
then fails with ``ServerBusy`` (HTTP 503, which clients retry).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..protocol.errors import ErrorCode, ServiceError
from .types import Clock, PutResult

if TYPE_CHECKING:
    from .ingest import PreparedGroup
    from .runtime import LogstoreRuntime
    from .shardlog import ShardLog

log = logging.getLogger(__name__)


class QueueFull(ServiceError):
    """The write queue had no room (HTTP 503 ServerBusy; clients retry)."""


@dataclass(slots=True)
class _Append:
    store: LogstoreRuntime
    hash_key: int | None
    group: PreparedGroup
    future: Future[PutResult] = field(default_factory=Future)

    @property
    def size(self) -> int:
        return len(self.group.payload)


@dataclass(slots=True)
class _Control:
    fn: Callable[[], Any]
    future: Future[Any] = field(default_factory=Future)
    size: int = 0


@dataclass(slots=True)
class CommitStatistics:
    batches: int = 0
    appends: int = 0
    bytes: int = 0
    syncs: int = 0
    pending_bytes: int = 0
    pending_ops: int = 0


class CommitLog:
    def __init__(
        self,
        *,
        clock: Clock,
        max_pending_bytes: int = 256 << 20,
        max_batch_bytes: int = 64 << 20,
        submit_timeout: float = 10.0,
    ) -> None:
        self._clock = clock
        self._max_pending = max_pending_bytes
        self._max_batch = max_batch_bytes
        self._submit_timeout = submit_timeout
        self._queue: deque[_Append | _Control] = deque()
        self._pending_bytes = 0
        self._cond = threading.Condition()
        self._closing = False
        self.stats = CommitStatistics()
        self._thread = threading.Thread(target=self._run, name="logharbor-commit", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------- callers

    def append(
        self,
        store: LogstoreRuntime,
        group: PreparedGroup,
        hash_key: int | None,
        *,
        block: bool = True,
    ) -> Future[PutResult]:
        """Queue an append; when the queue is full, wait for room (``block``) up to
        the submit timeout, or raise ``QueueFull`` at once."""
        op = _Append(store, hash_key, group)
        self._enqueue(op, block=block)
        return op.future

    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` on the commit thread, ordered with the appends around it."""
        op = _Control(fn)
        self._enqueue(op)
        return op.future

    def run(self, fn: Callable[[], Any]) -> Any:
        return self.call(fn).result()

    def _enqueue(self, op: _Append | _Control, *, block: bool = True) -> None:
        deadline = time.monotonic() + (self._submit_timeout if block else 0.0)
        with self._cond:
            while (
                op.size
                and self._pending_bytes
                and self._pending_bytes + op.size > self._max_pending
                and not self._closing
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise QueueFull(
                        ErrorCode.SERVER_BUSY,
                        "the write queue is full; the server is writing as fast as the disk allows",
                    )
                self._cond.wait(remaining)
            if self._closing:
                raise ServiceError(ErrorCode.SERVER_BUSY, "the server is shutting down")
            self._queue.append(op)
            self._pending_bytes += op.size
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()

    def statistics(self) -> CommitStatistics:
        with self._cond:
            self.stats.pending_bytes = self._pending_bytes
            self.stats.pending_ops = len(self._queue)
        return CommitStatistics(**{k: getattr(self.stats, k) for k in self.stats.__slots__})

    # -------------------------------------------------------- commit thread

    def _take_batch(self) -> list[_Append | _Control]:
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            batch: list[_Append | _Control] = []
            size = 0
            while self._queue and (not batch or size + self._queue[0].size <= self._max_batch):
                op = self._queue.popleft()
                batch.append(op)
                size += op.size
            return batch

    def _release(self, size: int) -> None:
        with self._cond:
            self._pending_bytes -= size
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                return  # closing and drained
            try:
                self._apply(batch)
            except BaseException as exc:  # never leave a caller waiting forever
                log.exception("commit batch failed")
                error = ServiceError(ErrorCode.INTERNAL, f"storage failure: {exc}")
                for op in batch:
                    if not op.future.done():
                        op.future.set_exception(error)
            finally:
                self._release(sum(op.size for op in batch))

    def _apply(self, batch: list[_Append | _Control]) -> None:
        done: list[tuple[Future[Any], Any]] = []
        touched: dict[int, ShardLog] = {}
        now = self._clock()
        for op in batch:
            try:
                if isinstance(op, _Append):
                    shard_id, shard = op.store.route(op.hash_key)
                    group = op.group
                    position = shard.write(
                        group.payload,
                        raw_size=group.raw_size,
                        log_count=group.log_count,
                        compression=group.compression,
                        received=now,
                    )
                    touched[id(shard)] = shard
                    done.append((op.future, PutResult(shard_id, position)))
                    self.stats.appends += 1
                    self.stats.bytes += op.size
                else:
                    done.append((op.future, op.fn()))
            except ServiceError as exc:
                op.future.set_exception(exc)
            except Exception as exc:
                if isinstance(op, _Append):
                    raise
                op.future.set_exception(exc)
        for shard in touched.values():
            shard.sync()
            self.stats.syncs += 1
        for shard in touched.values():
            shard.publish()
        self.stats.batches += 1
        for future, result in done:
            future.set_result(result)
