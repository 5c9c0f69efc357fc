"""The Volcengine TLS protobuf schema of log groups (../shared/specs/tls.md §2).

Wire-different from LogHarbor's SLS-shaped schema (``schema.py``)::

    message LogContent { string Key = 1; string Value = 2; }
    message Log { int64 Time = 1; repeated LogContent Contents = 2; fixed32 TimeNs = 3; }
    message LogTag { string Key = 1; string Value = 2; }
    message LogGroup { repeated Log Logs = 1; string Source = 2; repeated LogTag LogTags = 3;
                       string FileName = 4; string ContextFlow = 5; }
    message LogGroupList { repeated LogGroup LogGroups = 1; }

    // the answer of ConsumeOriginalLogs: Data is a compressed LogGroupList
    message RawLogGroupList { int32 OriginLen = 1; int64 LogArriveTime = 2;
                              string CompressType = 3; string Cursor = 4; bytes Data = 5; }
    message RawLogGroupListList { repeated RawLogGroupList RawLogGroupLists = 1; }

Built as proto2 with ``optional`` fields (the same bytes on the wire) so that the
presence of ``TimeNs`` is known.  Content values are ``bytes``: values that are
not valid UTF-8 pass through unchanged.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F: Any = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "logharbor.tls"


def _field(name: str, number: int, ftype: int, label: int, type_name: str = "") -> Any:
    field = _F(name=name, number=number, type=ftype, label=label)
    if type_name:
        field.type_name = type_name
    return field


def _build() -> descriptor_pb2.FileDescriptorProto:
    opt, rep = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    string, data, msg = _F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_MESSAGE
    fdp = descriptor_pb2.FileDescriptorProto(
        name="logharbor/tls/log.proto", package=_PACKAGE, syntax="proto2"
    )
    content = fdp.message_type.add(name="LogContent")
    content.field.extend([_field("Key", 1, string, opt), _field("Value", 2, data, opt)])
    log = fdp.message_type.add(name="Log")
    log.field.extend(
        [
            _field("Time", 1, _F.TYPE_INT64, opt),
            _field("Contents", 2, msg, rep, f".{_PACKAGE}.LogContent"),
            _field("TimeNs", 3, _F.TYPE_FIXED32, opt),
        ]
    )
    tag = fdp.message_type.add(name="LogTag")
    tag.field.extend([_field("Key", 1, string, opt), _field("Value", 2, string, opt)])
    group = fdp.message_type.add(name="LogGroup")
    group.field.extend(
        [
            _field("Logs", 1, msg, rep, f".{_PACKAGE}.Log"),
            _field("Source", 2, string, opt),
            _field("LogTags", 3, msg, rep, f".{_PACKAGE}.LogTag"),
            _field("FileName", 4, string, opt),
            _field("ContextFlow", 5, string, opt),
        ]
    )
    group_list = fdp.message_type.add(name="LogGroupList")
    group_list.field.append(_field("LogGroups", 1, msg, rep, f".{_PACKAGE}.LogGroup"))
    raw_list = fdp.message_type.add(name="RawLogGroupList")
    raw_list.field.extend(
        [
            _field("OriginLen", 1, _F.TYPE_INT32, opt),
            _field("LogArriveTime", 2, _F.TYPE_INT64, opt),
            _field("CompressType", 3, string, opt),
            _field("Cursor", 4, string, opt),
            _field("Data", 5, data, opt),
        ]
    )
    raw_lists = fdp.message_type.add(name="RawLogGroupListList")
    raw_lists.field.append(_field("RawLogGroupLists", 1, msg, rep, f".{_PACKAGE}.RawLogGroupList"))
    return fdp


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_build())


def _message(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.{name}"))


TlsLog: Any = _message("Log")
TlsLogGroup: Any = _message("LogGroup")
TlsLogGroupList: Any = _message("LogGroupList")
TlsRawLogGroupList: Any = _message("RawLogGroupList")
TlsRawLogGroupListList: Any = _message("RawLogGroupListList")

__all__ = [
    "TlsLog",
    "TlsLogGroup",
    "TlsLogGroupList",
    "TlsRawLogGroupList",
    "TlsRawLogGroupListList",
]
