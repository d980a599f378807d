"""spec.tls.issuerRef: the cert-manager Certificate of a DistCache, and whether the Secret it
issues is there for the pods to mount."""

from __future__ import annotations

from typing import Any

from distcache_operator import builders
from distcache_operator.k8s import Api
from distcache_operator.model import DistCache


async def ensure_certificate(api: Api, dc: DistCache) -> tuple[str, str] | None:
    """The Certificate applied; (reason, message) while its Secret is not there (or
    cert-manager is not installed), None once the pods can mount it."""
    if not await api.served(builders.CERT_MANAGER_API, "certificates"):
        return ("CertManagerMissing", "spec.tls.issuerRef needs cert-manager, but this "
                f"cluster does not serve {builders.CERT_MANAGER_API} Certificates: install "
                "cert-manager, or use spec.tls.secretName (or neither, and the operator "
                "issues the certificates)")
    cert = builders.build_certificate(dc)
    await api.apply(cert)
    current = await api.read_secret(dc.namespace, dc.tls_secret)
    missing = [key for key in ("tls.crt", "tls.key", "ca.crt")
               if current is None or not current[0].get(key)]
    if not missing:
        return None
    got = await api.get(cert) or {}
    conditions = (got.get("status") or {}).get("conditions") or []
    ready: dict[str, Any] = next((cd for cd in conditions if cd.get("type") == "Ready"), {})
    issuer = dc.spec.tls_issuer
    assert issuer is not None
    why = (f"Certificate {dc.certificate} not ready: {ready.get('reason', 'Pending')}: "
           f"{ready.get('message', 'cert-manager has not answered yet')}")
    if current is not None and missing == ["ca.crt"]:
        why = (f"{issuer.kind} {issuer.name} wrote no ca.crt into Secret {dc.tls_secret}: "
               "the nodes need the CA to verify each other (use a CA, SelfSigned or Vault "
               "issuer)")
    return ("CertificateNotReady", f"waiting for cert-manager ({issuer.kind} "
            f"{issuer.name}) to issue Secret {dc.tls_secret}: {why}")
