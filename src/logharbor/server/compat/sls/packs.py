"""SLS pack ids and pack meta: what ``get_context_logs`` takes to find a log.

A search whose query ends in ``| with_pack_meta`` returns, with each log, the
``__tag__:__pack_id__`` of its log group and its ``__pack_meta__`` (as SLS does; the
SDK's context example reads both).  A pack id a client wrote as a ``__pack_id__``
tag (the Java producer and Logtail do) is returned as it is; other log groups get
LogHarbor's log group id.  ``__pack_meta__`` is ``<shard>|<cursor>|<index in the log
group>`` and is what finds the log; the pack id is only checked for its shape.
"""

from __future__ import annotations

import re

from ....engine.index.query import LogRow, split_query
from ....protocol.codec import CodecError, decode_cursor, encode_cursor
from ...http import invalid_parameter
from ..context import LogPlace, group_id, looks_like_group_id

PACK_ID = "__tag__:__pack_id__"
PACK_META = "__pack_meta__"
MAX_CONTEXT_LINES = 100
_WITH_PACK_META = re.compile(r"\|\s*with_pack_meta\s*$", re.IGNORECASE)
_PACK_META = re.compile(r"([0-9]{1,10})\|([^|]+)\|([0-9]{1,10})")


def split_with_pack_meta(query: str) -> tuple[str, bool]:
    """The query without a final ``| with_pack_meta`` stage, and whether it had one."""
    stripped = _WITH_PACK_META.sub("", query)
    if stripped == query:
        return query, False
    if split_query(stripped)[1] is not None:
        raise invalid_parameter("with_pack_meta applies to logs, not to SQL results")
    return stripped, True


def pack_fields(row: LogRow) -> dict[str, str]:
    """The pack id and pack meta of a log (the pack id unless one is in its tags)."""
    return {
        PACK_ID: dict(row.tags).get("__pack_id__", group_id(row)),
        PACK_META: f"{row.shard}|{encode_cursor(row.position)}|{row.index}",
    }


def parse_pack(pack_id: str, pack_meta: str) -> LogPlace:
    """The log a pack id and pack meta point at."""
    if not looks_like_group_id(pack_id):
        raise invalid_parameter(f"pack_id {pack_id!r} is not a pack id (<hex>-<hex>)")
    match = _PACK_META.fullmatch(pack_meta)
    if match is None:
        raise invalid_parameter(f"pack_meta {pack_meta!r} is not <shard>|<cursor>|<index>")
    try:
        position = decode_cursor(match[2])
    except CodecError:
        raise invalid_parameter(f"pack_meta {pack_meta!r} has no valid cursor") from None
    return LogPlace(int(match[1]), position, int(match[3]))
