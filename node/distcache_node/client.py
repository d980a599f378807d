"""A ring-aware async client: reads the ring from GET /status, sends each key straight
to its primary owner (saving the forwarding hop), and refreshes the ring when a response
says its version changed. Any node can serve any key, so a down owner is retried elsewhere.

    async with DistCacheClient(["http://127.0.0.1:8080"], api_key="...") as cache:
        await cache.set("user:1", "Alice", ttl=60)
        await cache.get("user:1")
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import aiohttp
import orjson
from yarl import URL

from distcache_node.cluster.ring import RingDoc, RingError
from distcache_node.protocol import DEADLINE_HEADER, STOPPING_HEADER
from distcache_node.protocol import RING_VERSION_HEADER as RING_HEADER


def ring_of_status(status: Any) -> RingDoc:
    """The ring document in a node's GET /status answer (validated like any other ring)."""
    if not isinstance(status, dict) or not isinstance(status.get("members"), list):
        raise RingError("not a /status answer")
    return RingDoc.from_json({
        "version": status.get("ring_version"), "replication": status.get("replication"),
        "members": [{k: m.get(k) for k in ("id", "url", "state")} if isinstance(m, dict) else m
                    for m in status["members"]],
    })


class CacheError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


class DistCacheClient:
    def __init__(
        self, seeds: Sequence[str], api_key: str = "", ssl_context: ssl.SSLContext | None = None,
        connections_per_node: int = 32, timeout: float = 10.0, retry_for: float = 15.0,
    ) -> None:
        self.seeds = [s.rstrip("/") for s in seeds]
        headers = {"X-API-Key": api_key} if api_key else {}
        self.retry_for = retry_for
        self.timeout = timeout
        self.retries = 0  # calls sent again (another node, or after a 503), for reports
        self.session = aiohttp.ClientSession(
            # A node that went away without a word (its pod IP gone) must not hold a call
            # for the whole timeout: connecting gets a short bound of its own.
            headers=headers, timeout=aiohttp.ClientTimeout(total=timeout,
                                                           sock_connect=min(2.0, timeout)),
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=connections_per_node,
                                           ssl=ssl_context if ssl_context else False),
        )
        self.ring: RingDoc | None = None
        self._urls: dict[str, str] = {}
        self._refreshing: asyncio.Task[None] | None = None
        # Nodes to keep off while they stop or are unreachable, each with a task polling its
        # /readyz; a node is used again once it answers ready (a restarted pod).
        self._avoid: dict[str, asyncio.Task[None]] = {}

    async def __aenter__(self) -> DistCacheClient:
        await self.refresh()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        for task in self._avoid.values():
            task.cancel()
        await self.session.close()

    def avoiding(self) -> list[str]:
        return list(self._avoid)

    def _keep_off(self, url: str) -> None:
        # Only ring members: with one seed and no ring there is nowhere else to go.
        if url not in self._avoid and url in self._urls.values() and not self.session.closed:
            self._avoid[url] = asyncio.create_task(self._until_ready(url))

    def _forget_address(self, url: str) -> None:
        parsed = URL(url)
        if isinstance(self.session.connector, aiohttp.TCPConnector) and parsed.host:
            self.session.connector.clear_dns_cache(parsed.host, parsed.port)

    async def _until_ready(self, url: str) -> None:
        try:
            while url in self._urls.values():
                await asyncio.sleep(0.5)
                self._forget_address(url)  # a restarted pod answers at a new address
                with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                    async with self.session.get(
                            url + "/readyz", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200 and STOPPING_HEADER not in resp.headers:
                            return
        finally:
            self._avoid.pop(url, None)

    async def refresh(self) -> None:
        last: Exception | None = None
        for url in [*self._urls.values(), *self.seeds]:
            try:
                async with self.session.get(url + "/status") as resp:
                    if resp.status != 200:
                        last = CacheError(resp.status, await resp.text())
                        continue
                    doc = ring_of_status(await resp.json(loads=orjson.loads))
                    if self.ring is None or doc.version >= self.ring.version:
                        self.ring = doc
                        self._target = doc.target()
                        self._urls = {m.id: m.url for m in doc.members}
                    return
            except (TimeoutError, aiohttp.ClientError, RingError) as exc:
                last = exc
        if self.ring is None:
            raise ConnectionError(f"no seed answered /status: {last!r}")

    def _note_version(self, resp: aiohttp.ClientResponse) -> None:
        raw = resp.headers.get(RING_HEADER)
        newer = raw is not None and self.ring is not None and int(raw) > self.ring.version
        if newer and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.create_task(self.refresh())

    def owner_url(self, key: str) -> str:
        """The key's primary, or while that one stops or is unreachable its next owner."""
        assert self.ring is not None, "use `async with` or call refresh() first"
        owners = self._target.preference(key)
        if not owners:
            return self.seeds[0]
        for member in owners:
            url = self._urls[member]
            if url not in self._avoid:
                return url
        return self._urls[owners[0]]

    async def _call(self, method: str, url: str, path: str, idempotent: bool = True,
                    **kwargs: Any) -> tuple[int, Any]:
        """One request, sent first to `url` (the key's owner). Any node can serve any key, so
        when that node is unreachable the call goes to another. An idempotent call (get, a
        whole-value set, delete, mget, mset) is also sent again when the connection broke
        after it was sent, and after a 503 (a node going away, a write that could not reach
        its replicas yet), for up to `retry_for` seconds with the ring refreshed in between.
        A non-idempotent one (incr) is sent again only when it never left this process."""
        deadline = time.monotonic() + self.retry_for
        last: Exception | None = None
        answer: tuple[int, Any] | None = None
        delay = 0.05
        while True:
            others = random.sample(list(self._urls.values()), len(self._urls))
            candidates = [url, *(u for u in others if u not in self._avoid),
                          *(u for u in others if u in self._avoid)]
            for base in dict.fromkeys(candidates):
                if method != "GET":
                    # Past this the attempt is given up (and perhaps sent again): a node
                    # that reads it later must not apply it over what came after.
                    kwargs["headers"] = {DEADLINE_HEADER: f"{time.time() + self.timeout:.3f}"}
                try:
                    async with self.session.request(method, base + path, **kwargs) as resp:
                        self._note_version(resp)
                        if STOPPING_HEADER in resp.headers:
                            self._keep_off(base)
                        body = await resp.read()
                        answer = resp.status, orjson.loads(body) if body else None
                except aiohttp.ClientConnectorError as exc:  # never sent: safe to resend
                    last = exc
                    self._keep_off(base)
                except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                    self._keep_off(base)
                    if not idempotent:
                        raise ConnectionError(f"{base}: {exc!r}; the call may or may not "
                                              "have been applied") from exc
                    last = exc
                else:
                    if answer[0] != 503 or not idempotent:
                        return answer
                    last = None
                self.retries += 1
                if time.monotonic() > deadline:
                    break
            if time.monotonic() > deadline:
                break
            # Every node failed this round: the ring may have moved on (a shrink).
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)
            with contextlib.suppress(ConnectionError):
                await self.refresh()
        if answer is not None and last is None:
            return answer
        raise ConnectionError(f"no node reachable: {last!r}")

    @staticmethod
    def _check(status: int, body: Any) -> Any:
        if status >= 400:
            raise CacheError(status, body)
        return body

    async def get(self, key: str, default: Any = None) -> Any:
        status, body = await self._call("GET", self.owner_url(key), "/get", params={"key": key})
        if status == 404:
            return default
        return self._check(status, body)["value"]

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        payload: dict[str, Any] = {"key": key, "value": value}
        if ttl is not None:
            payload["ttl"] = ttl
        self._check(*await self._call("POST", self.owner_url(key), "/set",
                                      data=orjson.dumps(payload)))

    async def delete(self, key: str) -> bool:
        status, body = await self._call("DELETE", self.owner_url(key), "/delete",
                                        params={"key": key})
        return bool(self._check(status, body)["deleted"])

    async def incr(self, key: str, delta: int = 1, ttl: float | None = None) -> int:
        payload: dict[str, Any] = {"key": key, "delta": delta}
        if ttl is not None:
            payload["ttl"] = ttl
        body = self._check(*await self._call("POST", self.owner_url(key), "/incr",
                                             idempotent=False, data=orjson.dumps(payload)))
        return int(body["value"])

    def _by_owner(self, keys: Iterable[str]) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = defaultdict(list)
        for key in keys:
            groups[self.owner_url(key)].append(key)
        return groups

    async def mget(self, keys: Sequence[str]) -> dict[str, Any]:
        groups = self._by_owner(dict.fromkeys(keys))
        results = await asyncio.gather(*(
            self._call("POST", url, "/mget", data=orjson.dumps({"keys": ks}))
            for url, ks in groups.items()
        ))
        found: dict[str, Any] = {}
        for status, body in results:
            found.update(self._check(status, body)["values"])
        return found

    async def mset(self, items: Iterable[tuple[str, Any, float | None]]) -> int:
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for key, value, ttl in items:
            item: dict[str, Any] = {"key": key, "value": value}
            if ttl is not None:
                item["ttl"] = ttl
            groups[self.owner_url(key)].append(item)
        results = await asyncio.gather(*(
            self._call("POST", url, "/mset", data=orjson.dumps({"items": batch}))
            for url, batch in groups.items()
        ))
        return sum(int(self._check(status, body)["stored"]) for status, body in results)
