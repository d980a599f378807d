"""Moving keys to their owners when the ring changes, when a node drains, and when a peer
comes back: one mechanism, a rebalance pass over the local store.

A pass compares where each key should live now (the target ring) with where this node had
placed it (the ring of its last completed pass). Every old owner holds the key, so exactly
one of them sends each new owner its copy: the first live old owner that stays an owner,
else the first live old owner (a leaving node whose partner is gone). That splits the work
between the nodes and sends every copy once. Values keep their remaining TTL and their
version, so a late copy never overwrites a newer write.

A copy this node no longer owns is dropped only when that is safe: at once if this node
delivered it itself, otherwise (another old owner sends it) only after every member reports
that it finished placing this ring version ("surplus" copies, swept later). Copies that are
not where the old ring put them (a stand-in's, or a write that arrived on the old ring after
the change) are handed to the key's live owners by whoever holds them.

Deletes travel too: a node's remembered deletes (tombstones) of keys that move go to the
new owners, and those of keys it does not own to the owners. Without them a copy sent before
a delete reached its holder, or a stand-in's copy, outlives the delete at an owner that
never heard of it.

A pass that fails part-way is retried, and what was delivered is not sent again: progress
only goes backwards when the ring itself changes, and `reason` says so.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from distcache_node.cluster.peers import PeerError, WireEntry
from distcache_node.cluster.ring import Ring, hash64, segments

if TYPE_CHECKING:
    from distcache_node.cluster.node import ClusterNode

log = logging.getLogger("distcache.migration")
BATCH = 2000  # entries (or deletes) per batch at most
# Bytes per batch at most (keys and values), and never over half the receiver's body limit
# (one entry over it still goes alone): 2000 values of 16 KiB would be a 32 MB request,
# refused by a node's default 8 MiB limit, while small batches of large values spend their
# time on round trips instead of bytes.
BATCH_BYTES = 4 * 1024**2
ENTRY_OVERHEAD = 48  # bytes of the batch's head per entry besides its key (ttl, version, ...)
IN_FLIGHT = 3  # batches per destination at once: one sent, one applied, one on its way back
YIELD_EVERY = 20_000  # keys planned between event-loop turns, so requests keep flowing
SWEEP_CHECK = 0.1  # seconds between checks whether surplus copies may be dropped


def batches(entries: Sequence[WireEntry], count: int, size: int
            ) -> Iterator[list[WireEntry]]:
    """`entries` cut into consecutive batches of at most `count` entries and `size` bytes
    (key, value and ENTRY_OVERHEAD each); an entry larger than `size` goes alone."""
    batch: list[WireEntry] = []
    used = 0
    for entry in entries:
        weight = len(entry[0]) + len(entry[1]) + ENTRY_OVERHEAD
        if batch and (len(batch) >= count or used + weight > size):
            yield batch
            batch, used = [], 0
        batch.append(entry)
        used += weight
    if batch:
        yield batch


def choose_sender(
    old: Sequence[str], new: Sequence[str], alive: Callable[[str], bool]
) -> str | None:
    """The one old owner that sends a key's new owners their copy: the first live old owner
    that stays an owner (it keeps serving the key anyway), else the first live old owner."""
    for member in old:
        if member in new and alive(member):
            return member
    return next((m for m in old if alive(m)), None)


# Per segment of the circle: (members to send the key to, drop it here once they took it,
# keep it as surplus until the ring settles). _LOOK_UP: decide per key (not ours).
Decision = tuple[tuple[str, ...], bool, bool]
_LOOK_UP: tuple[str, ...] = ("<look up>",)
_LOOK_UP_DECISION: Decision = (_LOOK_UP, False, False)


@dataclass
class PassPlan:
    """What one node does in one pass, worked out key by key from the two rings alone (no
    I/O): `sends` per member, `handoff` (copies to drop once their owners took them) and
    `surplus` (copies another old owner delivers; dropped when the ring settles)."""

    me: str
    placed: Ring  # where this node's last completed pass put keys
    target: Ring  # where they go now
    alive: Callable[[str], bool]
    live_owners: Callable[[str], list[str]]
    entry_of: Callable[[str], WireEntry | None]  # the store's entry (None: gone meanwhile)
    strays: set[str] = field(default_factory=set)  # keys written here on the old ring late
    delivered: set[str] = field(default_factory=set)  # members that took this pass already
    sends: dict[str, list[WireEntry]] = field(default_factory=lambda: defaultdict(list))
    handoff: list[tuple[WireEntry, list[str]]] = field(default_factory=list)
    surplus: int = 0
    _cuts: list[int] | None = None
    _decisions: list[Decision] = field(default_factory=list)

    def add(self, keys: Iterable[str]) -> None:
        """Plan these keys (only the ones that move are read from the store)."""
        if self._cuts is None:
            self._cuts, self._decisions = self._decide()
        cuts, decisions, size = self._cuts, self._decisions, len(self._cuts)
        strays, sends, delivered, entry_of = self.strays, self.sends, self.delivered, \
            self.entry_of
        if not size:
            return
        for key in keys:
            dests, handoff, surplus = decisions[bisect.bisect(cuts, hash64(key)) % size]
            if strays and key in strays:
                dests, handoff, surplus = self._stray(key)
            if surplus:
                self.surplus += 1
                continue
            if not dests:
                continue
            entry = entry_of(key)
            if entry is None:
                continue  # expired or deleted since the key list was taken
            if dests is _LOOK_UP:
                self._stand_in_or_stray(entry)
                continue
            for member in dests:
                if member not in delivered:
                    sends[member].append(entry)
            if handoff:
                self.handoff.append((entry, list(dests)))

    def _decide(self) -> tuple[list[int], list[Decision]]:
        """What to do with a key, per segment of the circle (same placement inside one)."""
        me = self.me
        cuts, owner_pairs = segments(self.placed, self.target)
        memo: dict[tuple[tuple[str, ...], tuple[str, ...]], Decision] = {}
        decisions = []
        for old, owners in owner_pairs:
            decision = memo.get((old, owners))
            if decision is None:
                if me in old:
                    sender = choose_sender(old, owners, self.alive)
                    if sender == me:
                        # Dead new owners too: the pass retries until they take it.
                        dests = tuple(m for m in owners if m not in old)
                        decision = (dests, me not in owners, False)
                    else:
                        # The sender delivers it; dropped when the ring settles.
                        decision = ((), False, me not in owners)
                elif me in owners:
                    decision = ((), False, False)
                else:
                    decision = _LOOK_UP_DECISION  # not ours by either ring
                memo[(old, owners)] = decision
            decisions.append(decision)
        return cuts, decisions

    def _stray(self, key: str) -> Decision:
        """A write that reached us on the old ring after the change: whoever holds it hands it
        to the key's live owners."""
        if self.me in self.target.owners(key):
            return (), False, False
        return _LOOK_UP_DECISION

    def _stand_in_or_stray(self, entry: WireEntry) -> None:
        dests = self.live_owners(entry[0])
        if self.me in dests:
            return  # standing in for a dead owner: keep the copy for now
        for member in dests:
            self.sends[member].append(entry)
        self.handoff.append((entry, dests))


def plan_deletes(
    me: str, placed: Ring, target: Ring, tombstones: Iterable[tuple[str, int]],
    live_owners: Callable[[str], list[str]], delivered: AbstractSet[str] = frozenset(),
) -> dict[str, list[tuple[str, int]]]:
    """Where this node's deletes go in a pass: to the key's new owners when it is an owner,
    to its live owners when it is not (a stand-in's or a late stray's delete). Every holder
    sends: deletes are small, and an owner applies one only over something older."""
    out: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for key, version in tombstones:
        owners = target.owners(key)
        if me in owners:
            old = placed.owners(key)
            dests = [m for m in owners if m not in old]
        else:
            dests = live_owners(key)
        for member in dests:
            if member != me and member not in delivered:
                out[member].append((key, version))
    return dict(out)


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
        self.reason = "idle"
        self.last_pass_seconds = 0.0
        # Members that took every key of the current pass, by ring version: a retry does not
        # send them again.
        self._delivered: tuple[int, set[str]] = (0, set())
        self.surplus = 0  # copies kept until every member has placed the ring
        self._surplus_from: Ring | None = None  # the placement those copies came from
        self.strays: set[str] = set()  # keys written here on an old ring after the change
        self._not_held: set[str] = set()  # keys a receiver answered it did not keep
        self._wake = asyncio.Event()
        self._sync_targets: set[str] = set()
        # An owner came back: look for copies we hold only as its stand-in (see owner_back).
        self._stand_ins_due = False

    def wake(self) -> None:
        self._wake.set()

    def sync_to(self, peer_id: str) -> None:
        self._sync_targets.add(peer_id)
        self._wake.set()

    def owner_back(self) -> None:
        """A peer is up again. Copies we took while standing in for it go back to the key's
        owners and ours is dropped once every owner holds the key: kept, such a copy is never
        updated again (later writes and deletes go to the owners) and would come back to life
        when a ring change makes us an owner. The owner's refill takes them too; this also
        covers an owner that was only unreachable for a while."""
        self._stand_ins_due = True
        self._wake.set()

    def peer_died(self) -> None:
        """A sender of copies we kept may have died before delivering them: place the ring
        again from where we were, now choosing senders among the living."""
        if self.surplus and self._surplus_from is not None:
            self.placed, self.surplus = self._surplus_from, 0
            self._delivered = (0, set())
            self._wake.set()

    def note_stray(self, key: str) -> None:
        """A write for a key this node does not own arrived (a coordinator on the old ring):
        the next pass hands it to the owners."""
        self.strays.add(key)
        self._wake.set()

    def progress(self) -> dict[str, Any]:
        version = self.node.doc.version
        return {
            "ring_version": version, "placed_version": self.placed_version,
            "running": self.running, "keys_moved": self.keys_moved,
            "keys_remaining": self.keys_remaining, "keys_dropped": self.keys_dropped,
            "done": self.placed_version >= version and not self.running
            and not self._wake.is_set(),
            "surplus": self.surplus,
            "reason": self.reason,
            "last_pass_seconds": round(self.last_pass_seconds, 3),
            "last_error": self.last_error,
        }

    async def run(self) -> None:
        while True:
            if self.surplus:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), SWEEP_CHECK)
                if not self._wake.is_set():
                    await self.sweep()
                    continue
            else:
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

    async def _send(self, member: str, entries: list[WireEntry],
                    deletes: Sequence[tuple[str, int]] = ()) -> int:
        """Stream entries, then deletes, to one member in batches bounded in count and
        bytes, IN_FLIGHT at a time (a new one leaves as soon as one is acknowledged); returns
        how many entries it acknowledged. The first failure stops the stream: the pass is
        retried, and versions make a batch applied twice or out of order harmless."""
        peer = self.node.peer(member)
        sent = 0
        for start in range(0, len(deletes), BATCH):
            await peer.apply((), deletes[start:start + BATCH])
        window = asyncio.Semaphore(IN_FLIGHT)

        async def one(batch: list[WireEntry]) -> None:
            nonlocal sent
            try:
                result = await peer.apply(batch)
            finally:
                window.release()
            # Keys the receiver did not keep (no room even after evicting): our copy must
            # stay, and the pass is not done with them.
            self._not_held.update(result.get("not_held") or ())
            sent += len(batch)
            self.keys_moved += len(batch)
            self.keys_remaining = max(0, self.keys_remaining - len(batch))

        limit = min(BATCH_BYTES, self.node.config.body_limit // 2)
        pending: list[asyncio.Task[None]] = []
        try:
            for batch in batches(entries, BATCH, limit):
                await window.acquire()
                for task in pending:
                    if task.done():
                        task.result()  # a failed batch ends the stream now
                pending = [t for t in pending if not t.done()]
                pending.append(asyncio.create_task(one(batch)))
            for task in pending:
                await task
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        return sent

    async def _send_all(self, plan: dict[str, list[WireEntry]],
                        deletes: dict[str, list[tuple[str, int]]] | None = None) -> set[str]:
        """Send every member its entries (and deletes) in parallel; returns members that
        failed."""
        deletes = deletes or {}
        members = list(dict.fromkeys([*plan, *deletes]))
        results = await asyncio.gather(
            *(self._send(m, plan.get(m, []), deletes.get(m, [])) for m in members),
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
        unchanged = placed.same_placement(target)
        strays, self.strays = self.strays, set()
        # On an unchanged ring a pass only has work for keys that are not ours (stand-in
        # copies, strays): planning every key finds those.
        stand_ins, self._stand_ins_due = self._stand_ins_due, False
        if unchanged and not strays and not stand_ins:
            self._finish(doc.version, target, planned=False)
            return True
        if self._delivered[0] != doc.version:
            self._delivered = (doc.version, set())
            self.reason = f"placing ring v{doc.version}"
        delivered = self._delivered[1]
        started = time.monotonic()
        pass_plan = PassPlan(node.id, placed, target, node.is_alive, node.live_owners,
                             node.store.entry, strays, delivered)
        keys = node.store.keys()
        for start in range(0, len(keys), YIELD_EVERY):
            pass_plan.add(keys[start:start + YIELD_EVERY])
            await asyncio.sleep(0)  # requests keep flowing while a big store is planned
        plan, handoff, surplus = pass_plan.sends, pass_plan.handoff, pass_plan.surplus
        deletes = plan_deletes(node.id, placed, target, node.store.deletes(),
                               node.live_owners, delivered)
        self.keys_remaining = sum(len(v) for v in plan.values())
        self._not_held = set()
        failed = await self._send_all(plan, deletes) if plan or deletes else set()
        refused = self._not_held
        delivered.update(m for m in [*plan, *deletes] if m not in failed)
        store = node.store
        for (key, _, _, version), dests in handoff:
            # Drop our copy only once every natural owner holds the key: with an owner down,
            # we stay one of the copies until it is back.
            if (set(target.owners(key)) <= set(dests) and not failed.intersection(dests)
                    and key not in refused and store.version(key) == version):
                store.delete(key)
                self.keys_dropped += 1
        self.last_pass_seconds = time.monotonic() - started
        if refused and not failed:
            log.warning("ring v%d: %d keys were not kept by their new owners (full?); "
                        "keeping our copies", doc.version, len(refused))
            self.last_error = f"{len(refused)} keys not kept by their new owners (full?)"
            self.strays |= refused  # offered again on the next pass, never swept
        if failed or node.doc.version != doc.version:
            self.strays |= strays
            self._stand_ins_due |= stand_ins
            self.reason = (f"ring changed to v{node.doc.version}; starting over"
                           if node.doc.version != doc.version
                           else f"retrying: {', '.join(sorted(failed))} did not take keys")
            return False
        if plan:
            log.info("rebalance to ring v%d: sent %d entries, handed off %d, %d left for the "
                     "sender, in %.2fs", doc.version, sum(len(v) for v in plan.values()),
                     len(handoff), surplus, self.last_pass_seconds)
        self.surplus, self._surplus_from = surplus, placed if surplus else None
        self._finish(doc.version, target, planned=True)
        return True

    def _finish(self, version: int, target: Ring, planned: bool) -> None:
        self.placed, self.placed_version = target, version
        self.keys_remaining = 0
        self.reason = f"placed ring v{version}" if planned else self.reason

    async def sweep(self) -> None:
        """Drop copies another old owner delivered, once every member has placed this ring
        (so each of those copies is on all its new owners). Peers that have not said so yet
        are asked at once rather than at their next heartbeat."""
        node = self.node
        version = node.doc.version
        if self.placed_version != version:
            return  # a pass for the new ring comes first
        behind = [p for p in node.peers if node.membership.placed_version(p) < version]
        if behind:
            await asyncio.gather(*(node.membership.probe(node.peers[p]) for p in behind))
            if any(node.membership.placed_version(p) < version for p in behind):
                return
        if node.doc.version != version or self._wake.is_set():
            return
        dropped = 0
        store, target, me = node.store, node.target, node.id
        if me not in target.members and not self.strays:
            dropped = len(store)  # leaving: nothing here is ours any more
            store.clear()
        else:
            keys = store.keys()
            for start in range(0, len(keys), YIELD_EVERY):
                for key in keys[start:start + YIELD_EVERY]:
                    if (me not in target.owners(key) and me not in node.live_owners(key)
                            and key not in self.strays and store.delete(key)):
                        dropped += 1
                await asyncio.sleep(0)  # keep answering while a big store is swept
                if node.doc.version != version or self._wake.is_set():
                    break  # a new ring or a late write: the next pass comes first
        self.keys_dropped += dropped
        if node.doc.version != version or self._wake.is_set():
            return
        self.surplus = 0
        log.info("ring v%d placed everywhere: dropped %d copies other owners delivered",
                 version, dropped)

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
