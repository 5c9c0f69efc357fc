"""Stable ids for projects and logstores, for protocols that name resources by id
(TLS: ``ProjectId``, ``TopicId``).

Nothing is stored: a logstore's id is its catalog uid written as a UUID, and a
project's id is a name-based UUID of its name and creation time.  Both change
when the resource is deleted and created again, so an old id never reaches a
new resource.  Looking an id up scans the catalog on a cache miss.
"""

from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING

from ..protocol.errors import ErrorCode, ServiceError
from .types import LogstoreInfo, ProjectInfo

if TYPE_CHECKING:
    from .engine import Engine

_PROJECT_NAMESPACE = uuid.UUID("6f1c3d0e-8a5b-4a8e-9d3e-4c0b7a1f2e65")
_PAGE = 500


def project_id(info: ProjectInfo) -> str:
    return str(uuid.uuid5(_PROJECT_NAMESPACE, f"{info.name}/{info.create_time}"))


def logstore_id(info: LogstoreInfo) -> str:
    return str(uuid.UUID(hex=info.uid))


class ResourceIds:
    """Resolves ids back to names (raising the precise not-found error)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._projects: dict[str, str] = {}  # id → name
        self._logstores: dict[str, tuple[str, str]] = {}  # uid → (project, name)

    def project(self, pid: str) -> ProjectInfo:
        name = self._projects.get(pid)
        if name is not None:
            try:
                info = self._engine.get_project(name)
            except ServiceError:
                info = None
            if info is not None and project_id(info) == pid:
                return info
        found = self._scan_projects(pid)
        if found is None:
            raise ServiceError(ErrorCode.PROJECT_NOT_EXIST, f"project {pid!r} does not exist")
        return found

    def _scan_projects(self, pid: str) -> ProjectInfo | None:
        offset, found = 0, None
        with self._lock:
            while True:
                page, total = self._engine.list_projects(offset, _PAGE)
                for info in page:
                    self._projects[project_id(info)] = info.name
                    if project_id(info) == pid:
                        found = info
                offset += len(page)
                if not page or offset >= total:
                    return found

    def logstore(self, lid: str) -> LogstoreInfo:
        try:
            uid = uuid.UUID(lid).hex
        except (ValueError, AttributeError, TypeError):
            raise ServiceError(
                ErrorCode.LOGSTORE_NOT_EXIST, f"topic {lid!r} does not exist"
            ) from None
        for attempt in range(2):
            names = self._logstores.get(uid)
            if names is not None:
                try:
                    info = self._engine.get_logstore(*names)
                except ServiceError:
                    info = None
                if info is not None and info.uid == uid:
                    return info
            if attempt == 0:
                with self._lock:
                    self._logstores = {
                        i.uid: (i.project, i.name) for i in self._engine.catalog.all_logstores()
                    }
        raise ServiceError(ErrorCode.LOGSTORE_NOT_EXIST, f"topic {lid!r} does not exist")
