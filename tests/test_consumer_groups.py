"""Consumer groups in the engine: membership, fair and safe assignment, checkpoints,
ordered consumption across splits, restarts.  Time is the engine's injected clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from groups import prepared
from logharbor.engine import Engine, EngineConfig, consumer
from logharbor.engine.types import NANOS_PER_SECOND
from logharbor.protocol.errors import ErrorCode, ServiceError

START = 1_800_000_000 * NANOS_PER_SECOND


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * NANOS_PER_SECOND)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def open_engine(path: Path, clock: Clock) -> Engine:
    return Engine(
        EngineConfig(ingest_workers=0, data_dir=path, clock=clock, retention_interval=3600)
    )


@pytest.fixture
def engine(tmp_path: Path, clock: Clock) -> Iterator[Engine]:
    eng = open_engine(tmp_path / "e", clock)
    eng.create_project("proj")
    yield eng
    eng.close()


def store(engine: Engine, shards: int, name: str = "ls") -> None:
    engine.create_logstore("proj", name, shard_count=shards)


def beat(
    engine: Engine, consumer: str, held: list[int] | None = None, group: str = "cg"
) -> list[int]:
    refs = None if held is None else [("ls", s) for s in held]
    return [s for _, s in engine.heartbeat("proj", group, consumer, refs, logstore="ls")]


def settle(engine: Engine, members: list[str], rounds: int = 4) -> dict[str, list[int]]:
    """Heartbeat every member a few times, each reporting what it was told to hold."""
    held: dict[str, list[int]] = {m: [] for m in members}
    for _ in range(rounds):
        for member in members:
            held[member] = beat(engine, member, held[member])
    return held


class TestGroups:
    def test_crud_and_errors(self, engine: Engine) -> None:
        store(engine, 2)
        info = engine.create_consumer_group("proj", "cg", logstore="ls", timeout=10)
        assert (info.timeout, info.in_order, info.logstores) == (10, False, ("ls",))
        with pytest.raises(ServiceError) as exc:
            engine.create_consumer_group("proj", "cg", logstore="ls", timeout=10)
        assert exc.value.code is ErrorCode.CONSUMER_GROUP_ALREADY_EXIST
        engine.update_consumer_group("proj", "cg", logstore="ls", timeout=20, in_order=True)
        (listed,) = engine.list_consumer_groups("proj", logstore="ls")
        assert (listed.timeout, listed.in_order) == (20, True)
        for bad in (0, -1, 10**9, "5"):
            with pytest.raises(ServiceError):
                engine.create_consumer_group("proj", "cg2", logstore="ls", timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(ServiceError) as exc:
            engine.create_consumer_group("proj", "cg3", logstore="nope", timeout=5)
        assert exc.value.code is ErrorCode.LOGSTORE_NOT_EXIST
        engine.delete_consumer_group("proj", "cg", logstore="ls")
        with pytest.raises(ServiceError) as exc:
            beat(engine, "c1")
        assert exc.value.code is ErrorCode.CONSUMER_GROUP_NOT_EXIST

    def test_deleting_the_logstore_deletes_its_groups(self, engine: Engine) -> None:
        store(engine, 1)
        engine.create_consumer_group("proj", "cg", logstore="ls", timeout=10)
        engine.delete_logstore("proj", "ls")
        store(engine, 1)
        assert engine.list_consumer_groups("proj", logstore="ls") == []


class TestAssignment:
    @pytest.mark.parametrize(("members", "shards"), [(2, 4), (3, 8), (3, 4), (5, 3)])
    def test_fair_split(self, engine: Engine, members: int, shards: int) -> None:
        store(engine, shards)
        engine.create_consumer_group("proj", "cg", logstore="ls", timeout=10)
        held = settle(engine, [f"c{i}" for i in range(members)])
        counts = sorted(len(h) for h in held.values())
        assert counts[-1] - counts[0] <= 1
        assert sorted(s for h in held.values() for s in h) == list(range(shards))

    def test_a_shard_moves_only_after_its_holder_released_it(self, engine: Engine) -> None:
        store(engine, 4)
        engine.create_consumer_group("proj", "cg", logstore="ls", timeout=10)
        assert beat(engine, "a", []) == [0, 1, 2, 3]
        assert beat(engine, "b", []) == []  # a still reports all four
        assert beat(engine, "a", [0, 1, 2, 3]) == [0, 1]  # told to release 2 and 3
        assert beat(engine, "b", []) == []  # a has not confirmed yet
        assert beat(engine, "a", [0, 1]) == [0, 1]  # released
        assert beat(engine, "b", []) == [2, 3]

    def test_a_member_claiming_shards_the_group_lacks_is_not_believed(self, engine: Engine) -> None:
        """Claims are kept for the whole group timeout: only the group's own shards
        count (a million claimed ones took 200 MB a heartbeat)."""
        store(engine, 2)
        engine.create_consumer_group("proj", "cg", logstore="ls", timeout=10)
        assert beat(engine, "a", list(range(100_000))) == [0, 1]
        assert beat(engine, "b", []) == []  # a still holds 0 and 1: they are real
        (state,) = engine.consumers._states.values()
        assert state.members["a"].reported == {("ls", 0), ("ls", 1)}  # all it keeps

    def test_a_group_has_at_most_max_members_live_consumers(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(consumer, "MAX_MEMBERS", 3)
        store(engine, 2)
        engine.create_consumer_group("proj", "cg", logstore="ls", timeout=10)
        for name in ("a", "b", "c"):
            beat(engine, name, [])
        with pytest.raises(ServiceError) as exc:
            beat(engine, "d", [])
        assert "3 live consumers" in exc.value.message
        beat(engine, "a", [])  # a member already in the group still beats

    def test_assignment_is_stable_when_a_member_joins(self, engine: Engine) -> None:
        store(engine, 6)
        engine.create_consumer_group("proj", "cg", logstore="ls", timeout=10)
        before = settle(engine, ["a", "b"])
        after = settle(engine, ["a", "b", "c"])
        assert set(after["a"]) <= set(before["a"]) and set(after["b"]) <= set(before["b"])
        assert len(after["c"]) == 2

    def test_expired_member_loses_its_shards(self, engine: Engine, clock: Clock) -> None:
        store(engine, 4)
        engine.create_consumer_group("proj", "cg", logstore="ls", timeout=5)
        held = settle(engine, ["a", "b"])
        assert len(held["a"]) == 2
        clock.advance(4)
        beat(engine, "b", held["b"])
        clock.advance(2)  # a: 6 s without a heartbeat, more than the timeout
        assert beat(engine, "b", held["b"]) == [0, 1, 2, 3]

    def test_members_that_do_not_report_are_fenced(self, engine: Engine) -> None:
        store(engine, 2)
        engine.create_consumer_group("proj", "cg", logstore="ls", timeout=10)
        assert beat(engine, "a") == [0, 1]
        engine.group_fetch("proj", "cg", "a", ("ls", 1), 0, logstore="ls")
        assert beat(engine, "b") == [1]  # no reports to wait for: moved at once...
        with pytest.raises(ServiceError) as exc:  # ...and the old holder is fenced
            engine.group_fetch("proj", "cg", "a", ("ls", 1), 0, logstore="ls")
        assert exc.value.code is ErrorCode.CONSUMER_NOT_MATCH
        assert beat(engine, "a") == [0]


class TestCheckpoints:
    def test_every_shard_has_an_entry_and_owners_are_checked(self, engine: Engine) -> None:
        store(engine, 2)
        engine.create_consumer_group("proj", "cg", logstore="ls", timeout=10)
        assert [
            (c.shard_id, c.position) for c in engine.get_checkpoints("proj", "cg", logstore="ls")
        ] == [(0, None), (1, None)]
        beat(engine, "a", [])
        for _ in range(3):
            engine.put("proj", "ls", prepared({"n": "x"}), hash_key="0" * 32).result()
        engine.update_checkpoint("proj", "cg", ("ls", 0), 2, "a", logstore="ls")
        with pytest.raises(ServiceError) as exc:
            engine.update_checkpoint("proj", "cg", ("ls", 0), 3, "intruder", logstore="ls")
        assert exc.value.code is ErrorCode.CONSUMER_NOT_MATCH
        engine.update_checkpoint("proj", "cg", ("ls", 0), 3, "intruder", force=True, logstore="ls")
        with pytest.raises(ServiceError) as exc:
            engine.update_checkpoint("proj", "cg", ("ls", 0), 99, "a", logstore="ls")
        assert exc.value.code is ErrorCode.INVALID_CURSOR
        saved = engine.get_checkpoints("proj", "cg", logstore="ls")[0]
        assert (saved.position, saved.consumer) == (3, "intruder")

    def test_lag(self, engine: Engine, clock: Clock) -> None:
        store(engine, 1)
        engine.create_consumer_group("proj", "cg", logstore="ls", timeout=10)
        for _ in range(5):
            engine.put("proj", "ls", prepared({"n": "x"})).result()
        clock.advance(30)
        engine.update_checkpoint("proj", "cg", ("ls", 0), 2, "a", force=True, logstore="ls")
        _members, (lag,) = engine.consumer_group_status("proj", "cg", logstore="ls")
        assert lag.behind_groups == 3 and lag.behind_seconds == pytest.approx(30)


class TestOrderedConsumption:
    def _split(self, engine: Engine, in_order: bool = True) -> None:
        store(engine, 1)
        engine.create_consumer_group("proj", "cg", logstore="ls", timeout=10, in_order=in_order)
        for _ in range(3):
            engine.put("proj", "ls", prepared({"n": "parent"})).result()
        engine.split_shard("proj", "ls", 0, "8" + "0" * 31)

    def test_children_wait_for_the_parent_checkpoint(self, engine: Engine) -> None:
        self._split(engine)
        assert beat(engine, "a", []) == [0]
        engine.update_checkpoint("proj", "cg", ("ls", 0), 2, "a", logstore="ls")
        assert beat(engine, "a", [0]) == [0]
        engine.update_checkpoint("proj", "cg", ("ls", 0), 3, "a", logstore="ls")
        assert beat(engine, "a", [0]) == [1, 2]  # parent drained: children, parent done

    def test_fetching_at_the_parent_end_also_drains_it(self, engine: Engine) -> None:
        self._split(engine)  # a group that starts at "end" never checkpoints the parent
        assert beat(engine, "a", []) == [0]
        engine.group_fetch("proj", "cg", "a", ("ls", 0), 3, logstore="ls")
        assert beat(engine, "a", [0]) == [1, 2]

    def test_without_order_children_come_at_once(self, engine: Engine) -> None:
        self._split(engine, in_order=False)
        assert beat(engine, "a", []) == [0, 1, 2]

    def test_merge_waits_for_both_parents(self, engine: Engine) -> None:
        store(engine, 2)
        engine.create_consumer_group("proj", "cg", logstore="ls", timeout=10, in_order=True)
        engine.put("proj", "ls", prepared({"n": "x"}), hash_key="0" * 32).result()
        engine.merge_shard("proj", "ls", 0)
        assert beat(engine, "a", []) == [0]  # shard 1 is empty: already drained
        engine.update_checkpoint("proj", "cg", ("ls", 0), 1, "a", logstore="ls")
        assert beat(engine, "a", [0]) == [2]


def test_project_level_group_over_several_logstores(engine: Engine) -> None:
    store(engine, 2, "one")
    store(engine, 1, "two")
    engine.create_consumer_group("proj", "multi", logstores=["one", "two"], timeout=10)
    answer = engine.heartbeat("proj", "multi", "a", [])
    assert answer == [("one", 0), ("one", 1), ("two", 0)]
    assert len(engine.get_checkpoints("proj", "multi")) == 3


def test_restart_keeps_checkpoints_and_does_not_double_assign(tmp_path: Path, clock: Clock) -> None:
    engine = open_engine(tmp_path / "e", clock)
    engine.create_project("proj")
    store(engine, 4)
    engine.create_consumer_group("proj", "cg", logstore="ls", timeout=10)
    held = settle(engine, ["a", "b"])
    owner_of_0 = "a" if 0 in held["a"] else "b"
    engine.update_checkpoint("proj", "cg", ("ls", 0), 0, owner_of_0, logstore="ls")
    engine.close()
    clock.advance(1)
    engine = open_engine(tmp_path / "e", clock)
    try:
        assert engine.get_checkpoints("proj", "cg", logstore="ls")[0].position == 0
        # a speaks first after the restart: it keeps what it holds, nothing more,
        # because b may still be consuming its own shards.
        assert beat(engine, "a", held["a"]) == held["a"]
        assert beat(engine, "b", held["b"]) == held["b"]
        clock.advance(11)  # the recovery window is one timeout; b has gone quiet
        assert beat(engine, "a", held["a"]) == [0, 1, 2, 3]
    finally:
        engine.close()


class TestLettingGo:
    def test_a_shard_left_out_of_a_heartbeat_is_free(self, engine: Engine) -> None:
        store(engine, 2)
        engine.create_consumer_group("proj", "cg", logstore="ls", timeout=10)
        held = settle(engine, ["a", "b"])
        assert held == {"a": [0], "b": [1]}
        assert beat(engine, "a", []) == [0]  # let go, and (still under quota) taken again
        assert beat(engine, "b", [1]) == [1]

    def test_leave_frees_shards_at_once(self, engine: Engine) -> None:
        store(engine, 4)
        engine.create_consumer_group("proj", "cg", logstore="ls", timeout=60)
        held = settle(engine, ["a", "b"])
        engine.leave_group("proj", "cg", "a", logstore="ls")
        assert beat(engine, "b", held["b"]) == [0, 1, 2, 3]  # no 60 s wait

    def test_the_owner_of_a_releasing_shard_may_still_checkpoint(self, engine: Engine) -> None:
        store(engine, 2)
        engine.create_consumer_group("proj", "cg", logstore="ls", timeout=10)
        assert beat(engine, "a", []) == [0, 1]
        beat(engine, "b", [])  # a must now give up one shard...
        assert beat(engine, "a", [0, 1]) == [0]  # ...shard 1, which it still holds
        engine.update_checkpoint("proj", "cg", ("ls", 1), 0, "a", logstore="ls")
        engine.group_fetch("proj", "cg", "a", ("ls", 1), 0, logstore="ls")
        with pytest.raises(ServiceError):
            engine.update_checkpoint("proj", "cg", ("ls", 1), 0, "b", logstore="ls")
