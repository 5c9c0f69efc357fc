"""How foreign data models map onto LogHarbor's, written down once.

InLong (docs/inlong.md)
-----------------------

An InLong message is bytes plus the attributes of the batch that carried it.

- group id → project: the group id with ``_`` and ``.`` turned into ``-``
  (LogHarbor project names have neither); stream id → logstore, unchanged.
  Either must then be a valid LogHarbor name, else the batch is refused.
- one batch (one DataProxy frame or HTTP request) → one log group:
  ``Source`` = the sender's IP address; ``LogTags`` = the batch attributes
  in the order sent, except the transport-only ones (``TRANSPORT_ATTRIBUTES``)
  and the ``__addcolN__`` columns.
- each message → one log, timed by the batch's ``dt`` (milliseconds), or the
  receive time when the batch has none.  Its contents, in order:
  first the ``__addcolN__<name>=<value>`` attributes, as InLong applies them
  (predefined leading columns, by ascending ``N``): key ``<name>`` (or
  ``__addcolN__`` when the name is empty) with ``<value>``; then
  ``CONTENT_KEY`` with the message bytes exactly as sent.
- a message that came with attributes of its own (InLong type 6, binary
  extField 0x1): its ``__addcolN__`` columns join the batch's (all by ascending
  ``N``), and its other attributes follow them as contents, in the order sent.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..protocol.codec import Compression, compress, encode_varint, length_delimited
from ..protocol.errors import ErrorCode, ServiceError
from .ingest import Limits, PreparedGroup, check_log_count, check_raw_size
from .names import check_name
from .types import NANOS_PER_SECOND, Nanos

if TYPE_CHECKING:
    from .engine import Engine

CONTENT_KEY = "__content__"
# Attributes that steer the transport (compression, counts, ack matching) and
# say nothing about the data: they are not kept as tags.
TRANSPORT_ATTRIBUTES = frozenset(
    {"cp", "cnt", "mid", "wid", "isAck", "syncSend", "proxySend", "errCode", "errMsg", "rtms"}
)
# ASCII digits, few enough for int(): other keys are plain attributes
_ADDCOL = re.compile(r"__addcol([0-9]{1,9})__?(.*)", re.DOTALL)
_NANOS_PER_MS = 1_000_000
_MAX_TIME_MS = (1 << 32) * 1000


@dataclass(frozen=True, slots=True)
class InLongBatch:
    """Messages of one InLong group and stream that arrived together."""

    group_id: str
    stream_id: str
    messages: Sequence[bytes]
    attributes: Sequence[tuple[str, str]] = ()  # as sent, in order
    time_ms: int | None = None  # the batch's ``dt``; None: the receive time
    source: str = ""  # the sender's address
    item_attributes: Sequence[Sequence[tuple[str, str]]] = ()  # one per message, or none


def inlong_project(group_id: str) -> str:
    """The project of an InLong group, or INVALID_NAME."""
    project = group_id.replace("_", "-").replace(".", "-")
    try:
        return check_name("project", project)
    except ServiceError as exc:
        raise ServiceError(
            ErrorCode.INVALID_NAME, f"InLong group {group_id!r} has no project name: {exc.message}"
        ) from None


def inlong_names(group_id: str, stream_id: str) -> tuple[str, str]:
    """The project and logstore of an InLong group and stream, or INVALID_NAME."""
    project = inlong_project(group_id)
    try:
        return project, check_name("logstore", stream_id)
    except ServiceError as exc:
        raise ServiceError(
            ErrorCode.INVALID_NAME,
            f"InLong stream {stream_id!r} has no logstore name: {exc.message}",
        ) from None


def _pair(key: bytes, value: bytes) -> bytes:
    # Content / LogTag: Key = 1, Value = 2
    return length_delimited(0x0A, key) + length_delimited(0x12, value)


def addcol_contents(attributes: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ``__addcolN__<name>=<value>`` columns as (key, value), by ascending N."""
    columns = []
    for position, (key, value) in enumerate(attributes):
        match = _ADDCOL.fullmatch(key)
        if match:
            number = int(match.group(1))
            columns.append((number, position, match.group(2) or f"__addcol{number}__", value))
    columns.sort()
    return [(name, value) for _, _, name, value in columns]


def _item_columns(
    attributes: Sequence[tuple[str, str]], item: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The leading contents of a message with attributes of its own."""
    columns = addcol_contents([*attributes, *item])
    return columns + [(key, value) for key, value in item if not _ADDCOL.fullmatch(key)]


def _contents(columns: Sequence[tuple[str, str]]) -> bytes:
    return b"".join(
        length_delimited(0x12, _pair(key.encode(), value.encode()))  # Log.Contents = 2
        for key, value in columns
    )


def inlong_log_group(batch: InLongBatch, limits: Limits, *, now: Nanos) -> PreparedGroup:
    """The log group of a batch, ready for ``Engine.put``; refused if over the limits.

    The protobuf is written directly: every log of a batch shares its time and
    columns, so only the message bytes differ from one log to the next.
    """
    if not batch.messages:
        raise ServiceError(ErrorCode.INVALID_LOG_GROUP, "the batch has no messages")
    check_log_count(len(batch.messages), limits)
    time_ns = now if batch.time_ms is None else batch.time_ms * _NANOS_PER_MS
    if batch.time_ms is not None and not 0 <= batch.time_ms < _MAX_TIME_MS:
        raise ServiceError(ErrorCode.INVALID_PARAMETER, f"dt {batch.time_ms} is out of range")
    if batch.item_attributes and len(batch.item_attributes) != len(batch.messages):
        raise ServiceError(ErrorCode.INVALID_LOG_GROUP, "item attributes do not match the messages")
    seconds, nanos = divmod(time_ns, NANOS_PER_SECOND)
    time_field = b"\x08" + encode_varint(seconds)  # Log.Time = 1
    head = time_field + _contents(addcol_contents(batch.attributes))
    content_key = length_delimited(0x0A, CONTENT_KEY.encode())
    tail = b"\x25" + struct.pack("<I", nanos)  # Log.Time_ns = 4, fixed32
    parts = []
    size = 0  # counted while building, so that a batch over the limit stops early
    for index, message in enumerate(batch.messages):
        if batch.item_attributes:
            head = time_field + _contents(
                _item_columns(batch.attributes, batch.item_attributes[index])
            )
        # the columns are repeated in every log: 4 MiB of them times 300 records
        # built 1.2 GB before the size was checked
        size += len(head) + len(message) + _LOG_OVERHEAD
        check_raw_size(size, limits, what="batch", at_least=True)
        content = content_key + length_delimited(0x12, message)
        log = head + length_delimited(0x12, content) + tail
        parts.append(length_delimited(0x0A, log))  # LogGroup.Logs = 1
    if batch.source:
        parts.append(length_delimited(0x22, batch.source.encode()))  # LogGroup.Source = 4
    for key, value in batch.attributes:
        if key not in TRANSPORT_ATTRIBUTES and not _ADDCOL.fullmatch(key):
            parts.append(length_delimited(0x32, _pair(key.encode(), value.encode())))  # LogTags = 6
    raw = b"".join(parts)
    check_raw_size(len(raw), limits, what="batch")
    return PreparedGroup(
        compress(raw, Compression.LZ4), Compression.LZ4, len(raw), len(batch.messages)
    )


_LOG_OVERHEAD = 16  # a log's bytes beyond its head and message: tags, lengths, Time_ns


def open_inlong_stream(
    engine: Engine, group_id: str, stream_id: str, *, auto_create: bool
) -> tuple[str, str]:
    """The project and logstore an InLong group and stream write to.

    When they do not exist: created (with the engine's defaults) if
    ``auto_create``, else a clear not-found error.  Blocking: call it off the
    event loop when it may create.
    """
    project, logstore = inlong_names(group_id, stream_id)
    try:
        engine.require_logstore(project, logstore)
        return project, logstore
    except ServiceError as exc:
        if exc.code not in (ErrorCode.PROJECT_NOT_EXIST, ErrorCode.LOGSTORE_NOT_EXIST):
            raise
        if not auto_create:
            raise ServiceError(
                exc.code,
                f"no logstore {project}/{logstore} for InLong stream {stream_id!r} of group "
                f"{group_id!r}; create it, or set inlong_auto_create",
            ) from None
    for create in (
        lambda: engine.create_project(project, f"InLong group {group_id}"),
        lambda: engine.create_logstore(project, logstore),
    ):
        try:
            create()
        except ServiceError as exc:  # created meanwhile by another writer
            if exc.code not in (
                ErrorCode.PROJECT_ALREADY_EXIST,
                ErrorCode.LOGSTORE_ALREADY_EXIST,
            ):
                raise
    return project, logstore
