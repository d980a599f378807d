"""The seam between a node and its peers: one client per peer over pooled keep-alive
connections (one TLS handshake per connection, not per request), and the wire format.

Entries travel as [key, value, ttl, version] with the value spliced in as the stored JSON
bytes, so forwarding never re-encodes what it does not need to.

Every call is bounded: connecting and each read within the peer timeout (--peer-timeout),
the whole call within twice that plus time to send its body at a modest rate, and no answer
is read past MAX_RESPONSE bytes. A peer that drops packets, stalls or streams without end
costs a bounded wait, then the caller tries another owner.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import aiohttp
import orjson

from distcache_node.cluster.fastpath import MAX_RESPONSE, FastPathError, FastPool
from distcache_node.cluster.replication import VERSION_MAX
from distcache_node.protocol import FROM_HEADER, RING_HEADER, SECRET_HEADER

WireEntry = tuple[str, bytes, float | None, int]  # key, JSON value bytes, ttl, version
DEFAULT_TIMEOUT = 3.0  # seconds: --peer-timeout's default
SEND_RATE = 8 * 1024**2  # bytes/s a request body is granted on top of the timeout


class PeerError(Exception):
    """A peer could not be reached or answered with an error."""

    def __init__(
        self, peer: str, message: str, unreachable: bool = True, refused: bool = False,
        status: int | None = None, error: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(f"{peer}: {message}")
        self.peer = peer
        self.unreachable = unreachable  # the call did not get an answer: try elsewhere
        # No connection could even be made (port closed, host gone): proof of death, unlike
        # a dropped keep-alive connection or a slow answer, which the heartbeat judges.
        self.refused = refused
        # The peer answered with an error: its HTTP status and (code, message) when JSON.
        self.status = status
        self.error = error


def _error_of(raw: bytes) -> tuple[str, str] | None:
    """(error, message) of a peer's JSON error answer, if it is one."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"], str(body.get("message", ""))
    return None


def encode_entries(entries: Iterable[WireEntry]) -> bytes:
    dumps = orjson.dumps
    return b",".join(
        b"[%b,%b,%b,%d]" % (dumps(k), v, b"null" if t is None else dumps(t), ver)
        for k, v, t, ver in entries
    )


def check_version(version: Any) -> int:
    """A write version off the wire: an integer in 0..2^63-1, or ValueError."""
    if isinstance(version, bool) or not isinstance(version, int) \
            or not 0 <= version <= VERSION_MAX:
        raise ValueError(f"version must be an integer in 0..2^63-1, not {version!r}")
    return version


def decode_entries(raw: list[Any]) -> list[WireEntry]:
    """Inverse of encode_entries after orjson.loads; raises ValueError on a bad shape."""
    out: list[WireEntry] = []
    dumps = orjson.dumps
    for item in raw:
        if not isinstance(item, list) or len(item) != 4:
            raise ValueError("entry must be [key, value, ttl, version]")
        key, value, ttl, version = item
        if not isinstance(key, str):
            raise ValueError("entry key must be a string")
        check_version(version)
        if ttl is not None and (not isinstance(ttl, int | float) or ttl <= 0):
            continue  # expired in flight: nothing to store
        out.append((key, dumps(value), None if ttl is None else float(ttl), version))
    return out


# /cluster/apply also takes its batch with the values outside JSON: a JSON head line
# {"entries": [[key, value length, ttl, version], ...], "deletes": [[key, version], ...]}, a
# newline, then the values' stored JSON bytes back to back. Migration moves large values, and
# splicing them into a JSON array costs an encode on the sender and a parse plus re-encode on
# the receiver per byte, several times the cost of sending them (docs/benchmarks.md).
BATCH_TYPE = "application/x-distcache-batch"


def encode_batch(entries: Iterable[WireEntry], deletes: Iterable[tuple[str, int]] = ()
                 ) -> bytes:
    head: list[tuple[str, int, float | None, int]] = []
    values: list[bytes] = []
    for key, value, ttl, version in entries:
        head.append((key, len(value), ttl, version))
        values.append(value)
    return b"".join([orjson.dumps({"entries": head, "deletes": list(deletes)}), b"\n",
                     *values])


def decode_batch(body: bytes) -> tuple[list[WireEntry], list[tuple[str, int]]]:
    """Inverse of encode_batch; ValueError on any bad shape, a value that is not JSON, or
    lengths that do not add up to the body (the batch is refused as a whole)."""
    newline = body.find(b"\n")
    if newline < 0:
        raise ValueError("no head line")
    head = orjson.loads(memoryview(body)[:newline])
    if not isinstance(head, dict):
        raise ValueError("head must be a JSON object")
    items, raw_deletes = head.get("entries") or [], head.get("deletes") or []
    if not isinstance(items, list) or not isinstance(raw_deletes, list):
        raise ValueError("'entries' and 'deletes' must be lists")
    deletes = [(str(k), check_version(v)) for k, v in raw_deletes]
    out: list[WireEntry] = []
    offset, loads = newline + 1, orjson.loads
    for item in items:
        if not isinstance(item, list) or len(item) != 4:
            raise ValueError("entry must be [key, length, ttl, version]")
        key, length, ttl, version = item
        if not isinstance(key, str):
            raise ValueError("entry key must be a string")
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ValueError(f"entry length must be a non-negative integer, not {length!r}")
        check_version(version)
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float)):
            raise ValueError(f"entry ttl must be a number or null, not {ttl!r}")
        end = offset + length
        if end > len(body):
            raise ValueError("entry lengths run past the end of the body")
        value = body[offset:end]
        loads(value)  # what is stored must be JSON, as on the JSON path
        offset = end
        if ttl is not None and ttl <= 0:
            continue  # expired in flight: nothing to store
        out.append((key, value, None if ttl is None else float(ttl), version))
    if offset != len(body):
        raise ValueError(f"{len(body) - offset} bytes after the last value")
    return out, deletes


EXPORT_READ_FACTOR = 5


class ResponseTooLarge(Exception):
    pass


async def read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    """The response body, or ResponseTooLarge once it passes `cap` bytes (decoded)."""
    length = resp.content_length
    if length is not None and length > cap:
        raise ResponseTooLarge(f"response of {length} bytes is over the {cap}-byte cap")
    if length is not None and "Content-Encoding" not in resp.headers:
        return await resp.read()  # exactly Content-Length bytes
    body = bytearray()
    async for chunk in resp.content.iter_any():
        body += chunk
        if len(body) > cap:
            raise ResponseTooLarge(f"response over the {cap}-byte cap")
    return bytes(body)


class PeerClient:
    def __init__(
        self, peer_id: str, url: str, session: aiohttp.ClientSession,
        timeout: float = DEFAULT_TIMEOUT,
        sender: tuple[str, Callable[[], int]] | None = None, fast: FastPool | None = None,
        max_response: int = MAX_RESPONSE,
    ) -> None:
        self.id = peer_id
        self.url = url
        self.session = session
        self.peer_timeout = timeout
        self.max_response = max_response
        self.timeout = self._timeout(0)
        # (our member id, our ring version): lets a peer on an older ring catch up before
        # acting on what we send.
        self.sender = sender
        self.fast = fast  # the lean client for get_many, the forwarding hot path
        self._pending: dict[str, asyncio.Future[Any]] | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self.binary_apply = True  # False once the peer refused a BATCH_TYPE body

    def forwarding_stats(self) -> dict[str, int]:
        """Reads forwarded to this peer and the connections they needed."""
        fast = self.fast
        return {"forwarded_requests": fast.requests if fast else 0,
                "forwarding_connections_opened": fast.connections_opened if fast else 0}

    def _timeout(self, body_size: int) -> aiohttp.ClientTimeout:
        """Connect, and each read, within the peer timeout; the whole call within twice
        that plus the time to send the body at SEND_RATE (aiohttp has no write timeout)."""
        t = self.peer_timeout
        return aiohttp.ClientTimeout(total=2 * t + body_size / SEND_RATE, connect=t,
                                     sock_connect=t, sock_read=t)

    def _headers(self, body: bytes | None, content_type: str = "application/json"
                 ) -> dict[str, str] | None:
        headers = {"Content-Type": content_type} if body is not None else {}
        if self.sender is not None:
            headers[FROM_HEADER] = self.sender[0]
            headers[RING_HEADER] = str(self.sender[1]())
        return headers or None

    async def _call(
        self, method: str, path: str, body: bytes | None = None, timeout: float | None = None,
        content_type: str = "application/json",
    ) -> Any:
        if timeout is not None:
            client_timeout = aiohttp.ClientTimeout(total=timeout)
        elif body:
            client_timeout = self._timeout(len(body))
        else:
            client_timeout = self.timeout
        try:
            async with self.session.request(
                method, self.url + path, data=body, timeout=client_timeout,
                headers=self._headers(body, content_type),
            ) as resp:
                try:
                    raw = await read_capped(resp, self.max_response)
                except ResponseTooLarge as exc:
                    raise PeerError(self.id, f"{method} {path}: {exc}",
                                    unreachable=False) from None
                if resp.status >= 400:
                    # A 4xx/5xx means the peer is alive: only transport failures suspect it.
                    raise PeerError(self.id, f"{method} {path} -> {resp.status}: "
                                    f"{raw[:200].decode(errors='replace')}", unreachable=False,
                                    status=resp.status, error=_error_of(raw))
                return orjson.loads(raw) if raw else None
        except (TimeoutError, aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            raise PeerError(self.id, f"{method} {path}: {exc!r}",
                            refused=_refused(exc)) from exc

    async def ping(self, timeout: float, announce: str = "",
                   routed_around: str = "") -> dict[str, Any]:
        """`announce` ("id boot_id ready") tells the peer we are up, with which boot;
        `routed_around` (the peer's boot id) that we sent writes around that process."""
        query = [f"from={announce}"] if announce else []
        query += [f"routed_around={routed_around}"] if routed_around else []
        path = "/cluster/ping" + ("?" + "&".join(query) if query else "")
        result: dict[str, Any] = await self._call("GET", path, timeout=timeout)
        return result

    async def get_ring(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/cluster/ring")
        return result

    async def put_ring(self, doc: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("PUT", "/cluster/ring", orjson.dumps(doc))
        return result

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/cluster/status")
        return result

    async def drain(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "/cluster/drain", b"{}")
        return result

    async def get_one(self, key: str) -> tuple[bytes, float | None, int] | None:
        """One key, batched with the other single-key reads for this peer that arrive in the
        same event-loop turn: under load, one request carries many forwarded GETs."""
        if self._pending is None:
            self._pending = {}
            asyncio.get_running_loop().call_soon(self._flush)
        waiter = self._pending.get(key)
        if waiter is None:
            waiter = self._pending[key] = asyncio.get_running_loop().create_future()
        return await asyncio.shield(waiter)

    def _flush(self) -> None:
        pending, self._pending = self._pending or {}, None
        task = asyncio.get_running_loop().create_task(self._fetch_batch(pending))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _fetch_batch(self, pending: dict[str, asyncio.Future[Any]]) -> None:
        try:
            entries = await self.get_many(list(pending))
        except PeerError as exc:
            for waiter in pending.values():
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        except BaseException as exc:  # never leave a waiter hanging
            for waiter in pending.values():
                if not waiter.done():
                    waiter.set_exception(PeerError(self.id, repr(exc)))
            raise
        found = {key: (value, ttl, version) for key, value, ttl, version in entries}
        for key, waiter in pending.items():
            if not waiter.done():
                waiter.set_result(found.get(key))

    async def get_many(self, keys: list[str]) -> list[WireEntry]:
        if self.fast is not None:
            return await self._get_many_fast(keys)
        return await self._get_many_aiohttp(keys)

    async def _get_many_fast(self, keys: list[str]) -> list[WireEntry]:
        sender = b""
        if self.sender is not None:
            sender = b"%b: %b\r\n%b: %d\r\n" % (
                FROM_HEADER.encode(), self.sender[0].encode(), RING_HEADER.encode(),
                self.sender[1]())
        assert self.fast is not None
        try:
            status, raw = await self.fast.post(
                "/cluster/get", orjson.dumps({"keys": keys}), sender,
                timeout=self.peer_timeout)
        except FastPathError as exc:
            raise PeerError(self.id, f"POST /cluster/get: {exc}", refused=exc.refused,
                            unreachable=not exc.too_large) from exc
        if status != 200:
            raise PeerError(self.id, f"POST /cluster/get -> {status}: "
                            f"{raw[:200].decode(errors='replace')}", unreachable=False)
        return decode_entries(orjson.loads(raw)["entries"])

    async def _get_many_aiohttp(self, keys: list[str]) -> list[WireEntry]:
        result = await self._call("POST", "/cluster/get", orjson.dumps({"keys": keys}))
        return decode_entries(result["entries"])

    async def apply(
        self, entries: Iterable[WireEntry] = (), deletes: Iterable[tuple[str, int]] = ()
    ) -> dict[str, Any]:
        entries, deletes = list(entries), list(deletes)
        if self.binary_apply:
            try:
                result: dict[str, Any] = await self._call(
                    "POST", "/cluster/apply", encode_batch(entries, deletes),
                    content_type=BATCH_TYPE)
                return result
            except PeerError as exc:
                # A peer from before BATCH_TYPE reads the body as JSON and refuses it as
                # malformed: speak JSON to it from now on (a rolling upgrade).
                if exc.error is None or exc.error[0] != "malformed_json":
                    raise
                self.binary_apply = False
        body = b'{"entries":[%b],"deletes":%b}' % (
            encode_entries(entries), orjson.dumps(deletes),
        )
        result = await self._call("POST", "/cluster/apply", body)
        return result

    async def incr(self, key: str, delta: int, ttl: float | None) -> tuple[int, int]:
        """(new value, its version) from the key's primary."""
        body = orjson.dumps({"key": key, "delta": delta, "ttl": ttl})
        result = await self._call("POST", "/cluster/incr", body)
        return int(result["value"]), int(result.get("version", 0))

    async def export(self, owner: str, ring_version: int
                     ) -> AsyncIterator[tuple[list[WireEntry], list[tuple[str, int]]]]:
        """Batches of (entries, deletes) of keys this peer holds that `owner` should hold:
        a restarted node's refill."""
        body = orjson.dumps({"owner": owner, "ring_version": ring_version})
        # No overall deadline (a large share takes as long as it takes), but connecting and
        # every read have one: the peer scans its store between batches, so reads get
        # EXPORT_READ_FACTOR times the peer timeout. One line (batch) is capped like any
        # answer.
        t = self.peer_timeout
        timeout = aiohttp.ClientTimeout(total=None, connect=t, sock_connect=t,
                                        sock_read=EXPORT_READ_FACTOR * t)
        try:
            async with self.session.post(
                self.url + "/cluster/export", data=body, timeout=timeout,
                headers=self._headers(body),
            ) as resp:
                if resp.status >= 400:
                    raise PeerError(self.id, f"export -> {resp.status}", unreachable=False)
                line = bytearray()
                async for chunk in resp.content.iter_any():
                    start = 0
                    while (end := chunk.find(b"\n", start)) >= 0:
                        line += chunk[start:end]
                        if line.strip():
                            yield _export_batch(line)
                        line, start = bytearray(), end + 1
                    line += chunk[start:]
                    if len(line) > self.max_response:
                        raise PeerError(self.id, f"export: a line over the "
                                        f"{self.max_response}-byte cap", unreachable=False)
                if line.strip():
                    yield _export_batch(line)
        except (TimeoutError, aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            raise PeerError(self.id, f"export: {exc!r}", refused=_refused(exc)) from exc
        except (TypeError, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
            raise PeerError(self.id, f"export: bad line: {exc}", unreachable=False) from exc


def _export_batch(line: bytes | bytearray) -> tuple[list[WireEntry], list[tuple[str, int]]]:
    doc = orjson.loads(line)
    if isinstance(doc, dict):
        return [], [(str(k), check_version(v)) for k, v in doc.get("deletes") or []]
    return decode_entries(doc), []


def _refused(exc: BaseException) -> bool:
    return isinstance(exc, aiohttp.ClientConnectorError | ConnectionRefusedError) and not (
        isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError))


def client_ssl_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """Mutual TLS towards peers: present our certificate, trust only the cluster CA."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def make_session(
    secret: str, ssl_context: ssl.SSLContext | None, limit_per_host: int = 64
) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=0, limit_per_host=limit_per_host, ssl=ssl_context if ssl_context else False,
        keepalive_timeout=60, enable_cleanup_closed=True,
    )
    headers = {SECRET_HEADER: secret} if secret else {}
    # Raw bytes in and out: peers exchange already-encoded JSON.
    return aiohttp.ClientSession(connector=connector, headers=headers, auto_decompress=True,
                                 json_serialize=lambda o: orjson.dumps(o).decode())
