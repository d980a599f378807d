"""The metric names a PromQL expression reads, and the metric contract the dashboards and
rules are written against."""

from __future__ import annotations

import re

# Metrics a cache node serves on /metrics (node/distcache_node/metrics.py and
# cluster/metrics.py); the live test checks each against a real node's exposition.
NODE_METRICS = frozenset({
    "distcache_requests_total", "distcache_request_duration_seconds_bucket",
    "distcache_hits_total", "distcache_misses_total", "distcache_rate_limited_total",
    "distcache_keys", "distcache_memory_used_bytes", "distcache_memory_max_bytes",
    "distcache_evictions_total", "distcache_expirations_total",
    "distcache_ring_version", "distcache_ring_members", "distcache_ready",
    "distcache_peer_up", "distcache_forwarded_reads_total",
    "distcache_migration_keys_moved_total", "distcache_migration_keys_remaining",
    "distcache_migration_done", "distcache_credential_file_error",
})

# Metrics the operator serves on :9090/metrics (operator/distcache_operator/metrics.py); the
# live test checks each against that module's exposition, e2e/test_operator_prometheus.py
# against the real operator's scrape on kind. Labels: outcome="ok|retry|problem"
# on reconciles (retry: an API or node call failed; problem: a user's mistake, Degraded),
# action on actions, direction="up|down" on scale operations, and namespace and name of the
# DistCache on the keys-remaining and ring-version gauges: scraped without honor_labels (a
# ServiceMonitor's default) that namespace arrives as `exported_namespace`.
OPERATOR_METRICS = frozenset({
    "distcache_operator_reconciles_total",
    "distcache_operator_reconcile_duration_seconds_bucket",
    "distcache_operator_actions_total",
    "distcache_operator_scale_operations_total",
    "distcache_operator_drains_total",
    "distcache_operator_drain_duration_seconds_bucket",
    "distcache_operator_migration_keys_remaining",
    "distcache_operator_ring_version",
    "distcache_operator_tls_not_after_timestamp_seconds",
})

# Series Prometheus makes itself for every target.
PROMETHEUS_SERIES = frozenset({"up"})

_KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan", "atan2",
})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?")
_TEMPLATE = re.compile(r"\$\{?\w+\}?")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (function names, keywords, label names in
    groupings and matchers, numbers and durations left out)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    text = _TEMPLATE.sub("", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names
