"""One RESP connection on the event loop: bytes in, commands run in order, replies out.

Commands that this node answers at once (a local read, PING...) run inside data_received,
and the replies of one read go out in one write. A command that must wait (a peer, a
quorum write, the rate limiter) moves the rest of the queue to a task, so replies keep the
order of the commands. Backpressure both ways: when the client stops reading its replies,
the transport asks us to pause writing, commands stop running, and once MAX_PIPELINE
commands wait unanswered the socket stops being read."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, cast

from distcache_node.ratelimit import client_address
from distcache_node.resp import replies
from distcache_node.resp.commands import execute
from distcache_node.resp.errors import FrameError
from distcache_node.resp.parser import RequestReader
from distcache_node.resp.service import Service
from distcache_node.resp.session import Session

if TYPE_CHECKING:
    from collections.abc import Awaitable

log = logging.getLogger("distcache.resp")

MAX_PIPELINE = 1024  # commands waiting for their turn before the socket stops being read
FLUSH_BYTES = 256 * 1024  # replies gathered in one read are written out past this size


class RespProtocol(asyncio.Protocol):
    def __init__(self, svc: Service, connections: set[RespProtocol]) -> None:
        self.svc = svc
        self.connections = connections
        config = svc.config
        # A bulk string holds at most a value (stored JSON is never shorter than its RESP
        # text, but for base64); a frame at most an HTTP body's worth.
        self.reader = RequestReader(svc.max_args, config.max_value_size, config.body_limit)
        self.queue: deque[list[bytes] | FrameError] = deque()
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.task: asyncio.Task[None] | None = None
        self.writing_paused = False
        self.reading_paused = False
        self.closing = False
        self.reader_done = False  # the client shut its side: close once all is answered
        self.last_active = time.monotonic()
        self.frame_since: float | None = None  # when a command began arriving, unfinished

    # -- asyncio callbacks ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports do not subclass asyncio's.
        self.transport = transport = cast(asyncio.Transport, transport)
        svc = self.svc
        svc.connections_received += 1
        if len(self.connections) >= svc.config.max_connections:
            svc.connections_rejected += 1
            transport.write(replies.error("ERR max number of clients reached"))
            transport.close()
            self.closing = True
            return
        peer = transport.get_extra_info("peername")
        ip, port = (str(peer[0]), peer[1]) if isinstance(peer, tuple) else ("unknown", 0)
        addr = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        # Counted by the rate limiter as HTTP counts it (an IPv4 peer seen by a dual-stack
        # socket as ::ffff:a.b.c.d is a.b.c.d); RESP has no X-Forwarded-For to believe.
        client = client_address(ip, (), ())
        self.session = Session(svc, svc.ids(), addr, client, authed=not svc.api_keys.enabled)
        svc.sessions[self.session.id] = self.session
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.connections.discard(self)
        if self.session is not None:
            self.svc.sessions.pop(self.session.id, None)
        # A command already running is left to finish (bounded by the peer timeouts): it may
        # be a write half-way through its replication. Its reply is dropped (closing).
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        now = self.last_active = time.monotonic()
        try:
            commands = self.reader.feed(data)
        except FrameError as exc:
            # What came whole before the break still runs; then the error, then the close.
            self.queue.extend(exc.commands)
            self.queue.append(exc)
            self._stop_reading()
        else:
            if commands:
                self.queue.extend(commands)
            if not self.reader.mid_frame:
                self.frame_since = None
            elif commands or self.frame_since is None:
                self.frame_since = now  # a new command began arriving
        if self.task is None:
            self._run()
        if len(self.queue) >= MAX_PIPELINE:
            self._stop_reading()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.frame_since is not None:  # it reads again: its clock restarts (see _run)
            self.frame_since = time.monotonic()
        if self.task is None:
            self._run()

    def eof_received(self) -> bool | None:
        # The client is done sending: answer what it sent, then close (Redis does the same).
        # TLS has no half-close: there the transport closes itself whatever we answer.
        self.reader_done = True
        if not self.queue and self.task is None and self.transport is not None:
            self.transport.close()
        return self.transport is not None and self.transport.get_extra_info("sslcontext") is None

    # -- running the queue ---------------------------------------------------------------------
    def _run(self) -> None:
        """Run queued commands while their replies are ready; hand over to a task at the
        first that is not."""
        transport, session, queue = self.transport, self.session, self.queue
        if transport is None or session is None:
            return
        out: list[bytes] = []
        size = 0
        ran = False
        while queue and not self.writing_paused and not self.closing:
            ran = True
            item = queue.popleft()
            if isinstance(item, FrameError):
                out.append(replies.error(str(item)))
                self._close(out)
                return
            reply = execute(session, item)
            if type(reply) is not bytes:
                if out:
                    transport.write(b"".join(out))
                self.task = asyncio.get_running_loop().create_task(
                    self._wait(cast("Awaitable[bytes]", reply)))
                return
            out.append(reply)
            if session.close_after_reply:
                self._close(out)
                return
            size += len(reply)
            if size >= FLUSH_BYTES:
                transport.write(b"".join(out))
                out, size = [], 0
        if out:
            transport.write(b"".join(out))
        self.last_active = time.monotonic()
        if not queue:
            if self.reader_done:
                transport.close()
            elif self.reading_paused and not self.closing:
                self.reading_paused = False
                transport.resume_reading()
            if ran and self.frame_since is not None:
                # The client's time to finish its next command starts once it has had all
                # its replies: while we owed it some, it may rightly have waited.
                self.frame_since = time.monotonic()

    async def _wait(self, reply: Awaitable[bytes]) -> None:
        data = await reply
        self.task = None
        if self.closing or self.transport is None:
            return
        if self.session is not None and self.session.close_after_reply:
            self._close([data])
            return
        self.transport.write(data)
        self._run()

    def _stop_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closing:
            self.reading_paused = True
            self.transport.pause_reading()

    def _close(self, out: list[bytes]) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.write(b"".join(out))
            self.transport.close()  # after the buffered replies are sent

    # -- the server's sweeper ------------------------------------------------------------------
    def overdue(self, now: float, read_timeout: float, idle_timeout: float) -> str | None:
        """Why this connection should be closed now, if it should: a command that has been
        arriving for longer than read_timeout (a slow or stuck sender), or no traffic at all
        for idle_timeout (0: never) while nothing is running."""
        busy = self.queue or self.task is not None or self.writing_paused
        if (self.frame_since is not None and not busy and not self.reading_paused
                and now - self.frame_since > read_timeout):
            return "command not received in time"
        if (idle_timeout > 0 and self.task is None and not self.queue
                and now - self.last_active > idle_timeout):
            return "idle"
        return None

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()
