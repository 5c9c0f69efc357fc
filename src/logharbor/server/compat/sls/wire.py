"""The SLS wire format (../shared/specs/sls.md): projects from ``Host``, SLS
compression names, ``LogGroupList`` bodies, the JSON shapes the SDK reads and
the error answers it understands."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.responses import Response

from ....engine.types import LogstoreInfo, ProjectInfo, ShardInfo
from ....protocol.codec import Compression, compress, iter_frames, length_delimited
from ....protocol.errors import ErrorCode, ServiceError

REQUEST_ID_HEADER = "x-log-requestid"
JSON_MEDIA_TYPE = "application/json"
PROTOBUF_MEDIA_TYPE = "application/x-protobuf"

# SLS answers a few conditions with another status or code than LogHarbor's own
_STATUS = {
    ErrorCode.REQUEST_TIME_EXPIRED: 400,
    ErrorCode.CONSUMER_NOT_MATCH: 400,
    ErrorCode.BODY_TOO_LARGE: 400,
    ErrorCode.RAW_SIZE_TOO_LARGE: 400,
    ErrorCode.INVALID_QUERY: 400,
    ErrorCode.METHOD_NOT_ALLOWED: 400,
}
_CODE = {
    # put_logs_auto_div splits a batch and retries on InvalidLogSize
    ErrorCode.BODY_TOO_LARGE: "InvalidLogSize",
    ErrorCode.RAW_SIZE_TOO_LARGE: "InvalidLogSize",
    ErrorCode.INVALID_QUERY: "ParameterInvalid",
}


def project_of(host: str, base_hosts: Iterable[str]) -> str | None:
    """The project a ``Host`` header names: its first DNS label when the rest is a
    base host; None for a base host itself (calls such as ``list_project``)."""
    name = host.strip().lower()
    if name.startswith("["):  # IPv6 literal: never a project
        return None
    name = name.rsplit(":", 1)[0] if ":" in name else name
    for base in base_hosts:
        if name == base:
            return None
        if name.endswith("." + base):
            label = name[: -len(base) - 1]
            if label and "." not in label:
                return label
    raise ServiceError(
        ErrorCode.INVALID_PARAMETER,
        f"cannot tell the project from Host {host!r}: expected <project>.<base host>, with "
        f"base hosts {', '.join(base_hosts)} (setting sls_base_hosts)",
    )


def request_compression(name: str | None) -> Compression:
    """``x-log-compresstype`` of a request body (absent: none)."""
    value = (name or "").strip().lower()
    table = {"": Compression.NONE, "lz4": Compression.LZ4, "zstd": Compression.ZSTD}
    table["deflate"] = Compression.DEFLATE
    if value not in table:
        raise ServiceError(ErrorCode.INVALID_COMPRESS_TYPE, f"unsupported compress type {name!r}")
    return table[value]


def response_compression(accept_encoding: str | None) -> Compression:
    """How to compress a pull or GetLogs answer for this ``Accept-Encoding``:
    lz4 or zstd when asked; never gzip (the SDK inflates it with zlib)."""
    tokens = {t.split(";")[0].strip().lower() for t in (accept_encoding or "").split(",")}
    if "lz4" in tokens:
        return Compression.LZ4
    if "zstd" in tokens:
        return Compression.ZSTD
    return Compression.NONE


def log_group_list(frames: bytes) -> bytes:
    """Stored frames as a ``LogGroupList``: field 1 wrapping each stored group."""
    parts = []
    for frame in iter_frames(frames, verify=False):
        raw = frame.raw()
        parts.append(length_delimited(0x0A, raw))
    return b"".join(parts)


def sls_response(
    content: bytes = b"",
    *,
    media_type: str = JSON_MEDIA_TYPE,
    headers: Mapping[str, str] | None = None,
    compression: Compression = Compression.NONE,
) -> Response:
    """A 200 with ``Content-Length``; compressed bodies carry ``x-log-compresstype``
    and ``x-log-bodyrawsize`` (never ``Content-Encoding``)."""
    all_headers = dict(headers or {})
    all_headers["x-log-bodyrawsize"] = str(len(content))
    if content and compression is not Compression.NONE:
        all_headers["x-log-compresstype"] = compression.wire_name
        content = compress(content, compression)
    return Response(content, media_type=media_type, headers=all_headers)


def json_response(
    document: Any,
    *,
    headers: Mapping[str, str] | None = None,
    compression: Compression = Compression.NONE,
) -> Response:
    body = json.dumps(document, ensure_ascii=False).encode()
    return sls_response(body, headers=headers, compression=compression)


def empty_response() -> Response:
    return Response(b"", headers={"content-length": "0"})


def error_response(error: ServiceError, request_id: str) -> Response:
    """``{"errorCode","errorMessage","requestId"}``; 5xx only for conditions a retry
    may clear (the SDK retries any 5xx ten times)."""
    body = {
        "errorCode": _CODE.get(error.code, error.code.value),
        "errorMessage": error.message,
        "requestId": request_id,
    }
    return Response(
        json.dumps(body, ensure_ascii=False).encode(),
        status_code=_STATUS.get(error.code, error.http_status),
        media_type=JSON_MEDIA_TYPE,
        headers={REQUEST_ID_HEADER: request_id},
    )


def sls_time(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def project_json(p: ProjectInfo) -> dict[str, Any]:
    return {
        "projectName": p.name,
        "description": p.description,
        "status": "Normal",
        "region": "logharbor",
        "owner": "",
        "createTime": sls_time(p.create_time),
        "lastModifyTime": sls_time(p.update_time),
        "resourceGroupId": "",
        "dataRedundancyType": "LRS",
    }


def logstore_json(ls: LogstoreInfo) -> dict[str, Any]:
    return {
        "logstoreName": ls.name,
        "ttl": ls.ttl,
        "shardCount": ls.shard_count,
        "enable_tracking": False,
        "appendMeta": False,
        "autoSplit": ls.auto_split,
        "maxSplitShard": ls.max_split_shard,
        "telemetryType": "",
        "createTime": ls.create_time,
        "lastModifyTime": ls.update_time,
    }


def shard_json(s: ShardInfo) -> dict[str, Any]:
    return {
        "shardID": s.shard_id,
        "status": s.status.value,
        "inclusiveBeginKey": s.begin_key,
        "exclusiveEndKey": s.end_key,
        "createTime": s.create_time,
    }


def sls_value(value: Any) -> str:
    """A query result value the way SLS returns every value: as a string."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)
