"""Access keys and request signature checks for the native API.

The keys live in ``<data dir>/access-keys.json`` (mode 0600).  The first start
creates a root key there.  See ``logharbor.protocol.signing`` for the scheme.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..protocol import signing
from ..protocol.errors import ErrorCode, ServiceError

KEYS_FILE = "access-keys.json"


@dataclass(frozen=True, slots=True)
class AccessKey:
    access_key_id: str
    access_key_secret: str
    create_time: int
    root: bool = False


class AccessKeyStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / KEYS_FILE
        self._lock = threading.Lock()
        self._keys: dict[str, AccessKey] = {}
        self.created_root: AccessKey | None = None
        if self.path.exists():
            self._load()
        else:
            self.created_root = self._create_root()

    def _load(self) -> None:
        document = json.loads(self.path.read_text())
        for item in document.get("keys", []):
            key = AccessKey(
                item["accessKeyId"],
                item["accessKeySecret"],
                int(item.get("createTime", 0)),
                bool(item.get("root", False)),
            )
            self._keys[key.access_key_id] = key

    def _create_root(self) -> AccessKey:
        key = AccessKey(
            "LH" + secrets.token_hex(10).upper(),
            secrets.token_urlsafe(30),
            int(time.time()),
            root=True,
        )
        self._keys[key.access_key_id] = key
        self._save()
        return key

    def _save(self) -> None:
        document = {
            "keys": [
                {
                    "accessKeyId": k.access_key_id,
                    "accessKeySecret": k.access_key_secret,
                    "createTime": k.create_time,
                    "root": k.root,
                }
                for k in self._keys.values()
            ]
        }
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(document, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        os.chmod(self.path, 0o600)

    def root(self) -> AccessKey:
        return next(k for k in self._keys.values() if k.root)

    def secret(self, access_key_id: str) -> str | None:
        key = self._keys.get(access_key_id)
        return key.access_key_secret if key else None


class Authenticator:
    def __init__(self, keys: AccessKeyStore, *, skew_seconds: int = 900) -> None:
        self.keys = keys
        self.skew_seconds = skew_seconds

    def verify(
        self,
        *,
        method: str,
        path: str,
        params: Iterable[tuple[str, str]],
        headers: dict[str, str],
        body_sha256: str,
    ) -> str:
        """Check a request's signature; returns the access key id or raises ServiceError."""
        header = headers.get("authorization")
        if not header:
            raise ServiceError(ErrorCode.UNAUTHORIZED, "the request is not signed")
        parsed = signing.parse_authorization(header)
        if parsed is None:
            raise ServiceError(
                ErrorCode.UNAUTHORIZED,
                f"malformed Authorization header; expected '{signing.ALGORITHM} "
                "Credential=<access key id>, Signature=<hex>'",
            )
        access_key_id, signature = parsed
        secret = self.keys.secret(access_key_id)
        if secret is None:
            raise ServiceError(ErrorCode.UNAUTHORIZED, f"unknown access key {access_key_id!r}")
        date = headers.get(signing.DATE_HEADER, "")
        try:
            moment = signing.parse_date(date)
        except ValueError:
            raise ServiceError(
                ErrorCode.UNAUTHORIZED,
                f"missing or malformed {signing.DATE_HEADER} header (format YYYYMMDDTHHMMSSZ)",
            ) from None
        skew = abs((datetime.now(UTC) - moment).total_seconds())
        if skew > self.skew_seconds:
            raise ServiceError(
                ErrorCode.REQUEST_TIME_EXPIRED,
                f"request date {date} is {int(skew)} s away from the server's clock "
                f"(allowed: {self.skew_seconds} s)",
            )
        claimed = headers.get(signing.CONTENT_SHA256_HEADER, "")
        if claimed != body_sha256:
            raise ServiceError(
                ErrorCode.SIGNATURE_NOT_MATCH,
                f"{signing.CONTENT_SHA256_HEADER} does not match the body",
            )
        expected = signing.signature(
            secret, signing.string_to_sign(method, path, params, body_sha256, date)
        )
        if not hmac.compare_digest(expected, signature):
            raise ServiceError(
                ErrorCode.SIGNATURE_NOT_MATCH, "the request signature does not match"
            )
        return access_key_id
