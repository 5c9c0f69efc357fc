"""The catalog: projects, logstores and shards, in SQLite.

The catalog stores; the engine decides.  Every method is one transaction, and
the database runs in WAL mode with ``synchronous=FULL`` so that a committed
change survives a crash.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from ..protocol.errors import ErrorCode, ServiceError
from .consumer import Checkpoint, ConsumerGroupInfo
from .sqlite import Database
from .types import LogstoreInfo, Position, ProjectInfo, ShardInfo, ShardStatus

_SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS logstores (
    project TEXT NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    uid TEXT NOT NULL UNIQUE,
    ttl INTEGER NOT NULL,
    auto_split INTEGER NOT NULL,
    max_split_shard INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    PRIMARY KEY (project, name)
);
CREATE TABLE IF NOT EXISTS consumer_groups (
    project TEXT NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    logstores TEXT NOT NULL,
    timeout INTEGER NOT NULL,
    in_order INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    PRIMARY KEY (project, scope, name)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    project TEXT NOT NULL,
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    logstore TEXT NOT NULL,
    shard_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    consumer TEXT NOT NULL,
    update_time INTEGER NOT NULL,
    PRIMARY KEY (project, scope, name, logstore, shard_id),
    FOREIGN KEY (project, scope, name) REFERENCES consumer_groups(project, scope, name)
        ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS index_configs (
    uid TEXT PRIMARY KEY REFERENCES logstores(uid) ON DELETE CASCADE,
    document TEXT NOT NULL,
    update_time INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS shards (
    uid TEXT NOT NULL REFERENCES logstores(uid) ON DELETE CASCADE,
    shard_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    begin_key TEXT NOT NULL,
    end_key TEXT NOT NULL,
    parents TEXT NOT NULL,
    children TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    PRIMARY KEY (uid, shard_id)
);
"""


def _shard(row: sqlite3.Row) -> ShardInfo:
    return ShardInfo(
        shard_id=row["shard_id"],
        status=ShardStatus(row["status"]),
        begin_key=row["begin_key"],
        end_key=row["end_key"],
        create_time=row["create_time"],
        parents=tuple(json.loads(row["parents"])),
        children=tuple(json.loads(row["children"])),
    )


def _project(row: sqlite3.Row) -> ProjectInfo:
    return ProjectInfo(row["name"], row["description"], row["create_time"], row["update_time"])


class Catalog:
    def __init__(self, path: Path) -> None:
        self._database = Database(path, _SCHEMA)
        self._db = self._database.connection
        self._lock = self._database.lock
        self.close = self._database.close
        self.transaction = self._database.transaction

    def _query(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ------------------------------------------------------------ projects

    def insert_project(self, info: ProjectInfo) -> None:
        try:
            with self.transaction() as db:
                db.execute(
                    "INSERT INTO projects VALUES (?, ?, ?, ?)",
                    (info.name, info.description, info.create_time, info.update_time),
                )
        except sqlite3.IntegrityError:
            raise ServiceError(
                ErrorCode.PROJECT_ALREADY_EXIST, f"project {info.name!r} already exists"
            ) from None

    def project(self, name: str) -> ProjectInfo:
        rows = self._query("SELECT * FROM projects WHERE name = ?", name)
        if not rows:
            raise ServiceError(ErrorCode.PROJECT_NOT_EXIST, f"project {name!r} does not exist")
        return _project(rows[0])

    def projects(self, offset: int, size: int) -> tuple[list[ProjectInfo], int]:
        total = self._query("SELECT count(*) FROM projects")[0][0]
        rows = self._query("SELECT * FROM projects ORDER BY name LIMIT ? OFFSET ?", size, offset)
        return [_project(r) for r in rows], int(total)

    def update_project(self, name: str, description: str, now: int) -> None:
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE projects SET description = ?, update_time = ? WHERE name = ?",
                (description, now, name),
            )
            if cur.rowcount == 0:
                raise ServiceError(ErrorCode.PROJECT_NOT_EXIST, f"project {name!r} does not exist")

    def delete_project(self, name: str) -> list[str]:
        """Delete a project with its logstores; returns the uids of those logstores."""
        with self.transaction() as db:
            uids = [
                r[0] for r in db.execute("SELECT uid FROM logstores WHERE project = ?", (name,))
            ]
            if db.execute("DELETE FROM projects WHERE name = ?", (name,)).rowcount == 0:
                raise ServiceError(ErrorCode.PROJECT_NOT_EXIST, f"project {name!r} does not exist")
        return uids

    # ----------------------------------------------------------- logstores

    def insert_logstore(self, info: LogstoreInfo, shards: list[ShardInfo]) -> None:
        try:
            with self.transaction() as db:
                db.execute(
                    "INSERT INTO logstores VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        info.project,
                        info.name,
                        info.uid,
                        info.ttl,
                        int(info.auto_split),
                        info.max_split_shard,
                        info.create_time,
                        info.update_time,
                    ),
                )
                for shard in shards:
                    self._insert_shard(db, info.uid, shard)
        except sqlite3.IntegrityError:
            raise ServiceError(
                ErrorCode.LOGSTORE_ALREADY_EXIST,
                f"logstore {info.name!r} already exists in project {info.project!r}",
            ) from None

    @staticmethod
    def _insert_shard(db: sqlite3.Connection, uid: str, shard: ShardInfo) -> None:
        db.execute(
            "INSERT INTO shards VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                uid,
                shard.shard_id,
                shard.status.value,
                shard.begin_key,
                shard.end_key,
                json.dumps(list(shard.parents)),
                json.dumps(list(shard.children)),
                shard.create_time,
            ),
        )

    def _logstore(self, row: sqlite3.Row) -> LogstoreInfo:
        writable = self._query(
            "SELECT count(*) FROM shards WHERE uid = ? AND status = ?",
            row["uid"],
            ShardStatus.READWRITE.value,
        )[0][0]
        return LogstoreInfo(
            project=row["project"],
            name=row["name"],
            ttl=row["ttl"],
            shard_count=int(writable),
            auto_split=bool(row["auto_split"]),
            max_split_shard=row["max_split_shard"],
            create_time=row["create_time"],
            update_time=row["update_time"],
            uid=row["uid"],
        )

    def logstore(self, project: str, name: str) -> LogstoreInfo:
        rows = self._query("SELECT * FROM logstores WHERE project = ? AND name = ?", project, name)
        if not rows:
            self.project(project)
            raise ServiceError(
                ErrorCode.LOGSTORE_NOT_EXIST,
                f"logstore {name!r} does not exist in project {project!r}",
            )
        return self._logstore(rows[0])

    def all_logstores(self) -> list[LogstoreInfo]:
        return [self._logstore(r) for r in self._query("SELECT * FROM logstores")]

    def logstores(self, project: str, offset: int, size: int) -> tuple[list[LogstoreInfo], int]:
        self.project(project)
        total = self._query("SELECT count(*) FROM logstores WHERE project = ?", project)[0][0]
        rows = self._query(
            "SELECT * FROM logstores WHERE project = ? ORDER BY name LIMIT ? OFFSET ?",
            project,
            size,
            offset,
        )
        return [self._logstore(r) for r in rows], int(total)

    def update_logstore(self, info: LogstoreInfo) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE logstores SET ttl = ?, auto_split = ?, max_split_shard = ?, "
                "update_time = ? WHERE uid = ?",
                (info.ttl, int(info.auto_split), info.max_split_shard, info.update_time, info.uid),
            )

    def delete_logstore(self, uid: str) -> None:
        with self.transaction() as db:
            row = db.execute("SELECT project, name FROM logstores WHERE uid = ?", (uid,)).fetchone()
            db.execute("DELETE FROM logstores WHERE uid = ?", (uid,))
            if row is not None:
                project, name = row
                db.execute(
                    "DELETE FROM consumer_groups WHERE project = ? AND scope = ?", (project, name)
                )
                db.execute(
                    "DELETE FROM checkpoints WHERE project = ? AND logstore = ?", (project, name)
                )

    # -------------------------------------------------------------- shards

    def shards(self, uid: str) -> list[ShardInfo]:
        rows = self._query("SELECT * FROM shards WHERE uid = ? ORDER BY shard_id", uid)
        return [_shard(r) for r in rows]

    def replace_shards(self, uid: str, retired: list[ShardInfo], created: list[ShardInfo]) -> None:
        """Mark ``retired`` readonly (with their new children) and add ``created``."""
        with self.transaction() as db:
            for shard in retired:
                db.execute(
                    "UPDATE shards SET status = ?, children = ? WHERE uid = ? AND shard_id = ?",
                    (shard.status.value, json.dumps(list(shard.children)), uid, shard.shard_id),
                )
            for shard in created:
                self._insert_shard(db, uid, shard)

    # ------------------------------------------------------ consumer groups

    @staticmethod
    def _group(row: sqlite3.Row) -> ConsumerGroupInfo:
        return ConsumerGroupInfo(
            project=row["project"],
            scope=row["scope"],
            name=row["name"],
            logstores=tuple(json.loads(row["logstores"])),
            timeout=row["timeout"],
            in_order=bool(row["in_order"]),
            create_time=row["create_time"],
            update_time=row["update_time"],
        )

    def insert_group(self, info: ConsumerGroupInfo) -> None:
        try:
            with self.transaction() as db:
                db.execute(
                    "INSERT INTO consumer_groups VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        info.project,
                        info.scope,
                        info.name,
                        json.dumps(list(info.logstores)),
                        info.timeout,
                        int(info.in_order),
                        info.create_time,
                        info.update_time,
                    ),
                )
        except sqlite3.IntegrityError:
            raise ServiceError(
                ErrorCode.CONSUMER_GROUP_ALREADY_EXIST,
                f"consumer group {info.name!r} already exists",
            ) from None

    def group(self, project: str, scope: str, name: str) -> ConsumerGroupInfo:
        rows = self._query(
            "SELECT * FROM consumer_groups WHERE project = ? AND scope = ? AND name = ?",
            project,
            scope,
            name,
        )
        if not rows:
            raise ServiceError(
                ErrorCode.CONSUMER_GROUP_NOT_EXIST, f"consumer group {name!r} does not exist"
            )
        return self._group(rows[0])

    def groups(self, project: str, scope: str) -> list[ConsumerGroupInfo]:
        rows = self._query(
            "SELECT * FROM consumer_groups WHERE project = ? AND scope = ? ORDER BY name",
            project,
            scope,
        )
        return [self._group(r) for r in rows]

    def update_group(self, info: ConsumerGroupInfo) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE consumer_groups SET timeout = ?, in_order = ?, update_time = ? "
                "WHERE project = ? AND scope = ? AND name = ?",
                (
                    info.timeout,
                    int(info.in_order),
                    info.update_time,
                    info.project,
                    info.scope,
                    info.name,
                ),
            )

    def delete_group(self, project: str, scope: str, name: str) -> None:
        with self.transaction() as db:
            cur = db.execute(
                "DELETE FROM consumer_groups WHERE project = ? AND scope = ? AND name = ?",
                (project, scope, name),
            )
            if cur.rowcount == 0:
                raise ServiceError(
                    ErrorCode.CONSUMER_GROUP_NOT_EXIST, f"consumer group {name!r} does not exist"
                )

    def checkpoints(self, group: ConsumerGroupInfo) -> dict[tuple[str, int], Checkpoint]:
        rows = self._query(
            "SELECT * FROM checkpoints WHERE project = ? AND scope = ? AND name = ?",
            group.project,
            group.scope,
            group.name,
        )
        return {
            (r["logstore"], r["shard_id"]): Checkpoint(
                r["logstore"], r["shard_id"], r["position"], r["consumer"], r["update_time"]
            )
            for r in rows
        }

    def save_checkpoint(
        self,
        group: ConsumerGroupInfo,
        logstore: str,
        shard_id: int,
        position: Position,
        consumer: str,
        now: int,
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    group.project,
                    group.scope,
                    group.name,
                    logstore,
                    shard_id,
                    position,
                    consumer,
                    now,
                ),
            )

    # -------------------------------------------------------------- indexes

    def index_config(self, uid: str) -> str | None:
        rows = self._query("SELECT document FROM index_configs WHERE uid = ?", uid)
        return str(rows[0][0]) if rows else None

    def index_configs(self) -> dict[str, str]:
        return {r[0]: r[1] for r in self._query("SELECT uid, document FROM index_configs")}

    def save_index_config(self, uid: str, document: str, now: int, *, create: bool) -> None:
        try:
            with self.transaction() as db:
                verb = "INSERT" if create else "INSERT OR REPLACE"
                db.execute(f"{verb} INTO index_configs VALUES (?, ?, ?)", (uid, document, now))
        except sqlite3.IntegrityError:
            raise ServiceError(
                ErrorCode.INDEX_ALREADY_EXIST, "the logstore already has an index"
            ) from None

    def delete_index_config(self, uid: str) -> bool:
        with self.transaction() as db:
            return db.execute("DELETE FROM index_configs WHERE uid = ?", (uid,)).rowcount > 0
