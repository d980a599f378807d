"""Certificates that change on disk are taken in without a restart.

Kubernetes updates a mounted Secret by swapping a symlink, so a node polls the identity of
its certificate, key and CA files and loads them again for the SSL contexts it serves with
(the server's and the one towards peers, each added with `add`): new handshakes use the new
certificate and the new trust, open connections keep theirs. A half-written or mismatched
pair, or a CA file that cannot be read, is reported once and the old material stays in use
until good files appear.

Trust is built afresh on every reload. OpenSSL only ever adds to a context's trust store
(load_verify_locations cannot forget a CA), so with a CA file each added context gets a new
twin SSLContext per reload, with the same settings, the files' certificate and exactly the
files' CAs, and the added context hands every new connection to its current twin: its
`wrap_bio` (what asyncio and uvloop call for each connection, client or server side) and
`wrap_socket` build the SSL object on the twin. A CA dropped from the file is thus refused
from the next handshake on, without a restart, and its TLS sessions cannot be resumed (the
twin has its own session cache and ticket keys). Without a CA file the certificate is loaded
into the added contexts themselves, as there is no trust to renew.

`report` says what is loaded right now, for /status and /cluster/status: the SHA-256 of the
serving certificate (its DER, as a TLS client sees it) and of every CA certificate each
context trusts. The operator moves to a new CA step by step on these (it waits until every
pod trusts the new CA, then until every pod serves the certificate from it)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import ssl
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("distcache.tls")

Identity = tuple[tuple[int, int, int] | None, ...]


def file_identity(paths: Sequence[str]) -> Identity:
    """What changes when any of the files is rewritten or replaced, also through the
    `..data` symlink kubelet swaps in a Secret volume: (inode, mtime, size) each, None for
    one that cannot be read. Shared with keyfile.py, which watches credential files."""
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


def _twin(context: ssl.SSLContext, cert: str, key: str, ca: str) -> ssl.SSLContext:
    """A new context with the settings of `context` (protocol, options, verification, TLS
    versions), `cert`/`key` and exactly the CAs in `ca`."""
    fresh = ssl.SSLContext(context.protocol)
    fresh.options = context.options
    fresh.verify_flags = context.verify_flags
    fresh.minimum_version = context.minimum_version
    fresh.maximum_version = context.maximum_version
    fresh.check_hostname = False  # before verify_mode: CERT_NONE is refused while it is on
    fresh.verify_mode = context.verify_mode
    fresh.check_hostname = context.check_hostname
    fresh.hostname_checks_common_name = context.hostname_checks_common_name
    fresh.post_handshake_auth = context.post_handshake_auth
    if context.protocol == ssl.PROTOCOL_TLS_SERVER:
        fresh.num_tickets = context.num_tickets
    fresh.load_cert_chain(cert, key)
    fresh.load_verify_locations(ca)
    return fresh


class CertReloader:
    def __init__(self, cert: str, key: str, ca: str,
                 contexts: Sequence[ssl.SSLContext] = ()) -> None:
        self.cert, self.key, self.ca = cert, key, ca
        self.contexts: list[ssl.SSLContext] = []
        # What new connections of each added context are built on: the context itself until
        # the first reload with a CA file, then its latest twin (see the module docstring).
        self.current: list[ssl.SSLContext] = []
        self.paths = [p for p in (cert, key, ca) if p]
        self.seen = file_identity(self.paths)
        self.failed: Identity | None = None
        self.reloads = 0
        self.error: str | None = None  # why the files on disk are not the ones loaded
        # Read before anything loads them: a file swapped in between differs in identity
        # from `seen`, so the next check loads it again and notes its fingerprint.
        self.cert_sha256 = cert_fingerprint(cert)
        for context in contexts:
            self.add(context)

    def add(self, context: ssl.SSLContext) -> None:
        """Keep `context` (already loaded from the files) up to date too."""
        index = len(self.contexts)
        self.contexts.append(context)
        self.current.append(context)
        if not self.ca:
            return
        current = self.current

        # Called on the class, not the instance: these very methods are the instance's.
        def wrap_bio(*args: Any, **kwargs: Any) -> ssl.SSLObject:
            return ssl.SSLContext.wrap_bio(current[index], *args, **kwargs)

        def wrap_socket(*args: Any, **kwargs: Any) -> ssl.SSLSocket:
            return ssl.SSLContext.wrap_socket(current[index], *args, **kwargs)

        setattr(context, "wrap_bio", wrap_bio)  # noqa: B010 - an instance's, not a class's
        setattr(context, "wrap_socket", wrap_socket)  # noqa: B010

    def check(self) -> bool:
        """Load the files again if they changed; True when new ones were taken in."""
        now = file_identity(self.paths)
        if now == self.seen or now == self.failed:
            return False
        fingerprint = cert_fingerprint(self.cert)
        try:
            if self.ca:
                twins = [_twin(c, self.cert, self.key, self.ca) for c in self.contexts]
            else:
                for context in self.contexts:
                    context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.failed = now
            self.error = f"new TLS files unusable, the previous ones stay loaded: {exc}"
            log.warning("new TLS files at %s unusable, keeping the current ones: %s",
                        self.cert, exc)
            return False
        if self.ca:
            self.current[:] = twins
        self.seen, self.failed, self.error = now, None, None
        self.cert_sha256 = fingerprint
        self.reloads += 1
        log.info("TLS certificate%s reloaded from %s", " and CA" if self.ca else "", self.cert)
        return True

    def report(self) -> dict[str, object]:
        """What is loaded right now: `cert_sha256` of the serving certificate, `ca_sha256`
        the CAs every context trusts (sorted), `reloads`, and `error` while new files on
        disk could not be loaded."""
        trusted = [trusted_fingerprints(c) for c in self.current]
        both = set.intersection(*trusted) if trusted else set()
        return {"cert_sha256": self.cert_sha256, "ca_sha256": sorted(both),
                "reloads": self.reloads, "error": self.error}

    async def run(self, every: float = 2.0) -> None:
        while True:
            await asyncio.sleep(every)
            self.check()
