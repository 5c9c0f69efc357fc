"""One TLS request as a handler sees it, with the parameter rules of the TLS SDKs:
a parameter may come in the JSON body or the query string, and its key's case
differs between APIs (``ProjectId``/``ProjectID``), so both are looked up
case-insensitively.  Query values are strings; ``True``/``False`` are booleans."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from ....engine.resource_ids import ResourceIds
from ....engine.types import LogstoreInfo, ProjectInfo
from ....protocol.errors import ErrorCode, ServiceError
from ...http import invalid_parameter, load_json

_TRUE, _FALSE = {"true", "1"}, {"false", "0"}


@dataclass(slots=True)
class TlsCall:
    request: Request
    body: bytes
    request_id: str
    ids: ResourceIds
    _document: dict[str, Any] | None = field(default=None)

    def json(self) -> dict[str, Any]:
        if self._document is None:
            document: Any = {}
            if self.body.strip():
                document = load_json(self.body)
            if not isinstance(document, dict):
                raise ServiceError(ErrorCode.INVALID_BODY, "body must be a JSON object")
            self._document = {k.lower(): v for k, v in document.items()}
        return self._document

    def header(self, name: str) -> str | None:
        return self.request.headers.get(name)

    def raw(self, name: str) -> Any:
        """A parameter from the JSON body (for a non-JSON body: the query only) or the
        query string; None when absent."""
        key = name.lower()
        media = self.request.headers.get("content-type", "")
        if "json" in media or not media:
            value = self.json().get(key)
            if value is not None:
                return value
        for k, v in self.request.query_params.multi_items():
            if k.lower() == key:
                return v
        return None

    def text(self, name: str, *, required: bool = True, default: str = "") -> str:
        value = self.raw(name)
        if value is None or value == "":
            if required:
                raise invalid_parameter(f"{name} is required")
            return default
        if not isinstance(value, str):
            raise invalid_parameter(f"{name} must be a string")
        return value

    def integer(
        self, name: str, default: int | None = None, *, low: int = 0, high: int = 1 << 31
    ) -> int:
        value = self.raw(name)
        if value is None or value == "":
            if default is None:
                raise invalid_parameter(f"{name} is required")
            return default
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise invalid_parameter(f"{name} must be an integer") from None
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise invalid_parameter(f"{name} must be an integer from {low} to {high}")
        return value

    def flag(self, name: str) -> bool | None:
        value = self.raw(name)
        if value is None or value == "":
            return None
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if not isinstance(value, bool):
            raise invalid_parameter(f"{name} must be a boolean")
        return value

    def strings(self, name: str) -> list[str] | None:
        value = self.raw(name)
        if value is None:
            return None
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise invalid_parameter(f"{name} must be a list of strings")
        return value

    def project(self, name: str = "ProjectId") -> ProjectInfo:
        return self.ids.project(self.text(name))

    def topic(self, name: str = "TopicId") -> LogstoreInfo:
        return self.ids.logstore(self.text(name))
