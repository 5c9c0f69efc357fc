"""The shard log: an append-only sequence of log groups stored in segment files.

Layout: one directory per shard holding segment files named by the position of
their first record (``00000000000000000042.log``).  A record is exactly the
frame the pull API sends (``logharbor.protocol.codec``: CRC-32, lengths,
position, receive time, raw size, log count, compression, payload), so a pull
is one ``pread`` of consecutive records.

Concurrency: one writer, the engine's commit thread, calls every mutating
method (``write``, ``sync``, ``publish``, ``roll``, ``detach_expired``,
``close``); ``discard`` deletes detached files from any thread.  Readers
call ``read``, ``position_at`` and ``received_at`` from any thread; they see
only records up to ``committed``, the end of the data that has been made
durable.

Recovery: on open every record of the newest segment is checked against its
checksum and the file is cut at the first torn or corrupt record; older
segments were sealed after a sync, so only their headers are read.

Compaction: a sealed segment can be rewritten with each log group stored column
by column and zstd-compressed (``engine/columnar.py``; about 2.3× smaller than
lz4 for access logs), or, when a group cannot be rebuilt byte for byte that
way, re-compressed with zstd; same positions, receive times and sizes
(``compact``).  The new file ``<base>-z.log`` is written and synced beside the
old one, then swapped in by the writer and the old file deleted; a reader that
loses the race retries, and recovery keeps the ``-z`` file when a crash left
both.  A columnar record never leaves this module but for the index (``read``
with ``stored``): ``read`` rebuilds it into an lz4 frame of the exact bytes
that were written.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import threading
import zlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import lz4.block
import zstandard

from ..protocol.codec import (
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    Compression,
    decompress,
    encode_frame,
    frame_headers,
)
from ..protocol.errors import ErrorCode, ServiceError
from . import columnar
from .types import Nanos, Position, PullResult

SEGMENT_SUFFIX = ".log"
COMPACT_SUFFIX = "-z.log"  # a segment rewritten with zstd
_TMP_SUFFIX = ".tmp"
_READ_CHUNK = 1 << 20
# The compression byte of a record stored column by column: on disk only (never
# a wire value, so not a ``Compression``); ``read`` turns it into lz4.
COLUMNAR = 0x10
# Below this raw size a log group is also tried as plain zstd: for a handful of
# logs the columnar header can cost more than the transposition saves.
_SMALL_GROUP = 64 << 10


@dataclass
class CompactionStatistics:
    """What compaction has done since the server started (the metrics export it)."""

    segments: int = 0  # compacted copies written
    bytes_before: int = 0  # their size as they were
    bytes_after: int = 0  # and compacted
    columnar: int = 0  # log groups stored column by column
    zstd: int = 0  # log groups stored as zstd over the protobuf
    unchanged: int = 0  # log groups kept as they were (nothing smaller found)

    def add(self, other: CompactionStatistics) -> None:
        for name in (f.name for f in fields(self)):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(eq=False)
class Segment:
    base: Position
    path: Path
    offsets: array[int] = field(default_factory=lambda: array("Q"))
    received: array[int] = field(default_factory=lambda: array("q"))
    size: int = 0
    fd: int | None = None  # open for appending while this is the active segment
    dirty: bool = False
    compacted: bool = False
    skip_compaction: bool = False  # failed, or nothing to gain: not tried again until a restart

    @property
    def count(self) -> int:
        return len(self.offsets)

    def record_end(self, index: int, size: int) -> int:
        """End offset of record ``index``; ``size`` is the segment size read with it."""
        return self.offsets[index + 1] if index + 1 < len(self.offsets) else size


def _segment_path(directory: Path, base: Position, *, compacted: bool = False) -> Path:
    return directory / f"{base:020d}{COMPACT_SUFFIX if compacted else SEGMENT_SUFFIX}"


def _segment_base(name: str) -> tuple[Position, bool] | None:
    """(base, compacted) of a segment file name, None for other files."""
    for suffix, compacted in ((COMPACT_SUFFIX, True), (SEGMENT_SUFFIX, False)):
        stem = name[: -len(suffix)]
        if name.endswith(suffix) and len(stem) == 20 and stem.isdigit():
            return int(stem), compacted
    return None


def fsync_path(path: Path) -> None:
    """Make a file's data, or a directory's entries (files created, renamed,
    deleted), durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardLog:
    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 128 << 20,
        durable: bool = True,
        readonly: bool = False,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.durable = durable
        self.readonly = readonly
        self.closed = False
        self.raw_bytes_written = 0  # since open; auto-split reads its rate
        self._lock = threading.Lock()
        self._segments: list[Segment] = []
        self._next: Position = 0  # position of the next record written
        self._committed: Position = 0  # end of the durable, visible records
        self._last_received: Nanos = 0
        self._waiters: list[Callable[[], None]] = []
        self._new_dir_entry = False
        self._open()

    # ------------------------------------------------------------ recovery

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob(f"*{_TMP_SUFFIX}"):
            stale.unlink()  # a compaction cut short by a crash
        found: dict[Position, bool] = {}
        for path in self.directory.iterdir():
            parsed = _segment_base(path.name)
            if parsed is not None:
                base, compacted = parsed
                found[base] = found.get(base, False) or compacted
        bases = sorted(found)
        for i, base in enumerate(bases):
            compacted = found[base]
            if compacted and _segment_path(self.directory, base).exists():
                compacted = self._settle_swap(base)
            path = _segment_path(self.directory, base, compacted=compacted)
            segment = Segment(base, path, compacted=compacted)
            newest = i == len(bases) - 1
            self._scan(segment, verify=newest, cut=newest)
            self._segments.append(segment)
        if self._segments:
            last = self._segments[-1]
            self._next = last.base + last.count
            for segment in reversed(self._segments):
                if segment.count:
                    self._last_received = segment.received[-1]
                    break
        self._committed = self._next

    def _settle_swap(self, base: Position) -> bool:
        """A segment and its compacted copy both exist: a crash cut the swap short.
        Keep the copy if every record of it is whole and checks out and it has as
        many as the original (it was synced before the rename, unless durability is
        off), else the original; returns whether the copy was kept."""
        original = Segment(base, _segment_path(self.directory, base))
        copy = Segment(base, _segment_path(self.directory, base, compacted=True), compacted=True)
        try:
            self._scan(copy, verify=True, cut=False)
            intact = True
        except ServiceError:  # torn, or a record does not match its checksum
            intact = False
        if intact:
            with contextlib.suppress(ServiceError):  # else the original is the damaged one
                self._scan(original, verify=False, cut=False)
                intact = copy.count == original.count
        (original if intact else copy).path.unlink()
        return intact

    def _scan(self, segment: Segment, *, verify: bool, cut: bool) -> None:
        """Index a segment's records, checking their checksums if ``verify``; a torn
        or corrupt tail is cut off if ``cut`` (the newest segment), else an error."""
        good_end = 0
        with open(segment.path, "rb", buffering=0) as f:
            file_size = os.fstat(f.fileno()).st_size
            offset = 0
            while offset + FRAME_HEADER_SIZE <= file_size:
                header = os.pread(f.fileno(), FRAME_HEADER_SIZE, offset)
                crc, length, position, received, _raw, _logs, comp = FRAME_HEADER.unpack(header)
                end = offset + FRAME_HEADER_SIZE + length
                expected = segment.base + segment.count
                known = comp <= max(Compression) or (comp == COLUMNAR and segment.compacted)
                if end > file_size or position != expected or not known:
                    break
                if verify and not self._crc_ok(f.fileno(), offset, end, crc):
                    break
                segment.offsets.append(offset)
                segment.received.append(received)
                offset = good_end = end
        if good_end != file_size:
            if not cut:
                raise ServiceError(
                    ErrorCode.INTERNAL, f"corrupt sealed segment {segment.path} at {good_end}"
                )
            os.truncate(segment.path, good_end)
        segment.size = good_end

    @staticmethod
    def _crc_ok(fd: int, start: int, end: int, expected: int) -> bool:
        crc = 0
        pos = start + 4
        while pos < end:
            chunk = os.pread(fd, min(_READ_CHUNK, end - pos), pos)
            if not chunk:
                return False
            crc = zlib.crc32(chunk, crc)
            pos += len(chunk)
        return crc == expected

    # ------------------------------------------------------ writer (commit thread)

    def write(
        self,
        payload: bytes,
        *,
        raw_size: int,
        log_count: int,
        compression: Compression,
        received: Nanos,
    ) -> Position:
        """Append one log group; durable and visible only after ``sync`` and ``publish``."""
        if self.closed:
            raise ServiceError(ErrorCode.LOGSTORE_NOT_EXIST, "the logstore was deleted")
        if self.readonly:
            raise ServiceError(ErrorCode.SHARD_READ_ONLY, "shard is readonly")
        segment = self._writable_segment()
        received = max(received, self._last_received)
        position = self._next
        record = encode_frame(position, received, raw_size, log_count, compression, payload)
        assert segment.fd is not None
        try:
            written = 0
            while written < len(record):
                written += os.pwrite(segment.fd, record[written:], segment.size + written)
        except OSError as exc:
            os.ftruncate(segment.fd, segment.size)
            raise ServiceError(ErrorCode.SERVER_BUSY, f"storage write failed: {exc}") from None
        with self._lock:
            segment.offsets.append(segment.size)
            segment.received.append(received)
            segment.size += len(record)
            segment.dirty = True
            self._next = position + 1
            self._last_received = received
            self.raw_bytes_written += raw_size
        return position

    def _writable_segment(self) -> Segment:
        active = self._segments[-1] if self._segments else None
        if active is None or active.fd is None or active.size >= self.segment_bytes:
            active = self.roll()
        return active

    def roll(self) -> Segment:
        """Seal the active segment and start a new, empty one at the current end."""
        previous = self._segments[-1] if self._segments else None
        if previous is not None and previous.count == 0 and previous.fd is not None:
            return previous
        path = _segment_path(self.directory, self._next)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        segment = Segment(self._next, path, fd=fd)
        if os.fstat(fd).st_size:  # an empty file left by an earlier roll: reuse it
            os.ftruncate(fd, 0)
        with self._lock:
            if previous is not None and previous.count == 0:
                self._segments.pop()
            self._segments.append(segment)
        self._new_dir_entry = True
        if previous is not None and previous.fd is not None and not previous.dirty:
            os.close(previous.fd)
            previous.fd = None
        return segment

    def sync(self) -> None:
        """Make every written record durable (one fdatasync per dirty segment)."""
        with self._lock:
            dirty = [s for s in self._segments if s.dirty]
        for segment in dirty:
            if segment.fd is None:
                continue
            if self.durable:
                os.fdatasync(segment.fd)
            segment.dirty = False
            if segment is not self._segments[-1]:
                os.close(segment.fd)
                segment.fd = None
        if self._new_dir_entry:
            if self.durable:
                fsync_path(self.directory)
            self._new_dir_entry = False

    def publish(self) -> None:
        """Make synced records visible to readers and wake those waiting for data."""
        with self._lock:
            self._committed = self._next
            waiters, self._waiters = self._waiters, []
        for wake in waiters:
            wake()

    def set_readonly(self) -> Position:
        self.readonly = True
        return self._next

    def seal_if_older(self, cutoff: Nanos) -> bool:
        """Seal the active segment if its first record was received before
        ``cutoff`` (the writer calls this), so that a quiet shard's data is compacted
        and expires on time instead of waiting for the segment to fill."""
        with self._lock:
            active = self._segments[-1] if self._segments else None
        if active is None or not active.count or active.dirty or active.received[0] >= cutoff:
            return False
        self.roll()
        if self.readonly:
            self._close_active()
        return True

    def detach_expired(self, cutoff: Nanos) -> list[Segment]:
        """Take the segments whose every record was received before ``cutoff`` out
        of the shard (readers no longer see them); ``discard`` deletes their files.

        Runs on the commit thread and only touches memory, unless the newest
        segment has expired too: it is sealed first, so that an empty segment keeps
        the shard's end position across restarts.  A crash before ``discard`` leaves
        the files, and the next retention pass drops them again.
        """
        with self._lock:
            segments = list(self._segments)
        if not segments:
            return []
        newest = segments[-1]
        if newest.count and newest.received[-1] < cutoff and not newest.dirty:
            self.roll()
            if self.readonly:
                self._close_active()
            with self._lock:
                segments = list(self._segments)
        dropped: list[Segment] = []
        for segment in segments[:-1]:
            if segment.count and segment.received[-1] < cutoff and not segment.dirty:
                dropped.append(segment)
            else:
                break
        if dropped:
            with self._lock:
                del self._segments[: len(dropped)]
        return dropped

    def discard(self, segments: list[Segment]) -> None:
        """Delete the files of detached segments (off the commit thread)."""
        for segment in segments:
            if segment.fd is not None:
                os.close(segment.fd)
                segment.fd = None
            segment.path.unlink(missing_ok=True)
        if segments and self.durable:
            fsync_path(self.directory)

    # ---------------------------------------------------------- compaction

    def compacted(self) -> list[tuple[Position, int]]:
        """(base, count) of each compacted segment, oldest first."""
        with self._lock:
            return [(s.base, s.count) for s in self._segments if s.compacted]

    def compactable(self) -> list[Segment]:
        """Sealed segments not yet compacted (never the active one)."""
        with self._lock:
            sealed = self._segments[:-1]
            return [
                s
                for s in sealed
                if not s.compacted and not s.skip_compaction and s.count and not s.dirty
            ]

    def compact(
        self,
        segment: Segment,
        *,
        level: int = 3,
        statistics: CompactionStatistics | None = None,
    ) -> Segment | None:
        """Write a compacted copy of a sealed segment beside it and sync it; returns
        it for ``swap_compacted``, or None when nothing would shrink or retention
        dropped the segment.  Runs in any thread (it only reads the segment)."""
        target = _segment_path(self.directory, segment.base, compacted=True)
        tmp = target.with_name(target.name + _TMP_SUFFIX)
        compressor = zstandard.ZstdCompressor(level=level)
        saved = 0
        forms = {COLUMNAR: 0, Compression.ZSTD: 0}
        try:
            source = open(segment.path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return None
        try:
            with source, open(tmp, "wb") as out:
                for index in range(segment.count):  # one record in memory at a time
                    begin = segment.offsets[index]
                    record = os.pread(
                        source.fileno(), segment.record_end(index, segment.size) - begin, begin
                    )
                    crc, length, position, received, raw_size, logs, comp = (
                        FRAME_HEADER.unpack_from(record)
                    )
                    if zlib.crc32(memoryview(record)[4:]) != crc:  # never re-sign damage
                        raise ServiceError(
                            ErrorCode.INTERNAL,
                            f"corrupt record {position} in {segment.path}: not compacted",
                        )
                    payload = record[FRAME_HEADER_SIZE : FRAME_HEADER_SIZE + length]
                    packed, packed_comp = _compact_record(payload, comp, raw_size, compressor)
                    if len(packed) < len(payload):
                        saved += len(payload) - len(packed)
                        payload, comp = packed, packed_comp
                        forms[comp] += 1
                    out.write(encode_frame(position, received, raw_size, logs, comp, payload))
                out.flush()
                if self.durable:
                    os.fsync(out.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if saved <= 0:
            tmp.unlink()
            segment.skip_compaction = True  # it would not shrink next time either
            return None
        os.replace(tmp, target)
        if self.durable:
            fsync_path(self.directory)
        replacement = Segment(segment.base, target, compacted=True)
        self._scan(replacement, verify=False, cut=False)
        if replacement.count != segment.count:
            target.unlink(missing_ok=True)
            raise ServiceError(ErrorCode.INTERNAL, f"compacted copy of {segment.path} differs")
        if statistics is not None:
            statistics.segments += 1
            statistics.bytes_before += segment.size
            statistics.bytes_after += replacement.size
            statistics.columnar += forms[COLUMNAR]
            statistics.zstd += forms[Compression.ZSTD]
            statistics.unchanged += segment.count - forms[COLUMNAR] - forms[Compression.ZSTD]
        return replacement

    def swap_compacted(self, segment: Segment, replacement: Segment) -> bool:
        """Put the compacted copy in place of ``segment`` and delete the original
        (the writer calls this).  False if retention dropped the segment meanwhile."""
        path = replacement.path
        with self._lock:
            index = -1
            if not self.closed and segment in self._segments:
                index = self._segments.index(segment)
                self._segments[index] = replacement
        if index < 0:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            return False
        segment.path.unlink(missing_ok=True)
        if self.durable:
            fsync_path(self.directory)
        return True

    def _close_active(self) -> None:
        active = self._segments[-1]
        if active.fd is not None and not active.dirty:
            if self.durable:
                os.fsync(active.fd)
                fsync_path(self.directory)
            self._new_dir_entry = False
            os.close(active.fd)
            active.fd = None

    def close(self) -> None:
        with self._lock:
            self.closed = True
            segments = list(self._segments)
            waiters, self._waiters = self._waiters, []
        for segment in segments:
            if segment.fd is not None:
                if segment.dirty and self.durable:
                    os.fdatasync(segment.fd)
                os.close(segment.fd)
                segment.fd = None
        for wake in waiters:
            wake()

    # ------------------------------------------------------------- readers

    @property
    def begin(self) -> Position:
        """The first position still kept (retention moves it forward)."""
        with self._lock:
            return self._segments[0].base if self._segments else self._committed

    @property
    def stored_bytes(self) -> int:
        """Bytes of segment files, compacted or not."""
        with self._lock:
            return sum(s.size for s in self._segments)

    @property
    def end(self) -> Position:
        """One past the last durable record."""
        return self._committed

    def add_waiter(self, position: Position, wake: Callable[[], None]) -> bool:
        """Call ``wake`` once data past ``position`` is visible; False if it already is."""
        with self._lock:
            if self._committed > position or self.closed:
                return False
            self._waiters.append(wake)
            return True

    def remove_waiter(self, wake: Callable[[], None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._waiters.remove(wake)

    def clamp(self, position: Position) -> Position:
        """Positions before the kept data move to the oldest kept log group."""
        if position > self._committed:
            raise ServiceError(
                ErrorCode.INVALID_CURSOR,
                f"cursor position {position} is past the shard's end {self._committed}",
            )
        return max(position, self.begin)

    def read(
        self,
        start: Position,
        *,
        count: int,
        max_bytes: int,
        stop: Position | None = None,
        stored: bool = False,
    ) -> PullResult:
        """Up to ``count`` records (and about ``max_bytes``) from ``start``, as stored;
        columnar records rebuilt into lz4 frames unless ``stored`` (the index reads
        them column by column: ``index/sealed.py``)."""
        for _ in range(8):  # retention may delete a segment between snapshot and open
            try:
                return self._read_once(start, count, max_bytes, stop, stored)
            except FileNotFoundError:
                continue
        raise ServiceError(ErrorCode.SERVER_BUSY, "shard data is being compacted; try again")

    def _read_once(
        self, start: Position, count: int, max_bytes: int, stop: Position | None, stored: bool
    ) -> PullResult:
        with self._lock:
            segments = list(self._segments)
            sizes = [s.size for s in segments]
            committed = self._committed
        start = self.clamp(start)
        bases = [s.base for s in segments]
        limit = min(start + count, committed)
        if stop is not None:
            limit = min(limit, max(stop, start))
        chunks: list[bytes] = []
        total = 0
        position = start
        while position < limit:
            index = bisect.bisect_right(bases, position) - 1
            segment, size = segments[index], sizes[index]
            first = position - segment.base
            last = min(limit - segment.base, segment.count)  # exclusive
            begin_offset = segment.offsets[first]
            if chunks and total + segment.record_end(first, size) - begin_offset > max_bytes:
                break  # the next segment's first record would not fit
            end_index = first + 1
            while (
                end_index < last
                and total + segment.record_end(end_index, size) - begin_offset <= max_bytes
            ):
                end_index += 1
            end_offset = segment.record_end(end_index - 1, size)
            try:
                f = open(segment.path, "rb", buffering=0)  # noqa: SIM115 - closed below
            except FileNotFoundError:
                # compaction swapped the segment for its copy (same positions): go on
                # from here with the copy; retention deleting it restarts the read
                with self._lock:
                    swapped = [s for s in self._segments if s.base == segment.base]
                if not swapped or swapped[0] is segment or not swapped[0].compacted:
                    raise
                segments[index], sizes[index] = swapped[0], swapped[0].size
                continue
            with f:
                data = os.pread(f.fileno(), end_offset - begin_offset, begin_offset)
            if len(data) != end_offset - begin_offset:
                raise ServiceError(ErrorCode.INTERNAL, f"short read in {segment.path}")
            position = segment.base + end_index
            if segment.compacted and not stored:  # rebuilt records are larger than stored
                data, kept = _rebuild_columnar(
                    data, segment.path, max_bytes - total, at_least_one=not chunks
                )
                if kept < end_index - first:  # full: stop after what fits
                    position = segment.base + first + kept
                    chunks.append(data)
                    break
            chunks.append(data)
            total += len(data)
            if total >= max_bytes:
                break
        frames = b"".join(chunks) if len(chunks) != 1 else chunks[0]
        log_count = raw_size = 0
        for _, _, raw, logs in frame_headers(frames):
            raw_size += raw
            log_count += logs
        return PullResult(
            frames=frames,
            group_count=position - start,
            log_count=log_count,
            raw_size=raw_size,
            next_position=position,
            end_position=committed,
        )

    def position_at(self, received: Nanos) -> Position:
        """The first record received at or after ``received`` (the end if none)."""
        with self._lock:
            segments = list(self._segments)
            committed = self._committed
        for segment in segments:
            visible = min(segment.count, committed - segment.base)
            if visible > 0 and segment.received[visible - 1] >= received:
                return segment.base + bisect.bisect_left(segment.received, received, 0, visible)
        return committed

    def received_at(self, position: Position) -> Nanos | None:
        """The receive time of the record at ``position``; for the end, of the last record."""
        with self._lock:
            segments = list(self._segments)
            committed = self._committed
        position = min(max(position, segments[0].base if segments else committed), committed)
        if position == committed:
            position -= 1
        for segment in reversed(segments):
            if segment.base <= position < segment.base + segment.count:
                return int(segment.received[position - segment.base])
        return None


# ----------------------------------------------------------- compaction codecs


def _compact_record(
    payload: bytes, comp: int, raw_size: int, compressor: zstandard.ZstdCompressor
) -> tuple[bytes, int]:
    """The smallest stored form of one record found: columnar, zstd, or as it is."""
    if comp == COLUMNAR:
        return payload, comp
    raw = decompress(payload, Compression(comp), raw_size=raw_size, max_raw_size=1 << 31)
    best, best_comp = payload, comp
    packed = columnar.pack(raw, compressor)
    if packed is not None and len(packed) < len(best):
        best, best_comp = packed, COLUMNAR
    if (packed is None or raw_size < _SMALL_GROUP) and comp in (Compression.LZ4, Compression.NONE):
        zstd = compressor.compress(raw)
        if len(zstd) < len(best):
            best, best_comp = zstd, Compression.ZSTD
    return best, best_comp


def _rebuild_columnar(
    data: bytes, path: Path, room: int, *, at_least_one: bool
) -> tuple[bytes, int]:
    """The leading records of ``data`` (consecutive records) that fit in ``room``
    bytes once each columnar record is rebuilt into an lz4 record of the same log
    group, and how many they are.  Checksums of columnar records are verified."""
    offset = count = size = 0
    parts: list[bytes] = []
    copied = 0  # data before this is in parts
    view = memoryview(data)
    while offset < len(data):
        crc, length, position, received, raw_size, logs, comp = FRAME_HEADER.unpack_from(
            data, offset
        )
        end = offset + FRAME_HEADER_SIZE + length
        record_size = end - offset
        rebuilt = None
        if comp == COLUMNAR:
            if zlib.crc32(view[offset + 4 : end]) != crc:
                raise ServiceError(ErrorCode.INTERNAL, f"corrupt record {position} in {path}")
            try:
                raw = columnar.unpack(bytes(view[offset + FRAME_HEADER_SIZE : end]), raw_size)
            except columnar.ColumnarError as exc:
                raise ServiceError(
                    ErrorCode.INTERNAL, f"corrupt record {position} in {path}: {exc}"
                ) from None
            packed = lz4.block.compress(raw, store_size=False)
            rebuilt = encode_frame(position, received, raw_size, logs, Compression.LZ4, packed)
            record_size = len(rebuilt)
        if size + record_size > room and not (at_least_one and count == 0):
            break
        if rebuilt is not None:
            parts.append(data[copied:offset])
            parts.append(rebuilt)
            copied = end
        size += record_size
        count += 1
        offset = end
    parts.append(data[copied:offset])
    return (parts[0] if len(parts) == 1 else b"".join(parts)), count
