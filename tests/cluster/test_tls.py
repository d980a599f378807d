"""A mutual-TLS cluster with real certificates: data flows over HTTPS, and internal endpoints
admit only peers holding a certificate from the cluster's CA."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest

from distcache_node.local import certs
from distcache_node.local.runner import LocalCluster


def _ctx(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert and key:
        context.load_cert_chain(str(cert), str(key))
    return context


async def test_tls_cluster_serves_and_refuses_foreign_peers(
    make_cluster, cluster_api_key: str, tmp_path: Path
) -> None:
    cluster: LocalCluster = await make_cluster(3, tls=True)
    ca = cluster.tls_dir / "ca.pem"
    urls = [n.url for n in cluster.state.nodes]
    assert all(u.startswith("https://") for u in urls)
    headers = {"X-API-Key": cluster_api_key}
    # A data client: trusts the CA, no client certificate, API key only.
    async with aiohttp.ClientSession(headers=headers,
                                     connector=aiohttp.TCPConnector(ssl=_ctx(ca))) as client:
        for i in range(30):
            async with client.post(f"{urls[i % 3]}/set",
                                   json={"key": f"t{i}", "value": i}) as resp:
                assert resp.status == 200, await resp.text()
        async with client.post(f"{urls[2]}/mget",
                               json={"keys": [f"t{i}" for i in range(30)]}) as resp:
            assert (await resp.json())["missing"] == []
        # Forwarded reads reuse pooled connections: a TLS handshake per connection, not per
        # request.
        for _round in range(5):
            for i in range(30):
                async with client.get(f"{urls[0]}/get", params={"key": f"t{i}"}) as resp:
                    assert resp.status == 200
        # Forwarding counters are in the peers' view: ask as the coordinator does.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                ssl=cluster.ssl_context())) as coordinator, coordinator.get(
                f"{urls[0]}/cluster/status") as resp:
            peers = (await resp.json())["peers"]
        async with client.get(f"{urls[0]}/cluster/status") as resp:
            assert resp.status == 403  # the API key is not a peer credential
        forwarded = sum(p["forwarded_requests"] for p in peers.values())
        opened = sum(p["forwarding_connections_opened"] for p in peers.values())
        assert forwarded >= 20, peers
        assert opened <= 4, peers
        async with client.get(f"{urls[0]}/metrics") as resp:
            metrics = await resp.text()
        for name in ("distcache_ring_version", "distcache_peer_up", "distcache_ready",
                     "distcache_forwarded_reads_total", "distcache_migration_done"):
            assert name in metrics, name
        # Internal endpoints: the API key alone is not a peer.
        async with client.post(f"{urls[0]}/cluster/apply",
                               json={"entries": [], "deletes": []}) as resp:
            assert resp.status == 403

    # A certificate from another CA is refused during the handshake.
    rogue = tmp_path / "rogue"
    certs.make_ca(rogue, "rogue CA")
    cert, key = certs.make_cert(rogue, "intruder", rogue)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            ssl=_ctx(ca, cert, key))) as intruder:
        with pytest.raises(aiohttp.ClientError):
            async with intruder.post(f"{urls[0]}/cluster/apply",
                                     json={"entries": [["evil", 1, None, 1]]}) as resp:
                await resp.read()

    # A peer certificate from the cluster CA is admitted without any secret.
    cert, key = certs.make_cert(cluster.tls_dir, "extra-peer", cluster.tls_dir)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            ssl=_ctx(ca, cert, key))) as peer, peer.get(f"{urls[0]}/cluster/ping") as resp:
        assert resp.status == 200
    # Plain HTTP to a TLS node gets nowhere.
    async with aiohttp.ClientSession() as plain:
        with pytest.raises(aiohttp.ClientError):
            async with plain.get(urls[0].replace("https", "http") + "/healthz") as resp:
                await resp.read()
