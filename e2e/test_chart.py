"""The Helm chart on a real cluster: every ci/ scenario's `helm template` output accepted by the
API server (`kubectl apply --dry-run=server`), the raw manifests and examples too, then
`helm install`, `helm upgrade` and `helm uninstall` of a release.

Needs KUBECONFIG, kubectl and helm (scripts/helm.sh builds it). Runs in its own namespace
(distcache-chart-e2e) and release (dcchart), with an operator that watches only that
namespace, so it leaves the operator that `make kind-up` installed, and other tests, alone.
When another operator already watches every namespace, two operators would serve the
release's DistCache; the test then installs the operator without a DistCache and says so.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest
import yaml
from kindload import kind_cluster
from kubehelp import REPO, kubectl, kubectl_json, kubectl_path, wait_established, wait_for
from ophelp import CacheClient

NS = "distcache-chart-e2e"
RELEASE = "dcchart"
CHART = REPO / "charts" / "distcache"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
HELM_VERSION = "v4.3.2"
# What the release's operator may do, and where: it watches NS only.
SCOPE = ["--set", f"operator.watchNamespaces={{{NS}}}"]


def helm_path() -> str | None:
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    built = (Path(os.environ.get("DISTCACHE_DEV_CACHE", "/var/cache/distcache")) / "bin"
             / f"helm-{HELM_VERSION}")
    return str(built / "helm") if (built / ".done").exists() else None


def helm(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    exe = helm_path()
    assert exe
    proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def k(*args: str, check: bool = True, input: str | None = None,
      namespace: str | None = NS, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return kubectl(*args, check=check, input=input, namespace=namespace, timeout=timeout)


def served_groups() -> set[str]:
    return set(k("api-versions", namespace=None).stdout.split())


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("e2e needs a cluster: KUBECONFIG is not set (make kind-up brings one up)")
    if not kubectl_path():
        pytest.skip("e2e needs kubectl on PATH (or KUBECTL=...)")
    if not helm_path():
        pytest.skip(f"helm {HELM_VERSION} is not built: scripts/helm.sh builds it")
    helm("uninstall", RELEASE, "-n", NS, "--ignore-not-found", "--wait", "--timeout=120s",
         check=False)
    # A DistCache left by a failed run keeps the operator's finalizer after its operator went:
    # without it the namespace could never go.
    left = k("get", "distcaches", "-o", "name", check=False).stdout.split()
    for dc in left:
        k("patch", dc, "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False)
    k("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=180s",
      namespace=None, timeout=200)
    k("create", "namespace", NS, namespace=None)
    k("label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted", namespace=None)
    # The chart's CRDs, as `helm install` would create them (and as make kind-up applies
    # them): the dry-runs below need them served.
    k("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"), namespace=None)
    wait_established("distcaches.distcache.io", "clusterkopfpeerings.kopf.dev",
                     "kopfpeerings.kopf.dev")
    yield
    # The namespace stays for inspection (the next run removes it); the release is gone.


def split_unserved(rendered: str, groups: set[str]) -> tuple[str, list[str]]:
    """The documents of API groups this cluster serves, and the kinds left out."""
    kept, left_out = [], []
    for doc in yaml.safe_load_all(rendered):
        if not doc:
            continue
        if doc["apiVersion"] in groups or doc["apiVersion"] == "v1":
            kept.append(doc)
        else:
            left_out.append(f"{doc['apiVersion']} {doc['kind']}")
    return yaml.safe_dump_all(kept), left_out


# Objects of API groups a bare kind cluster does not serve, rendered by these scenarios: their
# presence is checked, the API server checks the rest.
NEEDS = {
    "monitoring-values.yaml": {"ServiceMonitor", "PodMonitor", "PrometheusRule"},
}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name)
def test_template_accepted_by_the_api_server(cluster: None, scenario: Path) -> None:
    rendered = helm("template", RELEASE, str(CHART), "-n", NS, "-f", str(scenario)).stdout
    docs, left_out = split_unserved(rendered, served_groups())
    need = NEEDS.get(scenario.name, set())
    assert {x.split()[-1] for x in left_out} <= need, f"not served here: {left_out}"
    rendered_kinds = {x.split()[-1] for x in left_out} | {
        d["kind"] for d in yaml.safe_load_all(docs) if d}
    assert need <= rendered_kinds, f"{need - rendered_kinds} not rendered"
    if left_out:
        print(f"{scenario.name}: not served here, left out of the dry-run: {left_out}")
    k("apply", "--dry-run=server", "-f", "-", input=docs)


def test_raw_manifests_and_examples_accepted_by_the_api_server(cluster: None) -> None:
    k("apply", "--dry-run=server", "-f", str(REPO / "manifests" / "operator"), namespace=None)
    k("apply", "--dry-run=server", "-f", str(REPO / "manifests" / "monitoring" /
                                             "10-grafana-dashboards.yaml"), namespace=None)
    for example in sorted((REPO / "manifests" / "examples").glob("*.yaml")):
        k("apply", "--dry-run=server", "-f", str(example))


def foreign_cluster_wide_operator() -> str | None:
    """An operator Deployment outside this release that watches every namespace."""
    deploys = kubectl_json("get", "deployments", "-A", "-l",
                           "app.kubernetes.io/name=distcache-operator", namespace=None)["items"]
    for d in deploys:
        if d["metadata"]["namespace"] == NS:
            continue
        command = " ".join(d["spec"]["template"]["spec"]["containers"][0].get("command", []))
        if "--namespace=" not in command:
            return f"{d['metadata']['namespace']}/{d['metadata']['name']}"
    return None


def release_objects() -> list[str]:
    """Every object carrying this release's instance label, cluster-scoped ones included."""
    found = []
    selector = f"app.kubernetes.io/instance={RELEASE}"
    for kind in ("deployments", "replicasets", "pods", "serviceaccounts", "services",
                 "roles", "rolebindings", "jobs", "distcaches"):
        out = k("get", kind, "-l", selector, "-o", "name", check=False).stdout.split()
        found += out
    found += k("get", "kopfpeerings", "-l", selector, "-o", "name", check=False).stdout.split()
    for kind in ("clusterroles", "clusterrolebindings", "clusterkopfpeerings"):
        found += k("get", kind, "-l", selector, "-o", "name", namespace=None,
                   check=False).stdout.split()
    return found


def dc_status(name: str) -> dict[str, Any]:
    return dict(kubectl_json("get", "distcache", name, namespace=NS).get("status") or {})


@pytest.mark.timeout(1200)
def test_install_upgrade_uninstall(cluster: None) -> None:
    other = foreign_cluster_wide_operator()
    with_cache = other is None
    values = [*SCOPE, "--set", "operator.image.pullPolicy=Never"]
    if with_cache:
        values += ["--set", "cache.enabled=true", "--set", "cache.name=cache",
                   "--set", "cache.replicas=2", "--set", "cache.imagePullPolicy=Never"]
    t0 = time.monotonic()
    out = helm("install", RELEASE, str(CHART), "-n", NS, *values, "--wait",
               "--timeout=180s").stdout
    print(f"helm install: {time.monotonic() - t0:.1f} s")
    assert "STATUS: deployed" in out
    deploy = kubectl_json("get", "deployment", f"{RELEASE}-distcache-operator", namespace=NS)
    assert deploy["status"].get("readyReplicas") == 1
    # The operator runs as its own ServiceAccount, bound only in NS.
    sa = f"system:serviceaccount:{NS}:{RELEASE}-distcache-operator"
    assert k("auth", "can-i", "patch", "distcaches", "--as", sa).stdout.strip() == "yes"
    assert k("auth", "can-i", "list", "distcaches", "--as", sa, "-n", "default",
             namespace=None, check=False).stdout.strip() == "no"
    assert k("auth", "can-i", "delete", "secrets", "--as", sa, check=False).stdout.strip() == "no"

    if with_cache:
        # The DistCache of cache.enabled, served by the release's operator; the NOTES'
        # commands read its API key and reach it.
        wait_for("DistCache cache ready with 2 pods",
                 lambda: dc_status("cache").get("readyReplicas") == 2
                 and dc_status("cache").get("phase") == "Running", timeout=300, every=2)
        secret = kubectl_json("get", "secret", "cache-api-key", namespace=NS)
        assert base64.b64decode(secret["data"]["api-key"])
        notes = helm("get", "notes", RELEASE, "-n", NS).stdout
        assert f"kubectl -n {NS} get secret cache-api-key" in notes
        assert f"kubectl -n {NS} port-forward svc/cache 8080:8080" in notes
    else:
        print(f"another operator ({other}) watches every namespace: installed without a "
              "DistCache so that two operators never serve one")

    # helm upgrade: a changed value reaches the objects; the operator pod is replaced
    # (Recreate), the release's revision is 2.
    old_pods = set(k("get", "pods", "-l", f"app.kubernetes.io/instance={RELEASE},"
                     "app.kubernetes.io/name=distcache-operator", "-o", "name").stdout.split())
    upgrade = [*values, "--set", "operator.podAnnotations.distcache\\.io/upgraded=yes"]
    if with_cache:
        upgrade += ["--set", "cache.replicas=3"]
    helm("upgrade", RELEASE, str(CHART), "-n", NS, *upgrade, "--wait", "--timeout=180s")
    history = json.loads(helm("history", RELEASE, "-n", NS, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2] and history[-1]["status"] == "deployed"
    pods = kubectl_json("get", "pods", "-l", f"app.kubernetes.io/instance={RELEASE},"
                        "app.kubernetes.io/name=distcache-operator", namespace=NS)["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert live and all(p["metadata"]["annotations"].get("distcache.io/upgraded") == "yes"
                        for p in live)
    assert not {f"pod/{p['metadata']['name']}" for p in live} & old_pods
    if with_cache:
        assert kubectl_json("get", "distcache", "cache", namespace=NS)["spec"]["replicas"] == 3
        wait_for("DistCache cache scaled to 3 by the upgraded operator",
                 lambda: dc_status("cache").get("readyReplicas") == 3
                 and dc_status("cache").get("replicas") == 3, timeout=300, every=2)

    # helm uninstall: no operator object is left (CRDs stay, as Helm leaves crds/ alone). With
    # a DistCache, the pre-delete hook deletes it while the operator still runs (its finalizer).
    t0 = time.monotonic()
    helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout=300s", timeout=360)
    print(f"helm uninstall: {time.monotonic() - t0:.1f} s")
    wait_for("every object of the release gone", lambda: not release_objects(), timeout=180,
             every=2)
    if with_cache:
        # The DistCache went with the release; everything it owned is garbage-collected.
        wait_for("the DistCache's pods gone",
                 lambda: not k("get", "pods,statefulsets", "-l",
                               "app.kubernetes.io/instance=cache", "-o", "name").stdout.strip(),
                 timeout=180, every=2)
    assert RELEASE not in helm("list", "-n", NS, "-q").stdout.split()
    assert k("get", "crd", "distcaches.distcache.io", namespace=None, check=False).returncode == 0


def operator_pods() -> list[str]:
    pods = kubectl_json("get", "pods", "-l", f"app.kubernetes.io/instance={RELEASE},"
                        "app.kubernetes.io/name=distcache-operator", namespace=NS)["items"]
    return sorted(p["metadata"]["name"] for p in pods
                  if not p["metadata"].get("deletionTimestamp")
                  and p.get("status", {}).get("phase") == "Running")


def peers() -> dict[str, int]:
    """The KopfPeering's live peers: pod name -> priority."""
    doc = kubectl_json("get", "kopfpeering", f"{RELEASE}-distcache-operator", namespace=NS)
    return {key.split("@")[1].split("/")[0]: int(v["priority"])
            for key, v in (doc.get("status") or {}).items()}


def peering_state(pod: str) -> str:
    """'Resuming' or 'Pausing': the pod's last peering decision in its log ('' for none)."""
    lines = [x for x in k("logs", pod).stdout.splitlines()
             if "Resuming operations" in x or "Pausing operations" in x]
    return "" if not lines else ("Resuming" if "Resuming operations" in lines[-1] else "Pausing")


@contextmanager
def paused(deployment: str) -> Iterator[None]:
    """Another operator (namespace/name) scaled to 0 for the duration, so that this release's
    operators alone serve their namespace; scaled back to its replicas afterwards."""
    ns, name = deployment.split("/")
    doc = kubectl_json("get", "deployment", name, namespace=ns)
    replicas = int(doc["spec"].get("replicas", 1))
    selector = ",".join(f"{a}={b}" for a, b in doc["spec"]["selector"]["matchLabels"].items())
    k("scale", "deployment", name, "--replicas=0", namespace=ns)
    try:
        wait_for(f"{deployment} has no pod", lambda: not k(
            "get", "pods", "-l", selector, "-o", "name", namespace=ns).stdout.strip(),
            timeout=120, every=1)
        yield
    finally:
        k("scale", "deployment", name, f"--replicas={replicas}", namespace=ns)
        k("rollout", "status", f"deployment/{name}", "--timeout=180s", namespace=ns,
          timeout=200)


def hard_kill(pod: str) -> str:
    """SIGKILL the pod's container process from its kind node: no shutdown, so kopf cannot
    leave the peering (the others must see it gone when its keep-alive lapses). Says how it
    was done; on a cluster that is not kind, a delete with no grace period instead."""
    doc = kubectl_json("get", "pod", pod, namespace=NS)
    node = doc["spec"]["nodeName"]
    cid = doc["status"]["containerStatuses"][0]["containerID"].split("://")[-1]
    if kind_cluster() is None or not docker_has_container(node):
        k("delete", "pod", pod, "--grace-period=0", "--force", check=False)
        return "deleted with --grace-period=0 --force (not a kind node: no SIGKILL)"
    pid = subprocess.run(["docker", "exec", node, "crictl", "inspect", "--output",
                          "go-template", "--template", "{{.info.pid}}", cid],
                         capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    assert pid.isdigit(), pid
    subprocess.run(["docker", "exec", node, "kill", "-9", pid], check=True, timeout=30)
    return f"SIGKILL to pid {pid} on node {node}"


def docker_has_container(name: str) -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "inspect", "--type", "container", name], capture_output=True).returncode == 0


def ring_members(name: str) -> list[tuple[str, str]]:
    cm = kubectl_json("get", "configmap", f"{name}-ring", namespace=NS)
    return [(m["id"], m["state"]) for m in json.loads(cm["data"]["ring.json"])["members"]]


def cache_client(name: str) -> CacheClient:
    api_key = base64.b64decode(kubectl_json("get", "secret", f"{name}-api-key", namespace=NS)[
        "data"]["api-key"]).decode()
    ca = base64.b64decode(kubectl_json("get", "secret", f"{name}-tls", namespace=NS)[
        "data"]["ca.crt"]).decode()
    return CacheClient(f"pod/{name}-0", api_key, ca, namespace=NS)


@pytest.mark.timeout(900)
def test_two_operator_replicas_one_reconciles_and_the_standby_takes_over(
        cluster: None) -> None:
    """Two operator replicas with kopf peering: one reconciles, the other stands by. The
    active one is SIGKILLed in the middle of a scale 2 -> 3 (the StatefulSet already grown,
    the ring not yet), and the Deployment goes to 1 replica so nothing replaces it: the scale
    can only finish if the standby took over, which its log shows (it resumed) and the ring
    shows (3 active members, no key lost).

    Where another operator watches every namespace, two operators would serve one DistCache:
    on kind (the test bed's own operator) it is scaled to 0 for the failover and back after;
    on another cluster only the peering is checked, and the test says so."""
    other = foreign_cluster_wide_operator()
    helm("install", RELEASE, str(CHART), "-n", NS, *SCOPE, "-f",
         str(CHART / "ci" / "two-replicas-values.yaml"),
         "--set", "operator.image.pullPolicy=Never", "--wait", "--timeout=180s")
    try:
        # kopf peering: both pods keep themselves alive in the KopfPeering with their own
        # priorities; the lower one pauses in favour of the higher.
        wait_for("two peers", lambda: len(peers()) == 2 and set(peers()) == set(operator_pods()),
                 timeout=60)
        prio = peers()
        assert len(set(prio.values())) == 2, prio
        active = max(prio, key=lambda p: prio[p])
        standby = min(prio, key=lambda p: prio[p])
        # kopf starts a peered operator paused: the active one logs that it resumed; the
        # standby either never resumed or paused again after resuming.
        wait_for(f"{active} (priority {prio[active]}) resumed",
                 lambda: peering_state(active) == "Resuming", timeout=60)
        time.sleep(3)
        assert peering_state(standby) in ("", "Pausing"), k("logs", standby).stdout
        if other and kind_cluster() is None:
            print(f"another operator ({other}) watches every namespace of this cluster, "
                  "which is not kind: peering checked, failover not (two operators would "
                  "serve one DistCache, and this test does not pause a cluster's operator)")
            return
        with paused(other) if other else nullcontext():
            failover(active, standby)
    finally:
        helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout=180s", check=False)
    wait_for("every object of the release gone", lambda: not release_objects(), timeout=180,
             every=2)


def failover(active: str, standby: str) -> None:
    dc = ("apiVersion: distcache.io/v1alpha1\nkind: DistCache\nmetadata: {name: peer}\n"
          "spec: {replicas: 2, replicationFactor: 2, imagePullPolicy: Never}\n")
    k("apply", "-f", "-", input=dc)
    wait_for("DistCache peer Running", lambda: dc_status("peer").get("readyReplicas") == 2,
             timeout=180, every=2)
    client = cache_client("peer")
    try:
        items = {f"peer-{i}": i for i in range(2000)}
        client.mset(items)
        # The active operator starts the scale (it grows the StatefulSet first), and is
        # killed right then: the new member's join is still all ahead.
        k("scale", "distcache", "peer", "--replicas=3")
        wait_for("the active operator grew the StatefulSet", lambda: kubectl_json(
            "get", "statefulset", "peer", namespace=NS)["spec"]["replicas"] == 3,
            timeout=60, every=0.2)
        at_kill = ring_members("peer")
        assert len(at_kill) == 2, f"the scale was over before the kill: {at_kill}"
        # The ReplicaSet removes the pod of least deletion cost when scaled down.
        k("annotate", "pod", active, "controller.kubernetes.io/pod-deletion-cost=-1000")
        k("annotate", "pod", standby, "controller.kubernetes.io/pod-deletion-cost=1000")
        how = hard_kill(active)
        k("scale", "deployment", f"{RELEASE}-distcache-operator", "--replicas=1")
        wait_for(f"{active} gone", lambda: active not in k(
            "get", "pods", "-o", "name").stdout, timeout=120, every=1)
        assert operator_pods() == [standby]
        t0 = time.monotonic()
        wait_for("the scale to 3 finished by the standby", lambda: sorted(ring_members("peer")) == [
            ("peer-0", "active"), ("peer-1", "active"), ("peer-2", "active")]
            and dc_status("peer").get("readyReplicas") == 3, timeout=300, every=2)
        print(f"\n{active} killed ({how}) with the ring at {at_kill}; the standby {standby} "
              f"finished the scale {time.monotonic() - t0:.0f} s later")
        # Observed, not inferred: the standby says it resumed (it had not, or had paused).
        assert peering_state(standby) == "Resuming", k("logs", standby).stdout
        print("\n".join(f"{standby}: {x}" for x in k("logs", standby).stdout.splitlines()
                        if "operations" in x))
        assert operator_pods() == [standby]
        client.forward.close()
        found = client.mget(list(items))
        lost = [key for key in items if found.get(key) != items[key]]
        assert not lost, f"{len(lost)} keys lost, e.g. {lost[:5]}"
    finally:
        client.close()
    k("delete", "distcache", "peer", "--wait=true", "--timeout=120s", timeout=150)
