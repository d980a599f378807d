"""DistCache on real pods: a 3-pod StatefulSet under restricted Pod Security, TLS between
peers, the ring from a mounted ConfigMap. The tests run in file order and share the 10,000
keys written once (the `written` fixture); each also works alone."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from typing import Any

import pytest
from kubehelp import NAMESPACE, kubectl, kubectl_json, kubectl_path, wait_for

from conftest import PODS, Cluster, exec_in, pod_ready, wait_ready

N_KEYS = 10_000
BATCH = 500
RING_PATH = "/etc/distcache/ring/ring.json"


def value_of(i: int) -> dict[str, Any]:
    return {"n": i, "s": f"value-{i:05d}"}


def keys() -> list[str]:
    return [f"e2e:{i:05d}" for i in range(N_KEYS)]


@pytest.fixture(scope="session")
def written(cluster: Cluster) -> list[str]:
    """10,000 keys written through distcache-0 in /mset batches of 500."""
    ks = keys()
    client = cluster.client("distcache-0")
    for start in range(0, N_KEYS, BATCH):
        items = [{"key": k, "value": value_of(start + j)}
                 for j, k in enumerate(ks[start:start + BATCH])]
        answer = client.ok("POST", "/mset", {"items": items})
        assert answer == {"stored": len(items)}, answer
    return ks


def read_all(cluster: Cluster, pod: str, ks: list[str]) -> list[str]:
    """Every key through one pod; returns the keys that were missing or wrong."""
    bad: list[str] = []
    client = cluster.client(pod)
    for start in range(0, len(ks), BATCH):
        batch = ks[start:start + BATCH]
        answer = client.ok("POST", "/mget", {"keys": batch})
        values = answer["values"]
        for j, k in enumerate(batch):
            if values.get(k) != value_of(start + j):
                bad.append(k)
    return bad


def assert_nothing_lost(cluster: Cluster, ks: list[str]) -> None:
    for pod in PODS:
        bad = read_all(cluster, pod, ks)
        assert not bad, f"through {pod}: {len(bad)} of {len(ks)} keys lost or wrong, e.g. {bad[:5]}"


def ring_versions(cluster: Cluster) -> dict[str, int]:
    return {pod: cluster.client(pod).ok("GET", "/cluster/ring", peer=True)["version"]
            for pod in PODS}


def current_ring_doc() -> dict[str, Any]:
    cm = kubectl_json("get", "configmap", "distcache-ring")
    return dict(json.loads(cm["data"]["ring.json"]))


def publish_ring(doc: dict[str, Any] | str) -> None:
    """Edit the ConfigMap (only the ConfigMap: the pods must see it through the mounted file),
    then touch the pods' annotations so the kubelet syncs their volumes now rather than at its
    next periodic sync (up to a minute or more later)."""
    text = doc if isinstance(doc, str) else json.dumps(doc, indent=2)
    patch = json.dumps({"data": {"ring.json": text}})
    kubectl("patch", "configmap", "distcache-ring", "--type=merge", "-p", patch)
    stamp = str(time.time_ns())
    for pod in PODS:
        kubectl("annotate", "pod", pod, f"distcache.e2e/ring-poke={stamp}", "--overwrite",
                check=False)


def file_in_pod(pod: str) -> str:
    return exec_in(pod, "cat", RING_PATH).stdout


# --- security posture ---------------------------------------------------------------------------

def test_pods_run_non_root_read_only_under_restricted_pss(cluster: Cluster) -> None:
    ns = kubectl_json("get", "namespace", NAMESPACE, namespace=None)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for pod in PODS:
        doc = kubectl_json("get", "pod", pod)
        spec = doc["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        container = spec["containers"][0]["securityContext"]
        assert container["readOnlyRootFilesystem"] is True
        assert container["allowPrivilegeEscalation"] is False
        assert container["capabilities"]["drop"] == ["ALL"]
        # What the process really is, not only what the spec asks for.
        assert exec_in(pod, "id", "-u").stdout.strip() == "10001"
        status = exec_in(pod, "cat", "/proc/1/status").stdout
        assert "CapEff:\t0000000000000000" in status, status
        assert "Seccomp:\t2" in status, "seccomp filter mode expected"
        denied = exec_in(pod, "touch", "/opt/distcache/x", check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr
        exec_in(pod, "touch", "/tmp/writable")  # the emptyDir
    # And the namespace really enforces it: a root pod is refused at admission.
    bad = kubectl("run", "pss-probe", "--image=distcache/node:any", "--restart=Never",
                  "--dry-run=server", "--overrides",
                  json.dumps({"spec": {"securityContext": {"runAsUser": 0}}}), check=False)
    assert bad.returncode != 0 and "violates PodSecurity" in bad.stderr, bad.stderr


# --- data on real pods --------------------------------------------------------------------------

def test_ten_thousand_keys_readable_through_every_pod(cluster: Cluster, written: list[str]) -> None:
    assert_nothing_lost(cluster, written)
    counts = {pod: cluster.client(pod).ok("GET", "/cluster/status", peer=True)["keys"]
              for pod in PODS}
    # Replication 2 of 3: every key on two pods, so 20,000 copies in all.
    assert sum(counts.values()) == 2 * N_KEYS, counts


def _watch_pod(pod: str, events: list[dict[str, Any]], stop: threading.Event) -> None:
    exe = kubectl_path()
    assert exe
    proc = subprocess.Popen(
        [exe, "-n", NAMESPACE, "get", "pod", pod, "--watch", "--output-watch-events",
         "-o", "json"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    decoder = json.JSONDecoder()
    buf = ""
    try:
        for line in proc.stdout:
            buf += line
            while buf.strip():
                try:
                    obj, end = decoder.raw_decode(buf.lstrip())
                except ValueError:
                    break
                buf = buf.lstrip()[end:]
                events.append(obj)
                if obj.get("type") == "DELETED" or stop.is_set():
                    return
    finally:
        proc.terminate()
        proc.wait()


def test_deleted_pod_exits_cleanly_comes_back_refills_and_nothing_is_lost(
        cluster: Cluster, written: list[str]) -> None:
    pod = "distcache-1"
    old_uid = kubectl_json("get", "pod", pod)["metadata"]["uid"]
    events: list[dict[str, Any]] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_pod, args=(pod, events, stop), daemon=True)
    watcher.start()
    wait_for("the pod watch to start", lambda: events, timeout=30, every=0.2)
    grace = 30
    started = time.monotonic()
    kubectl("delete", "pod", pod, f"--grace-period={grace}", "--wait=true", timeout=grace + 60)
    took = time.monotonic() - started
    watcher.join(timeout=30)
    stop.set()
    # The container's last status before the pod object went away: SIGTERM -> exit 0.
    terminated = [
        cs["state"]["terminated"]
        for e in events if e["object"]["metadata"]["uid"] == old_uid
        for cs in e["object"].get("status", {}).get("containerStatuses", [])
        if cs["name"] == "node" and "terminated" in cs.get("state", {})
    ]
    assert terminated, f"no terminated state seen in {len(events)} watch events"
    assert terminated[-1]["exitCode"] == 0, terminated[-1]
    assert terminated[-1]["reason"] == "Completed", terminated[-1]
    assert took < grace, f"deletion took {took:.1f} s: the grace period ({grace} s) ran out"
    # The StatefulSet brings it back under the same name; it refills before it is ready.
    wait_for(f"a new {pod}", lambda: kubectl_json("get", "pod", pod)["metadata"]["uid"] != old_uid,
             timeout=120, every=1)
    wait_ready((pod,), timeout=180)
    cluster.client(pod).forward.reset()
    status = cluster.client(pod).ok("GET", "/cluster/status", peer=True)
    assert status["ready"] is True, status
    assert status["keys"] > 0, f"the new pod took nothing back: {status}"
    assert_nothing_lost(cluster, written)
    counts = {p: cluster.client(p).ok("GET", "/cluster/status", peer=True)["keys"] for p in PODS}
    assert sum(counts.values()) == 2 * N_KEYS, f"copies after the refill: {counts}"


# --- the ring from the ConfigMap ----------------------------------------------------------------

def test_ring_configmap_edit_reaches_pods_through_the_mounted_file(
        cluster: Cluster, written: list[str]) -> None:
    doc = current_ring_doc()
    before = ring_versions(cluster)
    assert set(before.values()) == {doc["version"]}, before
    new = {**doc, "version": doc["version"] + 1, "replication": 3}
    publish_ring(new)
    # The file first (the kubelet swaps it), then every node's ring: no PUT, only the file.
    wait_for("the new ring file in every pod",
             lambda: all(json.loads(file_in_pod(p))["version"] == new["version"] for p in PODS),
             timeout=150, every=2)
    wait_for("every node on the new ring",
             lambda: set(ring_versions(cluster).values()) == {new["version"]}, timeout=60, every=1)
    # Replication 3 on 3 pods: migration copies every key to every pod.
    def all_full() -> bool:
        statuses = [cluster.client(p).ok("GET", "/cluster/status", peer=True) for p in PODS]
        return all(s["keys"] == N_KEYS and s["replication"] == 3 for s in statuses)
    wait_for("every pod holding all keys after replication 2 -> 3", all_full, timeout=180, every=2)
    assert_nothing_lost(cluster, written)


def test_bad_ring_document_is_refused_and_changes_nothing(
        cluster: Cluster, written: list[str]) -> None:
    good = current_ring_doc()
    before = ring_versions(cluster)
    bad = json.loads(json.dumps(good))
    bad["version"] = max(before.values()) + 1
    bad["members"][2]["url"] = "http://a:xx"
    # Pushed directly: 400, nothing adopted.
    status, answer = cluster.client("distcache-0").request("PUT", "/cluster/ring", bad, peer=True)
    assert status == 400 and answer["error"] == "invalid_ring", (status, answer)
    # Through the ConfigMap: the file arrives, every node refuses it and says so.
    since_time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
    publish_ring(bad)
    wait_for("the bad ring file in every pod",
             lambda: all("http://a:xx" in file_in_pod(p) for p in PODS), timeout=150, every=2)

    def refused_everywhere() -> bool:
        for p in PODS:
            logs = kubectl("logs", p, f"--since-time={since_time}").stdout
            if f"ring file {RING_PATH} unusable" not in logs:
                return False
        return True
    wait_for("every node to log that it refused the ring file", refused_everywhere,
             timeout=30, every=1)
    assert ring_versions(cluster) == before
    ring = cluster.client("distcache-1").ok("GET", "/cluster/ring", peer=True)
    assert "http://a:xx" not in json.dumps(ring)
    assert all(pod_ready(p) for p in PODS)
    assert_nothing_lost(cluster, written)
    # Put the good document back (a newer version, same content).
    publish_ring({**good, "version": bad["version"] + 1})
    wait_for("the good ring again",
             lambda: set(ring_versions(cluster).values()) == {bad["version"] + 1},
             timeout=150, every=2)
