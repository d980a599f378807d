#!/usr/bin/env python3
"""Migration in bytes: `distcache local scale` 3 -> 2 with 16 KiB values, MB/s re-homed.

    nice .venv/bin/python bench/migration_bytes.py [--keys 131072] [--value-size 16384]

A 3-node local cluster (real node processes, replicationFactor 2, --max-memory large enough
for the 2-node end state) is loaded with N distinct keys whose values are V-byte JSON strings
of random (incompressible) characters, then shrunk 3 -> 2 with the same call as `distcache
local scale` (LocalCluster.scale). Figures, counted honestly:

- wall clock from the scale call until the coordinator says the ring settled;
- distinct data re-homed: the keys whose owner set differs between the ring before and the
  ring after (computed from the two rings, key by key), times V. Each is counted once though
  it may be copied to one new owner while its other copy stays put;
- MB/s = re-homed MB (10^6 bytes) / wall clock; goal >= 200 MB/s;
- afterwards every key is read back through /mget and compared with its value: 0 lost.

The anchor, Valkey 9's atomic slot migration (~10 GB in 10.7 s on 8-core VMs, ~935 MB/s),
is quoted, not run: there is no Valkey 9 here, and Debian's redis-server has no atomic slot
migration to time side by side. The ratio to the anchor is printed as well.

Prints one JSON line and one human line. All nodes are stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from distcache_node.cluster.ring import RingDoc  # noqa: E402
from distcache_node.local.runner import LocalCluster  # noqa: E402
from support import free_port_range  # noqa: E402

API_KEY = "bench-api-key"
ANCHOR_MB_S = 10_000 / 10.7  # Valkey 9 atomic slot migration: ~10 GB in 10.7 s, 8 cores
GOAL_MB_S = 200.0
MIB = 1024**2


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def value_of(index: int, size: int) -> str:
    """The value of key `index`: `size` random base64 characters, reproducible from the index
    so the read-back check needs no copy of 2 GiB in this process."""
    raw = random.Random(index).randbytes(size * 3 // 4 + 3)
    return base64.b64encode(raw).decode()[:size]


def key_of(index: int) -> str:
    return f"mig:{index:09d}"


async def load(url: str, keys: int, size: int, batch_bytes: int = 4 * MIB) -> None:
    per_batch = max(1, min(5000, batch_bytes // (size + 64)))  # a node takes <= 10,000
    async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as session:
        async def one(start: int) -> None:
            items = [{"key": key_of(i), "value": value_of(i, size)}
                     for i in range(start, min(keys, start + per_batch))]
            async with session.post(f"{url}/mset", json={"items": items}) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"/mset -> {resp.status}: {await resp.text()}")
        starts = list(range(0, keys, per_batch))
        for group in range(0, len(starts), 2):  # two in flight: the node stays the bottleneck
            await asyncio.gather(*(one(s) for s in starts[group:group + 2]))


async def verify(url: str, keys: int, size: int, batch_bytes: int = 4 * MIB) -> dict[str, int]:
    """Every key read back through /mget and compared: missing and wrong counts."""
    per_batch = max(1, min(5000, batch_bytes // (size + 64)))  # a node takes <= 10,000
    missing = wrong = 0
    async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as session:
        for start in range(0, keys, per_batch):
            indexes = range(start, min(keys, start + per_batch))
            async with session.post(f"{url}/mget",
                                    json={"keys": [key_of(i) for i in indexes]}) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"/mget -> {resp.status}: {await resp.text()}")
                body = await resp.json()
            found = body["values"]
            for i in indexes:
                value = found.get(key_of(i))
                if value is None:
                    missing += 1
                elif value != value_of(i, size):
                    wrong += 1
    return {"missing": missing, "wrong": wrong}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes used so far (Linux /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def rehomed_keys(before: RingDoc, after: RingDoc, keys: int) -> int:
    """Distinct keys whose owner set changed between the two rings."""
    old, new = before.target(), after.target()
    return sum(1 for i in range(keys)
               if set(old.owners(key_of(i))) != set(new.owners(key_of(i))))


async def run(args: argparse.Namespace) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="distcache-migbytes-"))
    cluster = LocalCluster.create(work, free_port_range(4), API_KEY, 2, False,
                                  args.max_memory, ["--log-level", "WARNING", *args.node_arg])
    try:
        await cluster.up(3)
        log(f"nodes in {work}: " + ", ".join(f"{n.id} pid {n.pid}" for n in cluster.state.nodes))
        url = cluster.state.nodes[0].url
        data_mb = args.keys * args.value_size / 1e6
        log(f"loading {args.keys:,} keys of {args.value_size} B ({data_mb:,.0f} MB distinct, "
            f"R=2) into 3 nodes")
        t0 = time.monotonic()
        await load(url, args.keys, args.value_size)
        log(f"loaded in {time.monotonic() - t0:.1f} s; scaling 3 -> 2")
        ring_before = RingDoc.from_json(json.loads(cluster.ring_path.read_text()))
        # CPU of the two that stay (they send and take every copy; the leaving node's
        # process is gone when scale returns): robust to other load on a shared machine,
        # which the wall clock is not.
        stay = [n.pid for n in cluster.state.nodes[:2]]
        load_avg = os.getloadavg()[0]
        cpu_before = cpu_seconds(stay)
        started = time.monotonic()
        settled = await cluster.scale(2)
        seconds = settled - started
        cpu = cpu_seconds(stay) - cpu_before
        ring_after = RingDoc.from_json(json.loads(cluster.ring_path.read_text()))
        moved = rehomed_keys(ring_before, ring_after, args.keys)
        log(f"settled in {seconds:.2f} s; reading every key back")
        check = await verify(url, args.keys, args.value_size)
    finally:
        cluster.stop_all()
        await cluster.close()
        if args.keep_logs:
            log(f"node logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    moved_mb = moved * args.value_size / 1e6
    rate = moved_mb / seconds
    return {
        "benchmark": "migration_bytes", "from_nodes": 3, "to_nodes": 2, "replication": 2,
        "keys": args.keys, "value_size": args.value_size,
        "data_mb": round(args.keys * args.value_size / 1e6, 1),
        "keys_rehomed": moved, "mb_rehomed": round(moved_mb, 1),
        "seconds": round(seconds, 3), "mb_per_s": round(rate, 1),
        "goal_mb_per_s": GOAL_MB_S, "meets_goal": rate >= GOAL_MB_S,
        "anchor": "Valkey 9 atomic slot migration, ~10 GB in 10.7 s on 8-core VMs (quoted)",
        "anchor_mb_per_s": round(ANCHOR_MB_S, 1), "ratio_to_anchor": round(rate / ANCHOR_MB_S, 3),
        "keys_missing_after": check["missing"], "keys_wrong_after": check["wrong"],
        "cpu_seconds_staying_nodes": round(cpu, 2), "mb_per_cpu_second": round(moved_mb / cpu, 1),
        "load_average_1m_at_start": round(load_avg, 2), "cores": os.cpu_count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # 131,072 x 16 KiB = 2 GiB of distinct data (4 GiB with R=2 across the three nodes).
    parser.add_argument("--keys", type=int, default=131_072)
    parser.add_argument("--value-size", type=int, default=16 * 1024,
                        help="bytes per value (a JSON string of that many characters)")
    parser.add_argument("--max-memory", default="",
                        help="per node; default: room for every key on each of the two left")
    parser.add_argument("--node-arg", action="append", default=[],
                        help="an extra node flag, e.g. --node-arg=--max-body-size=64MiB")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the nodes' folder (logs, ring) and say where")
    args = parser.parse_args()
    if args.keys < 1 or args.value_size < 1:
        parser.error("--keys and --value-size must be positive")
    if not args.max_memory:
        # After 3 -> 2 with R=2 each node holds every key: the data, entry overhead, slack.
        need = args.keys * (args.value_size + 256) * 1.25 + 64 * MIB
        args.max_memory = f"{max(256, int(need / MIB))}MiB"
    result = asyncio.run(run(args))
    print(json.dumps(result), flush=True)
    print(f"3 -> 2, {result['keys']:,} keys x {result['value_size']} B: re-homed "
          f"{result['mb_rehomed']:,} MB ({result['keys_rehomed']:,} distinct keys) in "
          f"{result['seconds']} s = {result['mb_per_s']} MB/s (goal {GOAL_MB_S:.0f}: "
          f"{'met' if result['meets_goal'] else 'NOT met'}; "
          f"{result['ratio_to_anchor']:.2f} x Valkey 9's ~{ANCHOR_MB_S:.0f} MB/s, quoted); "
          f"{result['mb_per_cpu_second']} MB per CPU-second of the nodes that stay; "
          f"lost {result['keys_missing_after']}, wrong {result['keys_wrong_after']}; "
          f"load {result['load_average_1m_at_start']} on {result['cores']} cores",
          flush=True)
    ok = result["keys_missing_after"] == 0 and result["keys_wrong_after"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
