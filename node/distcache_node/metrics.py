"""Prometheus metrics of one node, on a registry of its own (several apps can share a process)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from distcache_node.store import Store

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)


class _StoreCollector(Collector):
    """Reads the store's own counters at scrape time: nothing to update on the hot path."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self.store
        yield GaugeMetricFamily("distcache_keys", "Keys held by this node's store", s.__len__())
        yield GaugeMetricFamily(
            "distcache_memory_used_bytes", "Bytes accounted to entries", s.bytes_used
        )
        yield GaugeMetricFamily(
            "distcache_memory_max_bytes", "Byte bound of the store (--max-memory)", s.max_bytes
        )
        yield CounterMetricFamily(
            "distcache_evictions", "Entries evicted by the LRU to stay in bounds", s.evictions
        )
        yield CounterMetricFamily(
            "distcache_expirations", "Entries dropped because their TTL passed", s.expirations
        )


class NodeMetrics:
    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "distcache_requests", "HTTP requests by operation and status",
            ["op", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "distcache_request_duration_seconds", "HTTP request latency by operation",
            ["op"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.hits = Counter("distcache_hits", "Keys found by reads", registry=self.registry)
        self.misses = Counter("distcache_misses", "Keys not found by reads",
                              registry=self.registry)
        self.rate_limited = Counter(
            "distcache_rate_limited", "Requests refused by the per-IP rate limiter",
            registry=self.registry,
        )
        self.registry.register(_StoreCollector(store))
        # Labelled children cached: .labels() takes a lock and builds a tuple each call.
        self._request_children: dict[tuple[str, int], Callable[[], None]] = {}
        self._latency_children: dict[str, Callable[[float], None]] = {}

    def observe(self, op: str, status: int, seconds: float) -> None:
        inc = self._request_children.get((op, status))
        if inc is None:
            inc = self._request_children[(op, status)] = self.requests.labels(op, str(status)).inc
        inc()
        observe = self._latency_children.get(op)
        if observe is None:
            observe = self._latency_children[op] = self.latency.labels(op).observe
        observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
