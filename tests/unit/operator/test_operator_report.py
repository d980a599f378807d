"""handlers.report: status is written when something a user acts on changed (live key and
byte counts alone: once per STATUS_REFRESH), PodsFailing is one counted Event, and the
problem path keeps what the step could not look at (Available, observedGeneration, the
members) instead of claiming the pods do not serve."""

from __future__ import annotations

from typing import Any

from fakes_k8s import FakeApi

from conftest import body
from distcache_node.cluster.ring import Member, RingDoc
from distcache_operator.handlers.membership import Membership
from distcache_operator.handlers.memory import STATUS_REFRESH, DistCacheMemory
from distcache_operator.handlers.report import write_problem, write_status
from distcache_operator.handlers.tlsstep import TLSState
from distcache_operator.model import DistCache
from distcache_operator.steps import Action, Observed


def _settled(dc: DistCache, keys: int, failing: dict[str, str] | None = None) -> Membership:
    ring = RingDoc(3, 2, tuple(Member(dc.member_id(i), dc.member_url(i), "active")
                               for i in range(2)))
    statuses: dict[str, Any] = {
        m.id: {"ring_version": 3, "keys": keys, "bytes_used": keys * 10, "ready": True,
               "migration": {"done": True, "placed_version": 3}} for m in ring.members}
    pods = {m.id: True for m in ring.members}
    return Membership(Action("idle", "settled", delay=5.0), Observed(ring, 2, statuses),
                      pods, failing or {}, 5.0, None)


async def test_status_is_written_when_a_user_facing_field_changes_not_for_live_counts(
        make_dc) -> None:
    dc = make_dc(replicas=2)
    api, mem = FakeApi(body({"replicas": 2})), DistCacheMemory()
    assert api.body is not None

    async def step(keys: int, now: float, failing: dict[str, str] | None = None) -> None:
        assert api.body is not None
        await write_status(api, dc, mem, api.body.get("status") or {},  # type: ignore[arg-type]
                           _settled(dc, keys, failing), TLSState(), now)

    await step(10, 100.0)
    assert len(api.status_patches) == 1 and api.body["status"]["phase"] == "Running"
    await step(11, 101.0)  # only the live key counts moved
    await step(12, 102.0)
    assert len(api.status_patches) == 1
    await step(13, 101.0 + STATUS_REFRESH)  # refreshed once a minute
    assert len(api.status_patches) == 2
    assert api.body["status"]["members"][0]["keys"] == 13
    await step(13, 102.0 + STATUS_REFRESH, {"cache-1": "CrashLoopBackOff: back-off"})
    assert len(api.status_patches) == 3 and api.body["status"]["phase"] == "Degraded"
    await step(13, 103.0 + STATUS_REFRESH, {"cache-1": "CrashLoopBackOff: back-off"})
    assert len(api.status_patches) == 3
    assert api.reasons() == ["PodsFailing"]  # one Event while it lasts


async def test_a_problem_keeps_available_members_and_the_generation_acted_on(make_dc) -> None:
    dc = make_dc(replicas=2)
    api, mem = FakeApi(body({"replicas": 2})), DistCacheMemory()
    assert api.body is not None
    await write_status(api, dc, mem, {}, _settled(dc, 10), TLSState(), 0.0)  # type: ignore[arg-type]
    served = dict(api.body["status"])
    later = make_dc(replicas=3)  # a new generation the step could not act on
    later = DistCache(later.name, later.namespace, later.uid, 2, later.spec)
    for _ in range(3):
        await write_problem(api, later, mem, api.body["status"],  # type: ignore[arg-type]
                            "SecretMissing", "Secret x not found")
    st = api.body["status"]
    conditions = {c["type"]: c for c in st["conditions"]}
    assert conditions["Available"] == next(c for c in served["conditions"]
                                           if c["type"] == "Available")
    assert conditions["Available"]["status"] == "True"
    assert (conditions["Degraded"]["status"], conditions["Degraded"]["reason"]) == (
        "True", "SecretMissing")
    assert st["observedGeneration"] == served["observedGeneration"] == 1
    assert st["members"] == served["members"] and st["ringVersion"] == 3
    assert api.reasons() == ["SecretMissing"]  # once, however often the step finds it
