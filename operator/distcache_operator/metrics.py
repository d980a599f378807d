"""The operator's own Prometheus metrics (distcache_operator_*), served on :9090/metrics."""

from __future__ import annotations

import contextlib
import os

from prometheus_client import Counter, Gauge, Histogram, start_http_server

STEPS = Counter("distcache_operator_reconciles_total",
                "Reconcile steps, by outcome (ok, retry: an API or node call failed, "
                "problem: a user's mistake reported as Degraded)", ["outcome"])
STEP_SECONDS = Histogram("distcache_operator_reconcile_duration_seconds",
                         "Time of one reconcile step",
                         buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
ACTIONS = Counter("distcache_operator_actions_total",
                  "Actions taken: scale, publish (ring change), remove (drained members out), "
                  "drop_dead, refuse, create_ring", ["action"])
SCALES = Counter("distcache_operator_scale_operations_total",
                 "StatefulSet scale operations, by direction", ["direction"])
DRAINS = Counter("distcache_operator_drains_total", "Members drained and removed from a ring")
DRAIN_SECONDS = Histogram("distcache_operator_drain_duration_seconds",
                          "Time of one drain: from members marked leaving (the ring change "
                          "published) to their removal from the ring once their keys moved",
                          buckets=(0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800))
KEYS_REMAINING = Gauge("distcache_operator_migration_keys_remaining",
                       "Keys still to move in the DistCache's ring change",
                       ["namespace", "name"])
RING_VERSION = Gauge("distcache_operator_ring_version", "Ring version of the DistCache",
                     ["namespace", "name"])
TLS_NOT_AFTER = Gauge("distcache_operator_tls_not_after_timestamp_seconds",
                      "When the TLS material the DistCache's pods mount expires (Unix time): "
                      "material=ca (the first CA of ca.crt to expire) or certificate",
                      ["namespace", "name", "material"])
TLS_MATERIALS = ("ca", "certificate")


def forget(namespace: str, name: str) -> None:
    """A deleted DistCache's series go with it (a stale ring version or expiry would look
    like a live cache on dashboards and in alerts)."""
    series: list[tuple[Gauge, tuple[str, ...]]] = [
        (KEYS_REMAINING, (namespace, name)), (RING_VERSION, (namespace, name)),
        *((TLS_NOT_AFTER, (namespace, name, m)) for m in TLS_MATERIALS)]
    for gauge, labels in series:
        with contextlib.suppress(KeyError):  # never exported for this DistCache
            gauge.remove(*labels)


# Every label value the operator can count, exported at 0 from the start. A labelled series
# born at 1 is invisible to rate() and increase() (Prometheus sees no step up from nothing):
# the first retry, the first scale in each direction would never show on the dashboard, and
# the "Reconcile errors" panel and the ReconcileErrors alert's signal had no data at all
# while nothing failed (e2e/test_operator_prometheus.py found it on the real operator).
OUTCOMES = ("ok", "retry", "problem")
ACTION_KINDS = ("scale", "publish", "remove", "drop_dead", "refuse", "create_ring")
DIRECTIONS = ("up", "down")
for _outcome in OUTCOMES:
    STEPS.labels(_outcome)
for _kind in ACTION_KINDS:
    ACTIONS.labels(_kind)
for _direction in DIRECTIONS:
    SCALES.labels(_direction)


def serve() -> int:
    port = int(os.environ.get("DISTCACHE_OPERATOR_METRICS_PORT", "9090"))
    if port:
        start_http_server(port)
    return port
