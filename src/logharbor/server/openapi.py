"""The OpenAPI 3.1 document of the native API (served at /api/v1/openapi.json).

Written out here rather than derived, so that it carries the descriptions a
user needs; a test checks that every route of the app is in it and vice versa.
"""

from __future__ import annotations

from typing import Any

from .._version import __version__

_LS = "/api/v1/projects/{project}/logstores/{logstore}"
_SHARD = _LS + "/shards/{shard}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param(
    name: str, where: str, schema: dict[str, Any], description: str, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "schema": schema,
        "description": description,
    }


_STR = {"type": "string"}
_INT = {"type": "integer"}
_PROJECT = _param("project", "path", _STR, "Project name")
_LOGSTORE = _param("logstore", "path", _STR, "Logstore name")
_SHARD_ID = _param("shard", "path", _INT, "Shard id")
_PAGING = [
    _param("offset", "query", {"type": "integer", "minimum": 0, "default": 0}, "Items to skip"),
    _param(
        "size",
        "query",
        {"type": "integer", "minimum": 0, "maximum": 500, "default": 100},
        "Items to return",
    ),
]
_ERRORS = {
    "4XX": {
        "description": "Client error",
        "content": {"application/json": {"schema": _ref("Error")}},
    },
    "5XX": {
        "description": "Server error (retry)",
        "content": {"application/json": {"schema": _ref("Error")}},
    },
}


def _op(
    summary: str,
    response: dict[str, Any],
    *,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": response, **_ERRORS}}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    return op


def _schemas() -> dict[str, Any]:
    def obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
        return {"type": "object", "properties": props, "required": required or []}

    shard_list = obj({"shards": {"type": "array", "items": _ref("Shard")}})
    return {
        "Error": obj(
            {"errorCode": _STR, "errorMessage": _STR, "requestId": _STR},
            ["errorCode", "errorMessage", "requestId"],
        ),
        "Project": obj({"name": _STR, "description": _STR, "createTime": _INT, "updateTime": _INT}),
        "Logstore": obj(
            {
                "project": _STR,
                "name": _STR,
                "ttl": _INT,
                "shardCount": _INT,
                "autoSplit": {"type": "boolean"},
                "maxSplitShard": _INT,
                "createTime": _INT,
                "updateTime": _INT,
            }
        ),
        "Shard": obj(
            {
                "shardId": _INT,
                "status": {"enum": ["readwrite", "readonly"]},
                "beginKey": _STR,
                "endKey": _STR,
                "createTime": _INT,
                "parents": {"type": "array", "items": _INT},
                "children": {"type": "array", "items": _INT},
            }
        ),
        "ShardList": shard_list,
        "JsonLogGroup": obj(
            {
                "topic": _STR,
                "source": _STR,
                "tags": {"type": "object", "additionalProperties": _STR},
                "logs": {
                    "type": "array",
                    "minItems": 1,
                    "items": obj(
                        {
                            "time": {"type": "number", "description": "Unix seconds"},
                            "time_ns": {"type": "integer", "description": "Unix nanoseconds"},
                            "contents": {
                                "oneOf": [
                                    {"type": "object", "additionalProperties": _STR},
                                    {"type": "array", "items": {"type": "array", "items": _STR}},
                                ]
                            },
                        }
                    ),
                },
            },
            ["logs"],
        ),
        "PutResult": obj({"shardId": _INT, "cursor": _STR, "logCount": _INT}),
    }


def _search_paths(params: list[dict[str, Any]]) -> dict[str, Any]:
    ok = _json({"type": "object"})
    body = {"application/json": {"schema": {"type": "object"}}}
    query_body = {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "query": _STR,
                    "from": {"type": "number"},
                    "to": {"type": "number"},
                    "fromNs": _INT,
                    "toNs": _INT,
                    "line": _INT,
                    "offset": _INT,
                    "reverse": {"type": "boolean"},
                    "topic": _STR,
                    "interval": _INT,
                },
            }
        }
    }
    return {
        _LS + "/index": {
            "get": _op("Index configuration and index lag", ok, params=params),
            "post": _op(
                "Create the index (SLS IndexConfig JSON); indexes kept data too",
                ok,
                params=params,
                body=body,
            ),
            "put": _op("Replace the index configuration", ok, params=params, body=body),
            "delete": _op("Delete the index and its data", ok, params=params),
        },
        _LS + "/query": {
            "post": _op(
                "Search, optionally '| SQL', over [from, to)", ok, params=params, body=query_body
            )
        },
        _LS + "/histogram": {
            "post": _op("Matching logs per time bucket", ok, params=params, body=query_body)
        },
        _LS + "/context": {
            "get": _op(
                "Logs before and after a log in its shard",
                ok,
                params=[
                    *params,
                    _param("shard", "query", _INT, "Shard of the log", required=True),
                    _param("cursor", "query", _STR, "Cursor of its log group", required=True),
                    _param("index", "query", _INT, "Index of the log in its group"),
                    _param("back", "query", _INT, "Logs before (0-1000)"),
                    _param("forward", "query", _INT, "Logs after (0-1000)"),
                ],
            )
        },
    }


def _group_paths(base: str, scope: list[dict[str, Any]]) -> dict[str, Any]:
    """Consumer-group routes; under a logstore shards are ids, under a project
    ``{"logstore", "shardId"}`` objects."""
    group = _param("group", "path", _STR, "Consumer group name")
    params = [*scope, group]
    ok = _json({"type": "object"})
    body = {"application/json": {"schema": {"type": "object"}}}
    return {
        base: {
            "get": _op("List consumer groups", ok, params=scope),
            "post": _op(
                "Create a consumer group {name, timeout, inOrder[, logstores]}",
                ok,
                params=scope,
                body=body,
            ),
        },
        base + "/{group}": {
            "get": _op("Get a consumer group", ok, params=params),
            "patch": _op("Update timeout or inOrder", ok, params=params, body=body),
            "delete": _op("Delete a consumer group and its checkpoints", ok, params=params),
        },
        base + "/{group}/heartbeat": {
            "post": _op(
                "Heartbeat {consumer, shards held}; answers the shards to hold",
                ok,
                params=params,
                body=body,
            )
        },
        base + "/{group}/checkpoints": {
            "get": _op("Checkpoints of every shard ('' where none)", ok, params=params),
            "post": _op(
                "Save a checkpoint {shardId, cursor, consumer, force}",
                ok,
                params=params,
                body=body,
            ),
        },
        base + "/{group}/status": {
            "get": _op("Live members, their shards, and every shard's lag", ok, params=params)
        },
    }


def openapi_document() -> dict[str, Any]:
    project_body = {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"name": _STR, "description": _STR},
                "required": ["name"],
            }
        }
    }
    logstore_body = {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": _STR,
                    "ttl": {"type": "integer", "minimum": 1, "maximum": 3650},
                    "shardCount": {"type": "integer", "minimum": 1, "maximum": 256},
                    "autoSplit": {"type": "boolean"},
                    "maxSplitShard": _INT,
                },
            }
        }
    }
    logstore_patch = {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "ttl": _INT,
                    "autoSplit": {"type": "boolean"},
                    "maxSplitShard": _INT,
                },
            }
        }
    }
    ls_params = [_PROJECT, _LOGSTORE]
    shard_params = [_PROJECT, _LOGSTORE, _SHARD_ID]
    ok = _json({"type": "object"})
    cursor_param = _param("cursor", "query", _STR, "Cursor to read from", required=True)
    paths: dict[str, Any] = {
        "/healthz": {"get": _op("Liveness", ok)},
        "/metrics": {"get": _op("Prometheus metrics", {"description": "Prometheus text"})},
        "/api/v1/openapi.json": {"get": _op("This document", ok)},
        "/api/v1/projects": {
            "get": _op("List projects", ok, params=_PAGING),
            "post": _op("Create a project", _json(_ref("Project")), body=project_body),
        },
        "/api/v1/projects/{project}": {
            "get": _op("Get a project", _json(_ref("Project")), params=[_PROJECT]),
            "patch": _op(
                "Update a project's description",
                _json(_ref("Project")),
                params=[_PROJECT],
                body=project_body,
            ),
            "delete": _op("Delete a project, its logstores and their data", ok, params=[_PROJECT]),
        },
        "/api/v1/projects/{project}/logstores": {
            "get": _op("List logstores", ok, params=[_PROJECT, *_PAGING]),
            "post": _op(
                "Create a logstore", _json(_ref("Logstore")), params=[_PROJECT], body=logstore_body
            ),
        },
        _LS: {
            "get": _op("Get a logstore", _json(_ref("Logstore")), params=ls_params),
            "patch": _op(
                "Update ttl, autoSplit or maxSplitShard",
                _json(_ref("Logstore")),
                params=ls_params,
                body=logstore_patch,
            ),
            "delete": _op("Delete a logstore and its data", ok, params=ls_params),
        },
        _LS + "/logs": {
            "post": _op(
                "Write one log group; answered once it is durable",
                _json(_ref("PutResult")),
                params=[
                    *ls_params,
                    _param("hashKey", "query", _STR, "32 hex digits: route to its shard"),
                    _param(
                        "x-lh-compress-type",
                        "header",
                        {"enum": ["none", "lz4", "zstd", "deflate"]},
                        "Body compression",
                    ),
                    _param("x-lh-raw-size", "header", _INT, "Uncompressed size (required for lz4)"),
                ],
                body={
                    "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                    "application/json": {"schema": _ref("JsonLogGroup")},
                },
            )
        },
        _LS + "/shards": {"get": _op("List shards", _json(_ref("ShardList")), params=ls_params)},
        _SHARD + "/split": {
            "post": _op(
                "Split a readwrite shard at a hash key",
                _json(_ref("ShardList")),
                params=shard_params,
                body={
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["splitKey"],
                            "properties": {"splitKey": _STR},
                        }
                    }
                },
            )
        },
        _SHARD + "/merge": {
            "post": _op(
                "Merge a shard with the readwrite shard after it",
                _json(_ref("ShardList")),
                params=shard_params,
            )
        },
        _SHARD + "/cursor": {
            "get": _op(
                "Cursor at begin, end or a time",
                _json({"type": "object", "properties": {"cursor": _STR}}),
                params=[
                    *shard_params,
                    _param("from", "query", _STR, "begin, end or Unix seconds", required=True),
                ],
            )
        },
        _SHARD + "/cursor-time": {
            "get": _op(
                "Receive time of the log group at a cursor",
                _json({"type": "object", "properties": {"time": _INT, "timeNs": _INT}}),
                params=[*shard_params, cursor_param],
            )
        },
        _SHARD + "/logs": {
            "get": _op(
                "Pull log groups from a cursor",
                {
                    "description": "Stored frames (or JSON with format=json); next cursor in "
                    "x-lh-next-cursor",
                    "content": {
                        "application/x-logharbor-frames": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                        "application/json": {"schema": {"type": "object"}},
                    },
                },
                params=[
                    *shard_params,
                    cursor_param,
                    _param(
                        "count",
                        "query",
                        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                        "Log groups",
                    ),
                    _param("maxBytes", "query", _INT, "Stored bytes at most"),
                    _param("endCursor", "query", _STR, "Stop before this cursor"),
                    _param(
                        "wait",
                        "query",
                        {"type": "integer", "minimum": 0, "maximum": 30000},
                        "Long-poll milliseconds",
                    ),
                    _param("format", "query", {"enum": ["frames", "json"]}, "Body format"),
                    _param("consumerGroup", "query", _STR, "Fetch as a member of this group"),
                    _param("consumer", "query", _STR, "The member (with consumerGroup)"),
                ],
            )
        },
    }
    paths.update(_search_paths(ls_params))
    paths.update(_group_paths("/api/v1/projects/{project}/consumergroups", [_PROJECT]))
    paths.update(_group_paths(_LS + "/consumergroups", ls_params))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "LogHarbor native API",
            "version": __version__,
            "description": "See docs/api.md. Requests are signed with LH1-HMAC-SHA256.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"lh1": {"type": "apiKey", "in": "header", "name": "Authorization"}},
        },
        "security": [{"lh1": []}],
    }
