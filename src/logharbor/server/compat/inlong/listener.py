"""The DataProxy TCP listener: InLong SDKs connect here after discovery.

Each connection has a reader and a sender.  The reader takes one frame at a
time, decodes it, queues the batch for writing (``InLongService.submit``) and
hands the pending answer to the sender; the sender answers in request order,
each data request once its batch is durable.  So a client may pipeline (the
Go SDK does), and the C++ SDK, which reads exactly one reply per request in
order, gets exactly that.  Every data type (2-7) is answered the same way:
text layouts with their own type byte, binary with type 7.

Rejections: the Go SDK reads ``errCode`` from the reply (its text frames carry
``wid``); the C++ SDK and the Python binding treat any reply as success.  For
them a rejected batch closes the connection instead of being answered: they
resend it and then report the failure through their callback, rather than
counting it as delivered.

Bounds: frames above ``MAX_FRAME_BYTES`` (512 KiB), garbage and truncated
frames close their connection with nothing of that frame stored; at most
``pipeline_depth`` answers are pending per connection (the reader waits);
at most ``max_connections`` connections (more are closed at once); a
connection idle for ``idle_timeout`` seconds (3 minutes, as DataProxy) is closed.

``statistics()`` counts connections, frames, messages, answers and errors;
``metrics.ListenerCollector`` exports them on ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from ....engine.mapping import InLongBatch
from ....protocol.codec import parse_decimal
from ....protocol.errors import ServiceError
from .codes import DataProxyErrCode, Rejected, rejection
from .ids import NumericIds
from .service import InLongService
from .wire import (
    HEARTBEAT_REPLY,
    MAX_FRAME_BYTES,
    BinaryHeartbeat,
    DataRequest,
    Frame,
    FrameError,
    Heartbeat,
    MsgType,
    binary_heartbeat_reply,
    binary_reply,
    decode_frame,
    items,
    reply_attributes,
    reply_body,
    reply_room,
    text_reply,
)

log = logging.getLogger("logharbor.inlong")

DEFAULT_MAX_CONNECTIONS = 1024
IDLE_TIMEOUT = 180.0
PIPELINE_DEPTH = 256
DRAIN_TIMEOUT = 30.0
NO_NUMERIC_IDS = NumericIds()


_INLINE_DECODE_BYTES = 64 << 10  # frames decoded on the event loop; larger ones in a thread


def batch_of(
    request: DataRequest, source: str, ids: NumericIds = NO_NUMERIC_IDS
) -> tuple[InLongBatch, str | None]:
    """The batch of a data request and its de-duplication id (``sid``).

    A binary frame addressed by number gets the ``groupId``/``streamId`` its
    numbers map to as its first attributes, so that it is stored as if it had
    carried them."""
    attributes = request.attributes
    values = dict(attributes)
    group_id, stream_id = values.get("groupId", ""), values.get("streamId", "")
    if request.numeric_ids:
        group_id, stream_id = ids.resolve(
            request.group_num, request.stream_num, group_id, stream_id
        )
        attributes = [
            ("groupId", group_id),
            ("streamId", stream_id),
            *((k, v) for k, v in attributes if k not in ("groupId", "streamId")),
        ]
    if not group_id:
        raise Rejected(DataProxyErrCode.MISS_REQUIRED_GROUPID_ARGUMENT, "groupId is missing")
    if not stream_id:
        raise Rejected(DataProxyErrCode.MISS_REQUIRED_STREAMID_ARGUMENT, "streamId is missing")
    time_ms: int | None = None
    if values.get("dt"):
        time_ms = parse_decimal(values["dt"])
        if time_ms is None:
            raise Rejected(DataProxyErrCode.MISS_REQUIRED_DT_ARGUMENT, "dt is not a number")
    elif request.binary and request.data_time:
        time_ms = request.data_time * 1000
    records = items(request)
    batch = InLongBatch(
        group_id,
        stream_id,
        records.messages,
        attributes,
        time_ms,
        source,
        records.attributes or (),
    )
    return batch, (values.get("sid") or None)


def reads_error_code(request: DataRequest) -> bool:
    """Whether the sender looks at ``errCode`` (the Go SDK: text frames with ``wid``)."""
    return not request.binary and any(key == "wid" for key, _ in request.attributes)


def wants_ack(request: DataRequest) -> bool:
    return not any(key == "isAck" and value == "false" for key, value in request.attributes)


@dataclass(slots=True)
class _Pending:
    """One answer owed, in request order."""

    kind: MsgType
    request: DataRequest | None = None
    durable: Awaitable[None] | None = None
    refused: Rejected | None = None
    reply: bytes = b""  # heartbeats: known at once


class _Close(Exception):
    """Close the connection without answering (a rejection the sender cannot read)."""


@dataclass(frozen=True, slots=True)
class ListenerStatistics:
    """What the listener has seen since it started; the metrics export these.

    Labels: ``type`` is a ``MsgType.label``; ``result`` is ``ok`` or ``error``;
    a frame error ``reason`` is a ``FrameError.reason`` or ``truncated``.  A
    connection closes because of the ``client`` (between frames), ``idle``
    (nothing for ``idle_timeout``), a ``bad_frame`` (or a close mid-frame), a
    request ``rejected`` whose sender reads no ``errCode``, ``write_failed``,
    ``shutdown``, or an ``error`` of LogHarbor's own (logged).
    """

    connections: int  # open now
    accepted: int
    refused_connections: int  # over max_connections
    closed: Mapping[str, int]  # by reason
    frames: Mapping[str, int]  # by type
    frame_bytes: Mapping[str, int]  # by type, length prefix included
    messages: Mapping[str, int]  # by type, in requests that decoded
    replies: Mapping[tuple[str, str], int]  # by (type, result)
    reply_bytes: int
    frame_errors: Mapping[str, int]  # by reason
    rejected: Mapping[tuple[str, int], int]  # by (type, DataProxyErrCode)


class DataProxyListener:
    def __init__(
        self,
        service: InLongService,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        load: Callable[[], int] = lambda: 0,
        idle_timeout: float = IDLE_TIMEOUT,
        pipeline_depth: int = PIPELINE_DEPTH,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        numeric_ids: NumericIds = NO_NUMERIC_IDS,
    ) -> None:
        self.service = service
        self.host = host
        self.requested_port = port
        self.max_connections = max_connections
        self.load = load
        self.idle_timeout = idle_timeout
        self.pipeline_depth = pipeline_depth
        self.max_frame_bytes = max_frame_bytes
        self.numeric_ids = numeric_ids
        self._sock: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._readers: set[asyncio.Task[str]] = set()
        self._accepted = self._refused = self._reply_bytes = 0
        self._closed: Counter[str] = Counter()
        self._frames: Counter[str] = Counter({kind.label: 0 for kind in MsgType})
        self._frame_bytes: Counter[str] = Counter()
        self._messages: Counter[str] = Counter()
        self._replies: Counter[tuple[str, str]] = Counter()
        self._frame_errors: Counter[str] = Counter()
        self._rejected: Counter[tuple[str, int]] = Counter()

    # ----------------------------------------------------------- lifecycle

    def bind(self) -> int:
        """Bind the listening socket now (to print the port before serving)."""
        if self._sock is None:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.requested_port))
            sock.listen(1024)
            sock.setblocking(False)
            self._sock = sock
        return self.port

    @property
    def port(self) -> int:
        if self._sock is None:
            return self.requested_port
        return int(self._sock.getsockname()[1])

    async def start(self) -> None:
        self.bind()
        self._server = await asyncio.start_server(self._connection, sock=self._sock)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting; let pending answers go out (new batches are refused with
        SERVICE_CLOSED, so Go clients move on), then close every connection."""
        self.service.closing = True
        if self._server is not None:
            self._server.close()
        for reading in list(self._readers):
            reading.cancel()
        tasks = list(self._connections)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self._sock is not None:
            self._sock.close()

    def statistics(self) -> ListenerStatistics:
        return ListenerStatistics(
            connections=len(self._connections),
            accepted=self._accepted,
            refused_connections=self._refused,
            closed=dict(self._closed),
            frames=dict(self._frames),
            frame_bytes=dict(self._frame_bytes),
            messages=dict(self._messages),
            replies=dict(self._replies),
            reply_bytes=self._reply_bytes,
            frame_errors=dict(self._frame_errors),
            rejected=dict(self._rejected),
        )

    # ---------------------------------------------------------- connection

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.max_connections:
            self._refused += 1
            log.warning("InLong listener: %d connections open, refusing one", self.max_connections)
            writer.transport.abort()
            return
        self._accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        peer_ip = str(peer[0]) if peer else ""
        local_ip = str(local[0]) if local else ""
        queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        room = asyncio.Semaphore(self.pipeline_depth)
        reading = asyncio.create_task(self._read(reader, queue, room, peer_ip))
        sending = asyncio.create_task(self._send(writer, queue, room, local_ip))
        self._readers.add(reading)
        reason = "shutdown"
        try:
            await asyncio.wait({reading, sending}, return_when=asyncio.FIRST_COMPLETED)
            if sending.done():  # closed by a rejection or a failed write
                reason = _outcome(sending)
                reading.cancel()
            else:  # the client is done or misbehaved: answer what is pending, then close
                reason = _outcome(reading)
                queue.put_nowait(None)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(sending), DRAIN_TIMEOUT)
                sending.cancel()
        finally:
            for part in (reading, sending):
                part.cancel()
            await asyncio.gather(reading, sending, return_exceptions=True)
            writer.close()  # after the answers already written, unlike abort()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 5.0)
            self._readers.discard(reading)
            self._connections.discard(task)
            self._closed[reason] += 1

    async def _read(
        self,
        reader: asyncio.StreamReader,
        queue: asyncio.Queue[_Pending | None],
        room: asyncio.Semaphore,
        peer_ip: str,
    ) -> str:
        """Read frames until the connection ends; returns the close reason."""
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(4), self.idle_timeout)
                (length,) = struct.unpack(">I", head)
                if not 0 < length <= self.max_frame_bytes:
                    raise FrameError(
                        "frame_length", f"frame length {length} outside 1..{self.max_frame_bytes}"
                    )
                frame = await asyncio.wait_for(reader.readexactly(length), self.idle_timeout)
                if length <= _INLINE_DECODE_BYTES:
                    request = decode_frame(frame)
                else:  # a large frame may unpack to 8 MiB of messages: not on the loop
                    request = await asyncio.to_thread(decode_frame, frame)
                kind = MsgType(frame[0] & 0x1F)
                self._frames[kind.label] += 1
                self._frame_bytes[kind.label] += 4 + length
                pending = await self._handle(request, kind, peer_ip)
                await room.acquire()
                queue.put_nowait(pending)
        except FrameError as exc:
            self._frame_errors[exc.reason] += 1
            log.info("InLong connection from %s closed: %s", peer_ip, exc)
            return "bad_frame"
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                self._frame_errors["truncated"] += 1
                log.info("InLong connection from %s closed mid-frame", peer_ip)
                return "bad_frame"
            return "client"
        except TimeoutError:
            return "idle"
        except ConnectionError:
            return "client"

    async def _handle(self, frame: Frame, kind: MsgType, peer: str) -> _Pending:
        if isinstance(frame, Heartbeat):
            return _Pending(kind, reply=HEARTBEAT_REPLY)
        if isinstance(frame, BinaryHeartbeat):
            load = max(0, min(0x7FFF, self.load()))
            return _Pending(kind, reply=binary_heartbeat_reply(frame.data_time, load))
        try:
            batch, sid = batch_of(frame, peer, self.numeric_ids)
            self._messages[kind.label] += len(batch.messages)
            durable = await self.service.submit(batch, sid)
        except Rejected as exc:
            return _Pending(kind, frame, refused=exc)
        except ServiceError as exc:
            return _Pending(kind, frame, refused=rejection(exc))
        return _Pending(kind, frame, durable=durable)

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        queue: asyncio.Queue[_Pending | None],
        room: asyncio.Semaphore,
        local_ip: str,
    ) -> str:
        """Answer in request order until told to stop; returns the close reason."""
        try:
            while (pending := await queue.get()) is not None:
                try:
                    reply = await self._answer(pending, local_ip)
                finally:
                    room.release()
                if reply:
                    writer.write(reply)
                    await writer.drain()
                    result = "ok" if pending.refused is None else "error"
                    self._replies[(pending.kind.label, result)] += 1
                    self._reply_bytes += len(reply)
        except _Close:
            return "rejected"
        except ConnectionError:
            return "write_failed"
        return "client"

    async def _answer(self, pending: _Pending, local_ip: str) -> bytes:
        """The answer owed, once known; records a late refusal in ``pending``."""
        request = pending.request
        if request is None:
            return pending.reply
        if pending.durable is not None:
            try:
                await pending.durable
            except ServiceError as exc:
                pending.refused = rejection(exc)
            except Rejected as exc:
                pending.refused = exc
            except Exception:
                log.exception("InLong batch failed")
                pending.refused = Rejected(DataProxyErrCode.UNKNOWN_ERROR, "internal error")
        refused = pending.refused
        if refused is not None:
            self._rejected[(pending.kind.label, int(refused.code))] += 1
            log.info("InLong batch refused: %d %s", refused.code, refused.message)
            if not reads_error_code(request):
                raise _Close
        if not wants_ack(request):
            return b""
        body = reply_body(request)
        room = reply_room(request.binary, len(body))
        attr = reply_attributes(local_ip, request.attr, refused, room=room)
        if request.binary:
            return binary_reply(request.uniq, attr)
        return text_reply(request.type_byte, attr, body)


def _outcome(part: asyncio.Task[str]) -> str:
    """The close reason a finished reader or sender returned."""
    if part.cancelled():
        return "shutdown"
    if part.exception() is not None:
        log.error("InLong connection failed", exc_info=part.exception())
        return "error"
    return part.result()
