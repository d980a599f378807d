"""The cache and operator dashboards, built with grafana-foundation-sdk.

Queries select series by the `namespace` and `job` labels a ServiceMonitor or PodMonitor
gives every target, and break down by `pod` (per node). `$__rate_interval` is Grafana's.
"""

from __future__ import annotations

import re
from typing import Any

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import StackingConfig, VizLegendOptions
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'namespace=~"$namespace", job=~"$job"'
RATE = "$__rate_interval"
DATA_OPS = "get|set|delete|mget|mset|incr"
WRITE_OPS = "set|delete|mset|incr"


def _query(expr: str, legend: str = "", ref: str = "A", instant: bool = False,
           table_format: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    q = q.instant() if instant else q.range()
    if table_format:
        q = q.format(pm.PromQueryFormat.TABLE)
    return q


def _legend() -> VizLegendOptions:
    return (VizLegendOptions().show_legend(True)
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .calcs(["lastNotNull", "max"]))


def _series(title: str, description: str, unit: str, *queries: tuple[str, str],
            width: int = 12, height: int = 8, stack: bool = False,
            minimum: float | None = None, maximum: float | None = None) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).unit(unit)
             .datasource(DATASOURCE).span(width).height(height).legend(_legend())
             .fill_opacity(10).line_width(1))
    if stack:
        panel = panel.stacking(StackingConfig().mode(common.StackingMode.NORMAL))
    if minimum is not None:
        panel = panel.min(minimum)
    if maximum is not None:
        panel = panel.max(maximum)
    for index, (expr, legend) in enumerate(queries):
        panel = panel.with_target(_query(expr, legend, chr(ord("A") + index)))
    return panel


def _stat(title: str, description: str, unit: str, expr: str, width: int = 6,
          decimals: float | None = None) -> stat.Panel:
    panel = (stat.Panel().title(title).description(description).unit(unit)
             .datasource(DATASOURCE).span(width).height(4)
             .with_target(_query(expr, instant=False)))
    if decimals is not None:
        panel = panel.decimals(decimals)
    return panel


def _variables(metric: str) -> list[Any]:
    return [
        gd.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        gd.QueryVariable("namespace").label("Namespace").datasource(DATASOURCE)
        .query(f"label_values({metric}, namespace)")
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True).include_all(True).all_value(".*"),
        gd.QueryVariable("job").label("Job").datasource(DATASOURCE)
        .query(f'label_values({metric}{{namespace=~"$namespace"}}, job)')
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True).include_all(True).all_value(".*"),
    ]


def _hit_ratio(by: str = "") -> str:
    group = f" by ({by})" if by else ""
    hits = f"sum{group} (rate(distcache_hits_total{{{SEL}}}[{RATE}]))"
    misses = f"sum{group} (rate(distcache_misses_total{{{SEL}}}[{RATE}]))"
    return f"{hits} / ({hits} + {misses})"


def cache_dashboard() -> dm.Dashboard:
    d = (gd.Dashboard("DistCache").uid("distcache-cache")
         .description("DistCache nodes: traffic, hit ratio, latency, memory, keys, "
                      "evictions, refused writes, peers, ring and migration.")
         .tags(["distcache"]).refresh("30s").time("now-1h", "now")
         .tooltip(dm.DashboardCursorSync.CROSSHAIR).editable())
    for variable in _variables("distcache_keys"):
        d = d.with_variable(variable)

    d = d.with_row(gd.Row("Overview"))
    d = d.with_panel(_stat(
        "Ops/s", "Data operations per second over every node.", "reqps",
        f'sum(rate(distcache_requests_total{{{SEL}, op=~"{DATA_OPS}"}}[{RATE}]))'))
    d = d.with_panel(_stat("Hit ratio", "Keys found / keys read (get and mget).",
                           "percentunit", _hit_ratio(), decimals=1))
    d = d.with_panel(_stat("Nodes ready", "Nodes that serve reads themselves.", "none",
                           f"sum(distcache_ready{{{SEL}}})"))
    d = d.with_panel(_stat("Ring version", "Newest ring version a node follows.", "none",
                           f"max(distcache_ring_version{{{SEL}}})"))

    d = d.with_row(gd.Row("Traffic"))
    d = d.with_panel(_series(
        "Ops/s by operation", "Requests per second by operation (every status).", "reqps",
        (f'sum by (op) (rate(distcache_requests_total{{{SEL}, op=~"{DATA_OPS}"}}[{RATE}]))',
         "{{op}}"), stack=True))
    d = d.with_panel(_series(
        "Hit ratio", "Keys found / keys read, over the cluster and per node.", "percentunit",
        (_hit_ratio(), "cluster"), (_hit_ratio("pod"), "{{pod}}"), minimum=0, maximum=1))
    d = d.with_panel(_series(
        "Latency p50 / p99 by operation", "Server-side request latency.", "s",
        (f"histogram_quantile(0.5, sum by (op, le) (rate(distcache_request_duration_seconds_"
         f'bucket{{{SEL}, op=~"{DATA_OPS}"}}[{RATE}])))', "p50 {{op}}"),
        (f"histogram_quantile(0.99, sum by (op, le) (rate(distcache_request_duration_seconds_"
         f'bucket{{{SEL}, op=~"{DATA_OPS}"}}[{RATE}])))', "p99 {{op}}")))
    d = d.with_panel(_series(
        "Responses by status", "Data operations per second by HTTP status.", "reqps",
        (f'sum by (status) (rate(distcache_requests_total{{{SEL}, op=~"{DATA_OPS}"}}'
         f"[{RATE}]))", "{{status}}"), stack=True))
    d = d.with_panel(_series(
        "Refused writes (503 unavailable)",
        "Writes refused because they could not reach their replica quorum: never "
        "acknowledged; clients should retry.", "reqps",
        (f'sum by (op) (rate(distcache_requests_total{{{SEL}, op=~"{WRITE_OPS}", '
         f'status="503"}}[{RATE}]))', "{{op}}")))
    d = d.with_panel(_series(
        "Rate-limited requests", "Requests refused with 429 by the per-IP rate limiter.",
        "reqps", (f"sum by (pod) (rate(distcache_rate_limited_total{{{SEL}}}[{RATE}]))",
                  "{{pod}}")))

    d = d.with_row(gd.Row("Memory and keys"))
    d = d.with_panel(_series(
        "Memory used against the limit", "Bytes accounted to entries and --max-memory.",
        "bytes",
        (f"sum by (pod) (distcache_memory_used_bytes{{{SEL}}})", "{{pod}} used"),
        (f"sum by (pod) (distcache_memory_max_bytes{{{SEL}}})", "{{pod}} limit")))
    d = d.with_panel(_series(
        "Keys", "Keys held per node (replicas included).", "short",
        (f"sum by (pod) (distcache_keys{{{SEL}}})", "{{pod}}")))
    d = d.with_panel(_series(
        "Evictions/s", "Entries the LRU evicted to stay within --max-memory.", "ops",
        (f"sum by (pod) (rate(distcache_evictions_total{{{SEL}}}[{RATE}]))", "{{pod}}")))
    d = d.with_panel(_series(
        "Expirations/s", "Entries dropped because their TTL passed.", "ops",
        (f"sum by (pod) (rate(distcache_expirations_total{{{SEL}}}[{RATE}]))", "{{pod}}")))

    d = d.with_row(gd.Row("Cluster"))
    d = d.with_panel(_pod_table())
    d = d.with_panel(_series(
        "Peer health", "1 when a node's heartbeats to the peer succeed (node -> peer).",
        "none", (f"min by (pod, peer) (distcache_peer_up{{{SEL}}})", "{{pod}} -> {{peer}}"),
        minimum=0, maximum=1))
    d = d.with_panel(_series(
        "Ring version", "Ring version each node follows; nodes disagree only briefly.",
        "none", (f"max by (pod) (distcache_ring_version{{{SEL}}})", "{{pod}}"),
        (f"max by (state) (distcache_ring_members{{{SEL}}})", "members {{state}}")))
    d = d.with_panel(_series(
        "Migration progress",
        "Keys still to hand over in the running pass, and keys handed over per second.",
        "short",
        (f"sum by (pod) (distcache_migration_keys_remaining{{{SEL}}})", "{{pod}} remaining"),
        (f"sum by (pod) (rate(distcache_migration_keys_moved_total{{{SEL}}}[{RATE}]))",
         "{{pod}} moved/s"),
        (f"count(distcache_migration_done{{{SEL}}} == 0) or vector(0)", "nodes not placed")))
    d = d.with_panel(_series(
        "Forwarded reads/s by peer", "Single-key reads a node forwarded to a peer.", "ops",
        (f"sum by (peer) (rate(distcache_forwarded_reads_total{{{SEL}}}[{RATE}]))",
         "{{peer}}")))
    return d.build()


def _pod_table() -> table.Panel:
    columns = [
        (f"max by (pod) (up{{{SEL}}})", "Up"),
        (f"max by (pod) (distcache_ready{{{SEL}}})", "Ready"),
        (f'sum by (pod) (rate(distcache_requests_total{{{SEL}, op=~"{DATA_OPS}"}}[{RATE}]))',
         "Ops/s"),
        (_hit_ratio("pod"), "Hit ratio"),
        (f"sum by (pod) (distcache_keys{{{SEL}}})", "Keys"),
        (f"sum by (pod) (distcache_memory_used_bytes{{{SEL}}})", "Memory used"),
        (f"sum by (pod) (distcache_memory_used_bytes{{{SEL}}}) / sum by (pod) "
         f"(distcache_memory_max_bytes{{{SEL}}})", "Memory / limit"),
        (f"max by (pod) (distcache_ring_version{{{SEL}}})", "Ring version"),
        (f"sum by (pod) (distcache_migration_keys_remaining{{{SEL}}})", "Migration remaining"),
    ]
    panel = (table.Panel().title("Nodes").description("One row per node (pod).")
             .datasource(DATASOURCE).span(24).height(8))
    rename: dict[str, str] = {"Time": ""}
    for index, (expr, title) in enumerate(columns):
        ref = chr(ord("A") + index)
        panel = panel.with_target(_query(expr, ref=ref, instant=True, table_format=True))
        rename[f"Value #{ref}"] = title
    panel = panel.with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
    panel = panel.with_transformation(dm.DataTransformerConfig(
        id_val="organize",
        options={"excludeByName": {"Time": True},
                 "renameByName": {k: v for k, v in rename.items() if v}}))
    return panel


def operator_dashboard() -> dm.Dashboard:
    cache = "exported_namespace, name"  # the DistCache's own labels, renamed on scrape
    d = (gd.Dashboard("DistCache operator").uid("distcache-operator")
         .description("The DistCache operator: reconciles, errors, scale operations, drains "
                      "and the keys a ring change still has to move.")
         .tags(["distcache"]).refresh("30s").time("now-6h", "now")
         .tooltip(dm.DashboardCursorSync.CROSSHAIR).editable())
    for variable in _variables("distcache_operator_reconciles_total"):
        d = d.with_variable(variable)
    d = d.with_panel(_series(
        "Reconciles/s by outcome", "Reconcile steps per second: ok, retry (an API or node "
        "call failed) and problem (a user's mistake, reported as Degraded).", "ops",
        (f"sum by (outcome) (rate(distcache_operator_reconciles_total{{{SEL}}}[{RATE}]))",
         "{{outcome}}"), stack=True))
    d = d.with_panel(_series(
        "Reconcile errors", "Share of reconcile steps that failed (retry) or found a "
        "problem in a DistCache.", "percentunit",
        (f'sum by (outcome) (rate(distcache_operator_reconciles_total{{{SEL}, '
         f'outcome=~"retry|problem"}}[{RATE}])) / scalar(sum(rate(distcache_operator_'
         f"reconciles_total{{{SEL}}}[{RATE}])))", "{{outcome}}"), minimum=0))
    d = d.with_panel(_series(
        "Reconcile duration p50 / p99", "Time one reconcile step takes.", "s",
        ("histogram_quantile(0.5, sum by (le) (rate(distcache_operator_reconcile_duration_"
         f"seconds_bucket{{{SEL}}}[{RATE}])))", "p50"),
        ("histogram_quantile(0.99, sum by (le) (rate(distcache_operator_reconcile_duration_"
         f"seconds_bucket{{{SEL}}}[{RATE}])))", "p99")))
    d = d.with_panel(_series(
        "Scale operations and drains", "StatefulSet scale operations by direction, and "
        "members drained and removed from a ring.", "short",
        (f"sum by (direction) (increase(distcache_operator_scale_operations_total{{{SEL}}}"
         f"[{RATE}]))", "scale {{direction}}"),
        (f"sum(increase(distcache_operator_drains_total{{{SEL}}}[{RATE}]))", "drained")))
    d = d.with_panel(_series(
        "Drain duration p50 / p99", "Time from members marked leaving to their removal from "
        "the ring once their keys moved, over the drains that finished in the window.", "s",
        ("histogram_quantile(0.5, sum by (le) (rate(distcache_operator_drain_duration_"
         f"seconds_bucket{{{SEL}}}[{RATE}])))", "p50"),
        ("histogram_quantile(0.99, sum by (le) (rate(distcache_operator_drain_duration_"
         f"seconds_bucket{{{SEL}}}[{RATE}])))", "p99")))
    d = d.with_panel(_series(
        "Actions", "What the operator did: scale, publish (a ring change), remove (drained "
        "members out), drop_dead, refuse, create_ring.", "short",
        (f"sum by (action) (increase(distcache_operator_actions_total{{{SEL}}}[{RATE}]))",
         "{{action}}"), stack=True))
    d = d.with_panel(_series(
        "Ring change in progress (drain and scale durations)",
        "1 while a DistCache has keys to move: each step's width is how long a scale or a "
        "drain took, per DistCache.", "none",
        (f"max by ({cache}) (distcache_operator_migration_keys_remaining{{{SEL}}} > bool 0)",
         "{{exported_namespace}}/{{name}}"), minimum=0, maximum=1))
    d = d.with_panel(_series(
        "Migration keys remaining", "Keys the running ring change still has to move, as the "
        "operator reads them from the nodes.", "short",
        (f"sum by ({cache}) (distcache_operator_migration_keys_remaining{{{SEL}}})",
         "{{exported_namespace}}/{{name}}")))
    d = d.with_panel(_series(
        "Ring version", "Ring version of each DistCache.", "none",
        (f"max by ({cache}) (distcache_operator_ring_version{{{SEL}}})",
         "{{exported_namespace}}/{{name}}")))
    return d.build()


DASHBOARDS = {
    "distcache-cache.json": cache_dashboard,
    "distcache-operator.json": operator_dashboard,
}


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every panel query in a dashboard's JSON."""
    out: list[tuple[str, str]] = []
    for panel in board.get("panels", []):
        for target in panel.get("targets", []) or []:
            if target.get("expr"):
                out.append((panel.get("title", ""), target["expr"]))
    return out


def variable_metrics(board: dict[str, Any]) -> set[str]:
    """Metric names the dashboard's label_values() variables read."""
    names = set()
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query" and isinstance(query, str):
            match = re.match(r"label_values\(\s*([A-Za-z_:][\w:]*)", query)
            if match:
                names.add(match.group(1))
    return names
