"""promtool unit tests for every alert, firing and not firing: the cases are written here
and rendered (expected annotations included, from the rules' templates) into
monitoring/rules-tests.yaml for `promtool test rules`."""

from __future__ import annotations

import re
from typing import Any

from monitoring.alerts import ALERTS, Alert

NS = "shop"
JOB = "distcache"


def node(i: int, job: str = JOB, **extra: str) -> dict[str, str]:
    """The target labels a ServiceMonitor gives cache pod i."""
    return {"job": job, "namespace": NS, "instance": f"10.0.0.{i}:8080",
            "pod": f"cache-{i}", **extra}


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def cluster(job: str = JOB) -> dict[str, str]:
    return {"namespace": NS, "job": job}


OPERATOR = {"job": "distcache-operator", "namespace": "distcache-system",
            "instance": "10.0.1.1:9090", "pod": "distcache-operator-0"}


def reconciles(outcome: str, values: str, job: str = "distcache-operator") -> dict[str, str]:
    return series("distcache_operator_reconciles_total",
                  {**OPERATOR, "job": job, "outcome": outcome}, values)


# alert -> (input series, [(eval time, [labels of each expected alert])]); an empty list
# at a time is the "not firing" case. Interval 1m.
CASES: dict[str, tuple[list[dict[str, str]], list[tuple[str, list[dict[str, str]]]]]] = {
    "DistCacheNodeDown": (
        [series("up", node(0), "1 1 1 0x6"),
         series("distcache_keys", node(0), "5 5 5 stale"),
         series("up", node(1), "1x9"),
         series("distcache_keys", node(1), "5x9"),
         # a down target that never served DistCache metrics is not a cache node
         series("up", {"job": "other", "instance": "10.0.9.9:9100"}, "0x9")],
        [("2m", []), ("3m", []), ("8m", [node(0)])],
    ),
    "DistCachePeerUnreachable": (
        [series("distcache_peer_up", node(0, peer="cache-2"), "1 1 0x6"),
         series("distcache_peer_up", node(1, peer="cache-2"), "1 1 0x6"),
         # cache-0 is down for cache-1 only: one node's view is not enough
         series("distcache_peer_up", node(1, peer="cache-0"), "0x8"),
         series("distcache_peer_up", node(2, peer="cache-0"), "1x8")],
        [("1m", []), ("7m", [{**cluster(), "peer": "cache-2"}])],
    ),
    "DistCacheHitRatioCollapse": (
        [series("distcache_hits_total", node(0), "0+90x60 5410+10x29"),
         series("distcache_misses_total", node(0), "0+10x60 690+90x29"),
         # the same collapse on a cache read under once a second does not page
         series("distcache_hits_total", node(0, job="quiet"), "0+5x60 300x29"),
         series("distcache_misses_total", node(0, job="quiet"), "0x60 5+5x29")],
        [("55m", []), ("85m", [cluster()])],
    ),
    "DistCacheMemoryNearLimit": (
        [series("distcache_memory_used_bytes", node(0), "950x30"),
         series("distcache_memory_max_bytes", node(0), "1000x30"),
         series("distcache_memory_used_bytes", node(1), "500x30"),
         series("distcache_memory_max_bytes", node(1), "1000x30"),
         # no limit (0): never "near" it
         series("distcache_memory_used_bytes", node(2), "10x30"),
         series("distcache_memory_max_bytes", node(2), "0x30")],
        [("10m", []), ("20m", [node(0)])],
    ),
    "DistCacheEvictionSurge": (
        [series("distcache_evictions_total", node(0), "0x60 600+600x29"),
         # evicting as much for the whole hour is steady state, not a surge
         series("distcache_evictions_total", node(0, job="steady"), "0+600x90")],
        [("55m", []), ("75m", [cluster()])],
    ),
    "DistCacheWritesRefused": (
        [series("distcache_requests_total", node(0, op="set", status="200"), "0+600x20"),
         series("distcache_requests_total", node(0, op="set", status="503"), "0x5 60+60x14"),
         # a read's 503 is not a refused write
         series("distcache_requests_total", node(1, op="get", status="503"), "0+600x20"),
         # one write in 6,000 refused is under the threshold
         series("distcache_requests_total", node(0, job="ok", op="set", status="200"),
                "0+6000x20"),
         series("distcache_requests_total", node(0, job="ok", op="set", status="503"),
                "0+1x20")],
        [("4m", []), ("15m", [cluster()])],
    ),
    "DistCacheMigrationStuck": (
        [series("distcache_migration_done", node(0), "0x40"),
         series("distcache_migration_done", node(1), "1x40"),
         series("distcache_migration_keys_moved_total", node(0), "100x40"),
         series("distcache_migration_keys_moved_total", node(1), "50x40"),
         # not placed yet but keys are moving: progress, not stuck
         series("distcache_migration_done", node(0, job="moving"), "0x40"),
         series("distcache_migration_keys_moved_total", node(0, job="moving"), "0+100x40"),
         # placed
         series("distcache_migration_done", node(0, job="placed"), "1x40"),
         series("distcache_migration_keys_moved_total", node(0, job="placed"), "5x40")],
        [("5m", []), ("20m", [cluster()])],
    ),
    "DistCacheCredentialFileUnusable": (
        [series("distcache_credential_file_error", node(0, credential="api_key"), "0 0 1x20"),
         series("distcache_credential_file_error", node(0, credential="cluster_secret"),
                "0x22"),
         # a file that could not be read for a moment (a Secret update in flight): no alert
         series("distcache_credential_file_error", node(1, credential="api_key"),
                "0 1 1 0x19")],
        [("4m", []),
         ("10m", [{"namespace": NS, "job": JOB, "pod": "cache-0", "credential": "api_key"}])],
    ),
    "DistCacheOperatorReconcileErrors": (
        [reconciles("retry", "0+5x40"),
         reconciles("ok", "0+1x40"),
         # a retry in eleven steps: a hiccup, not an outage
         reconciles("retry", "0+1x40", job="healthy-operator"),
         reconciles("ok", "0+10x40", job="healthy-operator"),
         # user mistakes (problem) are the DistCache's Degraded condition, not an operator error
         reconciles("problem", "0+5x40", job="strict-operator"),
         reconciles("ok", "0+1x40", job="strict-operator")],
        [("10m", []),
         ("25m", [{"namespace": "distcache-system", "job": "distcache-operator"}])],
    ),
    "DistCacheCertificateExpiresSoon": (
        # not_after as Unix time; the test clock starts at 0: 3 days left, then 100 days
        [series("distcache_operator_tls_not_after_timestamp_seconds",
                {**OPERATOR, "exported_namespace": "shop", "name": "cache",
                 "material": "certificate"}, "259200x120"),
         series("distcache_operator_tls_not_after_timestamp_seconds",
                {**OPERATOR, "exported_namespace": "shop", "name": "cache",
                 "material": "ca"}, "8640000x120")],
        [("30m", []),
         ("90m", [{"exported_namespace": "shop", "name": "cache", "material": "certificate"}])],
    ),
}

_LABEL = re.compile(r"\{\{\s*\$labels\.(\w+)\s*\}\}")


def _render(template: str, labels: dict[str, str]) -> str:
    return _LABEL.sub(lambda m: labels.get(m.group(1), ""), template)


def _expected(alert: Alert, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "exp_labels": {**labels, "severity": alert.severity, **alert.labels},
        "exp_annotations": {"summary": _render(alert.summary, labels),
                            "description": _render(alert.description, labels)},
    }


def tests_document(rules_file: str) -> dict[str, Any]:
    by_name = {a.name: a for a in ALERTS}
    missing = set(by_name) - set(CASES)
    if missing:
        raise ValueError(f"alerts without promtool tests: {sorted(missing)}")
    tests = []
    for name, (inputs, checks) in CASES.items():
        alert = by_name[name]
        tests.append({
            "name": name,
            "interval": "1m",
            "input_series": inputs,
            "alert_rule_test": [
                {"eval_time": at, "alertname": name,
                 "exp_alerts": [_expected(alert, labels) for labels in expected]}
                for at, expected in checks
            ],
        })
    return {"rule_files": [rules_file], "evaluation_interval": "1m", "tests": tests}
