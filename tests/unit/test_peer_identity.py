"""Which certificate names grant peer rights (cluster/peerident.py): a subjectAltName that
names the host of a ring member. Certificates are in the dict form of `getpeercert()`; the
last tests decode real certificates from the node's own issuing helpers to pin that shape."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from distcache_node.cluster.peerident import (
    PeerNames,
    cert_names_match,
    hosts_of,
    url_host,
)
from distcache_node.local import certs

POD = "cache-1.cache-peers.demo.svc.cluster.local"


def cert(*sans: tuple[str, str], cn: str = "node") -> dict[str, Any]:
    out: dict[str, Any] = {"subject": ((("commonName", cn),),)}
    if sans:
        out["subjectAltName"] = sans
    return out


@pytest.mark.parametrize(("url", "host"), [
    ("https://cache-0.cache-peers.demo.svc.cluster.local:7000", "cache-0.cache-peers.demo.svc."
                                                                "cluster.local"),
    ("https://Node.Example.:443", "node.example"),
    ("https://127.0.0.1:7000", "127.0.0.1"),
    ("https://[::1]:7000", "::1"),
    ("https://[0:0:0:0:0:0:0:1]:7000", "::1"),
    ("not a url", None),
])
def test_url_host_normalises(url: str, host: str | None) -> None:
    assert url_host(url) == host


def test_an_exact_dns_name_matches_case_and_trailing_dot_aside() -> None:
    assert cert_names_match(cert(("DNS", "Cache-1.Cache-Peers.demo.svc.cluster.local.")), [POD])
    assert not cert_names_match(cert(("DNS", "cache-2.cache-peers.demo.svc.cluster.local")),
                                [POD])


def test_a_wildcard_stands_for_exactly_one_left_most_label() -> None:
    wildcard = cert(("DNS", "*.cache-peers.demo.svc.cluster.local"))
    assert cert_names_match(wildcard, [POD])
    assert not cert_names_match(wildcard, ["cache-peers.demo.svc.cluster.local"])
    assert not cert_names_match(wildcard, ["a.cache-1.cache-peers.demo.svc.cluster.local"])
    assert not cert_names_match(wildcard, ["cache-1.other-peers.demo.svc.cluster.local"])


@pytest.mark.parametrize("pattern", [
    "cache-*.cache-peers.demo.svc.cluster.local",  # a partial label
    "*",
    "*.local",  # over a single label
    "cache-1.*.demo.svc.cluster.local",  # not left-most
    "*.*.demo.svc.cluster.local",
])
def test_other_wildcards_match_nothing(pattern: str) -> None:
    assert not cert_names_match(cert(("DNS", pattern)), [POD, "cache-1.local"])


def test_ip_addresses_match_as_addresses_only() -> None:
    assert cert_names_match(cert(("IP Address", "127.0.0.1")), ["127.0.0.1"])
    assert cert_names_match(cert(("IP Address", "0:0:0:0:0:0:0:1\n")), ["::1"])
    assert cert_names_match(cert(("IP Address", "::1")), hosts_of(["https://[::1]:1"]))
    assert not cert_names_match(cert(("IP Address", "127.0.0.2")), ["127.0.0.1"])
    # A DNS entry spelling an address is not an address, and a wildcard never covers one.
    assert not cert_names_match(cert(("DNS", "127.0.0.1")), ["127.0.0.1"])
    assert not cert_names_match(cert(("DNS", "*.0.0.1")), ["127.0.0.1"])
    assert not cert_names_match(cert(("IP Address", "127.0.0.1")), ["localhost"])


def test_no_subject_alt_name_names_nothing_whatever_the_common_name() -> None:
    assert not cert_names_match(cert(cn=POD), [POD])
    assert not cert_names_match(cert(cn="127.0.0.1"), ["127.0.0.1"])
    assert not cert_names_match({}, [POD])
    assert not cert_names_match(None, [POD])


def test_odd_entries_are_skipped_not_fatal() -> None:
    odd: dict[str, Any] = {"subjectAltName": (("email", "a@b"), ("URI", "spiffe://x"),
                                              ("DNS",), ("DNS", 3), "DNS", ("DNS", POD))}
    assert cert_names_match(odd, [POD])
    assert not cert_names_match({"subjectAltName": "DNS:" + POD}, [POD])
    assert not cert_names_match(cert(("DNS", POD)), [])


def test_peer_names_follows_the_ring_it_is_given() -> None:
    names = PeerNames()
    other = cert(("DNS", "other-workload.example"))
    member = cert(("DNS", "*.cache-peers.demo.svc.cluster.local"))
    ring1, ring2 = object(), object()
    own = "https://cache-0.cache-peers.demo.svc.cluster.local:7000"
    assert names.admits(member, ring1, [f"https://{POD}:7000"], own)
    assert not names.admits(other, ring1, [f"https://{POD}:7000"], own)
    # A new ring that names the other host: the verdict follows it.
    assert names.admits(other, ring2, ["https://other-workload.example:7000"], own)
    # This node's own URL counts even before it holds a ring.
    assert names.admits(member, object(), [], own)
    assert not names.admits(other, object(), [], own)


def _decoded(path: Path) -> dict[str, Any]:
    """getpeercert()'s dict for the certificate in `path`, without a handshake."""
    decoded: dict[str, Any] = ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]
    return decoded


def test_real_certificates_decode_to_the_shape_matched(tmp_path: Path) -> None:
    certs.make_ca(tmp_path / "ca")
    node, _ = certs.make_cert(tmp_path / "c", "node", tmp_path / "ca")  # 127.0.0.1 etc.
    other, _ = certs.make_cert(tmp_path / "c", "other", tmp_path / "ca",
                               ("other-workload.example",))
    members = hosts_of(["https://127.0.0.1:7000", "https://127.0.0.1:7001"])
    assert cert_names_match(_decoded(node), members)
    assert cert_names_match(_decoded(node), hosts_of(["https://[::1]:7000"]))
    assert cert_names_match(_decoded(node), hosts_of(["https://localhost:7000"]))
    assert not cert_names_match(_decoded(other), members)
