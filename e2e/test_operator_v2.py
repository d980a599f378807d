"""Operator v2 on a real cluster (issue 14): the faults that are not about membership.

- No finalizer: a DistCache's namespace is deleted while no operator runs (the operator
  removed first, as `kubectl delete -f manifests/operator/` does) and goes away.
- Events: a crash-looping pod is one PodsFailing Event whose count grows, not an Event every
  few seconds.
- The CA is renewed ahead of its expiry, short lifetimes, while a client reads and writes:
  a new CA, the three-step move, 0 failed requests, same pods.
- A CA the user puts into <name>-ca: RSA is taken (the pods move to it); a malformed one is
  Degraded (TLSInvalid, one Event) while scaling goes on.
- The PDB follows the replication factor, pods spread by default, and a deleted DistCache's
  metric series go with it.

Needs KUBECONFIG and the operator installed (make kind-up); uses the operator tests'
namespace, creating it when missing.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from ophelp import (
    NS,
    OPERATOR_NS,
    CacheClient,
    Forward,
    client_for,
    condition,
    distcache,
    k,
    kj,
    secret_value,
    wait_for,
    wait_settled_or_explain,
)
from tlshelp import dc_yaml, operator_ready, pod_identity


@pytest.fixture(scope="module")
def operator() -> None:
    operator_ready()


def _events(name: str, reason: str | None = None, namespace: str = NS) -> list[dict[str, Any]]:
    """The Events of the DistCache `name` that exists now (not of an earlier one of the
    same name: its Events outlive it for an hour)."""
    uid = kj("get", "distcache", name, namespace=namespace)["metadata"]["uid"]
    selector = f"involvedObject.name={name},involvedObject.uid={uid}" + (
        f",reason={reason}" if reason else "")
    return kj("get", "events", "--field-selector", selector,  # type: ignore[no-any-return]
              namespace=namespace)["items"]


def _operator_metrics() -> str:
    fwd = Forward("deployment/distcache-operator", 9090, namespace=OPERATOR_NS)
    try:
        return wait_for("operator metrics", lambda: urllib.request.urlopen(  # type: ignore[no-any-return]
            fwd.url() + "/metrics", timeout=10).read().decode(), 30, every=1)
    finally:
        fwd.close()


def test_no_finalizer_so_a_namespace_goes_while_no_operator_runs(operator: None) -> None:
    """Before: kopf's timer put a finalizer on every DistCache, and a namespace deleted after
    the operator stayed Terminating for good."""
    ns = "distcache-v2-nofin"
    k("create", "namespace", ns, namespace=None, check=False)
    k("apply", "-f", "-", input=dc_yaml("nofin", 1), namespace=ns)
    wait_for("DistCache nofin Running",
             lambda: (kj("get", "distcache", "nofin", namespace=ns).get("status") or {})
             .get("phase") == "Running", 240, every=2)
    body = kj("get", "distcache", "nofin", namespace=ns)
    assert not body["metadata"].get("finalizers"), body["metadata"].get("finalizers")
    k("scale", "deployment/distcache-operator", "--replicas=0", namespace=OPERATOR_NS)
    try:
        wait_for("operator stopped", lambda: not kj(
            "get", "pods", "-l", "app.kubernetes.io/name=distcache-operator",
            namespace=OPERATOR_NS)["items"], 120, every=2)
        k("delete", "namespace", ns, "--wait=false", namespace=None)
        wait_for(f"namespace {ns} gone with no operator running", lambda: k(
            "get", "namespace", ns, check=False, namespace=None).returncode != 0, 180, every=2)
    finally:
        k("scale", "deployment/distcache-operator", "--replicas=1", namespace=OPERATOR_NS)
        k("rollout", "status", "deployment/distcache-operator", "--timeout=180s",
          namespace=OPERATOR_NS, timeout=200)


def test_a_crash_looping_pod_is_one_counted_event(operator: None) -> None:
    """The operator image as the node image: the container exits at once (it has no
    Kubernetes credentials), a real crash loop whose back-off message changes each time."""
    name = "crashy"
    image = kj("get", "deployment", "distcache-operator", namespace=OPERATOR_NS)[
        "spec"]["template"]["spec"]["containers"][0]["image"]
    k("apply", "-f", "-", input=dc_yaml(name, 1, f"  image: {image}\n"))
    try:
        wait_for("Degraded: PodsFailing", lambda: condition(distcache(name), "Degraded")
                 .get("reason") == "PodsFailing", 180, every=2)
        # The back-off grows (10 s, 20 s, 40 s): the message changes at each restart.
        wait_for("the PodsFailing Event counted again", lambda: sum(
            e.get("count", 1) for e in _events(name, "PodsFailing")) >= 2, 240, every=5)
        failing = _events(name, "PodsFailing")
        assert len(failing) == 1, [(e["metadata"]["name"], e["message"]) for e in failing]
        warnings = [e["reason"] for e in _events(name) if e["type"] == "Warning"]
        assert len(warnings) == len(set(warnings)), f"a Warning repeated, not counted: {warnings}"
    finally:
        k("delete", "distcache", name, "--wait=false")


@pytest.mark.timeout(600)
def test_pdb_follows_the_replication_factor_and_pods_spread(operator: None) -> None:
    name = "spread"
    k("apply", "-f", "-", input=dc_yaml(name, 3, "  replicationFactor: 3\n"))
    try:
        wait_settled_or_explain(name, 3, 300)
        assert kj("get", "pdb", name)["spec"]["maxUnavailable"] == 2
        pod_spec = kj("get", "statefulset", name)["spec"]["template"]["spec"]
        assert "podAntiAffinity" in pod_spec["affinity"]
        assert {c["topologyKey"] for c in pod_spec["topologySpreadConstraints"]} == {
            "kubernetes.io/hostname", "topology.kubernetes.io/zone"}
        k("patch", "distcache", name, "--type=merge", "-p",
          '{"spec":{"replicationFactor":1,"replicas":1}}')
        wait_for("PDB at R=1 allows no eviction", lambda: kj("get", "pdb", name)[
            "spec"]["maxUnavailable"] == 0, 300, every=2)
        wait_for("an EvictionsBlocked warning", lambda: _events(name, "EvictionsBlocked"),
                 120, every=2)
    finally:
        k("delete", "distcache", name, "--wait=false")


def _tls_failure(exc: BaseException) -> bool:
    text = repr(exc) + repr(getattr(exc, "reason", ""))
    return isinstance(getattr(exc, "reason", None), ssl.SSLError) or "SSL" in text \
        or "CERTIFICATE" in text


@pytest.mark.timeout(900)
def test_the_ca_is_renewed_ahead_of_expiry_under_traffic(operator: None) -> None:
    """caLifetime 450 s, certificateLifetime 150 s: certificates are renewed every ~100 s
    and, 300 s in, the CA. The pods move to the new CA in three steps while a client that
    reloads ca.crt when the Secret changes (as one mounting it does) writes and reads: every
    request answered, every write readable, same pods, status and metric say when it all
    expires."""
    name = "carenew"
    k("apply", "-f", "-", input=dc_yaml(
        name, 2, "  tls:\n    caLifetime: 450s\n    certificateLifetime: 150s\n"))
    cache: CacheClient | None = None
    try:
        wait_settled_or_explain(name, 2, 300)
        before = pod_identity(name)
        first_ca = secret_value(f"{name}-ca", "ca.crt")
        trusted = secret_value(f"{name}-tls", "ca.crt")
        cache = client_for(name)
        writes, tls_failures, failures = 0, [], []
        moved = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            bundle = secret_value(f"{name}-tls", "ca.crt")
            if bundle != trusted:  # the client reloads its trust, as a mounting one would
                trusted = bundle
                cache.close()
                cache = CacheClient(f"pod/{name}-0", secret_value(f"{name}-api-key", "api-key"),
                                    trusted)
            for attempt in range(2):  # a port-forward that drops is retried once
                try:
                    status, answer = cache.request("POST", "/set", {
                        "key": f"w-{writes}", "value": writes}, retries=1)
                    assert status == 200, (status, answer)
                    status, answer = cache.request("GET", f"/get?key=w-{writes // 2}",
                                                   retries=1)
                    assert status == 200 and answer["value"] == writes // 2, (status, answer)
                    writes += 1
                    break
                except (urllib.error.URLError, OSError) as exc:
                    if _tls_failure(exc):
                        tls_failures.append(repr(exc))
                        break
                    if attempt:
                        failures.append(repr(exc))
            ca_now = secret_value(f"{name}-ca", "ca.crt")
            if ca_now != first_ca and secret_value(f"{name}-tls", "ca.crt") == ca_now:
                moved = moved or time.monotonic()
                if time.monotonic() - moved > 30:  # and a little traffic on the new CA alone
                    break
            time.sleep(0.5)
        reasons = {e["reason"] for e in _events(name)}
        assert moved is not None, f"the CA was not renewed and moved to in 10 min: {reasons}"
        assert not tls_failures, f"{len(tls_failures)} TLS failures: {tls_failures[:3]}"
        assert not failures, f"{len(failures)} failed requests: {failures[:3]}"
        assert {"CARenewed", "CATrustExtended", "CATrustReduced"} <= reasons, reasons
        assert "TLSNotLoaded" not in reasons and "TLSInvalid" not in reasons, reasons
        assert pod_identity(name) == before, "pods were replaced or restarted"
        found = cache.mget([f"w-{i}" for i in range(writes)])
        assert all(found.get(f"w-{i}") == i for i in range(writes)), "a write was lost"
        st = distcache(name)["status"]
        assert st["tls"]["caNotAfter"] and st["tls"]["certificateNotAfter"], st.get("tls")
        text = _operator_metrics()
        assert any(line.startswith("distcache_operator_tls_not_after_timestamp_seconds") and
                   f'name="{name}"' in line for line in text.splitlines())
        print(f"\n{writes} writes and reads through CA renewal, 0 failed")
    finally:
        if cache is not None:
            cache.close()
        k("delete", "distcache", name, "--wait=false")
    text = wait_for("series of the deleted DistCache gone", lambda: (
        t if f'name="{name}"' not in (t := _operator_metrics()) else None), 60, every=3)
    assert "distcache_operator_ring_version" in text


@pytest.mark.timeout(900)
def test_a_users_rsa_ca_is_taken_and_a_malformed_one_is_degraded(
        operator: None, tmp_path: Path) -> None:
    """Before: certs.py asserted an EC key, the exception escaped the reconcile, and nothing
    (scaling, status) happened for that DistCache any more."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    name = "rsaca"
    k("apply", "-f", "-", input=dc_yaml(name, 2))
    try:
        wait_settled_or_explain(name, 2, 300)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corporate RSA CA")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .sign(key, hashes.SHA256()))
        pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())

        def put_ca(crt: bytes, k_: bytes) -> None:
            k("patch", "secret", f"{name}-ca", "--type=merge", "-p", json.dumps(
                {"data": {"ca.crt": base64.b64encode(crt).decode(),
                          "ca.key": base64.b64encode(k_).decode()}}))

        put_ca(pem, key_pem)
        wait_for("the pods moved to the RSA CA", lambda: base64.b64decode(kj(
            "get", "secret", f"{name}-tls")["data"]["ca.crt"]) == pem, 420, every=3)
        issued = x509.load_pem_x509_certificate(base64.b64decode(
            kj("get", "secret", f"{name}-tls")["data"]["tls.crt"]))
        assert issued.issuer == subject
        # Now a CA whose key is not a key: Degraded, one Event, and scaling still works.
        put_ca(pem, b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
        # (checked at every step, not only at the next renewal a year from now)
        wait_for("Degraded: TLSInvalid", lambda: condition(distcache(name), "Degraded")
                 .get("reason") == "TLSInvalid", 120, every=2)
        k("scale", "distcache", name, "--replicas=3")
        wait_for("scaled to 3 while TLSInvalid", lambda: len(json.loads(kj(
            "get", "configmap", f"{name}-ring")["data"]["ring.json"])["members"]) == 3
            and all(m["state"] == "active" for m in json.loads(kj(
                "get", "configmap", f"{name}-ring")["data"]["ring.json"])["members"]),
            300, every=3)
        invalid = _events(name, "TLSInvalid")
        assert len(invalid) == 1, invalid
        assert "Secret rsaca-ca" in condition(distcache(name), "Degraded")["message"]
    finally:
        k("delete", "distcache", name, "--wait=false")


@pytest.mark.timeout(1200)
def test_a_deleted_peer_secret_comes_back_the_same_and_a_grow_completes(
        operator: None) -> None:
    """Before: the operator generated a new cluster secret, every pod refused it (403, read
    as unreachable) and a grow 3 -> 4 stayed Migrating for good. Now the Secret comes back
    with the value the pods hold; after an operator restart (memory gone) the DistCache is
    Degraded PeerSecretLost with the command that restores it, and nothing new is made."""
    name = "peersec"
    k("apply", "-f", "-", input=dc_yaml(name, 3))
    cache: CacheClient | None = None
    try:
        wait_settled_or_explain(name, 3, 300)
        cache = client_for(name)
        items = {f"ps-{i}": i for i in range(2000)}
        cache.mset(items)
        value = secret_value(f"{name}-cluster", "cluster-secret")
        k("delete", "secret", f"{name}-cluster")
        wait_for("peer Secret restored", lambda: k(
            "get", "secret", f"{name}-cluster", check=False).returncode == 0, 60, every=1)
        assert secret_value(f"{name}-cluster", "cluster-secret") == value
        assert _events(name, "PeerSecretRestored")
        k("scale", "distcache", name, "--replicas=4")
        wait_settled_or_explain(name, 4, 300)
        # The operator restarted right after the deletion: it cannot know the value.
        k("delete", "secret", f"{name}-cluster")
        k("delete", "pod", "-l", "app.kubernetes.io/name=distcache-operator",
          namespace=OPERATOR_NS)
        lost = wait_for("Degraded: PeerSecretLost", lambda: condition(
            distcache(name), "Degraded") if condition(distcache(name), "Degraded").get(
            "reason") == "PeerSecretLost" else None, 180, every=2)
        assert "cat /etc/distcache/peer/cluster-secret" in lost["message"]  # how to restore it
        assert k("get", "secret", f"{name}-cluster", check=False).returncode != 0, \
            "a new peer Secret was made under running pods"
        held = k("exec", f"{name}-0", "--", "cat",
                 "/etc/distcache/peer/cluster-secret").stdout.strip()
        k("create", "secret", "generic", f"{name}-cluster", f"--from-literal=cluster-secret={held}")
        k("scale", "distcache", name, "--replicas=3")
        wait_settled_or_explain(name, 3, 300)
        found = cache.mget(list(items))
        assert all(found.get(key) == v for key, v in items.items()), "a key was lost"
    finally:
        if cache is not None:
            cache.close()
        k("delete", "distcache", name, "--wait=false")


@pytest.mark.timeout(600)
def test_a_problem_does_not_make_serving_pods_unavailable_or_move_observed_generation(
        operator: None) -> None:
    """Before: any problem wrote Available=False/NoMembers while the pods served, and
    observedGeneration followed a spec the operator had not acted on."""
    name = "honest"
    k("create", "secret", "generic", "honest-key", "--from-literal=api-key=k-honest",
      check=False)
    k("apply", "-f", "-", input=dc_yaml(
        name, 2, "  auth:\n    apiKeySecretRef: {name: honest-key}\n"))
    try:
        wait_settled_or_explain(name, 2, 300)
        before = distcache(name)
        acted = before["status"]["observedGeneration"]
        k("delete", "secret", "honest-key")

        def missing() -> dict[str, Any] | None:
            d = distcache(name)
            return d if condition(d, "Degraded").get("reason") == "SecretMissing" else None

        wait_for("Degraded: SecretMissing", missing, 120, every=2)
        # A spec change while the operator cannot act: not observed, status says so.
        k("patch", "distcache", name, "--type=merge", "-p",
          '{"spec":{"rateLimit":{"requestsPerSecond":1000}}}')
        time.sleep(15)  # the update handler's step and the next problem step (every 10 s)
        dc = wait_for("Degraded: SecretMissing", missing, 30, every=2)
        assert dc["metadata"]["generation"] > acted
        assert dc["status"]["observedGeneration"] == acted, "a spec not acted on was observed"
        available = condition(dc, "Available")
        assert available["status"] == "True", available
        assert dc["status"]["readyReplicas"] == 2
        k("create", "secret", "generic", "honest-key", "--from-literal=api-key=k-honest")

        def acted_on() -> bool:
            d = distcache(name)
            return bool(d["status"].get("observedGeneration") == d["metadata"]["generation"]
                        and condition(d, "Degraded").get("status") == "False")

        wait_for("acted on the new generation", acted_on, 300, every=2)
    finally:
        k("delete", "distcache", name, "--wait=false")
        k("delete", "secret", "honest-key", check=False)
