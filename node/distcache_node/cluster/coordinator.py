"""The membership-change protocol, shared by the local runner and the operator.

Scale up:   add members as `joining` -> every node adopts the ring and finishes migrating
            -> mark them `active`.
Scale down: mark members `leaving` -> every node adopts the ring -> ask the leaving nodes
            to drain -> wait until they hold no keys and every node has finished migrating
            -> remove them from the ring. Only then may their processes stop.

Every step reads the ring from where it is kept (a file, a ConfigMap) and writes it back, so
a coordinator that restarts half-way resumes from what the ring says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from distcache_node.cluster.peers import PeerClient, PeerError
from distcache_node.cluster.ring import Member, RingDoc

log = logging.getLogger("distcache.coordinator")


class RingStore(Protocol):
    async def load(self) -> RingDoc: ...
    async def save(self, doc: RingDoc) -> None: ...


class CoordinatorError(RuntimeError):
    pass


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

    async def publish(self, doc: RingDoc) -> RingDoc:
        """Persist the ring, then push it to every member for immediate effect."""
        await self.store.save(doc)
        await asyncio.gather(*(self._push(m, doc) for m in doc.members))
        return doc

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

    async def wait_settled(self, doc: RingDoc, leaving_empty: bool = False) -> None:
        """Until every member runs this ring version and has finished migrating to it."""
        deadline = time.monotonic() + self.timeout
        settled_since: float | None = None
        while True:
            statuses = await self.statuses(doc.members)
            pending = []
            for member in doc.members:
                status = statuses[member.id]
                if status is None:
                    pending.append(f"{member.id}: unreachable")
                    continue
                migration = status["migration"]
                if status["ring_version"] < doc.version:
                    pending.append(f"{member.id}: on ring v{status['ring_version']}")
                elif not migration["done"] or migration["placed_version"] < doc.version:
                    pending.append(f"{member.id}: {migration['keys_remaining']} keys to move")
                elif leaving_empty and member.state == "leaving" and status["keys"] > 0:
                    pending.append(f"{member.id}: still holds {status['keys']} keys")
            self.on_progress("migrating", {"version": doc.version, "pending": pending})
            if not pending:
                # Settled twice in a row, a beat apart: late writes on the old ring re-wake
                # migration, and this catches them.
                if settled_since is not None and time.monotonic() - settled_since >= 0.5:
                    return
                settled_since = settled_since or time.monotonic()
            else:
                settled_since = None
            if time.monotonic() > deadline:
                raise CoordinatorError(f"ring v{doc.version} did not settle: {pending}")
            await asyncio.sleep(0.2)

    async def add_members(self, new: Sequence[Member]) -> RingDoc:
        doc = await self.store.load()
        known = {m.id for m in doc.members}
        joining = [Member(m.id, m.url, "joining") for m in new if m.id not in known]
        if joining:
            doc = await self.publish(doc.with_members([*doc.members, *joining]))
        await self.wait_settled(doc)
        ids = {m.id for m in new}
        if any(m.state == "joining" for m in doc.members if m.id in ids):
            doc = await self.publish(doc.with_state(ids, "active"))
            await self.wait_settled(doc)
        return doc

    async def remove_members(self, member_ids: Sequence[str]) -> RingDoc:
        doc = await self.store.load()
        ids = {i for i in member_ids if doc.member(i) is not None}
        if not ids:
            return doc
        if any(m.state != "leaving" for m in doc.members if m.id in ids):
            doc = await self.publish(doc.with_state(ids, "leaving"))
        await self.wait_settled(doc)
        for member in doc.members:
            if member.id in ids:
                with contextlib.suppress(PeerError):
                    await self.client_for(member).drain()
        await self.wait_settled(doc, leaving_empty=True)
        remaining = [m for m in doc.members if m.id not in ids]
        final = doc.with_members(remaining)
        await self.store.save(final)
        await asyncio.gather(*(self._push(m, final) for m in doc.members))
        await self.wait_settled(final)
        return final
