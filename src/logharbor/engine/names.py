"""Resource naming rules, as SLS has them: lowercase letters, digits, ``-`` and ``_``,
starting and ending with a letter or digit.  Projects: 3–63 characters and no ``_``
(the SLS protocol carries the project in a DNS label).  Logstores: 2–63 characters
(SLS accepts ``ls``, and its SDK's documented workflows use such names)."""

from __future__ import annotations

import re

from ..protocol.errors import ErrorCode, ServiceError

_RULES = {
    "project": (re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"), "3-63", "'-'"),
    "logstore": (re.compile(r"^[a-z0-9][a-z0-9_-]{0,61}[a-z0-9]$"), "2-63", "'-' or '_'"),
    "consumer group": (
        re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}[A-Za-z0-9]?$"),
        "1-64",
        "'-' or '_'",
    ),
}
MAX_DESCRIPTION = 1024


def check_name(kind: str, name: object) -> str:
    pattern, length, punctuation = _RULES[kind]
    if not isinstance(name, str) or not pattern.match(name):
        raise ServiceError(
            ErrorCode.INVALID_NAME,
            f"invalid {kind} name {name!r}: use {length} lowercase letters, digits or "
            f"{punctuation}, starting and ending with a letter or digit",
        )
    return name


def check_description(description: object) -> str:
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            f"description must be a string of at most {MAX_DESCRIPTION} characters",
        )
    return description
