"""Building log groups for tests."""

from __future__ import annotations

from logharbor.engine import Limits, PreparedGroup, prepare_protobuf
from logharbor.protocol.codec import Compression, compress
from logharbor.protocol.schema import LogGroup


def log_group_bytes(
    *contents: dict[str, str],
    topic: str = "",
    source: str = "",
    time: int = 1_700_000_000,
    time_ns: int = 0,
    tags: dict[str, str] | None = None,
) -> bytes:
    group = LogGroup(Topic=topic, Source=source)
    for item in contents:
        log = group.Logs.add(Time=time, Time_ns=time_ns)
        for key, value in item.items():
            log.Contents.add(Key=key, Value=value)
    for key, value in (tags or {}).items():
        group.LogTags.add(Key=key, Value=value)
    return bytes(group.SerializeToString())


def prepared(
    *contents: dict[str, str], compression: Compression = Compression.LZ4, **kwargs: object
) -> PreparedGroup:
    raw = log_group_bytes(*contents, **kwargs)  # type: ignore[arg-type]
    return prepare_protobuf(compress(raw, compression), compression, len(raw), Limits())
