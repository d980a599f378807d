"""The RESP cluster figure: GETs of stored keys through every node of a real 3-node local
cluster (R=2, started as `distcache local up` starts one) against one standalone node, the
same load on both: three redis-benchmark processes at once, one per node of the cluster,
all three at the one node for the anchor. Any key through any node: a node answers the
keys it holds a copy of (2 in 3) and forwards the rest to an owner.

Nothing is pinned here, as in bench/cluster.py (the HTTP figure of the same shape): three
node processes on one CPU would measure the CPU split, not the cluster."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from resp_figures import Load
from resp_servers import Server, check_keys, prefill, start_resp_node
from run import (
    API_KEY,
    ROOT,
    Metric,
    Pinning,
    Processes,
    Run,
    cpu_seconds,
    interleaved,
    log,
    median_cpu_us,
    median_rps,
    redis_benchmark,
)

sys.path.insert(0, str(ROOT / "tests"))
from distcache_node.local.runner import LocalCluster
from support import free_port_range

LOAD = Load("3-node cluster, any node, GET", 0.6, ["-t", "get"], keys_read=1)
UNPINNED = Pinning()


def forwarded(servers: list[Server]) -> int:
    """Reads these nodes have forwarded to an owner so far (0 on a standalone node)."""
    return sum(s.metric("distcache_forwarded_reads_total{") for s in servers)


def parallel(servers: list[Server], args: argparse.Namespace, requests: int,
             forwards: list[float]) -> Run:
    """One redis-benchmark per entry of `servers`, all at once, connections split between
    them; requests/s summed, server CPU over every distinct process, error replies and
    misses over every node; the share of GETs forwarded to an owner appended to
    `forwards`."""
    pids = sorted({s.pid for s in servers})
    distinct = list({s.pid: s for s in servers}.values())
    before = [s.counters() for s in distinct]
    forwarded_before = forwarded(distinct)
    cpu_before = sum(cpu_seconds(pid) for pid in pids)
    per = -(-args.connections // len(servers))

    def one(server: Server) -> Run:
        return redis_benchmark(server.port, server.pid, UNPINNED, requests, per,
                               LOAD.argv(args.keyspace))

    with ThreadPoolExecutor(len(servers)) as pool:
        runs = list(pool.map(one, servers))
    cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
    after = [s.counters() for s in distinct]
    errors = sum((a[1] - b[1]) + (a[2] - b[2]) for a, b in zip(after, before, strict=True))
    total = sum(r.requests for r in runs)
    forwards.append((forwarded(distinct) - forwarded_before) / total)
    return Run(sum(r.rps for r in runs), total, errors, server_cpu_s=cpu)


def measure(args: argparse.Namespace, procs: Processes, work: Path) -> Metric:
    log("RESP cluster: 3 nodes (R=2), any key through any node, vs one node")
    return asyncio.run(_measure(args, procs, work))


async def _measure(args: argparse.Namespace, procs: Processes, work: Path) -> Metric:
    # The load runs block this coroutine on purpose: the cluster's nodes are processes of
    # their own, and nothing of the runner needs the event loop while they serve.
    single = start_resp_node(procs, UNPINNED)
    prefill(single, args.keyspace)
    cluster = LocalCluster.create(work / "resp-cluster", free_port_range(3), API_KEY, 2, False,
                                  "512MiB", ["--log-level", "WARNING"],
                                  resp_base_port=free_port_range(3))
    try:
        await cluster.up(3)
        nodes = [Server(f"node {n.id}", n.resp_port, n.pid, n.port)
                 for n in cluster.state.nodes]
        prefill(nodes[0], args.keyspace)  # written through one node, checked through each
        for node in nodes[1:]:
            check_keys(node, args.keyspace)
        ours_n, anchor_n = (sized(s, args) for s in (nodes, [single] * 3))
        shares: list[float] = []
        ours, anchor = interleaved(args.rounds, lambda: parallel(nodes, args, ours_n, shares),
                                   lambda: parallel([single] * 3, args, anchor_n, []),
                                   ("3 nodes", "one node"))
    finally:
        cluster.stop_all()
        await cluster.close()
        procs.stop_all()
    errors = sum(r.errors for r in ours + anchor)
    return Metric(
        LOAD.name, "GETs/s", median_rps(ours), median_rps(anchor), "one node, same load",
        ">=", LOAD.goal,
        {"ours_runs": [r.as_dict() for r in ours], "anchor_runs": [r.as_dict() for r in anchor],
         "load": f"3 x {LOAD.shown(-(-args.connections // 3))} (-n {ours_n} each for the "
                 f"cluster, {anchor_n} for one node), unpinned",
         "forwarded_share": [round(x, 3) for x in shares]},
        valid=errors == 0, cpu=(median_cpu_us(ours), median_cpu_us(anchor)),
        cpu_unit="us/command",
    )


def sized(servers: list[Server], args: argparse.Namespace) -> int:
    started = time.monotonic()
    warm = parallel(servers, args, 10_000, [])
    log(f"  warm-up: {warm.rps:,.0f} GETs/s in {time.monotonic() - started:.1f}s")
    return max(10_000, int(warm.rps / len(servers) * args.duration))

