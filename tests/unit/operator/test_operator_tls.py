"""The operator's certificate rotation (tls.plan): a renewal from the same CA is one Secret
update, a new CA moves in three steps a settle time apart, and nothing is ever rolled."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from cryptography import x509

from distcache_operator import tls
from distcache_operator.model import DistCache

RENEW = dt.timedelta(days=30)
SETTLE = dt.timedelta(seconds=150)


def _files(secret: dict[str, Any]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}


def _ca(dc: DistCache) -> dict[str, bytes]:
    return _files(tls.issue_ca(dc))


def _cas(bundle: bytes) -> list[x509.Certificate]:
    return tls.split_pem(bundle)


def test_a_fresh_certificate_needs_nothing(make_dc) -> None:
    dc = make_dc()
    ca = _ca(dc)
    cur = _files(tls.issue_node_cert(dc, ca["ca.crt"], ca["ca.key"]))
    assert tls.plan(dc, cur, {}, ca["ca.crt"], ca["ca.key"], RENEW, SETTLE).secret is None


def test_a_certificate_near_expiry_is_renewed_from_the_same_ca(make_dc) -> None:
    dc = make_dc()
    ca = _ca(dc)
    cur = _files(tls.issue_node_cert(dc, ca["ca.crt"], ca["ca.key"]))
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=340)
    step = tls.plan(dc, cur, {}, ca["ca.crt"], ca["ca.key"], RENEW, SETTLE, later)
    assert step.secret is not None and step.reason == "CertificateRenewed"
    assert "without a restart" in step.message
    new = _files(step.secret)
    assert new["tls.crt"] != cur["tls.crt"] and new["ca.crt"] == ca["ca.crt"]
    assert step.secret["metadata"]["name"] == "cache-tls"
    x509.load_pem_x509_certificate(new["tls.crt"]).verify_directly_issued_by(
        x509.load_pem_x509_certificate(ca["ca.crt"]))


def test_a_new_ca_moves_in_three_steps_each_after_the_settle_time(make_dc) -> None:
    dc = make_dc()
    old, new = _ca(dc), _ca(dc)
    cur = _files(tls.issue_node_cert(dc, old["ca.crt"], old["ca.key"]))
    now = dt.datetime.now(dt.UTC)
    # (1) trust first: both CAs in ca.crt, the certificate unchanged.
    s1 = tls.plan(dc, cur, {}, new["ca.crt"], new["ca.key"], RENEW, SETTLE, now)
    assert s1.secret is not None and s1.reason == "CATrustExtended"
    f1 = _files(s1.secret)
    a1 = s1.secret["metadata"]["annotations"]
    assert f1["tls.crt"] == cur["tls.crt"] and f1["tls.key"] == cur["tls.key"]
    assert _cas(f1["ca.crt"]) == _cas(old["ca.crt"]) + _cas(new["ca.crt"])
    assert a1[tls.STEP_ANNOTATION] == "trust-extended"
    # Not before the settle time.
    soon = now + dt.timedelta(seconds=30)
    assert tls.plan(dc, f1, a1, new["ca.crt"], new["ca.key"], RENEW, SETTLE, soon).secret \
        is None
    # (2) a certificate from the new CA, both CAs still trusted.
    after = now + dt.timedelta(seconds=200)
    s2 = tls.plan(dc, f1, a1, new["ca.crt"], new["ca.key"], RENEW, SETTLE, after)
    assert s2.secret is not None and s2.reason == "CertificateRenewed"
    f2 = _files(s2.secret)
    a2 = s2.secret["metadata"]["annotations"]
    x509.load_pem_x509_certificate(f2["tls.crt"]).verify_directly_issued_by(
        _cas(new["ca.crt"])[0])
    assert len(_cas(f2["ca.crt"])) == 2
    assert tls.plan(dc, f2, a2, new["ca.crt"], new["ca.key"], RENEW, SETTLE,
                    after + dt.timedelta(seconds=10)).secret is None
    # (3) the old CA goes; then nothing more to do.
    s3 = tls.plan(dc, f2, a2, new["ca.crt"], new["ca.key"], RENEW, SETTLE,
                  after + dt.timedelta(seconds=200))
    assert s3.secret is not None and s3.reason == "CATrustReduced"
    f3 = _files(s3.secret)
    assert f3["ca.crt"] == new["ca.crt"] and f3["tls.crt"] == f2["tls.crt"]
    assert "annotations" not in s3.secret["metadata"]
    assert tls.plan(dc, f3, {}, new["ca.crt"], new["ca.key"], RENEW, SETTLE,
                    after + dt.timedelta(seconds=400)).secret is None


def test_fingerprint_is_the_der_sha256(make_dc) -> None:
    import hashlib
    import ssl

    dc = make_dc()
    ca = _ca(dc)
    pem = _files(tls.issue_node_cert(dc, ca["ca.crt"], ca["ca.key"]))["tls.crt"]
    der = ssl.PEM_cert_to_DER_cert(pem.decode())
    assert tls.fingerprint(pem) == hashlib.sha256(der).hexdigest()
