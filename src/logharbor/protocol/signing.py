"""The request signature of the native API (``LH1-HMAC-SHA256``).

A client signs every request with its access key secret::

    StringToSign = "LH1-HMAC-SHA256" "\\n"
                 + METHOD "\\n"                      # upper case
                 + PATH "\\n"                        # decoded path, e.g. /api/v1/projects/web
                 + CanonicalQuery "\\n"              # see canonical_query()
                 + hex(sha256(body)) "\\n"           # also sent as x-lh-content-sha256
                 + DATE                              # x-lh-date, e.g. 20261122T023613Z (UTC)
    Signature = hex(hmac_sha256(secret, StringToSign))
    Authorization: LH1-HMAC-SHA256 Credential=<access key id>, Signature=<signature>

The server rejects a request whose date is more than the skew window (15
minutes by default) away from its clock, whose body does not match the digest,
or whose signature does not match.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import UTC, datetime
from urllib.parse import quote

ALGORITHM = "LH1-HMAC-SHA256"
DATE_HEADER = "x-lh-date"
CONTENT_SHA256_HEADER = "x-lh-content-sha256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def format_date(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime(DATE_FORMAT)


def parse_date(value: str) -> datetime:
    return datetime.strptime(value, DATE_FORMAT).replace(tzinfo=UTC)


def canonical_query(params: Iterable[tuple[str, str]]) -> str:
    """Decoded parameters, sorted by key then value, each ``key=value`` percent-encoded
    per RFC 3986 (only ``A-Z a-z 0-9 - _ . ~`` left as they are), joined by ``&``."""
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in params)
    return "&".join(f"{k}={v}" for k, v in pairs)


def string_to_sign(
    method: str, path: str, params: Iterable[tuple[str, str]], content_sha256: str, date: str
) -> str:
    return "\n".join(
        [ALGORITHM, method.upper(), path, canonical_query(params), content_sha256, date]
    )


def signature(secret: str, text: str) -> str:
    return hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization_header(access_key_id: str, sig: str) -> str:
    return f"{ALGORITHM} Credential={access_key_id}, Signature={sig}"


def parse_authorization(value: str) -> tuple[str, str] | None:
    """``(access key id, signature)`` from an Authorization header, or None if malformed."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme != ALGORITHM:
        return None
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, val = part.strip().partition("=")
        if sep:
            fields[name.strip()] = val.strip()
    if not fields.get("Credential") or not fields.get("Signature"):
        return None
    return fields["Credential"], fields["Signature"]


def sign_headers(
    *,
    access_key_id: str,
    secret: str,
    method: str,
    path: str,
    params: Iterable[tuple[str, str]],
    body: bytes,
    now: datetime | None = None,
) -> dict[str, str]:
    """The headers that sign a request: date, content digest and Authorization."""
    digest = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    date = format_date(now)
    sig = signature(secret, string_to_sign(method, path, params, digest, date))
    return {
        DATE_HEADER: date,
        CONTENT_SHA256_HEADER: digest,
        "authorization": authorization_header(access_key_id, sig),
    }
