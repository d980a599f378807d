"""Shared fixtures. Tiers are markers, assigned by folder (the deepest match wins); which tiers
exist, what each needs and how a skip is judged: scripts/tiers.py (`make test`).

- tests/unit       -> unit       (in-process, no sockets)
- tests/unit/chart -> chart      (the Helm chart rendered by a real helm)
- tests/http       -> http       (a real node app on a real loopback socket)
- tests/cluster    -> cluster    (several real node processes on loopback)
- tests/monitoring -> monitoring (dashboards and alert rules; a real Prometheus)
"""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from distcache_node.app import create_app
from distcache_node.config import NodeConfig
from support import API_KEY, ROOT, clean_env, free_port, wait_ready

NODE_COMMAND = [sys.executable, "-m", "distcache_node.cli"]

_TIER_BY_FOLDER = {("unit", "chart"): "chart", ("unit",): "unit", ("http",): "http",
                   ("cluster",): "cluster", ("monitoring",): "monitoring"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT).parts
        if parts[0] != "tests":
            continue
        folders = parts[1:-1]
        for prefix, tier in sorted(_TIER_BY_FOLDER.items(), key=lambda kv: -len(kv[0])):
            if folders[:len(prefix)] == prefix:
                item.add_marker(getattr(pytest.mark, tier))
                break


@pytest.fixture
def make_config() -> Callable[..., NodeConfig]:
    def make(**overrides: Any) -> NodeConfig:
        values: dict[str, Any] = {"api_key": API_KEY, "max_memory": 64 * 1024**2}
        values.update(overrides)
        return NodeConfig(**values).validate()

    return make


@pytest.fixture
async def node_factory() -> AsyncIterator[Callable[..., Any]]:
    """Starts real node apps on loopback sockets; yields a factory returning base URLs."""
    servers: list[TestServer] = []

    async def start(config: NodeConfig | None = None, **overrides: Any) -> str:
        if config is None:
            values: dict[str, Any] = {"api_key": API_KEY, "max_memory": 64 * 1024**2}
            values.update(overrides)
            config = NodeConfig(**values).validate()
        # No port given: TestServer binds port 0 itself, with no window for a race.
        server = TestServer(create_app(config), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def node_url(node_factory: Callable[..., Any]) -> str:
    url: str = await node_factory()
    return url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session that sends the test API key unless a test overrides the header."""
    async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as session:
        yield session


@pytest.fixture
def node_process() -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], str]]]:
    """Starts `distcache-node` as a real process on a free port, with the given flags and
    optionally another command, extra environment, cwd and (for HTTPS) a client TLS context;
    returns (process, base URL) once /healthz answers. Stopped by PID after the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, env: dict[str, str] | None = None, cmd: list[str] | None = None,
              cwd: Path | None = None, context: ssl.SSLContext | None = None,
              ) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        proc = subprocess.Popen([*(cmd or NODE_COMMAND), *args, "--port", str(port)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=clean_env(env), cwd=cwd)
        procs.append(proc)
        url = f"{'https' if context else 'http'}://127.0.0.1:{port}"
        wait_ready(proc, url, context)
        return proc, url

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
