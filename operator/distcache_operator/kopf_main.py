"""The kopf registrations: only decorators here; the work is in distcache_operator.handlers.

Each DistCache has a kopf daemon (`life`): one task that steps it (handlers.step), waits for
the delay the step returned or until it is woken, and watches the DistCache's own pods to be
woken by them (handlers.daemon). The create/update/resume handlers only wake it (a spec
change: the owned objects are applied again). What the operator remembers about a DistCache
lives in kopf's per-object `memo` (handlers.memory); the Kubernetes client in the
operator-wide memo, which kopf copies into each object's. kopf keeps its own bookkeeping in
annotations under distcache.io/ (the status schema is structural, so nothing unknown can be
written to status).

No finalizer: nothing has to happen before a DistCache goes (owner references delete what
it owns), and a finalizer would leave its namespace stuck Terminating whenever the operator
is removed first (defect 16). kopf puts one on every object that has a daemon or a timer, so
the daemon is registered without that requirement (`_without_finalizer`), and there is no
delete handler. kopf then does not stop the daemon of a deleted DistCache itself: the
DELETED watch event stops it (`gone`), and a daemon whose step finds the DistCache gone
ends on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any

import kopf

from distcache_operator import kubeapi, metrics
from distcache_operator.handlers import daemon, memory_of
from distcache_operator.k8s import Api
from distcache_operator.kubeapi import KubeApi
from distcache_operator.model import GROUP, PLURAL, VERSION

STOP_TIMEOUT = 30.0  # seconds a daemon has to finish its step when stopped, then cancelled


@kopf.on.login()
async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod, the ServiceAccount; else the kubeconfig as our client loads it (exec
    plugins run: kopf's own kubeconfig reader has none)."""
    in_pod = kopf.login_with_service_account(**kwargs)
    if in_pod is not None:
        return in_pod
    got = await kubeapi.login()
    return kopf.ConnectionInfo(
        server=got.server, ca_data=got.ca_data, insecure=got.insecure, token=got.token,
        scheme="Bearer" if got.token else None, certificate_data=got.certificate_data,
        private_key_data=got.private_key_data, expiration=got.expiration)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Any,
                  **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # our own Events say what happened
    settings.watching.server_timeout = 300
    settings.scanning.disabled = True  # no rights on CRDs/namespaces needed (10-rbac.yaml)
    # kopf logs every handler run; the wake-ups would flood the log.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    memo.api = Api(await KubeApi.connect())  # copied into every DistCache's memo
    port = metrics.serve()
    logger.info("distcache-operator started (metrics on :%s/metrics)", port)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    api = memo.get("api")
    if isinstance(api, Api):
        await api.kube.close()


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@kopf.on.resume(GROUP, VERSION, PLURAL)
async def spec_changed(memo: kopf.Memo, **_: Any) -> None:
    memory_of(memo).poke(force_apply=True)


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=STOP_TIMEOUT)
async def life(meta: kopf.Meta, memo: kopf.Memo, stopped: kopf.DaemonStopped,
               **_: Any) -> None:
    mem = memory_of(memo)

    async def stop_when_stopped() -> None:  # kopf's flag -> the loop's wake-up
        await stopped.wait()
        mem.stop()

    stopper = asyncio.create_task(stop_when_stopped())
    try:
        await daemon.run(memo.api, str(meta.get("namespace")), str(meta.get("name")),
                         str(meta.get("uid")), mem)
    finally:
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopper


def _without_finalizer(fn: Any) -> None:
    """kopf registers every daemon and timer as needing a finalizer (kopf/on.py:
    requires_finalizer=True, no option; nolar/kopf#1074). Replace that registration with
    the same handler not needing one. kopf>=1.37,<2 is pinned;
    tests/unit/operator/test_operator_main.py fails if the registry no longer looks like
    this."""
    registry = kopf.get_default_registry()
    spawning = registry._spawning  # the one place kopf keeps daemons (private, pinned)
    spawning._handlers[:] = [
        dataclasses.replace(h, requires_finalizer=False) if getattr(h, "fn", None) is fn else h
        for h in spawning._handlers]


_without_finalizer(life)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def gone(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Without a finalizer kopf neither calls a delete handler for sure nor stops the
    daemon of a deleted DistCache: its watch's DELETED event is where the daemon is told to
    end and the DistCache's metric series are dropped."""
    if event["type"] == "DELETED":
        memory_of(memo).stop()
        meta = event["object"].get("metadata") or {}
        metrics.forget(str(meta.get("namespace")), str(meta.get("name")))
