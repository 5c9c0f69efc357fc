"""Sealed segments are compacted, and nothing else changes.

A shard log appends the clients' lz4 log groups as they came.  Once a segment is
sealed, the maintenance pass rewrites it with each log group stored column by
column under zstd (or plain zstd where that cannot rebuild the group exactly):
the same positions, receive times and log groups, in less space.  Readers,
retention, restarts and crashes in the middle of a swap all keep working.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from groups import prepared
from harness import ServerProcess
from logharbor.engine import Engine, EngineConfig, Limits, prepare_protobuf
from logharbor.engine.shardlog import COLUMNAR, COMPACT_SUFFIX
from logharbor.engine.types import NANOS_PER_DAY, NANOS_PER_SECOND
from logharbor.protocol.codec import (
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    Compression,
    compress,
    iter_frames,
    length_delimited,
)
from logharbor.protocol.errors import ServiceError


def config(path: Path, **overrides: object) -> EngineConfig:
    settings: dict[str, object] = {
        "ingest_workers": 0,
        "data_dir": path,
        "segment_bytes": 12_000,  # three log groups per segment
        "retention_interval": 3600,  # passes run only when a test asks
        **overrides,
    }
    return EngineConfig(**settings)  # type: ignore[arg-type]


def write(engine: Engine, count: int) -> None:
    """``count`` log groups of 200 access-log-like logs (about 4 KiB with lz4)."""
    rng = random.Random(count)
    for i in range(count):
        logs = [
            {
                "n": str(i),
                "path": f"/api/v1/orders/{rng.randrange(10**6)}",
                "status": rng.choice(["200", "404", "500"]),
                "msg": f"served in {rng.randrange(900)}ms by worker {rng.randrange(16)}",
            }
            for _ in range(200)
        ]
        engine.put("prj", "ls", prepared(*logs)).result()


def snapshot(engine: Engine) -> list[tuple[int, int, int, int, bytes]]:
    """Every stored group as (position, receive time, raw size, log count, raw bytes)."""
    return snapshot_from(engine, 0)


def snapshot_from(engine: Engine, position: int) -> list[tuple[int, int, int, int, bytes]]:
    result = engine.pull("prj", "ls", 0, position, count=1000, max_bytes=1 << 26)
    return [
        (f.position, f.received_ns, f.raw_size, f.log_count, f.raw())
        for f in iter_frames(result.frames)
    ]


def shard_files(root: Path) -> list[Path]:
    return sorted((root / "shards").rglob("*.log"))


def stored_compressions(path: Path) -> list[int]:
    """The compression byte of each record of a segment file, as on disk."""
    data = path.read_bytes()
    found = []
    offset = 0
    while offset < len(data):
        _crc, length, *_rest, comp = FRAME_HEADER.unpack_from(data, offset)
        found.append(comp)
        offset += FRAME_HEADER_SIZE + length
    return found


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = Engine(config(tmp_path / "e"))
    engine.create_project("prj")
    engine.create_logstore("prj", "ls", shard_count=1)
    yield engine  # type: ignore[misc]
    engine.close()


def test_sealed_segments_are_stored_by_column_and_read_the_same(
    engine: Engine, tmp_path: Path
) -> None:
    write(engine, 30)
    before = snapshot(engine)
    sealed_size = sum(p.stat().st_size for p in shard_files(tmp_path / "e")[:-1])

    compacted = engine.run_compaction()

    assert compacted >= 2
    assert snapshot(engine) == before
    files = shard_files(tmp_path / "e")
    assert [p.name.endswith(COMPACT_SUFFIX) for p in files] == [True] * compacted + [False]
    assert sum(p.stat().st_size for p in files[:-1]) < 0.6 * sealed_size  # 0.48 measured
    assert set(stored_compressions(files[0])) == {COLUMNAR}
    # readers get an ordinary lz4 frame of the same bytes: the columnar form stays on disk
    stored = iter_frames(engine.pull("prj", "ls", 0, 0, count=1).frames)
    assert next(stored).compression is Compression.LZ4
    assert engine.run_compaction() == 0  # done once
    write(engine, 1)  # the active segment still takes writes
    assert snapshot(engine)[:-1] == before


def test_compacted_segments_survive_a_restart(tmp_path: Path) -> None:
    engine = Engine(config(tmp_path / "e"))
    engine.create_project("prj")
    engine.create_logstore("prj", "ls", shard_count=1)
    write(engine, 20)
    before = snapshot(engine)
    engine.run_compaction()
    engine.close()

    engine = Engine(config(tmp_path / "e"))
    try:
        assert snapshot(engine) == before
        write(engine, 1)
        assert len(snapshot(engine)) == len(before) + 1
    finally:
        engine.close()


def compacted_then_crashed(
    tmp_path: Path, groups: int, **settings: object
) -> tuple[list[tuple[int, int, int, int, bytes]], list[Path]]:
    """Write, compact and close, then put the original segments back, as if the
    crash came after each copy's rename but before the original's unlink; returns
    what was stored and the original segment files."""
    engine = Engine(config(tmp_path / "e", **settings))
    engine.create_project("prj")
    engine.create_logstore("prj", "ls", shard_count=1)
    write(engine, groups)
    before = snapshot(engine)
    originals = {p: p.read_bytes() for p in shard_files(tmp_path / "e")[:-1]}
    engine.run_compaction()
    engine.close()
    for path, data in originals.items():
        path.write_bytes(data)
    return before, list(originals)


def test_a_crash_during_the_swap_keeps_one_copy(tmp_path: Path) -> None:
    """The compacted copy is complete once renamed: if the original is still
    there after a crash, it goes; a half-written copy (``.tmp``) goes too."""
    before, originals = compacted_then_crashed(tmp_path, 20)
    first = originals[0]
    shutil.copy(first, first.with_name(first.name + ".z.tmp"))  # and a torn copy

    engine = Engine(config(tmp_path / "e"))
    try:
        assert snapshot(engine) == before
        names = [p.name for p in (first.parent).iterdir()]
        assert not any(name.endswith(".tmp") for name in names)
        assert all(not p.exists() for p in originals)
    finally:
        engine.close()


def test_retention_and_compaction_do_not_trip_over_each_other(tmp_path: Path) -> None:
    now = [1_800_000_000 * NANOS_PER_SECOND]
    engine = Engine(config(tmp_path / "e", clock=lambda: now[0]))
    try:
        engine.create_project("prj")
        engine.create_logstore("prj", "ls", shard_count=1, ttl=1)
        write(engine, 20)
        shard = engine._runtime("prj", "ls").shards[0]
        segment = shard.compactable()[0]
        replacement = shard.compact(segment)
        assert replacement is not None
        now[0] += 2 * NANOS_PER_DAY
        write(engine, 1)
        dropped = engine.run_retention()  # drops the segment being compacted, and more
        assert dropped >= 3
        assert shard.swap_compacted(segment, replacement) is False
        assert not replacement.path.exists()
        assert snapshot(engine)[0][0] == dropped
    finally:
        engine.close()


def test_readers_see_every_group_while_segments_are_swapped(engine: Engine) -> None:
    write(engine, 120)
    expected = snapshot(engine)
    failures: list[object] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                got = snapshot(engine)
            except Exception as exc:  # e.g. "being compacted; try again": not acceptable
                failures.append(exc)
                return
            if got != expected:
                failures.append(len(got))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        assert engine.run_compaction() >= 2
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []


def test_compaction_can_be_turned_off(tmp_path: Path) -> None:
    engine = Engine(config(tmp_path / "e", compact_level=0))
    try:
        engine.create_project("prj")
        engine.create_logstore("prj", "ls", shard_count=1)
        write(engine, 20)
        assert engine.run_compaction() == 0
        assert not any(p.name.endswith(COMPACT_SUFFIX) for p in shard_files(tmp_path / "e"))
    finally:
        engine.close()


def test_a_group_the_columns_cannot_rebuild_exactly_is_kept_as_zstd(
    engine: Engine, tmp_path: Path
) -> None:
    # valid protobuf, but Time_ns comes before the contents: not the order the
    # columnar form rebuilds, so compaction must not use it for this group
    log = b"\x08\x01\x25\x07\x00\x00\x00" + length_delimited(0x12, b"\x0a\x01k\x12\x01v")
    odd = length_delimited(0x0A, log) * 300
    group = prepare_protobuf(compress(odd, Compression.LZ4), Compression.LZ4, len(odd), Limits())
    engine.put("prj", "ls", group).result()
    write(engine, 6)
    before = snapshot(engine)

    assert engine.run_compaction() >= 1

    assert snapshot(engine) == before
    assert before[0][4] == odd
    first = shard_files(tmp_path / "e")[0]
    assert stored_compressions(first)[0] == Compression.ZSTD
    assert COLUMNAR in stored_compressions(first)


def test_a_corrupt_columnar_record_is_an_error_not_wrong_data(
    engine: Engine, tmp_path: Path
) -> None:
    write(engine, 6)
    engine.run_compaction()
    first = shard_files(tmp_path / "e")[0]
    data = bytearray(first.read_bytes())
    data[FRAME_HEADER_SIZE + 40] ^= 0xFF  # inside the first record's payload
    first.write_bytes(bytes(data))

    with pytest.raises(ServiceError) as raised:
        engine.pull("prj", "ls", 0, 0, count=1)
    assert "corrupt record 0" in raised.value.message
    assert len(snapshot_from(engine, 1)) == 5  # the records after it still read


def test_a_pull_of_compacted_groups_keeps_to_its_byte_budget(engine: Engine) -> None:
    """Rebuilt records are larger than the stored ones; a pull still stops near
    ``max_bytes`` and the next pull goes on where it stopped."""
    write(engine, 30)
    before = snapshot(engine)
    engine.run_compaction()
    one_group = len(engine.pull("prj", "ls", 0, 0, count=1).frames)

    got = []
    position = 0
    while position < len(before):
        result = engine.pull("prj", "ls", 0, position, count=100, max_bytes=3 * one_group)
        frames = list(iter_frames(result.frames))
        assert len(frames) >= 1
        assert len(result.frames) <= 3 * one_group or len(frames) == 1
        assert result.next_position == position + len(frames)
        got += [(f.position, f.received_ns, f.raw_size, f.log_count, f.raw()) for f in frames]
        position = result.next_position
    assert got == before


def test_disk_use_and_compaction_are_metrics(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Operators see the bytes each logstore takes on disk and what compaction saved."""
    server = server_factory(
        auth=False,
        env={"LOGHARBOR_SEGMENT_BYTES": "4000", "LOGHARBOR_RETENTION_INTERVAL": "0.2"},
    )
    api = "/api/v1/projects"
    assert server.request("POST", api, content=b'{"name": "prj"}').status_code == 200
    assert (
        server.request("POST", f"{api}/prj/logstores", content=b'{"name": "ls"}').status_code == 200
    )
    for i in range(12):
        logs = [
            {"contents": {"n": str(i), "msg": f"served in {j}ms by worker {j % 16}"}}
            for j in range(200)
        ]
        body = json.dumps({"logs": logs}).encode()
        headers = {"content-type": "application/json"}
        written = server.request(
            "POST", f"{api}/prj/logstores/ls/logs", content=body, headers=headers
        )
        assert written.status_code == 200, written.text

    def pending() -> int:
        """Sealed segments (all but each shard's newest) not compacted yet."""
        shards = (server.data_dir / "shards").glob("*/*")
        return sum(
            not p.name.endswith(COMPACT_SUFFIX)
            for shard in shards
            for p in sorted(shard.glob("*.log"))[:-1]
        )

    deadline = time.monotonic() + 20
    while pending():  # then nothing changes any more (the active segments are young)
        assert time.monotonic() < deadline, "the maintenance pass did not compact it all"
        time.sleep(0.1)
    # one scrape: two could see different passes
    samples = httpx.get(server.endpoint + "/metrics").text.splitlines()
    metrics = {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in samples)
        if not name.startswith("#")
    }
    assert metrics['logharbor_compacted_log_groups_total{form="columnar"}'] > 0
    assert metrics["logharbor_compacted_segments_total"] >= 1
    before = metrics['logharbor_compacted_bytes_total{stage="before"}']
    after = metrics['logharbor_compacted_bytes_total{stage="after"}']
    assert 0 < after < before / 2
    on_disk = sum(p.stat().st_size for p in (server.data_dir / "shards").rglob("*.log"))
    assert metrics['logharbor_storage_bytes{kind="shards",logstore="ls",project="prj"}'] == on_disk


def test_a_quiet_shard_is_sealed_by_age_compacted_and_expires_on_time(tmp_path: Path) -> None:
    """A shard that takes a few writes an hour never fills a segment: its segment
    is sealed once its oldest log group is ``segment_seconds`` old, so the data
    is compacted and leaves at its TTL, not when a large segment expires as a whole."""
    now = [1_800_000_000 * NANOS_PER_SECOND]
    hour = 3600 * NANOS_PER_SECOND
    engine = Engine(
        config(tmp_path / "e", segment_bytes=128 << 20, clock=lambda: now[0], segment_seconds=3600)
    )
    try:
        engine.create_project("prj")
        engine.create_logstore("prj", "ls", shard_count=1, ttl=1)
        write(engine, 3)
        now[0] += hour // 2
        assert engine.run_compaction() == 0  # not old enough yet
        assert len(shard_files(tmp_path / "e")) == 1

        now[0] += hour
        assert engine.run_compaction() == 1  # sealed, then compacted in the same pass
        write(engine, 2)  # goes to the new segment
        files = shard_files(tmp_path / "e")
        assert [p.name.endswith(COMPACT_SUFFIX) for p in files] == [True, False]
        assert set(stored_compressions(files[0])) == {COLUMNAR}

        now[0] += NANOS_PER_DAY - hour  # the first three groups are past their TTL
        assert engine.run_retention() == 3
        assert [position for position, *_ in snapshot(engine)] == [3, 4]
    finally:
        engine.close()


def test_a_group_with_a_longer_than_needed_length_is_kept_exact(
    engine: Engine, tmp_path: Path
) -> None:
    # valid protobuf (ingest accepts it) that the columnar form cannot rebuild
    log = b"\x08\x01" + length_delimited(0x12, b"\x0a\x01k\x12\x01v")
    odd = (b"\x0a" + bytes([len(log) | 0x80, 0x00]) + log) * 400
    group = prepare_protobuf(compress(odd, Compression.LZ4), Compression.LZ4, len(odd), Limits())
    engine.put("prj", "ls", group).result()
    write(engine, 6)
    before = snapshot(engine)

    assert engine.run_compaction() >= 1  # the segment holding it too

    assert snapshot(engine) == before
    assert before[0][4] == odd
    first = shard_files(tmp_path / "e")[0]
    assert first.name.endswith(COMPACT_SUFFIX)
    assert stored_compressions(first)[0] == Compression.ZSTD


def test_a_damaged_segment_is_left_alone_and_the_others_are_compacted(
    engine: Engine, tmp_path: Path
) -> None:
    write(engine, 12)
    first = shard_files(tmp_path / "e")[0]
    data = bytearray(first.read_bytes())
    data[FRAME_HEADER_SIZE + 40] ^= 0xFF  # bit rot inside the first record
    first.write_bytes(bytes(data))

    compacted = engine.run_compaction()

    assert compacted >= 2
    files = shard_files(tmp_path / "e")
    assert files[0] == first  # not rewritten: a new checksum would hide the damage
    assert all(p.name.endswith(COMPACT_SUFFIX) for p in files[1:-1])
    assert engine.run_compaction() == 0  # and not tried again on every pass


def test_a_torn_compacted_copy_left_by_a_crash_loses_to_the_original(tmp_path: Path) -> None:
    # without durability the copy may not be on disk in full when the power goes
    before, originals = compacted_then_crashed(tmp_path, 12, durable=False)
    first = originals[0]
    copy = first.with_name(first.name.replace(".log", COMPACT_SUFFIX))
    copy.write_bytes(copy.read_bytes()[:-7])

    engine = Engine(config(tmp_path / "e"))
    try:
        assert snapshot(engine) == before
        assert first.exists() and not copy.exists()
        assert all(not p.exists() for p in originals[1:])  # whole copies won
    finally:
        engine.close()
