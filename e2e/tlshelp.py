"""Helpers of the operator's TLS and cert-manager e2e tests: the certificate a pod presents
on the wire, the Secret's, pods' identities (UID, restarts), waiting until every pod serves a
certificate while the cache keeps answering."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
import time
from typing import Any

import pytest
from kubehelp import kubectl_path
from ophelp import NS, OPERATOR_NS, CacheClient, Forward, k, kj, wait_for

SYNC = 180  # kubelet updates a mounted Secret within its sync period (~60-90 s); with margin


def dc_yaml(name: str, replicas: int, extra: str = "") -> str:
    return (f"apiVersion: distcache.io/v1alpha1\nkind: DistCache\nmetadata:\n  name: {name}\n"
            f"spec:\n  replicas: {replicas}\n  imagePullPolicy: Never\n{extra}")


def operator_ready() -> None:
    """Skips without a cluster or an installed operator; creates the namespace if missing."""
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

        t0 = time.monotonic()
        wait_for(f"{pods} serving certificate {want[:12]}", all_serve, SYNC, every=3)
        print(f"\nevery pod serves the new certificate {time.monotonic() - t0:.0f} s after "
              "the Secret changed")
    finally:
        for f in forwards.values():
            f.close()
