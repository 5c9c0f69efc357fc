"""``LogClient``: the native API over a blocking ``httpx.Client``."""

from __future__ import annotations

import types
from collections.abc import Generator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from .._version import __version__
from . import _requests as api
from ._config import RetryPolicy, Timeout
from ._exceptions import LogHarborError, to_error
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
)
from ._requests import TimeBound
from ._types import CompressionInput, CursorStart, PairsInput

T = TypeVar("T")

USER_AGENT = f"logharbor-python/{__version__}"
DEFAULT_TIMEOUT = Timeout()
DEFAULT_RETRY = RetryPolicy()


class BaseClient:
    """What ``LogClient`` and ``AsyncLogClient`` share: endpoint, credentials, settings."""

    def __init__(
        self,
        endpoint: str,
        *,
        access_key_id: str | None,
        access_key_secret: str | None,
        timeout: Timeout | float | None,
        retry: RetryPolicy,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout = Timeout.of(timeout)
        self.retry = retry
        self._credentials = api.Credentials.from_options(access_key_id, access_key_secret)

    def _request(self, http: httpx.Client | httpx.AsyncClient, call: api.Call[T]) -> httpx.Request:
        return api.build_request(http, call, credentials=self._credentials, timeout=self.timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.endpoint!r})"


class LogClient(BaseClient):
    """A client of a LogHarbor server's native API.

    ::

        with LogClient("http://127.0.0.1:5080", access_key_id=..., access_key_secret=...) as c:
            c.put_logs("web", "access", [LogItem({"path": "/", "status": "200"})])

    Without credentials requests go unsigned, for a server run with ``--no-auth``.
    Failed requests are retried as ``retry`` says (429, 5xx, connection errors).
    ``transport`` replaces the network, for tests (``httpx.MockTransport``).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        access_key_id: str | None = None,
        access_key_secret: str | None = None,
        timeout: Timeout | float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            endpoint,
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            timeout=timeout,
            retry=retry,
        )
        self._http = httpx.Client(
            base_url=self.endpoint,
            timeout=self.timeout.to_httpx(),
            headers={"user-agent": USER_AGENT},
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LogClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, call: api.Call[T]) -> T:
        retries = 0
        while True:
            try:
                return self._exchange(call)
            except LogHarborError as error:
                delay = self.retry.delay_before_retry(error, retries)
                if delay is None:
                    raise
            self.retry.sleep(delay)
            retries += 1

    def _exchange(self, call: api.Call[T]) -> T:
        request = self._request(self._http, call)
        try:
            response = self._http.send(request)
        except httpx.HTTPError as exc:
            raise to_error(exc) from exc
        return call.answer(response)

    # ------------------------------------------------------------ projects

    def create_project(self, name: str, description: str = "") -> Project:
        return self._send(api.create_project(name, description))

    def get_project(self, name: str) -> Project:
        return self._send(api.get_project(name))

    def list_projects(self, *, offset: int = 0, size: int = 100) -> ListResult[Project]:
        return self._send(api.list_projects(offset, size))

    def update_project(self, name: str, description: str) -> Project:
        return self._send(api.update_project(name, description))

    def delete_project(self, name: str) -> None:
        """Delete a project with its logstores and their data."""
        return self._send(api.delete_project(name))

    # ----------------------------------------------------------- logstores

    def create_logstore(
        self,
        project: str,
        name: str,
        *,
        ttl: int = 30,
        shard_count: int = 2,
        auto_split: bool = False,
        max_split_shard: int = 64,
    ) -> Logstore:
        """Create a logstore keeping data ``ttl`` days in ``shard_count`` shards."""
        return self._send(
            api.create_logstore(
                project,
                name,
                ttl=ttl,
                shard_count=shard_count,
                auto_split=auto_split,
                max_split_shard=max_split_shard,
            )
        )

    def get_logstore(self, project: str, name: str) -> Logstore:
        return self._send(api.get_logstore(project, name))

    def list_logstores(
        self, project: str, *, offset: int = 0, size: int = 100
    ) -> ListResult[Logstore]:
        return self._send(api.list_logstores(project, offset, size))

    def update_logstore(
        self,
        project: str,
        name: str,
        *,
        ttl: int | None = None,
        auto_split: bool | None = None,
        max_split_shard: int | None = None,
    ) -> Logstore:
        """Change the settings given; ``None`` keeps a setting as it is."""
        return self._send(
            api.update_logstore(
                project, name, ttl=ttl, auto_split=auto_split, max_split_shard=max_split_shard
            )
        )

    def delete_logstore(self, project: str, name: str) -> None:
        return self._send(api.delete_logstore(project, name))

    # -------------------------------------------------------------- shards

    def list_shards(self, project: str, logstore: str) -> list[Shard]:
        return self._send(api.list_shards(project, logstore))

    def split_shard(
        self, project: str, logstore: str, shard_id: int, split_key: str
    ) -> list[Shard]:
        """Split a readwrite shard at the 32-hex-digit ``split_key``; returns
        ``[parent, left, right]``. The next write goes to a child."""
        return self._send(api.split_shard(project, logstore, shard_id, split_key))

    def merge_shard(self, project: str, logstore: str, shard_id: int) -> list[Shard]:
        """Merge a readwrite shard with the one after it; returns ``[first, second, merged]``."""
        return self._send(api.merge_shard(project, logstore, shard_id))

    # ----------------------------------------------------------- writing

    def put_logs(
        self,
        project: str,
        logstore: str,
        logs: LogGroup | Sequence[LogItem],
        *,
        topic: str = "",
        source: str = "",
        tags: PairsInput | None = None,
        hash_key: str | bytes | None = None,
        compression: CompressionInput = "lz4",
    ) -> PutLogsResult:
        """Write logs as one log group; returns once it is on disk.

        ``hash_key`` routes the group to the shard owning that key: a 32-hex-digit key
        is used as it is, any other value is hashed with ``hash_key_of``. Without it
        the server spreads groups over the writable shards.
        """
        return self._send(
            api.put_logs(
                project,
                logstore,
                logs,
                topic=topic,
                source=source,
                tags=tags,
                hash_key=hash_key,
                compression=compression,
            )
        )

    def put_log_group_raw(
        self,
        project: str,
        logstore: str,
        raw_protobuf: bytes,
        *,
        hash_key: str | bytes | None = None,
        compression: CompressionInput = "lz4",
    ) -> PutLogsResult:
        """Write an already serialized protobuf ``LogGroup`` (uncompressed)."""
        return self._send(
            api.put_log_group_raw(
                project, logstore, raw_protobuf, hash_key=hash_key, compression=compression
            )
        )

    # ------------------------------------------------------------ search

    def create_index(
        self, project: str, logstore: str, config: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Index the logstore (its kept data too) with an SLS-shaped index configuration:
        ``{"line": {"token": [...]}, "keys": {name: {"type": "text"|"long"|...}}}``."""
        return self._send(api.create_index(project, logstore, config))

    def update_index(
        self, project: str, logstore: str, config: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Replace the index configuration; it applies to all indexed data at once."""
        return self._send(api.update_index(project, logstore, config))

    def get_index(self, project: str, logstore: str) -> dict[str, Any]:
        """``{"config": ..., "lag": [{"shardId", "behindLogGroups"}]}``."""
        return self._send(api.get_index(project, logstore))

    def delete_index(self, project: str, logstore: str) -> None:
        self._send(api.delete_index(project, logstore))

    def query(
        self,
        project: str,
        logstore: str,
        query: str = "*",
        *,
        start: TimeBound,
        end: TimeBound,
        line: int = 100,
        offset: int = 0,
        reverse: bool = False,
        topic: str | None = None,
    ) -> QueryResult:
        """Search the logs with times in ``[start, end)`` (Unix seconds or datetimes),
        optionally analysing them with SQL after ``|`` (docs/search.md)."""
        return self._send(
            api.query(
                project,
                logstore,
                query,
                start=start,
                end=end,
                line=line,
                offset=offset,
                reverse=reverse,
                topic=topic,
            )
        )

    def histogram(
        self,
        project: str,
        logstore: str,
        query: str = "*",
        *,
        start: TimeBound,
        end: TimeBound,
        interval: int | None = None,
        topic: str | None = None,
    ) -> Histogram:
        """How many logs match, per time bucket (``interval`` seconds, or about 60
        buckets)."""
        return self._send(
            api.histogram(
                project, logstore, query, start=start, end=end, interval=interval, topic=topic
            )
        )

    def context(
        self, project: str, logstore: str, log: QueriedLog, *, back: int = 10, forward: int = 10
    ) -> tuple[list[QueriedLog], list[QueriedLog]]:
        """The logs stored just before and after ``log`` in its shard."""
        return self._send(api.context(project, logstore, log, back=back, forward=forward))

    # ----------------------------------------------------------- reading

    def get_cursor(self, project: str, logstore: str, shard_id: int, start: CursorStart) -> Cursor:
        """The cursor at ``"begin"``, at ``"end"``, or at the first log group received
        at or after a time (Unix seconds or a datetime; naive means local time)."""
        return self._send(api.get_cursor(project, logstore, shard_id, start))

    def get_cursor_time(self, project: str, logstore: str, shard_id: int, cursor: str) -> int:
        """When the log group at ``cursor`` was received, in nanoseconds since the epoch
        (for the end cursor, the last log group)."""
        return self._send(api.get_cursor_time(project, logstore, shard_id, cursor))

    def pull_logs(
        self,
        project: str,
        logstore: str,
        shard_id: int,
        cursor: str,
        *,
        count: int = 100,
        max_bytes: int | None = None,
        end_cursor: str | None = None,
        wait_ms: int = 0,
        consumer_group: str | None = None,
        consumer: str | None = None,
    ) -> PullLogsResult:
        """Read up to ``count`` log groups (and about ``max_bytes`` of stored data, at
        least one group) from ``cursor``, stopping before ``end_cursor``. With
        ``wait_ms`` the server holds the request up to that long until data arrives.

        With ``consumer_group`` and ``consumer`` the pull is a group member's: the
        server refuses it (``ShardNotHeldError``) unless that member holds the shard."""
        return self._send(
            api.pull_logs(
                project,
                logstore,
                shard_id,
                cursor,
                count=count,
                max_bytes=max_bytes,
                end_cursor=end_cursor,
                wait_ms=wait_ms,
                consumer_group=consumer_group,
                consumer=consumer,
            )
        )

    def tail(
        self,
        project: str,
        logstore: str,
        shard_id: int,
        *,
        start: CursorStart | Cursor = "end",
        count: int = 100,
        wait_ms: int = 10_000,
    ) -> Generator[PulledLogGroup, None, None]:
        """Follow a shard from ``start`` (a ``Cursor``, or as ``get_cursor`` takes it),
        yielding log groups as they arrive and long polling for more.

        Ends when the shard is readonly and read to its end: after a split or a merge,
        follow its ``children``.
        """
        cursor = (
            start
            if isinstance(start, Cursor)
            else self.get_cursor(project, logstore, shard_id, start)
        )
        while True:
            result = self.pull_logs(
                project, logstore, shard_id, cursor, count=count, wait_ms=wait_ms
            )
            yield from result.log_groups
            if result.shard_finished:
                return
            cursor = result.next_cursor

    # ----------------------------------------------------- consumer groups

    def create_consumer_group(
        self, project: str, logstore: str, name: str, *, timeout: int = 60, in_order: bool = False
    ) -> ConsumerGroup:
        """Create a consumer group of a logstore; its members time out after
        ``timeout`` seconds without a heartbeat. ``AlreadyExistsError`` if it exists."""
        return self._send(
            api.create_consumer_group(project, logstore, name, timeout=timeout, in_order=in_order)
        )

    def get_consumer_group(self, project: str, logstore: str, name: str) -> ConsumerGroup:
        return self._send(api.get_consumer_group(project, logstore, name))

    def list_consumer_groups(self, project: str, logstore: str) -> list[ConsumerGroup]:
        return self._send(api.list_consumer_groups(project, logstore))

    def update_consumer_group(
        self,
        project: str,
        logstore: str,
        name: str,
        *,
        timeout: int | None = None,
        in_order: bool | None = None,
    ) -> ConsumerGroup:
        """Change the settings given; ``None`` keeps a setting as it is."""
        return self._send(
            api.update_consumer_group(project, logstore, name, timeout=timeout, in_order=in_order)
        )

    def delete_consumer_group(self, project: str, logstore: str, name: str) -> None:
        return self._send(api.delete_consumer_group(project, logstore, name))

    def heartbeat(
        self, project: str, logstore: str, group: str, consumer: str, held: Sequence[int] | None
    ) -> list[int]:
        """Tell the group that ``consumer`` is alive and holds ``held`` (every shard it
        has not finished with, including ones it is giving up; ``None``: it does not
        say). Returns the shards it should hold."""
        return self._send(api.heartbeat(project, logstore, group, consumer, held))

    def leave_consumer_group(self, project: str, logstore: str, group: str, consumer: str) -> None:
        """``consumer`` stops, having saved its checkpoints: the group hands its shards
        to the other members at once instead of after the group timeout."""
        self._send(api.leave_consumer_group(project, logstore, group, consumer))

    def get_checkpoints(self, project: str, logstore: str, group: str) -> list[Checkpoint]:
        """One checkpoint per shard of the logstore (``cursor`` ``None`` where none)."""
        return self._send(api.get_checkpoints(project, logstore, group))

    def update_checkpoint(
        self,
        project: str,
        logstore: str,
        group: str,
        shard_id: int,
        cursor: str,
        *,
        consumer: str,
        force: bool = False,
    ) -> None:
        """Save ``cursor`` (the first log group not yet processed) as where the group
        resumes ``shard_id``. Refused with ``ShardNotHeldError`` when ``consumer`` does
        not hold the shard, unless ``force``."""
        return self._send(
            api.update_checkpoint(
                project, logstore, group, shard_id, cursor, consumer=consumer, force=force
            )
        )

    def get_consumer_group_status(self, project: str, logstore: str, group: str) -> GroupStatus:
        """The live members with their shards, and how far behind each shard is."""
        return self._send(api.get_consumer_group_status(project, logstore, group))

    # ------------------------------------------- a project's consumer groups
    #
    # The twins of the methods above for a group of a project that reads several of
    # its logstores: no logstore argument, and shards are ``ShardRef``s.

    def create_project_consumer_group(
        self,
        project: str,
        name: str,
        logstores: Sequence[str],
        *,
        timeout: int = 60,
        in_order: bool = False,
    ) -> ConsumerGroup:
        """Create a consumer group of a project that reads ``logstores`` (a list of
        its logstores' names); its shards are balanced over its members together.
        ``AlreadyExistsError`` if it exists."""
        return self._send(
            api.create_project_consumer_group(
                project, name, logstores, timeout=timeout, in_order=in_order
            )
        )

    def get_project_consumer_group(self, project: str, name: str) -> ConsumerGroup:
        return self._send(api.get_project_consumer_group(project, name))

    def list_project_consumer_groups(self, project: str) -> list[ConsumerGroup]:
        """The project's groups (not its logstores' groups)."""
        return self._send(api.list_project_consumer_groups(project))

    def update_project_consumer_group(
        self, project: str, name: str, *, timeout: int | None = None, in_order: bool | None = None
    ) -> ConsumerGroup:
        """Change the settings given; ``None`` keeps a setting as it is. The logstores
        a group reads are fixed when it is created."""
        return self._send(
            api.update_project_consumer_group(project, name, timeout=timeout, in_order=in_order)
        )

    def delete_project_consumer_group(self, project: str, name: str) -> None:
        return self._send(api.delete_project_consumer_group(project, name))

    def project_heartbeat(
        self, project: str, group: str, consumer: str, held: Sequence[ShardRef] | None
    ) -> list[ShardRef]:
        """As ``heartbeat``, for a project's group."""
        return self._send(api.project_heartbeat(project, group, consumer, held))

    def leave_project_consumer_group(self, project: str, group: str, consumer: str) -> None:
        """As ``leave_consumer_group``, for a project's group."""
        self._send(api.leave_project_consumer_group(project, group, consumer))

    def get_project_checkpoints(self, project: str, group: str) -> list[Checkpoint]:
        """One checkpoint per shard of every logstore the group reads (``cursor``
        ``None`` where none); ``checkpoint.shard`` is its ``ShardRef``."""
        return self._send(api.get_project_checkpoints(project, group))

    def update_project_checkpoint(
        self,
        project: str,
        group: str,
        shard: ShardRef,
        cursor: str,
        *,
        consumer: str,
        force: bool = False,
    ) -> None:
        """As ``update_checkpoint``, for a project's group: ``shard`` names the
        logstore and the shard."""
        return self._send(
            api.update_project_checkpoint(
                project, group, shard, cursor, consumer=consumer, force=force
            )
        )

    def get_project_consumer_group_status(self, project: str, group: str) -> ProjectGroupStatus:
        """As ``get_consumer_group_status``, for a project's group."""
        return self._send(api.get_project_consumer_group_status(project, group))
