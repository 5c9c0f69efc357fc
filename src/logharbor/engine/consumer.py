"""Consumer groups: membership, shard assignment, checkpoints and lag.

One coordinator serves every facade (native, SLS, TLS).  A group belongs to a
project and reads one or more logstores; its members heartbeat, and each
heartbeat answers with the shards that member should hold.

Assignment (checked on every heartbeat, at the engine clock's time):

1. A member is live while its last heartbeat is at most ``timeout`` seconds old.
   There is no "leave": a stopped member times out.
2. The eligible shards are those not *finished*; with ``in_order``, also only
   those whose parents are all finished.  A shard is finished when it is
   readonly and either the group's checkpoint reached its end, or a member
   fetched at its end (without this second rule a group that starts at "end"
   would never release the children of a split), or it keeps no data.
3. Quotas: live members sorted by name; member *i* of *m* gets ⌊n/m⌋ shards,
   plus one if *i* < n mod m.  Counts therefore differ by at most one.
4. A member over its quota has its excess marked *releasing*: it is no longer in
   that member's answers, and moves only once released.  Members that report the
   shards they hold (SLS) release a shard by leaving it out of their heartbeat;
   members that do not (TLS) are fenced instead: their fetches of a shard they no
   longer own are refused.  An expired member releases everything.
5. A member under its quota takes free eligible shards that no other live member
   still reports holding.  Shards move only when needed.
6. A reporting member that leaves a shard out of its heartbeat has let go of it.
   A member that stops calls ``leave``: its shards are free at once.

After the coordinator starts (a server restart), nobody's holdings are known:
for one group timeout, members keep only the shards they report and free shards
are handed out only when no live member could still hold them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..protocol.errors import ErrorCode, ServiceError
from .types import NANOS_PER_SECOND, Clock, Nanos, Position, ShardId, ShardInfo, ShardStatus

ShardRef = tuple[str, ShardId]  # (logstore, shard id)

MIN_TIMEOUT = 1
MAX_TIMEOUT = 86_400


@dataclass(frozen=True, slots=True)
class ConsumerGroupInfo:
    project: str
    scope: str  # the logstore of a per-logstore group, "" for a project-level group
    name: str
    logstores: tuple[str, ...]
    timeout: int  # seconds
    in_order: bool
    create_time: int
    update_time: int


@dataclass(frozen=True, slots=True)
class Checkpoint:
    logstore: str
    shard_id: ShardId
    position: Position | None  # None: no checkpoint yet
    consumer: str
    update_time: int  # seconds; 0 when there is no checkpoint


@dataclass(slots=True)
class _Member:
    last_seen: Nanos
    reported: frozenset[ShardRef] | None  # None: this member does not report holdings


@dataclass(slots=True)
class _GroupState:
    members: dict[str, _Member] = field(default_factory=dict)
    owner: dict[ShardRef, str] = field(default_factory=dict)
    # shards their owner must give up; True once an answer told the owner so
    releasing: dict[ShardRef, bool] = field(default_factory=dict)
    fetched_end: set[ShardRef] = field(default_factory=set)


MAX_MEMBERS = 1024  # live consumers in one group


@dataclass(frozen=True, slots=True)
class ShardView:
    """What the coordinator needs to know of a shard."""

    ref: ShardRef
    status: ShardStatus
    parents: tuple[ShardId, ...]
    begin: Position
    end: Position


GroupKey = tuple[str, str, str]  # (project, scope, name)


class Coordinator:
    """In-memory assignment state; groups and checkpoints are stored by the engine."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._states: dict[GroupKey, _GroupState] = {}

    def forget(self, key: GroupKey) -> None:
        with self._lock:
            self._states.pop(key, None)

    def _state(self, key: GroupKey) -> _GroupState:
        return self._states.setdefault(key, _GroupState())

    def heartbeat(
        self,
        group: ConsumerGroupInfo,
        consumer: str,
        held: Sequence[ShardRef] | None,
        shards: list[ShardView],
        checkpoints: dict[ShardRef, Position],
    ) -> list[ShardRef]:
        """Record a heartbeat; answer the shards ``consumer`` should hold."""
        now = self._clock()
        key = (group.project, group.scope, group.name)
        with self._lock:
            state = self._state(key)
            if consumer not in state.members:
                limit = group.timeout * NANOS_PER_SECOND
                alive = sum(1 for m in state.members.values() if now - m.last_seen <= limit)
                if alive >= MAX_MEMBERS:
                    raise ServiceError(
                        ErrorCode.INVALID_PARAMETER,
                        f"consumer group {group.name!r} already has {MAX_MEMBERS} live consumers",
                    )
            # only the group's shards: a claim of others is kept for the whole group
            # timeout, and a million of them took 200 MB a heartbeat
            known = {view.ref for view in shards}
            reported = frozenset(r for r in held if r in known) if held is not None else None
            state.members[consumer] = _Member(now, reported)
            self._expire(state, group, now)
            eligible = _eligible(group, shards, checkpoints, state.fetched_end)
            for ref in [r for r in state.owner if r not in eligible]:
                self._free(state, ref)
            for ref, told in list(state.releasing.items()):
                # only a heartbeat sent after the owner was told can confirm a release
                if (
                    told
                    and state.owner.get(ref) == consumer
                    and (reported is None or ref not in reported)
                ):
                    self._free(state, ref)
            if reported is not None:
                # every shard it owns was in an earlier answer: one it no longer
                # reports, it has let go of
                for ref in [r for r, o in state.owner.items() if o == consumer]:
                    if ref not in reported and ref not in state.releasing:
                        self._free(state, ref)
            live = sorted(state.members)
            quota = _quotas(live, len(eligible))
            for name in live:
                owned = sorted(
                    r for r, o in state.owner.items() if o == name and r not in state.releasing
                )
                for ref in owned[quota[name] :]:
                    if state.members[name].reported is None:
                        self._free(state, ref)  # fenced on fetch instead
                    else:
                        state.releasing[ref] = False
            in_recovery = (
                now - self._started < group.timeout * NANOS_PER_SECOND
                and (group.create_time + 1) * NANOS_PER_SECOND <= self._started
            )
            mine = {r for r, o in state.owner.items() if o == consumer and r not in state.releasing}
            held_elsewhere: set[ShardRef] = set()
            for name, member in state.members.items():
                if name != consumer and member.reported is not None:
                    held_elsewhere |= member.reported
            for ref in sorted(eligible):
                if len(mine) >= quota[consumer]:
                    break
                if ref in state.owner or ref in held_elsewhere:
                    continue
                if in_recovery and not (reported is not None and ref in reported):
                    continue  # a member we have not heard from since the restart may hold it
                state.owner[ref] = consumer
                mine.add(ref)
            for ref, owner in state.owner.items():
                if owner == consumer and ref in state.releasing:
                    state.releasing[ref] = True  # this answer tells the owner
            return sorted(mine)

    def _expire(self, state: _GroupState, group: ConsumerGroupInfo, now: Nanos) -> None:
        limit = group.timeout * NANOS_PER_SECOND
        for name in [n for n, m in state.members.items() if now - m.last_seen > limit]:
            del state.members[name]
        for ref in [r for r, o in state.owner.items() if o not in state.members]:
            Coordinator._free(state, ref)

    @staticmethod
    def _free(state: _GroupState, ref: ShardRef) -> None:
        state.owner.pop(ref, None)
        state.releasing.pop(ref, None)

    def owns(self, group: ConsumerGroupInfo, consumer: str, ref: ShardRef) -> bool:
        """Whether ``consumer`` is the live owner of ``ref`` (while it is releasing a
        shard it still owns it: it may fetch and save its checkpoint until it lets go)."""
        now = self._clock()
        with self._lock:
            state = self._state((group.project, group.scope, group.name))
            self._expire(state, group, now)
            return state.owner.get(ref) == consumer

    def leave(self, group: ConsumerGroupInfo, consumer: str) -> None:
        """A member stops: its shards are free at once (it saved its checkpoints)."""
        with self._lock:
            state = self._state((group.project, group.scope, group.name))
            state.members.pop(consumer, None)
            for ref in [r for r, o in state.owner.items() if o == consumer]:
                self._free(state, ref)

    def record_fetch(
        self, group: ConsumerGroupInfo, consumer: str, shard: ShardView, position: Position
    ) -> None:
        """A member fetched ``shard`` at ``position``; at a readonly shard's end, that
        finishes the shard for ordered consumption."""
        if shard.status is ShardStatus.READONLY and position >= shard.end:
            with self._lock:
                state = self._state((group.project, group.scope, group.name))
                if state.owner.get(shard.ref) == consumer:
                    state.fetched_end.add(shard.ref)

    def members(self, group: ConsumerGroupInfo) -> dict[str, list[ShardRef]]:
        """Live members and the shards each holds."""
        now = self._clock()
        with self._lock:
            state = self._state((group.project, group.scope, group.name))
            self._expire(state, group, now)
            return {
                name: sorted(r for r, o in state.owner.items() if o == name)
                for name in sorted(state.members)
            }


def _finished(
    view: ShardView, checkpoints: dict[ShardRef, Position], fetched_end: set[ShardRef]
) -> bool:
    if view.status is not ShardStatus.READONLY:
        return False
    return (
        checkpoints.get(view.ref, -1) >= view.end
        or view.ref in fetched_end
        or view.begin >= view.end
    )


def _eligible(
    group: ConsumerGroupInfo,
    shards: list[ShardView],
    checkpoints: dict[ShardRef, Position],
    fetched_end: set[ShardRef],
) -> set[ShardRef]:
    finished = {v.ref for v in shards if _finished(v, checkpoints, fetched_end)}
    known = {v.ref for v in shards}
    eligible = set()
    for view in shards:
        if view.ref in finished:
            continue
        if group.in_order:
            parents = [(view.ref[0], p) for p in view.parents]
            if any(p in known and p not in finished for p in parents):
                continue
        eligible.add(view.ref)
    return eligible


def _quotas(live: list[str], shard_count: int) -> dict[str, int]:
    if not live:
        return {}
    base, extra = divmod(shard_count, len(live))
    return {name: base + (1 if i < extra else 0) for i, name in enumerate(live)}


def shard_views(
    logstore: str, infos: list[ShardInfo], bounds: Callable[[ShardId], tuple[Position, Position]]
) -> list[ShardView]:
    views = []
    for info in infos:
        begin, end = bounds(info.shard_id)
        views.append(ShardView((logstore, info.shard_id), info.status, info.parents, begin, end))
    return views


def check_timeout(timeout: object) -> int:
    if (
        not isinstance(timeout, int)
        or isinstance(timeout, bool)
        or not (MIN_TIMEOUT <= timeout <= MAX_TIMEOUT)
    ):
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            f"timeout must be an integer number of seconds from {MIN_TIMEOUT} to {MAX_TIMEOUT}",
        )
    return timeout
