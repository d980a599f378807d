"""Where a node sends reads and writes: live owners and stand-ins (sloppy quorum), read
candidates and which misses are final, and how many acknowledgements a write needs.

A ClusterNode built from a NodeConfig and a Store, without its app: no server, no
connections. Peers die and come back through the public Membership API only
(report_failure with a refused PeerError, heard_from). Writes go through ClusterRouter to
fake peers that answer /cluster/apply like a replica or refuse like a killed process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from distcache_node.cluster.node import ClusterNode
from distcache_node.cluster.peers import PeerError, WireEntry
from distcache_node.cluster.replication import VersionClock, required_acks
from distcache_node.cluster.ring import Member, RingDoc
from distcache_node.cluster.router import ClusterRouter
from distcache_node.config import NodeConfig
from distcache_node.errors import Unavailable
from distcache_node.http_errors import status_of
from distcache_node.store import Store

KEYS = [f"key:{i}" for i in range(400)]
Make = Callable[..., ClusterNode]


def member(index: int, state: str = "active") -> Member:
    return Member(f"n{index}", f"http://127.0.0.1:{20000 + index}", state)


@pytest.fixture
async def make_node() -> AsyncIterator[Make]:
    """make(members=3, replication=2, write_quorum=0, me=0, states=None) -> a ClusterNode
    that is member n<me> of a ring of n0..n<members-1>, ready, every peer presumed alive."""
    built: list[ClusterNode] = []
    session = aiohttp.ClientSession()  # never used to connect: no request is made

    def make(members: int = 3, replication: int = 2, write_quorum: int = 0, me: int = 0,
             states: dict[int, str] | None = None) -> ClusterNode:
        config = NodeConfig(node_id=f"n{me}", advertise_url=member(me).url,
                            cluster_secret="s", replication=replication,
                            write_quorum=write_quorum).validate()
        node = ClusterNode(config, Store(1024**2, track_versions=True),
                           {"ready": True, "reason": ""})
        node.session = session
        ring = RingDoc(1, replication, tuple(member(i, (states or {}).get(i, "active"))
                                             for i in range(members)))
        assert node.update_ring(ring, "test")
        built.append(node)
        return node

    yield make
    for node in built:
        for peer in node.peers.values():
            if peer.fast is not None:
                peer.fast.close()
    await session.close()


def kill(node: ClusterNode, peer: str) -> None:
    """What the data path does when a connection to `peer` is refused."""
    node.membership.report_failure(peer, PeerError(peer, "connection refused", refused=True))


def key_where(node: ClusterNode, test: Callable[[list[str]], bool]) -> str:
    """A key whose natural owners (in order) pass `test`."""
    return next(k for k in KEYS if test(node.target.owners(k)))


# -- live owners and stand-ins --------------------------------------------------------------


async def test_with_every_member_up_the_live_owners_are_the_natural_owners(
    make_node: Make,
) -> None:
    node = make_node(members=5, replication=3)
    for key in KEYS:
        assert node.live_owners(key) == node.target.owners(key)
        assert len(node.live_owners(key)) == 3


async def test_a_dead_owner_is_replaced_by_the_next_member_along_the_ring(
    make_node: Make,
) -> None:
    node = make_node(members=5, replication=2)
    kill(node, "n3")
    assert not node.is_alive("n3")
    stood_in = 0
    for key in KEYS:
        preference = node.target.preference(key)
        assert node.live_owners(key) == [m for m in preference if m != "n3"][:2], key
        if "n3" in preference[:2]:
            stood_in += 1
            assert preference[2] in node.live_owners(key)  # the stand-in
    assert stood_in > 0  # the ring gave n3 a share of these keys


async def test_with_fewer_members_up_than_r_every_live_member_owns_the_key(
    make_node: Make,
) -> None:
    node = make_node(members=3, replication=2)
    kill(node, "n1")
    kill(node, "n2")
    assert all(node.live_owners(k) == ["n0"] for k in KEYS)


async def test_a_ring_smaller_than_r_keeps_a_copy_on_every_member(make_node: Make) -> None:
    node = make_node(members=2, replication=3)
    assert node.replication == 2
    assert all(sorted(node.live_owners(k)) == ["n0", "n1"] for k in KEYS)


async def test_a_peer_that_announces_itself_owns_its_keys_again(make_node: Make) -> None:
    node = make_node(members=3, replication=2)
    kill(node, "n2")
    key = key_where(node, lambda owners: owners[0] == "n2")
    assert "n2" not in node.live_owners(key)
    node.membership.heard_from("n2", "boot-2", ready=True)
    assert node.live_owners(key) == node.target.owners(key)


# -- read candidates ------------------------------------------------------------------------


async def test_reads_ask_this_node_first_when_it_owns_the_key_and_its_miss_is_final(
    make_node: Make,
) -> None:
    node = make_node(members=3, replication=2, me=0)
    key = key_where(node, lambda owners: owners == [owners[0], "n0"])
    assert node.read_candidates(key) == [("n0", True), (node.target.owners(key)[0], True)]


async def test_reads_of_a_key_this_node_does_not_own_go_to_the_primary_first(
    make_node: Make,
) -> None:
    node = make_node(members=3, replication=2, me=0)
    key = key_where(node, lambda owners: "n0" not in owners)
    assert node.read_candidates(key) == [(m, True) for m in node.target.owners(key)]


async def test_a_stand_in_is_asked_but_its_miss_is_not_final(make_node: Make) -> None:
    node = make_node(members=3, replication=2, me=0)
    key = key_where(node, lambda owners: owners == ["n1", "n2"])
    kill(node, "n2")
    # n0 stands in for n2: it holds every write made since, but not older ones.
    assert node.read_candidates(key) == [("n1", True), ("n0", False)]


async def test_an_owner_that_is_not_ready_is_asked_last_and_not_trusted_with_a_miss(
    make_node: Make,
) -> None:
    node = make_node(members=3, replication=2, me=0)
    key = key_where(node, lambda owners: owners == ["n1", "n2"])
    # n1 restarted (a new boot) and is still taking its share back.
    node.membership.heard_from("n1", "boot-2", ready=False)
    assert node.is_alive("n1") and not node.is_ready("n1")
    assert node.read_candidates(key) == [("n2", True), ("n1", False)]


async def test_this_node_while_refilling_asks_its_peers_first(make_node: Make) -> None:
    node = make_node(members=3, replication=2, me=0)
    node.set_ready(False, "refilling from peers")
    key = key_where(node, lambda owners: owners == [owners[0], "n0"])
    other = node.target.owners(key)[0]
    assert node.read_candidates(key) == [(other, True), ("n0", False)]


async def test_during_a_ring_change_no_miss_is_final_and_old_owners_are_asked_too(
    make_node: Make,
) -> None:
    # n3 is joining: the target ring has it, the previous ring does not.
    node = make_node(members=4, replication=2, me=0, states={3: "joining"})
    assert node.doc.in_transition
    key = key_where(node, lambda owners: "n3" in owners)
    candidates = node.read_candidates(key)
    assert [m for m, _ in candidates[:2]] == sorted(
        node.target.owners(key), key=lambda m: m != "n0")  # this node first if an owner
    assert not any(final for _, final in candidates)
    old_owners = node.previous.owners(key)
    assert set(old_owners) <= {m for m, _ in candidates}  # the keys have not moved yet


# -- how many acknowledgements a write needs ------------------------------------------------


@pytest.mark.parametrize(("replication", "write_quorum", "live", "need"), [
    (2, 0, 2, 2),  # default: every live owner...
    (3, 0, 3, 3),
    (3, 0, 2, 2),
    (2, 0, 1, 2),  # ...and at least 2 when R >= 2: one node's death never loses a write
    (3, 0, 1, 2),
    (1, 0, 1, 1),  # R=1: one copy is all there is
    (2, 1, 2, 1),  # --write-quorum overrides, whatever is alive
    (3, 2, 3, 2),
    (3, 2, 1, 2),
    (2, 5, 2, 2),  # never more than R
])
def test_required_acks(replication: int, write_quorum: int, live: int, need: int) -> None:
    assert required_acks(replication, write_quorum, live) == need


class FakePeer:
    """Answers /cluster/apply like a replica (stores into its own Store), or refuses like a
    killed process."""

    def __init__(self, peer_id: str) -> None:
        self.id = peer_id
        self.url = member(int(peer_id[1:])).url
        self.fast = None
        self.store = Store(1024**2, track_versions=True)
        self.down = False
        self.calls = 0

    async def apply(self, entries: list[WireEntry],
                    deletes: list[tuple[str, int]]) -> dict[str, Any]:
        self.calls += 1
        if self.down:
            raise PeerError(self.id, "connection refused", refused=True)
        applied = sum(self.store.apply(k, v, t, ver) for k, v, t, ver in entries)
        return {"applied": applied, "deleted": [], "not_held": [], "newer": []}


def with_fake_peers(node: ClusterNode) -> dict[str, FakePeer]:
    fakes = {}
    for peer_id, client in list(node.peers.items()):
        if client.fast is not None:
            client.fast.close()
        fakes[peer_id] = FakePeer(peer_id)
        node.peers[peer_id] = fakes[peer_id]  # type: ignore[assignment]
    return fakes


def holders(node: ClusterNode, fakes: dict[str, FakePeer], key: str) -> set[str]:
    held = {p for p, fake in fakes.items() if fake.store.get(key) is not None}
    return held | ({node.id} if node.store.get(key) is not None else set())


async def test_a_write_reaches_every_owner(make_node: Make) -> None:
    node = make_node(members=3, replication=2)
    fakes = with_fake_peers(node)
    router = ClusterRouter(node)
    for key in KEYS[:50]:
        await router.set(key, b"1", None)
        assert holders(node, fakes, key) == set(node.target.owners(key))


async def test_a_write_to_a_refusing_owner_goes_to_a_stand_in(make_node: Make) -> None:
    node = make_node(members=3, replication=2)
    fakes = with_fake_peers(node)
    key = key_where(node, lambda owners: owners == ["n1", "n2"])
    fakes["n2"].down = True
    await ClusterRouter(node).set(key, b"1", None)  # acknowledged: no exception
    assert not node.is_alive("n2")  # the refusal convicted it at once
    assert holders(node, fakes, key) == {"n1", "n0"}  # n0 stood in


async def test_with_no_stand_in_the_default_quorum_refuses_the_write(make_node: Make) -> None:
    node = make_node(members=2, replication=2)
    fakes = with_fake_peers(node)
    fakes["n1"].down = True
    with pytest.raises(Unavailable) as refused:
        await ClusterRouter(node).set("k", b"1", None)
    assert status_of(refused.value) == 503 and refused.value.code == "unavailable"
    assert "1 of 2" in refused.value.message


async def test_write_quorum_1_acknowledges_with_one_owner_down(make_node: Make) -> None:
    node = make_node(members=2, replication=2, write_quorum=1)
    fakes = with_fake_peers(node)
    fakes["n1"].down = True
    await ClusterRouter(node).set("k", b"1", None)
    assert holders(node, fakes, "k") == {"n0"}
    # ...and once the peer is back (it announces itself), writes reach it again.
    fakes["n1"].down = False
    node.membership.heard_from("n1", "boot-2", ready=True)
    await ClusterRouter(node).set("k2", b"2", None)
    assert holders(node, fakes, "k2") == {"n0", "n1"}


async def test_an_explicit_quorum_above_the_live_owners_refuses(make_node: Make) -> None:
    node = make_node(members=3, replication=3, write_quorum=3)
    fakes = with_fake_peers(node)
    fakes["n2"].down = True
    with pytest.raises(Unavailable) as refused:
        await ClusterRouter(node).set("k", b"1", None)
    assert status_of(refused.value) == 503
    assert "2 of 3" in refused.value.message


class DyingPrimary(FakePeer):
    """A primary that increments, replicates to its partner (this node), then dies before
    answering: the caller sees a dropped connection, then refusals."""

    def __init__(self, peer_id: str, partner: ClusterNode) -> None:
        super().__init__(peer_id)
        self.partner = partner
        self.clock = VersionClock(peer_id)

    async def incr(self, key: str, delta: int, ttl: float | None) -> tuple[int, int]:
        self.calls += 1
        if self.calls == 1:
            self.partner.replica.apply([(key, str(delta).encode(), ttl, self.clock.next())], [])
            raise PeerError(self.id, "POST /cluster/incr: ServerDisconnectedError()")
        raise PeerError(self.id, "connection refused", refused=True)


async def test_an_increment_the_dead_primary_may_have_applied_is_not_sent_again(
    make_node: Make,
) -> None:
    """An increment is not idempotent: a call that got no answer may have been applied and
    replicated, so it is a 503 ("may or may not"), never tried on the next owner."""
    node = make_node(members=3, replication=2, me=0)
    fakes = with_fake_peers(node)
    key = key_where(node, lambda owners: owners == ["n1", "n0"])
    primary = node.peers["n1"] = DyingPrimary("n1", node)  # type: ignore[assignment]
    router = ClusterRouter(node)
    with pytest.raises(Unavailable) as unanswered:
        await router.incr(key, 1, None)
    assert status_of(unanswered.value) == 503 and "may or may not" in unanswered.value.message
    assert primary.calls == 1 and node.store.get(key) == b"1"  # counted once, by n1
    # The client's next increment finds the primary refusing: this node takes over, with
    # the stand-in n2 as the second copy.
    assert await router.incr(key, 1, None) == 2
    assert not node.is_alive("n1")
    assert fakes["n2"].store.get(key) == b"2"
