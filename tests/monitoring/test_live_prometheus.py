"""Every dashboard query and alert signal on live data: Debian's real `prometheus` on loopback
(its own port and data folder, 1 s scrapes, the generated rules loaded) scrapes a local
3-node cluster (LocalCluster, as tests/cluster uses) under a bounded load that misses,
evicts, expires, is rate limited, scales 3 -> 4 -> 3 (migration) and loses a node (refused
writes). The whole scenario runs once for the module, in under two minutes.

The operator needs a Kubernetes API server, so here its series come from a stand-in
(operator_standin.py): the operator's real metrics module and HTTP server, updated through a
scripted scale and drain. That checks the operator dashboard's and alert's names, labels and
PromQL on data, not the operator's own bookkeeping, on machines without kind. The real
operator is checked the same way in e2e/test_operator_prometheus.py: this Prometheus (the
helpers in monitoring_support.py) scraping the in-cluster operator on kind through a
port-forward while it scales a DistCache 3 -> 4 -> 3."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from monitoring_support import (
    Prometheus,
    alert_expressions,
    board_queries,
    data,
    is_operator,
    need,
    sample_names,
    substitute,
    value,
)

from distcache_node.local.runner import LocalCluster, NodeProc
from monitoring import alerts, dashboards, promql
from support import ROOT, clean_env, free_port, free_port_range

API_KEY = "monitoring-test-key"
NAMESPACE = "distcache-test"
JOB = "distcache"
OPERATOR_NAMESPACE = "distcache-system"
OPERATOR_JOB = "distcache-operator"
# Alerts whose whole expression the scenario makes true (their `for:` is longer than the
# test, so they are pending, not firing); the others only have their signals checked.
PROVOKED = ("DistCacheNodeDown", "DistCachePeerUnreachable", "DistCacheMemoryNearLimit",
            "DistCacheWritesRefused")
# What the scenario makes happen, as Prometheus saw it: each must be above zero, so the
# panels show movement, not a flat 0.
HAPPENED = {
    "hits": "sum(increase(distcache_hits_total[5m]))",
    "misses": "sum(increase(distcache_misses_total[5m]))",
    "evictions": "sum(increase(distcache_evictions_total[5m]))",
    "expirations": "sum(increase(distcache_expirations_total[5m]))",
    "rate-limited requests": "sum(increase(distcache_rate_limited_total[5m]))",
    "refused writes": 'sum(increase(distcache_requests_total{status="503", '
                      'op=~"set|delete|mset|incr"}[5m]))',
    "keys moved by migration": "sum(increase(distcache_migration_keys_moved_total[5m]))",
    "ring versions": "max(distcache_ring_version) - min(min_over_time(distcache_ring_version[5m]))",
    "peer down seen": "count(distcache_peer_up == 0)",
    "targets down": "count(up == 0)",
}


@dataclass
class Live:
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # expr -> API answer
    rules: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    exported: set[str] = field(default_factory=set)  # sample names on a node's /metrics
    operator_exported: set[str] = field(default_factory=set)  # on the operator's
    load: dict[str, int] = field(default_factory=dict)  # responses by status
    errors: list[str] = field(default_factory=list)


def sub(expr: str, operator: bool = False) -> str:
    """A dashboard query as Grafana sends it, for the test cluster's (or operator's) labels;
    $__rate_interval is 1m: the scenario fits in it."""
    return (substitute(expr, OPERATOR_NAMESPACE, OPERATOR_JOB) if operator
            else substitute(expr, NAMESPACE, JOB))


def every_expression() -> list[str]:
    exprs = [sub(e, is_operator(name)) for name in dashboards.DASHBOARDS
             for _, e in board_queries(name)]
    return list(dict.fromkeys([*exprs, *alert_expressions()]))


def _targets(path: Path, nodes: list[NodeProc]) -> None:
    """file_sd targets with the labels a PodMonitor gives a pod: namespace, pod (and job)."""
    groups = [{"targets": [f"127.0.0.1:{n.port}"],
               "labels": {"namespace": NAMESPACE, "pod": n.id}} for n in nodes]
    _write_json(path, groups)


def _write_json(path: Path, groups: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups))
    tmp.replace(path)


async def _load(session: aiohttp.ClientSession, urls: list[str], stop: asyncio.Event,
                counts: dict[str, int], rate: float = 60.0) -> None:
    """Sets (4 KiB, some with a 1 s TTL), gets of written and never-written keys, mgets,
    msets of 20 entries and incrs, about `rate` requests a second, until `stop`."""
    rng = random.Random(9)
    value = "x" * 4096
    written: list[str] = []
    n = 0
    while not stop.is_set():
        n += 1
        url = rng.choice(urls)
        kind = n % 8
        try:
            if kind in (0, 1):
                key = f"k:{n}"
                body: dict[str, Any] = {"key": key, "value": value}
                if kind == 1:
                    body["ttl"] = 1
                req = session.post(f"{url}/set", json=body)
                written.append(key)
            elif kind == 2:
                items = [{"key": f"m:{n}:{i}", "value": value} for i in range(20)]
                req = session.post(f"{url}/mset", json={"items": items})
            elif kind in (3, 4):
                key = rng.choice(written[-50:]) if written else "none"
                req = session.get(f"{url}/get", params={"key": key})
            elif kind == 5:
                req = session.get(f"{url}/get", params={"key": f"never:{n}"})
            elif kind == 6:
                keys = [*written[-5:], f"never:{n}:a", f"never:{n}:b"]
                req = session.post(f"{url}/mget", json={"keys": keys})
            else:
                req = session.post(f"{url}/incr", json={"key": f"counter:{n % 5}", "delta": 1})
            async with req as resp:
                await resp.read()
                counts[str(resp.status)] = counts.get(str(resp.status), 0) + 1
        except (TimeoutError, aiohttp.ClientError):
            counts["error"] = counts.get("error", 0) + 1
        await asyncio.sleep(1 / rate)


async def _burst(url: str, counts: dict[str, int]) -> None:
    """More requests at once than the rate limit allows, until some answer 429."""
    async with aiohttp.ClientSession(
            headers={"X-API-Key": API_KEY}, timeout=aiohttp.ClientTimeout(total=10),
            connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one(i: int) -> None:
            with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                async with session.get(f"{url}/get", params={"key": f"burst:{i}"}) as resp:
                    await resp.read()
                    counts[str(resp.status)] = counts.get(str(resp.status), 0) + 1
        for _ in range(5):
            await asyncio.gather(*(one(i) for i in range(300)))
            if counts.get("429"):
                return


async def _until(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.5)


async def _scenario(directory: Path, prometheus: str) -> Live:
    live = Live()
    t0 = time.monotonic()
    cluster = LocalCluster.create(
        directory / "cluster", free_port_range(8), API_KEY, replication=3, tls=False,
        max_memory="1MiB",
        # quorum 3 of 3 replicas: one node down and every write is refused (503);
        # a rate limit low enough for the burst, above the steady load
        node_args=["--max-value-size", "65536", "--write-quorum", "3",
                   "--rate-limit", "150", "--rate-limit-burst", "30"])
    targets = directory / "targets.json"
    operator_targets = directory / "operator-targets.json"
    operator_port = free_port()
    prom = Prometheus(prometheus, directory, [{
        "job_name": JOB, "metrics_path": "/metrics", "params": {"api_key": [API_KEY]},
        "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}],
    }, {
        "job_name": OPERATOR_JOB, "metrics_path": "/metrics",
        "file_sd_configs": [{"files": [str(operator_targets)], "refresh_interval": "1s"}],
    }])
    base = prom.base
    operator: asyncio.subprocess.Process | None = None
    log = open(directory / "operator-standin.log", "wb")  # noqa: SIM115, ASYNC230 - to the child
    stop = asyncio.Event()
    try:
        operator = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).with_name("operator_standin.py")),
            env=clean_env({"DISTCACHE_OPERATOR_METRICS_PORT": str(operator_port),
                           "PYTHONPATH": str(ROOT / "operator")}),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _write_json(operator_targets, [{
            "targets": [f"127.0.0.1:{operator_port}"],
            "labels": {"namespace": OPERATOR_NAMESPACE, "pod": "distcache-operator-0"}}])
        await cluster.up(3)
        _targets(targets, cluster.state.nodes)
        prom.start()
        await asyncio.to_thread(prom.wait_ready, 30)
        async with aiohttp.ClientSession(
                headers={"X-API-Key": API_KEY},
                timeout=aiohttp.ClientTimeout(total=10)) as session:
            urls = [n.url for n in cluster.state.nodes]
            load = asyncio.create_task(_load(session, urls, stop, live.load))
            await asyncio.sleep(8)
            await _burst(urls[0], live.load)
            await asyncio.sleep(4)
            # a join and a drain: keys move, migration metrics move
            await cluster.scale(4)
            _targets(targets, cluster.state.nodes)
            await asyncio.sleep(3)
            await cluster.scale(3, force=True)
            _targets(targets, cluster.state.nodes)
            await asyncio.sleep(3)
            # a node down (still in the ring, still a target): writes cannot reach quorum
            cluster.stop(cluster.state.nodes[2])
            urls[:] = [n.url for n in cluster.state.nodes[:2]]
            await asyncio.sleep(10)

            async def query(expr: str) -> dict[str, Any]:
                async with session.get(f"{base}/api/v1/query", params={"query": expr}) as r:
                    answer: dict[str, Any] = await r.json()
                    return answer

            async def provoked_pending() -> bool:
                async with session.get(f"{base}/api/v1/alerts") as r:
                    active = {a["labels"]["alertname"] for a in (await r.json())["data"]["alerts"]}
                return set(PROVOKED) <= active

            await _until(provoked_pending, timeout=15)
            for expr in [*every_expression(), *HAPPENED.values()]:
                live.results[expr] = await query(expr)
            async with session.get(f"{base}/api/v1/rules") as r:
                live.rules = [rule for g in (await r.json())["data"]["groups"]
                              for rule in g["rules"]]
            async with session.get(f"{base}/api/v1/alerts") as r:
                live.alerts = (await r.json())["data"]["alerts"]
            async with session.get(f"{cluster.state.nodes[0].url}/metrics") as r:
                live.exported = sample_names(await r.text())
            async with session.get(f"http://127.0.0.1:{operator_port}/metrics") as r:
                live.operator_exported = sample_names(await r.text())
            stop.set()
            await load
    finally:
        stop.set()
        cluster.stop_all()  # by PID, only the nodes this cluster started
        await cluster.close()
        prom.stop()  # the prometheus and the stand-in this test started, by PID
        if operator is not None and operator.returncode is None:
            operator.terminate()
            try:
                await asyncio.wait_for(operator.wait(), timeout=10)
            except TimeoutError:
                operator.kill()
                await operator.wait()
        log.close()
    live.load["seconds"] = int(time.monotonic() - t0)
    return live


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Live:
    prometheus = need("prometheus")
    return asyncio.run(asyncio.wait_for(
        _scenario(tmp_path_factory.mktemp("prometheus"), prometheus), timeout=110))


def test_the_load_did_what_the_dashboards_show(live: Live) -> None:
    print("\nload (responses by status):", live.load)
    for status in ("200", "404", "429", "503"):
        assert live.load.get(status, 0) > 0, f"no {status} answer in the load: {live.load}"
    assert live.load["seconds"] < 110
    seen = {what: value(live.results[expr]) for what, expr in HAPPENED.items()}
    print("seen by Prometheus:", {k: round(v, 1) for k, v in seen.items()})
    assert all(v > 0 for v in seen.values()), seen
    for name in dashboards.DASHBOARDS:
        for panel, expr in board_queries(name):
            result = live.results[sub(expr, is_operator(name))].get(
                "data", {}).get("result", [])
            sample = result[0]["value"][1] if result else "-"
            print(f"{name:24} {len(result):3} series, e.g. {sample:>12.12}  {panel}")


@pytest.mark.parametrize(("panel", "expr"), board_queries("distcache-cache.json"))
def test_cache_dashboard_query_returnsdata(live: Live, panel: str, expr: str) -> None:
    assert data(live.results[sub(expr)]), f"{panel}: no data for {sub(expr)}"


@pytest.mark.parametrize(
    ("name", "signal"),
    [(a.name, s) for a in alerts.ALERTS for s in a.signals])
def test_alert_signal_returnsdata(live: Live, name: str, signal: str) -> None:
    assert data(live.results[signal]), f"{name}: no data for {signal}"


@pytest.mark.parametrize("name", PROVOKED)
def test_provoked_alert_expression_returns_data_and_is_active(live: Live, name: str) -> None:
    alert = next(a for a in alerts.ALERTS if a.name == name)
    assert data(live.results[alert.expr]), f"{name}: no data for {alert.expr}"
    states = {a["state"] for a in live.alerts if a["labels"]["alertname"] == name}
    assert states & {"pending", "firing"}, f"{name} not active: {live.alerts}"


def test_every_rule_evaluates_without_error(live: Live) -> None:
    assert {r["name"] for r in live.rules} == {a.name for a in alerts.ALERTS}
    bad = {r["name"]: r.get("lastError") for r in live.rules if r["health"] != "ok"}
    assert not bad, bad
    for alert in alerts.ALERTS:
        data(live.results[alert.expr])  # parses and evaluates


@pytest.mark.parametrize(("panel", "expr"),
                         board_queries("distcache-operator.json"))
def test_operator_dashboard_query_returnsdata(live: Live, panel: str, expr: str) -> None:
    """On the stand-in's series: the operator's real metrics module, scripted events (the
    real operator: e2e/test_operator_prometheus.py)."""
    got = data(live.results[sub(expr, operator=True)])
    assert got, f"{panel}: no data for {sub(expr, operator=True)}"


def test_every_metric_the_dashboards_and_rules_name_is_exported(live: Live) -> None:
    """Node names against a live node's /metrics, operator names against the operator's
    metrics module's exposition: a name nobody exports fails."""
    missing = sorted(promql.NODE_METRICS - live.exported)
    assert not missing, f"named by dashboards or rules, not exported by a node: {missing}"
    missing = sorted(promql.OPERATOR_METRICS - live.operator_exported)
    assert not missing, f"named by dashboards or rules, not exported by the operator: {missing}"
    everything = live.exported | live.operator_exported | promql.PROMETHEUS_SERIES
    for expr in every_expression():
        for name in promql.metric_names(expr):
            assert name in everything, f"{name} (in {expr}) is exported by nobody"
