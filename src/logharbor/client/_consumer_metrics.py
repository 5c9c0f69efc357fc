"""Prometheus metrics of consumer group workers.

===========================================  =======  ================================
metric                                       type     labels
===========================================  =======  ================================
logharbor_consumer_log_groups_total          counter  group, consumer, logstore, shard
logharbor_consumer_logs_total                counter  group, consumer, logstore, shard
logharbor_consumer_raw_bytes_total           counter  group, consumer, logstore, shard
logharbor_consumer_process_retries_total     counter  group, consumer, logstore, shard
logharbor_consumer_checkpoints_total         counter  group, consumer, logstore, shard
logharbor_consumer_lag_log_groups            gauge    group, consumer, logstore, shard
logharbor_consumer_held_shards               gauge    group, consumer
logharbor_consumer_heartbeat_failures_total  counter  group, consumer
===========================================  =======  ================================

Workers of both kinds (threads and asyncio) export the same families.

The families are registered once per registry, so any number of workers may share
one registry without a duplicate registration error.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge


class ConsumerMetrics:
    """The metric families of one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        s, w = ["group", "consumer", "logstore", "shard"], ["group", "consumer"]
        prefix = "logharbor_consumer_"
        self.log_groups = Counter(
            f"{prefix}log_groups", "Log groups processed", s, registry=registry
        )
        self.logs = Counter(f"{prefix}logs", "Logs processed", s, registry=registry)
        self.raw_bytes = Counter(
            f"{prefix}raw_bytes", "Uncompressed bytes processed", s, registry=registry
        )
        self.retries = Counter(
            f"{prefix}process_retries", "Batches processed again", s, registry=registry
        )
        self.checkpoints = Counter(
            f"{prefix}checkpoints", "Checkpoints saved", s, registry=registry
        )
        self.lag = Gauge(
            f"{prefix}lag_log_groups", "Log groups not yet processed", s, registry=registry
        )
        self.held = Gauge(f"{prefix}held_shards", "Shards held", w, registry=registry)
        self.heartbeat_failures = Counter(
            f"{prefix}heartbeat_failures", "Heartbeats that failed", w, registry=registry
        )


_BY_REGISTRY: dict[int, tuple[CollectorRegistry, ConsumerMetrics]] = {}
_LOCK = threading.Lock()


def consumer_metrics(registry: CollectorRegistry) -> ConsumerMetrics:
    with _LOCK:
        entry = _BY_REGISTRY.get(id(registry))
        if entry is None or entry[0] is not registry:
            entry = _BY_REGISTRY[id(registry)] = (registry, ConsumerMetrics(registry))
        return entry[1]
