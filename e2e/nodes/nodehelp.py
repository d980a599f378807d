"""What the node-fault tests share: the workers and their zones, stopping a worker (`docker
pause` of its node container), and a load program in a pod on the control plane (out of every
fault's way) whose progress lines make the timeline of a fault."""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubehelp import load_pod
from ophelp import NS, k, kj, wait_for

ZONE = "topology.kubernetes.io/zone"
CONTROL_PLANE = "node-role.kubernetes.io/control-plane"


def workers() -> dict[str, str]:
    """Worker node -> its zone; skips unless there are three workers in two zones or more
    (on a one-node cluster these faults cannot be staged)."""
    nodes = kj("get", "nodes", namespace=None)["items"]
    found = {n["metadata"]["name"]: n["metadata"].get("labels", {}).get(ZONE, "")
             for n in nodes if CONTROL_PLANE not in n["metadata"].get("labels", {})}
    if len(found) < 3 or len(set(found.values()) - {""}) < 2:
        pytest.skip(f"needs three workers in two zones (NODES=4 make kind-up); the cluster "
                    f"has workers {found or 'none'}")
    return found


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)


def node_ready(node: str) -> str:
    conds = kj("get", "node", node, namespace=None)["status"].get("conditions") or []
    return next((c["status"] for c in conds if c["type"] == "Ready"), "?")


@contextlib.contextmanager
def stopped(*nodes: str) -> Iterator[float]:
    """The nodes' containers paused (every process frozen, the kubelet too: to the control
    plane the node stopped answering, as a hung or cut-off machine does), and unpaused on the
    way out whatever happens. Yields the wall-clock time of the pause. Pause, not `docker
    stop`: a kind node restarted by Docker may come back at another address without the
    routes pod-network.sh gave it."""
    for node in nodes:
        got = docker("pause", node)
        assert got.returncode == 0, f"docker pause {node}: {got.stderr}"
    at = time.time()
    try:
        yield at
    finally:
        for node in nodes:
            docker("unpause", node)


def unpause_all(nodes: list[str]) -> None:
    for node in nodes:
        if docker("inspect", "-f", "{{.State.Paused}}", node).stdout.strip() == "true":
            docker("unpause", node)


def pods_by_node(instance: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pod in kj("get", "pods", "-l", f"app.kubernetes.io/instance={instance}")["items"]:
        out.setdefault(pod["spec"].get("nodeName", ""), []).append(pod["metadata"]["name"])
    return out


def condition(name: str, ctype: str) -> dict[str, Any]:
    conds = (kj("get", "distcache", name).get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == ctype), {})


@dataclass
class Sample:
    at: float  # wall clock
    requests: int  # done so far
    failures: int  # failed so far


class Loader:
    """`python -m distcache_node.loadcheck` (the ring-aware client, seeded with the cache's
    Service) in a pod pinned to the control-plane node, progress every second."""

    def __init__(self, name: str, cache: str, image: str, rate: float) -> None:
        self.name, self.rate = name, rate
        args = ["-m", "distcache_node.loadcheck", "--seed", f"https://{cache}.{NS}.svc:8080",
                "--api-key-file", "/key/api-key", "--ca", "/tls/ca.crt", "--rate", f"{rate:g}",
                # A cache client's usual patience: a request to a frozen node is given up
                # after 2 s and retried on another one.
                "--timeout", "2", "--keys", "3000", "--stop-file", "/tmp/stop",
                # Keys of its own: a run reading a key an earlier one wrote would count a
                # stale read.
                "--prefix", f"{name}:",
                "--progress", "1"]
        pod = load_pod(name, image, "python", args, cache)
        pod["spec"]["nodeSelector"] = {CONTROL_PLANE: ""}
        pod["spec"]["tolerations"] = [{"key": CONTROL_PLANE, "operator": "Exists",
                                       "effect": "NoSchedule"}]
        k("delete", "pod", name, "--ignore-not-found", "--wait=true")
        k("apply", "-f", "-", input=json.dumps(pod))
        wait_for(f"{name} running", lambda: self.phase() == "Running", 120, every=1)
        wait_for(f"{name} under way", lambda: any(s.requests > 0 for s in self.samples()),
                 60, every=1)

    def phase(self) -> str:
        return str((kj("get", "pod", self.name).get("status") or {}).get("phase", ""))

    def samples(self) -> list[Sample]:
        out = []
        for line in k("logs", self.name, check=False).stdout.splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                doc = json.loads(line)
                if isinstance(doc, dict) and "at" in doc:
                    out.append(Sample(float(doc["at"]), int(doc["requests"]),
                                      sum(int(v) for v in doc["failures"].values())))
        return out

    def stop(self) -> dict[str, Any]:
        """Stop, read every key written back, and return the program's summary."""
        k("exec", self.name, "--", "python", "-c", "open('/tmp/stop', 'w').close()")
        wait_for(f"{self.name} done", lambda: self.phase() in ("Succeeded", "Failed"), 300,
                 every=1)
        summary: dict[str, Any] = json.loads(k("logs", self.name).stdout.strip()
                                             .splitlines()[-1])
        return summary


@dataclass
class Timeline:
    failed: int  # requests that failed between the fault and its end
    flowing_after: float | None  # seconds from the fault until requests flowed again (None:
    #                              never, within the window)
    slowest_second: int  # fewest requests done in one second within the window
    seconds: list[tuple[float, int, int]]  # (since the fault, done, failed) per progress line

    def __str__(self) -> str:
        return (f"flowing again after {self.flowing_after} s, {self.failed} failed, slowest "
                f"second {self.slowest_second}; per second (t, done, failed): "
                + " ".join(f"{t:.0f}:{d}/{f}" for t, d, f in self.seconds))


def timeline(samples: list[Sample], start: float, end: float, rate: float) -> Timeline:
    """What the client saw from `start` to `end` (wall clock): requests failed, and when they
    flowed again: the first second from which on every second until `end` saw at least half
    the rate done without failure."""
    window = [(a, b) for a, b in itertools.pairwise(samples) if b.at > start and a.at < end]
    before = [s for s in samples if s.at <= start]
    during = [s for s in samples if s.at <= end]
    failed = (during[-1].failures if during else 0) - (before[-1].failures if before else 0)
    good = [((b.requests - a.requests) - (b.failures - a.failures)) / max(b.at - a.at, 0.1)
            >= rate / 2 for a, b in window]
    flowing = None
    for i in range(len(window)):
        if all(good[i:]):
            flowing = max(0.0, window[i][0].at - start)
            break
    slowest = min((b.requests - a.requests for a, b in window), default=0)
    seconds = [(b.at - start, b.requests - a.requests, b.failures - a.failures)
               for a, b in window]
    return Timeline(failed, flowing, slowest, seconds)
