"""A node's view of the cluster: the ring it follows (adopted all or nothing), where keys
live on it, and its peers and their health. No HTTP server here: the peer-side operations
are in replica.py, the status report in status.py, background loops in loops.py, and the
wiring into the app (peer auth included) in setup.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid

import aiohttp
from yarl import URL

from distcache_node.cluster.fastpath import FastPool
from distcache_node.cluster.membership import Membership, PeerHealth
from distcache_node.cluster.migration import Migration
from distcache_node.cluster.peers import PeerClient, PeerError
from distcache_node.cluster.replica import Replica
from distcache_node.cluster.replication import VersionClock
from distcache_node.cluster.ring import Ring, RingConflict, RingDoc, RingError
from distcache_node.config import NodeConfig
from distcache_node.keyfile import KeySet
from distcache_node.protocol import SECRET_HEADER
from distcache_node.store import Store
from distcache_node.tlsreload import CertReloader

log = logging.getLogger("distcache.cluster")


class ClusterNode:
    def __init__(self, config: NodeConfig, store: Store, ready: dict[str, object]) -> None:
        self.config = config
        self.store = store
        self.ready_state = ready
        self.id = config.node_id or config.advertise_url or f"{config.host}:{config.port}"
        self.url = (config.advertise_url or f"{config.scheme}://{config.host}:{config.port}")
        self.boot_id = uuid.uuid4().hex
        self.clock = VersionClock(self.id)
        self.doc = RingDoc(version=0, replication=config.replication, members=())
        self.target = Ring([], config.replication)
        self.previous = Ring([], config.replication)
        # Placements of the rings followed since the last one every member placed: a ring
        # changed without joining/leaving states (a hand edit, a new replication factor)
        # moves keys too, and until every member has placed it the old owners hold them.
        self.unsettled: list[Ring] = []
        self._settled_version = 0
        self.peers: dict[str, PeerClient] = {}
        self.membership = Membership(config.heartbeat_interval, config.suspect_after,
                                     on_change=self._peer_changed)
        self.migration = Migration(self)
        self.replica = Replica(self)  # this node's share, as peers (and it) call on it
        self.session: aiohttp.ClientSession | None = None
        self.client_ssl: ssl.SSLContext | None = None  # mutual TLS towards peers
        self.tls: CertReloader | None = None  # what the TLS contexts hold, for status
        # The keys accepted from clients and peers; the app's (re-read from files) once
        # wired in cluster/setup.py. What this node sends peers is peer_keys.primary.
        self.api_keys = KeySet("api_key", (config.api_key,))
        self.peer_keys = KeySet("cluster_secret", (config.cluster_secret,))
        self.ring_changed_at = time.monotonic()
        self.stopping = False
        self.reached: set[str] = set()  # peers whose heartbeats reached this process
        # Set when a peer sent writes around this process while it was up (it could not
        # reach it): the copies here may be behind, so the share is taken back again.
        self.resync = asyncio.Event()

    # -- readiness ---------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return bool(self.ready_state["ready"])

    def set_ready(self, ready: bool, reason: str) -> None:
        self.ready_state["ready"] = ready
        self.ready_state["reason"] = reason

    def reached_by(self, peer_id: str, routed_around: str) -> None:
        """A peer's heartbeat got here; `routed_around` is the boot id it had judged dead."""
        if peer_id in self.peers:
            self.reached.add(peer_id)
        if routed_around == self.boot_id and not self.stopping and not self.resync.is_set():
            log.warning("peer %s sent writes around this node while it was up; taking "
                        "its share back", peer_id)
            self.behind("re-syncing: a peer sent writes around this node")

    def behind(self, reason: str) -> None:
        """Our copies may lack writes peers made around us: not ready from now on (the answer
        to the heartbeat that said so already says it, and reads go to ready owners first),
        until the refill loop has taken our share back."""
        if self.stopping:
            return
        me = self.doc.member(self.id)
        if me is not None and me.state == "active":  # the ones the refill loop re-syncs
            self.set_ready(False, reason)
        self.resync.set()

    def stalled(self, gap: float) -> None:
        """cluster/stall.py: this process was stopped for `gap` seconds."""
        self.membership.excuse()
        if self.peers:
            self.behind(f"re-syncing: this process was stopped for {gap:.0f} s")

    def send_secret(self) -> None:
        """Calls to peers carry the cluster secret's current first key from now on (after
        its file changed): the session's default headers and each peer's fast path."""
        secret = self.peer_keys.primary
        if self.session is not None:
            self.session.headers[SECRET_HEADER] = secret
        for peer in self.peers.values():
            if peer.fast is not None:
                peer.fast.set_headers({SECRET_HEADER: secret})

    # -- ring --------------------------------------------------------------------------------
    def update_ring(self, doc: RingDoc, source: str) -> bool:
        """Adopt a newer ring; an older version, or the same one again, changes nothing
        (False). The same version with other content raises RingConflict. All or nothing:
        everything that can fail (the peer clients) is built before anything is swapped in,
        so a ring that cannot be used (RingError) leaves the node on its old one."""
        if doc.version <= self.doc.version and self.doc.members:
            if doc.version == self.doc.version and not doc.same_content(self.doc):
                raise RingConflict(
                    f"ring v{doc.version} from {source} differs from the v{doc.version} this "
                    "node follows; publish changes under a new version")
            return False
        if self.session is None:
            raise RingError("cluster networking is not started yet")
        fresh: dict[str, PeerClient] = {}
        secret = self.peer_keys.primary
        for member in doc.members:
            client = self.peers.get(member.id)
            if member.id != self.id and (client is None or client.url != member.url):
                try:
                    fresh[member.id] = PeerClient(
                        member.id, member.url, self.session,
                        timeout=self.config.peer_timeout,
                        sender=(self.id, lambda: self.doc.version),
                        fast=FastPool(member.url, {SECRET_HEADER: secret} if secret else {},
                                      self.client_ssl),
                    )
                except (ValueError, TypeError) as exc:
                    for built in fresh.values():
                        if built.fast is not None:
                            built.fast.close()
                    raise RingError(f"member {member.id!r}: url {member.url!r}: {exc}") from None
        # Nothing below can fail: swap the new ring in.
        old, target = self.doc, doc.target()
        if old.members and not self.target.same_placement(target):
            self.unsettled = [*(self.unsettled if self.settling else []), self.target]
        self.doc = doc
        self.target = target
        self.previous = doc.previous()
        for member_id, client in fresh.items():
            replaced = self.peers.get(member_id)
            if replaced is not None and replaced.fast is not None:
                replaced.fast.close()
            self.peers[member_id] = client
        for peer_id in [p for p in self.peers if doc.member(p) is None]:
            gone = self.peers.pop(peer_id)
            if gone.fast is not None:
                gone.fast.close()
        self.membership.sync_peers(set(self.peers))
        log.info("ring v%d -> v%d from %s: %s", old.version, doc.version, source,
                 ", ".join(f"{m.id}({m.state})" for m in doc.members))
        self.ring_changed_at = time.monotonic()
        self.migration.wake()
        return True

    async def catch_up(self, sender: str | None, version: int) -> None:
        """A peer on a newer ring sent us work: adopt its ring first, so we never act on
        (and hand keys back along) the ring it has already left."""
        if version <= self.doc.version or sender is None or sender not in self.peers:
            return
        with contextlib.suppress(PeerError):
            try:
                self.update_ring(RingDoc.from_json(await self.peer(sender).get_ring()),
                                 f"peer {sender}")
            except RingError as exc:
                log.warning("ring from peer %s refused, keeping v%d: %s", sender,
                            self.doc.version, exc)

    @property
    def settling(self) -> bool:
        """This ring moved keys and some member (this one included) has not placed it yet:
        a miss at a new owner may only mean the key has not reached it. Once every member
        reports the version placed, this costs one comparison."""
        version = self.doc.version
        if self._settled_version == version or not self.unsettled:
            return False
        # A dead peer places nothing and answers nothing: it does not hold this up.
        if self.migration.placed_version >= version and all(
                self.membership.placed_version(p) >= version
                for p in self.peers if self.membership.is_alive(p)):
            self._settled_version, self.unsettled = version, []
            return False
        return True

    def old_owners(self, key: str) -> list[str]:
        """Live members that held the key before the rings in flight: during joins and
        leaves, or until a ring that moved keys is placed everywhere."""
        rings = ([self.previous] if self.doc.in_transition else []) + (
            self.unsettled if self.settling else [])
        out: list[str] = []
        for ring in rings:
            for member in ring.owners(key):
                if member not in out and self.is_alive(member):
                    out.append(member)
        return out

    def in_flux(self) -> bool:
        """Keys may be somewhere other than their owners on this ring."""
        return self.doc.in_transition or self.settling

    def is_alive(self, member: str) -> bool:
        # A stopping node counts itself out, like its peers do: what it coordinates goes to
        # the owners (and stand-ins) that stay, so its exit takes no copy away.
        if member == self.id:
            return not self.stopping
        return self.membership.is_alive(member)

    def is_ready(self, member: str) -> bool:
        return self.ready if member == self.id else self.membership.is_ready(member)

    async def begin_stopping(self) -> None:
        """SIGTERM: not ready, and every peer told to route around this node now (their
        heartbeats keep hearing 'stopping' until the port closes), so no peer forwards to
        it or counts it in a write quorum while it drains and after it exits."""
        self.stopping = True
        self.set_ready(False, "stopping")
        from distcache_node.cluster import loops  # loops imports this module

        await loops.announce(self, ready=False, stopping=True)

    @property
    def replication(self) -> int:
        """Copies per key: R, or every member of a ring smaller than R."""
        return min(self.doc.replication, len(self.target))

    def live_owners(self, key: str) -> list[str]:
        """The first R members clockwise from the key that are up: the natural owners when
        all are alive, the next ones along the ring in place of a dead one (sloppy quorum)."""
        owners: list[str] = []
        want = self.replication
        for member in self.target.preference(key):
            if self.is_alive(member):
                owners.append(member)
                if len(owners) == want:
                    break
        return owners

    def read_candidates(self, key: str) -> list[tuple[str, bool]]:
        """Where to look for a key, in order, each with whether a miss there is final.

        Writes go to the live owners, so those hold every acknowledged write; of them the
        ready ones come first, this node first when it is one of them (a restarted owner
        still refilling may lack older keys). A miss is final only at a ready natural owner
        outside a ring transition: a stand-in for a dead owner, a refilling node or a new
        owner during migration may just not have it yet.
        """
        writers = self.live_owners(key)
        natural = self.target.owners(key)
        transition = self.in_flux()
        ready = [m for m in writers if self.is_ready(m)]
        if self.id in ready and self.id in natural:
            # Our own copy is as good as the primary's (an acknowledged write is on every
            # live owner), and reading it saves the hop.
            ready.remove(self.id)
            ready.insert(0, self.id)
        # A node that is not ready itself (refilling, re-syncing after peers wrote around
        # it) asks its own copy last: any other owner is likelier to be current.
        unready = [m for m in writers if m not in ready]
        if self.id in unready:
            unready.remove(self.id)
            unready.append(self.id)
        order = ready + unready
        candidates = [(m, not transition and m in ready and m in natural) for m in order]
        if transition:
            # While keys move, the old owners still hold what has not moved yet.
            for member in self.old_owners(key):
                if member not in order:
                    candidates.append((member, False))
        return candidates

    def peer(self, member: str) -> PeerClient:
        client = self.peers.get(member)
        if client is None:
            raise PeerError(member, "not a member of the ring")
        return client

    def report(self, error: PeerError) -> None:
        self.membership.report_failure(error.peer, error)

    def _peer_changed(self, peer_id: str, before: PeerHealth, after: PeerHealth) -> None:
        if after.alive and not before.alive and after.boot_id == before.boot_id:
            # Same process back after a suspicion: it may have missed writes. Restarted
            # processes (new boot id) refill themselves before they report ready.
            self.migration.sync_to(peer_id)
        if after.alive and before.alive is False:
            self.migration.owner_back()
        if before.alive and not after.alive:
            self.migration.peer_died()
        if after.boot_id != before.boot_id or before.alive != after.alive:
            # A pod that stopped comes back under its name at a new address: resolve the
            # name again rather than wait out a cached address that no longer answers.
            self.forget_address(peer_id)

    def forget_address(self, peer_id: str) -> None:
        peer = self.peers.get(peer_id)
        connector = self.session.connector if self.session is not None else None
        if peer is None or not isinstance(connector, aiohttp.TCPConnector):
            return
        url = URL(peer.url)
        if url.host is not None:
            connector.clear_dns_cache(url.host, url.port)
