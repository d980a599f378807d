"""No failed request, no lost write and no stale read through a grow, a roll and a shrink.

A DistCache of 3 (replicationFactor 2) serves steady reads and writes from a pod in the
cluster: the product's own load program (`python -m distcache_node.loadcheck`, the ring-aware
`DistCacheClient` seeded with the DistCache's client Service, as an application in the
cluster would use it) at DISTCACHE_DEV_TRAFFIC_RATE operations a second. Meanwhile the cache
grows 3 -> 5 (two members join and take their share), `spec.image` changes and every pod
rolls onto the new image, one at a time (each replacement starts only once the one before
is Ready, which a node is only after taking its share back), and then the cache shrinks
5 -> 3 (two members leave at once, so with replication 2 an undrained shrink loses keys).

The load program writes versioned values (each write a higher counter than any before) and
never has two operations on one key in flight, so it knows every key's last acknowledged
value: a read that returns anything older (or nothing) is a stale read, a key that holds
an older value (or none) when read back at the end is a lost write. It counts every failed
request with its reason. Zero failures, zero lost writes and zero stale reads, or the test
fails with the summary. An operator that let new members own keys before they took their
share and dropped leaving members undrained failed it with 122 stale reads and 14 lost writes
(a deliberately broken build, measured on kind on 7 December 2026).

The "new image" is the node image under a second tag (`docker tag`, then `kind load`): a
real image change for Kubernetes, the same bits inside. On a cluster it cannot load images
into (not kind) the pods roll through a pod annotation instead, the same path for the
StatefulSet, and the test says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kindload import docker_has, kind_binary, kind_cluster, load_image
from kubehelp import load_pod
from ophelp import NS, distcache, k, kj, ring, settled, wait_for, wait_settled_or_explain
from tlshelp import dc_yaml, operator_ready

NAME = "traffic"
LOADER = "traffic-load"
RATE = float(os.environ.get("DISTCACHE_DEV_TRAFFIC_RATE", "300"))
# More arguments for the load program, e.g. "--retry-for 0" to see what the client's
# retries are worth.
EXTRA = os.environ.get("DISTCACHE_DEV_TRAFFIC_ARGS", "").split()
# The cache pods' image, when not the node image: an older build shows what the node's
# drain is worth (the load pod always runs the current node image).
CACHE_IMAGE = os.environ.get("DISTCACHE_DEV_TRAFFIC_CACHE_IMAGE", "")
ROLL_ANNOTATION = "example.com/traffic-roll"


def cache_image(node_image: str) -> str:
    return CACHE_IMAGE or node_image


def can_change_image(image: str) -> str | None:
    """Why the roll cannot be an image change here, or None when it can."""
    if not docker_has(image):
        return f"{image} is not in the local Docker"
    if kind_cluster() is None or kind_binary() is None:
        return "the cluster is not a kind cluster this machine can load images into"
    return None


def start_roll(image: str) -> tuple[str, Callable[[dict[str, Any]], bool]]:
    """Change the DistCache so that every pod rolls: its image where possible, else a pod
    annotation. Returns what changed and a check of a pod (or pod template) carrying it."""
    why_not = can_change_image(image)
    if why_not is None:
        new = f"{image}-e2e-roll"
        subprocess.run(["docker", "tag", image, new], check=True)
        load_image(new, "docker tag of the node image")
        k("patch", f"distcache/{NAME}", "--type=merge",
          "-p", json.dumps({"spec": {"image": new}}))
        return f"image {image} -> {new}", lambda spec: spec["spec"]["containers"][0][
            "image"] == new
    print(f"\nrolling through a pod annotation, not an image change: {why_not}")
    k("patch", f"distcache/{NAME}", "--type=merge",
      "-p", json.dumps({"spec": {"podAnnotations": {ROLL_ANNOTATION: "1"}}}))
    return "pod annotation", lambda spec: spec["metadata"].get(
        "annotations", {}).get(ROLL_ANNOTATION) == "1"


def loader_pod(image: str) -> str:
    """A restricted-Pod-Security pod running the load program from the node image, with the
    DistCache's API key and CA mounted from the Secrets the operator made."""
    seed = f"https://{NAME}.{NS}.svc:8080"
    args = ["-m", "distcache_node.loadcheck", "--seed", seed,
            "--api-key-file", "/key/api-key", "--ca", "/tls/ca.crt",
            "--rate", f"{RATE:g}", "--stop-file", "/tmp/stop", "--progress", "5", *EXTRA]
    return json.dumps(load_pod(LOADER, image, "python", args, NAME))


def phase(pod: str) -> str:
    return str((kj("get", "pod", pod).get("status") or {}).get("phase", ""))


def progress_lines() -> list[dict[str, object]]:
    out = k("logs", LOADER, check=False).stdout + k("logs", LOADER, check=False).stderr
    lines = []
    for line in out.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "t" in doc:
            lines.append(doc)
    return lines


@pytest.fixture(scope="module")
def three(node_image: str) -> Iterator[None]:
    operator_ready()
    k("delete", "distcache", NAME, "--ignore-not-found", "--wait=true", timeout=150)
    k("apply", "-f", "-", input=dc_yaml(
        NAME, 3, f"  replicationFactor: 2\n  image: {cache_image(node_image)}\n"))
    wait_settled_or_explain(NAME, 3, 300)
    yield
    k("delete", "pod", LOADER, "--ignore-not-found", "--wait=false", check=False)
    k("delete", "distcache", NAME, "--ignore-not-found", "--wait=false", check=False)


def test_grow_roll_and_shrink_under_load_fail_no_request_lose_no_write_read_nothing_stale(
        three: None, node_image: str) -> None:
    k("delete", "pod", LOADER, "--ignore-not-found", "--wait=true")
    k("apply", "-f", "-", input=loader_pod(node_image))
    wait_for("the load pod running", lambda: phase(LOADER) == "Running", 120, every=1)
    wait_for("load under way", lambda: any(int(str(p["requests"])) > 0
                                           for p in progress_lines()), 60, every=1)
    time.sleep(5)

    # Grow 3 -> 5 under load: a read of a key whose new owner had not taken its share yet
    # would be stale (absent), a write acknowledged by an owner about to be replaced lost.
    t0 = time.monotonic()
    k("scale", f"distcache/{NAME}", "--replicas=5")
    wait_for("5 active members, settled", lambda: settled(NAME, 5), 600, every=1)
    grow_s = time.monotonic() - t0
    time.sleep(5)

    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in kj(
        "get", "pods", "-l", f"app.kubernetes.io/instance={NAME}")["items"]}
    t0 = time.monotonic()
    change, carries = start_roll(cache_image(node_image))
    wait_for("the StatefulSet's template carries the change", lambda: carries(kj(
        "get", "statefulset", NAME)["spec"]["template"]), 60, every=0.2)
    most_unready = 0

    def rolled() -> bool:
        nonlocal most_unready
        sts = kj("get", "statefulset", NAME)
        st = sts.get("status") or {}
        most_unready = max(most_unready, 5 - int(st.get("readyReplicas", 0)))
        return (st.get("updateRevision") == st.get("currentRevision")
                and st.get("updatedReplicas") == 5 and st.get("readyReplicas") == 5
                and st.get("observedGeneration") == sts["metadata"]["generation"])

    wait_for("every pod rolled", rolled, 600, every=0.5)
    wait_for("settled after the roll", lambda: settled(NAME, 5), 180, every=1)
    pods = kj("get", "pods", "-l", f"app.kubernetes.io/instance={NAME}")["items"]
    assert len(pods) == 5 and all(carries(p) for p in pods), "not every pod was rolled"
    assert all(p["metadata"]["uid"] != before[p["metadata"]["name"]] for p in pods)
    assert most_unready <= 1, f"{most_unready} pods were down at once"
    roll_s = time.monotonic() - t0
    time.sleep(5)

    t0 = time.monotonic()
    k("scale", f"distcache/{NAME}", "--replicas=3")
    wait_for("3 active members, settled", lambda: settled(NAME, 3), 600, every=1)
    shrink_s = time.monotonic() - t0
    assert len(ring(NAME)["members"]) == 3
    time.sleep(5)

    k("exec", LOADER, "--", "python", "-c", "open('/tmp/stop', 'w').close()")
    wait_for("the load program done", lambda: phase(LOADER) in ("Succeeded", "Failed"), 180,
             every=1)
    out = k("logs", LOADER).stdout.strip().splitlines()
    summary = json.loads(out[-1])
    print(f"\ngrow 3->5 {grow_s:.0f} s, roll of 5 pods ({change}) {roll_s:.0f} s, "
          f"shrink 5->3 {shrink_s:.0f} s; load: "
          f"{summary['requests']} requests in {summary['seconds']} s "
          f"({summary['rate_achieved']}/s), {summary['failures']} failed, "
          f"{summary['lost_writes']} lost writes of {summary['keys_checked']} keys, "
          f"{summary['stale_reads']} stale reads, {summary['client_retries']} client retries, "
          f"latency {summary['latency_ms']}")
    print(json.dumps(summary, indent=1))
    assert summary["requests"] > RATE * 30, "the load program hardly ran"
    assert summary["stale_reads"] == 0, (
        f"{summary['stale_reads']} stale reads: {summary['stale_examples']}")
    assert summary["lost_writes"] == 0, (
        f"{summary['lost_writes']} lost writes: {summary['lost_examples']}")
    assert summary["failures"] == 0, summary["failure_examples"]
    assert phase(LOADER) == "Succeeded"
    assert distcache(NAME)["status"]["readyReplicas"] == 3
