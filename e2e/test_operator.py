"""The operator on a real cluster: the DistCache resource, scaling with zero keys lost,
capacity refusal, an operator killed mid-drain, garbage collection and least-privilege RBAC.

Needs only KUBECONFIG (kubectl on PATH or KUBECTL=...). The operator runs in-cluster from its
image as its own ServiceAccount (manifests/operator/); when it is not installed the fixture
installs it from the repo's manifests. Tests run in order against one namespace
(distcache-op-e2e, restricted Pod Security) and leave it for inspection.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubehelp import kubectl_path
from ophelp import (
    NS,
    OPERATOR_NS,
    OPERATOR_SA,
    REPO,
    CacheClient,
    client_for,
    condition,
    distcache,
    k,
    kj,
    operator_logs,
    ring,
    settled,
    wait_established,
    wait_for,
    wait_settled_or_explain,
)

NAME = "cache"
KEYS = 10_000


def dc_yaml(name: str, replicas: int, extra: str = "") -> str:
    return (f"apiVersion: distcache.io/v1alpha1\nkind: DistCache\nmetadata:\n  name: {name}\n"
            f"spec:\n  replicas: {replicas}\n  imagePullPolicy: Never\n{extra}")


@pytest.fixture(scope="module")
def operator() -> Iterator[None]:
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("e2e needs a cluster: KUBECONFIG is not set (make kind-up brings one up)")
    if not kubectl_path():
        pytest.skip("e2e needs kubectl on PATH (or KUBECTL=...)")
    have = k("get", "deployment", "distcache-operator", check=False, namespace=OPERATOR_NS)
    if have.returncode != 0:
        k("apply", "-f", str(REPO / "charts" / "distcache" / "crds"), namespace=None)
        wait_established("distcaches.distcache.io")
        k("apply", "-f", str(REPO / "manifests" / "operator"), namespace=None)
    k("rollout", "status", "deployment/distcache-operator", "--timeout=180s",
      namespace=OPERATOR_NS, timeout=200)
    k("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=180s",
      namespace=None, timeout=200)
    k("create", "namespace", NS, namespace=None)
    k("label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted",
      namespace=None)
    yield


@pytest.fixture(scope="module")
def cache(operator: None) -> Iterator[CacheClient]:
    k("apply", "-f", "-", input=dc_yaml(NAME, 3))
    wait_settled_or_explain(NAME, 3, 240)
    client = client_for(NAME)
    yield client
    client.close()


@pytest.fixture(scope="module")
def written(cache: CacheClient) -> dict[str, str]:
    items = {f"key-{i}": f"value-{i}" for i in range(KEYS)}
    cache.mset(items)
    return items


def assert_all_readable(cache: CacheClient, items: dict[str, str]) -> None:
    found = cache.mget(list(items))
    lost = [key for key in items if found.get(key) != items[key]]
    assert not lost, f"{len(lost)} of {len(items)} keys lost, e.g. {lost[:5]}"


def resize(replicas: int) -> None:
    k("scale", f"distcache/{NAME}", f"--replicas={replicas}")
    wait_for(f"{replicas} active members, settled", lambda: settled(NAME, replicas), 300,
             every=1)


def ring_or_none(name: str) -> dict[str, Any] | None:
    proc = k("get", "configmap", f"{name}-ring", "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    return json.loads(json.loads(proc.stdout)["data"]["ring.json"])  # type: ignore[no-any-return]


class Watch:
    """Samples, in a thread until the block ends, the StatefulSet's replicas and the ring
    ConfigMap (members, version), and at the end of the block asserts that the StatefulSet
    never had fewer pods than the ring had members (also when the block failed: that is
    then the first thing to know). Only for shrinks: they take members out of the ring before
    the StatefulSet loses their pods, so reading the StatefulSet first and the ring second
    never shows a correct operator with fewer pods than members; an operator that shrank the
    StatefulSet before the drain was over shows it in some sample."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.samples: list[tuple[float, int, int | None, int | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.assert_never_fewer_pods_than_members()

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            try:
                pods = int(kj("get", "statefulset", self.name)["spec"]["replicas"])
                r = ring_or_none(self.name)
            except Exception:  # the API server busy for a moment: the next sample counts
                self._stop.wait(0.2)
                continue
            members = None if r is None else len(r["members"])
            version = None if r is None else int(r["version"])
            self.samples.append((round(time.monotonic() - t0, 1), pods, members, version))
            self._stop.wait(0.2)

    def assert_never_fewer_pods_than_members(self) -> None:
        assert len(self.samples) >= 10, f"too few samples: {self.samples}"
        short = [s for s in self.samples if s[2] is not None and s[1] < s[2]]
        assert not short, (f"the StatefulSet had fewer pods than the ring has members "
                           f"(seconds, pods, members, ring version): {short[:10]}")

    def assert_ring_version_never_below(self, version: int) -> None:
        low = [s for s in self.samples if s[3] is not None and s[3] < version]
        assert not low, (f"the ring version went below v{version} "
                         f"(seconds, pods, members, ring version): {low[:10]}")


# -- the resource ------------------------------------------------------------------------------
def test_create_makes_owned_objects_status_conditions_and_columns(
        cache: CacheClient) -> None:
    dc = distcache(NAME)
    uid = dc["metadata"]["uid"]
    for kind, name in [("statefulset", NAME), ("service", NAME), ("service", f"{NAME}-peers"),
                       ("configmap", f"{NAME}-ring"), ("secret", f"{NAME}-api-key"),
                       ("secret", f"{NAME}-cluster"), ("poddisruptionbudget", NAME)]:
        obj = kj("get", kind, name)
        owners = obj["metadata"].get("ownerReferences") or []
        assert [o["uid"] for o in owners] == [uid], f"{kind}/{name}: {owners}"
    assert kj("get", "service", f"{NAME}-peers")["spec"]["publishNotReadyAddresses"] is True
    st = dc["status"]
    assert st["replicas"] == 3 and st["readyReplicas"] == 3 and st["phase"] == "Running"
    assert st["selector"] == f"app.kubernetes.io/name=distcache,app.kubernetes.io/instance={NAME}"
    assert [m["state"] for m in st["members"]] == ["active"] * 3
    assert st["ringVersion"] == ring(NAME)["version"]
    assert condition(dc, "Available")["status"] == "True"
    assert condition(dc, "Degraded")["status"] == "False"
    assert condition(dc, "Progressing")["status"] == "False"
    assert condition(dc, "Migrating")["status"] == "False"
    out = k("get", "dcache", NAME).stdout.splitlines()
    assert out[0].split() == ["NAME", "REPLICAS", "READY", "PHASE", "RING", "MIGRATION", "AGE"]
    assert out[1].split()[:6] == [NAME, "3", "3", "Running", str(st["ringVersion"]), "Idle"]
    # The pods run under restricted Pod Security (the namespace enforces it).
    pod = kj("get", "pod", f"{NAME}-0")
    sc = pod["spec"]["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and pod["spec"]["securityContext"][
        "runAsNonRoot"] is True
    # The API key works through the cache, and a request without it is refused.
    status, _ = cache.request("GET", "/status")
    assert status == 200


def test_tls_is_on_by_default_with_an_operator_issued_ca(cache: CacheClient) -> None:
    assert cache.scheme == "https"  # the client verifies the pod against <name>-tls's CA
    status, _ = cache.request("GET", "/status")
    assert status == 200
    r = ring(NAME)
    assert all(m["url"].startswith("https://") for m in r["members"])
    assert kj("get", "secret", f"{NAME}-tls")["type"] == "kubernetes.io/tls"
    assert "ca.key" in kj("get", "secret", f"{NAME}-ca")["data"]
    # Plain HTTP gets no answer from a TLS port.
    plain = CacheClient(f"pod/{NAME}-0", cache.api_key)
    try:
        with pytest.raises(OSError):
            plain.request("GET", "/status", retries=1)
    finally:
        plain.close()
    proc = k("patch", f"distcache/{NAME}", "--type=merge",
             "-p", '{"spec":{"tls":{"enabled":false}}}', check=False)
    assert proc.returncode != 0 and "tls.enabled cannot change" in proc.stderr


@pytest.mark.parametrize(("extra", "replicas", "message"), [
    ("", -1, "spec.replicas"),
    ("  replicationFactor: 3\n", 2, "replicationFactor must not exceed replicas"),
    ("  maxMemory: 12MB\n", 3, "spec.maxMemory"),
    ("  bogus: 1\n", 3, "unknown field"),
])
def test_api_server_refuses_bad_specs(operator: None, extra: str, replicas: int,
                                      message: str) -> None:
    proc = k("apply", "-f", "-", input=dc_yaml("bad", replicas, extra), check=False)
    assert proc.returncode != 0, proc.stdout
    assert message in proc.stderr, proc.stderr
    assert k("get", "distcache", "bad", check=False).returncode != 0


# -- scaling with data -------------------------------------------------------------------------
def test_scale_3_to_5_to_3_loses_no_key(cache: CacheClient, written: dict[str, str]) -> None:
    assert_all_readable(cache, written)
    t0 = time.monotonic()
    k("scale", f"distcache/{NAME}", "--replicas=5")
    wait_for("StatefulSet at 5", lambda: kj("get", "statefulset", NAME)["spec"]["replicas"] == 5,
             30, every=0.2)
    sts_s = time.monotonic() - t0
    wait_for("5 active members, settled", lambda: settled(NAME, 5), 300, every=1)
    up_s = time.monotonic() - t0
    assert_all_readable(cache, written)
    st = distcache(NAME)["status"]
    assert sum(m["keys"] for m in st["members"]) >= 2 * KEYS  # R=2 copies, spread over 5
    assert all(m["keys"] > 0 for m in st["members"])
    t0 = time.monotonic()
    k("scale", f"distcache/{NAME}", "--replicas=3")
    wait_for("3 active members, settled", lambda: settled(NAME, 3), 300, every=1)
    down_s = time.monotonic() - t0
    assert_all_readable(cache, written)
    events = k("get", "events", "--field-selector", f"involvedObject.name={NAME}").stdout
    assert "Scaling" in events and "Drained" in events
    print(f"\nscale 3->5: StatefulSet changed after {sts_s:.1f} s, settled after {up_s:.1f} s;"
          f" 5->3 settled after {down_s:.1f} s ({KEYS} keys)")


def test_hpa_style_write_to_the_scale_subresource(cache: CacheClient,
                                                  written: dict[str, str]) -> None:
    scale = json.loads(k("get", "--raw", f"/apis/distcache.io/v1alpha1/namespaces/{NS}"
                         f"/distcaches/{NAME}/scale", namespace=None).stdout)
    assert scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3
    assert "app.kubernetes.io/instance" in scale["status"]["selector"]
    k("patch", f"distcache/{NAME}", "--subresource=scale", "--type=merge",
      "-p", '{"spec":{"replicas":4}}')
    wait_for("4 active members, settled", lambda: settled(NAME, 4), 300, every=1)
    assert_all_readable(cache, written)


def test_operator_killed_mid_drain_resumes_and_loses_no_key(
        cache: CacheClient, written: dict[str, str]) -> None:
    """5 -> 2 at replicationFactor 2: three members leave, and a key whose two copies are
    both on them (3 keys in 10) is lost if the StatefulSet shrinks before their drain is over,
    so an operator that forgot the drain across its restart would show here."""
    resize(5)
    more = {f"drain-{i}": f"value-{i}" for i in range(20_000)}  # a drain that takes a while
    cache.mset(more)
    with Watch(NAME):  # never fewer pods than members, checked as the block ends
        k("scale", f"distcache/{NAME}", "--replicas=2")
        wait_for("members leaving in the ring",
                 lambda: any(m["state"] == "leaving" for m in ring(NAME)["members"]), 60,
                 every=0.1)
        k("delete", "pod", "-l", "app.kubernetes.io/name=distcache-operator", "--force",
          "--grace-period=0", "--wait=false", namespace=OPERATOR_NS)
        # Killed mid-drain: the ring still names a leaving member after the kill.
        assert any(m["state"] == "leaving" for m in ring(NAME)["members"])
        k("rollout", "status", "deployment/distcache-operator", "--timeout=120s",
          namespace=OPERATOR_NS, timeout=150)
        wait_for("2 active members after the operator restart", lambda: settled(NAME, 2), 300,
                 every=1)
    assert_all_readable(cache, written)
    assert_all_readable(cache, more)
    resize(3)  # as the tests after this one expect


def test_deleted_pod_is_degraded_meanwhile_refills_and_loses_no_key(
        cache: CacheClient, written: dict[str, str]) -> None:
    uid = kj("get", "pod", f"{NAME}-1")["metadata"]["uid"]
    k("delete", "pod", f"{NAME}-1", "--wait=false")

    def degraded() -> bool:
        return condition(distcache(NAME), "Degraded").get("status") == "True"

    wait_for("Degraded while the pod is away", degraded, 60, every=0.3)
    wait_for("a new pod", lambda: kj("get", "pod", f"{NAME}-1")["metadata"]["uid"] != uid, 60)
    wait_for("settled again", lambda: settled(NAME, 3), 180, every=1)
    assert condition(distcache(NAME), "Degraded")["status"] == "False"
    assert_all_readable(cache, written)


def test_pod_template_change_rolls_one_pod_at_a_time_and_loses_no_key(
        cache: CacheClient, written: dict[str, str]) -> None:
    k("patch", f"distcache/{NAME}", "--type=merge",
      "-p", '{"spec":{"podAnnotations":{"example.com/roll":"1"}}}')
    wait_for("the StatefulSet's template carries the change", lambda: kj(
        "get", "statefulset", NAME)["spec"]["template"]["metadata"].get("annotations", {}).get(
        "example.com/roll") == "1", 30, every=0.2)
    most_unready = 0

    def rolled() -> bool:
        nonlocal most_unready
        sts = kj("get", "statefulset", NAME)
        st = sts.get("status") or {}
        most_unready = max(most_unready, 3 - int(st.get("readyReplicas", 0)))
        return (st.get("updateRevision") == st.get("currentRevision")
                and st.get("updatedReplicas") == 3 and st.get("readyReplicas") == 3
                and st.get("observedGeneration") == sts["metadata"]["generation"])

    wait_for("every pod rolled", rolled, 300, every=0.5)
    assert most_unready <= 1, f"{most_unready} pods were down at once"
    pods = kj("get", "pods", "-l", f"app.kubernetes.io/instance={NAME}")["items"]
    assert all(p["metadata"].get("annotations", {}).get("example.com/roll") == "1"
               for p in pods)
    wait_for("settled after the roll", lambda: settled(NAME, 3), 120, every=1)
    assert_all_readable(cache, written)


def test_drift_is_put_back(cache: CacheClient) -> None:
    uid = kj("get", "service", NAME)["metadata"]["uid"]
    k("delete", "service", NAME)
    wait_for("client Service recreated", lambda: kj("get", "service", NAME)["metadata"]["uid"]
             != uid, 90, every=2)


def test_leaving_pod_killed_during_its_drain_loses_no_key(
        cache: CacheClient, written: dict[str, str]) -> None:
    """5 -> 2 at replicationFactor 2, one of the three leaving pods killed mid-drain: its
    copies live on, each on another member (a leaving one that goes on draining, or one that
    stays), so nothing may be lost; an operator that shrank the StatefulSet with members
    still undrained would lose the keys whose two copies were both on leaving pods."""
    resize(5)
    with Watch(NAME):  # never fewer pods than members, checked as the block ends
        k("scale", f"distcache/{NAME}", "--replicas=2")
        wait_for("cache-4 leaving", lambda: any(
            m["id"] == f"{NAME}-4" and m["state"] == "leaving" for m in ring(NAME)["members"]),
            60, every=0.1)
        k("delete", "pod", f"{NAME}-4", "--force", "--grace-period=0", "--wait=false")
        wait_for("2 active members", lambda: settled(NAME, 2), 300, every=1)
    assert_all_readable(cache, written)
    resize(3)


def test_ring_configmap_deleted_by_hand_then_a_shrink_loses_no_key(
        cache: CacheClient, written: dict[str, str]) -> None:
    """Issue 14, defect 3. The ring ConfigMap deleted by hand: the pods still run the ring. It
    was created again at v1 from the StatefulSet, the nodes (at vN) ignored it, and a shrink
    5 -> 3 'settled' on it in seconds without draining anything (1,909 of 20,000 keys lost on
    kind). Now it is created again from the newest ring the pods hold, above their version."""
    resize(5)
    before = ring(NAME)["version"]
    with Watch(NAME) as watch:
        k("delete", "configmap", f"{NAME}-ring")
        again = wait_for("the ring ConfigMap created again", lambda: ring_or_none(NAME), 60,
                         every=0.2)
        k("scale", f"distcache/{NAME}", "--replicas=3")
        wait_for("3 active members", lambda: settled(NAME, 3), 300, every=1)
    assert_all_readable(cache, written)
    watch.assert_ring_version_never_below(before)
    assert again["version"] > before and len(again["members"]) == 5, again
    events = k("get", "events", "--field-selector",
               f"involvedObject.name={NAME},reason=RingRecovered").stdout
    assert "created again" in events, events


def test_capacity_refusal_then_recovery(operator: None) -> None:
    name = "tiny"
    extra = "  maxMemory: 8Mi\n"
    k("apply", "-f", "-", input=dc_yaml(name, 3, extra))
    wait_for("tiny Running", lambda: settled(name, 3), 240, every=2)
    client = client_for(name)
    try:
        value = "x" * 2000
        items = {f"big-{i}": value for i in range(4000)}  # ~8 MB of data, 2 copies over 3 pods
        client.mset(items, batch=200)
        version = ring(name)["version"]
        k("scale", f"distcache/{name}", "--replicas=2")

        def refused() -> dict[str, object] | None:
            dc = distcache(name)
            c = condition(dc, "Degraded")
            return dc if c.get("reason") == "ScaleDownRefused" else None

        dc = wait_for("Degraded: ScaleDownRefused", refused, 60, every=1)
        message = condition(dc, "Degraded")["message"]
        assert "cannot hold the data" in message and "MiB" in message
        assert kj("get", "statefulset", name)["spec"]["replicas"] == 3
        r = ring(name)
        assert r["version"] == version and len(r["members"]) == 3
        assert all(m["state"] == "active" for m in r["members"])
        events = k("get", "events", "--field-selector",
                   f"involvedObject.name={name},reason=ScaleDownRefused").stdout
        assert "cannot hold the data" in events
        # The data shrinks: the refusal clears and the scale-down goes through.
        for key in list(items)[:2800]:
            client.delete(key)
        wait_for("tiny settled at 2", lambda: settled(name, 2), 300, every=1)
        assert condition(distcache(name), "Degraded")["status"] == "False"
        rest = {key: items[key] for key in list(items)[2800:]}
        found = client.mget(list(rest))
        assert len(found) == len(rest)
    finally:
        client.close()


def test_user_tls_secret_and_user_api_key(operator: None, tmp_path) -> None:
    from distcache_node.local.certs import make_ca, make_cert

    name = "usertls"
    ca_pem, _ = make_ca(tmp_path / "ca", "user CA")
    peers = f"{name}-peers.{NS}.svc"
    cert, key = make_cert(tmp_path / "node", "node", tmp_path / "ca",
                          (f"*.{peers}.cluster.local", f"*.{peers}", "localhost", "127.0.0.1"))
    k("create", "secret", "generic", "my-tls", f"--from-file=tls.crt={cert}",
      f"--from-file=tls.key={key}", f"--from-file=ca.crt={ca_pem}")
    k("create", "secret", "generic", "my-key", "--from-literal=token=user-chosen-key-123")
    k("apply", "-f", "-", input=dc_yaml(name, 2, "  tls:\n    secretName: my-tls\n"
                                        "  auth:\n    apiKeySecretRef:\n      name: my-key\n"
                                        "      key: token\n"))
    wait_for("usertls Running", lambda: settled(name, 2), 240, every=2)
    assert k("get", "secret", f"{name}-tls", f"{name}-ca", f"{name}-api-key",
             check=False).returncode != 0  # nothing issued or generated for it
    client = CacheClient(f"pod/{name}-1", "user-chosen-key-123", ca_pem.read_text())
    try:
        client.mset({"a": 1, "b": 2})
        assert client.mget(["a", "b"]) == {"a": 1, "b": 2}
    finally:
        client.close()
    k("delete", "distcache", name)


def test_missing_api_key_secret_is_degraded_not_a_traceback(operator: None) -> None:
    name = "nokey"
    k("apply", "-f", "-", input=dc_yaml(name, 1, "  auth:\n    apiKeySecretRef:\n"
                                        "      name: does-not-exist\n"))

    def degraded() -> dict[str, object] | None:
        dc = distcache(name)
        c = condition(dc, "Degraded")
        return dc if c.get("reason") == "SecretMissing" else None

    dc = wait_for("Degraded: SecretMissing", degraded, 60, every=1)
    assert "does-not-exist" in condition(dc, "Degraded")["message"]
    assert "Traceback" not in operator_logs(200)
    k("delete", "distcache", name)


def test_image_that_never_starts_is_degraded_with_the_reason(operator: None) -> None:
    name = "badimage"
    k("apply", "-f", "-", input=dc_yaml(name, 1, "  image: distcache/not-built:0\n"))

    def failing() -> dict[str, object] | None:
        dc = distcache(name)
        return dc if condition(dc, "Degraded").get("reason") == "PodsFailing" else None

    dc = wait_for("Degraded: PodsFailing", failing, 90, every=1)
    assert "ErrImageNeverPull" in condition(dc, "Degraded")["message"]
    assert dc["status"]["phase"] == "Degraded"
    assert "Traceback" not in operator_logs(200)
    k("delete", "distcache", name)


# -- deletion and RBAC -------------------------------------------------------------------------
def test_delete_garbage_collects_everything(cache: CacheClient) -> None:
    cache.close()
    for name in (NAME, "tiny"):
        k("delete", "distcache", name, "--ignore-not-found", "--wait=true", timeout=150)

    def gone() -> bool:
        left = k("get", "statefulsets,services,configmaps,secrets,pdb,pods", "-l",
                 "app.kubernetes.io/name=distcache", "-o", "name").stdout.split()
        return not left

    wait_for("owned objects garbage-collected", gone, 180, every=2)


@pytest.mark.parametrize(("verb", "resource", "allowed"), [
    ("watch", "distcaches.distcache.io", True),
    ("patch", "distcaches.distcache.io/status", True),
    ("patch", "statefulsets.apps", True),
    ("patch", "statefulsets.apps/scale", True),
    ("update", "configmaps", True),
    ("create", "secrets", True),
    ("update", "secrets", True),
    ("get", "secrets", True),
    ("list", "secrets", False),
    ("delete", "statefulsets.apps", False),
    ("delete", "pods", False),
    ("delete", "distcaches.distcache.io", False),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", False),
    ("create", "pods/exec", False),
])
def test_operator_service_account_can_do_its_job_and_nothing_more(
        operator: None, verb: str, resource: str, allowed: bool) -> None:
    proc = k("auth", "can-i", verb, resource, f"--as={OPERATOR_SA}", check=False)
    assert proc.stdout.strip() == ("yes" if allowed else "no"), (verb, resource, proc.stdout)


def test_operator_serves_its_own_metrics(operator: None) -> None:
    import urllib.request

    from ophelp import Forward

    fwd = Forward("deployment/distcache-operator", 9090, namespace=OPERATOR_NS)
    try:
        text = wait_for("operator metrics", lambda: urllib.request.urlopen(
            fwd.url() + "/metrics", timeout=10).read().decode(), 30, every=1)
    finally:
        fwd.close()
    for name in ("distcache_operator_reconciles_total", "distcache_operator_actions_total",
                 "distcache_operator_scale_operations_total", "distcache_operator_drains_total",
                 "distcache_operator_reconcile_duration_seconds_bucket",
                 "distcache_operator_drain_duration_seconds_bucket"):
        assert name in text, name
    ok = [line for line in text.splitlines()
          if line.startswith('distcache_operator_reconciles_total{outcome="ok"}')]
    assert ok and float(ok[0].split()[-1]) > 0


def test_operator_pod_runs_as_its_service_account(operator: None) -> None:
    pods = kj("get", "pods", "-l", "app.kubernetes.io/name=distcache-operator",
              namespace=OPERATOR_NS)["items"]
    assert pods and all(p["spec"]["serviceAccountName"] == "distcache-operator" for p in pods)
