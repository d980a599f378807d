"""The certificates the operator has issued (itself or through cert-manager) name every ring
member it writes, so the nodes grant them peer rights (cluster/peerident.py)."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import Any

from distcache_node.cluster.peerident import cert_names_match, hosts_of
from distcache_node.local import certs
from distcache_operator import builders, tls


def _decoded(path: Path) -> dict[str, Any]:
    decoded: dict[str, Any] = ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]
    return decoded


def test_the_operators_own_certificate_names_every_member(make_dc, tmp_path: Path) -> None:
    dc = make_dc(replicas=5)
    ca_cert, ca_key = certs.make_ca(tmp_path / "ca")
    secret = tls.issue_node_cert(dc, ca_cert.read_bytes(), ca_key.read_bytes())
    crt = tmp_path / "tls.crt"
    crt.write_bytes(base64.b64decode(secret["data"]["tls.crt"]))
    members = [dc.member_url(i) for i in range(5)]
    assert all(url.startswith("https://") for url in members)
    peercert = _decoded(crt)
    for url in members:
        assert cert_names_match(peercert, hosts_of([url])), url
    # Another DistCache (another peers Service) is not a member.
    other = make_dc(replicas=1)
    assert not cert_names_match(peercert, hosts_of(
        [other.member_url(0).replace(dc.peers_service, "elsewhere-peers")]))


def test_the_cert_manager_certificate_names_every_member(make_dc) -> None:
    dc = make_dc(replicas=3, tls={"issuerRef": {"name": "shared", "kind": "ClusterIssuer"}})
    spec = builders.build_certificate(dc)["spec"]
    # What cert-manager puts in the certificate, in getpeercert()'s form.
    peercert = {"subjectAltName": (*(("DNS", n) for n in spec["dnsNames"]),
                                   *(("IP Address", a) for a in spec["ipAddresses"]))}
    for i in range(3):
        assert cert_names_match(peercert, hosts_of([dc.member_url(i)]))
