"""Error codes shared by the server and the SDK.

Every error a LogHarbor server answers is JSON ``{"errorCode", "errorMessage",
"requestId"}`` with the HTTP status below.  Codes follow SLS where SLS has one,
so that the SLS facade can render engine errors unchanged.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """An error code and the HTTP status it is answered with."""

    http_status: int

    def __new__(cls, value: str, http_status: int) -> ErrorCode:
        member = str.__new__(cls, value)
        member._value_ = value
        member.http_status = http_status
        return member

    # Request shape
    INVALID_PARAMETER = ("ParameterInvalid", 400)
    INVALID_NAME = ("InvalidName", 400)
    INVALID_CURSOR = ("InvalidCursor", 400)
    INVALID_HASH_KEY = ("InvalidHashKey", 400)
    INVALID_COMPRESS_TYPE = ("InvalidCompressType", 400)
    INVALID_BODY = ("PostBodyInvalid", 400)
    INVALID_LOG_GROUP = ("InvalidLogGroup", 400)
    INVALID_QUERY = ("InvalidQuery", 400)
    INDEX_CONFIG_NOT_EXIST = ("IndexConfigNotExist", 404)
    INDEX_ALREADY_EXIST = ("IndexAlreadyExist", 400)
    QUERY_TIMEOUT = ("QueryTimeout", 408)
    QUERY_TOO_LARGE = ("QueryExceedLimit", 400)
    QUERY_QUOTA_EXCEED = ("QueryQuotaExceed", 429)
    BODY_TOO_LARGE = ("PostBodyTooLarge", 413)
    RAW_SIZE_TOO_LARGE = ("PostBodyUncompressedTooLarge", 413)
    # Resources
    PROJECT_NOT_EXIST = ("ProjectNotExist", 404)
    PROJECT_ALREADY_EXIST = ("ProjectAlreadyExist", 400)
    LOGSTORE_NOT_EXIST = ("LogStoreNotExist", 404)
    LOGSTORE_ALREADY_EXIST = ("LogStoreAlreadyExist", 400)
    SHARD_NOT_EXIST = ("ShardNotExist", 404)
    SHARD_READ_ONLY = ("ShardReadOnly", 400)
    NO_WRITABLE_SHARD = ("ShardWriteQuotaExceed", 409)
    CONSUMER_GROUP_NOT_EXIST = ("ConsumerGroupNotExist", 404)
    CONSUMER_GROUP_ALREADY_EXIST = ("ConsumerGroupAlreadyExist", 400)
    CONSUMER_NOT_MATCH = ("ConsumerNotMatch", 409)
    NOT_FOUND = ("NotFound", 404)
    # Stored configuration documents (SLS machine groups, Logtail configs, shippers)
    MACHINE_GROUP_NOT_EXIST = ("MachineGroupNotExist", 404)
    MACHINE_GROUP_ALREADY_EXIST = ("MachineGroupAlreadyExist", 400)
    CONFIG_NOT_EXIST = ("ConfigNotExist", 404)
    CONFIG_ALREADY_EXIST = ("ConfigAlreadyExist", 400)
    SHIPPER_NOT_EXIST = ("ShipperNotExist", 404)
    SHIPPER_ALREADY_EXIST = ("ShipperAlreadyExist", 400)
    INVALID_CHECKPOINT = ("InvalidShardCheckPoint", 400)
    METHOD_NOT_ALLOWED = ("MethodNotAllowed", 405)
    # Authentication
    UNAUTHORIZED = ("Unauthorized", 401)
    SIGNATURE_NOT_MATCH = ("SignatureNotMatch", 401)
    REQUEST_TIME_EXPIRED = ("RequestTimeExpired", 403)
    # Server side
    SERVER_BUSY = ("ServerBusy", 503)
    WRITE_QUOTA_EXCEED = ("WriteQuotaExceed", 429)
    INTERNAL = ("InternalServerError", 500)

    @property
    def retryable(self) -> bool:
        """Whether sending the same request again may succeed."""
        return self.http_status == 429 or self.http_status >= 500

    @classmethod
    def lookup(cls, value: str) -> ErrorCode | None:
        member = cls._value2member_map_.get(value)
        return member if isinstance(member, ErrorCode) else None


class ServiceError(Exception):
    """An error with a code, a message and the HTTP status to answer it with.

    The engine raises it; each facade renders it in its own protocol's shape.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return self.code.http_status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.value!r}, {self.message!r})"
