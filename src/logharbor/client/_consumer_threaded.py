"""``ConsumerGroupWorker``: a consumer group member on threads (see ``_consumer_base``
for how a worker works; ``_consumer_async`` is its asyncio twin)."""

from __future__ import annotations

import queue
import threading
import types
from collections.abc import Callable, Sequence
from typing import TypeVar

from prometheus_client import CollectorRegistry

from ._client import LogClient
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

_T = TypeVar("_T")


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


ProcessorFactory = Callable[[], ConsumerProcessor]


class Checkpointer(CheckpointView):
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


# ----------------------------------------------------------------- group calls


class _GroupCalls:
    """One member's calls of its group, through the ``LogClient`` methods for a
    logstore's groups or for a project's; shards are ``ShardRef``s either way."""

    def __init__(
        self, client: LogClient, scope: GroupScope, consumer: str, settings: ConsumerSettings
    ) -> None:
        self.client, self.scope, self.consumer, self.settings = client, scope, consumer, settings

    def ensure_group(self) -> None:
        """Create the group, or update it to the settings' timeout and ``in_order``."""
        client, scope, logstore = self.client, self.scope, self.scope.logstore
        timeout, in_order = self.settings.timeout, self.settings.in_order
        try:
            if logstore is None:
                group = client.create_project_consumer_group(
                    scope.project, scope.name, scope.logstores, timeout=timeout, in_order=in_order
                )
            else:
                group = client.create_consumer_group(
                    scope.project, logstore, scope.name, timeout=timeout, in_order=in_order
                )
        except AlreadyExistsError:
            if logstore is None:
                group = client.update_project_consumer_group(
                    scope.project, scope.name, timeout=timeout, in_order=in_order
                )
            else:
                group = client.update_consumer_group(
                    scope.project, logstore, scope.name, timeout=timeout, in_order=in_order
                )
        scope.check(group)

    def heartbeat(self, held: Sequence[ShardRef]) -> list[ShardRef]:
        scope, logstore = self.scope, self.scope.logstore
        if logstore is None:
            return self.client.project_heartbeat(scope.project, scope.name, self.consumer, held)
        ids = [ref.shard_id for ref in held]
        answer = self.client.heartbeat(scope.project, logstore, scope.name, self.consumer, ids)
        return [ShardRef(logstore, shard_id) for shard_id in answer]

    def leave(self) -> None:
        scope, logstore = self.scope, self.scope.logstore
        if logstore is None:
            self.client.leave_project_consumer_group(scope.project, scope.name, self.consumer)
        else:
            self.client.leave_consumer_group(scope.project, logstore, scope.name, self.consumer)

    def checkpoints(self) -> dict[ShardRef, Cursor]:
        scope, logstore = self.scope, self.scope.logstore
        if logstore is None:
            return saved_cursors(self.client.get_project_checkpoints(scope.project, scope.name))
        return saved_cursors(self.client.get_checkpoints(scope.project, logstore, scope.name))

    def save_checkpoint(self, ref: ShardRef, cursor: Cursor, *, force: bool = False) -> None:
        scope, logstore, consumer = self.scope, self.scope.logstore, self.consumer
        if logstore is None:
            self.client.update_project_checkpoint(
                scope.project, scope.name, ref, cursor, consumer=consumer, force=force
            )
        else:
            self.client.update_checkpoint(
                scope.project,
                logstore,
                scope.name,
                ref.shard_id,
                cursor,
                consumer=consumer,
                force=force,
            )

    def cursor(self, ref: ShardRef, start: CursorStart) -> Cursor:
        return self.client.get_cursor(self.scope.project, ref.logstore, ref.shard_id, start)

    def pull(self, ref: ShardRef, cursor: Cursor) -> PullLogsResult:
        """A member's pull: refused (``ShardNotHeldError``) unless it holds the shard."""
        settings = self.settings
        return self.client.pull_logs(
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


class _ShardConsumer(ShardProgress):
    """Fetcher and runner threads of one held shard."""

    def __init__(self, worker: ConsumerGroupWorker, ref: ShardRef) -> None:
        super().__init__(worker, ref)
        self.worker = worker
        self.stop = threading.Event()
        self._queue: queue.Queue[Batch] = queue.Queue(maxsize=self.settings.prefetch)
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
        calls = self.worker.calls
        try:
            try:
                calls.save_checkpoint(self.ref, cursor)
            except ShardNotHeldError:
                if not self.refusal_forced():
                    raise
                calls.save_checkpoint(self.ref, cursor, force=True)
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
        except Stopped:
            pass
        except Exception:  # a bug of ours: give the shard up rather than die silently
            logger.exception("shard %s: consumer failed", self.ref)
        finally:
            self._release(processor, checkpointer)

    def _retrying(self, what: str, action: Callable[[], _T]) -> _T:
        retries = 0
        while True:
            if self.stop.is_set():
                raise Stopped
            try:
                return action()
            except Exception as error:  # the processor's or the server's
                logger.warning("shard %s: cannot %s the shard: %s", self.ref, what, error)
            if self.stop.wait(self.settings.retry.backoff(retries)):
                raise Stopped
            retries += 1

    def _start_cursor(self) -> Cursor:
        calls = self.worker.calls
        self.saved = calls.checkpoints().get(self.ref)
        if self.saved is not None:
            return self.saved
        return calls.cursor(self.ref, self.settings.start)

    def _consume(self, processor: ConsumerProcessor, checkpointer: Checkpointer) -> None:
        while not self.stop.is_set():
            try:
                batch = self._queue.get(timeout=POLL)
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
        self, processor: ConsumerProcessor, checkpointer: Checkpointer, batch: Batch
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
                    raise Stopped
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
        calls = self.worker.calls
        known_end: int | None = None
        failures = 0
        while not self.stop.is_set():
            # caught up: pull at the end only once everything before it is processed
            if caught_up(cursor, known_end) and not self._wait_processed(cursor):
                return
            try:
                result = calls.pull(self.ref, cursor)
            except Exception as error:  # keep trying until told to stop
                if self.stop.is_set():
                    return
                self.stop.wait(self.pull_failed(error, failures))
                failures += 1
                continue
            failures = 0
            known_end = result.end_cursor.position
            batch = batch_of(result)
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
                self._progress.wait(POLL)
        return False

    def _enqueue(self, batch: Batch) -> bool:
        while not self.stop.is_set():
            try:
                self._queue.put(batch, timeout=POLL)
                return True
            except queue.Full:
                continue
        return False


class ConsumerGroupWorker(Member[_ShardConsumer]):
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
            timeout=OWN_TIMEOUT,
            retry=OWN_RETRY,
        )
        self.calls = _GroupCalls(self.client, self.scope, consumer, self.settings)
        self.processor_factory = processor
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._heartbeat_loop, name=f"logharbor-heartbeat-{consumer}", daemon=True
        )

    def _new_shard(self, ref: ShardRef) -> _ShardConsumer:
        return _ShardConsumer(self, ref)

    # --------------------------------------------------------------- lifecycle

    def start(self) -> ConsumerGroupWorker:
        """Create or update the group, then start heartbeating and consuming."""
        self._begin()
        try:
            if self.settings.update_group:
                self.calls.ensure_group()
        except BaseException:
            self._finish()
            raise
        self._thread.start()
        return self

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
            answer = self.calls.heartbeat(held)
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
            self.calls.leave()
        except LogHarborError as error:
            self._left_failed(error)
