"""Consistent hashing with virtual nodes, and the ring document that says who is a member.

Pure and small on purpose: this is the one place that answers "who owns key K", used by the
node's router, the migration, the ring-aware client and the operator alike.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import xxhash

VNODES = 256
STATES = ("joining", "active", "leaving")


def hash64(data: str) -> int:
    return xxhash.xxh64_intdigest(data.encode("utf-8", "surrogatepass"))


class RingError(ValueError):
    """A ring document that cannot be used; the message says why."""


@dataclass(frozen=True)
class Member:
    id: str
    url: str
    state: str = "active"

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "url": self.url, "state": self.state}


@dataclass(frozen=True)
class RingDoc:
    """The membership document: shipped as a file (a ConfigMap) or pushed to /cluster/ring."""

    version: int
    replication: int
    members: tuple[Member, ...] = field(default_factory=tuple)

    @classmethod
    def from_json(cls, data: Any) -> RingDoc:
        if not isinstance(data, dict):
            raise RingError("ring document must be a JSON object")
        version, replication = data.get("version"), data.get("replication", 2)
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise RingError("'version' must be a non-negative integer")
        if isinstance(replication, bool) or not isinstance(replication, int) or replication < 1:
            raise RingError("'replication' must be a positive integer")
        raw_members = data.get("members")
        if not isinstance(raw_members, list):
            raise RingError("'members' must be a list")
        members: list[Member] = []
        seen: set[str] = set()
        for raw in raw_members:
            if not isinstance(raw, dict):
                raise RingError("each member must be an object with id, url, state")
            mid, url, state = raw.get("id"), raw.get("url"), raw.get("state", "active")
            if not isinstance(mid, str) or not mid or not isinstance(url, str) or not url:
                raise RingError("each member needs a non-empty string 'id' and 'url'")
            if state not in STATES:
                raise RingError(f"member {mid!r}: state must be one of {', '.join(STATES)}")
            if mid in seen:
                raise RingError(f"member {mid!r} listed twice")
            seen.add(mid)
            members.append(Member(mid, url.rstrip("/"), state))
        return cls(version, replication, tuple(members))

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
            Member(m.id, m.url, state) if m.id in ids else m for m in self.members
        )

    def target(self) -> Ring:
        """Placement the cluster is moving to: every member but those leaving."""
        return Ring([m.id for m in self.members if m.state != "leaving"], self.replication)

    def previous(self) -> Ring:
        """Placement data had before joins and leaves in flight: every member not joining."""
        return Ring([m.id for m in self.members if m.state != "joining"], self.replication)

    @property
    def in_transition(self) -> bool:
        return any(m.state != "active" for m in self.members)


class Ring:
    """Maps keys to an ordered preference list of distinct members."""

    def __init__(self, member_ids: Sequence[str], replication: int = 1, vnodes: int = VNODES):
        self.members = tuple(sorted(set(member_ids)))
        self.replication = replication
        points = sorted(
            (hash64(f"{member}#{i}"), member) for member in self.members for i in range(vnodes)
        )
        self._hashes = [h for h, _ in points]
        self._owners = [m for _, m in points]

    def __len__(self) -> int:
        return len(self.members)

    def preference(self, key: str, count: int | None = None) -> list[str]:
        """Up to `count` distinct members clockwise from the key: the first is the primary.
        Defaults to every member, so callers can skip dead ones and still find R live ones."""
        if not self._hashes:
            return []
        want = min(count if count is not None else len(self.members), len(self.members))
        start = bisect.bisect(self._hashes, hash64(key))
        found: list[str] = []
        owners, size = self._owners, len(self._owners)
        for step in range(size):
            member = owners[(start + step) % size]
            if member not in found:
                found.append(member)
                if len(found) == want:
                    break
        return found

    def owners(self, key: str) -> list[str]:
        """The R members that hold the key when all are alive."""
        return self.preference(key, self.replication)

    def primary(self, key: str) -> str | None:
        owners = self.preference(key, 1)
        return owners[0] if owners else None
