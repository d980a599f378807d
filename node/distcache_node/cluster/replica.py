"""This node's share of the data as peers see it: the reads, writes and increments that
other nodes (and this one, as a coordinator) ask of its store. Versions received move the
node's clock; replies say what the store holds, so a coordinator counts only real copies."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from distcache_node.cluster.peers import WireEntry
from distcache_node.cluster.replication import ApplyResult

if TYPE_CHECKING:
    from distcache_node.cluster.node import ClusterNode

RING_SETTLE = 30.0  # seconds after a ring change in which late writes may use the old ring


class Replica:
    def __init__(self, node: ClusterNode) -> None:
        self.node = node

    def get(self, keys: list[str]) -> list[WireEntry]:
        out: list[WireEntry] = []
        store = self.node.store
        for key in keys:
            entry = store.get_with_ttl(key)
            if entry is not None:
                out.append((key, entry[0], entry[1], store.version(key)))
        return out

    def apply(
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
        store, observe = self.node.store, self.node.clock.observe
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
        recent = self.node.in_flux() or now - self.node.ring_changed_at < RING_SETTLE
        if (entries or deletes) and recent and (
                sender_ring is None or sender_ring < self.node.doc.version):
            owners, me = self.node.target.owners, self.node.id
            for key in [e[0] for e in entries] + [d[0] for d in deletes]:
                if me not in owners(key):
                    self.node.migration.note_stray(key)
        return ApplyResult(applied, deleted, not_held, newer)

    def incr(self, key: str, delta: int, ttl: float | None) -> WireEntry:
        version = self.node.clock.next()
        value = self.node.store.incr(key, delta, ttl, version)
        return key, str(value).encode(), self.node.store.ttl(key), version

