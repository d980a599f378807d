"""Chaos: steady writes while a random node is SIGKILLed every few seconds (one at a time,
R=2). Afterwards every acknowledged write reads back with its last acknowledged value (or
with a later write that failed after reaching some replica: never acknowledged, never lost),
and restarted nodes have taken their share back."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time

import aiohttp
import pytest

from distcache_node.local.runner import LocalCluster

pytestmark = pytest.mark.chaos
CHAOS_SECONDS = 30.0
MIN_KILLS = 5
KEYS = 400
WRITERS = 4


async def _writer(session: aiohttp.ClientSession, cluster: LocalCluster, stop: asyncio.Event,
                  acked: dict[str, int], tried_after_ack: dict[str, set[int]],
                  counts: dict[str, int], worker: int) -> None:
    value = 0
    rnd = random.Random(worker)
    while not stop.is_set():
        # Each writer owns its keys, so a key's writes are sequential and "last acknowledged"
        # is well defined (concurrent writers could be acknowledged out of order).
        key = f"chaos:{rnd.randrange(KEYS // WRITERS) * WRITERS + worker}"
        value += 1
        stamped = value * 100 + worker
        tried_after_ack.setdefault(key, set()).add(stamped)
        node = rnd.choice(cluster.state.nodes)
        try:
            async with session.post(f"{node.url}/set", json={"key": key, "value": stamped},
                                    timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status == 200:
                    acked[key] = stamped
                    tried_after_ack[key] = set()
                    counts["ok"] += 1
                else:
                    assert resp.status == 503, await resp.text()  # refused, never half-done
                    counts["refused"] += 1
        except (TimeoutError, aiohttp.ClientError):
            counts["conn_errors"] += 1  # the node we picked is down: a client retries elsewhere
            await asyncio.sleep(0.01)


async def test_sigkill_chaos_loses_no_acknowledged_write(make_cluster, client_session) -> None:
    cluster: LocalCluster = await make_cluster(3)
    stop = asyncio.Event()
    acked: dict[str, int] = {}
    tried: dict[str, set[int]] = {}
    counts = {"ok": 0, "refused": 0, "conn_errors": 0}
    writers = [asyncio.create_task(_writer(client_session, cluster, stop, acked, tried,
                                           counts, w)) for w in range(WRITERS)]
    rnd = random.Random(7)
    kills = 0
    deadline = time.monotonic() + CHAOS_SECONDS
    try:
        # At least MIN_KILLS rounds however long each takes (a restart's refill is slower on
        # a busy machine): the count is what the test is about, the time only a floor.
        while kills < MIN_KILLS or time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            victim = rnd.choice(cluster.state.nodes)
            os.kill(victim.pid, signal.SIGKILL)
            kills += 1
            await asyncio.sleep(2.0)  # writes go on against the survivors
            cluster.spawn(victim)  # comes back empty and must refill before it is ready
            await cluster.wait_ready([victim])
    finally:
        stop.set()
        await asyncio.gather(*writers)
    assert kills >= MIN_KILLS
    assert counts["ok"] > 500, counts

    keys = sorted(acked)
    for node in cluster.state.nodes:
        async with client_session.post(f"{node.url}/mget", json={"keys": keys}) as resp:
            assert resp.status == 200
            values = (await resp.json())["values"]
        lost = [k for k in keys if k not in values]
        assert not lost, f"{node.id}: {len(lost)} acknowledged keys lost, e.g. {lost[:5]}"
        wrong = [k for k in keys if values[k] != acked[k] and values[k] not in tried[k]]
        assert not wrong, f"{node.id}: stale values for {wrong[:5]}"
    # Restarted nodes took their share back: R copies of each key over 3 nodes.
    held = []
    for node in cluster.state.nodes:
        async with client_session.get(f"{node.url}/status") as resp:
            held.append((await resp.json())["keys"])
    assert all(h >= 0.5 * 2 * len(keys) / 3 for h in held), held
