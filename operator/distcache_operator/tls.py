"""Certificates the operator issues itself (spec.tls.enabled without spec.tls.secretName): a
private CA per DistCache (Secret <name>-ca) and one node certificate (Secret <name>-tls:
tls.crt, tls.key, ca.crt) valid for every pod's peer name, the client Service and loopback
(kubectl port-forward). Made with the node's own `cryptography` helpers; lifetimes from
spec.tls.caLifetime (5 years) and spec.tls.certificateLifetime (1 year), each renewed two
thirds through (renew_before): a certificate from the same CA in one Secret update, a CA by
the three-step move below (the operator replaces <name>-ca with a new CA, which starts it).
A CA the user put into <name>-ca may be RSA or EC; one that cannot be read or used raises
TLSMaterialError (the operator reports it as Degraded and goes on with the rest).

Rotation never restarts a pod: the nodes load a certificate and CA again when the mounted
Secret changes (node/distcache_node/tlsreload.py). `plan` decides the next Secret content:

- a certificate close to expiry is re-issued from the same CA (one Secret update);
- a new CA (the <name>-ca Secret replaced) moves in three steps, each taken once every pod
  of the StatefulSet reports (GET /cluster/status, `tls`) that it has loaded what the step
  before wrote (kubelet takes up to about a minute to update each pod's files, so for a
  while pods hold different versions): (1) ca.crt becomes old CA + new CA, the certificate
  stays; (2) once every pod trusts both, a certificate from the new CA; (3) once every pod
  serves it, ca.crt the new CA alone. A pod that does not answer (not running) is waited
  for; past `patience` the step is reported overdue (the operator says Degraded, naming the
  pods) but never taken blindly. Each step is recorded in Secret annotations (which step,
  since when), so an operator restart resumes where the Secret says.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from distcache_node.local.certs import load_ca, make_ca, make_cert
from distcache_operator.builders import _meta
from distcache_operator.model import DistCache


def hosts(dc: DistCache) -> tuple[str, ...]:
    peers = f"{dc.peers_service}.{dc.namespace}.svc"
    client = f"{dc.client_service}.{dc.namespace}.svc"
    return (f"*.{peers}.{dc.domain}", f"*.{peers}", f"{client}.{dc.domain}", client,
            dc.client_service, "localhost", "127.0.0.1")


class TLSMaterialError(ValueError):
    """A CA or certificate that cannot be read or used (malformed, an unsupported key type,
    a key that does not match): the user must replace it; says which and why."""


def renew_before(lifetime_seconds: float) -> datetime.timedelta:
    """Renew two thirds through a lifetime (cert-manager's default too)."""
    return datetime.timedelta(seconds=lifetime_seconds / 3)


def not_after(pem: bytes, what: str) -> datetime.datetime:
    """The earliest expiry of the certificates in `pem` (a CA bundle: the one that expires
    first is the one to watch)."""
    try:
        certs = split_pem(pem)
    except ValueError as exc:
        raise TLSMaterialError(f"{what} is not a PEM certificate: {exc}") from None
    if not certs:
        raise TLSMaterialError(f"{what} holds no certificate")
    return min(c.not_valid_after_utc for c in certs)


def check_ca(dc: DistCache, ca_crt: bytes, ca_key: bytes) -> None:
    """The CA in <name>-ca can sign (certs.load_ca: a certificate and its own key, RSA or
    EC). Checked at every step, so a bad replacement is reported now, not at the next
    renewal."""
    try:
        load_ca(ca_crt, ca_key)
    except ValueError as exc:
        raise TLSMaterialError(f"Secret {dc.ca_secret}: {exc}") from None


def ca_due(dc: DistCache, ca_crt: bytes, now: datetime.datetime | None = None) -> bool:
    """The operator's CA is two thirds through its lifetime: time to move to a new one."""
    now = now or datetime.datetime.now(datetime.UTC)
    return not_after(ca_crt, f"Secret {dc.ca_secret} ca.crt") - now < renew_before(
        dc.spec.tls_ca_lifetime)


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
        # A name of its own per CA (the issue time in it): during a move two CAs are trusted
        # at once, and clients that look issuers up by name alone must not confuse them.
        issued = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        name = f"DistCache CA {issued} {dc.namespace}/{dc.name}"[:64]  # CN: at most 64
        cert, key = make_ca(Path(tmp), name,
                            datetime.timedelta(seconds=dc.spec.tls_ca_lifetime))
        return _secret(dc, dc.ca_secret, {"ca.crt": cert.read_bytes(),
                                          "ca.key": key.read_bytes()}, "Opaque")


def issue_node_cert(dc: DistCache, ca_crt: bytes, ca_key: bytes) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        ca_dir = Path(tmp) / "ca"
        ca_dir.mkdir()
        (ca_dir / "ca.pem").write_bytes(ca_crt)
        (ca_dir / "ca.key").write_bytes(ca_key)
        try:
            cert, key = make_cert(Path(tmp) / "node", "node", ca_dir, hosts(dc),
                                  datetime.timedelta(seconds=dc.spec.tls_certificate_lifetime))
        except ValueError as exc:
            raise TLSMaterialError(f"cannot issue a certificate from the CA in Secret "
                                   f"{dc.ca_secret}: {exc}") from None
        return _secret(dc, dc.tls_secret, {"tls.crt": cert.read_bytes(),
                                           "tls.key": key.read_bytes(), "ca.crt": ca_crt},
                       "kubernetes.io/tls")


# Secret annotations of the CA rotation (see the module docstring).
STEP_ANNOTATION = "distcache.io/tls-step"  # trust-extended | new-ca-certificate
SINCE_ANNOTATION = "distcache.io/tls-step-since"  # ISO time of the step


def split_pem(bundle: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(bundle) if bundle.strip() else []


def _pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def fingerprint(cert_pem: bytes) -> str:
    """sha256 of the first certificate's DER, hex (what a TLS client sees as the peer's)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


@dataclass(frozen=True)
class Step:
    """The Secret to write (None: nothing to do), the Event reason and message. While a step
    of a CA move waits for the pods: `waiting` names each pod that has not loaded the
    previous step (and what it has), `overdue` once that took longer than `patience`."""

    secret: dict[str, Any] | None
    reason: str = ""
    message: str = ""
    waiting: tuple[str, ...] = ()
    overdue: bool = False


def fingerprints(certs: list[x509.Certificate]) -> list[str]:
    return [hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest()
            for c in certs]


# What a pod reports it has loaded (its /cluster/status `tls`), by pod name; None for a pod
# that did not answer. A report without `tls` at all is a node too old to say.
Loaded = Mapping[str, Mapping[str, Any] | None]


def lagging(loaded: Loaded, trust: list[str] | None = None, cert: str | None = None,
            ) -> tuple[str, ...]:
    """The pods that have not loaded the expected material: each as "pod: why". `trust`:
    every one of these CAs must be trusted; `cert`: this certificate must be served."""
    out = []
    for pod, report in sorted(loaded.items()):
        if report is None:
            out.append(f"{pod}: not answering")
            continue
        tls = report.get("tls")
        if not isinstance(tls, Mapping):
            out.append(f"{pod}: reports no TLS material (a node image older than the "
                       "operator?)")
            continue
        have = set(tls.get("ca_sha256") or ())
        missing = [fp for fp in trust or () if fp not in have]
        if missing:
            out.append(f"{pod}: does not trust CA sha256 {', '.join(m[:16] for m in missing)}"
                       + (f" ({tls['error']})" if tls.get("error") else ""))
        elif cert is not None and tls.get("cert_sha256") != cert:
            served = str(tls.get("cert_sha256") or "none")[:16]
            out.append(f"{pod}: serves certificate sha256 {served}, not {cert[:16]}"
                       + (f" ({tls['error']})" if tls.get("error") else ""))
    return tuple(out)


def _now_iso(now: datetime.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _since(annotations: Mapping[str, str]) -> datetime.datetime | None:
    try:
        return datetime.datetime.strptime(annotations.get(SINCE_ANNOTATION, ""),
                                          "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def plan(dc: DistCache, current: Mapping[str, bytes], annotations: Mapping[str, str],
         ca_crt: bytes, ca_key: bytes, renew_before: datetime.timedelta,
         loaded: Loaded | None, patience: datetime.timedelta,
         settle: datetime.timedelta = datetime.timedelta(0),
         now: datetime.datetime | None = None) -> Step:
    """The next content of the operator's <name>-tls Secret (files `current`), given the CA
    it should end on and what each pod of the StatefulSet has loaded (`loaded`; None: not
    looked at, so no step that needs the pods is taken). A step of a CA move is taken at
    least `settle` after the one before and once every pod has loaded that one; past
    `patience` the wait is `overdue`. Pure but for issuing keys."""
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        ca = x509.load_pem_x509_certificate(ca_crt)
        bundle = split_pem(current.get("ca.crt", b""))
        cert = x509.load_pem_x509_certificate(current["tls.crt"])
    except ValueError as exc:
        raise TLSMaterialError(f"the CA in Secret {dc.ca_secret} or the certificate in "
                               f"{dc.tls_secret} cannot be read: {exc}") from None
    since = _since(annotations)

    def wait(trust: list[str] | None = None, served: str | None = None) -> Step | None:
        """None when every pod has what the step before wrote; else the Step that waits."""
        if loaded is None:
            return Step(None)
        behind = lagging(loaded, trust, served)
        if since is not None and now - since < settle:
            return Step(None, waiting=behind)
        if not behind:
            return None
        return Step(None, waiting=behind,
                    overdue=since is not None and now - since >= patience)

    def secret(files: dict[str, bytes], step: str | None) -> dict[str, Any]:
        out = _secret(dc, dc.tls_secret, files, "kubernetes.io/tls")
        if step:
            out["metadata"]["annotations"] = {STEP_ANNOTATION: step,
                                              SINCE_ANNOTATION: _now_iso(now)}
        return out

    if ca not in bundle:
        # (1) the pods learn to trust the new CA before anything presents it.
        return Step(secret({**current, "ca.crt": _pem([*bundle, ca])}, "trust-extended"),
                    "CATrustExtended", f"{dc.tls_secret}: ca.crt now holds the new CA next to "
                    "the old one; the certificate from the new CA follows once every pod "
                    "trusts both")
    if not _issued_by(cert, ca):
        if (waiting := wait(trust=fingerprints(bundle))) is not None:
            return waiting
        # (2) every pod trusts the new CA: a certificate from it.
        new = issue_node_cert(dc, ca_crt, ca_key)
        files = {k: base64.b64decode(v) for k, v in new["data"].items()}
        return Step(secret({**files, "ca.crt": _pem(bundle)}, "new-ca-certificate"),
                    "CertificateRenewed", f"{dc.tls_secret}: a certificate from the new CA; "
                    "the old CA is dropped from ca.crt once every pod serves it")
    if len(bundle) > 1:
        if (waiting := wait(served=fingerprint(current["tls.crt"]))) is not None:
            return waiting
        # (3) every pod presents the new CA's certificate: the old CA goes.
        return Step(secret({**current, "ca.crt": ca_crt}, None), "CATrustReduced",
                    f"{dc.tls_secret}: ca.crt holds the new CA alone")
    if expires_within(current["tls.crt"], renew_before, now):
        new = issue_node_cert(dc, ca_crt, ca_key)
        return Step(new, "CertificateRenewed",
                    f"renewed {dc.tls_secret} from the same CA: the pods load it from the "
                    "updated Secret without a restart")
    return Step(None)
