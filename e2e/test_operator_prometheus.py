"""The operator dashboard and the operator's alert rules against the REAL operator: Debian's
`prometheus` on the host's loopback (tests/monitoring's helpers: its own port and data folder,
1 s scrapes, the generated rules loaded) scrapes the in-cluster operator through
`kubectl port-forward` to its metrics Service, and one cache pod's /metrics the same way (the
API key as bearer token, TLS verified against the DistCache's CA under the name its
ServiceMonitor uses). Targets carry the labels a ServiceMonitor gives (namespace, service,
pod, endpoint; job = the Service) and honor_labels is off, so a DistCache's own `namespace`
label arrives as `exported_namespace`, as in production.

Meanwhile the operator creates a DistCache, keys are written, and it is scaled 3 -> 4 -> 3
(a join, then a drain that moves keys). Then every query of the operator dashboard (with
$namespace, $job and $__rate_interval set as Grafana would) must return data, its variables
must find the operator's namespace and job, every operator alert's expression must evaluate
and its signals return data, every rule must be healthy, and every metric the dashboards and
rules name must be served by the real operator or the real pod: a dashboard naming a metric
or label the real operator does not export fails here.

tests/monitoring/test_live_prometheus.py runs the same checks on machines without kind, over a
stand-in for the operator. Skipped without a cluster, the operator or `prometheus`; about two
minutes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubehelp import REPO

for _path in (REPO, REPO / "tests", REPO / "tests" / "monitoring"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from monitoring_support import (  # noqa: E402
    Prometheus,
    alert_expressions,
    board_queries,
    data,
    need,
    substitute,
    value,
    variable_queries,
)
from ophelp import (  # noqa: E402
    NS,
    OPERATOR_NS,
    Forward,
    client_for,
    k,
    kj,
    secret_value,
    wait_for,
    wait_settled_or_explain,
)
from tlshelp import dc_yaml, operator_ready  # noqa: E402

from monitoring import alerts, dashboards, promql  # noqa: E402

NAME = "promcheck"
KEYS = 3000
OPERATOR_SERVICE = "distcache-operator-metrics"  # job = the Service, as a ServiceMonitor sets
CACHE_JOB = f"{NAME}-peers"  # what the DistCache's own ServiceMonitor would give its pods
RATE_INTERVAL = "10m"  # $__rate_interval: the whole scenario fits in it
OPERATOR_BOARD = "distcache-operator.json"
CACHE_BOARD = "distcache-cache.json"
OPERATOR_GROUP = "distcache-operator"
# Cache panels on events this scenario does not cause (no 503 series exists without one).
NOT_CAUSED = frozenset({"Refused writes (503 unavailable)"})
# What the scenario makes the operator do, as Prometheus saw it: each must be above zero.
HAPPENED = {
    "scale ups": 'sum(increase(distcache_operator_scale_operations_total{direction="up"}[10m]))',
    "scale downs": 'sum(increase(distcache_operator_scale_operations_total{direction="down"}'
                   '[10m]))',
    "ring changes published": 'sum(increase(distcache_operator_actions_total'
                              '{action="publish"}[10m]))',
    "drains": "sum(increase(distcache_operator_drains_total[10m]))",
    "drain durations observed": "sum(increase(distcache_operator_drain_duration_seconds_count"
                                "[10m]))",
    "ok reconciles": 'sum(increase(distcache_operator_reconciles_total{outcome="ok"}[10m]))',
    "ring versions": f'max(distcache_operator_ring_version{{name="{NAME}"}}) - min(min_over_time('
                     f'distcache_operator_ring_version{{name="{NAME}"}}[10m]))',
    "keys moved by the pod": "sum(increase(distcache_migration_keys_moved_total[10m]))",
}


@dataclass
class Scenario:
    prom: Prometheus
    seconds: dict[str, float] = field(default_factory=dict)


def sub(expr: str, board_name: str) -> str:
    if board_name == OPERATOR_BOARD:
        return substitute(expr, OPERATOR_NS, OPERATOR_SERVICE, RATE_INTERVAL)
    return substitute(expr, NS, CACHE_JOB, RATE_INTERVAL)


def local_port(forward: Forward) -> int:
    return int(forward.url().rsplit(":", 1)[1])


def scrape_configs(operator_port: int, operator_pod: str, cache_port: int,
                   api_key: str, ca_file: Path) -> list[dict[str, object]]:
    """The operator's ServiceMonitor (manifests/monitoring) and a DistCache's own
    (spec.metrics.serviceMonitor) as static targets behind port-forwards: the same labels,
    bearer key, CA and server name."""
    return [{
        "job_name": OPERATOR_SERVICE, "metrics_path": "/metrics",
        "static_configs": [{"targets": [f"127.0.0.1:{operator_port}"], "labels": {
            "namespace": OPERATOR_NS, "service": OPERATOR_SERVICE, "pod": operator_pod,
            "endpoint": "metrics"}}],
    }, {
        "job_name": CACHE_JOB, "metrics_path": "/metrics", "scheme": "https",
        "authorization": {"type": "Bearer", "credentials": api_key},
        "tls_config": {"ca_file": str(ca_file), "server_name": f"{NAME}.{NS}.svc"},
        "static_configs": [{"targets": [f"127.0.0.1:{cache_port}"], "labels": {
            "namespace": NS, "service": CACHE_JOB, "pod": f"{NAME}-0", "endpoint": "https",
            "distcache": NAME}}],
    }]


def _scale(replicas: int, seconds: dict[str, float]) -> None:
    t0 = time.monotonic()
    k("scale", f"distcache/{NAME}", f"--replicas={replicas}")
    wait_settled_or_explain(NAME, replicas, 300)
    seconds[f"scale to {replicas}"] = round(time.monotonic() - t0, 1)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    binary = need("prometheus")
    operator_ready()
    directory = tmp_path_factory.mktemp("prometheus")
    k("delete", "distcache", NAME, "--ignore-not-found", "--wait=true", timeout=200)
    t0 = time.monotonic()
    k("apply", "-f", "-", input=dc_yaml(NAME, 3))
    operator_fwd = Forward(f"svc/{OPERATOR_SERVICE}", 9090, namespace=OPERATOR_NS)
    cache_fwd = Forward(f"pod/{NAME}-0")
    prom: Prometheus | None = None
    try:
        wait_settled_or_explain(NAME, 3, 240)
        seconds = {"create": round(time.monotonic() - t0, 1)}
        (operator_pod,) = [p["metadata"]["name"] for p in kj(
            "get", "pods", "-l", "app.kubernetes.io/name=distcache-operator",
            "--field-selector=status.phase=Running", namespace=OPERATOR_NS)["items"]
            if not p["metadata"].get("deletionTimestamp")]
        ca_file = directory / "ca.crt"
        ca_file.write_text(secret_value(f"{NAME}-tls", "ca.crt"))
        prom = p = Prometheus(binary, directory, scrape_configs(
            local_port(operator_fwd), operator_pod, local_port(cache_fwd),
            secret_value(f"{NAME}-api-key", "api-key"), ca_file))
        p.start()
        p.wait_ready()
        wait_for("both targets up", lambda: value(p.query("sum(up)")) == 2, 30)
        client = client_for(NAME)
        try:
            items = {f"key-{i}": f"value-{i}" for i in range(KEYS)}
            client.mset(items)
            client.mget([*list(items)[:500], "never-written"])  # hits and a miss
            _scale(4, seconds)
            _scale(3, seconds)
            found = client.mget(list(items))
            assert sum(found.get(key) == v for key, v in items.items()) == KEYS
        finally:
            client.close()
        # The drain's last counters reach Prometheus within a few scrapes.
        wait_for("the drain seen by Prometheus",
                 lambda: value(p.query(HAPPENED["drains"])) > 0, 30)
        time.sleep(3)
        seconds["scenario"] = round(time.monotonic() - t0, 1)
        yield Scenario(p, seconds)
    finally:
        if prom is not None:
            prom.stop()  # the prometheus this test started, by PID
        operator_fwd.close()
        cache_fwd.close()
        k("delete", "distcache", NAME, "--ignore-not-found", "--wait=false", check=False)


def test_the_operator_did_what_the_dashboard_shows(scenario: Scenario) -> None:
    print("\nseconds:", scenario.seconds)
    seen = {what: value(scenario.prom.query(expr)) for what, expr in HAPPENED.items()}
    print("seen by Prometheus:", {key: round(v, 1) for key, v in seen.items()})
    for name in (OPERATOR_BOARD, CACHE_BOARD):
        for panel, expr in board_queries(name):
            result = data(scenario.prom.query(sub(expr, name)))
            sample = result[0]["value"][1] if result else "-"
            print(f"{name:24} {len(result):3} series, e.g. {sample:>12.12}  {panel}")
    assert all(v > 0 for v in seen.values()), seen


@pytest.mark.parametrize(("panel", "expr"), board_queries(OPERATOR_BOARD))
def test_operator_dashboard_query_returns_data(scenario: Scenario, panel: str,
                                               expr: str) -> None:
    query = sub(expr, OPERATOR_BOARD)
    assert data(scenario.prom.query(query)), f"{panel}: no data for {query}"


@pytest.mark.parametrize(("board_name", "variable", "query"),
                         [(b, v, q) for b in (OPERATOR_BOARD, CACHE_BOARD)
                          for v, q in variable_queries(b)])
def test_dashboard_variable_finds_the_targets(scenario: Scenario, board_name: str,
                                              variable: str, query: str) -> None:
    """label_values(METRIC{...}, LABEL) as Grafana asks it: the series API's label values."""
    selector, label = sub(query, board_name)[len("label_values("):-1].rsplit(",", 1)
    answer = scenario.prom.api("series", **{"match[]": selector.strip()})
    assert answer.get("status") == "success", answer
    found = {s.get(label.strip()) for s in answer["data"]}
    want = (OPERATOR_NS, OPERATOR_SERVICE) if board_name == OPERATOR_BOARD else (NS, CACHE_JOB)
    assert want[0 if variable == "namespace" else 1] in found, (variable, query, found)


@pytest.mark.parametrize("name", [a.name for a in alerts.ALERTS if a.group == OPERATOR_GROUP])
def test_operator_alert_evaluates_and_its_signals_return_data(scenario: Scenario,
                                                              name: str) -> None:
    alert = next(a for a in alerts.ALERTS if a.name == name)
    data(scenario.prom.query(alert.expr))  # parses and evaluates (should not fire here)
    for signal in alert.signals:
        assert data(scenario.prom.query(signal)), f"{name}: no data for {signal}"
    for metric in promql.metric_names(alert.expr):
        assert data(scenario.prom.query(metric)), f"{name}: {metric} is not exported"


def test_every_rule_loads_and_evaluates_without_error(scenario: Scenario) -> None:
    rules = [r for g in scenario.prom.api("rules")["data"]["groups"] for r in g["rules"]]
    assert {r["name"] for r in rules} == {a.name for a in alerts.ALERTS}
    bad = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not bad, bad
    for expr in alert_expressions():
        data(scenario.prom.query(expr))


def _names(scenario: Scenario, job: str) -> set[str]:
    result = data(scenario.prom.query(f'count by (__name__) ({{job="{job}"}})'))
    return {s["metric"]["__name__"] for s in result}


def test_every_metric_the_dashboards_and_rules_name_is_served(scenario: Scenario) -> None:
    """Operator names against the real operator's scrape, node names against a real pod's."""
    operator, node = _names(scenario, OPERATOR_SERVICE), _names(scenario, CACHE_JOB)
    missing = sorted(promql.OPERATOR_METRICS - operator)
    assert not missing, f"named by dashboards or rules, not served by the operator: {missing}"
    missing = sorted(promql.NODE_METRICS - node)
    assert not missing, f"named by dashboards or rules, not served by a cache pod: {missing}"
    everything = operator | node | promql.PROMETHEUS_SERIES
    for name in dashboards.DASHBOARDS:
        for panel, expr in board_queries(name):
            unknown = promql.metric_names(expr) - everything
            assert not unknown, f"{name} {panel}: {sorted(unknown)} served by nobody"
    for expr in alert_expressions():
        unknown = promql.metric_names(expr) - everything
        assert not unknown, f"{sorted(unknown)} (in {expr}) served by nobody"


@pytest.mark.parametrize(("panel", "expr"), board_queries(CACHE_BOARD))
def test_cache_dashboard_query_returns_data_from_a_real_pod(scenario: Scenario, panel: str,
                                                            expr: str) -> None:
    """With the pod's real labels, scraped as its ServiceMonitor would. A panel on an event
    this scenario does not cause (a refused write) only has to evaluate: tests/monitoring's
    load causes it."""
    result = data(scenario.prom.query(sub(expr, CACHE_BOARD)))
    assert result or panel in NOT_CAUSED, f"{panel}: no data for {sub(expr, CACHE_BOARD)}"
