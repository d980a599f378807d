"""httpserver.py's slow-client protection and connection bound reach into aiohttp internals that
aiohttp offers no public hook for (the protocol class a server builds, its table of
connections, a handler's request count). So aiohttp is pinned to one exact, tested version
in pyproject.toml, and this module fails loudly, naming the piece, when an upgrade moves any
of them: run it first after changing the pin. (tests/http/test_server.py checks the
behaviour itself: slowloris clients dropped, the 503 over --max-connections.)"""

from __future__ import annotations

import asyncio
import inspect
import re
import tomllib

import aiohttp
from aiohttp import web
from aiohttp.http_writer import StreamWriter
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from distcache_node.config import NodeConfig
from distcache_node.httpserver import GuardedAppRunner, GuardedRequestHandler, _GuardedServer
from support import ROOT


def test_aiohttp_is_pinned_to_the_installed_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [d for d in project["dependencies"] if re.match(r"aiohttp\b", d)]
    assert pins == [f"aiohttp=={aiohttp.__version__}"], (
        f"httpserver.py is tested against the pinned aiohttp only; installed "
        f"{aiohttp.__version__}, "
        f"pyproject says {pins}: re-run this module and tests/http/test_server.py, then pin")


def test_request_handler_internals() -> None:
    params = inspect.signature(RequestHandler.__init__).parameters
    assert "manager" in params and params["loop"].kind is inspect.Parameter.KEYWORD_ONLY, (
        "Server.__call__ builds RequestHandler(manager, loop=..., **kwargs)")
    assert "_request_count" in RequestHandler.__slots__, (
        "GuardedRequestHandler.data_received watches _request_count to see a request complete")
    for name in ("connection_made", "data_received", "handle_error", "log_exception"):
        assert callable(getattr(RequestHandler, name, None)), f"RequestHandler.{name} is gone"
    assert list(inspect.signature(RequestHandler.handle_error).parameters) == [
        "self", "request", "status", "exc", "message"], "handle_error's signature changed"
    assert "output_size" in inspect.getsource(StreamWriter), (
        "handle_error checks request.writer.output_size before answering")


async def test_server_internals_and_the_class_swap() -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    loop = asyncio.get_running_loop()
    server = Server(handler, loop=loop, keepalive_timeout=5.0)
    assert server._connections == {}, "Server._connections: the sweeper's table of handlers"
    assert server._kwargs == {"keepalive_timeout": 5.0}, "Server._kwargs: the handler's kwargs"
    assert server._loop is loop
    server.__class__ = _GuardedServer  # what GuardedAppRunner._make_server does
    guarded = server()
    assert isinstance(guarded, GuardedRequestHandler)
    assert guarded._request_count == 0 and guarded.logger is not None


async def test_app_runner_builds_its_server_in_make_server() -> None:
    assert inspect.iscoroutinefunction(web.AppRunner._make_server)
    runner = GuardedAppRunner(web.Application(), NodeConfig(max_connections=7))
    await runner.setup()  # builds the server; binds nothing
    try:
        assert isinstance(runner.server, _GuardedServer)
        assert runner.server.max_connections == 7
        assert runner.sweep_slow_clients() == 0
    finally:
        await runner.cleanup()
