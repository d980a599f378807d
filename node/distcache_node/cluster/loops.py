"""A clustered node's background work: taking its share back after a restart, following
the mounted ring file, and pulling newer rings from peers (gossip)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from distcache_node.cluster.peers import PeerClient, PeerError
from distcache_node.cluster.ring import RingDoc, RingError

if TYPE_CHECKING:
    from distcache_node.cluster.node import ClusterNode

log = logging.getLogger("distcache.cluster")


async def announce(node: ClusterNode, ready: bool, stopping: bool = False) -> None:
    """Tell every peer we are up, with which boot: a peer that saw our port refused (we were
    starting, or an earlier process with our id stopped) counts us alive at once instead of
    at its next probe, so writes include us straight away. `stopping`: we got SIGTERM, route
    around us from now on (a peer of an older version reads it as 'not ready')."""
    message = f"{node.id} {node.boot_id} {'s' if stopping else int(ready)}"

    async def one(peer: PeerClient) -> None:
        with contextlib.suppress(PeerError):
            await peer.ping(timeout=2.0 if not stopping else 1.0, announce=message)

    await asyncio.gather(*(one(peer) for peer in list(node.peers.values())))


REACH_WAIT = 15.0  # seconds a restarted node waits for every live peer's heartbeat


async def refill(node: ClusterNode) -> None:
    """A member restarted empty takes back its share from peers before it is ready; and
    again whenever a peer says it sent writes around this process while it was up."""
    await take_share(node, first=True)
    while True:
        await node.resync.wait()
        node.resync.clear()  # a request arriving while we copy asks for one more round
        await take_share(node, first=False)


async def take_share(node: ClusterNode, first: bool) -> None:
    me = node.doc.member(node.id)
    if me is None or me.state != "active" or not node.peers:
        if first:
            node.set_ready(True, "no share to take back")
            await announce(node, ready=True)
        return
    node.set_ready(False, "refilling from peers" if first
                   else "re-syncing: a peer sent writes around this node")
    if first:
        # First make every peer count us alive, so new writes reach us while we copy.
        await announce(node, ready=False)
        # Then wait until each of them has reached us. A restarted pod's name can take
        # seconds to resolve to its new address: a write a peer cannot deliver here meanwhile
        # goes to a stand-in, and is only in what we copy if we copy after that.
        await _reached_by_every_peer(node)
    # A short grace for writes already in flight without us.
    await asyncio.sleep(0.3)
    total = 0
    for peer in list(node.peers.values()):
        try:
            async for entries, deletes in peer.export(node.id, node.doc.version):
                total += node.replica.apply(entries, deletes)[0]
        except PeerError as exc:
            log.warning("refill: skipping %s: %s", peer.id, exc)
    log.info("refill: took back %d keys", total)
    if not node.stopping:
        node.set_ready(True, f"refilled {total} keys")


async def _reached_by_every_peer(node: ClusterNode) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REACH_WAIT
    while True:
        waiting = sorted(p for p in node.peers
                         if p not in node.reached and node.membership.is_alive(p))
        if not waiting:
            return
        if loop.time() > deadline:
            log.warning("refill: no heartbeat from %s in %.0f s; taking the share back anyway",
                        ", ".join(waiting), REACH_WAIT)
            return
        await asyncio.sleep(0.05)


async def watch_ring_file(node: ClusterNode, path: Path, every: float = 0.5) -> None:
    """ConfigMaps arrive as a mounted file swapped atomically: poll its identity."""
    seen: tuple[int, int, int] | None = None
    while True:
        try:
            st = path.stat()
            ident = (st.st_ino, st.st_mtime_ns, st.st_size)
            if ident != seen:
                seen = ident
                node.update_ring(RingDoc.from_json(orjson.loads(path.read_bytes())),
                                 f"file {path}")
        except FileNotFoundError:
            pass
        except (OSError, ValueError, RingError) as exc:
            log.error("ring file %s unusable, keeping v%d: %s", path, node.doc.version, exc)
        await asyncio.sleep(every)

async def gossip_rings(node: ClusterNode) -> None:
    """Pull a newer ring from any peer that has one, so a missed push still converges."""
    while True:
        await asyncio.sleep(node.config.heartbeat_interval)
        for peer_id, health in list(node.membership.health.items()):
            if health.alive and health.ring_version > node.doc.version:
                with contextlib.suppress(PeerError):
                    try:
                        doc = RingDoc.from_json(await node.peer(peer_id).get_ring())
                        node.update_ring(doc, f"peer {peer_id}")
                    except RingError as exc:
                        log.warning("ring from peer %s refused, keeping v%d: %s", peer_id,
                                    node.doc.version, exc)
