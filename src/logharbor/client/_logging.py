"""Ship application logs through a ``Producer``: a ``logging.Handler``, a loguru
sink and a structlog processor.

Each record becomes one log with these contents (all strings):

=============  =========================================================
``level``      ``INFO``, ``ERROR``…
``logger``     the logger's name
``message``    the formatted message (the handler's formatter, if it has one)
``file``, ``line``, ``function``, ``process``, ``thread``  where it was logged
``exception``  the formatted traceback, when there is one
``stack``      the stack, when logged with ``stack_info=True``
any ``extra``  ``str()`` of each field given with ``extra=`` (or bound, in structlog)
=============  =========================================================

The application never waits longer than ``block_timeout``: the producer's buffer
is the bounded queue. When it is full, ``overflow="drop"`` drops the record at once
and counts it (``dropped``); ``overflow="block"`` waits up to ``block_timeout``
seconds for room and then drops and counts it.

Nothing logged on a producer's own threads is shipped (``suppressed`` counts it):
httpx and httpcore log each of the producer's requests there, and a callback of a
``send`` runs there; shipped, every batch would make another. Nor is anything of the
``logharbor.producer`` logger, on any thread.

Re-configuration (``logging.config.dictConfig``) flushes and closes the old
handler: a handler that created its producer closes it, delivering what it holds;
one given a ``producer`` leaves it open. Pre-fork servers (gunicorn, uvicorn
workers, celery prefork) are safe: a forked worker gets a fresh producer state
and starts its own threads on its first record.  What a worker holds when it stops
is delivered at its exit under gunicorn; uvicorn workers die of SIGTERM without
exit handlers, so flush at the app's lifespan shutdown; celery's pool processes
need ``worker_process_shutdown`` (docs/producer.md shows each, and
tests/test_prefork_servers.py runs them).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import traceback
from collections.abc import Mapping
from typing import Any, Literal

from ._exceptions import LogHarborError
from ._models import LogItem
from ._producer import Producer, ProducerState, on_producer_thread
from ._producer_config import ProducerConfig
from ._types import PairsInput

Overflow = Literal["drop", "block"]

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
) | {"message", "asctime", "taskName"}

# The producer's own logger: shipping its records could feed back on itself.
_OWN_LOGGERS = ("logharbor.producer",)


class _Shipper:
    """What the three adapters share: where logs go and how overflow is handled."""

    def __init__(
        self,
        producer: Producer,
        project: str,
        logstore: str,
        *,
        topic: str,
        source: str | None,
        tags: PairsInput | None,
        overflow: Overflow,
        block_timeout: float,
    ) -> None:
        if overflow not in ("drop", "block"):
            raise ValueError("overflow must be 'drop' or 'block'")
        self.producer = producer
        self.project = project
        self.logstore = logstore
        self.topic = topic
        self.source = socket.gethostname() if source is None else source
        self.tags = tuple(tags.items()) if isinstance(tags, Mapping) else tuple(tags or ())
        self.wait = block_timeout if overflow == "block" else 0.0
        self.dropped = 0
        self.suppressed = 0
        self._count_lock = threading.Lock()

    def withholds(self, logger: str) -> bool:
        """Whether a record of ``logger`` logged on this thread must not be shipped
        because it would feed back (see the module docstring); counts it if so."""
        if not on_producer_thread() and not logger.startswith(_OWN_LOGGERS):
            return False
        with self._count_lock:
            self.suppressed += 1
        return True

    def ship(self, contents: dict[str, str], time_ns: int) -> None:
        try:
            self.producer._send(
                self.project,
                self.logstore,
                LogItem(contents, time_ns),
                self.topic,
                self.source,
                self.tags,
                None,
                None,
                self.wait,
            )
        except LogHarborError:  # buffer full, or closed during re-configuration
            with self._count_lock:
                self.dropped += 1


def _logging_lock_held() -> bool:
    """Whether this thread holds the logging module's lock (as inside ``dictConfig``)."""
    is_owned = getattr(getattr(logging, "_lock", None), "_is_owned", None)
    return bool(is_owned and is_owned())


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(value)


class LogHarborHandler(logging.Handler):
    """A ``logging.Handler`` that sends records to a LogHarbor logstore.

    Give either a ``producer`` (shared, left open on ``close``) or an ``endpoint``
    with credentials and an optional ``config`` (the handler then owns a producer
    and closes it on ``close``). ``dictConfig`` example::

        "handlers": {"harbor": {
            "class": "logharbor.LogHarborHandler",
            "endpoint": "http://127.0.0.1:8480", "project": "web", "logstore": "app",
            "overflow": "drop",
        }}
    """

    def __init__(
        self,
        project: str,
        logstore: str,
        *,
        producer: Producer | None = None,
        endpoint: str | None = None,
        access_key_id: str | None = None,
        access_key_secret: str | None = None,
        config: ProducerConfig | None = None,
        topic: str = "",
        source: str | None = None,
        tags: PairsInput | None = None,
        overflow: Overflow = "drop",
        block_timeout: float = 0.05,
        level: int | str = logging.NOTSET,
        flush_timeout: float = 5.0,
        close_timeout: float = 10.0,
    ) -> None:
        super().__init__(level)
        self.flush_timeout = flush_timeout
        self.close_timeout = close_timeout
        if (producer is None) == (endpoint is None):
            raise ValueError("give a producer or an endpoint, not both")
        self._owns_producer = producer is None
        if producer is None:
            assert endpoint is not None
            producer = Producer(
                endpoint,
                access_key_id=access_key_id,
                access_key_secret=access_key_secret,
                config=config,
            )
        self._shipper = _Shipper(
            producer,
            project,
            logstore,
            topic=topic,
            source=source,
            tags=tags,
            overflow=overflow,
            block_timeout=block_timeout,
        )
        self.addFilter(lambda record: not self._shipper.withholds(record.name))

    @property
    def producer(self) -> Producer:
        return self._shipper.producer

    @property
    def dropped(self) -> int:
        """Records dropped because the buffer was full (or the producer closed)."""
        return self._shipper.dropped

    @property
    def suppressed(self) -> int:
        """Records not shipped because they came from a producer (they would feed back)."""
        return self._shipper.suppressed

    def contents_of(self, record: logging.LogRecord) -> dict[str, str]:
        """The contents shipped for ``record`` (override to change them)."""
        message = self.format(record) if self.formatter else record.getMessage()
        contents = {
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            "file": _text(record.pathname),
            "line": str(record.lineno),
            "function": _text(record.funcName),
            "process": str(record.process),
            "thread": str(record.threadName),
        }
        if record.exc_info and record.exc_info[0] is not None:
            contents["exception"] = "".join(traceback.format_exception(*record.exc_info))
        elif record.exc_text:
            contents["exception"] = record.exc_text
        if record.stack_info:
            contents["stack"] = record.stack_info
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in contents:
                contents[key] = _text(value)
        return contents

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._shipper.ship(self.contents_of(record), int(record.created * 1e9))
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Send what the producer holds and wait for it (at most ``flush_timeout``).

        Inside ``dictConfig`` (which holds the logging module's lock while it flushes
        and closes the old handlers) it only starts sending: the sender threads need
        that lock to log their own HTTP requests, so waiting would stall both.
        """
        producer = self._shipper.producer
        if producer.state is ProducerState.OPEN:
            producer.flush(timeout=0.0 if _logging_lock_held() else self.flush_timeout)

    def close(self) -> None:
        """Flush; a handler that created its producer also closes it, delivering
        what it holds (in a background thread when inside ``dictConfig``)."""
        try:
            if not self._owns_producer:
                self.flush()
            elif _logging_lock_held():
                closer = threading.Thread(
                    target=self.producer.close,
                    args=(self.close_timeout,),
                    name="logharbor-handler-close",
                )
                closer.start()  # not a daemon: the interpreter waits for it at exit
            else:
                self.producer.close(self.close_timeout)
        finally:
            super().close()


class _Adapter:
    """What the loguru and structlog adapters share: a bounded, never-blocking shipper."""

    def __init__(
        self,
        producer: Producer,
        project: str,
        logstore: str,
        *,
        topic: str = "",
        source: str | None = None,
        tags: PairsInput | None = None,
        overflow: Overflow = "drop",
        block_timeout: float = 0.05,
    ) -> None:
        self._shipper = _Shipper(
            producer,
            project,
            logstore,
            topic=topic,
            source=source,
            tags=tags,
            overflow=overflow,
            block_timeout=block_timeout,
        )

    @property
    def dropped(self) -> int:
        return self._shipper.dropped

    @property
    def suppressed(self) -> int:
        return self._shipper.suppressed


class LoguruSink(_Adapter):
    """A loguru sink: ``logger.add(LoguruSink(producer, "web", "app"))``.

    Ships level, logger (the module name), message, file, line, function, process,
    thread, the exception and every ``extra`` (``logger.bind``) field.
    """

    def __call__(self, message: Any) -> None:
        record = message.record
        if self._shipper.withholds(_text(record["name"])):
            return
        contents = {
            "level": record["level"].name,
            "logger": _text(record["name"]),
            "message": record["message"],
            "file": record["file"].path,
            "line": str(record["line"]),
            "function": record["function"],
            "process": str(record["process"].id),
            "thread": record["thread"].name,
        }
        exception = record["exception"]
        if exception is not None and exception.type is not None:
            contents["exception"] = "".join(
                traceback.format_exception(exception.type, exception.value, exception.traceback)
            )
        for key, value in record["extra"].items():
            contents.setdefault(key, _text(value))
        self._shipper.ship(contents, int(record["time"].timestamp() * 1e9))


class StructlogProcessor(_Adapter):
    """A structlog processor that ships each event and passes it on unchanged::

        structlog.configure(processors=[
            structlog.processors.add_log_level,
            StructlogProcessor(producer, "web", "app"),
            structlog.processors.JSONRenderer(),
        ])

    The ``event`` becomes ``message``; ``level`` comes from the method name unless
    ``add_log_level`` set it; every other key is shipped as ``str()`` of its value
    (``exc_info=True`` becomes a formatted ``exception``).
    """

    def __call__(
        self, logger: object, method_name: str, event_dict: dict[str, Any]
    ) -> dict[str, Any]:
        if self._shipper.withholds(_text(event_dict.get("logger", ""))):
            return event_dict
        contents = {"level": str(event_dict.get("level", method_name)).upper()}
        for key, value in event_dict.items():
            if key == "event":
                contents["message"] = _text(value)
            elif key == "exc_info" and value:
                info = value if isinstance(value, tuple) else None
                text = "".join(traceback.format_exception(*info)) if info else ""
                contents["exception"] = text or traceback.format_exc()
            elif key != "level":
                contents[key] = _text(value)
        self._shipper.ship(contents, time.time_ns())
        return event_dict
