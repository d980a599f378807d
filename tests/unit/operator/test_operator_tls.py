"""The operator's certificate rotation (tls.plan): a renewal from the same CA is one Secret
update, a new CA moves in three steps, each once every pod reports it has loaded the one
before (waited for, and named past the patience, never skipped), and nothing is ever
rolled."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from cryptography import x509

from distcache_operator import tls
from distcache_operator.model import DistCache

RENEW = dt.timedelta(days=30)
PATIENCE = dt.timedelta(seconds=300)


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
    assert tls.plan(dc, cur, {}, ca["ca.crt"], ca["ca.key"], RENEW, None, PATIENCE).secret is None


def test_a_certificate_near_expiry_is_renewed_from_the_same_ca(make_dc) -> None:
    dc = make_dc()
    ca = _ca(dc)
    cur = _files(tls.issue_node_cert(dc, ca["ca.crt"], ca["ca.key"]))
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=340)
    step = tls.plan(dc, cur, {}, ca["ca.crt"], ca["ca.key"], RENEW, None, PATIENCE,
                    now=later)
    assert step.secret is not None and step.reason == "CertificateRenewed"
    assert "without a restart" in step.message
    new = _files(step.secret)
    assert new["tls.crt"] != cur["tls.crt"] and new["ca.crt"] == ca["ca.crt"]
    assert step.secret["metadata"]["name"] == "cache-tls"
    x509.load_pem_x509_certificate(new["tls.crt"]).verify_directly_issued_by(
        x509.load_pem_x509_certificate(ca["ca.crt"]))


def _pods(cert: bytes | None, *bundles: bytes, n: int = 3,
          **override: dict[str, Any] | None) -> dict[str, dict[str, Any] | None]:
    """What n pods report from /cluster/status: serving `cert`, trusting the CAs in
    `bundles`; `override` replaces a pod's whole report (None: not answering)."""
    report = {"cert_sha256": tls.fingerprint(cert) if cert else None,
              "ca_sha256": sorted({fp for b in bundles for fp in tls.fingerprints(_cas(b))}),
              "reloads": 1, "error": None}
    pods: dict[str, dict[str, Any] | None] = {f"cache-{i}": {"id": f"cache-{i}", "tls": report}
                                              for i in range(n)}
    pods.update({k.replace("_", "-"): v for k, v in override.items()})
    return pods


def test_a_new_ca_moves_in_three_steps_each_once_every_pod_has_the_last(make_dc) -> None:
    dc = make_dc()
    old, new = _ca(dc), _ca(dc)
    cur = _files(tls.issue_node_cert(dc, old["ca.crt"], old["ca.key"]))
    now = dt.datetime.now(dt.UTC)

    def plan(files: dict[str, bytes], annotations: dict[str, str], loaded: Any,
             at: dt.datetime, settle: dt.timedelta = dt.timedelta(0)) -> tls.Step:
        return tls.plan(dc, files, annotations, new["ca.crt"], new["ca.key"], RENEW, loaded,
                        PATIENCE, settle, at)

    # (1) trust first: both CAs in ca.crt, the certificate unchanged; needs no pod.
    s1 = plan(cur, {}, _pods(cur["tls.crt"], old["ca.crt"]), now)
    assert s1.secret is not None and s1.reason == "CATrustExtended"
    f1 = _files(s1.secret)
    a1 = s1.secret["metadata"]["annotations"]
    assert f1["tls.crt"] == cur["tls.crt"] and f1["tls.key"] == cur["tls.key"]
    assert _cas(f1["ca.crt"]) == _cas(old["ca.crt"]) + _cas(new["ca.crt"])
    assert a1[tls.STEP_ANNOTATION] == "trust-extended"
    assert a1[tls.SINCE_ANNOTATION] == now.strftime("%Y-%m-%dT%H:%M:%SZ")
    # Not while a pod trusts the old CA alone, whatever the time.
    soon = now + dt.timedelta(seconds=5)
    behind = _pods(cur["tls.crt"], f1["ca.crt"],
                   cache_1={"tls": _pods(cur["tls.crt"], old["ca.crt"])["cache-0"]["tls"]})
    wait = plan(f1, a1, behind, soon)
    assert wait.secret is None and not wait.overdue
    assert len(wait.waiting) == 1 and wait.waiting[0].startswith("cache-1: does not trust CA")
    # Nor without a look at the pods.
    assert plan(f1, a1, None, soon) == tls.Step(None)
    # (2) every pod trusts both, seconds later: a certificate from the new CA.
    s2 = plan(f1, a1, _pods(cur["tls.crt"], f1["ca.crt"]), soon)
    assert s2.secret is not None and s2.reason == "CertificateRenewed"
    f2 = _files(s2.secret)
    a2 = s2.secret["metadata"]["annotations"]
    assert a2[tls.STEP_ANNOTATION] == "new-ca-certificate"
    x509.load_pem_x509_certificate(f2["tls.crt"]).verify_directly_issued_by(
        _cas(new["ca.crt"])[0])
    assert len(_cas(f2["ca.crt"])) == 2
    # Not while a pod still serves the old certificate.
    mixed = _pods(f2["tls.crt"], f1["ca.crt"],
                  cache_2={"tls": _pods(cur["tls.crt"], f1["ca.crt"])["cache-0"]["tls"]})
    wait = plan(f2, a2, mixed, soon)
    assert wait.secret is None and [w.split(":")[0] for w in wait.waiting] == ["cache-2"]
    assert "serves certificate sha256" in wait.waiting[0]
    # (3) every pod serves it: the old CA goes; then nothing more to do.
    s3 = plan(f2, a2, _pods(f2["tls.crt"], f1["ca.crt"]), soon)
    assert s3.secret is not None and s3.reason == "CATrustReduced"
    f3 = _files(s3.secret)
    assert f3["ca.crt"] == new["ca.crt"] and f3["tls.crt"] == f2["tls.crt"]
    assert "annotations" not in s3.secret["metadata"]
    # A pod that still reports the old CA as well is not waited for: step 3 needs nothing back.
    assert plan(f3, {}, _pods(f3["tls.crt"], f1["ca.crt"]), soon).secret is None
    assert plan(f3, {}, None, soon).secret is None


def _step_one_taken(dc: Any) -> tuple[dict[str, bytes], dict[str, bytes], dt.datetime,
                                       dict[str, bytes], dict[str, str]]:
    """A move to a new CA right after step 1: (new CA, the certificate served, when, the
    Secret's files and annotations after step 1)."""
    old, new = _ca(dc), _ca(dc)
    cur = _files(tls.issue_node_cert(dc, old["ca.crt"], old["ca.key"]))
    now = dt.datetime.now(dt.UTC)
    s1 = tls.plan(dc, cur, {}, new["ca.crt"], new["ca.key"], RENEW, None, PATIENCE, now=now)
    return new, cur, now, _files(s1.secret or {}), (s1.secret or {})["metadata"]["annotations"]


def test_a_pod_that_does_not_answer_is_waited_for_and_named_past_the_patience(
        make_dc) -> None:
    dc = make_dc()
    new, cur, now, f1, a1 = _step_one_taken(dc)
    loaded = _pods(cur["tls.crt"], f1["ca.crt"], cache_0=None,
                   cache_2={"id": "cache-2"})  # cache-2: a node too old to report

    def at(seconds: float) -> tls.Step:
        return tls.plan(dc, f1, a1, new["ca.crt"], new["ca.key"], RENEW, loaded, PATIENCE,
                        now=now + dt.timedelta(seconds=seconds))

    early = at(60)
    assert early.secret is None and not early.overdue
    assert early.waiting == ("cache-0: not answering",
                             "cache-2: reports no TLS material (a node image older than the "
                             "operator?)")
    late = at(PATIENCE.total_seconds() + 1)
    assert late.secret is None and late.overdue and late.waiting == early.waiting
    # An hour on it still waits: never a step the pods are not ready for.
    assert at(3600).secret is None
    # Once they report the material, it goes on.
    assert tls.plan(dc, f1, a1, new["ca.crt"], new["ca.key"], RENEW,
                    _pods(cur["tls.crt"], f1["ca.crt"]), PATIENCE,
                    now=now + dt.timedelta(seconds=3600)).reason == "CertificateRenewed"


def test_a_least_settle_time_holds_a_step_the_pods_are_ready_for(make_dc) -> None:
    dc = make_dc()
    new, cur, now, f1, a1 = _step_one_taken(dc)
    ready = _pods(cur["tls.crt"], f1["ca.crt"])
    settle = dt.timedelta(seconds=120)

    def at(seconds: float) -> tls.Step:
        return tls.plan(dc, f1, a1, new["ca.crt"], new["ca.key"], RENEW, ready, PATIENCE,
                        settle, now + dt.timedelta(seconds=seconds))

    assert at(30).secret is None and at(30).waiting == ()
    assert at(121).reason == "CertificateRenewed"


def test_lagging_names_each_pod_and_why() -> None:
    fp = "ab" * 32
    loaded: dict[str, Any] = {
        "p-0": {"tls": {"cert_sha256": fp, "ca_sha256": ["c1", "c2"], "error": None}},
        "p-1": {"tls": {"cert_sha256": "00" * 32, "ca_sha256": ["c1", "c2"],
                        "error": "new TLS files unusable"}},
        "p-2": {"tls": {"cert_sha256": fp, "ca_sha256": ["c1"], "error": None}},
        "p-3": None,
    }
    assert tls.lagging(loaded, trust=["c1", "c2"]) == (
        "p-2: does not trust CA sha256 c2", "p-3: not answering")
    assert tls.lagging(loaded, cert=fp) == (
        "p-1: serves certificate sha256 0000000000000000, not abababababababab "
        "(new TLS files unusable)", "p-3: not answering")
    assert tls.lagging({}, trust=["c1"], cert=fp) == ()


def test_fingerprint_is_the_der_sha256(make_dc) -> None:
    import hashlib
    import ssl

    dc = make_dc()
    ca = _ca(dc)
    pem = _files(tls.issue_node_cert(dc, ca["ca.crt"], ca["ca.key"]))["tls.crt"]
    der = ssl.PEM_cert_to_DER_cert(pem.decode())
    assert tls.fingerprint(pem) == hashlib.sha256(der).hexdigest()
