"""InLong ``DataProxyErrCode`` numbers, and which of them a LogHarbor error becomes."""

from __future__ import annotations

from enum import IntEnum

from ....protocol.errors import ErrorCode, ServiceError


class DataProxyErrCode(IntEnum):
    OK = 0
    SINK_SERVICE_UNREADY = 1
    SERVICE_CLOSED = 2
    CONF_SERVICE_UNREADY = 3
    HTTP_DECODE_REQ_FAILURE = 31
    HTTP_UNSUPPORTED_METHOD = 32
    HTTP_REQ_URI_BLANK = 33
    HTTP_URI_DECODE_FAILURE = 34
    HTTP_UNSUPPORTED_SERVICE_URI = 35
    HTTP_UNSUPPORTED_CONTENT_TYPE = 36
    ILLEGAL_MAGIC = 94
    FIELD_LENGTH_ILLEGAL = 95
    UNCOMPRESS_DATA_ERROR = 96
    MISS_REQUIRED_GROUPID_ARGUMENT = 100
    MISS_REQUIRED_STREAMID_ARGUMENT = 101
    MISS_REQUIRED_DT_ARGUMENT = 102
    MISS_REQUIRED_BODY_ARGUMENT = 103
    BODY_EXCEED_MAX_LEN = 104
    BODY_LENGTH_ZERO = 105
    BODY_LENGTH_LESS_ZERO = 106
    ATTR_LENGTH_LESS_ZERO = 107
    LOGIC_ERROR = 108
    SPLIT_ATTR_ERROR = 109
    UNSUPPORTED_MSG_TYPE = 110
    EMPTY_MSG = 111
    UNSUPPORTED_EXTEND_FIELD_VALUE = 112
    TOPIC_IS_BLANK = 113  # "unconfigured group/stream"
    PUT_EVENT_TO_CHANNEL_FAILURE = 114
    GROUPID_OR_STREAMID_NOT_CONFIGURE = 121
    GROUPID_OR_STREAMID_INCONSTANT = 122
    BODY_ITEMS_INVALID = 123
    UNKNOWN_ERROR = 2147483647


class Rejected(Exception):
    """A request refused with an InLong error code (nothing of it is stored)."""

    def __init__(self, code: DataProxyErrCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_FROM_SERVICE = {
    ErrorCode.PROJECT_NOT_EXIST: DataProxyErrCode.TOPIC_IS_BLANK,
    ErrorCode.LOGSTORE_NOT_EXIST: DataProxyErrCode.TOPIC_IS_BLANK,
    ErrorCode.INVALID_NAME: DataProxyErrCode.TOPIC_IS_BLANK,
    ErrorCode.NO_WRITABLE_SHARD: DataProxyErrCode.SINK_SERVICE_UNREADY,
    ErrorCode.SERVER_BUSY: DataProxyErrCode.SINK_SERVICE_UNREADY,
    ErrorCode.WRITE_QUOTA_EXCEED: DataProxyErrCode.SINK_SERVICE_UNREADY,
    ErrorCode.BODY_TOO_LARGE: DataProxyErrCode.BODY_EXCEED_MAX_LEN,
    ErrorCode.RAW_SIZE_TOO_LARGE: DataProxyErrCode.BODY_EXCEED_MAX_LEN,
    ErrorCode.INVALID_PARAMETER: DataProxyErrCode.MISS_REQUIRED_DT_ARGUMENT,
    ErrorCode.INVALID_LOG_GROUP: DataProxyErrCode.BODY_ITEMS_INVALID,
}


def rejection(error: ServiceError) -> Rejected:
    """The InLong answer to an engine error."""
    code = _FROM_SERVICE.get(error.code, DataProxyErrCode.PUT_EVENT_TO_CHANNEL_FAILURE)
    return Rejected(code, f"{error.code.value}: {error.message}")
