"""The faults real clusters have, on a kind cluster of a control plane and three workers in
two zones (zone-a: two workers, zone-b: one): a whole zone stopped, one worker stopped past
the node-monitor grace period, a worker drained, and the operator's own node stopped in the
middle of a scale. Client load runs throughout from a pod on the control-plane node (the
project's load program: the ring-aware client, versioned writes, every acknowledged write read
back at the end, stale reads counted).

A stopped worker is its node container paused (`docker pause`): every process on it freezes,
the kubelet stops posting status, the node goes NotReady after the grace period, connections
to its pods hang. The cache processes keep their memory while frozen, so keys are read back
*while* the node or zone is still stopped: a key readable only from the stopped members counts
as lost, as it would be if they never came back.

Each test prints its figures (docs/benchmarks.md "Node and zone faults" has them): the time
from the fault until requests flowed again, requests that failed meanwhile, time to heal.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from nodehelp import (
    Loader,
    condition,
    node_ready,
    pods_by_node,
    stopped,
    timeline,
    unpause_all,
    workers,
)
from ophelp import OPERATOR_NS, distcache, k, kj, ring, settled, wait_for
from ophelp import wait_settled_or_explain as settle
from tlshelp import dc_yaml, operator_ready

from distcache_node.cluster.ring import Ring, RingDoc

# The nodes tier (scripts/tiers.py), not the one-node kind tier: marked here, as a conftest.py
# in this folder would shadow e2e/conftest.py for the modules that import from it.
pytestmark = pytest.mark.nodes

NAME = "faults"
RATE = float(os.environ.get("DISTCACHE_DEV_NODES_RATE", "100"))
# Longer than the node-monitor grace period (50 s in Kubernetes 1.34): the node is NotReady
# and its pods' endpoints are gone before it comes back.
OUTAGE = float(os.environ.get("DISTCACHE_DEV_NODES_OUTAGE", "70"))


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    """The workers (node -> zone), every one answering again after the module, whatever
    happened (paused nodes unpaused, cordons lifted)."""
    operator_ready()
    found = workers()
    yield found
    unpause_all(list(found))
    for node in found:
        k("uncordon", node, namespace=None, check=False)


@pytest.fixture(scope="module")
def cache(cluster: dict[str, str], node_image: str) -> Iterator[str]:
    """A DistCache of 4, replication 2, spread over the zones by the operator's defaults."""
    k("delete", "distcache", NAME, "--ignore-not-found", "--wait=true", timeout=150)
    k("apply", "-f", "-", input=dc_yaml(NAME, 4, f"  replicationFactor: 2\n"
                                               f"  image: {node_image}\n"))
    settle(NAME, 4, 300)
    # The ring has every member's zone before anything else happens.
    wait_for("every member's zone in the ring", lambda: all(
        m.get("zone") for m in ring(NAME)["members"]), 60, every=1)
    yield NAME
    for pod in ("zone-load", "worker-load", "drain-load"):
        k("delete", "pod", pod, "--ignore-not-found", "--wait=false", check=False)
    k("delete", "distcache", NAME, "--ignore-not-found", "--wait=true", check=False,
      timeout=150)


def members_on(nodes: set[str]) -> list[str]:
    return sorted(p for node, pods in pods_by_node(NAME).items() if node in nodes
                  for p in pods)


def assert_nothing_lost(summary: dict[str, object], what: str) -> None:
    assert summary["lost_writes"] == 0, (
        f"{what}: {summary['lost_writes']} of {summary['keys_checked']} acknowledged writes "
        f"lost or unreadable: {summary['lost_examples']}")
    assert summary["stale_reads"] == 0, (
        f"{what}: {summary['stale_reads']} stale reads: {summary['stale_examples']}")


def failures_said(summary: dict[str, object]) -> str:
    examples = summary.get("failure_examples") or []
    return f"failures {summary['failure_reasons']}, first: {examples[:3]}"  # type: ignore[index]


def healed(name: str, size: int) -> bool:
    return (settled(name, size) is not None
            and condition(name, "Degraded").get("status") == "False")


def test_a_whole_zone_stopped_loses_no_key(cache: str, cluster: dict[str, str],
                                           node_image: str) -> None:
    zone = max(set(cluster.values()), key=lambda z: len(members_on(
        {n for n, zz in cluster.items() if zz == z})))
    nodes = sorted(n for n, z in cluster.items() if z == zone)
    doc = RingDoc.from_json(ring(NAME))
    down = members_on(set(nodes))
    # The fault is one that loses keys without zone-aware placement: two or more members in
    # the zone, and the same members placed without zones put both copies of some keys on
    # them.
    assert len(down) >= 2 and len(down) < len(doc.members), (zone, down)
    assert Ring([m.id for m in doc.members], doc.replication).all_copies_on(down)
    assert not doc.target().all_copies_on(down), "the ring is not zone-aware"

    load = Loader("zone-load", NAME, node_image, RATE)
    time.sleep(15)  # keys written all over the ring
    with stopped(*nodes) as at:
        wait_for(f"{', '.join(nodes)} NotReady", lambda: all(
            node_ready(n) != "True" for n in nodes), OUTAGE + 60, every=2)
        wait_for("Degraded naming the zone's members", lambda: all(
            m in condition(NAME, "Degraded").get("message", "") for m in down), 60, every=2)
        degraded = condition(NAME, "Degraded")
        available = condition(NAME, "Available")
        time.sleep(max(0.0, at + OUTAGE - time.time()))
        # Every key written, read back while the zone is still stopped.
        summary = load.stop()
        ended = time.time()
    t_heal = time.monotonic()
    wait_for("healed after the zone came back", lambda: healed(NAME, 4), 300, every=2)
    heal_s = time.monotonic() - t_heal
    seen = timeline(load.samples(), at, ended, RATE)
    print(f"\nzone {zone} ({', '.join(nodes)}; members {', '.join(down)}) stopped "
          f"{ended - at:.0f} s: requests flowing again after {seen.flowing_after} s, "
          f"{seen.failed} failed meanwhile (of {summary['requests']} in the run), "
          f"slowest second {seen.slowest_second} requests; {summary['lost_writes']} of "
          f"{summary['keys_checked']} keys lost; healed {heal_s:.0f} s after it came back; "
          f"Degraded: {degraded.get('message')}; Available: {available.get('status')}; "
          f"{failures_said(summary)}; timeline: {seen}")
    assert_nothing_lost(summary, f"zone {zone} stopped")
    assert degraded.get("reason") == "MembersNotReady" and f"zone {zone}" in degraded["message"]
    assert available.get("status") == "True", available
    assert seen.flowing_after is not None and seen.flowing_after <= 20, str(seen)


def test_a_worker_stopped_past_the_grace_period_is_served_around_and_heals(
        cache: str, cluster: dict[str, str], node_image: str) -> None:
    by_node = pods_by_node(NAME)
    node = max(cluster, key=lambda n: len(by_node.get(n, [])))
    down = sorted(by_node.get(node, []))
    assert down, f"no cache pod on any worker: {by_node}"
    load = Loader("worker-load", NAME, node_image, RATE)
    time.sleep(10)
    with stopped(node) as at:
        wait_for(f"{node} NotReady", lambda: node_ready(node) != "True", OUTAGE + 60, every=2)
        not_ready_s = time.time() - at
        wait_for("Degraded naming the members", lambda: all(
            m in condition(NAME, "Degraded").get("message", "") for m in down), 60, every=2)
        degraded = condition(NAME, "Degraded")
        time.sleep(max(0.0, at + OUTAGE - time.time()))
        back = time.time()
    wait_for("healed after the worker came back", lambda: healed(NAME, 4), 300, every=2)
    heal_s = time.time() - back
    time.sleep(5)
    summary = load.stop()
    seen = timeline(load.samples(), at, back, RATE)
    print(f"\nworker {node} (members {', '.join(down)}) stopped {back - at:.0f} s, NotReady "
          f"after {not_ready_s:.0f} s: requests flowing again after {seen.flowing_after} s, "
          f"{seen.failed} failed meanwhile, slowest second {seen.slowest_second} requests; "
          f"healed {heal_s:.0f} s after it came back; {summary['requests']} requests, "
          f"{summary['failures']} failed, {summary['lost_writes']} lost of "
          f"{summary['keys_checked']} keys; Degraded: {degraded.get('message')}; "
          f"{failures_said(summary)}; timeline: {seen}")
    assert_nothing_lost(summary, f"worker {node} stopped")
    assert degraded.get("reason") == "MembersNotReady"
    assert seen.flowing_after is not None and seen.flowing_after <= 20, str(seen)
    # Once the worker is back nothing fails: every failure was inside the outage.
    after = [s for s in load.samples() if s.at >= back + heal_s]
    assert not after or after[-1].failures == after[0].failures, "failures after healing"


def test_a_drained_worker_waits_on_the_pdb_and_every_request_is_answered(
        cache: str, cluster: dict[str, str], node_image: str) -> None:
    by_node = pods_by_node(NAME)
    node = max(cluster, key=lambda n: len(by_node.get(n, [])))
    evicted = sorted(by_node.get(node, []))
    assert len(evicted) >= 2, f"no worker holds two cache pods to drain: {by_node}"
    load = Loader("drain-load", NAME, node_image, RATE)
    time.sleep(10)
    most_down, done = 0, threading.Event()

    def watch() -> None:  # never more pods unready than the PDB allows (R-1 = 1)
        nonlocal most_down
        while not done.is_set():
            st = kj("get", "statefulset", NAME).get("status") or {}
            most_down = max(most_down, 4 - int(st.get("readyReplicas", 0)))
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.monotonic()
    try:
        drain = subprocess.run(
            ["kubectl", "drain", node, "--ignore-daemonsets", "--delete-emptydir-data",
             "--timeout=600s"], capture_output=True, text=True, timeout=660)
        drain_s = time.monotonic() - t0
        wait_for("settled after the drain", lambda: healed(NAME, 4), 300, every=2)
    finally:
        done.set()
        watcher.join()
        k("uncordon", node, namespace=None, check=False)
    time.sleep(5)
    summary = load.stop()
    moved = {p: n for n, pods in pods_by_node(NAME).items() for p in pods if p in evicted}
    waited = drain.stderr.count("disruption budget")
    print(f"\ndrain of {node} ({', '.join(evicted)}) took {drain_s:.0f} s, {waited} evictions "
          f"refused by the PDB meanwhile, at most {most_down} pod(s) down; now on "
          f"{moved}; load: {summary['requests']} requests, {summary['failures']} failed, "
          f"{summary['lost_writes']} lost of {summary['keys_checked']} keys")
    assert drain.returncode == 0, drain.stderr[-2000:]
    assert waited > 0, "no eviction waited on the PDB: " + drain.stderr[-2000:]
    assert most_down <= 1, f"{most_down} pods were down at once"
    assert all(n != node for n in moved.values()), moved
    assert_nothing_lost(summary, f"drain of {node}")
    assert summary["failures"] == 0, summary["failure_examples"]


OPNAME = "opnode"


def operator_pod() -> dict[str, object]:
    pods = [p for p in kj("get", "pods", "-l", "app.kubernetes.io/name=distcache-operator",
                          namespace=OPERATOR_NS)["items"]
            if not p["metadata"].get("deletionTimestamp")]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def test_the_operators_node_stopped_mid_scale_and_the_scale_completes(
        cluster: dict[str, str], node_image: str) -> None:
    # The cache in one zone, the operator in the other: the operator's node holds no cache
    # pod, so what the scale waits for is the operator alone.
    zones = sorted(set(cluster.values()), key=lambda z: -list(cluster.values()).count(z))
    cache_zone, operator_zone = zones[0], zones[1]
    k("delete", "distcache", NAME, "--ignore-not-found", "--wait=true", timeout=150)
    k("apply", "-f", "-", input=dc_yaml(OPNAME, 3, f"  replicationFactor: 2\n  image: "
                                                 f"{node_image}\n  nodeSelector:\n"
                                                 f"    topology.kubernetes.io/zone: "
                                                 f"{cache_zone}\n"))
    patch = json.dumps({"spec": {"template": {"spec": {"affinity": {"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "preference": {
            "matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In",
                                  "values": [operator_zone]}]}}]}}}}}})
    k("patch", "deployment", "distcache-operator", "-p", patch, namespace=OPERATOR_NS)
    try:
        k("rollout", "status", "deployment/distcache-operator", "--timeout=180s",
          namespace=OPERATOR_NS, timeout=200)
        settle(OPNAME, 3, 300)
        before = operator_pod()
        node = str(before["spec"]["nodeName"])  # type: ignore[index]
        assert cluster[node] == operator_zone and not pods_by_node(OPNAME).get(node), node
        k("scale", f"distcache/{OPNAME}", "--replicas=4")
        with stopped(node) as at:
            t_sts = time.time()
            completed_early = False

            def replaced() -> dict[str, object] | None:
                nonlocal completed_early
                completed_early = completed_early or settled(OPNAME, 4) is not None
                pod = operator_pod()
                running = (pod["status"] or {}).get("phase") == "Running"  # type: ignore[union-attr]
                return pod if pod["metadata"]["uid"] != before["metadata"]["uid"] and \
                    running else None  # type: ignore[index]

            after = wait_for("the operator pod replaced on another node", replaced, 300,
                             every=2)
            rescheduled_s = time.time() - at
            assert not completed_early, "the scale completed with the operator stopped"
            wait_for("the scale completed by the new operator", lambda: settled(OPNAME, 4),
                     300, every=2)
            done_s = time.time() - at
            assert node_ready(node) != "True", "the node came back before the scale completed"
        print(f"\noperator's node {node} stopped {t_sts - at:.1f} s after `kubectl scale` "
              f"3 -> 4: the operator pod ran again on {after['spec']['nodeName']} after "  # type: ignore[index]
              f"{rescheduled_s:.0f} s; the scale completed {done_s:.0f} s after the stop")
        assert after["spec"]["nodeName"] != node  # type: ignore[index]
        assert len(ring(OPNAME)["members"]) == 4
        assert distcache(OPNAME)["status"]["readyReplicas"] == 4
    finally:
        unpause_all([node] if "node" in locals() else [])
        k("patch", "deployment", "distcache-operator", "--type=json", "-p",
          '[{"op":"remove","path":"/spec/template/spec/affinity"}]', namespace=OPERATOR_NS,
          check=False)
        k("delete", "distcache", OPNAME, "--ignore-not-found", "--wait=false", check=False)
