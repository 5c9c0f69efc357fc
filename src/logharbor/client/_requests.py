"""The native API's requests and answers, without any I/O.

Each operation is a function that returns a ``Call``: the request to send (method,
decoded path, query parameters, body, headers) and how to read a successful
answer. ``LogClient`` and ``AsyncLogClient`` only send calls; everything else,
signing included, lives here once.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from ..protocol.codec import CodecError, Compression, compress, hash_key_of, iter_frames
from ..protocol.signing import sign_headers
from ._config import Timeout
from ._exceptions import DECODING_FAILURES, to_error
from ._models import (
    Checkpoint,
    ConsumerGroup,
    Cursor,
    GroupStatus,
    Histogram,
    ListResult,
    LogGroup,
    LogItem,
    Logstore,
    Project,
    ProjectGroupStatus,
    PulledLogGroup,
    PullLogsResult,
    PutLogsResult,
    QueriedLog,
    QueryResult,
    Shard,
    ShardRef,
    shard_ref_of,
    shard_status_of,
)
from ._types import CompressionInput, CursorStart, PairsInput

T = TypeVar("T")

PREFIX = "/api/v1"
_HEX_DIGITS = frozenset(string.hexdigits)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


# ------------------------------------------------------------------ calls


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request of the native API, and how to read its successful answer."""

    method: str
    path: str  # decoded, as signed: /api/v1/projects/web
    read: Callable[[httpx.Response], T]
    params: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    wait_seconds: float = 0.0  # how long the server may hold the request (long polling)

    def answer(self, response: httpx.Response) -> T:
        """The parsed answer, or the ``LogHarborError`` that the response carries."""
        if response.is_error:
            raise to_error(response)
        try:
            return self.read(response)
        except DECODING_FAILURES as exc:
            raise to_error(exc) from exc


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key_id: str
    access_key_secret: str = field(repr=False)

    @classmethod
    def from_options(
        cls, access_key_id: str | None, access_key_secret: str | None
    ) -> Credentials | None:
        """Credentials when both parts are given, ``None`` (unsigned requests) when neither is."""
        if access_key_id is None and access_key_secret is None:
            return None
        if not access_key_id or not access_key_secret:
            raise ValueError("give both access_key_id and access_key_secret, or neither")
        return cls(access_key_id, access_key_secret)

    def sign(self, call: Call[Any], now: datetime | None = None) -> dict[str, str]:
        return sign_headers(
            access_key_id=self.access_key_id,
            secret=self.access_key_secret,
            method=call.method,
            path=call.path,
            params=call.params,
            body=call.body,
            now=now,
        )


def build_request(
    http: httpx.Client | httpx.AsyncClient,
    call: Call[Any],
    *,
    credentials: Credentials | None,
    timeout: Timeout,
) -> httpx.Request:
    """The ``httpx.Request`` for ``call``, signed afresh (each retry gets a new date)."""
    headers = dict(call.headers)
    if credentials is not None:
        headers.update(credentials.sign(call))
    return http.build_request(
        call.method,
        quote(call.path, safe="/"),
        params=call.params,
        content=call.body,
        headers=headers,
        timeout=timeout.to_httpx(extra_read=call.wait_seconds),
    )


# ---------------------------------------------------------------- helpers


def _path(*segments: str | int) -> str:
    return "/".join([PREFIX, *(str(segment) for segment in segments)])


def _logstore_path(project: str, logstore: str, *rest: str | int) -> str:
    return _path("projects", project, "logstores", logstore, *rest)


def _json_call(
    method: str, path: str, read: Callable[[httpx.Response], T], document: Mapping[str, Any]
) -> Call[T]:
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Call(method, path, read, body=body, headers=(("content-type", "application/json"),))


def _object(response: httpx.Response) -> dict[str, Any]:
    document = response.json()
    if not isinstance(document, dict):
        raise ValueError("the answer is not a JSON object")
    return document


def _reader(parse: Callable[[dict[str, Any]], T]) -> Callable[[httpx.Response], T]:
    return lambda response: parse(_object(response))


def _nothing(response: httpx.Response) -> None:
    return None


def _page(
    key: str, parse: Callable[[Mapping[str, Any]], T]
) -> Callable[[httpx.Response], ListResult[T]]:
    return _reader(
        lambda data: ListResult(tuple(parse(item) for item in data[key]), int(data["total"]))
    )


def _shards(data: dict[str, Any]) -> list[Shard]:
    return [Shard.from_json(item) for item in data["shards"]]


def routing_key(value: str | bytes) -> str:
    """The hash key to route by: ``value`` itself when it is already 32 hex digits,
    otherwise the MD5 of it (``hash_key_of``)."""
    if isinstance(value, str) and len(value) == 32 and _HEX_DIGITS.issuperset(value):
        return value.lower()
    return hash_key_of(value)


def compression_of(value: CompressionInput) -> Compression:
    if isinstance(value, Compression):
        return value
    try:
        return Compression.from_wire(value)
    except CodecError as exc:
        raise ValueError(exc.message) from None


def cursor_from(start: CursorStart) -> str:
    """The ``from`` parameter: ``begin``, ``end`` or Unix seconds (to the microsecond,
    rounded down so that a log group received at ``start`` is not skipped)."""
    if isinstance(start, str):
        if start not in ("begin", "end"):
            raise ValueError(f"start must be 'begin', 'end', a time or a datetime, not {start!r}")
        return start
    if isinstance(start, bool):
        raise TypeError("start must be 'begin', 'end', a time or a datetime, not a bool")
    if isinstance(start, datetime):
        micros = (start.astimezone(UTC) - _EPOCH) // _MICROSECOND  # naive means local time
    elif isinstance(start, int):
        micros = start * 1_000_000
    else:
        micros = math.floor(start * 1_000_000)
    if micros < 0:
        raise ValueError(f"start {start!r} is before 1970")
    seconds, fraction = divmod(micros, 1_000_000)
    return f"{seconds}.{fraction:06d}" if fraction else str(seconds)


def log_group_of(
    logs: LogGroup | Sequence[LogItem], *, topic: str, source: str, tags: PairsInput | None
) -> LogGroup:
    if not isinstance(logs, LogGroup):
        return LogGroup(logs, topic=topic, source=source, tags=tags)
    if topic or source or tags:
        raise ValueError("give topic, source and tags in the LogGroup, not beside it")
    return logs


# -------------------------------------------------------------- projects


def create_project(name: str, description: str) -> Call[Project]:
    document = {"name": name, "description": description}
    return _json_call("POST", _path("projects"), _reader(Project.from_json), document)


def get_project(name: str) -> Call[Project]:
    return Call("GET", _path("projects", name), _reader(Project.from_json))


def list_projects(offset: int, size: int) -> Call[ListResult[Project]]:
    params = (("offset", str(offset)), ("size", str(size)))
    return Call("GET", _path("projects"), _page("projects", Project.from_json), params=params)


def update_project(name: str, description: str) -> Call[Project]:
    document = {"description": description}
    return _json_call("PATCH", _path("projects", name), _reader(Project.from_json), document)


def delete_project(name: str) -> Call[None]:
    return Call("DELETE", _path("projects", name), _nothing)


# ------------------------------------------------------------- logstores


def create_logstore(
    project: str, name: str, *, ttl: int, shard_count: int, auto_split: bool, max_split_shard: int
) -> Call[Logstore]:
    document = {
        "name": name,
        "ttl": ttl,
        "shardCount": shard_count,
        "autoSplit": auto_split,
        "maxSplitShard": max_split_shard,
    }
    path = _path("projects", project, "logstores")
    return _json_call("POST", path, _reader(Logstore.from_json), document)


def get_logstore(project: str, name: str) -> Call[Logstore]:
    return Call("GET", _logstore_path(project, name), _reader(Logstore.from_json))


def list_logstores(project: str, offset: int, size: int) -> Call[ListResult[Logstore]]:
    params = (("offset", str(offset)), ("size", str(size)))
    path = _path("projects", project, "logstores")
    return Call("GET", path, _page("logstores", Logstore.from_json), params=params)


def update_logstore(
    project: str,
    name: str,
    *,
    ttl: int | None,
    auto_split: bool | None,
    max_split_shard: int | None,
) -> Call[Logstore]:
    changes = {"ttl": ttl, "autoSplit": auto_split, "maxSplitShard": max_split_shard}
    document = {key: value for key, value in changes.items() if value is not None}
    return _json_call("PATCH", _logstore_path(project, name), _reader(Logstore.from_json), document)


def delete_logstore(project: str, name: str) -> Call[None]:
    return Call("DELETE", _logstore_path(project, name), _nothing)


# ---------------------------------------------------------------- shards


def list_shards(project: str, logstore: str) -> Call[list[Shard]]:
    return Call("GET", _logstore_path(project, logstore, "shards"), _reader(_shards))


def split_shard(project: str, logstore: str, shard_id: int, split_key: str) -> Call[list[Shard]]:
    path = _logstore_path(project, logstore, "shards", shard_id, "split")
    return _json_call("POST", path, _reader(_shards), {"splitKey": split_key})


def merge_shard(project: str, logstore: str, shard_id: int) -> Call[list[Shard]]:
    path = _logstore_path(project, logstore, "shards", shard_id, "merge")
    return Call("POST", path, _reader(_shards))


# ------------------------------------------------------------------ data


def put_log_group_raw(
    project: str,
    logstore: str,
    raw_protobuf: bytes,
    *,
    hash_key: str | bytes | None,
    compression: CompressionInput,
) -> Call[PutLogsResult]:
    method = compression_of(compression)
    headers = (
        ("content-type", "application/x-protobuf"),
        ("x-lh-compress-type", method.wire_name),
        ("x-lh-raw-size", str(len(raw_protobuf))),
    )
    params = () if hash_key is None else (("hashKey", routing_key(hash_key)),)
    return Call(
        "POST",
        _logstore_path(project, logstore, "logs"),
        _reader(PutLogsResult.from_json),
        params=params,
        body=compress(raw_protobuf, method),
        headers=headers,
    )


def put_logs(
    project: str,
    logstore: str,
    logs: LogGroup | Sequence[LogItem],
    *,
    topic: str,
    source: str,
    tags: PairsInput | None,
    hash_key: str | bytes | None,
    compression: CompressionInput,
) -> Call[PutLogsResult]:
    group = log_group_of(logs, topic=topic, source=source, tags=tags)
    return put_log_group_raw(
        project, logstore, group.to_protobuf(), hash_key=hash_key, compression=compression
    )


def get_cursor(project: str, logstore: str, shard_id: int, start: CursorStart) -> Call[Cursor]:
    path = _logstore_path(project, logstore, "shards", shard_id, "cursor")
    read = _reader(lambda data: Cursor(data["cursor"]))
    return Call("GET", path, read, params=(("from", cursor_from(start)),))


def get_cursor_time(project: str, logstore: str, shard_id: int, cursor: str) -> Call[int]:
    path = _logstore_path(project, logstore, "shards", shard_id, "cursor-time")
    read = _reader(lambda data: int(data["timeNs"]))
    return Call("GET", path, read, params=(("cursor", cursor),))


def pull_logs(
    project: str,
    logstore: str,
    shard_id: int,
    cursor: str,
    *,
    count: int,
    max_bytes: int | None,
    end_cursor: str | None,
    wait_ms: int,
    consumer_group: str | None = None,
    consumer: str | None = None,
) -> Call[PullLogsResult]:
    params = [("cursor", cursor), ("count", str(count)), ("format", "frames")]
    if max_bytes is not None:
        params.append(("maxBytes", str(max_bytes)))
    if end_cursor is not None:
        params.append(("endCursor", end_cursor))
    if wait_ms:
        params.append(("wait", str(wait_ms)))
    if (consumer_group is None) != (consumer is None):
        raise ValueError("give consumer_group and consumer together, or neither")
    if consumer_group is not None and consumer is not None:
        # a member's fetch: the server refuses it (ShardNotHeldError) unless it holds the shard
        params += [("consumerGroup", consumer_group), ("consumer", consumer)]
    path = _logstore_path(project, logstore, "shards", shard_id, "logs")
    return Call("GET", path, _read_pull, params=tuple(params), wait_seconds=wait_ms / 1000)


def _read_pull(response: httpx.Response) -> PullLogsResult:
    headers = response.headers
    return PullLogsResult(
        log_groups=tuple(PulledLogGroup.from_frame(f) for f in iter_frames(response.content)),
        next_cursor=Cursor(headers["x-lh-next-cursor"]),
        end_cursor=Cursor(headers["x-lh-end-cursor"]),
        count=int(headers["x-lh-count"]),
        log_count=int(headers["x-lh-log-count"]),
        raw_size=int(headers["x-lh-raw-size"]),
        shard_status=shard_status_of(headers["x-lh-shard-status"]),
    )


# ------------------------------------------------------- consumer groups
#
# A logstore's groups live under .../logstores/{logstore}/consumergroups and write
# shards as ids; a project's groups, over several logstores, under
# /projects/{project}/consumergroups and write shards as {"logstore", "shardId"}.
# The calls below are built alike for both, from the groups' path.


def _groups_path(project: str, logstore: str, *rest: str | int) -> str:
    return _logstore_path(project, logstore, "consumergroups", *rest)


def _project_groups_path(project: str, *rest: str | int) -> str:
    return _path("projects", project, "consumergroups", *rest)


def _groups(data: dict[str, Any]) -> list[ConsumerGroup]:
    return [ConsumerGroup.from_json(item) for item in data["consumerGroups"]]


def _shard_json(shard: ShardRef) -> dict[str, Any]:
    logstore, shard_id = shard
    return {"logstore": logstore, "shardId": shard_id}


def _create_group(path: str, document: Mapping[str, Any]) -> Call[ConsumerGroup]:
    return _json_call("POST", path, _reader(ConsumerGroup.from_json), document)


def _update_group(path: str, timeout: int | None, in_order: bool | None) -> Call[ConsumerGroup]:
    changes = {"timeout": timeout, "inOrder": in_order}
    document = {key: value for key, value in changes.items() if value is not None}
    return _json_call("PATCH", path, _reader(ConsumerGroup.from_json), document)


def _heartbeat(
    path: str, consumer: str, shards: list[Any] | None, read: Callable[[dict[str, Any]], T]
) -> Call[T]:
    document: dict[str, Any] = {"consumer": consumer}
    if shards is not None:
        document["shards"] = shards
    return _json_call("POST", path, _reader(read), document)


def _leave(path: str, consumer: str) -> Call[None]:
    return _json_call("POST", path, _nothing, {"consumer": consumer, "leave": True})


def create_consumer_group(
    project: str, logstore: str, name: str, *, timeout: int, in_order: bool
) -> Call[ConsumerGroup]:
    document = {"name": name, "timeout": timeout, "inOrder": in_order}
    return _create_group(_groups_path(project, logstore), document)


def get_consumer_group(project: str, logstore: str, name: str) -> Call[ConsumerGroup]:
    return Call("GET", _groups_path(project, logstore, name), _reader(ConsumerGroup.from_json))


def list_consumer_groups(project: str, logstore: str) -> Call[list[ConsumerGroup]]:
    return Call("GET", _groups_path(project, logstore), _reader(_groups))


def update_consumer_group(
    project: str, logstore: str, name: str, *, timeout: int | None, in_order: bool | None
) -> Call[ConsumerGroup]:
    return _update_group(_groups_path(project, logstore, name), timeout, in_order)


def delete_consumer_group(project: str, logstore: str, name: str) -> Call[None]:
    return Call("DELETE", _groups_path(project, logstore, name), _nothing)


def heartbeat(
    project: str, logstore: str, group: str, consumer: str, held: Sequence[int] | None
) -> Call[list[int]]:
    shards = None if held is None else sorted(held)
    path = _groups_path(project, logstore, group, "heartbeat")
    return _heartbeat(path, consumer, shards, lambda data: [int(s) for s in data["shards"]])


def leave_consumer_group(project: str, logstore: str, group: str, consumer: str) -> Call[None]:
    return _leave(_groups_path(project, logstore, group, "heartbeat"), consumer)


def get_checkpoints(project: str, logstore: str, group: str) -> Call[list[Checkpoint]]:
    def read(data: dict[str, Any]) -> list[Checkpoint]:
        return [Checkpoint.from_json(item, logstore) for item in data["checkpoints"]]

    return Call("GET", _groups_path(project, logstore, group, "checkpoints"), _reader(read))


def update_checkpoint(
    project: str,
    logstore: str,
    group: str,
    shard_id: int,
    cursor: str,
    *,
    consumer: str,
    force: bool,
) -> Call[None]:
    document = {"shardId": shard_id, "cursor": cursor, "consumer": consumer, "force": force}
    return _json_call(
        "POST", _groups_path(project, logstore, group, "checkpoints"), _nothing, document
    )


def get_consumer_group_status(project: str, logstore: str, group: str) -> Call[GroupStatus]:
    path = _groups_path(project, logstore, group, "status")
    return Call("GET", path, _reader(lambda data: GroupStatus.from_json(data, logstore)))


# ---------------------------------------------- a project's consumer groups


def create_project_consumer_group(
    project: str, name: str, logstores: Sequence[str], *, timeout: int, in_order: bool
) -> Call[ConsumerGroup]:
    if isinstance(logstores, str):
        raise TypeError("logstores must be a list of logstore names, not a str")
    document = {"name": name, "logstores": list(logstores), "timeout": timeout, "inOrder": in_order}
    return _create_group(_project_groups_path(project), document)


def get_project_consumer_group(project: str, name: str) -> Call[ConsumerGroup]:
    return Call("GET", _project_groups_path(project, name), _reader(ConsumerGroup.from_json))


def list_project_consumer_groups(project: str) -> Call[list[ConsumerGroup]]:
    return Call("GET", _project_groups_path(project), _reader(_groups))


def update_project_consumer_group(
    project: str, name: str, *, timeout: int | None, in_order: bool | None
) -> Call[ConsumerGroup]:
    return _update_group(_project_groups_path(project, name), timeout, in_order)


def delete_project_consumer_group(project: str, name: str) -> Call[None]:
    return Call("DELETE", _project_groups_path(project, name), _nothing)


def project_heartbeat(
    project: str, group: str, consumer: str, held: Sequence[ShardRef] | None
) -> Call[list[ShardRef]]:
    shards = None if held is None else [_shard_json(shard) for shard in sorted(held)]
    path = _project_groups_path(project, group, "heartbeat")
    return _heartbeat(
        path, consumer, shards, lambda data: [shard_ref_of(s, None) for s in data["shards"]]
    )


def leave_project_consumer_group(project: str, group: str, consumer: str) -> Call[None]:
    return _leave(_project_groups_path(project, group, "heartbeat"), consumer)


def get_project_checkpoints(project: str, group: str) -> Call[list[Checkpoint]]:
    def read(data: dict[str, Any]) -> list[Checkpoint]:
        return [Checkpoint.from_json(item) for item in data["checkpoints"]]

    return Call("GET", _project_groups_path(project, group, "checkpoints"), _reader(read))


def update_project_checkpoint(
    project: str, group: str, shard: ShardRef, cursor: str, *, consumer: str, force: bool
) -> Call[None]:
    document = {**_shard_json(shard), "cursor": cursor, "consumer": consumer, "force": force}
    path = _project_groups_path(project, group, "checkpoints")
    return _json_call("POST", path, _nothing, document)


def get_project_consumer_group_status(project: str, group: str) -> Call[ProjectGroupStatus]:
    path = _project_groups_path(project, group, "status")
    return Call("GET", path, _reader(ProjectGroupStatus.from_json))


# ---------------------------------------------------------------- search

TimeBound = int | float | datetime


def _nanoseconds(moment: TimeBound, what: str) -> int:
    if isinstance(moment, bool):
        raise TypeError(f"{what} must be Unix seconds or a datetime")
    if isinstance(moment, datetime):
        return (moment.astimezone(UTC) - _EPOCH) // _MICROSECOND * 1000
    if isinstance(moment, int):
        return moment * 1_000_000_000
    return math.floor(moment * 1_000_000_000)


def _window(start: TimeBound, end: TimeBound) -> dict[str, int]:
    return {"fromNs": _nanoseconds(start, "start"), "toNs": _nanoseconds(end, "end")}


def create_index(project: str, logstore: str, config: Mapping[str, Any]) -> Call[dict[str, Any]]:
    path = _logstore_path(project, logstore, "index")
    return _json_call("POST", path, _reader(lambda data: dict(data["config"])), config)


def update_index(project: str, logstore: str, config: Mapping[str, Any]) -> Call[dict[str, Any]]:
    path = _logstore_path(project, logstore, "index")
    return _json_call("PUT", path, _reader(lambda data: dict(data["config"])), config)


def get_index(project: str, logstore: str) -> Call[dict[str, Any]]:
    return Call("GET", _logstore_path(project, logstore, "index"), _reader(lambda data: dict(data)))


def delete_index(project: str, logstore: str) -> Call[None]:
    return Call("DELETE", _logstore_path(project, logstore, "index"), _nothing)


def query(
    project: str,
    logstore: str,
    text: str,
    *,
    start: TimeBound,
    end: TimeBound,
    line: int,
    offset: int,
    reverse: bool,
    topic: str | None,
) -> Call[QueryResult]:
    document: dict[str, Any] = {
        "query": text,
        **_window(start, end),
        "line": line,
        "offset": offset,
        "reverse": reverse,
    }
    if topic is not None:
        document["topic"] = topic
    path = _logstore_path(project, logstore, "query")
    return _json_call("POST", path, _reader(QueryResult.from_json), document)


def histogram(
    project: str,
    logstore: str,
    text: str,
    *,
    start: TimeBound,
    end: TimeBound,
    interval: int | None,
    topic: str | None,
) -> Call[Histogram]:
    document: dict[str, Any] = {"query": text, **_window(start, end)}
    if interval is not None:
        document["interval"] = interval
    if topic is not None:
        document["topic"] = topic
    path = _logstore_path(project, logstore, "histogram")
    return _json_call("POST", path, _reader(Histogram.from_json), document)


def context(
    project: str, logstore: str, log: QueriedLog, *, back: int, forward: int
) -> Call[tuple[list[QueriedLog], list[QueriedLog]]]:
    params = (
        ("shard", str(log.shard_id)),
        ("cursor", str(log.cursor)),
        ("index", str(log.index)),
        ("back", str(back)),
        ("forward", str(forward)),
    )

    def read(data: dict[str, Any]) -> tuple[list[QueriedLog], list[QueriedLog]]:
        return (
            [QueriedLog.from_json(item) for item in data["before"]],
            [QueriedLog.from_json(item) for item in data["after"]],
        )

    return Call("GET", _logstore_path(project, logstore, "context"), _reader(read), params=params)
