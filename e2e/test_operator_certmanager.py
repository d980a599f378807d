"""spec.tls.issuerRef with a real cert-manager on the cluster.

cert-manager's controller (v1.19.1, built from the Go module proxy by scripts/cert-manager.sh:
the Certificate controllers and the CA/SelfSigned issuers from cert-manager's own packages,
wired by scripts/cert-manager/main.go because upstream's main module is not on the proxy)
runs in-cluster from a locally built image, with cert-manager's CRDs from the same module;
no webhook (the CRDs' schemas still validate). For the test it runs bound to cluster-admin
(a test fixture, not cert-manager's own RBAC). Skipped, naming what is missing, when the image
is not built (`make cert-manager`) or the cluster is not a kind cluster the image can be
loaded into.

In order: a DistCache naming an issuer while cert-manager's API is absent is Degraded
(CertManagerMissing) with an Event and the operator keeps serving others; with cert-manager
installed the same DistCache comes up on a certificate from a CA Issuer (itself from a
SelfSigned ClusterIssuer); a renewal that cert-manager performs reaches every pod without a
restart and no key is lost.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Iterator

import pytest
from kindload import load_image
from kubehelp import REPO
from ophelp import (
    NS,
    CacheClient,
    client_for,
    condition,
    distcache,
    k,
    kj,
    settled,
    wait_established,
    wait_for,
)
from tlshelp import dc_yaml, operator_ready, pod_identity, secret_fingerprint, wait_served

CM_NS = "cert-manager"
CRDS = ("certificates", "certificaterequests", "issuers", "clusterissuers")
NAME = "cmcache"


def cert_manager_served() -> bool:
    return k("get", "--raw", "/apis/cert-manager.io/v1", namespace=None,
             check=False).returncode == 0


def load_cert_manager_image() -> str:
    """The cert-manager image on the cluster's nodes, or a skip naming what is missing."""
    image = subprocess.run([str(REPO / "scripts" / "cert-manager.sh"), "name"],
                           capture_output=True, text=True, check=True).stdout.strip()
    load_image(image, "make cert-manager builds it")
    return image


def install_cert_manager(image: str) -> None:
    crds = subprocess.run([str(REPO / "scripts" / "cert-manager.sh"), "crds"],
                          capture_output=True, text=True, check=True).stdout.strip()
    k("apply", "--server-side", "-f", crds, namespace=None, timeout=180)
    for crd in CRDS:
        wait_established(f"{crd}.cert-manager.io")
    manifest = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {CM_NS}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: cert-manager, namespace: {CM_NS}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: distcache-e2e-cert-manager}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}}
subjects: [{{kind: ServiceAccount, name: cert-manager, namespace: {CM_NS}}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: cert-manager, namespace: {CM_NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: cert-manager}}}}
  template:
    metadata: {{labels: {{app: cert-manager}}}}
    spec:
      serviceAccountName: cert-manager
      securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
        - name: controller
          image: {image}
          imagePullPolicy: Never
          args: ["--cluster-resource-namespace={CM_NS}"]
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {{drop: [ALL]}}
"""
    k("apply", "-f", "-", input=manifest, namespace=None)
    k("rollout", "status", "deployment/cert-manager", "--timeout=120s", namespace=CM_NS,
      timeout=150)


ISSUERS = f"""
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {{name: distcache-e2e-selfsigned}}
spec: {{selfSigned: {{}}}}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {{name: distcache-e2e-ca, namespace: {NS}}}
spec:
  isCA: true
  commonName: DistCache e2e cert-manager CA
  secretName: distcache-e2e-ca
  privateKey: {{algorithm: ECDSA, size: 256}}
  issuerRef: {{name: distcache-e2e-selfsigned, kind: ClusterIssuer, group: cert-manager.io}}
---
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {{name: distcache-ca, namespace: {NS}}}
spec: {{ca: {{secretName: distcache-e2e-ca}}}}
"""
ISSUER_REF = ("  tls:\n    issuerRef:\n      name: distcache-ca\n      kind: Issuer\n")


@pytest.fixture(scope="module")
def setup() -> Iterator[str]:
    operator_ready()
    image = load_cert_manager_image()
    yield image


def test_issuer_reference_without_cert_manager_is_degraded_then_served(
        setup: str) -> None:
    if cert_manager_served():
        pytest.skip("cert-manager's API is already served here: the 'missing' half cannot be "
                    "shown without removing it (this test never deletes CRDs)")
    k("apply", "-f", "-", input=dc_yaml(NAME, 3, ISSUER_REF))

    def missing() -> dict[str, object] | None:
        dc = distcache(NAME)
        return dc if condition(dc, "Degraded").get("reason") == "CertManagerMissing" else None

    dc = wait_for("Degraded: CertManagerMissing", missing, 60, every=1)
    assert "install cert-manager" in condition(dc, "Degraded")["message"]
    events = k("get", "events", "--field-selector",
               f"involvedObject.name={NAME},reason=CertManagerMissing").stdout
    assert "cert-manager" in events
    assert k("get", "statefulset", NAME, check=False).returncode != 0  # nothing half-made


def test_certificate_from_a_cert_manager_issuer(setup: str) -> None:
    install_cert_manager(setup)  # idempotent
    k("apply", "-f", "-", input=ISSUERS)
    k("apply", "-f", "-", input=dc_yaml(NAME, 3, ISSUER_REF))
    wait_for("cmcache Running on cert-manager's certificate", lambda: settled(NAME, 3), 300,
             every=2)
    dc = distcache(NAME)
    cert = kj("get", "certificate", NAME)
    assert [o["uid"] for o in cert["metadata"]["ownerReferences"]] == [dc["metadata"]["uid"]]
    assert cert["spec"]["secretName"] == f"{NAME}-tls"
    assert any(c["type"] == "Ready" and c["status"] == "True"
               for c in cert["status"]["conditions"])
    secret = kj("get", "secret", f"{NAME}-tls")
    assert {"tls.crt", "tls.key", "ca.crt"} <= set(secret["data"])
    assert secret["metadata"]["annotations"]["cert-manager.io/issuer-name"] == "distcache-ca"
    assert k("get", "secret", f"{NAME}-ca", check=False).returncode != 0  # no operator CA
    client = client_for(NAME)  # verifies the pods against cert-manager's ca.crt
    try:
        items = {f"cm-{i}": i for i in range(1000)}
        client.mset(items)
        assert client.mget(list(items)) == items
    finally:
        client.close()


def test_cert_manager_renewal_reaches_the_pods_without_a_restart(setup: str) -> None:
    """cert-manager re-issues (the Issuing condition set, as `cmctl renew` does; the
    Certificate rotates its key): every pod serves the new certificate, same pods."""
    client: CacheClient = client_for(NAME)
    try:
        items = {f"cmr-{i}": f"v{i}" for i in range(1000)}
        client.mset(items)
        before = pod_identity(NAME)
        old = secret_fingerprint(f"{NAME}-tls")
        cert = kj("get", "certificate", NAME)
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        conditions = [c for c in cert["status"]["conditions"] if c["type"] != "Issuing"]
        conditions.append({"type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
                           "message": "e2e: renew", "lastTransitionTime": now})
        k("patch", "certificate", NAME, "--subresource=status", "--type=merge",
          "-p", json.dumps({"status": {"conditions": conditions}}))
        new = wait_for("cert-manager wrote a new certificate", lambda: (
            fp if (fp := secret_fingerprint(f"{NAME}-tls")) != old else None), 120, every=1)
        wait_served(list(before), new, client, items)
        assert pod_identity(NAME) == before, "pods were replaced or restarted"
        client.forward.close()
        assert client.mget(list(items)) == items
    finally:
        client.close()
    k("delete", "distcache", NAME, "--wait=false")


@pytest.mark.parametrize(("verb", "allowed"), [
    ("create", True), ("patch", True), ("get", True), ("delete", False), ("list", False)])
def test_operator_may_apply_certificates_and_nothing_more(setup: str, verb: str,
                                                         allowed: bool) -> None:
    from ophelp import OPERATOR_SA

    if not cert_manager_served():
        pytest.skip("needs cert-manager's CRDs (can-i answers no for an unknown resource)")
    proc = k("auth", "can-i", verb, "certificates.cert-manager.io", f"--as={OPERATOR_SA}",
             check=False)
    assert proc.stdout.strip() == ("yes" if allowed else "no"), (verb, proc.stdout)
