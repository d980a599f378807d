"""The cluster's Backend: places each key on the ring, reads from the first ready owner with
fail-over, and writes to every live owner before acknowledging.

A replica counts towards a write's quorum only when it answers that it holds that write or
a newer one. When a replica already holds a newer version, the coordinator's clock had not
yet seen it (the clocks move past every version they receive, see replication.py, but a
coordinator that is not an owner may never have received it). The client's write is still
in flight, so every write the replica holds either completed before it began or is
concurrent with it; either way ordering the client's write last is correct, and it is what
the client expects of a write issued after an acknowledged one. So the coordinator takes in
the newer version and re-issues the write with a version above it to every owner, once: by
then it has seen the newest version every live owner held, which includes every write
acknowledged before this one began, so a still newer version met after that belongs to a
concurrent write, and this write counts as acknowledged and superseded by it (the order
last-writer-wins gives two concurrent writes). That bounds the rounds under contention.
Writes without a value of their own (incr, serialised on the primary, which has seen every
version of the key) always count a newer version as superseded.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Sequence

from distcache_node import deadline
from distcache_node.backend import REMOTE, Entry, Item
from distcache_node.cluster.node import ClusterNode
from distcache_node.cluster.peers import PeerError, WireEntry
from distcache_node.cluster.replication import ApplyResult, required_acks
from distcache_node.errors import CacheError, Conflict, TimedOut, TooLarge, Unavailable

# Errors the key's primary answers /cluster/incr with that are the client's to see, by code,
# as the kind of refusal they are here.
PRIMARY_VERDICTS: dict[str, type[CacheError]] = {
    "not_an_integer": Conflict, "value_too_large": TooLarge}
MAX_ROUNDS = 4  # write fan-out rounds: each replaces owners that failed in the last


def _unavailable(message: str) -> Unavailable:
    return Unavailable(message, retry_after=1)


class ClusterRouter:
    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        # Peers whose last call went unanswered (silence, not a refusal), until when: reads
        # ask them last until the heartbeat has had time to judge them, so a peer that drops
        # packets costs one peer timeout, not one per read.
        self._silent: dict[str, float] = {}

    def _failed(self, exc: PeerError) -> None:
        self.node.report(exc)
        if exc.unreachable and not exc.refused:
            self._silent[exc.peer] = time.monotonic() + self.node.config.suspect_after

    def _candidates(self, key: str) -> list[tuple[str, bool]]:
        """read_candidates, with silent peers moved last."""
        candidates = self.node.read_candidates(key)
        if self._silent:
            now = time.monotonic()
            if any(until <= now for until in self._silent.values()):
                self._silent = {m: until for m, until in self._silent.items() if until > now}
            silent = self._silent
            if any(member in silent for member, _ in candidates):
                candidates = ([c for c in candidates if c[0] not in silent]
                              + [c for c in candidates if c[0] in silent])
        return candidates

    # -- reads ---------------------------------------------------------------------------------
    async def _fetch(self, member: str, keys: list[str]) -> list[WireEntry]:
        if member == self.node.id:
            return self.node.replica.get(keys)
        return await self.node.peer(member).get_many(keys)

    async def read_many(self, keys: list[str]) -> dict[str, WireEntry]:
        """Ask each key's first candidate; on a failure, or a miss that is not final (see
        ClusterNode.read_candidates), ask the next. A key no owner could answer for is a 503,
        never a false 'not found'."""
        node = self.node
        found: dict[str, WireEntry] = {}
        answered: set[str] = set()
        candidates = {key: self._candidates(key) for key in keys}
        step = dict.fromkeys(keys, 0)
        pending = list(keys)
        while pending:
            plan: dict[str, list[str]] = defaultdict(list)
            for key in pending:
                if step[key] < len(candidates[key]):
                    plan[candidates[key][step[key]][0]].append(key)
            if not plan:
                break
            members = list(plan)
            results = await asyncio.gather(
                *(self._fetch(m, plan[m]) for m in members), return_exceptions=True
            )
            pending = []
            observe = node.clock.observe
            for member, result in zip(members, results, strict=True):
                asked = plan[member]
                if isinstance(result, BaseException):
                    if not isinstance(result, PeerError):
                        raise result
                    self._failed(result)
                    retry = asked
                else:
                    answered.update(asked)
                    for entry in result:
                        found[entry[0]] = entry
                        observe(entry[3])
                    retry = [k for k in asked
                             if k not in found and not candidates[k][step[k]][1]]
                for key in retry:
                    step[key] += 1
                    pending.append(key)
        if any(k not in found and k not in answered for k in keys):
            raise _unavailable("no live owner answered for some keys; retry")
        return found

    def read_local(self, key: str) -> Entry | object | None:
        """This node's own answer when its copy settles the read: it is a ready natural owner
        outside a ring change, so it holds every acknowledged write of the key
        (read_candidates would ask it first and take its miss as final). REMOTE when the
        owners must be asked."""
        node = self.node
        if node.ready and not node.in_flux() and node.id in node.target.owners(key):
            return node.store.get_with_ttl(key)
        return REMOTE

    async def get(self, key: str) -> Entry | None:
        """read_many for one key, without its batching: the hot path of forwarded GETs."""
        node = self.node
        answered = False
        for member, final in self._candidates(key):
            if member == node.id:
                entry = node.store.get_with_ttl(key)
            else:
                try:
                    got = await node.peer(member).get_one(key)
                except PeerError as exc:
                    self._failed(exc)
                    continue
                entry = None
                if got is not None:
                    node.clock.observe(got[2])
                    entry = got[0], got[1]
            answered = True
            if entry is not None or final:
                return entry
        if not answered:
            raise _unavailable("no live owner answered for this key; retry")
        return None

    async def mget(self, keys: list[str]) -> dict[str, Entry]:
        found = await self.read_many(keys)
        return {k: (e[1], e[2]) for k, e in found.items()}

    # -- writes --------------------------------------------------------------------------------
    async def _apply(
        self, member: str, entries: list[WireEntry], deletes: list[tuple[str, int]]
    ) -> ApplyResult:
        if member == self.node.id:
            return self.node.replica.apply(entries, deletes)
        result = await self.node.peer(member).apply(entries, deletes)
        try:
            return ApplyResult(
                int(result.get("applied", 0)), [str(k) for k in result.get("deleted", [])],
                [str(k) for k in result.get("not_held", [])],
                [(str(k), int(v)) for k, v in result.get("newer", [])])
        except (TypeError, ValueError) as exc:
            raise PeerError(member, f"bad /cluster/apply answer: {exc}",
                            unreachable=False) from None

    async def replicate(
        self,
        entries: list[WireEntry],
        deletes: Sequence[tuple[str, int]] = (),
        already: dict[str, set[str]] | None = None,
        reissue: bool = True,
    ) -> set[str]:
        """Send writes to every live owner (replacing owners that fail), and raise 503 unless
        each key reached its quorum of owners holding it (or, with `reissue` off, a newer
        write). With `reissue`, a key some owner holds at a newer version is sent again
        under a version above that one (see the module docstring). Returns the keys some
        owner actually deleted."""
        node, config = self.node, self.node.config
        by_key_entry = {e[0]: e for e in entries}
        by_key_delete = dict(deletes)
        keys = list(by_key_entry) + [k for k in by_key_delete if k not in by_key_entry]
        acked: dict[str, set[str]] = {k: set((already or {}).get(k, ())) for k in keys}
        deleted: set[str] = set()
        reissued: set[str] = set()
        extra = {}
        if deletes and node.in_flux():
            # Old owners may still hold a copy in migration: delete it there too.
            extra = {k: node.old_owners(k) for k in by_key_delete}
        for _ in range(MAX_ROUNDS):
            plan_e: dict[str, list[WireEntry]] = defaultdict(list)
            plan_d: dict[str, list[tuple[str, int]]] = defaultdict(list)
            for key in keys:
                targets = node.live_owners(key) + extra.get(key, [])
                for member in dict.fromkeys(targets):
                    if member in acked[key]:
                        continue
                    if key in by_key_entry:
                        plan_e[member].append(by_key_entry[key])
                    else:
                        plan_d[member].append((key, by_key_delete[key]))
            members = list(dict.fromkeys([*plan_e, *plan_d]))
            if not members:
                break
            calls: list[Awaitable[ApplyResult]] = [
                self._apply(m, plan_e.get(m, []), plan_d.get(m, [])) for m in members
            ]
            results = await asyncio.gather(*calls, return_exceptions=True)
            superseded: set[str] = set()
            for member, result in zip(members, results, strict=True):
                if isinstance(result, PeerError):
                    node.report(result)
                    continue
                if isinstance(result, BaseException):
                    raise result
                deleted.update(result.deleted)
                missing = set(result.not_held)
                for key, version in result.newer:
                    node.clock.observe(version)
                    if reissue and key not in reissued:
                        superseded.add(key)
                        missing.add(key)
                for entry in plan_e.get(member, []):
                    if entry[0] not in missing:
                        acked[entry[0]].add(member)
                for key, _ in plan_d.get(member, []):
                    if key not in missing:
                        acked[key].add(member)
            # Every owner must end up with the same, newest version: start the key over. Not
            # past the client's deadline: it has given up on this write and may have written
            # the key again since, and the newer version an owner holds may be that write
            # (a coordinator held up by owners that stopped answering would put its older
            # value back on top).
            if superseded and (late := deadline.late()) is not None and late > 0:
                raise TimedOut("deadline_exceeded", f"{len(superseded)} key(s) written "
                               f"since by a newer write, {late:.3f} s after the client's "
                               "deadline: not re-issued over it")
            reissued |= superseded
            for key in superseded:
                if key in by_key_entry:
                    k, value, ttl, _ = by_key_entry[key]
                    by_key_entry[key] = (k, value, ttl, node.clock.next())
                else:
                    by_key_delete[key] = node.clock.next()
                acked[key] = set()
        for key in keys:
            owners = node.live_owners(key)
            need = required_acks(node.replication, config.write_quorum, len(owners))
            have = len(acked[key] & set(owners)) if config.write_quorum <= 0 else len(acked[key])
            if have < need:
                raise _unavailable(
                    f"write of {key!r} reached {have} of {need} replicas needed; not stored"
                )
        return deleted

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        await self.replicate([(key, value, ttl, self.node.clock.next())])

    async def mset(self, items: list[Item]) -> int:
        clock = self.node.clock
        # Last item wins for a key repeated in one batch, as if applied in order.
        latest = {key: (key, value, ttl, clock.next()) for key, value, ttl in items}
        await self.replicate(list(latest.values()))
        return len(items)

    async def delete(self, key: str) -> bool:
        deleted = await self.replicate([], [(key, self.node.clock.next())])
        return key in deleted

    # -- incr: serialised on the key's primary ------------------------------------------------
    async def incr(self, key: str, delta: int, ttl: float | None) -> int:
        """Sent to the key's primary. Tried on the next owner only when the primary refused
        the connection: an increment is not idempotent, and a call that got no answer (a
        lost connection, a timeout) may have been applied and replicated already, so it is
        a 503 (it may or may not have counted), never sent a second time."""
        node = self.node
        for _ in range(MAX_ROUNDS):
            owners = node.live_owners(key)
            if not owners:
                break
            if owners[0] == node.id:
                return (await self.incr_as_primary(key, delta, ttl))[0]
            try:
                peer = node.peer(owners[0])
            except PeerError as exc:  # left the ring meanwhile: nothing was sent
                node.report(exc)
                continue
            try:
                value, version = await peer.incr(key, delta, ttl)
            except PeerError as exc:
                if exc.refused:  # never reached the primary: the next owner takes over
                    node.report(exc)
                    continue
                if exc.status and exc.error and exc.error[0] in PRIMARY_VERDICTS:
                    # The primary refused the increment itself (a value that is not an
                    # integer, an overflow, an entry over its memory): nothing changed, and
                    # the client gets the answer a single node gives.
                    code, message = exc.error
                    raise PRIMARY_VERDICTS[code](code, message) from None
                if exc.unreachable:
                    self._failed(exc)
                raise _unavailable(f"incr on {exc.peer} failed, it may or may not have "
                                   f"been applied: {exc}") from None
            node.clock.observe(version)
            return value
        raise _unavailable("no live owner for this key")

    async def incr_as_primary(
        self, key: str, delta: int, ttl: float | None
    ) -> tuple[int, int]:
        """Increment here, as the key's primary, and replicate; (new value, its version)."""
        node = self.node
        if node.in_flux() and node.store.get(key) is None:
            # The counter may not have moved here yet: take it from an old owner first.
            for member in node.old_owners(key):
                if member != node.id:
                    try:
                        node.replica.apply(await node.peer(member).get_many([key]), [])
                        break
                    except PeerError as exc:
                        node.report(exc)
        entry = node.replica.incr(key, delta, ttl)
        await self.replicate([entry], already={key: {node.id}}, reissue=False)
        return int(entry[1]), entry[3]
