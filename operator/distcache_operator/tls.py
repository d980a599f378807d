"""Certificates the operator issues itself (spec.tls.enabled without spec.tls.secretName): a
private CA per DistCache (Secret <name>-ca) and one node certificate (Secret <name>-tls:
tls.crt, tls.key, ca.crt) valid for every pod's peer name, the client Service and loopback
(kubectl port-forward). Made with the node's own `cryptography` helpers; valid one year.
"""

from __future__ import annotations

import base64
import datetime
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509

from distcache_node.local.certs import make_ca, make_cert
from distcache_operator.builders import _meta
from distcache_operator.model import DistCache


def hosts(dc: DistCache) -> tuple[str, ...]:
    peers = f"{dc.peers_service}.{dc.namespace}.svc"
    client = f"{dc.client_service}.{dc.namespace}.svc"
    return (f"*.{peers}.cluster.local", f"*.{peers}", f"{client}.cluster.local", client,
            dc.client_service, "localhost", "127.0.0.1")


def _secret(dc: DistCache, name: str, files: dict[str, bytes], kind: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": kind, "metadata": _meta(dc, name),
            "data": {k: base64.b64encode(v).decode() for k, v in files.items()}}


def expires_within(cert_pem: bytes, margin: datetime.timedelta,
                   now: datetime.datetime | None = None) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem)
    now = now or datetime.datetime.now(datetime.UTC)
    return cert.not_valid_after_utc - now < margin


def issue_ca(dc: DistCache) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_ca(Path(tmp), f"DistCache {dc.namespace}/{dc.name} CA")
        return _secret(dc, dc.ca_secret, {"ca.crt": cert.read_bytes(),
                                          "ca.key": key.read_bytes()}, "Opaque")


def issue_node_cert(dc: DistCache, ca_crt: bytes, ca_key: bytes) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        ca_dir = Path(tmp) / "ca"
        ca_dir.mkdir()
        (ca_dir / "ca.pem").write_bytes(ca_crt)
        (ca_dir / "ca.key").write_bytes(ca_key)
        cert, key = make_cert(Path(tmp) / "node", "node", ca_dir, hosts(dc))
        return _secret(dc, dc.tls_secret, {"tls.crt": cert.read_bytes(),
                                           "tls.key": key.read_bytes(), "ca.crt": ca_crt},
                       "kubernetes.io/tls")
