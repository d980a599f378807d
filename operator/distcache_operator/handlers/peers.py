"""The operator's HTTP session to a DistCache's pods (cluster secret, the cache's CA): one per
DistCache, made again only when the secret or the CA changes."""

from __future__ import annotations

import ssl
from collections.abc import Callable

from distcache_node.cluster.peers import PeerClient, make_session
from distcache_node.cluster.ring import Member
from distcache_operator import apikeys
from distcache_operator.handlers.memory import DistCacheMemory

PEER_TIMEOUT = 3.0


async def ensure_session(mem: DistCacheMemory, secret: str, ca_pem: str | None) -> None:
    if mem.secret != (secret, ca_pem) or mem.session is None:
        await mem.close()
        ssl_ctx = ssl.create_default_context(cadata=ca_pem) if ca_pem else None
        # The Secret may list two secrets while it is rotated: a pod sends the first.
        mem.secret = (secret, ca_pem)
        mem.session = make_session(apikeys.sent_key(secret), ssl_ctx)


def clients(mem: DistCacheMemory) -> Callable[[Member], PeerClient]:
    """A PeerClient per member on the DistCache's session (ensure_session first)."""
    def client(member: Member) -> PeerClient:
        assert mem.session is not None, "ensure_session before talking to the pods"
        return PeerClient(member.id, member.url, mem.session, timeout=PEER_TIMEOUT)
    return client
