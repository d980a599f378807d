"""The operator's metrics: every outcome, action and direction is exported at 0 from the
start, so rate() and increase() see the first retry, action or scale (a series born at 1 is
invisible to them) and the dashboard's ratios have data while nothing failed."""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest

from distcache_operator import metrics


def test_every_label_value_is_exported_before_it_is_counted() -> None:
    text = generate_latest(REGISTRY).decode()
    for outcome in metrics.OUTCOMES:
        assert f'distcache_operator_reconciles_total{{outcome="{outcome}"}}' in text
    for kind in metrics.ACTION_KINDS:
        assert f'distcache_operator_actions_total{{action="{kind}"}}' in text
    for direction in metrics.DIRECTIONS:
        assert f'distcache_operator_scale_operations_total{{direction="{direction}"}}' in text
