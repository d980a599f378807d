"""Peer rights over mutual TLS (issue 14, defect 4), on real node processes with real
certificates: a certificate from the cluster CA is a peer's only when it names a ring
member, and a CA dropped from ca.crt stops being trusted without a restart."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from distcache_node.local import certs
from distcache_node.local.runner import LocalCluster
from support import API_KEY, eventually, process_output


def _ctx(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert and key:
        context.load_cert_chain(str(cert), str(key))
    return context


def _session(context: ssl.SSLContext, **kwargs: Any) -> aiohttp.ClientSession:
    # A new connection (so a new handshake) for every request.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, force_close=True),
                                 **kwargs)


async def test_a_certificate_from_the_cluster_ca_for_another_host_gets_no_peer_rights(
    make_cluster, cluster_api_key: str, tmp_path: Path
) -> None:
    cluster: LocalCluster = await make_cluster(3, tls=True)
    ca = cluster.tls_dir / "ca.pem"
    nodes = cluster.state.nodes
    urls = [n.url for n in nodes]
    # Signed by the very CA the nodes trust, for a name no member has.
    other_cert, other_key = certs.make_cert(tmp_path / "other", "other-workload",
                                            cluster.tls_dir, ("other-workload.example",))
    member_cert = cluster.tls_dir / f"{nodes[1].id}.pem"
    member_key = cluster.tls_dir / f"{nodes[1].id}.key"
    async with _session(_ctx(ca), headers={"X-API-Key": cluster_api_key}) as client:
        for i in range(40):
            async with client.post(f"{urls[i % 3]}/set",
                                   json={"key": f"secret:{i}", "value": f"v{i}"}) as resp:
                assert resp.status == 200, await resp.text()

        async with _session(_ctx(ca, other_cert, other_key)) as other:
            for node in nodes:
                async with other.post(f"{node.url}/cluster/export",
                                      json={"owner": nodes[0].id}) as resp:
                    body = await resp.read()
                    assert resp.status == 403, body[:300]
                    assert resp.content_type == "application/json"
                    assert orjson.loads(body)["error"] == "forbidden"
                    assert b"secret:" not in body
            async with other.get(f"{urls[0]}/cluster/ring") as resp:
                assert resp.status == 403
            async with _session(_ctx(ca, member_cert, member_key)) as member, \
                    member.get(f"{urls[0]}/cluster/ring") as resp:
                assert resp.status == 200
                ring = await resp.json()
            hijack = {**ring, "version": ring["version"] + 1,
                      "members": [{"id": "evil", "url": "https://other-workload.example:1",
                                   "state": "active"}]}
            for url in urls:
                async with other.put(f"{url}/cluster/ring", json=hijack) as resp:
                    assert resp.status == 403, await resp.text()
                    assert (await resp.json())["error"] == "forbidden"
            async with other.post(f"{urls[0]}/cluster/apply",
                                  json={"entries": [["secret:0", "evil", None, 2**62]],
                                        "deletes": []}) as resp:
                assert resp.status == 403

        # Nothing changed: every node keeps its ring and the values.
        for url in urls:
            async with client.get(f"{url}/status") as resp:
                status = await resp.json()
                assert status["ring_version"] == ring["version"], status
        async with client.post(f"{urls[2]}/mget",
                               json={"keys": [f"secret:{i}" for i in range(40)]}) as resp:
            got = await resp.json()
            assert got["missing"] == [] and got["values"]["secret:0"] == "v0", got

        # A member's own certificate is still a peer's.
        async with _session(_ctx(ca, member_cert, member_key)) as member, \
                member.post(f"{urls[1]}/cluster/export", json={"owner": nodes[0].id}) as resp:
            assert resp.status == 200
            assert b"secret:" in await resp.read()

        # And the nodes still replicate to each other over their certificates.
        for i in range(20):
            async with client.post(f"{urls[i % 3]}/set",
                                   json={"key": f"after:{i}", "value": i}) as resp:
                assert resp.status == 200, await resp.text()
        for url in urls:
            async with client.post(f"{url}/mget",
                                   json={"keys": [f"after:{i}" for i in range(20)]}) as resp:
                assert (await resp.json())["missing"] == []

    for node in nodes:
        logged = (cluster.dir / f"{node.id}.log").read_text(errors="replace")
        assert "Traceback" not in logged, f"{node.id}:\n{logged[-5000:]}"


async def test_a_ca_dropped_from_ca_crt_is_refused_without_a_restart(
    node_process: Callable[..., Any], tmp_path: Path
) -> None:
    ca1, ca2 = tmp_path / "ca1", tmp_path / "ca2"
    certs.make_ca(ca1, "CA one")
    certs.make_ca(ca2, "CA two")
    node_cert, node_key = certs.make_cert(tmp_path / "node", "node", ca1)
    # Both name 127.0.0.1, the ring member's host: peers but for their CA.
    one_cert, one_key = certs.make_cert(tmp_path / "one", "peer-one", ca1)
    two_cert, two_key = certs.make_cert(tmp_path / "two", "peer-two", ca2)
    bundle = tmp_path / "ca.crt"
    bundle.write_bytes((ca1 / "ca.pem").read_bytes() + (ca2 / "ca.pem").read_bytes())
    ring_file = tmp_path / "ring.json"
    server_ca = ca1 / "ca.pem"
    proc, url = node_process(
        "--host", "127.0.0.1", "--node-id", "solo", "--ring-file", str(ring_file),
        "--tls-cert", str(node_cert), "--tls-key", str(node_key), "--tls-ca", str(bundle),
        env={"DISTCACHE_API_KEY": API_KEY}, context=_ctx(server_ca))
    ring_file.write_bytes(orjson.dumps({"version": 1, "replication": 1, "members": [
        {"id": "solo", "url": url, "state": "active"}]}))
    one = _ctx(server_ca, one_cert, one_key)
    two = _ctx(server_ca, two_cert, two_key)

    async def status(context: ssl.SSLContext) -> int | str:
        """The answer to a peer call over a new connection, or why there was none."""
        try:
            async with _session(context) as session, \
                    session.get(f"{url}/cluster/status") as resp:
                await resp.read()
                return resp.status
        except aiohttp.ClientError as exc:
            return f"refused: {type(exc).__name__}"

    async def ring_adopted() -> bool:
        async with _session(_ctx(server_ca), headers={"X-API-Key": API_KEY}) as session, \
                session.get(f"{url}/status") as resp:
            return bool((await resp.json())["ring_version"] == 1)

    await eventually(ring_adopted, 10, "the ring file adopted")
    assert await status(two) == 200
    assert await status(one) == 200

    bundle.write_bytes((ca1 / "ca.pem").read_bytes())  # CA two dropped

    async def two_refused() -> bool:
        answer = await status(two)
        assert answer in (200, 403) or str(answer).startswith("refused"), answer
        return answer != 200

    await eventually(two_refused, 10, "a CA two certificate refused", interval=0.2)
    for _ in range(3):  # for good: every new connection
        assert await status(two) != 200
    assert await status(one) == 200
    assert proc.poll() is None  # the same process throughout
    async with _session(_ctx(server_ca), headers={"X-API-Key": API_KEY}) as session, \
            session.get(f"{url}/status") as resp:
        tls = (await resp.json())["tls"]
    assert len(tls["ca_sha256"]) == 1 and tls["reloads"] == 1 and tls["error"] is None, tls
    output = process_output(proc)
    assert "Traceback" not in output, output[-5000:]
