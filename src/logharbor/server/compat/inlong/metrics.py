"""The InLong facade's Prometheus metrics, read from ``DataProxyListener.statistics()``
and the service's counters at each scrape (docs/inlong.md lists them)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .codes import DataProxyErrCode
from .listener import DataProxyListener
from .service import InLongService

PREFIX = "logharbor_inlong_"


def _labelled(
    name: str, documentation: str, labels: Iterable[str], samples: Mapping[Any, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(PREFIX + name, documentation, labels=list(labels))
    for key, value in sorted(samples.items(), key=lambda item: str(item[0])):
        values = key if isinstance(key, tuple) else (key,)
        family.add_metric([str(v) for v in values], value)
    return family


def _code_name(code: int) -> str:
    try:
        return DataProxyErrCode(code).name.lower()
    except ValueError:
        return "unknown"


class ListenerCollector(Collector):
    def __init__(self, listener: DataProxyListener, service: InLongService) -> None:
        self.listener = listener
        self.service = service

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self.listener.statistics()
        yield GaugeMetricFamily(
            PREFIX + "connections_open", "DataProxy TCP connections open", value=stats.connections
        )
        yield CounterMetricFamily(
            PREFIX + "connections_accepted",
            "DataProxy TCP connections accepted",
            value=stats.accepted,
        )
        yield CounterMetricFamily(
            PREFIX + "connections_refused",
            "DataProxy TCP connections closed at once: max_connections were open",
            value=stats.refused_connections,
        )
        yield _labelled(
            "connections_closed",
            "DataProxy TCP connections closed, by why",
            ["reason"],
            stats.closed,
        )
        yield _labelled(
            "frames_received", "DataProxy frames decoded, by message type", ["type"], stats.frames
        )
        yield _labelled(
            "received_bytes",
            "Bytes of the frames decoded (length prefix included), by message type",
            ["type"],
            stats.frame_bytes,
        )
        yield _labelled(
            "messages_received",
            "Messages in data frames whose body decoded, by message type",
            ["type"],
            stats.messages,
        )
        yield _labelled(
            "acks_sent",
            "Answers written (heartbeat replies included), by message type and result",
            ["type", "result"],
            stats.replies,
        )
        yield CounterMetricFamily(
            PREFIX + "sent_bytes", "Bytes of the answers written", value=stats.reply_bytes
        )
        yield _labelled(
            "frame_errors",
            "Frames that were not InLong frames (their connection was closed), by reason",
            ["reason"],
            stats.frame_errors,
        )
        rejected = CounterMetricFamily(
            PREFIX + "rejected_requests",
            "Data requests refused, by message type and DataProxyErrCode",
            labels=["type", "code", "reason"],
        )
        for (kind, code), value in sorted(stats.rejected.items()):
            rejected.add_metric([kind, str(code), _code_name(code)], value)
        yield rejected
        yield CounterMetricFamily(
            PREFIX + "duplicate_batches",
            "Batches not stored again: a retry of one with the same sid (TCP and HTTP)",
            value=self.service.duplicates,
        )
        yield CounterMetricFamily(
            PREFIX + "stored_messages",
            "Messages made durable (TCP and HTTP)",
            value=self.service.logs,
        )
