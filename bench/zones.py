#!/usr/bin/env python3
"""What zone-aware placement costs in balance, and what it buys, side by side with the same
members placed without zones, in one run.

    .venv/bin/python bench/zones.py [--keys N]

For each layout (members per zone) and replication factor: the copies the fullest member
holds over the mean (1.00 is perfect balance; the cost), the keys whose every copy sits in one
zone (what a zone outage loses; the benefit), and lookups a second with zones over without
(the arcs are worked out once, so a lookup costs the same). Distinct keys, each placed once.
Prints a Markdown table (docs/benchmarks.md "Zone-aware placement").
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from distcache_node.cluster.ring import Ring

LAYOUTS = [(2, 2), (3, 3), (2, 2, 2), (3, 1), (4, 2), (2, 1, 1)]


def members(layout: tuple[int, ...]) -> dict[str, str]:
    return {f"z{z}-m{i}": f"zone-{z}" for z, n in enumerate(layout) for i in range(n)}


def measure(ring: Ring, zones: dict[str, str], keys: list[str]) -> tuple[float, int, float]:
    copies: Counter[str] = Counter()
    one_zone = 0
    t0 = time.perf_counter()
    for key in keys:
        owners = ring.owners(key)
        copies.update(owners)
        if len({zones[m] for m in owners}) == 1:
            one_zone += 1
    seconds = time.perf_counter() - t0
    mean = sum(copies.values()) / len(zones)
    return max(copies.values()) / mean, one_zone, len(keys) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=200_000)
    args = parser.parse_args()
    keys = [f"key:{i}" for i in range(args.keys)]
    print(f"{args.keys:,} distinct keys; fullest member / mean copies, keys with every copy in "
          "one zone, owners() lookups a second (warm arcs)\n")
    print("| members per zone | R | balance, no zones | balance, zone-aware | keys in one zone, "
          "no zones | keys in one zone, zone-aware | lookups/s zone-aware / no zones |")
    print("|---|---|---|---|---|---|---|")
    for layout in LAYOUTS:
        zones = members(layout)
        for r in (2, 3):
            if r > len(zones):
                continue
            plain = Ring(list(zones), r)
            aware = Ring(list(zones), r, zones=zones)
            for ring in (plain, aware):  # warm every arc first: steady state is measured
                measure(ring, zones, keys[: min(len(keys), 50_000)])
            b0, o0, s0 = measure(plain, zones, keys)
            b1, o1, s1 = measure(aware, zones, keys)
            print(f"| {'+'.join(map(str, layout))} | {r} | {b0:.2f} | {b1:.2f} | "
                  f"{o0:,} ({o0 / len(keys):.1%}) | {o1:,} ({o1 / len(keys):.1%}) | "
                  f"{s1 / s0:.2f} |")


if __name__ == "__main__":
    main()
