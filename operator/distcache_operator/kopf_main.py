"""The kopf registrations: only decorators here; the work is in distcache_operator.handlers.

Every handler runs one re-entrant reconcile step (handlers.Reconciler.run); a timer keeps
stepping each DistCache while something is in flight (a step says when the next one is
useful). kopf keeps its own bookkeeping in annotations under distcache.io/ (the status
schema is structural, so nothing unknown can be written to status).

No finalizer: nothing has to happen before a DistCache goes (owner references delete what
it owns), and a finalizer would leave its namespace stuck Terminating whenever the operator
is removed first. kopf puts one on every object that has a timer, so the timer's handler is
registered without that requirement (`_without_finalizer`), and there is no delete handler.
A DistCache deleted while its timer runs: the next step finds it gone and stops.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import kopf

from distcache_operator import metrics
from distcache_operator.handlers import Reconciler, forget, poke
from distcache_operator.k8s import Api
from distcache_operator.kubeapi import Credentials, KubeApi
from distcache_operator.model import GROUP, PLURAL, VERSION

_state: dict[str, Reconciler] = {}


def reconciler() -> Reconciler:
    return _state["reconciler"]


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, logger: Any, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # our own Events say what happened
    settings.watching.server_timeout = 300
    settings.scanning.disabled = True  # no rights on CRDs/namespaces needed (10-rbac.yaml)
    # kopf logs every handler run; a 1 s timer would flood the log.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    _state["reconciler"] = Reconciler(Api(KubeApi(Credentials.load())))
    port = metrics.serve()
    logger.info("distcache-operator started (metrics on :%s/metrics)", port)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if "reconciler" in _state:
        await reconciler().api.kube.close()


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@kopf.on.resume(GROUP, VERSION, PLURAL)
async def reconcile(body: kopf.Body, **_: Any) -> None:
    await reconciler().run(body, force_apply=True)


@kopf.timer(GROUP, VERSION, PLURAL, interval=1.0)
async def tick(body: kopf.Body, **_: Any) -> None:
    await reconciler().run(body, if_due=True)


def _without_finalizer(fn: Any) -> None:
    """kopf registers every timer as needing a finalizer (kopf/on.py: requires_finalizer=
    True, no option; nolar/kopf#1074). Replace that registration with the same handler not
    needing one. kopf>=1.37,<2 is pinned; tests/unit/operator/test_operator_main.py fails if
    the registry no longer looks like this."""
    registry = kopf.get_default_registry()
    spawning = registry._spawning  # the one place kopf keeps timers (private, pinned)
    spawning._handlers[:] = [
        dataclasses.replace(h, requires_finalizer=False) if getattr(h, "fn", None) is fn else h
        for h in spawning._handlers]


_without_finalizer(tick)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def gone(event: kopf.RawEvent, **_: Any) -> None:
    """Without a finalizer kopf calls no delete handler for sure; the watch's DELETED event
    is where a DistCache's memory and metric series are dropped."""
    if event["type"] == "DELETED":
        meta = event["object"].get("metadata") or {}
        await forget(str(meta.get("uid")), str(meta.get("namespace")), str(meta.get("name")))


@kopf.on.event("", "v1", "pods", labels={"app.kubernetes.io/name": "distcache"})
def pod_event(meta: kopf.Meta, **_: Any) -> None:
    """A cache pod changed (deleted, restarted, ready): step its DistCache soon, so status
    follows within a second or two instead of at the next idle check."""
    name = meta.get("labels", {}).get("app.kubernetes.io/instance")
    if name:
        poke(str(meta.get("namespace")), str(name))
