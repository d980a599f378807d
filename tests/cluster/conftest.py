"""Local clusters of real `distcache-node` processes on loopback, driven by the same runner
as `distcache local up` / `scale`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from distcache_node.local.runner import LocalCluster
from support import free_port_range

API_KEY = "cluster-test-key"


@pytest.fixture
async def make_cluster(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[LocalCluster]]]:
    clusters: list[LocalCluster] = []

    async def make(nodes: int = 3, replication: int = 2, tls: bool = False,
                   **kwargs: Any) -> LocalCluster:
        cluster = LocalCluster.create(tmp_path / f"cluster{len(clusters)}", free_port_range(12),
                                      API_KEY, replication, tls,
                                      kwargs.get("max_memory", "128MiB"),
                                      kwargs.get("node_args"))
        clusters.append(cluster)
        await cluster.up(nodes)
        return cluster

    yield make
    for cluster in clusters:
        cluster.stop_all()
        await cluster.close()


@pytest.fixture
def cluster_api_key() -> str:
    return API_KEY


@pytest.fixture
async def client_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as session:
        yield session
