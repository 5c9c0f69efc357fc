"""Context queries for the SLS and TLS facades: where a log is, in the ids those
protocols hand out with search results, and the logs around it.

A log is found by its shard, the position of its log group in the shard and its
index in the group.  Both protocols name the log group with one string (SLS
``__tag__:__pack_id__``, TLS ``__context_flow__``) and the log by a second part (SLS
``__pack_meta__``, TLS ``__package_offset__``); the log group id is
``<shard, 16 hex digits>-<position, hex>``, the shape of an SLS pack id.

Context is the neighbourhood in the shard, in the order the logs were stored: the
logs written just before and after the log into the same shard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...engine import Engine
from ...engine.index.query import LogRow
from ..http import invalid_parameter

_GROUP_ID = re.compile(r"([0-9A-Fa-f]+)-([0-9A-Fa-f]+)")
_MAX_SHARD = 1 << 30
_MAX_POSITION = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class LogPlace:
    shard: int
    position: int
    index: int

    def __post_init__(self) -> None:
        if not (
            0 <= self.shard <= _MAX_SHARD
            and 0 <= self.position <= _MAX_POSITION
            and 0 <= self.index < _MAX_SHARD
        ):
            raise invalid_parameter(
                f"no log can be at shard {self.shard}, position {self.position}, index {self.index}"
            )

    @classmethod
    def of(cls, row: LogRow) -> LogPlace:
        return cls(row.shard, row.position, row.index)


def group_id(row: LogRow) -> str:
    """The id of the log group a log is in."""
    return f"{row.shard:016X}-{row.position:X}"


def looks_like_group_id(text: str) -> bool:
    """Whether ``text`` has the shape of a log group id (``<hex>-<hex>``)."""
    return _GROUP_ID.fullmatch(text) is not None


def parse_group_id(text: str, name: str) -> tuple[int, int]:
    """(shard, position) from a log group id; ``name`` is the parameter, for errors."""
    match = _GROUP_ID.fullmatch(text)
    if match is None or len(match[1]) > 16 or len(match[2]) > 16:
        raise invalid_parameter(f"{name} {text!r} is not a LogHarbor log group id (<hex>-<hex>)")
    return int(match[1], 16), int(match[2], 16)


@dataclass(frozen=True, slots=True)
class Surroundings:
    before: list[LogRow]  # oldest first
    log: LogRow
    after: list[LogRow]


def surroundings(
    engine: Engine, project: str, logstore: str, place: LogPlace, *, back: int, forward: int
) -> Surroundings:
    """The log at ``place`` with up to ``back`` logs before and ``forward`` after it;
    a place where no log is (expired, or never written) is a 400."""
    # the log itself is the first log after the place just before it
    _, first = engine.context(
        project, logstore, place.shard, place.position, place.index - 1, back=0, forward=1
    )
    if not first or LogPlace.of(first[0]) != place:
        raise invalid_parameter(
            f"no log at shard {place.shard}, position {place.position}, index {place.index} "
            "(expired, or never written)"
        )
    before, after = engine.context(
        project, logstore, place.shard, place.position, place.index, back=back, forward=forward
    )
    return Surroundings(before, first[0], after)


def has_more(engine: Engine, project: str, logstore: str, edge: LogRow, *, earlier: bool) -> bool:
    """Whether the shard holds a log before (``earlier``) or after ``edge``."""
    older, newer = engine.context(
        project,
        logstore,
        edge.shard,
        edge.position,
        edge.index,
        back=int(earlier),
        forward=int(not earlier),
    )
    return bool(older or newer)
