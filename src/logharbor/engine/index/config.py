"""Index configuration in the SLS shape (../shared/specs/sls.md §7.9).

``{"line": {"token": [...], "caseSensitive": bool, ...},
   "keys": {name: {"type": "text"|"long"|"double"|"json", "token": [...],
                   "caseSensitive": bool, "doc_value": bool, "alias": str, ...}}, ...}``

The document is stored and echoed back exactly as given (SLS clients read fields we
do not use).  What LogHarbor uses of it:

- ``line``: full-text search is enabled, with its token separators and case rule;
  without ``line``, bare words search nothing and only ``field: value`` works.
- ``keys``: per-field search rules (tokens, case) and the field's type: ``long`` and
  ``double`` fields compare as numbers, and in SQL every key is a column of its type.
  A ``json`` key's sub-keys are fields too: ``request.user`` is the ``user`` member
  of the JSON object in ``request`` (``json_keys`` gives sub-keys their own type,
  tokens and case; others are text with the parent's rules).
- Changing the configuration never needs re-indexing: the index keeps every field's
  raw value, and tokens, case and types apply when a query runs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ...protocol.errors import ErrorCode, ServiceError

# SLS's default separators
DEFAULT_TOKENS = tuple(" ,'\";=()[]{}?@&<>/:\n\t\r")
KEY_TYPES = ("text", "long", "double", "json")
MAX_CONFIG_BYTES = 64 << 10


@dataclass(frozen=True, slots=True)
class KeyConfig:
    type: str = "text"
    tokens: tuple[str, ...] = DEFAULT_TOKENS
    case_sensitive: bool = False
    doc_value: bool = False
    alias: str = ""
    json_keys: dict[str, KeyConfig] = field(default_factory=dict)  # of a json key


@dataclass(frozen=True, slots=True)
class IndexConfig:
    document: dict[str, Any]  # as given, echoed back
    line_tokens: tuple[str, ...] | None  # None: no full-text index
    line_case_sensitive: bool = False
    keys: dict[str, KeyConfig] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # alias → field, for SQL

    def key(self, name: str) -> KeyConfig | None:
        """The rules of a field, or of a sub-key of a json key (``parent.path``)."""
        found = self.keys.get(name)
        if found is not None:
            return found
        parent = self.json_parent(name)
        if parent is None:
            return None
        outer = self.keys[parent[0]]
        inner = outer.json_keys.get(parent[1])
        return inner or KeyConfig(tokens=outer.tokens, case_sensitive=outer.case_sensitive)

    def json_parent(self, name: str) -> tuple[str, str] | None:
        """``(json key, path)`` when ``name`` is ``<json key>.<path>`` (the longest
        such key), else None."""
        end = len(name)
        while (end := name.rfind(".", 0, end)) > 0:
            outer = self.keys.get(name[:end])
            if outer is not None and outer.type == "json" and end + 1 < len(name):
                return name[:end], name[end + 1 :]
        return None

    @property
    def text(self) -> str:
        return json.dumps(self.document, ensure_ascii=False, separators=(",", ":"))


def _error(message: str) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_PARAMETER, f"invalid index config: {message}")


def _tokens(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_TOKENS
    if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
        raise _error(f"{where}.token must be a list of non-empty strings")
    separators: list[str] = []
    for token in value:  # SLS accepts multi-character entries; each character separates
        separators.extend(c for c in _unescape(token) if c not in separators)
    return tuple(separators)


_ESCAPE = re.compile(r"\\(?:U[0-9a-fA-F]{8}|u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|[ntrfvab0\\'\"])")


def _unescape(token: str) -> str:
    """SLS writes separators as escapes (``"\\n"``, ``"\\u3001"``); other text,
    a lone backslash and non-ASCII characters included, stands for itself."""

    def one(match: re.Match[str]) -> str:
        try:  # Python's own escapes, applied to the escape alone
            return match.group(0).encode("ascii").decode("unicode_escape")
        except UnicodeDecodeError:  # \U past the last code point
            return match.group(0)

    return _ESCAPE.sub(one, token)


def _bool(value: Any, where: str, default: bool = False) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _error(f"{where} must be a boolean")
    return value


def parse_index_config(document: Any) -> IndexConfig:
    if not isinstance(document, dict):
        raise _error("the body must be a JSON object")
    if len(json.dumps(document)) > MAX_CONFIG_BYTES:
        raise _error(f"larger than {MAX_CONFIG_BYTES} bytes")
    line = document.get("line")
    line_tokens: tuple[str, ...] | None = None
    line_case = False
    if line is not None:
        if not isinstance(line, dict):
            raise _error("line must be an object")
        line_tokens = _tokens(line.get("token"), "line")
        line_case = _bool(line.get("caseSensitive"), "line.caseSensitive")
    keys = _keys(document.get("keys", {}), "keys")
    return IndexConfig(document, line_tokens, line_case, keys, _aliases(keys))


def _aliases(keys: dict[str, KeyConfig], prefix: str = "") -> dict[str, str]:
    """alias → the field it names (``outer.inner`` for a json key's member); an alias
    may be neither another alias nor a configured key's name."""
    found: dict[str, str] = {}
    for name, spec in keys.items():
        if spec.alias and spec.alias != prefix + name:
            if spec.alias in found or (not prefix and spec.alias in keys):
                raise _error(f"alias {spec.alias!r} names two fields")
            found[spec.alias] = prefix + name
        for alias, inner in _aliases(spec.json_keys, f"{prefix}{name}.").items():
            if alias in found or alias in keys:
                raise _error(f"alias {alias!r} names two fields")
            found[alias] = inner
    return found


def _keys(keys_doc: Any, where: str) -> dict[str, KeyConfig]:
    if not isinstance(keys_doc, dict):
        raise _error(f"{where} must be an object")
    keys: dict[str, KeyConfig] = {}
    for name, spec in keys_doc.items():
        if not isinstance(name, str) or not name or len(name) > 128:
            raise _error("key names must be 1-128 characters")
        if not isinstance(spec, dict):
            raise _error(f"{where}.{name} must be an object")
        kind = spec.get("type", "text")
        if kind not in KEY_TYPES:
            raise _error(f"{where}.{name}.type must be one of {', '.join(KEY_TYPES)}")
        alias = spec.get("alias", "")
        if not isinstance(alias, str):
            raise _error(f"{where}.{name}.alias must be a string")
        inner = spec.get("json_keys")
        if inner is not None and kind != "json":
            raise _error(f"{where}.{name}.json_keys needs type json")
        keys[name] = KeyConfig(
            type=kind,
            tokens=_tokens(spec.get("token"), f"{where}.{name}"),
            case_sensitive=_bool(spec.get("caseSensitive"), f"{where}.{name}.caseSensitive"),
            doc_value=_bool(spec.get("doc_value"), f"{where}.{name}.doc_value"),
            alias=alias,
            json_keys=_keys(inner, f"{where}.{name}.json_keys") if inner is not None else {},
        )
    return keys


# Used when a logstore has no index configuration: search everything, SLS defaults.
DEFAULT_CONFIG = IndexConfig({}, DEFAULT_TOKENS, False, {})
