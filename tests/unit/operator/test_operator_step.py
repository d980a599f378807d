"""handlers.step: the concerns in order, on one DistCache, against the in-memory stand-ins
(fakes_k8s) for the API layer, the ring ConfigMap and the pods' peer API. A new cache gets
its Secrets, ring, owned objects and status; once settled, a step writes nothing at all
(defect 12: no Secret POSTs, no re-apply inside APPLY_EVERY, no status PATCH for live
counts); what the user must fix is Degraded; a gone DistCache ends the daemon's steps."""

from __future__ import annotations

from typing import Any

import pytest
from fakes_k8s import FakeApi, FakePeer, MemoryRingStore, node_status

from conftest import body
from distcache_operator.handlers.memory import DistCacheMemory
from distcache_operator.handlers.report import PROBLEM_DELAY
from distcache_operator.handlers.step import BUG_DELAY, RETRY_DELAY, run_step
from distcache_operator.kubeapi import ApiError


class Cluster:
    """A DistCache's world: the API, the ring record, the nodes' answers."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.api = FakeApi(body(spec))
        self.store = MemoryRingStore()
        self.nodes: dict[str, dict[str, Any] | None] = {}
        self.mem = DistCacheMemory()

    async def step(self) -> float | None:
        return await run_step(
            self.api, "ns", "cache", "uid-1", self.mem,  # type: ignore[arg-type]
            store_for=lambda api, dc: self.store,
            peers_for=lambda mem: lambda m: FakePeer(self.nodes, m))

    def writes(self) -> tuple[int, int, int]:
        return len(self.api.calls), len(self.api.status_patches), len(self.api.events)


SPEC = {"replicas": 2, "tls": {"enabled": False}}


async def test_a_new_cache_is_set_up_and_an_idle_step_writes_nothing() -> None:
    c = Cluster(SPEC)
    await c.step()
    assert c.store.doc is not None and [m.id for m in c.store.doc.members] == [
        "cache-0", "cache-1"]
    assert ("apply", "StatefulSet") in c.api.calls and c.api.sts == 2
    assert sorted(k for k in c.api.calls if k[0] == "create") == [
        ("create", "Secret/cache-api-key"), ("create", "Secret/cache-cluster")]
    assert "RingCreated" in c.api.reasons()
    assert c.api.body is not None and c.api.body["status"]["phase"] == "Creating"
    # The pods come up and answer on the ring.
    c.nodes.update({"cache-0": node_status(1), "cache-1": node_status(1)})
    c.api.ready = {"cache-0": True, "cache-1": True}
    assert await c.step() == 5.0  # settled: idle
    assert c.api.body["status"]["phase"] == "Running"
    before = c.writes()
    for _ in range(3):
        assert await c.step() == 5.0
    assert c.writes() == before, "an idle step wrote something"
    await c.mem.close()


async def test_a_spec_change_applies_the_owned_objects_again() -> None:
    c = Cluster(SPEC)
    await c.step()
    applied = c.api.calls.count(("apply", "StatefulSet"))
    await c.step()
    assert c.api.calls.count(("apply", "StatefulSet")) == applied
    c.mem.poke(force_apply=True)  # kopf_main.spec_changed
    await c.step()
    assert c.api.calls.count(("apply", "StatefulSet")) == applied + 1
    await c.mem.close()


async def test_an_invalid_spec_is_degraded_and_acted_on_no_further() -> None:
    c = Cluster({"replicas": "many"})
    assert await c.step() == PROBLEM_DELAY
    assert c.api.body is not None
    degraded = next(d for d in c.api.body["status"]["conditions"] if d["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")
    assert c.api.calls == [] and c.store.doc is None
    assert c.api.reasons() == ["InvalidSpec"]


async def test_gone_ends_the_steps() -> None:
    c = Cluster(SPEC)
    c.api.body = None  # deleted
    assert await c.step() is None
    c = Cluster(SPEC)
    assert c.api.body is not None
    c.api.body["metadata"]["uid"] = "uid-2"  # deleted and created again: not ours
    assert await c.step() is None
    c = Cluster(SPEC)
    assert c.api.body is not None
    c.api.body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert await c.step() is None


async def test_a_failed_call_is_retried_and_a_bug_logged_and_retried(
        caplog: pytest.LogCaptureFixture) -> None:
    c = Cluster(SPEC)

    async def refused(namespace: str, name: str) -> Any:
        raise ApiError(503, "ServiceUnavailable", "etcd is down")

    c.api.get_distcache = refused  # type: ignore[method-assign]
    assert await c.step() == RETRY_DELAY

    async def bug(namespace: str, name: str) -> Any:
        raise KeyError("spec")

    c.api.get_distcache = bug  # type: ignore[method-assign]
    assert await c.step() == BUG_DELAY
    assert "step failed" in caplog.text and "KeyError" in caplog.text


async def test_the_ring_takes_the_zones_of_the_pods_nodes() -> None:
    c = Cluster(SPEC)
    c.api.nodes = {"cache-0": "worker-1", "cache-1": "worker-2"}
    c.api.zones = {"worker-1": "zone-a", "worker-2": "zone-b"}
    await c.step()
    assert c.store.doc is not None and c.store.doc.zones() == {"cache-0": "zone-a",
                                                               "cache-1": "zone-b"}
    # cache-1's pod comes back on a node of zone-a: the settled ring follows, in one step.
    c.nodes.update({"cache-0": node_status(1), "cache-1": node_status(1)})
    c.api.ready = {"cache-0": True, "cache-1": True}
    await c.step()
    before = c.store.doc.version
    await c.step()
    assert c.store.doc.version == before, "the ring changed with no zone moving"
    c.api.nodes["cache-1"] = "worker-3"
    c.api.zones["worker-3"] = "zone-a"
    await c.step()
    assert c.store.doc.version == before + 1
    assert c.store.doc.zones() == {"cache-0": "zone-a", "cache-1": "zone-a"}
    assert any("zones: cache-1 in zone-a" in e[1] for e in c.api.events)
    await c.mem.close()
