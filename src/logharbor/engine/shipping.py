"""Shippers: deliver a logstore's data to files in a local directory, on a schedule.

A shipper is a stored document (``documents.py``, kind ``shipper``, scoped to its
logstore) in the SLS shape ``{"shipperName", "targetType", "targetConfiguration"}``.
LogHarbor reads from ``targetConfiguration``:

- ``bufferInterval``: seconds between deliveries (default 300, at least 1);
- ``storage.format`` (or ``format``): ``json`` (JSON lines, the default) or ``parquet``.

Every interval, the shipper reads each shard from where it stopped (at first: the
first log group received at or after the shipper's creation) to the shard's end,
and writes files of the new data under
``<root>/<project>/<logstore>/<shipper>/<YYYY>/<MM>/<DD>/<HH>/``: one per shard, or
more when a shard has more than ``FILE_COST`` of decoded data, so that a run never
holds more than that in memory.  A file is written under a temporary name and
renamed, then the new positions are saved: delivery is at least once (a crash
between the two repeats that file's data).
Each run that delivered data or failed is recorded as a task.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..protocol.codec import iter_frames
from ..protocol.errors import ServiceError
from ..protocol.schema import RawLogGroup
from .documents import Document, DocumentKind, DocumentStore
from .engine import Engine
from .types import NANOS_PER_SECOND

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 300
MAX_TASKS = 100
_BATCH_GROUPS = 1000
FILE_COST = 64 << 20  # decoded bytes in one delivered file (about), plus...
ROW_COST = 300  # ...this much a log: one file's rows are held in memory


@dataclass(frozen=True, slots=True)
class ShipperSettings:
    interval: int  # seconds
    format: str  # "json" or "parquet"

    @classmethod
    def of(cls, document: dict[str, Any]) -> ShipperSettings:
        target = document.get("targetConfiguration")
        target = target if isinstance(target, dict) else {}
        interval = target.get("bufferInterval", DEFAULT_INTERVAL)
        if not isinstance(interval, int) or isinstance(interval, bool):
            interval = DEFAULT_INTERVAL
        storage = target.get("storage")
        fmt = storage.get("format") if isinstance(storage, dict) else target.get("format")
        return cls(max(1, interval), "parquet" if fmt == "parquet" else "json")


def log_rows(frames: bytes) -> Iterator[dict[str, str]]:
    """Stored frames as flat rows, SLS style: ``__time__``, ``__topic__``,
    ``__source__``, ``__tag__:<key>`` and the contents, all strings."""
    for frame in iter_frames(frames, verify=False):
        group = RawLogGroup.FromString(frame.raw())
        shared = {"__topic__": _text(group.Topic), "__source__": _text(group.Source)}
        shared.update({f"__tag__:{_text(t.Key)}": _text(t.Value) for t in group.LogTags})
        for entry in group.Logs:
            row = {"__time__": str(entry.Time), **shared}
            for content in entry.Contents:
                row[_text(content.Key)] = _text(content.Value)
            yield row


def _text(value: bytes | str) -> str:
    """Keys and values as text: bytes that are not UTF-8 (which writes may hold) are
    replaced (a key of b"\\xff" stopped a shipper for good: JSON refused it)."""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


class Shipping:
    """Runs every shipper when it is due, on a background thread."""

    def __init__(
        self, engine: Engine, documents: DocumentStore, root: Path, *, tick: float = 0.5
    ) -> None:
        self.engine = engine
        self.documents = documents
        self.root = root
        self.tick = tick
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="logharbor-shipping", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stopping.wait(self.tick):
            try:
                self.run_due()
            except Exception:  # keep shipping the others; the next tick tries again
                log.exception("shipping pass failed")

    def run_due(self, *, force: bool = False) -> int:
        """Run every shipper whose interval has passed (all with ``force``);
        returns the logs delivered."""
        delivered = 0
        now = self.engine.clock()
        for doc in self.documents.all(DocumentKind.SHIPPER):
            settings = ShipperSettings.of(doc.document)
            last = int(doc.state.get("lastRun", doc.create_time * NANOS_PER_SECOND))
            if force or now - last >= settings.interval * NANOS_PER_SECOND:
                delivered += self._run(doc, settings, now)
        return delivered

    def _run(self, doc: Document, settings: ShipperSettings, now: int) -> int:
        state = dict(doc.state)
        positions: dict[str, int] = dict(state.get("positions", {}))
        task: dict[str, Any] = {
            "id": f"{doc.name}-{now}",
            "taskCreateTime": now // NANOS_PER_SECOND,
            "taskLastDataReceiveTime": 0,
        }
        shipped = 0
        try:
            for shard in self.engine.list_shards(doc.project, doc.scope):
                key = str(shard.shard_id)
                start = positions.get(key)
                if start is None:
                    start = self.engine.cursor(
                        doc.project, doc.scope, shard.shard_id, doc.create_time * NANOS_PER_SECOND
                    )
                for part in itertools.count():
                    rows, position, received, more = self._read(doc, shard.shard_id, start)
                    if rows:
                        self._write(doc, settings, shard.shard_id, now, rows, part)
                        shipped += len(rows)
                        task["taskLastDataReceiveTime"] = max(
                            task["taskLastDataReceiveTime"], received // NANOS_PER_SECOND
                        )
                    positions[key] = start = position
                    if not more:
                        break
                    # saved after each file: a crash repeats that file only
                    state.update(positions=positions)
                    self.documents.save_state(
                        doc.project, DocumentKind.SHIPPER, doc.scope, doc.name, state
                    )
            task.update(taskStatus="success", taskMessage=f"{shipped} logs delivered")
        except Exception as exc:  # a failed task, for the operator to see; the next run retries
            if not isinstance(exc, ServiceError | OSError | ValueError):
                log.exception("shipper %s failed", doc.name)
            task.update(taskStatus="fail", taskMessage=str(exc))
        task["taskFinishTime"] = self.engine.clock() // NANOS_PER_SECOND
        tasks = list(state.get("tasks", []))
        if shipped or task["taskStatus"] == "fail":
            tasks = [*tasks, task][-MAX_TASKS:]
        state.update(positions=positions, lastRun=now, tasks=tasks)
        self.documents.save_state(doc.project, DocumentKind.SHIPPER, doc.scope, doc.name, state)
        return shipped

    def _read(
        self, doc: Document, shard: int, start: int
    ) -> tuple[list[dict[str, str]], int, int, bool]:
        """One file's rows from ``start``: (rows, the position after them, the
        latest receive time, whether the shard has more)."""
        rows: list[dict[str, str]] = []
        position, received, cost = start, 0, 0
        while True:
            pulled = self.engine.pull(doc.project, doc.scope, shard, position, count=_BATCH_GROUPS)
            if pulled.group_count == 0:
                return rows, pulled.next_position, received, False
            result = pulled.within(max(FILE_COST - cost, 1), ROW_COST)
            rows.extend(log_rows(result.frames))
            for frame in iter_frames(result.frames, verify=False):
                received = max(received, frame.received_ns)
            cost += result.raw_size + ROW_COST * result.log_count
            position = result.next_position
            if position >= result.end_position:
                return rows, position, received, False
            if cost >= FILE_COST or result is not pulled:
                return rows, position, received, True

    def directory(self, doc: Document) -> Path:
        return self.root / doc.project / doc.scope / doc.name

    def _write(
        self,
        doc: Document,
        settings: ShipperSettings,
        shard: int,
        now: int,
        rows: list[dict[str, str]],
        part: int = 0,
    ) -> Path:
        moment = time.gmtime(now // NANOS_PER_SECOND)
        folder = self.directory(doc) / time.strftime("%Y/%m/%d/%H", moment)
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{time.strftime('%Y%m%dT%H%M%SZ', moment)}_{now % NANOS_PER_SECOND:09d}_{shard}"
        if part:
            stem += f"_{part}"
        target = folder / f"{stem}.{'parquet' if settings.format == 'parquet' else 'jsonl'}"
        partial = target.with_name(target.name + ".partial")
        with partial.open("wb") as out:
            if settings.format == "parquet":
                import pyarrow as pa
                import pyarrow.parquet as pq

                names = list(dict.fromkeys(name for row in rows for name in row))
                table = pa.Table.from_pydict({n: [row.get(n) for row in rows] for n in names})
                pq.write_table(table, out)
            else:
                for row in rows:
                    out.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
            out.flush()
            os.fsync(out.fileno())  # durable before the positions move past it
        partial.replace(target)
        return target

    def tasks(self, doc: Document) -> list[dict[str, Any]]:
        return list(doc.state.get("tasks", []))
