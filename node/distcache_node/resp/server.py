"""The RESP listener beside the HTTP one: start, a sweeper for slow and idle connections,
stop. TLS uses the very SSLContext the HTTP server serves with (serve.py), so a certificate
that tlsreload.py takes in is served on both ports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time

from distcache_node.resp.protocol import RespProtocol
from distcache_node.resp.service import Service

log = logging.getLogger("distcache.resp")


class RespServer:
    def __init__(self, svc: Service, ssl_context: ssl.SSLContext | None = None) -> None:
        self.svc = svc
        self.ssl_context = ssl_context
        self.connections: set[RespProtocol] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one the OS chose for port 0)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        config = self.svc.config
        self._server = await loop.create_server(
            lambda: RespProtocol(self.svc, self.connections), host, port,
            ssl=self.ssl_context, reuse_address=True, backlog=1024,
            # A TLS client that never finishes its handshake holds a slot like a slow one.
            ssl_handshake_timeout=config.request_read_timeout if self.ssl_context else None,
        )
        every = max(0.2, min(config.request_read_timeout, config.resp_idle_timeout or 1e9) / 4)
        self._sweeper = asyncio.create_task(self._sweep_forever(every), name="resp-sweeper")
        log.info("RESP (Redis protocol) listening on %s:%d%s", host, self.port,
                 " with TLS" if self.ssl_context else "")

    def sweep(self) -> int:
        """Close connections that are slow to send a command, or idle past the limit."""
        config = self.svc.config
        now = time.monotonic()
        closed = 0
        for conn in list(self.connections):
            why = conn.overdue(now, config.request_read_timeout, config.resp_idle_timeout)
            if why is not None:
                log.debug("closing RESP connection: %s", why)
                conn.close()
                closed += 1
        return closed

    async def _sweep_forever(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            self.sweep()

    async def stop(self, timeout: float = 5.0) -> None:
        """No new connections; commands already running get up to `timeout` to answer."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is None:
            return
        self._server.close()
        deadline = time.monotonic() + timeout
        tasks = [c.task for c in self.connections if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        for conn in list(self.connections):
            conn.close()
        await asyncio.sleep(0)  # let the transports report their close
        self._server = None
