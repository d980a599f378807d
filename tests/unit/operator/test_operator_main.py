"""`python -m distcache_operator`: kopf's flags from the environment; kopf_main: the
registrations (no finalizer) and the daemon's life as kopf runs it."""

from __future__ import annotations

import asyncio

import kopf
from fakes_k8s import FakeApi

from conftest import body
from distcache_operator.__main__ import kopf_args


def test_defaults_standalone_every_namespace() -> None:
    assert kopf_args({}, []) == ["run", "--liveness=http://0.0.0.0:8080/healthz",
                                 "--standalone", "--all-namespaces", "-m",
                                 "distcache_operator.kopf_main"]


def test_peering_with_distinct_priorities_and_namespaces() -> None:
    a = kopf_args({"DISTCACHE_OPERATOR_PEERING": "distcache", "POD_NAME": "op-a",
                   "DISTCACHE_OPERATOR_NAMESPACES": "x, y"}, ["--verbose"])
    b = kopf_args({"DISTCACHE_OPERATOR_PEERING": "distcache", "POD_NAME": "op-b"}, [])
    assert "--peering=distcache" in a and "--standalone" not in a
    assert "--namespace=x" in a and "--namespace=y" in a and "--all-namespaces" not in a
    assert a[-1] == "--verbose"
    prio = [x for x in a if x.startswith("--priority=")]
    assert prio and prio != [x for x in b if x.startswith("--priority=")]


def test_no_handler_puts_a_finalizer_on_a_distcache() -> None:
    """A finalizer would leave a DistCache (and its namespace) Terminating whenever the
    operator is removed first; kopf adds one for any handler that requires it, daemons and
    timers always (kopf_main._without_finalizer undoes that for ours). The namespace
    deletion itself: e2e/test_operator_v2.py."""
    import kopf

    import distcache_operator.kopf_main  # noqa: F401 - registers the handlers

    registry = kopf.get_default_registry()
    handlers = [*registry._spawning.get_all_handlers(), *registry._changing.get_all_handlers()]
    daemons = [h for h in handlers if type(h).__name__ == "DaemonHandler"]
    assert [h.id for h in daemons] == ["life"], "one daemon per DistCache"
    assert not [h.id for h in handlers if h.requires_finalizer], "a handler needs a finalizer"


async def _living(api: object) -> tuple[asyncio.Task[None], object, kopf.Memo]:
    """kopf_main.life as kopf runs it: the DistCache's memo (a copy of the operator's, which
    holds the API client) and kopf's own stop flag."""
    from kopf._core.intents.stoppers import DaemonStopper

    from distcache_operator import kopf_main

    memo = kopf.Memo(api=api)
    stopper = DaemonStopper()
    meta = {"name": "cache", "namespace": "ns", "uid": "uid-1"}
    task = asyncio.create_task(kopf_main.life(meta=meta, memo=memo,
                                              stopped=stopper.async_waiter))
    await asyncio.sleep(0.1)
    return task, stopper, memo


async def test_the_daemon_ends_when_kopf_stops_it() -> None:
    from kopf._core.intents.stoppers import DaemonStoppingReason

    # An invalid spec: Degraded, and the next look in PROBLEM_DELAY (10 s).
    api = FakeApi(body({"replicas": "many"}))
    task, stopper, _ = await _living(api)
    assert not task.done() and api.reasons() == ["InvalidSpec"]
    stopper.set(DaemonStoppingReason.OPERATOR_EXITING)  # type: ignore[attr-defined]
    await asyncio.wait_for(task, 1.0)


async def test_the_daemon_ends_on_the_deleted_event_and_when_the_distcache_is_gone() -> None:
    from distcache_operator import kopf_main

    api = FakeApi(body({"replicas": "many"}))
    task, _, memo = await _living(api)
    await kopf_main.gone(event={"type": "DELETED", "object": api.body}, memo=memo)
    await asyncio.wait_for(task, 1.0)
    api.body = None  # no DELETED seen (a watch that reconnected): the next step finds it gone
    task, _, _ = await _living(api)
    await asyncio.wait_for(task, 1.0)


async def test_a_gone_distcaches_series_go_with_it_and_no_other() -> None:
    """Defect 16 (tail): the ring version, keys remaining and TLS expiry of a deleted
    DistCache leave the operator's /metrics when its daemon ends; another one's stay."""
    from prometheus_client import REGISTRY, generate_latest

    from distcache_operator import metrics

    for namespace, name in (("ns", "cache"), ("ns", "other")):
        metrics.RING_VERSION.labels(namespace, name).set(7)
        metrics.KEYS_REMAINING.labels(namespace, name).set(0)
        for material in metrics.TLS_MATERIALS:
            metrics.TLS_NOT_AFTER.labels(namespace, name, material).set(2e9)

    def series_of(name: str) -> list[str]:
        return [line for line in generate_latest(REGISTRY).decode().splitlines()
                if line.startswith("distcache_operator_") and f'name="{name}"' in line]

    assert len(series_of("cache")) == 4 and len(series_of("other")) == 4
    api = FakeApi(body({"replicas": "many"}))
    api.body = None  # ns/cache is gone: the daemon's step finds it so and ends
    task, _, _ = await _living(api)
    await asyncio.wait_for(task, 1.0)
    assert series_of("cache") == [] and len(series_of("other")) == 4
