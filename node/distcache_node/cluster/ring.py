"""Consistent hashing with virtual nodes, and the ring document that says who is a member.

Pure and small on purpose: this is the one place that answers "who owns key K", used by the
node's router, the migration, the ring-aware client and the operator alike.

Zones (failure domains: in Kubernetes the `topology.kubernetes.io/zone` of a member's node).
A member may carry one. When the members span two or more zones, a key's preference list
takes the members clockwise from the key in rounds: each round takes the next member of
every zone not yet taken in that round. So the first min(R, zones) owners of every key sit in
different zones, and a whole zone going away leaves a copy of every key (Hazelcast's
ZONE_AWARE partition groups, Cassandra's NetworkTopologyStrategy). Members without a zone
count as a zone each; with no zones, or all in one, placement is the plain clockwise walk,
identical to a ring without zones. Cost: a zone holding fewer members than the others holds a
larger share of the copies (bench/zones.py measures it).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import xxhash

VNODES = 256
STATES = ("joining", "active", "leaving")
MAX_REPLICATION = 16
MAX_MEMBERS = 1000
MAX_VERSION = 2**63 - 1  # fits every int64 that reads it (metrics, the operator, clients)
MAX_ID_LENGTH = 253  # a DNS name: pod and host names fit
# Printable ASCII, no spaces: ids travel in headers and in space-separated heartbeats.
_ID_RE = re.compile(rf"[\x21-\x7e]{{1,{MAX_ID_LENGTH}}}")
# A Kubernetes label value (where zones come from): 63 characters at most.
MAX_ZONE_LENGTH = 63
_ZONE_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def hash64(data: str) -> int:
    return xxhash.xxh64_intdigest(data.encode("utf-8", "surrogatepass"))


class RingError(ValueError):
    """A ring document that cannot be used; the message says why."""


class RingConflict(RingError):
    """A ring with the version this node follows but different content: two writers
    disagree, and neither may win silently."""


def check_url(url: str, where: str = "url") -> str:
    """A member URL peers can connect to: http(s)://host[:port] (port 1-65535), nothing
    else. Returns it without a trailing slash; raises RingError saying what is wrong."""
    url = url.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a port that is not a number or out of range
    except ValueError as exc:
        raise RingError(f"{where}: bad url {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise RingError(f"{where}: url {url!r} must start with http:// or https://")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise RingError(f"{where}: url {url!r} must not contain spaces or control characters")
    if not parts.hostname:
        raise RingError(f"{where}: url {url!r} has no host")
    if port == 0:
        raise RingError(f"{where}: url {url!r}: port must be from 1 to 65535")
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise RingError(f"{where}: url {url!r} must be scheme://host:port only, "
                        "with no path, query or credentials")
    return url


@dataclass(frozen=True)
class Member:
    id: str
    url: str
    state: str = "active"
    zone: str = ""  # its failure domain; "" when unknown

    def to_json(self) -> dict[str, str]:
        out = {"id": self.id, "url": self.url, "state": self.state}
        if self.zone:  # documents without zones stay as they were
            out["zone"] = self.zone
        return out


@dataclass(frozen=True)
class RingDoc:
    """The membership document: shipped as a file (a ConfigMap) or pushed to /cluster/ring."""

    version: int
    replication: int
    members: tuple[Member, ...] = field(default_factory=tuple)

    @classmethod
    def from_json(cls, data: Any) -> RingDoc:
        """Validate the whole document before anything uses it: a ring that names an
        unusable member is refused as a whole (RingError naming the member), never half
        adopted. Unknown top-level keys are ignored, for documents from newer versions."""
        if not isinstance(data, dict):
            raise RingError("ring document must be a JSON object")
        version, replication = data.get("version"), data.get("replication", 2)
        if (isinstance(version, bool) or not isinstance(version, int)
                or not 0 <= version <= MAX_VERSION):
            raise RingError(f"'version' must be an integer from 0 to {MAX_VERSION}")
        if (isinstance(replication, bool) or not isinstance(replication, int)
                or not 1 <= replication <= MAX_REPLICATION):
            raise RingError(f"'replication' must be an integer from 1 to {MAX_REPLICATION}")
        raw_members = data.get("members")
        if not isinstance(raw_members, list):
            raise RingError("'members' must be a list")
        if len(raw_members) > MAX_MEMBERS:
            raise RingError(f"at most {MAX_MEMBERS} members")
        members: list[Member] = []
        seen: set[str] = set()
        urls: dict[str, str] = {}
        for index, raw in enumerate(raw_members):
            where = f"members[{index}]"
            if not isinstance(raw, dict):
                raise RingError(f"{where}: each member must be an object with id, url, state")
            mid, url, state = raw.get("id"), raw.get("url"), raw.get("state", "active")
            zone = raw.get("zone", "")
            if not isinstance(mid, str) or not _ID_RE.fullmatch(mid):
                raise RingError(f"{where}: 'id' must be 1-{MAX_ID_LENGTH} printable ASCII "
                                f"characters without spaces, got {mid!r}")
            where = f"member {mid!r}"
            if not isinstance(url, str):
                raise RingError(f"{where}: 'url' must be a string")
            url = check_url(url, where)
            if not isinstance(state, str) or state not in STATES:
                raise RingError(f"{where}: state must be one of {', '.join(STATES)}, "
                                f"got {state!r}")
            if not isinstance(zone, str) or (zone and not _ZONE_RE.fullmatch(zone)):
                raise RingError(f"{where}: 'zone' must be a label value (1-{MAX_ZONE_LENGTH} "
                                f"letters, digits, '-', '_' or '.'), got {zone!r}")
            if mid in seen:
                raise RingError(f"{where} listed twice")
            if url in urls:
                raise RingError(f"{where}: url {url} is also member {urls[url]!r}'s")
            seen.add(mid)
            urls[url] = mid
            members.append(Member(mid, url, state, zone))
        return cls(version, replication, tuple(members))

    def same_content(self, other: RingDoc) -> bool:
        """Same replication and members (in any order): the same placement."""
        return (self.replication == other.replication
                and sorted(self.members, key=lambda m: m.id)
                == sorted(other.members, key=lambda m: m.id))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "replication": self.replication,
            "members": [m.to_json() for m in self.members],
        }

    def member(self, member_id: str) -> Member | None:
        return next((m for m in self.members if m.id == member_id), None)

    def with_members(self, members: Iterable[Member]) -> RingDoc:
        return RingDoc(self.version + 1, self.replication, tuple(members))

    def with_state(self, member_ids: Iterable[str], state: str) -> RingDoc:
        ids = set(member_ids)
        return self.with_members(
            replace(m, state=state) if m.id in ids else m for m in self.members
        )

    def with_zones(self, zones: Mapping[str, str]) -> RingDoc:
        """The next version with these members' zones (others as they were)."""
        return self.with_members(
            replace(m, zone=zones[m.id]) if m.id in zones else m for m in self.members
        )

    def zones(self) -> dict[str, str]:
        return {m.id: m.zone for m in self.members if m.zone}

    def target(self) -> Ring:
        """Placement the cluster is moving to: every member but those leaving."""
        return Ring([m.id for m in self.members if m.state != "leaving"], self.replication,
                    zones=self.zones())

    def previous(self) -> Ring:
        """Placement data had before joins and leaves in flight: every member not joining."""
        return Ring([m.id for m in self.members if m.state != "joining"], self.replication,
                    zones=self.zones())

    @property
    def in_transition(self) -> bool:
        return any(m.state != "active" for m in self.members)


class Ring:
    """Maps keys to an ordered preference list of distinct members.

    A key's preference list depends only on the arc of the circle its hash falls into, so it
    is worked out once per arc (lazily) and a lookup is one hash and one bisect: placement
    runs for every key on every request and every migration pass.
    """

    def __init__(self, member_ids: Sequence[str], replication: int = 1, vnodes: int = VNODES,
                 zones: Mapping[str, str] | None = None):
        self.members = tuple(sorted(set(member_ids)))
        self.replication = replication
        # Each member's zone; a member without one is a zone of its own. Only used when the
        # members span two or more zones.
        given = zones or {}
        self.zones = {m: given.get(m) or f"\0{m}" for m in self.members}
        named = {given[m] for m in self.members if given.get(m)}
        self.zone_aware = len(named) >= 2 or (bool(named) and len(named) < len(
            {self.zones[m] for m in self.members}))
        points = sorted(
            (hash64(f"{member}#{i}"), member) for member in self.members for i in range(vnodes)
        )
        self._hashes = [h for h, _ in points]
        self._owners = [m for _, m in points]
        self._arcs: list[tuple[str, ...] | None] = [None] * len(points)

    def __len__(self) -> int:
        return len(self.members)

    def same_placement(self, other: Ring) -> bool:
        """True when both rings place every key on the same members in the same order."""
        return (self.members == other.members and self.replication == other.replication
                and self.zone_aware == other.zone_aware
                and (not self.zone_aware or self.zones == other.zones))

    def _arc(self, index: int) -> tuple[str, ...]:
        cached = self._arcs[index]
        if cached is not None:
            return cached
        found: list[str] = []
        owners, size, want = self._owners, len(self._owners), len(self.members)
        for step in range(size):
            member = owners[(index + step) % size]
            if member not in found:
                found.append(member)
                if len(found) == want:
                    break
        if self.zone_aware:
            found = self._by_zone_rounds(found)
        arc = self._arcs[index] = tuple(found)
        return arc

    def _by_zone_rounds(self, clockwise: list[str]) -> list[str]:
        """Clockwise order taken in rounds, one member per zone each round."""
        out: list[str] = []
        remaining = clockwise
        while remaining:
            taken: set[str] = set()
            rest: list[str] = []
            for member in remaining:
                zone = self.zones[member]
                if zone in taken:
                    rest.append(member)
                else:
                    taken.add(zone)
                    out.append(member)
            remaining = rest
        return out

    def preference(self, key: str, count: int | None = None) -> list[str]:
        """Up to `count` distinct members clockwise from the key: the first is the primary.
        Defaults to every member, so callers can skip dead ones and still find R live ones."""
        if not self._hashes:
            return []
        index = bisect.bisect(self._hashes, hash64(key)) % len(self._hashes)
        arc = self._arc(index)
        return list(arc if count is None else arc[:count])

    def owners(self, key: str) -> list[str]:
        """The R members that hold the key when all are alive."""
        return self.preference(key, self.replication)

    def owners_of_hash(self, key_hash: int) -> tuple[str, ...]:
        """owners() for a key already hashed with hash64: a migration pass hashes each key
        once and places it on two rings."""
        if not self._hashes:
            return ()
        index = bisect.bisect(self._hashes, key_hash) % len(self._hashes)
        return self._arc(index)[:self.replication]

    def all_copies_on(self, members: Iterable[str]) -> bool:
        """Whether some key has every one of its R copies on these members: with them all
        down, that key cannot be read. Exact (each arc of the circle is looked at once); with
        zone-aware placement a whole zone down leaves every key a copy elsewhere."""
        down = set(members)
        if not self.members or not down:
            return False
        want = min(self.replication, len(self.members))
        return any(set(self._arc(i)[:want]) <= down for i in range(len(self._hashes)))

    def primary(self, key: str) -> str | None:
        owners = self.preference(key, 1)
        return owners[0] if owners else None


def segments(a: Ring, b: Ring) -> tuple[list[int], list[tuple[tuple[str, ...], tuple[str, ...]]]]:
    """Cut the circle at every point of both rings: within a segment both place keys alike.
    Returns the cut points and, per segment, (a's owners, b's owners); a key's segment is
    bisect(cuts, hash64(key)) % len(cuts). A migration pass looks each key up once."""
    cuts = sorted(set(a._hashes) | set(b._hashes))
    if not cuts:
        return [], []
    # Any hash in a segment stands for it: the cut that opens it (the last cut for the
    # segment that wraps around zero).
    starts = [cuts[-1], *cuts[:-1]]
    return cuts, [(a.owners_of_hash(h), b.owners_of_hash(h)) for h in starts]
