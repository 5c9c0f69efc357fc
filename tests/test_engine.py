"""The engine on its own: resources, routing, cursors, recovery and retention."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from groups import prepared
from logharbor.engine import Engine, EngineConfig, ShardStatus
from logharbor.engine.types import NANOS_PER_DAY, NANOS_PER_SECOND, PullResult
from logharbor.protocol.codec import Compression, encode_frame, iter_frames
from logharbor.protocol.errors import ErrorCode, ServiceError
from logharbor.protocol.schema import LogGroup

HALF = "80000000000000000000000000000000"


def error_code(exc: pytest.ExceptionInfo[ServiceError]) -> ErrorCode:
    return exc.value.code


def pulled_values(engine: Engine, shard: int, key: str = "n") -> list[str]:
    result = engine.pull("pr1", "ls", shard, 0, count=1000)
    values = []
    for frame in iter_frames(result.frames):
        for log in LogGroup.FromString(frame.raw()).Logs:
            values.extend(c.Value for c in log.Contents if c.Key == key)
    return values


@pytest.fixture
def store(engine: Engine) -> Engine:
    engine.create_project("pr1", "first")
    engine.create_logstore("pr1", "ls", shard_count=2)
    return engine


class TestResources:
    def test_names_follow_sls_rules(self, engine: Engine) -> None:
        for bad in ["ab", "Upper", "-lead", "trail-", "has space", "x" * 64, "under_score"]:
            with pytest.raises(ServiceError) as exc:
                engine.create_project(bad)
            assert error_code(exc) is ErrorCode.INVALID_NAME
        engine.create_project("ok-1")
        engine.create_logstore("ok-1", "with_underscore")

    def test_duplicates_and_unknowns_are_clear(self, store: Engine) -> None:
        with pytest.raises(ServiceError) as exc:
            store.create_project("pr1")
        assert error_code(exc) is ErrorCode.PROJECT_ALREADY_EXIST
        with pytest.raises(ServiceError) as exc:
            store.create_logstore("pr1", "ls")
        assert error_code(exc) is ErrorCode.LOGSTORE_ALREADY_EXIST
        with pytest.raises(ServiceError) as exc:
            store.get_logstore("nope", "ls")
        assert error_code(exc) is ErrorCode.PROJECT_NOT_EXIST
        with pytest.raises(ServiceError) as exc:
            store.get_logstore("pr1", "nope")
        assert error_code(exc) is ErrorCode.LOGSTORE_NOT_EXIST
        with pytest.raises(ServiceError) as exc:
            store.pull("pr1", "ls", 7, 0)
        assert error_code(exc) is ErrorCode.SHARD_NOT_EXIST

    def test_shards_divide_the_hash_space_evenly(self, engine: Engine) -> None:
        engine.create_project("pr2")
        engine.create_logstore("pr2", "four", shard_count=4)
        shards = engine.list_shards("pr2", "four")
        assert [(s.begin_key[:1], s.end_key[:1]) for s in shards] == [
            ("0", "4"),
            ("4", "8"),
            ("8", "c"),
            ("c", "f"),
        ]
        assert shards[-1].end_key == "f" * 32

    def test_delete_project_removes_its_data(self, store: Engine, tmp_path: Path) -> None:
        store.put("pr1", "ls", prepared({"n": "1"})).result()
        shard_dirs = list((tmp_path / "engine" / "shards").iterdir())
        assert shard_dirs
        store.delete_project("pr1")
        assert not any(d.exists() for d in shard_dirs)
        with pytest.raises(ServiceError):
            store.get_project("pr1")


class TestWriteAndRead:
    def test_hash_key_routes_to_the_owning_shard(self, store: Engine) -> None:
        store.put("pr1", "ls", prepared({"n": "low"}), hash_key="0" * 32).result()
        store.put("pr1", "ls", prepared({"n": "high"}), hash_key="f" * 32).result()
        store.put("pr1", "ls", prepared({"n": "mid"}), hash_key=HALF).result()
        assert pulled_values(store, 0) == ["low"]
        assert pulled_values(store, 1) == ["high", "mid"]

    def test_without_hash_key_writes_spread_over_shards(self, store: Engine) -> None:
        for i in range(10):
            store.put("pr1", "ls", prepared({"n": str(i)})).result()
        assert len(pulled_values(store, 0)) == len(pulled_values(store, 1)) == 5

    def test_pull_limits_and_end_position(self, store: Engine) -> None:
        for i in range(10):
            store.put("pr1", "ls", prepared({"n": str(i)}), hash_key="0" * 32).result()
        assert store.pull("pr1", "ls", 0, 0, count=3).next_position == 3
        stopped = store.pull("pr1", "ls", 0, 2, count=100, stop=5)
        assert (stopped.group_count, stopped.next_position) == (3, 5)
        one = store.pull("pr1", "ls", 0, 0, count=100, max_bytes=1)
        assert one.group_count == 1  # always at least one log group
        empty = store.pull("pr1", "ls", 0, 10)
        assert (empty.group_count, empty.next_position, empty.frames) == (0, 10, b"")
        with pytest.raises(ServiceError) as exc:
            store.pull("pr1", "ls", 0, 11)
        assert error_code(exc) is ErrorCode.INVALID_CURSOR

    def test_cursor_by_receive_time(self, tmp_path: Path) -> None:
        now = [1_800_000_000 * NANOS_PER_SECOND]
        engine = Engine(
            EngineConfig(ingest_workers=0, data_dir=tmp_path / "e", clock=lambda: now[0])
        )
        try:
            engine.create_project("pr1")
            engine.create_logstore("pr1", "ls", shard_count=1)
            for _ in range(3):
                engine.put("pr1", "ls", prepared({"n": "x"})).result()
                now[0] += 10 * NANOS_PER_SECOND
            first = 1_800_000_000 * NANOS_PER_SECOND
            assert engine.cursor("pr1", "ls", 0, first - 1) == 0
            assert engine.cursor("pr1", "ls", 0, first + 1) == 1
            assert engine.cursor("pr1", "ls", 0, first + 20 * NANOS_PER_SECOND) == 2
            assert engine.cursor("pr1", "ls", 0, first + 21 * NANOS_PER_SECOND) == 3
            assert engine.cursor_time("pr1", "ls", 0, 1) == first + 10 * NANOS_PER_SECOND
            assert engine.cursor_time("pr1", "ls", 0, 3) == first + 20 * NANOS_PER_SECOND
        finally:
            engine.close()

    def test_concurrent_writers_share_fsyncs(self, store: Engine) -> None:
        group = prepared({"n": "x"})
        futures = []

        def write() -> None:
            futures.extend(store.put("pr1", "ls", group) for _ in range(200))

        threads = [threading.Thread(target=write) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        positions = {(f.result().shard_id, f.result().position) for f in futures}
        assert len(positions) == 800  # every write got its own place
        stats = store.statistics()
        assert stats.appends == 800
        assert stats.syncs < 800  # group commit: fewer fsyncs than writes


class TestSplitAndMerge:
    def test_split_routes_the_next_write_to_a_child(self, store: Engine) -> None:
        store.put("pr1", "ls", prepared({"n": "before"}), hash_key="1" * 32).result()
        shards = store.split_shard("pr1", "ls", 0, "4" + "0" * 31)
        assert [(s.shard_id, s.status) for s in shards] == [
            (0, ShardStatus.READONLY),
            (2, ShardStatus.READWRITE),
            (3, ShardStatus.READWRITE),
        ]
        assert shards[0].children == (2, 3) and shards[1].parents == (0,)
        result = store.put("pr1", "ls", prepared({"n": "after"}), hash_key="1" * 32).result()
        assert result.shard_id == 2
        assert pulled_values(store, 0) == ["before"]
        assert store.get_logstore("pr1", "ls").shard_count == 3

    def test_split_key_must_be_inside_the_shard(self, store: Engine) -> None:
        for key in ["0" * 32, HALF, "f" * 32, "zz"]:
            with pytest.raises(ServiceError):
                store.split_shard("pr1", "ls", 0, key)
        store.split_shard("pr1", "ls", 0, "4" + "0" * 31)
        with pytest.raises(ServiceError) as exc:
            store.split_shard("pr1", "ls", 0, "2" + "0" * 31)
        assert error_code(exc) is ErrorCode.SHARD_READ_ONLY

    def test_merge_joins_adjacent_shards(self, store: Engine) -> None:
        shards = store.merge_shard("pr1", "ls", 0)
        assert [(s.shard_id, s.status.value) for s in shards] == [
            (0, "readonly"),
            (1, "readonly"),
            (2, "readwrite"),
        ]
        assert (shards[2].begin_key, shards[2].end_key) == ("0" * 32, "f" * 32)
        assert store.put("pr1", "ls", prepared({"n": "x"})).result().shard_id == 2
        with pytest.raises(ServiceError):
            store.merge_shard("pr1", "ls", 2)  # nothing after it

    def test_split_survives_restart(self, tmp_path: Path) -> None:
        config = EngineConfig(ingest_workers=0, data_dir=tmp_path / "e")
        engine = Engine(config)
        engine.create_project("pr1")
        engine.create_logstore("pr1", "ls", shard_count=1)
        engine.put("pr1", "ls", prepared({"n": "a"})).result()
        engine.split_shard("pr1", "ls", 0, HALF)
        engine.close()
        engine = Engine(config)
        try:
            assert engine.shard_status("pr1", "ls", 0) is ShardStatus.READONLY
            assert engine.cursor("pr1", "ls", 0, "end") == 1
            assert (
                engine.put("pr1", "ls", prepared({"n": "b"}), hash_key="0" * 32).result().shard_id
                == 1
            )
        finally:
            engine.close()


class TestRecovery:
    def _segment(self, data_dir: Path) -> Path:
        (segment,) = [p for p in data_dir.rglob("*.log") if p.stat().st_size]
        return segment

    def test_torn_tail_is_cut_and_earlier_groups_survive(self, tmp_path: Path) -> None:
        config = EngineConfig(ingest_workers=0, data_dir=tmp_path / "e")
        engine = Engine(config)
        engine.create_project("pr1")
        engine.create_logstore("pr1", "ls", shard_count=1)
        for i in range(3):
            engine.put("pr1", "ls", prepared({"n": str(i)})).result()
        engine.close()
        segment = self._segment(tmp_path / "e")
        with open(segment, "ab") as f:
            f.write(b"\x01\x02garbage that is not a whole record")
        engine = Engine(config)
        try:
            assert engine.cursor("pr1", "ls", 0, "end") == 3
            assert pulled_values(engine, 0) == ["0", "1", "2"]
            assert engine.put("pr1", "ls", prepared({"n": "3"})).result().position == 3
        finally:
            engine.close()

    def test_corrupt_last_record_is_dropped(self, tmp_path: Path) -> None:
        config = EngineConfig(ingest_workers=0, data_dir=tmp_path / "e")
        engine = Engine(config)
        engine.create_project("pr1")
        engine.create_logstore("pr1", "ls", shard_count=1)
        for i in range(2):
            engine.put("pr1", "ls", prepared({"n": str(i)})).result()
        engine.close()
        segment = self._segment(tmp_path / "e")
        size = segment.stat().st_size
        with open(segment, "r+b") as f:  # flip a payload byte of the last record
            f.seek(size - 2)
            byte = f.read(1)
            f.seek(size - 2)
            f.write(bytes([byte[0] ^ 0xFF]))
        engine = Engine(config)
        try:
            assert pulled_values(engine, 0) == ["0"]
        finally:
            engine.close()


class TestRetention:
    def test_ttl_drops_old_segments_and_cursors_clamp(self, tmp_path: Path) -> None:
        now = [1_800_000_000 * NANOS_PER_SECOND]
        config = EngineConfig(
            ingest_workers=0,
            data_dir=tmp_path / "e",
            clock=lambda: now[0],
            segment_bytes=1,
            retention_interval=3600,
        )
        engine = Engine(config)
        try:
            engine.create_project("pr1")
            engine.create_logstore("pr1", "ls", shard_count=1, ttl=1)
            for i in range(3):  # one segment per log group (segment_bytes=1)
                engine.put("pr1", "ls", prepared({"n": f"old{i}"})).result()
            now[0] += 2 * NANOS_PER_DAY
            engine.put("pr1", "ls", prepared({"n": "new"})).result()
            assert engine.run_retention() == 3
            assert engine.cursor("pr1", "ls", 0, "begin") == 3
            stale = engine.pull("pr1", "ls", 0, 0)  # a stale cursor reads the oldest kept data
            assert stale.group_count == 1 and stale.next_position == 4
            assert len([p for p in (tmp_path / "e").rglob("*.log")]) == 1
            now[0] += 2 * NANOS_PER_DAY
            assert engine.run_retention() == 1
            assert engine.cursor("pr1", "ls", 0, "end") == 4  # positions never go back
        finally:
            engine.close()
        engine = Engine(config)
        try:
            assert engine.cursor("pr1", "ls", 0, "end") == 4
            assert engine.put("pr1", "ls", prepared({"n": "x"})).result().position == 4
        finally:
            engine.close()

    def test_retention_runs_in_the_background_while_writes_go_on(self, tmp_path: Path) -> None:
        # every write moves the clock a day on, so with a one-day TTL the background
        # pass (every 10 ms) keeps dropping segments (one per log group) while the
        # writes go on; every write is acknowledged, the end never moves back
        now = [1_800_000_000 * NANOS_PER_SECOND]
        engine = Engine(
            EngineConfig(
                ingest_workers=0,
                data_dir=tmp_path / "e",
                clock=lambda: now[0],
                segment_bytes=1,
                retention_interval=0.01,
            )
        )
        try:
            engine.create_project("pr1")
            engine.create_logstore("pr1", "ls", shard_count=1, ttl=1)
            for i in range(200):
                receipt = engine.put("pr1", "ls", prepared({"n": str(i)})).result(timeout=5)
                assert receipt.position == i
                now[0] += NANOS_PER_DAY
                time.sleep(0.001)

            def files() -> int:
                return len(list((tmp_path / "e").rglob("*.log")))

            deadline = time.monotonic() + 10
            while engine.cursor("pr1", "ls", 0, "begin") < 198 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert engine.cursor("pr1", "ls", 0, "begin") >= 198
            assert engine.cursor("pr1", "ls", 0, "end") == 200
            # the dropped segments' files are gone, not just forgotten (they are
            # deleted after the segments are let go of, in the same pass)
            while files() > 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert files() <= 3
        finally:
            engine.close()


def test_write_queue_is_bounded(tmp_path: Path) -> None:
    engine = Engine(
        EngineConfig(
            ingest_workers=0, data_dir=tmp_path / "e", max_pending_bytes=1, submit_timeout=0.0
        )
    )
    try:
        engine.create_project("pr1")
        engine.create_logstore("pr1", "ls", shard_count=1)
        group = prepared({"n": "x" * 1000})
        refused = 0
        futures = []
        for _ in range(200):
            try:
                futures.append(engine.put("pr1", "ls", group))
            except ServiceError as exc:
                assert exc.code is ErrorCode.SERVER_BUSY
                refused += 1
        for f in futures:
            f.result()
        assert refused > 0
    finally:
        engine.close()


def test_shard_files_are_not_world_writable(store: Engine, tmp_path: Path) -> None:
    store.put("pr1", "ls", prepared({"n": "x"})).result()
    for path in (tmp_path / "engine").rglob("*.log"):
        assert not os.stat(path).st_mode & 0o002


class TestAutoSplit:
    def _engine(self, tmp_path: Path, now: list[int]) -> Engine:
        return Engine(
            EngineConfig(
                ingest_workers=0,
                data_dir=tmp_path / "e",
                clock=lambda: now[0],
                retention_interval=3600,
                auto_split_bytes_per_second=1000,
            )
        )

    def test_hot_shard_of_auto_split_logstore_is_split(self, tmp_path: Path) -> None:
        now = [1_800_000_000 * NANOS_PER_SECOND]
        engine = self._engine(tmp_path, now)
        try:
            engine.create_project("pr1")
            engine.create_logstore("pr1", "hot", shard_count=1, auto_split=True, max_split_shard=2)
            engine.create_logstore("pr1", "fixed", shard_count=1)
            for store in ("hot", "fixed"):
                for _ in range(20):
                    engine.put("pr1", store, prepared({"n": "x" * 1000})).result()
            now[0] += NANOS_PER_SECOND  # 20 kB in one second: above 1000 B/s
            assert engine.run_auto_split() == [("pr1", "hot", 0)]
            shards = engine.list_shards("pr1", "hot")
            assert [(s.shard_id, s.status.value) for s in shards] == [
                (0, "readonly"),
                (1, "readwrite"),
                (2, "readwrite"),
            ]
            assert shards[1].end_key == "8" + "0" * 31
            assert len(engine.list_shards("pr1", "fixed")) == 1  # flag off: never split
            for _ in range(20):
                engine.put("pr1", "hot", prepared({"n": "x" * 1000})).result()
            now[0] += NANOS_PER_SECOND
            assert engine.run_auto_split() == []  # max_split_shard reached
        finally:
            engine.close()

    def test_quiet_shards_stay(self, tmp_path: Path) -> None:
        now = [1_800_000_000 * NANOS_PER_SECOND]
        engine = self._engine(tmp_path, now)
        try:
            engine.create_project("pr1")
            engine.create_logstore("pr1", "calm", shard_count=1, auto_split=True)
            engine.put("pr1", "calm", prepared({"n": "x"})).result()
            now[0] += 60 * NANOS_PER_SECOND
            assert engine.run_auto_split() == []
        finally:
            engine.close()


def test_put_from_an_event_loop_waits_for_room(tmp_path: Path) -> None:
    """With a full write queue, put_from_loop waits (in a thread) instead of failing."""
    import asyncio

    engine = Engine(EngineConfig(ingest_workers=0, data_dir=tmp_path / "e", max_pending_bytes=1))
    try:
        engine.create_project("pr1")
        engine.create_logstore("pr1", "ls", shard_count=1)
        group = prepared({"n": "x" * 1000})

        async def write_all() -> list[int]:
            futures = await asyncio.gather(
                *(engine.put_from_loop("pr1", "ls", group) for _ in range(200))
            )
            results = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
            return sorted(r.position for r in results)

        assert asyncio.run(write_all()) == list(range(200))
    finally:
        engine.close()


def test_a_pull_cut_to_what_it_decodes_to() -> None:
    """Pulls are bounded by stored bytes; whoever decodes one (the indexer, SLS and
    TLS pulls, JSON pulls) first cuts it to what the log groups decode to: their
    raw sizes plus a cost per log, at least one log group, the cursor after the last."""
    frames = b"".join(
        encode_frame(position, 0, raw_size, logs, Compression.LZ4, b"x")
        for position, raw_size, logs in ((10, 600, 1), (11, 300, 100), (12, 50, 1))
    )
    pulled = PullResult(frames, 3, 102, 950, 13, 20)
    assert pulled.within(1000) is pulled  # all of it fits
    cut = pulled.within(1000, log_cost=2)  # 602 + 500 > 1000
    assert (cut.group_count, cut.log_count, cut.raw_size, cut.next_position) == (1, 1, 600, 11)
    assert [f.position for f in iter_frames(cut.frames)] == [10]
    assert cut.end_position == 20
    alone = pulled.within(100)  # the first log group alone is over: it still comes
    assert (alone.group_count, alone.next_position) == (1, 11)
