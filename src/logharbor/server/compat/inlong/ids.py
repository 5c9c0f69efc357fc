"""Numeric InLong ids: binary frames without extField 0x4 name their group and
stream by ``groupIdNum`` / ``streamIdNum`` (uint16, 0 = none), which DataProxy
maps to ids by configuration.  LogHarbor reads that mapping from the setting
``inlong_numeric_ids``, a comma-separated list of

- ``<groupIdNum>=<groupId>``, e.g. ``1=shop_web``;
- ``<groupIdNum>.<streamIdNum>=<streamId>``, e.g. ``1.1=access``.

A frame so addressed is then stored exactly as if it had carried
``groupId=shop_web&streamId=access``: same project, logstore and tags.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from ....engine.mapping import inlong_names, inlong_project
from ....protocol.codec import parse_decimal
from ....protocol.errors import ServiceError
from ...config import ConfigError
from .codes import DataProxyErrCode, Rejected

MAX_ID_NUM = 0xFFFF
_Key = TypeVar("_Key", int, tuple[int, int])


class NumericIds:
    """``groupIdNum`` → group id, (``groupIdNum``, ``streamIdNum``) → stream id."""

    def __init__(
        self,
        groups: Mapping[int, str] | None = None,
        streams: Mapping[tuple[int, int], str] | None = None,
    ) -> None:
        self.groups = dict(groups or {})
        self.streams = dict(streams or {})

    @classmethod
    def parse(cls, text: str) -> NumericIds:
        """The mapping of an ``inlong_numeric_ids`` setting; ``ConfigError`` saying
        which entry is wrong."""
        try:
            return cls(*_tables(text))
        except ValueError as exc:
            raise ConfigError(f"inlong_numeric_ids: {exc}") from None

    def resolve(
        self, group_num: int, stream_num: int, group_id: str, stream_id: str
    ) -> tuple[str, str]:
        """The group and stream ids of a frame addressed by number; ``group_id`` and
        ``stream_id`` are its attributes, which must agree when present."""
        if group_num == 0:
            raise Rejected(
                DataProxyErrCode.MISS_REQUIRED_GROUPID_ARGUMENT,
                "groupIdNum is 0 and extField lacks 0x4 (ids as attributes)",
            )
        configured_group = self.groups.get(group_num)
        if configured_group is None:
            raise Rejected(
                DataProxyErrCode.GROUPID_OR_STREAMID_NOT_CONFIGURE,
                f"groupIdNum {group_num} is not configured; map it in inlong_numeric_ids, or "
                "send the ids as attributes (extField 0x4)",
            )
        if stream_num == 0:
            raise Rejected(DataProxyErrCode.MISS_REQUIRED_STREAMID_ARGUMENT, "streamIdNum is 0")
        configured_stream = self.streams.get((group_num, stream_num))
        if configured_stream is None:
            raise Rejected(
                DataProxyErrCode.GROUPID_OR_STREAMID_NOT_CONFIGURE,
                f"streamIdNum {stream_num} of groupIdNum {group_num} is not configured; map "
                f"it in inlong_numeric_ids as {group_num}.{stream_num}=<streamId>",
            )
        for given, configured in ((group_id, configured_group), (stream_id, configured_stream)):
            if given and given != configured:
                raise Rejected(
                    DataProxyErrCode.GROUPID_OR_STREAMID_INCONSTANT,
                    f"{given!r} in the attributes but {configured!r} by number",
                )
        return configured_group, configured_stream


def _tables(text: str) -> tuple[dict[int, str], dict[tuple[int, int], str]]:
    """The group and stream tables of the setting; ``ValueError`` on a bad entry."""
    groups: dict[int, str] = {}
    streams: dict[tuple[int, int], str] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        key, sep, name = (part.strip() for part in entry.partition("="))
        numbers = [_id_number(number, entry) for number in key.split(".")]
        if not sep or not name or len(numbers) > 2:
            raise ValueError(f"{entry!r} is not <groupIdNum>[.<streamIdNum>]=<id>")
        if len(numbers) == 1:
            _put(groups, numbers[0], name, entry)
        else:
            _put(streams, (numbers[0], numbers[1]), name, entry)
    try:
        for group_id in groups.values():
            inlong_project(group_id)
        for (group_num, _), stream_id in streams.items():
            if group_num not in groups:
                raise ValueError(f"stream {stream_id!r}: group number {group_num} has no id")
            inlong_names(groups[group_num], stream_id)
    except ServiceError as exc:
        raise ValueError(exc.message) from None
    return groups, streams


def _id_number(text: str, entry: str) -> int:
    number = parse_decimal(text, max_digits=5)
    if number is None or not 0 < number <= MAX_ID_NUM:
        raise ValueError(
            f"{entry!r}: ids are numbered 1..{MAX_ID_NUM}, as in 1=group or 1.2=stream"
        )
    return number


def _put(table: dict[_Key, str], key: _Key, name: str, entry: str) -> None:
    if key in table:
        raise ValueError(f"{entry!r}: that number is mapped twice")
    table[key] = name
