"""The keys a node accepts for one credential (the API key, the cluster secret), from a
plain setting or from a file that changes under the running node.

A plain value (flag, environment, YAML) suits `make run` and a node on its own. A file is
how Kubernetes hands a mounted Secret to a pod: kubelet rewrites it in place, by swapping
the volume's `..data` symlink, a minute or so after the Secret changed, and restarts
nothing. So a node polls the file's identity, as it does for its certificates
(tlsreload.file_identity), and reads it again when that changes.

A file lists one key per line (blank lines and surrounding whitespace ignored) and every
key listed is accepted: that is how a key is rotated without a refused request. Add the new
key as a second line, wait until every pod reports its fingerprint (/cluster/status), move
the clients over, drop the old line. The first line is the one the node sends itself (the
cluster secret, to its peers), so a new cluster secret goes second until every pod has it.
Pods see a changed Secret at different moments, so a key the file no longer lists stays
accepted for a grace period after this node saw it go (`--api-key-grace-seconds`, for both
credentials): clients and peers that still use it keep working while the other pods catch up.

A file that cannot be read or lists no key leaves the keys in use as they are, and says so
(a warning, `error` in the report, a metric): a Secret emptied by mistake must neither lock
every client out nor open the node to anyone. At start such a file is a configuration error.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from hmac import compare_digest

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from distcache_node.auth import encode_key, matches_any
from distcache_node.tlsreload import Identity, file_identity

log = logging.getLogger("distcache.keys")

POLL_SECONDS = 1.0  # a stat of one small file: cheap, and rotations are seen soon
FINGERPRINT_CHARS = 12  # 48 bits of sha256: tells keys apart, no help in guessing one


class KeyFileError(ValueError):
    """A key file that cannot be used; the message says which file and why."""


def parse_keys(text: str) -> tuple[str, ...]:
    """The keys a file lists: one per line, blank lines and surrounding whitespace ignored,
    a repeated key kept once, in the file's order (the first is the one a node sends)."""
    return tuple(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))


def read_keys(path: str) -> tuple[str, ...]:
    """The keys in the file at `path`; KeyFileError when it cannot be read or lists none."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    # Bytes that are not UTF-8 come back as they were (as header values do): any key works.
    keys = parse_keys(data.decode("utf-8", "surrogateescape"))
    if not keys:
        raise KeyFileError(f"{path}: lists no key (one key per line)")
    return keys


def fingerprint(key: str) -> str:
    """The first hex digits of the key's sha256: which key is loaded, without showing it."""
    return hashlib.sha256(encode_key(key)).hexdigest()[:FINGERPRINT_CHARS]


class KeySet:
    """The keys accepted for one credential: `current` (the setting's, or the file's lines)
    and `retiring` (keys the file dropped, accepted until their grace period ends)."""

    def __init__(self, name: str, keys: Sequence[str] = (), path: str = "",
                 grace: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        """`name` labels logs and metrics ("api_key"); `keys` a plain setting's value, or
        `path` the file to read (KeyFileError when it cannot be used now)."""
        self.name = name
        self.path = path
        self.grace = grace
        self.clock = clock
        # Before the read: a file swapped in between differs from `seen` and is read again.
        self.seen: Identity = file_identity([path]) if path else ()
        self.current: tuple[str, ...] = read_keys(path) if path else tuple(k for k in keys if k)
        self.retiring: dict[str, float] = {}  # key -> clock() when it stops being accepted
        self.reloads = 0
        self.error: str | None = None  # why the file on disk is not what is loaded
        # Called after the first key changed (what this node sends): cluster/setup.py
        # points the headers towards peers at the new cluster secret.
        self.listeners: list[Callable[[], None]] = []
        self._refresh()

    @property
    def enabled(self) -> bool:
        """Whether any key is required. Fixed for the node's life: a file must list a key
        at start, and a file that lists none later changes nothing."""
        return bool(self.current)

    @property
    def primary(self) -> str:
        """The key this node sends (the file's first line), "" when none is set."""
        return self.current[0] if self.current else ""

    def accepts(self, given: str) -> bool:
        """Whether `given` is a current or still retiring key; constant time per key."""
        # On every request: the clock is read only while a key is retiring.
        if self.retiring and self._next_expiry <= self.clock():
            self._expire()
        if given.isascii():  # the usual case, compared as str: no encoding per request
            found = False
            for key in self._ascii:  # every one: the time says nothing of which matched
                found |= compare_digest(given, key)
            return found
        return matches_any(given, self._accepted)

    def check(self) -> bool:
        """Retire keys whose grace ended, and read the file again if it changed; True when
        it brought other keys."""
        if self._next_expiry <= self.clock():
            self._expire()
        if not self.path:
            return False
        now = file_identity([self.path])
        if now == self.seen and self.error is None:
            return False
        try:
            keys = read_keys(self.path)
        except KeyFileError as exc:
            # Read again on every check until it is usable: a file fixed in place (its
            # mode, say) may keep its identity.
            error = f"{exc}; keeping the {len(self.current)} key(s) loaded before"
            if error != self.error:
                log.warning("%s file unusable: %s", self.name, error)
            self.error = error
            return False
        self.seen, self.error = now, None
        if keys == self.current:
            return False
        self.replace(keys)
        return True

    def replace(self, keys: Sequence[str]) -> None:
        """Accept `keys` from now on; the ones they drop stay accepted for the grace period."""
        keys = tuple(keys)
        if not keys:
            raise KeyFileError("no key: refusing to leave the node without one")
        until = self.clock() + self.grace
        for key in self.current:
            if key not in keys:
                self.retiring[key] = until
        for key in keys:
            self.retiring.pop(key, None)
        sends_another = keys[0] != self.primary
        self.current = keys
        self.reloads += 1
        self._refresh()
        log.info("%s reloaded from %s: accepting %s, retiring %s for %gs", self.name,
                 self.path or "the setting", ", ".join(map(fingerprint, keys)),
                 ", ".join(map(fingerprint, self.retiring)) or "none", self.grace)
        if sends_another:
            for listener in self.listeners:
                listener()

    def report(self) -> dict[str, object]:
        """What is loaded, for /cluster/status: fingerprints of the current keys (in the
        file's order), seconds left for each retiring one, reloads, and `error` while the
        file on disk cannot be used. Never a key."""
        now = self.clock()
        return {"fingerprints": [fingerprint(k) for k in self.current],
                "retiring": {fingerprint(k): round(max(0.0, t - now), 1)
                             for k, t in self.retiring.items()},
                "file": self.path or None, "reloads": self.reloads, "error": self.error}

    async def run(self, every: float = POLL_SECONDS) -> None:
        while True:
            await asyncio.sleep(every)
            self.check()

    def _expire(self) -> None:
        now = self.clock()
        gone = [k for k, until in self.retiring.items() if until <= now]
        for key in gone:
            del self.retiring[key]
        if gone:
            log.info("%s: grace over, no longer accepting %s", self.name,
                     ", ".join(map(fingerprint, gone)))
        self._refresh()

    def _refresh(self) -> None:
        self._accepted = tuple(encode_key(k) for k in (*self.current, *self.retiring))
        # An ASCII key can only equal an ASCII key: the others need not be compared.
        self._ascii = tuple(k for k in (*self.current, *self.retiring) if k.isascii())
        self._next_expiry = min(self.retiring.values(), default=math.inf)


class KeySetCollector(Collector):
    """Scrape-time view of the key files: whether each can be used, reloads, keys accepted."""

    def __init__(self, sets: Sequence[KeySet]) -> None:
        # Keys given directly (flag, environment) too: their file error is a truthful 0, and
        # the alert on it has data on every node, so a broken expression would show.
        self.sets = list(sets)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        error = GaugeMetricFamily(
            "distcache_credential_file_error",
            "1 while a credential file cannot be used (unreadable, or no key in it): the keys "
            "loaded before stay in use", labels=["credential"])
        reloads = CounterMetricFamily(
            "distcache_credential_reloads", "Times a credential file brought other keys",
            labels=["credential"])
        accepted = GaugeMetricFamily(
            "distcache_credential_keys", "Keys accepted: current (listed in the file) or "
            "retiring (dropped from it, within the grace period)",
            labels=["credential", "state"])
        for s in self.sets:
            error.add_metric([s.name], 0 if s.error is None else 1)
            reloads.add_metric([s.name], s.reloads)
            accepted.add_metric([s.name, "current"], len(s.current))
            accepted.add_metric([s.name, "retiring"], len(s.retiring))
        yield from (error, reloads, accepted)
