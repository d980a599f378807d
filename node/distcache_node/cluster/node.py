"""A node's view of the cluster: the ring it follows, its peers and their health, and the
local operations peers call. Wires the cluster into the app (setup_cluster)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from distcache_node.appkeys import BACKEND, CLUSTER, CONFIG, METRICS, PEER_CHECK, READY, STORE
from distcache_node.cluster.fastpath import FastPool
from distcache_node.cluster.membership import Membership, PeerHealth
from distcache_node.cluster.migration import Migration
from distcache_node.cluster.peers import (
    SECRET_HEADER,
    PeerClient,
    PeerError,
    WireEntry,
    client_ssl_context,
    make_session,
)
from distcache_node.cluster.replication import ApplyResult, VersionClock
from distcache_node.cluster.ring import Ring, RingConflict, RingDoc, RingError
from distcache_node.config import NodeConfig
from distcache_node.errors import ApiError
from distcache_node.pipeline import keys_match
from distcache_node.store import Store

log = logging.getLogger("distcache.cluster")
RING_SETTLE = 30.0  # seconds after a ring change in which late writes may use the old ring


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
        self.peers: dict[str, PeerClient] = {}
        self.membership = Membership(config.heartbeat_interval, config.suspect_after,
                                     on_change=self._peer_changed)
        self.migration = Migration(self)
        self.session: aiohttp.ClientSession | None = None
        self.client_ssl: ssl.SSLContext | None = None  # mutual TLS towards peers
        self.ring_changed_at = time.monotonic()

    # -- readiness ---------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return bool(self.ready_state["ready"])

    def set_ready(self, ready: bool, reason: str) -> None:
        self.ready_state["ready"] = ready
        self.ready_state["reason"] = reason

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
        secret = self.config.cluster_secret
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
        old = self.doc
        self.doc = doc
        self.target = doc.target()
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

    def is_alive(self, member: str) -> bool:
        return member == self.id or self.membership.is_alive(member)

    def is_ready(self, member: str) -> bool:
        return self.ready if member == self.id else self.membership.is_ready(member)

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
        transition = self.doc.in_transition
        ready = [m for m in writers if self.is_ready(m)]
        if self.id in ready and self.id in natural:
            # Our own copy is as good as the primary's (an acknowledged write is on every
            # live owner), and reading it saves the hop.
            ready.remove(self.id)
            ready.insert(0, self.id)
        order = ready + [m for m in writers if m not in ready]
        candidates = [(m, not transition and m in ready and m in natural) for m in order]
        if transition:
            # While keys move, the old owners still hold what has not moved yet.
            for member in self.previous.owners(key):
                if member not in order and self.is_alive(member):
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
            self.migration.wake()
        if before.alive and not after.alive:
            self.migration.peer_died()

    # -- local operations (this node's share; called for itself and by peers) -----------------
    def local_get(self, keys: list[str]) -> list[WireEntry]:
        out: list[WireEntry] = []
        store = self.store
        for key in keys:
            entry = store.get_with_ttl(key)
            if entry is not None:
                out.append((key, entry[0], entry[1], store.version(key)))
        return out

    def local_apply(
        self, entries: list[WireEntry], deletes: list[tuple[str, int]],
        sender_ring: int | None = None,
    ) -> ApplyResult:
        """Apply replicated writes and deletes (from peers, migration, refill, or this node
        as a coordinator), each only where it is newer than what the store holds, a
        tombstone included. Every version received moves the clock past it. Reports the
        keys this node does not hold at the sent version or newer (the sender must not
        count it for them) and those it holds at a newer version than sent."""
        applied, deleted = 0, []
        not_held: list[str] = []
        newer: list[tuple[str, int]] = []
        now = time.monotonic()
        store, observe = self.store, self.clock.observe
        for key, version in deletes:
            observe(version)
            if store.delete_version(key, version):
                deleted.append(key)
            held = store.held_version(key)
            if held > version:
                newer.append((key, held))
            elif held < version:
                not_held.append(key)  # a tombstone too large for this store
        for key, value, ttl, version in entries:
            observe(version)
            if store.apply(key, value, ttl, version):
                applied += 1
                continue
            held = store.held_version(key)
            if held > version:
                newer.append((key, held))
            elif held < version:
                not_held.append(key)
        # A coordinator still on the old ring may write to an owner that is no longer one:
        # let the migration hand such keys on. (A sender on our ring or a newer one, such as
        # a migration pass, places keys on their owners: no need to look.)
        recent = self.doc.in_transition or now - self.ring_changed_at < RING_SETTLE
        if entries and recent and (sender_ring is None or sender_ring < self.doc.version):
            owners, me = self.target.owners, self.id
            for entry in entries:
                if me not in owners(entry[0]):
                    self.migration.note_stray(entry[0])
        return ApplyResult(applied, deleted, not_held, newer)

    def local_incr(self, key: str, delta: int, ttl: float | None) -> WireEntry:
        version = self.clock.next()
        value = self.store.incr(key, delta, ttl, version)
        return key, str(value).encode(), self.store.ttl(key), version

    def status(self) -> dict[str, object]:
        peers = {
            peer_id: {
                "url": self.peers[peer_id].url,
                "alive": h.alive, "ready": h.ready, "ring_version": h.ring_version,
                "seconds_since_ok": round(time.monotonic() - h.last_ok, 2),
                "last_error": h.last_error,
                **self.peers[peer_id].forwarding_stats(),
            }
            for peer_id, h in self.membership.health.items() if peer_id in self.peers
        }
        me = self.doc.member(self.id)
        return {
            "id": self.id, "url": self.url, "state": me.state if me else "detached",
            "ready": self.ready, "reason": self.ready_state["reason"],
            "ring_version": self.doc.version, "replication": self.doc.replication,
            "keys": len(self.store), "bytes_used": self.store.bytes_used,
            "max_memory": self.store.max_bytes,
            "peers": peers, "migration": self.migration.progress(),
        }

    # -- background work ---------------------------------------------------------------------
    async def refill(self) -> None:
        """A member restarted empty takes back its share from peers before it is ready."""
        me = self.doc.member(self.id)
        if me is None or me.state != "active" or not self.peers:
            self.set_ready(True, "no share to take back")
            return
        self.set_ready(False, "refilling from peers")
        # First make every peer count us alive, so new writes reach us while we copy; then
        # a short grace for writes already in flight without us.
        announce = f"{self.id} {self.boot_id} 0"
        for peer in list(self.peers.values()):
            with contextlib.suppress(PeerError):
                await peer.ping(timeout=2.0, announce=announce)
        await asyncio.sleep(0.3)
        total = 0
        for peer in list(self.peers.values()):
            try:
                async for batch in peer.export(self.id, self.doc.version):
                    total += self.local_apply(batch, [])[0]
            except PeerError as exc:
                log.warning("refill: skipping %s: %s", peer.id, exc)
        log.info("refill: took back %d keys", total)
        self.set_ready(True, f"refilled {total} keys")

    async def watch_ring_file(self, path: Path, every: float = 0.5) -> None:
        """ConfigMaps arrive as a mounted file swapped atomically: poll its identity."""
        seen: tuple[int, int, int] | None = None
        while True:
            try:
                st = path.stat()
                ident = (st.st_ino, st.st_mtime_ns, st.st_size)
                if ident != seen:
                    seen = ident
                    self.update_ring(RingDoc.from_json(orjson.loads(path.read_bytes())),
                                     f"file {path}")
            except FileNotFoundError:
                pass
            except (OSError, ValueError, RingError) as exc:
                log.error("ring file %s unusable, keeping v%d: %s", path, self.doc.version, exc)
            await asyncio.sleep(every)

    async def gossip_rings(self) -> None:
        """Pull a newer ring from any peer that has one, so a missed push still converges."""
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            for peer_id, health in list(self.membership.health.items()):
                if health.alive and health.ring_version > self.doc.version:
                    with contextlib.suppress(PeerError):
                        try:
                            doc = RingDoc.from_json(await self.peer(peer_id).get_ring())
                            self.update_ring(doc, f"peer {peer_id}")
                        except RingError as exc:
                            log.warning("ring from peer %s refused, keeping v%d: %s", peer_id,
                                        self.doc.version, exc)


def peer_check(app: web.Application, node: ClusterNode) -> None:
    config = app[CONFIG]

    def check(request: web.Request) -> None:
        transport = request.transport
        if config.tls_ca and transport is not None and transport.get_extra_info("peercert"):
            return  # verified by the TLS layer against the cluster CA
        given = request.headers.get(SECRET_HEADER)
        if config.cluster_secret and given is not None and keys_match(given,
                                                                        config.cluster_secret):
            return
        # The data API key is not a peer credential, not even for reads: people and
        # clients read GET /status.
        raise ApiError(403, "forbidden", "cluster endpoints accept only peers (a peer "
                       "certificate or the cluster secret); for the node's view of the "
                       "cluster, GET /status with the API key")

    app[PEER_CHECK] = check


async def _cluster_ctx(app: web.Application) -> AsyncIterator[None]:
    node = app[CLUSTER]
    assert node is not None, "set up by setup_cluster"
    config = node.config
    ssl_ctx = (client_ssl_context(config.tls_cert, config.tls_key, config.tls_ca)
               if config.tls_enabled else None)
    node.client_ssl = ssl_ctx
    node.session = make_session(config.cluster_secret, ssl_ctx)
    tasks = []
    if config.ring_file:
        path = Path(config.ring_file)
        if path.exists():
            # The watcher's first look reports (once) why a file is unusable.
            with contextlib.suppress(ValueError, RingError, OSError):
                node.update_ring(RingDoc.from_json(orjson.loads(path.read_bytes())), "file")
        tasks.append(asyncio.create_task(node.watch_ring_file(path), name="ring-file"))
    node.migration.placed_version = node.doc.version  # a fresh start has nothing misplaced
    tasks.append(asyncio.create_task(
        node.membership.run(lambda: list(node.peers.values())), name="heartbeats"))
    tasks.append(asyncio.create_task(node.gossip_rings(), name="ring-gossip"))
    tasks.append(asyncio.create_task(node.migration.run(), name="migration"))
    tasks.append(asyncio.create_task(node.refill(), name="refill"))
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for peer in node.peers.values():
        if peer.fast is not None:
            peer.fast.close()
    await node.session.close()


def setup_cluster(app: web.Application) -> None:
    from distcache_node.cluster.metrics import ClusterCollector
    from distcache_node.cluster.router import ClusterRouter
    from distcache_node.cluster.routes import setup_cluster_routes

    config = app[CONFIG]
    node = ClusterNode(config, app[STORE], app[READY])
    app[METRICS].registry.register(ClusterCollector(node))
    node.set_ready(False, "starting")
    app[CLUSTER] = node
    app[BACKEND] = ClusterRouter(node)
    peer_check(app, node)
    setup_cluster_routes(app)
    app.cleanup_ctx.append(_cluster_ctx)
