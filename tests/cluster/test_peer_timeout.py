"""A peer that accepts nothing (a frozen process whose accept queue is full, so connection
attempts go unanswered as with a pod dropping packets) costs a forwarded read the peer
timeout, then the read goes to the key's other owner. Real node processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import aiohttp
import orjson

from distcache_node.cluster.peers import SECRET_HEADER
from distcache_node.cluster.ring import RingDoc
from distcache_node.local.runner import LocalCluster
from support import free_port_range

API_KEY = "timeout-test-key"
PEER_TIMEOUT = 1.0
ACCEPT_QUEUE = 1024  # serve.py's listen backlog


def _fill_accept_queue(port: int, count: int) -> list[socket.socket]:
    """Connections the frozen node never accepts: once its queue is full, the kernel drops
    further SYNs and a connect just waits."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        sockets.append(sock)
    return sockets


async def test_forwarded_reads_fail_over_within_the_peer_timeout(tmp_path: Path) -> None:
    # Heartbeats would eventually route around the frozen node; give them no time to, so
    # the read itself must find out.
    cluster = LocalCluster.create(
        tmp_path / "c", free_port_range(6), API_KEY, 2, False, "64MiB",
        ["--peer-timeout", str(PEER_TIMEOUT), "--suspect-after", "60"])
    frozen_pid = 0
    fillers: list[socket.socket] = []
    try:
        await cluster.up(3)
        by_id = {n.id: n for n in cluster.state.nodes}
        ring = RingDoc.from_json(orjson.loads(cluster.ring_path.read_bytes())).target()
        # Keys whose primary is node-1 and which node-0 (the one asked) does not hold.
        keys = [k for k in (f"k{i}" for i in range(400))
                if ring.owners(k)[0] == "node-1" and "node-0" not in ring.owners(k)][:20]
        assert len(keys) == 20
        entry = by_id["node-0"].url
        async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as session:
            async with session.post(f"{entry}/mset", json={
                    "items": [{"key": k, "value": k} for k in keys]}) as resp:
                assert resp.status == 200, await resp.text()
            # node-0 must see node-1 up and ready, so that it asks node-1 first.
            deadline = time.monotonic() + 15
            while True:
                async with session.get(f"{entry}/cluster/status", headers={
                        SECRET_HEADER: cluster.state.secret}) as resp:
                    peer = (await resp.json())["peers"]["node-1"]
                if peer["alive"] and peer["ready"]:
                    break
                assert time.monotonic() < deadline, peer
                await asyncio.sleep(0.1)
            # No read has been forwarded yet: node-0 has no connection to node-1 for reads,
            # so the first one must connect.
            frozen = by_id["node-1"]
            frozen_pid = frozen.pid
            os.kill(frozen_pid, signal.SIGSTOP)
            fillers = _fill_accept_queue(frozen.port, ACCEPT_QUEUE + 200)
            await asyncio.sleep(0.5)

            started = time.monotonic()
            async with session.get(f"{entry}/get", params={"key": keys[0]},
                                   timeout=aiohttp.ClientTimeout(total=30)) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["value"] == keys[0]
            elapsed = time.monotonic() - started
            assert PEER_TIMEOUT * 0.9 < elapsed < PEER_TIMEOUT + 1.5, elapsed

            # That cost one peer timeout: reads now ask the silent peer last, until the
            # heartbeat has judged it, and are answered at once.
            started = time.monotonic()
            for key in keys[1:6]:
                async with session.get(f"{entry}/get", params={"key": key}) as resp:
                    assert (await resp.json())["value"] == key
            async with session.post(f"{entry}/mget", json={"keys": keys[6:]}) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["values"] == {k: k for k in keys[6:]}
            assert time.monotonic() - started < 0.5
    finally:
        if frozen_pid:
            os.kill(frozen_pid, signal.SIGCONT)
        for sock in fillers:
            sock.close()
        cluster.stop_all()
        await cluster.close()
