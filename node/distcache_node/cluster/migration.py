"""Moving keys to their owners when the ring changes, when a node drains, and when a peer
comes back: one mechanism, a rebalance pass over the local store.

A pass compares where each key should live now (the target ring) with where this node had
placed it (the ring of its last completed pass). New owners receive the key; a key this node
no longer owns is handed to its live owners and dropped here only once they all hold it, and
only if no newer write arrived meanwhile. Values keep their remaining TTL and their version,
so a late copy never overwrites a newer write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from distcache_node.cluster.peers import PeerError, WireEntry
from distcache_node.cluster.ring import Ring

if TYPE_CHECKING:
    from distcache_node.cluster.node import ClusterNode

log = logging.getLogger("distcache.migration")
BATCH = 2000
IN_FLIGHT = 2  # batches per destination at once


class Migration:
    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.placed: Ring | None = None
        self.placed_version = 0
        self.running = False
        self.keys_moved = 0
        self.keys_remaining = 0
        self.keys_dropped = 0
        self.last_error = ""
        self.last_pass_seconds = 0.0
        self._wake = asyncio.Event()
        self._sync_targets: set[str] = set()

    def wake(self) -> None:
        self._wake.set()

    def sync_to(self, peer_id: str) -> None:
        self._sync_targets.add(peer_id)
        self._wake.set()

    def progress(self) -> dict[str, Any]:
        version = self.node.doc.version
        return {
            "ring_version": version, "placed_version": self.placed_version,
            "running": self.running, "keys_moved": self.keys_moved,
            "keys_remaining": self.keys_remaining, "keys_dropped": self.keys_dropped,
            "done": self.placed_version >= version and not self.running
            and not self._wake.is_set(),
            "last_pass_seconds": round(self.last_pass_seconds, 3),
            "last_error": self.last_error,
        }

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self.running = True
            try:
                ok = await self._sync_recovered() and await self.rebalance()
            except Exception as exc:  # keep migrating whatever one pass hit
                log.exception("migration pass failed")
                self.last_error, ok = repr(exc), False
            finally:
                self.running = False
            if not ok:
                await asyncio.sleep(0.5)
                self._wake.set()

    async def _send(self, member: str, entries: list[WireEntry]) -> int:
        """Stream entries to one member in batches; returns how many it acknowledged."""
        peer = self.node.peer(member)
        sent = 0
        batches = [entries[i:i + BATCH] for i in range(0, len(entries), BATCH)]
        for start in range(0, len(batches), IN_FLIGHT):
            group = batches[start:start + IN_FLIGHT]
            await asyncio.gather(*(peer.apply(batch) for batch in group))
            done = sum(len(b) for b in group)
            sent += done
            self.keys_moved += done
            self.keys_remaining = max(0, self.keys_remaining - done)
        return sent

    async def _send_all(self, plan: dict[str, list[WireEntry]]) -> set[str]:
        """Send every member its entries in parallel; returns members that failed."""
        members = list(plan)
        results = await asyncio.gather(*(self._send(m, plan[m]) for m in members),
                                       return_exceptions=True)
        failed: set[str] = set()
        for member, result in zip(members, results, strict=True):
            if isinstance(result, PeerError):
                self.node.report(result)
                self.last_error = str(result)
                failed.add(member)
            elif isinstance(result, BaseException):
                raise result
        return failed

    async def rebalance(self) -> bool:
        node = self.node
        doc, target = node.doc, node.target
        placed = self.placed if self.placed is not None else target
        started = time.monotonic()
        plan: dict[str, list[WireEntry]] = defaultdict(list)
        handoff: list[tuple[WireEntry, list[str]]] = []
        for entry in node.store.entries():
            key = entry[0]
            owners = target.owners(key)
            if node.id in owners:
                if placed is target:
                    continue
                old = placed.owners(key)
                # Dead new owners too: the pass then fails and retries until they take it.
                # (A joining node has no copy anywhere else to refill from.)
                for member in owners:
                    if member != node.id and member not in old:
                        plan[member].append(entry)
            else:
                dests = node.live_owners(key)
                if node.id in dests:
                    continue  # standing in for a dead owner: keep the copy for now
                for member in dests:
                    plan[member].append(entry)
                handoff.append((entry, dests))
        self.keys_remaining = sum(len(v) for v in plan.values())
        failed = await self._send_all(plan) if plan else set()
        store = node.store
        for (key, _, _, version), dests in handoff:
            # Drop our copy only once every natural owner holds the key: with an owner down,
            # we stay one of the copies until it is back.
            if (set(target.owners(key)) <= set(dests) and not failed.intersection(dests)
                    and store.version(key) == version):
                store.delete(key)
                self.keys_dropped += 1
        self.last_pass_seconds = time.monotonic() - started
        if failed or node.doc.version != doc.version:
            return False
        if plan:
            log.info("rebalance to ring v%d: sent %d entries, dropped %d, in %.2fs",
                     doc.version, sum(len(v) for v in plan.values()), len(handoff),
                     self.last_pass_seconds)
        self.placed, self.placed_version = target, doc.version
        self.keys_remaining = 0
        return True

    async def _sync_recovered(self) -> bool:
        """Push a peer back after a suspicion everything it owns that we hold."""
        node = self.node
        targets, self._sync_targets = self._sync_targets, set()
        if not targets:
            return True
        plan: dict[str, list[WireEntry]] = defaultdict(list)
        for entry in node.store.entries():
            for member in node.target.owners(entry[0]):
                if member in targets:
                    plan[member].append(entry)
        failed = await self._send_all(plan)
        self._sync_targets |= failed
        return not failed
