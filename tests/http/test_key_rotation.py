"""Rotating the API key and the cluster secret under a running node (issue 14, defect 8).

The keys are files laid out as kubelet lays out a mounted Secret, changed the way kubelet
changes them (the `..data` symlink swapped). A node re-reads them, accepts every key listed,
keeps accepting a dropped key for the grace period (clients still on it while the other
pods catch up), then refuses it; a file that goes empty or missing leaves the keys as they
were. Real node apps on real loopback sockets."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema_rs
from aiohttp.test_utils import TestServer

from distcache_node.app import create_app
from distcache_node.config import NodeConfig
from distcache_node.protocol import SECRET_HEADER
from support import ROOT, eventually, free_port_range, publish_secret_volume

GRACE = 2.0  # seconds; the node polls its key files every second


def _volume(tmp_path: Path, files: dict[str, bytes]) -> Path:
    volume = tmp_path / "secret"
    volume.mkdir()
    publish_secret_volume(volume, "1", files)
    return volume


def _fp(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


async def _answer(http: aiohttp.ClientSession, url: str, key: str) -> int:
    """The status of a data API call (GET /status) made with `key`."""
    async with http.get(f"{url}/status", headers={"X-API-Key": key}) as resp:
        await resp.read()
        return resp.status


def _accepted(http: aiohttp.ClientSession, url: str, key: str, want: bool
              ) -> Callable[[], Any]:
    async def check() -> bool:
        status = await _answer(http, url, key)
        assert status in (200, 401), status
        return (status == 200) == want
    return check


async def _file_error(http: aiohttp.ClientSession, url: str, key: str) -> float | None:
    async with http.get(f"{url}/metrics", headers={"X-API-Key": key}) as resp:
        assert resp.status == 200
        for line in (await resp.text()).splitlines():
            if line.startswith('distcache_credential_file_error{credential="api_key"}'):
                return float(line.split()[-1])
    return None


async def test_a_rotated_key_file_is_taken_in_and_the_old_key_refused_after_the_grace(
    node_factory: Callable[..., Any], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    volume = _volume(tmp_path, {"api-key": b"old-key\n"})
    url = await node_factory(api_key="", api_key_file=str(volume / "api-key"),
                             api_key_grace_seconds=GRACE)
    assert await _answer(http, url, "old-key") == 200
    assert await _answer(http, url, "new-key") == 401

    publish_secret_volume(volume, "2", {"api-key": b"new-key\n"})
    await eventually(_accepted(http, url, "new-key", True), 5, "the new key accepted",
                     interval=0.02)
    taken_in = time.monotonic()
    # Clients still on the old key keep working while the other pods load the new one.
    assert await _answer(http, url, "old-key") == 200
    await eventually(_accepted(http, url, "old-key", False), GRACE + 5,
                     "the old key refused after the grace period")
    assert time.monotonic() - taken_in >= GRACE - 0.3  # not before its grace ended
    for _ in range(3):  # for good
        assert await _answer(http, url, "old-key") == 401
    assert await _answer(http, url, "new-key") == 200


async def test_every_key_of_a_multi_line_file_is_accepted(
    node_factory: Callable[..., Any], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    volume = _volume(tmp_path, {"api-key": b"first\n\n   second  \r\nthird"})
    url = await node_factory(api_key="", api_key_file=str(volume / "api-key"),
                             api_key_grace_seconds=GRACE)
    for key in ("first", "second", "third"):
        assert await _answer(http, url, key) == 200, key
    for key in ("fourth", "", "secon", "second2", "firstsecond"):
        assert await _answer(http, url, key) == 401, key

    # The first step of a rotation: the new key added as a line. Both stay accepted, past
    # any grace period: the old one is still listed.
    publish_secret_volume(volume, "2", {"api-key": b"first\nnew-one\n"})
    await eventually(_accepted(http, url, "new-one", True), 5, "the added key accepted")
    await eventually(_accepted(http, url, "second", False), GRACE + 5, "a dropped line refused")
    assert await _answer(http, url, "first") == 200
    assert await _answer(http, url, "new-one") == 200


async def test_an_empty_or_missing_key_file_keeps_the_current_keys(
    node_factory: Callable[..., Any], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    volume = _volume(tmp_path, {"api-key": b"key-one\n"})
    url = await node_factory(api_key="", api_key_file=str(volume / "api-key"),
                             api_key_grace_seconds=GRACE)
    assert await _file_error(http, url, "key-one") == 0

    publish_secret_volume(volume, "2", {"api-key": b"  \n\n"})  # a Secret emptied by mistake

    async def reported() -> bool:
        return await _file_error(http, url, "key-one") == 1

    await eventually(reported, 5, "the unusable file reported")
    started = time.monotonic()
    while time.monotonic() - started < GRACE + 1.5:  # past any grace: nothing was retired
        assert await _answer(http, url, "key-one") == 200
        assert await _answer(http, url, "") == 401  # and not opened to anyone
        await asyncio.sleep(0.2)

    for name in ("api-key", "..data"):  # the file gone altogether
        os.unlink(volume / name)
    started = time.monotonic()
    while time.monotonic() - started < 2.5:
        assert await _answer(http, url, "key-one") == 200
        assert await _answer(http, url, "other") == 401
        await asyncio.sleep(0.2)

    os.symlink("..2", volume / "..data")
    os.symlink("..data/api-key", volume / "api-key")
    publish_secret_volume(volume, "3", {"api-key": b"key-two\n"})  # a good file again
    await eventually(_accepted(http, url, "key-two", True), 5, "a good file taken in")

    async def cleared() -> bool:
        return await _file_error(http, url, "key-two") == 0

    await eventually(cleared, 5, "the error cleared")


def _peer_status(secret: str) -> dict[str, str]:
    return {SECRET_HEADER: secret}


async def test_a_rotated_cluster_secret_file_is_taken_in_and_reported_by_fingerprint(
    node_factory: Callable[..., Any], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    volume = _volume(tmp_path, {"cluster-secret": b"peer-old\n", "api-key": b"api-one\n"})
    url = await node_factory(api_key="", api_key_file=str(volume / "api-key"),
                             cluster_secret_file=str(volume / "cluster-secret"),
                             advertise_url="http://127.0.0.1:1", api_key_grace_seconds=GRACE)

    async def peer_call(secret: str) -> tuple[int, bytes]:
        async with http.get(f"{url}/cluster/status", headers=_peer_status(secret)) as resp:
            return resp.status, await resp.read()

    status, body = await peer_call("peer-old")
    assert status == 200, body
    credentials = (await _json(http, url, "peer-old"))["credentials"]
    assert credentials["api_key"]["fingerprints"] == [_fp("api-one")]
    assert credentials["cluster_secret"]["fingerprints"] == [_fp("peer-old")]
    assert (await peer_call("peer-new"))[0] == 403

    publish_secret_volume(volume, "2", {"cluster-secret": b"peer-new\n",
                                        "api-key": b"api-one\napi-two\n"})

    async def new_accepted() -> bool:
        return (await peer_call("peer-new"))[0] == 200

    await eventually(new_accepted, 5, "the new cluster secret accepted", interval=0.02)
    taken_in = time.monotonic()
    status, body = await peer_call("peer-old")
    assert status == 200, "the old cluster secret refused within its grace period"
    for secret in (b"peer-old", b"peer-new", b"api-one", b"api-two"):
        assert secret not in body  # fingerprints only, never a key

    async def reported() -> dict[str, Any] | None:
        credentials = (await _json(http, url, "peer-new"))["credentials"]
        return credentials if credentials["api_key"]["reloads"] == 1 else None

    credentials = await eventually(reported, 5, "both files reported loaded")
    assert credentials["api_key"]["fingerprints"] == [_fp("api-one"), _fp("api-two")]
    assert credentials["cluster_secret"]["fingerprints"] == [_fp("peer-new")]
    assert list(credentials["cluster_secret"]["retiring"]) == [_fp("peer-old")]
    assert credentials["cluster_secret"]["error"] is None
    schema = json.loads((ROOT / "node/distcache_node/openapi.json").read_text())
    for loaded in credentials.values():  # as openapi.json documents it
        jsonschema_rs.validate(schema["components"]["schemas"]["KeysLoaded"], loaded)

    async def old_refused() -> bool:
        return (await peer_call("peer-old"))[0] == 403

    await eventually(old_refused, GRACE + 5, "the old cluster secret refused after the grace")
    assert time.monotonic() - taken_in >= GRACE - 0.3
    assert (await peer_call("peer-new"))[0] == 200
    final = (await _json(http, url, "peer-new"))["credentials"]["cluster_secret"]
    assert final["retiring"] == {}


async def _json(http: aiohttp.ClientSession, url: str, secret: str) -> dict[str, Any]:
    async with http.get(f"{url}/cluster/status", headers=_peer_status(secret)) as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


async def test_peers_go_on_talking_through_a_cluster_secret_rotation(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Two nodes whose cluster secret is replaced outright: once the old one's grace is
    over, each must send the new one, or the other refuses its heartbeats and writes."""
    volume = _volume(tmp_path, {"cluster-secret": b"first-secret\n"})
    base = free_port_range(2)
    urls = [f"http://127.0.0.1:{base + i}" for i in range(2)]
    ring = tmp_path / "ring.json"
    ring.write_text('{"version": 1, "replication": 2, "members": ['
                    f'{{"id": "a", "url": "{urls[0]}", "state": "active"}}, '
                    f'{{"id": "b", "url": "{urls[1]}", "state": "active"}}]}}')
    servers = []
    try:
        for i, node_id in enumerate("ab"):
            config = NodeConfig(port=base + i, node_id=node_id, advertise_url=urls[i],
                                ring_file=str(ring), api_key="k",
                                cluster_secret_file=str(volume / "cluster-secret"),
                                api_key_grace_seconds=GRACE, heartbeat_interval=0.2,
                                max_memory=64 * 1024**2).validate()
            server = TestServer(create_app(config), host="127.0.0.1", port=base + i)
            await server.start_server()
            servers.append(server)
        headers = {"X-API-Key": "k"}

        async def writes_ok(tag: str) -> bool:
            for i in range(10):
                async with http.post(f"{urls[i % 2]}/set", headers=headers,
                                     json={"key": f"{tag}:{i}", "value": "v"}) as resp:
                    assert resp.status == 200, await resp.text()
            return True

        async def peers_alive() -> bool:
            for url in urls:
                async with http.get(f"{url}/status", headers=headers) as resp:
                    members = (await resp.json())["members"]
                if not all(m["alive"] and m["ready"] for m in members):
                    return False
            return True

        await eventually(peers_alive, 10, "both nodes see each other")
        assert await writes_ok("before")

        publish_secret_volume(volume, "2", {"cluster-secret": b"second-secret\n"})
        deadline = time.monotonic() + GRACE + 4  # both reloaded, the old secret retired

        await asyncio.sleep(deadline - time.monotonic())
        for url in urls:
            async with http.get(f"{url}/cluster/status",
                                headers=_peer_status("second-secret")) as resp:
                assert resp.status == 200
                status = await resp.json()
            assert status["credentials"]["cluster_secret"]["retiring"] == {}, status
            for peer in status["peers"].values():
                assert peer["alive"] and not peer["last_error"], status["peers"]
        assert await writes_ok("after")
        await eventually(peers_alive, 3, "both nodes see each other after the rotation")
    finally:
        for server in servers:
            await server.close()


async def test_the_node_process_reads_its_key_file_from_the_environment(
    node_process: Callable[..., Any], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """As a pod runs it: `distcache-node` with DISTCACHE_API_KEY_FILE, rotated under it."""
    volume = _volume(tmp_path, {"api-key": b"proc-old\n"})
    proc, url = node_process(env={"DISTCACHE_API_KEY_FILE": str(volume / "api-key"),
                                  "DISTCACHE_API_KEY_GRACE_SECONDS": "1"})
    assert await _answer(http, url, "proc-old") == 200
    assert await _answer(http, url, "proc-new") == 401
    publish_secret_volume(volume, "2", {"api-key": b"proc-new\n"})
    await eventually(_accepted(http, url, "proc-new", True), 5, "the new key accepted")
    await eventually(_accepted(http, url, "proc-old", False), 5, "the old key retired")
    assert proc.poll() is None  # the same process throughout
