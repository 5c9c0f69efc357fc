"""``Producer``: batches logs in memory and sends them from background threads.

::

    with Producer("http://127.0.0.1:8480", access_key_id=..., access_key_secret=...) as p:
        future = p.send("web", "access", {"path": "/", "status": "200"})
        p.send("web", "access", [{"path": "/a"}, {"path": "/b"}], callback=print)
    # leaving the block delivers everything (close() with no timeout)

Lifecycle: a producer is ``open`` (takes logs), then ``closing`` (delivers what it
holds, refuses new logs with ``ProducerClosedError``), then ``closed``.

Backpressure: at most ``max_buffer_bytes`` of encoded logs are held, from ``send``
until their batch is delivered or has failed for good. A ``send`` that does not fit
waits up to ``buffer_full_timeout`` seconds for room, then raises ``BufferFullError``.

Threads: one timer thread (lingers, retry backoffs; it reads the injectable clock)
and ``workers`` sender threads, each with its own ``LogClient``; they share one pool
of connections (one per busy sender), built once.
Callbacks run on sender threads: keep them short. ``on_producer_thread()`` tells
these threads apart, so that what they log (httpx's record of each request, say) is
not fed back into a producer by the logging integrations.

Fork: a child process gets a fresh, empty producer in the same state: the logs the
parent held stay the parent's to deliver, the child never touches the parent's
threads or connections, and it starts its own threads on its first ``send``.

Exit: interpreter exit (``atexit``) closes every open producer, waiting up to
``exit_timeout``. A forked child that ends through multiprocessing or a
``billiard.Process`` (``os._exit`` after their finalizers, skipping ``atexit``) closes
them from a multiprocessing (and billiard) finalizer instead. (billiard's pool, as in
celery's prefork workers, skips both: docs/producer.md shows the signal to use.)
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import heapq
import importlib
import itertools
import logging
import multiprocessing.util
import os
import queue
import sys
import threading
import time
import types
import weakref
from collections import Counter
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from ..protocol.codec import MAX_HASH_KEY, format_hash_key
from ._client import LogClient
from ._config import RetryPolicy
from ._encoding import decode_logs, encode_dict, encode_item, group_suffix
from ._exceptions import (
    BufferFullError,
    LogHarborError,
    ProducerClosedError,
)
from ._models import LogItem
from ._producer_config import Clock, MonotonicClock, ProducerConfig
from ._producer_metrics import MetricsRecorder, metrics_for
from ._requests import compression_of, routing_key
from ._types import PairsInput

_log = logging.getLogger("logharbor.producer")

#: One log (a ``LogItem`` or a mapping of contents) or a sequence of them.
LogsInput = LogItem | Mapping[str, str] | Sequence[LogItem | Mapping[str, str]]
SendCallback = Callable[["SendResult"], object]

_ONE_LOG = (dict, LogItem, Mapping)
_BatchKey = tuple[str, str, str, str, tuple[tuple[str, str], ...], str | None]

# Marks the threads of every producer (``marked`` is set on each of them).
_own_threads = threading.local()


def on_producer_thread() -> bool:
    """Whether the calling thread is a producer's timer or sender thread.

    What such a thread logs (httpx's and httpcore's records of the producer's own
    requests, a callback's records) must not be sent through a producer again: each
    batch would log more records, which would make another batch, forever.
    """
    return getattr(_own_threads, "marked", False)


class ProducerState(Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request that carried a batch: ``code`` is ``OK`` or the error's code."""

    code: str
    message: str
    request_id: str | None
    time: float  # Unix seconds when the attempt ended
    status: int | None = None


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of one ``send``: whether all its logs were delivered, every
    attempt of the batches that carried them, and the final error if any."""

    success: bool
    attempts: tuple[Attempt, ...]
    error: LogHarborError | None
    log_count: int
    _undelivered: tuple[bytes, ...] = field(default=(), repr=False)

    @property
    def undelivered(self) -> list[LogItem]:
        """The logs of this send that were not delivered (none on success)."""
        return decode_logs(self._undelivered) if self._undelivered else []


@dataclass(frozen=True, slots=True)
class ProducerStatistics:
    """A snapshot of a producer's buffer and counters (what the metrics export)."""

    state: ProducerState
    pending_logs: int  # sent to the producer, not yet delivered or failed
    pending_bytes: int
    open_batches: int  # still taking logs
    batches_in_flight: int  # sealed: queued, being sent, or waiting for a retry
    waiting_retries: int
    delivered_logs: int
    delivered_bytes: int
    delivered_batches: int
    failed_logs: int
    failed_batches: int
    retries: int
    timeouts: int
    errors_by_code: Mapping[str, int]


# Guards the moment a delivery finishes against futures that start waiting on it.
_DONE_LOCK = threading.Lock()


class SendFuture:
    """The pending ``SendResult`` of one ``send``: a lightweight future.

    ``result(timeout)`` blocks until the logs are delivered or have failed for good
    (``TimeoutError`` if ``timeout`` seconds pass first); ``exception(timeout)`` is
    that result's ``error``; ``add_done_callback`` runs a function with this future
    once it is done (at once if it already is); ``await future`` in asyncio code.
    Once ``done()``, the ``callback`` given to ``send`` has run.

    It is a view of the batch that holds the logs (or of the batches, for a send
    spread over several): it allocates nothing more until someone asks for the
    result or waits, so a ``send`` costs far less than a ``concurrent.futures.Future``
    (whose ``threading.Condition`` alone costs about as much as encoding the log).
    """

    __slots__ = ("_count", "_delivery", "_result", "_start")

    def __init__(self, delivery: _Delivery, start: int, count: int) -> None:
        self._delivery = delivery
        self._start = start
        self._count = count
        self._result: SendResult | None = None

    def done(self) -> bool:
        return self._delivery.finished

    def result(self, timeout: float | None = None) -> SendResult:
        if not self._delivery.finished and not self._delivery.wait(timeout):
            raise TimeoutError("the logs were not delivered in time")
        return self._outcome()

    def exception(self, timeout: float | None = None) -> LogHarborError | None:
        """The final error of this send (``result(timeout).error``): ``None`` once
        every log was delivered. Raises ``TimeoutError`` as ``result`` does."""
        return self.result(timeout).error

    def add_done_callback(self, fn: Callable[[SendFuture], object]) -> None:
        self._delivery.listen(functools.partial(fn, self))

    def __await__(self) -> Generator[Any, None, SendResult]:
        """``await future`` in asyncio code."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[SendResult] = loop.create_future()

        def wake(done: SendFuture) -> None:
            loop.call_soon_threadsafe(_resolve, waiter, done.result())

        self.add_done_callback(wake)
        return waiter.__await__()

    def _outcome(self) -> SendResult:
        """The result, built on first use (the delivery's outcome must be known)."""
        if self._result is None:
            self._result = self._delivery.result_for(self._start, self._count)
        return self._result


def _resolve(waiter: asyncio.Future[SendResult], result: SendResult) -> None:
    if not waiter.done():
        waiter.set_result(result)


class _Delivery:
    """What the futures of sends wait on: a batch, or the batches of one send spread
    over several (``_Spread``). It is ``finished`` once its outcome is known and the
    callbacks given to ``send`` have run; then it wakes waiters and runs listeners."""

    __slots__ = ("_callbacks", "_event", "_listeners", "finished")

    def __init__(self) -> None:
        self.finished = False
        self._event: threading.Event | None = None  # created for the first waiter
        self._listeners: list[Callable[[], object]] = []
        self._callbacks: list[tuple[SendFuture, SendCallback]] = []

    def result_for(self, start: int, count: int) -> SendResult:
        """The outcome for the ``count`` logs of one send, from ``start``."""
        raise NotImplementedError

    def call_back(self, future: SendFuture, callback: SendCallback) -> None:
        """Run ``callback`` with ``future``'s result before finishing (registered
        under the producer's lock, before the outcome can be known)."""
        self._callbacks.append((future, callback))

    def wait(self, timeout: float | None) -> bool:
        with _DONE_LOCK:
            if self.finished:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)

    def listen(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` once finished (now, if it is)."""
        with _DONE_LOCK:
            if not self.finished:
                self._listeners.append(fn)
                return
        fn()

    def _finish(self) -> None:
        for future, callback in self._callbacks:
            try:
                callback(future._outcome())
            except Exception:
                _log.exception("a producer callback failed")
        self._callbacks = []
        with _DONE_LOCK:
            self.finished = True
            event, listeners, self._listeners = self._event, self._listeners, []
        if event is not None:
            event.set()
        for fn in listeners:
            try:
                fn()
            except Exception:
                _log.exception("a send future's done callback failed")


class _Batch(_Delivery):
    """Logs sent to one log group: filled while open, then sealed and sent until
    ``done`` (under the producer's lock); then ``error`` and ``final_attempts`` hold
    its outcome, and only a failed batch keeps its ``entries``."""

    __slots__ = (
        "attempts",
        "created",
        "done",
        "entries",
        "error",
        "final_attempts",
        "hash_key",
        "key",
        "retries",
        "sealed",
        "size",
    )

    def __init__(self, key: _BatchKey, created: float) -> None:
        super().__init__()
        self.key = key
        self.hash_key = key[5]
        self.created = created
        self.entries: list[bytes] = []
        self.size = 0
        self.attempts: list[Attempt] = []
        self.retries = 0
        self.sealed = False
        self.done = False
        self.error: LogHarborError | None = None
        # The attempts when the outcome was decided (a request cut short by
        # ``close(timeout)`` may still record one later).
        self.final_attempts: tuple[Attempt, ...] = ()

    def body(self) -> bytes:
        _, _, topic, source, tags, _ = self.key
        return b"".join(self.entries) + group_suffix(topic, source, tags)

    def result_for(self, start: int, count: int) -> SendResult:
        if self.error is None:
            return SendResult(True, self.final_attempts, None, count)
        failed = tuple(self.entries[start : start + count])
        return SendResult(False, self.final_attempts, self.error, count, failed)


class _Spread(_Delivery):
    """One send whose logs went into several batches: finished after all of them."""

    __slots__ = ("_left", "parts")

    def __init__(self, parts: list[tuple[_Batch, int, int]]) -> None:
        super().__init__()
        self.parts = parts  # (batch, start, count) in the order of the send's logs
        self._left = len(parts)
        for batch, _, _ in parts:
            batch.listen(self._part_done)

    def _part_done(self) -> None:
        with _DONE_LOCK:
            self._left -= 1
            last = not self._left
        if last:
            self._finish()

    def result_for(self, start: int, count: int) -> SendResult:
        attempts: list[Attempt] = []
        undelivered: list[bytes] = []
        error = None
        for batch, first, part_count in self.parts:
            attempts += batch.final_attempts
            if batch.error is not None:
                error = error or batch.error
                undelivered += batch.entries[first : first + part_count]
        return SendResult(error is None, tuple(attempts), error, count, tuple(undelivered))


class _SenderPool(httpx.BaseTransport):
    """The HTTP connections of a producer's senders, one per busy sender.

    An ``httpx.HTTPTransport`` costs tens of milliseconds of CPU to build (its TLS
    context), under the GIL that the threads calling ``send`` need: the senders
    share one, built on their first request, instead of building one each. Every
    sender's client closes the pool when the sender stops; the last one closes it.
    """

    def __init__(self, senders: int) -> None:
        self._lock = threading.Lock()
        self._users = senders
        self._limits = httpx.Limits(max_connections=None, max_keepalive_connections=senders)
        self._transport: httpx.HTTPTransport | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            if self._transport is None:
                self._transport = httpx.HTTPTransport(limits=self._limits)
            transport = self._transport
        return transport.handle_request(request)

    def close(self) -> None:
        with self._lock:
            self._users -= 1
            transport = self._transport if not self._users else None
        if transport is not None:
            transport.close()


_PRODUCERS: weakref.WeakSet[Producer] = weakref.WeakSet()


class Producer:
    """Batches logs per (project, logstore, topic, source, tags, hash-key bucket) and
    sends them from ``config.workers`` threads; see the module docstring.

    ``transport`` replaces the network of every sender (tests); ``clock`` measures
    lingers and retry backoffs; ``registry`` receives the Prometheus metrics
    (default: the global registry; labelled by ``config.name``).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        access_key_id: str | None = None,
        access_key_secret: str | None = None,
        config: ProducerConfig | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.config = config or ProducerConfig()
        self._credentials = (access_key_id, access_key_secret)
        self._transport = transport
        self._clock: Clock = clock or MonotonicClock()
        self._compression = compression_of(self.config.compression)
        self._max_count = self.config.batch.max_count
        self._max_bytes = self.config.batch.max_bytes
        self._max_buffer_bytes = self.config.max_buffer_bytes
        this = weakref.ref(self)  # the registry must not keep the producer alive
        self._metrics = MetricsRecorder(
            metrics_for(registry),
            self.config.name,
            lambda: getattr(this(), "_pending_logs", 0),
            lambda: getattr(this(), "_pending_bytes", 0),
        )
        self._state = ProducerState.OPEN
        self._close_lock = threading.Lock()
        self._reset()
        _PRODUCERS.add(self)

    # ------------------------------------------------------------ state

    def _reset(self) -> None:
        """Empty state and fresh locks (at start, and in a forked child)."""
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)  # buffer room
        self._progress = threading.Condition(self._lock)  # a batch completed
        self._timer_wake = threading.Condition(self._lock)
        self._ready: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._open: dict[_BatchKey, _Batch] = {}
        self._in_flight: set[_Batch] = set()
        self._retrying: list[tuple[float, int, _Batch]] = []
        self._sequence = itertools.count()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._stopping = False
        self._pending_logs = 0
        self._pending_bytes = 0
        self._delivered = [0, 0, 0]  # logs, bytes, batches
        self._failed = [0, 0]  # logs, batches
        self._retries = 0
        self._timeouts = 0
        self._errors: Counter[str] = Counter()

    def _start(self) -> None:
        self._started = True
        if _forked:
            # multiprocessing and billiard empty their finalizer registries when a
            # child process starts, after the fork hooks ran: register (again) now.
            _register_exit_finalizers()
        workers = self.config.workers
        transport = self._transport or _SenderPool(workers)
        self._threads = [threading.Thread(target=self._run_timer, name="logharbor-producer-timer")]
        self._threads += [
            threading.Thread(
                target=self._run_sender, args=(transport,), name=f"logharbor-producer-sender-{i}"
            )
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    @property
    def state(self) -> ProducerState:
        return self._state

    def statistics(self) -> ProducerStatistics:
        with self._lock:
            return ProducerStatistics(
                state=self._state,
                pending_logs=self._pending_logs,
                pending_bytes=self._pending_bytes,
                open_batches=len(self._open),
                batches_in_flight=len(self._in_flight),
                waiting_retries=len(self._retrying),
                delivered_logs=self._delivered[0],
                delivered_bytes=self._delivered[1],
                delivered_batches=self._delivered[2],
                failed_logs=self._failed[0],
                failed_batches=self._failed[1],
                retries=self._retries,
                timeouts=self._timeouts,
                errors_by_code=dict(self._errors),
            )

    # ---------------------------------------------------------- sending

    def send(
        self,
        project: str,
        logstore: str,
        logs: LogsInput,
        *,
        topic: str = "",
        source: str = "",
        tags: PairsInput | None = None,
        hash_key: str | bytes | None = None,
        callback: SendCallback | None = None,
    ) -> SendFuture:
        """Queue one log or many and return at once.

        A mapping is one log's contents, stamped now; a ``LogItem`` keeps its time.
        The future (and ``callback``, on a sender thread) gets a ``SendResult`` once
        every log of this call is delivered or has failed for good.
        Raises ``ProducerClosedError``, ``BufferFullError``, ``TypeError`` (bad contents).
        """
        return self._send(
            project, logstore, logs, topic, source, tags, hash_key, callback,
            self.config.buffer_full_timeout,
        )  # fmt: skip

    async def send_async(
        self,
        project: str,
        logstore: str,
        logs: LogsInput,
        *,
        topic: str = "",
        source: str = "",
        tags: PairsInput | None = None,
        hash_key: str | bytes | None = None,
    ) -> SendResult:
        """``send`` for asyncio programs: waits for buffer room without blocking the
        event loop, then awaits the ``SendResult``."""
        args = (project, logstore, logs, topic, source, tags, hash_key, None)
        try:
            future = self._send(*args, 0.0)
        except BufferFullError:
            if not self.config.buffer_full_timeout:
                raise
            wait = self.config.buffer_full_timeout
            future = await asyncio.to_thread(self._send, *args, wait)
        return await future

    def _send(
        self,
        project: str,
        logstore: str,
        logs: LogsInput,
        topic: str,
        source: str,
        tags: PairsInput | None,
        hash_key: str | bytes | None,
        callback: SendCallback | None,
        wait: float,
    ) -> SendFuture:
        now_ns = time.time_ns()
        if type(logs) is dict:  # the common case, without the checks of encode_item
            entries = [encode_dict(logs, now_ns)]
        elif isinstance(logs, _ONE_LOG):
            entries = [encode_item(logs, now_ns)]
        else:
            entries = [encode_item(log, now_ns) for log in logs]
        tag_pairs = () if not tags else tuple(tags.items() if isinstance(tags, Mapping) else tags)
        bucket = None if hash_key is None else self._bucket(hash_key)
        key = (project, logstore, topic, source, tag_pairs, bucket)
        return self._enqueue(key, entries, callback, wait)

    def _bucket(self, hash_key: str | bytes) -> str:
        key = routing_key(hash_key)
        buckets = self.config.batch.hash_key_buckets
        if buckets is None:
            return key
        width = (MAX_HASH_KEY + 1) // buckets
        return format_hash_key(int(key, 16) // width * width)

    def _enqueue(
        self, key: _BatchKey, entries: list[bytes], callback: SendCallback | None, wait: float
    ) -> SendFuture:
        size = len(entries[0]) if len(entries) == 1 else sum(map(len, entries))
        with self._lock:
            if self._state is not ProducerState.OPEN:
                raise ProducerClosedError(f"the producer is {self._state.value}")
            if not self._started:
                self._start()
            if self._pending_bytes + size > self._max_buffer_bytes:
                self._reserve(size, wait)
            self._pending_logs += len(entries)
            self._pending_bytes += size
            batch = self._open.get(key)
            if batch is not None and len(entries) == 1 and batch.size + size <= self._max_bytes:
                # The common case: one log that fits the open batch (an open batch
                # always has room for one more log: a full one is sealed at once).
                future = SendFuture(batch, len(batch.entries), 1)
                batch.entries.append(entries[0])
                batch.size += size
            else:
                future, batch = self._place(key, batch, entries)
            if callback is not None:
                future._delivery.call_back(future, callback)
            if len(batch.entries) >= self._max_count or batch.size >= self._max_bytes:
                self._seal(batch)
            return future

    def _place(
        self, key: _BatchKey, batch: _Batch | None, entries: list[bytes]
    ) -> tuple[SendFuture, _Batch]:
        """Add ``entries`` to the open batch of ``key``, sealing it and opening new
        ones as they fill up; the future of these logs and the batch now open."""
        max_count, max_bytes = self._max_count, self._max_bytes
        if batch is None:
            batch = self._new_batch(key)
        start = len(batch.entries)
        parts: list[tuple[_Batch, int, int]] = []  # the batches filled up on the way
        for entry in entries:
            if batch.entries and (
                len(batch.entries) >= max_count or batch.size + len(entry) > max_bytes
            ):
                if len(batch.entries) > start:  # it holds some of these logs
                    parts.append((batch, start, len(batch.entries) - start))
                self._seal(batch)
                batch = self._new_batch(key)
                start = 0
            batch.entries.append(entry)
            batch.size += len(entry)
        count = len(batch.entries) - start
        if not parts:
            return SendFuture(batch, start, count), batch
        parts.append((batch, start, count))
        return SendFuture(_Spread(parts), 0, len(entries)), batch

    def _reserve(self, size: int, wait: float) -> None:
        limit = self.config.max_buffer_bytes
        if size > limit:
            raise BufferFullError(f"{size} bytes of logs exceed max_buffer_bytes ({limit})")
        if self._pending_bytes + size <= limit:
            return
        deadline = time.monotonic() + wait
        while self._pending_bytes + size > limit:
            if self._state is not ProducerState.OPEN:
                raise ProducerClosedError(f"the producer is {self._state.value}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise BufferFullError(
                    f"the producer's buffer ({limit} bytes) stayed full for {wait:g} s"
                )
            self._space.wait(left)

    def _new_batch(self, key: _BatchKey) -> _Batch:
        batch = self._open[key] = _Batch(key, self._clock.now())
        self._timer_wake.notify()
        return batch

    def _seal(self, batch: _Batch) -> None:
        if self._open.get(batch.key) is batch:
            del self._open[batch.key]
        batch.sealed = True
        self._in_flight.add(batch)
        self._ready.put(batch)

    # ----------------------------------------------------------- timer

    def _run_timer(self) -> None:
        _own_threads.marked = True
        linger = self.config.batch.linger
        with self._lock:
            while not self._stopping:
                now = self._clock.now()
                next_due: float | None = None
                for batch in list(self._open.values()):
                    due = batch.created + linger
                    if due <= now:
                        self._seal(batch)
                    elif next_due is None or due < next_due:
                        next_due = due
                while self._retrying and self._retrying[0][0] <= now:
                    self._ready.put(heapq.heappop(self._retrying)[2])
                if self._retrying and (next_due is None or self._retrying[0][0] < next_due):
                    next_due = self._retrying[0][0]
                self._clock.wait(self._timer_wake, None if next_due is None else next_due - now)

    # ---------------------------------------------------------- senders

    def _run_sender(self, transport: httpx.BaseTransport) -> None:
        _own_threads.marked = True
        key_id, secret = self._credentials
        client = LogClient(
            self.endpoint,
            access_key_id=key_id,
            access_key_secret=secret,
            timeout=self.config.timeout,
            retry=RetryPolicy(max_retries=0),
            transport=transport,
        )
        if self.config.user_agent is not None:  # LogClient has no option for it
            client._http.headers["user-agent"] = self.config.user_agent
        try:
            while (batch := self._ready.get()) is not None:
                self._attempt(client, batch)
        finally:
            client.close()

    def _attempt(self, client: LogClient, batch: _Batch) -> None:
        if batch.done:
            return
        project, logstore = batch.key[0], batch.key[1]
        try:
            client.put_log_group_raw(
                project,
                logstore,
                batch.body(),
                hash_key=batch.hash_key,
                compression=self._compression,
            )
        except LogHarborError as error:
            self._failed_attempt(batch, error)
        except Exception as exc:  # a bug, not the network: report it, do not retry
            _log.exception("the producer failed to send a batch")
            self._failed_attempt(batch, LogHarborError(str(exc), code=type(exc).__name__))
        else:
            batch.attempts.append(Attempt("OK", "", None, time.time(), 200))
            self._complete(batch, None)

    def _failed_attempt(self, batch: _Batch, error: LogHarborError) -> None:
        batch.attempts.append(
            Attempt(error.code, error.message, error.request_id, time.time(), error.status)
        )
        timed_out = error.code.endswith("Timeout")
        self._metrics.attempt_failed(error.code, timed_out)
        delay = self.config.retry.delay_before_retry(error, batch.retries)
        with self._lock:
            self._errors[error.code] += 1
            self._timeouts += timed_out
            if delay is not None and not batch.done and not self._stopping:
                due = self._clock.now() + delay
                batch.retries += 1
                self._retries += 1
                heapq.heappush(self._retrying, (due, next(self._sequence), batch))
                self._timer_wake.notify()
                retried = True
            else:
                retried = False
        if retried:
            self._metrics.retried()
        else:
            self._complete(batch, error)

    def _complete(self, batch: _Batch, error: LogHarborError | None) -> None:
        with self._lock:
            if batch.done:
                return
            batch.done = True
            batch.error = error
            batch.final_attempts = tuple(batch.attempts)
            self._in_flight.discard(batch)
            count = len(batch.entries)
            self._pending_logs -= count
            self._pending_bytes -= batch.size
            if error is None:
                self._delivered[0] += count
                self._delivered[1] += batch.size
                self._delivered[2] += 1
                batch.entries = []  # futures may outlive the batch: keep only what they need
            else:
                self._failed[0] += count
                self._failed[1] += 1
            self._space.notify_all()
            self._progress.notify_all()
        latency = max(0.0, self._clock.now() - batch.created)
        code = "OK" if error is None else error.code
        self._metrics.batch_done(code, count, batch.size, latency)
        batch._finish()

    # -------------------------------------------------------- lifecycle

    def flush(self, timeout: float | None = None) -> bool:
        """Send every open batch now and wait until all batches held at this moment
        are delivered or failed; ``False`` if ``timeout`` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            for batch in list(self._open.values()):
                self._seal(batch)
            waiting = set(self._in_flight)
            return self._wait_for(waiting, deadline)

    async def flush_async(self, timeout: float | None = None) -> bool:
        return await asyncio.to_thread(self.flush, timeout)

    def _wait_for(self, batches: set[_Batch], deadline: float | None) -> bool:
        while True:
            waiting = {batch for batch in batches if not batch.done}
            if not waiting:
                return True
            batches = waiting
            if deadline is None:
                self._progress.wait()
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._progress.wait(left)

    def close(self, timeout: float | None = None) -> list[LogItem]:
        """Stop taking logs, deliver what is held, and stop the threads.

        With ``timeout`` (seconds), give up after that long: every log not yet
        delivered is reported to its callback and future as failed with
        ``ProducerClosedError``, and returned. (A batch whose request was under way
        may still have been stored: delivery is at least once.) Without a timeout
        it waits for everything (see ``safe_close``). Closing twice does nothing.
        """
        with self._close_lock:
            deadline = None if timeout is None else time.monotonic() + timeout
            with self._lock:
                if self._state is ProducerState.CLOSED:
                    return []
                self._state = ProducerState.CLOSING
                self._space.notify_all()
                for batch in list(self._open.values()):
                    self._seal(batch)
                self._wait_for(set(self._in_flight), deadline)
                abandoned = [b for b in self._in_flight if not b.done]
                self._retrying.clear()
                self._stopping = True
                self._timer_wake.notify_all()
            error = ProducerClosedError("the producer was closed before these logs were delivered")
            for batch in abandoned:
                self._complete(batch, error)
            for _ in range(self.config.workers):
                self._ready.put(None)
            self._join(deadline)
            self._state = ProducerState.CLOSED
            return decode_logs(e for batch in abandoned for e in batch.entries)

    def _join(self, deadline: float | None) -> None:
        current = threading.current_thread()
        for thread in self._threads:
            if thread is current or not thread.is_alive():
                continue
            left = None if deadline is None else max(0.1, deadline - time.monotonic())
            thread.join(left)

    def safe_close(self) -> None:
        """Close after every held log is delivered or has failed for good."""
        self.close(None)

    async def aclose(self, timeout: float | None = None) -> list[LogItem]:
        return await asyncio.to_thread(self.close, timeout)

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Producer({self.endpoint!r}, state={self._state.value})"

    def _after_fork_in_child(self) -> None:
        self._close_lock = threading.Lock()
        self._reset()


# Whether this process is a forked child (of a process that imported this module).
_forked = False
# The finalizers that close the producers, by the ``Finalize`` class that made them.
_exit_finalizers: dict[type, Any] = {}
# multiprocessing runs finalizers of priority 0 and more first, before it joins the
# child processes (which could take long); a higher priority runs earlier.
_EXIT_PRIORITY = 10


def _after_fork_in_child() -> None:
    global _DONE_LOCK, _forked
    _DONE_LOCK = threading.Lock()  # another thread may have held it at the fork
    _forked = True
    _own_threads.marked = False  # a callback may fork: the child's thread is no sender
    for producer in list(_PRODUCERS):
        producer._after_fork_in_child()
    _register_exit_finalizers()


def _register_exit_finalizers() -> None:
    """Close the producers from the exit functions of multiprocessing and billiard.

    Their child processes (a ``Process`` of the fork start method, a ``Pool``
    worker) end with ``os._exit`` after those functions ran, skipping ``atexit``.
    A registration is kept until its registry is emptied.
    """
    finalizers: list[Any] = [multiprocessing.util.Finalize]
    if "billiard" in sys.modules:  # celery's multiprocessing; never imported here first
        with contextlib.suppress(ImportError, AttributeError):
            finalizers.append(importlib.import_module("billiard.util").Finalize)
    for finalize in finalizers:
        registered = _exit_finalizers.get(finalize)
        if registered is None or not registered.still_active():
            _exit_finalizers[finalize] = finalize(
                None, _close_all_at_exit, exitpriority=_EXIT_PRIORITY
            )


def _close_all_at_exit() -> None:
    for producer in list(_PRODUCERS):
        if producer.state is ProducerState.OPEN and producer._started:
            try:
                producer.close(producer.config.exit_timeout)
            except Exception:
                _log.exception("closing a producer at exit failed")


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all_at_exit)
