"""What the operator remembers about one DistCache between steps, kept in kopf's per-object
`memo` (kopf.Memo: the same object for every handler and the daemon of that DistCache).

Only what saves work or keeps a message from being said twice: the ring ConfigMap and
`status` are the state, so an operator restarted with empty memory resumes where they say.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

STATUS_REFRESH = 60.0  # seconds between status writes when only live counts changed
MEMO_KEY = "distcache"  # where in kopf's memo the DistCacheMemory lives


@dataclass
class CredentialSeen:
    """A credential's Secret as the pods were last seen with it (handlers.credentials)."""

    loaded: tuple[str, ...] | None = None  # fingerprints every answering pod had
    waiting_for: tuple[str, ...] | None = None  # fingerprints some pods do not have yet
    since: float = 0.0  # loop time waiting_for was first seen
    warned: bool = False  # the CredentialsNotLoaded Warning was said for waiting_for


@dataclass
class DistCacheMemory:
    secret: tuple[str, str | None] | None = None  # cluster secret, CA: the session's
    session: aiohttp.ClientSession | None = None
    applied_at: float | None = None  # loop time of the last apply of the owned objects
    status_at: float | None = None  # loop time of the last status write
    tls_cert: str | None = None  # the certificate last seen in the TLS Secret
    notes: list[str] = field(default_factory=list)  # for the Available condition
    monitor_event: str | None = None
    last_event: tuple[str, str] | None = None
    tls_event: str | None = None  # the last TLSNotLoaded/TLSInvalid Event's message
    tls_waiting: tuple[str, ...] = ()  # the pods a CA move step waited for, last logged
    warned: set[str] = field(default_factory=set)  # one-off warnings already given
    missing_since: dict[str, float] = field(default_factory=dict)  # pod -> loop time first missed
    credentials: dict[str, CredentialSeen] = field(default_factory=dict)  # apiKey, clusterSecret
    # The daemon's wake-up: set by a spec change, a pod change or a stop; the daemon steps
    # at once instead of sleeping out the delay the last step returned.
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    force_apply: bool = True  # re-apply the owned objects at the next step (a spec change)
    stopping: bool = False  # the daemon ends after the step in flight (kopf's `stopped`)

    def poke(self, force_apply: bool = False) -> None:
        """Step now (a pod changed; with force_apply: the spec did)."""
        self.force_apply = self.force_apply or force_apply
        self.wake.set()

    def stop(self) -> None:
        self.stopping = True
        self.wake.set()

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None


def memory_of(memo: MutableMapping[Any, Any]) -> DistCacheMemory:
    """The DistCache's memory in kopf's per-object memo, made on first use."""
    mem = memo.get(MEMO_KEY)
    if not isinstance(mem, DistCacheMemory):
        mem = memo[MEMO_KEY] = DistCacheMemory()
    return mem
