"""Configuration documents kept by name: SLS machine groups, Logtail configs,
pipeline configs and shippers, and the links between them.

LogHarbor stores these JSON documents and returns them as given (a shipper is
also run, see ``shipping.py``).  A document belongs to a project and a *scope*
inside it ("" for project-wide kinds, the logstore for shippers).  Each has a
free-form ``state`` next to it for whoever acts on it (a shipper's progress).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..protocol.errors import ErrorCode, ServiceError
from .sqlite import Database
from .types import Clock, wall_clock

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    project TEXT NOT NULL,
    kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    document TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT '{}',
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    PRIMARY KEY (project, kind, scope, name)
);
CREATE TABLE IF NOT EXISTS links (
    project TEXT NOT NULL,
    machine_group TEXT NOT NULL,
    config TEXT NOT NULL,
    PRIMARY KEY (project, machine_group, config)
);
"""


class DocumentKind(StrEnum):
    MACHINE_GROUP = "machinegroup"
    LOGTAIL_CONFIG = "config"
    PIPELINE_CONFIG = "pipelineconfig"
    SHIPPER = "shipper"


_ERRORS = {
    DocumentKind.MACHINE_GROUP: (
        ErrorCode.MACHINE_GROUP_NOT_EXIST,
        ErrorCode.MACHINE_GROUP_ALREADY_EXIST,
    ),
    DocumentKind.LOGTAIL_CONFIG: (ErrorCode.CONFIG_NOT_EXIST, ErrorCode.CONFIG_ALREADY_EXIST),
    DocumentKind.PIPELINE_CONFIG: (ErrorCode.CONFIG_NOT_EXIST, ErrorCode.CONFIG_ALREADY_EXIST),
    DocumentKind.SHIPPER: (ErrorCode.SHIPPER_NOT_EXIST, ErrorCode.SHIPPER_ALREADY_EXIST),
}


@dataclass(frozen=True, slots=True)
class Document:
    project: str
    kind: DocumentKind
    scope: str
    name: str
    document: dict[str, Any]
    state: dict[str, Any]
    create_time: int  # seconds
    update_time: int


def _check_name(kind: DocumentKind, name: object) -> None:
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= 128
        or any(c in name for c in "/?#\\")
        or not name.isprintable()
    ):
        raise ServiceError(
            ErrorCode.INVALID_NAME,
            f"invalid {kind.value} name {name!r}: use 1-128 printable characters but / ? # \\",
        )


class DocumentStore:
    """Documents in their own SQLite file (WAL, synchronous=FULL)."""

    def __init__(self, path: Path, *, clock: Clock = wall_clock) -> None:
        self.clock = clock
        self._database = Database(path, _SCHEMA)
        self._db = self._database.connection
        self._lock = self._database.lock
        self.close = self._database.close
        self._transaction = self._database.transaction

    def _now(self) -> int:
        return self.clock() // 1_000_000_000

    def create(
        self, project: str, kind: DocumentKind, scope: str, name: str, document: dict[str, Any]
    ) -> Document:
        _check_name(kind, name)
        now = self._now()
        with self._transaction() as db:
            try:
                db.execute(
                    "INSERT INTO documents (project, kind, scope, name, document, create_time, "
                    "update_time) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (project, kind.value, scope, name, json.dumps(document), now, now),
                )
            except sqlite3.IntegrityError:
                raise ServiceError(
                    _ERRORS[kind][1], f"{kind.value} {name!r} already exists"
                ) from None
        return Document(project, kind, scope, name, document, {}, now, now)

    def replace(
        self, project: str, kind: DocumentKind, scope: str, name: str, document: dict[str, Any]
    ) -> Document:
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE documents SET document = ?, update_time = ? "
                "WHERE project = ? AND kind = ? AND scope = ? AND name = ?",
                (json.dumps(document), self._now(), project, kind.value, scope, name),
            ).rowcount
        if not changed:
            raise self._missing(kind, name)
        return self.get(project, kind, scope, name)

    def save_state(
        self, project: str, kind: DocumentKind, scope: str, name: str, state: dict[str, Any]
    ) -> bool:
        """Store ``state`` next to the document; False if it was deleted meanwhile."""
        with self._transaction() as db:
            return bool(
                db.execute(
                    "UPDATE documents SET state = ? "
                    "WHERE project = ? AND kind = ? AND scope = ? AND name = ?",
                    (json.dumps(state), project, kind.value, scope, name),
                ).rowcount
            )

    def get(self, project: str, kind: DocumentKind, scope: str, name: str) -> Document:
        with self._lock:
            row = self._db.execute(
                "SELECT document, state, create_time, update_time FROM documents "
                "WHERE project = ? AND kind = ? AND scope = ? AND name = ?",
                (project, kind.value, scope, name),
            ).fetchone()
        if row is None:
            raise self._missing(kind, name)
        return Document(
            project, kind, scope, name, json.loads(row[0]), json.loads(row[1]), row[2], row[3]
        )

    def delete(self, project: str, kind: DocumentKind, scope: str, name: str) -> None:
        with self._transaction() as db:
            gone = db.execute(
                "DELETE FROM documents WHERE project = ? AND kind = ? AND scope = ? AND name = ?",
                (project, kind.value, scope, name),
            ).rowcount
            if kind is DocumentKind.MACHINE_GROUP:
                db.execute(
                    "DELETE FROM links WHERE project = ? AND machine_group = ?", (project, name)
                )
            elif kind is DocumentKind.LOGTAIL_CONFIG:
                db.execute("DELETE FROM links WHERE project = ? AND config = ?", (project, name))
        if not gone:
            raise self._missing(kind, name)

    def names(
        self,
        project: str,
        kind: DocumentKind,
        scope: str,
        *,
        offset: int = 0,
        size: int = 100,
        contains: str = "",
    ) -> tuple[list[str], int]:
        """A page of names (sorted) and the total, of those containing ``contains``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name FROM documents WHERE project = ? AND kind = ? AND scope = ? "
                "AND instr(name, ?) > 0 ORDER BY name",
                (project, kind.value, scope, contains),
            ).fetchall()
        names = [r[0] for r in rows]
        return names[offset : offset + size], len(names)

    def all(self, kind: DocumentKind) -> list[Document]:
        with self._lock:
            rows = self._db.execute(
                "SELECT project, scope, name, document, state, create_time, update_time "
                "FROM documents WHERE kind = ? ORDER BY project, scope, name",
                (kind.value,),
            ).fetchall()
        return [
            Document(r[0], kind, r[1], r[2], json.loads(r[3]), json.loads(r[4]), r[5], r[6])
            for r in rows
        ]

    def drop(self, project: str, scope: str | None = None) -> None:
        """Forget a deleted project's documents, or only those scoped to a deleted logstore."""
        with self._transaction() as db:
            if scope is None:
                db.execute("DELETE FROM documents WHERE project = ?", (project,))
                db.execute("DELETE FROM links WHERE project = ?", (project,))
            else:
                db.execute(
                    "DELETE FROM documents WHERE project = ? AND scope = ?", (project, scope)
                )

    # ------------------------------------------------ machine group ↔ config

    def link(self, project: str, machine_group: str, config: str, *, linked: bool) -> None:
        self.get(project, DocumentKind.MACHINE_GROUP, "", machine_group)
        self.get(project, DocumentKind.LOGTAIL_CONFIG, "", config)
        with self._transaction() as db:
            if linked:
                db.execute(
                    "INSERT OR IGNORE INTO links VALUES (?, ?, ?)", (project, machine_group, config)
                )
            else:
                db.execute(
                    "DELETE FROM links WHERE project = ? AND machine_group = ? AND config = ?",
                    (project, machine_group, config),
                )

    def configs_of(self, project: str, machine_group: str) -> list[str]:
        self.get(project, DocumentKind.MACHINE_GROUP, "", machine_group)
        with self._lock:
            rows = self._db.execute(
                "SELECT config FROM links WHERE project = ? AND machine_group = ? ORDER BY config",
                (project, machine_group),
            ).fetchall()
        return [r[0] for r in rows]

    def machine_groups_of(self, project: str, config: str) -> list[str]:
        self.get(project, DocumentKind.LOGTAIL_CONFIG, "", config)
        with self._lock:
            rows = self._db.execute(
                "SELECT machine_group FROM links WHERE project = ? AND config = ? "
                "ORDER BY machine_group",
                (project, config),
            ).fetchall()
        return [r[0] for r in rows]

    @staticmethod
    def _missing(kind: DocumentKind, name: str) -> ServiceError:
        return ServiceError(_ERRORS[kind][0], f"{kind.value} {name!r} does not exist")
