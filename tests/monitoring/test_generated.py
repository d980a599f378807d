"""Generated dashboards and rules: no drift from the code, promtool accepts the rules and
their unit tests pass, and every metric they name is one the node or the operator exports."""

from __future__ import annotations

import json
import subprocess

import pytest
from monitoring_support import need

from monitoring import alerts, dashboards, generate, promql

GENERATED = generate.OUT


def test_generated_files_match_the_code() -> None:
    rendered = generate.render()
    stale = [name for name, text in rendered.items()
             if not (GENERATED / name).exists() or (GENERATED / name).read_text() != text]
    extra = sorted(p.name for p in GENERATED.iterdir() if p.name not in rendered)
    assert not stale, f"monitoring/generated/ is stale for {stale}: run `make dashboards`"
    assert not extra, f"monitoring/generated/ holds files nothing generates: {extra}"


def test_dashboards_are_valid_grafana_json() -> None:
    for name in dashboards.DASHBOARDS:
        board = json.loads((GENERATED / name).read_text())
        assert board["uid"] and board["title"] and board["panels"]
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: panel ids repeat"
        for panel in board["panels"]:
            assert panel["gridPos"]["w"] <= 24
            if panel["type"] != "row":
                assert panel.get("targets"), f"{name}: panel {panel['title']} has no query"
                refs = [target["refId"] for target in panel["targets"]]
                assert len(refs) == len(set(refs)), f"{name}: {panel['title']} repeats a refId"
                for target in panel["targets"]:
                    assert target["datasource"]["uid"] == "${datasource}"


def test_promtool_check_rules() -> None:
    promtool = need("promtool")
    result = subprocess.run([promtool, "check", "rules", generate.RULES_FILE],
                            cwd=GENERATED, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts.ALERTS)} rules found" in result.stdout


def test_promtool_test_rules_every_alert_firing_and_not() -> None:
    promtool = need("promtool")
    result = subprocess.run([promtool, "test", "rules", generate.RULES_TESTS_FILE],
                            cwd=GENERATED, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    from monitoring.rule_tests import CASES
    for alert in alerts.ALERTS:
        checks = CASES[alert.name][1]
        assert any(not expected for _, expected in checks), f"{alert.name}: no silent case"
        assert any(expected for _, expected in checks), f"{alert.name}: no firing case"


def referenced_metrics() -> dict[str, set[str]]:
    """Metric name -> where it is used (dashboard panels, variables, alerts)."""
    used: dict[str, set[str]] = {}
    for name in dashboards.DASHBOARDS:
        board = json.loads((GENERATED / name).read_text())
        for title, expr in dashboards.queries(board):
            for metric in promql.metric_names(expr):
                used.setdefault(metric, set()).add(f"{name}: {title}")
        for metric in dashboards.variable_metrics(board):
            used.setdefault(metric, set()).add(f"{name}: variables")
    for alert in alerts.ALERTS:
        for metric in promql.metric_names(alert.expr):
            used.setdefault(metric, set()).add(f"alert {alert.name}")
    return used


def test_every_referenced_metric_is_in_the_contract() -> None:
    """The contract lists are checked against live exports in test_live_prometheus.py."""
    known = promql.NODE_METRICS | promql.OPERATOR_METRICS | promql.PROMETHEUS_SERIES
    unknown = {m: sorted(w) for m, w in referenced_metrics().items() if m not in known}
    assert not unknown, f"metrics nobody exports: {unknown}"


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (op, le) (rate(distcache_request_duration_seconds_bucket{job=~"$job", '
     'op=~"get|set"}[$__rate_interval]))', {"distcache_request_duration_seconds_bucket"}),
    ("(up and on (job, instance) max_over_time(distcache_keys[1h])) == 0",
     {"up", "distcache_keys"}),
    ("a / (b + c) > 0.5 * d offset 1h unless count without (x) (e) > bool 1e3",
     {"a", "b", "c", "d", "e"}),
    ('histogram_quantile(0.99, sum by (le) (rate(x_bucket{l="a{b}"}[5m])))', {"x_bucket"}),
    ("count(distcache_migration_done == 0) or vector(0)", {"distcache_migration_done"}),
])
def test_metric_names_parser(expr: str, names: set[str]) -> None:
    assert promql.metric_names(expr) == names
