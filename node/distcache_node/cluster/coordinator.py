"""The membership-change protocol, shared by the local runner and the operator.

Scale up:   add members as `joining` -> every node adopts the ring and finishes migrating
            -> mark them `active`.
Scale down: check that the members that stay can hold the data -> mark members `leaving`
            -> every node adopts the ring and finishes placing it (the surviving copy of
            each key is sent to its new owner) -> remove them from the ring. Only then may
            their processes stop.

Every step reads the ring from where it is kept (a file, a ConfigMap) and writes it back with
compare-and-swap, so two coordinators never interleave a change and a coordinator that
restarts half-way resumes from what the ring says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from distcache_node.cluster.peers import PeerClient, PeerError
from distcache_node.cluster.ring import Member, RingDoc, RingError

log = logging.getLogger("distcache.coordinator")
POLL = 0.1  # seconds between status polls while waiting for a ring to settle
CONFIRM = 0.3  # before removing members: settled twice this far apart (see wait_settled)
HEADROOM = 0.85  # a node is "full" past this share of --max-memory (placement spreads ±10%)


class RingConflict(RuntimeError):
    """The stored ring is not the one the change was computed from (another writer won)."""


class RingStore(Protocol):
    async def load(self) -> RingDoc: ...

    async def save(self, doc: RingDoc, expected: RingDoc | None) -> None:
        """Store `doc` only if the stored ring is still `expected` (None: nothing stored);
        raise RingConflict otherwise."""
        ...


class CoordinatorError(RuntimeError):
    pass


class CapacityError(CoordinatorError):
    """A shrink the remaining members cannot hold."""

    def __init__(self, check: CapacityCheck) -> None:
        super().__init__(check.message)
        self.check = check


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
        timeout: float = 300.0,
        on_progress: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.store = store
        self.client_for = client_for
        self.timeout = timeout
        self.on_progress = on_progress or (lambda phase, info: None)

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

    async def wait_settled(self, doc: RingDoc, confirm: bool = False) -> None:
        """Until every member runs this ring version and has finished placing it. With
        `confirm` (members are about to be removed and stopped), settled twice CONFIRM
        apart: a write still in flight on the old ring that lands on a leaving member
        re-wakes its migration, and the second look catches it."""
        deadline = time.monotonic() + self.timeout
        settled_since: float | None = None
        while True:
            pending = self.pending(doc, await self.statuses(doc.members))
            self.on_progress("migrating", {"version": doc.version, "pending": pending})
            if not pending:
                if not confirm or (settled_since is not None
                                   and time.monotonic() - settled_since >= CONFIRM):
                    return
                settled_since = settled_since or time.monotonic()
            else:
                settled_since = None
            if time.monotonic() > deadline:
                raise CoordinatorError(f"ring v{doc.version} did not settle: {pending}")
            await asyncio.sleep(POLL)

    async def add_members(self, new: Sequence[Member]) -> RingDoc:
        doc = await self.store.load()
        known = {m.id for m in doc.members}
        joining = [Member(m.id, m.url, "joining") for m in new if m.id not in known]
        if joining:
            doc = await self.publish(doc.with_members([*doc.members, *joining]), doc)
        await self.wait_settled(doc)
        ids = {m.id for m in new}
        if any(m.state == "joining" for m in doc.members if m.id in ids):
            doc = await self.publish(doc.with_state(ids, "active"), doc)
            await self.wait_settled(doc)
        return doc

    async def capacity_for(self, doc: RingDoc, leaving: set[str]) -> CapacityCheck:
        statuses = await self.statuses(doc.members)
        remaining = [m.id for m in doc.members if m.id not in leaving]
        return check_capacity(statuses, remaining, doc.replication)

    async def remove_members(self, member_ids: Sequence[str], force: bool = False) -> RingDoc:
        """Drain and remove members. Refuses (CapacityError, nothing changed) when the rest
        cannot hold the data, unless `force`."""
        doc = await self.store.load()
        ids = {i for i in member_ids if doc.member(i) is not None}
        if not ids:
            return doc
        if any(m.state != "leaving" for m in doc.members if m.id in ids):
            check = await self.capacity_for(doc, ids)
            if not check.ok and not force:
                raise CapacityError(check)
            doc = await self.publish(doc.with_state(ids, "leaving"), doc)
        await self.wait_settled(doc, confirm=True)
        final = doc.with_members(m for m in doc.members if m.id not in ids)
        await self.store.save(final, doc)
        # The leaving members hear it too, so they stop serving as members.
        await self.push(final, doc.members)
        await self.wait_settled(final)
        return final
