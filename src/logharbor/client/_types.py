"""Type aliases the SDK's public signatures share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Literal, TypeAlias

from ..protocol.codec import Compression

#: Ordered ``(key, value)`` pairs, or a mapping (whose order is kept).
PairsInput: TypeAlias = Mapping[str, str] | Sequence[tuple[str, str]]

#: Where a cursor should point: the shard's first or next log group, or the first
#: log group received at or after a time (Unix seconds, or a datetime).
CursorStart: TypeAlias = Literal["begin", "end"] | int | float | datetime

#: A compression, by member or by its wire name.
CompressionInput: TypeAlias = Compression | Literal["none", "lz4", "zstd", "deflate"]

#: The status of a shard: ``readwrite`` takes writes, ``readonly`` was split or merged.
ShardStatus: TypeAlias = Literal["readwrite", "readonly"]
