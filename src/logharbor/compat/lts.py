"""The CTyun LTS Python SDK's surface, over LogHarbor's SDK.

Programs written for the LTS SDK run against LogHarbor by changing their imports
(``from lts import ...`` and ``from asynchronous.producer import Producer`` become
``from logharbor.compat.lts import ...``) and the endpoint and keys::

    from logharbor.compat.lts import ClientConfig, LogClient, LogItem, get_current_timestamp

    client = LogClient(ClientConfig("http://127.0.0.1:8480", ak, sk, "web"))
    item = LogItem()
    item.set_log_timestamp(get_current_timestamp(3))
    item.set_origin_msg("user logged in")
    item.contents_push_back("level", "info")
    item.labels_push_back("zone", "eu-1")
    client.put_logs("web", "app", [item]).log_print_body()

How an LTS ``LogItem`` maps onto LogHarbor's model (lossless apart from value types):

=====================  ===========================================================
LTS                    LogHarbor
=====================  ===========================================================
log project            project
log unit               logstore
``log_timestamp``      the log's ``time_ns`` (nanoseconds)
``origin_msg``         the first content, key ``__origin_msg__``
``contents``           the following contents, in order; values as ``str()``
                       (``3.1415926`` becomes ``"3.1415926"``)
``labels``             the log group's tags: items with different labels are sent
                       in different log groups
=====================  ===========================================================

LTS keys must start with a letter, so ``__origin_msg__`` never collides with one.

``ClientConfig`` settings, as the LTS document describes them: ``request_timeout``
(seconds per request), ``compress_type`` (``lz4``, ``zstd``, ``deflate`` or
``none``), ``user_agent`` (the ``User-Agent`` header of every request), ``retries``
(how often a failed request is sent again: 429, 5xx and connection failures) and
``no_retry_status_code`` (HTTP statuses never retried, even those). They apply to a
``LogClient`` and to the ``Producer``'s requests alike.

Failures raise ``LogException`` with the LTS error code:

===========  ===============================================================
``LTS_8001`` invalid content (bad key, empty value, rejected log group)
``LTS_8004`` more than 5 MiB or 40960 logs in one call, or a 413 answer
``LTS_8006`` a body the server could not decompress
``LTS_8007`` authentication failed (the LTS "token expired")
``LTS_8010`` the log project does not exist
``LTS_8011`` the log unit does not exist
``LTS_8016`` the server throttled the write (429): the log unit's write rate
``LTS_8000`` anything else (server errors, network failures)
===========  ===============================================================
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import httpx

from ..client import (
    AuthenticationError,
    BatchPolicy,
    LogGroup,
    LogHarborError,
    PayloadTooLargeError,
    RetryPolicy,
    SendResult,
    ThrottledError,
    Timeout,
)
from ..client import (
    LogClient as _LogClient,
)
from ..client import LogItem as _LogItem
from ..client import Producer as _Producer
from ..client import ProducerConfig as _ProducerConfig

__all__ = [
    "ClientConfig",
    "LogClient",
    "LogException",
    "LogItem",
    "LogResponse",
    "Producer",
    "ProducerConfig",
    "get_current_timestamp",
]

ORIGIN_MSG_KEY = "__origin_msg__"
MAX_BATCH_BYTES = 5 << 20
MAX_BATCH_COUNT = 40960
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")
_log = logging.getLogger("logharbor.compat.lts")


def get_current_timestamp(precision: int = 9) -> int:
    """Now, in nanoseconds since the epoch, truncated to ``precision`` decimal digits
    of the second (``3``: milliseconds, ``9``: nanoseconds)."""
    unit: int = 10 ** (9 - max(0, min(9, precision)))
    return time.time_ns() // unit * unit


class LogException(Exception):
    """An LTS SDK error: ``error_code`` is one of the ``LTS_xxxx`` codes."""

    def __init__(
        self,
        error_code: str,
        error_message: str,
        request_id: str = "",
        status_code: int = -1,
    ) -> None:
        super().__init__(error_code, error_message)
        self.error_code = error_code
        self.error_message = error_message
        self.request_id = request_id
        self.status_code = status_code

    def get_error_code(self) -> str:
        return self.error_code

    def get_error_message(self) -> str:
        return self.error_message

    def get_request_id(self) -> str:
        return self.request_id

    def __str__(self) -> str:
        body = {"statusCode": self.status_code, "error": self.error_code}
        body["message"] = self.error_message
        if self.request_id:
            body["requestId"] = self.request_id
        return "LogException " + json.dumps(body, ensure_ascii=False)


_BY_CODE = {
    "ProjectNotExist": "LTS_8010",
    "LogStoreNotExist": "LTS_8011",
    "InvalidLogGroup": "LTS_8001",
    "ParameterInvalid": "LTS_8001",
    "InvalidName": "LTS_8001",
    "InvalidCompressType": "LTS_8006",
}


def lts_error(error: LogHarborError) -> LogException:
    """The ``LogException`` (and LTS code) for a LogHarbor SDK error."""
    code = _BY_CODE.get(error.code)
    if code is None:
        if isinstance(error, PayloadTooLargeError):
            code = "LTS_8004"
        elif isinstance(error, ThrottledError):
            code = "LTS_8016"
        elif isinstance(error, AuthenticationError):
            code = "LTS_8007"
        elif error.code == "PostBodyInvalid":
            code = "LTS_8006" if "corrupt" in error.message else "LTS_8001"
        else:
            code = "LTS_8000"
    return LogException(code, f"{error.code}: {error.message}", error.request_id or "")


def _value(value: object) -> str:
    return value if isinstance(value, str) else str(value)


class LogItem:
    """One LTS log: a nanosecond timestamp, the original message, contents, labels."""

    def __init__(self) -> None:
        self.log_timestamp = 0
        self.origin_msg = ""
        self.contents: dict[str, Any] = {}
        self.labels: dict[str, Any] = {}

    def set_log_timestamp(self, timestamp: int) -> None:
        self.log_timestamp = int(timestamp)

    def get_log_timestamp(self) -> int:
        return self.log_timestamp

    def set_origin_msg(self, message: str) -> None:
        self.origin_msg = message

    def get_origin_msg(self) -> str:
        return self.origin_msg

    def contents_push_back(self, key: str, value: Any) -> None:
        self.contents[key] = value

    def set_contents(self, contents: dict[str, Any]) -> None:
        self.contents = dict(contents)

    def get_contents(self) -> dict[str, Any]:
        return self.contents

    def labels_push_back(self, key: str, value: Any) -> None:
        self.labels[key] = value

    def set_labels(self, labels: dict[str, Any]) -> None:
        self.labels = dict(labels)

    def get_labels(self) -> dict[str, Any]:
        return self.labels

    def to_log_item(self) -> _LogItem:
        """The LogHarbor log (see the mapping in the module docstring); raises
        ``LogException`` ``LTS_8001`` for a key or value LTS would refuse."""
        pairs = [(ORIGIN_MSG_KEY, _value(self.origin_msg))]
        for key, value in self.contents.items():
            _check(key, value, "content")
            pairs.append((key, _value(value)))
        time_ns = self.log_timestamp or time.time_ns()
        try:
            return _LogItem(pairs, time_ns)
        except (TypeError, ValueError) as exc:
            raise LogException("LTS_8001", str(exc)) from None

    def tags(self) -> tuple[tuple[str, str], ...]:
        for key, value in self.labels.items():
            _check(key, value, "label")
        return tuple((key, _value(value)) for key, value in self.labels.items())


def _check(key: object, value: object, what: str) -> None:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise LogException(
            "LTS_8001",
            f"{what} key {key!r} must be 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter",
        )
    if value is None or _value(value) == "":
        raise LogException("LTS_8001", f"{what} {key!r} has an empty value")


def _by_labels(
    items: LogItem | Sequence[LogItem],
) -> list[tuple[tuple[tuple[str, str], ...], list[_LogItem]]]:
    """Items grouped by their labels, in order of first appearance."""
    groups: dict[tuple[tuple[str, str], ...], list[_LogItem]] = {}
    for item in [items] if isinstance(items, LogItem) else items:
        groups.setdefault(item.tags(), []).append(item.to_log_item())
    return list(groups.items())


def _compression(config: ClientConfig) -> Literal["none", "lz4", "zstd", "deflate"]:
    name = (config.compress_type or "none").lower()
    if name in ("none", "zstd", "deflate"):
        return name  # type: ignore[return-value]
    return "lz4"


@dataclass(frozen=True, slots=True, kw_only=True)
class _LtsRetry(RetryPolicy):
    """``RetryPolicy`` that never retries the statuses of ``no_retry_status_code``."""

    no_retry: frozenset[int] = frozenset()

    def delay_before_retry(self, error: LogHarborError, retries_done: int) -> float | None:
        if error.status in self.no_retry:
            return None
        # (not super(): a dataclass with slots is a new class that super() cannot see)
        return RetryPolicy.delay_before_retry(self, error, retries_done)


def _retry(config: ClientConfig) -> RetryPolicy:
    return _LtsRetry(
        max_retries=max(0, config.retries), no_retry=frozenset(config.no_retry_status_code)
    )


class ClientConfig:
    """Where and how a ``LogClient`` (or a producer's client) talks to the server."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        log_project: str = "",
        request_timeout: float = 30,
        compress_type: str = "lz4",
        user_agent: str = "lts-sdk-python/logharbor",
        retries: int = 3,
        no_retry_status_code: Sequence[int] = (),
    ) -> None:
        self.endpoint = endpoint
        self.access_key = access_key
        self.secret_key = secret_key
        self.log_project = log_project
        self.request_timeout = request_timeout
        self.compress_type = compress_type
        self.user_agent = user_agent
        self.retries = retries
        self.no_retry_status_code = list(no_retry_status_code)


class LogResponse:
    """The answer to ``put_logs``: ``statusCode`` 0 and ``SUCCESS``."""

    def __init__(self, count: int, status_code: int = 0, message: str = "SUCCESS") -> None:
        self.count = count
        self.status_code = status_code
        self.message = message
        self.error = ""

    def get_body(self) -> dict[str, Any]:
        return {"statusCode": self.status_code, "message": self.message, "error": self.error}

    def log_print_body(self) -> None:
        print(json.dumps(self.get_body(), separators=(",", ":")))


class LogClient:
    """Synchronous uploads: each ``put_logs`` is one request per label set.

    ``transport`` replaces the network (tests), as for LogHarbor's ``LogClient``.
    """

    def __init__(
        self,
        client_config: ClientConfig | None = None,
        *,
        endpoint: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if client_config is None:
            if endpoint is None or access_key is None or secret_key is None:
                raise ValueError("give a ClientConfig, or endpoint, access_key and secret_key")
            client_config = ClientConfig(endpoint, access_key, secret_key)
        self.config = client_config
        self._client = _LogClient(
            client_config.endpoint,
            access_key_id=client_config.access_key,
            access_key_secret=client_config.secret_key,
            timeout=client_config.request_timeout,
            retry=_retry(client_config),
            transport=transport,
        )
        # LogHarbor's LogClient takes no user agent: set the header of its session.
        self._client._http.headers["user-agent"] = client_config.user_agent

    def put_logs(
        self, log_project: str, unit_code: str, log_items: LogItem | Sequence[LogItem]
    ) -> LogResponse:
        """Write the logs, one log group per label set; raises ``LogException``.

        The limits (``LTS_8004``) are checked before anything is sent, so a call
        over them stores nothing: at most 40960 logs and 5 MiB of encoded logs.
        """
        groups = _by_labels(log_items)
        count = sum(len(logs) for _, logs in groups)
        if count > MAX_BATCH_COUNT:
            raise LogException("LTS_8004", f"{count} logs in one call; the limit is 40960")
        bodies = [LogGroup(logs, tags=tags).to_protobuf() for tags, logs in groups]
        size = sum(map(len, bodies))
        if size > MAX_BATCH_BYTES:
            raise LogException(
                "LTS_8004",
                f"{size} bytes of logs in one call; the limit is 5 MiB ({MAX_BATCH_BYTES})",
            )
        for body in bodies:
            try:
                self._client.put_log_group_raw(
                    log_project, unit_code, body, compression=_compression(self.config)
                )
            except LogHarborError as error:
                raise lts_error(error) from error
        return LogResponse(count)

    def close(self) -> None:
        self._client.close()


class ProducerConfig:
    """Batching settings of the asynchronous ``Producer`` (LTS names and defaults)."""

    def __init__(
        self,
        max_batch_size: int = 512 * 1024,
        max_batch_count: int = 4096,
        linger_ms: int = 2000,
        worker_count: int = 8,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.max_batch_count = max_batch_count
        self.linger_ms = linger_ms
        self.worker_count = worker_count

    # The names of the LTS document's table.
    default_batch_size = property(
        lambda self: self.max_batch_size, lambda self, v: setattr(self, "max_batch_size", v)
    )
    default_batch_count = property(
        lambda self: self.max_batch_count, lambda self, v: setattr(self, "max_batch_count", v)
    )
    default_linger_ms = property(
        lambda self: self.linger_ms, lambda self, v: setattr(self, "linger_ms", v)
    )
    default_worker_count = property(
        lambda self: self.worker_count, lambda self, v: setattr(self, "worker_count", v)
    )

    def to_config(self, client: ClientConfig) -> _ProducerConfig:
        batch = BatchPolicy(
            max_bytes=min(self.max_batch_size, MAX_BATCH_BYTES),
            max_count=min(self.max_batch_count, MAX_BATCH_COUNT),
            linger=max(0, self.linger_ms) / 1000,
        )
        return _ProducerConfig(
            batch=batch,
            workers=self.worker_count,
            retry=replace(_retry(client), backoff_max=50.0),
            timeout=Timeout.of(client.request_timeout),
            compression=_compression(client),
            name=f"lts-{client.log_project or 'default'}",
            user_agent=client.user_agent,
        )


Callback = Callable[[SendResult], object]


def print_callback(result: SendResult) -> None:
    """The LTS SDK's default callback: print the response and the count."""
    if result.success:
        body = {"statusCode": 0, "message": "SUCCESS", "error": ""}
    else:
        assert result.error is not None
        error = lts_error(result.error)
        body = {"statusCode": -1, "message": error.error_message, "error": error.error_code}
    print(f"response: {json.dumps(body, ensure_ascii=False)}, send count : {result.log_count}")


class Producer:
    """Asynchronous batched uploads: ``build_clients``, ``start``, ``send_logs``...

    One LogHarbor ``Producer`` per project given to ``build_clients``.
    """

    def __init__(self, producer_config: ProducerConfig | None = None) -> None:
        self.producer_config = producer_config or ProducerConfig()
        self._configs: dict[str, ClientConfig] = {}
        self._producers: dict[str, _Producer] = {}
        self._lock = threading.Lock()

    def build_clients(self, client_config: ClientConfig) -> None:
        self._configs[client_config.log_project] = client_config

    def start(self) -> None:
        with self._lock:
            for project, config in self._configs.items():
                if project not in self._producers:
                    self._producers[project] = _Producer(
                        config.endpoint,
                        access_key_id=config.access_key,
                        access_key_secret=config.secret_key,
                        config=self.producer_config.to_config(config),
                    )

    def _producer(self, project: str) -> _Producer:
        producer = self._producers.get(project)
        if producer is None:
            raise LogException("LTS_8010", f"no client was built for log project {project!r}")
        return producer

    def send_logs(
        self, log_project: str, log_unit: str, log_items: LogItem | Sequence[LogItem]
    ) -> None:
        """Queue logs; their outcome is not reported."""
        self._send(log_project, log_unit, log_items, None)

    def send_logs_callback(
        self,
        log_project: str,
        log_unit: str,
        log_items: LogItem | Sequence[LogItem],
        callback: Callback | None = None,
    ) -> None:
        """Queue logs; ``callback`` (default: print like the LTS SDK) gets a
        ``SendResult`` for each label set once it is delivered or has failed."""
        self._send(log_project, log_unit, log_items, callback or print_callback)

    def _send(
        self,
        project: str,
        unit: str,
        items: LogItem | Sequence[LogItem],
        callback: Callback | None,
    ) -> None:
        producer = self._producer(project)
        for tags, logs in _by_labels(items):
            try:
                producer.send(project, unit, logs, tags=tags, callback=callback)
            except LogHarborError as error:
                raise lts_error(error) from error

    def safe_close(self) -> None:
        """Deliver everything held, then stop."""
        for producer in self._producers.values():
            producer.close()

    def close(self, timeout_ms: int) -> None:
        """Stop within ``timeout_ms``; raises ``LogException`` (``LTS_8000``) naming
        how many logs were given up on (each reported to its callback)."""
        deadline = time.monotonic() + timeout_ms / 1000
        lost = 0
        for producer in self._producers.values():
            lost += len(producer.close(max(0.0, deadline - time.monotonic())))
        if lost:
            raise LogException("LTS_8000", f"the producer closed before {lost} logs were sent")
