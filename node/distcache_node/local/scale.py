"""`distcache local scale`: the shared membership machine (cluster/resize.py) driven over node
processes on loopback, the way the operator drives it over a StatefulSet.

Each turn observes (the ring file, every member's and every new node's GET /cluster/status,
whether each node process is alive: its "ready"), asks `resize.decide` for the one next
action, and carries it out: start or stop node processes for SCALE, store the ring (the ring
file's compare-and-swap) and push it for PUBLISH, REMOVE and DROP_DEAD. It ends when the
machine is idle and the ring is settled. A command stopped half-way (Ctrl-C, a crash) is
carried on by the next one from what the ring file says.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from distcache_node.cluster import resize
from distcache_node.cluster.coordinator import Coordinator, RingConflict
from distcache_node.cluster.resize import Action, Kind, Observed, Target
from distcache_node.cluster.ring import Member, RingDoc

if TYPE_CHECKING:
    from distcache_node.local.runner import LocalCluster, NodeProc

POLL = 0.1  # seconds between looks while a ring settles (local nodes answer in milliseconds)
JOIN_DEADLINE = 60.0  # a new node not up by then is a failed command, not a long wait
STALL = 300.0  # seconds with nothing to do but wait before the command gives up, saying why


class Scaler:
    """One `distcache local scale --nodes count` run."""

    def __init__(self, cluster: LocalCluster, count: int, force: bool) -> None:
        self.cluster = cluster
        self.count = count
        self.force = force
        self.coordinator = cluster.coordinator()
        self.started = time.monotonic()
        self.unreachable_since: dict[str, float] = {}
        self.spawned: set[str] = set()  # started by this command: fail fast if one exits
        self.stopping: list[NodeProc] = []  # SIGTERM sent; reaped once the ring settled
        self.wrote: RingDoc | None = None  # the last ring this command stored
        self._last_line = ""

    # -- the loop ------------------------------------------------------------------------------
    async def run(self) -> float:
        """Until idle and settled; returns when the ring settled (time.monotonic()), before
        stopped nodes finish their shutdown drain."""
        if self.count < 1:
            raise SystemExit("a cluster needs at least one node; use Ctrl-C on `up` to stop")
        waiting_since = time.monotonic()
        try:
            while True:
                obs = await self.observe()
                action = resize.decide(self.target(obs.ring), obs)
                self.unreachable_since = dict(action.unreachable_since)
                if action.kind is Kind.IDLE:
                    # Idle is not yet settled: the last ring may still be sweeping surplus
                    # copies. The command returns once it is (R copies of every key).
                    assert obs.ring is not None
                    pending = Coordinator.pending(obs.ring, obs.statuses)
                    if not pending:
                        self.say(f"  ring v{obs.ring.version}: settled")
                        break
                    action = Action(Kind.WAIT, f"ring v{obs.ring.version} settling",
                                    pending=tuple(pending))
                if action.kind is Kind.WAIT:
                    if time.monotonic() - waiting_since > STALL:
                        raise SystemExit(f"{action.reason} for over {STALL:.0f} s: "
                                         f"{'; '.join(action.pending)}")
                else:
                    waiting_since = time.monotonic()
                await self.act(action, obs)
        except RingConflict as exc:
            done = ("nothing changed" if self.wrote is None else
                    f"stopped after ring v{self.wrote.version}: run the command again to carry "
                    "on from what the ring says")
            raise SystemExit(f"ring changed by someone else; {done}: {exc}") from None
        settled = time.monotonic()
        # Out of the ring now; each still drains for --shutdown-drain after SIGTERM (a client
        # on the old ring may still call it).
        await asyncio.to_thread(self.cluster.reap, *self.stopping)
        return settled

    def target(self, ring: RingDoc | None) -> Target:
        # The replication factor is the ring's: `scale` changes the size only, and a ring
        # edited by hand to another factor is not undone behind the user's back.
        replication = ring.replication if ring is not None else self.cluster.state.replication
        return Target(size=self.count, replication=replication,
                      member_id=self.cluster.node_id, member_url=self.cluster.node_url,
                      ordinal=self.cluster.ordinal, force=self.force,
                      record=f"ring file {self.cluster.ring_path}", workload="local cluster",
                      slot="node", size_setting="--nodes")

    async def observe(self) -> Observed:
        ring = await self.cluster.ring_store().load_or_none()
        nodes = self.cluster.state.nodes
        members = list(ring.members) if ring is not None else []
        ids = {m.id for m in members}
        asked = members + [Member(n.id, n.url) for n in nodes if n.id not in ids]
        statuses = await self.coordinator.statuses(asked)
        alive = {n.id: self.cluster.alive(n) for n in nodes}
        for node in nodes:
            if node.id in self.spawned and not alive[node.id]:
                raise SystemExit(f"{node.id} exited; {self.cluster.log_tail(node)}")
        version = ring.version if ring is not None else 0
        ahead = [m for m in asked if (s := statuses.get(m.id)) is not None
                 and (ring is None or s["ring_version"] > version)]
        return Observed(ring, len(nodes), statuses, transition_since=self.started,
                        now=time.monotonic(), ready=alive,
                        unreachable_since=self.unreachable_since,
                        held=await self.coordinator.rings(ahead) if ahead else {},
                        join_deadline=JOIN_DEADLINE)

    # -- acting --------------------------------------------------------------------------------
    async def act(self, action: Action, obs: Observed) -> None:
        if action.degraded is not None:  # a new node that never came up: say so, stop
            raise SystemExit(f"{action.degraded[1]}; {self._tails(action.members)}")
        ring = obs.ring
        kind = action.kind
        if kind is Kind.WAIT:
            self.say(f"  ring v{ring.version if ring else '-'}: " + "; ".join(action.pending))
            if ring is not None and action.push_to:
                await self.coordinator.push(ring, [m for m in ring.members
                                                   if m.id in set(action.push_to)])
            await asyncio.sleep(min(action.delay, POLL))
            return
        if kind is Kind.REFUSE:
            check = action.check.message if action.check is not None else action.reason
            raise SystemExit(f"refusing to shrink to {self.count} node(s): {check} "
                             "(nothing changed; raise --max-memory, delete keys, or "
                             "pass --force to accept evictions)")
        if kind is Kind.SCALE:
            assert action.replicas is not None
            self.say(f"  {action.reason}")
            self.resize_processes(action.replicas)
            return
        assert action.doc is not None, action
        self.say(f"  ring v{action.doc.version}: {action.reason}")
        if kind is Kind.CREATE_RING:
            await self.save(action.doc, None)
            await self.coordinator.push(action.doc, action.doc.members)
        elif kind is Kind.PUBLISH:
            await self.coordinator.publish(action.doc, ring)
            self.wrote = action.doc
        elif kind in (Kind.REMOVE, Kind.DROP_DEAD):
            assert ring is not None
            if kind is Kind.REMOVE:
                await asyncio.sleep(resize.CONFIRM)
                if Coordinator.pending(ring, await self.coordinator.statuses(ring.members)):
                    return  # a late write woke a migration: look again
            await self.save(action.doc, ring)
            # The members that leave hear it too, so they stop serving as members.
            await self.coordinator.push(action.doc, ring.members)
        else:
            raise AssertionError(f"resize.decide gave {action!r}")

    async def save(self, doc: RingDoc, expected: RingDoc | None) -> None:
        await self.coordinator.store.save(doc, expected)
        self.wrote = doc

    def resize_processes(self, replicas: int) -> None:
        """Node processes for ordinals 0..replicas-1: start the missing ones (they come up
        outside the ring and join when it names them), SIGTERM the rest."""
        cluster = self.cluster
        keep = [n for n in cluster.state.nodes if cluster.ordinal(n.id) < replicas]
        gone = [n for n in cluster.state.nodes if cluster.ordinal(n.id) >= replicas]
        have = {cluster.ordinal(n.id) for n in keep}
        new = [cluster.new_node(i) for i in range(replicas) if i not in have]
        for node in new:
            cluster.spawn(node)
            self.spawned.add(node.id)
        cluster.terminate(*gone)
        self.stopping += gone
        cluster.state.nodes = sorted(keep + new, key=lambda n: cluster.ordinal(n.id))
        cluster.state.save(cluster.dir)

    # -- output --------------------------------------------------------------------------------
    def say(self, line: str) -> None:
        if line != self._last_line:  # a wait repeats its line each look: once is enough
            print(line, flush=True)
            self._last_line = line

    def _tails(self, ids: Sequence[str]) -> str:
        nodes = [n for n in self.cluster.state.nodes if n.id in set(ids)]
        return "\n".join(self.cluster.log_tail(n) for n in nodes)
