"""The errors the SDK raises: one tree, rooted at ``LogHarborError``.

::

    LogHarborError                   code, message, status, request_id, retryable
    ├── TransportError               no answer: connect failure, timeout, dropped connection
    ├── DecodingError                an answer the SDK cannot read (corrupt frame, bad JSON)
    ├── ThrottledError               429: the server asks to slow down
    ├── ServerError                  5xx: the server failed or is busy
    └── ClientError                  other 4xx: the request itself is wrong
        ├── AuthenticationError      401, 403: unknown key, bad signature, clock skew
        ├── NotFoundError            404: ProjectNotExist, LogStoreNotExist, ShardNotExist
        ├── AlreadyExistsError       a project, logstore or consumer group of that name exists
        ├── ShardNotHeldError        ConsumerNotMatch: a member used a shard it does not hold
        ├── InvalidCursorError       InvalidCursor: a cursor past the end or not a cursor
        └── PayloadTooLargeError     413: the body, or its decompressed size, is over the limit
    ProducerError                    the producer refused a log, before any request
    ├── ProducerClosedError          send on a closing or closed producer; logs dropped by close()
    └── BufferFullError              the producer's buffer stayed full for the allowed time

Only ``TransportError`` (when sending again can help), ``ThrottledError`` and
``ServerError`` are ``retryable``; the client's ``RetryPolicy`` retries nothing else.

``to_error`` is the one place where something lower-level (an httpx answer or
exception, a codec or protobuf error) becomes the most specific of these.
"""

from __future__ import annotations

from typing import Any

import httpx
from google.protobuf.message import DecodeError

from ..protocol.codec import CodecError
from ..protocol.errors import ErrorCode

REQUEST_ID_HEADER = "x-lh-request-id"
_MAX_MESSAGE_CHARS = 300


class LogHarborError(Exception):
    """Base of every error the SDK raises.

    ``code`` is the server's error code (``ProjectNotExist``, ``ServerBusy``...) or, for
    errors without an answer, the name of what went wrong (``ConnectError``,
    ``ReadTimeout``, ``InvalidResponse``). ``status`` and ``request_id`` come from the
    answer, when there is one; quote the request id when reporting a server problem.
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str = "Error",
        status: int | None = None,
        request_id: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.request_id = request_id
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        details = [f"status {self.status}"] if self.status is not None else []
        if self.request_id:
            details.append(f"request id {self.request_id}")
        suffix = f" ({', '.join(details)})" if details else ""
        return f"{self.code}: {self.message}{suffix}"


class TransportError(LogHarborError):
    """No answer: the connection failed, timed out or broke. Retryable unless the
    request could never be sent (an unsupported URL scheme, for instance)."""

    retryable = True


class DecodingError(LogHarborError):
    """The server answered, but the answer cannot be read (a corrupt frame, a log
    group that is not valid protobuf, JSON without the documented fields)."""


class ThrottledError(LogHarborError):
    """429: the server refuses the write for now (``WriteQuotaExceed``)."""

    retryable = True


class ServerError(LogHarborError):
    """5xx: the server failed (``InternalServerError``) or is busy (``ServerBusy``)."""

    retryable = True


class ClientError(LogHarborError):
    """4xx: the request is wrong and sending it again will not help."""


class AuthenticationError(ClientError):
    """401 or 403: ``Unauthorized``, ``SignatureNotMatch``, ``RequestTimeExpired``."""


class NotFoundError(ClientError):
    """404: ``ProjectNotExist``, ``LogStoreNotExist``, ``ShardNotExist`` or ``NotFound``."""


class AlreadyExistsError(ClientError):
    """``ProjectAlreadyExist``, ``LogStoreAlreadyExist`` or ``ConsumerGroupAlreadyExist``."""


class ShardNotHeldError(ClientError):
    """409 ``ConsumerNotMatch``: a consumer group member fetched or checkpointed a
    shard that the group does not (or no longer) let it hold."""


class InvalidCursorError(ClientError):
    """``InvalidCursor``: a cursor past the shard's end, or a string that is no cursor."""


class PayloadTooLargeError(ClientError):
    """413: ``PostBodyTooLarge`` or ``PostBodyUncompressedTooLarge``."""


class ProducerError(LogHarborError):
    """The ``Producer`` could not take or could not deliver logs, with no server answer."""


class ProducerClosedError(ProducerError):
    """The producer is closing or closed: it takes no more logs; or ``close(timeout)``
    gave up on logs it had not delivered (code ``ProducerClosed``)."""

    def __init__(self, message: str = "the producer is closed") -> None:
        super().__init__(message, code="ProducerClosed")


class BufferFullError(ProducerError):
    """The producer's buffer held ``max_buffer_bytes`` for longer than the caller
    may be blocked (code ``BufferFull``); nothing of the refused logs was taken."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="BufferFull")


_BY_CODE: dict[str, type[LogHarborError]] = {
    ErrorCode.PROJECT_ALREADY_EXIST.value: AlreadyExistsError,
    ErrorCode.LOGSTORE_ALREADY_EXIST.value: AlreadyExistsError,
    ErrorCode.CONSUMER_GROUP_ALREADY_EXIST.value: AlreadyExistsError,
    ErrorCode.CONSUMER_NOT_MATCH.value: ShardNotHeldError,
    ErrorCode.INVALID_CURSOR.value: InvalidCursorError,
}

_BY_STATUS: dict[int, type[LogHarborError]] = {
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    429: ThrottledError,
}

# A request that never reached the server, or an answer we broke ourselves,
# is no better on a second try.
_NOT_RETRYABLE_TRANSPORT = (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.ProxyError)

# What parsing a well-formed answer cannot raise, but parsing a malformed one can.
DECODING_FAILURES: tuple[type[Exception], ...] = (
    CodecError,
    DecodeError,
    KeyError,
    TypeError,
    ValueError,
    httpx.DecodingError,
)


def to_error(source: httpx.Response | Exception) -> LogHarborError:
    """The most specific ``LogHarborError`` for an error answer or a lower-level exception."""
    if isinstance(source, httpx.Response):
        return _from_response(source)
    if isinstance(source, CodecError) and source.code is ErrorCode.INVALID_CURSOR:
        return InvalidCursorError(source.message, code=source.code.value)
    if isinstance(source, DECODING_FAILURES):
        return DecodingError(f"cannot read the server's answer: {source}", code="InvalidResponse")
    if isinstance(source, httpx.HTTPError):
        return TransportError(
            str(source) or type(source).__name__,
            code=type(source).__name__,
            retryable=not isinstance(source, _NOT_RETRYABLE_TRANSPORT),
        )
    return LogHarborError(str(source), code=type(source).__name__)


def _from_response(response: httpx.Response) -> LogHarborError:
    status = response.status_code
    code, message, request_id = _error_document(response)
    kind = _BY_CODE.get(code) or _BY_STATUS.get(status)
    if kind is None:
        kind = ServerError if status >= 500 else ClientError
    return kind(
        message,
        code=code,
        status=status,
        request_id=request_id or response.headers.get(REQUEST_ID_HEADER),
    )


def _error_document(response: httpx.Response) -> tuple[str, str, str | None]:
    """``(code, message, request id)`` from the JSON error body, or from whatever the
    answer holds when something other than LogHarbor (a proxy, say) produced it."""
    document: Any
    try:
        document = response.json()
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("errorCode"), str):
        request_id = document.get("requestId")
        return (
            document["errorCode"],
            str(document.get("errorMessage", "")),
            request_id if isinstance(request_id, str) else None,
        )
    reason = response.reason_phrase or "HTTP error"
    code = reason.title().replace(" ", "").replace("-", "") or f"HTTP{response.status_code}"
    body = " ".join(response.text.split())[:_MAX_MESSAGE_CHARS]
    return code, body or reason, None


__all__ = [
    "AlreadyExistsError",
    "AuthenticationError",
    "BufferFullError",
    "ClientError",
    "DecodingError",
    "InvalidCursorError",
    "LogHarborError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ProducerClosedError",
    "ProducerError",
    "ServerError",
    "ShardNotHeldError",
    "ThrottledError",
    "TransportError",
    "to_error",
]
