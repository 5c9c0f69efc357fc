"""What the SDK sends and receives: logs and log groups, resources, cursors, results.

Every model is an immutable value. Resources parse from the native API's camelCase
JSON with ``from_json``; log groups convert to and from the protobuf wire format.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, NamedTuple, TypeVar

from ..protocol import schema
from ..protocol.codec import Frame, decode_cursor, encode_cursor
from ._exceptions import DECODING_FAILURES, to_error
from ._types import PairsInput, ShardStatus

NANOS_PER_SECOND = 1_000_000_000
#: The wire format keeps seconds in a uint32.
MAX_TIME_NS = (1 << 32) * NANOS_PER_SECOND
_LAST_HASH_KEY = "f" * 32

T = TypeVar("T")


def _pairs(value: PairsInput, what: str) -> tuple[tuple[str, str], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    pairs = tuple((key, val) for key, val in items)
    for key, val in pairs:
        if not isinstance(key, str) or not isinstance(val, str):
            raise TypeError(f"{what} must be strings, got {key!r}: {val!r}")
    return pairs


def shard_status_of(value: object) -> ShardStatus:
    if value == "readwrite":
        return "readwrite"
    if value == "readonly":
        return "readonly"
    raise ValueError(f"unknown shard status {value!r}")


def _text(value: str | bytes) -> str:
    # Values that are not UTF-8 (SLS put_log_raw can store such) must not make a pull fail.
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True, init=False)
class LogItem:
    """One log: ordered key/value contents and a time with nanosecond precision.

    ``contents`` may be given as a mapping or as ``(key, value)`` pairs; it is kept
    as a tuple of pairs, in order, and keys may repeat. ``time_ns`` defaults to now.
    """

    contents: tuple[tuple[str, str], ...]
    time_ns: int

    def __init__(self, contents: PairsInput, time_ns: int | None = None) -> None:
        moment = time.time_ns() if time_ns is None else time_ns
        if isinstance(moment, bool) or not isinstance(moment, int):
            raise TypeError(f"time_ns must be an int of nanoseconds, got {moment!r}")
        if not 0 <= moment < MAX_TIME_NS:
            raise ValueError(f"time_ns {moment} is outside 1970 to 2106")
        object.__setattr__(self, "contents", _pairs(contents, "log contents"))
        object.__setattr__(self, "time_ns", moment)

    @classmethod
    def _trusted(cls, contents: tuple[tuple[str, str], ...], time_ns: int) -> LogItem:
        """Build without checking (for logs decoded from the wire)."""
        item = object.__new__(cls)
        object.__setattr__(item, "contents", contents)
        object.__setattr__(item, "time_ns", time_ns)
        return item

    @property
    def time(self) -> int:
        """Whole seconds since the epoch."""
        return self.time_ns // NANOS_PER_SECOND

    @property
    def time_ns_part(self) -> int:
        """The nanoseconds within the second, 0 to 999 999 999."""
        return self.time_ns % NANOS_PER_SECOND

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of the first content named ``key``."""
        return next((val for name, val in self.contents if name == key), default)


@dataclass(frozen=True, slots=True, init=False)
class LogGroup:
    """Logs written together, with the topic, source and tags they share."""

    logs: tuple[LogItem, ...]
    topic: str
    source: str
    tags: tuple[tuple[str, str], ...]

    def __init__(
        self,
        logs: Iterable[LogItem],
        topic: str = "",
        source: str = "",
        tags: PairsInput | None = None,
    ) -> None:
        items = tuple(logs)
        for item in items:
            if not isinstance(item, LogItem):
                raise TypeError(f"a LogGroup holds LogItems, not {type(item).__name__}")
        object.__setattr__(self, "logs", items)
        object.__setattr__(self, "topic", topic)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "tags", _pairs(tags or (), "tags"))

    def to_protobuf(self) -> bytes:
        """The serialized protobuf ``LogGroup`` (uncompressed)."""
        group = schema.LogGroup()
        if self.topic:
            group.Topic = self.topic
        if self.source:
            group.Source = self.source
        for key, value in self.tags:
            group.LogTags.add(Key=key, Value=value)
        for log in self.logs:
            entry = group.Logs.add(Time=log.time, Time_ns=log.time_ns_part)
            for key, value in log.contents:
                entry.Contents.add(Key=key, Value=value)
        return bytes(group.SerializeToString())

    @classmethod
    def from_protobuf(cls, data: bytes) -> LogGroup:
        """Parse a serialized ``LogGroup``; bytes that are not UTF-8 become U+FFFD.

        Raises ``DecodingError`` when ``data`` is not a log group.
        """
        try:
            group = schema.RawLogGroup.FromString(data)
        except DECODING_FAILURES as exc:
            raise to_error(exc) from exc
        logs = [
            LogItem._trusted(
                tuple((_text(c.Key), _text(c.Value)) for c in log.Contents),
                log.Time * NANOS_PER_SECOND + log.Time_ns,
            )
            for log in group.Logs
        ]
        tags = [(_text(tag.Key), _text(tag.Value)) for tag in group.LogTags]
        return cls(logs, topic=_text(group.Topic), source=_text(group.Source), tags=tags)


class Cursor(str):
    """An opaque position between log groups of one shard (base64 of a number).

    A ``Cursor`` is a ``str``: store it, print it, pass it back. ``position`` is the
    number inside; ``Cursor.from_position`` makes one (SLS-style arithmetic).
    """

    __slots__ = ()

    @classmethod
    def from_position(cls, position: int) -> Cursor:
        return cls(encode_cursor(position))

    @property
    def position(self) -> int:
        """The log group index the cursor names; ``InvalidCursorError`` if it is none."""
        try:
            return decode_cursor(self)
        except DECODING_FAILURES as exc:
            raise to_error(exc) from exc

    def __repr__(self) -> str:
        return f"Cursor({str.__repr__(self)})"


@dataclass(frozen=True, slots=True)
class Project:
    name: str
    description: str
    create_time: int  # Unix seconds
    update_time: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Project:
        return cls(
            name=str(data["name"]),
            description=str(data["description"]),
            create_time=int(data["createTime"]),
            update_time=int(data["updateTime"]),
        )


@dataclass(frozen=True, slots=True)
class Logstore:
    project: str
    name: str
    ttl: int  # days
    shard_count: int  # readwrite shards
    auto_split: bool
    max_split_shard: int
    create_time: int  # Unix seconds
    update_time: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Logstore:
        return cls(
            project=str(data["project"]),
            name=str(data["name"]),
            ttl=int(data["ttl"]),
            shard_count=int(data["shardCount"]),
            auto_split=bool(data["autoSplit"]),
            max_split_shard=int(data["maxSplitShard"]),
            create_time=int(data["createTime"]),
            update_time=int(data["updateTime"]),
        )


@dataclass(frozen=True, slots=True)
class Shard:
    """A shard owns the MD5 hash keys from ``begin_key`` (inclusive) to ``end_key``
    (exclusive; the last shard also takes ``ffff…ff``)."""

    shard_id: int
    status: ShardStatus
    begin_key: str
    end_key: str
    create_time: int  # Unix seconds
    parents: tuple[int, ...] = ()
    children: tuple[int, ...] = ()

    @property
    def writable(self) -> bool:
        return self.status == "readwrite"

    def contains(self, hash_key: str) -> bool:
        """Whether the 32-hex-digit ``hash_key`` falls in this shard's range."""
        key = hash_key.lower()
        return self.begin_key <= key < self.end_key or key == self.end_key == _LAST_HASH_KEY

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Shard:
        return cls(
            shard_id=int(data["shardId"]),
            status=shard_status_of(data["status"]),
            begin_key=str(data["beginKey"]),
            end_key=str(data["endKey"]),
            create_time=int(data["createTime"]),
            parents=tuple(int(i) for i in data["parents"]),
            children=tuple(int(i) for i in data["children"]),
        )


@dataclass(frozen=True, slots=True)
class ListResult(Generic[T]):
    """One page of a listing, and how many there are in all."""

    items: tuple[T, ...]
    total: int

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class PutLogsResult:
    """Where a written log group went; it is on disk when this is returned."""

    shard_id: int
    cursor: Cursor  # points at the log group
    log_count: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PutLogsResult:
        return cls(
            shard_id=int(data["shardId"]),
            cursor=Cursor(data["cursor"]),
            log_count=int(data["logCount"]),
        )


@dataclass(frozen=True)
class PulledLogGroup:
    """A log group as stored, decoded on first access to ``log_group`` or ``logs``."""

    cursor: Cursor  # points at this log group: pulling from it reads it again
    receive_time_ns: int
    log_count: int
    raw_size: int
    frame: Frame = field(repr=False)

    @classmethod
    def from_frame(cls, frame: Frame) -> PulledLogGroup:
        return cls(
            cursor=Cursor.from_position(frame.position),
            receive_time_ns=frame.received_ns,
            log_count=frame.log_count,
            raw_size=frame.raw_size,
            frame=frame,
        )

    @property
    def next_cursor(self) -> Cursor:
        """The cursor just after this log group (a checkpoint once it is processed)."""
        return Cursor.from_position(self.frame.position + 1)

    def to_protobuf(self) -> bytes:
        """The serialized protobuf ``LogGroup``, decompressed but not re-encoded."""
        try:
            return self.frame.raw()
        except DECODING_FAILURES as exc:
            raise to_error(exc) from exc

    @cached_property
    def log_group(self) -> LogGroup:
        return LogGroup.from_protobuf(self.to_protobuf())

    @property
    def logs(self) -> tuple[LogItem, ...]:
        return self.log_group.logs


@dataclass(frozen=True, slots=True)
class PullLogsResult:
    """Log groups read from a shard, and where to continue."""

    log_groups: tuple[PulledLogGroup, ...]
    next_cursor: Cursor  # where to continue; the cursor pulled from when nothing came
    end_cursor: Cursor  # the shard's end when the pull was served
    count: int  # log groups
    log_count: int  # logs
    raw_size: int  # uncompressed bytes of the log groups
    shard_status: ShardStatus

    @property
    def logs(self) -> Iterator[LogItem]:
        """Every log of every log group, in order."""
        for group in self.log_groups:
            yield from group.logs

    @property
    def caught_up(self) -> bool:
        """Whether everything the shard held when the pull was served has been read."""
        return self.next_cursor == self.end_cursor

    @property
    def shard_finished(self) -> bool:
        """Whether the shard is readonly and read to its end: it will never hold more."""
        return self.shard_status == "readonly" and self.caught_up


class ShardRef(NamedTuple):
    """A shard a consumer group reads: its logstore and its id."""

    logstore: str
    shard_id: int

    def __str__(self) -> str:
        return f"{self.logstore}/{self.shard_id}"


def shard_ref_of(value: Any, logstore: str | None) -> ShardRef:
    """A shard as the group API writes it: an id in a group of ``logstore``, or
    ``{"logstore", "shardId"}`` in a project's group (``logstore`` ``None``)."""
    if logstore is not None:
        return ShardRef(logstore, int(value))
    return ShardRef(str(value["logstore"]), int(value["shardId"]))


@dataclass(frozen=True, slots=True)
class ConsumerGroup:
    """A consumer group: members share the shards of a logstore (a logstore's group)
    or of several logstores of a project (a project's group), and keep checkpoints.

    A member is live while its last heartbeat is at most ``timeout`` seconds old.
    With ``in_order``, the children of a split or merge are handed out only once
    their parents are read to the end.
    """

    name: str
    project: str
    logstores: tuple[str, ...]
    timeout: int  # seconds
    in_order: bool
    create_time: int  # Unix seconds
    update_time: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConsumerGroup:
        return cls(
            name=str(data["name"]),
            project=str(data["project"]),
            logstores=tuple(str(name) for name in data["logstores"]),
            timeout=int(data["timeout"]),
            in_order=bool(data["inOrder"]),
            create_time=int(data["createTime"]),
            update_time=int(data["updateTime"]),
        )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a group resumes a shard: the first log group not yet processed.

    ``cursor`` is ``None`` when the group has no checkpoint for the shard yet.
    """

    shard_id: int
    cursor: Cursor | None
    consumer: str  # who saved it ("" when there is none)
    update_time: int  # Unix seconds; 0 when there is none
    logstore: str  # the shard's (a project's group reads several)

    @property
    def shard(self) -> ShardRef:
        return ShardRef(self.logstore, self.shard_id)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], logstore: str | None = None) -> Checkpoint:
        """``logstore``: the group's, for a logstore's group (its answers leave it out)."""
        cursor = str(data["cursor"])
        return cls(
            shard_id=int(data["shardId"]),
            cursor=Cursor(cursor) if cursor else None,
            consumer=str(data["consumer"]),
            update_time=int(data["updateTime"]),
            logstore=str(data["logstore"]) if logstore is None else logstore,
        )


@dataclass(frozen=True, slots=True)
class ShardLag:
    """How far a group's checkpoint of a shard is behind the shard's end."""

    shard_id: int
    behind_log_groups: int
    behind_seconds: float  # age of the first log group not yet checkpointed
    logstore: str  # the shard's (a project's group reads several)

    @property
    def shard(self) -> ShardRef:
        return ShardRef(self.logstore, self.shard_id)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], logstore: str | None = None) -> ShardLag:
        """``logstore``: the group's, for a logstore's group (its answers leave it out)."""
        shard = shard_ref_of(data["shard"], logstore)
        return cls(
            shard_id=shard.shard_id,
            behind_log_groups=int(data["behindLogGroups"]),
            behind_seconds=float(data["behindSeconds"]),
            logstore=shard.logstore,
        )


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """The live members of a logstore's group with the shards each holds, and every
    shard's lag."""

    consumers: Mapping[str, tuple[int, ...]]
    shards: tuple[ShardLag, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any], logstore: str) -> GroupStatus:
        """``logstore``: the group's (its answers leave it out)."""
        return cls(
            consumers={
                str(member["name"]): tuple(int(s) for s in member["shards"])
                for member in data["consumers"]
            },
            shards=tuple(ShardLag.from_json(item, logstore) for item in data["shards"]),
        )


@dataclass(frozen=True, slots=True)
class ProjectGroupStatus:
    """``GroupStatus`` of a project's group: shards are ``ShardRef``s."""

    consumers: Mapping[str, tuple[ShardRef, ...]]
    shards: tuple[ShardLag, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProjectGroupStatus:
        return cls(
            consumers={
                str(member["name"]): tuple(shard_ref_of(s, None) for s in member["shards"])
                for member in data["consumers"]
            },
            shards=tuple(ShardLag.from_json(item) for item in data["shards"]),
        )


# ------------------------------------------------------------------ search


@dataclass(frozen=True, slots=True)
class QueriedLog:
    """A log a search found, and where it is stored (for ``context``)."""

    time_ns: int
    shard_id: int
    cursor: Cursor  # of its log group
    index: int  # within its log group
    topic: str
    source: str
    tags: dict[str, str]
    contents: tuple[tuple[str, str], ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> QueriedLog:
        return cls(
            time_ns=int(data["timeNs"]),
            shard_id=int(data["shardId"]),
            cursor=Cursor(data["cursor"]),
            index=int(data["index"]),
            topic=str(data["topic"]),
            source=str(data["source"]),
            tags={str(k): str(v) for k, v in data["tags"].items()},
            contents=tuple((str(k), str(v)) for k, v in data["contents"]),
        )

    def get(self, key: str, default: str | None = None) -> str | None:
        return next((value for name, value in self.contents if name == key), default)


@dataclass(frozen=True, slots=True)
class QueryResult:
    """A search's logs (``logs``, ``matched``) or an analysis's table (``keys``, ``rows``).

    ``complete`` is False when the index had not yet taken in every write made
    before the query; asking again shortly gives the full answer.
    """

    complete: bool
    has_sql: bool
    elapsed_ms: int
    logs: tuple[QueriedLog, ...] = ()
    matched: int | None = None
    keys: tuple[str, ...] = ()
    rows: tuple[tuple[Any, ...], ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> QueryResult:
        meta = data["meta"]
        return cls(
            complete=bool(meta["complete"]),
            has_sql=bool(meta["hasSql"]),
            elapsed_ms=int(meta["elapsedMs"]),
            logs=tuple(QueriedLog.from_json(item) for item in data.get("logs", ())),
            matched=None if meta.get("matched") is None else int(meta["matched"]),
            keys=tuple(meta.get("keys", ())),
            rows=tuple(tuple(row) for row in data.get("rows", ())),
        )

    def records(self) -> list[dict[str, Any]]:
        """An analysis's rows as dictionaries by column name."""
        return [dict(zip(self.keys, row, strict=True)) for row in self.rows]


@dataclass(frozen=True, slots=True)
class HistogramBucket:
    start: int  # Unix seconds, inclusive
    end: int  # exclusive
    count: int


@dataclass(frozen=True, slots=True)
class Histogram:
    complete: bool
    total: int
    buckets: tuple[HistogramBucket, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Histogram:
        return cls(
            complete=bool(data["complete"]),
            total=int(data["total"]),
            buckets=tuple(
                HistogramBucket(int(b["from"]), int(b["to"]), int(b["count"]))
                for b in data["buckets"]
            ),
        )
