"""A lean HTTP/1.1 client for the one peer call on the forwarding hot path.

A forwarded read costs the receiving node a full client request on top of serving its own
client; with aiohttp's client that request costs about as much CPU as serving one. Peers
are our own aiohttp servers answering small JSON bodies with a Content-Length, so a
pipelined-free keep-alive client that writes one request and parses one response is enough,
and several times cheaper. Everything else between peers (migration, rings, status) keeps
using aiohttp's client.

Connections are pooled per peer (one TLS handshake per connection, not per request) and
never shared by two requests at once.

Every call is bounded: connecting (TCP and TLS), writing the request and reading the answer
all happen within one deadline (the peer timeout), so a peer that drops packets costs that
long, not the OS connect timeout; and an answer is refused as soon as its head passes
MAX_HEAD bytes or it announces a body over the pool's cap (MAX_RESPONSE by default).
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

MAX_RESPONSE = 64 * 1024**2  # bytes: the largest answer read from a peer
MAX_HEAD = 64 * 1024  # bytes: status line and headers


class FastPathError(Exception):
    """The request got no usable answer. `refused`: no connection could be made at all."""

    def __init__(self, message: str, refused: bool = False, too_large: bool = False) -> None:
        super().__init__(message)
        self.refused = refused
        self.too_large = too_large  # the peer answered, too much: the answer, not the peer


class _Connection(asyncio.Protocol):
    def __init__(self, max_response: int = MAX_RESPONSE) -> None:
        self.max_response = max_response
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.keep_alive = True
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(FastPathError(f"connection lost: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self._fail(f"response head over {MAX_HEAD} bytes")
            return
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        try:
            status = int(head[0].split(" ", 2)[1])
            headers = dict(
                (name.strip().lower(), value.strip())
                for name, _, value in (line.partition(":") for line in head[1:])
            )
            length = int(headers["content-length"])
        except (IndexError, KeyError, ValueError):
            self._fail(f"unparseable response head: {head[:1]}")
            return
        if length > self.max_response:
            self._fail(f"response of {length} bytes is over the {self.max_response}-byte cap",
                       too_large=True)
            return
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4:end + 4 + length])
        del self.buffer[:end + 4 + length]
        self.keep_alive = headers.get("connection", "").lower() != "close"
        waiter.set_result((status, body))

    def _fail(self, message: str, too_large: bool = False) -> None:
        """No usable answer on this connection: fail the request, drop the connection."""
        self.keep_alive = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(FastPathError(message, too_large=too_large))
        if self.transport is not None:
            self.transport.close()

    async def request(self, data: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        try:
            return await self.waiter
        finally:
            self.waiter = None


class FastPool:
    def __init__(self, url: str, headers: dict[str, str], ssl_context: ssl.SSLContext | None,
                 max_idle: int = 32, max_response: int = MAX_RESPONSE) -> None:
        self.max_response = max_response
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl_context if parts.scheme == "https" else None
        self._host_header = parts.netloc
        self.set_headers(headers)
        self._idle: list[_Connection] = []
        self.max_idle = max_idle
        self.connections_opened = 0  # each one a TCP (and TLS) handshake: should stay small
        self.requests = 0

    def set_headers(self, headers: dict[str, str]) -> None:
        """The headers every request sends from now on (a rotated cluster secret)."""
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in
                              {"Host": self._host_header, **headers}.items()).encode("latin-1")

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                lambda: _Connection(self.max_response), self.host, self.port, ssl=self.ssl,
                server_hostname=self.host if self.ssl else None,
            )
            self.connections_opened += 1
        except (ConnectionRefusedError, ssl.SSLError) as exc:
            raise FastPathError(f"connect to {self.host}:{self.port}: {exc!r}",
                                refused=isinstance(exc, ConnectionRefusedError)) from exc
        except OSError as exc:  # unreachable host or network: as good as refused
            raise FastPathError(f"connect to {self.host}:{self.port}: {exc!r}",
                                refused=not isinstance(exc, TimeoutError)) from exc
        return conn

    async def post(self, path: str, body: bytes, extra_headers: bytes = b"",
                   timeout: float = 3.0) -> tuple[int, bytes]:
        """POST, for idempotent calls only: a reused connection the server closed while it
        sat idle is retried once on a fresh one. Connecting, writing and reading all fit in
        `timeout` seconds, or FastPathError."""
        try:
            async with asyncio.timeout(timeout):
                return await self._post(path, body, extra_headers)
        except TimeoutError:
            raise FastPathError(
                f"no answer from {self.host}:{self.port} in {timeout}s") from None

    async def _post(self, path: str, body: bytes, extra_headers: bytes) -> tuple[int, bytes]:
        data = b"POST %b HTTP/1.1\r\n%b%bContent-Type: application/json\r\n" \
               b"Content-Length: %d\r\n\r\n%b" % (
                   path.encode(), self._fixed, extra_headers, len(body), body)
        self.requests += 1
        for attempt in (0, 1):
            conn = self._take_idle() if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                conn = await self._connect()
            try:
                result = await conn.request(data)
            except FastPathError as exc:
                if conn.transport is not None:
                    conn.transport.close()
                if reused and not exc.too_large:
                    continue  # the server closed it while idle: once more, on a new one
                raise
            except BaseException:  # the deadline (cancellation): never pool this connection
                if conn.transport is not None:
                    conn.transport.close()
                raise
            if conn.keep_alive and not conn.closed and len(self._idle) < self.max_idle:
                self._idle.append(conn)
            elif conn.transport is not None:
                conn.transport.close()
            return result
        raise FastPathError(f"no usable connection to {self.host}:{self.port}")

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return None

    def close(self) -> None:
        for conn in self._idle:
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()
