"""TLS of a DistCache in its three modes (the user's Secret, cert-manager, or the operator's
own CA and certificate): ensure_tls before the pods are asked anything (the CA bundle the
operator verifies them with), rotate_ca once they have said what they hold (renewal and the
three-step move to a new CA). The pods are never restarted for either: they load the updated
Secret's files themselves."""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass, field, replace

from cryptography.hazmat.primitives import hashes

from distcache_operator import metrics, tls
from distcache_operator.handlers.certmanager import ensure_certificate
from distcache_operator.handlers.memory import DistCacheMemory
from distcache_operator.handlers.problem import Problem
from distcache_operator.k8s import Api, NotFound
from distcache_operator.model import DistCache

log = logging.getLogger("distcache.operator")
# A move to a new CA takes each step once every pod reports it has loaded the one before
# (kubelet updates a mounted Secret within about a minute, its sync period plus its cache;
# the node notices within 2 s). Past TLS_PATIENCE the cache is Degraded, naming the pods that
# have not (still waiting: a step is never taken blindly). TLS_SETTLE: a least time between
# steps, for clients outside the StatefulSet that mount ca.crt and that the operator cannot
# ask: their kubelet syncs the Secret at the same pace (the cache pods here report a step
# 70-85 s after it), so by default a step waits at least 90 s for them too.
TLS_PATIENCE = 300.0
TLS_SETTLE = 90.0
TLS_WAIT_POLL = 3.0  # seconds between looks at the pods while a step waits for them


def _seconds(env: str, default: float) -> dt.timedelta:
    return dt.timedelta(seconds=float(os.environ.get(env, default)))


def tls_patience() -> dt.timedelta:
    return _seconds("DISTCACHE_OPERATOR_TLS_LOAD_TIMEOUT_SECONDS", TLS_PATIENCE)


def tls_settle() -> dt.timedelta:
    return _seconds("DISTCACHE_OPERATOR_TLS_SETTLE_SECONDS", TLS_SETTLE)


@dataclass(frozen=True)
class TLSState:
    ca_pem: str | None = None  # the bundle the pods are verified with; None: TLS off
    invalid: str | None = None  # a CA the operator cannot use (Degraded TLSInvalid)
    expiry: dict[str, str] = field(default_factory=dict)  # for status.tls
    not_loaded: str | None = None  # a CA move step waited past the patience (TLSNotLoaded)
    poll: float | None = None  # a CA move step waits: look again this soon


async def ensure_tls(api: Api, dc: DistCache, mem: DistCacheMemory) -> TLSState:
    """The CA bundle the nodes' certificates chain to, with the CA and certificate issued
    when the operator owns them and they are missing, and the Certificate applied with
    cert-manager. Raises Problem when there is nothing the pods could be verified with."""
    if not dc.spec.tls_enabled:
        return TLSState()
    invalid = None
    try:
        if dc.spec.tls_issuer is not None:
            waiting = await ensure_certificate(api, dc)
            if waiting is not None:
                raise Problem(*waiting)
        ca_pem = await _material(api, dc, mem)
    except NotFound as exc:
        raise Problem("SecretMissing", f"{exc}: spec.tls.secretName must name a Secret with "
                      "tls.crt, tls.key and ca.crt (or leave it empty to let the operator "
                      "issue certificates)") from None
    except tls.TLSMaterialError as exc:
        # A CA the operator cannot use (malformed, an unsupported key): the pods keep what
        # they mount, and membership goes on with it; Degraded says what to fix.
        invalid = await _tls_invalid(api, dc, mem, exc)
        mounted = await _mounted_ca(api, dc)
        if mounted is None:
            raise Problem("TLSInvalid", invalid) from None
        ca_pem = mounted
    return TLSState(ca_pem, invalid, await _expiry(api, dc))


async def rotate_ca(api: Api, dc: DistCache, mem: DistCacheMemory, state: TLSState,
                    loaded: tls.Loaded) -> TLSState:
    """Renewal and the steps of a move to a new CA of the operator's own certificate
    (tls.plan), on what each pod of the StatefulSet reports it has loaded (`loaded`).
    Returns `state` with not_loaded (the Degraded message while a step has waited past
    tls_patience()) and poll (the delay until the next look while one waits). Nothing to do
    for the user's or cert-manager's certificates, or a CA already found unusable."""
    if not dc.spec.tls_enabled or dc.spec.tls_secret_name or dc.spec.tls_issuer is not None \
            or state.invalid is not None:
        return state
    try:
        return await _rotate(api, dc, mem, state, loaded)
    except tls.TLSMaterialError as exc:
        return replace(state, invalid=await _tls_invalid(api, dc, mem, exc))


async def _rotate(api: Api, dc: DistCache, mem: DistCacheMemory, state: TLSState,
                  loaded: tls.Loaded) -> TLSState:
    try:
        ca_crt = await api.read_secret_key(dc.namespace, dc.ca_secret, "ca.crt")
        ca_key = await api.read_secret_key(dc.namespace, dc.ca_secret, "ca.key")
    except NotFound:
        return state  # deleted since ensure_tls: issued again at the next step
    current = await api.read_secret(dc.namespace, dc.tls_secret)
    if current is None or "tls.crt" not in current[0]:
        return state
    step = tls.plan(dc, current[0], current[1], ca_crt.encode(), ca_key.encode(),
                    tls.renew_before(dc.spec.tls_certificate_lifetime), loaded,
                    tls_patience(), tls_settle())
    if step.secret is not None:
        await api.replace_secret(step.secret)
        await api.event(dc, step.reason, step.message)
        mem.tls_cert = None  # said by the event: no CertificateChanged for it
        mem.tls_event = None
        return replace(state, poll=TLS_WAIT_POLL)
    if not step.waiting:
        mem.tls_event, mem.tls_waiting = None, ()
        return state
    what = current[1].get(tls.STEP_ANNOTATION, "the last step")
    since = current[1].get(tls.SINCE_ANNOTATION, "?")
    if not step.overdue:
        if step.waiting != mem.tls_waiting:
            mem.tls_waiting = step.waiting
            log.info("%s/%s: CA move (%s since %s) waits for %s", dc.namespace, dc.name,
                     what, since, "; ".join(step.waiting))
        return replace(state, poll=TLS_WAIT_POLL)
    message = (f"moving to a new CA: Secret {dc.tls_secret} at step {what} since {since}, "
               f"not loaded after {tls_patience().total_seconds():.0f} s by "
               f"{'; '.join(step.waiting)} (waiting for them: a pod not running, or whose "
               "kubelet does not update its Secret volume, keeps the next step back)")
    await _tls_event(api, dc, mem, "TLSNotLoaded", message)
    return replace(state, not_loaded=message, poll=TLS_WAIT_POLL)


async def _material(api: Api, dc: DistCache, mem: DistCacheMemory) -> str:
    """The CA bundle the pods mount, the operator's CA and certificate issued first when it
    owns them and they are missing (and a new CA when the old one is two thirds through)."""
    if not dc.spec.tls_secret_name and dc.spec.tls_issuer is None:
        await _issue(api, dc)
    crt = await api.read_secret_key(dc.namespace, dc.tls_secret, "tls.crt")
    await api.read_secret_key(dc.namespace, dc.tls_secret, "tls.key")
    ca_text = await api.read_secret_key(dc.namespace, dc.tls_secret, "ca.crt")
    if mem.tls_cert is not None and mem.tls_cert != crt:
        await _tls_changed(api, dc, mem, ca_text)
    mem.tls_cert = crt
    return ca_text


async def _read_ca(api: Api, dc: DistCache) -> tuple[str, str]:
    return (await api.read_secret_key(dc.namespace, dc.ca_secret, "ca.crt"),
            await api.read_secret_key(dc.namespace, dc.ca_secret, "ca.key"))


async def _issue(api: Api, dc: DistCache) -> None:
    try:
        ca_crt, ca_key = await _read_ca(api, dc)
    except NotFound:
        if await api.create_secret_if_missing(tls.issue_ca(dc)):
            await api.event(dc, "SecretCreated", f"issued CA {dc.ca_secret}")
        ca_crt, ca_key = await _read_ca(api, dc)
    tls.check_ca(dc, ca_crt.encode(), ca_key.encode())
    current = await api.read_secret(dc.namespace, dc.tls_secret)
    moving = current is not None and len(tls.split_pem(current[0].get("ca.crt", b""))) > 1
    if tls.ca_due(dc, ca_crt.encode()) and not moving:
        # Two thirds through the CA's life: a new CA, which starts the three-step move
        # (rotate_ca): both trusted, a certificate from the new one, the old dropped.
        # Nothing is due again until the new CA is two thirds through in turn.
        expiring = tls.not_after(ca_crt.encode(), f"Secret {dc.ca_secret}")
        await api.replace_secret(tls.issue_ca(dc))
        await api.event(dc, "CARenewed", f"{dc.ca_secret}: a new CA (the old one expires "
                        f"{expiring:%Y-%m-%dT%H:%M:%SZ}); the pods move to it in three "
                        "steps without a restart")
        ca_crt, ca_key = await _read_ca(api, dc)
    if current is None or "tls.crt" not in current[0]:
        cert = tls.issue_node_cert(dc, ca_crt.encode(), ca_key.encode())
        if await api.create_secret_if_missing(cert):
            await api.event(dc, "SecretCreated", f"issued certificate {dc.tls_secret}")


async def _mounted_ca(api: Api, dc: DistCache) -> str | None:
    """The CA bundle the pods mount now (to keep talking to them while the operator's own
    TLS work is stuck on a bad CA); None when there is none."""
    current = await api.read_secret(dc.namespace, dc.tls_secret)
    bundle = (current[0].get("ca.crt") if current else None) or b""
    try:
        return bundle.decode() if tls.split_pem(bundle) else None
    except ValueError:
        return None


async def _expiry(api: Api, dc: DistCache) -> dict[str, str]:
    """When the mounted CA bundle and certificate expire: for status.tls and the
    distcache_operator_tls_not_after_timestamp_seconds metric (an alert watches it)."""
    current = await api.read_secret(dc.namespace, dc.tls_secret)
    out: dict[str, str] = {}
    if current is None:
        return out
    for material, key, field_name in (("ca", "ca.crt", "caNotAfter"),
                                      ("certificate", "tls.crt", "certificateNotAfter")):
        try:
            when = tls.not_after(current[0].get(key, b""), f"{dc.tls_secret} {key}")
        except tls.TLSMaterialError:
            continue
        out[field_name] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        metrics.TLS_NOT_AFTER.labels(dc.namespace, dc.name, material).set(when.timestamp())
    return out


async def _tls_invalid(api: Api, dc: DistCache, mem: DistCacheMemory,
                       exc: tls.TLSMaterialError) -> str:
    """The Degraded message for a CA the operator cannot use, its Event said once."""
    message = f"{exc}: replace it with an RSA or EC CA (PEM)"
    await _tls_event(api, dc, mem, "TLSInvalid", message)
    return message


async def _tls_event(api: Api, dc: DistCache, mem: DistCacheMemory, reason: str,
                     message: str) -> None:
    """A TLS Warning Event (and log line), once per message."""
    if mem.tls_event != message:
        mem.tls_event = message
        await api.event(dc, reason, message, warning=True)
        log.warning("%s/%s: %s", dc.namespace, dc.name, message)


async def _tls_changed(api: Api, dc: DistCache, mem: DistCacheMemory, ca_text: str) -> None:
    """A new certificate in the Secret: the pods take it in without a restart. Warn when the
    CA bundle no longer holds the CA the previous certificate came from (a user's Secret
    swapped in one go): until kubelet has updated every pod, peers on different versions
    refuse each other."""
    before = mem.secret[1] if mem.secret else None
    if before is None:
        return
    try:
        old = {x.fingerprint(hashes.SHA256()) for x in tls.split_pem(before.encode())}
        new = {x.fingerprint(hashes.SHA256()) for x in tls.split_pem(ca_text.encode())}
    except ValueError:
        return
    if old and not old & new:
        await api.event(
            dc, "CAReplaced", f"Secret {dc.tls_secret}: ca.crt no longer holds the CA the "
            "pods trusted; until kubelet has updated every pod (about a minute) peers may "
            "refuse each other. Publish old and new CA together in ca.crt first, then the "
            "new certificate, then drop the old CA (operator/README.md)", warning=True)
    else:
        await api.event(dc, "CertificateChanged", f"Secret {dc.tls_secret} holds a new "
                        "certificate: the pods load it without a restart")
