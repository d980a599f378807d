"""One reconcile step of a DistCache: observe, decide (steps.decide), act once, write status.

Called from kopf's create/update/resume handlers and from a timer. A step is short: it never
waits for a migration; it notes what is pending in status and comes back (the returned
delay). Every step is idempotent and re-entrant: it reads the ring ConfigMap, the
StatefulSet and the members' status each time, so an operator killed at any point resumes
where the ring says.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import hashes

from distcache_node.cluster.coordinator import Coordinator, RingConflict
from distcache_node.cluster.peers import PeerClient, make_session
from distcache_node.cluster.ring import Member, RingDoc, RingError
from distcache_operator import builders, metrics, status, tls
from distcache_operator.k8s import Api, ConfigMapRingStore, NotFound
from distcache_operator.kubeapi import ApiError, operator_namespace
from distcache_operator.model import DistCache, SpecError
from distcache_operator.steps import Action, Observed, decide, join_deadline, refusal_reason

log = logging.getLogger("distcache.operator")
APPLY_EVERY = 30.0  # seconds between re-applies of the owned objects from the timer
STATUS_REFRESH = 60.0  # seconds between status writes when only live counts changed
CONFIRM = 0.3  # before removing members: settled twice this far apart
PEER_TIMEOUT = 3.0
PROBLEM_DELAY = 10.0  # seconds between looks at a DistCache with a user's mistake
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


@dataclass
class _Cache:
    """Per-DistCache memory that only saves work (lost on restart, nothing depends on it)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    secret: tuple[str, str | None] | None = None  # cluster secret, CA: the session's
    session: aiohttp.ClientSession | None = None
    applied_at: float = 0.0
    status_at: float = -STATUS_REFRESH  # when status was last written (live counts)
    tls_cert: str | None = None  # the certificate last seen in the TLS Secret
    notes: list[str] = field(default_factory=list)  # for the Available condition
    monitor_event: str | None = None
    due: float = 0.0
    last_event: tuple[str, str] | None = None
    tls_event: str | None = None  # the last TLSNotLoaded Event's message
    tls_waiting: tuple[str, ...] = ()  # the pods a CA move step waited for, last logged
    warned: set[str] = field(default_factory=set)  # one-off warnings already given


_caches: dict[str, _Cache] = {}
_uids: dict[tuple[str, str], str] = {}  # (namespace, name) -> uid, for poke()


def cache_for(uid: str) -> _Cache:
    return _caches.setdefault(uid, _Cache())


def poke(namespace: str, name: str) -> None:
    """Something the DistCache owns changed (a pod): step it at the next timer tick."""
    uid = _uids.get((namespace, name))
    if uid is not None and uid in _caches:
        _caches[uid].due = 0.0


async def forget(uid: str, namespace: str, name: str) -> None:
    """A DistCache is gone: its memory, its session and its metric series with it."""
    c = _caches.pop(uid, None)
    if c is not None and c.session is not None:
        await c.session.close()
    if _uids.get((namespace, name)) == uid:
        del _uids[(namespace, name)]
    metrics.forget(namespace, name)


def _user_facing(status: Mapping[str, Any]) -> dict[str, Any]:
    """Status less what changes on every look without anyone having to act: the members'
    live key and byte counts. A step writes status when the rest changed, and refreshes
    those counts every STATUS_REFRESH seconds (an idle DistCache: one PATCH a minute, not
    one per step)."""
    def bare(value: Any) -> Any:  # a merge patch drops null fields: compare without them
        if isinstance(value, Mapping):
            return {k: bare(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [bare(v) for v in value]
        return value

    out = bare(status)
    out["members"] = [{k: v for k, v in m.items() if k not in ("keys", "bytes")}
                      for m in out.get("members") or []]
    return dict(out)


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


class Reconciler:
    def __init__(self, api: Api) -> None:
        self.api = api

    async def run(self, body: Mapping[str, Any], force_apply: bool = False,
                  if_due: bool = False) -> float:
        """One step for the DistCache `body`; returns seconds until the next is useful.
        Never raises for a user's mistake: those become a Degraded condition and an Event."""
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        c = cache_for(uid)
        _uids[(str(meta.get("namespace")), str(meta.get("name")))] = uid
        loop = asyncio.get_running_loop()
        if if_due and loop.time() < c.due:
            return c.due - loop.time()
        if c.lock.locked() and if_due:
            return 1.0
        async with c.lock:
            # The body kopf handed us may be old by now (a step can take seconds).
            fresh = await self.api.get_distcache(str(meta.get("namespace")), str(meta.get("name")))
            if fresh is None or fresh["metadata"].get("uid") != uid \
                    or fresh["metadata"].get("deletionTimestamp"):
                return 60.0
            started = loop.time()
            try:
                delay = await self._step(fresh, c, force_apply)
                metrics.STEPS.labels("problem" if delay == PROBLEM_DELAY else "ok").inc()
            except (TimeoutError, ApiError, aiohttp.ClientError, RingConflict) as exc:
                log.warning("%s/%s: step failed, retrying: %s", meta.get("namespace"),
                            meta.get("name"), exc)
                metrics.STEPS.labels("retry").inc()
                delay = 2.0
            metrics.STEP_SECONDS.observe(loop.time() - started)
            c.due = loop.time() + delay
            return delay

    # -- the step ----------------------------------------------------------------------------
    async def _step(self, body: Mapping[str, Any], c: _Cache, force_apply: bool) -> float:
        previous = body.get("status") or {}
        try:
            dc = DistCache.from_body(body)
        except SpecError as exc:
            return await self._invalid(body, previous, str(exc))
        # Secrets first: the pods need them, the operator needs the cluster secret. A peer
        # Secret deleted under running pods comes back with the value they hold (this
        # operator's memory), never a new one: every pod would refuse the operator and new
        # pods would refuse the old ones.
        known = c.secret[0] if c.secret else None
        peer_lost = await self.api.read_secret(dc.namespace, dc.cluster_secret) is None
        if peer_lost and known is None and (await self.api.statefulset_replicas(dc) or 0) > 0:
            pod = dc.member_id(0)
            return await self._problem(
                dc, previous, c, "PeerSecretLost",
                f"Secret {dc.cluster_secret} is gone while the pods run with its value, and "
                "this operator (restarted since) does not know it; a new one would cut the "
                "pods off from each other. Restore it: kubectl -n "
                f"{dc.namespace} create secret generic {dc.cluster_secret} "
                f"--from-literal=cluster-secret=\"$(kubectl -n {dc.namespace} exec {pod} -- "
                "printenv DISTCACHE_CLUSTER_SECRET)\"")
        for generated in builders.build_secrets(dc, known):
            if await self.api.create_secret_if_missing(generated):
                name = generated["metadata"]["name"]
                if name == dc.cluster_secret and known is not None:
                    await self.api.event(dc, "PeerSecretRestored", f"Secret {name} was "
                                         "deleted: re-created with the value the pods hold",
                                         warning=True)
                else:
                    await self.api.event(dc, "SecretCreated", f"generated Secret {name}")
        try:
            ref = dc.api_key_secret
            await self.api.read_secret_key(dc.namespace, ref.name, ref.key)
            secret = await self.api.read_secret_key(dc.namespace, dc.cluster_secret,
                                                    "cluster-secret")
        except NotFound as exc:
            return await self._problem(dc, previous, c, "SecretMissing",
                                       f"{exc}: create it (spec.auth.apiKeySecretRef) or "
                                       "remove the reference to let the operator generate one")
        ca_pem: str | None = None
        tls_invalid: str | None = None
        tls_status: dict[str, str] = {}
        if dc.spec.tls_enabled:
            try:
                if dc.spec.tls_issuer is not None:
                    waiting = await self._cert_manager(dc)
                    if waiting is not None:
                        return await self._problem(dc, previous, c, *waiting)
                ca_pem = await self._tls(dc, c)
            except NotFound as exc:
                return await self._problem(dc, previous, c, "SecretMissing",
                                           f"{exc}: spec.tls.secretName must name a Secret "
                                           "with tls.crt, tls.key and ca.crt (or leave it "
                                           "empty to let the operator issue certificates)")
            except tls.TLSMaterialError as exc:
                # A CA the operator cannot use (malformed, an unsupported key): the pods keep
                # what they mount, and membership goes on with it; Degraded says what to fix.
                tls_invalid = await self._tls_invalid(dc, c, exc)
                ca_pem = await self._mounted_ca(dc)
                if ca_pem is None:
                    return await self._problem(dc, previous, c, "TLSInvalid", tls_invalid)
            tls_status = await self._tls_expiry(dc)
        if c.secret != (secret, ca_pem):
            if c.session is not None:
                await c.session.close()
            ssl_ctx = ssl.create_default_context(cadata=ca_pem) if ca_pem else None
            c.secret, c.session = (secret, ca_pem), make_session(secret, ssl_ctx)
        store = ConfigMapRingStore(self.api, dc)
        try:
            ring = await store.load_or_none()
        except (RingError, ValueError) as exc:
            return await self._problem(dc, previous, c, "RingInvalid",
                                       f"ring ConfigMap {dc.ring_configmap} is unusable: {exc}")
        sts = await self.api.statefulset_replicas(dc)
        if ring is None:
            # No ConfigMap: a new cache, or one deleted by hand under running pods. Those
            # still hold the ring (members never drained among them): decide starts the new
            # one from the newest they hold, above every version they report.
            pods_now = [Member(dc.member_id(i), dc.member_url(i)) for i in range(sts or 0)]
            probe = Coordinator(store, lambda m: self._client(c, m))
            answers = await probe.statuses(pods_now)
            held = await probe.rings([m for m in pods_now if answers.get(m.id) is not None])
            action = decide(dc, Observed(None, sts, answers, held=held))
            if action.doc is None:  # a pod runs a ring not read yet: never create one below
                log.warning("%s/%s: %s", dc.namespace, dc.name, action.reason)
                return action.delay
            await store.save(action.doc, None)
            if action.event is not None:
                await self.api.event(dc, *action.event, warning=True)
                await probe.push(action.doc, action.doc.members)
            else:
                await self.api.event(dc, "RingCreated", f"ring v{action.doc.version} with "
                                     f"{len(action.doc.members)} member(s)")
            ring = action.doc
            force_apply = True
        loop = asyncio.get_running_loop()
        if force_apply or sts is None or loop.time() - c.applied_at > APPLY_EVERY:
            top = max((dc.ordinal(m.id) + 1 for m in ring.members), default=0)
            await self._apply_owned(dc, top if sts is None else sts)
            c.applied_at = loop.time()
            sts = top if sts is None else sts

        coordinator = Coordinator(store, lambda m: self._client(c, m))
        ids = {m.id: m for m in ring.members}
        for i in range(sts or 0):
            ids.setdefault(dc.member_id(i), Member(dc.member_id(i), dc.member_url(i),
                                                   "joining"))
        statuses = await coordinator.statuses(list(ids.values()))
        tls_problem, tls_wait = None, None
        if dc.spec.tls_enabled and not dc.spec.tls_secret_name and dc.spec.tls_issuer is None \
                and tls_invalid is None:
            try:
                tls_problem, tls_wait = await self._tls_step(
                    dc, c, {dc.member_id(i): statuses.get(dc.member_id(i))
                            for i in range(sts or 0)})
            except tls.TLSMaterialError as exc:
                tls_invalid = await self._tls_invalid(dc, c, exc)
        mig = previous.get("migration") or {}
        pods, failing = await self.api.pods(dc)
        ahead = [ids[m] for m, s in statuses.items()  # their ring is newer than the ConfigMap
                 if s is not None and s["ring_version"] > ring.version]
        obs = Observed(ring, sts, statuses, transition_since=_parse_time(mig.get("started")),
                       now=dt.datetime.now(dt.UTC).timestamp(), ready=pods,
                       unreachable_since={m["id"]: t for m in previous.get("members") or []
                                          if (t := _parse_time(m.get("unreachableSince")))
                                          is not None},
                       held=await coordinator.rings(ahead) if ahead else {},
                       join_deadline=join_deadline(), last_error=mig.get("lastError"))
        action = decide(dc, obs)
        delay = await self._act(dc, action, ring, store, coordinator, c, sts,
                                since=obs.transition_since)
        if action.event is not None:
            await self.api.event(dc, *action.event, warning=True)
        if tls_wait is not None:
            delay = min(delay, tls_wait)
        if action.kind in ("publish", "remove", "drop_dead", "create_ring") and action.doc:
            obs = Observed(action.doc, sts, statuses, obs.transition_since, obs.now)
        elif action.kind == "scale" and action.replicas is not None:
            obs = Observed(ring, action.replicas, statuses, obs.transition_since, obs.now)
        computed = status.compute(dc, obs, action, pods, previous, pod_problems=failing,
                                  notes=c.notes, tls_problem=tls_problem,
                                  tls_invalid=tls_invalid)
        if tls_status or tls_invalid:
            computed["tls"] = {**tls_status, "error": tls_invalid or ""}
        if failing and c.last_event != ("PodsFailing", str(sorted(failing.items()))):
            c.last_event = ("PodsFailing", str(sorted(failing.items())))
            await self.api.event(dc, "PodsFailing", computed["conditions"][2]["message"],
                                 warning=True)
        if _user_facing(computed) != _user_facing(previous) \
                or loop.time() - c.status_at > STATUS_REFRESH:
            await self.api.patch_status(dc, computed)
            c.status_at = loop.time()
        if action.kind not in ("wait", "idle"):
            metrics.ACTIONS.labels(action.kind).inc()
        metrics.KEYS_REMAINING.labels(dc.namespace, dc.name).set(
            computed["migration"]["keysRemaining"])
        metrics.RING_VERSION.labels(dc.namespace, dc.name).set(computed["ringVersion"])
        return delay

    async def _tls(self, dc: DistCache, c: _Cache) -> str:
        """The CA bundle the nodes' certificates chain to. Issues CA and certificate when the
        operator owns them and they are missing (renewal and a move to a new CA: _tls_step,
        once the pods have been asked what they hold). The pods are never restarted for
        it: they load the updated Secret's files themselves."""
        if not dc.spec.tls_secret_name and dc.spec.tls_issuer is None:
            try:
                ca_crt = await self.api.read_secret_key(dc.namespace, dc.ca_secret, "ca.crt")
                ca_key = await self.api.read_secret_key(dc.namespace, dc.ca_secret, "ca.key")
            except NotFound:
                ca = tls.issue_ca(dc)
                if await self.api.create_secret_if_missing(ca):
                    await self.api.event(dc, "SecretCreated", f"issued CA {dc.ca_secret}")
                ca_crt = await self.api.read_secret_key(dc.namespace, dc.ca_secret, "ca.crt")
                ca_key = await self.api.read_secret_key(dc.namespace, dc.ca_secret, "ca.key")
            tls.check_ca(dc, ca_crt.encode(), ca_key.encode())
            current = await self.api.read_secret(dc.namespace, dc.tls_secret)
            moving = current is not None and len(tls.split_pem(current[0].get("ca.crt", b""))) > 1
            if tls.ca_due(dc, ca_crt.encode()) and not moving:
                # Two thirds through the CA's life: a new CA, which starts the three-step move
                # (_tls_step): both trusted, a certificate from the new one, the old dropped.
                # Nothing is due again until the new CA is two thirds through in turn.
                expiring = tls.not_after(ca_crt.encode(), f"Secret {dc.ca_secret}")
                ca = tls.issue_ca(dc)
                await self.api.replace_secret(ca)
                await self.api.event(dc, "CARenewed", f"{dc.ca_secret}: a new CA (the old one "
                                     f"expires {expiring:%Y-%m-%dT%H:%M:%SZ}); the pods move "
                                     "to it in three steps without a restart")
                ca_crt = await self.api.read_secret_key(dc.namespace, dc.ca_secret, "ca.crt")
                ca_key = await self.api.read_secret_key(dc.namespace, dc.ca_secret, "ca.key")
            if current is None or "tls.crt" not in current[0]:
                cert = tls.issue_node_cert(dc, ca_crt.encode(), ca_key.encode())
                if await self.api.create_secret_if_missing(cert):
                    await self.api.event(dc, "SecretCreated",
                                         f"issued certificate {dc.tls_secret}")
        crt = await self.api.read_secret_key(dc.namespace, dc.tls_secret, "tls.crt")
        await self.api.read_secret_key(dc.namespace, dc.tls_secret, "tls.key")
        ca_text = await self.api.read_secret_key(dc.namespace, dc.tls_secret, "ca.crt")
        if c.tls_cert is not None and c.tls_cert != crt:
            await self._tls_changed(dc, c, crt, ca_text)
        c.tls_cert = crt
        return ca_text

    async def _tls_step(self, dc: DistCache, c: _Cache, loaded: tls.Loaded
                        ) -> tuple[str | None, float | None]:
        """Renewal and the steps of a move to a new CA of the operator's own certificate
        (tls.plan), on what each pod of the StatefulSet reports it has loaded (`loaded`).
        Returns the Degraded message while a step has waited past tls_patience() (None
        otherwise) and the delay until the next look while one waits (None: none does)."""
        try:
            ca_crt = await self.api.read_secret_key(dc.namespace, dc.ca_secret, "ca.crt")
            ca_key = await self.api.read_secret_key(dc.namespace, dc.ca_secret, "ca.key")
        except NotFound:
            return None, None  # deleted since _tls: issued again at the next step
        current = await self.api.read_secret(dc.namespace, dc.tls_secret)
        if current is None or "tls.crt" not in current[0]:
            return None, None
        step = tls.plan(dc, current[0], current[1], ca_crt.encode(), ca_key.encode(),
                        tls.renew_before(dc.spec.tls_certificate_lifetime), loaded,
                        tls_patience(), tls_settle())
        if step.secret is not None:
            await self.api.replace_secret(step.secret)
            await self.api.event(dc, step.reason, step.message)
            c.tls_cert = None  # said by the event: no CertificateChanged for it
            c.tls_event = None
            return None, TLS_WAIT_POLL
        if not step.waiting:
            c.tls_event, c.tls_waiting = None, ()
            return None, None
        what = current[1].get(tls.STEP_ANNOTATION, "the last step")
        since = current[1].get(tls.SINCE_ANNOTATION, "?")
        if not step.overdue:
            if step.waiting != c.tls_waiting:
                c.tls_waiting = step.waiting
                log.info("%s/%s: CA move (%s since %s) waits for %s", dc.namespace, dc.name,
                         what, since, "; ".join(step.waiting))
            return None, TLS_WAIT_POLL
        message = (f"moving to a new CA: Secret {dc.tls_secret} at step {what} since {since}, "
                   f"not loaded after {tls_patience().total_seconds():.0f} s by "
                   f"{'; '.join(step.waiting)} (waiting for them: a pod not running, or whose "
                   "kubelet does not update its Secret volume, keeps the next step back)")
        await self._tls_event(dc, c, "TLSNotLoaded", message)
        return message, TLS_WAIT_POLL

    async def _mounted_ca(self, dc: DistCache) -> str | None:
        """The CA bundle the pods mount now (to keep talking to them while the operator's
        own TLS work is stuck on a bad CA); None when there is none."""
        current = await self.api.read_secret(dc.namespace, dc.tls_secret)
        bundle = (current[0].get("ca.crt") if current else None) or b""
        try:
            return bundle.decode() if tls.split_pem(bundle) else None
        except ValueError:
            return None

    async def _tls_expiry(self, dc: DistCache) -> dict[str, str]:
        """When the mounted CA bundle and certificate expire: for status.tls and the
        distcache_operator_tls_not_after_timestamp_seconds metric (an alert watches it)."""
        current = await self.api.read_secret(dc.namespace, dc.tls_secret)
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
            metrics.TLS_NOT_AFTER.labels(dc.namespace, dc.name, material).set(
                when.timestamp())
        return out

    async def _tls_invalid(self, dc: DistCache, c: _Cache, exc: tls.TLSMaterialError) -> str:
        """The Degraded message for a CA the operator cannot use, its Event said once."""
        message = f"{exc}: replace it with an RSA or EC CA (PEM)"
        await self._tls_event(dc, c, "TLSInvalid", message)
        return message

    async def _tls_event(self, dc: DistCache, c: _Cache, reason: str, message: str) -> None:
        """A TLS Warning Event (and log line), once per message."""
        if c.tls_event != message:
            c.tls_event = message
            await self.api.event(dc, reason, message, warning=True)
            log.warning("%s/%s: %s", dc.namespace, dc.name, message)

    async def _cert_manager(self, dc: DistCache) -> tuple[str, str] | None:
        """spec.tls.issuerRef: the Certificate applied; (reason, message) while its Secret is
        not there (or cert-manager is not installed), None once the pods can mount it."""
        if not await self.api.served(builders.CERT_MANAGER_API, "certificates"):
            return ("CertManagerMissing", "spec.tls.issuerRef needs cert-manager, but this "
                    f"cluster does not serve {builders.CERT_MANAGER_API} Certificates: install "
                    "cert-manager, or use spec.tls.secretName (or neither, and the operator "
                    "issues the certificates)")
        cert = builders.build_certificate(dc)
        await self.api.apply(cert)
        current = await self.api.read_secret(dc.namespace, dc.tls_secret)
        missing = [key for key in ("tls.crt", "tls.key", "ca.crt")
                   if current is None or not current[0].get(key)]
        if not missing:
            return None
        got = await self.api.get(cert) or {}
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

    async def _monitoring(self, dc: DistCache, c: _Cache) -> None:
        """The ServiceMonitor when asked for and its API is served; removed when no longer
        asked for. An unserved API is not a fault of the cache: an Event once and a note in
        the Available condition (c.notes), and it is created once the CRD appears."""
        served = await self.api.served(builders.MONITORING_API, "servicemonitors")
        monitor = builders.build_service_monitor(dc)
        c.notes = []
        try:
            if dc.spec.service_monitor:
                if served:
                    await self.api.apply(monitor)
                    return
                note = (f"no ServiceMonitor: this cluster does not serve "
                        f"{builders.MONITORING_API} ServiceMonitors (install the Prometheus "
                        "Operator's CRDs; the operator creates it then)")
            elif served:
                await self.api.delete(monitor)
                return
            else:
                return
        except ApiError as exc:
            if exc.status != 403:
                raise
            # The operator's RBAC predates ServiceMonitors (an image upgraded without its
            # chart): the cache itself is not affected.
            if not dc.spec.service_monitor:
                return
            note = (f"no ServiceMonitor: the operator may not manage ServiceMonitors "
                    f"({exc.message}): upgrade its RBAC (chart or manifests/operator)")
        c.notes = [note]
        if c.monitor_event != note:
            c.monitor_event = note
            await self.api.event(dc, "ServiceMonitorUnavailable", note, warning=True)

    async def _tls_changed(self, dc: DistCache, c: _Cache, crt: str, ca_text: str) -> None:
        """A new certificate in the Secret: the pods take it in without a restart. Warn when
        the CA bundle no longer holds the CA the previous certificate came from (a user's
        Secret swapped in one go): until kubelet has updated every pod, peers on different
        versions refuse each other."""
        before = c.secret[1] if c.secret else None
        if before is None:
            return
        try:
            old = {x.fingerprint(hashes.SHA256()) for x in tls.split_pem(before.encode())}
            new = {x.fingerprint(hashes.SHA256()) for x in tls.split_pem(ca_text.encode())}
        except ValueError:
            return
        if old and not old & new:
            await self.api.event(
                dc, "CAReplaced", f"Secret {dc.tls_secret}: ca.crt no longer holds the CA the "
                "pods trusted; until kubelet has updated every pod (about a minute) peers may "
                "refuse each other. Publish old and new CA together in ca.crt first, then the "
                "new certificate, then drop the old CA (operator/README.md)", warning=True)
        else:
            await self.api.event(dc, "CertificateChanged",
                                 f"Secret {dc.tls_secret} holds a new certificate: the pods "
                                 "load it without a restart")

    def _client(self, c: _Cache, member: Member) -> PeerClient:
        assert c.session is not None
        return PeerClient(member.id, member.url, c.session, timeout=PEER_TIMEOUT)

    async def _apply_owned(self, dc: DistCache, replicas: int) -> None:
        await self.api.apply(builders.build_headless_service(dc))
        await self.api.apply(builders.build_client_service(dc))
        if dc.spec.pdb_enabled:
            await self.api.apply(builders.build_pdb(dc))
            c = cache_for(dc.uid)
            if builders.pdb_max_unavailable(dc) == 0 and "pdb-r1" not in c.warned:
                c.warned.add("pdb-r1")
                await self.api.event(
                    dc, "EvictionsBlocked", "replicationFactor 1: each pod holds the only "
                    "copy of its keys, so the PodDisruptionBudget allows no eviction (a node "
                    "drain waits). Raise replicationFactor to 2 to let pods move without "
                    "losing keys", warning=True)
        else:
            await self.api.delete(builders.build_pdb(dc))
        policy = builders.build_network_policy(dc, operator_namespace())
        if dc.spec.network_policy_enabled:
            await self.api.apply(policy)
        else:
            await self.api.delete(policy)
        await self.api.apply(builders.build_statefulset(dc, replicas))
        await self._monitoring(dc, cache_for(dc.uid))

    async def _act(self, dc: DistCache, action: Action, ring: RingDoc,
                   store: ConfigMapRingStore, coordinator: Coordinator, c: _Cache,
                   sts_before: int | None, since: float | None = None) -> float:
        """Carry out `action`. `since`: when the ring change in flight began (status
        migration.started, so it survives an operator restart), for the drain duration."""
        kind = action.kind
        if kind != "refuse":
            c.last_event = None
        if kind == "scale":
            assert action.replicas is not None
            await self.api.scale_statefulset(dc, action.replicas)
            metrics.SCALES.labels("up" if action.replicas > (sts_before or 0)
                                  else "down").inc()
            await self.api.event(dc, "Scaling", action.reason)
            return 1.0
        if kind == "publish":
            assert action.doc is not None
            await coordinator.publish(action.doc, ring)
            await self.api.event(dc, "RingChanged", f"ring v{action.doc.version}: "
                                 f"{action.reason}")
            return 0.5
        if kind == "remove":
            assert action.doc is not None
            # Settled twice CONFIRM apart: a write in flight on the old ring that lands on a
            # leaving member re-wakes its migration, and the second look catches it.
            await asyncio.sleep(CONFIRM)
            if coordinator.pending(ring, await coordinator.statuses(ring.members)):
                return 0.5
            await store.save(action.doc, ring)
            await coordinator.push(action.doc, ring.members)  # the leaving ones hear it too
            await self.api.event(dc, "Drained", f"ring v{action.doc.version}: {action.reason}")
            metrics.DRAINS.inc(len(action.members))
            if since is not None:
                metrics.DRAIN_SECONDS.observe(
                    max(0.0, dt.datetime.now(dt.UTC).timestamp() - since))
            return 0.5
        if kind == "drop_dead":
            assert action.doc is not None
            await store.save(action.doc, ring)
            await coordinator.push(action.doc, ring.members)
            await self.api.event(dc, "MemberLost", action.reason, warning=True)
            return 0.5
        if kind == "wait":
            if action.push_to:
                await coordinator.push(ring, [m for m in ring.members
                                              if m.id in set(action.push_to)])
            return action.delay
        if kind == "refuse":
            key = ("refuse", action.reason)
            if c.last_event != key:
                c.last_event = key
                await self.api.event(dc, refusal_reason(action), action.reason, warning=True)
            return action.delay
        return action.delay

    async def _problem(self, dc: DistCache, previous: Mapping[str, Any], c: _Cache,
                       reason: str, message: str) -> float:
        if c.last_event != (reason, message):
            c.last_event = (reason, message)
            await self.api.event(dc, reason, message, warning=True)
            log.warning("%s/%s: %s", dc.namespace, dc.name, message)
        action = Action("invalid", message)
        obs = Observed(None, None, {})
        st = status.compute(dc, obs, action, {}, previous, error=message)
        st["conditions"] = [cd if cd["type"] != "Degraded" else {**cd, "reason": reason}
                            for cd in st["conditions"]]
        # Keep what the ring said (a problem does not erase the members), the generation last
        # acted on (this spec was not: observedGeneration stays), and whether the pods serve
        # (a step that could not act says nothing about that: no "Available=False,
        # NoMembers" over pods that answer).
        for key in ("replicas", "ringVersion", "members", "readyReplicas",
                    "observedGeneration", "tls"):
            if key in previous:
                st[key] = previous[key]
        served = {cd["type"]: cd for cd in previous.get("conditions") or []}
        if "Available" in served:
            st["conditions"] = [served["Available"] if cd["type"] == "Available" else cd
                                for cd in st["conditions"]]
        await self.api.patch_status(dc, st)
        return PROBLEM_DELAY

    async def _invalid(self, body: Mapping[str, Any], previous: Mapping[str, Any],
                       message: str) -> float:
        meta = body["metadata"]
        dc = DistCache(meta["name"], meta["namespace"], meta["uid"],
                       int(meta.get("generation") or 0), spec=_blank_spec())
        return await self._problem(dc, previous, cache_for(dc.uid), "InvalidSpec", message)


def _blank_spec() -> Any:
    from distcache_operator.model import DistCacheSpec

    return DistCacheSpec()
