"""One client connection's state: who it is, whether it has authenticated, which protocol
version it speaks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from distcache_node.resp.service import Service


@dataclass
class Session:
    svc: Service
    id: int
    addr: str  # "ip:port", as CLIENT INFO and the rate limiter see the peer
    ip: str
    authed: bool = False
    resp3: bool = False
    name: bytes = b""
    lib_name: bytes = b""
    lib_ver: bytes = b""
    created: float = field(default_factory=time.monotonic)
    last_command: bytes = b""
    close_after_reply: bool = False  # QUIT

    def info_line(self) -> bytes:
        """CLIENT INFO / CLIENT LIST: Redis's field names, for the fields that exist here."""
        age = int(time.monotonic() - self.created)
        return (b"id=%d addr=%b laddr= fd=-1 name=%b age=%d idle=0 flags=N db=0 cmd=%b "
                b"resp=%d lib-name=%b lib-ver=%b\n" % (
                    self.id, self.addr.encode(), self.name, age,
                    self.last_command.lower() or b"NULL", 3 if self.resp3 else 2,
                    self.lib_name, self.lib_ver))
