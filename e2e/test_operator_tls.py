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
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clientloop import ClientLoop, assert_swap_seen
from ophelp import NS, CacheClient, client_for, k, kj, secret_value, settled, wait_for
from tlshelp import dc_yaml, operator_ready, pod_identity, secret_fingerprint, wait_served


@pytest.fixture(scope="module")
def operator() -> None:
    operator_ready()



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
    k("delete", "distcache", name, "--wait=false")  # frees the 2 cores for the next tests


def test_renewed_certificate_is_served_without_a_restart(
        rot: tuple[CacheClient, dict[str, str]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's renewal path for real: the test puts a certificate 10 days from expiry
    (from the DistCache's own CA) into rot-tls, the operator renews it (due 30 days before
    expiry) with a Secret update and nothing else; every pod then serves the renewed
    certificate, same pod UIDs, no restarts, all keys readable. A client loop (a new TLS
    connection per request, no retries) runs from before the Secret is touched until every
    pod serves the renewed certificate: no request fails, no read is stale."""
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
    loop = ClientLoop(list(before), cache.api_key,
                      secret_value(f"{name}-tls", "ca.crt")).start()
    try:
        k("patch", "secret", f"{name}-tls", "--type=merge", "-p",
          json.dumps({"data": {"tls.crt": base64.b64encode(crt.read_bytes()).decode(),
                               "tls.key": base64.b64encode(key.read_bytes()).decode()}}))
        renewed = wait_for("the operator renews the short-lived certificate", lambda: (
            fp if (fp := secret_fingerprint(f"{name}-tls")) not in (short, original)
            else None), 90, every=1)
        events = k("get", "events", "--field-selector",
                   f"involvedObject.name={name},reason=CertificateRenewed").stdout
        assert "without a restart" in events
        wait_served(list(before), renewed, cache, items)
    finally:
        result = loop.stop()
    assert_swap_seen(result, list(before), original, renewed)
    assert pod_identity(name) == before, "pods were replaced or restarted"
    assert kj("get", "statefulset", name)["metadata"]["generation"] == sts_gen
    found = cache.mget(list(items))
    lost = [key for key in items if found.get(key) != items[key]]
    assert not lost, f"{len(lost)} keys lost, e.g. {lost[:5]}"


def test_user_tls_secret_replaced_in_place_keeps_clients_working(
        operator: None, tmp_path: Path) -> None:
    """A user's Secret (spec.tls.secretName) gets a new certificate from the user's CA, as
    cert-manager or a person would write it: the pods serve it without a restart and a
    client that trusts the CA keeps working throughout: a client loop (a new TLS connection
    per request, no retries) runs from before the new Secret is applied until every pod
    serves it, and no request fails."""
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
        old = secret_fingerprint("rot-user-tls")
        loop = ClientLoop(list(before), client.api_key, ca_pem.read_text()).start()
        try:
            k("apply", "-f", "-", input=secret_yaml(tmp_path / "two"))
            want = secret_fingerprint("rot-user-tls")
            wait_served(list(before), want, client, items)
        finally:
            result = loop.stop()
        assert_swap_seen(result, list(before), old, want)
        assert pod_identity(name) == before
        client.forward.close()  # a new connection: the handshake sees the new certificate
        assert client.mget(list(items)) == items
    finally:
        client.close()
    k("delete", "distcache", name)


@pytest.mark.timeout(1200)
def test_new_ca_moves_in_three_steps_without_a_restart(operator: None, tmp_path: Path) -> None:
    """The operator's CA replaced (<name>-ca given a new CA): ca.crt first holds old and new
    CA, once every pod reports it trusts both the certificate comes from the new CA, once
    every pod reports it serves that the old CA is dropped (no fixed wait: each step follows
    kubelet's update of the pods' Secret volume). Writes (replicated between pods over mutual
    TLS) and reads go on throughout; every pod ends up serving the new CA's certificate and
    says so in /status, the same pods, no restarts, nothing lost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from distcache_node.local.certs import make_ca

    name = "carot"
    k("apply", "-f", "-", input=dc_yaml(name, 3))
    wait_for("carot Running", lambda: settled(name, 3), 240, every=2)
    items: dict[str, Any] = {f"ca-{i}": i for i in range(2000)}

    def bundle() -> list[x509.Certificate]:
        pem = base64.b64decode(kj("get", "secret", f"{name}-tls")["data"]["ca.crt"])
        return x509.load_pem_x509_certificates(pem)

    old_ca = bundle()
    assert len(old_ca) == 1
    client = client_for(name)
    try:
        client.mset(items)
        before = pod_identity(name)
        crt, key = make_ca(tmp_path / "newca", "carot replacement CA")
        new_ca = x509.load_pem_x509_certificate(crt.read_bytes())
        k("patch", "secret", f"{name}-ca", "--type=merge", "-p", json.dumps(
            {"data": {"ca.crt": base64.b64encode(crt.read_bytes()).decode(),
                      "ca.key": base64.b64encode(key.read_bytes()).decode()}}))
        t0 = time.monotonic()
        wait_for("step 1: ca.crt holds old and new CA", lambda: bundle() == [*old_ca, new_ca],
                 60, every=1)
        t1 = time.monotonic()
        # A client that trusts both, as the pods do after step 1.
        client.close()
        client = client_for(name)
        writes = 0

        def step2() -> str | None:
            nonlocal writes
            client.mset({f"during-{writes}": writes})  # replicated over mutual TLS
            writes += 1
            pem = base64.b64decode(kj("get", "secret", f"{name}-tls")["data"]["tls.crt"])
            cert = x509.load_pem_x509_certificate(pem)
            return secret_fingerprint(f"{name}-tls") if cert.issuer == new_ca.subject \
                else None

        new = wait_for("step 2: a certificate from the new CA", step2, 300, every=3)
        t2 = time.monotonic()
        wait_served(list(before), new, client, items)
        wait_for("step 3: ca.crt holds the new CA alone", lambda: bundle() == [new_ca], 300,
                 every=3)
        t3 = time.monotonic()
        print(f"\nCA move: step 1 after {t1 - t0:.0f} s, step 2 {t2 - t1:.0f} s later, "
              f"step 3 {t3 - t2:.0f} s later")
        events = k("get", "events", "--field-selector", f"involvedObject.name={name}").stdout
        assert "CATrustExtended" in events and "CATrustReduced" in events
        assert "TLSNotLoaded" not in events
        assert pod_identity(name) == before, "pods were replaced or restarted"
        client.close()
        client = client_for(name)  # trusts the new CA alone now
        new_fp = hashlib.sha256(new_ca.public_bytes(serialization.Encoding.DER)).hexdigest()
        for pod in before:  # what each pod says it has loaded
            one = client_for(name, int(pod.rsplit("-", 1)[1]))
            try:
                status, body = one.request("GET", "/status")
            finally:
                one.close()
            assert status == 200 and body["tls"]["cert_sha256"] == new, (pod, body["tls"])
            assert new_fp in body["tls"]["ca_sha256"], (pod, body["tls"])
        found = client.mget([*items, *(f"during-{i}" for i in range(writes))])
        assert all(found.get(k_) == v for k_, v in items.items())
        assert all(found.get(f"during-{i}") == i for i in range(writes)), "a write was lost"
        print(f"\n{writes} writes during the CA change, all acknowledged and readable")
    finally:
        client.close()
    k("delete", "distcache", name, "--wait=false")
