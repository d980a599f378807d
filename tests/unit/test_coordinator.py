"""The coordinator's I/O (publish, push, statuses, held rings), what keeps a ring from
settling, and the capacity check, against a fake ring store (with compare-and-swap) and fake
members that report status like real nodes: no sockets. The membership machine that decides
what to publish is tested in test_resize.py."""

from __future__ import annotations

from typing import Any

import pytest

from distcache_node.cluster import coordinator as coordinator_module
from distcache_node.cluster.coordinator import Coordinator, RingConflict, check_capacity
from distcache_node.cluster.ring import Member, RingDoc

MiB = 1024 * 1024


class MemoryRingStore:
    """Like a ConfigMap: save succeeds only when the stored ring is the expected one."""

    def __init__(self, doc: RingDoc | None) -> None:
        self.doc = doc
        self.saved: list[RingDoc] = []
        self.interloper: RingDoc | None = None  # written by "someone else" before our save

    async def load(self) -> RingDoc:
        assert self.doc is not None
        return self.doc

    async def save(self, doc: RingDoc, expected: RingDoc | None) -> None:
        if self.interloper is not None:
            self.doc, self.interloper = self.interloper, None
        if self.doc != expected:
            raise RingConflict("stored ring changed")
        self.doc = doc
        self.saved.append(doc)


class FakeMember:
    """Answers put_ring and status like a node whose migration takes `passes` polls."""

    def __init__(self, member_id: str, bytes_used: int = 0, max_memory: int = 64 * MiB,
                 passes: int = 0) -> None:
        self.id = member_id
        self.ring_version = 0
        self.placed_version = 0
        self.bytes_used = bytes_used
        self.max_memory = max_memory
        self.passes = passes
        self._left = 0
        self.rings: list[int] = []

    async def put_ring(self, doc: dict[str, Any]) -> dict[str, Any]:
        self.ring_version = doc["version"]
        self.rings.append(doc["version"])
        self._left = self.passes
        return {"accepted": True, "version": doc["version"]}

    async def status(self) -> dict[str, Any]:
        if self._left > 0:
            self._left -= 1
        else:
            self.placed_version = self.ring_version
        done = self.placed_version >= self.ring_version
        return {"id": self.id, "ring_version": self.ring_version, "keys": 0,
                "bytes_used": self.bytes_used, "max_memory": self.max_memory,
                "migration": {"done": done, "placed_version": self.placed_version,
                              "keys_remaining": 0 if done else 10, "reason": "test"}}


def ring(*ids: str, version: int = 1, state: str = "active") -> RingDoc:
    return RingDoc(version, 2, tuple(Member(i, f"http://{i}:8080", state) for i in ids))


def coordinator_for(store: MemoryRingStore, members: dict[str, FakeMember]) -> Coordinator:
    return Coordinator(store, lambda m: members[m.id])  # type: ignore[arg-type,return-value]


async def test_publish_stores_then_pushes_to_every_member() -> None:
    members = {i: FakeMember(i) for i in ("a", "b", "c")}
    before = ring("a", "b", "c")
    store = MemoryRingStore(before)
    after = ring("a", "b", "c", version=2, state="leaving")
    await coordinator_for(store, members).publish(after, before)
    assert store.doc == after
    assert all(m.rings == [2] for m in members.values())


async def test_a_concurrent_ring_change_is_a_conflict_and_pushes_nothing() -> None:
    members = {i: FakeMember(i) for i in ("a", "b", "c")}
    before = ring("a", "b", "c")
    store = MemoryRingStore(before)
    store.interloper = ring("a", "b", "c", version=7)
    with pytest.raises(RingConflict):
        await coordinator_for(store, members).publish(ring("a", "b", version=2), before)
    assert store.doc is not None and store.doc.version == 7
    assert all(m.rings == [] for m in members.values())


class Unreachable(FakeMember):
    async def status(self) -> dict[str, Any]:
        raise coordinator_module.PeerError(self.id, "connection refused")


async def test_statuses_say_none_for_a_member_that_does_not_answer() -> None:
    members = {"a": FakeMember("a"), "b": Unreachable("b")}
    statuses = await coordinator_for(MemoryRingStore(None), members).statuses(  # type: ignore[arg-type]
        [Member("a", "http://a:8080"), Member("b", "http://b:8080")])
    assert statuses["a"] is not None and statuses["a"]["id"] == "a"
    assert statuses["b"] is None


@pytest.mark.parametrize(
    ("used_each", "members", "remaining", "ok"),
    [
        (10 * MiB, 3, 2, True),    # 15 MiB of data, 15 MiB per member after: fits
        (40 * MiB, 3, 2, False),   # 60 MiB of data at R=2 on 2 members: 60 > 54.4 allowed
        (36 * MiB, 3, 2, True),    # 54 MiB per member: just under 85% of 64 MiB
        (40 * MiB, 2, 1, True),    # 1 member left holds one copy: 40 MiB
        (60 * MiB, 2, 1, False),   # 60 MiB > 54.4 MiB
    ],
)
def test_capacity_arithmetic(used_each: int, members: int, remaining: int, ok: bool) -> None:
    statuses = {f"m{i}": {"bytes_used": used_each, "max_memory": 64 * MiB}
                for i in range(members)}
    check = check_capacity(statuses, [f"m{i}" for i in range(remaining)], replication=2)
    assert check.ok is ok
    assert (check.missing == 0) is ok
    assert check.bytes_allowed == int(64 * MiB * coordinator_module.HEADROOM)


def test_capacity_counts_unreachable_members_out_loud() -> None:
    statuses: dict[str, dict[str, int] | None] = {
        "a": {"bytes_used": MiB, "max_memory": 64 * MiB}, "b": None}
    check = check_capacity(statuses, ["a"], replication=2)
    assert check.ok
    assert "no status from b" in check.message


def test_a_member_that_counts_another_down_is_not_settled() -> None:
    doc = ring("a", "b", version=3)
    healthy = {"ring_version": 3, "migration": {"done": True, "placed_version": 3},
               "peers": {"b": {"alive": True}}}
    blind = {**healthy, "peers": {"b": {"alive": False}, "gone": {"alive": False}}}
    assert Coordinator.pending(doc, {"a": healthy, "b": healthy}) == []
    # Only members of the ring count: a peer that left is no reason to wait.
    assert Coordinator.pending(doc, {"a": blind, "b": healthy}) == ["a: sees b down"]


def test_a_member_ahead_of_the_ring_is_a_conflict_not_settled() -> None:
    """Issue 14, defect 3: a ring store deleted and written again from scratch (v1) under
    nodes on v9. They ignore the older ring, so 'ring_version >= doc.version' would read as
    settled and members it names as leaving would be removed undrained."""
    doc = ring("a", "b", version=1)
    on_9 = {"ring_version": 9, "migration": {"done": True, "placed_version": 9}}
    on_1 = {"ring_version": 1, "migration": {"done": True, "placed_version": 1}}
    assert Coordinator.pending(doc, {"a": on_1, "b": on_1}) == []
    assert Coordinator.pending(doc, {"a": on_9, "b": on_1}) == [
        "a: on ring v9, ahead of v1 (conflict)"]


class RingHolder(FakeMember):
    def __init__(self, member_id: str, doc: RingDoc | None) -> None:
        super().__init__(member_id)
        self.doc = doc

    async def get_ring(self) -> dict[str, Any]:
        if self.doc is None:
            raise coordinator_module.PeerError(self.id, "unreachable")
        return self.doc.to_json()


async def test_rings_reads_what_each_member_holds() -> None:
    held = ring("a", "b", version=7)
    members = {"a": RingHolder("a", held), "b": RingHolder("b", None)}
    store = MemoryRingStore(None)
    got = await coordinator_for(store, members).rings(  # type: ignore[arg-type]
        [Member("a", "http://a:8080"), Member("b", "http://b:8080")])
    assert got == {"a": held}
