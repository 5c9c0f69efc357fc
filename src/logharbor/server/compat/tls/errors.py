"""Engine errors in the TLS shape: ``{"ErrorCode", "ErrorMessage"}`` with statuses
the TLS SDK retries only when a retry may help (429 and 5xx; never for
"not found" or "already exists")."""

from __future__ import annotations

from starlette.responses import JSONResponse

from ....protocol.errors import ErrorCode, ServiceError
from .signing import AuthError

REQUEST_ID_HEADER = "X-Tls-Requestid"

_INVALID = ("InvalidArgument", 400)
_CODES: dict[ErrorCode, tuple[str, int]] = {
    ErrorCode.INVALID_PARAMETER: _INVALID,
    ErrorCode.INVALID_NAME: _INVALID,
    ErrorCode.INVALID_CURSOR: ("InvalidCursor", 400),
    ErrorCode.INVALID_HASH_KEY: _INVALID,
    ErrorCode.INVALID_COMPRESS_TYPE: _INVALID,
    ErrorCode.INVALID_BODY: _INVALID,
    ErrorCode.INVALID_LOG_GROUP: _INVALID,
    ErrorCode.BODY_TOO_LARGE: ("LogSizeTooLarge", 413),
    ErrorCode.RAW_SIZE_TOO_LARGE: ("LogSizeTooLarge", 413),
    ErrorCode.PROJECT_NOT_EXIST: ("ProjectNotExists", 404),
    ErrorCode.PROJECT_ALREADY_EXIST: ("ProjectAlreadyExist", 409),
    ErrorCode.LOGSTORE_NOT_EXIST: ("TopicNotExist", 404),
    ErrorCode.LOGSTORE_ALREADY_EXIST: ("TopicAlreadyExist", 409),
    ErrorCode.SHARD_NOT_EXIST: ("ShardNotExist", 404),
    ErrorCode.SHARD_READ_ONLY: ("ShardReadOnly", 400),
    ErrorCode.INDEX_CONFIG_NOT_EXIST: ("IndexNotExists", 404),
    ErrorCode.INDEX_ALREADY_EXIST: ("IndexAlreadyExist", 409),
    ErrorCode.CONSUMER_GROUP_NOT_EXIST: ("ConsumerGroupNotExist", 404),
    ErrorCode.CONSUMER_GROUP_ALREADY_EXIST: ("ConsumerGroupAlreadyExists", 409),
    # the consumer is expired or no longer owns the shard: the SDK re-heartbeats
    ErrorCode.CONSUMER_NOT_MATCH: ("ConsumerHeartbeatExpired", 400),
    ErrorCode.NOT_FOUND: ("InvalidAction", 404),
    ErrorCode.UNAUTHORIZED: ("AuthFailed", 401),
    ErrorCode.SIGNATURE_NOT_MATCH: ("SignatureDoesNotMatch", 401),
    ErrorCode.REQUEST_TIME_EXPIRED: ("RequestTimeTooSkewed", 403),
    ErrorCode.WRITE_QUOTA_EXCEED: ("ExceedQPSLimit", 429),
    ErrorCode.QUERY_QUOTA_EXCEED: ("ExceedQPSLimit", 429),
    ErrorCode.INTERNAL: ("InternalServerError", 500),
}


def tls_error(error: ServiceError) -> tuple[str, int]:
    """The TLS error code and HTTP status of an engine error."""
    code, status = _CODES.get(error.code, (error.code.value, error.http_status))
    if isinstance(error, AuthError):
        code = error.tls_code
    return code, status


def tls_error_response(error: ServiceError, request_id: str) -> JSONResponse:
    code, status = tls_error(error)
    headers = {REQUEST_ID_HEADER: request_id}
    if status == 429 or status >= 500:
        headers["Retry-After"] = "1"
    return JSONResponse(
        {"ErrorCode": code, "ErrorMessage": error.message},
        status_code=status,
        headers=headers,
    )
