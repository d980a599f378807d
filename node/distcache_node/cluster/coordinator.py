"""A coordinator's I/O with the members and the ring record, and the capacity check.

What to do next is decided by the one membership state machine (cluster/resize.py), for the
operator and `distcache local scale` alike; this module carries it out and observes for it:
publish a ring (compare-and-swap on the ring record, then push it to the members), push one
again, read each member's status and the ring it holds, and say what keeps a ring from being
settled (`pending`).

Every write to the ring record is a compare-and-swap on the ring read before, so two
coordinators never interleave a change and a coordinator that restarts half-way resumes from
what the ring says.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from distcache_node.cluster.peers import PeerClient, PeerError
from distcache_node.cluster.ring import Member, RingDoc, RingError

HEADROOM = 0.85  # a node is "full" past this share of --max-memory (placement spreads ±10%)


class RingConflict(RuntimeError):
    """The stored ring is not the one the change was computed from (another writer won)."""


class RingStore(Protocol):
    async def load(self) -> RingDoc: ...

    async def save(self, doc: RingDoc, expected: RingDoc | None) -> None:
        """Store `doc` only if the stored ring is still `expected` (None: nothing stored);
        raise RingConflict otherwise."""
        ...


@dataclass(frozen=True)
class CapacityCheck:
    """Can `remaining` members hold what the cluster holds now, at the replication factor?"""

    ok: bool
    bytes_needed: int  # per remaining member, on average, after the change
    bytes_allowed: int  # per remaining member: HEADROOM of its limit (the smallest)
    missing: int  # bytes the remaining members lack in all
    message: str


def check_capacity(
    statuses: Mapping[str, Mapping[str, Any] | None], remaining: Sequence[str],
    replication: int, new_replication: int | None = None,
) -> CapacityCheck:
    """From each member's reported bytes_used and max_memory. Every member counts all its
    copies, so the data is sum(bytes_used) / copies-now, and after the change each key has
    min(R, len(remaining)) copies spread over the remaining members (R: `new_replication`
    when the change raises the replication factor)."""
    reported = {m: s for m, s in statuses.items() if s is not None}
    if not remaining:
        return CapacityCheck(False, 0, 0, 0, "a cluster needs at least one member")
    unknown = [m for m in statuses if statuses[m] is None]
    copies_now = max(1, min(replication, len(statuses)))
    data = sum(int(s["bytes_used"]) for s in reported.values()) / copies_now
    copies_after = min(new_replication or replication, len(remaining))
    per_member = data * copies_after / len(remaining)
    limits = [int(reported[m]["max_memory"]) for m in remaining if m in reported]
    if not limits:
        return CapacityCheck(False, int(per_member), 0, 0,
                             "no remaining member reported its memory limit")
    allowed = int(min(limits) * HEADROOM)
    missing = max(0, int((per_member - allowed) * len(remaining)))
    mib = 1024 * 1024
    if missing:
        message = (f"the {len(remaining)} remaining member(s) cannot hold the data: each would "
                   f"need {per_member / mib:.1f} MiB, the limit allows {allowed / mib:.1f} MiB "
                   f"({HEADROOM:.0%} of {min(limits) / mib:.1f} MiB); {missing / mib:.1f} MiB "
                   f"missing at replication {copies_after}")
    else:
        message = (f"fits: {per_member / mib:.1f} MiB per member of {allowed / mib:.1f} MiB "
                   "allowed")
    if unknown:
        message += f" (no status from {', '.join(sorted(unknown))}: not counted)"
    return CapacityCheck(not missing, int(per_member), allowed, missing, message)


class Coordinator:
    def __init__(
        self,
        store: RingStore,
        client_for: Callable[[Member], PeerClient],
    ) -> None:
        self.store = store
        self.client_for = client_for

    async def publish(self, doc: RingDoc, expected: RingDoc | None) -> RingDoc:
        """Persist the ring (compare-and-swap on `expected`), then push it to every member
        for immediate effect."""
        await self.store.save(doc, expected)
        await self.push(doc, doc.members)
        return doc

    async def push(self, doc: RingDoc, members: Sequence[Member]) -> None:
        await asyncio.gather(*(self._push(m, doc) for m in members))

    async def _push(self, member: Member, doc: RingDoc) -> None:
        with contextlib.suppress(PeerError):  # a node that is down reads the file later
            await self.client_for(member).put_ring(doc.to_json())

    async def statuses(self, members: Sequence[Member]) -> dict[str, dict[str, Any] | None]:
        async def one(member: Member) -> dict[str, Any] | None:
            try:
                return await self.client_for(member).status()
            except PeerError:
                return None

        results = await asyncio.gather(*(one(m) for m in members))
        return {m.id: r for m, r in zip(members, results, strict=True)}

    async def rings(self, members: Sequence[Member]) -> dict[str, RingDoc]:
        """The ring each member holds (GET /cluster/ring); members that do not answer, or
        answer with a document that is not a ring, are left out."""
        async def one(member: Member) -> RingDoc | None:
            try:
                return RingDoc.from_json(await self.client_for(member).get_ring())
            except (PeerError, RingError):
                return None

        results = await asyncio.gather(*(one(m) for m in members))
        return {m.id: r for m, r in zip(members, results, strict=True) if r is not None}

    @staticmethod
    def pending(doc: RingDoc, statuses: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
        """What keeps `doc` from being settled, one line per member (empty: settled)."""
        pending = []
        for member in doc.members:
            status = statuses.get(member.id)
            if status is None:
                pending.append(f"{member.id}: unreachable")
                continue
            migration = status["migration"]
            if status["ring_version"] < doc.version:
                pending.append(f"{member.id}: on ring v{status['ring_version']}")
            elif status["ring_version"] > doc.version:
                # A node on a newer ring than this one ignores it (an older version changes
                # nothing on a node): `doc` was replaced behind its back (a ring file or
                # ConfigMap deleted and written again from scratch). A conflict to resolve,
                # never settled: members that ring leaves out may hold keys never drained.
                pending.append(f"{member.id}: on ring v{status['ring_version']}, ahead of "
                               f"v{doc.version} (conflict)")
            elif not migration["done"] or migration["placed_version"] < doc.version:
                pending.append(f"{member.id}: {migration['keys_remaining']} keys to move "
                               f"({migration.get('reason', '')})")
            elif down := [p for p, h in status.get("peers", {}).items()
                          if not h.get("alive", True) and doc.member(p) is not None]:
                # A member that counts another one down writes around it: not a settled
                # cluster yet (a restarted node is counted alive once it announces itself).
                pending.append(f"{member.id}: sees {', '.join(sorted(down))} down")
            elif migration.get("surplus") and member.state != "leaving":
                # Settled means R copies of every key: not yet where old owners still hold
                # copies that new owners took from someone else. (A leaving member's are
                # gone with it.)
                pending.append(f"{member.id}: {migration['surplus']} copies to drop once "
                               "every member has placed the ring")
        return pending
