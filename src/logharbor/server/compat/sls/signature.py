"""SLS request signatures, v1 (``LOG ak:sig``, HMAC-SHA1) and v4
(``SLS4-HMAC-SHA256``), checked against LogHarbor access keys (spec §3)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote

from ....protocol.errors import ErrorCode, ServiceError

V1_PREFIX = "LOG "
V4_ALGORITHM = "SLS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

Params = Sequence[tuple[str, str]]  # decoded query parameters, in request order
Headers = Mapping[str, str]  # lower-case names


def _signed_log_header(name: str) -> bool:
    return name.startswith("x-acs-") or (
        name.startswith("x-log-") and not name.startswith("x-log-meta-")
    )


def v1_string_to_sign(method: str, path: str, params: Params, headers: Headers) -> str:
    """VERB, Content-MD5, Content-Type, Date, the x-log-/x-acs- headers but
    ``x-log-date`` (the SDK adds it after signing), and the resource."""
    log_headers = "".join(
        f"{name}:{headers[name]}\n"
        for name in sorted(headers)
        if _signed_log_header(name) and name != "x-log-date"
    )
    resource = path
    if params:
        resource += "?" + "&".join(f"{k}={v}" for k, v in sorted(dict(params).items()))
    return (
        f"{method}\n{headers.get('content-md5', '')}\n{headers.get('content-type', '')}\n"
        f"{headers.get('date', '')}\n{log_headers}{resource}"
    )


def v1_signature(secret: str, string_to_sign: str) -> str:
    digest = hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _v4_encode(value: str) -> str:
    return quote(value.encode("utf-8"), safe="~")


def v4_canonical_request(method: str, path: str, params: Params, headers: Headers) -> str:
    signed = sorted(
        name for name in headers if name in ("content-type", "host") or _signed_log_header(name)
    )
    query = "&".join(
        key + ("=" + _v4_encode(value) if value else "")
        for key, value in sorted(dict(params).items())
    )
    canonical_headers = "".join(f"{name}:{headers[name].strip()}\n" for name in signed)
    return "\n".join(
        [
            method,
            path,
            query,
            canonical_headers,
            ";".join(signed),
            headers.get("x-log-content-sha256", ""),
        ]
    )


def v4_signature(secret: str, day: str, region: str, date: str, canonical_request: str) -> str:
    scope = f"{day}/{region}/sls/aliyun_v4_request"
    string_to_sign = "\n".join(
        [V4_ALGORITHM, date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = hmac.new(f"aliyun_v4{secret}".encode(), day.encode(), hashlib.sha256).digest()
    for part in (region, "sls", "aliyun_v4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


class SignatureVerifier:
    """Checks one request; ``secret_of`` maps an access key id to its secret."""

    def __init__(
        self,
        secret_of: Callable[[str], str | None],
        *,
        skew_seconds: int = 900,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.secret_of = secret_of
        self.skew_seconds = skew_seconds
        self.now = now

    def verify(self, method: str, path: str, params: Params, headers: Headers, body: bytes) -> str:
        """The access key id that signed the request, or a ``ServiceError``."""
        authorization = headers.get("authorization", "")
        if authorization.startswith(V1_PREFIX):
            return self._v1(method, path, params, headers, body, authorization)
        if authorization.startswith(V4_ALGORITHM):
            return self._v4(method, path, params, headers, body, authorization)
        if not authorization:
            raise ServiceError(ErrorCode.UNAUTHORIZED, "the request is not signed")
        raise ServiceError(ErrorCode.INVALID_PARAMETER, "malformed Authorization header")

    def _secret(self, access_key_id: str) -> str:
        secret = self.secret_of(access_key_id)
        if secret is None:
            raise ServiceError(ErrorCode.UNAUTHORIZED, f"AccessKeyId {access_key_id!r} not found")
        return secret

    def _check_time(self, moment: datetime) -> None:
        skew = abs((self.now() - moment).total_seconds())
        if skew > self.skew_seconds:
            raise ServiceError(
                ErrorCode.REQUEST_TIME_EXPIRED,
                f"request time is {int(skew)} s away from the server's clock",
            )

    def _v1(
        self,
        method: str,
        path: str,
        params: Params,
        headers: Headers,
        body: bytes,
        authorization: str,
    ) -> str:
        access_key_id, sep, signature = authorization[len(V1_PREFIX) :].strip().rpartition(":")
        if not sep or not access_key_id:
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "malformed Authorization header")
        secret = self._secret(access_key_id)
        md5 = headers.get("content-md5")
        if body and md5 and md5.upper() != hashlib.md5(body).hexdigest().upper():
            raise ServiceError(ErrorCode.SIGNATURE_NOT_MATCH, "Content-MD5 does not match the body")
        try:
            moment = parsedate_to_datetime(headers.get("date", ""))
        except (TypeError, ValueError):
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "missing or invalid Date") from None
        self._check_time(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
        expected = v1_signature(secret, v1_string_to_sign(method, path, params, headers))
        if not hmac.compare_digest(expected, signature):
            raise ServiceError(ErrorCode.SIGNATURE_NOT_MATCH, f"Signature {signature} not matched.")
        return access_key_id

    def _v4(
        self,
        method: str,
        path: str,
        params: Params,
        headers: Headers,
        body: bytes,
        authorization: str,
    ) -> str:
        fields: dict[str, str] = {}
        for part in authorization[len(V4_ALGORITHM) :].split(","):
            name, _, value = part.strip().partition("=")
            fields[name] = value
        credential = fields.get("Credential", "").split("/")
        signature = fields.get("Signature", "")
        if len(credential) != 5 or not signature:
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "malformed Authorization header")
        access_key_id, day, region = credential[0], credential[1], credential[2]
        secret = self._secret(access_key_id)
        date = headers.get("x-log-date", "")
        try:
            moment = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER, "missing or invalid x-log-date"
            ) from None
        self._check_time(moment)
        digest = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        if headers.get("x-log-content-sha256", digest) != digest:
            raise ServiceError(
                ErrorCode.SIGNATURE_NOT_MATCH, "x-log-content-sha256 does not match the body"
            )
        canonical = v4_canonical_request(method, path, params, headers)
        expected = v4_signature(secret, day, region, date, canonical)
        if not hmac.compare_digest(expected, signature):
            raise ServiceError(ErrorCode.SIGNATURE_NOT_MATCH, f"Signature {signature} not matched.")
        return access_key_id
