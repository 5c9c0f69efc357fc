"""The LogHarbor Python SDK: ``LogClient``, ``AsyncLogClient`` and their models."""

from ..protocol.codec import Compression, hash_key_of
from ._async_client import AsyncLogClient
from ._client import LogClient
from ._config import RetryPolicy, Timeout
from ._exceptions import (
    AlreadyExistsError,
    AuthenticationError,
    ClientError,
    DecodingError,
    InvalidCursorError,
    LogHarborError,
    NotFoundError,
    PayloadTooLargeError,
    ServerError,
    ThrottledError,
    TransportError,
)
from ._models import (
    Cursor,
    ListResult,
    LogGroup,
    LogItem,
    Logstore,
    Project,
    PulledLogGroup,
    PullLogsResult,
    PutLogsResult,
    Shard,
)
from ._types import CompressionInput, CursorStart, PairsInput, ShardStatus

__all__ = [
    "AlreadyExistsError",
    "AsyncLogClient",
    "AuthenticationError",
    "ClientError",
    "Compression",
    "CompressionInput",
    "Cursor",
    "CursorStart",
    "DecodingError",
    "InvalidCursorError",
    "ListResult",
    "LogClient",
    "LogGroup",
    "LogHarborError",
    "LogItem",
    "Logstore",
    "NotFoundError",
    "PairsInput",
    "PayloadTooLargeError",
    "Project",
    "PullLogsResult",
    "PulledLogGroup",
    "PutLogsResult",
    "RetryPolicy",
    "ServerError",
    "Shard",
    "ShardStatus",
    "ThrottledError",
    "Timeout",
    "TransportError",
    "hash_key_of",
]
