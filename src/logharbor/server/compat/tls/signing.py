"""Volcengine V4 request signatures (``HMAC-SHA256``, scope ``<date>/<region>/TLS/request``),
verified from the received request (../shared/specs/tls.md §1.5)."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from urllib.parse import quote

from ....protocol.errors import ErrorCode, ServiceError

ALGORITHM = "HMAC-SHA256"
_AUTHORIZATION = re.compile(
    r"HMAC-SHA256 Credential=(?P<ak>[^/\s,]+)/(?P<date>\d{8})/(?P<region>[^/\s,]+)"
    r"/(?P<service>[^/\s,]+)/request, SignedHeaders=(?P<signed>[a-z0-9;_-]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})"
)


class AuthError(ServiceError):
    """An authentication failure; ``tls_code`` is the TLS error code to answer with."""

    def __init__(self, tls_code: str, code: ErrorCode, message: str) -> None:
        super().__init__(code, message)
        self.tls_code = tls_code


def _encode(value: str) -> str:
    return quote(value, safe="-_.~")


def canonical_query(params: Iterable[tuple[str, str]]) -> str:
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(params))


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = secret.encode()
    for part in (date, region, service, "request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signature(
    *,
    secret: str,
    method: str,
    path: str,
    params: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed: list[str],
    body_sha256: str,
    x_date: str,
    region: str,
    service: str,
) -> str:
    """The hex signature of a request; ``headers`` keyed by lower-case name."""
    canonical_headers = ""
    for name in signed:
        value = headers.get(name, "")
        if name == "host" and (value.endswith(":80") or value.endswith(":443")):
            value = value.rsplit(":", 1)[0]
        canonical_headers += f"{name}:{value}\n"
    canonical = "\n".join(
        [
            method,
            quote(path, safe="/-_.~"),
            canonical_query(params),
            canonical_headers,
            ";".join(signed),
            body_sha256,
        ]
    )
    scope = f"{x_date[:8]}/{region}/{service}/request"
    to_sign = "\n".join([ALGORITHM, x_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = signing_key(secret, x_date[:8], region, service)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


class V4Verifier:
    def __init__(self, secret: Callable[[str], str | None], *, skew_seconds: int) -> None:
        self._secret = secret
        self.skew_seconds = skew_seconds

    def verify(
        self,
        *,
        method: str,
        path: str,
        params: Iterable[tuple[str, str]],
        headers: Mapping[str, str],
        body: bytes,
    ) -> str:
        """Check a request; returns the access key id or raises ``AuthError``."""
        header = headers.get("authorization", "")
        if not header:
            raise AuthError("AuthFailed", ErrorCode.UNAUTHORIZED, "the request is not signed")
        match = _AUTHORIZATION.fullmatch(header.strip())
        if match is None:
            raise AuthError(
                "AuthFailed",
                ErrorCode.UNAUTHORIZED,
                "malformed Authorization header; expected 'HMAC-SHA256 Credential=<AK>/"
                "<yyyymmdd>/<region>/TLS/request, SignedHeaders=<names>, Signature=<hex>'",
            )
        secret = self._secret(match["ak"])
        if secret is None:
            raise AuthError(
                "InvalidAccessKeyId", ErrorCode.UNAUTHORIZED, f"unknown access key {match['ak']!r}"
            )
        x_date = headers.get("x-date", "")
        try:
            moment = datetime.strptime(x_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise AuthError(
                "AuthFailed", ErrorCode.UNAUTHORIZED, "missing or malformed X-Date header"
            ) from None
        if x_date[:8] != match["date"]:
            raise AuthError(
                "SignatureDoesNotMatch",
                ErrorCode.SIGNATURE_NOT_MATCH,
                "the credential scope's date does not match X-Date",
            )
        skew = abs((datetime.now(UTC) - moment).total_seconds())
        if skew > self.skew_seconds:
            raise AuthError(
                "RequestTimeTooSkewed",
                ErrorCode.REQUEST_TIME_EXPIRED,
                f"X-Date {x_date} is {int(skew)} s away from the server's clock "
                f"(allowed: {self.skew_seconds} s)",
            )
        expected = signature(
            secret=secret,
            method=method,
            path=path,
            params=params,
            headers=headers,
            signed=match["signed"].split(";"),
            body_sha256=hashlib.sha256(body).hexdigest(),
            x_date=x_date,
            region=match["region"],
            service=match["service"],
        )
        if not hmac.compare_digest(expected, match["signature"]):
            raise AuthError(
                "SignatureDoesNotMatch",
                ErrorCode.SIGNATURE_NOT_MATCH,
                "the request signature does not match",
            )
        return match["ak"]
