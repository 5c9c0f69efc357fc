"""How Volcengine TLS log groups map onto LogHarbor's, written down once.

A TLS ``LogGroup`` (``protocol.tls_schema``) becomes one LogHarbor log group:

- ``Source`` → ``Source``; ``LogTags`` → ``LogTags``, in order, after the tags below.
- ``FileName`` → a leading tag ``__path__`` (when not empty); ``ContextFlow`` → a
  tag ``__context_flow__`` (when not empty).
- each ``Log`` → a log with the same contents; its time is normalised to
  nanoseconds the way the TLS SDK normalises it: below 10¹⁰ seconds (plus
  ``TimeNs``), below 10¹⁵ milliseconds, below 10¹⁷ microseconds, else
  nanoseconds.  A time ≤ 0 becomes the receive time.
- TLS hands ``Log.Time`` back unchanged, so the unit of every log is kept: when
  any log is not in milliseconds, a tag ``__tls_time__`` holds one letter per log
  (``m`` ms, ``s`` s, ``S`` s with ``TimeNs``, ``u`` µs, ``n`` ns), or a single
  letter when all agree.  Log groups written through other APIs read back in
  milliseconds.

Reading back reverses this: the first ``__path__`` and ``__context_flow__`` tags
become ``FileName`` and ``ContextFlow``.  Unknown protobuf fields are not kept.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError

from ..protocol.codec import Compression, Frame, compress, iter_frames, length_delimited
from ..protocol.errors import ErrorCode, ServiceError
from ..protocol.schema import RawLogGroup
from ..protocol.tls_schema import TlsLogGroup, TlsLogGroupList
from .ingest import Limits, PreparedGroup, check_log_count, check_raw_size
from .types import NANOS_PER_SECOND, Nanos

PATH_TAG = "__path__"
CONTEXT_FLOW_TAG = "__context_flow__"
TIME_UNIT_TAG = "__tls_time__"
MAX_LOGS_PER_GROUP = 10_000
_MAX_NANOS = (1 << 32) * NANOS_PER_SECOND
# unit letter → (nanoseconds per unit); "S" is seconds with TimeNs
_UNITS = {"s": NANOS_PER_SECOND, "S": NANOS_PER_SECOND, "m": 1_000_000, "u": 1_000, "n": 1}


def _unit_of(time: int, has_time_ns: bool) -> str:
    if time < 10**10:
        return "S" if has_time_ns else "s"
    if time < 10**15:
        return "m"
    if time < 10**17:
        return "u"
    return "n"


def _invalid(message: str) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_LOG_GROUP, message)


def parse_tls_log_group_list(raw: bytes) -> list[Any]:
    """The log groups of a serialized TLS ``LogGroupList``, or a clear error."""
    message = TlsLogGroupList()
    try:
        message.ParseFromString(raw)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise _invalid(f"malformed LogGroupList protobuf: {exc}") from None
    groups = list(message.LogGroups)
    if not groups:
        raise _invalid("LogGroupList has no log groups")
    for index, group in enumerate(groups):
        if not group.Logs:
            raise _invalid(f"LogGroups[{index}] has no logs")
        if len(group.Logs) > MAX_LOGS_PER_GROUP:
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER,
                f"LogGroups[{index}] has more than {MAX_LOGS_PER_GROUP} logs",
            )
    return groups


def tls_to_prepared(source: Any, limits: Limits, *, now: Nanos) -> PreparedGroup:
    """One TLS ``LogGroup`` (parsed) as a LogHarbor log group ready for ``Engine.put``."""
    try:
        return _tls_to_prepared(source, limits, now=now)
    except UnicodeDecodeError:  # protobuf decodes strings lazily, on first access
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER, "a log group holds a string that is not UTF-8"
        ) from None


def _tls_to_prepared(source: Any, limits: Limits, *, now: Nanos) -> PreparedGroup:
    check_log_count(len(source.Logs), limits)
    out = RawLogGroup()
    if source.Source:
        out.Source = source.Source
    if source.FileName:
        out.LogTags.add(Key=PATH_TAG, Value=source.FileName)
    if source.ContextFlow:
        out.LogTags.add(Key=CONTEXT_FLOW_TAG, Value=source.ContextFlow)
    units = []
    for log in source.Logs:
        time = log.Time
        if time <= 0:
            unit, nanos = "n", now
        else:
            unit = _unit_of(time, log.HasField("TimeNs"))
            nanos = time * _UNITS[unit]
            if unit == "S":
                nanos += log.TimeNs % NANOS_PER_SECOND
        if nanos >= _MAX_NANOS:
            raise ServiceError(ErrorCode.INVALID_PARAMETER, f"log time {time} is out of range")
        units.append(unit)
        entry = out.Logs.add(Time=nanos // NANOS_PER_SECOND, Time_ns=nanos % NANOS_PER_SECOND)
        for content in log.Contents:
            entry.Contents.add(Key=content.Key, Value=content.Value)
    if any(u != "m" for u in units):
        marker = units[0] if len(set(units)) == 1 else "".join(units)
        out.LogTags.add(Key=TIME_UNIT_TAG, Value=marker)
    for tag in source.LogTags:
        out.LogTags.add(Key=tag.Key, Value=tag.Value)
    raw = out.SerializeToString()
    check_raw_size(len(raw), limits)
    return PreparedGroup(compress(raw, Compression.LZ4), Compression.LZ4, len(raw), len(units))


def _tls_group(raw: bytes) -> bytes:
    """A stored LogHarbor log group as serialized TLS ``LogGroup`` bytes."""
    group = RawLogGroup.FromString(raw)
    out = TlsLogGroup()
    if group.Source:
        out.Source = group.Source
    special: dict[str, str] = {}
    for tag in group.LogTags:
        if tag.Key in (PATH_TAG, CONTEXT_FLOW_TAG, TIME_UNIT_TAG) and tag.Key not in special:
            special[tag.Key] = tag.Value
        else:
            out.LogTags.add(Key=tag.Key, Value=tag.Value)
    if special.get(PATH_TAG):
        out.FileName = special[PATH_TAG]
    if special.get(CONTEXT_FLOW_TAG):
        out.ContextFlow = special[CONTEXT_FLOW_TAG]
    marker = special.get(TIME_UNIT_TAG, "m")
    for index, log in enumerate(group.Logs):
        unit = marker[index] if len(marker) == len(group.Logs) else marker[0]
        unit = unit if unit in _UNITS else "m"
        nanos = log.Time * NANOS_PER_SECOND + log.Time_ns
        entry = out.Logs.add(Time=nanos // _UNITS[unit])
        if unit == "S":
            entry.TimeNs = log.Time_ns
        for content in log.Contents:
            entry.Contents.add(Key=content.Key, Value=content.Value)
    data: bytes = out.SerializeToString()
    return data


def tls_group_list(frame: Frame) -> bytes:
    """One stored frame as a serialized TLS ``LogGroupList`` holding its log group."""
    return length_delimited(0x0A, _tls_group(frame.raw()))  # LogGroupList.LogGroups = 1


def frames_to_tls_list(frames: bytes) -> tuple[bytes, int]:
    """Stored frames as a serialized TLS ``LogGroupList`` and its log group count."""
    parts = [tls_group_list(frame) for frame in iter_frames(frames, verify=False)]
    return b"".join(parts), len(parts)
