"""The wire helpers shared by the server and the SDK agree with protobuf itself."""

from __future__ import annotations

import pytest

from logharbor.protocol.codec import encode_varint, length_delimited
from logharbor.protocol.schema import Log, LogGroup, LogGroupList


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16_383, 16_384, 2**32 - 1])
def test_varint_matches_protobuf(value: int) -> None:
    log = Log(Time=value)
    assert log.SerializeToString() == b"\x08" + encode_varint(value)


def test_log_group_list_is_length_delimited_groups() -> None:
    groups = []
    for n in range(3):
        group = LogGroup(Topic="t" * (n * 100))
        group.Logs.add(Time=n).Contents.add(Key="k", Value="v" * (n * 70))
        groups.append(group)
    expected = LogGroupList(LogGroups=groups).SerializeToString()
    assert b"".join(length_delimited(0x0A, g.SerializeToString()) for g in groups) == expected
