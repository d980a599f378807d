"""Certificates that change on disk are taken in without a restart.

Kubernetes updates a mounted Secret by swapping a symlink, so a node polls the identity of
its certificate, key and CA files and loads them again into the SSL contexts it serves with
(the server's and the one towards peers, each added with `add`): new handshakes use the new
certificate, open connections keep theirs. A half-written or mismatched pair is reported
once and the old certificate stays in use until a good pair appears.

`report` says what is loaded right now, for /status and /cluster/status: the SHA-256 of the
serving certificate (its DER, as a TLS client sees it) and of every CA certificate each
context trusts. The operator moves to a new CA step by step on these (it waits until every
pod trusts the new CA, then until every pod serves the certificate from it). A context adds
the CAs it loads to its trust store and never drops one, so after a CA has been removed from
the file it stays listed (and trusted) until the process restarts."""

from __future__ import annotations

import asyncio
import hashlib
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


def cert_fingerprint(path: str) -> str | None:
    """sha256 (hex) of the DER of the first certificate in the PEM file at `path`; None when
    it cannot be read."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read()
        end = text.index(ssl.PEM_FOOTER) + len(ssl.PEM_FOOTER)
        der = ssl.PEM_cert_to_DER_cert(text[text.index(ssl.PEM_HEADER):end])
    except (OSError, ValueError):
        return None
    return hashlib.sha256(der).hexdigest()


def trusted_fingerprints(context: ssl.SSLContext) -> set[str]:
    """sha256 (hex) of every CA certificate in the context's trust store."""
    return {hashlib.sha256(der).hexdigest()
            for der in context.get_ca_certs(binary_form=True)}


class CertReloader:
    def __init__(self, cert: str, key: str, ca: str,
                 contexts: Sequence[ssl.SSLContext] = ()) -> None:
        self.cert, self.key, self.ca = cert, key, ca
        self.contexts = list(contexts)
        self.paths = [p for p in (cert, key, ca) if p]
        self.seen = _identity(self.paths)
        self.failed: Identity | None = None
        self.reloads = 0
        self.error: str | None = None  # why the files on disk are not the ones loaded
        # Read before anything loads them: a file swapped in between differs in identity
        # from `seen`, so the next check loads it again and notes its fingerprint.
        self.cert_sha256 = cert_fingerprint(cert)

    def add(self, context: ssl.SSLContext) -> None:
        """Keep `context` (already loaded from the files) up to date too."""
        self.contexts.append(context)

    def check(self) -> bool:
        """Load the files again if they changed; True when new ones were taken in."""
        now = _identity(self.paths)
        if now == self.seen or now == self.failed:
            return False
        fingerprint = cert_fingerprint(self.cert)
        try:
            for context in self.contexts:
                context.load_cert_chain(self.cert, self.key)
                if self.ca:
                    context.load_verify_locations(self.ca)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.failed = now
            self.error = f"new TLS files unusable, the previous ones stay loaded: {exc}"
            log.warning("new TLS files at %s unusable, keeping the current ones: %s",
                        self.cert, exc)
            return False
        self.seen, self.failed, self.error = now, None, None
        self.cert_sha256 = fingerprint
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.cert)
        return True

    def report(self) -> dict[str, object]:
        """What is loaded right now: `cert_sha256` of the serving certificate, `ca_sha256`
        the CAs every context trusts (sorted), `reloads`, and `error` while new files on
        disk could not be loaded."""
        trusted = [trusted_fingerprints(c) for c in self.contexts]
        both = set.intersection(*trusted) if trusted else set()
        return {"cert_sha256": self.cert_sha256, "ca_sha256": sorted(both),
                "reloads": self.reloads, "error": self.error}

    async def run(self, every: float = 2.0) -> None:
        while True:
            await asyncio.sleep(every)
            self.check()
