"""Defect 11: the operator's pod watch is filtered by the API server, not in the operator.
k8s.Api.watch_pods against a stand-in API server on a loopback socket (the real one: the
e2e tier on kind): the watch asks for the DistCache's namespace and label selector, and each
change it streams wakes that DistCache's daemon (handlers.daemon.watch_pods)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes_asyncio import client

from distcache_operator.handlers import daemon
from distcache_operator.handlers.memory import DistCacheMemory
from distcache_operator.k8s import Api
from distcache_operator.kubeapi import KubeApi

SELECTOR = "app.kubernetes.io/name=distcache,app.kubernetes.io/instance=cache"


def _pod(name: str, version: int) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": str(version),
                         "labels": {"app.kubernetes.io/name": "distcache",
                                    "app.kubernetes.io/instance": "cache"}}}


class StandIn:
    """GET .../pods?watch=true: records what was asked, streams two changes, ends."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, dict[str, str]]] = []

    async def pods(self, request: web.Request) -> web.StreamResponse:
        self.asked.append((request.path, dict(request.query)))
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for kind, version in (("ADDED", 1), ("MODIFIED", 2)):
            line = json.dumps({"type": kind, "object": _pod("cache-0", version)}) + "\n"
            await resp.write(line.encode())
        await resp.write_eof()
        return resp


@pytest.fixture
async def api() -> AsyncIterator[tuple[Api, StandIn]]:
    stand_in = StandIn()
    app = web.Application()
    app.router.add_get("/api/v1/namespaces/{namespace}/pods", stand_in.pods)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    cfg = client.Configuration(host=str(server.make_url("")).rstrip("/"))
    kube = KubeApi(client.ApiClient(cfg))
    try:
        yield Api(kube), stand_in
    finally:
        await kube.close()
        await server.close()


async def test_the_pod_watch_asks_the_server_for_the_distcaches_pods_only(
        api: tuple[Api, StandIn]) -> None:
    k8s, stand_in = api
    changes = [change async for change in k8s.watch_pods("ns", SELECTOR, timeout=30)]
    assert changes == ["ADDED", "MODIFIED"]
    [(path, query)] = stand_in.asked
    assert path == "/api/v1/namespaces/ns/pods"  # one namespace, not the cluster's pods
    assert query["labelSelector"] == SELECTOR  # filtered by the server
    assert query["watch"].lower() == "true" and query["timeoutSeconds"] == "30"


async def test_a_change_to_a_pod_wakes_the_distcaches_daemon(api: tuple[Api, StandIn]) -> None:
    k8s, stand_in = api
    mem = DistCacheMemory()
    watcher = asyncio.create_task(daemon.watch_pods(k8s, "ns", SELECTOR, mem))
    try:
        await asyncio.wait_for(mem.wake.wait(), 5.0)
    finally:
        watcher.cancel()
    assert stand_in.asked[0][1]["labelSelector"] == SELECTOR
