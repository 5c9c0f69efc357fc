"""Prometheus metrics of one server (a registry per app, so tests can run several)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request

from ..engine import Engine


class _EngineCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self.engine.statistics()
        yield CounterMetricFamily(
            "logharbor_commit_batches", "Group-commit batches written", value=stats.batches
        )
        yield CounterMetricFamily(
            "logharbor_commit_syncs", "fsyncs issued by group commit", value=stats.syncs
        )
        yield CounterMetricFamily(
            "logharbor_ingested_log_groups", "Log groups made durable", value=stats.appends
        )
        yield CounterMetricFamily(
            "logharbor_ingested_bytes", "Stored bytes made durable", value=stats.bytes
        )
        yield GaugeMetricFamily(
            "logharbor_commit_pending_bytes",
            "Bytes waiting in the write queue",
            value=stats.pending_bytes,
        )
        lag = GaugeMetricFamily(
            "logharbor_index_lag_log_groups",
            "Log groups written but not yet searchable",
            labels=["project", "logstore"],
        )
        for project, logstore, behind in self.engine.index_lags():
            lag.add_metric([project, logstore], behind)
        yield lag
        cache = self.engine.query_cache
        yield GaugeMetricFamily(
            "logharbor_query_cache_bytes",
            "Columns of sealed log groups kept decoded for queries (query_cache_bytes)",
            value=cache.size,
        )
        yield _counters(
            "logharbor_query_cache_reads",
            "Columns of sealed log groups queries asked the cache for, found or not",
            "result",
            {"hit": cache.hits, "miss": cache.misses},
        )
        storage = GaugeMetricFamily(
            "logharbor_storage_bytes",
            "Bytes on disk: shard logs (kind=shards) and search index (kind=index)",
            labels=["project", "logstore", "kind"],
        )
        for project, logstore, shards, index in self.engine.storage():
            storage.add_metric([project, logstore, "shards"], shards)
            storage.add_metric([project, logstore, "index"], index)
        yield storage
        compaction = self.engine.compaction
        yield CounterMetricFamily(
            "logharbor_compacted_segments",
            "Sealed segments compacted",
            value=compaction.segments,
        )
        yield _counters(
            "logharbor_compacted_bytes",
            "Size of the compacted segments before and after compaction",
            "stage",
            {"before": compaction.bytes_before, "after": compaction.bytes_after},
        )
        yield _counters(
            "logharbor_compacted_log_groups",
            "Log groups of compacted segments, by how they are stored",
            "form",
            {
                "columnar": compaction.columnar,
                "zstd": compaction.zstd,
                "unchanged": compaction.unchanged,
            },
        )


def _counters(name: str, text: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    """One counter family with a sample per value of ``label``."""
    family = CounterMetricFamily(name, text, labels=[label])
    for value, count in values.items():
        family.add_metric([value], count)
    return family


class Metrics:
    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "logharbor_http_requests",
            "HTTP requests answered",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "logharbor_http_request_seconds",
            "HTTP request latency",
            ["route", "method"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.registry.register(_EngineCollector(engine))

    def observe(self, request: Request, status: int) -> None:
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        self.requests.labels(name, request.method, str(status)).inc()
        started = request.scope.get("logharbor.started")
        if started is not None:
            self.latency.labels(name, request.method).observe(time.perf_counter() - started)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
