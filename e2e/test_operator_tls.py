"""TLS on a real cluster without restarts: the operator renews its certificate into the
Secret and every pod serves the new one (read off the wire through a port-forward) within
kubelet's Secret sync, same pods, no restart, no key lost; a user's own TLS Secret replaced
in place is taken in the same way while clients keep working.

Needs KUBECONFIG and the operator installed (make kind-up); uses the operator tests'
namespace, creating it when missing, and leaves its objects for inspection.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubehelp import kubectl_path
from ophelp import (
    NS,
    OPERATOR_NS,
    CacheClient,
    Forward,
    client_for,
    k,
    kj,
    settled,
    wait_for,
)

SYNC = 180  # kubelet updates a mounted Secret within its sync period (~60-90 s); with margin


def dc_yaml(name: str, replicas: int, extra: str = "") -> str:
    return (f"apiVersion: distcache.io/v1alpha1\nkind: DistCache\nmetadata:\n  name: {name}\n"
            f"spec:\n  replicas: {replicas}\n  imagePullPolicy: Never\n{extra}")


@pytest.fixture(scope="module")
def operator() -> None:
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("e2e needs a cluster: KUBECONFIG is not set (make kind-up brings one up)")
    if not kubectl_path():
        pytest.skip("e2e needs kubectl on PATH (or KUBECTL=...)")
    if k("get", "deployment", "distcache-operator", check=False,
         namespace=OPERATOR_NS).returncode != 0:
        pytest.skip("the operator is not installed (make kind-up installs it)")
    k("rollout", "status", "deployment/distcache-operator", "--timeout=180s",
      namespace=OPERATOR_NS, timeout=200)
    if k("get", "namespace", NS, check=False, namespace=None).returncode != 0:
        k("create", "namespace", NS, namespace=None)
        k("label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted",
          namespace=None)


def served_fingerprint(pod: str, forwards: dict[str, Forward]) -> str:
    """sha256 of the DER certificate the pod presents in a TLS handshake right now."""
    fwd = forwards.setdefault(pod, Forward(f"pod/{pod}"))
    url = fwd.url()
    port = int(url.rsplit(":", 1)[1])
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # only read it: the fingerprint is compared below
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                ctx.wrap_socket(raw) as tls_sock:
            der = tls_sock.getpeercert(binary_form=True)
    except OSError:
        fwd.close()
        raise
    assert der
    return hashlib.sha256(der).hexdigest()


def secret_fingerprint(secret: str) -> str:
    pem = base64.b64decode(kj("get", "secret", secret)["data"]["tls.crt"]).decode()
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def pod_identity(name: str) -> dict[str, tuple[str, int]]:
    pods = kj("get", "pods", "-l", f"app.kubernetes.io/instance={name}")["items"]
    return {p["metadata"]["name"]: (p["metadata"]["uid"], sum(
        c.get("restartCount", 0) for c in p["status"].get("containerStatuses") or []))
        for p in pods}


def wait_served(pods: list[str], want: str, cache: CacheClient,
                items: dict[str, Any]) -> None:
    """Every pod serves certificate `want`; meanwhile the cache keeps answering reads."""
    forwards: dict[str, Forward] = {}
    sample = list(items)[:200]
    try:
        def all_serve() -> bool:
            found = cache.mget(sample)  # the cache answers throughout
            assert all(found.get(key) == items[key] for key in sample), "a read failed"
            return all(served_fingerprint(p, forwards) == want for p in pods)

        wait_for(f"{pods} serving certificate {want[:12]}", all_serve, SYNC, every=3)
    finally:
        for f in forwards.values():
            f.close()


@pytest.fixture(scope="module")
def rot(operator: None) -> Iterator[tuple[CacheClient, dict[str, str]]]:
    name = "rot"
    k("apply", "-f", "-", input=dc_yaml(name, 3))
    wait_for("DistCache rot Running", lambda: settled(name, 3), 240, every=2)
    client = client_for(name)
    items = {f"rot-{i}": f"v-{i}" for i in range(3000)}
    client.mset(items)
    yield client, items
    client.close()


def test_renewed_certificate_is_served_without_a_restart(
        rot: tuple[CacheClient, dict[str, str]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's renewal path for real: the test puts a certificate 10 days from expiry
    (from the DistCache's own CA) into rot-tls, the operator renews it (due 30 days before
    expiry) with a Secret update and nothing else; every pod then serves the renewed
    certificate, same pod UIDs, no restarts, all keys readable."""
    from distcache_node.local import certs
    from distcache_operator import tls as optls
    from distcache_operator.model import DistCache

    cache, items = rot
    name = "rot"
    before = pod_identity(name)
    sts_gen = kj("get", "statefulset", name)["metadata"]["generation"]
    original = secret_fingerprint(f"{name}-tls")
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    ca = kj("get", "secret", f"{name}-ca")["data"]
    (ca_dir / "ca.pem").write_bytes(base64.b64decode(ca["ca.crt"]))
    (ca_dir / "ca.key").write_bytes(base64.b64decode(ca["ca.key"]))
    monkeypatch.setattr(certs, "VALID_DAYS", 10)
    dc = DistCache.from_body({"metadata": {"name": name, "namespace": NS}})
    crt, key = certs.make_cert(tmp_path / "node", "node", ca_dir, optls.hosts(dc))
    short = hashlib.sha256(ssl.PEM_cert_to_DER_cert(crt.read_text())).hexdigest()
    k("patch", "secret", f"{name}-tls", "--type=merge", "-p",
      json.dumps({"data": {"tls.crt": base64.b64encode(crt.read_bytes()).decode(),
                           "tls.key": base64.b64encode(key.read_bytes()).decode()}}))
    renewed = wait_for("the operator renews the short-lived certificate", lambda: (
        fp if (fp := secret_fingerprint(f"{name}-tls")) not in (short, original) else None),
        90, every=1)
    events = k("get", "events", "--field-selector",
               f"involvedObject.name={name},reason=CertificateRenewed").stdout
    assert "without a restart" in events
    wait_served(list(before), renewed, cache, items)
    assert pod_identity(name) == before, "pods were replaced or restarted"
    assert kj("get", "statefulset", name)["metadata"]["generation"] == sts_gen
    found = cache.mget(list(items))
    lost = [key for key in items if found.get(key) != items[key]]
    assert not lost, f"{len(lost)} keys lost, e.g. {lost[:5]}"


def test_user_tls_secret_replaced_in_place_keeps_clients_working(
        operator: None, tmp_path: Path) -> None:
    """A user's Secret (spec.tls.secretName) gets a new certificate from the user's CA, as
    cert-manager or a person would write it: the pods serve it without a restart and a
    client that trusts the CA keeps working throughout."""
    from distcache_node.local.certs import make_ca, make_cert

    name = "userrot"
    ca_pem, _ = make_ca(tmp_path / "ca", "user CA")
    peers = f"{name}-peers.{NS}.svc"
    hosts = (f"*.{peers}.cluster.local", f"*.{peers}", "localhost", "127.0.0.1")

    def secret_yaml(directory: Path) -> str:
        crt, key = make_cert(directory, "node", tmp_path / "ca", hosts)
        return k("create", "secret", "generic", "rot-user-tls", f"--from-file=tls.crt={crt}",
                 f"--from-file=tls.key={key}", f"--from-file=ca.crt={ca_pem}",
                 "--dry-run=client", "-o", "yaml").stdout

    k("apply", "-f", "-", input=secret_yaml(tmp_path / "one"))
    k("apply", "-f", "-", input=dc_yaml(name, 2, "  tls:\n    secretName: rot-user-tls\n"))
    wait_for("userrot Running", lambda: settled(name, 2), 240, every=2)
    client = client_for(name)
    try:
        items = {f"u-{i}": i for i in range(500)}
        client.mset(items)
        before = pod_identity(name)
        k("apply", "-f", "-", input=secret_yaml(tmp_path / "two"))
        want = secret_fingerprint("rot-user-tls")
        wait_served(list(before), want, client, items)
        assert pod_identity(name) == before
        client.forward.close()  # a new connection: the handshake sees the new certificate
        assert client.mget(list(items)) == items
    finally:
        client.close()
    k("delete", "distcache", name)
