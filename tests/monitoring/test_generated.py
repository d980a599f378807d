"""Generated dashboards and rules: the chart's copies (charts/distcache/dashboards/*.json,
files/prometheus-rules.yaml) and monitoring/rules-tests.yaml do not drift from the code,
promtool accepts the rules and their unit tests pass, and every metric they name is one the
node or the operator exports."""

from __future__ import annotations

import json
import subprocess

import pytest
from monitoring_support import need

from monitoring import alerts, dashboards, generate, promql


def test_generated_files_match_the_code() -> None:
    rendered = generate.render()
    stale = [str(path.relative_to(generate.ROOT)) for path, text in rendered.items()
             if not path.exists() or path.read_text() != text]
    extra = [str(path.relative_to(generate.ROOT)) for path in generate.stale(rendered)]
    assert not stale, f"{stale} differ from monitoring/'s code: run `make dashboards`"
    assert not extra, f"{extra}: no dashboard of monitoring/ generates them: run `make dashboards`"


def test_dashboards_are_valid_grafana_json() -> None:
    for name in dashboards.DASHBOARDS:
        board = json.loads((generate.DASHBOARDS_DIR / name).read_text())
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
    result = subprocess.run([promtool, "check", "rules", str(generate.RULES_FILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts.ALERTS)} rules found" in result.stdout


def test_promtool_test_rules_every_alert_firing_and_not() -> None:
    promtool = need("promtool")
    # The test file names the rules by a path relative to itself, as promtool resolves it.
    result = subprocess.run([promtool, "test", "rules", str(generate.RULES_TESTS_FILE)],
                            capture_output=True, text=True, timeout=120)
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
        board = json.loads((generate.DASHBOARDS_DIR / name).read_text())
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
