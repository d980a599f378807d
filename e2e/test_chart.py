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
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubehelp import REPO, kubectl, kubectl_json, kubectl_path, wait_established, wait_for

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


@pytest.mark.timeout(900)
def test_two_operator_replicas_one_reconciles_and_another_takes_over(cluster: None) -> None:
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
        if other:
            print(f"another operator ({other}) watches every namespace: peering checked, "
                  "failover not (two operators would serve one DistCache)")
            return
        dc = ("apiVersion: distcache.io/v1alpha1\nkind: DistCache\nmetadata: {name: peer}\n"
              "spec: {replicas: 1, imagePullPolicy: Never}\n")
        k("apply", "-f", "-", input=dc)
        wait_for("DistCache peer Running", lambda: dc_status("peer").get("readyReplicas") == 1,
                 timeout=180, every=2)
        # The active operator goes; the peering hands over and a scale is served.
        k("delete", "pod", active, "--wait=true")
        k("scale", "distcache", "peer", "--replicas=2")
        wait_for("DistCache peer scaled to 2 after the failover",
                 lambda: dc_status("peer").get("readyReplicas") == 2
                 and dc_status("peer").get("replicas") == 2, timeout=300, every=2)
        # (Whichever then holds the highest priority, the standby or the Deployment's
        # replacement pod, is the one that served it.)
        k("delete", "distcache", "peer", "--wait=true", "--timeout=120s", timeout=150)
    finally:
        helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout=180s", check=False)
    wait_for("every object of the release gone", lambda: not release_objects(), timeout=180,
             every=2)
