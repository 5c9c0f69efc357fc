"""The SLS-shaped protobuf schema of a log group, built at import time.

The descriptor is assembled in code instead of shipping protoc output, so the
module works with every protobuf runtime from 4.25 on (generated code is tied
to the protoc version that produced it).  The schema is wire-identical to the
one the SLS SDK speaks (../shared/specs/sls.md §4; TLS uses other field numbers, see
``tls_schema``)::

    message Log {
      required uint32 Time = 1;              // seconds since the epoch
      message Content { required string Key = 1; required string Value = 2; }
      repeated Content Contents = 2;
      optional fixed32 Time_ns = 4;          // nanosecond part, 0..999999999
    }
    message LogTag { required string Key = 1; required string Value = 2; }
    message LogGroup {
      repeated Log Logs = 1; optional string Reserved = 2; optional string Topic = 3;
      optional string Source = 4; optional string MachineUUID = 5; repeated LogTag LogTags = 6;
    }
    message LogGroupList { repeated LogGroup LogGroups = 1; }

``RawLogGroup`` is the same schema with ``bytes`` values: it parses content
values that are not valid UTF-8 (SLS ``put_log_raw`` sends such values).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F: Any = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, ftype: int, label: int, type_name: str = "") -> Any:
    field = _F(name=name, number=number, type=ftype, label=label)
    if type_name:
        field.type_name = type_name
    return field


def _build_file(package: str, value_type: int) -> descriptor_pb2.FileDescriptorProto:
    req, opt, rep = _F.LABEL_REQUIRED, _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    string, msg = _F.TYPE_STRING, _F.TYPE_MESSAGE
    fdp = descriptor_pb2.FileDescriptorProto(
        name=f"{package.replace('.', '/')}/log.proto", package=package, syntax="proto2"
    )
    log = fdp.message_type.add(name="Log")
    content = log.nested_type.add(name="Content")
    content.field.extend([_field("Key", 1, string, req), _field("Value", 2, value_type, req)])
    log.field.extend(
        [
            _field("Time", 1, _F.TYPE_UINT32, req),
            _field("Contents", 2, msg, rep, f".{package}.Log.Content"),
            _field("Time_ns", 4, _F.TYPE_FIXED32, opt),
        ]
    )
    tag = fdp.message_type.add(name="LogTag")
    tag.field.extend([_field("Key", 1, string, req), _field("Value", 2, string, req)])
    group = fdp.message_type.add(name="LogGroup")
    group.field.extend(
        [
            _field("Logs", 1, msg, rep, f".{package}.Log"),
            _field("Reserved", 2, string, opt),
            _field("Topic", 3, string, opt),
            _field("Source", 4, string, opt),
            _field("MachineUUID", 5, string, opt),
            _field("LogTags", 6, msg, rep, f".{package}.LogTag"),
        ]
    )
    group_list = fdp.message_type.add(name="LogGroupList")
    group_list.field.append(_field("LogGroups", 1, msg, rep, f".{package}.LogGroup"))
    return fdp


_POOL = descriptor_pool.DescriptorPool()


def _classes(package: str, value_type: int) -> dict[str, Any]:
    file_desc = _POOL.Add(_build_file(package, value_type))
    del file_desc
    return {
        name: message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{package}.{name}"))
        for name in ("Log", "LogTag", "LogGroup", "LogGroupList")
    }


_TEXT = _classes("logharbor.v1", _F.TYPE_STRING)
_RAW = _classes("logharbor.v1.raw", _F.TYPE_BYTES)

Log: Any = _TEXT["Log"]
LogTag: Any = _TEXT["LogTag"]
LogGroup: Any = _TEXT["LogGroup"]
LogGroupList: Any = _TEXT["LogGroupList"]
RawLogGroup: Any = _RAW["LogGroup"]
RawLogGroupList: Any = _RAW["LogGroupList"]

__all__ = ["Log", "LogGroup", "LogGroupList", "LogTag", "RawLogGroup", "RawLogGroupList"]
