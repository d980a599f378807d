#!/usr/bin/env python3
"""Operator scaling on a real cluster (kind): the issue's three figures.

    export KUBECONFIG=...            # make kind-up prints it
    .venv/bin/python bench/operator_scale.py [--keys 100000] [--runs 1]

1. `kubectl scale dcache --replicas=5` to the StatefulSet's spec.replicas changing (<= 2 s);
2. 3 -> 5 with N keys until every member is active, every pod ready and the rebalance done
   (status Running, ring settled) (<= 30 s);
3. 5 -> 3 the same (<= 30 s), then every key read back (zero lost).

Uses the e2e helpers (namespace distcache-op-bench), the installed operator, and a port-forward
to pod 0 for writes and reads. Prints one line per run and a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
os.environ["DISTCACHE_DEV_OP_NAMESPACE"] = "distcache-op-bench"

import ophelp
from ophelp import client_for, k, kj, settled, wait_for

NAME = "bench"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    k("delete", "namespace", ophelp.NS, "--ignore-not-found", "--wait=true", namespace=None,
      timeout=200)
    k("create", "namespace", ophelp.NS, namespace=None)
    k("apply", "-f", "-", input=(
        f"apiVersion: distcache.io/v1alpha1\nkind: DistCache\nmetadata:\n  name: {NAME}\n"
        "spec:\n  replicas: 3\n  imagePullPolicy: Never\n"))
    wait_for("bench Running", lambda: settled(NAME, 3), 240, every=1)
    client = client_for(NAME)
    items = {f"bench-{i}": f"value-{i}-" + "x" * 64 for i in range(args.keys)}
    t0 = time.monotonic()
    client.mset(items, batch=2000)
    print(f"wrote {args.keys} keys in {time.monotonic() - t0:.1f} s", flush=True)
    rows = []
    for run in range(args.runs):
        t0 = time.monotonic()
        k("scale", f"distcache/{NAME}", "--replicas=5")
        wait_for("StatefulSet 5",
                 lambda: kj("get", "statefulset", NAME)["spec"]["replicas"] == 5, 30,
                 every=0.05)
        sts_s = time.monotonic() - t0
        wait_for("settled at 5", lambda: settled(NAME, 5), 300, every=0.25)
        up_s = time.monotonic() - t0
        t0 = time.monotonic()
        k("scale", f"distcache/{NAME}", "--replicas=3")
        wait_for("settled at 3", lambda: settled(NAME, 3), 300, every=0.25)
        down_s = time.monotonic() - t0
        found = client.mget(list(items), batch=2000)
        lost = sum(1 for key, value in items.items() if found.get(key) != value)
        rows.append((sts_s, up_s, down_s, lost))
        print(f"run {run + 1}: scale->StatefulSet {sts_s:.2f} s, 3->5 settled {up_s:.1f} s, "
              f"5->3 settled {down_s:.1f} s, lost {lost}/{len(items)}", flush=True)
    client.close()
    print("\n| run | `kubectl scale` -> StatefulSet | 3 -> 5 settled | 5 -> 3 settled | lost |")
    print("|---|---|---|---|---|")
    for i, (sts_s, up_s, down_s, lost) in enumerate(rows, 1):
        print(f"| {i} | {sts_s:.2f} s | {up_s:.1f} s | {down_s:.1f} s | {lost} of "
              f"{len(items):,} |")
    k("delete", "namespace", ophelp.NS, "--wait=false", namespace=None)
    return 0 if all(r[3] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
