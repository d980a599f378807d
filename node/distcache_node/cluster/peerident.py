"""Who counts as a peer by certificate: a client certificate the TLS layer verified against
the cluster CA grants peer rights only when it names a member of the ring. A CA is often
shared (a cert-manager ClusterIssuer, a corporate CA), so "signed by the CA" alone would let
any workload holding one export every key or push a ring.

A certificate names a host through its subjectAltName entries, in the dict form of
`ssl.SSLSocket.getpeercert()`: `('DNS', 'name')`, a wildcard `('DNS', '*.parent')` standing
for exactly one left-most label (RFC 6125, 6.4.3; a partial label such as `f*.x` or a
wildcard over a single label such as `*.local` matches nothing), and
`('IP Address', '10.0.0.1')`, compared as addresses, never as names. The subject's
commonName is not looked at: a certificate without subjectAltName names no host (RFC 6125
kept the CN only as a legacy fallback; RFC 9525, which replaces it, drops it)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def _dns(name: str) -> str:
    return name.strip().lower().rstrip(".")


def url_host(url: str) -> str | None:
    """The host of `url` as a match compares it: an IP address in its compressed form, a DNS
    name in lower case without a trailing dot; None when there is none."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    if not host:
        return None
    address = _address(host)
    return str(address) if address is not None else _dns(host) or None


def hosts_of(urls: Iterable[str]) -> frozenset[str]:
    """The hosts of `urls` (member URLs), normalised for `cert_names_match`."""
    return frozenset(h for h in map(url_host, urls) if h)


def san_entries(peercert: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    """The certificate's subjectAltName entries, as (type, value) string pairs; anything
    else in the field is skipped."""
    sans = peercert.get("subjectAltName") if peercert else None
    if not isinstance(sans, tuple | list):
        return ()
    return tuple((e[0], e[1]) for e in sans
                 if isinstance(e, tuple | list) and len(e) == 2
                 and isinstance(e[0], str) and isinstance(e[1], str))


def _wildcard_parent(pattern: str) -> str | None:
    """`parent` of a usable wildcard `*.parent` (at least two labels, no other `*`)."""
    label, _, parent = pattern.partition(".")
    if label != "*" or "*" in parent or "." not in parent:
        return None
    return parent


def cert_names_match(peercert: Mapping[str, Any] | None, hosts: Iterable[str]) -> bool:
    """True when a subjectAltName of `peercert` (the `getpeercert()` dict) names one of
    `hosts` (host names or IP addresses, as `url_host` gives them or raw)."""
    names: set[str] = set()
    addresses: set[str] = set()
    for host in hosts:
        address = _address(host)
        if address is not None:
            addresses.add(str(address))
        elif name := _dns(host):
            names.add(name)
    # A wildcard stands for one whole, non-empty label: the hosts' parents, by name.
    parents = {parent for first, _, parent in (n.partition(".") for n in names) if first}
    for kind, value in san_entries(peercert):
        if kind == "DNS":
            pattern = _dns(value)
            if "*" in pattern:
                parent = _wildcard_parent(pattern)
                if parent is not None and parent in parents:
                    return True
            elif pattern in names:
                return True
        elif kind == "IP Address":
            address = _address(value)
            if address is not None and str(address) in addresses:
                return True
    return False


class PeerNames:
    """`cert_names_match` against the hosts of the current ring, cached: the hosts are
    worked out once per ring document and the verdict once per set of names, so the check
    on every /cluster/* call is a dictionary lookup."""

    MAX_VERDICTS = 1024

    def __init__(self) -> None:
        self._ring: object = None
        self._own = ""
        self._hosts: frozenset[str] = frozenset()
        self._verdicts: dict[tuple[tuple[str, str], ...], bool] = {}

    def admits(self, peercert: Mapping[str, Any] | None, ring: object,
               member_urls: Iterable[str], own_url: str) -> bool:
        """Whether `peercert` names the host of one of `member_urls` (those of the ring
        document `ring`, compared by identity) or of this node's own URL."""
        if ring is not self._ring or own_url != self._own:
            self._ring, self._own = ring, own_url
            self._hosts = hosts_of([*member_urls, own_url])
            self._verdicts = {}
        names = san_entries(peercert)
        verdict = self._verdicts.get(names)
        if verdict is None:
            verdict = cert_names_match({"subjectAltName": names}, self._hosts)
            if len(self._verdicts) >= self.MAX_VERDICTS:
                self._verdicts.clear()
            self._verdicts[names] = verdict
        return verdict
