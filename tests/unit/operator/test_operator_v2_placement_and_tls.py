"""Operator v2 (issue 14): the cluster domain is a setting; the PDB follows the replication
factor; pods spread over nodes and zones by default; a CA the user brings may be RSA; a
malformed one is refused with a message; lifetimes are the spec's and the CA is renewed two
thirds through; certificates never outlive their CA. Through the builders' and the tls
module's public functions (the reconcile around them runs on kind: e2e/test_operator_tls.py)."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from distcache_node.local import certs
from distcache_operator import tls
from distcache_operator.builders import build_certificate, build_pdb, build_statefulset
from distcache_operator.model import SpecError, parse_duration


def _files(secret: dict) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}


def test_the_cluster_domain_is_the_operators_setting(make_dc, monkeypatch) -> None:
    monkeypatch.setenv("DISTCACHE_OPERATOR_CLUSTER_DOMAIN", "k8s.example.")
    dc = make_dc()
    assert dc.member_url(0) == "https://cache-0.cache-peers.ns.svc.k8s.example:8080"
    args = build_statefulset(dc, 1)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert any(a.endswith(".svc.k8s.example:8080") for a in args if "advertise" in a)
    assert "*.cache-peers.ns.svc.k8s.example" in tls.hosts(dc)
    assert not any("cluster.local" in h for h in tls.hosts(dc))
    cm = build_certificate(make_dc(tls={"issuerRef": {"name": "ca"}}))
    assert "*.cache-peers.ns.svc.k8s.example" in cm["spec"]["dnsNames"]


@pytest.mark.parametrize(("r", "max_unavailable"), [(1, 0), (2, 1), (3, 2)])
def test_the_pdb_lets_r_minus_one_pods_go(make_dc, r: int, max_unavailable: int) -> None:
    """R copies of every key on R pods: R-1 evictions at once keep a copy of each."""
    dc = make_dc(replicas=4, replicationFactor=r)
    assert build_pdb(dc)["spec"]["maxUnavailable"] == max_unavailable


def test_pods_spread_over_nodes_and_zones_by_default_preferred(make_dc) -> None:
    spec = build_statefulset(make_dc(), 3)["spec"]["template"]["spec"]
    terms = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert terms[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert terms[0]["podAffinityTerm"]["labelSelector"]["matchLabels"][
        "app.kubernetes.io/instance"] == "cache"
    keys = {c["topologyKey"]: c["whenUnsatisfiable"] for c in spec["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname": "ScheduleAnyway",
                    "topology.kubernetes.io/zone": "ScheduleAnyway"}
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in str(spec["affinity"])


def test_the_users_affinity_and_spread_replace_the_defaults(make_dc) -> None:
    mine = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}
    spread = [{"maxSkew": 2, "topologyKey": "rack", "whenUnsatisfiable": "DoNotSchedule"}]
    spec = build_statefulset(make_dc(affinity=mine, topologySpreadConstraints=spread),
                             3)["spec"]["template"]["spec"]
    assert spec["affinity"] == mine and spec["topologySpreadConstraints"] == spread


def _rsa_ca(directory: Path, days: float = 30) -> dict[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corporate RSA CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return {"ca.crt": cert.public_bytes(serialization.Encoding.PEM),
            "ca.key": key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())}


def test_an_rsa_ca_issues_node_certificates_that_never_outlive_it(make_dc, tmp_path) -> None:
    dc = make_dc()
    ca = _rsa_ca(tmp_path, days=30)  # shorter than the 1-year certificate lifetime
    issued = _files(tls.issue_node_cert(dc, ca["ca.crt"], ca["ca.key"]))
    cert = x509.load_pem_x509_certificate(issued["tls.crt"])
    ca_cert = x509.load_pem_x509_certificate(ca["ca.crt"])
    cert.verify_directly_issued_by(ca_cert)
    assert cert.not_valid_after_utc <= ca_cert.not_valid_after_utc


@pytest.mark.parametrize("broken", ["key", "cert", "mismatch"])
def test_a_malformed_ca_is_refused_with_a_message(make_dc, tmp_path, broken: str) -> None:
    dc = make_dc()
    ca = _files(tls.issue_ca(dc))
    if broken == "key":
        ca["ca.key"] = b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"
    elif broken == "cert":
        ca["ca.crt"] = b"garbage"
    else:
        ca["ca.key"] = _files(tls.issue_ca(dc))["ca.key"]  # another CA's key
    with pytest.raises(tls.TLSMaterialError, match=dc.ca_secret):
        tls.issue_node_cert(dc, ca["ca.crt"], ca["ca.key"])


def test_lifetimes_come_from_the_spec(make_dc) -> None:
    dc = make_dc(tls={"caLifetime": "6m", "certificateLifetime": "3m"})
    ca = _files(tls.issue_ca(dc))
    ca_cert = x509.load_pem_x509_certificate(ca["ca.crt"])
    life = ca_cert.not_valid_after_utc - ca_cert.not_valid_before_utc
    assert dt.timedelta(minutes=6) <= life <= dt.timedelta(minutes=12)  # (5 min backdated)
    cert = x509.load_pem_x509_certificate(
        _files(tls.issue_node_cert(dc, ca["ca.crt"], ca["ca.key"]))["tls.crt"])
    assert cert.not_valid_after_utc - dt.datetime.now(dt.UTC) <= dt.timedelta(minutes=3)


def test_the_ca_is_due_two_thirds_through_its_life(make_dc) -> None:
    dc = make_dc(tls={"caLifetime": "6m", "certificateLifetime": "3m"})
    ca = _files(tls.issue_ca(dc))["ca.crt"]
    now = dt.datetime.now(dt.UTC)
    assert not tls.ca_due(dc, ca, now)
    assert not tls.ca_due(dc, ca, now + dt.timedelta(minutes=3, seconds=50))
    assert tls.ca_due(dc, ca, now + dt.timedelta(minutes=4, seconds=10))


def test_a_ca_due_starts_the_three_step_move_through_plan(make_dc) -> None:
    """What the operator does when the CA is due: a new CA into <name>-ca; plan then extends
    trust first (step 1), it never swaps the certificate in one go."""
    dc = make_dc(tls={"caLifetime": "6m", "certificateLifetime": "3m"})
    old = _files(tls.issue_ca(dc))
    current = _files(tls.issue_node_cert(dc, old["ca.crt"], old["ca.key"]))
    new = _files(tls.issue_ca(dc))
    step = tls.plan(dc, current, {}, new["ca.crt"], new["ca.key"],
                    tls.renew_before(dc.spec.tls_certificate_lifetime), {}, dt.timedelta(60))
    assert step.reason == "CATrustExtended"
    assert _files(step.secret)["ca.crt"] == old["ca.crt"] + new["ca.crt"]
    assert _files(step.secret)["tls.crt"] == current["tls.crt"]


@pytest.mark.parametrize(("text", "seconds"), [("8760h", 8760 * 3600), ("90m", 5400),
                                               ("2h30m", 9000), ("45s", 45)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "x") == seconds


@pytest.mark.parametrize(("spec", "message"), [
    ({"caLifetime": "1y"}, "not a duration"),
    ({"certificateLifetime": "30s"}, "at least 60s"),
    ({"caLifetime": "1h", "certificateLifetime": "2h"}, "must not exceed"),
])
def test_lifetimes_the_operator_refuses(make_dc, spec: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        make_dc(tls=spec)


def test_local_certificates_still_default_to_a_year_under_a_five_year_ca(tmp_path) -> None:
    certs.make_ca(tmp_path)
    crt, _ = certs.make_cert(tmp_path / "n", "n", tmp_path)
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    assert ca.not_valid_after_utc - cert.not_valid_after_utc > dt.timedelta(days=3 * 365)


def test_network_policy_lets_peers_the_operator_and_clients_in(make_dc) -> None:
    from distcache_operator.builders import build_network_policy

    spec = build_network_policy(make_dc(), "ops")["spec"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "cache"
    peers, clients = spec["ingress"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "distcache",
                                            "app.kubernetes.io/instance": "cache"}}} \
        in peers["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}} \
        in peers["from"]
    assert clients["from"] == [{"namespaceSelector": {}}]
    assert peers["ports"] == [{"protocol": "TCP", "port": 8080}]
    # Clients also get the Redis protocol port (tests/unit/operator/test_operator_redis_port.py).
    assert {"protocol": "TCP", "port": 8080} in clients["ports"]
    only = [{"namespaceSelector": {"matchLabels": {"team": "shop"}}}]
    spec = build_network_policy(make_dc(networkPolicy={"clients": only}), "ops")["spec"]
    assert spec["ingress"][1]["from"] == only


def test_during_a_ca_move_both_cas_verify_their_own_certificates(make_dc, tmp_path) -> None:
    """Step 1 of a move trusts the old and the new CA at once. Two CAs of one DistCache had
    the same name and no key identifiers, so OpenSSL could pick the wrong one as issuer:
    'certificate signature failure' for every handshake it got wrong (found on kind by
    test_the_ca_is_renewed_ahead_of_expiry_under_traffic). A real TLS handshake, both ways."""
    import ssl

    from support import handshake

    dc = make_dc()
    old, new = _files(tls.issue_ca(dc)), _files(tls.issue_ca(dc))
    bundle = old["ca.crt"] + new["ca.crt"]
    for ca in (old, new):
        files = _files(tls.issue_node_cert(dc, ca["ca.crt"], ca["ca.key"]))
        (tmp_path / "crt").write_bytes(files["tls.crt"])
        (tmp_path / "key").write_bytes(files["tls.key"])
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(tmp_path / "crt", tmp_path / "key")
        server.load_verify_locations(cadata=bundle.decode())
        server.verify_mode = ssl.CERT_REQUIRED
        client = ssl.create_default_context(cadata=bundle.decode())
        client.load_cert_chain(tmp_path / "crt", tmp_path / "key")
        result = handshake(client, server, hostname="localhost")
        assert isinstance(result, dict) and result, result
