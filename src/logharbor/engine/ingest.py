"""Turning a request body into a log group ready to store, or a clear error.

Everything is checked before anything is stored: the compression, the sizes
(declared and actual, against the limits), and the protobuf itself.  The
stored payload is the sender's lz4 or zstd bytes as they came; other bodies
are stored lz4-compressed.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import DecodeError

from .._native import speedups
from ..protocol.codec import Compression, compress, decompress
from ..protocol.errors import ErrorCode, ServiceError
from ..protocol.schema import LogGroup, RawLogGroup

_PARENT_POLL = 0.5  # seconds between a worker's checks that its server still runs

NANOS = 1_000_000_000
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Limits:
    """Request size limits; a body over them is refused with 413."""

    max_body_bytes: int = 10 << 20
    max_raw_bytes: int = 50 << 20
    # logs in one log group: whoever decodes a group (the indexer, pulls that decode)
    # pays for each log, and 50 MiB of empty logs would be 13 million of them
    max_group_logs: int = 1_000_000


def check_raw_size(
    size: int, limits: Limits, *, what: str = "log group", at_least: bool = False
) -> None:
    """Refuse a log group (or an InLong batch) of more than ``max_raw_bytes``;
    ``at_least`` when ``size`` counts only what was built so far."""
    if size > limits.max_raw_bytes:
        so_far = " (at least)" if at_least else ""
        raise ServiceError(
            ErrorCode.RAW_SIZE_TOO_LARGE,
            f"{what} of {size} bytes{so_far} exceeds the limit of {limits.max_raw_bytes}",
        )


def check_log_count(count: int, limits: Limits) -> None:
    if count > limits.max_group_logs:
        raise ServiceError(
            ErrorCode.BODY_TOO_LARGE,
            f"log group of {count} logs exceeds the limit of {limits.max_group_logs} logs",
        )


@dataclass(frozen=True, slots=True)
class PreparedGroup:
    payload: bytes
    compression: Compression
    raw_size: int
    log_count: int


def prepare_protobuf(
    body: bytes, compression: Compression, raw_size: int | None, limits: Limits
) -> PreparedGroup:
    """Validate a protobuf ``LogGroup`` body (compressed or not) for storage."""
    if len(body) > limits.max_body_bytes:
        raise ServiceError(
            ErrorCode.BODY_TOO_LARGE,
            f"body of {len(body)} bytes exceeds the limit of {limits.max_body_bytes}",
        )
    raw = decompress(body, compression, raw_size=raw_size, max_raw_size=limits.max_raw_bytes)
    log_count = _validate(raw)
    check_log_count(log_count, limits)
    if compression in (Compression.LZ4, Compression.ZSTD):
        return PreparedGroup(body, compression, len(raw), log_count)
    return PreparedGroup(compress(raw, Compression.LZ4), Compression.LZ4, len(raw), log_count)


def _validate(raw: bytes) -> int:
    """Check a serialized LogGroup (well-formed, required fields present); return
    its log count.  The C speedups give the same verdict as protobuf at a fraction
    of the cost; protobuf is the reference and explains what a bad group lacks."""
    if speedups is not None:
        try:
            count: int = speedups.validate_log_group(raw)
        except ValueError:
            # protobuf explains what is wrong (and is the reference, were they to differ)
            return _validate_with_protobuf(raw)
        if count == 0:
            raise ServiceError(ErrorCode.INVALID_LOG_GROUP, "LogGroup has no logs")
        return count
    return _validate_with_protobuf(raw)


def _validate_with_protobuf(raw: bytes) -> int:
    group = RawLogGroup()
    try:
        group.ParseFromString(raw)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ServiceError(
            ErrorCode.INVALID_LOG_GROUP, f"malformed LogGroup protobuf: {exc}"
        ) from None
    if not group.IsInitialized():
        missing = ", ".join(group.FindInitializationErrors()[:5])
        raise ServiceError(
            ErrorCode.INVALID_LOG_GROUP, f"LogGroup is missing required fields: {missing}"
        )
    count = len(group.Logs)
    if count == 0:
        raise ServiceError(ErrorCode.INVALID_LOG_GROUP, "LogGroup has no logs")
    return count


def prepare_json(document: Any, limits: Limits) -> PreparedGroup:
    """Validate a JSON log group and store it as an lz4-compressed protobuf.

    Shape: ``{"topic": str, "source": str, "tags": {str: str}, "logs": [log, ...]}``
    where a log is ``{"time": seconds (int or float) | "time_ns": int,
    "contents": {key: value} | [[key, value], ...]}``; a log without a time
    gets the server's receive time.  Values that are not strings are stored
    as their JSON text.
    """
    if not isinstance(document, Mapping):
        raise _json_error("the body must be a JSON object")
    logs = document.get("logs")
    if not isinstance(logs, list) or not logs:
        raise _json_error("'logs' must be a non-empty list")
    check_log_count(len(logs), limits)
    group = LogGroup()
    for key in ("topic", "source"):
        value = document.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise _json_error(f"'{key}' must be a string")
            setattr(group, key.capitalize(), value)
    tags = document.get("tags") or {}
    for tag_key, tag_value in _pairs(tags, "tags"):
        group.LogTags.add(Key=tag_key, Value=tag_value)
    now = time.time_ns()
    for index, log in enumerate(logs):
        if not isinstance(log, Mapping):
            raise _json_error(f"logs[{index}] must be an object")
        time_ns = _log_time(log, index, now)
        entry = group.Logs.add(Time=time_ns // NANOS, Time_ns=time_ns % NANOS)
        for key, value in _pairs(log.get("contents") or {}, f"logs[{index}].contents"):
            entry.Contents.add(Key=key, Value=value)
    raw = group.SerializeToString()
    check_raw_size(len(raw), limits)
    return PreparedGroup(compress(raw, Compression.LZ4), Compression.LZ4, len(raw), len(logs))


def _log_time(log: Mapping[str, Any], index: int, now: int) -> int:
    if "time_ns" in log:
        value = log["time_ns"]
        if not isinstance(value, int) or isinstance(value, bool):
            raise _json_error(f"logs[{index}].time_ns must be an integer")
        time_ns = value
    elif "time" in log:
        value = log["time"]
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _json_error(f"logs[{index}].time must be a number of seconds")
        if not 0 <= value < 1 << 32:  # before int() of it, which fails on inf and NaN
            raise _json_error(f"logs[{index}] has a time outside the supported range")
        time_ns = int(value) * NANOS if isinstance(value, int) else int(value * NANOS)
    else:
        return now
    if not 0 <= time_ns < (1 << 32) * NANOS:
        raise _json_error(f"logs[{index}] has a time outside the supported range")
    return time_ns


def _pairs(value: Any, where: str) -> list[tuple[str, str]]:
    items: Sequence[Any]
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, list):
        items = value
    else:
        raise _json_error(f"'{where}' must be an object or a list of [key, value] pairs")
    pairs = []
    for item in items:
        if not isinstance(item, list | tuple) or len(item) != 2 or not isinstance(item[0], str):
            raise _json_error(f"'{where}' must hold [key, value] pairs with string keys")
        key, val = item
        pairs.append((key, val if isinstance(val, str) else _json_text(val)))
    return pairs


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _json_error(message: str) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_BODY, f"invalid JSON log group: {message}")


# ------------------------------------------------------------ validation pool


def _prepare_in_worker(
    body: bytes, compression: int, raw_size: int | None, limits: Limits
) -> tuple[bool, Any, Any, Any]:
    """Runs in a pool process.  Returns (True, payload or None for "the body as it
    came", raw size, log count) or (False, error code, message, None)."""
    try:
        group = prepare_protobuf(body, Compression(compression), raw_size, limits)
    except ServiceError as exc:
        return False, exc.code.value, exc.message, None
    payload = None if group.payload is body else group.payload
    return True, payload, group.raw_size, group.log_count


def _follow_parent(parent: int) -> None:
    """In a worker: exit when the server that started it is gone (a ``kill -9``
    leaves its workers waiting on a queue that siblings keep open, for ever)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL)
        os._exit(0)

    threading.Thread(target=watch, name="logharbor-follow-parent", daemon=True).start()


def _ready() -> bool:
    return True


class IngestPool:
    """Validates large protobuf bodies off the event loop: in a thread with the C
    speedups (which release the GIL), else in worker processes, so that parsing
    (which holds the GIL) uses the other cores while the server process serves
    HTTP.  The workers also run other CPU-bound work (``submit``: the indexer's
    decoding).

    Bodies under ``inline_below`` bytes are validated in the caller: for them the
    hand-off costs more than it saves.  The pool's queue is bounded by the
    server's own request concurrency; a worker that dies is replaced and the
    request is validated in the caller instead.

    Workers start in the background (``warm``); until they are up, work runs in
    the caller, so a cold pool never adds latency.
    """

    def __init__(self, workers: int, *, inline_below: int = 64 << 10) -> None:
        self.workers = workers
        self.inline_below = inline_below
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._ready = threading.Event()

    def warm(self) -> None:
        """Start the worker processes now; ``ready`` once they have answered."""
        if self.workers <= 0:
            return

        def answered(future: Future[bool]) -> None:
            if future.exception() is None:
                self._ready.set()

        for _ in range(self.workers):
            self._executor().submit(_ready).add_done_callback(answered)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_follow_parent,
                    initargs=(os.getpid(),),
                )
            return self._pool

    async def prepare(
        self, body: bytes, compression: Compression, raw_size: int | None, limits: Limits
    ) -> PreparedGroup:
        if len(body) < self.inline_below:
            return prepare_protobuf(body, compression, raw_size, limits)
        if speedups is not None:
            # decompression and the C validation release the GIL: a thread is
            # enough to use the other core, without shipping the body to a process
            return await asyncio.to_thread(prepare_protobuf, body, compression, raw_size, limits)
        if self.workers <= 0:
            return prepare_protobuf(body, compression, raw_size, limits)
        if not self.ready:
            return await asyncio.to_thread(prepare_protobuf, body, compression, raw_size, limits)
        if len(body) > limits.max_body_bytes:
            raise ServiceError(
                ErrorCode.BODY_TOO_LARGE,
                f"body of {len(body)} bytes exceeds the limit of {limits.max_body_bytes}",
            )
        try:
            ok, first, second, third = await asyncio.wrap_future(
                self._executor().submit(
                    _prepare_in_worker,
                    body,
                    int(compression),
                    raw_size,
                    limits,
                )
            )
        except BrokenProcessPool:
            with self._lock:
                self._pool = None
            return await asyncio.to_thread(prepare_protobuf, body, compression, raw_size, limits)
        if not ok:
            raise ServiceError(ErrorCode.lookup(first) or ErrorCode.INTERNAL, second)
        if first is None:
            return PreparedGroup(body, compression, second, third)
        return PreparedGroup(first, Compression.LZ4, second, third)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` in a worker process (inline when the pool has no workers;
        in a thread if a worker died)."""
        if self.workers <= 0 or not self.ready:
            done: Future[T] = Future()
            try:
                done.set_result(fn(*args))
            except BaseException as exc:
                done.set_exception(exc)
            return done
        try:
            return self._executor().submit(fn, *args)
        except BrokenProcessPool:
            with self._lock:
                self._pool = None
            return self._executor().submit(fn, *args)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
