"""Prometheus metrics of producers: the InLong Go SDK's set, named the LogHarbor way.

=========================================  =========  ================  ==========================
metric                                     type       labels            InLong Go SDK
=========================================  =========  ================  ==========================
logharbor_producer_messages_total          counter    producer, code    data_proxy_msg_count
logharbor_producer_bytes_total             counter    producer, code    —
logharbor_producer_batches_total           counter    producer, code    —
logharbor_producer_errors_total            counter    producer, code    data_proxy_error_count
logharbor_producer_retries_total           counter    producer          data_proxy_retry_count
logharbor_producer_timeouts_total          counter    producer          data_proxy_timeout_count
logharbor_producer_pending_logs            gauge      producer          data_proxy_pending_msg_gauge
logharbor_producer_pending_bytes           gauge      producer          —
logharbor_producer_batch_size_bytes        histogram  producer, code    data_proxy_batch_size
logharbor_producer_batch_latency_seconds   histogram  producer, code    data_proxy_batch_time
=========================================  =========  ================  ==========================

``code`` is ``OK`` for delivered logs and batches, otherwise the final error's code.
Errors count every failed attempt. Latency runs from a batch's first log to its outcome.
Metrics are updated once per batch, never per log; the gauges read the producer's
statistics when scraped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_SIZE_BUCKETS = tuple(float(1 << n) for n in range(10, 24, 2))  # 1 KiB .. 4 MiB
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ProducerMetrics:
    """The metric families, registered once per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p, pc = ["producer"], ["producer", "code"]
        prefix = "logharbor_producer_"
        self.messages = Counter(f"{prefix}messages", "Logs by outcome", pc, registry=registry)
        self.bytes = Counter(f"{prefix}bytes", "Encoded bytes by outcome", pc, registry=registry)
        self.batches = Counter(f"{prefix}batches", "Batches by outcome", pc, registry=registry)
        self.errors = Counter(f"{prefix}errors", "Failed attempts by code", pc, registry=registry)
        self.retries = Counter(f"{prefix}retries", "Attempts sent again", p, registry=registry)
        self.timeouts = Counter(
            f"{prefix}timeouts", "Attempts that timed out", p, registry=registry
        )
        self.pending_logs = Gauge(f"{prefix}pending_logs", "Logs held", p, registry=registry)
        self.pending_bytes = Gauge(f"{prefix}pending_bytes", "Bytes held", p, registry=registry)
        self.batch_size = Histogram(
            f"{prefix}batch_size_bytes",
            "Encoded size of batches",
            pc,
            buckets=_SIZE_BUCKETS,
            registry=registry,
        )
        self.batch_latency = Histogram(
            f"{prefix}batch_latency_seconds",
            "From a batch's first log to its outcome",
            pc,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )


_BY_REGISTRY: dict[int, tuple[CollectorRegistry, ProducerMetrics]] = {}
_LOCK = threading.Lock()


def metrics_for(registry: CollectorRegistry | None) -> ProducerMetrics:
    target = REGISTRY if registry is None else registry
    with _LOCK:
        entry = _BY_REGISTRY.get(id(target))
        if entry is None:
            entry = _BY_REGISTRY[id(target)] = (target, ProducerMetrics(target))
        return entry[1]


class MetricsRecorder:
    """One producer's view of the metrics (its ``producer`` label bound)."""

    def __init__(
        self,
        metrics: ProducerMetrics,
        name: str,
        pending_logs: Callable[[], float],
        pending_bytes: Callable[[], float],
    ) -> None:
        self._m = metrics
        self._name = name
        metrics.pending_logs.labels(name).set_function(pending_logs)
        metrics.pending_bytes.labels(name).set_function(pending_bytes)

    def batch_done(self, code: str, logs: int, size: int, latency: float) -> None:
        m, name = self._m, self._name
        m.messages.labels(name, code).inc(logs)
        m.bytes.labels(name, code).inc(size)
        m.batches.labels(name, code).inc()
        m.batch_size.labels(name, code).observe(size)
        m.batch_latency.labels(name, code).observe(latency)

    def attempt_failed(self, code: str, timed_out: bool) -> None:
        self._m.errors.labels(self._name, code).inc()
        if timed_out:
            self._m.timeouts.labels(self._name).inc()

    def retried(self) -> None:
        self._m.retries.labels(self._name).inc()
