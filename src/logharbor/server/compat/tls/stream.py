"""TLS PutLogs, DescribeCursor, ConsumeLogs, ConsumeOriginalLogs and DescribeCursorTime
over the engine."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ....engine import Engine, PreparedGroup
from ....engine.engine import CursorFrom
from ....engine.tls_mapping import (
    frames_to_tls_list,
    parse_tls_log_group_list,
    tls_group_list,
    tls_to_prepared,
)
from ....engine.types import (
    DECODED_LOG_COST,
    NANOS_PER_SECOND,
    Position,
    PullResult,
    PutResult,
    ShardId,
)
from ....protocol.codec import (
    Compression,
    compress,
    decode_cursor,
    decompress,
    encode_cursor,
    iter_frames,
    parse_decimal,
)
from ....protocol.tls_schema import TlsRawLogGroupListList
from ...http import invalid_parameter
from .call import TlsCall
from .resources import ok

_INLINE_BYTES = 64 << 10
MAX_CONSUME_BYTES = 5 << 20  # about the most TLS answers at once
_CONSUME_COMPRESSION = {"lz4": Compression.LZ4, "zlib": Compression.DEFLATE}
_COMPRESS_TYPE = {Compression.LZ4: "lz4", Compression.DEFLATE: "zlib", Compression.NONE: ""}
_NANOS_PER_MILLI = 1_000_000


MAX_LIST_RAW_BYTES = 5 << 20


@dataclass(frozen=True, slots=True)
class _Consume:
    """A ConsumeLogs or ConsumeOriginalLogs request, checked."""

    project: str
    topic: str
    shard: ShardId
    position: Position
    stop: Position | None
    count: int
    compression: Compression | None  # None: no Compression given


class StreamAPI:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ---------------------------------------------------------------- put

    def _prepare(self, call: TlsCall) -> list[PreparedGroup]:
        compression = Compression.from_wire(call.header("x-tls-compresstype"))
        declared = call.header("x-tls-bodyrawsize")
        raw_size = None
        if declared:
            raw_size = parse_decimal(declared.strip())
            if raw_size is None:
                raise invalid_parameter("x-tls-bodyrawsize must be a number")
        limits = self.engine.limits
        # TLS takes a LogGroupList of 5 MiB at most: a larger one, parsed whole into
        # protobuf objects, costs the server tens of times its size (30 MiB of
        # empty logs took 900 MB)
        max_raw = min(limits.max_raw_bytes, MAX_LIST_RAW_BYTES)
        raw = decompress(call.body, compression, raw_size=raw_size, max_raw_size=max_raw)
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
                raise invalid_parameter("From must be begin, end or a Unix time in seconds")
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

    def _consume_request(self, call: TlsCall) -> _Consume:
        """The parameters ConsumeLogs and ConsumeOriginalLogs share, once the caller
        may read the shard (a group member only while it owns it)."""
        topic = call.topic()
        shard = call.integer("ShardId")
        position = decode_cursor(call.text("Cursor"))
        end = call.text("EndCursor", required=False)
        stop = decode_cursor(end) if end else None
        count = call.integer("LogGroupCount", 100, low=1, high=1000)
        wanted = (call.text("Compression", required=False) or "").lower()
        if wanted and wanted not in _CONSUME_COMPRESSION:
            raise invalid_parameter("Compression must be lz4 or zlib")
        group = call.header("consumergroupname")
        consumer = call.header("consumername")
        if group and consumer:  # a group member's fetch: refused unless it owns the shard
            self.engine.group_fetch(topic.project, group, consumer, (topic.name, shard), position)
        else:
            self.engine.shard_status(topic.project, topic.name, shard)
        return _Consume(
            topic.project,
            topic.name,
            shard,
            position,
            stop,
            count,
            _CONSUME_COMPRESSION.get(wanted),
        )

    def _pull(self, read: _Consume) -> PullResult:
        return self.engine.pull(
            read.project,
            read.topic,
            read.shard,
            read.position,
            count=read.count,
            max_bytes=MAX_CONSUME_BYTES,
            stop=read.stop,
        )

    async def consume_logs(self, call: TlsCall) -> Response:
        read = self._consume_request(call)
        compression = Compression.NONE if read.compression is None else read.compression

        def pull() -> tuple[bytes, int, int, int]:
            # converted here: bounded by what it decodes to (TLS's own cap for one
            # ConsumeLogs is 5 MiB), not by what it takes on disk
            result = self._pull(read).within(MAX_LIST_RAW_BYTES, DECODED_LOG_COST)
            raw, groups = frames_to_tls_list(result.frames)
            return compress(raw, compression), len(raw), groups, result.next_position

        body, raw_size, groups, next_position = await run_in_threadpool(pull)
        return _consumed(body, groups, next_position, raw_size=raw_size)

    async def consume_original_logs(self, call: TlsCall) -> Response:
        """ConsumeLogs with every log group in a ``RawLogGroupList`` of its own: the
        group as a compressed one-group ``LogGroupList``, with its arrival time and
        the cursor after it.  The body itself is not compressed."""
        read = self._consume_request(call)

        def pull() -> tuple[bytes, int, int]:
            # log groups stored as zstd go out decompressed: bounded as ConsumeLogs is
            result = self._pull(read).within(MAX_LIST_RAW_BYTES, DECODED_LOG_COST)
            answer = TlsRawLogGroupListList()
            for frame in iter_frames(result.frames, verify=False):
                data = tls_group_list(frame)
                compression = read.compression
                if compression is None:  # not asked for: as stored, if TLS knows it
                    stored = frame.compression
                    compression = stored if stored in _COMPRESS_TYPE else Compression.NONE
                answer.RawLogGroupLists.add(
                    OriginLen=len(data),
                    LogArriveTime=frame.received_ns // _NANOS_PER_MILLI,
                    CompressType=_COMPRESS_TYPE[compression],
                    Cursor=encode_cursor(frame.position + 1),
                    Data=compress(data, compression),
                )
            body: bytes = answer.SerializeToString()
            return body, len(answer.RawLogGroupLists), result.next_position

        body, groups, next_position = await run_in_threadpool(pull)
        response = _consumed(body, groups, next_position, raw_size=len(body))
        response.headers["X-Tls-Original"] = "true"
        return response


def _consumed(body: bytes, groups: int, next_position: int, *, raw_size: int) -> Response:
    return Response(
        body,
        media_type="application/x-protobuf",
        headers={
            "X-Tls-Cursor": encode_cursor(next_position),
            "X-Tls-Count": str(groups),
            "X-Tls-Bodyrawsize": str(raw_size),
        },
    )
