"""The single-node RESP figures: one load (redis-benchmark's options) run against a DistCache
node and against redis-server, both on the server CPU, interleaved, each run sized to last
about as long, and checked: every GET and MGET key a hit, no error reply."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from resp_servers import Server
from run import (
    API_KEY,
    Metric,
    Pinning,
    Run,
    cpu_split,
    interleaved,
    log,
    median_cpu_us,
    median_rps,
    redis_benchmark,
)

MGET_KEYS = 100


@dataclass(frozen=True)
class Load:
    name: str
    goal: float
    options: list[str]  # redis-benchmark's, before the custom command if any
    pipeline: int = 1
    keys_read: int = 0  # keys each command reads (0: a write), for the hit check

    def argv(self, keyspace: int) -> list[str]:
        return ["-a", API_KEY, "-r", str(keyspace), "-d", "100", *self.options]

    def shown(self, connections: int) -> str:
        options = [o if o != "key:__rand_int__" else "" for o in self.options]
        text = " ".join(o for o in options if o)
        if self.keys_read > 1:
            text = text.replace("MGET", f"MGET key:__rand_int__ x{self.keys_read}")
        return f"redis-benchmark -c {connections} -P {self.pipeline} -r <keyspace> -d 100 {text}"


LOADS = [
    Load("GET", 0.6, ["-t", "get"], keys_read=1),
    Load("SET", 0.5, ["-t", "set"]),
    Load("pipelined GET (-P 16)", 0.3, ["-t", "get"], pipeline=16, keys_read=1),
    # Each __rand_int__ is drawn anew: 100 distinct random keys of the pre-filled keyspace.
    Load(f"MGET of {MGET_KEYS} keys", 0.5, ["MGET", *["key:__rand_int__"] * MGET_KEYS],
         keys_read=MGET_KEYS),
]


def checked_run(server: Server, load: Load, args: argparse.Namespace, pinning: Pinning,
                requests: int) -> Run:
    """One redis-benchmark run; its `errors` are error replies plus, for reads, keys that
    did not hit (a miss would make the server's work smaller than the count says)."""
    hits, misses, errors = server.counters()
    run = redis_benchmark(server.port, server.pid, pinning, requests, args.connections,
                          load.argv(args.keyspace), load.pipeline)
    hits2, misses2, errors2 = server.counters()
    run.errors = errors2 - errors
    if load.keys_read:
        # At least one hit per key asked: redis-benchmark -P may send a few commands past
        # -n (whole pipelines), never fewer.
        wanted = requests * load.keys_read
        run.errors += max(0, misses2 - misses, wanted - (hits2 - hits))  # a miss is both
    return run


def kernel_timed(runs: list[float], run: Callable[[], Run], pid: int) -> Callable[[], Run]:
    """`run`, also appending to `runs` the share of the server's CPU spent in the kernel
    (system time: the socket calls, and on loopback the other end's receive path too)."""
    def timed() -> Run:
        user, system = cpu_split(pid)
        result = run()
        user2, system2 = cpu_split(pid)
        runs.append((system2 - system) / max(1e-9, user2 - user + system2 - system))
        return result

    return timed


def sized(server: Server, load: Load, args: argparse.Namespace, pinning: Pinning) -> int:
    """-n for a run of about args.duration seconds, from an uncounted warm-up run."""
    probe = 2_000 if load.keys_read > 1 else 20_000
    warm = checked_run(server, load, args, pinning, probe * load.pipeline)
    return max(probe, int(warm.rps * args.duration))


def measure(load: Load, ours: Server, anchor: Server, args: argparse.Namespace,
            pinning: Pinning) -> Metric:
    log(f"RESP {load.name}: {ours.name} vs {anchor.name}")
    n_ours, n_anchor = (sized(s, load, args, pinning) for s in (ours, anchor))
    kernel: tuple[list[float], list[float]] = ([], [])
    ours_runs, anchor_runs = interleaved(
        args.rounds,
        kernel_timed(kernel[0], partial(checked_run, ours, load, args, pinning, n_ours),
                     ours.pid),
        kernel_timed(kernel[1], partial(checked_run, anchor, load, args, pinning, n_anchor),
                     anchor.pid),
        (ours.name, anchor.name))
    errors = sum(r.errors for r in ours_runs + anchor_runs)
    return Metric(
        load.name, "commands/s", median_rps(ours_runs), median_rps(anchor_runs), anchor.name,
        ">=", load.goal,
        {"ours_runs": [r.as_dict() for r in ours_runs],
         "anchor_runs": [r.as_dict() for r in anchor_runs],
         "load": load.shown(args.connections), "requests": {"ours": n_ours, "anchor": n_anchor},
         "keys_per_command": load.keys_read,
         "kernel_share": {"ours": statistics.median(kernel[0]),
                          "anchor": statistics.median(kernel[1])}},
        valid=errors == 0, cpu=(median_cpu_us(ours_runs), median_cpu_us(anchor_runs)),
        cpu_unit="us/command",
    )
