"""TLS PutLogs, DescribeCursor, ConsumeLogs and DescribeCursorTime over the engine."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ....engine import Engine, PreparedGroup
from ....engine.engine import CursorFrom
from ....engine.tls_mapping import frames_to_tls_list, parse_tls_log_group_list, tls_to_prepared
from ....engine.types import NANOS_PER_SECOND, PutResult
from ....protocol.codec import Compression, compress, decode_cursor, decompress, encode_cursor
from ....protocol.errors import ErrorCode, ServiceError
from .call import TlsCall
from .resources import ok

_INLINE_BYTES = 64 << 10
MAX_CONSUME_BYTES = 5 << 20  # about the most TLS answers at once
_CONSUME_COMPRESSION = {"lz4": Compression.LZ4, "zlib": Compression.DEFLATE, "": Compression.NONE}


def _invalid(message: str) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_PARAMETER, message)


class StreamAPI:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ---------------------------------------------------------------- put

    def _prepare(self, call: TlsCall) -> list[PreparedGroup]:
        compression = Compression.from_wire(call.header("x-tls-compresstype"))
        declared = call.header("x-tls-bodyrawsize")
        raw_size = None
        if declared:
            if not declared.strip().isdigit():
                raise _invalid("x-tls-bodyrawsize must be a number")
            raw_size = int(declared)
        limits = self.engine.limits
        raw = decompress(
            call.body, compression, raw_size=raw_size, max_raw_size=limits.max_raw_bytes
        )
        now = time.time_ns()
        return [tls_to_prepared(g, limits, now=now) for g in parse_tls_log_group_list(raw)]

    async def put_logs(self, call: TlsCall) -> Response:
        topic = call.topic()
        hash_key = call.header("x-tls-hashkey") or None
        if len(call.body) <= _INLINE_BYTES:
            groups = self._prepare(call)
        else:
            groups = await run_in_threadpool(self._prepare, call)
        futures: list[Future[PutResult]] = []
        for group in groups:
            futures.append(
                await self.engine.put_from_loop(topic.project, topic.name, group, hash_key)
            )
        for future in futures:
            await asyncio.wrap_future(future)
        return ok()

    # ------------------------------------------------------------- cursors

    async def describe_cursor(self, call: TlsCall) -> Response:
        topic = call.topic()
        shard = call.integer("ShardId")
        start = call.raw("From")
        at: CursorFrom
        if isinstance(start, str) and start.strip().lower() in ("begin", "end"):
            at = "begin" if start.strip().lower() == "begin" else "end"
        else:
            try:
                seconds = int(start) if not isinstance(start, bool) else -1
            except (TypeError, ValueError):
                seconds = -1
            if not 0 <= seconds < 1 << 32:
                raise _invalid("From must be begin, end or a Unix time in seconds")
            at = seconds * NANOS_PER_SECOND
        position = self.engine.cursor(topic.project, topic.name, shard, at)
        return ok({"Cursor": encode_cursor(position)})

    async def describe_cursor_time(self, call: TlsCall) -> Response:
        topic = call.topic()
        received = self.engine.cursor_time(
            topic.project,
            topic.name,
            call.integer("ShardId"),
            decode_cursor(call.text("Cursor")),
        )
        return ok({"CursorTime": received // NANOS_PER_SECOND})

    # ------------------------------------------------------------- consume

    async def consume_logs(self, call: TlsCall) -> Response:
        topic = call.topic()
        shard = call.integer("ShardId")
        position = decode_cursor(call.text("Cursor"))
        end = call.text("EndCursor", required=False)
        stop = decode_cursor(end) if end else None
        count = call.integer("LogGroupCount", 100, low=1, high=1000)
        wanted = (call.text("Compression", required=False) or "").lower()
        if wanted not in _CONSUME_COMPRESSION:
            raise _invalid("Compression must be lz4 or zlib")
        compression = _CONSUME_COMPRESSION[wanted]
        group = call.header("consumergroupname")
        consumer = call.header("consumername")
        if group and consumer:  # a group member's fetch: refused unless it owns the shard
            self.engine.group_fetch(topic.project, group, consumer, (topic.name, shard), position)
        else:
            self.engine.shard_status(topic.project, topic.name, shard)

        def pull() -> tuple[bytes, int, int]:
            result = self.engine.pull(
                topic.project,
                topic.name,
                shard,
                position,
                count=count,
                max_bytes=MAX_CONSUME_BYTES,
                stop=stop,
            )
            raw, groups = frames_to_tls_list(result.frames)
            return raw, groups, result.next_position

        raw, groups, next_position = await run_in_threadpool(pull)
        return Response(
            compress(raw, compression),
            media_type="application/x-protobuf",
            headers={
                "X-Tls-Cursor": encode_cursor(next_position),
                "X-Tls-Count": str(groups),
                "X-Tls-Bodyrawsize": str(len(raw)),
            },
        )
