"""Certificates that change on disk are taken in without a restart.

Kubernetes updates a mounted Secret by swapping a symlink, so a node polls the identity of
its certificate, key and CA files and loads them again into the SSL contexts it already
serves with (the server's and the one towards peers): new handshakes use the new
certificate, open connections keep theirs. A half-written or mismatched pair is reported
once and the old certificate stays in use until a good pair appears."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Sequence

log = logging.getLogger("distcache.tls")

Identity = tuple[tuple[int, int, int] | None, ...]


def _identity(paths: Sequence[str]) -> Identity:
    out: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)  # follows the symlink a Secret volume swaps
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


class CertReloader:
    def __init__(self, cert: str, key: str, ca: str,
                 contexts: Sequence[ssl.SSLContext]) -> None:
        self.cert, self.key, self.ca = cert, key, ca
        self.contexts = list(contexts)
        self.paths = [p for p in (cert, key, ca) if p]
        self.seen = _identity(self.paths)
        self.failed: Identity | None = None
        self.reloads = 0

    def check(self) -> bool:
        """Load the files again if they changed; True when new ones were taken in."""
        now = _identity(self.paths)
        if now == self.seen or now == self.failed:
            return False
        try:
            for context in self.contexts:
                context.load_cert_chain(self.cert, self.key)
                if self.ca:
                    context.load_verify_locations(self.ca)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.failed = now
            log.warning("new TLS files at %s unusable, keeping the current ones: %s",
                        self.cert, exc)
            return False
        self.seen, self.failed = now, None
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.cert)
        return True

    async def run(self, every: float = 2.0) -> None:
        while True:
            await asyncio.sleep(every)
            self.check()
