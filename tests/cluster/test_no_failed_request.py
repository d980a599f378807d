"""No failed request through a restart or a shrink, on real node processes.

A SIGTERMed clustered node drains before it closes its port: not ready, its peers told to
route around it, a stopping header on its answers, still serving. The load program
(`python -m distcache_node.loadcheck`, the project's client) runs steady reads and writes
while one node restarts and the cluster shrinks 3 -> 2: zero failed requests, zero lost
writes, zero stale reads. And with the client's retries off, the same program reports the
failures a node killed under it causes: the check can fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from distcache_node.local.runner import LocalCluster
from distcache_node.protocol import STOPPING_HEADER

API_KEY = "cluster-test-key"


def start_load(cluster: LocalCluster, stop_file: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "distcache_node.loadcheck", "--seed", cluster.state.nodes[0].url,
         "--api-key", API_KEY, "--rate", "200", "--keys", "500", "--stop-file", str(stop_file),
         "--progress", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_load(proc: subprocess.Popen[str], stop_file: Path) -> dict[str, object]:
    stop_file.touch()
    out, err = proc.communicate(timeout=120)
    assert out.strip(), err
    summary: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    print(json.dumps({k: summary[k] for k in ("requests", "rate_achieved", "failures",
                                               "failure_reasons", "lost_writes", "stale_reads",
                                               "client_retries", "latency_ms")}))
    return summary


async def test_sigterm_drains_marked_stopping_and_peers_route_around_at_once(
        make_cluster, client_session: aiohttp.ClientSession) -> None:
    cluster: LocalCluster = await make_cluster(3, node_args=["--shutdown-drain", "3"])
    a, b = cluster.state.nodes[0], cluster.state.nodes[1]
    async with client_session.post(f"{b.url}/set", json={"key": "k", "value": 1}) as resp:
        assert resp.status == 200
    t0 = time.monotonic()
    assert a.pid
    os.kill(a.pid, signal.SIGTERM)

    async def peer_view() -> dict[str, object]:
        async with client_session.get(f"{b.url}/status") as resp:
            return {m["id"]: m for m in (await resp.json())["members"]}[a.id]

    for _ in range(40):
        if not (await peer_view())["alive"]:
            break
        await asyncio.sleep(0.05)
    told = time.monotonic() - t0
    assert not (await peer_view())["alive"] and told < 1.5, told
    # Draining: not ready, still serving data, every answer says it is stopping.
    async with client_session.get(f"{a.url}/readyz") as resp:
        assert resp.status == 503 and (await resp.json())["reason"] == "stopping"
    async with client_session.get(f"{a.url}/get", params={"key": "k"}) as resp:
        assert resp.status == 200 and resp.headers[STOPPING_HEADER] == "1"
    async with client_session.post(f"{a.url}/set", json={"key": "k2", "value": 2}) as resp:
        assert resp.status == 200
    # It exits 0 after the drain, and what it took while draining is elsewhere.
    while time.monotonic() - t0 < 15:
        try:
            os.kill(a.pid, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.1)
    assert time.monotonic() - t0 >= 3.0
    for node in cluster.state.nodes[1:]:
        async with client_session.get(f"{node.url}/get", params={"key": "k2"}) as resp:
            assert resp.status == 200 and (await resp.json())["value"] == 2


async def test_restart_and_shrink_under_load_fail_no_request_and_lose_no_write(
        make_cluster, tmp_path: Path) -> None:
    cluster: LocalCluster = await make_cluster(3)
    stop_file = tmp_path / "stop"
    load = start_load(cluster, stop_file)
    await asyncio.sleep(3)
    restarted = cluster.state.nodes[1]
    await asyncio.to_thread(cluster.stop, restarted)  # SIGTERM, waits for the exit
    cluster.spawn(restarted)
    await cluster.wait_ready([restarted])
    await asyncio.sleep(3)
    await cluster.scale(2)
    await asyncio.sleep(3)
    summary = await asyncio.to_thread(finish_load, load, stop_file)
    assert load.returncode == 0
    assert int(str(summary["requests"])) > 1000
    assert summary["failures"] == 0, summary["failure_examples"]
    assert summary["lost_writes"] == 0, summary["lost_examples"]
    # Reads see every acknowledged write too: a restarted node serves only once it has its
    # share back, and the shrink moves deletes with the keys.
    assert summary["stale_reads"] == 0, summary["stale_examples"]


async def test_the_check_reports_failures_when_the_client_does_not_retry(
        make_cluster, tmp_path: Path) -> None:
    cluster: LocalCluster = await make_cluster(3)
    stop_file = tmp_path / "stop"
    load = start_load(cluster, stop_file, "--retry-for", "0")
    await asyncio.sleep(2)
    victim = cluster.state.nodes[2]
    assert victim.pid
    os.kill(victim.pid, signal.SIGKILL)
    await asyncio.sleep(2)
    summary = await asyncio.to_thread(finish_load, load, stop_file)
    assert load.returncode == 1
    assert int(str(summary["failures"])) > 0
    reasons = summary["failure_reasons"]
    assert isinstance(reasons, dict) and any("Connection" in r for r in reasons), reasons
