"""Prometheus alert rules for DistCache, written to charts/distcache/files/prometheus-rules.yaml
as a rule file whose `groups` are also the chart's PrometheusRule's `spec.groups`.

Each alert lists its `signals`: the expressions it compares against a threshold. On a
healthy cluster the alert is silent but every signal has data; the live test checks that
(a signal without data means the alert can never fire)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

WRITE_OPS = "set|delete|mset|incr"
BY = "namespace, job"  # one cache (its nodes' scrape job) in one namespace


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    signals: tuple[str, ...]
    duration: str
    severity: str
    summary: str
    description: str
    group: str = "distcache"
    labels: dict[str, str] = field(default_factory=dict)

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.duration,
            "labels": {"severity": self.severity, **self.labels},
            "annotations": {"summary": self.summary, "description": self.description},
        }


def _hit_ratio(window: str) -> str:
    hits = f"sum by ({BY}) (rate(distcache_hits_total[{window}]))"
    misses = f"sum by ({BY}) (rate(distcache_misses_total[{window}]))"
    return f"({hits} / ({hits} + {misses}))"


_READS_5M = (f"sum by ({BY}) (rate(distcache_hits_total[5m]) "
             f"+ rate(distcache_misses_total[5m]))")
_UP = "up and on (job, instance) max_over_time(distcache_keys[1h])"
_PEER_UP = f"max by ({BY}, peer) (distcache_peer_up)"
_MEMORY = "distcache_memory_used_bytes / distcache_memory_max_bytes"
_EVICT_5M = f"sum by ({BY}) (rate(distcache_evictions_total[5m]))"
_EVICT_1H = f"sum by ({BY}) (rate(distcache_evictions_total[1h]))"
_REFUSED = (f'sum by ({BY}) (rate(distcache_requests_total{{op=~"{WRITE_OPS}", '
            f'status="503"}}[5m]))')
_WRITES = f'sum by ({BY}) (rate(distcache_requests_total{{op=~"{WRITE_OPS}"}}[5m]))'
_PLACED = f"min by ({BY}) (distcache_migration_done)"
_MOVED = f"sum by ({BY}) (increase(distcache_migration_keys_moved_total[15m]))"
_CRED_ERROR = "max by (namespace, job, pod, credential) (distcache_credential_file_error)"
_OP_RETRY = ("sum by (namespace, job) "
             '(rate(distcache_operator_reconciles_total{outcome="retry"}[15m]))')
_OP_ALL = "sum by (namespace, job) (rate(distcache_operator_reconciles_total[15m]))"
# Seconds until the first of a DistCache's CA or certificate expires (the DistCache's own
# namespace is exported_namespace on the operator's series, renamed on scrape).
_TLS_LEFT = ("min by (exported_namespace, name, material) "
             "(distcache_operator_tls_not_after_timestamp_seconds) - time()")

ALERTS = (
    Alert(
        "DistCacheNodeDown",
        f"({_UP}) == 0",
        (_UP,),
        "1m", "critical",
        "DistCache node {{ $labels.namespace }}/{{ $labels.pod }} is down",
        "Prometheus cannot scrape {{ $labels.instance }} (job {{ $labels.job }}), which "
        "served DistCache metrics within the last hour. Its keys are served by their other "
        "replicas; with another owner down, writes to them are refused.",
    ),
    Alert(
        "DistCachePeerUnreachable",
        f"{_PEER_UP} == 0",
        (_PEER_UP,),
        "1m", "critical",
        "DistCache member {{ $labels.peer }} is unreachable from every node",
        "No node of {{ $labels.namespace }}/{{ $labels.job }} gets heartbeat answers from "
        "ring member {{ $labels.peer }}: it is down or cut off, though still in the ring.",
    ),
    Alert(
        "DistCacheHitRatioCollapse",
        f"{_hit_ratio('5m')} < 0.5 * {_hit_ratio('1h')} and {_READS_5M} > 1",
        (_hit_ratio("5m"), _hit_ratio("1h"), _READS_5M),
        "10m", "warning",
        "DistCache hit ratio in {{ $labels.namespace }}/{{ $labels.job }} collapsed",
        "The 5-minute hit ratio fell under half of its 1-hour ratio: keys are lost "
        "(evictions, a restart, a flush) or clients read keys nobody writes.",
    ),
    Alert(
        "DistCacheMemoryNearLimit",
        f"({_MEMORY}) > 0.9 and distcache_memory_max_bytes > 0",
        (_MEMORY,),
        "15m", "warning",
        "DistCache node {{ $labels.namespace }}/{{ $labels.pod }} uses over 90% of its "
        "memory limit",
        "{{ $labels.pod }} holds over 90% of --max-memory: new writes evict the least "
        "recently used keys. Add nodes or raise the limit.",
    ),
    Alert(
        "DistCacheEvictionSurge",
        f"{_EVICT_5M} > 1 and {_EVICT_5M} > 3 * {_EVICT_1H}",
        (_EVICT_5M, _EVICT_1H),
        "10m", "warning",
        "DistCache evictions in {{ $labels.namespace }}/{{ $labels.job }} surged",
        "The cluster evicts over 1 entry/s and over 3 times its 1-hour rate: the working "
        "set outgrew the memory limit.",
    ),
    Alert(
        "DistCacheWritesRefused",
        f"{_REFUSED} / {_WRITES} > 0.01",
        (_REFUSED, _WRITES),
        "2m", "critical",
        "DistCache refuses writes in {{ $labels.namespace }}/{{ $labels.job }}",
        "Over 1% of writes are refused with 503 unavailable: they cannot reach their "
        "replica quorum (owners down). Nothing refused was acknowledged; clients must "
        "retry.",
    ),
    Alert(
        "DistCacheMigrationStuck",
        f"{_PLACED} == 0 and {_MOVED} == 0",
        (_PLACED, _MOVED),
        "10m", "warning",
        "DistCache migration in {{ $labels.namespace }}/{{ $labels.job }} is stuck",
        "A node has not placed its data for the current ring and no key has moved for 15 "
        "minutes: a scale or drain cannot finish. See migration.reason in GET /status.",
    ),
    Alert(
        "DistCacheCredentialFileUnusable",
        f"{_CRED_ERROR} > 0",
        (_CRED_ERROR,),
        "5m", "warning",
        "DistCache node {{ $labels.namespace }}/{{ $labels.pod }} cannot use its "
        "{{ $labels.credential }} file",
        "The mounted {{ $labels.credential }} file is unreadable or holds no key. The node "
        "goes on with the keys it loaded before, so a rotation does not reach it: once the "
        "old key is dropped, clients (api_key) or peers and the operator (cluster_secret) "
        "are refused by this pod. Check the Secret and the pod's mount.",
    ),
    Alert(
        "DistCacheOperatorReconcileErrors",
        f"{_OP_RETRY} / {_OP_ALL} > 0.5",
        (_OP_RETRY, _OP_ALL),
        "15m", "warning",
        "The DistCache operator in {{ $labels.namespace }} keeps failing to reconcile",
        "Over half of the operator's reconcile steps failed for 15 minutes (an API server or "
        "node call failed, retried): scale and drain do not progress. See the operator's log "
        "and the DistCaches' status conditions.",
        group="distcache-operator",
    ),
    Alert(
        "DistCacheCertificateExpiresSoon",
        f"{_TLS_LEFT} < 14 * 86400",
        (_TLS_LEFT,),
        "1h", "warning",
        "DistCache {{ $labels.exported_namespace }}/{{ $labels.name }}: TLS {{ $labels.material "
        "}} expires within 14 days",
        "The operator renews its own CA and certificates two thirds through their lifetime, "
        "so this fires only when that failed (see the DistCache's Degraded condition and "
        "Events) or for a certificate it does not issue (spec.tls.secretName, cert-manager). "
        "When it expires every handshake between pods, clients and the operator fails.",
        group="distcache-operator",
    ),
)

# Annotations name labels only ({{ $labels.x }}), never $value: rule_tests.py renders them
# for promtool's expected alerts.


def rule_groups() -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for alert in ALERTS:
        groups.setdefault(alert.group, []).append(alert.rule())
    return {"groups": [{"name": name, "rules": rules} for name, rules in groups.items()]}
