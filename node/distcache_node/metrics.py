"""Prometheus metrics of one node, on a registry of its own (several apps can share a process)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import cast

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client import metrics as _prometheus_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from distcache_node.store import Store

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)
_BOUNDS = (*LATENCY_BUCKETS, float("inf"))
_LE = [cast(Callable[[float], str], floatToGoString)(b) for b in _BOUNDS]  # "+Inf" etc.


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


class _Count:
    """A counter bumped on the hot path: one attribute add, no lock, no call chain."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class _RequestCollector(Collector):
    """Builds the request counter and latency histogram families from NodeMetrics' plain
    tallies at scrape time, sample for sample what prometheus_client's Counter and Histogram
    would expose (same names, labels, order, and _created series)."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        created = getattr(_prometheus_metrics, "_use_created", True)
        requests = Metric("distcache_requests", "HTTP requests by operation and status",
                          "counter")
        for (op, status), count in list(m._request_counts.items()):
            labels = {"op": op, "status": str(status)}
            requests.add_sample("distcache_requests_total", labels, float(count))
            if created:
                requests.add_sample("distcache_requests_created", labels,
                                    m._created[(op, status)])
        yield requests
        name = "distcache_request_duration_seconds"
        latency = Metric(name, "HTTP request latency by operation", "histogram")
        for op, tally in list(m._latency.items()):
            cumulative = 0.0
            for bound, in_bucket in zip(_LE, tally, strict=False):
                cumulative += in_bucket
                latency.add_sample(f"{name}_bucket", {"op": op, "le": bound}, cumulative)
            latency.add_sample(f"{name}_count", {"op": op}, cumulative)
            latency.add_sample(f"{name}_sum", {"op": op}, float(tally[-1]))
            if created:
                latency.add_sample(f"{name}_created", {"op": op}, m._created[op])
        yield latency
        for tally_of, family_name, documentation in (
            (m.hits, "distcache_hits", "Keys found by reads"),
            (m.misses, "distcache_misses", "Keys not found by reads"),
        ):
            family = Metric(family_name, documentation, "counter")
            family.add_sample(f"{family_name}_total", {}, tally_of.value)
            if created:
                family.add_sample(f"{family_name}_created", {}, tally_of.created)
            yield family


class _CommandCollector(Collector):
    """Commands of the protocol edges other than HTTP (RESP), by protocol, command and
    outcome, and their latency: plain tallies turned into families at scrape time, as for
    HTTP requests. Command names come from the edge's own table, never from a client."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        created = getattr(_prometheus_metrics, "_use_created", True)
        commands = Metric("distcache_commands", "Commands by protocol, command and outcome",
                          "counter")
        for (protocol, command, outcome), count in list(m.command_counts.items()):
            labels = {"protocol": protocol, "command": command, "outcome": outcome}
            commands.add_sample("distcache_commands_total", labels, float(count))
            if created:
                commands.add_sample("distcache_commands_created", labels,
                                    m._created[(protocol, command, outcome)])
        yield commands
        name = "distcache_command_duration_seconds"
        latency = Metric(name, "Command latency by protocol and command", "histogram")
        for (protocol, command), tally in list(m._command_latency.items()):
            labels = {"protocol": protocol, "command": command}
            cumulative = 0.0
            for bound, in_bucket in zip(_LE, tally, strict=False):
                cumulative += in_bucket
                latency.add_sample(f"{name}_bucket", {**labels, "le": bound}, cumulative)
            latency.add_sample(f"{name}_count", labels, cumulative)
            latency.add_sample(f"{name}_sum", labels, float(tally[-1]))
        yield latency


class NodeMetrics:
    """The node's metrics. The per-request ones (observe, hits, misses) are plain Python
    tallies turned into Prometheus families only when scraped: prometheus_client's Counter
    and Histogram take a lock and several calls per update, a large share of a GET's CPU.
    Like the store, updates happen on the event loop thread only."""

    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        self.hits = _Count()
        self.misses = _Count()
        # (op, status) -> requests; op -> [count per latency bucket..., +Inf, sum of seconds]
        self._request_counts: dict[tuple[str, int], int] = {}
        self._latency: dict[str, list[float]] = {}
        self._created: dict[tuple[str, int] | tuple[str, str, str] | str, float] = {}
        # (protocol, command, outcome) -> commands; (protocol, command) -> latency tally
        self.command_counts: dict[tuple[str, str, str], int] = {}
        self._command_latency: dict[tuple[str, str], list[float]] = {}
        self.registry.register(_RequestCollector(self))  # registered first: exposed first
        self.rate_limited = Counter(
            "distcache_rate_limited", "Requests refused by the per-IP rate limiter",
            registry=self.registry,
        )
        self.registry.register(_StoreCollector(store))
        self.registry.register(_CommandCollector(self))

    # The request pipeline (pipeline.wrap) updates these cells itself, without a call per
    # request: a count per (op, status), and per op a count per latency bucket of BOUNDS
    # (the first bound >= the latency) followed by the sum of seconds.
    BOUNDS = _BOUNDS

    def count_cell(self, op: str, status: int) -> tuple[str, int]:
        """The key of the (op, status) request counter in request_counts, created at 0."""
        key = (op, status)
        if key not in self._request_counts:
            self._request_counts[key] = 0
            self._created[key] = time.time()
        return key

    def latency_tally(self, op: str) -> list[float]:
        """op's histogram: a count per latency bucket (BOUNDS), then the sum of seconds."""
        tally = self._latency.get(op)
        if tally is None:
            tally = self._latency[op] = [0.0] * (len(_BOUNDS) + 1)
            self._created[op] = time.time()
        return tally

    def command_cell(self, protocol: str, command: str, outcome: str) -> tuple[str, str, str]:
        """The key of a command counter in command_counts, created at 0."""
        key = (protocol, command, outcome)
        if key not in self.command_counts:
            self.command_counts[key] = 0
            self._created[key] = time.time()
        return key

    def command_tally(self, protocol: str, command: str) -> list[float]:
        """A command's latency histogram: a count per bucket of BOUNDS, then the sum."""
        key = (protocol, command)
        tally = self._command_latency.get(key)
        if tally is None:
            tally = self._command_latency[key] = [0.0] * (len(_BOUNDS) + 1)
        return tally

    @property
    def request_counts(self) -> dict[tuple[str, int], int]:
        return self._request_counts

    def render(self) -> bytes:
        return generate_latest(self.registry)
